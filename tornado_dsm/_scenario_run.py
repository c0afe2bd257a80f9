"""Running a scenario: one Cluster per combination of [vary], figures from the
statistics taken around every measured step.

Around a measured step the runner takes the cluster statistics (faults by
kind, latency histogram), the backing stores' zero fills and every node's PPC
counters, before and after; the differences are what the step did.  The PPC
snapshot is taken innermost (after the statistics before the step, before the
statistics after it), so the statistics' own calls are not counted; the node
service (oid 0) is left out.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time

import attrs
import numpy as np

from tornado_dsm.kernel import DEFAULT_BASE, PAGE, USER_SPACE_END

from ._scenario_config import Scenario, ScenarioError
from ._stats import NodeStatistics
from ._workloads import DRIVERS, ThreadResult, steps_of

SLOT = 1 << 36  # distance between the windows of successive clusters in one process


@attrs.frozen
class PPCRow:
    """Remote or local PPCs one node made on one object's method in the measured steps."""

    node: int
    object: str
    method: str
    kind: str
    calls: int
    bytes: int


@attrs.frozen
class ObjectRow:
    """One clustered object at the end of the run (from Cluster.inspect)."""

    name: str
    cls: str
    policy: str
    home: int
    rep_nodes: tuple
    stub_nodes: tuple
    calls_local: int
    calls_remote: int
    misses: int
    history: tuple = ()  # its swaps (hot swaps, adaptive switches) and migrations in the run


@attrs.frozen
class RunResult:
    """The figures of one combination (one cluster run)."""

    scenario: str
    params: dict                       # the [vary] values of this combination
    values: dict                       # every key of the scenario, as run
    threads: tuple[ThreadResult, ...]  # per thread, summed over the measured steps
    nodes: tuple[NodeStatistics, ...]  # per node, measured steps only
    busy_seconds: tuple[float, ...]    # per node: sum over steps of its slowest thread
    wall_seconds: float                # sum over steps of the slowest thread anywhere
    zero_fills: int
    ppc: tuple[PPCRow, ...]
    objects: tuple[ObjectRow, ...]
    elapsed_seconds: float             # the whole combination, cluster start to close
    sync: dict = attrs.field(factory=dict)  # lock and barrier kinds: the driver's own figures
    backends: tuple[str, ...] = ()     # per node: the fault backend its window took

    @property
    def total(self) -> NodeStatistics:
        """The measured statistics summed over nodes."""
        total = self.nodes[0]
        for s in self.nodes[1:]:
            total = total + s
        return attrs.evolve(total, node=-1)

    def backend(self) -> str:
        """The fault backend of the run: "uffd", "mprotect", or "mixed (0: uffd, 1: mprotect)"."""
        kinds = set(self.backends)
        if len(kinds) <= 1:
            return next(iter(kinds), "unknown")
        return "mixed (" + ", ".join(f"{n}: {b}" for n, b in enumerate(self.backends)) + ")"

    def faults(self, node: int | None = None) -> int:
        """Faults resolved in the measured steps, on ``node`` or in total.

        Counted by the FCM reps (in-core + coherence + first touch), which
        always run on the faulting node, whatever the Region's policy.
        """
        s = self.total if node is None else self.nodes[node]
        return s.faults

    def faults_per_second(self, node: int | None = None) -> float:
        """Faults per second of measured time, on ``node`` or over the cluster."""
        seconds = self.wall_seconds if node is None else self.busy_seconds[node]
        return self.faults(node) / seconds if seconds > 0 else 0.0

    def cost_us(self) -> float:
        """Mean over working threads of their measured µs per access (Tornado's cost)."""
        per = [t.seconds / t.ops * 1e6 for t in self.threads if t.ops]
        return float(np.mean(per)) if per else 0.0

    def ppc_calls(self, obj: str, kind: str = "remote", node: int | None = None) -> int:
        """PPCs of ``kind`` on objects named ``obj`` or ``obj:...`` (made by ``node``, or all)."""
        return sum(r.calls for r in self.ppc if r.kind == kind and _is(r.object, obj)
                   and (node is None or r.node == node))

    def ppc_per_fault(self, obj: str, kind: str = "remote", node: int | None = None) -> float:
        """PPCs of ``kind`` to ``obj`` per measured fault (of ``node``, or in total)."""
        faults = self.faults(node)
        return self.ppc_calls(obj, kind, node) / faults if faults else 0.0

    def home_of(self, obj: str) -> int:
        """The home node of the (first) object named ``obj`` or ``obj:...`` (0 if none)."""
        return next((o.home for o in self.objects if _is(o.name, obj)), 0)

    def ppc_per_fault_off_home(self, obj: str) -> float:
        """Remote PPCs to ``obj`` per fault, counting only nodes other than its home."""
        others = [n for n in range(len(self.nodes)) if n != self.home_of(obj)]
        faults = sum(self.faults(n) for n in others)
        return sum(self.ppc_calls(obj, "remote", n) for n in others) / faults if faults else 0.0


