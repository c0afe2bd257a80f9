"""Translation-table entries of one node, with existence by reference counts.

Design essay
------------
A node's translation table maps oid -> entry.  An entry is what this node
got from the object's root at its miss: a ``RepEntry`` (a local rep), a
``StubEntry`` (every call becomes a remote PPC to one node), a
``PartitionedEntry`` (a local rep owning a slice; keyed calls for other
slices go to their owner) — or, once the object is destroyed, a
``DestroyedEntry`` whose calls raise ObjectDestroyed.

Existence: every call through an entry holds a count on the entry for the
call's duration.  The counts are ``itertools.count`` objects: ``next()`` on
one is a single C call, atomic under the GIL, so the fast path needs no lock
(two ``next`` calls cost ~60 ns, a lock pair more).  A call does

    next(enter); target = self.rep ... ; (call) ; next(exit)

and bails out with ObjectDestroyed if it finds ``rep`` cleared.  Destroy
(``shut``) first clears ``rep``, then ``drain`` waits until exit == enter.
This is Dekker's pattern: the caller writes enter then reads rep, the
destroyer writes rep then reads the counts; under the GIL's sequentially
consistent interleaving either the caller sees the cleared rep or the
destroyer sees the caller's count.  Reading the exit counter before the
enter counters makes the difference an upper bound of the calls in flight,
so a zero is a true zero.  Counters are read without perturbing them
through ``repr`` (slow, only for drain and inspection).

A typed reference's methods (``through_table``) are the way the objects
call each other: the same lookup and ``invoke`` as ``cos.call``.

Calls are counted by kind from the same counters: ``local`` (made by a
thread of this node and run here), ``served`` (arrived from another node),
``remote`` (left this node as a remote PPC).
"""

from __future__ import annotations

import functools
import itertools
import time
from time import perf_counter_ns

from ..net import chain_stack, in_chain, peek_count as peek
from . import _lock as lockdebug
from ._policy import ClusteredRep, load_class, public_methods
from ._swap import redirect

DRAIN_TIMEOUT = 60.0  # seconds destroy waits for a node's calls in flight


class ObjectDestroyed(LookupError):
    """A call reached a clustered object that has been destroyed."""


class DrainTimeout(TimeoutError):
    """Calls through a destroyed object's entry did not finish in time."""


def _no_method(entry, method) -> AttributeError:
    """The error of a call naming a method a stub must not forward."""
    methods = ", ".join(public_methods(load_class(entry.path).Rep))
    return AttributeError(
        f"clustered object {entry.name} ({entry.oid:#x}, {entry.cls}) has no method {method!r}; "
        f"its methods: {methods}"
    )


def _destroyed(oid: int, name: str, node: int) -> ObjectDestroyed:
    """The error of a call that reached a destroyed object."""
    return ObjectDestroyed(f"clustered object {name} ({oid:#x}) has been destroyed (call on node {node})")


