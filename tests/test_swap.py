"""Hot swap of live clustered objects (kernel/cobj/_swap.py) under faults on every node."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import clusterprogs as progs
import failprogs
import swapprogs as sp
import tornado_dsm as td
from helpers import new_cluster
from tornado_dsm.kernel import current_cos
from tornado_dsm.objects import Region

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(240)]

PAGES = sp.PAGES
expected_words, churn_while = sp.expected_words, sp.churn_while


class TestSetPolicy:
    def test_region_and_process_swaps_lose_no_write(self):
        """Swapping the Region and Process through every policy while all nodes fault loses no write."""
        with new_cluster(3, policies={"process": "replicated", "region": "per_node"}) as c:
            a = c.zeros((PAGES * 512,), np.int64)
            stop = c.zeros((512,), np.int64)
            records = []

            def swaps():
                for policy in ("singleton", "group:2", "per_node", "singleton", "per_node"):
                    records.append(c.set_policy(a, policy))
                records.append(c.set_policy("process", "singleton"))
                records.append(c.set_policy("process", "per_node"))

            counts = churn_while(c, a, stop, swaps)
            assert expected_words(a, [counts[n] for n in range(3)])
            assert [r["to"] for r in records] == ["singleton", "group:2", "per_node", "singleton",
                                                   "per_node", "singleton", "per_node"]
            assert [h["to"] for h in c.swap_history(a)] == [r["to"] for r in records[:5]]

    def test_fault_counts_survive_a_swap(self):
        """The Region's fault counts move to the new reps: every fault is counted once."""
        with new_cluster(3, policies={"region": "per_node"}) as c:
            a = c.zeros((16 * 512,), np.int64)
            c.run(progs.write_pages, a, 1, on=[1], threads=1)
            before = _region_faults(c)
            c.set_policy(a, "singleton")
            assert _region_faults(c) == before
            c.run(progs.sum_pages, a, on=[2], threads=1)
            c.set_policy(a, "group:2")
            assert _region_faults(c) == before + 16

    def test_unsupported_policy_is_refused(self):
        """A policy the object does not support is a ValueError naming the accepted ones; nothing changes."""
        with new_cluster(2) as c:
            a = c.zeros((512,), np.int64)
            with pytest.raises(ValueError, match="accepted"):
                c.set_policy(a, "partitioned")
            a[0] = 7
            assert c.run(progs.sum_pages, a, on=[1], threads=1) == [7]


def _swapping(c, target, policies) -> tuple[threading.Thread, list]:
    """A started thread swapping ``target`` through ``policies`` five times, until done or
    destroyed, and the list of any other error it met."""
    errors: list = []

    def swap():
        try:
            for policy in policies * 5:
                c.set_policy(target, policy)
        except td.ObjectDestroyed:
            pass
        except Exception as exc:  # noqa: BLE001 -- reported by the test
            errors.append(exc)

    t = threading.Thread(target=swap)
    t.start()
    return t, errors


class TestSwapRacingDestroy:
    def test_free_during_swaps(self):
        """Freeing an array while its Region is being swapped leaves no half-moved object."""
        with new_cluster(2) as c:
            a = c.zeros((512,), np.int64)
            region = c._arrays.allocation(a)[0].region
            t, errors = _swapping(c, region, ("singleton", "per_node"))
            c.free(a)
            t.join(60)
            assert not errors and not t.is_alive()
            b = c.zeros((512,), np.int64)
            b[0] = 3
            assert c.run(progs.sum_pages, b, on=[1], threads=1) == [3]


    @pytest.mark.parametrize("manager", ["centralized", "fixed"])
    def test_free_during_directory_swaps(self, manager):
        """Freeing an array while its PageDirectory is being swapped back and forth leaves no
        half-moved directory: the swaps end or see ObjectDestroyed, new arrays work."""
        with new_cluster(3, manager=manager) as c:
            a = c.zeros((4 * 512,), np.int64)
            c.run(progs.write_pages, a, 2, on=[1, 2], threads=1)
            directory = c._arrays.allocation(a)[0].directory  # the array's name dies with free
            t, errors = _swapping(c, directory, ("partitioned", "singleton"))
            time.sleep(0.01)
            c.free(a)
            t.join(60)
            assert not errors and not t.is_alive(), errors
            b = c.zeros((4 * 512,), np.int64)
            c.run(progs.write_pages, b, 3, on=[2], threads=1)
            assert c.run(progs.sum_pages, b, on=[1], threads=1) == [3 * 4]


def _region_faults(c) -> int:
    """Read + write faults the Region objects counted, over every rep."""
    total = 0
    for obj in c.inspect().objects:
        if obj.name.startswith("region:"):
            ref = current_cos().ref(obj.oid, Region)
            ref.on(obj.home).statistics()  # the home's rep exists (it carries what a swap moved)
            for node in c.vm.rep_nodes(obj.oid):
                s = ref.on(node).statistics()
                total += s.read_faults + s.write_faults
    return total


