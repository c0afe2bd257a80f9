"""Words of shared arrays: atomics and waiting at the array level.

``td.word(array, index)`` names one 4- or 8-byte element of a shared array;
the `Word` travels to `Cluster.run` by value (an address means the same on
every node) and offers the kernel's atomics plus `wait` / `notify` with the
semantics of C++20 ``atomic::wait``: ``wait(word, old)`` returns once the
word no longer holds ``old``, without using a CPU meanwhile.  A write on
another node wakes it through the coherence protocol (the write revoked
this node's copy); a write on this node through the atomics notifies by
itself, a plain numpy store needs ``notify(word)`` after it.
"""

from __future__ import annotations

import attrs
import numpy as np

from tornado_dsm.kernel import atomic

_SIZES = {4: np.uint32, 8: np.uint64}


@attrs.frozen
class Word:
    """One aligned 4- or 8-byte word of shared memory (``address``, ``size``)
    and a name for messages ("array0[3]")."""

    address: int
    size: int = 8
    name: str = ""

    def load(self) -> int:
        """The word's value (unsigned)."""
        return atomic.load(self.address, self.size)

    def store(self, value: int) -> None:
        """Write ``value`` (wakes this node's waiters)."""
        atomic.store(self.address, value % (1 << 8 * self.size), self.size)

    def exchange(self, value: int) -> int:
        """Write ``value``; return the previous one."""
        return atomic.exchange(self.address, value % (1 << 8 * self.size), self.size)

    def fetch_add(self, delta: int) -> int:
        """Add ``delta`` (wrapping); return the previous value."""
        return atomic.fetch_add(self.address, delta, self.size)

    def compare_and_swap(self, expected: int, desired: int) -> int:
        """Write ``desired`` if the word holds ``expected``; return the value found."""
        mod = 1 << 8 * self.size
        return atomic.compare_and_swap(self.address, expected % mod, desired % mod, self.size)

    def __str__(self) -> str:
        return self.name or f"word at {self.address:#x}"


def word(array: np.ndarray, index=0) -> Word:
    """The word ``array[index]`` of a shared array whose dtype is a 4- or
    8-byte integer (int32, uint32, int64, uint64)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"word() takes a shared numpy array, not {type(array).__name__}")
    if array.dtype.kind not in "iu" or array.dtype.itemsize not in _SIZES:
        raise ValueError(f"a word must be a 4- or 8-byte integer (int32, uint32, int64, uint64), "
                         f"not {array.dtype}")
    offset = _offset(array, index)
    address = array.__array_interface__["data"][0] + offset
    return Word(address, array.dtype.itemsize, f"word [{index}] of the array at {address - offset:#x}")


def _offset(array: np.ndarray, index) -> int:
    """Byte offset of element ``index`` (an int, or a tuple of one int per axis)."""
    idx = index if isinstance(index, tuple) else (index,)
    if len(idx) != array.ndim or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                         for i in idx):
        raise ValueError(f"index {index!r} must name one element of an array of shape {array.shape} "
                         f"({array.ndim} integer{'s' if array.ndim != 1 else ''})")
    offset = 0
    for i, n, stride in zip(idx, array.shape, array.strides):
        if not -n <= i < n:
            raise IndexError(f"index {index!r} is out of bounds for an array of shape {array.shape}")
        offset += (int(i) % n) * stride
    return offset


def _as_word(w) -> Word:
    if isinstance(w, Word):
        return w
    raise TypeError(f"expected a Word (td.word(array, index)), not {type(w).__name__}")


def wait(w: Word, old: int, timeout: float | None = None) -> int:
    """Block until the word no longer holds ``old``; return its new value.

    Uses no CPU while it waits.  ``timeout`` (seconds, None: no limit):
    TimeoutError naming the word and the value it still held."""
    w = _as_word(w)
    try:
        return atomic.wait(w.address, old, w.size, timeout)
    except TimeoutError:
        raise TimeoutError(f"wait on {w}: it still held {old} after {timeout} s") from None


def notify(w: Word, count: int = 1) -> int:
    """Wake up to ``count`` threads of this node waiting on the word (after a
    plain store; the atomics notify by themselves); returns how many."""
    return atomic.notify(_as_word(w).address, count)


def notify_all(w: Word) -> int:
    """Wake every thread of this node waiting on the word; returns how many."""
    return atomic.notify_all(_as_word(w).address)
