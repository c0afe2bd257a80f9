"""Node processes: start-up, init, start-up errors, shutdown (context manager and
atexit), node 0's death, and joining over TCP with the real command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from helpers import process_gone
from tornado_dsm.kernel import NodeLost, NodeStartupError, PPCTimeout, current_runtime, start_nodes
from tornado_dsm.kernel.net import LOST
from tornado_dsm.kernel.net._transport import new_key, write_key_file

pytestmark = pytest.mark.multinode

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def whoami():
    rt = current_runtime()
    return rt.node_id, rt.nnodes, os.getpid(), rt.connected_peers()


def has_cos() -> bool:
    return current_runtime().cos is not None


_init_seen: list = []


def record_init(tag: str) -> None:
    """init: remember that it ran here, after the COS was attached."""
    _init_seen.append((tag, current_runtime().cos is not None))


def init_seen() -> list:
    return list(_init_seen)


def fail_on_node_2() -> None:
    if current_runtime().node_id == 2:
        raise RuntimeError("init failed on purpose")


def node_and_thread():
    """This node's id and the ident of the thread running the call."""
    return current_runtime().node_id, threading.get_ident()


_finished: list = []


def fail_now_or_later(now: int, later: float):
    """Raise at once on node ``now``; elsewhere sleep ``later`` s, note that, then raise."""
    node = current_runtime().node_id
    if node != now:
        time.sleep(later)
        _finished.append(node)
    raise ValueError(f"failed on node {node}")


def finished() -> list:
    """The nodes ``fail_now_or_later`` noted here."""
    return list(_finished)


def _wait_gone(pids, seconds: float) -> list:
    """Poll (with a deadline) until every pid has exited; returns those still alive."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if not process_gone(p)]
        if not alive:
            return []
        time.sleep(0.05)   # a poll with a deadline, not synchronization
    return [p for p in pids if not process_gone(p)]


class TestStartNodes:
    @pytest.mark.timeout(60)
    def test_every_node_runs_and_knows_itself(self, cluster_factory):
        """Each node is its own process, knows its id and the size, and is connected to all."""
        nodes = cluster_factory(3)
        seen = [nodes.run_on(k, whoami) for k in range(3)]
        assert [s[:2] for s in seen] == [(0, 3), (1, 3), (2, 3)]
        assert len({s[2] for s in seen}) == 3
        assert [s[3] for s in seen] == [[1, 2], [0, 2], [0, 1]]

    @pytest.mark.timeout(60)
    def test_every_node_has_a_cos(self, cluster_factory):
        """The clustered object system is attached on every node before start_nodes returns."""
        nodes = cluster_factory(2)
        assert nodes.run_on_all(has_cos) == [True, True]

    @pytest.mark.timeout(60)
    def test_tcp_transport(self, cluster_factory):
        """TCP on 127.0.0.1 works like Unix sockets."""
        nodes = cluster_factory(3, transport="tcp")
        assert nodes.runtime.address[0] == "127.0.0.1"
        assert nodes.run_on(2, whoami)[:2] == (2, 3)

    @pytest.mark.timeout(30)
    def test_single_node_and_outside(self, cluster_factory):
        """A 1-node cluster runs in this process; outside a cluster there is no runtime."""
        nodes = cluster_factory(1)
        assert nodes.run_on(0, whoami)[:2] == (0, 1) and nodes.pids == {}
        nodes.close()
        assert current_runtime() is None

    def test_bad_arguments(self):
        """Bad arguments raise ValueError naming the value and what is accepted."""
        for kwargs, match in [({"nnodes": 0}, "nnodes"), ({"nnodes": 2, "transport": "udp"}, "transport"),
                              ({"nnodes": 2, "join": 1}, "join"),
                              ({"nnodes": 2, "address": "127.0.0.1:0"}, "tcp"),
                              ({"nnodes": 2, "key": b"short"}, "key")]:
            with pytest.raises(ValueError, match=match):
                start_nodes(**kwargs)


class TestInit:
    @pytest.mark.timeout(60)
    def test_init_runs_everywhere_after_attach(self, cluster_factory):
        """init runs once on every node, after its COS is attached, before start_nodes returns."""
        _init_seen.clear()
        nodes = cluster_factory(3, init=record_init, init_args=("x",))
        assert nodes.run_on_all(init_seen) == [[("x", True)]] * 3


class TestStartupErrors:
    @pytest.mark.timeout(60)
    def test_error_on_a_node_is_raised_with_its_traceback(self):
        """A node's start-up exception is raised in node 0 with its traceback; nothing is left."""
        before = set(p.pid for p in __import__("multiprocessing").active_children())
        with pytest.raises(NodeStartupError) as info:
            start_nodes(3, init=fail_on_node_2)
        assert info.value.node == 2 and "init failed on purpose" in str(info.value)
        assert "fail_on_node_2" in info.value.remote_traceback
        after = set(p.pid for p in __import__("multiprocessing").active_children())
        assert after <= before and current_runtime() is None


class TestRunOn:
    @pytest.mark.timeout(60)
    def test_exception_carries_remote_traceback(self, cluster_factory):
        """run_on re-raises the function's exception with the remote traceback in a note."""
        nodes = cluster_factory(2)
        with pytest.raises(ZeroDivisionError) as info:
            nodes.run_on(1, divmod, 1, 0)
        assert "remote traceback (node 1)" in info.value.__notes__[-1]


