"""``tornado-dsm bench faults``: the cost of a page fault through the trap.

In one run, interleaved round by round so both see the same machine:

* the floor: the trap resolves the fault in C (mprotect read-write), no Python;
* the kernel-only pager: the trap calls the Python handler in the faulting
  thread, which maps the page through the HAT.

Each for two triggers: GIL-released (a cffi C loop touching pages, each touch
timed in C) and GIL-held (numpy indexing from Python, each store timed with
perf_counter_ns).  Every round first unmaps the whole window with one mprotect;
frames stay resident, so the fault cost is the trap, not the page allocator.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tornado_dsm._bench import BenchResult, summarize
from tornado_dsm.kernel import MODE_FLOOR, MODE_PYTHON, PAGE, KernelPager, NodeMemory, trap

HELP = "page-fault latency: kernel-only pager path vs the C-resolved floor"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bench faults``."""
    parser.add_argument("--pages", type=int, default=2000, help="faults per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per path (default 5)")


def measure(args: argparse.Namespace) -> list[BenchResult]:
    """Run the benchmark; the floors come first, each path names its floor."""
    if args.pages < 1 or args.rounds < 1:
        raise SystemExit(f"--pages and --rounds must be >= 1 (got {args.pages}, {args.rounds})")
    samples = _collect(args.pages, args.rounds)
    results = []
    for trigger in ("gil-released", "gil-held"):
        floor = summarize(f"floor (C-resolved), {trigger}", samples[("floor", trigger)])
        pager = summarize(f"kernel pager (Python), {trigger}", samples[("pager", trigger)], floor,
                          note="target: <= 1.5x floor")
        results += [floor, pager]
    return results


def _collect(pages: int, rounds: int) -> dict:
    samples: dict = {}
    with NodeMemory(size=pages * PAGE, node=0) as memory:
        pager = KernelPager(memory)
        memory.set_handler(pager)
        data = memory.array(0, (memory.size,), np.uint8)
        for r in range(rounds + 1):  # round 0 warms up (allocates the frames)
            for path, mode in (("floor", MODE_FLOOR), ("pager", MODE_PYTHON)):
                trap.set_mode(memory.slot, mode)
                for trigger, run in (("gil-released", _released), ("gil-held", _held)):
                    memory.hat.unmap(0, memory.npages)
                    ns = run(memory, data, pages)
                    if r:
                        samples.setdefault((path, trigger), []).append(ns)
    return {k: np.concatenate(v) for k, v in samples.items()}


def _released(memory: NodeMemory, data: np.ndarray, pages: int) -> np.ndarray:
    ns = np.zeros(pages, dtype=np.uint64)
    trap.touch(memory.base, pages, PAGE, write=1, latencies=ns)
    return ns


def _held(memory: NodeMemory, data: np.ndarray, pages: int) -> np.ndarray:
    ns = np.zeros(pages, dtype=np.uint64)
    clock = time.perf_counter_ns
    for i in range(pages):
        t0 = clock()
        data[i * PAGE] = 1
        ns[i] = clock() - t0
    return ns
