"""The Clustered Object System across real node processes: policies, calls, errors, inspection."""

from __future__ import annotations

import pytest

from tornado_dsm.kernel import (
    ClusteredRep, ClusteredRoot, ObjectDestroyed, current_cos,
)
from tornado_dsm.objects import PartitionedCounter, PerNodeCounter, SingletonCounter

from helpers import NNODES, attempt

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(120)]


# ---- helpers that run on a node (module level: nodes import them by name) ------------

def create(cls, policy, home, *args):
    """Create an object of ``cls`` on this node's COS; return its oid."""
    return current_cos().create(cls, *args, policy=policy, home=home).oid


def call(oid, method, *args):
    """Call through this node's COS."""
    return current_cos().call(oid, method, *args)


def try_call(oid, method, *args):
    """``attempt`` of a COS call."""
    return attempt(current_cos().call, oid, method, *args)


def try_create(cls, policy, home):
    """``attempt`` of a COS create."""
    return attempt(create, cls, policy, home)


def view(oid):
    """This node's cluster-wide view of ``oid`` as a plain tuple (None if not live)."""
    v = current_cos().inspect()
    if oid not in v:
        return None
    o = v[oid]
    return (o.policy, o.home, list(o.rep_nodes), list(o.stub_nodes), o.calls_local, o.calls_remote, o.misses)


def inspect_text():
    """The rendered replication view."""
    return str(current_cos().inspect())


def where_am_i_call(oid):
    """Which node ran the call (the rep's node)."""
    return current_cos().call(oid, "where")


# ---- test objects ----------------------------------------------------------------

class WhereRep(ClusteredRep):
    """Reports the node it runs on."""

    def where(self):
        """The node of this rep."""
        self.assert_alive()
        return self.node


class Where(ClusteredRoot):
    """An object whose calls say where they ran, for routing tests."""

    Rep = WhereRep


class LockedCallerRep(ClusteredRep):
    """Breaks the lock rule on purpose."""

    def call_under_lock(self, other):
        """Call ``other`` while holding this object's lock (what the debug mode must catch)."""
        with self.lock:
            return current_cos().call(other, "where")

    def call_after_lock(self, other):
        """The correct pattern: release the lock, then call."""
        with self.lock:
            target = other
        return current_cos().call(target, "where")


class LockedCaller(ClusteredRoot):
    """Root of LockedCallerRep."""

    Rep = LockedCallerRep


# ---- tests ------------------------------------------------------------------------

class TestSingleton:
    def test_calls_run_on_home(self, three_nodes):
        """Every node's calls to a singleton run on its home; one remote PPC per call from elsewhere."""
        oid = three_nodes.run_on(1, create, Where, "singleton", 2)
        assert [three_nodes.run_on(n, where_am_i_call, oid) for n in range(NNODES) for _ in range(2)] == [2] * 6
        policy, home, reps, stubs, local, remote, misses = view(oid)
        assert (policy, home, reps, stubs) == ("singleton", 2, [2], [0, 1])
        assert (local, remote, misses) == (2, 4, 3)

    def test_counter(self, three_nodes):
        """The singleton counter counts every node's increments exactly."""
        oid = three_nodes.run_on(0, create, SingletonCounter, "singleton", 0, 10)
        for n in range(NNODES):
            three_nodes.run_on(n, call, oid, "inc", n + 1)
        assert three_nodes.run_on(2, call, oid, "value") == 16


