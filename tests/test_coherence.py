"""Coherence across real node processes, for every protocol and manager."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

import clusterprogs as progs
from helpers import new_cluster, remote_calls

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(300)]

CONFIGS = [("ivy", "centralized"), ("ivy", "fixed"), ("ivy", "dynamic"),
           ("migrate", "centralized"), ("migrate", "fixed"), ("migrate", "dynamic")]
NODES, THREADS, WORDS = 3, 2, 4 * 512


@pytest.fixture(scope="module", params=CONFIGS, ids=["-".join(c) for c in CONFIGS])
def protocol_cluster(request):
    """NODES x THREADS with debug checks and a 64 MiB window, once per (protocol, manager) of
    CONFIGS, for the whole module."""
    protocol, manager = request.param
    with new_cluster(NODES, threads_per_node=THREADS, protocol=protocol, manager=manager,
                     size=64 << 20, debug=True) as c:
        yield c


def _sequential_machine(cluster, prefetch: int = 0) -> None:
    """Random reads and writes of random words from random nodes and threads, checked against a
    sequential memory (an array of ``prefetch`` pages per read reply)."""
    class Machine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.a = cluster.zeros((WORDS,), np.int64, prefetch=prefetch)
            self.model = np.zeros(WORDS, dtype=np.int64)

        @rule(node=st.integers(0, NODES - 1), thread=st.integers(0, THREADS - 1),
              i=st.integers(0, WORDS - 1))
        def read(self, node, thread, i):
            got = cluster.run(progs.read_word, self.a, i, thread, on=node, threads=THREADS)
            assert got[thread] == self.model[i]

        @rule(node=st.integers(0, NODES - 1), thread=st.integers(0, THREADS - 1),
              i=st.integers(0, WORDS - 1), value=st.integers(-(2**63), 2**63 - 1))
        def write(self, node, thread, i, value):
            cluster.run(progs.write_word, self.a, i, value, thread, on=node, threads=THREADS)
            self.model[i] = value

        def teardown(self):
            cluster.free(self.a)

    Machine.TestCase.settings = settings(max_examples=12, stateful_step_count=25, deadline=None)
    Machine.TestCase().runTest()


class TestSequentialModel:
    def test_machine(self, protocol_cluster):
        """Random reads and writes of random words from random nodes and threads match a sequential memory."""
        _sequential_machine(protocol_cluster)


class TestSequentialModelPrefetch:
    def test_machine(self):
        """With prefetch on (3 pages per read reply), random reads and writes still match a sequential memory."""
        with new_cluster(NODES, threads_per_node=THREADS, manager="dynamic", size=64 << 20, debug=True) as c:
            _sequential_machine(c, prefetch=3)

    def test_other_managers_are_refused(self):
        """prefetch on a centralized cluster is refused naming the manager it needs."""
        with new_cluster(2, manager="centralized", size=16 << 20) as c:
            with pytest.raises(ValueError, match="needs manager='dynamic'"):
                c.zeros((512,), prefetch=2)


class TestStress:
    def test_atomic_totals(self, protocol_cluster):
        """N nodes x T threads of atomic increments: shared and private totals are exact."""
        a = protocol_cluster.zeros((1 + NODES * 64) * 512 + 512, np.int64)
        n = 150
        privates = protocol_cluster.run(progs.increment, a, 0, n)
        assert int(a[0]) == n * NODES * THREADS
        assert [int(a[p * 512]) for p in privates] == [n] * len(privates)
        protocol_cluster.free(a)


def _alloc_of(cluster, a):
    return cluster._arrays.allocation(a)[0]


@pytest.mark.parametrize("manager", ["centralized", "fixed", "dynamic"])
class TestMessageCounts:
    def test_read_fault_from_third_owner(self, manager):
        """A read fault whose owner is a third node costs IVY's message count."""
        with new_cluster(3, manager=manager) as c:
            a = c.zeros((512 * 3,), np.int64)   # page 0: fixed manager is node 0
            al = _alloc_of(c, a)
            oids = [o for o in (al.fcm, al.directory) if o]
            c.run(progs.write_word, a, 0, 7, 0, on=1, threads=1)      # node 1 owns page 0
            c.run(progs.read_word, a, 1, 0, on=2, threads=1)          # warm the stubs of node 2
            c.run(progs.write_word, a, 0, 8, 0, on=1, threads=1)      # invalidate node 2 again
            before = remote_calls(c, oids)
            assert c.run(progs.read_word, a, 0, 0, on=2, threads=1) == [8]
            messages = 2 * (remote_calls(c, oids) - before)
        # centralized/fixed: 2->M, M->1, 1->M, M->2; dynamic: 2->1 (exact hint), 1->2
        assert messages == (4 if manager != "dynamic" else 2)

    def test_write_invalidates_readers(self, manager):
        """A write fault with r readers costs 2 more messages per reader (parallel invalidations)."""
        with new_cluster(4, manager=manager) as c:
            a = c.zeros((512 * 4,), np.int64)
            al = _alloc_of(c, a)
            oids = [o for o in (al.fcm, al.directory) if o]
            c.run(progs.write_word, a, 0, 1, 0, on=1, threads=1)      # owner: node 1
            c.run(progs.read_word, a, 0, 0, on=[2, 3], threads=1)     # readers: 2 and 3
            c.run(progs.read_word, a, 0, 0, on=0, threads=1)          # and node 0
            before = remote_calls(c, oids)
            c.run(progs.write_word, a, 0, 2, 0, on=3, threads=1)      # node 3 writes
            messages = 2 * (remote_calls(c, oids) - before)
        # centralized (manager 0 = a reader): 3->0, invalidate 2 (node 0's is local), 0->1 transfer = 6
        # dynamic (node 3's hint is owner 1): 3->1, invalidate 0 and 2, = 6
        expected = {"centralized": 6, "fixed": 6, "dynamic": 6}[manager]
        assert messages == expected


def _remote_bytes(cluster, oids) -> int:
    """Bytes moved by the remote PPCs made so far on the objects ``oids``, every node."""
    return sum(c.bytes for s in cluster.ppc_statistics() for c in s.counters
               if c.kind == "remote" and c.oid in oids)


@pytest.mark.parametrize("manager", ["centralized", "fixed", "dynamic"])
class TestUpgrade:
    def test_a_reader_that_writes_fetches_no_page(self, manager):
        """A write fault by a node holding the current read copy moves ownership only: no page travels."""
        from tornado_dsm.kernel import PAGE
        with new_cluster(3, manager=manager) as c:
            a = c.zeros((512 * 3,), np.int64)
            al = _alloc_of(c, a)
            oids = [o for o in (al.fcm, al.directory) if o]
            c.run(progs.write_word, a, 0, 5, 0, on=1, threads=1)      # owner: node 1
            c.run(progs.read_word, a, 0, 0, on=2, threads=1)          # node 2 holds a copy
            before = _remote_bytes(c, oids)
            c.run(progs.write_word, a, 0, 6, 0, on=2, threads=1)      # node 2 upgrades
            moved = _remote_bytes(c, oids) - before
            assert c.run(progs.read_word, a, 0, 0, on=0, threads=1) == [6]
        assert 0 < moved < PAGE
