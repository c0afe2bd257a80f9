"""Wait queues on window words: blocking until a word changes, woken by coherence.

A futex for a page-based DSM.  ``wait(address, old)`` returns once the word
no longer holds ``old``; the thread sleeps on an Event meanwhile, so it uses
no CPU.  Who wakes it:

* **a write on another node.**  Single-writer coherence means a node that
  writes a page holds it alone: every other node's copy was revoked first.
  The HAT calls `wake_pages` whenever it revokes all access to pages, so the
  waiters of those pages wake up in the invalidation path itself and re-read
  the word (which faults a fresh copy in).  No message and no polling.
* **a write on the waiter's own node.**  Threads of one node share the frame,
  so nothing is revoked: the atomics API calls `notify_all` after every
  store and read-modify-write, and a plain numpy store must be followed by
  `notify` / `notify_all` (as with C++20 ``atomic::wait``).

Why a wake-up is never lost: a waiter registers on its page *before* it reads
the word for the last time.  If that read sees ``old``, the node holds a valid
copy of the page at that moment, so any later write anywhere must either
revoke that copy (another node) or come with a notify (this node), and both
set the registered Event, even if they happen before the waiter sleeps.

Wake-ups can be spurious (a revocation for another word of the page, a false
sharing write, an eviction): the waiter re-reads and sleeps again.  Under the
migration protocol a read takes the page away from the node that had it, so
two waiters of one page would take it from each other for ever; a waiter
woken for nothing there backs off (``BACKOFF_S``, doubling up to
``BACKOFF_MAX_S``) before it reads again (`configure`); under IVY a read
revokes nobody's copy, so waiters re-read at once.  During the back-off only a notify
on its node ends the sleep early (a revocation would restart the duel).

The HAT's hook costs one integer test while nobody waits (`waiting`).
"""

from __future__ import annotations

import threading
import time

from ._lib import PAGE

BACKOFF_S = 50e-6
BACKOFF_MAX_S = 20e-3

_lock = threading.Lock()
_queues: dict[int, list] = {}   # page address -> [_Waiter], oldest first
waiting = 0                     # registered waiters on this node (the HAT's cheap test)
backoff_reads = False           # configure(): a read takes the page (migrate)


class _Waiter:
    __slots__ = ("address", "event", "notified")

    def __init__(self, address: int) -> None:
        self.address = address
        self.event = threading.Event()      # set by a revocation or a notify
        self.notified = threading.Event()   # set by a notify only (ends a back-off)


def _register(address: int) -> _Waiter:
    global waiting
    w = _Waiter(address)
    with _lock:
        _queues.setdefault(address - address % PAGE, []).append(w)
        waiting += 1
    return w


def _unregister(w: _Waiter) -> None:
    global waiting
    page = w.address - w.address % PAGE
    with _lock:
        queue = _queues.get(page)
        if queue is not None and w in queue:
            queue.remove(w)
            waiting -= 1
            if not queue:
                del _queues[page]


def wake_pages(first_address: int, npages: int) -> int:
    """Wake every waiter on the pages [first_address, + npages pages) (their
    access was revoked); returns how many.  Called by the HAT, under the
    caller's page locks: it takes only this module's lock, never blocks."""
    end = first_address + npages * PAGE
    woken = 0
    with _lock:
        pages = [p for p in _queues if first_address <= p < end]
        for p in pages:
            for w in _queues[p]:
                w.event.set()
                woken += 1
    return woken


def wake_all() -> int:
    """Wake every waiter of this node (an interrupt: they re-read, and a pending
    KeyboardInterrupt reaches them in Python code)."""
    woken = 0
    with _lock:
        for queue in _queues.values():
            for w in queue:
                w.event.set()
                w.notified.set()
                woken += 1
    return woken


def notify(address: int, count: int | None = 1) -> int:
    """Wake ``count`` waiters (None: all) of the word at ``address`` on this
    node, oldest first; returns how many.  Waiters on other nodes need no
    notify: the write that changed the word revoked their copies."""
    woken = 0
    with _lock:
        for w in _queues.get(address - address % PAGE, ()):
            if w.address == address and not w.notified.is_set():
                w.event.set()
                w.notified.set()
                woken += 1
                if count is not None and woken >= count:
                    break
    return woken


def notify_all(address: int) -> int:
    """Wake every waiter of the word at ``address`` on this node."""
    return notify(address, None)


def wait(address: int, old: int, load, timeout: float | None = None) -> int:
    """Block until ``load(address)`` differs from ``old``; return the new value.

    ``load`` reads the word (an atomic load: it faults a copy in when the
    node has none).  ``timeout``: seconds; TimeoutError naming the word and
    the value it still held.  The caller checks arguments (see _atomic)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    value = load(address)
    spurious = 0
    while value == old:
        w = _register(address)
        try:
            value = load(address)           # the last read, with the waiter registered
            if value != old:
                return value
            w.event.wait(_remaining(deadline, None, address, old))
            if spurious and backoff_reads:  # woken for nothing before: let the page rest
                w.notified.wait(_remaining(deadline, min(BACKOFF_MAX_S, BACKOFF_S * 2 ** spurious), address, old))
        finally:
            _unregister(w)
        value = load(address)
        spurious += value == old
    return value


def configure(read_takes_page: bool) -> None:
    """Say whether a read fault takes the page from the node that had it (the
    migration protocol): then waiters woken for nothing back off (see above)."""
    global backoff_reads
    backoff_reads = bool(read_takes_page)


def _remaining(deadline, cap, address: int, old: int):
    """Seconds to sleep: ``cap`` (None: until woken) bounded by the deadline;
    TimeoutError once it has passed."""
    if deadline is None:
        return cap
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"wait on the word at {address:#x}: it still holds {old} after the timeout")
    return left if cap is None else min(cap, left)
