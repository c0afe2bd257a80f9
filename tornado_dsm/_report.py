"""Reports of a scenario run: the JSON document, the table, the plot (PNG, SVG or PDF).

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

from . import _report_phases, _report_sync
from ._columns import ruled
from .kernel import history_lines
from ._scenario_run import RunResult, backends_label

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
    for entry, r in zip(doc["runs"], runs):
        if _report_phases.is_phases(r):   # the phases kind: its phases, timeline and policies
            entry["phases"] = r.sync
    return doc


def _run_json(r: RunResult, normalized: float) -> dict:
    t = r.total
    remote = [p for p in r.ppc if p.kind == "remote"]
    return {
        "params": r.params, "values": r.values, "backend": r.backend(),
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
    return {"node": n, "backend": r.backends[n] if n < len(r.backends) else "unknown",
            "faults": _faults(s), "latency_us": _latency(s),
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
    phases = [r for r in runs if _report_phases.is_phases(r)]
    if phases:   # the phases kind: the usual table, then a table per phase (_report_phases)
        rest = [r for r in runs if not _report_phases.is_phases(r)]
        tables = [render_table(scenario, rest)] if rest else []
        return "\n".join(tables + [_fault_table(scenario, phases), _report_phases.render(phases)])
    sync = [r for r in runs if _report_sync.is_sync(r)]
    if sync:
        rest = [r for r in runs if not _report_sync.is_sync(r)]
        tables = [render_table(scenario, rest)] if rest else []
        return "\n".join(tables + [_report_sync.render_table(scenario, sync)])
    return _fault_table(scenario, runs)


def _fault_table(scenario, runs: list[RunResult]) -> str:
    """One row per run of the fault figures (every kind but lock and barrier)."""
    varied = [k for k, _ in _vary_keys(runs)]
    head = [k.rpartition(".")[2] for k in varied if k != "cluster.nodes"] + list(COLUMNS)
    rows = [_table_row(r, n, varied) for r, n in zip(runs, normalized_costs(runs))]
    lines = [f"scenario {scenario.name}: {scenario['workload.kind']} "
             f"({len(runs)} run{'s' if len(runs) != 1 else ''}; fault backend {backends_label(runs)})"]
    lines += ruled(head, rows)
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


# ---- plot ------------------------------------------------------------------------------------
#
# One panel per metric (--metric; default: the scenario's, see default_metrics), absolute
# values unless normalize=True.  Against nodes (barriers: parties) when the scenario has
# more than one, one line per combination of the other varied values, labelled by the
# values that differ between lines; else one bar per run.  The file's format is taken
# from its extension (IMAGE_FORMATS).

IMAGE_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


class PlotError(ValueError):
    """A --plot path, --metric or --normalize that cannot be honoured; its message is one
    line naming the option, the value and what is accepted."""


def _accesses(r: RunResult) -> int:
    return sum(t.ops for t in r.threads)


def _ratio(n, d):
    """n / d; 0 when both are 0; None (not measured) when only d is."""
    return n / d if d else (0.0 if not n else None)


def _rppc(r: RunResult) -> int:
    return sum(p.calls for p in r.ppc if p.kind == "remote")


def _bytes(r: RunResult) -> int:
    return sum(p.bytes for p in r.ppc if p.kind == "remote")


M = _report_sync.Metric
METRICS = (
    M("faults/s", "fault throughput (faults over measured wall time)", "faults per second",
      lambda r: r.faults_per_second()),
    M("us/access", "cost per access (mean over threads)", "µs per access", lambda r: r.cost_us()),
    M("norm.cost", "cost per access, normalised", "µs per access",
      lambda r: r.cost_us(), normalised=True),
    M("faults", "faults in the measured steps", "faults", lambda r: r.faults()),
    M("faults/access", "faults per access", "faults per access", lambda r: _ratio(r.faults(), _accesses(r))),
    M("messages", "messages (2 per remote PPC)", "messages", _messages),
    M("messages/fault", "messages per fault", "messages per fault", lambda r: _ratio(_messages(r), r.faults())),
    M("messages/access", "messages per access", "messages per access",
      lambda r: _ratio(_messages(r), _accesses(r))),
    M("invalidations", "invalidations sent", "invalidations", lambda r: r.total.invalidations),
    M("invalidations/fault", "invalidations per fault", "invalidations per fault",
      lambda r: _ratio(r.total.invalidations, r.faults())),
    M("forwards", "forwarded requests (dynamic manager)", "forwards",
      lambda r: r.total.forwards),
    M("forwards/fault", "forwards per fault (dynamic manager)", "forwards per fault",
      lambda r: _ratio(r.total.forwards, r.faults())),
    M("bytes", "bytes sent in remote PPCs", "bytes", _bytes),
    M("bytes/fault", "bytes sent in remote PPCs per fault", "bytes per fault",
      lambda r: _ratio(_bytes(r), r.faults())),
    M("rppc/fault", "remote PPCs per fault (every object, every node)", "remote PPCs per fault",
      lambda r: _ratio(_rppc(r), r.faults())),
    M("process.rppc/fault", "remote PPCs to the Process per fault, off its home node",
      "remote PPCs per fault", lambda r: r.ppc_per_fault_off_home("process")),
    M("region.rppc/fault", "remote PPCs to the Region per fault, off its home node",
      "remote PPCs per fault", lambda r: r.ppc_per_fault_off_home("region")),
    M("p50-us", "fault latency, median (a power-of-two bucket's top)", "µs",
      lambda r: r.total.fault_p50_us),
    M("p99-us", "fault latency, p99 (a power-of-two bucket's top)", "µs",
      lambda r: r.total.fault_p99_us),
) + _report_sync.METRICS
del M
METRIC_NAMES = {m.name: m for m in METRICS}
# Other spellings, after canonical() (the table's column heads among them).
METRIC_ALIASES = {"msgs": "messages", "msgs/fault": "messages/fault", "msgs/access": "messages/access",
                  "inval": "invalidations", "inval.": "invalidations", "inval/fault": "invalidations/fault",
                  "p50": "p50-us", "p50us": "p50-us", "p99": "p99-us", "p99us": "p99-us",
                  "rppc/f": "rppc/fault", "processrppc/f": "process.rppc/fault",
                  "regionrppc/f": "region.rppc/fault"}

# The default panels of each workload kind: what the shipped scenarios' descriptions
# (and comments) say they compare; then VARY_METRICS adds the figures a varied key
# changes.
DEFAULT_METRICS = {
    "infault": ("faults/s", "us/access", "process.rppc/fault", "region.rppc/fault"),
    "shared-read": ("faults/s", "messages", "invalidations", "forwards"),
    "producer-consumer": ("faults/s", "messages", "invalidations", "forwards"),
    "false-sharing": ("us/access", "faults/access", "messages", "invalidations"),
    "ping-pong": ("us/access", "faults", "messages", "bytes"),
    "jacobi": ("us/access", "faults", "messages", "bytes"),
    "matmul": ("us/access", "faults", "messages", "bytes"),
    **_report_sync.DEFAULT_METRICS,
}
VARY_METRICS = {
    "cluster.manager": ("messages", "invalidations", "forwards"),
    "cluster.protocol": ("faults", "messages", "bytes"),
    "policies.process": ("process.rppc/fault",),
    "policies.region": ("region.rppc/fault",),
}


def canonical(name: str) -> str:
    """A metric name as matched: lower case, µ as u, no spaces (so the table's heads,
    e.g. "µs/access" or "RMW/acq", name their metric)."""
    return "".join(name.lower().replace("µ", "u").replace("μ", "u").split())


def metric_names(texts) -> list[str]:
    """The names in ``--metric`` values (repeatable, each comma-separated), in order."""
    if isinstance(texts, str):
        texts = [texts]
    return [n.strip() for t in texts or () for n in t.split(",") if n.strip()]


def accepted_metrics(kinds) -> list[str]:
    """The metric names that apply to runs of any of ``kinds``."""
    return [m.name for m in METRICS if m.kinds is None or set(m.kinds) & set(kinds)]


def resolve_metrics(texts, kinds, varied=()) -> tuple:
    """The Metrics named by ``texts`` (see metric_names; none: the default of ``kinds``
    and the ``varied`` keys), each once; PlotError naming the accepted ones for a name
    that is unknown or whose kind the runs do not have."""
    kinds = list(dict.fromkeys(kinds))
    names = metric_names(texts)
    if not names:
        names = default_metrics(kinds, varied)
    accepted = accepted_metrics(kinds)
    chosen = []
    for text in names:
        name = METRIC_ALIASES.get(canonical(text), canonical(text))
        m = METRIC_NAMES.get(name)
        if m is None:
            raise PlotError(f"--metric {text}: unknown metric {text!r}; accepted: {', '.join(accepted)}")
        if m.name not in accepted:
            raise PlotError(f"--metric {text}: {m.name!r} applies to the {' and '.join(m.kinds)} kinds only, "
                            f"this scenario runs {', '.join(kinds)}; accepted: {', '.join(accepted)}")
        if m not in chosen:
            chosen.append(m)
    return tuple(chosen)


def default_metrics(kinds, varied=()) -> list[str]:
    """The default panels: each kind's (DEFAULT_METRICS), then what the varied keys
    change (VARY_METRICS) for the kinds other than lock and barrier."""
    names = [n for k in kinds for n in DEFAULT_METRICS.get(k, ("faults/s", "us/access"))]
    if any(k not in _report_sync.SYNC_KINDS for k in kinds):
        names += [n for key in varied for n in VARY_METRICS.get(key, ())]
    return list(dict.fromkeys(names))


def image_format(path) -> str:
    """matplotlib's format for ``path``, from its extension; PlotError for any other."""
    ext = Path(path).suffix.lower()
    if ext not in IMAGE_FORMATS:
        what = f"unsupported image format {ext[1:]!r}" if ext else "no file extension"
        raise PlotError(f"--plot {path}: {what}; accepted: {', '.join(IMAGE_FORMATS)}")
    return IMAGE_FORMATS[ext]


