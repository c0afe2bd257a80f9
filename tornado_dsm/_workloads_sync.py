"""The lock and barrier workloads: node functions and drivers.

``lock`` (one lock of ``workload.lock``, ``workload.padding``, one slot per
thread) and a data page holding a counter.  The driver runs, in order:

1. warm-up (not measured): every thread acquires once and increments the
   counter, so slots are claimed and every page has been touched;
2. uncontended (timed, not in the statistics): thread 0 of the highest
   node (node 0 on one node), alone, makes ``threads + 1`` unmeasured
   acquire+release pairs (the lock's pages come to its node: anderson
   cycles through every flag), then ``workload.ops`` timed ones;
3. ``workload.repeats`` contended passes (measured): every thread starts
   at the same instant and acquires, increments the counter (a plain,
   non-atomic read and write of a shared page: the critical section) and
   releases until ``workload.seconds`` have passed (at least once).  Each
   thread returns the counter values it saw; together they must be
   exactly the values from the pass's first to its last, each once (else
   mutual exclusion failed: AssertionError).  Their order says which node
   held the lock for each entry, so the hand-overs between nodes are
   counted;
4. ``workload.repeats`` FIFO probes (not measured; with at least
   PROBE_THREADS threads): one thread takes the lock, the others call
   acquire one by one PROBE_GAP_S apart (a seeded order; their arrival
   is stamped), the holder lets go after the last arrival; an entry that
   overtook a thread which arrived earlier and was still waiting is out
   of order.

``barrier`` (one barrier of ``workload.barrier`` for every thread): a
warm-up episode, then ``workload.repeats`` measured passes of
``workload.ops`` episodes that every party starts at the same instant;
every party must see the same episode numbers, each once.

Passes start at an instant of CLOCK_MONOTONIC, which every node process of
this machine shares, instead of at a start barrier: nothing but the lock or
barrier makes traffic in the measured figures.  The atomic read-modify-writes
and acquires/episodes are the nodes' counters (`_syncspace.counters`), read
on every node before and after the measured passes.
"""

from __future__ import annotations

import sys
import threading
import time
from time import perf_counter

import attrs
import numpy as np

import tornado_dsm as td

from ._barriers import TREE_FANIN, rounds, tree_levels
from ._syncspace import counters

START_DELAY_S = 0.05   # from the driver's call to the common start of a pass
PROBE_GAP_S = 0.02     # between two arrivals of the FIFO probe (a doorway takes ~1 ms)
PROBE_THREADS = 3      # the probe needs two waiters (one cannot be overtaken): none below
SYNC_TIMEOUT_S = 60.0  # an acquire or wait longer than this is a broken lock or barrier
SWITCH_INTERVAL_S = 5e-5  # GIL switch interval while threads contend for a page (FastSwitch)


# The results of the measured steps have _workloads.ThreadResult's fields (node,
# thread, ops, seconds, checksum: what RunContext adds up) and some of their own.

@attrs.frozen
class LockThread:
    """One thread's contended pass: acquisitions (ops), seconds, and the
    counter values it saw in its critical sections (in its order)."""

    node: int
    thread: int
    ops: int
    seconds: float
    checksum: float = 0.0
    positions: tuple = ()
    late_s: float = 0.0      # how late the thread reached the common start (negative: early)


@attrs.frozen
class BarrierThread:
    """One party's measured pass: episodes (ops), seconds, the episode numbers it got."""

    node: int
    thread: int
    ops: int
    seconds: float
    checksum: float = 0.0
    first: int = -1
    last: int = -1
    late_s: float = 0.0


def _me() -> tuple[int, int]:
    return td.current_node(), td.current_thread()


def _until(t: float) -> float:
    """Sleep until CLOCK_MONOTONIC reaches ``t``; how late the caller came (s)."""
    late = time.monotonic() - t
    while (left := t - time.monotonic()) > 0:
        time.sleep(left - 1e-3 if left > 2e-3 else 0)
    return late


