"""Object locks and the lock-debug mode.

Existence in the COS is by reference counts, never by hierarchical locks: an
object takes its own lock only around its own state and never holds it while
calling another clustered object (or its own root or reps on other nodes).
A call made under a lock is how distributed deadlocks start — node A's rep
holds its lock and waits on node B, whose handler waits for that same lock.

``ObjectLock`` is the lock type objects use.  In debug mode
(``TORNADO_DSM_DEBUG_LOCKS=1`` in the environment, read at import and again
when a node attaches its COS; spawned nodes inherit the environment) every
ObjectLock records itself on a per-thread stack while held, and every
clustered-object call checks that stack first: a call made while the thread
holds an object lock raises ``DSMInternalError`` naming the lock's object and
the called object.  Off, the check costs one global read per call.
"""

from __future__ import annotations

import os
import threading

from ..machine import DSMInternalError

ENV_VAR = "TORNADO_DSM_DEBUG_LOCKS"

_held = threading.local()
enabled = False  # module global: read on every call, set by refresh()/set_debug()


def refresh() -> bool:
    """Re-read ``TORNADO_DSM_DEBUG_LOCKS`` (``1`` turns debug on); return the mode."""
    return set_debug(os.environ.get(ENV_VAR, "") == "1")


def set_debug(on: bool) -> bool:
    """Turn lock debugging on or off for this process; return the mode."""
    global enabled
    enabled = bool(on)
    return enabled


def held_locks() -> tuple[str, ...]:
    """Owners of the ObjectLocks the calling thread holds (debug mode only)."""
    return tuple(getattr(_held, "stack", ()))


def check_call(target: str) -> None:
    """Raise DSMInternalError if this thread holds an object lock (call in debug mode only).

    ``target`` names the object being called, e.g. ``"counter (0x101).inc"``.
    """
    stack = getattr(_held, "stack", None)
    if stack:
        raise DSMInternalError(
            "clustered object call",
            f"{target} called while this thread holds the lock of {stack[-1]}: "
            "an object never holds its own lock while calling another object",
        )


class ObjectLock:
    """A (non-reentrant by default) lock owned by one clustered object.

    ``owner`` names the object in debug messages.  Use it as a context
    manager; methods that require it held are named ``locked_*``.
    """

    __slots__ = ("_lock", "owner")

    def __init__(self, owner: str, reentrant: bool = False) -> None:
        self._lock = threading.RLock() if reentrant else threading.Lock()
        self.owner = owner

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock (same contract as threading.Lock.acquire)."""
        got = self._lock.acquire(blocking, timeout)
        if got and enabled:
            stack = getattr(_held, "stack", None)
            if stack is None:
                stack = _held.stack = []
            stack.append(self.owner)
        return got

    def release(self) -> None:
        """Release the lock; in debug mode, pop it from this thread's held stack."""
        if enabled:
            stack = getattr(_held, "stack", None)
            if stack and self.owner in stack:
                # remove the innermost occurrence: locks may be released out of order
                del stack[len(stack) - 1 - stack[::-1].index(self.owner)]
        self._lock.release()

    def __enter__(self) -> "ObjectLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"ObjectLock({self.owner!r})"


refresh()
