"""Mutual-exclusion locks on DSM words: the classic shared-memory algorithms.

Every kind is written with the kernel's atomics and `wait` on the words of
a `SyncSpace` (see _syncspace), so what it costs on a page-based DSM is
what the algorithm makes the pages do:

* ``tas``: test-and-set in a loop.  Every attempt is a write, so every
  spinner pulls the lock's page to its node, also while the lock is held:
  traffic grows with the number of waiters.  It spins (yielding the GIL).
* ``ttas``: test-and-test-and-set.  Waiters read the flag, which leaves a
  read copy on each node, and sleep in `wait` until the release invalidates
  it; then all of them try the test-and-set at once.
* ``backoff``: test-and-set with exponential delay between attempts
  (``BACKOFF_MIN_S`` doubling to ``BACKOFF_MAX_S``).
* ``ticket``: take a ticket (fetch-and-add), wait until ``now_serving``
  reaches it; a waiter k places behind sleeps about k times
  ``TICKET_STEP_S`` before it reads again (proportional back-off).  FIFO.
  Every release invalidates every waiter's copy of ``now_serving``.
* ``anderson``: array-based queue lock.  The ticket picks a flag in an
  array of one flag per thread; each waiter waits on its own flag, and the
  release sets only the next one.  FIFO; with ``padding="page"`` one
  invalidation per hand-over.
* ``mcs``: linked-list queue lock.  Each thread has a qnode (next, locked)
  of its own; the tail is swapped in, a waiter waits on its own ``locked``
  word, the holder hands over to its successor directly.  FIFO, O(1)
  remote traffic per acquire.
* ``server``: no shared words at all; a clustered object on its home node
  keeps the lock and a FIFO queue, reached by PPC (the message-passing
  alternative: two messages per acquire, two per release).

A queue lock cannot leave its place in the queue, so an ``acquire`` that
times out while queued hands its place to a helper thread, which waits for
the turn and passes the lock straight on; the caller gets TimeoutError at
once and the lock keeps working.
"""

from __future__ import annotations

import itertools
import threading
import time

import attrs

from tornado_dsm.kernel import atomic

from ._syncspace import SyncObject, SyncSpace, deadline_of, thread_key

KINDS = ("tas", "ttas", "backoff", "ticket", "anderson", "mcs", "server")
BACKOFF_MIN_S = 10e-6
BACKOFF_MAX_S = 2e-3
TICKET_STEP_S = 50e-6

_held: dict = {}                 # (uid, thread ident) -> the holder's token, on this node
_abandoned: dict = {}            # (uid, node, run thread index) -> helper thread holding its queue place
_tokens = itertools.count(1)


def words_needed(kind: str, capacity: int) -> int:
    """Words of a lock of ``kind`` for ``capacity`` threads (word 0: slot claims)."""
    return {"anderson": 2 + capacity, "mcs": 2 + 2 * capacity, "ticket": 3, "server": 1}.get(kind, 2)


def initialize(kind: str, space: SyncSpace) -> None:
    """Node 0, at creation: the words that do not start at zero."""
    if kind == "anderson":
        atomic.store(space.at(2), 1)   # the first flag: its holder may enter