def _is(name: str, obj: str) -> bool:
    return name == obj or name.startswith(obj + ":")


class RunContext:
    """What a workload driver uses: the cluster, shared regions and measured steps."""

    def __init__(self, cluster, s: Scenario, tmpdir: str, on_step) -> None:
        self.cluster, self.s, self.tmpdir, self.on_step = cluster, s, tmpdir, on_step
        self.threads: dict = {}
        self.node_stats = [_zero_stats(n) for n in range(s["cluster.nodes"])]
        self.busy = [0.0] * s["cluster.nodes"]
        self.wall = 0.0
        self.ppc: dict = {}
        self.sync: dict = {}   # the lock and barrier drivers' own figures (RunResult.sync)

    def params(self) -> dict:
        """The scenario values node functions need, as a small picklable dict."""
        s = self.s
        return {"tpn": s["cluster.threads_per_node"], "nodes": s["cluster.nodes"],
                "pages": s["region.pages"], "form": s["workload.form"], "pattern": s["workload.pattern"],
                "stride": s["workload.stride"], "write_fraction": float(s["workload.write_fraction"]),
                "seed": s["workload.seed"], "ops": s["workload.ops"], "block": s["workload.block"]}

    def region(self, pages: int, dtype=np.int64) -> np.ndarray:
        """A new shared region of ``pages`` pages (anonymous or file-backed, per [region])."""
        words = pages * PAGE // np.dtype(dtype).itemsize
        prefetch = self.s["region.prefetch"]
        if self.s["region.backing"] == "anonymous":
            return self.cluster.zeros((words,), dtype, prefetch=prefetch)
        path = self.s["region.path"] or os.path.join(self.tmpdir, "region")
        path = f"{path}.{len(self.cluster.arrays())}"
        with open(path, "ab") as f:  # create it, and make it long enough (never shorter)
            if f.seek(0, os.SEEK_END) < pages * PAGE:
                f.truncate(pages * PAGE)
        return self.cluster.map_file(path, (words,), dtype, "r+", prefetch=prefetch)

    def reserve(self, pages: int) -> int:
        """The address of ``pages`` window pages that no object backs (the phases
        workload attaches and detaches regions there); held until the run ends."""
        first = int(self.cluster.vm.process.allocate(pages))
        return self.cluster.config.base + first * PAGE

    def oids(self, a: np.ndarray) -> dict:
        """The oids behind shared array ``a``: its "region" and "fcm", and the "process"."""
        alloc = self.cluster._arrays.allocation(a)[0]
        return {"region": alloc.region, "fcm": alloc.fcm, "process": int(self.cluster.vm.process)}

    def history(self, target) -> list:
        """The swap history of ``target`` (an array's Region, or "process"): Cluster.swap_history."""
        return self.cluster.swap_history(target)

    def step(self, fn, *args, on="all", threads: int | None = None, measured: bool = True,
             label: str = "") -> list:
        """Run ``fn`` on the nodes ``on`` (``threads`` per node, default the scenario's); if
        ``measured``, add what it did to the figures."""
        if not measured:
            results = self.cluster.run(fn, *args, on=on, threads=threads)
        else:
            before = self.cluster.statistics()
            ppc_before = _ppc_counts(self.cluster)
            results = self.cluster.run(fn, *args, on=on, threads=threads)
            ppc_after = _ppc_counts(self.cluster)
            self._add(before, self.cluster.statistics(), ppc_before, ppc_after, results)
        self.on_step(label)
        return results

    def _add(self, before, after, ppc_before, ppc_after, results) -> None:
        for n, (b, a) in enumerate(zip(before.nodes, after.nodes)):
            self.node_stats[n] = _plus(self.node_stats[n], _minus(a, b))
        for key, (calls, nbytes) in ppc_after.items():
            c0, b0 = ppc_before.get(key, (0, 0))
            if calls > c0:
                old = self.ppc.get(key, (0, 0))
                self.ppc[key] = (old[0] + calls - c0, old[1] + nbytes - b0)
        self._add_times(results)

    def _add_times(self, results: list) -> None:
        slowest: dict = {}
        for r in results:
            key = (r.node, r.thread)
            t = self.threads.get(key, ThreadResult(r.node, r.thread, 0, 0.0))
            self.threads[key] = ThreadResult(r.node, r.thread, t.ops + r.ops, t.seconds + r.seconds,
                                             t.checksum + r.checksum)
            slowest[r.node] = max(slowest.get(r.node, 0.0), r.seconds)
        for node, seconds in slowest.items():
            self.busy[node] += seconds
        self.wall += max(slowest.values(), default=0.0)


