"""Destroying clustered objects while calls are in flight on several nodes."""

from __future__ import annotations

import threading
import time

import pytest

from tornado_dsm.kernel import (
    ClusteredRep, ClusteredRoot, NodeLost, ObjectDestroyed, current_cos, start_nodes,
)

from helpers import NNODES, attempt

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(120)]

WAIT = 60.0  # upper bound of every node-side wait (a failing test must not hang)


# ---- node-local state (each node process has its own copy) --------------------------

_reps: dict[int, list] = {}          # oid -> reps created on this node
_entered: dict[int, threading.Semaphore] = {}
_release: dict[int, threading.Event] = {}
_callers: dict[int, list] = {}       # oid -> [(thread, outcome list)]
_destroys: dict[int, tuple] = {}     # oid -> (thread, outcome list)


def _sync(oid):
    """This node's semaphore and event for ``oid``."""
    return _entered.setdefault(oid, threading.Semaphore(0)), _release.setdefault(oid, threading.Event())


class GateRep(ClusteredRep):
    """A rep whose ``wait`` blocks until released; it proves it is alive before and after."""

    def __init__(self):
        self.cleaned = 0
        _reps.setdefault(self.oid, []).append(self)

    def wait(self):
        """Signal entry, block until released, return this node (asserting aliveness throughout)."""
        self.assert_alive()
        entered, release = _sync(self.oid)
        entered.release()
        release.wait(WAIT)
        self.assert_alive()
        return self.node

    def ping(self):
        """Return this node if alive."""
        self.assert_alive()
        return self.node

    def cleanup(self):
        """Count cleanups (exactly one expected, after every call drained)."""
        self.cleaned += 1


class Gate(ClusteredRoot):
    """Root of GateRep."""

    Rep = GateRep


# ---- helpers run on nodes ---------------------------------------------------------------

def create(policy):
    """Create a Gate homed on node 0."""
    return current_cos().create(Gate, policy=policy, home=0).oid


def start_callers(oid, k):
    """Start k threads here, each making one ``wait`` call on ``oid``."""
    for _ in range(k):
        out = []
        t = threading.Thread(target=lambda o=out: o.append(attempt(current_cos().call, oid, "wait")))
        t.start()
        _callers.setdefault(oid, []).append((t, out))


def wait_entered(oid, k):
    """Block until k calls have entered ``wait`` on this node's rep; True if they did in time."""
    entered, _ = _sync(oid)
    return all(entered.acquire(timeout=WAIT) for _ in range(k))


def release(oid):
    """Let this node's blocked ``wait`` calls return."""
    _sync(oid)[1].set()


def join_callers(oid):
    """The outcomes of this node's caller threads (after they end)."""
    results = []
    for t, out in _callers.pop(oid, []):
        t.join(WAIT)
        results.append(out[0] if out else ("hung", ""))
    return results


def start_destroy(oid):
    """Destroy ``oid`` from this node in a background thread."""
    out = []
    t = threading.Thread(target=lambda: out.append(attempt(current_cos().destroy, oid)))
    t.start()
    _destroys[oid] = (t, out)


def destroy_done(oid):
    """Whether the background destroy has returned."""
    return not _destroys[oid][0].is_alive()


def join_destroy(oid):
    """The background destroy's outcome."""
    t, out = _destroys.pop(oid)
    t.join(WAIT)
    return out[0] if out else ("hung", "")


def reps_state(oid):
    """(alive, cleanups) of each rep of ``oid`` created on this node."""
    return [(r.alive, r.cleaned) for r in _reps.get(oid, [])]


def try_ping(oid):
    """Outcome of one ``ping`` call from this node."""
    return attempt(current_cos().call, oid, "ping")


