"""The locks and barriers scenarios: every kind runs (tiny), with sane figures, tables, winners, JSON and plots."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tornado_dsm._barriers import KINDS as BARRIER_KINDS
from tornado_dsm._barriers import rounds
from tornado_dsm._locks import KINDS as LOCK_KINDS
from tornado_dsm._report import load_schema, plot, render_table, to_json
from tornado_dsm._report_sync import BARRIER_COLUMNS, LOCK_COLUMNS, figures, winners
from tornado_dsm._scenario_config import ScenarioError, from_dict, load
from tornado_dsm._scenario_run import run_one, run_scenario
from tornado_dsm._workloads import steps_of, window_pages
from tornado_dsm._workloads_sync import LockThread, _check_pass, barrier_rounds, out_of_order

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = REPO / "scenarios"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Windows of their own, away from helpers.fresh_base() and test_scenario_run's.
_bases = itertools.count(0x6000_0000_0000, 1 << 40)

TINY_LOCKS = ["seconds=0.1", "repeats=1", "ops=20", "padding=page"]
TINY_BARRIERS = ["ops=5", "repeats=1", "padding=page"]


@pytest.fixture(scope="module")
def locks():
    """(scenario, runs): the shipped locks scenario, every kind, on 1 and 3 nodes, tiny."""
    s = load(SCENARIOS / "locks.toml", TINY_LOCKS, ["nodes=1,3"])
    return s, run_scenario(s, base=next(_bases), progress=False)


@pytest.fixture(scope="module")
def barriers():
    """(scenario, runs): the shipped barriers scenario, every kind, on 1 and 3 nodes, tiny."""
    s = load(SCENARIOS / "barriers.toml", TINY_BARRIERS, ["nodes=1,3"])
    return s, run_scenario(s, base=next(_bases), progress=False)


# ---- without a cluster ---------------------------------------------------------------------

class TestPieces:
    @given(arrivals=st.lists(st.integers(0, 50), max_size=12, unique=True))
    def test_out_of_order_counts_entries_that_overtook_a_waiter(self, arrivals):
        """out_of_order counts exactly the entries for which an earlier arrival entered later."""
        expected = sum(1 for i, a in enumerate(arrivals) if any(b < a for b in arrivals[i + 1:]))
        assert out_of_order(arrivals) == expected
        assert out_of_order(sorted(arrivals)) == 0

    def test_check_pass_refuses_a_lost_or_doubled_increment(self):
        """A counter value read twice, or a gap in the values, is an AssertionError (mutual exclusion)."""
        fake = type("L", (), {"name": "lock 'x'"})()
        ok = [LockThread(0, 0, 2, 0.1, positions=(5, 7)), LockThread(1, 0, 1, 0.1, positions=(6,))]
        assert _check_pass(fake, ok, 5) == (3, [0, 1, 0])
        with pytest.raises(AssertionError, match="mutual exclusion failed"):
            _check_pass(fake, ok + [LockThread(1, 1, 1, 0.1, positions=(6,))], 5)
        with pytest.raises(AssertionError, match="an increment was lost"):
            _check_pass(fake, [LockThread(0, 0, 2, 0.1, positions=(5, 8))], 5)

    def test_barrier_rounds_are_log2_for_tournament_and_dissemination(self):
        """The computed rounds are ceil(log2 P) for the O(log P) kinds, none for counter and server."""
        for p in (2, 4, 5, 6, 8, 64):
            assert barrier_rounds("tournament", p) == barrier_rounds("dissemination", p) == rounds(p)
            assert barrier_rounds("counter", p) is None and barrier_rounds("server", p) is None
        assert barrier_rounds("mcs", 6) == 2 + 2 and barrier_rounds("tree", 6) == 3

    def test_keys_apply_to_their_kinds_only(self):
        """workload.lock, padding and seconds are refused for other kinds; bad values name the choices."""
        with pytest.raises(ScenarioError, match="does not apply to workload kind 'infault'; it applies to lock$"):
            from_dict({"workload": {"lock": "tas"}})
        with pytest.raises(ScenarioError, match="it applies to lock, barrier$"):
            from_dict({"workload": {"kind": "jacobi", "padding": "word"}})
        with pytest.raises(ScenarioError, match="'tas', 'ttas', 'backoff', 'ticket', 'anderson', 'mcs', 'server'"):
            from_dict({"workload": {"kind": "lock", "lock": "spin"}})
        with pytest.raises(ScenarioError, match="workload.seconds = 0: out of range; expected a number from 0.01"):
            from_dict({"workload": {"kind": "lock", "seconds": 0}})
        assert from_dict({"workload": {"kind": "barrier", "barrier": "dissemination", "ops": 7}})["workload.ops"] == 7


# ---- locks ---------------------------------------------------------------------------------

@pytest.mark.multinode
@pytest.mark.timeout(180)
class TestLocks:
    def test_every_kind_ran_with_checked_critical_sections(self, locks):
        """Every lock kind ran on 1 and 3 nodes; the acquisitions add up over the threads (checked counter)."""
        s, runs = locks
        assert [(r.sync["algorithm"], r.values["cluster.nodes"]) for r in runs] == \
            [(k, n) for k in LOCK_KINDS for n in (1, 3)]
        for r in runs:
            f = figures(r)
            assert f["acquisitions"] > 0 and sum(f["fairness"]["per_thread"]) == f["acquisitions"]
            assert len(f["fairness"]["per_thread"]) == f["threads"] == 2 * r.values["cluster.nodes"]
            assert 0 < f["uncontended_us"] < 1e5 and f["throughput_per_s"] > 0

    def test_figures_are_sane(self, locks):
        """Per-acquire figures, hand-overs, RMWs, fairness, FIFO and space are consistent with the algorithm."""
        _s, runs = locks
        for r in runs:
            f, one = figures(r), r.values["cluster.nodes"] == 1
            pa = f["per_acquire"]
            assert pa["faults"] == r.faults() / f["acquisitions"]
            if one:   # nothing moves between nodes; 2 threads: the probe has nothing to order
                assert f["handovers"] == 0 and f["per_handover"] is None and pa["messages"] == 0
                assert f["fifo"]["fifo"] is None and f["fifo"]["rounds"] == 0
            else:
                assert f["handovers"] > 0 and f["per_handover"]["faults"] > 0
                assert f["fifo"]["rounds"] == 1 and f["fifo"]["handovers"] == 5
                assert sorted(f["fifo"]["entry_orders"][0]) == list(range(6))
                assert isinstance(f["fifo"]["fifo"], bool)
            rmw = {"server": 0.0, "ticket": 1.0, "anderson": 1.0}.get(f["algorithm"])
            assert pa["rmws"] == rmw if rmw is not None else pa["rmws"] >= 1.0
            ratio = f["fairness"]["max_over_min"]
            assert ratio is None or ratio >= 1.0
            assert window_pages(r.values) == 1 + f["space_pages"]   # the lock the cluster made

    def test_table_has_every_column_and_a_winner_line_per_column(self, locks):
        """The table shows every lock column, a row per run, and 'winner per column' with a line per column."""
        s, runs = locks
        text = render_table(s, runs)
        lines = text.splitlines()
        head = lines[1]
        assert all(c.head in head for c in LOCK_COLUMNS) and head.split()[:3] == ["lock", "nodes", "threads"]
        assert sum(1 for line in lines if line.split()[:1] in ([k] for k in LOCK_KINDS)) == len(runs)
        start = next(i for i, line in enumerate(lines) if line.startswith("winner per column"))
        assert lines[start].split()[3:] == ["nodes=1", "nodes=3"]
        assert [line.split("  ")[0] for line in lines[start + 1:]] == \
            [c.head for c in LOCK_COLUMNS if c.better]
        assert "all tie (0.00)" in text    # nothing faults on one node

    def test_json_validates_and_names_winners(self, locks):
        """The JSON report validates against the schema, with a sync object per run and the winners."""
        s, runs = locks
        doc = json.loads(json.dumps(to_json(s, runs)))
        jsonschema.validate(doc, load_schema())
        assert all(x["sync"]["kind"] == "lock" for x in doc["runs"])
        best = {(w["label"], w["column"]): w for w in doc["winners"]}
        unmeasured = {"faults/hand", "msgs/hand", "FIFO"}   # on one node of 2 threads: no winner
        assert set(best) == {(f"nodes={n}", c.head) for n in (1, 3) for c in LOCK_COLUMNS
                             if c.better and (n == 3 or c.head not in unmeasured)}
        pages = best[("nodes=3", "pages")]
        assert pages["value"] == 1 and pages["best"] == ["server"]   # the others have words on 2+ pages

    def test_plot_is_a_png(self, locks, tmp_path):
        """--plot draws the lock panels into a PNG."""
        s, runs = locks
        plot(s, runs, tmp_path / "locks.png")
        assert (tmp_path / "locks.png").read_bytes().startswith(PNG_SIGNATURE)

    def test_steps_match_the_progress_bar(self):
        """The lock driver runs exactly steps_of(s) steps (with the FIFO probe: 3 threads)."""
        s = from_dict({"cluster": {"nodes": 1, "threads_per_node": 3},
                       "workload": {"kind": "lock", "lock": "ticket", "seconds": 0.02, "repeats": 2, "ops": 5}})
        labels: list = []
        r = run_one(s, {}, next(_bases), labels.append)
        assert len(labels) == steps_of(s) == 6 and labels[-1] == "FIFO probe 2"
        assert figures(r)["fifo"]["handovers"] == 4


# ---- barriers ------------------------------------------------------------------------------

@pytest.mark.multinode
@pytest.mark.timeout(180)
class TestBarriers:
    def test_every_kind_ran_every_episode(self, barriers):
        """Every barrier kind ran on 1 and 3 nodes, every party passing every episode (checked)."""
        _s, runs = barriers
        assert [(r.sync["algorithm"], r.values["cluster.nodes"]) for r in runs] == \
            [(k, n) for k in BARRIER_KINDS for n in (1, 3)]
        for r in runs:
            f = figures(r)
            assert f["episodes"] == 5 and f["parties"] == 2 * r.values["cluster.nodes"]
            assert f["us_per_episode"] > 0 and window_pages(r.values) == f["space_pages"]
            assert all(t.ops == 5 for t in r.threads) and len(r.threads) == f["parties"]

    def test_figures_are_sane(self, barriers):
        """One node sends no message; RMWs per episode follow the algorithm; rounds are computed."""
        _s, runs = barriers
        for r in runs:
            f = figures(r)
            pe, p = f["per_episode"], f["parties"]
            if r.values["cluster.nodes"] == 1:
                assert pe["messages"] == 0
            elif f["algorithm"] != "server":
                assert pe["faults"] > 0
            if f["algorithm"] == "counter":
                assert pe["rmws"] == p
            elif f["algorithm"] in ("mcs", "tournament", "dissemination", "server"):
                assert pe["rmws"] == 0
            assert f["rounds"] == barrier_rounds(f["algorithm"], p)

    def test_table_json_and_plot(self, barriers, tmp_path):
        """The barrier table has every column and the winners; its JSON validates; --plot is a PNG."""
        s, runs = barriers
        text = render_table(s, runs)
        assert all(c.head in text.splitlines()[1] for c in BARRIER_COLUMNS)
        assert "winner per column" in text and "µs/episode" in text.split("winner per column")[1]
        doc = json.loads(json.dumps(to_json(s, runs)))
        jsonschema.validate(doc, load_schema())
        assert {w["column"] for w in doc["winners"]} == {c.head for c in BARRIER_COLUMNS if c.better}
        assert winners(runs)[0]["kind"] == "barrier"
        plot(s, runs, tmp_path / "barriers.png")
        assert (tmp_path / "barriers.png").read_bytes().startswith(PNG_SIGNATURE)


# ---- the command ---------------------------------------------------------------------------

@pytest.mark.multinode
@pytest.mark.timeout(180)
def test_cli_runs_locks_with_padding_compared(tmp_path):
    """`tornado-dsm run locks` with padding varied prints both rows and the winners, writes JSON and a PNG."""
    script = Path(sys.executable).with_name("tornado-dsm")
    out, png = tmp_path / "l.json", tmp_path / "l.png"
    r = subprocess.run([str(script) if script.is_file() else "tornado-dsm", "run", "locks",
                        "--set", "lock=anderson", "--set", "nodes=2", "--set", "seconds=0.05",
                        "--set", "repeats=1", "--set", "ops=20", "--no-progress",
                        "--json", str(out), "--plot", str(png)],
                       capture_output=True, text=True, timeout=170, cwd="/")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines() if line.split()[:1] == ["page"]
            or line.split()[:1] == ["word"]]
    assert [row[0] for row in rows] == ["page", "word"] and "winner per column" in r.stdout
    runs = json.loads(out.read_text())["runs"]
    assert [x["sync"]["space_pages"] for x in runs] == [6, 1]   # 2 + 4 flags on pages of their own, or one page
    assert png.read_bytes().startswith(PNG_SIGNATURE)
