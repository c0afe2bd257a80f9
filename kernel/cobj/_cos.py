"""The Clustered Object System (COS) of one node: create, call, miss, destroy, inspect.

Design essay
------------
Object references are integers: ``oid = serial << HOME_BITS | home``, the
home the object was created on.  The home node holds the object's root in
its partition of the miss-handler table (``_roots``).  A migration (_migrate)
moves the root: every node's *home map* (``_homes``) then names the new home,
and ``home_of_object`` reads the map before the oid's bits, so the oid's
encoded home is only the first answer.  Serial 0 is reserved for system ids (0: the transport's
node service, ``COS_OID`` = 1: the COS service below).  Each node has a
translation table ``oid -> entry`` (see _table).  A call looks the oid
up; a missing entry is a miss, handled by the global miss handler
(``_miss``, the same on every node): it forwards the miss to the home (a
remote PPC to the home's COS service, or a direct call on home), where the
root decides by policy what this node gets, records it, and returns what
the node needs to build it (class, name, policy, the rep's starting state).
The node then installs the entry.  Concurrent misses on one node wait for
the first one (one miss per node per object).

Messages between COS instances go to ``COS_OID`` on the target node:

    miss     [oid, node]              root: decide, record, return the entry info
    create   [path, args, policy, name]   home: allocate an oid, construct the root
    destroy  [oid]                    home: run the destroy protocol
    reset    [oid]                    any: install a destroyed entry, drain the old one
    free     [oid]                    any: clean up the rep the old entry held
    table    []                       any: this node's rows for inspection

Calls to an object's reps on other nodes (stubs, keyed calls, the root's
broadcasts) are PPCs on the object's own oid, and so are a rep's forwards
to a root on another node (method ``"root.<name>"``; a dot never starts a
rep method), so the transport counts every PPC per object and method.

Destroy (on home): mark the root destroyed (new misses fail); ``reset`` on
every node in parallel (the entry becomes a DestroyedEntry, so new calls
raise ObjectDestroyed; the old entry is shut and drained of the calls in
flight); once every node has drained, ``free`` on every node (reps'
``cleanup``; ``alive`` goes False), then the root's ``cleanup``.  A miss
that was answered before the mark but installs after the reset finds the
DestroyedEntry and discards its rep, so no rep outlives the protocol.
Destroyed entries stay in the tables (oids are never reused): a late call
raises ObjectDestroyed at once instead of missing to the home.

Hot swap (``set_policy``): an object's policy can change while calls run.
The reason it once could not -- a call back into the object being switched
would wait for the switch, which waits for that call to finish -- is met in
_swap: a mediator stops only the calls a node *starts*; calls that arrive
from another node or come from the root to its reps belong to a call chain
already inside the object and pass.  Messages: ``swap [oid, policy,
timeout]`` to the home runs the protocol; ``swap_interpose``,
``swap_drain``, ``swap_export``, ``swap_commit``, ``swap_abort`` are its
steps on every node (see _swap's essay).  ``migrate [oid, node, timeout]``
moves a singleton to another home with the same protocol (see _migrate's
essay, which also says why the home maps are updated at the commit rather
than the old home forwarding).

Nodes get their COS through ``start_nodes`` of this package: it passes
``attach`` as the net layer's start-up hook, so every node has its COS
before ``ready`` and before any user code runs.
"""

from __future__ import annotations

import itertools
import threading
import time
from time import perf_counter

from ..net import LOST, current_runtime, peek_count as peek, start_mpi_nodes as _start_mpi_nodes, start_nodes as _start_nodes
from . import _lock as lockdebug
from ._policy import (
    ClusteredRep, ClusteredRoot, class_path, instantiate, load_class, parse_policy,
)
from ._table import DRAIN_TIMEOUT, DestroyedEntry, ObjectDestroyed, PartitionedEntry, RepEntry, StubEntry
from ._inspect import EntryView, ReplicationView, entry_row, entry_view, merge_views, root_row
from ._ref import ObjectRef, check_implements, ref_class
from . import _adaptive, _migrate, _swap
from ._swap import MediatorEntry, SwapFailed

HOME_BITS = 8
MAX_HOMES = 1 << HOME_BITS  # the home field of an oid
COS_OID = 1




