"""Reports of a scenario run: the JSON document, the table, the PNG plot.

The JSON follows ``tornado_dsm/report.schema.json`` (SCHEMA_VERSION).  Each
run reports its parameters; faults by kind (read, write, in-core, coherence,
zero fill, refused); fault latency percentiles; faults per second in total and
per node; the cost per access and the normalised cost; invalidations,
forwards, stale grants and evictions; messages and bytes; PPCs (local and
remote, per object and method, and per fault for each VM object); figures per
node and per thread; and every object's replication level (the counters behind
them are listed in docs/architecture.md, "Inspection and counting").  Costs
are normalised, within each group of runs that differ only in cluster.nodes,
to the run with the fewest nodes (the 1-node run when there is one): the shape
of Tornado's figures.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import _report_sync
from ._scenario_run import RunResult

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
PER_FAULT_OBJECTS = ("process", "region", "fcm", "dir", "cor", "dsm", "cos")


def normalized_costs(runs: list[RunResult]) -> list[float]:
    """Each run's cost over the cost of the fewest-nodes run that differs from it only in nodes."""
    def group(r: RunResult):
        """Everything varied except the number of nodes."""
        return tuple(sorted((k, repr(v)) for k, v in r.params.items() if k != "cluster.nodes"))

    base: dict = {}
    for r in sorted(runs, key=lambda r: r.values["cluster.nodes"]):
        base.setdefault(group(r), r.cost_us())
    return [r.cost_us() / base[group(r)] if base[group(r)] else 0.0 for r in runs]


# ---- JSON ------------------------------------------------------------------------------------

def to_json(scenario, runs: list[RunResult]) -> dict:
    """The report document (see the schema)."""
    from . import __version__

    norm = normalized_costs(runs)
    doc = {
        "schema_version": SCHEMA_VERSION, "tool": "tornado-dsm", "version": __version__,
        "scenario": {"name": scenario.name, "source": scenario.source,
                     "description": scenario["description"],
                     "vary": {k: list(v) for k, v in scenario.vary}},
        "runs": [_run_json(r, n) for r, n in zip(runs, norm)],
    }
    sync = [r for r in runs if _report_sync.is_sync(r)]
    if sync:   # lock and barrier runs: their figures, and the best kind of each column
        for entry, r in zip(doc["runs"], runs):
            if _report_sync.is_sync(r):
                entry["sync"] = _report_sync.figures(r)
        doc["winners"] = _report_sync.winners(sync)
    return doc


def _run_json(r: RunResult, normalized: float) -> dict:
    t = r.total
    remote = [p for p in r.ppc if p.kind == "remote"]
    return {
        "params": r.params, "values": r.values,
        "elapsed_seconds": r.elapsed_seconds, "measured_seconds": r.wall_seconds,
        "faults": _faults(t, r.zero_fills),
        "latency_us": _latency(t),
        "faults_per_second": {"total": r.faults_per_second(),
                              "per_node": [r.faults_per_second(n) for n in range(len(r.nodes))]},
        "cost_us_per_access": r.cost_us(), "normalized_cost": normalized,
        "invalidations": t.invalidations, "forwards": t.forwards, "stale_grants": t.stale_grants,
        "evicted_copies": t.evicted_copies, "evicted_owned": t.evicted_owned,
        "messages": 2 * sum(p.calls for p in remote), "bytes": sum(p.bytes for p in remote),
        "ppc": {"local": sum(p.calls for p in r.ppc if p.kind == "local"),
                "remote": sum(p.calls for p in remote),
                "by_method": [_row(p) for p in r.ppc]},
        "ppc_per_fault": {obj: _per_fault(r, obj) for obj in PER_FAULT_OBJECTS},
        "nodes": [_node_json(r, n) for n in range(len(r.nodes))],
        "threads": [_row(t) for t in r.threads],
        "objects": [_row(o) for o in r.objects],
    }


def _faults(s, zero_fills: int = 0) -> dict:
    return {"read": s.read_faults, "write": s.write_faults, "total": s.read_faults + s.write_faults,
            "incore": s.incore_faults, "coherence": s.coherence_faults, "zero_fill": zero_fills,
            "refused": s.refused_faults}


def _latency(s) -> dict:
    return {"p50": s.fault_p50_us, "p90": s.fault_p90_us, "p99": s.fault_p99_us}


