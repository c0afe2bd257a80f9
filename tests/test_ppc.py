"""Remote PPC between real node processes: results, payloads, exceptions, the
worker pool, timeouts, node loss, concurrency and statistics."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from tornado_dsm import SegmentationFault
from tornado_dsm.kernel import (NodeLost, Payload, PPCStatistics, PPCTimeout, RemoteError,
                                current_runtime, start_nodes)

pytestmark = pytest.mark.multinode

OID = 0x1234   # any oid != 0 reaches the object dispatcher installed below


class CustomError(Exception):
    """An exception type the caller cannot rebuild by name."""


# ---- what the nodes run --------------------------------------------------------------

_events: dict[str, threading.Event] = {}


def _event(name: str) -> threading.Event:
    return _events.setdefault(name, threading.Event())


def _dispatch(oid, method, args, payload):
    rt = current_runtime()
    if method == "echo":
        return args
    if method == "reverse":
        return Payload(bytes(payload)[::-1], len(payload))
    if method == "chain":   # call the next node of the path, then report who answered
        return [rt.node_id] + (rt.call(args[0], oid, "chain", args[1:]) if args else [])
    if method == "block":   # wait (not a PPC) until released
        return _event(args[0]).wait(args[1])
    if method == "release":
        _event(args[0]).set()
        return rt.node_id
    if method == "raise":
        raise {"KeyError": KeyError, "ValueError": ValueError}[args[0]](*args[1:])
    if method == "segv":
        raise SegmentationFault(0x1000, "write", rt.node_id, "test")
    if method == "custom":
        raise CustomError("custom failure")
    raise AttributeError(f"no method {method!r}")


def install_dispatcher() -> None:
    """Replace the node's COS dispatcher by the test one (init of the test cluster)."""
    current_runtime().set_object_dispatcher(_dispatch)


def pid() -> int:
    return os.getpid()


@pytest.fixture(scope="module")
def dispatcher_nodes():
    """A 3-node cluster (Unix sockets) serving the test dispatcher on every node, for the whole module."""
    with start_nodes(3, init=install_dispatcher) as cluster:
        yield cluster


# ---- tests -----------------------------------------------------------------------------


class TestCall:
    @pytest.mark.timeout(30)
    def test_result_round_trips_msgpack_values(self, dispatcher_nodes):
        """A call returns the target's result; msgpack sequences arrive as lists."""
        rt = dispatcher_nodes.runtime
        value = {"a": [1, 2.5, "x", None, True], "b": b"\x00\xff"}
        assert rt.call(1, OID, "echo", value) == value
        assert rt.call(2, OID, "echo", (1, 2)) == [1, 2]

    @pytest.mark.timeout(30)
    def test_payload_travels_raw_both_ways(self, dispatcher_nodes):
        """A raw payload reaches the handler and a Payload result comes back as bytes."""
        data = os.urandom(3 * 4096 + 7)
        reply = dispatcher_nodes.runtime.call(1, OID, "reverse", None, payload=data)
        assert isinstance(reply, Payload) and reply.value == len(data)
        assert bytes(reply.data) == data[::-1]

    @pytest.mark.timeout(30)
    def test_large_payload(self, dispatcher_nodes):
        """A payload of several MiB (more than the read buffer) arrives intact."""
        data = os.urandom(5 << 20)
        assert bytes(dispatcher_nodes.runtime.call(2, OID, "reverse", None, payload=data).data) == data[::-1]

    @pytest.mark.timeout(30)
    def test_call_to_self_or_unknown_node_is_refused(self, dispatcher_nodes):
        """Calling this node or a node outside the cluster raises ValueError naming it."""
        with pytest.raises(ValueError, match="local"):
            dispatcher_nodes.runtime.call(0, OID, "echo", None)
        with pytest.raises(ValueError, match="no node 7"):
            dispatcher_nodes.runtime.call(7, OID, "echo", None)

    @pytest.mark.timeout(30)
    def test_unencodable_args_fail_locally(self, dispatcher_nodes):
        """Arguments msgpack cannot encode raise TypeError before anything is sent."""
        with pytest.raises(TypeError):
            dispatcher_nodes.runtime.call(1, OID, "echo", object())
        assert dispatcher_nodes.runtime.call(1, OID, "echo", 5) == 5


