"""``tornado-dsm bench NAME``: benchmarks that measure a path and its floor in
one run and report ratios (machines here are noisy: ratios, not absolutes).

Each benchmark module exposes ``HELP``, ``add_arguments(parser)`` and
``measure(args) -> list[BenchResult]``; register it in BENCHES.  The JSON
shape is shared: {"bench": NAME, "results": [{"name", "median_us", "p90_us",
"ratio_to_floor", ...}, ...]}.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

import attrs
import numpy as np

HELP = "measure a path of the system against its floor, in one run"

# name -> module (imported only when that benchmark runs)
BENCHES = {
    "faults": "tornado_dsm._bench_faults",
    "coherence": "tornado_dsm._bench_coherence",
    "ppc": "tornado_dsm._bench_ppc",
    "scale": "tornado_dsm._bench_scale",
    "apps": "tornado_dsm._bench_apps",
    "swap": "tornado_dsm._bench_swap",
}


@attrs.frozen
class BenchResult:
    """One measured path: latency percentiles and its ratio to the floor."""

    name: str
    median_us: float
    p90_us: float
    ratio_to_floor: float | None = None
    samples: int = 0
    note: str = ""


def summarize(name: str, ns, floor: BenchResult | None = None, note: str = "") -> BenchResult:
    """Percentiles of a nanosecond sample array, with the ratio to ``floor``."""
    us = np.asarray(ns, dtype=np.float64) / 1000.0
    median = float(np.median(us))
    ratio = median / floor.median_us if floor is not None and floor.median_us > 0 else None
    return BenchResult(name=name, median_us=median, p90_us=float(np.percentile(us, 90)),
                       ratio_to_floor=ratio, samples=int(us.size), note=note)


def chosen_backends(choice: str) -> tuple:
    """The fault backends a ``--backend both|mprotect|uffd`` option names, in
    measuring order (``both`` is mprotect alone where uffd is unavailable);
    SystemExit naming the reason when uffd is asked for and unavailable."""
    from tornado_dsm.kernel import uffd_support

    support = uffd_support()
    if choice == "uffd" and not support.ok:
        raise SystemExit(f"--backend uffd: the uffd backend is not available here: {support.reason}")
    if choice == "both":
        return ("mprotect", "uffd") if support.ok else ("mprotect",)
    return (choice,)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``tornado-dsm bench``."""
    sub = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, modname in BENCHES.items():
        module = importlib.import_module(modname)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        p.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
        module.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    """Run one benchmark, print its table, optionally write its JSON.  Under an MPI
    launcher rank 0 runs it and the other ranks serve as its clusters' nodes."""
    from ._mpi import run_command

    return run_command(lambda a, _launcher, _size: _run(a), args)


def _run(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHES[args.bench])
    results = module.measure(args)
    print(render_table(args.bench, results))
    if args.json:
        doc = {"bench": args.bench, "results": [attrs.asdict(r) for r in results]}
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


def render_table(bench: str, results: list[BenchResult]) -> str:
    """A fixed-width table of results."""
    width = max(len(r.name) for r in results)
    lines = [f"bench {bench}", f"{'path':<{width}}  {'median µs':>10}  {'p90 µs':>9}  {'× floor':>8}  samples"]
    for r in results:
        ratio = f"{r.ratio_to_floor:.2f}" if r.ratio_to_floor is not None else "-"
        lines.append(f"{r.name:<{width}}  {r.median_us:>10.2f}  {r.p90_us:>9.2f}  {ratio:>8}  {r.samples}")
        if r.note:
            lines.append(f"{'':<{width}}  {r.note}")
    return "\n".join(lines)
