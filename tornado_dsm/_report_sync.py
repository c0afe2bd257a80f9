"""Reports of the lock and barrier kinds: their figures, table, winners and plot.

A lock or barrier run's measured statistics (RunResult.total, its PPCs) cover
its measured passes only; the driver (_workloads_sync) leaves what they are
divided by in RunResult.sync: the acquisitions and the hand-overs between
nodes of the contended passes, or the episodes.  `figures` turns both into
the JSON object ``sync`` of the run; the table shows one column per figure
of the classic comparison, and `winners` names, for every setting other
than the algorithm and the padding (e.g. each number of nodes), the kind
with the best value of each column.
"""

from __future__ import annotations

import attrs

from ._columns import ruled
from ._scenario_run import RunResult, backends_label

SYNC_KINDS = ("lock", "barrier")
ALGORITHM_KEYS = ("workload.lock", "workload.barrier", "workload.padding")


# (as in _report, which imports this module)
def _messages(r: RunResult) -> int:
    """Messages of the measured steps: 2 per remote PPC."""
    return 2 * sum(p.calls for p in r.ppc if p.kind == "remote")


def _show(value) -> str:
    return "/".join(str(v) for v in value.values()) if isinstance(value, dict) else str(value)


def _vary_keys(runs: list[RunResult]) -> list[str]:
    """The varied keys of ``runs``, in the order they were varied."""
    return list(dict.fromkeys(k for r in runs for k in r.params))


def is_sync(r: RunResult) -> bool:
    """Whether ``r`` is a run of the lock or barrier workload."""
    return r.values["workload.kind"] in SYNC_KINDS


def _per(n: int, **counts) -> dict:
    return {k: v / n if n else 0.0 for k, v in counts.items()}


def figures(r: RunResult) -> dict:
    """The run's ``sync`` object of the JSON report (see report.schema.json)."""
    d = r.sync
    faults, messages, invalidations = r.faults(), _messages(r), r.total.invalidations
    common = {"kind": d["kind"], "algorithm": d["algorithm"], "padding": d["padding"],
              "space_pages": d["space_pages"], "seconds": d["seconds"], "start_late_s": d["start_late_s"]}
    if d["kind"] == "barrier":
        n = d["episodes"]
        return {**common, "parties": d["parties"], "episodes": n,
                "us_per_episode": d["seconds"] / n * 1e6 if n else 0.0,
                "per_episode": _per(n, faults=faults, messages=messages, invalidations=invalidations,
                                    rmws=d["rmws"]),
                "rounds": d["rounds"]}
    n, hand, counts = d["acquisitions"], d["handovers"], d["per_thread"]
    lowest, highest = (min(counts), max(counts)) if counts else (0, 0)
    probed, wrong = d["probe_handovers"], d["probe_out_of_order"]
    return {**common, "threads": d["threads"], "uncontended_us": d["uncontended_us"],
            "uncontended_node": d["uncontended_node"], "acquisitions": n,
            "throughput_per_s": n / d["seconds"] if d["seconds"] > 0 else 0.0,
            "handovers": hand, "handover_fraction": hand / n if n else 0.0,
            "per_acquire": _per(n, faults=faults, messages=messages, invalidations=invalidations, rmws=d["rmws"]),
            "per_handover": _per(hand, faults=faults, messages=messages, invalidations=invalidations)
            if hand else None,
            "fairness": {"per_thread": list(counts), "max": highest, "min": lowest,
                         "max_over_min": highest / lowest if lowest else None},
            "fifo": {"rounds": len(d["probe_entry_orders"]), "handovers": probed, "out_of_order": wrong,
                     "fifo": wrong == 0 if probed else None, "entry_orders": d["probe_entry_orders"],
                     "arrival_ms": d["probe_arrival_ms"]}}


# ---- columns -----------------------------------------------------------------------------

@attrs.frozen
class Column:
    """One table column: its head, its value in a run's figures (None: not
    measured), how it is shown, and which way is better (None: no winner)."""

    head: str
    value: object            # figures dict -> float | None
    fmt: str = ".2f"
    better: str | None = "low"
    none: str = "-"          # how None is shown

    def show(self, f: dict) -> str:
        v = self.value(f)
        return self.none if v is None else format(v, self.fmt)


def _fifo_value(f: dict):
    x = f["fifo"]
    return x["out_of_order"] / x["handovers"] if x["handovers"] else None


