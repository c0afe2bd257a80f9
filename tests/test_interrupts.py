"""Ctrl-C during Cluster.run: the function is interrupted on every node, the cluster survives."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(120)]

PROGRAM = pathlib.Path(__file__).resolve().parent / "interruptprogs.py"
INTERNAL = ("TypeError", "MemoryLayoutError", "max_map_count", "Exception in thread", "fault handler raised",
            "DSMInternalError")


def _run(mode: str) -> subprocess.CompletedProcess:
    # a session of its own: the program's Ctrl-C goes to its process group only
    return subprocess.run([sys.executable, str(PROGRAM), mode], capture_output=True, text=True, timeout=110,
                          start_new_session=True)


class TestFirstInterrupt:
    def test_interrupts_every_node_quickly_and_keeps_the_cluster(self):
        """Five Ctrl-Cs during a 60 s faulting run each return within 3 s; every page still works after."""
        r = _run("once")
        assert r.returncode == 0, r.stderr
        times = [float(t) for t in re.findall(r"interrupted in ([0-9.]+) s", r.stdout)]
        assert len(times) == 5 and max(times) < 3.0, r.stdout
        assert r.stdout.count("after: [16, 16, 16]") == 5, r.stdout
        assert not any(word in r.stderr for word in INTERNAL), r.stderr


class TestSecondInterrupt:
    def test_closes_the_cluster(self):
        """A second Ctrl-C while the threads cannot stop closes the cluster, which then says so."""
        r = _run("twice")
        assert r.returncode == 0, r.stderr
        assert "closed: run of sleep: interrupted twice; the cluster is closed" in r.stdout
        assert "this cluster is closed" in r.stdout
        assert not any(word in r.stderr for word in INTERNAL), r.stderr


class TestScenarioInterrupt:
    def test_run_keeps_the_finished_runs(self, tmp_path):
        """Ctrl-C during `tornado-dsm run` prints what finished, writes partial JSON, exits 130, no traceback."""
        out = tmp_path / "r.json"
        proc = subprocess.Popen([sys.executable, "-m", "tornado_dsm._cli", "run", "locks", "--no-progress",
                                 "--json", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        try:
            proc.wait(timeout=6)        # the scenario takes about a minute: it is still running
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, stderr
        assert "interrupted during the run with" in stderr and "Traceback" not in stderr
        doc = json.loads(out.read_text())
        assert doc["partial"] is True
        finished = int(re.search(r": (\d+) of 42 runs finished", stderr).group(1))
        assert len(doc["runs"]) == finished
        if finished:
            assert "lock  padding" in stdout


class TestPressAsTheRunEnds:
    @pytest.mark.timeout(30)
    def test_is_not_lost(self):
        """A Ctrl-C that comes as the run's call finishes (before the next poll) still interrupts."""
        from tornado_dsm._interrupts import run_interruptibly

        with pytest.raises(KeyboardInterrupt, match="interrupted as it finished"):
            run_interruptibly(lambda: os.kill(os.getpid(), signal.SIGINT), lambda: None, lambda: None, "run of f")

    @pytest.mark.timeout(30)
    def test_a_result_that_shows_it_is_returned(self):
        """When the call's result already shows the interrupt, it is returned for the caller to raise."""
        from tornado_dsm._interrupts import run_interruptibly

        def call():
            os.kill(os.getpid(), signal.SIGINT)
            return "shown"
        assert run_interruptibly(call, lambda: None, lambda: None, "run of f", lambda r: r == "shown") == "shown"
