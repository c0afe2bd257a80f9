"""Locks and barriers (cluster.lock / cluster.barrier) across real node processes.

Every lock kind excludes mutually (a non-atomic read-modify-write under it
gives the exact total), the queue locks hand over in FIFO order, every
barrier kind keeps its parties in step for many episodes (also for party
counts that are not powers of two), misuse is a clear error and never a
hang, a timed-out acquire leaves a working lock, and the server kinds go
through PPC.  The threads run on 3 nodes x 2 threads unless a test says
otherwise; node 0 is this process.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings

from tornado_dsm import _barriers, _locks

import strategies as sst
import syncprogs as progs
from helpers import new_cluster

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(120)]

NODES, THREADS = 3, 2
LOCK_KINDS, BARRIER_KINDS, PADDINGS = sst.LOCK_KINDS, sst.BARRIER_KINDS, sst.SYNC_PADDINGS
QUEUE_KINDS = ("ticket", "anderson", "mcs", "server")   # the FIFO ones
ROUNDS = 25          # critical sections per thread
EPISODES = 30
RUN_LIMIT = 30       # seconds any run here may take: a hang fails, it does not stall the suite


@pytest.fixture(scope="module")
def closed_objects():
    """(locks of every kind, barriers of every kind, a ticket lock node 0 still
    held) of a one-node cluster that is closed.  Made before `sync_cluster`
    (which asks for it): a process runs one cluster at a time (node 0's VM
    state is the process's), so this one cannot start while that one lives."""
    with new_cluster(1, timeout=60) as c:
        locks = [c.lock(kind) for kind in LOCK_KINDS]
        barriers = [c.barrier(1, kind) for kind in BARRIER_KINDS]
        held = c.lock("ticket")
        held.acquire(timeout=10)
    return locks, barriers, held


@pytest.fixture(scope="module")
def sync_cluster(closed_objects):
    """3 nodes x 2 threads (IVY, dynamic manager) for the whole module."""
    with new_cluster(NODES, threads_per_node=THREADS, size=64 << 20, timeout=60) as c:
        yield c


@pytest.fixture
def counter(sync_cluster):
    """A zeroed int64 array of 3 pages: word 0 is the counter, word 512 the occupancy
    check, word 1024 the count of threads wanting the lock (syncprogs.count_under_lock)."""
    a = sync_cluster.zeros((1536,), np.int64)
    yield a
    sync_cluster.free(a)


def flags(cluster, n: int = 8):
    """A small zeroed int64 array of signal words."""
    return cluster.zeros((n,), np.int64)


class TestKinds:
    def test_every_kind_is_covered(self):
        """The kinds these tests go through are exactly the package's lock and barrier kinds."""
        assert LOCK_KINDS == _locks.KINDS
        assert BARRIER_KINDS == _barriers.KINDS


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("kind", LOCK_KINDS)
class TestMutualExclusion:
    def test_exact_total_under_contention(self, sync_cluster, counter, kind, padding):
        """6 contending threads on 3 nodes doing non-atomic increments under the lock give the exact total."""
        lock = sync_cluster.lock(kind, padding=padding)
        start = sync_cluster.barrier(NODES * THREADS, "counter")
        results = sync_cluster.run(progs.count_under_lock, counter, lock, start, ROUNDS, timeout=RUN_LIMIT)
        assert int(counter[0]) == NODES * THREADS * ROUNDS
        assert [overlaps for overlaps, _ in results] == [0] * (NODES * THREADS)
        assert sum(contended for _, contended in results) > 0, "no critical section had a waiting thread"


# rank of each run thread (party = node * 2 + thread): the holder is party 0 (node 0,
# the server lock's home); the others queue in an order unrelated to node ids,
# thread indices or LIFO, with one of them on the holder's own node.
FIFO_RANKS = [0, 3, 2, 5, 4, 1]


@pytest.mark.parametrize("kind", QUEUE_KINDS)
class TestFIFO:
    @pytest.mark.parametrize("padding", PADDINGS)
    def test_enters_in_queue_order(self, sync_cluster, kind, padding):
        """Queued one at a time in a known order, the waiters enter the critical section in that order.

        Party 0 holds the lock; it lets rank r start acquiring only after it
        saw rank r - 1 in the lock's queue (the ticket word advanced, the MCS
        tail moved, the server's queue grew: syncprogs.queue_changed), so the
        queue order is forced to ranks 1..5; then it releases.  Each thread
        records itself inside the critical section.  The ranks are scrambled
        against node ids and thread indices (rank 3 is on the holder's node,
        rank 1 on the farthest), so a lock that grants in any other order than
        the queue's — LIFO, by node, local threads first, random — records a
        different order and fails."""
        lock = sync_cluster.lock(kind, padding=padding)
        turn, order = flags(sync_cluster), flags(sync_cluster, 1 + NODES * THREADS)
        sync_cluster.run(progs.fifo_entries, lock, turn, order, FIFO_RANKS, timeout=RUN_LIMIT)
        assert [int(x) for x in order[1:]] == list(range(NODES * THREADS))


SHAPES = {"6-parties": [2, 2, 2], "5-parties": [2, 2, 1]}


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("kind", BARRIER_KINDS)
class TestBarrierEpisodes:
    def test_nobody_leaves_early_and_episodes_count_up(self, sync_cluster, kind, shape, padding):
        """Each wait returns 0, 1, 2, ... and only after every party arrived (none more than one ahead)."""
        parties_by_node = SHAPES[shape]
        barrier = sync_cluster.barrier(sum(parties_by_node), kind, padding=padding)
        slots = flags(sync_cluster)
        results = sync_cluster.run(progs.barrier_episodes, barrier, slots, EPISODES, parties_by_node,
                                   timeout=RUN_LIMIT)
        results = [r for r in results if r is not None]
        assert len(results) == sum(parties_by_node)
        for episodes, broken in results:
            assert episodes == list(range(EPISODES))
            assert broken == []


class TestGenerated:
    @settings(max_examples=8, deadline=None)
    @given(kind=sst.lock_kinds, padding=sst.sync_paddings, shape=sst.sync_shapes())
    def test_locks_exclude_on_any_shape(self, sync_cluster, kind, padding, shape):
        """Any kind, padding and 1-2 threads on each of 1-3 nodes: non-atomic increments give the exact total."""
        a = sync_cluster.zeros((1024,), np.int64)
        lock = sync_cluster.lock(kind, padding=padding)
        overlaps = sync_cluster.run(progs.count_under_lock_some, a, lock, 10, shape,
                                    on=list(range(len(shape))), threads=max(shape), timeout=RUN_LIMIT)
        assert int(a[0]) == 10 * sum(shape)
        assert [o for o in overlaps if o is not None] == [0] * sum(shape)
        sync_cluster.free(a)

    @settings(max_examples=8, deadline=None)
    @given(kind=sst.barrier_kinds, padding=sst.sync_paddings, shape=sst.sync_shapes())
    def test_barriers_keep_step_on_any_shape(self, sync_cluster, kind, padding, shape):
        """Any kind, padding and 1-2 parties on each of 1-3 nodes: 5 episodes keep every party in step."""
        barrier = sync_cluster.barrier(sum(shape), kind, padding=padding)
        slots = flags(sync_cluster)
        results = sync_cluster.run(progs.barrier_episodes, barrier, slots, 5, shape,
                                   on=list(range(len(shape))), threads=max(shape), timeout=RUN_LIMIT)
        results = [r for r in results if r is not None]
        assert results == [(list(range(5)), [])] * sum(shape)
        sync_cluster.free(slots)


class TestBadArguments:
    def test_unknown_lock_kind(self, sync_cluster):
        """An unknown lock kind is a ValueError listing every accepted kind."""
        with pytest.raises(ValueError, match="unknown lock kind 'spin'; accepted: " + ", ".join(LOCK_KINDS)):
            sync_cluster.lock("spin")

    def test_unknown_barrier_kind(self, sync_cluster):
        """An unknown barrier kind is a ValueError listing every accepted kind."""
        with pytest.raises(ValueError, match="unknown barrier kind 'butterfly'; accepted: " + ", ".join(BARRIER_KINDS)):
            sync_cluster.barrier(2, "butterfly")

    @pytest.mark.parametrize("make", ["lock", "barrier"])
    def test_unknown_padding(self, sync_cluster, make):
        """An unknown padding is a ValueError naming page and word."""
        with pytest.raises(ValueError, match="padding must be one of page, word.*not 'line'"):
            if make == "lock":
                sync_cluster.lock("mcs", padding="line")
            else:
                sync_cluster.barrier(2, "tree", padding="line")

    @pytest.mark.parametrize("parties", [0, -2, True, 2.5, "3", None])
    def test_bad_parties(self, sync_cluster, parties):
        """parties must be an integer >= 1: anything else is a ValueError naming the value."""
        with pytest.raises(ValueError, match="parties must be an integer >= 1, not " + re.escape(repr(parties))):
            sync_cluster.barrier(parties, "counter")

    @pytest.mark.parametrize("threads", [0, -1, 1.5])
    def test_bad_lock_threads(self, sync_cluster, threads):
        """A lock's threads must be an integer >= 1."""
        with pytest.raises(ValueError, match="threads must be an integer >= 1"):
            sync_cluster.lock("mcs", threads=threads)

    @pytest.mark.parametrize("make", ["lock", "barrier"])
    @pytest.mark.parametrize("home", [3, -1, "0"])
    def test_bad_home(self, sync_cluster, make, home):
        """A server lock or barrier's home must be a node of the cluster."""
        with pytest.raises(ValueError, match="home must be a node id from 0 to 2"):
            if make == "lock":
                sync_cluster.lock("server", home=home)
            else:
                sync_cluster.barrier(2, "server", home=home)


class TestCapacity:
    @pytest.mark.parametrize("kind", BARRIER_KINDS)
    def test_more_threads_than_parties(self, sync_cluster, kind):
        """A third thread at a barrier for 2 parties gets RuntimeError naming the capacity; nothing hangs."""
        barrier = sync_cluster.barrier(2, kind)
        with pytest.raises(RuntimeError, match=r"made for 2 parties; a thread beyond them \(node \d, thread 0\)"):
            sync_cluster.run(progs.barrier_waits, barrier, 1, threads=1, timeout=RUN_LIMIT)

    @pytest.mark.parametrize("kind", ["anderson", "mcs"])
    def test_more_threads_than_the_lock_has_slots(self, sync_cluster, counter, kind):
        """A third thread of a queue lock for 2 threads gets RuntimeError naming the capacity; 2 count exactly."""
        lock = sync_cluster.lock(kind, threads=2)
        results = sync_cluster.run(progs.attempt_count, counter, lock, 10, threads=1, timeout=RUN_LIMIT)
        errors = [r for r in results if r[0] != "ok"]
        assert len(errors) == 1
        assert errors[0][0] == "RuntimeError" and "made for 2 threads; a thread beyond them" in errors[0][1]
        assert int(counter[0]) == 20


@pytest.mark.parametrize("kind", LOCK_KINDS)
class TestOwnership:
    def test_release_by_a_non_holder(self, sync_cluster, kind):
        """release() by a non-holder (lock free, or held on another node) is a RuntimeError; the lock still works."""
        lock = sync_cluster.lock(kind)
        with pytest.raises(RuntimeError, match="released by a thread that does not hold it"):
            lock.release()
        lock.acquire(timeout=10)
        try:
            [(kind_name, message)] = sync_cluster.run(progs.attempt_release, lock, on=1, threads=1)
        finally:
            lock.release()
        assert kind_name == "RuntimeError" and "released by a thread that does not hold it" in message
        assert sync_cluster.run(progs.try_acquire, lock, 10, on=1, threads=1)[0][0] == "ok"

    def test_reacquire_by_the_holder(self, sync_cluster, kind):
        """acquire() by the holder is a RuntimeError, not a self-deadlock; held() tells who holds the lock."""
        lock = sync_cluster.lock(kind)
        assert not lock.held()
        with lock:
            assert lock.held()
            with pytest.raises(RuntimeError, match="already held by this thread"):
                lock.acquire(timeout=1)
            assert lock.held()
        assert not lock.held()


class TestAcquireTimeout:
    @pytest.mark.parametrize("kind", LOCK_KINDS)
    def test_times_out_and_the_lock_still_works(self, sync_cluster, counter, kind):
        """acquire(timeout=0.2) while node 0 holds is a TimeoutError naming the lock; then all count exactly."""
        lock = sync_cluster.lock(kind)
        results = sync_cluster.run(progs.time_out_then_count, counter, lock, flags(sync_cluster), 0.2, ROUNDS,
                                   timeout=RUN_LIMIT)
        (outcome, _), = [r for r in results if r[0] is not None]
        assert outcome[0] == "TimeoutError", outcome
        assert lock.name in outcome[1] and "not acquired within the timeout" in outcome[1]
        assert 0.2 <= outcome[2] < 5
        assert [overlaps for _, overlaps in results] == [0] * (NODES * THREADS)
        assert int(counter[0]) == NODES * THREADS * ROUNDS

    @pytest.mark.parametrize("kind", ["ticket", "anderson", "mcs"])
    def test_a_new_thread_waits_for_its_abandoned_place(self, sync_cluster, counter, kind):
        """A later run's thread whose abandoned place is still queued times out too; then all count exactly."""
        lock = sync_cluster.lock(kind)
        lock.acquire(timeout=10)
        try:
            [outcomes] = sync_cluster.run(progs.time_out_twice, lock, 0.2, 0.5, on=1, threads=1,
                                          timeout=RUN_LIMIT)
        finally:
            lock.release()
        assert [o[0] for o in outcomes] == ["TimeoutError", "TimeoutError"], outcomes
        overlaps = sync_cluster.run(progs.count_under_lock_some, counter, lock, ROUNDS, [2, 2, 2],
                                    timeout=RUN_LIMIT)
        assert overlaps == [0] * (NODES * THREADS)
        assert int(counter[0]) == NODES * THREADS * ROUNDS


class TestBarrierTimeout:
    @pytest.mark.parametrize("kind", BARRIER_KINDS)
    def test_a_missing_party_times_out_naming_barrier_party_episode(self, sync_cluster, kind):
        """With a party missing, wait(timeout) is a TimeoutError naming the barrier, the party and the episode."""
        barrier = sync_cluster.barrier(3, kind)
        assert sync_cluster.run(progs.barrier_wait, barrier, 10, [1, 1, 1], threads=1,
                                timeout=RUN_LIMIT) == [("ok", 0)] * 3
        results = sync_cluster.run(progs.barrier_wait, barrier, 0.3, [1, 1], on=[0, 1], threads=1,
                                   timeout=RUN_LIMIT)
        for kind_name, message in results:
            assert kind_name == "TimeoutError", message
            assert message.startswith(f"{barrier.name}: party ")
            assert " of 3 waited more than 0.3 s in episode 1" in message
        assert {m.split("party ")[1].split(" ")[0] for _, m in results} <= {"0", "1", "2"}


class TestClosedCluster:
    def test_lock_and_barrier_of_a_closed_cluster(self, closed_objects):
        """Locks and barriers (and a lock held across the close) of a closed cluster raise RuntimeError saying so."""
        locks, barriers, held = closed_objects
        for lock in locks:
            with pytest.raises(RuntimeError, match=re.escape(f"{lock.name} belongs to a cluster that is closed")):
                lock.acquire(timeout=1)
        with pytest.raises(RuntimeError, match=re.escape(f"{held.name} belongs to a cluster that is closed")):
            held.release()
        for barrier in barriers:
            with pytest.raises(RuntimeError, match=re.escape(f"{barrier.name} belongs to a cluster that is closed")):
                barrier.wait(timeout=1)


class TestServerKindsUsePPC:
    @pytest.mark.parametrize("home", [0, 2])
    def test_server_lock_acquires_are_remote_ppcs(self, sync_cluster, home):
        """A server lock's acquire/release are remote PPCs from node 1, local ones on its home."""
        lock = sync_cluster.lock("server", home=home)
        sync_cluster.run(progs.acquire_release, lock, 7, on=[1, home], threads=1, timeout=RUN_LIMIT)
        stats = sync_cluster.ppc_statistics()
        for method in ("acquire", "release"):
            remote = stats[1].get(lock.oid, method, "remote")
            assert remote is not None and remote.calls == 7, (method, stats[1])
            assert stats[1].get(lock.oid, method, "local") is None
            local = stats[home].get(lock.oid, method, "local")
            assert local is not None and local.calls == 7, (method, stats[home])

    def test_server_barrier_waits_are_remote_ppcs(self, sync_cluster):
        """Each wait of a server barrier on node 1 is one remote PPC 'wait' to its home."""
        barrier = sync_cluster.barrier(NODES, "server")
        sync_cluster.run(progs.barrier_waits, barrier, 4, threads=1, timeout=RUN_LIMIT)
        stats = sync_cluster.ppc_statistics()
        for node in (1, 2):
            assert stats[node].get(barrier.oid, "wait", "remote").calls == 4
        assert stats[0].get(barrier.oid, "wait", "local").calls == 4