def _per_fault(r: RunResult, obj: str) -> dict:
    nodes = range(len(r.nodes))
    return {"local": r.ppc_per_fault(obj, "local"), "remote": r.ppc_per_fault(obj, "remote"),
            "remote_off_home": r.ppc_per_fault_off_home(obj), "home": r.home_of(obj),
            "remote_by_node": [r.ppc_per_fault(obj, "remote", n) for n in nodes]}


def _node_json(r: RunResult, n: int) -> dict:
    s = r.nodes[n]
    remote = [p for p in r.ppc if p.kind == "remote" and p.node == n]
    return {"node": n, "faults": _faults(s), "latency_us": _latency(s),
            "faults_per_second": r.faults_per_second(n), "busy_seconds": r.busy_seconds[n],
            "invalidations": s.invalidations, "resident_pages": s.resident_pages,
            "ppc_local": sum(p.calls for p in r.ppc if p.kind == "local" and p.node == n),
            "ppc_remote": sum(p.calls for p in remote), "messages": 2 * sum(p.calls for p in remote),
            "bytes": sum(p.bytes for p in remote)}


def _row(obj) -> dict:
    import attrs

    return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.asdict(obj).items()}


def write_json(path, doc: dict) -> None:
    """Write ``doc`` to ``path`` (indented)."""
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")


def load_schema() -> dict:
    """The JSON Schema of the report."""
    return json.loads(SCHEMA_PATH.read_text())


# ---- table -----------------------------------------------------------------------------------

COLUMNS = ("nodes", "faults", "in-core", "coher.", "faults/s", "µs/access", "norm.cost",
           "p50 µs", "p99 µs", "Process rPPC/f", "Region rPPC/f", "msgs", "inval.")


def render_table(scenario, runs: list[RunResult]) -> str:
    """One row per combination: what was varied, then the figures (the lock and
    barrier kinds: their own columns and the winner of each, see _report_sync)."""
    sync = [r for r in runs if _report_sync.is_sync(r)]
    if sync:
        rest = [r for r in runs if not _report_sync.is_sync(r)]
        tables = [render_table(scenario, rest)] if rest else []
        return "\n".join(tables + [_report_sync.render_table(scenario, sync)])
    varied = [k for k, _ in _vary_keys(runs)]
    head = [k.rpartition(".")[2] for k in varied if k != "cluster.nodes"] + list(COLUMNS)
    rows = [head] + [_table_row(r, n, varied) for r, n in zip(runs, normalized_costs(runs))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"scenario {scenario.name}: {scenario['workload.kind']} "
             f"({len(runs)} run{'s' if len(runs) != 1 else ''})"]
    for i, row in enumerate(rows):
        lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("rPPC/f: remote PPCs to the object per measured fault on the nodes other than its home; "
                 "norm.cost: µs/access over the fewest-nodes run of the same settings")
    return "\n".join(lines)


def _vary_keys(runs):
    keys: dict = {}
    for r in runs:
        for k in r.params:
            keys.setdefault(k, None)
    return list(keys.items())


def _table_row(r: RunResult, norm: float, varied: list) -> list[str]:
    t = r.total
    cells = [_show(r.params.get(k, r.values.get(k))) for k in varied if k != "cluster.nodes"]
    return cells + [str(r.values["cluster.nodes"]), str(r.faults()), str(t.incore_faults),
                    str(t.coherence_faults), f"{r.faults_per_second():.0f}", f"{r.cost_us():.2f}",
                    f"{norm:.2f}", f"{t.fault_p50_us:g}", f"{t.fault_p99_us:g}",
                    f"{r.ppc_per_fault_off_home('process'):.3f}", f"{r.ppc_per_fault_off_home('region'):.3f}",
                    str(_messages(r)), str(t.invalidations)]


def _messages(r: RunResult) -> int:
    return 2 * sum(p.calls for p in r.ppc if p.kind == "remote")


def _show(value) -> str:
    if isinstance(value, dict):
        return "/".join(str(v) for v in value.values())
    return str(value)


def label(r: RunResult, skip=("cluster.nodes",)) -> str:
    """A short label of a run's varied values (for legends)."""
    parts = [f"{k.rpartition('.')[2]}={_show(v)}" for k, v in r.params.items() if k not in skip]
    return " ".join(parts) or r.scenario