class FastSwitch:
    """A short GIL switch interval while threads contend for pages: a node's PPC
    server can hand a page on only when it gets the GIL (see false_share).  The
    first thread of a node in sets it, the last one out puts the old one back."""

    _guard = threading.Lock()
    _inside = 0
    _saved = 0.0

    def __enter__(self):
        with self._guard:
            if FastSwitch._inside == 0:
                FastSwitch._saved = sys.getswitchinterval()
                sys.setswitchinterval(SWITCH_INTERVAL_S)
            FastSwitch._inside += 1

    def __exit__(self, *exc):
        with self._guard:
            FastSwitch._inside -= 1
            if FastSwitch._inside == 0:
                sys.setswitchinterval(FastSwitch._saved)


def sync_counters(uid: int) -> tuple[int, int]:
    """(acquires or episodes, atomic RMWs) this node made for object ``uid``."""
    return counters(uid)


# ---- lock ------------------------------------------------------------------------------

def _critical(lock, counter) -> int:
    """Acquire, increment the shared counter with a plain read and write, release."""
    lock.acquire(timeout=SYNC_TIMEOUT_S)
    n = int(counter[0])
    counter[0] = n + 1
    lock.release()
    return n


def lock_warm(lock, counter) -> int:
    """Warm-up: claim this thread's slot, touch the lock's pages and the counter."""
    return _critical(lock, counter)


def lock_alone(lock, warm: int, ops: int) -> float:
    """``warm`` unmeasured, then ``ops`` timed acquire+release pairs: µs per pair."""
    for _ in range(warm):
        lock.acquire(timeout=SYNC_TIMEOUT_S)
        lock.release()
    t0 = perf_counter()
    for _ in range(ops):
        lock.acquire(timeout=SYNC_TIMEOUT_S)
        lock.release()
    return (perf_counter() - t0) / ops * 1e6


def lock_pass(lock, counter, start: float, seconds: float) -> LockThread:
    """From ``start`` on, critical sections until ``seconds`` have passed (at
    least one, also for a thread that reached the start too late)."""
    node, thread = _me()
    seen = []
    with FastSwitch():
        late = _until(start)
        end, t0 = start + seconds, perf_counter()
        seen.append(_critical(lock, counter))
        while time.monotonic() < end:
            seen.append(_critical(lock, counter))
        elapsed = perf_counter() - t0
    return LockThread(node, thread, len(seen), elapsed, float(len(seen)), tuple(seen), late)


def lock_probe(lock, counter, start: float, order: list, tpn: int) -> tuple:
    """FIFO probe: the thread at place k of ``order`` calls acquire at start + k
    gaps; place 0 holds the lock until every other has called acquire.
    Returns (global thread, arrival stamp, counter value at entry)."""
    node, thread = _me()
    g = node * tpn + thread
    k = order.index(g)
    with FastSwitch():
        _until(start + k * PROBE_GAP_S)
        arrived = time.monotonic()
        lock.acquire(timeout=SYNC_TIMEOUT_S)
        n = int(counter[0])
        counter[0] = n + 1
        if k == 0:
            _until(start + len(order) * PROBE_GAP_S)
        lock.release()
    return g, arrived, n


def _node_counters(ctx, uid: int) -> tuple[int, int]:
    """(acquires or episodes, RMWs) summed over the nodes."""
    per_node = ctx.cluster.run(sync_counters, uid, threads=1)
    return sum(c[0] for c in per_node), sum(c[1] for c in per_node)


def out_of_order(arrivals: list) -> int:
    """Entries (in entry order, by arrival stamp) that overtook an earlier,
    still waiting arrival: those whose stamp is not the smallest of the rest."""
    late, smallest = 0, float("inf")
    for a in reversed(arrivals):
        if a > smallest:
            late += 1
        smallest = min(smallest, a)
    return late