def _zero_stats(node: int) -> NodeStatistics:
    return NodeStatistics(node=node)


def _minus(a: NodeStatistics, b: NodeStatistics) -> NodeStatistics:
    """Field-wise a - b (the histogram bucket by bucket); resident pages as of ``a``."""
    fields = {f.name: getattr(a, f.name) - getattr(b, f.name) for f in attrs.fields(NodeStatistics)
              if f.name not in ("node", "latency_histogram", "resident_pages")}
    hist = tuple(x - y for x, y in zip(a.latency_histogram, b.latency_histogram))
    return NodeStatistics(node=a.node, resident_pages=a.resident_pages, latency_histogram=hist, **fields)


def _plus(a: NodeStatistics, b: NodeStatistics) -> NodeStatistics:
    """a + b keeping the node id and the later resident count."""
    return attrs.evolve(a + b, node=a.node, resident_pages=b.resident_pages)


def _ppc_counts(cluster) -> dict:
    """(node, oid, method, kind) -> (calls, bytes) on every node, the node service left out."""
    counts = {}
    for stats in cluster.ppc_statistics():
        for c in stats.counters:
            if c.oid:
                counts[(stats.node, c.oid, c.method, c.kind)] = (c.calls, c.bytes)
    return counts


# ---- running ---------------------------------------------------------------------------------

def run_scenario(scenario: Scenario, base: int = DEFAULT_BASE, progress: bool = True,
                 launcher: str = "spawn") -> list[RunResult]:
    """Run every combination of ``scenario`` (one cluster each, started by ``launcher``:
    see `Cluster`); results in vary order.
    A bad ``base`` is a ScenarioError before any cluster starts (see `plan_runs`)."""
    from tqdm import tqdm

    runs = plan_runs(scenario, base)
    bar = tqdm(total=sum(steps_of(s) for _o, s, _b in runs), desc=scenario.name, unit="step",
               disable=None if progress else True, leave=False, dynamic_ncols=True)
    results = Results(planned=len(runs))
    try:
        for override, s, window_base in runs:
            try:
                results.append(run_one(s, override, window_base, lambda label, o=override: _tick(bar, o, label),
                                       launcher))
            except Exception as exc:
                exc.add_note(f"while running scenario {scenario.name} ({scenario.source}) with "
                             f"{override or 'the values as written'}")
                raise
            except KeyboardInterrupt:   # Ctrl-C: the run in progress is left out, the others kept
                results.interrupted = override or "the values as written"
                break
    finally:
        bar.close()
    return results


class Results(list):
    """The RunResults of a scenario, in vary order; ``interrupted``: the combination
    Ctrl-C stopped (None if every one of the ``planned`` runs finished)."""

    def __init__(self, planned: int) -> None:
        super().__init__()
        self.planned = planned
        self.interrupted = None


