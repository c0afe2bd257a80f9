"""``tornado-dsm chaos``: fault injection against real clusters, bounded in time.

Every trial (``_chaos_trial``) is a Python process of its own, in a session
of its own, with a hard time limit: a trial that does not end within it is a
*hang* and its whole process group (node processes included) is killed, so
one stuck trial can neither stop the run nor leave processes behind.  The
plan is every fault kind under every protocol and manager, ``repeat`` times,
each trial with its own seed (victim node, moment of the fault).

A run passes when no trial hung, no call ended late or unclearly, no write
was lost where no node was, the survivors' totals were exact, and no
survivor kept a connection or a page in flight for the lost node.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import attrs

from tornado_dsm.objects import MANAGERS, PROTOCOLS

HELP = "inject faults (kill, stop, stall, delay, drop, memory pressure) into real clusters and check every call"
KINDS = ("kill", "stop", "stall", "delay", "drop", "pressure")
TRIAL_LIMIT = 60.0   # seconds before a trial counts as a hang


@attrs.frozen
class ChaosTotals:
    """The sums of a chaos run (``failures`` lists what went wrong, by trial)."""

    trials: int
    faults: int
    faults_during_call: int
    calls: int
    hangs: int
    late: int
    lost_writes: int
    residue: int
    reported_losses: int
    failures: tuple
    seconds: float

    @property
    def passed(self) -> bool:
        return not (self.hangs or self.late or self.lost_writes or self.residue or self.failures)


def plan(seed: int = 0, repeat: int = 1, kinds=KINDS) -> list[dict]:
    """Every kind under every protocol and manager, ``repeat`` times; a seed per trial."""
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"unknown fault kinds {bad}; accepted: {', '.join(KINDS)}")
    if not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be a positive integer, not {repeat!r}")
    combos = itertools.product(range(repeat), kinds, PROTOCOLS, MANAGERS)
    return [{"kind": k, "protocol": p, "manager": m, "seed": seed * 100003 + i}
            for i, (_r, k, p, m) in enumerate(combos)]


def run_trial(spec: dict, limit: float = TRIAL_LIMIT) -> dict:
    """One trial in a process group of its own; its counts, or a hang after ``limit``."""
    cmd = [sys.executable, "-m", "tornado_dsm._chaos_trial", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"spec": spec, "hang": True}
    finally:
        _kill_group(proc.pid)   # nodes of a trial that ended badly
    lines = out.strip().splitlines()
    try:
        return {"spec": spec, "hang": False, **json.loads(lines[-1])}
    except (IndexError, ValueError):
        tail = err.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        return {"spec": spec, "hang": False, "unclear": [f"trial crashed: {tail[0]}"[:300]]}


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def totals(results: list, seconds: float) -> ChaosTotals:
    """Add up trial results."""
    def total(key):
        return sum(r.get(key, 0) for r in results)
    failures = tuple(f"{_name(r['spec'])}: {u}" for r in results for u in r.get("unclear", []))
    failures += tuple(f"{_name(r['spec'])}: hang" for r in results if r.get("hang"))
    return ChaosTotals(len(results), total("faults"), total("during_call"), total("calls"),
                       sum(bool(r.get("hang")) for r in results), total("late"), total("lost_writes"),
                       total("residue"), total("reported_losses"), failures, round(seconds, 1))


def _name(spec: dict) -> str:
    return f"{spec['kind']}/{spec['protocol']}/{spec['manager']}/seed {spec['seed']}"


def run_chaos(specs: list, jobs: int = 1, progress: bool = True) -> tuple[ChaosTotals, list]:
    """Run the trials ``jobs`` at a time; (totals, per-trial results)."""
    from tqdm import tqdm
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_trial, s) for s in specs]
        bar = tqdm(total=len(specs), desc="chaos", unit="trial", disable=not progress)
        for _ in concurrent.futures.as_completed(futures):
            bar.update()
        bar.close()
    results = [f.result() for f in futures]
    return totals(results, time.monotonic() - start), results


# ---- the command ----------------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the plan (default 0)")
    parser.add_argument("--repeat", type=int, default=1, help="trials per kind, protocol and manager")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated fault kinds (default all: {','.join(KINDS)})")
    parser.add_argument("--jobs", type=int, default=2, help="trials at once (default 2)")
    parser.add_argument("--json", metavar="PATH", help="write totals and every trial's result here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    """Run the plan; print the totals; exit status 1 unless it passed (2: bad arguments)."""
    try:
        specs = plan(args.seed, args.repeat, tuple(k for k in args.kinds.split(",") if k))
        if args.jobs < 1:
            raise ValueError(f"--jobs must be a positive integer, not {args.jobs}")
        if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
            raise ValueError(f"--json {args.json!r}: its directory does not exist")
    except ValueError as e:
        print(f"tornado-dsm chaos: {e}", file=sys.stderr)
        return 2
    result, trials = run_chaos(specs, args.jobs, not args.no_progress)
    print(report(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"totals": attrs.asdict(result), "trials": trials}, f, indent=1)
    return 0 if result.passed else 1


def report(t: ChaosTotals) -> str:
    """The totals as a few lines of text."""
    lines = [f"{t.trials} trials, {t.faults} faults injected ({t.faults_during_call} during a call), "
             f"{t.calls} calls checked in {t.seconds} s",
             f"hangs {t.hangs}, late calls {t.late}, lost writes {t.lost_writes}, "
             f"residue {t.residue}, losses reported by lost_arrays {t.reported_losses}",
             "PASSED" if t.passed else f"FAILED ({len(t.failures)} failures)"]
    return "\n".join(lines + [f"  {f}" for f in t.failures])