class TestRemoteExceptions:
    @pytest.mark.timeout(30)
    def test_builtin_exception_is_rebuilt_with_remote_traceback(self, dispatcher_nodes):
        """A builtin exception is re-raised as its own type, the remote traceback in a note."""
        with pytest.raises(KeyError) as info:
            dispatcher_nodes.runtime.call(1, OID, "raise", ["KeyError", "missing"])
        assert info.value.args == ("missing",)
        assert "remote traceback (node 1)" in info.value.__notes__[0]
        assert "_dispatch" in info.value.__notes__[0]

    @pytest.mark.timeout(30)
    def test_tornado_dsm_exception_keeps_its_fields(self, dispatcher_nodes):
        """A tornado_dsm exception is rebuilt by name with its fields."""
        with pytest.raises(SegmentationFault) as info:
            dispatcher_nodes.runtime.call(2, OID, "segv", None)
        assert (info.value.address, info.value.access, info.value.node) == (0x1000, "write", 2)

    @pytest.mark.timeout(30)
    def test_other_exception_becomes_remote_error(self, dispatcher_nodes):
        """An exception of another type arrives as RemoteError with its type name and traceback."""
        with pytest.raises(RemoteError) as info:
            dispatcher_nodes.runtime.call(1, OID, "custom", None)
        assert info.value.type_name.endswith("CustomError") and info.value.node == 1
        assert "custom failure" in str(info.value) and "CustomError" in info.value.remote_traceback


class TestWorkerPool:
    @pytest.mark.timeout(30)
    def test_chain_back_to_a_busy_node(self, dispatcher_nodes):
        """A→B→C→B completes: B serves C's call while its first handler waits on C."""
        assert dispatcher_nodes.runtime.call(1, OID, "chain", [2, 1]) == [1, 2, 1]

    @pytest.mark.timeout(30)
    def test_blocked_handler_does_not_block_the_channel(self, dispatcher_nodes):
        """A handler blocked on a non-PPC wait does not stop the next request on its channel."""
        rt = dispatcher_nodes.runtime
        blocked = rt.call_async(1, OID, "block", ["pool", 20.0])
        assert rt.call(1, OID, "release", ["pool"]) == 1   # same channel, while block runs
        assert blocked.result(20.0) is True


class TestTimeout:
    @pytest.mark.timeout(30)
    def test_timeout_raises_and_channel_stays_usable(self, dispatcher_nodes):
        """A call that does not answer in time raises PPCTimeout; later calls work."""
        rt = dispatcher_nodes.runtime
        with pytest.raises(PPCTimeout, match="did not answer within 0.2 s"):
            rt.call(2, OID, "block", ["timeout", 20.0], timeout=0.2)
        rt.call(2, OID, "release", ["timeout"])
        assert rt.call(2, OID, "echo", "after") == "after"


    @pytest.mark.timeout(60)
    def test_cluster_default_timeout(self, cluster_factory):
        """start_nodes(timeout=...) is the default of every call on every node."""
        nodes = cluster_factory(2, timeout=0.3, init=install_dispatcher)
        with pytest.raises(PPCTimeout, match="within 0.3 s"):
            nodes.runtime.call(1, OID, "block", ["default", 20.0])
        nodes.runtime.call(1, OID, "release", ["default"])


