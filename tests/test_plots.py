"""`tornado-dsm run --plot`: absolute values by default, chosen metrics, honest legends, real formats."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tornado_dsm._cli import main
from tornado_dsm._report import (METRICS, PlotError, check_plot, figure, image_format, metric_names, plot,
                                 resolve_metrics)
from tornado_dsm._report_sync import figures
from tornado_dsm._scenario_config import from_dict, load
from tornado_dsm._scenario_run import PPCRow, RunResult
from tornado_dsm._stats import NodeStatistics
from tornado_dsm._workloads import ThreadResult

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "scenarios"
ACCEPTED_FORMATS = "accepted: .png, .svg, .pdf"
MAGIC = {"png": (b"\x89PNG\r\n\x1a\n",), "pdf": (b"%PDF",), "svg": (b"<?xml", b"<svg")}

# What each shipped scenario's description (or, for ivy-managers, its comment: "Compare
# messages, invalidations and forwards") says it compares, and the metrics that show it.
PROMISED = {
    "adaptive": ("faults/s", "process.rppc/fault", "region.rppc/fault"),  # throughput; who pays the PPCs
    "barriers": ("us/episode", "msgs/ep", "rmw/ep", "rounds", "pages"),   # µs, traffic, RMWs, rounds, space
    "false-sharing": ("us/access", "faults/access"),                    # the page moves at every write
    "infault-multiprogrammed": ("faults/s", "us/access", "process.rppc/fault", "region.rppc/fault"),
    "ivy-managers": ("messages", "invalidations", "forwards"),          # the three managers' traffic
    "jacobi": ("us/access", "faults", "messages"),                      # band edges fetch copies
    "locks": ("unc.us", "acq/s", "faults/hand", "max/min", "fifo", "pages"),  # latency ... FIFO, space
    "matmul": ("us/access", "faults", "messages"),                      # blocks fetched as copies
    "migrate-vs-ivy": ("us/access", "faults", "messages", "bytes"),     # pages moved vs copied
    "producer-consumer": ("faults/s", "messages", "invalidations"),     # invalidate, then fetch again
    "quickstart": ("faults/s", "process.rppc/fault", "region.rppc/fault"),  # replicated vs singleton
    "tornado-infault": ("us/access", "process.rppc/fault", "region.rppc/fault"),
}


# ---- runs without a cluster ------------------------------------------------------------------

def fake(s, override: dict, *, faults=0, seconds=1.0, ops=100, messages=0, invalidations=0, forwards=0,
         nbytes=0, sync=None) -> RunResult:
    """A RunResult of ``s`` with ``override`` whose figures are the given numbers (node 0 did it all)."""
    values = s.with_values(override).values
    n = values["cluster.nodes"]
    nodes = tuple(NodeStatistics(node=i, coherence_faults=faults, invalidations=invalidations, forwards=forwards)
                  if i == 0 else NodeStatistics(node=i) for i in range(n))
    ppc = (PPCRow(1 % n, "dir:array0", "request", "remote", messages // 2, nbytes),) if messages else ()
    return RunResult(s.name, dict(override), dict(values), (ThreadResult(0, 0, ops, seconds),), nodes,
                     (seconds,) * n, seconds, 0, ppc, (), seconds, sync or {})


def data_lines(ax) -> dict:
    """{label: (xs, ys)} of a panel's data lines (those with markers: not the reference line at 1)."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()
            if line.get_marker() not in (None, "", "None")}


def bars(ax) -> tuple[list, list]:
    """(tick labels, heights) of a bar panel."""
    return [t.get_text() for t in ax.get_xticklabels()], [p.get_height() for p in ax.patches]


def panels(fig) -> dict:
    """{metric name: Axes} of a figure from plot() / figure()."""
    return dict(fig.panels)