def wait_destroyed_here(oid):
    """Poll (with a deadline) until calls from this node raise ObjectDestroyed; True if they do."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if try_ping(oid)[0] == "ObjectDestroyed":
            return True
        time.sleep(0.001)
    return False


def start_hammer(oid, k):
    """k threads here call ``ping`` in a loop until ObjectDestroyed; each signals its first success."""
    entered, _ = _sync(oid)
    for _ in range(k):
        out = []

        def loop(out=out):
            first, n = True, 0
            while True:
                result = attempt(current_cos().call, oid, "ping")
                if result[0] != "ok":
                    out.append((result[0], n))
                    return
                n += 1
                if first:
                    entered.release()
                    first = False
        t = threading.Thread(target=loop, daemon=True)  # a failing test must not keep the process alive
        t.start()
        _callers.setdefault(oid, []).append((t, out))


# ---- tests -----------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["per_node", "singleton", "group:2"])
class TestDestroyWithBlockedCalls:
    def test_drains_then_frees(self, three_nodes, policy):
        """Destroy waits for the calls in flight on every node, which still see live reps; new calls fail; reps freed once after."""
        oid = three_nodes.run_on(0, create, policy)
        for n in range(NNODES):
            three_nodes.run_on(n, start_callers, oid, 2)
        rep_nodes = [n for n in range(NNODES) if policy == "per_node" or n == 0 or (policy == "group:2" and n == 2)]
        counts = {0: 6} if policy == "singleton" else ({0: 4, 2: 2} if policy == "group:2" else {n: 2 for n in range(NNODES)})
        assert all(three_nodes.run_on(n, wait_entered, oid, k) for n, k in counts.items())
        three_nodes.run_on(1, start_destroy, oid)
        assert all(three_nodes.run_on(n, wait_destroyed_here, oid) for n in range(NNODES))
        assert not three_nodes.run_on(1, destroy_done, oid)  # still draining: the calls hold counts
        assert all(state == (True, 0) for n in rep_nodes for state in three_nodes.run_on(n, reps_state, oid))
        for n in rep_nodes:
            three_nodes.run_on(n, release, oid)
        outcomes = [o for n in range(NNODES) for o in three_nodes.run_on(n, join_callers, oid)]
        assert all(kind == "ok" for kind, _ in outcomes), outcomes
        assert three_nodes.run_on(1, join_destroy, oid) == ("ok", None)
        states = [s for n in rep_nodes for s in three_nodes.run_on(n, reps_state, oid)]
        assert len(states) == len(rep_nodes) and all(s == (False, 1) for s in states)


class TestDestroyUnderLoad:
    def test_calls_succeed_or_fail_cleanly(self, three_nodes):
        """Calls racing a destroy on every node either run on a live rep or raise ObjectDestroyed, then all fail."""
        oid = three_nodes.run_on(0, create, "per_node")
        for n in range(NNODES):
            three_nodes.run_on(n, start_hammer, oid, 2)
        assert all(three_nodes.run_on(n, wait_entered, oid, 2) for n in range(NNODES))
        three_nodes.run_on(2, start_destroy, oid)
        outcomes = [o for n in range(NNODES) for o in three_nodes.run_on(n, join_callers, oid)]
        assert [kind for kind, _ in outcomes] == ["ObjectDestroyed"] * 6, outcomes
        assert all(calls >= 1 for _, calls in outcomes)
        assert three_nodes.run_on(2, join_destroy, oid) == ("ok", None)
        assert all(s == (False, 1) for n in range(NNODES) for s in three_nodes.run_on(n, reps_state, oid))


class TestLateCalls:
    def test_after_destroy(self, three_nodes):
        """After destroy every node's calls raise ObjectDestroyed, a second destroy too, and inspect drops the object."""
        oid = three_nodes.run_on(0, create, "singleton")
        assert three_nodes.run_on(2, try_ping, oid) == ("ok", 0)
        current_cos().destroy(oid)
        assert [three_nodes.run_on(n, try_ping, oid)[0] for n in range(NNODES)] == ["ObjectDestroyed"] * 3
        with pytest.raises(ObjectDestroyed):
            current_cos().destroy(oid)
        assert oid not in current_cos().inspect()

    def test_destroy_before_any_call(self, three_nodes):
        """An object no node has called yet is destroyed at once; later misses fail."""
        oid = three_nodes.run_on(1, create, "per_node")
        three_nodes.run_on(2, start_destroy, oid)
        assert three_nodes.run_on(2, join_destroy, oid) == ("ok", None)
        assert three_nodes.run_on(1, try_ping, oid)[0] == "ObjectDestroyed"


def destroy_with_timeout(oid, timeout):
    """Destroy from this node with a drain timeout; the outcome."""
    return attempt(current_cos().destroy, oid, timeout)


class TestDrainTimeout:
    def test_stuck_call_times_out(self, three_nodes):
        """A call that never ends makes destroy raise DrainTimeout naming the node; the object stays unusable."""
        oid = three_nodes.run_on(0, create, "per_node")
        three_nodes.run_on(2, start_callers, oid, 1)
        assert three_nodes.run_on(2, wait_entered, oid, 1)
        kind, msg = three_nodes.run_on(1, destroy_with_timeout, oid, 0.2)
        assert kind == "DrainTimeout" and "still in flight on node 2" in msg
        assert three_nodes.run_on(0, try_ping, oid)[0] == "ObjectDestroyed"
        three_nodes.run_on(2, release, oid)
        assert three_nodes.run_on(2, join_callers, oid) == [("ok", 2)]
        assert oid not in current_cos().inspect()


