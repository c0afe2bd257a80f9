"""``tornado-dsm bench apps``: applications at a realistic size, on 1 and 2 nodes.

* Jacobi: a 2048 x 2048 float64 grid, 20 sweeps, a band of rows per node and
  a barrier after every sweep (tornado_dsm/_apps.py);
* blocked matrix multiply: C = A B, 1024 x 1024, a band of C's rows per node,
  128 x 128 tiles.

The barrier between sweeps is a ``server`` barrier by default (a clustered
object on node 0: one PPC per wait, about 60 us here) rather than one on
DSM words (a tree barrier is three faults in a row per episode, about 1 ms
here); ``--barrier`` picks another kind to compare.

Each is run on a 1-node and a 2-node cluster and its result checked against
numpy (a wrong result is an error, not a row).  A row's ``median_us`` is the
median over rounds of the computation's time (the slowest node's, timed on
the nodes after a start barrier); the note gives the time per sweep, the
speedup over 1 node and, from the cluster's statistics of the measured run,
faults and bytes moved per sweep.  Where mpi4py and an mpiexec are
installed, the same Jacobi runs as an mpi4py halo-exchange program
(tornado_dsm/_apps_mpi.py) on as many ranks, and its row gives the ratio.

Node processes get OPENBLAS_NUM_THREADS=1 (set before they start) so that
one node is one core's worth of work, as the comparison assumes.  Node 0 is
this process, whose OpenBLAS was set up at import: its matrix tiles may still
use every core, which favours ``matmul, 1 node``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from tornado_dsm._bench import BenchResult
from tornado_dsm import _apps

HELP = "Jacobi and blocked matrix multiply on 1 and 2 nodes, checked against numpy (and mpi4py)"
QUICK = {"n": 256, "sweeps": 4, "matmul_n": 128, "block": 32, "rounds": 1}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bench apps``."""
    parser.add_argument("--n", type=int, default=2048, help="Jacobi grid side (default 2048)")
    parser.add_argument("--sweeps", type=int, default=20, help="Jacobi sweeps (default 20)")
    parser.add_argument("--matmul-n", type=int, default=1024, help="matrix side (default 1024)")
    parser.add_argument("--block", type=int, default=128, help="matrix multiply tile side (default 128)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds per row (default 3)")
    parser.add_argument("--prefetch", type=int, default=0,
                        help="pages a read fault brings beyond the missing one (default 0)")
    parser.add_argument("--barrier", default="server",
                        help="barrier kind between sweeps: server (one PPC per wait; default), "
                             "tree, counter, mcs, tournament, dissemination (on DSM words)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (a smoke run: 256 grid, 4 sweeps, 128 matrix, 1 round)")
    parser.add_argument("--no-mpi", action="store_true", help="skip the mpi4py comparison")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def measure(args: argparse.Namespace) -> list[BenchResult]:
    """Every row: Jacobi and matmul on 1 and 2 nodes, then the mpi4py Jacobi."""
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    _check(args)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # inherited by the nodes at spawn
    from tqdm import tqdm

    mpi = None if args.no_mpi else mpiexec()
    bar = tqdm(total=4 * args.rounds + (2 if mpi else 0), desc="bench apps", unit="run",
               disable=args.no_progress)
    try:
        out = _app_rows("jacobi", args, bar, _jacobi_once, args.sweeps)
        out += _app_rows("matmul", args, bar, _matmul_once, 1)
        if mpi:
            out += _mpi_rows(mpi, args, out[1], bar)
    finally:
        bar.close()
    return out


def _check(args) -> None:
    """SystemExit naming a size or count that cannot run and what is accepted."""
    if args.n < 4 or args.sweeps < 1 or args.rounds < 1:
        raise SystemExit(f"--n must be >= 4, --sweeps and --rounds >= 1 (got {args.n}, {args.sweeps}, {args.rounds})")
    if args.block < 1 or args.matmul_n < args.block or args.matmul_n % args.block:
        raise SystemExit(f"--matmul-n must be a multiple of --block, both >= 1 (got {args.matmul_n}, {args.block})")
    from tornado_dsm._barriers import KINDS
    if args.barrier not in KINDS:
        raise SystemExit(f"--barrier must be one of {', '.join(KINDS)}, not {args.barrier!r}")
    if args.prefetch < 0:
        raise SystemExit(f"--prefetch must be >= 0 pages, not {args.prefetch}")


