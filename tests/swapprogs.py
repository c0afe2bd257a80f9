"""What test_swap and test_migrate share: a small swappable, migratable clustered
object (``Tally``), programs that run on nodes (module level, so nodes import them by
name), and the test-side helpers that run faults on every node while swaps run."""

from __future__ import annotations

import threading
import time

import numpy as np

import clusterprogs as progs
import tornado_dsm as td
from tornado_dsm.kernel import ClusteredRep, ClusteredRoot, Interface, current_cos
from tornado_dsm.kernel.cobj._swap import MediatorEntry

WAIT = 60.0  # upper bound of every node-side wait (a failing test must not hang)
PAGES = 8


# ---- Tally: a counter whose count survives swaps and migrations --------------------------

class Counter(Interface):
    """The calls of a Tally."""

    def bump(self) -> int:
        """Add one to this rep's count; return the node that ran it."""
        ...

    def count(self) -> int:
        """This rep's count."""
        ...


_entered = threading.Semaphore(0)   # node 0 (the test process): a hold call is inside the object
_release = threading.Event()        # node 0: let the hold calls return


class TallyRep(ClusteredRep, Counter):
    """Counts bumps; ``hold`` blocks inside the object until released (node 0 only)."""

    def __init__(self, carried: int = 0) -> None:
        self.n = carried

    def bump(self) -> int:
        self.assert_alive()
        self.n += 1
        return self.node

    def count(self) -> int:
        return self.n

    def ping(self) -> int:
        """The node this rep is on."""
        return self.node

    def hold(self) -> int:
        """Signal entry, block until node 0's test releases, return the node."""
        _entered.release()
        _release.wait(WAIT)
        return self.node

    def chain(self, relay: int) -> int:
        """Signal entry, wait for node 0's release, then call back into this object
        through the Relay ``relay`` (a chain X -> Relay -> X): the node the call-back ran on."""
        _entered.release()
        _release.wait(WAIT)
        return current_cos().call(relay, "relay", self.oid)

    def swap_export(self) -> int:
        return self.n


class Tally(ClusteredRoot):
    """Root of TallyRep: the count of retired reps goes to the first new rep."""

    Rep = TallyRep
    POLICIES = ("singleton", "per_node")
    SWAP = MIGRATE = True

    def __init__(self) -> None:
        self.carried = 0

    def rep_args(self, node: int) -> list:
        carried, self.carried = self.carried, 0
        return [carried]

    def swap_import(self, states: list) -> None:
        self.carried += sum(states)

    def migrate_export(self) -> int:
        return self.carried

    def migrate_import(self, state: int) -> None:
        self.carried = state


class Rooted(Tally):
    """A Tally that cannot migrate (its root sets no MIGRATE)."""

    MIGRATE = False


class RelayRep(ClusteredRep):
    """Calls back into another object from wherever its rep is."""

    def relay(self, oid: int) -> int:
        """``ping`` object ``oid`` from this node: the node the ping ran on."""
        return current_cos().call(oid, "ping")


class Relay(ClusteredRoot):
    """Root of RelayRep (no state)."""

    Rep = RelayRep
    POLICIES = ("singleton", "per_node")

    def rep_args(self, node: int) -> list:
        return []


def start_chain(oid: int, relay: int) -> tuple[threading.Thread, list]:
    """On node 0: a thread whose ``chain`` call is inside ``oid`` once this returns (held
    there until ``release_hold``), and the list its result goes to."""
    _release.clear()
    out: list = []
    t = threading.Thread(target=lambda: out.append(current_cos().call(oid, "chain", relay)))
    t.start()
    assert _entered.acquire(timeout=WAIT), "the chain call did not enter the object"
    return t, out


def start_hold(oid: int) -> threading.Thread:
    """On node 0: a thread whose ``hold`` call is inside the object once this returns."""
    _release.clear()
    t = threading.Thread(target=current_cos().call, args=(oid, "hold"))
    t.start()
    assert _entered.acquire(timeout=WAIT), "the hold call did not enter the object"
    return t


def release_hold(t: threading.Thread) -> None:
    """On node 0: let the hold call return, and join its thread."""
    _release.set()
    t.join(WAIT)


# ---- programs run on nodes -----------------------------------------------------------------

_saved: dict[int, tuple] = {}  # oid -> (untyped, typed) references taken on this node


def take_refs(oid: int) -> int:
    """Take an untyped and a typed reference to ``oid`` here and bump through both: the node."""
    cos = current_cos()
    refs = _saved[oid] = (cos.ref(oid), cos.ref(oid, Counter))
    refs[0].bump()
    return refs[1].bump()