class TestSwapUnderCallChains:
    def test_process_swaps_during_attach_detach(self):
        """Swapping the Process while arrays are allocated and freed (the root's broadcasts pass
        the mediators) neither deadlocks nor loses a region."""
        with new_cluster(3, policies={"process": "replicated"}) as c:
            a = c.zeros((PAGES * 512,), np.int64)
            stop = c.zeros((512,), np.int64)
            errors = []

            def churn():
                try:
                    for i in range(10):
                        b = c.zeros((512,), np.int64)
                        b[0] = i
                        assert c.run(progs.sum_pages, b, on=[2], threads=1) == [i]
                        c.free(b)
                except Exception as exc:  # noqa: BLE001 -- reported below
                    errors.append(exc)

            def swaps():
                t = threading.Thread(target=churn)
                t.start()
                for policy in ("singleton", "per_node") * 3:
                    c.set_policy("process", policy)
                t.join(120)

            counts = churn_while(c, a, stop, swaps)
            assert not errors
            assert expected_words(a, [counts[n] for n in range(3)])


class TestSwapWithLostNode:
    def test_lost_node_fails_the_swap_and_keeps_the_policy(self):
        """A swap run with a node lost fails with SwapFailed naming it; the old policy stays and works."""
        with new_cluster(3, policies={"region": "per_node"}) as c:
            a = c.zeros((4 * 512,), np.int64)
            c.run(progs.write_pages, a, 5, on=[1], threads=1)
            with pytest.raises(td.NodeLost):
                c.run(failprogs.crash_outside_window, on=2)
            with pytest.raises(td.SwapFailed, match="keeps policy per_node.*NodeLost"):
                c.set_policy(a, "singleton")
            assert c.run(progs.sum_pages, a, on=[1], threads=1) == [5 * 4]
            policy = next(o.policy for o in c.inspect().objects if o.name.startswith("region:"))
            assert policy == "per_node" and c.swap_history(a) == []


class TestDirectorySwapWithLostNode:
    @pytest.mark.parametrize("manager, to", [("centralized", "fixed"), ("fixed", "centralized")])
    def test_lost_node_keeps_the_old_manager(self, manager, to):
        """A directory swap with a node lost fails with SwapFailed; the directory keeps its old
        policy and serves every page whose owner and slice are on the survivors."""
        with new_cluster(3, manager=manager) as c:
            a = c.zeros((6 * 512,), np.int64)
            c.run(progs.write_pages, a, 5, on=[1], threads=1)
            with pytest.raises(td.NodeLost):
                c.run(failprogs.crash_outside_window, on=2)
            old = sp.POLICY_OF[manager]
            with pytest.raises(td.SwapFailed, match=f"keeps policy {old}.*NodeLost"):
                c.set_policy(a, to, part="directory")
            alive = [p for p in range(6) if manager == "centralized" or p % 3 != 2]
            assert c.run(progs.read_words, a, [p * 512 for p in alive], on=[0], threads=1) == [[5] * len(alive)]
            assert c.inspect()[c._arrays.allocation(a)[0].directory].policy == old
            assert c.swap_history(a, part="directory") == []


    def test_lost_pages_follow_the_swapped_layout(self):
        """After a swap to the fixed manager, a lost node takes the pages it owned and the pages
        of its slice (p mod 3 == 2) with it, as lost_arrays reports; the others still work."""
        with new_cluster(3, manager="centralized") as c:
            a = c.zeros((6 * 512,), np.int64)
            c.run(progs.write_pages, a, 5, on=[1], threads=1)
            c.set_policy(a, "fixed", part="directory")
            c.run(progs.write_word, a, 0, 9, 0, on=[2], threads=1)
            with pytest.raises(td.NodeLost):
                c.run(failprogs.crash_outside_window, on=2)
            _await_lost(c, 2)
            name = c._arrays.allocation(a)[0].name
            assert c.lost_arrays() == {name: 3}  # page 0 (owner 2), pages 2 and 5 (slice on 2)
            assert c.run(progs.read_words, a, [512, 3 * 512, 4 * 512], on=[1], threads=1) == [[5, 5, 5]]


