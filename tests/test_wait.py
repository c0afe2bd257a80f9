"""td.wait / td.notify on words of shared arrays, across real node processes.

A waiter on another node is woken by the write's coherence traffic (the
write revoked the waiter's copy of the page); a waiter on the writer's node
by the atomics' own notify or by td.notify after a plain store.  Every case
runs under every protocol and manager.  Waiters never poll: a waiting
thread costs (almost) no CPU.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import tornado_dsm as td
from tornado_dsm.kernel import trap

import syncprogs as progs
from helpers import new_cluster

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(120)]

CONFIGS = [("ivy", "centralized"), ("ivy", "fixed"), ("ivy", "dynamic"), ("migrate", "centralized")]
# the most CPU (fraction of one core) a node may use while two of its threads wait
IDLE_CPU_BOUND = {"ivy": 0.20, "migrate": 0.40}


@pytest.fixture(scope="module", params=CONFIGS, ids=["-".join(c) for c in CONFIGS])
def wait_cluster(request):
    """3 nodes x 2 threads under one (protocol, manager) of CONFIGS, for the whole module."""
    protocol, manager = request.param
    with new_cluster(3, threads_per_node=2, protocol=protocol, manager=manager, timeout=60) as c:
        c.protocol = protocol
        yield c


def fresh_word(cluster, value: int = 0, index: int = 3):
    """(array, Word) of a new int64 array whose word ``index`` holds ``value``."""
    a = cluster.zeros((1024,), np.int64)
    a[index] = value
    trap.check()
    return a, td.word(a, index)


def asleep(cluster, nodes, count: int = 1):
    """Wait until each of ``nodes`` has at least ``count`` threads asleep in td.wait
    (past their last read of the old value: syncprogs.asleep_here)."""
    progs.until(lambda: all(n >= count for n in cluster.node_set.run_on_each(nodes, progs.asleep_here)),
                f"waiters asleep on nodes {nodes}")


class TestRemoteWrite:
    def test_plain_write_on_node_0_wakes_waiters_on_nodes_1_and_2(self, wait_cluster):
        """Waiters on nodes 1 and 2, asleep before node 0's plain numpy store, return the new value."""
        a, w = fresh_word(wait_cluster)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(wait_cluster.run, progs.wait_word, w, 0, 30, nodes=[1, 2], threads=1)
            asleep(wait_cluster, [1, 2])
            a[3] = 7
            trap.check()
            results = waiting.result(timeout=60)
        assert [value for value, _ in results] == [7, 7]

    def test_write_on_node_2_wakes_a_waiter_on_node_1(self, wait_cluster):
        """A waiter on node 1 returns the value a run thread on node 2 stored (neither is node 0)."""
        a, w = fresh_word(wait_cluster)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(wait_cluster.run, progs.wait_word, w, 0, 30, nodes=1, threads=1)
            asleep(wait_cluster, [1])
            wait_cluster.run(progs.store_word, w, 11, on=2, threads=1)
            results = waiting.result(timeout=60)
        assert [value for value, _ in results] == [11]


class TestLocalWrite:
    def test_atomic_store_wakes_a_waiter_of_its_node(self, wait_cluster):
        """A waiter thread on node 1 returns the value another thread of node 1 stored atomically."""
        a, _ = fresh_word(wait_cluster)
        assert wait_cluster.run(progs.local_wake, a, 3, "atomic", on=1, threads=1) == [([5], [])]

    def test_plain_store_and_notify_wake_a_waiter_of_its_node(self, wait_cluster):
        """A plain store on the waiter's node followed by td.notify wakes it: notify says it woke one."""
        a, _ = fresh_word(wait_cluster)
        assert wait_cluster.run(progs.local_wake, a, 3, "plain", on=1, threads=1) == [([5], [1])]

    def test_notify_wakes_one_waiter_at_a_time(self, wait_cluster):
        """With two waiters, td.notify (count 1) wakes exactly one each time it is called."""
        a, _ = fresh_word(wait_cluster)
        assert wait_cluster.run(progs.local_wake, a, 3, "plain", 2, on=2, threads=1) == [([5, 5], [1, 1])]

    def test_notify_all_wakes_every_waiter(self, wait_cluster):
        """td.notify_all after a plain store wakes both waiters of the node at once."""
        a, _ = fresh_word(wait_cluster)
        assert wait_cluster.run(progs.local_wake, a, 3, "plain_all", 2, on=2, threads=1) == [([5, 5], [2])]


class TestAlreadyDifferent:
    def test_returns_at_once(self, wait_cluster):
        """wait(old) on a word that already differs from old returns its value even with timeout 0, on every node."""
        a, w = fresh_word(wait_cluster, 3)
        results = wait_cluster.run(progs.wait_word, w, 99, 0, threads=1)
        assert [value for value, _ in results] == [3, 3, 3]


