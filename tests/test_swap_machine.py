"""A hypothesis state machine on 3 nodes: hot swaps and migrations of the Process, the
Regions, the PageDirectories and a Tally, interleaved with faults from several nodes
and threads (some while a swap runs), attach/detach of arrays and destroys, checked
against a sequential model: no lost write, no refused fault that should have succeeded,
every PPC counted once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import clusterprogs as progs
import swapprogs as sp
from helpers import new_cluster
from tornado_dsm.kernel import current_cos

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(240)]

NODES, THREADS, WORDS = 3, 2, sp.PAGES * 512  # churn_while's pages
# what each part of an array (and the Process) may be swapped to
POLICIES = {"region": ("singleton", "per_node", "group:2"), "directory": ("singleton", "partitioned"),
            "process": ("singleton", "per_node"), "tally": ("singleton", "per_node")}


@pytest.fixture(scope="module")
def cluster():
    """One 3-node, 2-thread cluster (centralized manager: every array has a directory) for
    every example of the machine."""
    with new_cluster(NODES, threads_per_node=THREADS, manager="centralized",
                     policies={"process": "per_node", "region": "per_node"}) as c:
        yield c


# ---- run on a node --------------------------------------------------------------------------

def ping(oid: int) -> int:
    """One ``ping`` PPC on the Tally from this node: the node its rep is on."""
    return current_cos().call(oid, "ping")


# ---- the model --------------------------------------------------------------------------------

class Placement:
    """Where one clustered object is and how it is replicated (the model's view)."""

    def __init__(self, oid: int, policy: str, home: int = 0) -> None:
        self.oid, self.policy, self.home = oid, policy, home

    def refuses_move(self, node: int) -> bool:
        """Whether a migration to ``node`` must be refused (only a singleton moves, elsewhere)."""
        return self.policy != "singleton" or node == self.home


def swap_machine(c):
    """The machine class, bound to the module's cluster ``c``."""

    class SwapMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.arrays: list = []  # [array, model words, {part: Placement}]
            self.attach()
            self.process = _placement(c, int(c.vm.process))
            self.tally = Placement(current_cos().create(sp.Tally, policy="singleton").oid, "singleton")
            self.pings = {"local": 0, "remote": 0}
            self.bumps = 0
            self.stop = c.zeros((512,), np.int64)

        # -- arrays: attach (allocate), detach and destroy (free) --------------------------------

        @precondition(lambda self: len(self.arrays) < 3)
        @rule()
        def attach(self):
            """A new array: its Region, FCM, directory and COR attach to the Process."""
            a = c.zeros((WORDS,), np.int64)
            alloc = c._arrays.allocation(a)[0]
            parts = {"region": Placement(alloc.region, "per_node"),
                     "directory": Placement(alloc.directory, "singleton")}
            self.arrays.append([a, np.zeros(WORDS, dtype=np.int64), parts])

        @precondition(lambda self: len(self.arrays) > 1)
        @rule(k=st.integers(0, 2))
        def detach(self, k):
            """Free an array (its objects detach and are destroyed) after checking its words."""
            a, model, _parts = self.arrays.pop(k % len(self.arrays))
            assert np.array_equal(np.asarray(a), model)
            c.free(a)

        # -- faults ---------------------------------------------------------------------------

        @rule(k=st.integers(0, 2), node=st.integers(0, NODES - 1), thread=st.integers(0, THREADS - 1),
              i=st.integers(0, WORDS - 1), value=st.integers(-(2**63), 2**63 - 1))
        def write(self, k, node, thread, i, value):
            """One write from a node's thread; it must succeed."""
            a, model, _ = self.arrays[k % len(self.arrays)]
            c.run(progs.write_word, a, i, value, thread, on=node, threads=THREADS)
            model[i] = value

        @rule(k=st.integers(0, 2), node=st.integers(0, NODES - 1), thread=st.integers(0, THREADS - 1),
              i=st.integers(0, WORDS - 1))
        def read(self, k, node, thread, i):
            """One read from a node's thread sees the last write."""
            a, model, _ = self.arrays[k % len(self.arrays)]
            assert c.run(progs.read_word, a, i, thread, on=node, threads=THREADS)[thread] == model[i]

        @rule(node=st.integers(0, NODES - 1))
        def ping(self, node):
            """One PPC on the Tally runs where its policy says and is counted once."""
            t = self.tally
            assert c.run(ping, t.oid, on=[node], threads=1) == [t.home if t.policy == "singleton" else node]
            self.pings["local" if t.policy != "singleton" or node == t.home else "remote"] += 1

        # -- swaps and migrations ----------------------------------------------------------------

        @rule(k=st.integers(0, 2), part=st.sampled_from(sorted(POLICIES)), i=st.integers(0, 2),
              busy=st.booleans())
        def set_policy(self, k, part, i, busy):
            """Swap an object's policy (while every node faults and bumps, if ``busy``)."""
            target, placement = self._target(k, part)
            policy = POLICIES[part][i % len(POLICIES[part])]
            record = self._maybe_busy(busy, k, lambda: c.set_policy(target, policy, part=_part(part)))
            assert (record["from"], record["to"]) == (placement.policy, policy)
            placement.policy = policy

        @rule(k=st.integers(0, 2), part=st.sampled_from(sorted(POLICIES)), node=st.integers(0, NODES - 1),
              busy=st.booleans())
        def migrate(self, k, part, node, busy):
            """Move an object's home (refused unless a singleton homed elsewhere)."""
            target, placement = self._target(k, part)
            if placement.refuses_move(node):
                with pytest.raises(ValueError, match="only a singleton migrates|already homed"):
                    c.migrate(target, node, part=_part(part))
                return
            record = self._maybe_busy(busy, k, lambda: c.migrate(target, node, part=_part(part)))
            assert (record["from_home"], record["to_home"]) == (placement.home, node)
            placement.home = node

        def _target(self, k, part):
            """(what set_policy names, its Placement) for ``part`` of array k, the Process or the Tally."""
            if part == "process":
                return "process", self.process
            if part == "tally":
                return self.tally.oid, self.tally
            a, _model, parts = self.arrays[k % len(self.arrays)]
            return a, parts[part]

        def _maybe_busy(self, busy, k, work):
            """``work()``, while every node churns array k and node 1 bumps the Tally if ``busy``."""
            if not busy:
                return work()
            a, model, _ = self.arrays[k % len(self.arrays)]
            self.stop[0] = 0
            record = []
            bumper = threading.Thread(target=c.run, args=(sp.bump, self.tally.oid, 20),
                                      kwargs={"on": [1], "threads": 1})
            bumper.start()
            counts = sp.churn_while(c, a, self.stop, lambda: (time.sleep(0.02), record.append(work())))
            bumper.join(60)
            self.bumps += 20
            assert sp.expected_words(a, counts)  # no write lost in the churn
            model[:] = np.asarray(a)  # the churn's writes (checked just above) are the model's now
            return record[0]

        # -- what the model predicts ------------------------------------------------------------

        @invariant()
        def placements_match(self):
            """Every live object has the policy and home the model says."""
            view = c.inspect()
            objects = [self.process, self.tally] + [p for _a, _m, parts in self.arrays for p in parts.values()]
            for p in objects:
                assert (view[p.oid].policy, view[p.oid].home) == (p.policy, p.home), p.oid

        @invariant()
        def every_call_counted_once(self):
            """The Tally's count is every bump; its pings' PPCs are counted once, local or remote."""
            stats = c.ppc_statistics()
            calls = {kind: sum(x.calls for s in stats for x in s.counters
                               if (x.oid, x.method, x.kind) == (self.tally.oid, "ping", kind))
                     for kind in ("local", "remote")}
            assert calls == self.pings
            assert sp.total(c, self.tally.oid) == self.bumps

        def teardown(self):
            for a, model, _parts in self.arrays:
                assert c.run(progs.read_words, a, list(range(0, WORDS, 97)), on=[2], threads=1) == \
                    [[int(model[w]) for w in range(0, WORDS, 97)]]
                c.free(a)
            c.free(self.stop)
            current_cos().destroy(self.tally.oid)

    return SwapMachine


def _part(part: str) -> str:
    """set_policy's ``part`` for a machine part (the Process and the Tally have none)."""
    return part if part in ("region", "directory") else "region"


def _placement(c, oid: int) -> Placement:
    """The object's current policy and home (the Process keeps them across examples)."""
    view = c.inspect()[oid]
    return Placement(oid, view.policy, view.home)


class TestSwapMachine:
    def test_matches_the_sequential_model(self, cluster):
        """Any interleaving of swaps, migrations, faults, attach/detach and destroy matches the model."""
        machine = swap_machine(cluster)
        machine.TestCase.settings = settings(
            max_examples=10, stateful_step_count=20, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        machine.TestCase().runTest()
