"""The tornado-dsm command and the fault benchmark."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tornado_dsm import __version__
from tornado_dsm._cli import main


class TestMain:
    def test_version(self, capsys):
        """--version prints the package version."""
        with pytest.raises(SystemExit) as info:
            main(["--version"])
        assert info.value.code == 0 and __version__ in capsys.readouterr().out

    def test_no_command_prints_help(self, capsys):
        """No subcommand prints the help and exits 2."""
        assert main([]) == 2
        assert "bench" in capsys.readouterr().out

    def test_console_script(self):
        """The installed console script runs."""
        r = subprocess.run(["tornado-dsm", "--help"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "usage: tornado-dsm" in r.stdout


class TestBenchFaults:
    def test_json_shape(self, tmp_path, capsys):
        """bench faults writes the shared JSON shape with a ratio for every non-floor path, per backend."""
        out = tmp_path / "faults.json"
        assert main(["bench", "faults", "--pages", "64", "--rounds", "1", "--no-vm", "--backend", "mprotect",
                     "--json", str(out)]) == 0
        doc = json.loads(out.read_text())
        assert doc["bench"] == "faults"
        names = [r["name"] for r in doc["results"]]
        assert len(names) == 4 and sum("floor" in n for n in names) == 2
        for r in doc["results"]:
            assert r["median_us"] > 0 and r["p90_us"] >= r["median_us"] and r["samples"] == 64
            assert (r["ratio_to_floor"] is None) == r["name"].startswith("floor")
        assert "kernel pager" in capsys.readouterr().out

    @pytest.mark.multinode
    @pytest.mark.timeout(120)
    def test_both_backends_and_the_vm_path(self, tmp_path):
        """With both backends, bench faults reports each one's paths, its in-core VM fault, and uffd against mprotect."""
        from tornado_dsm.kernel.machine._backend import uffd_support
        if not uffd_support().ok:
            pytest.skip(f"the uffd fault backend is refused here: {uffd_support().reason}")
        out = tmp_path / "faults.json"
        cmd = ["tornado-dsm", "bench", "faults", "--pages", "32", "--rounds", "1", "--json", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=100)  # own process: its own windows
        assert r.returncode == 0, r.stderr
        results = {x["name"]: x for x in json.loads(out.read_text())["results"]}
        for b in ("mprotect", "uffd"):
            assert results[f"{b}: kernel pager (Python), gil-held"]["ratio_to_floor"] > 0
            assert results[f"{b}: in-core fault (full object path)"]["samples"] == 32
        cross = results["uffd vs mprotect: in-core fault, gil-released"]
        assert cross["ratio_to_floor"] == pytest.approx(
            cross["median_us"] / results["mprotect: in-core fault (full object path)"]["median_us"], rel=1e-6)

    def test_bad_arguments(self):
        """Non-positive sizes are refused with a message naming them."""
        with pytest.raises(SystemExit, match="--pages"):
            main(["bench", "faults", "--pages", "0"])


@pytest.mark.multinode
@pytest.mark.timeout(180)
class TestBenchScale:
    def test_json_shape(self, tmp_path):
        """bench scale reports the per-fault cost of each size against the smallest, and 2 threads against 1."""
        out = tmp_path / "scale.json"
        cmd = ["tornado-dsm", "bench", "scale", "--backend", "mprotect", "--max-pages", "64",
               "--thread-pages", "200", "--rounds", "1", "--json", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=160)  # own process: its own windows
        assert r.returncode == 0, r.stderr
        results = json.loads(out.read_text())["results"]
        sizes = [x for x in results if "interleaved writers" in x["name"]]
        assert len(sizes) == 1 and sizes[0]["samples"] == 64 and sizes[0]["median_us"] > 0
        two = next(x for x in results if "2 threads" in x["name"])
        one = next(x for x in results if "1 thread " in x["name"])
        assert two["ratio_to_floor"] == pytest.approx(two["median_us"] / one["median_us"], rel=1e-6)

    def test_bad_arguments(self):
        """A largest array under two pages is refused with a message naming --max-pages."""
        with pytest.raises(SystemExit, match="--max-pages"):
            main(["bench", "scale", "--max-pages", "1"])


@pytest.mark.multinode
@pytest.mark.timeout(240)
class TestBenchCoherence:
    def test_json_shape(self, tmp_path):
        """bench coherence reports every path with its ratio, the zero-fill and kernel-work floors and the invalidation ratios."""
        out = tmp_path / "coherence.json"
        cmd = ["tornado-dsm", "bench", "coherence", "--nodes", "3", "--pages", "16", "--rounds", "1",
               "--json", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=200)  # own process: its own windows
        assert r.returncode == 0, r.stderr
        results = {x["name"]: x for x in json.loads(out.read_text())["results"]}
        assert {"floor: C-resolved zero-fill fault", "remote PPC (node service ping)", "local upgrade",
                "remote read fault", "remote write, invalidating 1", "migrate ping-pong fault"} <= set(results)
        for x in results.values():
            assert x["median_us"] > 0 and (x["ratio_to_floor"] is None) == x["name"].startswith("floor")
        zf = results["local zero-fill fault"]
        assert zf["ratio_to_floor"] == pytest.approx(
            zf["median_us"] / results["floor: C-resolved zero-fill fault"]["median_us"], rel=1e-3)
        assert "(remote PPC + C fault)" in results["remote read fault"]["note"]
        assert "x kernel work" in results["remote read fault"]["note"]
        kernel = results["floor: kernel work of a remote read"]
        assert kernel["median_us"] > results["floor: raw socket round trip"]["median_us"]
        parts = [float(x.rsplit(" ", 1)[1]) for x in kernel["note"].removeprefix("context: ").split(" + ")]
        assert len(parts) == 4 and kernel["median_us"] == pytest.approx(sum(parts), abs=0.21)  # 4 parts, each rounded to 0.1
        assert results["remote write, invalidating 1"]["note"].startswith("1.00x")

    def test_bad_arguments(self):
        """Fewer than 3 nodes is refused with a message naming --nodes."""
        with pytest.raises(SystemExit, match="--nodes"):
            main(["bench", "coherence", "--nodes", "2"])


class TestMissingCore:
    def test_import_error_explains(self):
        """Without the compiled core, importing tornado_dsm says what to install and how to rebuild."""
        code = ("import sys; sys.modules['tornado_dsm.kernel.machine._core'] = None\n"
                "try:\n    import tornado_dsm\nexcept ImportError as e:\n    print(e)\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert "C compiler" in r.stdout and "pip install -e ." in r.stdout
