"""The message-passing alternatives: a lock and a barrier kept by a clustered object.

A singleton clustered object on its home node holds the state; every other
node's calls reach it through its stub as remote PPCs (the home node's own
calls are local).  A call that must wait (an acquire while the lock is
held, a barrier arrival before the last one) waits inside the handler, on a
worker thread of the home node's PPC server, so the other calls go on
(`before_blocking` hands the connection's reading role to another thread
first, or the requests behind it would wait for the PPC monitor's tick).
"""

from __future__ import annotations

import collections
import threading

from tornado_dsm.kernel import ClusteredRep, ClusteredRoot, before_blocking


class ServerLockRep(ClusteredRep):
    """The holder and the FIFO queue of waiting tokens."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holder = 0
        self._queue: collections.deque = collections.deque()

    def acquire(self, token: int, timeout: float | None) -> bool:
        """Wait until ``token`` is first in line and the lock is free; take it.
        False if ``timeout`` seconds passed first (the token leaves the queue)."""
        self.assert_alive()
        with self._cond:
            self._queue.append(token)
            ready = lambda: not self._holder and self._queue[0] == token  # noqa: E731
            if not ready():
                before_blocking()       # this wait must not hold up the requests behind it
            if self._cond.wait_for(ready, timeout):
                self._queue.popleft()
                self._holder = token
                return True
            self._queue.remove(token)
            self._cond.notify_all()     # the next in line may be free to go now
            return False

    def release(self, token: int) -> None:
        """Give the lock up; RuntimeError if ``token`` does not hold it."""
        self.assert_alive()
        with self._cond:
            if self._holder != token:
                raise RuntimeError("server lock released with a token that does not hold it")
            self._holder = 0
            self._cond.notify_all()


class ServerLock(ClusteredRoot):
    """A lock on one node, reached by PPC (``create(ServerLock, policy="singleton")``)."""

    Rep = ServerLockRep
    POLICIES = ("singleton",)

    def rep_args(self, node: int) -> list:
        """The one rep starts free."""
        return []


class ServerBarrierRep(ClusteredRep):
    """Arrivals in the current episode and the episode number."""

    def __init__(self, parties: int) -> None:
        self._cond = threading.Condition()
        self._parties, self._arrived, self._episode = parties, 0, 0

    def wait(self, timeout: float | None) -> int:
        """Arrive; return the episode once every party arrived, or -1 after
        ``timeout`` seconds (the arrival is taken back)."""
        self.assert_alive()
        with self._cond:
            e = self._episode
            self._arrived += 1
            if self._arrived == self._parties:
                self._arrived, self._episode = 0, e + 1
                self._cond.notify_all()
                return e
            before_blocking()           # the other parties' arrivals come on this connection too
            if self._cond.wait_for(lambda: self._episode != e, timeout):
                return e
            self._arrived -= 1
            return -1


class ServerBarrier(ClusteredRoot):
    """A barrier on one node, reached by PPC."""

    Rep = ServerBarrierRep
    POLICIES = ("singleton",)

    def __init__(self, parties: int) -> None:
        self._parties = parties

    def rep_args(self, node: int) -> list:
        """The one rep counts ``parties`` arrivals per episode."""
        return [self._parties]
