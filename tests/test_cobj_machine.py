"""A hypothesis state machine: create, call and destroy clustered objects of every policy
from random nodes and threads, checked against a model (values, reps, stubs, and the exact
counts of misses, local and remote PPCs)."""

from __future__ import annotations

import threading

import attrs
import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tornado_dsm.kernel import current_cos
from tornado_dsm.kernel.cobj._policy import parse_policy
from tornado_dsm.objects import counter_class

from helpers import NNODES, attempt
from strategies import cobj_policies

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(150)]


# ---- helpers run on nodes ---------------------------------------------------------------

def create(policy, home):
    """Create the counter variant for ``policy`` homed on ``home``; return its oid."""
    return current_cos().create(counter_class(policy), policy=policy, home=home).oid


def call(oid, method, args, threaded):
    """Call on this node (in a fresh thread if ``threaded``); ("ok", result) or (error type, message)."""
    out = []

    def run():
        out.append(attempt(current_cos().call, oid, method, *args))
    if threaded:
        t = threading.Thread(target=run)
        t.start()
        t.join(60)
    else:
        run()
    return out[0] if out else ("hung", "")


# ---- the model -------------------------------------------------------------------------

@attrs.define
class Model:
    """What the COS must report for one object."""

    oid: int
    policy: str
    home: int
    total: int = 0
    keys: dict = attrs.Factory(dict)
    entries: set = attrs.Factory(set)
    reps: set = attrs.Factory(set)
    stubs: set = attrs.Factory(set)
    local: int = 0
    remote: int = 0
    destroyed: bool = False

    def miss(self, node: int) -> int:
        """The node's entry (installing it at its first call); returns where its calls run."""
        kind, target = parse_policy(self.policy, NNODES).decide(node, self.home, NNODES)
        if node not in self.entries:
            self.entries.add(node)
            (self.reps if kind == "rep" else self.stubs).add(node)
        return target

    def ppc(self, src: int, dst: int) -> None:
        """One call from src to dst (local or remote); dst gets its rep at its first call."""
        if src == dst:
            self.local += 1
        else:
            self.remote += 1
            self.miss(dst)

    def gather(self, at: int) -> None:
        """A rep on ``at`` asks the root for the total: forward to the root, root gathers every rep.

        Neither the forward nor the gather misses: the root needs no entry on
        its home, and it only calls nodes already holding a rep."""
        for src, dst in [(at, self.home)] + [(self.home, rep) for rep in sorted(self.reps)]:
            self.local += src == dst
            self.remote += src != dst


class CosMachine(RuleBasedStateMachine):
    """Random creates, calls and destroys against the model."""

    objects = Bundle("objects")

    def __init__(self):
        super().__init__()
        self.models: list[Model] = []

    @rule(target=objects, policy=cobj_policies(NNODES), home=st.integers(0, NNODES - 1),
          node=st.integers(0, NNODES - 1))
    def create(self, policy, home, node):
        """Create a counter from ``node`` homed on ``home``."""
        model = Model(NODES.run_on(node, create, policy, home), policy, home)
        self.models.append(model)
        return model

    @rule(model=objects, node=st.integers(0, NNODES - 1), n=st.integers(1, 5),
          key=st.integers(0, 7), threaded=st.booleans())
    def inc(self, model, node, n, key, threaded):
        """Increment from ``node``; a destroyed object raises ObjectDestroyed."""
        args = [key, n] if model.policy == "partitioned" else [n]
        kind, result = NODES.run_on(node, call, model.oid, "inc", args, threaded)
        if model.destroyed:
            assert kind == "ObjectDestroyed", result
            return
        assert kind == "ok", result
        self._count_keyed(model, node, key) if model.policy == "partitioned" else model.ppc(node, model.miss(node))
        model.total += n
        model.keys[key] = model.keys.get(key, 0) + n
        if model.policy == "singleton":
            assert result == model.total
        elif model.policy == "partitioned":
            assert result == model.keys[key]

    def _count_keyed(self, model, node, key):
        model.miss(node)
        model.ppc(node, key % NNODES)

    @rule(model=objects, node=st.integers(0, NNODES - 1), threaded=st.booleans())
    def value(self, model, node, threaded):
        """Read the total from ``node``."""
        kind, result = NODES.run_on(node, call, model.oid, "value", [], threaded)
        if model.destroyed:
            assert kind == "ObjectDestroyed", result
            return
        assert (kind, result) == ("ok", model.total)
        target = model.miss(node)
        model.ppc(node, target)
        if model.policy != "singleton":
            model.gather(target)

    @rule(model=objects, node=st.integers(0, NNODES - 1))
    def destroy(self, model, node):
        """Destroy from ``node`` (a second destroy raises ObjectDestroyed)."""
        kind, _ = NODES.run_on(node, attempt_destroy, model.oid)
        assert kind == ("ObjectDestroyed" if model.destroyed else "ok")
        model.destroyed = True

    @invariant()
    def view_matches_model(self):
        """The replication view of every object equals the model, counts exactly."""
        view = current_cos().inspect()
        for m in self.models:
            if m.destroyed:
                assert m.oid not in view
                continue
            v = view[m.oid]
            got = (v.policy, v.home, set(v.rep_nodes), set(v.stub_nodes), v.misses, v.calls_local, v.calls_remote)
            assert got == (m.policy, m.home, m.reps, m.stubs, len(m.entries), m.local, m.remote), (m, v)

    @invariant()
    def transport_counts_match_model(self):
        """The PPC counters of every node (the transport's, not the COS's) agree with the model."""
        stats = NODES.ppc_statistics()
        for m in self.models:
            if not m.destroyed:
                remote = sum(s.calls(kind="remote", oid=m.oid) for s in stats)
                local = sum(s.calls(kind="local", oid=m.oid) for s in stats)
                assert (local, remote) == (m.local, m.remote), m

    def teardown(self):
        for m in self.models:
            if not m.destroyed:
                current_cos().destroy(m.oid)


def attempt_destroy(oid):
    """Destroy from this node; ("ok", None) or (error type, message)."""
    return attempt(current_cos().destroy, oid)


NODES = None


class TestCosMachine:
    def test_matches_model(self, three_nodes):
        """Every sequence of creates, calls and destroys matches the model exactly."""
        global NODES
        NODES = three_nodes
        run_state_machine_as_test(CosMachine, settings=settings(
            max_examples=12, stateful_step_count=15, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))
