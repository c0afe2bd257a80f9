"""Atomics on window addresses: 4- and 8-byte, sequentially consistent.

Each runs in C with the GIL released; if the word is not mapped it faults and
the fault path resolves it as a write (a read for `load`), so under
single-writer coherence the operation is atomic across the cluster.
"""

from __future__ import annotations

from ._lib import lib
from . import _trap

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


def exchange(address: int, value: int, size: int = 8) -> int:
    """Store ``value``; return the previous word."""
    return _op(address, size, "xchg")(address, value)


def fetch_add(address: int, delta: int, size: int = 8) -> int:
    """Add ``delta`` (modulo 2**(8*size)); return the previous word."""
    return _op(address, size, "fadd")(address, delta % (1 << (8 * size)))


def compare_and_swap(address: int, expected: int, desired: int, size: int = 8) -> int:
    """Store ``desired`` if the word equals ``expected``; return the word found
    (the swap happened iff it equals ``expected``)."""
    return _op(address, size, "cas")(address, expected, desired)


def test_and_set(address: int, size: int = 8) -> int:
    """Store 1; return the previous word (0 means the caller took the lock)."""
    return _op(address, size, "tas")(address)