def _differing(params: list[dict], skip=()) -> list[str]:
    """The keys (in vary order) whose values differ between ``params``."""
    keys = dict.fromkeys(k for p in params for k in p if k not in skip)
    return [k for k in keys if len({repr(p.get(k)) for p in params}) > 1]


def check_plot(scenario, path, metrics=(), normalize: bool = False) -> tuple:
    """Before the run: the Metrics ``path`` will show (see plot); PlotError if the
    extension is not an image format, a metric is unknown or does not apply to the
    scenario's kinds, or --metric/--normalize come without --plot."""
    if path is None:
        given = metric_names(metrics)
        if given:
            raise PlotError(f"--metric {','.join(given)}: chooses what --plot draws; add --plot PATH")
        if normalize:
            raise PlotError("--normalize: applies to --plot; add --plot PATH")
        return ()
    image_format(path)
    combos = scenario.combinations()
    kinds = [dict(scenario.values, **o)["workload.kind"] for o in combos]
    return resolve_metrics(metrics, kinds, _differing(combos))


def plot(scenario, runs: list[RunResult], path, metrics=(), normalize: bool = False):
    """Draw ``metrics`` (names, see resolve_metrics; default: the scenario's) of ``runs``
    to ``path`` in the format of its extension (.png, .svg, .pdf); the Figure.  The
    phases kind, without --metric, draws throughput and policies over time instead."""
    import matplotlib

    fmt = image_format(path)
    timeline = runs and all(_report_phases.is_phases(r) for r in runs) and not metric_names(metrics)
    fig = _report_phases.figure(scenario, runs) if timeline else figure(scenario, runs, metrics, normalize)
    info = f"tornado-dsm, matplotlib {matplotlib.__version__}"
    meta = {"png": {"Software": info}, "svg": {"Creator": info, "Date": None},
            "pdf": {"Creator": info, "CreationDate": None}}[fmt]
    fig.savefig(path, format=fmt, metadata=meta)
    return fig


