"""Bounds and lost nodes: a run that does not finish, a node that stops or
crashes, and what the surviving nodes can still do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import tornado_dsm as td
from tornado_dsm.kernel import PAGE

import failprogs
from helpers import new_cluster, process_gone

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(120)]
MANAGERS = ("centralized", "fixed", "dynamic")
WORDS = PAGE // 8


def _await_lost(c, node: int, seconds: float = 10) -> None:
    """Poll until node 0 has noticed the loss of ``node`` (it learns it from its reader thread)."""
    deadline = time.monotonic() + seconds
    while node not in c.lost_nodes() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert node in c.lost_nodes()


def _crash(c, node: int) -> None:
    with pytest.raises(td.NodeLost):
        c.run(failprogs.crash_outside_window, on=node)


class TestRunTimeout:
    def test_late_threads_are_named(self):
        """A run whose threads outlive the timeout raises TimeoutError naming every late node."""
        with new_cluster(2) as c:
            start = time.monotonic()
            with pytest.raises(TimeoutError, match=r"nap did not finish within 0.5 s: "
                                                   r"node 0 \(threads \[0\] still running\); node 1"):
                c.run(failprogs.nap, 3, timeout=0.5)
            assert time.monotonic() - start < 2

    def test_stopped_node(self):
        """A node stopped by SIGSTOP makes the run fail in bounded time, naming it; close still ends."""
        with new_cluster(3) as c:
            pids = c.run(failprogs.pid)
            os.kill(pids[2], signal.SIGSTOP)
            try:
                with pytest.raises(TimeoutError, match=r"node 2 \(no answer"):
                    c.run(failprogs.nap, 0.01, timeout=0.5)
                assert c.run(failprogs.nap, 0.01, on=[0, 1], timeout=5) == [0.01, 0.01]
            finally:
                start = time.monotonic()
                c.close()
            assert time.monotonic() - start < 15

    def test_cluster_timeout_is_the_default(self):
        """Cluster(timeout=) bounds every run that does not say otherwise."""
        with new_cluster(2, timeout=0.5) as c:
            with pytest.raises(TimeoutError):
                c.run(failprogs.nap, 3)
            assert c.run(failprogs.nap, 0.8, timeout=5) == [0.8, 0.8]

    @pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "5", True])
    def test_bad_timeout(self, bad):
        """A timeout that is not a finite positive number is refused, naming what is accepted."""
        with pytest.raises(ValueError, match="finite number of seconds > 0"):
            td.Cluster(timeout=bad)


class TestCrashReport:
    def test_signal_and_last_frame(self):
        """A segfault in user code on a node is reported with its signal and last Python frame."""
        with new_cluster(3) as c:
            with pytest.raises(td.NodeLost, match="node 2 is lost"):
                c.run(failprogs.crash_outside_window, on=2)
            reason = c.lost_nodes()[2]
            assert "SIGSEGV" in reason and "last Python frame" in reason and "string_at" in reason
            assert c.node_status() == {0: "alive", 1: "alive", 2: f"lost: {reason}"}

    def test_lost_node_named_on_later_calls(self):
        """A later run on the lost node says how its process ended."""
        with new_cluster(2) as c:
            os.kill(c.run(failprogs.pid)[1], signal.SIGKILL)
            _await_lost(c, 1)
            with pytest.raises(td.NodeLost, match="killed by SIGKILL"):
                c.run(failprogs.pid, on=1)


class TestSurvivors:
    @pytest.mark.parametrize("manager", MANAGERS)
    def test_cluster_goes_on(self, manager):
        """After a crash, 'all' means the survivors, allocation works and untouched data is exact."""
        with new_cluster(3, manager=manager) as c:
            kept = c.zeros((8 * WORDS,), np.int64)
            c.run(failprogs.fill, kept, 7, on=1)
            _crash(c, 2)
            assert len(c.run(failprogs.pid)) == 2
            fresh = c.zeros((4,), np.int64)
            c.run(failprogs.fill, fresh, 3, on=1)
            assert fresh.tolist() == [3, 3, 3, 3]
            if manager == "fixed":   # page p's directory slice lives on node p mod 3
                assert c.lost_arrays().get("array0") == 2
            else:
                assert c.run(failprogs.total, kept, on=[0, 1]) == [7 * 8 * WORDS] * 2
                assert "array0" not in c.lost_arrays()

    @pytest.mark.parametrize("manager", MANAGERS)
    def test_lost_pages_are_named(self, manager):
        """Pages owned by the lost node are reported by lost_arrays and fault naming the array."""
        with new_cluster(3, manager=manager) as c:
            a = c.zeros((8 * WORDS,), np.int64)
            c.run(failprogs.fill, a, 5, on=2)
            _crash(c, 2)
            assert c.lost_arrays() == {"array0": 8}
            with pytest.raises(td.SegmentationFault, match="array 'array0'.*node 2 is lost"):
                c.run(failprogs.total, a, on=1)

    @pytest.mark.parametrize("manager", MANAGERS)
    def test_lost_reader_is_not_waited_for(self, manager):
        """A write to a page whose reader died succeeds: a lost copy needs no invalidation."""
        with new_cluster(3, manager=manager) as c:
            a = c.zeros((WORDS,), np.int64)
            c.run(failprogs.fill, a, 1, on=1)
            c.run(failprogs.total, a, on=2)   # node 2 joins the copyset
            _crash(c, 2)
            assert c.run(failprogs.fill, a, 9, on=0) == [9]
            assert c.run(failprogs.total, a, on=1) == [9 * WORDS]

    def test_inspection_goes_on(self):
        """inspect and backends answer after a crash; the lost node is named, never asked."""
        with new_cluster(3) as c:
            took = c.backends()[1]
            _crash(c, 2)
            assert c.backends() == {0: took, 1: took, 2: took}
            view = c.inspect()
            assert view.lost == (2,) and view.backends == (took, took, took)
            assert f"fault backend {took}" in str(view)


_HOLD = """
import sys, time, tornado_dsm as td
c = td.Cluster(2)
print(c.node_set._tmpdir, *c.node_set.pids.values(), flush=True)
time.sleep(60)
"""


class TestRunDirectory:
    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
    def test_removed_when_node0_dies(self, sig):
        """SIGTERM or SIGKILL of node 0 leaves no run directory and no node process behind."""
        proc = subprocess.Popen([sys.executable, "-c", _HOLD], stdout=subprocess.PIPE, text=True)
        try:
            run_dir, *pids = proc.stdout.readline().split()
            assert os.path.isdir(run_dir)
            proc.send_signal(sig)
            proc.wait(30)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (os.path.exists(run_dir) or
                                                   not all(process_gone(int(p)) for p in pids)):
                time.sleep(0.1)
            assert not os.path.exists(run_dir) and all(process_gone(int(p)) for p in pids)
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
