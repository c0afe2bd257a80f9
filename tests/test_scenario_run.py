"""Every shipped scenario runs (reduced), with the figures each workload promises."""

from __future__ import annotations

import itertools
from pathlib import Path

import jsonschema
import pytest

from tornado_dsm._report import load_schema, to_json
from tornado_dsm._scenario_config import load
from tornado_dsm._scenario_run import run_scenario

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(240)]

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
# Scenario runs make several clusters each: give them their own part of the address
# space, away from helpers.fresh_base()'s slots.
_bases = itertools.count(0x300000000000, 1 << 40)

# name -> --set overrides that make a shipped scenario small
REDUCED = {
    "quickstart": ["pages=8", "repeats=1"],
    "tornado-infault": ["pages=8", "repeats=1"],
    "infault-multiprogrammed": ["pages=8", "repeats=1"],
    "ivy-managers": ["pages=8", "repeats=1"],
    "migrate-vs-ivy": ["pages=1", "ops=5", "repeats=1"],
    "false-sharing": ["ops=2000", "repeats=1"],
    "jacobi": ["pages=8", "repeats=2"],
    "matmul": ["n=32", "block=16", "repeats=1"],
    "producer-consumer": ["pages=8", "repeats=1"],
    # one kind on 2 nodes (tests/test_scenario_sync.py runs every kind)
    "locks": ["lock=mcs", "padding=page", "nodes=2", "seconds=0.05", "repeats=1", "ops=20"],
    "barriers": ["barrier=tree", "nodes=2", "ops=5", "repeats=1"],
    "adaptive": ["nodes=2", "pages=8", "seconds=0.3"],
}


def run(name: str, sets=(), varies=()):
    """(scenario, runs) of a shipped scenario with its reductions and ``sets``."""
    s = load(SCENARIOS / f"{name}.toml", REDUCED[name] + list(sets), varies)
    return s, run_scenario(s, base=next(_bases), progress=False)


def test_every_shipped_scenario_has_a_reduction():
    """Each shipped scenario is listed in REDUCED (so it is run below)."""
    assert {p.stem for p in SCENARIOS.glob("*.toml")} == set(REDUCED)


@pytest.mark.parametrize("name", sorted(set(REDUCED) - {"tornado-infault"}))
def test_shipped_scenario_runs(name):
    """A reduced shipped scenario runs every combination, faults, and its JSON validates."""
    s, runs = run(name, varies=["nodes=1,2"] if name == "infault-multiprogrammed" else ())
    assert len(runs) == len(s.combinations())
    assert all(r.faults() > 0 and r.wall_seconds > 0 for r in runs)
    jsonschema.validate(to_json(s, runs), load_schema())


def test_infault_measured_faults_are_incore():
    """In the in-core test every measured fault is served from the node's FCM: no coherence."""
    _s, runs = run("quickstart")
    for r in runs:
        assert r.total.coherence_faults == 0
        assert r.faults() == r.total.incore_faults == 8 * r.values["cluster.nodes"]
        assert r.ppc_calls("fcm", "remote") == 0


def test_acceptance_replicated_vs_singleton():
    """nodes=2: replicated Process/Region make no remote PPC per fault, singletons >= 1 per
    fault on the non-home node, and replicated serve more faults per second (same run)."""
    _s, runs = run("tornado-infault", sets=["nodes=2", "pages=32"])
    replicated, singleton = runs
    assert replicated.params["policies.process"] == "per_node"
    for obj in ("process", "region"):
        assert replicated.ppc_calls(obj, "remote") == 0
        assert singleton.ppc_per_fault_off_home(obj) >= 1
    assert replicated.faults_per_second() / singleton.faults_per_second() > 1


def test_ivy_managers_count_messages():
    """Every manager needs messages for shared pages; only centralized/fixed use a directory."""
    _s, runs = run("ivy-managers")
    by = {r.values["cluster.manager"]: r for r in runs}
    assert all(sum(p.calls for p in r.ppc if p.kind == "remote") > 0 for r in runs)
    assert by["dynamic"].ppc_calls("dir", "remote") + by["dynamic"].ppc_calls("dir", "local") == 0
    assert by["centralized"].ppc_calls("dir") > 0


def test_prefetch_key_runs_the_scenario():
    """jacobi with region.prefetch = 3 still checks its grid, and a prefetched page is installed somewhere."""
    _s, runs = run("jacobi", ["cluster.manager=dynamic", "region.prefetch=3"])
    assert runs and all(r.total.faults > 0 for r in runs)
    assert any(r.total.prefetched > 0 for r in runs if r.values["cluster.nodes"] > 1)