class _FifoColumn(Column):
    def show(self, f: dict) -> str:
        x = f["fifo"]
        if not x["handovers"]:
            return "-"
        return "yes" if x["fifo"] else f"no {x['out_of_order']}/{x['handovers']}"


def _ph(key: str):
    return lambda f: None if f["per_handover"] is None else f["per_handover"][key]


LOCK_COLUMNS = (
    Column("threads", lambda f: f["threads"], "d", None),
    Column("unc. µs", lambda f: f["uncontended_us"], ".1f"),
    Column("acq/s", lambda f: f["throughput_per_s"], ".0f", "high"),
    Column("faults/acq", lambda f: f["per_acquire"]["faults"]),
    Column("msgs/acq", lambda f: f["per_acquire"]["messages"]),
    Column("inval/acq", lambda f: f["per_acquire"]["invalidations"]),
    Column("hand%", lambda f: 100 * f["handover_fraction"], ".1f", None),
    Column("faults/hand", _ph("faults"), ".1f"),
    Column("msgs/hand", _ph("messages"), ".1f"),
    Column("RMW/acq", lambda f: f["per_acquire"]["rmws"]),
    Column("max/min", lambda f: f["fairness"]["max_over_min"], ".2f", "low", "inf"),
    _FifoColumn("FIFO", _fifo_value, ".3f"),
    Column("pages", lambda f: f["space_pages"], "d"),
)

BARRIER_COLUMNS = (
    Column("parties", lambda f: f["parties"], "d", None),
    Column("µs/episode", lambda f: f["us_per_episode"], ".0f"),
    Column("faults/ep", lambda f: f["per_episode"]["faults"]),
    Column("msgs/ep", lambda f: f["per_episode"]["messages"]),
    Column("inval/ep", lambda f: f["per_episode"]["invalidations"]),
    Column("RMW/ep", lambda f: f["per_episode"]["rmws"]),
    Column("rounds", lambda f: f["rounds"], "d", None),
    Column("pages", lambda f: f["space_pages"], "d"),
)

LEGEND = {
    "lock": ("unc. µs: one thread alone (thread 0 of the highest node), µs per acquire+release; acq/s: "
             "critical sections per second with every thread contending; /acq: measured faults, messages, "
             "invalidations and atomic RMWs per acquire; hand%: acquires that took the lock from another "
             "node; /hand: per such hand-over (the counter's page moves too); max/min: most over fewest "
             "acquires of a thread; FIFO: the probe's entries in arrival order (no k/n: k of n out of "
             "order); pages: the lock's space"),
    "barrier": ("µs/episode: from the common start to the last party out, per episode; /ep: measured "
                "faults, messages, invalidations and atomic RMWs per episode (all parties); rounds: the "
                "algorithm's signalling rounds for the parties (computed, not measured); pages: the "
                "barrier's space"),
}


def columns(kind: str) -> tuple:
    """The columns of ``kind`` ("lock" or "barrier")."""
    return LOCK_COLUMNS if kind == "lock" else BARRIER_COLUMNS


# ---- table and winners -------------------------------------------------------------------

def render_table(scenario, runs: list[RunResult]) -> str:
    """One table per kind: the varied values, then the kind's columns; a legend; the winners."""
    out = []
    for kind in SYNC_KINDS:
        mine = [r for r in runs if r.values["workload.kind"] == kind]
        if not mine:
            continue
        cols = columns(kind)
        varied = [k for k in _vary_keys(mine) if k != "cluster.nodes"]
        head = [k.rpartition(".")[2] for k in varied] + ["nodes"] + [c.head for c in cols]
        rows = []
        for r in mine:
            f = figures(r)
            rows.append([_show(r.params.get(k, r.values.get(k))) for k in varied]
                        + [str(r.values["cluster.nodes"])] + [c.show(f) for c in cols])
        out.append(f"scenario {scenario.name}: {kind} ({len(mine)} run{'s' if len(mine) != 1 else ''}; "
                   f"fault backend {backends_label(mine)})")
        out += ruled(head, rows)
        out.append(LEGEND[kind])
        out.append(render_winners(mine))
    return "\n".join(out)


def run_name(r: RunResult) -> str:
    """A run's name among the runs of its setting: its algorithm (and padding, when varied)."""
    padding = f"/{r.sync['padding']}" if "workload.padding" in r.params else ""
    return r.sync["algorithm"] + padding