def drive_lock(ctx, s) -> None:
    """Warm-up, uncontended latency, contended passes, FIFO probes (module docstring).
    Leaves the raw figures in ``ctx.sync``; the report divides the measured
    statistics (the contended passes' only) by them."""
    nodes, tpn = s["cluster.nodes"], s["cluster.threads_per_node"]
    threads = nodes * tpn
    lock = ctx.cluster.lock(s["workload.lock"], padding=s["workload.padding"], threads=threads)
    counter = ctx.region(1)
    ctx.step(lock_warm, lock, counter, measured=False, label="warm-up")
    done = threads
    alone = ctx.step(lock_alone, lock, threads + 1, s["workload.ops"], on=[nodes - 1], threads=1,
                     measured=False, label="uncontended")
    uid = lock.space.uid
    acq0, rmw0 = _node_counters(ctx, uid)
    per_thread: dict = {}
    entries = handovers = 0
    wall = late = 0.0
    for r in range(s["workload.repeats"]):
        results = ctx.step(lock_pass, lock, counter, time.monotonic() + START_DELAY_S,
                           float(s["workload.seconds"]), label=f"contended pass {r + 1}")
        n, holders = _check_pass(lock, results, done)
        done += n
        entries += n
        handovers += sum(1 for a, b in zip(holders, holders[1:]) if a != b)
        wall += max(t.seconds for t in results)
        late = max([late] + [t.late_s for t in results])
        for t in results:
            per_thread[(t.node, t.thread)] = per_thread.get((t.node, t.thread), 0) + t.ops
    acq1, rmw1 = _node_counters(ctx, uid)
    probes = []
    for r in range(s["workload.repeats"] if threads >= PROBE_THREADS else 0):
        order = np.random.default_rng(s["workload.seed"] + r).permutation(threads).tolist()
        results = ctx.step(lock_probe, lock, counter, time.monotonic() + START_DELAY_S, order, tpn,
                           measured=False, label=f"FIFO probe {r + 1}")
        probes.append(sorted(results, key=lambda x: x[2]))   # in entry order
        done += len(results)
    final = int(counter[0])
    if final != done:
        raise AssertionError(f"{lock.name}: the counter holds {final} after {done} critical sections: "
                             f"{done - final} increments were lost (mutual exclusion failed)")
    if acq1 - acq0 != entries:
        raise AssertionError(f"{lock.name}: the nodes counted {acq1 - acq0} acquires in the contended "
                             f"passes, the critical sections {entries}")
    ctx.sync = {
        "kind": "lock", "algorithm": lock.kind, "padding": s["workload.padding"], "threads": threads,
        "space_pages": lock.space.npages, "uncontended_us": float(alone[0]), "uncontended_node": nodes - 1,
        "acquisitions": entries, "seconds": wall, "start_late_s": late, "handovers": handovers,
        "rmws": rmw1 - rmw0, "per_thread": [per_thread[k] for k in sorted(per_thread)],
        "probe_entry_orders": [[g for g, _a, _n in p] for p in probes],
        "probe_arrival_ms": [[(a - min(x[1] for x in p)) * 1e3 for _g, a, _n in p] for p in probes],
        "probe_handovers": sum(max(0, len(p) - 1) for p in probes),
        "probe_out_of_order": sum(out_of_order([a for _g, a, _n in p]) for p in probes),
    }


def _check_pass(lock, results: list, first: int) -> tuple[int, list]:
    """(critical sections of the pass, the node of each in entry order); AssertionError
    unless the counter values seen are exactly first, first + 1, ..., each once."""
    seen = {}
    for t in results:
        for n in t.positions:
            if n in seen:
                raise AssertionError(f"{lock.name}: two critical sections read the counter as {n} "
                                     f"(on node {seen[n]} and node {t.node}): mutual exclusion failed")
            seen[n] = t.node
    count = len(seen)
    if count == 0:
        raise AssertionError(f"{lock.name}: no thread made a critical section in the contended pass")
    if min(seen) != first or max(seen) != first + count - 1:
        raise AssertionError(f"{lock.name}: the pass's critical sections read the counter from {min(seen)} "
                             f"to {max(seen)}, expected {first} to {first + count - 1}: an increment was lost")
    return count, [seen[first + i] for i in range(count)]


# ---- barrier ---------------------------------------------------------------------------

def barrier_warm(barrier) -> int:
    """Warm-up episode: claim this party's slot, touch the barrier's pages."""
    return barrier.wait(timeout=SYNC_TIMEOUT_S)


