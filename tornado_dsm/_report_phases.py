"""Reports of the ``phases`` workload: a table per phase, the whole run, the timeline plot.

Each run is one *way* of running the phases (its policies: singleton,
per_node, adaptive).  A phase's figure is its throughput: operations over the
slowest thread's seconds (a page read in ``read``, an attach+detach pair in
``churn``).  Phases count different operations, so the whole run is not the
sum of operations: it is the time each way would take to do the work the best
way did in every phase (sum over phases of seconds x best throughput / its
throughput), and the comparison of adaptive against the fixed ways is the
ratio of those times.  The target (issue 15): adaptive beats the worse fixed
way in every phase and comes within TARGET of the better one over the run.
"""

from __future__ import annotations

from ._columns import ruled

TARGET = 1.2


def is_phases(r) -> bool:
    """Whether ``r`` is a run of the phases workload."""
    return r.values["workload.kind"] == "phases"


def way(r) -> str:
    """A run's way: its policy if Process and Region share one (adaptive without its
    parameters), else process/region."""
    names = [r.values[k].partition(":")[0] for k in ("policies.process", "policies.region")]
    return names[0] if names[0] == names[1] else "/".join(names)


def whole_run_seconds(runs) -> list[float]:
    """Per run: seconds to do, phase by phase, the work the best run did (module docstring)."""
    phases = range(len(runs[0].sync["phases"]))
    best = [max(r.sync["phases"][i]["throughput"] for r in runs) for i in phases]
    return [sum(r.sync["phases"][i]["seconds"] * best[i] / r.sync["phases"][i]["throughput"]
                if r.sync["phases"][i]["throughput"] else float("inf") for i in phases) for r in runs]


def render(runs) -> str:
    """A table per phase (throughput per way), the whole-run table, and the target's verdict."""
    lines = []
    for i, phase in enumerate(runs[0].sync["phases"]):
        best = max(r.sync["phases"][i]["throughput"] for r in runs)
        rows = [(way(r), str(p["ops"]), f"{p['seconds']:.2f}", f"{p['throughput']:.0f}",
                 f"{best / p['throughput']:.2f}x" if p["throughput"] else "-")
                for r in runs for p in (r.sync["phases"][i],)]
        lines += [f"phase {i + 1}: {phase['phase']}"] + ruled(("way", "ops", "seconds", "ops/s", "vs best"), rows)
    seconds = whole_run_seconds(runs)
    rows = [(way(r), str(sum(p["ops"] for p in r.sync["phases"])), f"{t:.2f}", f"{t / min(seconds):.2f}x",
             _switches(r)) for r, t in zip(runs, seconds)]
    lines += ["whole run (seconds: the time to do the best way's work of every phase; ops: all phases)"]
    lines += ruled(("way", "ops", "seconds", "vs best", "switches"), rows)
    return "\n".join(lines + verdict(runs, seconds))


def _switches(r) -> str:
    """The number of policy switches of the run's Process and Region."""
    return str(sum(len(o["switches"]) for o in r.sync["policies"].values()))


def verdict(runs, seconds) -> list[str]:
    """The target's lines: per adaptive run, against the fixed runs (none without both)."""
    fixed = [(r, t) for r, t in zip(runs, seconds) if "adaptive" not in way(r)]
    out = []
    for r, t in zip(runs, seconds):
        if "adaptive" not in way(r) or len(fixed) < 2:
            continue
        beats = all(r.sync["phases"][i]["throughput"] > min(f.sync["phases"][i]["throughput"] for f, _ in fixed)
                    for i in range(len(r.sync["phases"])))
        ratio = t / min(ft for _f, ft in fixed)
        out.append(f"target: {way(r)} beats the worse fixed way in every phase: {'yes' if beats else 'no'}; "
                   f"whole run {ratio:.2f}x the better fixed way ({'within' if ratio <= TARGET else 'over'} "
                   f"{TARGET}x)")
    return out


def figure(scenario, runs):
    """Throughput over time of every way (top) and the policy of each adaptive run's
    Process and Region over time (bottom), phases shaded; a matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    for r in runs:
        bin_s = r.sync["timeline"]["bin"]
        ops = r.sync["timeline"]["ops"]
        rates = [n / bin_s if n else float("nan") for n in ops]  # an empty bin: a gap (log scale)
        top.plot([(i + 0.5) * bin_s for i in range(len(ops))], rates, label=way(r))
    _shade(top, runs[0])
    top.set(yscale="log", ylabel="operations/s", title=f"tornado-dsm scenario {scenario.name}: "
            "throughput and policy over time")
    top.legend(fontsize="small")
    _draw_policies(bottom, runs)
    _shade(bottom, runs[0])
    bottom.set(xlabel="seconds since the run's start", yticks=(0, 1), yticklabels=("singleton", "per_node"),
               ylim=(-0.3, 1.3))
    fig.panels = [top, bottom]
    return fig


def _shade(ax, r) -> None:
    """Every other phase shaded, each named at its start."""
    for i, p in enumerate(r.sync["phases"]):
        if i % 2:
            ax.axvspan(p["start"], p["end"], color="0.9", zorder=0)
        ax.axvline(p["start"], color="0.6", lw=0.5)


def _draw_policies(ax, runs) -> None:
    """Step lines of the policy of each adaptive run's objects (1: per_node)."""
    level = {"singleton": 0, "per_node": 1}
    for r in runs:
        end = r.sync["phases"][-1]["end"] if r.sync["phases"] else 0.0
        for obj, o in r.sync["policies"].items():
            if not o["adaptive"]:
                continue
            xs, ys = [0.0], [level.get(o["initial"], 0)]
            for t, to, _reason in o["switches"]:
                xs.append(t)
                ys.append(level.get(to, 0))
            xs.append(end)
            ys.append(ys[-1])
            offset = 0.04 if obj == "region" else -0.04  # the two lines side by side
            ax.step(xs, [y + offset for y in ys], where="post", label=f"{way(r)}: {obj}")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def plot(scenario, runs, path, fmt: str, meta: dict):
    """Write ``figure`` to ``path`` in ``fmt``; the Figure."""
    fig = figure(scenario, runs)
    fig.savefig(path, format=fmt, metadata=meta)
    return fig
