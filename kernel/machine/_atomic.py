"""Atomics on window addresses: 4- and 8-byte, sequentially consistent.

Each runs in C with the GIL released; if the word is not mapped it faults and
the fault path resolves it as a write (a read for `load`), so under
single-writer coherence the operation is atomic across the cluster.

`wait` blocks until a word changes, without using a CPU (see _waitq): a
write on another node wakes it through the revocation of this node's copy,
and every store or read-modify-write here notifies this node's waiters.
"""

from __future__ import annotations

from ._lib import lib
from . import _trap, _waitq

_FUNCS = {
    4: dict(load=lib.td_load32, store=lib.td_store32, xchg=lib.td_xchg32, fadd=lib.td_fadd32,
            cas=lib.td_cas32, tas=lib.td_tas32),
    8: dict(load=lib.td_load64, store=lib.td_store64, xchg=lib.td_xchg64, fadd=lib.td_fadd64,
            cas=lib.td_cas64, tas=lib.td_tas64),
}


def _op(address: int, size: int, name: str):
    if size not in _FUNCS:
        raise ValueError(f"atomic size must be 4 or 8 bytes, not {size!r}")
    if address % size:
        raise ValueError(f"address {address:#x} is not aligned to {size} bytes")
    if not _trap.in_window(address, size):
        raise ValueError(f"address {address:#x} (+{size} bytes) is not inside a tornado_dsm window")
    return _FUNCS[size][name]


def load(address: int, size: int = 8) -> int:
    """Atomically read the word at ``address``."""
    return _op(address, size, "load")(address)


def store(address: int, value: int, size: int = 8) -> None:
    """Atomically write ``value`` at ``address``."""
    _op(address, size, "store")(address, value)
    if _waitq.waiting:
        _waitq.notify_all(address)


def exchange(address: int, value: int, size: int = 8) -> int:
    """Store ``value``; return the previous word."""
    return _notified(address, _op(address, size, "xchg")(address, value))


def fetch_add(address: int, delta: int, size: int = 8) -> int:
    """Add ``delta`` (modulo 2**(8*size)); return the previous word."""
    return _notified(address, _op(address, size, "fadd")(address, delta % (1 << (8 * size))))


def compare_and_swap(address: int, expected: int, desired: int, size: int = 8) -> int:
    """Store ``desired`` if the word equals ``expected``; return the word found
    (the swap happened iff it equals ``expected``)."""
    return _notified(address, _op(address, size, "cas")(address, expected, desired))


def test_and_set(address: int, size: int = 8) -> int:
    """Store 1; return the previous word (0 means the caller took the lock)."""
    return _notified(address, _op(address, size, "tas")(address))


def wait(address: int, old: int, size: int = 8, timeout: float | None = None) -> int:
    """Block until the word at ``address`` no longer holds ``old`` (compared as
    an unsigned ``size``-byte word); return the value it holds then.  Uses no
    CPU while it waits.  ``timeout``: seconds, then TimeoutError naming the
    word and the value (None: wait as long as it takes)."""
    _op(address, size, "load")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not timeout >= 0):
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
    # checked on every read: a window closed meanwhile is a ValueError, not a crash
    return _waitq.wait(address, old % (1 << (8 * size)), lambda a: load(a, size), timeout)


def notify(address: int, count: int = 1) -> int:
    """Wake up to ``count`` threads of this node waiting on the word at
    ``address``; returns how many.  Needed after a plain (non-atomic) store on
    this node only: the atomics here notify by themselves, and waiters on
    other nodes are woken by the write's invalidation of their copies."""
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError(f"count must be a positive integer, not {count!r}")
    return _waitq.notify(address, count)


def notify_all(address: int) -> int:
    """Wake every thread of this node waiting on the word at ``address``."""
    return _waitq.notify_all(address)


def wake_all_waiters() -> int:
    """Wake every thread of this node waiting on any word (see `wait`)."""
    return _waitq.wake_all()


def configure_waits(read_takes_page: bool) -> None:
    """Tell `wait` whether a read takes the page away from other nodes (the
    migration protocol), so that waiters woken for nothing back off."""
    _waitq.configure(read_takes_page)


def _notified(address: int, result: int) -> int:
    """A read-modify-write happened at ``address``: wake this node's waiters."""
    if _waitq.waiting:
        _waitq.notify_all(address)
    return result