class Entry:
    """Common state: identity for inspection, the counts, method binding."""

    kind = "?"

    def __init__(self, cos, oid: int, info: dict) -> None:
        self.cos, self.oid = cos, oid
        self.name, self.cls, self.policy, self.path = info["name"], info["cls"], info["policy"], info["path"]
        self.home, self.node = info["home"], cos.node
        self.misses = 1
        self.rep = None
        self.swapping = False  # shut for a hot swap (_swap), not destroyed
        self._enter_local = itertools.count()
        self._enter_served = itertools.count()
        self._enter_remote = itertools.count()
        self._exit = itertools.count()
        self._redirected = itertools.count()  # calls that gave their count back early (gone)
        self._methods: dict = {}
        self._hists: dict = {}  # method -> the runtime's lock-free local-call histogram
        self._local_histogram = cos.runtime.counters.local_histogram

    def counts(self) -> tuple[int, int, int]:
        """(local, served, remote) calls through this entry so far."""
        return peek(self._enter_local), peek(self._enter_served), peek(self._enter_remote)

    def in_flight(self) -> int:
        """Calls holding a count on this entry now (an upper bound while calls start)."""
        done = peek(self._exit)
        return sum(self.counts()) + peek(self._redirected) - done

    def gone(self, method: str, args, served: bool):
        """A call found the rep cleared: destroyed (ObjectDestroyed), or shut for a
        hot swap (the call goes back through the table, to the mediator)."""
        if self.swapping:  # give the count back first: a call waiting in the mediator must not hold it
            next(self._exit)
            next(self._redirected)
            return redirect(self, method, args, served)
        raise _destroyed(self.oid, self.name, self.node)

    def shut(self) -> None:
        """Make every call that has not taken the rep yet raise ObjectDestroyed."""
        self.rep = None
        self.target = None

    def drain(self, timeout: float) -> None:
        """Wait until no call holds a count on this (shut) entry; DrainTimeout after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        delay = 0.0002
        while (n := self.in_flight()) > 0:
            if time.monotonic() > deadline:
                raise DrainTimeout(
                    f"destroy of {self.name} ({self.oid:#x}): {n} call(s) still in flight on node "
                    f"{self.node} after {timeout} s"
                )
            time.sleep(delay)  # a poll with a deadline: calls end on their own threads
            delay = min(delay * 2, 0.01)

    def bind(self, rep, method: str):
        """The bound ``method`` of ``rep``, validated and cached (AttributeError naming the accepted ones)."""
        fn = self._methods.get(method)
        if fn is None:
            if not isinstance(method, str) or method.startswith("_") or method.startswith("locked_") \
                    or method in _HIDDEN or not callable(getattr(rep, method, None)):
                raise AttributeError(
                    f"clustered object {self.name} ({self.oid:#x}, {self.cls}) has no method "
                    f"{method!r}; its methods: {', '.join(public_methods(type(rep)))}"
                )
            fn = self._methods[method] = getattr(rep, method)
        return fn


_HIDDEN = frozenset(dir(ClusteredRep))


def through_table(name: str, declared):
    """The method ``name`` of a typed reference (kernel/cobj/_ref.py): look the
    reference's oid up in this node's table (a miss goes to the home) and
    invoke the entry — a direct call on a RepEntry, a remote PPC on a
    StubEntry.  ``declared`` is the interface's declaration (name, docstring,
    signature)."""
    def method(self, *args):
        entry = self._table.get(self.oid)
        if entry is None:
            entry = self.cos._miss(self.oid)
        return entry.invoke(name, args)
    return functools.update_wrapper(method, declared)


class RepEntry(Entry):
    """A local rep: calls are direct method calls on it (local PPCs)."""

    kind = "rep"

    def __init__(self, cos, oid: int, info: dict, rep) -> None:
        super().__init__(cos, oid, info)
        self.rep = self.freed = rep

    def invoke(self, method: str, args):
        """A call by a thread of this node: direct call on the rep, counted as a local PPC."""
        if lockdebug.enabled:
            lockdebug.check_call(f"{self.name} ({self.oid:#x}).{method}")
        next(self._enter_local)
        t0 = perf_counter_ns()
        try:
            rep = self.rep
            if rep is None:
                return self.gone(method, args, False)
            # net.in_chain, inline: this is the local PPC's path, where a call more shows
            stack = chain_stack()
            stack.append(self.oid)
            try:
                return (self._methods.get(method) or self.bind(rep, method))(*args)
            finally:
                stack.pop()
        finally:
            # counted like a remote PPC is: once, failed or not
            hist = self._hists.get(method) or self._hist(method)
            next(hist[((perf_counter_ns() - t0) // 1000).bit_length()])
            next(self._exit)

    def _hist(self, method: str) -> list:
        hist = self._hists[method] = self._local_histogram(self.oid, method)
        return hist

    def serve(self, method: str, args):
        """A call that arrived from another node (the transport counts it as remote)."""
        next(self._enter_served)
        try:
            rep = self.rep
            if rep is None:
                return self.gone(method, args, True)
            return in_chain(self.oid, self._methods.get(method) or self.bind(rep, method), args)
        finally:
            next(self._exit)


class StubEntry(Entry):
    """No rep here: every call is a remote PPC to ``target`` (the home or the group leader)."""

    kind = "stub"

    def __init__(self, cos, oid: int, info: dict, target: int) -> None:
        super().__init__(cos, oid, info)
        self.target = target
        self._call = cos.runtime.call

    def invoke(self, method: str, args):
        """A call by a thread of this node: one remote PPC to the target node."""
        if lockdebug.enabled:
            lockdebug.check_call(f"{self.name} ({self.oid:#x}).{method}")
        if not isinstance(method, str) or method.startswith("root."):
            raise _no_method(self, method)  # "root.*" is the reps' forward to the root
        next(self._enter_remote)
        try:
            target = self.target
            if target is None:
                return self.gone(method, args, False)
            return self._call(target, self.oid, method, list(args))
        finally:
            next(self._exit)

    def serve(self, method: str, args):
        """A call that arrived here although this node only has a stub: forward it."""
        return self.invoke(method, args)


class PartitionedEntry(RepEntry):
    """A local rep owning this node's slice; keyed calls for other slices go to their owner."""

    kind = "rep"

    def __init__(self, cos, oid: int, info: dict, rep) -> None:
        super().__init__(cos, oid, info, rep)
        self.keyed = type(rep).KEYED
        self.partition = type(rep).partition
        self.nnodes = cos.nnodes
        self._call = cos.runtime.call
        self._local_invoke = RepEntry.invoke.__get__(self)

    def owner(self, method: str, args) -> int:
        """The node whose rep owns this call's key (this node for unkeyed methods)."""
        if method in self.keyed and args:
            return self.partition(args[0], self.nnodes)
        return self.node

    def invoke(self, method: str, args):
        """Keyed calls run on the key's owner (remote PPC if elsewhere); others on the local rep."""
        owner = self.owner(method, args)
        if owner == self.node:
            return self._local_invoke(method, args)
        if lockdebug.enabled:
            lockdebug.check_call(f"{self.name} ({self.oid:#x}).{method}")
        if method.startswith("root."):
            raise _no_method(self, method)
        next(self._enter_remote)
        try:
            if self.rep is None:
                return self.gone(method, args, False)
            return self._call(owner, self.oid, method, list(args))
        finally:
            next(self._exit)


class DestroyedEntry:
    """What every node's table holds for a destroyed object: calls raise ObjectDestroyed."""

    kind = "destroyed"

    def __init__(self, oid: int, name: str, node: int) -> None:
        self.oid, self.name, self.node = oid, name, node

    def invoke(self, method: str, args):
        """Raise ObjectDestroyed."""
        raise _destroyed(self.oid, self.name, self.node)

    serve = invoke