class TestPerNode:
    def test_reps_created_lazily(self, three_nodes):
        """per_node: a rep appears on a node at its first miss only, and calls stay local."""
        oid = three_nodes.run_on(0, create, Where, "per_node", 0)
        assert view(oid)[2:] == ([], [], 0, 0, 0)
        for _ in range(3):
            assert three_nodes.run_on(2, where_am_i_call, oid) == 2
        assert view(oid)[2:] == ([2], [], 3, 0, 1)
        assert three_nodes.run_on(1, where_am_i_call, oid) == 1
        assert view(oid)[2:] == ([1, 2], [], 4, 0, 2)

    def test_counter_sum_and_broadcast_reset(self, three_nodes):
        """The per-node counter sums every rep's share at the root; reset is broadcast to every rep."""
        oid = three_nodes.run_on(1, create, PerNodeCounter, "per_node", 1, 5)
        for n in range(NNODES):
            for _ in range(n + 1):
                three_nodes.run_on(n, call, oid, "inc")
        assert [three_nodes.run_on(n, call, oid, "value") for n in range(NNODES)] == [11] * 3
        assert view(oid)[5] > 0 and view(oid)[6] == 3  # gathers were remote; one miss per node
        three_nodes.run_on(2, call, oid, "reset")
        assert three_nodes.run_on(0, call, oid, "local_value") == 0
        assert three_nodes.run_on(1, call, oid, "value") == 0


class TestPartitioned:
    def test_keys_go_to_their_owner(self, three_nodes):
        """A keyed call runs on the key's owner node; unkeyed totals are gathered by the root."""
        oid = three_nodes.run_on(0, create, PartitionedCounter, "partitioned", 0)
        for key in range(6):
            assert three_nodes.run_on(key % 2, call, oid, "inc", key, key + 1) == key + 1
        assert three_nodes.run_on(2, call, oid, "get", 4) == 5
        assert three_nodes.run_on(1, call, oid, "value") == sum(range(1, 7))
        assert view(oid)[2] == [0, 1, 2]

    def test_wrong_owner_refused(self, three_nodes):
        """A rep asked directly for a key it does not own refuses (ValueError naming the owner)."""
        oid = three_nodes.run_on(0, create, PartitionedCounter, "partitioned", 0)
        three_nodes.run_on(0, call, oid, "inc", 0)
        kind, msg = three_nodes.run_on(0, attempt, current_cos_call_reps, oid, 0, "get", 1)
        assert kind == "ValueError" and "belongs to node 1" in msg


def current_cos_call_reps(oid, node, method, *args):
    """The root-side direct rep call (bypasses key routing)."""
    return current_cos().call_reps(oid, (node,), method, args)[0]


class TestGroup:
    def test_one_rep_per_group(self, three_nodes):
        """group:2 on 3 nodes: nodes 0 and 1 share the rep on home 1; node 2 has its own."""
        oid = three_nodes.run_on(0, create, Where, "group:2", 1)
        assert [three_nodes.run_on(n, where_am_i_call, oid) for n in range(NNODES)] == [1, 1, 2]
        policy, home, reps, stubs, local, remote, misses = view(oid)
        assert (policy, reps, stubs, local, remote, misses) == ("group:2", [1, 2], [0], 2, 1, 3)

    def test_grouped_counter(self, three_nodes):
        """A per-node counter under group:3 has one rep and still counts exactly."""
        oid = three_nodes.run_on(2, create, PerNodeCounter, "group:3", 2)
        for n in range(NNODES):
            three_nodes.run_on(n, call, oid, "inc", 2)
        assert three_nodes.run_on(0, call, oid, "value") == 6
        assert view(oid)[2] == [2]


class TestErrors:
    def test_bad_policy(self, three_nodes):
        """An unknown policy or a bad group size is refused naming the value and the accepted ones."""
        kind, msg = three_nodes.run_on(1, try_create, Where, "replicated", 0)
        assert kind == "ValueError" and "'replicated'" in msg and "group:k" in msg
        kind, msg = three_nodes.run_on(1, try_create, Where, "group:4", 0)
        assert kind == "ValueError" and "from 1 to the number of nodes (3)" in msg

    def test_policy_not_supported_by_class(self, three_nodes):
        """A class refuses a policy it does not list, naming the ones it accepts."""
        kind, msg = three_nodes.run_on(0, try_create, SingletonCounter, "per_node", 0)
        assert kind == "ValueError" and "accepted: singleton" in msg

    def test_unknown_method(self, three_nodes):
        """An unknown (or private, or locked_) method raises AttributeError listing the methods, also through a stub."""
        oid = three_nodes.run_on(0, create, SingletonCounter, "singleton", 0)
        for node in (0, 2):
            for method in ("nope", "_value", "locked_x", "cleanup", "root.value"):
                kind, msg = three_nodes.run_on(node, try_call, oid, method)
                assert kind == "AttributeError" and repr(method) in msg and "inc, reset, value" in msg, msg

    def test_bad_reference(self, three_nodes):
        """An oid that was never created raises ObjectDestroyed; a malformed one ValueError."""
        assert three_nodes.run_on(1, try_call, (999 << 8) | 2, "where")[0] == "ObjectDestroyed"
        assert three_nodes.run_on(1, try_call, 7, "where")[0] == "ValueError"
        assert three_nodes.run_on(1, try_call, (1 << 8) | 9, "where")[0] == "ValueError"

    def test_bad_home(self, three_nodes):
        """A home outside the cluster is refused naming the node range."""
        kind, msg = three_nodes.run_on(0, try_create, Where, "singleton", 3)
        assert kind == "ValueError" and "0 to 2" in msg


