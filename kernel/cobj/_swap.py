"""Hot swap of a live clustered object's policy: the mediator and the protocol.

Design essay
------------
A swap runs on the object's home (``swap_home``), in the phases of K42's
hot-swapping, built on the existence counts the tables already keep:

1. **interpose** (every node, in parallel): the node's entry for the oid is
   replaced by a ``MediatorEntry`` that keeps the old entry, and the old
   entry is shut (its ``rep``/``target`` cleared, ``swapping`` set).  A
   thread that looked the old entry up just before still takes a count on
   it, sees the cleared rep and goes back through the table (Dekker's
   pattern, as for destroy), so it reaches the mediator.  Misses are
   answered under the old policy; the mediator wraps such an entry, or
   the generation check discards it after the commit.
2. **forward, then block**: calls that already hold a count on the old
   entry run to their end.  New calls *started* on a node (``invoke``)
   wait in the mediator.  Calls that *arrive* from another node (``serve``)
   and the root's calls to its reps (``call_rep``/``call_reps``) pass to the
   old rep: a new call is stopped at the mediator of the node that starts
   it, so a request arriving during the swap belongs to a call chain that is
   already inside the object (a stub call in flight, a root broadcasting
   for an ``attach`` in flight): blocking it would deadlock the chain
   against the drain.  A call started on a node passes too when its call
   chain is already inside the object: every call through a rep pushes the
   oid on the thread's call-chain stack, every PPC carries that stack and the
   serving thread runs the handler under it (``net.chain_stack``), so a
   re-entrant call, or a chain A -> B -> A that comes back through another
   object on any node, is recognised where it arrives.  Passing calls are
   counted on the old entry.
3. **drain** (every node): wait until no call holds a count on the old entry.
4. **state transfer**: each old rep's ``swap_export()`` goes to the root's
   ``swap_import(states)``; the root forgets its reps and stubs, takes the
   new policy and bumps the object's swap generation.
5. **commit** (every node): the mediator leaves the table (the next call
   misses and gets an entry of the new policy), the old rep is freed, the
   waiting calls go on.  A miss answered under an older generation is
   discarded at install (it raced the swap) and retried.

Failure (a node lost, a drain that does not finish): every surviving node
puts its old entry back (``abort``), the waiting calls go on under the old
policy, and the swap raises ``SwapFailed`` naming what went wrong.
"""

from __future__ import annotations

import itertools
import threading
import time
from time import perf_counter

from ..net import LOST, chain_stack, in_chain, peek_count as peek
from ._policy import parse_policy

SWAP_TIMEOUT = 60.0  # seconds a node may take to drain its old calls


class SwapFailed(RuntimeError):
    """A hot swap or migration did not complete; the object keeps its old policy and home."""