def legend_texts(fig) -> list[str]:
    """Every legend entry of the figure (figure legends and panel legends)."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


@pytest.fixture
def managers():
    """(scenario, runs): ivy-managers on 2 and 3 nodes, with known messages, invalidations, forwards."""
    s = load(SCENARIOS / "ivy-managers.toml", [], ["nodes=2,3"])
    runs = [fake(s, o, faults=100 + 10 * i, seconds=0.5 + i / 10, messages=200 + 20 * i, invalidations=5 + i,
                 forwards=i if o["cluster.manager"] == "dynamic" else 0, nbytes=1000 * i)
            for i, o in enumerate(s.combinations())]
    return s, runs


@pytest.fixture
def policies():
    """(scenario, runs): the issue's case, per_node against group:2 on 2 and 4 nodes, per_node 4-6x cheaper."""
    s = from_dict({"name": "policy-cmp", "workload": {"kind": "infault"},
                   "vary": {"policies.region": ["per_node", "group:2"], "nodes": [2, 4]}})
    cost_us = {("per_node", 2): 18.0, ("per_node", 4): 32.0, ("group:2", 2): 100.0, ("group:2", 4): 140.0}
    runs = [fake(s, o, faults=100, ops=1000,
                 seconds=cost_us[o["policies.region"], o["cluster.nodes"]] * 1000 / 1e6)
            for o in s.combinations()]
    return s, runs, cost_us