class TestLockDebug:
    def test_call_under_lock_detected(self, three_nodes):
        """A clustered-object call made while holding an object lock raises DSMInternalError naming both objects."""
        target = three_nodes.run_on(0, create, Where, "singleton", 2)
        caller = three_nodes.run_on(0, create, LockedCaller, "per_node", 0)
        for node in range(NNODES):
            kind, msg = three_nodes.run_on(node, try_call, caller, "call_under_lock", target)
            assert kind == "DSMInternalError", msg
            assert f"{target:#x}" in msg and f"LockedCaller-{caller:#x}" in msg

    def test_detected_before_the_miss(self, three_nodes):
        """A first call under a lock is refused before its miss: no node gets an entry for the target."""
        target = three_nodes.run_on(0, create, Where, "per_node", 2)
        caller = three_nodes.run_on(0, create, LockedCaller, "per_node", 0)
        assert three_nodes.run_on(1, try_call, caller, "call_under_lock", target)[0] == "DSMInternalError"
        assert view(target)[2:] == ([], [], 0, 0, 0)

    def test_release_then_call_allowed(self, three_nodes):
        """Releasing the lock before calling is the allowed pattern."""
        target = three_nodes.run_on(0, create, Where, "singleton", 2)
        caller = three_nodes.run_on(0, create, LockedCaller, "per_node", 0)
        assert three_nodes.run_on(1, call, caller, "call_after_lock", target) == 2

    def test_debug_mode_inherited(self, three_nodes):
        """Spawned nodes run in lock-debug mode too (the environment is inherited)."""
        assert all(three_nodes.run_on(n, debug_enabled) for n in range(NNODES))


def debug_enabled():
    """This node's lock-debug mode."""
    from tornado_dsm.kernel.cobj import _lock as _cobj_lock
    return _cobj_lock.enabled


class TestInspect:
    def test_same_view_from_every_node(self, three_nodes):
        """Every node sees the same cluster-wide replication view."""
        oid = three_nodes.run_on(0, create, Where, "group:2", 0)
        three_nodes.run_on(2, where_am_i_call, oid)
        assert len({repr(three_nodes.run_on(n, view, oid)) for n in range(NNODES)}) == 1

    def test_rendered_table(self, three_nodes):
        """str(view) is a table with a header and one row per live object naming its policy."""
        oid = three_nodes.run_on(1, create, Where, "per_node", 1)
        three_nodes.run_on(0, where_am_i_call, oid)
        text = three_nodes.run_on(2, inspect_text)
        assert text.splitlines()[1].split()[:5] == ["oid", "name", "class", "policy", "home"]
        row = next(line for line in text.splitlines() if line.startswith(f"{oid:#x} "))
        assert "Where" in row and "per_node" in row

    def test_view_is_frozen(self, three_nodes):
        """The view is a frozen attrs object."""
        v = current_cos().inspect()
        with pytest.raises(AttributeError):
            v.nnodes = 5


class TestRef:
    def test_proxy(self, three_nodes):
        """ObjectRef calls methods by attribute, compares by oid and destroys."""
        cos = current_cos()
        ref = cos.create(SingletonCounter, 3, home=1)
        assert ref.inc(2) == 5 and ref.call("value") == 5 and ref == cos.ref(ref.oid)
        ref.destroy()
        with pytest.raises(ObjectDestroyed):
            ref.value()


