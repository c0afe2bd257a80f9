"""Fault injection: the relay, the chaos plan and driver, and a full chaos run
(every fault kind under every protocol and manager) that must pass."""

from __future__ import annotations

import contextlib
import json
import time

import numpy as np
import pytest

from tornado_dsm import _chaos
from tornado_dsm._cli import main
from tornado_dsm._relay import Relay

import failprogs
from helpers import new_cluster, process_gone


@contextlib.contextmanager
def relayed_cluster():
    """A 3-node cluster whose nodes 1 and 2 are reached through relays: yields (cluster, relays)."""
    relays: dict = {}

    def route(node, address):
        if node == 0:
            return address
        relays[node] = relay = Relay(address)
        return relay.address

    try:
        with new_cluster(3, route=route, timeout=20) as c:
            yield c, relays
    finally:
        for r in relays.values():
            r.close()


def _until(predicate, seconds: float = 10) -> bool:
    """Poll ``predicate`` until true or ``seconds`` pass; its last value."""
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestRelay:
    def test_carries_and_counts(self):
        """Every byte into a relayed node crosses its relay; results are unchanged."""
        with relayed_cluster() as (c, relays):
            a = c.zeros((512,), np.int64)
            assert c.run(failprogs.fill, a, 4) == [4, 4, 4]
            assert all(r.statistics().bytes_forwarded > 0 for r in relays.values())

    def test_delay_slows_but_loses_nothing(self):
        """A delayed link makes calls slower, never wrong."""
        with relayed_cluster() as (c, relays):
            a = c.zeros((512,), np.int64)
            c.run(failprogs.fill, a, 1, on=1)
            relays[2].set_delay(0.05)
            start = time.monotonic()
            assert c.run(failprogs.total, a, on=2) == [512]
            assert time.monotonic() - start >= 0.1

    def test_drop_loses_the_node_cleanly(self):
        """A dropped link is a lost node: named, left out of 'all', its process gone."""
        with relayed_cluster() as (c, relays):
            pids = c.run(failprogs.pid)
            relays[2].drop()
            assert _until(lambda: 2 in c.lost_nodes())
            assert list(c.lost_nodes()) == [2] and len(c.run(failprogs.pid)) == 2
            assert _until(lambda: process_gone(pids[2]))


class TestPlan:
    def test_every_combination(self):
        """The plan covers every kind under every protocol and manager, with distinct seeds."""
        specs = _chaos.plan(seed=1, repeat=2)
        combos = {(s["kind"], s["protocol"], s["manager"]) for s in specs}
        assert len(specs) == 2 * len(combos) == 2 * 6 * 2 * 3
        assert len({s["seed"] for s in specs}) == len(specs)

    @pytest.mark.parametrize(("kinds", "repeat"), [(("melt",), 1), ((), 1), (("kill",), 0)])
    def test_bad_arguments(self, kinds, repeat):
        """Unknown kinds, no kinds or a non-positive repeat are refused, naming what is accepted."""
        with pytest.raises(ValueError, match="accepted: kill|repeat must be"):
            _chaos.plan(kinds=kinds, repeat=repeat)


class TestTotals:
    def test_failures_fail_the_run(self):
        """Any hang or unclear end makes the run fail; clean results pass."""
        spec = {"kind": "kill", "protocol": "ivy", "manager": "dynamic", "seed": 0}
        clean = {"spec": spec, "hang": False, "faults": 1, "calls": 3}
        assert _chaos.totals([clean], 1.0).passed
        assert not _chaos.totals([clean, {"spec": spec, "hang": True}], 1.0).passed
        assert not _chaos.totals([dict(clean, unclear=["run: KeyError"])], 1.0).passed
        assert not _chaos.totals([dict(clean, lost_writes=1)], 1.0).passed


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestRunTrial:
    def test_hang_is_detected_and_reaped(self):
        """A trial that outlives its limit is a hang, and its node processes are killed."""
        spec = {"kind": "stop", "protocol": "ivy", "manager": "dynamic", "seed": 0}
        start = time.monotonic()
        result = _chaos.run_trial(spec, limit=2.0)
        assert result["hang"] and time.monotonic() - start < 10


@pytest.mark.multinode
@pytest.mark.timeout(400)
class TestChaos:
    def test_full_run_passes(self, tmp_path):
        """Every kind x protocol x manager: no hang, no late or unclear call, no lost write, no residue."""
        out = tmp_path / "chaos.json"
        assert main(["chaos", "--jobs", "2", "--no-progress", "--json", str(out)]) == 0
        data = json.loads(out.read_text())
        t = data["totals"]
        assert t["trials"] == t["faults"] == 36 and t["hangs"] == t["lost_writes"] == 0
        assert t["faults_during_call"] >= 30 and not t["failures"]


class TestCommand:
    @pytest.mark.parametrize("argv", [["--kinds", "melt"], ["--jobs", "0"], ["--repeat", "0"],
                                      ["--json", "/no/such/dir/x.json"]])
    def test_bad_arguments(self, argv, capsys):
        """Bad arguments exit 2 with one line naming the problem."""
        assert main(["chaos", *argv]) == 2
        assert capsys.readouterr().err.startswith("tornado-dsm chaos: ")