def lock_sync(algorithm: str, nodes: int, acquisitions: int, handovers: int) -> dict:
    """The driver's figures of a lock run (see _workloads_sync), with 2 threads per node."""
    threads = 2 * nodes
    return {"kind": "lock", "algorithm": algorithm, "padding": "page", "threads": threads, "space_pages": 1 + nodes,
            "uncontended_us": 4.0 * nodes, "uncontended_node": nodes - 1, "acquisitions": acquisitions,
            "seconds": 0.1, "start_late_s": 0.0, "handovers": handovers, "rmws": acquisitions,
            "per_thread": [acquisitions // threads] * threads, "probe_entry_orders": [], "probe_arrival_ms": [],
            "probe_handovers": 2 if nodes > 1 else 0, "probe_out_of_order": 1 if algorithm == "tas" else 0}


# ---- what is accepted ------------------------------------------------------------------------

class TestChecks:
    @pytest.mark.parametrize("path,what", [("x.jpg", "unsupported image format 'jpg'"),
                                           ("out/plot.gif", "unsupported image format 'gif'"),
                                           ("plot", "no file extension")])
    def test_bad_extension_names_the_accepted_formats(self, path, what):
        """A path whose extension is not .png, .svg or .pdf is refused, naming the formats accepted."""
        with pytest.raises(PlotError) as info:
            image_format(path)
        assert str(info.value) == f"--plot {path}: {what}; {ACCEPTED_FORMATS}"

    @pytest.mark.parametrize("path,fmt", [("a.png", "png"), ("a.SVG", "svg"), ("dir.v2/a.pdf", "pdf")])
    def test_format_comes_from_the_extension(self, path, fmt):
        """The format is the extension's, in any case."""
        assert image_format(path) == fmt

    def test_unknown_metric_lists_the_accepted_ones(self):
        """An unknown --metric is refused, listing every metric of the scenario's kind."""
        s = load(SCENARIOS / "ivy-managers.toml")
        with pytest.raises(PlotError) as info:
            check_plot(s, "m.png", ["faults/s,fautls"])
        msg = str(info.value)
        assert msg.startswith("--metric fautls: unknown metric 'fautls'; accepted: faults/s, us/access, ")
        for name in ("messages", "invalidations", "forwards", "rppc/fault", "bytes", "norm.cost", "messages/fault"):
            assert f" {name}," in msg or msg.endswith(f" {name}")
        assert "acq/s" not in msg     # a lock figure: not accepted for shared-read

    def test_metric_of_another_kind_is_refused(self):
        """A lock figure asked of a shared-read scenario is refused, naming the kinds."""
        with pytest.raises(PlotError) as info:
            check_plot(load(SCENARIOS / "ivy-managers.toml"), "m.png", ["acq/s"])
        assert "'acq/s' applies to the lock kinds only, this scenario runs shared-read; accepted:" in str(info.value)

    def test_metric_or_normalize_without_plot_is_refused(self):
        """--metric and --normalize choose what --plot draws: without --plot they are an error."""
        s = load(SCENARIOS / "quickstart.toml")
        with pytest.raises(PlotError, match=r"^--metric faults/s: chooses what --plot draws; add --plot PATH$"):
            check_plot(s, None, ["faults/s"])
        with pytest.raises(PlotError, match=r"^--normalize: applies to --plot; add --plot PATH$"):
            check_plot(s, None, [], True)
        assert check_plot(s, None) == ()

    def test_names_are_comma_separated_repeatable_and_spelled_as_in_the_table(self):
        """--metric takes commas and repeats; the table's heads (µs/access, msgs, RMW/acq) name metrics; once each."""
        assert metric_names(["faults/s,messages", " µs/access ", ""]) == ["faults/s", "messages", "µs/access"]
        chosen = resolve_metrics(["faults/s,messages", "µs/access", "msgs", "Region rPPC/f"], ["infault"])
        assert [m.name for m in chosen] == ["faults/s", "messages", "us/access", "region.rppc/fault"]
        assert [m.name for m in resolve_metrics(["unc. µs,RMW/acq,FIFO"], ["lock"])] == ["unc.us", "rmw/acq", "fifo"]

    def test_every_metric_has_a_title_and_a_unit(self):
        """Every metric names itself, its panel title and its y unit; names are unique."""
        assert len({m.name for m in METRICS}) == len(METRICS)
        assert all(m.name and m.title and m.unit for m in METRICS)


class TestCommandLine:
    @pytest.fixture
    def no_start(self, monkeypatch):
        """Fail the test if any cluster would start (the plot checks come before)."""
        def started(*args, **kwargs):
            raise AssertionError("a cluster was started")
        monkeypatch.setattr("tornado_dsm._scenario_run.run_one", started)

    def error(self, capsys, *argv: str) -> str:
        """Run the CLI, expect exit status 2 and return its one line of stderr."""
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        return err.rstrip("\n")

    def test_jpg_exits_2_before_the_run(self, tmp_path, capsys, no_start):
        """--plot x.jpg exits 2 with one line naming the formats accepted, before any node starts."""
        path = tmp_path / "x.jpg"
        assert self.error(capsys, "run", "ivy-managers", "--plot", str(path)) == \
            f"tornado-dsm: error: --plot {path}: unsupported image format 'jpg'; {ACCEPTED_FORMATS}"
        assert not path.exists()

    def test_bad_metric_exits_2_before_the_run(self, tmp_path, capsys, no_start):
        """--metric with an unknown name exits 2 with one line listing the accepted metrics."""
        err = self.error(capsys, "run", "locks", "--plot", str(tmp_path / "l.svg"), "--metric", "acq/s",
                         "--metric", "bogus")
        assert err.startswith("tornado-dsm: error: --metric bogus: unknown metric 'bogus'; accepted: ")
        assert "acq/s" in err and "faults/hand" in err and "pages" in err

    def test_missing_folder_exits_2_before_the_run(self, tmp_path, capsys, no_start):
        """--plot into a folder that does not exist exits 2 before any node starts."""
        assert "does not exist" in self.error(capsys, "run", "quickstart", "--plot", str(tmp_path / "no" / "p.pdf"))

    def test_metric_without_plot_exits_2(self, capsys, no_start):
        """--metric without --plot exits 2 (it would be silently ignored)."""
        assert self.error(capsys, "run", "quickstart", "--metric", "messages") == \
            "tornado-dsm: error: --metric messages: chooses what --plot draws; add --plot PATH"


# ---- what is drawn ---------------------------------------------------------------------------

class TestDrawn:
    def test_absolute_values_by_default(self, managers):
        """Each panel's points are the runs' own figures (faults/s, messages, ...), not ratios."""
        s, runs = managers
        fig = figure(s, runs)
        assert list(panels(fig)) == ["faults/s", "messages", "invalidations", "forwards"]
        for metric, value in [("faults/s", lambda r: r.faults_per_second()),
                              ("messages", lambda r: 2 * sum(p.calls for p in r.ppc)),
                              ("invalidations", lambda r: r.total.invalidations),
                              ("forwards", lambda r: r.total.forwards)]:
            lines = data_lines(panels(fig)[metric])
            for manager in ("centralized", "fixed", "dynamic"):
                mine = [r for r in runs if r.params["cluster.manager"] == manager]
                assert lines[f"manager={manager}"] == ([2, 3], [value(r) for r in mine])
            assert panels(fig)[metric].get_ylim()[0] == 0     # from zero: no difference looks larger

    def test_the_issues_policy_comparison_shows_the_cheaper_policy_lower(self, policies):
        """per_node, 4-6x cheaper than group:2, is drawn below it at every node count (not normalised to itself)."""
        s, runs, cost_us = policies
        lines = data_lines(panels(figure(s, runs, ["us/access"]))["us/access"])
        assert set(lines) == {"region=per_node", "region=group:2"}
        for region in ("per_node", "group:2"):
            assert lines[f"region={region}"][1] == pytest.approx([cost_us[region, 2], cost_us[region, 4]])
        assert all(a < b / 4 for a, b in zip(lines["region=per_node"][1], lines["region=group:2"][1]))

    def test_normalised_only_with_the_option_and_labelled(self, policies):
        """--normalize divides by the fewest-nodes run of the same settings and the axis says so; not by default."""
        s, runs, cost_us = policies
        plain = panels(figure(s, runs, ["us/access"]))["us/access"]
        assert "÷" not in plain.get_ylabel() and plain.get_ylabel() == "µs per access"
        for fig in (figure(s, runs, ["us/access"], normalize=True), figure(s, runs, ["norm.cost"])):
            ax = fig.panels[0][1]
            assert ax.get_ylabel() == "µs per access ÷ the 2-node run"
            lines = data_lines(ax)
            for region in ("per_node", "group:2"):
                assert lines[f"region={region}"][1] == pytest.approx([1.0, cost_us[region, 4] / cost_us[region, 2]])

    def test_legend_names_what_differs_and_never_the_scenario(self, managers):
        """Legend entries are key=value of the varied keys that differ between lines; no scenario name."""
        s, runs = managers
        fig = figure(s, runs)
        assert legend_texts(fig) == ["manager=centralized", "manager=fixed", "manager=dynamic"]
        assert "ivy-managers" in fig.get_suptitle()

    def test_one_line_has_no_legend(self):
        """A scenario varying only the nodes draws one line, without a legend; the title names the scenario."""
        s = load(SCENARIOS / "false-sharing.toml")
        runs = [fake(s, o, faults=10 * n, ops=1000, seconds=0.01 * n) for n, o in enumerate(s.combinations(), 1)]
        fig = figure(s, runs, ["faults/access"])
        assert legend_texts(fig) == [] and "false-sharing" in fig.get_suptitle()
        (xs, ys), = data_lines(fig.panels[0][1]).values()
        assert (xs, ys) == ([1, 2], [0.01, 0.02])

    def test_bars_when_the_nodes_do_not_vary(self):
        """Without a nodes axis each run is a bar of its absolute figure, named by what differs; the axis names the key."""
        s = load(SCENARIOS / "ivy-managers.toml")
        runs = [fake(s, o, faults=10, messages=100 * (i + 1)) for i, o in enumerate(s.combinations())]
        ax = panels(figure(s, runs, ["messages"]))["messages"]
        assert bars(ax) == (["centralized", "fixed", "dynamic"], [100, 200, 300])
        assert ax.get_xlabel() == "manager" and ax.get_ylabel() == "messages"

    def test_units_in_every_panel_and_the_scenario_in_the_title(self, managers):
        """Every panel's y axis names its metric's unit; the title names the scenario and its fixed setting."""
        s, runs = managers
        fig = figure(s, runs, ["faults/s", "us/access", "bytes", "rppc/fault", "p99-us"])
        by_name = {m.name: m for m in METRICS}
        for name, ax in fig.panels:
            assert ax.get_ylabel() == by_name[name].unit and ax.get_title() == by_name[name].title
        assert fig.get_suptitle().startswith("tornado-dsm scenario ivy-managers: shared-read")

    def test_lock_panels_and_their_values(self):
        """Lock runs: the classic four panels come first, against nodes, with the runs' own figures."""
        s = load(SCENARIOS / "locks.toml", ["padding=page"], ["lock=tas,mcs", "nodes=1,3"])
        runs = []
        for o in s.combinations():
            n, tas = o["cluster.nodes"], o["workload.lock"] == "tas"
            runs.append(fake(s, o, faults=400 if tas else 60 * n, messages=700 if tas else 100 * n,
                             sync=lock_sync(o["workload.lock"], n, 1000, (10 if tas else 600) if n > 1 else 0)))
        fig = figure(s, runs)
        assert [name for name, _ax in fig.panels][:4] == ["faults/hand", "faults/acq", "acq/s", "unc.us"]
        assert {"max/min", "fifo", "pages"} <= set(panels(fig))
        assert legend_texts(fig) == ["lock=tas", "lock=mcs"]
        acq = data_lines(panels(fig)["acq/s"])
        assert acq["lock=tas"] == ([1, 3], [figures(r)["throughput_per_s"] for r in runs[:2]])
        hand = data_lines(panels(fig)["faults/hand"])
        assert hand["lock=mcs"] == ([3], [60 * 3 / 600])    # no hand-over on one node: no point
        assert panels(fig)["acq/s"].get_yscale() == "log"

    def test_lines_of_one_algorithm_are_told_apart(self):
        """When a key other than the algorithm differs (threads), each line gets its own colour."""
        s = load(SCENARIOS / "locks.toml", ["padding=page", "lock=mcs"], ["threads_per_node=1,2", "nodes=1,2"])
        runs = [fake(s, o, sync=lock_sync("mcs", o["cluster.nodes"], 100, 50)) for o in s.combinations()]
        ax = panels(figure(s, runs, ["acq/s"]))["acq/s"]
        colours = {line.get_label(): line.get_color() for line in ax.get_lines()}
        assert set(colours) == {"threads_per_node=1", "threads_per_node=2"} and len(set(colours.values())) == 2

    def test_no_finished_run_is_a_figure_saying_so(self, managers, tmp_path):
        """Zero runs (an interrupted run) draw a figure that says so instead of failing."""
        s, _runs = managers
        fig = plot(s, [], tmp_path / "none.png")
        assert fig.panels == [] and "no finished run" in fig.get_suptitle()

    def test_a_chosen_sync_metric_alone(self):
        """--metric picks a lock column alone: one panel."""
        s = load(SCENARIOS / "locks.toml", ["padding=page", "lock=ticket"], ["nodes=1,2"])
        runs = [fake(s, o, sync=lock_sync("ticket", o["cluster.nodes"], 100, 50)) for o in s.combinations()]
        fig = figure(s, runs, ["RMW/acq"])
        assert [n for n, _ in fig.panels] == ["rmw/acq"] and len([a for a in fig.axes if a.axison]) == 1


class TestFiles:
    @pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
    def test_file_is_in_the_extensions_format(self, managers, tmp_path, fmt):
        """plot() writes the format its extension names (magic bytes) and returns the Figure."""
        s, runs = managers
        path = tmp_path / f"m.{fmt}"
        fig = plot(s, runs, path)
        assert path.read_bytes().startswith(MAGIC[fmt]) and list(panels(fig))[0] == "faults/s"

    def test_bad_extension_writes_nothing(self, managers, tmp_path):
        """plot() into x.jpg raises PlotError and leaves no file."""
        s, runs = managers
        with pytest.raises(PlotError):
            plot(s, runs, tmp_path / "x.jpg")
        assert not list(tmp_path.iterdir())


class TestShippedScenarios:
    def test_the_table_covers_every_shipped_scenario(self):
        """Every scenarios/*.toml has a row in PROMISED (a new scenario needs one)."""
        assert set(PROMISED) == {p.stem for p in SCENARIOS.glob("*.toml")}

    @pytest.mark.parametrize("name", sorted(PROMISED))
    def test_default_panels_show_what_the_description_names(self, name):
        """Each shipped scenario's default plot has a panel for every figure its description promises."""
        defaults = [m.name for m in check_plot(load(SCENARIOS / f"{name}.toml"), f"{name}.png")]
        assert set(PROMISED[name]) <= set(defaults), (name, defaults)
        assert len(defaults) <= 8


SCRIPT = str(Path(sys.executable).with_name("tornado-dsm")) \
    if Path(sys.executable).with_name("tornado-dsm").is_file() else "tornado-dsm"


@pytest.mark.multinode
@pytest.mark.timeout(180)
def test_a_real_run_writes_the_chosen_panels_as_svg(tmp_path):
    """`tornado-dsm run ivy-managers --plot x.svg --metric ...` writes an SVG naming the managers and the metrics."""
    path = tmp_path / "m.svg"
    r = subprocess.run([SCRIPT, "run", "ivy-managers", "--set", "nodes=2", "--set", "pages=4", "--set", "repeats=1",
                        "--vary", "manager=centralized,dynamic", "--no-progress", "--plot", str(path),
                        "--metric", "messages,forwards"], capture_output=True, text=True, timeout=170, cwd="/")
    assert r.returncode == 0, r.stderr
    svg = path.read_text()
    assert svg.startswith("<?xml") and "<svg" in svg
    for text in ("centralized", "dynamic", "messages (2 per remote PPC)", "ivy-managers"):
        assert text in svg, text
