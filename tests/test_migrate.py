"""Object migration (kernel/cobj/_migrate.py): a singleton's root and rep move home while calls run."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings

import clusterprogs as progs
import failprogs
import strategies
import swapprogs as sp
import tornado_dsm as td
from helpers import new_cluster
from tornado_dsm.kernel import current_cos

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(240)]

SINGLETONS = {"process": "singleton", "region": "singleton"}


def _home(c, oid) -> int:
    return c.inspect()[oid].home


def _oid(c, target) -> int:
    from tornado_dsm import _swap_api
    return _swap_api.object_of(c, target, "region")


class TestMigrateUnderFaults:
    def test_process_and_region_migrations_lose_no_write(self):
        """Moving the Process and a singleton Region between homes while every node faults
        loses no write and refuses no fault; each move is in the object's history."""
        with new_cluster(3, policies=SINGLETONS) as c:
            a = c.zeros((sp.PAGES * 512,), np.int64)
            stop = c.zeros((512,), np.int64)
            records = []

            def moves():
                for target, node in ((a, 1), ("process", 2), (a, 2), ("process", 0), (a, 0)):
                    records.append(c.migrate(target, node))

            counts = sp.churn_while(c, a, stop, moves)
            assert sp.expected_words(a, [counts[n] for n in range(3)])
            assert [(r["from_home"], r["to_home"]) for r in records] == [(0, 1), (0, 2), (1, 2), (2, 0), (2, 0)]
            assert [h["to_home"] for h in c.swap_history(a)] == [1, 2, 0]
            assert [h["to_home"] for h in c.swap_history("process")] == [2, 0]
            assert _home(c, _oid(c, a)) == 0 and _home(c, _oid(c, "process")) == 0

    def test_migrate_swap_migrate_back(self):
        """A Region moved away, swapped to per_node and back, then moved home keeps every write."""
        with new_cluster(3, policies=SINGLETONS) as c:
            a = c.zeros((sp.PAGES * 512,), np.int64)
            stop = c.zeros((512,), np.int64)

            def moves():
                c.migrate(a, 2)
                c.set_policy(a, "per_node")
                c.set_policy(a, "singleton")
                c.migrate(a, 0)

            counts = sp.churn_while(c, a, stop, moves)
            assert sp.expected_words(a, [counts[n] for n in range(3)])
            history = [(h["reason"], h["to"], h["from_home"], h["to_home"]) for h in c.swap_history(a)]
            assert history == [("migrate", "singleton", 0, 2), ("set_policy", "per_node", 2, 2),
                               ("set_policy", "singleton", 2, 2), ("migrate", "singleton", 2, 0)]
            view = c.inspect()[_oid(c, a)]
            assert view.home == 0 and view.policy == "singleton"

    def test_directory_migrations_and_swaps_lose_no_write(self):
        """The centralized PageDirectory moved between homes, swapped to fixed and back while
        every node writes shared and distinct pages keeps every write and every owner."""
        with new_cluster(3, manager="centralized") as c:
            a = c.zeros(((sp.PAGES + 3) * 512,), np.int64)
            stop = c.zeros((512,), np.int64)

            def moves():
                for step in ((c.migrate, 2), (c.set_policy, "fixed"), (c.set_policy, "centralized"),
                             (c.migrate, 1), (c.migrate, 0)):
                    time.sleep(0.05)  # faults run at each home, not only during the moves
                    step[0](a, step[1], part="directory")

            counts = sp.churn_mixed_while(c, a, stop, moves)
            assert sp.expected_words(a, counts) and sp.expected_private(a, counts)
            history = [(h["to"], h["to_home"]) for h in c.swap_history(a, part="directory")]
            assert history == [("singleton", 2), ("partitioned", 2), ("singleton", 2),
                               ("singleton", 1), ("singleton", 0)]
            assert c.run(progs.sum_pages, a, on=[1, 2], threads=1) == [progs.sum_pages(a)] * 2

    def test_new_arrays_after_the_process_moved(self):
        """After the Process moved, arrays are allocated, used on every node and freed as before."""
        with new_cluster(3, policies=SINGLETONS) as c:
            c.migrate("process", 1)
            for i in range(3):
                b = c.zeros((2 * 512,), np.int64)
                c.run(progs.write_pages, b, i + 1, on=[2], threads=1)
                assert c.run(progs.sum_pages, b, threads=1) == [2 * (i + 1)] * 3
                c.free(b)
            assert _home(c, _oid(c, "process")) == 1


