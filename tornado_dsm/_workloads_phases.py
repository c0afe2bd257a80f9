"""The ``phases`` workload: a run whose usage pattern changes, for the adaptive policy.

Each phase runs for ``workload.seconds`` on every thread of every node, one
measured step each, in the order ``workload.phases`` names them:

    read    every thread reads every page of one shared region, then (thread 0
            of each node) drops the node's mappings, again and again: after the
            first pass every fault is in-core, Process.find_region ->
            Region.translate -> this node's FCM, so its cost is the two lookups
            (local PPCs on reps, remote PPCs to the home through stubs)
    churn   every thread attaches a one-page region to the Process and detaches
            it, again and again: each change goes through the Process root,
            which must update every rep before returning (Tornado's case for a
            single copy of an object that changes often)

A thread counts what it did in bins of BIN seconds from the run's start, so the
report can draw throughput over time; an operation is a page read in ``read``
and an attach+detach pair in ``churn``.  The driver keeps, in ``ctx.sync``,
each phase's operations, seconds and throughput, the timeline, and the policy
of the Process and the Region over time (their swap histories).
"""

from __future__ import annotations

import time
from time import perf_counter

import attrs

from tornado_dsm.kernel import PAGE, current_cos, is_adaptive, parse_policy
from tornado_dsm.objects import Process, drop_mappings

from ._workloads_base import WORDS, ThreadResult, _me

PHASES = ("read", "churn")
BIN = 0.1  # seconds per timeline bin
CHURN_OID = 1 << 60  # the (never created) oid the churned regions name: nothing faults on them


@attrs.frozen
class PhaseResult(ThreadResult):
    """A thread's work in one phase, with its operations per BIN-second bin of the run."""

    bins: tuple = ()


def parse_phases(text: str) -> tuple[str, ...]:
    """The phases ``text`` names ("read,churn"); ValueError naming a bad one."""
    names = tuple(part.strip() for part in text.split(","))
    bad = [n for n in names if n not in PHASES]
    if not text.strip() or bad:
        raise ValueError(f"unknown phase {bad[0] if bad else text!r}: expected a comma-separated list of "
                         f"{', '.join(PHASES)}")
    return names


def _binned(stamps: list, t0: float) -> tuple:
    """Counts per BIN from ``t0`` of the (time, count) pairs ``stamps``."""
    bins: list = []
    for t, n in stamps:
        b = max(int((t - t0) / BIN), 0)
        bins.extend([0] * (b + 1 - len(bins)))
        bins[b] += n
    return tuple(bins)


def read_phase(p: dict, a, fcm: int, t0: float, seconds: float) -> PhaseResult:
    """Read every page of ``a`` over and over for ``seconds``, thread 0 dropping this
    node's mappings after each pass (so the next pass faults in-core)."""
    node, thread, _g = _me(p["tpn"])
    pages, stamps, total = a.size // WORDS, [], 0
    start = perf_counter()
    end = start + seconds
    while True:
        for page in range(pages):
            total += int(a[page * WORDS])
        stamps.append((time.time(), pages))
        if thread == 0:
            drop_mappings([fcm])
        if perf_counter() >= end:
            break
    ops = sum(n for _t, n in stamps)
    return PhaseResult(node, thread, ops, perf_counter() - start, total, _binned(stamps, t0))


def churn_phase(p: dict, process: int, address: int, t0: float, seconds: float) -> PhaseResult:
    """Attach and detach a one-page region of this thread's own for ``seconds``."""
    node, thread, g = _me(p["tpn"])
    ref, start = current_cos().ref(process, Process), address + g * PAGE
    stamps, t_start = [], perf_counter()
    end = t_start + seconds
    while perf_counter() < end:
        ref.attach(start, start + PAGE, CHURN_OID + g, f"churn{g}")
        ref.detach(CHURN_OID + g)
        stamps.append((time.time(), 1))
    return PhaseResult(node, thread, len(stamps), perf_counter() - t_start, 0.0, _binned(stamps, t0))


def drive_phases(ctx, s) -> None:
    """An unmeasured read pass (every node caches the pages), then each phase as a
    measured step; the phase figures, timeline and policies go to ctx.sync."""
    p = ctx.params()
    a = ctx.region(s["region.pages"])
    oids = ctx.oids(a)
    fcm, address = oids["fcm"], ctx.reserve(s["cluster.nodes"] * s["cluster.threads_per_node"])
    t0 = time.time()
    ctx.step(read_phase, p, a, fcm, t0, 0.0, measured=False, label="warm-up")
    phases, bins = [], []
    for name in parse_phases(s["workload.phases"]):
        began = time.time() - t0
        if name == "read":
            results = ctx.step(read_phase, p, a, fcm, t0, float(s["workload.seconds"]), label=name)
        else:
            results = ctx.step(churn_phase, p, oids["process"], address, t0,
                               float(s["workload.seconds"]), label=name)
        phases.append(_phase_row(name, results, began, time.time() - t0))
        bins = _add_bins(bins, [r.bins for r in results])
    ctx.sync.update(phases=phases, timeline={"bin": BIN, "ops": bins},
                    policies={"process": _policy_times(ctx, "process", t0),
                              "region": _policy_times(ctx, a, t0)})


def _phase_row(name: str, results: list, began: float, ended: float) -> dict:
    """One phase's figures: operations, the slowest thread's seconds, throughput."""
    ops = sum(r.ops for r in results)
    seconds = max((r.seconds for r in results), default=0.0)
    return {"phase": name, "ops": ops, "seconds": seconds,
            "throughput": ops / seconds if seconds else 0.0, "start": began, "end": ended}


def _add_bins(total: list, more) -> list:
    """``total`` plus every bin list of ``more``, bin by bin."""
    for bins in more:
        total = total + [0] * (len(bins) - len(total))
        for i, n in enumerate(bins):
            total[i] += n
    return total


def _policy_times(ctx, target, t0: float) -> dict:
    """The policy of ``target`` over the run: the first one, whether it is adaptive,
    then [seconds, policy, reason] at each switch (from its swap history)."""
    history = ctx.history(target)
    key = "policies.process" if isinstance(target, str) else "policies.region"
    policy = ctx.s[key]
    adaptive = is_adaptive(policy)
    first = history[0]["from"] if history else policy
    if adaptive and not history:  # never switched: still under the policy it started with
        first = dict(parse_policy(policy, 1).params).get("start", "singleton")
    return {"initial": first, "adaptive": adaptive,
            "switches": [[h["time"] - t0, h["to"], h["reason"]] for h in history]}