def figure(scenario, runs: list[RunResult], metrics=(), normalize: bool = False):
    """The plot as a matplotlib Figure (no file, no pyplot): one panel (Axes) per metric,
    in order; each line's label (or bar's tick) names the varied values that differ."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    kinds = [r.values["workload.kind"] for r in runs]
    chosen = resolve_metrics(metrics, kinds, _differing([r.params for r in runs]))
    if not runs:       # e.g. interrupted before the first run finished
        fig = Figure(figsize=(6, 2), layout="constrained")
        fig.suptitle(f"tornado-dsm scenario {scenario.name}: no finished run")
        fig.panels = []
        return fig
    x_of, xlabel, x_keys = _report_sync.x_axis(runs) or (
        lambda r: r.values["cluster.nodes"], "nodes", ("cluster.nodes",))
    lines = len({x_of(r) for r in runs}) > 1
    keys = _differing([r.params for r in runs], skip=x_keys if lines else ())
    names = [_line_label(r, keys) for r in runs]
    # The algorithms' own colours and markers (dashed: word padding) when only they differ.
    style = _report_sync.style if set(keys) <= set(_report_sync.ALGORITHM_KEYS) else (lambda r: None)
    cols = 1 if len(chosen) == 1 else 2 if len(chosen) in (2, 4) else 3 if len(chosen) <= 6 else 4
    rows = -(-len(chosen) // cols)
    legend = lines and len(set(names)) > 1
    spare = rows * cols > len(chosen)      # an empty slot holds the legend
    fig = Figure(figsize=(4.6 * cols + (2.6 if legend and not spare else 0), 3.7 * rows + 0.7),
                 layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    base, based_on = _bases(runs, x_of, x_keys if lines else (), keys)
    handles: dict = {}
    for ax, m in zip(axes, chosen):
        values = [m.value(r) if m.applies(r.values["workload.kind"]) else None for r in runs]
        relative, over = normalize or m.normalised, based_on
        if m.normalised:      # the table's norm.cost: over the fewest-nodes run of the same settings
            values = normalized_costs(runs)
            over = based_on if lines and x_keys == ("cluster.nodes",) else "the fewest-nodes run"
        elif relative:
            values = [None if v is None or not values[b] else v / values[b] for v, b in zip(values, base)]
        if lines:
            _draw_lines(ax, runs, values, names, x_of, handles, style)
            ax.set_xlabel(xlabel)
        else:
            _draw_bars(ax, runs, values, [_line_label(r, keys, values_only=True) for r in runs], style)
            ax.set_xlabel(", ".join(_short(k, keys) for k in keys))
        shown = [v for v in values if v is not None]
        if m.log and shown and min(shown) > 0 and not relative:
            ax.set_yscale("log")
        elif shown and min(shown) >= 0:     # from zero: no difference looks larger than it is
            ax.set_ylim(0, max(shown) * 1.08 or 1.0)
        if shown and all(float(v).is_integer() for v in shown) and ax.get_yscale() == "linear":
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))     # counts: no 2.5 pages
        if not shown:
            ax.text(0.5, 0.5, "not measured in these runs", transform=ax.transAxes, ha="center", color="0.4")
        if relative:
            ax.axhline(1.0, color="0.6", linewidth=0.8, linestyle=":")
        ax.set_ylabel(f"{m.unit} ÷ {over}" if relative else m.unit)
        ax.set_title(m.title, fontsize="medium")
        ax.grid(True, alpha=0.3)
    for ax in axes[len(chosen):]:
        ax.set_axis_off()
    if legend:
        where = axes[len(chosen)] if spare else fig
        where.legend(list(handles.values()), list(handles), fontsize="small",
                     loc="center" if spare else "outside right upper")
    fig.suptitle(f"tornado-dsm scenario {scenario.name}: {_setting(runs, x_keys if lines else ())}"
                 + (f"; normalised: each value ÷ {based_on}" + (" of the same other settings" if lines else "")
                    if normalize else "")
                 + (" (dashed: padding = word)" if any((style(r) or {}).get("linestyle") == "--"
                                                       for r in runs) else ""))
    fig.panels = [(m.name, ax) for m, ax in zip(chosen, axes)]
    return fig


def _short(key: str, keys) -> str:
    """A key's last part, unless another of ``keys`` has the same one."""
    last = key.rpartition(".")[2]
    return last if sum(k.rpartition(".")[2] == last for k in keys) == 1 else key