@attrs.frozen
class Lock(SyncObject):
    """A lock of the cluster (``cluster.lock(kind=...)``); pass it to `run` and
    use it as ``with lock:`` on any node.  Not re-entrant."""

    space: SyncSpace
    home: int = 0
    oid: int = 0          # the server lock's clustered object

    def acquire(self, timeout: float | None = None) -> bool:
        """Take the lock, waiting at most ``timeout`` seconds (None: as long as
        it takes); True, or TimeoutError naming the lock.  A thread holding it
        already gets RuntimeError (it would wait for itself)."""
        self.space.check_open()
        key = (self.space.uid, threading.get_ident())
        if key in _held:
            raise RuntimeError(f"{self.name} is already held by this thread (locks are not re-entrant)")
        deadline = deadline_of(timeout)
        # keyed like the thread's slot (its qnode): a later run's thread of the same
        # index is a new thread (another ident) but uses the same qnode
        place = (self.space.uid, *thread_key())
        helper = _abandoned.get(place)
        if helper is not None:      # its qnode is still queued: wait until the helper let go
            helper.join(_left(deadline))
            if helper.is_alive():
                raise _timed_out(self, " (its previous, abandoned place is still queued)")
            _abandoned.pop(place, None)
        _held[key] = _ALGORITHMS[self.kind].acquire(self, deadline)
        return True

    def release(self) -> None:
        """Give the lock up; RuntimeError if the calling thread does not hold it."""
        self.space.check_open()
        token = _held.pop((self.space.uid, threading.get_ident()), None)
        if token is None:
            raise RuntimeError(f"{self.name} released by a thread that does not hold it")
        _ALGORITHMS[self.kind].release(self, token)

    def held(self) -> bool:
        """Whether the calling thread holds the lock."""
        return (self.space.uid, threading.get_ident()) in _held

    def __enter__(self) -> "Lock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _late(deadline) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def _timed_out(lock: Lock, timeout_note: str = "") -> TimeoutError:
    return TimeoutError(f"{lock.name}: not acquired within the timeout{timeout_note}")


def _left(deadline):
    return None if deadline is None else max(0.0, deadline - time.monotonic())


# ---- test-and-set family ---------------------------------------------------------------

class _TAS:
    """Word 1: the flag (0 free, 1 held)."""

    @staticmethod
    def acquire(lock: Lock, deadline) -> int:
        flag, tries = lock.space.at(1), 1
        while atomic.test_and_set(flag):
            if _late(deadline):
                lock.space.count(tries)
                raise _timed_out(lock)
            tries += 1
            time.sleep(0)           # let this node's other threads (and its PPC server) run
        lock.space.count(tries, 1)
        return 1

    @staticmethod
    def release(lock: Lock, token: int) -> None:
        atomic.store(lock.space.at(1), 0)


class _TTAS(_TAS):
    @staticmethod
    def acquire(lock: Lock, deadline) -> int:
        flag, tries = lock.space.at(1), 0
        while True:
            while atomic.load(flag):
                try:                # sleeps until the release revokes this node's copy
                    atomic.wait(flag, 1, timeout=_left(deadline))
                except TimeoutError:
                    lock.space.count(tries)
                    raise _timed_out(lock) from None
            tries += 1
            if not atomic.test_and_set(flag):
                lock.space.count(tries, 1)
                return 1


class _Backoff(_TAS):
    @staticmethod
    def acquire(lock: Lock, deadline) -> int:
        flag, tries, delay = lock.space.at(1), 1, BACKOFF_MIN_S
        while atomic.test_and_set(flag):
            if _late(deadline):
                lock.space.count(tries)
                raise _timed_out(lock)
            time.sleep(delay)
            delay = min(2 * delay, BACKOFF_MAX_S)
            tries += 1
        lock.space.count(tries, 1)
        return 1


# ---- queue locks -------------------------------------------------------------------------

def _queued_wait(lock: Lock, deadline, turn, finish) -> None:
    """Run ``turn(timeout)`` (wait for this thread's turn); on timeout hand the
    place to a helper thread that waits for the turn and runs ``finish``
    (passes the lock on), then raise TimeoutError."""
    try:
        turn(_left(deadline))
    except TimeoutError:
        helper = threading.Thread(target=lambda: (turn(None), finish()), daemon=True,
                                  name=f"tornado_dsm-abandoned-{lock.space.uid}")
        _abandoned[(lock.space.uid, *thread_key())] = helper
        helper.start()
        raise _timed_out(lock, " (its place in the queue is passed on when it comes)") from None