def kill_me():
    """SIGKILL this node's process (the reply never comes)."""
    import os
    import signal
    os.kill(os.getpid(), signal.SIGKILL)


def wait_lost(node):
    """Poll (with a deadline) until this node's runtime sees ``node`` as lost."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if node in current_cos().inspect().lost:
            return True
        time.sleep(0.01)
    return False


class TestDestroyAfterNodeLoss:
    @pytest.mark.timeout(60)
    def test_lost_node_counts_as_drained(self):
        """After a node dies, destroy still completes on the live nodes and inspect lists the lost node."""
        with start_nodes(NNODES) as cluster:
            oid = cluster.run_on(0, create, "per_node")
            assert [cluster.run_on(n, try_ping, oid) for n in range(NNODES)] == [("ok", n) for n in range(NNODES)]
            with pytest.raises(NodeLost):
                cluster.run_on(2, kill_me)
            assert cluster.run_on(1, wait_lost, 2)
            view = current_cos().inspect()
            assert view.lost == (2,) and "lost: 2" in str(view)
            cluster.run_on(1, current_cos_destroy, oid)
            assert [cluster.run_on(n, try_ping, oid)[0] for n in (0, 1)] == ["ObjectDestroyed"] * 2
            assert all(s == (False, 1) for n in (0, 1) for s in cluster.run_on(n, reps_state, oid))


def current_cos_destroy(oid):
    """Destroy from this node."""
    current_cos().destroy(oid)


def start_first_callers(oid, k):
    """k threads here call ``ping`` in a loop from the object's very first call until ObjectDestroyed."""
    for _ in range(k):
        out = []

        def loop(out=out):
            n = 0
            while True:
                result = attempt(current_cos().call, oid, "ping")
                if result[0] != "ok":
                    out.append((result[0], n) if result[0] == "ObjectDestroyed" else result)
                    return
                n += 1
        t = threading.Thread(target=loop, daemon=True)  # a failing test must not keep the process alive
        t.start()
        _callers.setdefault(oid, []).append((t, out))


class TestDestroyRacingFirstMisses:
    @pytest.mark.parametrize("policy", ["per_node", "partitioned", "group:2"])
    def test_every_rep_freed_once(self, three_nodes, policy):
        """Destroy racing the first misses on every node: calls end in ObjectDestroyed and every rep ever built is freed exactly once."""
        for _ in range(5):
            oid = three_nodes.run_on(0, create, policy)
            for n in range(NNODES):
                three_nodes.run_on(n, start_first_callers, oid, 2)
            three_nodes.run_on(1, start_destroy, oid)
            assert three_nodes.run_on(1, join_destroy, oid) == ("ok", None)
            outcomes = [o for n in range(NNODES) for o in three_nodes.run_on(n, join_callers, oid)]
            assert [kind for kind, _ in outcomes] == ["ObjectDestroyed"] * 6, outcomes
            assert all(s == (False, 1) for n in range(NNODES) for s in three_nodes.run_on(n, reps_state, oid))


def late_install(oid):
    """Ask the root for this node's entry, let the object be destroyed, then install the answer.

    Returns (error type of the install, whether a rep was built, that rep's (alive, cleanups))."""
    cos = current_cos()
    info = cos._remote(0, "miss", [oid, cos.node])
    cos.destroy(oid)
    before = len(_reps.get(oid, []))
    try:
        cos._install(oid, info)
        kind = "ok"
    except Exception as e:  # noqa: BLE001
        kind = type(e).__name__
    built = _reps.get(oid, [])[before:]
    return kind, info["kind"], [(r.alive, r.cleaned) for r in built]


class TestLateInstall:
    @pytest.mark.parametrize("policy, expect", [("per_node", "rep"), ("singleton", "stub")])
    def test_answer_installed_after_reset(self, three_nodes, policy, expect):
        """A miss answered before destroy but installed after the reset fails with ObjectDestroyed; its rep is freed."""
        oid = three_nodes.run_on(0, create, policy)
        kind, got, built = three_nodes.run_on(1, late_install, oid)
        assert (kind, got) == ("ObjectDestroyed", expect)
        assert built == ([(False, 1)] if expect == "rep" else [])
        assert three_nodes.run_on(1, try_ping, oid)[0] == "ObjectDestroyed"