def home_of(oid: int) -> int:
    """The home node encoded in ``oid``."""
    return oid & (MAX_HOMES - 1)


class _RootRecord:
    """The miss-handler table's entry for one object (on its home)."""

    def __init__(self, root, info: dict) -> None:
        self.root, self.info = root, info
        self.stubs: set[int] = set()
        self.destroyed = False
        self.generation = 0          # bumped by every committed swap (_swap)
        self.swap_done: threading.Event | None = None  # while a swap or migration runs
        self.arriving = False  # imported by a migration to this home, not yet settled
        self.history: list[dict] = []  # every swap and migration: time, from, to, figures
        self.adaptive = None  # the _adaptive.Monitor switching its policy, if it has one

    @property
    def policy(self):
        """The policy in force: the root's (set at creation, by a swap, by a migration's import)."""
        return self.root.policy


class ClusteredObjectSystem:
    """The COS of one node.  Get it with ``current_cos()`` (or ``runtime.cos``)."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.node, self.nnodes = runtime.node_id, runtime.nnodes
        if self.nnodes > MAX_HOMES:
            raise ValueError(f"the COS supports at most {MAX_HOMES} nodes, not {self.nnodes}")
        self._table: dict[int, object] = {}
        self._lock = threading.Lock()  # the table's structure; never held across a call
        self._installing: dict[int, threading.Event] = {}
        self._roots: dict[int, _RootRecord] = {}
        self._serial = itertools.count(1)
        self._doomed: dict[int, object] = {}
        self._root_calls: dict[int, list] = {}  # oid -> [local, remote] counters of root forwards
        self._homes: dict[int, int] = {}  # oid -> home, for every object that ever migrated
        self._moved: dict[int, int] = {}  # oid -> where its root went, on the homes it left
        self._system_ops = {
            "miss": self._homed("miss", self._root_miss), "create": self._create_home,
            "destroy": self._homed("destroy", self._destroy_home), "reset": self._reset, "free": self._free,
            "table": self._table_rows,
            "swap": self._homed("swap", lambda oid, p, t: _adaptive.swap_home(self, oid, p, t)),
            "migrate": self._homed("migrate", lambda oid, n, t: _migrate.migrate_home(self, oid, n, t)),
            "migrate_import": lambda oid, package: _migrate.import_root(self, oid, package),
            "migrate_commit": lambda oid, gen, home: _migrate.commit(self, oid, gen, home),
            "migrate_settle": lambda oid, entry: _migrate.settle(self, oid, entry),
            "migrate_discard": lambda oid: _migrate.discard(self, oid),
            "swap_interpose": lambda oid: _swap.interpose(self, oid),
            "swap_drain": lambda oid, timeout: _swap.drain(self, oid, timeout),
            "swap_export": lambda oid: _swap.export(self, oid),
            "swap_commit": lambda oid, gen: _swap.commit(self, oid, gen),
            "swap_abort": lambda oid: _swap.abort(self, oid),
            "history": self.swap_history,
        }
        self._swap_generation: dict[int, int] = {}  # oid -> the last swap committed here
        _adaptive.install(self)  # the monitors of this node's adaptive objects

    COS_OID = COS_OID
    RootRecord = _RootRecord  # for _migrate, which builds a record on the new home


    # ---- calls ---------------------------------------------------------------------

    def call(self, oid: int, method: str, *args):
        """Call ``method(*args)`` on object ``oid`` through this node's table entry.

        On the node of a rep: a direct method call (local PPC); through a stub:
        a remote PPC.  Raises ObjectDestroyed for a destroyed object and
        AttributeError for a method the object does not have.
        """
        entry = self._table.get(oid)
        if entry is None:
            entry = self._miss(oid)
        return entry.invoke(method, args)

    def ref(self, oid: int, interface: type | None = None):
        """A reference to ``oid``: ``ref.method(*args)`` is ``call(oid, "method", *args)``.

        With ``interface`` (an Interface subclass) the reference is typed by
        it: it has exactly the interface's methods, plus ``on(node)`` and
        ``on_each(nodes)`` (see _ref).  Without, any public method name goes.
        """
        if interface is None:
            return ObjectRef(self, oid)
        return ref_class(interface)(self, oid)

    def dispatch(self, oid: int, method: str, args, payload):
        """Serve a request from another node (registered as the runtime's object dispatcher)."""
        if oid == COS_OID:
            op = self._system_ops.get(method)
            if op is None:
                raise ValueError(f"unknown COS operation {method!r}; accepted: {sorted(self._system_ops)}")
            return op(*args)
        if method.startswith("root."):  # a rep on another node forwarding to this root
            return self._root_call(oid, method[5:], args)
        entry = self._table.get(oid)
        if entry is None:
            entry = self._miss(oid)
        return entry.serve(method, args)

    def _remote(self, node: int, method: str, args: list, timeout: float | None = None):
        """A PPC to the COS service of ``node`` (a direct call when it is this node)."""
        if node == self.node:
            return self._system_ops[method](*args)
        return self.runtime.call(node, COS_OID, method, args, timeout=timeout)

    def _all_nodes(self, method: str, args: list, timeout: float | None = None) -> list:
        """Run COS ``method`` on every live node in parallel; results by node (LOST for a
        node that is gone: its reps and calls died with it); first other error re-raised."""
        rt = self.runtime
        return rt.fan_out(range(self.nnodes), COS_OID, method, args,
                          local=lambda: self._system_ops[method](*args), tolerate_lost=True,
                          timeout=rt.default_timeout if timeout is None else timeout)

    # ---- creation --------------------------------------------------------------------

    def create(self, root_class, *args, policy: str = "singleton", name: str | None = None,
               home: int | None = None) -> "ObjectRef":
        """Create a clustered object; return its reference.

        ``root_class`` is a module-level ClusteredRoot subclass (or its
        ``"module:Qualname"``); ``args`` (msgpack-able) go to its ``__init__``
        on ``home`` (default: this node).  ``policy`` is one of
        ``singleton``, ``per_node``, ``partitioned``, ``group:k`` and must be
        in the class's ``POLICIES``.
        """
        if lockdebug.enabled:
            lockdebug.check_call(f"create of {root_class!r}")
        path = root_class if isinstance(root_class, str) else class_path(root_class)
        home = self.node if home is None else home
        if not isinstance(home, int) or not 0 <= home < self.nnodes:
            raise ValueError(f"home must be a node from 0 to {self.nnodes - 1}, not {home!r}")
        _check_class(load_class(path), parse_policy(policy, self.nnodes))
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string, not {name!r}")
        oid = self._remote(home, "create", [path, list(args), policy, name])
        return ObjectRef(self, oid)

    def _create_home(self, path: str, args: list, policy_text: str, name: str | None) -> int:
        """Allocate an oid on this (home) node and construct the root."""
        cls = load_class(path)
        policy = parse_policy(policy_text, self.nnodes)
        _check_class(cls, policy)
        policy, monitor = _adaptive.initial(policy)  # adaptive: the policy it starts under
        oid = next(self._serial) << HOME_BITS | self.node
        name = name or f"{cls.__name__}-{oid:#x}"
        info = {"name": name, "cls": cls.__qualname__, "path": path, "policy": str(policy), "home": self.node}
        root = instantiate(cls, self, oid, self.node, name, self.node, "root", args, policy)
        with self._lock:
            record = self._roots[oid] = _RootRecord(root, info)
        _adaptive.watch(self, oid, record, monitor)
        return oid

    # ---- misses ----------------------------------------------------------------------

    def _miss(self, oid: int):
        """The global miss handler: get this node's entry for ``oid`` from its root and install it."""
        if not isinstance(oid, int) or oid >> HOME_BITS <= 0 or home_of(oid) >= self.nnodes:
            raise ValueError(f"{oid!r} is not an object reference of this {self.nnodes}-node cluster")
        if lockdebug.enabled:  # a miss is a call to the root: check before it has any effect
            lockdebug.check_call(f"object {oid:#x} (its first call on node {self.node}, a miss)")
        while True:
            with self._lock:
                entry = self._table.get(oid)
                if entry is not None:
                    return entry
                event = self._installing.get(oid)
                mine = event is None
                if mine:
                    event = self._installing[oid] = threading.Event()
            if not mine:
                event.wait()  # the first thread's miss installs (or fails: then retry ours)
                continue
            try:
                entry = self._install(oid, self._remote(self.home_of_object(oid), "miss", [oid, self.node]))
                if entry is not None:
                    return entry
            finally:
                with self._lock:
                    del self._installing[oid]
                event.set()

    def _root_miss(self, oid: int, node: int, passing: bool = False) -> dict:
        """The root's miss handling (on home): decide what ``node`` gets, record it, describe it."""
        with self._lock:
            record = self._roots.get(oid)
        if record is None or record.destroyed:
            raise self._unknown(oid)
        # No wait for a running swap: an answer under the old policy is wrapped by the
        # swap's mediator, or (older generation) discarded by _install after the commit.
        # The decision and its generation are read under the root's lock, where a swap
        # sets both, so an old policy's answer never carries the new generation.
        root = record.root
        with root.lock:  # registering the rep and taking its state are one step for broadcasts
            kind, target = record.policy.decide(node, self.node, self.nnodes)
            info = dict(record.info, kind=kind, target=target, args=[], gen=record.generation)
            if kind == "rep":
                info["args"] = list(root.rep_args(node))
                root._reps.add(node)
            else:
                record.stubs.add(node)
        return info

    def build_entry(self, oid: int, info: dict):
        """This node's entry from the root's answer to a miss (not installed)."""
        if info["kind"] == "stub":
            return StubEntry(self, oid, info, info["target"])
        rep_class = load_class(info["path"]).Rep
        rep = instantiate(rep_class, self, oid, info["home"], info["name"], self.node, "rep", info["args"])
        kind = PartitionedEntry if info["policy"] == "partitioned" else RepEntry
        return kind(self, oid, info, rep)

    def _install(self, oid: int, info: dict):
        """Build and install this node's entry from the root's answer; None if the answer
        is older than a swap this node has seen (the caller asks again)."""
        entry = self.build_entry(oid, info)
        with self._lock:
            current = self._table.get(oid)
            stale = info.get("gen", 0) < self._swap_generation.get(oid, 0)
            late = isinstance(current, DestroyedEntry)
            if not (late or stale or isinstance(current, MediatorEntry)):
                self._table[oid] = entry
        if stale or isinstance(current, MediatorEntry):  # raced a swap: this rep never served a call
            if entry.rep is not None:
                _free_rep(entry.rep)
            return None if stale else current
        if late:  # destroyed between the root's answer and now: this rep never served a call
            if entry.rep is not None:  # a stub has none
                _free_rep(entry.rep)
            raise ObjectDestroyed(f"clustered object {info['name']} ({oid:#x}) has been destroyed")
        return entry

    @staticmethod
    def check_class(cls, policy) -> None:
        """TypeError / ValueError unless ``cls`` is a root class supporting ``policy``."""
        _check_class(cls, policy)

    def home_of_object(self, oid: int) -> int:
        """The home node of ``oid`` (where its root is): this node's home map, updated
        by every migration's commit, else the home the oid was created on."""
        return self._homes.get(oid, oid & (MAX_HOMES - 1))

    def _homed(self, op: str, fn):
        """COS operation ``op`` on an object's root: ``fn(oid, *args)`` here, or, if the
        root has moved away from this node, forwarded to its new home (a request sent
        before its sender learnt of the move, or by code reading the oid's home bits)."""
        def run(oid, *args):
            try:
                if oid not in self._moved or oid in self._roots:
                    return fn(oid, *args)
            except ObjectDestroyed:
                if oid not in self._moved:  # not moved while it ran: it is gone
                    raise
            return self._remote(self._moved[oid], op, [oid, *args])
        return run

    def _unknown(self, oid: int) -> ObjectDestroyed:
        """The error for an oid with no live root here (destroyed, or never created)."""
        if oid >> HOME_BITS < peek(self._serial):
            return ObjectDestroyed(f"clustered object {oid:#x} has been destroyed")
        return ObjectDestroyed(f"no clustered object {oid:#x} was ever created on node {self.node}")

    # ---- root <-> reps ------------------------------------------------------------------

    def call_root(self, oid: int, home: int, method: str, args):
        """A rep forwards ``method(*args)`` to its root: direct on home, remote PPC elsewhere."""
        if lockdebug.enabled:
            lockdebug.check_call(f"root of {oid:#x}.{method}")
        counters = self._root_calls.get(oid) or self._root_calls.setdefault(oid, [itertools.count(), itertools.count()])
        home = self._homes.get(oid, home)  # the caller may name the home the oid was created on
        if home != self.node:
            next(counters[1])
            return self.runtime.call(home, oid, "root." + method, list(args))
        next(counters[0])
        t0 = perf_counter()
        try:
            return self._root_call(oid, method, args)
        finally:
            self.runtime.record_ppc(oid, "root." + method, False, 0, perf_counter() - t0)

    def _root_call(self, oid: int, method: str, args):
        """Run a root method on home (the root exists until every node's calls drained)."""
        with self._lock:
            record = self._roots.get(oid)
        if record is None and oid in self._moved:  # a forward that raced a migration: one more hop
            return self.runtime.call(self._moved[oid], oid, "root." + method, list(args))
        if record is None:
            raise self._unknown(oid)
        root = record.root
        if not isinstance(method, str) or method.startswith("_") or method.startswith("locked_") \
                or not callable(getattr(root, method, None)):
            raise AttributeError(f"root of {record.info['name']} ({oid:#x}) has no method {method!r}")
        return getattr(root, method)(*args)

    def call_rep(self, oid: int, node: int, method: str, *args):
        """Call ``method(*args)`` on the rep of ``oid`` on ``node`` (never re-routed by key):
        a direct call counted as a local PPC when ``node`` is this node, else one remote PPC
        counted as remote.  ObjectDestroyed if the object has been destroyed."""
        self._start_rep_calls(oid, method, int(node != self.node))
        if node == self.node:
            return self._call_local_rep(oid, method, args)
        return self.runtime.call(node, oid, method, list(args))

    def call_reps(self, oid: int, nodes, method: str, args, tolerate_lost: bool = False) -> list:
        """Call ``method(*args)`` on the rep of ``oid`` on each of ``nodes`` in parallel
        (``call_rep`` on each, the remote PPCs sent before any reply is awaited); the
        results in ``nodes`` order (``LOST`` for a lost node if ``tolerate_lost``)."""
        nodes = tuple(nodes)
        self._start_rep_calls(oid, method, sum(n != self.node for n in nodes))
        rt = self.runtime
        return rt.fan_out(nodes, oid, method, list(args), timeout=rt.default_timeout,
                          local=lambda: self._call_local_rep(oid, method, args),
                          tolerate_lost=tolerate_lost)

    def _start_rep_calls(self, oid: int, method: str, remote: int) -> None:
        """Before calling reps of ``oid`` directly: the lock-debug check, then count the
        ``remote`` PPCs among them (local ones count themselves on the rep's entry)."""
        if lockdebug.enabled:
            lockdebug.check_call(f"reps of {oid:#x}.{method}")
        if remote:
            counters = self._root_calls.get(oid) or self._root_calls.setdefault(oid, [itertools.count(), itertools.count()])
            for _ in range(remote):
                next(counters[1])

    def _call_local_rep(self, oid: int, method: str, args):
        """Call this node's rep of ``oid`` directly (never re-routed by key), counted as local."""
        entry = self._table.get(oid) or self._miss(oid)
        if isinstance(entry, MediatorEntry):  # the root's call in a chain inside the object: pass
            return entry.pass_call(method, args, served=False)
        direct = RepEntry.invoke if isinstance(entry, RepEntry) else type(entry).invoke
        return direct(entry, method, args)

    # ---- destroy -----------------------------------------------------------------------

    def destroy(self, oid: int, timeout: float = DRAIN_TIMEOUT) -> None:
        """Destroy object ``oid`` cluster-wide; return when every rep has been freed.

        New misses fail, then every node's entry raises ObjectDestroyed, the
        calls in flight drain (DrainTimeout after ``timeout`` s on a node),
        then reps and root are cleaned up.  ObjectDestroyed if already destroyed.
        Never call it from inside a call on the same object: the drain would
        wait for that call (DrainTimeout).
        """
        if lockdebug.enabled:
            lockdebug.check_call(f"destroy of {oid:#x}")
        home = self.home_of_object(oid)
        self._remote(home, "destroy", [oid, timeout], timeout=None if home == self.node else 2 * timeout + 30)

    def _destroy_home(self, oid: int, timeout: float = DRAIN_TIMEOUT) -> None:
        """The destroy protocol, run on the object's home.  A lost node counts as drained
        and freed: its calls and reps died with it (calls it made that are being served
        elsewhere are counted, and drained, on the serving node's entry)."""
        while True:  # let a running swap or migration finish first: its mediators hold callers
            with self._lock:
                record, moved = self._roots.get(oid), self._moved.get(oid)
                if record is None and moved is not None:
                    break
                if record is None or record.destroyed:
                    raise self._unknown(oid)
                done = record.swap_done
                if done is None:
                    record.destroyed = True
                    break
            done.wait()
        if record is None:  # it migrated while this destroy waited: its new home destroys it
            return self._remote(moved, "destroy", [oid, timeout], timeout=2 * timeout + 30)
        self._all_nodes("reset", [oid, record.info["name"], timeout], timeout=timeout + 30)
        self._all_nodes("free", [oid])
        try:
            record.root.cleanup()
        finally:
            with self._lock:
                del self._roots[oid]

    def _reset(self, oid: int, name: str, timeout: float) -> None:
        """Install a destroyed entry for ``oid`` here, then wait for the old entry's calls to drain."""
        with self._lock:
            old = self._table.get(oid)
            self._table[oid] = DestroyedEntry(oid, name, self.node)
        if old is None or isinstance(old, DestroyedEntry):
            return
        old.shut()
        self._doomed[oid] = old
        old.drain(timeout)

    def _free(self, oid: int) -> None:
        """Clean up the rep the old entry of ``oid`` held (after every node drained)."""
        old = self._doomed.pop(oid, None)
        self._root_calls.pop(oid, None)
        if old is not None and getattr(old, "freed", None) is not None:
            _free_rep(old.freed)

    # ---- hot swap (_swap) and migration (_migrate) ------------------------------------------

    def set_policy(self, oid: int, policy: str, timeout: float = _swap.SWAP_TIMEOUT) -> dict:
        """Switch object ``oid`` to ``policy`` while calls run; return the swap's record
        (time, from, to, seconds, calls that waited and how long).  ValueError for a
        policy the class does not support, ObjectDestroyed, SwapFailed if a node was
        lost or a drain did not finish (the object then keeps its old policy)."""
        if lockdebug.enabled:
            lockdebug.check_call(f"set_policy of {oid:#x}")
        home = self.home_of_object(oid)
        return self._remote(home, "swap", [oid, policy, timeout],
                            timeout=None if home == self.node else 4 * timeout + 30)

    def migrate(self, oid: int, new_home: int, timeout: float = _swap.SWAP_TIMEOUT) -> dict:
        """Move singleton object ``oid`` (root and rep) to node ``new_home`` while calls
        run; references stay valid everywhere.  Returns the migration's history record
        (as set_policy's, with ``from_home``/``to_home``).  ValueError for an object that
        is not a singleton or cannot migrate, or a node that is out of range, lost or
        already its home; SwapFailed if a node was lost on the way (it stays where it was)."""
        if lockdebug.enabled:
            lockdebug.check_call(f"migrate of {oid:#x}")
        _migrate.check_target(self, oid, new_home)
        home = self.home_of_object(oid)
        return self._remote(home, "migrate", [oid, new_home, timeout],
                            timeout=None if home == self.node else 4 * timeout + 30)

    def swap_history(self, oid: int) -> list:
        """The swaps and migrations of ``oid`` so far (asked of its home), oldest first."""
        home = self.home_of_object(oid)
        if home != self.node:
            return self.runtime.call(home, COS_OID, "history", [oid])
        with self._lock:
            record = self._roots.get(oid)
        if record is None and oid in self._moved:  # a request that raced the move: forward it
            return self._remote(self._moved[oid], "history", [oid])
        return [] if record is None else list(record.history)

    # ---- inspection ---------------------------------------------------------------------

    def _table_rows(self) -> dict:
        """This node's inspection rows: its table entries and the roots it is home of."""
        with self._lock:
            entries = [e for e in self._table.values() if not isinstance(e, DestroyedEntry)]
            roots = [r for r in self._roots.values() if not r.destroyed]
        aux = {oid: [peek(c) for c in cs] for oid, cs in list(self._root_calls.items())}
        rows = [entry_row(e, aux.pop(e.oid, (0, 0))) for e in entries]
        # the root's own calls on a home that has no entry for the object
        rows += [[oid, "none", local, 0, remote, 0] for oid, (local, remote) in aux.items()]
        return {
            "node": self.node,
            "entries": rows,
            "roots": [root_row(r.root, r.info, r.stubs, r.history, _adaptive.status(r)) for r in roots],
        }

    def table(self) -> tuple[EntryView, ...]:
        """This node's translation table (live entries, by oid): rep or stub, calls, misses."""
        with self._lock:
            entries = [e for e in self._table.values() if not isinstance(e, DestroyedEntry)]
        return tuple(sorted((entry_view(e) for e in entries), key=lambda v: v.oid))

    def inspect(self) -> ReplicationView:
        """The cluster-wide replication view (every node's table gathered by PPC and merged;
        nodes that are lost are listed in ``view.lost``)."""
        if lockdebug.enabled:
            lockdebug.check_call("inspect")
        tables = self._all_nodes("table", [])
        lost = tuple(n for n, t in enumerate(tables) if t is LOST)
        return merge_views(self.nnodes, [t for t in tables if t is not LOST], lost)


def _check_class(cls, policy) -> None:
    """Refuse a root class that is not a ClusteredRoot or does not support ``policy``."""
    if not (isinstance(cls, type) and issubclass(cls, ClusteredRoot)):
        raise TypeError(f"{cls!r} is not a ClusteredRoot subclass")
    if not (isinstance(cls.Rep, type) and issubclass(cls.Rep, ClusteredRep)):
        raise TypeError(f"{cls.__qualname__}.Rep must be a ClusteredRep subclass, not {cls.Rep!r}")
    kinds = _adaptive.TARGETS if policy.kind == "adaptive" else (policy.kind,)
    if any(kind not in cls.POLICIES for kind in kinds) or policy.kind == "adaptive" and not cls.SWAP:
        raise ValueError(
            f"{cls.__qualname__} does not support policy {str(policy)!r}; accepted: {', '.join(cls.POLICIES)}"
            + (" (adaptive needs singleton, per_node and SWAP = True)" if policy.kind == "adaptive" else ""))
    check_implements(cls.Rep)


def _free_rep(rep) -> None:
    """Run a rep's cleanup and mark it freed."""
    try:
        rep.cleanup()
    finally:
        rep.alive = False


def attach(runtime) -> ClusteredObjectSystem:
    """Create this node's COS for ``runtime``, register its dispatcher; re-read the lock-debug mode."""
    lockdebug.refresh()
    cos = ClusteredObjectSystem(runtime)
    runtime.set_object_dispatcher(cos.dispatch)
    runtime.cos = cos
    return cos


def current_cos() -> ClusteredObjectSystem:
    """The COS of this node: that of ``current_runtime()`` (so it follows nested clusters
    in node 0's process back to the enclosing one when the inner one closes)."""
    cos = getattr(current_runtime(), "cos", None)
    if cos is None:
        raise RuntimeError("no clustered object system: this process is not a node (use start_nodes)")
    return cos


def start_nodes(nnodes: int, transport: str = "unix", **kwargs):
    """``net.start_nodes`` with this package's ``attach`` as the start-up hook:
    every node, node 0 included, has its COS before ``init`` runs."""
    return _start_nodes(nnodes, transport, attach=attach, **kwargs)


def start_mpi_nodes(nnodes: int | None = None, **kwargs):
    """``net.start_mpi_nodes`` with this package's ``attach``: on MPI rank 0, nodes on
    the job's ranks, each with its COS before ``init`` runs."""
    return _start_mpi_nodes(nnodes, attach=attach, **kwargs)


__all__ = [
    "ClusteredObjectSystem", "COS_OID", "attach", "current_cos", "home_of", "start_mpi_nodes", "start_nodes",
]
