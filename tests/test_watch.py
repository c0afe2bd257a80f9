"""Live inspection: snapshots, cluster.watch() and `tornado-dsm top` against a running cluster."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import tornado_dsm as td

from tornado_dsm._watch import KEY, SOCKET, Watcher, find_clusters, rates, snapshot
from tornado_dsm.kernel import AuthenticationError, connect

import clusterprogs as progs
from helpers import new_cluster

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def busy_cluster():
    """3 nodes; ``with churn():`` runs a write-sharing workload on every node until the
    block ends (a stop word, not a duration: a slow machine cannot end it too early)."""
    with new_cluster(3, timeout=60) as c:
        a = c.zeros(64 * 512, np.int64)
        stop = c.zeros(1, np.int64)

        @contextlib.contextmanager
        def churn():
            td.word(stop).store(0)
            t = threading.Thread(target=c.run, args=(progs.churn_pages, a, stop), daemon=True)
            t.start()
            try:
                yield
            finally:
                td.word(stop).store(1)
                t.join(30)
        yield c, churn


class TestTop:
    def test_shows_fault_rates_of_a_running_workload(self, busy_cluster):
        """`tornado-dsm top --once` attached to a live 3-node cluster shows non-zero write faults on every node."""
        c, churn = busy_cluster
        with churn():
            r = subprocess.run([sys.executable, "-m", "tornado_dsm._cli", "top", "--once", "--interval", "0.5",
                                c.node_set.run_dir], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        rows = [line.split() for line in lines if line.split() and line.split()[0] in ("0", "1", "2")]
        assert [row[0] for row in rows[:3]] == ["0", "1", "2"]
        assert all(float(row[2]) > 0 for row in rows[:3]), r.stdout   # write/s
        assert "fcm:array0" in r.stdout and "region:array0" in r.stdout

    def test_lists_the_running_cluster(self, busy_cluster):
        """`top --list` names the run directory of this cluster."""
        c, _ = busy_cluster
        assert c.node_set.run_dir in find_clusters()

    def test_no_such_run_directory(self, tmp_path):
        """A run directory that does not exist is one clear error line and exit status 1."""
        r = subprocess.run([sys.executable, "-m", "tornado_dsm._cli", "top", str(tmp_path / "gone")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "no such run directory" in r.stderr and "Traceback" not in r.stderr


class TestWatchSocket:
    def test_wrong_key_is_refused(self, busy_cluster):
        """A watcher without the cluster key gets no snapshot: the handshake fails."""
        c, _ = busy_cluster
        with pytest.raises(AuthenticationError):
            connect(os.path.join(c.node_set.run_dir, SOCKET), b"\x01" * 32)

    def test_key_file_is_private(self, busy_cluster):
        """The key copy beside the watch socket is readable by its owner only, in a 0700 directory."""
        c, _ = busy_cluster
        assert os.stat(os.path.join(c.node_set.run_dir, KEY)).st_mode & 0o077 == 0
        assert os.stat(c.node_set.run_dir).st_mode & 0o077 == 0

    def test_snapshot_over_the_socket_matches_one_taken_here(self, busy_cluster):
        """A watcher's snapshot has every node and the cluster's objects."""
        c, _ = busy_cluster
        w = Watcher(c.node_set.run_dir)
        try:
            remote = w.snapshot()
        finally:
            w.close()
        here = snapshot(c)
        assert [n["node"] for n in remote["nodes"]] == [0, 1, 2]
        assert {o["name"] for o in remote["objects"]} == {o["name"] for o in here["objects"]}


class TestClusterWatch:
    def test_yields_rates_while_a_workload_runs(self, busy_cluster):
        """cluster.watch() yields views whose write-fault rates are positive on every node under load."""
        c, churn = busy_cluster
        with churn():
            views = list(c.watch(interval=0.5, count=2))
        assert len(views) == 2
        assert all(n["write_faults_per_s"] > 0 for n in views[0].nodes)
        assert "write/s" in str(views[0]) and "fcm:array0" in str(views[0])

    def test_bad_interval(self, busy_cluster):
        """A non-positive interval is refused with the accepted range."""
        c, _ = busy_cluster
        with pytest.raises(ValueError, match="interval must be"):
            next(c.watch(interval=0))


class TestRates:
    def test_rates_are_differences_over_time(self):
        """rates() divides every counter difference by the seconds between the snapshots."""
        node = dict(node=0, resident=5, read_faults=0, write_faults=10, incore_faults=0, coherence_faults=10,
                    ppc_local=0, ppc_remote=4, messages=8, bytes=4096)
        before = {"time": 1.0, "nnodes": 1, "nodes": [node], "objects": []}
        after = {"time": 3.0, "nnodes": 1, "nodes": [dict(node, write_faults=30, bytes=8192)], "objects": []}
        view = rates(before, after)
        assert view.seconds == 2.0 and view.nodes[0]["write_faults_per_s"] == 10.0
        assert view.nodes[0]["bytes_per_s"] == 2048.0 and view.nodes[0]["resident"] == 5
