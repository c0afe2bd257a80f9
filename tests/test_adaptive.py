"""The adaptive policy (kernel/cobj/_adaptive.py) and the adaptive scenario (issue 15, parts 3 and 4)."""

from __future__ import annotations

import itertools
import math
import time
import types
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from helpers import new_cluster
from tornado_dsm import _report, _report_phases
from tornado_dsm._config import check_policies
from tornado_dsm._scenario_config import ScenarioError, from_dict, load
from tornado_dsm._scenario_run import run_scenario
from tornado_dsm._workloads_phases import churn_phase, read_phase
from tornado_dsm.kernel import ObjectDestroyed, SwapFailed, parse_policy
from tornado_dsm.kernel.cobj import _adaptive
from tornado_dsm.kernel.cobj._inspect import history_lines

SCENARIO = Path(__file__).resolve().parent.parent / "scenarios" / "adaptive.toml"
QUICK = "adaptive:up=50,down=10,dwell=0.2,period=0.1"  # small thresholds: a second of load decides
QUICK_SHOWN = "adaptive:down=10,dwell=0.2,period=0.1,up=50"  # as the monitor prints it (keys sorted)
P = {"tpn": 1}


# ---- parsing ---------------------------------------------------------------------------------

class TestParsePolicy:
    def test_parses_with_and_without_parameters(self):
        """'adaptive' has no parameters; given ones are kept sorted and print back to an equal policy."""
        assert parse_policy("adaptive", 3).params == ()
        policy = parse_policy("adaptive:up=100,dwell=2,start=per_node", 3)
        assert policy.kind == "adaptive" and dict(policy.params) == {"up": 100.0, "dwell": 2.0, "start": "per_node"}
        assert parse_policy(str(policy), 3) == policy

    @pytest.mark.parametrize("text, named", [
        ("adaptive:", "''"), ("adaptive:up", "'up'"), ("adaptive:fast=1", "'fast=1'"),
        ("adaptive:up=x", "up='x'"), ("adaptive:up=nan", "up='nan'"), ("adaptive:up=-1", "up='-1'"),
        ("adaptive:down=300", "down=300 must be below up=200"), ("adaptive:ratio=0.5", "ratio=0.5"),
        ("adaptive:period=0", "period=0"), ("adaptive:start=group:2", "start='group:2'"),
        ("adaptive:up=1,up=2", "'up' given twice"),
    ])
    def test_rejects_bad_parameters(self, text, named):
        """A bad parameter is a ValueError naming it and the accepted keys."""
        with pytest.raises(ValueError) as info:
            parse_policy(text, 3)
        assert named in str(info.value) and "up, down, ratio, dwell, period, start" in str(info.value)


class TestCheckPolicies:
    def test_cluster_options_accept_adaptive(self):
        """Cluster(policies=...) takes adaptive, with parameters, for the Process and the Region."""
        assert check_policies({"process": "adaptive", "region": QUICK}, 3) == {"process": "adaptive", "region": QUICK}

    def test_cluster_options_refuse_a_bad_parameter(self):
        """A bad adaptive parameter in the Cluster's policies is a ValueError naming it."""
        with pytest.raises(ValueError, match="'speed=1'"):
            check_policies({"process": "adaptive:speed=1"}, 3)

    def test_scenario_keys_accept_and_refuse(self):
        """The scenario's policy keys take adaptive; a bad parameter names the key and the value."""
        s = from_dict({"policies": {"process": "adaptive", "region": QUICK}})
        assert s["policies.region"] == QUICK
        with pytest.raises(ScenarioError) as info:
            from_dict({"policies": {"region": "adaptive:up=5,down=9"}})
        assert info.value.key == "policies.region" and "down=9 must be below up=5" in str(info.value)


# ---- the rule, the window and the ticks (no nodes) -----------------------------------------------

def _monitor(text: str = "adaptive") -> _adaptive.Monitor:
    return _adaptive.Monitor(parse_policy(text, 3))


def _figures(demand: float, replicated: float) -> dict:
    return {"demand": demand, "cost_singleton": demand, "cost_replicated": replicated}