# (override, scenario, window base) of every combination, in vary order: the
# windows are one SLOT-aligned slot apart from ``base`` on, so they never overlap.
# ScenarioError (key "--base") unless base is a positive multiple of the page and
# every window ends within user space.
def plan_runs(scenario: Scenario, base: int) -> list[tuple[dict, Scenario, int]]:
    accepted = f"expected a positive (nonzero) multiple of the page size ({PAGE}), e.g. {DEFAULT_BASE:#x} (the default)"
    if not isinstance(base, int) or isinstance(base, bool) or base <= 0 or base % PAGE:
        raise ScenarioError(scenario.source, "--base", hex(base) if isinstance(base, int) else base, accepted)
    runs = [(override, scenario.with_values(override)) for override in scenario.combinations()]
    slot = -(-max(s["cluster.window_mib"] << 20 for _o, s in runs) // SLOT) * SLOT
    planned = [(override, s, base + i * slot) for i, (override, s) in enumerate(runs)]
    end = max(b + (s["cluster.window_mib"] << 20) for _o, s, b in planned)
    if end > USER_SPACE_END:
        highest = (USER_SPACE_END - (end - base)) // PAGE * PAGE
        raise ScenarioError(scenario.source, "--base", hex(base),
                            f"the windows of the {len(planned)} run(s) would end at {end:#x}, past the end of "
                            f"user space ({USER_SPACE_END:#x}); "
                            + (f"expected a base of at most {highest:#x}" if highest > 0 else
                               "lower cluster.window_mib or the number of combinations"))
    return planned


def _tick(bar, override: dict, label: str) -> None:
    bar.set_postfix_str(" ".join(f"{k.rpartition('.')[2]}={v}" for k, v in override.items()) + f" {label}")
    bar.update(1)


def backends_label(runs) -> str:
    """The fault backend of ``runs`` (RunResults), or each one's where they differ."""
    kinds = sorted({r.backend() for r in runs})
    return " / ".join(kinds) or "unknown"


def run_one(s: Scenario, override: dict, base: int, on_step=lambda label: None,
            launcher: str = "spawn") -> RunResult:
    """Run one combination on a new cluster; returns its figures."""
    import tornado_dsm as td

    t0 = time.perf_counter()
    window = s["cluster.window_mib"] << 20
    with contextlib.ExitStack() as stack:
        tmpdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="tornado-dsm-"))
        cluster = stack.enter_context(td.Cluster(
            nodes=s["cluster.nodes"], threads_per_node=s["cluster.threads_per_node"],
            protocol=s["cluster.protocol"], manager=s["cluster.manager"],
            policies={"process": s["policies.process"], "region": s["policies.region"]},
            memory_per_node=s["cluster.memory_per_node"] or None, base=base, size=window,
            debug=s["cluster.debug"], launcher=launcher,
            backend=None if s["cluster.backend"] == "default" else s["cluster.backend"]))
        ctx = RunContext(cluster, s, tmpdir, on_step)
        DRIVERS[s["workload.kind"]](ctx, s)
        return _result(ctx, s, override, cluster, t0)


def _result(ctx: RunContext, s: Scenario, override: dict, cluster, t0: float) -> RunResult:
    view = cluster.inspect()
    names = {o.oid: o.name for o in view.objects}
    ppc = tuple(PPCRow(node, names.get(oid, "cos" if oid == 1 else f"{oid:#x}"), method, kind, calls, nbytes)
                for (node, oid, method, kind), (calls, nbytes) in sorted(ctx.ppc.items()))
    objects = tuple(ObjectRow(o.name, o.cls, o.policy, o.home, o.rep_nodes, o.stub_nodes,
                              o.calls_local, o.calls_remote, o.misses, o.history) for o in view.objects)
    return RunResult(s.name, dict(override), dict(s.values), tuple(sorted(ctx.threads.values(),
                     key=lambda t: (t.node, t.thread))), tuple(ctx.node_stats), tuple(ctx.busy),
                     ctx.wall, sum(n.zero_fills for n in ctx.node_stats), ppc, objects, time.perf_counter() - t0,
                     dict(ctx.sync), tuple(cluster.backends().values()))