# ---- a replicated object: the root broadcasts invalidations, reps fill on demand ----------

class RegistryRep(ClusteredRep):
    """A cached copy of the root's dict: dropped on invalidation, refilled from the root on demand."""

    def __init__(self, version, data):
        self._version, self._data, self._fills = version, dict(data), 0

    def get(self, key):
        """The value of ``key`` (filling the cache from the root if it was invalidated)."""
        self.assert_alive()
        with self.lock:
            data = self._data
        if data is None:  # never call the root with the lock held
            version, data = self.call_root("snapshot")
            with self.lock:
                self._fills += 1
                if version >= self._version:
                    self._version, self._data = version, data
        return data.get(key)

    def put(self, key, value):
        """Set ``key`` cluster-wide (through the root)."""
        self.assert_alive()
        return self.call_root("put", key, value)

    def invalidate(self, version):
        """Drop the cache if ``version`` is newer (the root's broadcast)."""
        with self.lock:
            if version > self._version:
                self._version, self._data = version, None

    def fills(self):
        """How many times this rep refilled its cache."""
        return self._fills


class Registry(ClusteredRoot):
    """The root holds the dict and its version; every update invalidates every rep."""

    Rep = RegistryRep
    POLICIES = ("per_node", "group")

    def __init__(self):
        self._version, self._data = 0, {}

    def rep_args(self, node):
        """A new rep starts from the current dict (called with the lock held)."""
        return [self._version, self._data]

    def snapshot(self):
        """[version, dict] for a rep refilling on demand."""
        with self.lock:
            return [self._version, dict(self._data)]

    def put(self, key, value):
        """Update, then broadcast the invalidation to every rep (after releasing the lock)."""
        with self.lock:
            self._data[key] = value
            self._version += 1
            version, nodes = self._version, self.locked_rep_nodes()
        self.broadcast("invalidate", version, nodes=nodes)


class TestInvalidateAndFill:
    def test_updates_visible_everywhere(self, three_nodes):
        """After put returns, every rep sees the new value: invalidated by broadcast, refilled once on demand."""
        oid = three_nodes.run_on(0, create, Registry, "per_node", 0)
        assert [three_nodes.run_on(n, call, oid, "get", "a") for n in range(NNODES)] == [None] * 3
        three_nodes.run_on(1, call, oid, "put", "a", 1)
        assert [three_nodes.run_on(n, call, oid, "get", "a") for n in range(NNODES)] == [1] * 3
        assert [three_nodes.run_on(n, call, oid, "get", "a") for n in range(NNODES)] == [1] * 3
        assert [three_nodes.run_on(n, call, oid, "fills") for n in range(NNODES)] == [1] * 3
        three_nodes.run_on(2, call, oid, "put", "a", 2)
        assert [three_nodes.run_on(n, call, oid, "get", "a") for n in range(NNODES)] == [2] * 3

    def test_new_rep_starts_filled(self, three_nodes):
        """A rep created after updates starts from the root's state and never needs a fill."""
        oid = three_nodes.run_on(0, create, Registry, "per_node", 1)
        three_nodes.run_on(1, call, oid, "put", "k", "v")
        assert three_nodes.run_on(2, call, oid, "get", "k") == "v"
        assert three_nodes.run_on(2, call, oid, "fills") == 0