class TestFanOut:
    @pytest.mark.timeout(60)
    def test_results_in_node_order(self, cluster_factory):
        """run_on_each answers in the order of ``nodes``, repeats included; node 0's share runs on this thread."""
        nodes = cluster_factory(3)
        seen = nodes.run_on_each([2, 0, 1, 2], node_and_thread)
        assert [node for node, _ in seen] == [2, 0, 1, 2]
        assert seen[1][1] == threading.get_ident()

    @pytest.mark.timeout(60)
    def test_nodes_run_in_parallel(self, cluster_factory):
        """Every request is sent before any reply is awaited: a 1 s call on each of 3 nodes takes about 1 s."""
        nodes = cluster_factory(3)
        t0 = time.monotonic()
        nodes.run_on_all(time.sleep, 1.0)
        assert time.monotonic() - t0 < 2.0

    @pytest.mark.timeout(60)
    def test_first_error_in_node_order_after_all_finished(self, cluster_factory):
        """The error raised is the first in ``nodes`` order (not the first to happen), once every node finished."""
        nodes = cluster_factory(3)
        _finished.clear()
        with pytest.raises(ValueError, match="failed on node 1"):
            nodes.run_on_each([1, 0], fail_now_or_later, 0, 0.5)
        with pytest.raises(ValueError, match="failed on node 1"):
            nodes.run_on_each([1, 2], fail_now_or_later, 1, 0.5)
        assert nodes.run_on(2, finished) == [2]

    @pytest.mark.timeout(60)
    def test_timeout(self, cluster_factory):
        """A node that does not answer within ``timeout`` seconds raises PPCTimeout."""
        nodes = cluster_factory(2)
        with pytest.raises(PPCTimeout):
            nodes.run_on_each([1], time.sleep, 2.0, timeout=0.2)

    @pytest.mark.timeout(60)
    def test_lost_node(self, cluster_factory):
        """A dead node gives LOST when lost nodes are tolerated, else NodeLost; the others still answer."""
        nodes = cluster_factory(3)
        proc = nodes.processes[2]
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        rt = nodes.runtime
        assert rt.fan_out(range(3), 0, "ping", None, local=lambda: 0, timeout=10,
                          tolerate_lost=True) == [0, 1, LOST]
        with pytest.raises(NodeLost):
            rt.fan_out([2, 1], 0, "ping", None, timeout=10)


_CHILD_SCRIPT = textwrap.dedent("""
    import sys
    from tornado_dsm.kernel import start_nodes
    if __name__ == "__main__":
        nodes = start_nodes(3)
        print(" ".join(str(p) for p in nodes.pids.values()), flush=True)
        if sys.argv[1] == "wait":
            sys.stdin.read()      # until killed
""")


def _run_node0(tmp_path, mode: str) -> tuple[subprocess.Popen, list[int]]:
    script = tmp_path / "node0.py"
    script.write_text(_CHILD_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2
    return proc, pids


class TestShutdown:
    @pytest.mark.timeout(60)
    def test_context_manager_leaves_no_process(self):
        """Leaving the with-block stops every node process."""
        with start_nodes(3) as nodes:
            pids = list(nodes.pids.values())
        assert all(process_gone(p) for p in pids)

    @pytest.mark.timeout(60)
    def test_interpreter_exit_leaves_no_process(self, tmp_path):
        """A program that never closes its cluster leaves no node behind at exit."""
        proc, pids = _run_node0(tmp_path, "exit")
        with proc:
            assert proc.wait(30) == 0
        assert _wait_gone(pids, 5.0) == []

    @pytest.mark.timeout(60)
    def test_sigkill_of_node0_stops_the_others(self, tmp_path):
        """When node 0 is killed with SIGKILL, the other nodes exit within a few seconds."""
        proc, pids = _run_node0(tmp_path, "wait")
        with proc:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        assert _wait_gone(pids, 5.0) == []


class TestJoin:
    @pytest.mark.timeout(90)
    def test_join_with_the_command(self, tmp_path, cluster_factory):
        """`tornado-dsm node --join` joins a TCP cluster; a wrong key is refused; shutdown stops it."""
        key, good, bad = new_key(), str(tmp_path / "key"), str(tmp_path / "wrong")
        write_key_file(good, key)
        write_key_file(bad, new_key())
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]))
        joiners: list = []

        def announce(address: str) -> None:
            cmd = ["tornado-dsm", "node", "--join", address, "--key-file"]
            refused = subprocess.run(cmd + [bad], capture_output=True, text=True, timeout=30, env=env)
            joiners.append(refused)
            joiners.append(subprocess.Popen(cmd + [good], env=env))

        nodes = cluster_factory(3, transport="tcp", key=key, join=1, announce=announce)
        refused, joined = joiners
        assert refused.returncode != 0 and "AuthenticationError" in refused.stderr
        assert nodes.run_on(2, whoami)[:3] == (2, 3, joined.pid)
        assert nodes.run_on(1, whoami)[3] == [0, 2]
        nodes.close()
        assert joined.wait(10) == 0