# ---- plot ------------------------------------------------------------------------------------

def plot(scenario, runs: list[RunResult], path) -> None:
    """Draw the comparison as a PNG: normalised cost (vs nodes when nodes vary) and faults/s
    (locks and barriers: their own panels, see _report_sync)."""
    import matplotlib
    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    if runs and all(_report_sync.is_sync(r) for r in runs):
        _report_sync.plot(scenario, runs, path)
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    if any(k == "cluster.nodes" for r in runs for k in r.params):
        _plot_vs_nodes(left, right, runs)
        left.set_ylabel("cost per access (normalised)")
        left.set_title("cost, normalised to the fewest-nodes run")
    else:
        _plot_bars(left, right, runs)
        left.set_ylabel("cost per access (µs, mean over threads)")
        left.set_title("cost per access")
    right.set_ylabel("faults per second (cluster)")
    right.set_title("fault throughput")
    fig.suptitle(f"tornado-dsm scenario {scenario.name}: {scenario['workload.kind']}")
    fig.tight_layout()
    fig.savefig(path, format="png", metadata={"Software": f"matplotlib {matplotlib.__version__}"})
    plt.close(fig)


def _plot_vs_nodes(left, right, runs: list[RunResult]) -> None:
    """One line per setting, nodes on the x axis (Tornado's figures)."""
    norm = normalized_costs(runs)
    for name, idx in _series(runs).items():
        xs = [runs[i].values["cluster.nodes"] for i in idx]
        left.plot(xs, [norm[i] for i in idx], marker="o", label=name)
        right.plot(xs, [runs[i].faults_per_second() for i in idx], marker="o", label=name)
    for ax in (left, right):
        ax.set_xlabel("nodes")
        ax.set_xticks(sorted({r.values["cluster.nodes"] for r in runs}))
        ax.legend(fontsize="small")


def _plot_bars(left, right, runs: list[RunResult]) -> None:
    """One bar per combination (nothing to put on a nodes axis)."""
    names = [label(r, skip=()) for r in runs]
    left.bar(names, [r.cost_us() for r in runs])  # one node count: normalising would give 1s
    right.bar(names, [r.faults_per_second() for r in runs])
    for ax in (left, right):
        ax.set_xlabel("combination")
        ax.tick_params(axis="x", labelrotation=20)


def _series(runs: list[RunResult]) -> dict:
    """Run indices grouped by everything varied except nodes, in nodes order."""
    series: dict = {}
    for i in sorted(range(len(runs)), key=lambda i: runs[i].values["cluster.nodes"]):
        series.setdefault(label(runs[i]), []).append(i)
    return series


# ---- inspect ---------------------------------------------------------------------------------

INSPECT_HEAD = ("object", "class", "policy", "home", "reps", "stubs", "calls local", "calls remote",
                "misses", "measured PPC local", "measured PPC remote")


def render_inspect(runs: list[RunResult]) -> str:
    """Replication levels of every object, one table per run (calls over the whole run;
    "measured" PPCs only in the measured steps)."""
    out = []
    for r in runs:
        rows = [INSPECT_HEAD] + [_inspect_row(r, o) for o in r.objects]
        widths = [max(len(row[i]) for row in rows) for i in range(len(INSPECT_HEAD))]
        settings = ", ".join(f"{k}={_show(v)}" for k, v in r.params.items()) or "as written"
        out.append(f"replication levels of {r.scenario} ({settings}) on {r.values['cluster.nodes']} node(s)")
        for i, row in enumerate(rows):
            out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        out.append("")
    return "\n".join(out).rstrip()


def _inspect_row(r: RunResult, o) -> tuple:
    local = sum(p.calls for p in r.ppc if p.object == o.name and p.kind == "local")
    remote = sum(p.calls for p in r.ppc if p.object == o.name and p.kind == "remote")
    return (o.name, o.cls, o.policy, str(o.home), _nodes(o.rep_nodes), _nodes(o.stub_nodes),
            str(o.calls_local), str(o.calls_remote), str(o.misses), str(local), str(remote))


def _nodes(nodes) -> str:
    return ",".join(map(str, nodes)) if nodes else "-"