class TestTimeout:
    @pytest.mark.parametrize("value", [4, -1])
    def test_times_out_naming_word_and_value(self, wait_cluster, value):
        """A wait nobody ends is a TimeoutError naming word and value, and leaves no waiter registered."""
        a, w = fresh_word(wait_cluster, value)
        [(kind, message, seconds, left)] = wait_cluster.run(progs.wait_timing_out, w, value, 0.2,
                                                            on=1, threads=1)
        assert kind == "TimeoutError", message
        assert str(w) in message and f"still held {value}" in message and "0.2 s" in message
        assert 0.2 <= seconds < 5
        assert left == 0


class TestIdleCPU:
    def test_waiting_threads_use_no_cpu(self, wait_cluster):
        """2 threads each on nodes 1, 2 waiting 1 s cost under 20 % of a core (ivy), 40 % (migrate)."""
        a, w = fresh_word(wait_cluster)
        results = wait_cluster.run(progs.idle_cpu, w, 0, 1.0, 2, on=[1, 2], threads=1)
        bound = IDLE_CPU_BOUND[wait_cluster.protocol]
        shares = [cpu / wall for cpu, wall, _ in results]
        print(f"idle wait CPU ({wait_cluster.protocol}): " +
              ", ".join(f"node {n}: {cpu * 1000:.1f} ms over {wall:.2f} s = {100 * s:.1f} %"
                        for n, (cpu, wall, _), s in zip((1, 2), results, shares)))
        assert [timeouts for *_, timeouts in results] == [2, 2]
        assert all(wall >= 1.0 for _, wall, _ in results)
        assert max(shares) < bound, shares


class TestBadArguments:
    @pytest.mark.parametrize("dtype", [np.float64, np.int16, np.uint8, np.bool_, np.complex64])
    def test_word_of_a_non_integer_or_short_dtype(self, dtype):
        """td.word refuses a dtype that is not a 4- or 8-byte integer, naming it."""
        with pytest.raises(ValueError, match=f"4- or 8-byte integer .* not {np.dtype(dtype)}"):
            td.word(np.zeros(16, dtype), 0)

    @pytest.mark.parametrize("index,error", [(16, IndexError), (-17, IndexError), ((0, 1), ValueError)])
    def test_word_index_out_of_bounds(self, index, error):
        """td.word refuses an index outside the array (IndexError) or of the wrong arity (ValueError)."""
        with pytest.raises(error, match=r"out of bounds for an array of shape \(16,\)|must name one element"):
            td.word(np.zeros(16, np.int64), index)

    @pytest.mark.parametrize("index", [1.0, True, "0", None])
    def test_word_index_not_an_integer(self, index):
        """td.word refuses a non-integer index, naming it and the shape."""
        with pytest.raises(ValueError, match=r"must name one element of an array of shape \(16,\)"):
            td.word(np.zeros(16, np.int64), index)

    def test_word_of_a_non_array(self):
        """td.word takes only numpy arrays."""
        with pytest.raises(TypeError, match="shared numpy array, not list"):
            td.word([1, 2, 3], 0)

    def test_wait_on_a_word_outside_every_window(self, wait_cluster):
        """A Word of a private (non-shared) array cannot be waited on: ValueError saying it is outside every window."""
        w = td.word(np.zeros(8, np.int64), 2)
        with pytest.raises(ValueError, match="not inside a tornado_dsm window"):
            td.wait(w, 0, timeout=0.1)

    def test_wait_on_a_misaligned_word(self, wait_cluster):
        """A Word whose address is not aligned to its size is refused."""
        _, w = fresh_word(wait_cluster)
        with pytest.raises(ValueError, match="not aligned to 8 bytes"):
            td.wait(td.Word(w.address + 4, 8), 0, timeout=0.1)

    @pytest.mark.parametrize("timeout", [-1, -0.001, float("nan"), "1", True])
    def test_wait_bad_timeout(self, wait_cluster, timeout):
        """A negative or non-numeric timeout is a ValueError naming it, before any waiting."""
        _, w = fresh_word(wait_cluster)
        with pytest.raises(ValueError, match="timeout must be a number of seconds >= 0 or None"):
            td.wait(w, 0, timeout=timeout)

    @pytest.mark.parametrize("count", [0, -1, True, 1.5])
    def test_notify_bad_count(self, count):
        """notify with a count that is not a positive integer is a ValueError naming it."""
        with pytest.raises(ValueError, match="count must be a positive integer, not " + re.escape(repr(count))):
            td.notify(td.word(np.zeros(16, np.int64), 0), count)

    @pytest.mark.parametrize("fn", [td.wait, td.notify, td.notify_all])
    def test_needs_a_word(self, fn):
        """wait / notify / notify_all take a Word, not an address: TypeError saying so."""
        address = td.word(np.zeros(16, np.int64), 0).address
        args = (address, 0) if fn is td.wait else (address,)
        with pytest.raises(TypeError, match=r"expected a Word \(td.word\(array, index\)\)"):
            fn(*args)
