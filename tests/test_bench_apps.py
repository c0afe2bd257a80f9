"""bench apps: the applications at tiny sizes, every result checked, the rows and their notes."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from tornado_dsm import _apps
from tornado_dsm._bench_apps import mpiexec, run_mpi_jacobi
from tornado_dsm._cli import main

ROWS = ("jacobi, 1 node", "jacobi, 2 nodes", "matmul, 1 node", "matmul, 2 nodes")


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestMeasure:
    def test_quick_run_writes_every_row(self, tmp_path):
        """bench apps --quick checks every result and writes the four rows with median_us, speedup and traffic notes."""
        out = tmp_path / "apps.json"
        cmd = ["tornado-dsm", "bench", "apps", "--quick", "--no-progress", "--json", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=100)  # own process: its own windows
        assert r.returncode == 0, r.stderr
        doc = json.loads(out.read_text())
        results = {x["name"]: x for x in doc["results"]}
        assert doc["bench"] == "apps" and set(ROWS) <= set(results)
        for name in ROWS:
            assert results[name]["median_us"] > 0 and "speedup" in results[name]["note"]
        assert "KiB moved" in results["jacobi, 2 nodes"]["note"]
        assert results["jacobi, 1 node"]["ratio_to_floor"] == pytest.approx(1.0)

    def test_bad_sizes_are_refused(self):
        """A matrix side that is not a multiple of the tile is refused naming both options."""
        with pytest.raises(SystemExit, match="--matmul-n must be a multiple of --block"):
            main(["bench", "apps", "--matmul-n", "100", "--block", "32"])

    def test_bad_barrier_is_refused(self):
        """A barrier kind the cluster does not have is refused naming the accepted kinds."""
        with pytest.raises(SystemExit, match=r"--barrier must be one of .*server.*, not .ring."):
            main(["bench", "apps", "--barrier", "ring"])


class TestBand:
    def test_bands_cover_the_rows_once(self):
        """The nodes' bands are contiguous, in order, and cover every row exactly once."""
        for rows in (1, 7, 2046):
            for nodes in (1, 2, 3):
                bands = [_apps.band(rows, k, nodes, 1) for k in range(nodes)]
                assert bands[0][0] == 1 and bands[-1][1] == rows + 1
                assert all(a[1] == b[0] for a, b in zip(bands, bands[1:]))


class TestMatrixRows:
    def test_rows_do_not_depend_on_the_split(self):
        """A matrix generated in two bands equals the one generated whole."""
        whole = _apps.matrix_rows(3, 0, 64, 64, 16)
        parts = np.concatenate([_apps.matrix_rows(3, 0, 24, 64, 16), _apps.matrix_rows(3, 24, 64, 64, 16)])
        assert np.array_equal(whole, parts)


@pytest.mark.skipif(mpiexec() is None, reason="needs mpi4py and an mpiexec (the `mpi` extra)")
@pytest.mark.timeout(120)
class TestRunMpiJacobi:
    def test_two_ranks_match_numpy(self):
        """The mpi4py halo-exchange Jacobi on 2 ranks gives numpy's grid."""
        out = run_mpi_jacobi(mpiexec(), 2, 64, 5, timeout=100)
        assert out["ok"] and out["ranks"] == 2 and out["seconds"] > 0