def race(oid, method, nthreads, per_thread, *args):
    """``nthreads`` threads released together each call ``method`` ``per_thread`` times; errors returned."""
    import threading
    barrier, errors = threading.Barrier(nthreads), []

    def run():
        barrier.wait(30)
        try:
            for _ in range(per_thread):
                current_cos().call(oid, method, *args)
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    threads = [threading.Thread(target=run) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return errors


class TestConcurrentMisses:
    @pytest.mark.parametrize("policy", ["per_node", "singleton", "partitioned"])
    def test_one_miss_per_node(self, three_nodes, policy):
        """Threads racing their node's first call on an object cause exactly one miss per node."""
        cls = {"per_node": PerNodeCounter, "singleton": SingletonCounter, "partitioned": PartitionedCounter}[policy]
        oid = three_nodes.run_on(0, create, cls, policy, 1)
        args = (0,) if policy == "partitioned" else ()
        assert three_nodes.run_on_all(race, oid, "inc", 8, 1, *args) == [[]] * NNODES
        assert view(oid)[6] == NNODES


class TestConcurrentCounting:
    @pytest.mark.parametrize("policy", ["per_node", "singleton", "group:2"])
    def test_no_increment_lost(self, three_nodes, policy):
        """Concurrent increments from threads on every node are all counted."""
        cls = SingletonCounter if policy == "singleton" else PerNodeCounter
        oid = three_nodes.run_on(0, create, cls, policy, 2)
        assert three_nodes.run_on_all(race, oid, "inc", 4, 50) == [[]] * NNODES
        assert three_nodes.run_on(1, call, oid, "value") == NNODES * 4 * 50


def bench_local(n):
    """local_ppc_seconds on this node."""
    from tornado_dsm.kernel import local_ppc_seconds
    return local_ppc_seconds(n)


class TestLocalPpcSeconds:
    def test_times_and_cleans_up(self, three_nodes):
        """The local-PPC timer returns a positive time per call on any node and leaves no object behind."""
        assert three_nodes.run_on(1, bench_local, 1000) > 0
        assert not any(v.name == "bench-null" for v in current_cos().inspect().objects)


def local_table(oid):
    """This node's table entry for ``oid`` as (kind, local, served, remote, misses), or None."""
    for e in current_cos().table():
        if e.oid == oid:
            return (e.kind, e.calls_local, e.served, e.calls_remote, e.misses)
    return None


class TestNodeTable:
    def test_each_node_lists_its_entries(self, three_nodes):
        """Each node's own table shows its rep or stub and the calls through it (served on the rep's node)."""
        oid = three_nodes.run_on(0, create, Where, "singleton", 1)
        assert three_nodes.run_on(0, local_table, oid) is None
        for n in (0, 0, 2, 1):
            three_nodes.run_on(n, where_am_i_call, oid)
        assert [three_nodes.run_on(n, local_table, oid) for n in range(NNODES)] == [
            ("stub", 0, 0, 2, 1), ("rep", 1, 3, 0, 1), ("stub", 0, 0, 1, 1)]


class TestCallRep:
    """``cos.call_rep``: the rep on one node, counted like ``call_reps`` counts."""

    def test_local_call_counted_as_local(self, cluster_factory):
        """On this node's rep, call_rep is a direct call counted as a local PPC (table, view, transport)."""
        cluster_factory(2)
        cos = current_cos()
        oid = cos.create(Where, policy="per_node").oid
        assert cos.call_rep(oid, 0, "where") == 0
        assert local_table(oid) == ("rep", 1, 0, 0, 1)
        assert view(oid)[4:] == (1, 0, 1)
        assert cos.runtime.ppc_statistics().get(oid, "where", "local").calls == 1

    def test_remote_call_counted_as_remote(self, cluster_factory):
        """On another node's rep, call_rep is one remote PPC: remote for the caller, served there."""
        nodes = cluster_factory(2)
        cos = current_cos()
        oid = cos.create(Where, policy="per_node").oid
        assert cos.call_rep(oid, 1, "where") == 1
        assert view(oid)[2:] == ([1], [], 0, 1, 1)
        assert nodes.run_on(1, local_table, oid) == ("rep", 0, 1, 0, 1)
        assert cos.runtime.ppc_statistics().get(oid, "where", "remote").calls == 1

    def test_destroyed_object_raises(self, cluster_factory):
        """After destroy, call_rep raises ObjectDestroyed, on this node and through a remote PPC."""
        cluster_factory(2)
        cos = current_cos()
        ref = cos.create(Where, policy="per_node")
        assert [cos.call_rep(ref.oid, n, "where") for n in (0, 1)] == [0, 1]
        ref.destroy()
        for node in (0, 1):
            with pytest.raises(ObjectDestroyed):
                cos.call_rep(ref.oid, node, "where")