def barrier_pass(barrier, start: float, episodes: int) -> BarrierThread:
    """From ``start`` on, ``episodes`` episodes of the barrier."""
    node, thread = _me()
    with FastSwitch():
        late = _until(start)
        t0 = perf_counter()
        first = last = barrier.wait(timeout=SYNC_TIMEOUT_S)
        for _ in range(episodes - 1):
            last = barrier.wait(timeout=SYNC_TIMEOUT_S)
        elapsed = perf_counter() - t0
    return BarrierThread(node, thread, episodes, elapsed, float(first), first, last, late)


def drive_barrier(ctx, s) -> None:
    """A warm-up episode, then repeats passes of ops episodes (module docstring)."""
    parties = s["cluster.nodes"] * s["cluster.threads_per_node"]
    episodes = s["workload.ops"]
    barrier = ctx.cluster.barrier(parties, kind=s["workload.barrier"], padding=s["workload.padding"])
    ctx.step(barrier_warm, barrier, measured=False, label="warm-up")
    uid = barrier.space.uid
    ep0, rmw0 = _node_counters(ctx, uid)
    wall, late, expected = 0.0, 0.0, 1
    for r in range(s["workload.repeats"]):
        results = ctx.step(barrier_pass, barrier, time.monotonic() + START_DELAY_S, episodes,
                           label=f"pass {r + 1}")
        seen = {(t.first, t.last) for t in results}
        if seen != {(expected, expected + episodes - 1)} or len(results) != parties:
            raise AssertionError(f"{barrier.name}: {len(results)} parties passed episodes {sorted(seen)}; "
                                 f"expected all {parties} to pass {expected} to {expected + episodes - 1}")
        expected += episodes
        wall += max(t.seconds for t in results)
        late = max([late] + [t.late_s for t in results])
    ep1, rmw1 = _node_counters(ctx, uid)
    total = episodes * s["workload.repeats"]
    if ep1 - ep0 != parties * total:
        raise AssertionError(f"{barrier.name}: the nodes counted {ep1 - ep0} passed waits, "
                             f"expected {parties} parties × {total} episodes")
    ctx.sync = {
        "kind": "barrier", "algorithm": barrier.kind, "padding": s["workload.padding"], "parties": parties,
        "space_pages": barrier.space.npages, "episodes": total, "seconds": wall, "start_late_s": late,
        "rmws": rmw1 - rmw0, "rounds": barrier_rounds(barrier.kind, parties),
    }


def barrier_rounds(kind: str, parties: int) -> int | None:
    """Signalling rounds of one episode on its critical path, from the algorithm
    (computed, not measured): tournament and dissemination ⌈log2 P⌉, tree its
    levels, mcs the depth of its 4-ary arrival tree plus its binary wake-up tree;
    None for counter and server (one word or one object: no rounds)."""
    if kind in ("tournament", "dissemination"):
        return rounds(parties)
    if kind == "tree":
        return len(tree_levels(parties)) if parties > 1 else 0
    if kind == "mcs":
        return _depth(parties, 4) + _depth(parties, 2)
    return None


def _depth(parties: int, fanin: int) -> int:
    """Depth of the tree where party i's parent is (i - 1) // fanin."""
    deepest = 0
    for i in range(parties):
        d = 0
        while i:
            i, d = (i - 1) // fanin, d + 1
        deepest = max(deepest, d)
    return deepest


assert TREE_FANIN == 2  # barrier_rounds counts the tree's levels as _barriers builds them


# ---- memory footprint ------------------------------------------------------------------

def lock_pages(s) -> int:
    """Pages of the workload's lock (one slot per thread)."""
    from ._locks import words_needed
    from ._syncspace import words_layout
    threads = s["cluster.nodes"] * s["cluster.threads_per_node"]
    return words_layout(s["workload.padding"], words_needed(s["workload.lock"], threads))[1]


def barrier_space_pages(s) -> int:
    """Pages of the workload's barrier (every thread a party)."""
    from ._barriers import words_needed
    from ._syncspace import words_layout
    parties = s["cluster.nodes"] * s["cluster.threads_per_node"]
    return words_layout(s["workload.padding"], words_needed(s["workload.barrier"], parties))[1]