class TestChoose:
    def test_a_busy_singleton_is_replicated(self):
        """A singleton called above ``up`` by other nodes, cheaply kept consistent, goes per_node."""
        assert _monitor().choose("singleton", _figures(500, 100)) == "per_node"

    def test_the_band_between_the_rules_keeps_the_policy(self):
        """Demand between down and up, or a cost ratio inside ``ratio``, switches nothing."""
        m = _monitor()
        assert m.choose("singleton", _figures(100, 0)) is None        # below up
        assert m.choose("singleton", _figures(500, 300)) is None      # not ratio times cheaper
        assert m.choose("per_node", _figures(100, 0)) is None         # above down
        assert m.choose("per_node", _figures(500, 900)) is None       # not ratio times dearer

    def test_idle_or_costly_replicas_go_back(self):
        """A per_node object below ``down``, or dearer to keep consistent than singleton, goes singleton."""
        m = _monitor()
        assert m.choose("per_node", _figures(5, 0)) == "singleton"
        assert m.choose("per_node", _figures(500, 1500)) == "singleton"


class TestWindow:
    def test_rates_from_two_samples(self):
        """Demand counts the other nodes' calls per second; per_node's cost is forwards + broadcasts."""
        m = _monitor()
        assert m.window(10.0, [[0, 0, 0, 1]] * 3, 0, 0, "per_node") is None   # the first sample
        rows = [[50, 0, 40, 1], [100, 0, 10, 1], [200, 0, 10, 1]]  # node 0: 40 broadcast PPCs
        f = m.window(11.0, rows, 20, 0, "per_node")
        assert (f["demand"], f["updates"], f["forwards"], f["fanout"]) == (300, 20, 20, 2)
        assert f["cost_replicated"] == 60 and f["cost_singleton"] == 300 and f["misses"] == 3

    def test_singleton_predicts_the_broadcasts(self):
        """Under singleton the replicated cost is predicted: one forward and nnodes - 1 PPCs per update."""
        m = _monitor()
        m.window(0.0, [[0, 0, 0, 1]] * 3, 0, 0, "singleton")
        f = m.window(0.5, [[10, 0, 0, 1], [0, 50, 0, 1], [0, 50, 0, 1]], 10, 0, "singleton")
        assert f["demand"] == 200 and f["remote"] == 200 and f["cost_replicated"] == 20 * 3


class FakeCOS:
    """What Monitor.tick reads of a COS: one record, every node's rows, and a swap that only records."""

    def __init__(self, monitor, policy: str) -> None:
        root = types.SimpleNamespace(_broadcasts=itertools.count())
        self.record = types.SimpleNamespace(policy=parse_policy(policy, 3), destroyed=False, adaptive=monitor,
                                            root=root)
        self._roots, self.node, self.nnodes = {7: self.record}, 0, 3
        self.rows, self.swaps = [[0, 0, 0, 1]] * 3, []

    def _all_nodes(self, method, args, timeout=None):
        return self.rows

    def swap(self, cos, oid, target, timeout, reason, figures):
        self.swaps.append((target, reason, figures))
        self.record.policy = parse_policy(target, 3)
        return {"to": target}