def _line_label(r: RunResult, keys, values_only: bool = False) -> str:
    """key=value of each of ``keys`` (the values only, for bars under an axis naming the keys)."""
    shown = [(_short(k, keys), _show(r.params.get(k, r.values.get(k)))) for k in keys]
    return ", ".join(v if values_only else f"{k}={v}" for k, v in shown)


def _setting(runs: list[RunResult], x_keys) -> str:
    """What every run shares: the kind, and the nodes when they are not on the x axis."""
    kinds = ", ".join(dict.fromkeys(r.values["workload.kind"] for r in runs))
    if x_keys or not runs:
        return kinds
    nodes = {r.values["cluster.nodes"] for r in runs}
    tpn = {r.values["cluster.threads_per_node"] for r in runs}
    if len(nodes) == 1 and len(tpn) == 1:
        n, t = nodes.pop(), tpn.pop()
        return f"{kinds}, {n} node{'s' * (n != 1)} × {t} thread{'s' * (t != 1)}"
    return kinds


def _bases(runs: list[RunResult], x_of, x_keys, keys):
    """For --normalize: each run's base (an index: the smallest-x run of the same other
    settings, or with one x the first run) and the base named for the axis."""
    if not runs:
        return [], ""
    if not x_keys:
        return [0] * len(runs), f"the {_line_label(runs[0], keys)} run" if keys else "the first run"
    group = [tuple((k, repr(v)) for k, v in r.params.items() if k not in x_keys) for r in runs]
    first: dict = {}
    for i in sorted(range(len(runs)), key=lambda i: x_of(runs[i])):
        first.setdefault(group[i], i)
    base = [first[g] for g in group]
    xs = {x_of(runs[b]) for b in base}
    one, many = ("party", "parties") if "cluster.threads_per_node" in x_keys else ("node", "nodes")
    which = f"the {xs.pop()}-{one} run" if len(xs) == 1 else f"the fewest-{many} run"
    return base, which


