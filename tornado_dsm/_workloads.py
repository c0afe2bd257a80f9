"""Built-in workloads: node functions (run by Cluster.run) and their drivers.

Each kind has a driver ``drive_KIND(ctx, s)`` that runs on node 0: it makes
the shared arrays through ``ctx.region`` and runs steps through
``ctx.step(fn, *args, measured=...)``.  A step is one `Cluster.run`, so a
step boundary is also a barrier across the cluster (Jacobi iterations,
producer/consumer rounds).  Node functions time their own measured work with
perf_counter and return a ThreadResult; the cluster statistics around each
measured step give the faults by kind, PPCs and messages.  The lock and
barrier kinds are in _workloads_sync.
"""

from __future__ import annotations

import re
import time
from time import perf_counter

import attrs
import numpy as np

import tornado_dsm as td
from tornado_dsm.kernel import PAGE

from . import _workloads_sync as _sync
from ._workloads_base import WORDS, ThreadResult, _me
from ._workloads_phases import drive_phases
from ._workloads_sync import drive_barrier, drive_lock

SPIN_TIMEOUT_S = 60.0


def page_plan(pages: int, pattern: str, stride: int, write_fraction: float, seed: int):
    """(page order, write flags) of one pass: a seeded access sequence over ``pages``."""
    rng = np.random.default_rng(seed)
    if pattern == "random":
        order = rng.permutation(pages)
    elif pattern == "strided":
        order = np.concatenate([np.arange(s, pages, stride) for s in range(min(stride, pages))])
    else:
        order = np.arange(pages)
    return order.tolist(), (rng.random(pages) < write_fraction).tolist()


def _touch(a: np.ndarray, first_page: int, order, writes, value: int) -> int:
    """One access per page (a store where ``writes`` says so); returns the sum read."""
    total = 0
    for page, write in zip(order, writes):
        i = (first_page + page) * WORDS
        if write:
            a[i] = value
        else:
            total += int(a[i])
    return total


# ---- infault: Tornado's in-core page-fault test ------------------------------------------

def infault_pass(p: dict, *arrays) -> ThreadResult:
    """Touch this thread's own pages once (its slice of one region, or its own region)."""
    node, thread, g = _me(p["tpn"])
    if p["form"] == "multiprogrammed":
        a, first = arrays[g], 0
    else:
        a, first = arrays[0], g * p["pages"]
    order, writes = page_plan(p["pages"], p["pattern"], p["stride"], p["write_fraction"], p["seed"] + g)
    t0 = perf_counter()
    total = _touch(a, first, order, writes, g + 1)
    return ThreadResult(node, thread, len(order), perf_counter() - t0, total)


def drive_infault(ctx, s) -> None:
    """Warm-up (pages cached on each thread's node), then per repeat: drop the
    HAT mappings and fault every page again, in-core (Process -> Region -> FCM -> HAT)."""
    threads = s["cluster.nodes"] * s["cluster.threads_per_node"]
    if s["workload.form"] == "multiprogrammed":
        arrays = [ctx.region(s["region.pages"]) for _ in range(threads)]
    else:
        arrays = [ctx.region(s["region.pages"] * threads)]
    p = ctx.params()
    ctx.step(infault_pass, p, *arrays, measured=False, label="warm-up")
    for r in range(s["workload.repeats"]):
        for a in arrays:
            ctx.cluster.drop_mappings(a)
        ctx.step(infault_pass, p, *arrays, label=f"in-core pass {r + 1}")


# ---- shared read-mostly ------------------------------------------------------------------

def shared_pass(p: dict, a) -> ThreadResult:
    """Every thread reads every page of one region; write_fraction of them are writes."""
    node, thread, g = _me(p["tpn"])
    order, writes = page_plan(p["pages"], p["pattern"], p["stride"], p["write_fraction"], p["seed"] + g)
    t0 = perf_counter()
    total = _touch(a, 0, order, writes, g + 1)
    return ThreadResult(node, thread, len(order), perf_counter() - t0, total)


def drive_shared_read(ctx, s) -> None:
    """Repeated passes of every thread over one shared region (read-mostly)."""
    a = ctx.region(s["region.pages"])
    p = ctx.params()
    for r in range(s["workload.repeats"]):
        ctx.step(shared_pass, dict(p, seed=p["seed"] + 1000 * r), a, label=f"pass {r + 1}")