def _group_key(r: RunResult) -> tuple:
    return tuple((k, repr(v)) for k, v in r.params.items() if k not in ALGORITHM_KEYS)


def _group_label(r: RunResult) -> str:
    parts = [f"{k.rpartition('.')[2]}={_show(v)}" for k, v in r.params.items() if k not in ALGORITHM_KEYS]
    return " ".join(parts) or "this run"


def winners(runs: list[RunResult]) -> list[dict]:
    """For every setting (runs that differ only in the algorithm and the padding) and
    every column with a direction: the runs with the best value (ties share it)."""
    groups: dict = {}
    for r in runs:
        groups.setdefault(_group_key(r), []).append(r)
    found = []
    for members in groups.values():
        kind = members[0].values["workload.kind"]
        figs = [figures(r) for r in members]
        for c in columns(kind):
            if c.better is None:
                continue
            scored = [(c.value(f), c.show(f), run_name(r)) for r, f in zip(members, figs)]
            if c.none == "inf":    # an unmeasured fairness is a thread that got nothing: the worst
                scored = [(float("inf") if v is None else v, s, n) for v, s, n in scored]
            scored = [x for x in scored if x[0] is not None]
            if not scored:
                continue
            pick = max if c.better == "high" else min
            best = pick(v for v, _s, _n in scored)
            shown = next(s for v, s, _n in scored if v == best)
            found.append({"setting": {k: v for k, v in members[0].params.items() if k not in ALGORITHM_KEYS},
                          "label": _group_label(members[0]), "kind": kind, "column": c.head,
                          "better": c.better, "best": [n for _v, s, n in scored if s == shown],
                          "of": len(scored), "value": None if best == float("inf") else float(best),
                          "shown": shown})
    return found


def render_winners(runs: list[RunResult]) -> str:
    """"winner per column": one line per column, one cell per setting."""
    found = winners(runs)
    if not any(w["of"] > 1 for w in found):
        return "winner per column: (one kind per setting: nothing to compare)"
    labels = list(dict.fromkeys(w["label"] for w in found))
    named = {w["column"] for w in found}
    heads = [c.head for c in columns(found[0]["kind"]) if c.head in named]
    cell = {(w["column"], w["label"]): _winner_cell(w) for w in found}
    rows = [["winner per column"] + labels] + [[h] + [cell.get((h, lab), "-") for lab in labels] for h in heads]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def _winner_cell(w: dict) -> str:
    best, value = w["best"], w["shown"]
    if len(best) == w["of"] and w["of"] > 1:
        return f"all tie ({value})"
    names = ", ".join(best[:3]) + (f" +{len(best) - 3}" if len(best) > 3 else "")
    return f"{names} ({value})"


# ---- plot --------------------------------------------------------------------------------

@attrs.frozen
class Metric:
    """One figure ``--metric`` can plot (a panel): its name, the panel's title, the
    y axis' unit, its value in a run (None: not measured in that run), the workload
    kinds it applies to (None: every kind), and whether a log scale suits it.
    ``normalised``: the value is always shown over the fewest-nodes run (norm.cost).
    The general metrics are in _report.METRICS, the lock and barrier ones here."""

    name: str
    title: str
    unit: str
    value: object                 # RunResult -> float | None
    kinds: tuple | None = None
    log: bool = False
    normalised: bool = False

    def applies(self, kind: str) -> bool:
        """Whether a run of workload ``kind`` has this figure."""
        return self.kinds is None or kind in self.kinds


def _fig(pick):
    """A Metric value from a function of the run's figures (None when it has none)."""
    return lambda r: pick(figures(r)) if r.sync else None


def _sub(part: str, key: str):
    return _fig(lambda f: None if f.get(part) is None else f[part][key])


_L, _B = ("lock",), ("barrier",)