def _draw_lines(ax, runs, values, names, x_of, handles: dict, style) -> None:
    """One line per name, along x; a run without the figure leaves a gap."""
    order = sorted(range(len(runs)), key=lambda i: x_of(runs[i]))
    for k, name in enumerate(dict.fromkeys(names)):
        idx = [i for i in order if names[i] == name]
        pts = [(x_of(runs[i]), values[i]) for i in idx if values[i] is not None]
        st = style(runs[idx[0]]) or {"color": f"C{k % 10}", "marker": "os^vDP<>X*"[k % 10]}
        if pts:
            (line,) = ax.plot([x for x, _ in pts], [y for _, y in pts], label=name or None, **st)
            handles.setdefault(name, line)
    ax.set_xticks(sorted({x_of(r) for r in runs}))


def _draw_bars(ax, runs, values, names, style) -> None:
    """One bar per run, named by its differing values; 'n/a' where it has no figure."""
    pos = list(range(len(runs)))
    colours = [(style(r) or {}).get("color") or f"C{i % 10}" for i, r in enumerate(runs)]
    drawn = ax.bar([p for p, v in zip(pos, values) if v is not None], [v for v in values if v is not None],
                   color=[c for c, v in zip(colours, values) if v is not None])
    if len(runs) <= 12:      # the figure itself on each bar
        ax.bar_label(drawn, fmt=lambda v: f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}", fontsize="small",
                     padding=2)
    for p, v in zip(pos, values):
        if v is None:
            ax.annotate("n/a", (p, 0), ha="center", va="bottom", fontsize="small", color="0.4")
    ax.set_xticks(pos, [n or "as written" for n in names])
    if sum(len(n) for n in names) > 40:
        ax.tick_params(axis="x", labelrotation=25)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")


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
        out.append(f"replication levels of {r.scenario} ({settings}) on {r.values['cluster.nodes']} node(s), "
                   f"fault backend {r.backend()}")
        for i, row in enumerate(rows):
            out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        for o in r.objects:
            out += history_lines(o.name, o.history)
        out.append("")
    return "\n".join(out).rstrip()


def _inspect_row(r: RunResult, o) -> tuple:
    local = sum(p.calls for p in r.ppc if p.object == o.name and p.kind == "local")
    remote = sum(p.calls for p in r.ppc if p.object == o.name and p.kind == "remote")
    return (o.name, o.cls, o.policy, str(o.home), _nodes(o.rep_nodes), _nodes(o.stub_nodes),
            str(o.calls_local), str(o.calls_remote), str(o.misses), str(local), str(remote))


def _nodes(nodes) -> str:
    return ",".join(map(str, nodes)) if nodes else "-"
