"""``tornado-dsm bench faults``: the cost of a page fault through the trap, on each fault backend.

In one run, interleaved round by round so every path sees the same machine,
for each backend (``mprotect``: SIGSEGV + mprotect; ``uffd``: SIGBUS +
userfaultfd page-table changes), each on a window of its own:

* the floor: the trap resolves the fault in C (the HAT grants read-write), no Python;
* the kernel-only pager: the trap calls the Python handler in the faulting
  thread, which maps the page through the HAT.

Each for two triggers: GIL-released (a cffi C loop touching pages, each touch
timed in C) and GIL-held (numpy indexing from Python, each store timed with
perf_counter_ns).  Every round first unmaps the whole window with one HAT call;
frames stay resident, so the fault cost is the trap, not the page allocator.

Then, unless ``--no-vm``, the in-core fault through the full object path
(Process -> Region -> FCM -> HAT) on a one-node Cluster per backend: the
array's pages are cached in the node's FCM rep and only their mappings were
dropped (Tornado's in-core page-fault test), timed by the same C loop.
With both backends, rows "uffd vs mprotect" give the ratio of their medians.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tornado_dsm._bench import BenchResult, chosen_backends, summarize
from tornado_dsm.kernel import (
    DEFAULT_BASE, MODE_FLOOR, MODE_PYTHON, PAGE, KernelPager, NodeMemory, trap,
)

HELP = "page-fault latency on each fault backend: kernel-only pager and in-core VM path vs the C-resolved floor"
TRIGGERS = ("gil-released", "gil-held")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bench faults``."""
    parser.add_argument("--pages", type=int, default=2000, help="faults per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds per path (default 5)")
    parser.add_argument("--backend", choices=("both", "mprotect", "uffd"), default="both",
                        help="fault backends to measure (default both; uffd only where the kernel allows it)")
    parser.add_argument("--no-vm", action="store_true", help="skip the in-core fault through the VM objects")


def measure(args: argparse.Namespace) -> list[BenchResult]:
    """Run the benchmark; each backend's floors come first, each path names its floor."""
    if args.pages < 1 or args.rounds < 1:
        raise SystemExit(f"--pages and --rounds must be >= 1 (got {args.pages}, {args.rounds})")
    backends = chosen_backends(args.backend)
    samples = _collect(args.pages, args.rounds, backends)
    if not args.no_vm:
        for b in backends:
            samples[(b, "incore", "gil-released")] = _collect_incore(args.pages, args.rounds, b)
    results, by_name = [], {}
    for b in backends:
        label = f"{b}: " if len(backends) > 1 else ""
        for trigger in TRIGGERS:
            floor = summarize(f"{label}floor (C-resolved), {trigger}", samples[(b, "floor", trigger)])
            pager = summarize(f"{label}kernel pager (Python), {trigger}", samples[(b, "pager", trigger)],
                              floor, note="target: <= 1.5x floor")
            results += [floor, pager]
            by_name[(b, "floor", trigger)], by_name[(b, "pager", trigger)] = floor, pager
        if (b, "incore", "gil-released") in samples:
            incore = summarize(f"{label}in-core fault (full object path)", samples[(b, "incore", "gil-released")],
                               by_name[(b, "floor", "gil-released")], note="ratio: x this backend's C floor")
            results.append(incore)
            by_name[(b, "incore", "gil-released")] = incore
    if len(backends) == 2:
        results += _cross(by_name)
    return results


def _cross(by_name: dict) -> list[BenchResult]:
    """uffd against mprotect, path by path: the ratio of the medians."""
    out = []
    for path, trigger, target in (("floor", "gil-released", ""), ("pager", "gil-released", ""),
                                  ("pager", "gil-held", ""), ("incore", "gil-released", "; target: <= 1.3x")):
        u, m = by_name.get(("uffd", path, trigger)), by_name.get(("mprotect", path, trigger))
        if u is None or m is None:
            continue
        what = {"floor": "floor", "pager": "kernel pager", "incore": "in-core fault"}[path]
        out.append(BenchResult(name=f"uffd vs mprotect: {what}, {trigger}", median_us=u.median_us, p90_us=u.p90_us,
                               ratio_to_floor=u.median_us / m.median_us if m.median_us > 0 else None,
                               samples=u.samples, note=f"ratio: x the mprotect median{target}"))
    return out


def _collect(pages: int, rounds: int, backends: tuple) -> dict:
    samples: dict = {}
    windows = [NodeMemory(base=DEFAULT_BASE + (i + 1) * (1 << 36), size=pages * PAGE, node=0, backend=b)
               for i, b in enumerate(backends)]
    try:
        for memory in windows:
            memory.set_handler(KernelPager(memory))
        for r in range(rounds + 1):  # round 0 warms up (allocates the frames)
            for memory in windows:
                _round(memory, pages, samples if r else None)
    finally:
        for memory in windows:
            memory.close()
    return {k: np.concatenate(v) for k, v in samples.items()}


def _round(memory: NodeMemory, pages: int, samples: dict | None) -> None:
    data = memory.array(0, (memory.size,), np.uint8)
    for path, mode in (("floor", MODE_FLOOR), ("pager", MODE_PYTHON)):
        trap.set_mode(memory.slot, mode)
        for trigger, run in (("gil-released", _released), ("gil-held", _held)):
            memory.hat.unmap(0, memory.npages)
            ns = run(memory.base, data, pages)
            if samples is not None:
                samples.setdefault((memory.backend, path, trigger), []).append(ns)


def _collect_incore(pages: int, rounds: int, backend: str) -> np.ndarray:
    """In-core faults through the VM objects of a one-node Cluster on ``backend``."""
    import tornado_dsm as td

    out = []
    with td.Cluster(nodes=1, backend=backend) as cluster:
        a = cluster.zeros((pages * PAGE,), np.uint8)
        address = a.__array_interface__["data"][0]
        trap.touch(address, pages, PAGE, write=1)  # first touches: the pages are cached now
        for r in range(rounds + 1):
            cluster.drop_mappings(a)
            ns = _released(address, None, pages)
            if r:
                out.append(ns)
        cluster.free(a)
    return np.concatenate(out)


def _released(base: int, data, pages: int) -> np.ndarray:
    ns = np.zeros(pages, dtype=np.uint64)
    trap.touch(base, pages, PAGE, write=1, latencies=ns)
    return ns


def _held(base: int, data: np.ndarray, pages: int) -> np.ndarray:
    ns = np.zeros(pages, dtype=np.uint64)
    clock = time.perf_counter_ns
    for i in range(pages):
        t0 = clock()
        data[i * PAGE] = 1
        ns[i] = clock() - t0
    return ns
