"""Module-level functions that test_wait and test_sync run on nodes with Cluster.run
(or node_set.run_on): they must be importable on every node.

Threads a function starts itself are not `run` threads: they may wait on words,
but never use a lock or a barrier (those key a thread's slot by its run index).
"""

from __future__ import annotations

import sys
import threading
import time

import tornado_dsm as td
from tornado_dsm.kernel import current_cos, trap
from tornado_dsm.kernel.machine import _waitq

SETTLE_S = 30.0   # the most any condition a function polls for may take to come true


def party() -> int:
    """This run thread's index among all the run's threads (node-major, 2 threads a node)."""
    return td.current_node() * 2 + td.current_thread()


def until(condition, what: str, limit: float = SETTLE_S) -> None:
    """Poll ``condition()`` until it holds (a condition, not a delay: the
    caller's assertions never depend on how long this takes); AssertionError
    after ``limit`` seconds."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: still not true after {limit} s")
        time.sleep(0.0005)


# ---- wait / notify (test_wait) -------------------------------------------------------------

def asleep_here() -> int:
    """Threads of this node asleep in td.wait: blocked on an Event inside
    _waitq.wait.  A registered waiter may still be about to make its last read
    (it registers first); one asleep has read the old value and only a
    wake-up (a revocation, a notify) makes it read again."""
    asleep = 0
    for frame in sys._current_frames().values():
        in_event, f = False, frame
        while f is not None:
            code = f.f_code
            if code.co_name == "wait" and code.co_filename == threading.__file__:
                in_event = True
            elif code.co_name == "wait" and code.co_filename == _waitq.__file__:
                asleep += in_event
                break
            f = f.f_back
    return asleep


def wait_word(w, old, timeout):
    """td.wait(w, old, timeout) -> (value returned, seconds taken)."""
    t0 = time.monotonic()
    value = td.wait(w, old, timeout=timeout)
    return value, time.monotonic() - t0


def store_word(w, value):
    """Word.store(value) (an atomic store) on this node."""
    w.store(value)


def wait_timing_out(w, old, timeout):
    """td.wait expected to time out -> (exception type, message, seconds, waiters left here)."""
    t0 = time.monotonic()
    try:
        value = td.wait(w, old, timeout=timeout)
    except Exception as e:  # noqa: BLE001 - reported to the test
        return type(e).__name__, str(e), time.monotonic() - t0, _waitq.waiting
    return "returned", value, time.monotonic() - t0, _waitq.waiting


def local_wake(a, index, how, nwaiters=1):
    """On one node: ``nwaiters`` threads wait on a[index] (holding 0); once every
    one is asleep, this thread writes 5 by ``how``:

    * "atomic": Word.store (the atomics notify this node's waiters themselves);
    * "plain": a numpy store, then td.notify (count 1) until every waiter woke;
    * "plain_all": a numpy store, then td.notify_all.

    The page is made writable here first (a plain store of 0), so neither
    the waiters' reads nor the store fault; the store comes once every waiter
    is asleep (asleep_here: past its last read), so nothing but the notify
    (or the atomic's own notify) can wake them.  Returns (values the waiters
    returned, what each notify call returned)."""
    w = td.word(a, index)
    a[index] = 0
    trap.check()
    values, errors = [], []

    def waiter():
        try:
            values.append(td.wait(w, 0, timeout=SETTLE_S))
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=waiter) for _ in range(nwaiters)]
    for t in threads:
        t.start()
    until(lambda: asleep_here() >= nwaiters, "the waiters are asleep")
    notified = []
    if how == "atomic":
        w.store(5)
    else:
        a[index] = 5
        trap.check()
        if how == "plain_all":
            notified.append(td.notify_all(w))
        else:
            for _ in range(nwaiters):
                notified.append(td.notify(w))
                until(lambda: len(values) + len(errors) >= sum(notified), "a notified waiter returned")
            if len(values) + len(errors) < nwaiters:    # a notify missed: end the test now
                notified.append(td.notify_all(w))
    for t in threads:
        t.join(SETTLE_S)
    if errors:
        raise errors[0]
    return values, notified


def idle_cpu(w, old, seconds, nthreads):
    """``nthreads`` threads of this node wait ``seconds`` on a word nobody writes
    (each must time out).  Returns (CPU seconds this process used meanwhile,
    wall seconds, timeouts seen)."""
    timeouts = []

    def waiter():
        try:
            td.wait(w, old, timeout=seconds)
        except TimeoutError:
            timeouts.append(1)

    w.load()    # the copy is here before the clock starts
    threads = [threading.Thread(target=waiter) for _ in range(nthreads)]
    cpu0, wall0 = time.process_time(), time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + SETTLE_S)
    return time.process_time() - cpu0, time.monotonic() - wall0, len(timeouts)


# ---- locks (test_sync) ---------------------------------------------------------------------

def count_under_lock(a, lock, start, n):
    """Pass ``start`` (a barrier of every thread of the run, so that they all
    contend), then ``n`` times under ``lock``: a non-atomic read-modify-write of
    a[0] (read int(a[0]), write it back plus one) and a check that nobody else
    is inside (a fetch-and-add on a[512], another page).  a[1024] (a third
    page) counts the threads that want the lock or hold it.  Returns (how many
    times someone else was found inside, how many of this thread's critical
    sections ran while another thread wanted the lock)."""
    inside, wanting = td.word(a, 512), td.word(a, 1024)
    overlaps = contended = 0
    start.wait(timeout=SETTLE_S)
    for _ in range(n):
        wanting.fetch_add(1)
        with lock:
            overlaps += inside.fetch_add(1) != 0
            v = int(a[0])
            a[0] = v + 1
            trap.check()
            contended += wanting.load() > 1
            inside.fetch_add(-1)
        wanting.fetch_add(-1)
    return overlaps, contended


def _increments(a, lock, n):
    """``n`` non-atomic increments of a[0] under ``lock``; returns how many times
    another thread was found inside the critical section (a[512] counts them)."""
    inside = td.word(a, 512)
    overlaps = 0
    for _ in range(n):
        with lock:
            overlaps += inside.fetch_add(1) != 0
            v = int(a[0])
            a[0] = v + 1
            trap.check()
            inside.fetch_add(-1)
    return overlaps


def count_under_lock_some(a, lock, n, threads_by_node):
    """count_under_lock without the start barrier, on the threads of
    ``threads_by_node[node]`` (the others return None at once)."""
    if td.current_thread() >= threads_by_node[td.current_node()]:
        return None
    return _increments(a, lock, n)


def queue_changed(lock, old):
    """Wait until the lock's queue shows one more waiter than ``old`` shows;
    returns the new observation.  White-box, per kind: ticket and anderson's
    word 1 is the next ticket (one fetch-and-add per enqueue), mcs's word 1
    the tail (swapped to each enqueuer's own qnode, so it changes at each
    one); the server lock's FIFO is its rep's queue on the home node (this node)."""
    if lock.kind == "server":
        rep = current_cos()._table[lock.oid].rep
        until(lambda: len(rep._queue) != old, "a server-lock waiter was queued")
        return len(rep._queue)
    value = td.wait(td.Word(lock.space.at(1)), old, timeout=SETTLE_S)
    return value


def queue_now(lock):
    """The observation queue_changed compares against."""
    if lock.kind == "server":
        return len(current_cos()._table[lock.oid].rep._queue)
    return td.Word(lock.space.at(1)).load()


def fifo_entries(lock, turn, order, ranks):
    """FIFO check, on 3 nodes x 2 threads.  ``ranks[party()]`` is this thread's
    rank; rank 0 (it must run on the lock's home, node 0) takes the lock, then
    for r = 1, 2, ... lets rank r start its acquire (turn := r) and waits until
    the lock's queue shows it queued (queue_changed) before letting r + 1 go:
    the ranks queue in rank order, one at a time.  Rank 0 then releases.
    Every rank appends itself to ``order`` (order[0] is the next free index)
    inside the critical section.  A FIFO lock must give order 0, 1, 2, ..."""
    rank = ranks[party()]
    turn_w, next_w = td.word(turn, 0), td.word(order, 0)
    if rank == 0:
        lock.acquire(timeout=SETTLE_S)
        order[1 + next_w.fetch_add(1)] = 0
        for r in range(1, len(ranks)):
            seen = queue_now(lock)
            turn_w.store(r)
            queue_changed(lock, seen)
        lock.release()
        return rank
    while (v := turn_w.load()) < rank:
        td.wait(turn_w, v, timeout=SETTLE_S)
    lock.acquire(timeout=SETTLE_S)
    order[1 + next_w.fetch_add(1)] = rank
    trap.check()
    lock.release()
    return rank


def try_acquire(lock, timeout, thread=0):
    """On one thread: acquire(timeout) -> ("ok", seconds) (released at once) or
    (exception type, message, seconds)."""
    if td.current_thread() != thread:
        return None
    t0 = time.monotonic()
    try:
        lock.acquire(timeout=timeout)
    except Exception as e:  # noqa: BLE001 - reported to the test
        return type(e).__name__, str(e), time.monotonic() - t0
    lock.release()
    return "ok", time.monotonic() - t0


def time_out_then_count(a, lock, flags, timeout, n):
    """On 3 nodes x 2 threads, node 0 thread 0 takes the lock and holds it until
    node 1 thread 0 timed out on it (flags[1] := 1); then every thread (the one
    that timed out included) does ``n`` counted critical sections (count_under_lock's
    body).  Returns (timeout outcome or None, overlaps)."""
    held, timed_out = td.word(flags, 0), td.word(flags, 1)
    outcome = None
    if party() == 0:
        lock.acquire(timeout=SETTLE_S)
        held.store(1)
        td.wait(timed_out, 0, timeout=SETTLE_S)
        lock.release()
    elif party() == 2:
        td.wait(held, 0, timeout=SETTLE_S)
        t0 = time.monotonic()
        try:
            lock.acquire(timeout=timeout)
            outcome = ("acquired",)
            lock.release()
        except TimeoutError as e:
            outcome = ("TimeoutError", str(e), time.monotonic() - t0)
        timed_out.store(1)
    else:
        td.wait(timed_out, 0, timeout=SETTLE_S)
    return outcome, _increments(a, lock, n)


def time_out_twice(lock, first, second):
    """On one node's thread 0, while another node holds the lock: acquire(first)
    times out (its queue place goes to a helper); then a *new* thread with the
    same run index (what the next `run` gives: a fresh thread, so in general
    another thread ident) tries acquire(second) while that place is still
    queued.  Returns both outcomes (try_acquire's form)."""
    from tornado_dsm import _runner
    if td.current_thread() != 0:
        return None
    outcomes = [try_acquire(lock, first)]

    def later_run_thread():
        _runner._local.thread = 0       # the run index a later run's thread 0 has
        outcomes.append(try_acquire(lock, second))

    t = threading.Thread(target=later_run_thread)
    t.start()                            # this thread is alive: the new one's ident differs
    t.join(SETTLE_S)
    return outcomes


def acquire_release(lock, n):
    """``n`` acquire/release pairs on each thread; returns n."""
    for _ in range(n):
        with lock:
            pass
    return n


def barrier_waits(b, n):
    """``n`` barrier waits on each thread; returns the episodes."""
    return [b.wait(timeout=SETTLE_S) for _ in range(n)]


def attempt_count(a, lock, n):
    """count_under_lock_some on this thread -> ("ok", overlaps) or (exception type, message)."""
    try:
        return "ok", count_under_lock_some(a, lock, n, [99] * 8)
    except Exception as e:  # noqa: BLE001 - reported to the test
        return type(e).__name__, str(e)


def attempt_release(lock):
    """lock.release() by this thread -> ("ok", "") or (exception type, message)."""
    try:
        lock.release()
    except Exception as e:  # noqa: BLE001 - reported to the test
        return type(e).__name__, str(e)
    return "ok", ""


# ---- barriers (test_sync) -------------------------------------------------------------------

def barrier_episodes(b, slots, episodes, parties_by_node, timeout=SETTLE_S):
    """The threads of ``parties_by_node[node]`` (the first k threads of each
    node) are the barrier's parties; the others return None.  Each party, for
    e = 0 .. episodes - 1: writes e + 1 into its own slot (a plain store),
    waits at the barrier, and then checks every party's slot: all must hold
    at least e + 1 (nobody left before everyone arrived) and at most e + 2
    (nobody is more than one episode ahead).  Returns (episode numbers wait
    returned, [(episode, slot values) that broke the rule])."""
    node, thread = td.current_node(), td.current_thread()
    if thread >= parties_by_node[node]:
        return None
    me = sum(parties_by_node[:node]) + thread
    nparties = sum(parties_by_node)
    got, bad = [], []
    for e in range(episodes):
        slots[me] = e + 1
        trap.check()
        got.append(b.wait(timeout=timeout))
        seen = [int(x) for x in slots[:nparties]]
        if not all(e + 1 <= s <= e + 2 for s in seen):
            bad.append((e, seen))
    return got, bad


def barrier_wait(b, timeout, parties_by_node):
    """One wait(timeout) on the first ``parties_by_node[node]`` threads of each
    node -> ("ok", episode) or (exception type, message)."""
    if td.current_thread() >= parties_by_node[td.current_node()]:
        return None
    try:
        return "ok", b.wait(timeout=timeout)
    except Exception as e:  # noqa: BLE001 - reported to the test
        return type(e).__name__, str(e)
