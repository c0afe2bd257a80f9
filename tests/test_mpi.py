"""Clusters under mpiexec (MPICH from the `mpi` extra): scenarios and programs with
Cluster.from_mpi on one host, and the failures: a job size that does not fit, a
node or a rank process killed, rank 0 failing first, a joiner with a wrong key.

Each run is a real ``mpiexec -n 3`` job in a session of its own, killed as a
hang after its timeout; ``-print-all-exitcodes`` gives every rank's status."""

from __future__ import annotations

import json
import sys
import time

import pytest

import tornado_dsm as td
from helpers import MPI_SKIP, Job, mpiexec, process_gone, tool

TORNADO_DSM = tool("tornado-dsm")
needs_mpi = pytest.mark.skipif(MPI_SKIP is not None, reason=MPI_SKIP or "")


def program(n: int, name: str, *args: str, timeout: float = 60.0) -> Job:
    """``mpiprogs.py NAME ARGS`` on ``n`` ranks."""
    return mpiexec(n, sys.executable, "mpiprogs.py", name, *args, timeout=timeout)


def all_gone(pids, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while not all(process_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return all(process_gone(p) for p in pids)


SMALL = ["--set", "region.pages=8", "--set", "workload.repeats=1", "--no-progress"]


@needs_mpi
@pytest.mark.multinode
class TestScenarios:
    @pytest.mark.timeout(120)
    def test_a_small_scenario_runs_on_the_ranks(self, tmp_path):
        """`mpiexec -n 3 tornado-dsm run` runs every combination (1 and 3 nodes) on the ranks; all exit 0."""
        out = tmp_path / "runs.json"
        job = mpiexec(3, TORNADO_DSM, "run", "quickstart", *SMALL, "--vary", "nodes=1,3", "--json", str(out))
        assert job.returncode == 0 and job.ranks == [("exit", 0)] * 3, job
        rows = [ln.split() for ln in job.stdout.splitlines() if ln.split()[:1] in (["per_node"], ["singleton"])]
        assert sorted((r[0], r[2]) for r in rows) == [("per_node", "1"), ("per_node", "3"),
                                                       ("singleton", "1"), ("singleton", "3")]
        assert len(json.loads(out.read_text())["runs"]) == 4

    @pytest.mark.timeout(60)
    def test_nodes_other_than_the_job_size_is_an_error(self):
        """A scenario whose largest nodes is not the job size is one error naming both; all ranks exit 2."""
        job = mpiexec(2, TORNADO_DSM, "run", "quickstart", *SMALL, "--vary", "nodes=1,3")
        assert job.returncode == 2 and job.ranks == [("exit", 2)] * 2, job
        assert "cluster.nodes = [1, 3]: the scenario needs 3 nodes but the MPI job has 2 ranks" in job.stderr
        assert job.stderr.count("tornado-dsm: error:") == 1


@needs_mpi
@pytest.mark.multinode
class TestPrograms:
    @pytest.mark.timeout(60)
    def test_from_mpi_puts_a_node_on_every_rank(self):
        """from_mpi: rank 0 alone runs the body, node k under rank k, clean window, key kept off disk."""
        job = program(3, "basic")
        assert job.returncode == 0 and job.ranks == [("exit", 0)] * 3, job
        assert job.stdout.count("BODY") == 1
        r = job.result()
        nodes = r["nodes"]
        assert r["nnodes"] == 3 and [n["node"] for n in nodes] == [0, 1, 2]
        assert nodes[0]["pid"] == r["rank0_pid"] and len({n["parent"] for n in nodes}) == 3
        assert [n["mpi"] for n in nodes] == [True, False, False] and len({n["netns"] for n in nodes}) == 1
        assert [n["band"] for n in nodes] == [102400.0, 204800.0, 307200.0] and r["total"] == 614400.0
        assert r["rank0_window_maps_before"] == []
        for maps in [r["rank0_window_maps"]] + [n["window_maps"] for n in nodes]:
            assert maps and all("/memfd:tornado_dsm-node" in line for line in maps), maps
        assert r["refused"]["status"] == 1 and "AuthenticationError" in r["refused"]["stderr"]
        assert r["after_refusal"] == [0, 1, 2]
        assert r["key_exposed"] == [[], [], [], []]   # no command line, environment or run-dir file
        assert all_gone([n["pid"] for n in nodes[1:]])

    @pytest.mark.timeout(90)
    @pytest.mark.parametrize("transport", ["tcp", "mpi"])
    def test_litmus_on_the_ranks(self, transport):
        """MP, SB and LB on nodes 1 and 2 (two ranks) never show an outcome SC forbids, on 1 or 2 pages."""
        r = program(3, "litmus", "15", transport, timeout=80).result()
        assert len(r) == 6
        assert all(v["forbidden_seen"] == [] for v in r.values()), r

    @pytest.mark.timeout(60)
    def test_from_mpi_nodes_other_than_the_job_size(self):
        """from_mpi(nodes=4) on 3 ranks raises on rank 0 naming both; every rank exits 1."""
        job = program(3, "too_many", "4")
        assert "Cluster.from_mpi(nodes=4) in an MPI job of 3 ranks" in job.stderr, job
        assert "BODY" not in job.stdout
        assert job.ranks == [("exit", 1)] * 3, job


@needs_mpi
@pytest.mark.multinode
class TestOverMPI:
    """transport="mpi": every rank is its node, frames are MPI messages."""

    @pytest.mark.timeout(60)
    def test_nodes_are_the_ranks_and_share_an_array(self):
        """Node k runs in rank k's own process; an array written on every node sums right; a
        page-sized payload reaches every node and comes back intact, and so does a 3 MiB one; a
        call with a timeout answers, one that takes longer raises PPCTimeout."""
        job = program(3, "over_mpi")
        assert job.returncode == 0 and job.ranks == [("exit", 0)] * 3, job
        assert job.stdout.count("BODY") == 1
        r = job.result()
        nodes = r["nodes"]
        assert r["transport"] == "MPIConnection" and [n["node"] for n in nodes] == [0, 1, 2]
        assert nodes[0]["pid"] == r["rank0_pid"] and all(n["mpi"] for n in nodes)
        assert len({n["parent"] for n in nodes}) == 1   # the ranks themselves: one launcher proxy
        assert r["sums"] == [102400.0, 204800.0, 307200.0] and r["total"] == 614400.0
        assert r["echoes_intact"] == [True, True] and r["big_intact"]
        assert r["timed_ping"] == 2, r
        assert "PPC 'run_on' on oid 0x0 at node 1 did not answer within" in r["timed_out"], r

    @pytest.mark.timeout(60)
    def test_an_idle_node_does_not_spin(self):
        """An idle cluster's nodes sleep between probes: far less than a CPU each (MPICH's
        blocking waits would spin one per waiting reader)."""
        r = program(3, "idle_cpu", "mpi", "2").result()
        assert all(cpu < 0.5 for cpu in r["cpu"]), r

    @pytest.mark.timeout(60)
    def test_a_killed_node_ends_the_job(self):
        """A node SIGKILLed under transport="mpi" is a rank dying: the launcher ends the whole
        job at once, non-zero, no process left (the trade-off: no NodeLost)."""
        job = program(3, "kill_node", "2", "mpi", timeout=50)
        assert job.returncode != 0 and job.seconds < 30, job
        pids = json.loads(next(ln for ln in job.stdout.splitlines() if ln.startswith("PIDS "))[5:])
        assert all_gone([p for p, _parent in pids])

    @pytest.mark.timeout(120)
    def test_bench_ppc_measures_both_transports(self, tmp_path):
        """`mpiexec -n 2 tornado-dsm bench ppc` gives tcp's and mpi's rows, each with its floor."""
        out = tmp_path / "ppc.json"
        job = mpiexec(2, TORNADO_DSM, "bench", "ppc", "--calls", "50", "--rounds", "1", "--json", str(out),
                      timeout=100)
        assert job.returncode == 0 and job.ranks == [("exit", 0)] * 2, job
        names = [r["name"] for r in json.loads(out.read_text())["results"]]
        assert "[tcp] floor: raw socket round trip (tcp)" in names, names
        assert "[mpi] floor: raw MPI ping-pong, 16 B (Recv-blocked echo)" in names, names
        assert {"[tcp] remote PPC, transport (node service ping)",
                "[mpi] remote PPC, transport (node service ping)"} <= set(names), names

    @pytest.mark.timeout(60)
    def test_a_transport_the_job_does_not_take(self):
        """transport="unix" under mpiexec is one error naming the accepted ones; every rank exits 1."""
        job = program(3, "bad_transport", "unix")
        assert "transport='unix' under an MPI launcher: accepted are 'tcp', 'mpi' (default 'tcp')" \
            in job.stderr, job
        assert job.ranks == [("exit", 1)] * 3, job


@needs_mpi
@pytest.mark.multinode
class TestFailures:
    @pytest.mark.timeout(60)
    def test_a_killed_node_is_named_on_rank_0(self):
        """A SIGKILLed node: NodeLost on rank 0 names it, its rank and signal; all ranks exit 1; none left."""
        job = program(3, "kill_node", "2", timeout=50)
        r = job.result()
        assert r["error"] == ("node 2 is lost: peer closed the connection; its process was killed by "
                              "SIGKILL (MPI rank 2)")
        assert r["seconds"] < 10 and r["survivors"] == [0, 1]
        assert job.ranks == [("exit", 1)] * 3 and job.returncode != 0, job
        assert "node 2 (MPI rank 2) ended: its process was killed by SIGKILL" in job.stderr
        assert all_gone([p for p, _rank in r["pids"]])

    @pytest.mark.timeout(60)
    def test_a_killed_rank_process_ends_the_job(self):
        """Rank 1's own process SIGKILLed: the launcher ends the job at once, non-zero; no node is left."""
        job = program(3, "kill_rank", "1", timeout=50)
        assert job.returncode != 0 and "the job went on" not in job.stdout, job
        assert job.seconds < 30
        assert all_gone([p for pair in job.result()["pids"] for p in pair])

    @pytest.mark.timeout(60)
    def test_rank_0_failing_before_the_cluster(self):
        """Rank 0 raising before from_mpi while the others wait in it: every rank exits 1, no hang."""
        job = program(3, "fail_before", timeout=50)
        assert "rank 0 failed before the cluster" in job.stderr
        assert job.ranks == [("exit", 1)] * 3, job


@needs_mpi
@pytest.mark.multinode
class TestReadme:
    @pytest.mark.timeout(90)
    def test_the_mpiexec_example_prints_what_it_says(self, tmp_path):
        """The README's from_mpi example, under mpiexec -n 4, prints the values its comments promise."""
        from test_readme import code_block_after

        script = tmp_path / "my_program.py"
        script.write_text(code_block_after("#### Under mpiexec"))
        job = mpiexec(4, sys.executable, str(script), timeout=80)
        assert job.returncode == 0 and job.ranks == [("exit", 0)] * 4, job
        assert job.stdout.splitlines()[:2] == ["[102400.0, 204800.0, 307200.0, 409600.0]", "1024000.0 4"]


class TestWithoutALauncher:
    @pytest.mark.timeout(30)
    def test_from_mpi_needs_a_launcher(self, monkeypatch):
        """Cluster.from_mpi outside mpiexec says how to start it (before MPI is touched)."""
        for name in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(RuntimeError, match=r"not started by an MPI launcher .*mpiexec -n N"):
            td.Cluster.from_mpi()

    @pytest.mark.timeout(30)
    def test_transport_mpi_needs_a_launcher(self, monkeypatch):
        """transport="mpi" outside mpiexec: one error saying how to run it and what is accepted."""
        for name in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK"):
            monkeypatch.delenv(name, raising=False)
        with pytest.raises(ValueError, match=r"transport='mpi' needs every node to be an MPI rank; this "
                                             r"process was not started by an MPI launcher: run it as "
                                             r"`mpiexec -n N python program.py` .*Accepted with launcher='spawn': 'unix', 'tcp'"):
            td.Cluster(nodes=2, transport="mpi")
        from tornado_dsm.kernel import start_nodes
        with pytest.raises(ValueError, match=r"transport='mpi' needs every node to be an MPI rank: run the "
                                             r"program as `mpiexec -n N python program.py`.*Accepted here: "
                                             r"'unix', 'tcp'"):
            start_nodes(2, "mpi")

    @pytest.mark.timeout(30)
    def test_unknown_launcher(self):
        """A launcher other than spawn and mpi is refused, naming both."""
        with pytest.raises(ValueError, match="launcher must be 'spawn'.* or 'mpi'"):
            td.Cluster(launcher="slurm")