# ---- producer-consumer -------------------------------------------------------------------

def produce(p: dict, a, value: int) -> ThreadResult:
    """Node 0's threads write ``value`` into every page (each thread a share of the pages)."""
    node, thread, _g = _me(p["tpn"])
    order, _ = page_plan(p["pages"], p["pattern"], p["stride"], 0.0, p["seed"])
    mine = order[thread::p["tpn"]]
    t0 = perf_counter()
    _touch(a, 0, mine, [True] * len(mine), value)
    return ThreadResult(node, thread, len(mine), perf_counter() - t0, value)


def consume(p: dict, a, value: int) -> ThreadResult:
    """A consumer reads every page and checks it holds the produced ``value``."""
    node, thread, g = _me(p["tpn"])
    order, _ = page_plan(p["pages"], p["pattern"], p["stride"], 0.0, p["seed"] + g)
    t0 = perf_counter()
    total = _touch(a, 0, order, [False] * len(order), 0)
    seconds = perf_counter() - t0
    if total != value * len(order):
        raise AssertionError(f"consumer on node {node} read {total}, expected {value * len(order)}")
    return ThreadResult(node, thread, len(order), seconds, total)


def produce_consume_rounds(p: dict, a, barrier, rounds: int) -> ThreadResult:
    """Every round in one run: node 0's threads produce, a barrier, the other
    nodes' threads consume (node 0's on one node), a barrier."""
    node, thread, _g = _me(p["tpn"])
    consumer = node != 0 or p["nodes"] == 1
    t0, ops = perf_counter(), 0
    for r in range(rounds):
        if node == 0:
            ops += produce(p, a, r + 1).ops
        barrier.wait()
        if consumer:
            ops += consume(p, a, r + 1).ops
        barrier.wait()
    return ThreadResult(node, thread, ops, perf_counter() - t0, ops)


def drive_producer_consumer(ctx, s) -> None:
    """Rounds of: node 0 produces every page, then every other node consumes them
    (workload.steps: each half a run of its own, or every round in one run)."""
    a = ctx.region(s["region.pages"])
    p = ctx.params()
    if s["workload.steps"] == "barrier":
        barrier = ctx.cluster.barrier(_threads(s), kind=s["workload.barrier"])
        ctx.step(produce_consume_rounds, p, a, barrier, s["workload.repeats"], label="all rounds")
        return
    consumers = list(range(1, s["cluster.nodes"])) or [0]
    for r in range(s["workload.repeats"]):
        ctx.step(produce, p, a, r + 1, on=[0], label=f"produce {r + 1}")
        ctx.step(consume, p, a, r + 1, on=consumers, label=f"consume {r + 1}")


# ---- false sharing -----------------------------------------------------------------------

def false_share(p: dict, a) -> ThreadResult:
    """After a start barrier, each thread writes its own word of page 0 (reads its
    neighbour's word at the read mix): threads on different nodes share the page."""
    node, thread, g = _me(p["tpn"])
    nthreads = p["tpn"] * p["nodes"]
    writes = (np.random.default_rng(p["seed"] + g).random(p["ops"]) < p["write_fraction"]).tolist()
    _barrier(a, p["pages"] * WORDS, nthreads)
    # A writing thread holds its node's GIL; the node's PPC server can hand the
    # page to another node only at a GIL switch (5 ms by default): switch often
    # (one setting per node: its threads would otherwise restore each other's).
    with _sync.FastSwitch():
        t0 = perf_counter()
        for k, write in enumerate(writes):
            if write:
                a[g] = k + 1
            else:
                int(a[(g + 1) % nthreads])
        seconds = perf_counter() - t0
    return ThreadResult(node, thread, len(writes), seconds, int(a[g]))


def _barrier(a, word: int, nthreads: int) -> None:
    """A one-shot barrier on its own page: without it the threads of a short pass
    would not overlap (starting a step on every node takes longer than the pass)."""
    from tornado_dsm.kernel import atomic

    address = a.__array_interface__["data"][0] + word * a.itemsize
    atomic.fetch_add(address, 1)
    t0, pause = perf_counter(), 1e-6
    while atomic.load(address) < nthreads:
        if perf_counter() - t0 > SPIN_TIMEOUT_S:
            raise TimeoutError(f"start barrier: {atomic.load(address)} of {nthreads} threads arrived")
        time.sleep(pause)
        pause = min(pause * 2, 2e-4)