class MediatorEntry:
    """What a node's table holds for an object while it is being swapped."""

    kind = "mediator"

    def __init__(self, cos, oid: int, old) -> None:
        self.cos, self.oid, self.old = cos, oid, old
        self.rep = getattr(old, "rep", None)          # the old rep, for calls that pass
        self.target = getattr(old, "target", None)    # the old stub's node, for calls that pass
        self.released = threading.Event()
        self.lock = threading.Lock()  # adopt: one entry built per node
        self.waited = itertools.count()
        self.drained = False  # every node drained: no old call chain is left anywhere
        self.wait_starts: list[float] = []  # when each waiting call began (list.append is atomic)
        if old is not None:
            old.swapping = True
            old.shut()

    # inspection reads the old entry's figures
    def counts(self) -> tuple[int, int, int]:
        """The old entry's (local, served, remote) counts."""
        return self.old.counts() if self.old is not None else (0, 0, 0)

    @property
    def misses(self) -> int:
        return self.old.misses if self.old is not None else 0

    def invoke(self, method: str, args):
        """A call started by a thread of this node: wait for the swap to end, then
        go through the table again (the new entry, or the old one after an abort).
        A call whose chain is already inside the object (a re-entrant call, or a
        chain A -> B -> A that came back here through another object) passes to
        the old rep instead: it holds a count somewhere, so waiting would deadlock
        it against the drain.  Once every node has drained (``drained``) such a
        chain entered through a node that committed already: it waits, like ``serve``."""
        if not self.drained and self.oid in chain_stack():
            return self.pass_call(method, args, served=False)
        self.wait()
        return self.cos.call(self.oid, method, *args)

    def serve(self, method: str, args):
        """A call from another node: part of a chain already inside the object, so it passes.
        Once every node has drained (``drained``, set at export) no old chain is left: the
        call was sent by a node that committed already, under the new policy, so it must
        not reach the old rep (its state was exported): it waits for this node's commit."""
        if self.drained:
            self.wait()
            return redirect(self, method, args, True)
        return self.pass_call(method, args, served=True)

    def pass_call(self, method: str, args, served: bool):
        """Run a call on the old rep (or forward it through the old stub), counted on the old entry."""
        old = self.old or self.adopt()
        next(old._enter_served if served else old._enter_local)
        try:
            if self.rep is not None:
                return in_chain(self.oid, old._methods.get(method) or old.bind(self.rep, method), args)
            return self.cos.runtime.call(self.target, self.oid, method, list(args))
        finally:
            next(old._exit)

    def adopt(self):
        """A call of a chain inside the object reached a node that had no entry: build
        one under the old policy (the root answers such a miss at once), as if it had
        been there before the swap, so the chain goes on and the entry is drained and
        exported like the others."""
        with self.lock:
            if self.old is None:
                cos = self.cos
                info = cos._remote(cos.home_of_object(self.oid), "miss", [self.oid, cos.node, True])
                old = cos.build_entry(self.oid, info)
                self.rep, self.target = getattr(old, "rep", None), getattr(old, "target", None)
                old.swapping = True
                old.shut()
                self.old = old
        return self.old

    def wait(self) -> None:
        """Block until the swap commits or aborts (counted: calls that waited, and how long)."""
        if self.released.is_set():
            return
        next(self.waited)
        self.wait_starts.append(time.perf_counter())
        self.released.wait()

    def wait_seconds(self, now: float) -> float:
        """Seconds the calls that waited here spent waiting, if released at ``now``."""
        return sum(now - t for t in self.wait_starts)

    def restore(self) -> None:
        """Give the old entry its rep and target back (abort)."""
        old = self.old
        if old is not None:
            old.rep, old.target, old.swapping = self.rep, self.target, False


def redirect(entry, method: str, args, served: bool):
    """A call that took a count on an entry shut for a swap (or waited in its mediator):
    go through the table again."""
    cos = entry.cos
    current = cos._table.get(entry.oid) or cos._miss(entry.oid)  # the mediator, or what follows it
    return current.serve(method, args) if served else current.invoke(method, args)


# ---- the protocol's steps on each node (COS operations) --------------------------------------

def locked_interpose(cos, oid: int):
    """Put a mediator in this node's table for ``oid`` (call with ``cos._lock`` held)."""
    old = cos._table.get(oid)
    if old is not None and old.kind == "destroyed":
        return None
    if isinstance(old, MediatorEntry):
        raise SwapFailed(f"object {oid:#x} is already being swapped on node {cos.node}")
    mediator = cos._table[oid] = MediatorEntry(cos, oid, old)
    return mediator


def interpose(cos, oid: int) -> bool:
    """Step 1 on this node; False if the object is destroyed here."""
    with cos._lock:
        return locked_interpose(cos, oid) is not None


def drain(cos, oid: int, timeout: float) -> None:
    """Step 3 on this node: wait for the calls holding a count on the old entry."""
    mediator = _mediator(cos, oid)
    deadline, delay = time.monotonic() + timeout, 0.0002
    while mediator.old is not None and (n := mediator.old.in_flight()) > 0:
        if time.monotonic() > deadline:
            raise SwapFailed(f"swap of {mediator.old.name} ({oid:#x}): {n} call(s) still in flight "
                             f"on node {cos.node} after {timeout} s")
        time.sleep(delay)  # a poll with a deadline, as destroy's drain
        delay = min(delay * 2, 0.01)


def export(cos, oid: int):
    """Step 4 on this node: the old rep's state (``swap_export()``), None for a stub or no entry."""
    mediator = _mediator(cos, oid)
    mediator.drained = True  # export runs once every node has drained
    rep = mediator.rep
    return None if rep is None else rep.swap_export()


def commit(cos, oid: int, generation: int) -> list:
    """Step 5 on this node: drop the mediator, free the old rep, let the waiting calls go.
    Returns [calls that waited here, seconds they waited in all]."""
    with cos._lock:
        mediator = cos._table.get(oid)
        cos._swap_generation[oid] = generation
        if isinstance(mediator, MediatorEntry):
            del cos._table[oid]
    if not isinstance(mediator, MediatorEntry):
        return [0, 0.0]
    now = time.perf_counter()
    mediator.released.set()
    if mediator.rep is not None:
        mediator.rep.cleanup()
        mediator.rep.alive = False
    return [peek(mediator.waited), mediator.wait_seconds(now)]