class TestMigrateReferences:
    def test_references_taken_before_the_move_work_after_it(self):
        """References (typed and untyped) taken on every node before a move reach the object after
        it, and the count the object holds moves with it: no bump is lost."""
        with new_cluster(3) as c:
            oid = current_cos().create(sp.Tally, policy="singleton").oid
            assert c.run(sp.take_refs, oid, threads=1) == [0, 0, 0]
            record = c.migrate(oid, 2)
            assert record["from_home"] == 0 and record["to_home"] == 2
            assert c.run(sp.bump_saved, oid, threads=1) == [2, 2, 2]
            assert sp.total(c, oid) == 12 and _home(c, oid) == 2
            c.migrate(oid, 1)
            assert c.run(sp.bump_saved, oid, threads=1) == [1, 1, 1]
            assert sp.total(c, oid) == 18

    def test_old_home_forwards_requests_that_raced_the_move(self):
        """A miss or a root call that reaches the old home after the move is forwarded to the
        new one (answered from there), not refused; the home maps send later ones straight there."""
        with new_cluster(3) as c:
            cos = current_cos()
            oid = cos.create(sp.Tally, policy="singleton", home=1).oid
            c.run(sp.bump, oid, on=[0], threads=1)
            c.migrate(oid, 2)
            assert cos.home_of_object(oid) == 2 and td.kernel.home_of(oid) == 1
            info = cos._remote(1, "miss", [oid, 0])  # as a miss sent before node 0's commit
            assert (info["kind"], info["target"], info["home"]) == ("stub", 2, 2)
            c.run(sp.bump, oid, on=[0], threads=1)
            assert cos.runtime.call(1, oid, "root.rep_nodes", []) == [2]
            assert c.vm.rep_nodes(oid) == (2,)  # objects/_vm.py names home_of(oid): node 1

    def test_destroy_after_a_move(self):
        """An object destroyed after a move is destroyed on every node (calls then raise ObjectDestroyed)."""
        with new_cluster(3) as c:
            ref = current_cos().create(sp.Tally, policy="singleton")
            c.run(sp.bump, ref.oid, threads=1)
            c.migrate(ref.oid, 1)
            ref.destroy()
            outcomes = c.run(_try_bump, ref.oid, threads=1)
            assert [o[0] for o in outcomes] == ["ObjectDestroyed"] * 3


def _try_bump(oid):
    """("ok", node) or the error's type name of one bump here."""
    from helpers import attempt
    return attempt(current_cos().call, oid, "bump")


class TestMigrateErrors:
    @pytest.mark.parametrize("node, match", [
        (3, "node id from 0 to 2, not 3"), (-1, "node id from 0 to 2, not -1"),
        (True, "node id from 0 to 2, not True"), ("1", "node id from 0 to 2, not '1'"),
        (0, "already homed on node 0; accepted: another live node"),
    ])
    def test_bad_node(self, node, match):
        """A new home out of range, not an int, or the object's own home is a ValueError naming it."""
        with new_cluster(3) as c:
            oid = current_cos().create(sp.Tally, policy="singleton").oid
            with pytest.raises(ValueError, match=match):
                c.migrate(oid, node)
            assert c.run(sp.bump, oid, threads=1) == [0, 0, 0] and c.swap_history(oid) == []

    def test_not_a_singleton(self):
        """A replicated object is refused, naming its policy and the accepted one."""
        with new_cluster(2, policies={"region": "per_node"}) as c:
            a = c.zeros((512,), np.int64)
            with pytest.raises(ValueError, match="has policy per_node; only a singleton migrates"):
                c.migrate(a, 1)

    def test_object_that_cannot_migrate(self):
        """A root without MIGRATE is refused with a ValueError saying what it lacks."""
        with new_cluster(2) as c:
            oid = current_cos().create(sp.Rooted, policy="singleton").oid
            with pytest.raises(ValueError, match="cannot migrate.*MIGRATE = True"):
                c.migrate(oid, 1)
            assert c.run(sp.bump, oid, threads=1) == [0, 0]

    def test_fixed_directory_cannot_migrate(self):
        """The fixed manager's PageDirectory (partitioned) is refused, naming its policy; the array works."""
        with new_cluster(2, manager="fixed") as c:
            a = c.zeros((512,), np.int64)
            with pytest.raises(ValueError, match="has policy partitioned; only a singleton migrates"):
                c.migrate(a, 1, part="directory")
            a[0] = 4
            assert c.run(progs.sum_pages, a, on=[1], threads=1) == [4]

    def test_lost_node(self):
        """A lost node as the new home is refused, naming it and the live nodes accepted."""
        with new_cluster(3) as c:
            oid = current_cos().create(sp.Tally, policy="singleton").oid
            with pytest.raises(td.NodeLost):
                c.run(failprogs.crash_outside_window, on=2)
            with pytest.raises(ValueError, match=r"node 2 is lost .*accepted: a live node \(0, 1\)"):
                c.migrate(oid, 2)
            assert c.run(sp.bump, oid, on=[1], threads=1) == [0]

    def test_bad_target(self):
        """A target that names no object is refused naming migrate and what it takes."""
        with new_cluster(2) as c:
            with pytest.raises(ValueError, match="migrate: the only object named by a string"):
                c.migrate("region", 1)
            with pytest.raises(TypeError, match="migrate takes a shared array"):
                c.migrate(1.5, 1)