def drive_false_sharing(ctx, s) -> None:
    """Threads on every node write different words of one page at once."""
    for r in range(s["workload.repeats"]):
        a = ctx.region(s["region.pages"] + 1)  # a fresh barrier page each pass
        ctx.step(false_share, ctx.params(), a, label=f"pass {r + 1}")


# ---- migrate ping-pong ---------------------------------------------------------------------

def ping_pong(p: dict, a) -> ThreadResult:
    """Thread 0 of each node waits for its turn (word 0 of page 0), touches the data
    pages (page 1 on), passes the turn on; ``ops`` turns per node."""
    node, thread, _g = _me(p["tpn"])
    if thread:
        return ThreadResult(node, thread, 0, 0.0)
    nodes, pages = p["nodes"], p["pages"]
    writes = (np.random.default_rng(p["seed"] + node).random(pages) < p["write_fraction"]).tolist()
    t0, done = perf_counter(), 0
    for turn in range(p["ops"]):
        _wait_turn(a, turn * nodes + node, t0)
        done += 1 + pages
        _touch(a, 1, range(pages), writes, turn + 1)
        a[0] = turn * nodes + node + 1
    return ThreadResult(node, thread, done, perf_counter() - t0, int(a[0]))


def _wait_turn(a, ticket: int, t0: float) -> None:
    """Spin until word 0 reaches ``ticket``, backing off so the holder can run."""
    pause = 1e-6
    while int(a[0]) != ticket:
        if perf_counter() - t0 > SPIN_TIMEOUT_S:
            raise TimeoutError(f"ping-pong: waited {SPIN_TIMEOUT_S} s for turn {ticket}, word 0 = {int(a[0])}")
        time.sleep(pause)  # back-off: a spinning reader would pull the page away (migrate)
        pause = min(pause * 2, 2e-4)


def drive_ping_pong(ctx, s) -> None:
    """Nodes take turns on a page of data; under migrate every turn moves the pages."""
    a = ctx.region(s["region.pages"] + 1)
    for r in range(s["workload.repeats"]):
        ctx.cluster.run(_reset_turn, a, on=[0], threads=1)
        ctx.step(ping_pong, ctx.params(), a, label=f"round {r + 1}")


def _reset_turn(a) -> None:
    a[0] = 0


# ---- Jacobi (IVY's PDE) ------------------------------------------------------------------

def jacobi_init(*grids) -> None:
    """Boundary: the top row is 1.0 in every grid; the rest starts at 0."""
    for g in grids:
        g[0, :] = 1.0


def jacobi_sweep(p: dict, old, new) -> ThreadResult:
    """new = average of old's 4 neighbours, on this thread's band of interior rows."""
    node, thread, g = _me(p["tpn"])
    rows = old.shape[0] - 2
    nthreads = p["tpn"] * p["nodes"]
    lo, hi = 1 + g * rows // nthreads, 1 + (g + 1) * rows // nthreads
    t0 = perf_counter()
    if hi > lo:
        relax(old, new, lo, hi)
    return ThreadResult(node, thread, 3 * (hi - lo), perf_counter() - t0)


def relax(old, new, lo: int, hi: int) -> None:
    """One 5-point Jacobi step on rows [lo, hi) of the interior columns: each new
    value is the mean of old's 4 neighbours (rows lo-1 and hi are read, not written)."""
    new[lo:hi, 1:-1] = 0.25 * (old[lo - 1:hi - 1, 1:-1] + old[lo + 1:hi + 1, 1:-1]
                               + old[lo:hi, :-2] + old[lo:hi, 2:])


def jacobi_reference(rows: int, iterations: int, cols: int = WORDS) -> np.ndarray:
    """The same iterations in private memory (the check of the shared result)."""
    grids = [np.zeros((rows, cols)), np.zeros((rows, cols))]
    jacobi_init(*grids)
    for k in range(iterations):
        relax(grids[k % 2], grids[(k + 1) % 2], 1, rows - 1)
    return grids[iterations % 2]