def abort(cos, oid: int) -> None:
    """Undo steps 1-3 on this node: the old entry goes back, the waiting calls go on with it."""
    with cos._lock:
        mediator = cos._table.get(oid)
        if not isinstance(mediator, MediatorEntry):
            return
        mediator.restore()
        if mediator.old is None:
            del cos._table[oid]
        else:
            cos._table[oid] = mediator.old
    mediator.released.set()


def _mediator(cos, oid: int) -> MediatorEntry:
    entry = cos._table.get(oid)
    if not isinstance(entry, MediatorEntry):
        raise SwapFailed(f"node {cos.node} has no swap of {oid:#x} in progress")
    return entry


# ---- the protocol, run on the object's home (ClusteredObjectSystem.set_policy) ---------------

def swap_home(cos, oid: int, policy_text: str, timeout: float, reason: str = "set_policy",
              figures: dict | None = None) -> dict:
    """The swap protocol on the object's home (see the essay); the swap's history record,
    with ``reason`` and, if given, the ``figures`` that caused it (_adaptive)."""
    record, new = start(cos, oid, policy_text)
    old, t0 = str(record.policy), perf_counter()
    try:
        try:
            states = steps(cos, oid, timeout)
        except BaseException as exc:
            cos._all_nodes("swap_abort", [oid])
            raise _swap_error(record, old, policy_text, exc) from exc
        with record.root.lock:  # the new reps start from the imported state
            record.root.policy = new  # laid out for the new policy (a PageDirectory's slices)
            record.root.swap_import([s for s in states if s is not LOST and s is not None])
            record.root._reps.clear()
            record.stubs.clear()
            record.info["policy"] = str(new)
            record.generation += 1
        waits = cos._all_nodes("swap_commit", [oid, record.generation])
    finally:
        done, record.swap_done = record.swap_done, None
        done.set()
    entry = history_entry(old, str(new), cos.node, cos.node, t0, waits, reason)
    if figures is not None:
        entry["figures"] = dict(figures)
    record.history.append(entry)
    return entry


def start(cos, oid: int, policy_text: str | None):
    """Check a swap of ``oid`` to ``policy_text`` (None: a migration, which keeps the
    policy) can start on this home; mark it started.  (record, new policy)."""
    with cos._lock:
        record = cos._roots.get(oid)
        if record is None or record.destroyed:
            raise cos._unknown(oid)
        new = record.policy if policy_text is None else parse_policy(policy_text, cos.nnodes)
        cos.check_class(type(record.root), new)
        if policy_text is not None and not type(record.root).SWAP:  # a migration checks its own
            raise ValueError(f"{record.info['cls']} cannot be hot-swapped (its Root does not set "
                             "SWAP = True: its reps' state has no swap_export / swap_import)")
        if record.swap_done is not None:
            raise SwapFailed(f"{record.info['name']} ({oid:#x}) is already being swapped")
        record.swap_done = threading.Event()
    return record, new


def steps(cos, oid: int, timeout: float) -> list:
    """Interpose, drain, export on every node (the old reps' states by node);
    NodeLost or SwapFailed on the way."""
    rt = cos.runtime
    for method, args in (("swap_interpose", [oid]), ("swap_drain", [oid, timeout]),
                         ("swap_export", [oid])):
        out = rt.fan_out(range(cos.nnodes), cos.COS_OID, method, args,
                         local=lambda m=method, a=args: cos._system_ops[m](*a), timeout=timeout + 30)
    return out


def history_entry(old: str, new: str, from_home: int, to_home: int, t0: float, waits: list,
                  reason: str) -> dict:
    """One record of an object's swap history, from the commit's per-node [waited, seconds]."""
    waits = [w for w in waits if w is not LOST]
    return {"time": time.time(), "from": old, "to": new, "seconds": perf_counter() - t0,
            "waited": sum(w[0] for w in waits), "wait_seconds": sum(w[1] for w in waits),
            "reason": reason, "from_home": from_home, "to_home": to_home}


def _swap_error(record, old: str, new: str, exc: BaseException) -> SwapFailed:
    """The error of a swap that was undone: what failed, and that the old policy stays."""
    return SwapFailed(f"swap of {record.info['name']} ({record.root.oid:#x}) from {old} to {new} failed "
                      f"and was undone (the object keeps policy {old}): {type(exc).__name__}: {exc}")