class TestSwapWithNodeLostInDrain:
    def test_node_lost_during_the_drain(self):
        """A node killed while the swap waits for a call in flight fails it with SwapFailed naming
        the node; the object keeps its old policy, its count, and works on the survivors."""
        with new_cluster(3) as c:
            oid = current_cos().create(sp.Tally, policy="singleton").oid
            c.run(sp.bump, oid, threads=1)
            held = sp.start_hold(oid)
            out: list = []
            swapper = threading.Thread(target=lambda: out.append(_attempt(c.set_policy, oid, "per_node")))
            swapper.start()
            try:
                sp.await_mediators(c, oid, [0, 1, 2])
                os.kill(c.run(failprogs.pid, on=[2], threads=1)[0], signal.SIGKILL)
                _await_lost(c, 2)
            finally:
                sp.release_hold(held)
                swapper.join(120)
            assert isinstance(out[0], td.SwapFailed), out
            assert "node 2" in str(out[0]) and "keeps policy singleton" in str(out[0])
            assert c.run(sp.bump, oid, on=[0, 1], threads=1) == [0, 0]
            view = c.inspect()[oid]
            assert (view.policy, view.rep_nodes) == ("singleton", (0,)) and c.swap_history(oid) == []
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


class TestSwapCountsEachCallOnce:
    def test_redirected_call_is_one_ppc(self):
        """A call that waited in a mediator and went on through the new stub is one remote PPC."""
        with new_cluster(3) as c:
            oid = current_cos().create(sp.Tally, policy="per_node").oid
            c.run(sp.bump, oid, on=[1], threads=1)
            held = sp.start_hold(oid)
            swapper = threading.Thread(target=lambda: c.set_policy(oid, "singleton"))
            swapper.start()
            try:
                sp.await_mediators(c, oid, [0, 1, 2])
                caller = threading.Thread(target=lambda: c.run(sp.bump, oid, 3, on=[1], threads=1))
                caller.start()
                while not c.run(sp.waiting, oid, on=[1], threads=1)[0]:
                    time.sleep(0.005)
            finally:
                sp.release_hold(held)
                swapper.join(120)
                caller.join(120)
            assert c.swap_history(oid)[-1]["waited"] >= 1
            calls = {kind: sum(x.calls for s in c.ppc_statistics() for x in s.counters
                               if (x.oid, x.method, x.kind) == (oid, "bump", kind))
                     for kind in ("local", "remote")}
            assert calls == {"local": 1, "remote": 3}
            assert sp.total(c, oid) == 4


class TestDirectorySwap:
    @pytest.mark.parametrize("manager", ["centralized", "fixed"])
    def test_swaps_back_and_forth_lose_no_write(self, manager):
        """Swapping the PageDirectory centralized <-> fixed while 3 nodes write shared and
        distinct pages loses no write, and every page keeps one owner."""
        with new_cluster(3, manager=manager) as c:
            a = c.zeros(((PAGES + 3) * 512,), np.int64)
            stop = c.zeros((512,), np.int64)
            words = ("fixed", "centralized") if manager == "centralized" else ("centralized", "fixed")
            records = []

            def swaps():
                for word in words * 6:
                    time.sleep(0.02)  # faults run under each policy, not only during the swaps
                    records.append(c.set_policy(a, word, part="directory"))

            counts = sp.churn_mixed_while(c, a, stop, swaps)
            assert sp.expected_words(a, counts) and sp.expected_private(a, counts)
            assert [r["to"] for r in records] == [sp.POLICY_OF[w] for w in words * 6]
            assert c.run(progs.sum_pages, a, on=[1, 2], threads=1) == [progs.sum_pages(a)] * 2
            assert c.inspect()[c._arrays.allocation(a)[0].directory].policy == records[-1]["to"]

    def test_dynamic_manager_has_no_directory(self):
        """A directory swap of an array under the dynamic manager is a ValueError naming the managers."""
        with new_cluster(2, manager="dynamic") as c:
            a = c.zeros((512,), np.int64)
            with pytest.raises(ValueError, match="has no directory object.*centralized"):
                c.set_policy(a, "fixed", part="directory")

    def test_bad_words_are_refused(self):
        """A manager name for the Region, a bad part or a policy the directory lacks is a clear ValueError."""
        with new_cluster(2, manager="centralized") as c:
            a = c.zeros((512,), np.int64)
            with pytest.raises(ValueError, match="names a directory manager.*part='directory'"):
                c.set_policy(a, "fixed")
            with pytest.raises(ValueError, match="part must be one of"):
                c.set_policy(a, "fixed", part="fcm")
            with pytest.raises(ValueError, match="accepted"):
                c.set_policy(a, "per_node", part="directory")
            a[0] = 4
            assert c.run(progs.sum_pages, a, on=[1], threads=1) == [4]


class TestBenchSwap:
    def test_rows_for_swaps_and_migrations(self):
        """bench swap reports a swap and a migration row for the Region and the Process, and a
        directory swap row, per size."""
        import argparse

        from tornado_dsm import _bench_swap

        rows = _bench_swap.measure(argparse.Namespace(nodes="2", seconds=0.3))
        assert [r.name for r in rows] == ["swap region, 2 nodes", "swap process, 2 nodes",
                                          "migrate region, 2 nodes", "migrate process, 2 nodes",
                                          "swap directory, 2 nodes"]
        assert "during migrations" in rows[2].note and all(r.samples > 0 for r in rows)