def bump_saved(oid: int) -> int:
    """Bump through the references ``take_refs`` took here: the node the rep is on."""
    untyped, typed = _saved[oid]
    untyped.bump()
    return typed.bump()


def bump(oid: int, times: int = 1) -> int:
    """Bump ``oid`` ``times`` times from this node: the node the last one ran on."""
    cos = current_cos()
    return [cos.call(oid, "bump") for _ in range(times)][-1]


def mediated(oid: int) -> bool:
    """Whether this node's table holds a mediator for ``oid`` (a swap is under way here)."""
    return isinstance(current_cos()._table.get(oid), MediatorEntry)


def total(c, oid: int) -> int:
    """The object's count over every rep it has (and the count its root carries)."""
    cos = current_cos()
    view = c.inspect()[oid]
    return sum(cos.call_rep(oid, n, "count") for n in view.rep_nodes) + _carried(c, oid)


def _carried(c, oid: int) -> int:
    """What the object's root carries for the next new rep (read on its home)."""
    return c.run(carried_here, oid, on=[c.inspect()[oid].home], threads=1)[0]


def carried_here(oid: int) -> int:
    """The count the root of ``oid`` (on this node) carries."""
    return current_cos()._roots[oid].root.carried


# ---- test side: faults on every node while something runs ----------------------------------

def await_mediators(c, oid: int, nodes, within: float = WAIT) -> None:
    """Return once every node of ``nodes`` has a mediator for ``oid`` in its table."""
    deadline = time.monotonic() + within
    while not all(c.run(mediated, oid, on=list(nodes), threads=1)):
        assert time.monotonic() < deadline, f"no mediator for {oid:#x} on nodes {nodes}"
        time.sleep(0.005)


def expected_words(a: np.ndarray, counts: list) -> bool:
    """Every node's word of every page holds the last value churn_pages wrote there."""
    for node, n in enumerate(counts):
        for p in range(PAGES):
            last = max((k for k in range(p, n, PAGES)), default=0)
            if n > p and int(a[p * 512 + node]) != last:
                return False
    return True


def churn_while(c, a, stop, work, program=progs.churn_pages) -> list:
    """Run ``program`` (churn_pages) on every node while ``work()`` runs on node 0; the writes made."""
    out = []
    runner = threading.Thread(target=lambda: out.append(c.run(program, a, stop, threads=1)))
    runner.start()
    try:
        await_writers(c, a)
        work()
    finally:
        stop[0] = 1
        runner.join(120)
    return out[0]


def await_writers(c, a, within: float = WAIT) -> None:
    """Return once every node has written (its word of page 1 holds 1 or more), so the
    swaps that follow run while all nodes fault, not before they start."""
    deadline = time.monotonic() + within
    while not all(a[512 + n] > 0 for n in range(c.nnodes)):
        assert time.monotonic() < deadline, "the writers did not start"
        time.sleep(0.001)


def waiting(oid: int) -> bool:
    """Whether a call started here waits in this node's mediator for ``oid``."""
    from tornado_dsm.kernel.net import peek_count
    entry = current_cos()._table.get(oid)
    return isinstance(entry, MediatorEntry) and peek_count(entry.waited) > 0


def churn_mixed(a, stop):
    """churn_pages on the first PAGES pages (shared: every node writes its word of each), and
    this node's own page after them (distinct: word n % 512 gets n), read back at once."""
    me, n = td.current_node(), 0
    mine = (PAGES + me) * 512
    while n % 64 or not stop[0]:
        a[(n % PAGES) * 512 + me] = n
        a[mine + n % 512] = n
        assert a[mine + n % 512] == n, f"node {me} lost its write {n}"
        n += 1
    return n


def expected_private(a: np.ndarray, counts: list) -> bool:
    """Every node's own page (churn_mixed) holds the last value written to each word."""
    for node, n in enumerate(counts):
        words = a[(PAGES + node) * 512:(PAGES + node + 1) * 512]
        for i in range(min(n, 512)):
            if int(words[i]) != max(range(i, n, 512)):
                return False
    return True


def churn_mixed_while(c, a, stop, work) -> list:
    """Run churn_mixed on every node while ``work()`` runs on node 0; the writes made."""
    return churn_while(c, a, stop, work, churn_mixed)


POLICY_OF = {"centralized": "singleton", "fixed": "partitioned"}  # a directory's policy by manager