def _alternate(monkeypatch, dwell: float, windows: int = 40) -> list:
    """Tick a monitor through windows that alternate between heavy and no use; the swaps."""
    m = _monitor(f"adaptive:dwell={dwell},period=0.1")
    cos = FakeCOS(m, "singleton")
    monkeypatch.setattr(_adaptive._swap, "swap_home", cos.swap)
    calls = 0
    for i in range(windows):
        calls += 1000 if (i // 3) % 2 == 0 else 0   # three windows hot, three idle, ...
        cos.rows = [[0, 0, 0, 1], [calls, 0, 0, 1], [calls, 0, 0, 1]]
        m.tick(cos, 7, 100.0 + 0.1 * i)
    return cos.swaps


class TestTick:
    def test_one_stalled_window_switches_nothing(self, monkeypatch):
        """A single idle window amid heavy use (a node descheduled) does not send a per_node object back."""
        m = _monitor("adaptive:dwell=0,start=per_node")
        cos = FakeCOS(m, "per_node")
        monkeypatch.setattr(_adaptive._swap, "swap_home", cos.swap)
        calls = 0
        for i, more in enumerate((0, 1000, 1000, 0, 1000, 1000, 0, 1000)):
            calls += more
            cos.rows = [[0, 0, 0, 1], [calls, 0, 0, 1], [calls, 0, 0, 1]]
            m.tick(cos, 7, 100.0 + 0.1 * i)
        assert cos.swaps == []

    def test_hysteresis_prevents_flapping(self, monkeypatch):
        """Use that flips every 0.3 s switches at most once per dwell (here: 4 s over 4 s of windows)."""
        assert len(_alternate(monkeypatch, dwell=4.0)) == 1

    def test_without_dwell_it_follows_the_use(self, monkeypatch):
        """With no dwell the same use switches many times: dwell is what holds it."""
        assert len(_alternate(monkeypatch, dwell=0.0)) >= 8

    def test_each_switch_carries_its_figures_and_reason(self, monkeypatch):
        """Every swap the monitor asks for says 'adaptive' and hands over the window's figures."""
        swaps = _alternate(monkeypatch, dwell=0.0)
        assert all(reason == "adaptive" and {"demand", "cost_singleton", "cost_replicated", "updates",
                                              "fanout", "misses"} <= set(f) for _t, reason, f in swaps)

    def test_a_destroyed_object_stops_its_monitor(self):
        """Once the object is destroyed (or made fixed), the monitor stops and swaps nothing."""
        m = _monitor()
        cos = FakeCOS(m, "singleton")
        cos.record.destroyed = True
        assert m.tick(cos, 7, 1.0) is None and m.stopped


class TestTickerTick:
    def _failing(self, monkeypatch, exc) -> _adaptive.Monitor:
        """A due monitor whose swap raises ``exc``, ticked once by a Ticker; the monitor."""
        m = _monitor("adaptive:dwell=0")
        cos = FakeCOS(m, "singleton")
        cos.runtime = types.SimpleNamespace(stopping=False)
        def swap(*args, **kwargs):
            raise exc
        monkeypatch.setattr(_adaptive._swap, "swap_home", swap)
        ticker = _adaptive.Ticker(cos)
        ticker.monitors[7] = m
        for calls in (0, 10_000, 20_000):   # a baseline, then two hot windows: the rule asks for a swap
            cos.rows = [[0, 0, 0, 1], [calls, 0, 0, 1], [calls, 0, 0, 1]]
            m.due = 0.0
            ticker.tick(7, m)
        return m, ticker

    def test_a_failed_swap_is_kept_and_the_monitor_goes_on(self, monkeypatch):
        """A swap that fails leaves its error in last_error; the monitor keeps watching."""
        m, ticker = self._failing(monkeypatch, SwapFailed("node 2 lost"))
        assert "SwapFailed: node 2 lost" == m.last_error and not m.stopped and 7 in ticker.monitors

    def test_a_destroyed_object_ends_the_monitor(self, monkeypatch):
        """ObjectDestroyed during a tick stops the monitor and the ticker forgets it."""
        m, ticker = self._failing(monkeypatch, ObjectDestroyed("gone"))
        assert m.stopped and 7 not in ticker.monitors


class TestHistoryLines:
    def test_one_line_per_switch_with_figures(self):
        """history_lines prints a head and one line per record, with from, to, reason and figures."""
        h = {"time": 0.0, "from": "singleton", "to": "per_node", "seconds": 0.002, "waited": 3,
             "wait_seconds": 0.0, "reason": "adaptive", "from_home": 0, "to_home": 0,
             "figures": {"demand": 812.0}}
        lines = history_lines("region:a", [h, dict(h, **{"from": "per_node", "to": "singleton"})])
        assert lines[0] == "swap history of region:a:" and len(lines) == 3
        assert "singleton -> per_node  (adaptive, 2.0 ms, 3 call(s) waited)  demand 812" in lines[1]
        assert history_lines("x", []) == []


# ---- on nodes ----------------------------------------------------------------------------------

def _read(c, a, seconds: float) -> None:
    fcm = c._arrays.allocation(a)[0].fcm
    c.run(read_phase, P, a, fcm, time.time(), seconds)


def _churn(c, seconds: float) -> None:
    first = int(c.vm.process.allocate(c.nnodes))
    c.run(churn_phase, P, int(c.vm.process), c.config.base + first * 4096, time.time(), seconds)


def _await(c, a, count: int, within: float = 10.0) -> list:
    """The Region's history once it has ``count`` records (or what it has after ``within`` s)."""
    deadline = time.monotonic() + within
    while len(history := c.swap_history(a)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return history


@pytest.fixture(scope="module")
def followed():
    """What a 3-node cluster's adaptive Region and Process did through a read phase, then a
    churn phase: (the Region's oid, its history after the read, its whole history, the final
    inspect view, the Process's history after the read, and after the churn).
    Plain data only: a cached array would keep the closed cluster's window mapped."""
    with new_cluster(3, policies={"process": QUICK, "region": QUICK}) as c:
        a = c.zeros((16 * 512,), np.int64)
        _read(c, a, 1.2)
        after_read, process_read = list(c.swap_history(a)), list(c.swap_history("process"))
        _churn(c, 1.2)
        process_churn = list(c.swap_history("process"))
        result = (c._arrays.allocation(a)[0].region, after_read, _await(c, a, 2), c.inspect(),
                  process_read, process_churn)
        del a
    return result


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestFollowsUsage:
    def test_region_goes_replicated_under_reads_and_back_under_churn(self, followed):
        """Under reads from every node the Region becomes per_node; idle during churn, singleton again."""
        _oid, after_read, history, _view, *_process = followed
        assert [h["to"] for h in after_read] == ["per_node"]
        assert [(h["from"], h["to"]) for h in history] == [("singleton", "per_node"), ("per_node", "singleton")]

    def test_process_goes_replicated_under_reads_and_singleton_under_churn(self, followed):
        """Lookups from every node replicate the Process; attach/detach churn, each change broadcast
        to every rep, makes it a singleton again, on the figures of broadcasts per update."""
        *_region, process_read, process_churn = followed
        assert [h["to"] for h in process_read] == ["per_node"]
        assert [h["to"] for h in process_churn] == ["per_node", "singleton"]
        churn = process_churn[1]["figures"]
        assert churn["updates"] > 0 and churn["cost_replicated"] > 2 * churn["cost_singleton"]

    def test_history_records_each_switch_with_its_figures(self, followed):
        """Each switch has its time, from, to, reason 'adaptive' and the figures that caused it."""
        _oid, _after, history, _view, *_process = followed
        up, down = history
        assert all(h["reason"] == "adaptive" and h["time"] > 0 for h in history)
        assert up["figures"]["demand"] >= 50 and up["figures"]["cost_singleton"] > 2 * up["figures"]["cost_replicated"]
        assert down["figures"]["demand"] < 10 and up["time"] < down["time"]

    def test_inspect_shows_histories(self, followed):
        """cluster.inspect() carries each object's history and prints it under the table."""
        oid, _after, history, view, *_process = followed
        assert [h["to"] for h in view[oid].history] == [h["to"] for h in history]
        assert view[oid].policy == "adaptive(singleton)" and view[oid].adaptive["policy"] == QUICK_SHOWN
        assert f"swap history of {view[oid].name}:" in str(view) and "(adaptive," in str(view)


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestSetPolicy:
    def test_set_policy_turns_adaptive_on_and_off(self):
        """set_policy(..., 'adaptive:...') starts a monitor on a fixed object; a fixed policy stops it."""
        with new_cluster(2, policies={"region": "per_node"}) as c:
            a = c.zeros((8 * 512,), np.int64)
            oid = c._arrays.allocation(a)[0].region
            record = c.set_policy(a, "adaptive:up=1e9,down=0")  # thresholds nothing reaches: it stays
            assert record["adaptive"] == "adaptive:down=0,up=1e+09"
            assert c.inspect()[oid].policy == "adaptive(per_node)"
            c.set_policy(a, "per_node")
            view = c.inspect()[oid]
            assert view.policy == "per_node" and view.adaptive is None

    def test_an_object_that_cannot_swap_is_refused(self):
        """adaptive on an object without singleton (the DSM) is a ValueError naming what it needs."""
        with new_cluster(2) as c:
            with pytest.raises(ValueError, match="adaptive needs singleton, per_node and SWAP"):
                c.set_policy(c.vm.dsm, "adaptive")


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestHysteresisOnNodes:
    def test_dwell_holds_the_policy_through_a_phase_change(self):
        """With a dwell longer than the run, the Region switches once, under reads, and never back."""
        with new_cluster(3, policies={"region": "adaptive:up=50,down=10,dwell=60,period=0.1"}) as c:
            a = c.zeros((16 * 512,), np.int64)
            _read(c, a, 1.0)
            _churn(c, 1.0)
            assert [h["to"] for h in _await(c, a, 1)] == ["per_node"]


@pytest.mark.multinode
@pytest.mark.timeout(180)
class TestScenario:
    def test_runs_three_ways_with_phase_tables_plot_and_histories(self, tmp_path):
        """A small adaptive.toml runs singleton, per_node and adaptive; tables, plot, JSON and inspect follow."""
        s = load(SCENARIO, ["nodes=2", "pages=8", "seconds=0.6", "phases=read,churn"])
        runs = run_scenario(s, base=0x3C0000000000, progress=False)
        assert [_report_phases.way(r) for r in runs] == ["singleton", "per_node", "adaptive"]
        assert all([p["phase"] for p in r.sync["phases"]] == ["read", "churn"] and
                   all(p["throughput"] > 0 for p in r.sync["phases"]) for r in runs)
        table = _report.render_table(s, runs)
        assert "phase 1: read" in table and "phase 2: churn" in table and "target: adaptive" in table
        fig = _report.plot(s, runs, tmp_path / "a.png")
        assert len(fig.panels) == 2 and (tmp_path / "a.png").stat().st_size > 0
        jsonschema.validate(_report.to_json(s, runs), _report.load_schema())
        assert runs[2].sync["policies"]["region"]["switches"] and "swap history of region:" in \
            _report.render_inspect(runs[2:])

    def test_verdict_against_the_fixed_ways(self):
        """The target line says whether adaptive beat the worse fixed way in every phase, and by how much
        its whole run exceeds the better fixed way's."""
        def run(way, *rates):
            return types.SimpleNamespace(values={"policies.process": way, "policies.region": way},
                                         sync={"phases": [{"seconds": 1.0, "throughput": t} for t in rates]})
        runs = [run("singleton", 10, 100), run("per_node", 100, 10), run("adaptive", 90, 90)]
        line, = _report_phases.verdict(runs, _report_phases.whole_run_seconds(runs))
        assert "every phase: yes" in line and "whole run 0.20x" in line and "(within 1.2x)" in line
        runs[2] = run("adaptive", 9, 90)
        line, = _report_phases.verdict(runs, _report_phases.whole_run_seconds(runs))
        assert "every phase: no" in line and "whole run 1.11x" in line and "(within 1.2x)" in line

    def test_whole_run_seconds(self):
        """The whole run is each phase's seconds times the best throughput over the run's own."""
        runs = [types.SimpleNamespace(sync={"phases": [{"seconds": 1.0, "throughput": t1},
                                                       {"seconds": 1.0, "throughput": t2}]})
                for t1, t2 in ((100, 10), (50, 20))]
        assert _report_phases.whole_run_seconds(runs) == [1.0 + 2.0, 2.0 + 1.0]
        assert math.isinf(_report_phases.whole_run_seconds(
            [types.SimpleNamespace(sync={"phases": [{"seconds": 1.0, "throughput": 0.0}]})])[0])