class _Ticket:
    """Word 1: next ticket; word 2: now serving."""

    @staticmethod
    def acquire(lock: Lock, deadline) -> int:
        nxt, serving = lock.space.at(1), lock.space.at(2)
        mine = atomic.fetch_add(nxt, 1)
        lock.space.count(1, 1)

        def turn(timeout):
            end = None if timeout is None else time.monotonic() + timeout
            while (now := atomic.load(serving)) != mine:
                ahead = (mine - now) % (1 << 64)
                if ahead > 1:       # proportional back-off: do not read while far behind
                    time.sleep(min(TICKET_STEP_S * (ahead - 1), BACKOFF_MAX_S))
                    if end is not None and time.monotonic() >= end:
                        raise TimeoutError
                else:
                    atomic.wait(serving, now, timeout=_left(end))
        _queued_wait(lock, deadline, turn, lambda: _Ticket.release(lock, mine))
        return mine

    @staticmethod
    def release(lock: Lock, token: int) -> None:
        atomic.store(lock.space.at(2), token + 1)   # only the holder writes it


class _Anderson:
    """Word 1: next ticket; words 2..2+P: one flag per place (1: may enter)."""

    @staticmethod
    def acquire(lock: Lock, deadline) -> int:
        s = lock.space
        s.slot("threads")           # at most capacity threads: no two share a flag
        place = atomic.fetch_add(s.at(1), 1) % s.capacity
        flag = s.at(2 + place)
        s.count(1, 1)

        def turn(timeout):
            atomic.wait(flag, 0, timeout=timeout)

        def passed_on():            # the helper, at an abandoned place's turn: reset, hand over
            atomic.store(flag, 0)
            _Anderson.release(lock, place)
        _queued_wait(lock, deadline, turn, passed_on)
        atomic.store(flag, 0)       # reset for the next round of the array
        return place

    @staticmethod
    def release(lock: Lock, token: int) -> None:
        s = lock.space
        atomic.store(s.at(2 + (token + 1) % s.capacity), 1)


class _MCS:
    """Word 1: tail (slot + 1, 0: free); per slot i: next at 2 + 2i, locked at 3 + 2i."""

    @staticmethod
    def acquire(lock: Lock, deadline) -> int:
        s = lock.space
        me = s.slot("threads")
        nxt, locked = s.at(2 + 2 * me), s.at(3 + 2 * me)
        atomic.store(nxt, 0)
        atomic.store(locked, 1)
        pred = atomic.exchange(s.at(1), me + 1)
        s.count(1, 1)
        if pred:
            atomic.store(s.at(2 + 2 * (pred - 1)), me + 1)   # link behind the predecessor

            def turn(timeout):
                atomic.wait(locked, 1, timeout=timeout)
            _queued_wait(lock, deadline, turn, lambda: _MCS.release(lock, me))
        return me

    @staticmethod
    def release(lock: Lock, token: int) -> None:
        s = lock.space
        nxt = s.at(2 + 2 * token)
        succ = atomic.load(nxt)
        if not succ:
            s.count(1)
            if atomic.compare_and_swap(s.at(1), token + 1, 0) == token + 1:
                return              # nobody behind
            while not (succ := atomic.load(nxt)):   # a successor is linking in
                atomic.wait(nxt, 0)
        atomic.store(s.at(3 + 2 * (succ - 1)), 0)


class _Server:
    """No words: PPCs to the lock's clustered object (_syncserver.ServerLock)."""

    @staticmethod
    def acquire(lock: Lock, deadline) -> int:
        from tornado_dsm.kernel import current_cos
        token = current_cos().node << 40 | next(_tokens)   # unique in the cluster
        if not current_cos().call(lock.oid, "acquire", token, _left(deadline)):
            raise _timed_out(lock)
        lock.space.count(0, 1)
        return token

    @staticmethod
    def release(lock: Lock, token: int) -> None:
        from tornado_dsm.kernel import current_cos
        current_cos().call(lock.oid, "release", token)


_ALGORITHMS = {"tas": _TAS, "ttas": _TTAS, "backoff": _Backoff, "ticket": _Ticket,
               "anderson": _Anderson, "mcs": _MCS, "server": _Server}