METRICS = (
    Metric("unc.us", "uncontended acquire+release, one thread alone", "µs per acquire+release",
           _fig(lambda f: f["uncontended_us"]), _L, log=True),
    Metric("acq/s", "critical sections per second (contended)", "acquisitions per second",
           _fig(lambda f: f["throughput_per_s"]), _L, log=True),
    Metric("faults/acq", "faults per acquire (contended)", "faults per acquisition",
           _sub("per_acquire", "faults"), _L),
    Metric("msgs/acq", "messages per acquire (contended)", "messages per acquisition",
           _sub("per_acquire", "messages"), _L),
    Metric("inval/acq", "invalidations per acquire (contended)", "invalidations per acquisition",
           _sub("per_acquire", "invalidations"), _L),
    Metric("rmw/acq", "atomic read-modify-writes per acquire", "RMWs per acquisition",
           _sub("per_acquire", "rmws"), _L),
    Metric("hand%", "acquires that took the lock from another node", "% of acquisitions",
           _fig(lambda f: 100 * f["handover_fraction"]), _L),
    Metric("faults/hand", "faults per hand-over between nodes", "faults per hand-over",
           _sub("per_handover", "faults"), _L),
    Metric("msgs/hand", "messages per hand-over between nodes", "messages per hand-over",
           _sub("per_handover", "messages"), _L),
    Metric("max/min", "fairness: most over fewest acquires of a thread", "max/min (1: fair)",
           _fig(lambda f: f["fairness"]["max_over_min"]), _L, log=True),
    Metric("fifo", "FIFO probe: entries out of arrival order", "fraction of hand-overs (0: FIFO)",
           _fig(_fifo_value), _L),
    Metric("us/episode", "µs per episode (common start to the last party out)", "µs per episode",
           _fig(lambda f: f["us_per_episode"]), _B, log=True),
    Metric("faults/ep", "faults per episode (all parties)", "faults per episode",
           _sub("per_episode", "faults"), _B),
    Metric("faults/ep/party", "faults per episode per party", "faults per episode per party",
           _fig(lambda f: f["per_episode"]["faults"] / f["parties"] if f["parties"] else None), _B),
    Metric("msgs/ep", "messages per episode (all parties)", "messages per episode",
           _sub("per_episode", "messages"), _B),
    Metric("inval/ep", "invalidations per episode (all parties)", "invalidations per episode",
           _sub("per_episode", "invalidations"), _B),
    Metric("rmw/ep", "atomic read-modify-writes per episode (all parties)", "RMWs per episode",
           _sub("per_episode", "rmws"), _B),
    Metric("rounds", "rounds per episode (computed from the algorithm)", "signalling rounds",
           _fig(lambda f: f["rounds"]), _B),
    Metric("pages", "space: pages of its shared words", "pages", _fig(lambda f: f["space_pages"]),
           SYNC_KINDS),
)

# The default panels: for locks the classic four (faults per hand-over and per acquire,
# throughput, uncontended latency), then fairness, FIFO order and space; for barriers
# µs, messages and faults per episode and the rounds, then RMWs and space: what the
# scenarios' descriptions name.
DEFAULT_METRICS = {
    "lock": ("faults/hand", "faults/acq", "acq/s", "unc.us", "max/min", "fifo", "pages"),
    "barrier": ("us/episode", "msgs/ep", "faults/ep/party", "rounds", "rmw/ep", "pages"),
}

_COLOURS = {"tas": "C0", "ttas": "C1", "backoff": "C2", "ticket": "C3", "anderson": "C4", "mcs": "C5",
            "server": "C7", "counter": "C0", "tree": "C1", "tournament": "C3", "dissemination": "C4"}
_MARKERS = {"tas": "o", "ttas": "v", "backoff": "^", "ticket": "s", "anderson": "D", "mcs": "P",
            "server": "X", "counter": "o", "tree": "v", "tournament": "s", "dissemination": "D"}


def style(r: RunResult) -> dict | None:
    """The line style of a lock or barrier run: a colour and marker per algorithm,
    dashed for word padding (None for the other kinds)."""
    if not (is_sync(r) and r.sync):
        return None
    algorithm = r.sync["algorithm"]
    return {"color": _COLOURS.get(algorithm), "marker": _MARKERS.get(algorithm, "o"),
            "linestyle": "--" if r.sync["padding"] == "word" else "-"}


def x_axis(runs: list[RunResult]):
    """Barriers are drawn against parties (threads in an episode): (x of a run, axis
    label, the keys the axis stands for); None for the other kinds (nodes)."""
    if runs and all(r.values["workload.kind"] == "barrier" for r in runs):
        return (lambda r: r.values["cluster.nodes"] * r.values["cluster.threads_per_node"],
                "parties (threads)", ("cluster.nodes", "cluster.threads_per_node"))
    return None