class TestConcurrency:
    @pytest.mark.timeout(60)
    def test_many_threads_get_their_own_results(self, dispatcher_nodes):
        """Concurrent callers on shared channels each get the reply to their own request."""
        rt, errors = dispatcher_nodes.runtime, []

        def caller(t: int) -> None:
            for i in range(200):
                node = 1 + (t + i) % 2
                if rt.call(node, OID, "echo", [t, i]) != [t, i]:
                    errors.append((t, i))

        threads = [threading.Thread(target=caller, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


    @pytest.mark.timeout(60)
    def test_timeouts_mixed_with_calls(self, dispatcher_nodes):
        """Callers timing out among callers waiting on the same channel never hang or mix replies."""
        rt, errors = dispatcher_nodes.runtime, []

        def caller(t: int) -> None:
            for i in range(30):
                if (t + i) % 5 == 0:   # a slow call that times out; its late reply is dropped
                    try:
                        rt.call(1, OID, "block", [f"late-{t}-{i}", 30.0], timeout=0.01)
                        errors.append(("no timeout", t, i))
                    except PPCTimeout:
                        pass
                elif rt.call(1, OID, "echo", [t, i]) != [t, i]:
                    errors.append(("mixed", t, i))

        threads = [threading.Thread(target=caller, args=(t,)) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for t in range(6):   # let the slow handlers answer (late: dropped)
            for i in range(0, 30):
                if (t + i) % 5 == 0:
                    rt.call(1, OID, "release", [f"late-{t}-{i}"])
        assert errors == [] and rt.call(1, OID, "echo", "end") == "end"


class TestStatistics:
    @pytest.mark.timeout(30)
    def test_remote_calls_are_counted_exactly(self, dispatcher_nodes):
        """Every remote call is counted once per (oid, method, remote) with bytes and latency."""
        rt = dispatcher_nodes.runtime
        before = rt.ppc_statistics().get(OID + 1, "echo", "remote")
        for i in range(25):
            rt.call(1, OID + 1, "echo", i)
        c = rt.ppc_statistics().get(OID + 1, "echo", "remote")
        assert before is None and c.calls == 25 and sum(c.histogram) == 25
        assert c.bytes > 25 * 2 * 28 and 0 < c.median_us <= c.p90_us

    @pytest.mark.timeout(30)
    def test_local_calls_recorded_by_caller(self, dispatcher_nodes):
        """record_ppc counts local calls separately from remote ones."""
        rt = dispatcher_nodes.runtime
        rt.record_ppc(OID + 2, "get", False, 0, 3e-6)
        stats = rt.ppc_statistics()
        c = stats.get(OID + 2, "get", "local")
        assert isinstance(stats, PPCStatistics) and c.calls == 1 and c.histogram[2] == 1
        assert stats.get(OID + 2, "get", "remote") is None and "get" in str(stats)

    def test_local_histograms_count_every_thread_exactly(self):
        """Lock-free local-call histograms lose no count across threads; slow calls fold into the last bucket."""
        from tornado_dsm.kernel.net._stats import NBUCKETS, PPCCounters
        counters = PPCCounters()

        def work():
            hist = counters.local_histogram(7, "m")
            for i in range(5000):
                next(hist[i % 3])
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        next(counters.local_histogram(7, "m")[60])
        c = counters.snapshot(0).get(7, "m", "local")
        assert c.calls == 20001 and c.histogram[:3] == (6668, 6668, 6664)
        assert c.histogram[NBUCKETS - 1] == 1 and len(c.histogram) == NBUCKETS

    @pytest.mark.timeout(30)
    def test_cluster_gathers_every_node(self, dispatcher_nodes):
        """Cluster.ppc_statistics returns one snapshot per node, each naming its node."""
        dispatcher_nodes.run_on(1, _call_node2)
        stats = dispatcher_nodes.ppc_statistics()
        assert [s.node for s in stats] == [0, 1, 2]
        assert stats[1].get(OID, "echo", "remote").calls >= 3


def _call_node2() -> None:
    for _ in range(3):
        current_runtime().call(2, OID, "echo", None)


class TestNodeLost:
    @pytest.mark.timeout(60)
    def test_sigkill_fails_every_pending_call(self, cluster_factory):
        """SIGKILL of a node fails every call pending on it with NodeLost, after its lost-node listeners ran."""
        nodes = cluster_factory(3, init=install_dispatcher)
        rt, lost, pending = nodes.runtime, [], []
        # the listener notes which pending calls had already failed when it ran: none may have
        rt.add_node_lost_listener(lambda node, reason: lost.append((node, [c.done for c in pending])))
        pending += [rt.call_async(2, OID, "block", ["never", 60.0]) for _ in range(5)]
        os.kill(nodes.pids[2], signal.SIGKILL)
        for call in pending:
            with pytest.raises(NodeLost, match="node 2"):
                call.result(30.0)
        with pytest.raises(NodeLost):
            rt.call(2, OID, "echo", None)
        assert rt.call(1, OID, "echo", "alive") == "alive" and lost == [(2, [False] * 5)]


class TestBenchPPC:
    @pytest.mark.timeout(120)
    def test_json_shape(self, tmp_path):
        """bench ppc writes the shared JSON shape: the floors, remote paths with ratios, local PPC."""
        import json

        from tornado_dsm._cli import main

        out = tmp_path / "ppc.json"
        assert main(["bench", "ppc", "--calls", "50", "--rounds", "1", "--json", str(out)]) == 0
        doc = json.loads(out.read_text())
        results = {r["name"]: r for r in doc["results"]}
        assert doc["bench"] == "ppc" and len(results) == 5
        assert all(r["median_us"] > 0 for r in results.values())
        assert sum(r["ratio_to_floor"] is not None for r in results.values()) == 3
        assert "the polled round trip" in results["remote PPC through the COS (singleton stub)"]["note"]
