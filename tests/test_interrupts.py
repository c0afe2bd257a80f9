"""Ctrl-C during Cluster.run: the function is interrupted on every node, the cluster survives."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(120)]

PROGRAM = pathlib.Path(__file__).resolve().parent / "interruptprogs.py"
INTERNAL = ("TypeError", "MemoryLayoutError", "max_map_count", "Exception in thread", "fault handler raised",
            "DSMInternalError")


def _run(mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROGRAM), mode], capture_output=True, text=True, timeout=110)


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
