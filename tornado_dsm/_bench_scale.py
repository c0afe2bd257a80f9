"""``tornado-dsm bench scale``: do fault costs stay flat as the memory grows, and do
threads fault in parallel?  On each fault backend.

* Interleaved writers: arrays of 2^14, 2^16 and 2^18 pages (64 MiB to 1 GiB)
  on 3 nodes; nodes 1 and 2 store into every other page (each node's pages
  alternate with the other's, so with mprotect every page is a mapping of its
  own).  Reported: the cost per fault (a node's C loop time over its pages;
  every fault is a coherence fault on a fresh page), and its ratio to the
  cost at 2^14 pages (target on uffd: <= 1.25x at 2^18).  On mprotect the
  larger sizes pass vm.max_map_count: that row says so instead.
* Parallel faults: one window, faults resolved in C (the floor: no Python,
  no GIL), touched by 1 thread and then by 2 threads on different pages.
  Reported: faults per second of each, and 2 threads against 1 (2.0 would
  be perfect scaling; a lock taken for writing by every fault keeps it
  near 1).
* Per-page metadata: bytes of per-page state each node keeps for an array
  of 2^14 pages on 3 nodes, per manager (tracemalloc on the nodes, the HAT
  byte included; tornado_dsm/_metadata.py).  Target: <= 16 bytes per page
  per node.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from tornado_dsm._bench import BenchResult, chosen_backends
from tornado_dsm.kernel import (
    DEFAULT_BASE, MODE_FLOOR, PAGE, KernelPager, MemoryLayoutError, NodeMemory, trap,
)

HELP = "fault cost against memory size (interleaved writers) and 1 vs 2 faulting threads, per backend"
SIZES = (1 << 14, 1 << 16, 1 << 18)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bench scale``."""
    parser.add_argument("--backend", choices=("both", "mprotect", "uffd"), default="both",
                        help="fault backends to measure (default both; uffd only where the kernel allows it)")
    parser.add_argument("--max-pages", type=int, default=SIZES[-1],
                        help=f"largest array in pages (sizes 2^14, 2^16, 2^18 up to this; default {SIZES[-1]})")
    parser.add_argument("--thread-pages", type=int, default=20000,
                        help="faults per thread per round in the parallel test (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the parallel test (default 3)")


def measure(args: argparse.Namespace) -> list[BenchResult]:
    """Every size on every backend, then the parallel test on every backend."""
    if args.max_pages < 2 or args.thread_pages < 1 or args.rounds < 1:
        raise SystemExit("--max-pages must be >= 2, --thread-pages and --rounds >= 1 "
                         f"(got {args.max_pages}, {args.thread_pages}, {args.rounds})")
    sizes = [n for n in SIZES if n <= args.max_pages] or [args.max_pages]
    results = []
    for backend in chosen_backends(args.backend):
        results += _interleaved(backend, sizes)
        results += _parallel(backend, args.thread_pages, args.rounds)
    return results + _metadata_rows()


def _metadata_rows(nnodes: int = 3, npages: int = 1 << 14) -> list[BenchResult]:
    """Per-page metadata of each manager: the worst node (median_us column) and the mean."""
    from tornado_dsm import _metadata

    rows = []
    for manager in ("dynamic", "fixed", "centralized"):
        fig = _metadata.measure(manager, nnodes, npages)
        by_node = ", ".join(f"{b:g}" for b in fig.per_node)
        rows.append(BenchResult(name=f"per-page metadata, {manager} manager, {nnodes} nodes, bytes/page/node",
                                median_us=fig.worst, p90_us=float(np.mean(fig.per_node)), samples=npages,
                                note=f"worst node, then mean; by node {by_node}; target <= 16"))
    return rows


def _interleaved(backend: str, sizes: list) -> list[BenchResult]:
    import tornado_dsm as td
    from tornado_dsm import _benchprogs as progs

    out, first = [], None
    window = max(1 << 30, 2 * sizes[-1] * PAGE)
    with td.Cluster(nodes=3, backend=backend, size=window) as c:
        for n in sizes:
            name = f"{backend}: interleaved writers, {n} pages ({n * PAGE >> 20} MiB), per fault"
            a = c.zeros((n * PAGE,), np.uint8)
            try:
                done = c.run(progs.touch_every_other_page, a, 1, on=[1, 2])
            except MemoryLayoutError:
                out.append(BenchResult(name=name, median_us=0.0, p90_us=0.0,
                                       note="stopped at vm.max_map_count (MemoryLayoutError)"))
                continue
            finally:
                c.free(a)
            per_fault = [1e6 * s / p for p, s in done]
            mean = float(np.mean(per_fault))
            ratio = None if first is None else mean / first.median_us
            row = BenchResult(name=name, median_us=mean, p90_us=max(per_fault), ratio_to_floor=ratio,
                              samples=sum(p for p, _ in done),
                              note="" if first is None else
                              f"ratio: x the {sizes[0]}-page cost" + ("; target <= 1.25x" if backend == "uffd" else ""))
            first = first or row
            out.append(row)
    return out


def _parallel(backend: str, pages: int, rounds: int) -> list[BenchResult]:
    rates = {1: [], 2: []}
    with NodeMemory(base=DEFAULT_BASE + (3 << 36), size=2 * pages * PAGE, backend=backend) as mem:
        mem.set_handler(KernelPager(mem))
        trap.set_mode(mem.slot, MODE_FLOOR)
        trap.touch(mem.base, 2 * pages, PAGE, 1)  # frames resident: the fault is the trap
        for _ in range(rounds):
            for threads in (1, 2):
                mem.hat.unmap(0, mem.npages)
                rates[threads].append(_faults_per_second(mem, pages, threads))
    one, two = float(np.median(rates[1])), float(np.median(rates[2]))
    return [
        BenchResult(name=f"{backend}: 1 thread faulting (C-resolved), faults/s", median_us=one,
                    p90_us=min(rates[1]), samples=pages * rounds, note="median and worst, in faults per second"),
        BenchResult(name=f"{backend}: 2 threads faulting on different pages, faults/s", median_us=two,
                    p90_us=min(rates[2]), ratio_to_floor=two / one, samples=2 * pages * rounds,
                    note="ratio: x 1 thread (2.0: the faults run in parallel)"),
    ]


def _faults_per_second(mem: NodeMemory, pages: int, threads: int) -> float:
    """``threads`` threads each fault ``pages`` pages of their own half of the window at once."""
    start = threading.Barrier(threads + 1)

    def work(t: int) -> None:
        start.wait()
        trap.touch(mem.base + t * pages * PAGE, pages, PAGE, 1)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    start.wait()
    t0 = time.perf_counter()
    for w in workers:
        w.join()
    return threads * pages / (time.perf_counter() - t0)