def jacobi_sweeps(p: dict, g0, g1, barrier, iterations: int) -> ThreadResult:
    """Every sweep in one run, a barrier after each (no band is read before
    its neighbours finished writing it in the previous sweep)."""
    node, thread, _g = _me(p["tpn"])
    grids, ops, t0 = (g0, g1), 0, perf_counter()
    for k in range(iterations):
        ops += jacobi_sweep(p, grids[k % 2], grids[(k + 1) % 2]).ops
        barrier.wait()
    return ThreadResult(node, thread, ops, perf_counter() - t0)


def drive_jacobi(ctx, s) -> None:
    """region.pages rows of one page each; workload.steps: every sweep in one run
    with a barrier after each, or one sweep per run (the end of a run is the barrier)."""
    rows, iterations = max(s["region.pages"], 3), s["workload.repeats"]
    grids = [ctx.region(rows, np.float64).reshape(rows, WORDS) for _ in range(2)]
    ctx.cluster.run(jacobi_init, *grids, on=[0], threads=1)  # arrays as args: lists travel by value
    if s["workload.steps"] == "barrier":
        barrier = ctx.cluster.barrier(_threads(s), kind=s["workload.barrier"])
        ctx.step(jacobi_sweeps, ctx.params(), *grids, barrier, iterations, label="all sweeps")
    else:
        for k in range(iterations):
            ctx.step(jacobi_sweep, ctx.params(), grids[k % 2], grids[(k + 1) % 2], label=f"sweep {k + 1}")
    expected = jacobi_reference(rows, iterations)
    if not np.allclose(grids[iterations % 2], expected):
        raise AssertionError("jacobi: the shared grid differs from the private reference")


# ---- blocked matrix multiply ---------------------------------------------------------------

def matmul_blocks(p: dict, a, b, c) -> ThreadResult:
    """C's blocks (bi, bj) with (bi * nb + bj) mod threads == this thread: sum_k A_ik B_kj."""
    node, thread, g = _me(p["tpn"])
    n, bs = a.shape[0], p["block"]
    nb, nthreads = n // bs, p["tpn"] * p["nodes"]
    t0, done = perf_counter(), 0
    for blk in range(g, nb * nb, nthreads):
        i, j = divmod(blk, nb)
        rows, cols = slice(i * bs, (i + 1) * bs), slice(j * bs, (j + 1) * bs)
        acc = np.zeros((bs, bs))
        for k in range(nb):
            ks = slice(k * bs, (k + 1) * bs)
            acc += a[rows, ks] @ b[ks, cols]
        c[rows, cols] = acc
        done += 2 * nb + 1
    return ThreadResult(node, thread, done, perf_counter() - t0, float(acc.sum()) if done else 0.0)


def matmul_init(a, b, seed: int) -> None:
    """Seeded random A and B, written by node 0."""
    rng = np.random.default_rng(seed)
    a[:] = rng.random(a.shape)
    b[:] = rng.random(b.shape)


