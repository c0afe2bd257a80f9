"""``tornado-dsm bench swap``: what a hot swap costs while every node faults.

For each cluster size: every node writes its word of every page of an array
in turn (write sharing: each write is a coherence fault through Process,
Region and FCM) for ``--seconds``, first with no swap, then while node 0
swaps the array's Region between ``per_node`` and ``singleton`` (and the
Process between ``per_node`` and ``singleton``) back to back.  Then both
become singletons and the same two phases run with migrations instead of
swaps: node 0 moves the Region's and the Process's home round the nodes
(0 -> 1 -> ... -> 0) back to back.  Reported: the time of one swap and of
one migration (median, p90), the calls that waited in a mediator and how
long in all, and the writes per second during the swaps (migrations)
against before them (the singleton phase is the baseline of migrations).
Last, on a cluster of the centralized manager, the same two phases with node
0 swapping the array's PageDirectory between the fixed and the centralized
manager (``set_policy(a, "fixed", part="directory")``) back to back.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from tornado_dsm._bench import BenchResult, summarize
from tornado_dsm._swap_api import object_of

HELP = ("hot-swap and migration time against the number of nodes, calls that waited, "
        "fault throughput during vs before")
PAGES = 16


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bench swap``."""
    parser.add_argument("--nodes", default="2,3,4", help="cluster sizes, comma-separated (default 2,3,4)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each phase (default 2)")


def churn(a, stop):
    """Write this node's word of every page in turn until stop[0] is set; the writes made."""
    import tornado_dsm as td

    me, n, pages = td.current_node(), 0, a.size // 512
    while n % 64 or not stop[0]:
        a[(n % pages) * 512 + me] = n
        n += 1
    return n


def measure(args: argparse.Namespace) -> list[BenchResult]:
    """Each cluster size in turn (see the module docstring)."""
    try:
        sizes = [int(n) for n in args.nodes.split(",")]
    except ValueError:
        raise SystemExit(f"--nodes must be comma-separated integers, not {args.nodes!r}") from None
    if not args.seconds > 0 or any(n < 2 for n in sizes):
        raise SystemExit(f"--seconds must be > 0 and every --nodes >= 2 (got {args.seconds}, {args.nodes})")
    results = []
    for n in sizes:
        results += _one_size(n, args.seconds) + _directory_size(n, args.seconds)
    return results


def _one_size(nodes: int, seconds: float) -> list[BenchResult]:
    """The four phases on a cluster of ``nodes`` (see the module docstring)."""
    import tornado_dsm as td

    with td.Cluster(nodes=nodes) as c:
        a = c.zeros((PAGES * 512,), np.int64)
        before = _phase(c, a, seconds, lambda: None)
        swaps: list = []
        during = _phase(c, a, seconds, lambda: swaps.extend(_swaps(c, a)))
        c.set_policy(a, "singleton")
        c.set_policy("process", "singleton")
        still = _phase(c, a, seconds, lambda: None)
        moves: list = []
        homes = {kind: c.inspect()[object_of(c, t, "region", "bench")].home
                 for kind, t in (("region", a), ("process", "process"))}
        moving = _phase(c, a, seconds, lambda: moves.extend(_migrations(c, a, homes)))
    return _rows("swap", nodes, swaps, before, during) + _rows("migrate", nodes, moves, still, moving)


def _directory_size(nodes: int, seconds: float) -> list[BenchResult]:
    """Directory swaps (centralized <-> fixed) against no swap, on a centralized-manager cluster."""
    import tornado_dsm as td

    with td.Cluster(nodes=nodes, manager="centralized") as c:
        a = c.zeros((PAGES * 512,), np.int64)
        before = _phase(c, a, seconds, lambda: None)
        swaps: list = []
        during = _phase(c, a, seconds, lambda: swaps.extend(
            c.set_policy(a, word, part="directory") for word in ("fixed", "centralized")))
    waited = sum(r["waited"] for r in swaps)
    wait_ms = sum(r["wait_seconds"] for r in swaps) * 1e3
    note = (f"{waited} call(s) waited, {wait_ms:.1f} ms in all; writes/s before {before:.0f}, "
            f"during swaps {during:.0f} ({during / before:.2f}x)")
    return [summarize(f"swap directory, {nodes} nodes", [r["seconds"] * 1e9 for r in swaps], note=note)]


def _rows(what: str, nodes: int, records: list, before: float, during: float) -> list[BenchResult]:
    """The Region's and the Process's rows of one kind of operation (swap or migrate)."""
    region = [r for r in records if r["kind"] == "region"]
    process = [r for r in records if r["kind"] == "process"]
    waited = sum(r["waited"] for r in records)
    wait_ms = sum(r["wait_seconds"] for r in records) * 1e3
    baseline, plural = ("before", "swaps") if what == "swap" else ("before (singletons)", "migrations")
    note = (f"{waited} call(s) waited, {wait_ms:.1f} ms in all; writes/s {baseline} {before:.0f}, "
            f"during {plural} {during:.0f} ({during / before:.2f}x)")
    return [
        summarize(f"{what} region, {nodes} nodes", [r["seconds"] * 1e9 for r in region], note=note),
        summarize(f"{what} process, {nodes} nodes", [r["seconds"] * 1e9 for r in process]),
    ]


def _phase(c, a, seconds: float, work) -> float:
    """Writes per second of every node's churn while ``work`` repeats for ``seconds``."""
    stop = c.zeros((512,), np.int64)
    out: list = []
    runner = threading.Thread(target=lambda: out.append(c.run(churn, a, stop, threads=1)))
    t0 = time.perf_counter()
    runner.start()
    while time.perf_counter() - t0 < seconds:
        if work() is None:
            time.sleep(0.01)
    stop[0] = 1
    runner.join()
    elapsed = time.perf_counter() - t0
    c.free(stop)
    return sum(out[0]) / elapsed


def _swaps(c, a) -> list:
    """One round of swaps: Region to singleton and back, Process to singleton and back."""
    records = []
    for kind, target in (("region", a), ("process", "process")):
        for policy in ("singleton", "per_node"):
            records.append(dict(c.set_policy(target, policy), kind=kind))
    return records


def _migrations(c, a, homes: dict) -> list:
    """One round of migrations: the Region's home, then the Process's, one node on
    (``homes``: each one's home now, updated)."""
    records = []
    for kind, target in (("region", a), ("process", "process")):
        record = c.migrate(target, (homes[kind] + 1) % c.nnodes)
        homes[kind] = record["to_home"]
        records.append(dict(record, kind=kind))
    return records