class TestMigrateWithLostNode:
    @pytest.mark.parametrize("lost, target", [(2, 1), (1, 1)], ids=["bystander", "new-home"])
    def test_node_lost_during_the_drain(self, lost, target):
        """A node killed while the migration waits for a call in flight fails it with SwapFailed
        naming the node; the object stays usable at its old home with its state."""
        with new_cluster(3) as c:
            oid = current_cos().create(sp.Tally, policy="singleton").oid
            c.run(sp.bump, oid, threads=1)
            held = sp.start_hold(oid)
            out: list = []
            mover = threading.Thread(target=lambda: out.append(_attempt(c.migrate, oid, target)))
            mover.start()
            try:
                sp.await_mediators(c, oid, [0, 1, 2])
                pid = c.run(failprogs.pid, on=[lost], threads=1)[0]
                os.kill(pid, signal.SIGKILL)
                _await_lost(c, lost)
            finally:
                sp.release_hold(held)
                mover.join(120)
            assert isinstance(out[0], td.SwapFailed), out
            assert f"node {lost}" in str(out[0]) and "stays on node 0" in str(out[0])
            live = [n for n in range(3) if n != lost]
            assert c.run(sp.bump, oid, on=live, threads=1) == [0, 0]
            assert _home(c, oid) == 0 and c.swap_history(oid) == []
            assert sp.total(c, oid) == 5


def _attempt(fn, *args):
    """fn's result, or the exception it raised."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 -- checked by the caller
        return exc


def _await_lost(c, node: int, within: float = 30) -> None:
    """Poll until node 0 has noticed the loss of ``node``."""
    deadline = time.monotonic() + within
    while node not in c.lost_nodes():
        assert time.monotonic() < deadline, f"node {node} was not noticed lost"
        time.sleep(0.02)


class TestMigrateCountsEachCallOnce:
    def test_redirected_call_is_one_ppc(self):
        """A call that waited in a mediator during a move is one remote PPC in ppc_statistics, not two."""
        with new_cluster(3) as c:
            oid = current_cos().create(sp.Tally, policy="singleton").oid
            c.run(sp.bump, oid, on=[1], threads=1)
            held = sp.start_hold(oid)
            mover = threading.Thread(target=lambda: c.migrate(oid, 2))
            mover.start()
            try:
                sp.await_mediators(c, oid, [0, 1, 2])
                caller = threading.Thread(target=lambda: c.run(sp.bump, oid, 3, on=[1], threads=1))
                caller.start()
                while not c.run(sp.waiting, oid, on=[1], threads=1)[0]:
                    time.sleep(0.005)
            finally:
                sp.release_hold(held)
                mover.join(120)
                caller.join(120)
            assert c.swap_history(oid)[-1]["waited"] >= 1
            bumps = sum(x.calls for s in c.ppc_statistics() for x in s.counters
                        if (x.oid, x.method, x.kind) == (oid, "bump", "remote"))
            assert bumps == 4  # one before, three after (the first of which waited)
            assert sp.total(c, oid) == 4


@pytest.fixture(scope="module")
def tally_cluster():
    """One 3-node cluster for the model-based test's examples."""
    with new_cluster(3) as c:
        yield c


class TestMigrateAgainstTheModel:
    @settings(max_examples=8)
    @given(ops=strategies.home_moves(3))
    def test_moves_and_swaps_follow_the_model(self, tally_cluster, ops):
        """Any sequence of migrations and swaps (refused ones included) keeps the count, the
        home and the policy the sequential model predicts, and every bump reaches the object."""
        c = tally_cluster
        oid = current_cos().create(sp.Tally, policy="singleton").oid
        home, policy, bumps = 0, "singleton", 0
        for op, arg, caller in ops:
            refused = op == "migrate" and (policy != "singleton" or arg == home)
            try:
                c.migrate(oid, arg) if op == "migrate" else c.set_policy(oid, arg)
                assert not refused
            except ValueError:
                assert refused
            if not refused:
                home, policy = (arg, policy) if op == "migrate" else (home, arg)
            c.run(sp.bump, oid, on=[caller], threads=1)
            bumps += 1
        view = c.inspect()[oid]
        assert (view.home, view.policy) == (home, policy)
        assert sp.total(c, oid) == bumps
        current_cos().destroy(oid)