def _app_rows(app: str, args, bar, once, steps: int) -> list[BenchResult]:
    """Rows ``APP, 1 node`` and ``APP, 2 nodes``: median time, speedup, per-step traffic."""
    rows, single = [], None
    for nodes in (1, 2):
        runs = []
        for _ in range(args.rounds):
            runs.append(once(nodes, args))
            bar.update(1)
        seconds = [s for s, _ in runs]
        median = float(np.median(seconds))
        stats = runs[len(runs) // 2][1]
        single = single or median
        per = "sweep" if steps > 1 else "multiply"
        note = (f"{1e3 * median / steps:.2f} ms per {per}, speedup {single / median:.2f}x over 1 node; "
                f"per {per}: "
                f"{stats.total.faults / steps:.0f} faults ({stats.total.coherence_faults / steps:.0f} coherence), "
                f"{stats.total.bytes / steps / 1024:.0f} KiB moved, {stats.total.messages / steps:.0f} messages; "
                f"{args.barrier} barrier")
        rows.append(BenchResult(f"{app}, {nodes} node{'s' if nodes > 1 else ''}", 1e6 * median,
                                1e6 * max(seconds), single / median, len(runs), note))
    return rows


def _cluster(nodes: int):
    import tornado_dsm as td
    return td.Cluster(nodes=nodes, size=1 << 30)


def _jacobi_once(nodes: int, args) -> tuple:
    """(seconds of the sweeps, statistics of the measured run); the grid checked."""
    n = args.n
    with _cluster(nodes) as c:
        g0, g1 = (c.zeros((n, n), prefetch=args.prefetch) if args.prefetch else c.zeros((n, n))
                  for _ in range(2))
        barrier = c.barrier(nodes, kind=args.barrier)
        c.run(_apps.jacobi_setup, g0, g1, barrier)
        with c.measure() as m:
            seconds = max(c.run(_apps.jacobi_sweeps, g0, g1, barrier, args.sweeps))
        result = np.array((g0, g1)[args.sweeps % 2])
    if not np.allclose(result, _apps.jacobi_reference(n, args.sweeps)):
        raise AssertionError(f"jacobi on {nodes} nodes: the shared grid differs from numpy's")
    return seconds, m.statistics


def _matmul_once(nodes: int, args) -> tuple:
    """(seconds of the multiply, statistics of the measured run); C checked."""
    n, block, seed = args.matmul_n, args.block, 17
    with _cluster(nodes) as c:
        a, b, cc = (c.zeros((n, n), prefetch=args.prefetch) if args.prefetch else c.zeros((n, n))
                    for _ in range(3))
        barrier = c.barrier(nodes, kind=args.barrier)
        c.run(_apps.matmul_setup, a, b, cc, barrier, seed, block)
        with c.measure() as m:
            seconds = max(c.run(_apps.matmul_band, a, b, cc, barrier, block))
        result = np.array(cc)
    if not np.allclose(result, _apps.matmul_reference(n, seed, block)):
        raise AssertionError(f"matmul on {nodes} nodes: the shared product differs from numpy's")
    return seconds, m.statistics


# ---- the mpi4py Jacobi -----------------------------------------------------------------------

def mpiexec() -> str | None:
    """This environment's mpiexec (next to its python, else on PATH) if mpi4py
    is installed too; None otherwise (the comparison is skipped)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.is_file() else shutil.which("mpiexec")


def run_mpi_jacobi(mpi: str, ranks: int, n: int, sweeps: int, timeout: float = 300.0) -> dict:
    """One run of the mpi4py Jacobi on ``ranks`` ranks: {"ranks", "seconds", "ok"}."""
    cmd = [mpi, "-n", str(ranks), sys.executable, "-m", "tornado_dsm._apps_mpi", str(n), str(sweeps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}: {proc.stderr[-2000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if not out["ok"]:
        raise AssertionError(f"mpi4py jacobi on {ranks} ranks: the grid differs from numpy's")
    return out


def _mpi_rows(mpi: str, args, dsm_two: BenchResult, bar) -> list[BenchResult]:
    """The mpi4py Jacobi on 1 and 2 ranks (median of rounds); the 2-rank row gives
    the DSM 2-node time's ratio to it."""
    rows = []
    for ranks in (1, 2):
        seconds = [run_mpi_jacobi(mpi, ranks, args.n, args.sweeps)["seconds"] for _ in range(args.rounds)]
        bar.update(1)
        median = float(np.median(seconds))
        ratio = dsm_two.median_us / (1e6 * median)
        note = f"{1e3 * median / args.sweeps:.2f} ms per sweep" + (
            f"; jacobi, 2 nodes (DSM) is {ratio:.2f}x this (target <= 1.5x)" if ranks == 2 else "")
        rows.append(BenchResult(f"jacobi, mpi4py, {ranks} rank{'s' if ranks > 1 else ''}", 1e6 * median,
                                1e6 * max(seconds), ratio if ranks == 2 else None, len(seconds), note))
    return rows