def drive_matmul(ctx, s) -> None:
    """C = A B, blocked; every repeat recomputes C; checked against numpy at the end."""
    n = s["workload.n"]
    pages = -(-n * n // WORDS)
    a, b, c = (ctx.region(pages, np.float64)[:n * n].reshape(n, n) for _ in range(3))
    ctx.cluster.run(matmul_init, a, b, s["workload.seed"], on=[0], threads=1)
    for r in range(s["workload.repeats"]):
        ctx.step(matmul_blocks, ctx.params(), a, b, c, label=f"multiply {r + 1}")
    if not np.allclose(np.asarray(c), np.asarray(a) @ np.asarray(b)):
        raise AssertionError("matmul: the shared product differs from numpy's")


DRIVERS = {
    "infault": drive_infault, "shared-read": drive_shared_read,
    "producer-consumer": drive_producer_consumer, "false-sharing": drive_false_sharing,
    "ping-pong": drive_ping_pong, "jacobi": drive_jacobi, "matmul": drive_matmul,
    "lock": drive_lock, "barrier": drive_barrier, "phases": drive_phases,
}


def steps_of(s) -> int:
    """How many steps the driver of ``s`` runs (the progress bar's total)."""
    kind, r = s["workload.kind"], s["workload.repeats"]
    if kind in ("jacobi", "producer-consumer") and s["workload.steps"] == "barrier":
        return 1
    if kind == "lock":   # warm-up, uncontended, passes, FIFO probes (with enough threads)
        return 2 + r + (r if _threads(s) >= _sync.PROBE_THREADS else 0)
    if kind == "phases":   # the warm-up pass, then one step per phase
        return 1 + len(s["workload.phases"].split(","))
    return {"infault": r + 1, "producer-consumer": 2 * r, "barrier": 1 + r}.get(kind, r)


# ---- memory footprint (checked before any node starts) -----------------------------------

# Threads of scenario ``s`` in the whole cluster.
def _threads(s) -> int:
    return s["cluster.nodes"] * s["cluster.threads_per_node"]


# kind -> (formula, pages): the DSM window pages of the arrays its driver makes, in
# words and as a function of the scenario.  No driver frees an array before the run
# ends, so false-sharing's fresh region per pass adds up.
FOOTPRINTS = {
    "infault": ("region.pages × cluster.nodes × cluster.threads_per_node",
                lambda s: s["region.pages"] * _threads(s)),
    "shared-read": ("region.pages", lambda s: s["region.pages"]),
    "producer-consumer": ("region.pages + the barrier's pages",
                          lambda s: s["region.pages"] + barrier_pages(s)),
    "false-sharing": ("(region.pages + 1) × workload.repeats",
                      lambda s: (s["region.pages"] + 1) * s["workload.repeats"]),
    "ping-pong": ("region.pages + 1", lambda s: s["region.pages"] + 1),
    "jacobi": ("2 × max(region.pages, 3) + the barrier's pages",
               lambda s: 2 * max(s["region.pages"], 3) + barrier_pages(s)),
    "matmul": (f"3 × ⌈workload.n² / {WORDS}⌉", lambda s: 3 * -(-s["workload.n"] ** 2 // WORDS)),
    "lock": ("1 + the lock's pages for cluster.nodes × cluster.threads_per_node threads",
             lambda s: 1 + _sync.lock_pages(s)),
    "barrier": ("the barrier's pages for cluster.nodes × cluster.threads_per_node parties",
                lambda s: _sync.barrier_space_pages(s)),
    "phases": ("region.pages + cluster.nodes × cluster.threads_per_node",
               lambda s: s["region.pages"] + _threads(s)),
}


# Pages of the barrier between steps (workload.steps = "barrier"; page padding).
def barrier_pages(s) -> int:
    from ._barriers import words_needed
    if s["workload.steps"] != "barrier":
        return 0
    return words_needed(s["workload.barrier"], _threads(s))


# Pages of the DSM window the driver of scenario ``s`` allocates in one run.
def window_pages(s) -> int:
    return FOOTPRINTS[s["workload.kind"]][1](s)


# The scenario keys the window footprint of ``s`` grows with (those its formula names).
def footprint_keys(s) -> list[str]:
    return re.findall(r"[a-z]+[.][a-z_]+", FOOTPRINTS[s["workload.kind"]][0])


# The window footprint of ``s`` in words and in numbers ("region.pages + 1 = 16 + 1").
def footprint_formula(s) -> str:
    formula = FOOTPRINTS[s["workload.kind"]][0]
    return f"{formula} = {re.sub(r'[a-z]+[.][a-z_]+', lambda m: str(s[m.group()]), formula)}"


# How many nodes may hold a frame of one page: infault's threads touch only their own
# pages (one node each); every other kind shares its pages among all nodes.
def copies_per_page(s) -> int:
    return 1 if s["workload.kind"] == "infault" else s["cluster.nodes"]


# An upper bound of the memory one run of ``s`` takes, and how it was counted: the
# frames of every node (at most memory_per_node each), plus the backing store (the file,
# or the swap of pages evicted under memory_per_node).
def memory_bytes(s) -> tuple[int, str]:
    regions, copies, cap = window_pages(s) * PAGE, copies_per_page(s), s["cluster.memory_per_node"]
    frames = regions * copies
    how = f"{copies} cop{'y' if copies == 1 else 'ies'} of the regions' {regions} bytes"
    if cap and s["cluster.nodes"] * (cap // PAGE * PAGE) < frames:
        frames = s["cluster.nodes"] * (cap // PAGE * PAGE)
        how = f"{s['cluster.nodes']} nodes × cluster.memory_per_node {cap // PAGE * PAGE} bytes of frames"
    if cap or s["region.backing"] == "file":
        store = "the file" if s["region.backing"] == "file" else "the swap of evicted pages"
        return frames + regions, f"{how} + {regions} bytes of {store}"
    return frames, how

