"""The arrays a Cluster handed out: their table, the use-after-free check, argument checks
and the error of an incomplete write-back.

A cheap generation check for the API: every array a cluster hands out is a
view of one buffer object of its own (``view_at``), and numpy keeps it at the
end of every view's base chain.  Once an array is freed its buffer is
remembered (weakly), so a view of it is recognised even after its addresses
were reused.  It cannot see plain loads and stores through a stale view:
those only fault while the addresses are quarantined.
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from tornado_dsm.kernel import PAGE, view_at


class WriteBackError(OSError):
    """Some file-backed arrays could not be fully written back: their unflushed
    writes on the nodes named are lost (the file keeps what was flushed before,
    and the pages every other node held were written and fsynced).

    ``failures``: [(array name, reason)], one per array.
    """

    __module__ = "tornado_dsm"

    def __init__(self, failures) -> None:
        self.failures = [(str(name), str(reason)) for name, reason in failures]
        n = len(self.failures)
        listed = "; ".join(f"{name!r}: {reason}" for name, reason in self.failures)
        super().__init__(f"write-back of {n} file-backed array{'s' if n != 1 else ''} incomplete "
                         f"(unflushed writes there are lost): {listed}")

    def __reduce__(self):
        return (WriteBackError, (self.failures,))


def lost_reason(lost) -> str:
    """Why a write-back missed nodes: each lost node and why."""
    return "nodes could not hand over their dirty pages: " + ", ".join(
        f"node {node} ({why})" for node, why in lost)


class ArrayTable:
    """Live arrays by start address -> (Allocation, kind, view), and freed buffers.

    ``kind`` is "anonymous", "file" or "sync" (a lock's or barrier's words)."""

    def __init__(self) -> None:
        self._arrays: dict[int, tuple] = {}
        # id(root buffer) -> (weakref to it, name) of freed arrays' views (freed_name)
        self._freed: dict[int, tuple] = {}
        self._lock = threading.Lock()

    def register(self, a, kind: str, shape, dtype) -> np.ndarray:
        """The user's view of allocation ``a``, remembered under its start."""
        view = view_at(a.start, shape, dtype)
        with self._lock:
            self._arrays[a.start] = (a, kind, view)
        return view

    def entries(self, kind: str | None = None) -> list:
        """[(Allocation, kind, view)] of the live arrays (of ``kind`` only, if given), oldest first."""
        with self._lock:
            return [e for e in self._arrays.values() if kind is None or e[1] == kind]

    def by_start(self) -> dict:
        """{start: (start, npages)} of the live arrays: what `run` packs arguments against."""
        with self._lock:
            return {start: (a.start, a.npages) for start, (a, *_) in self._arrays.items()}

    def forget(self, a) -> None:
        """Take ``a`` out of the table; its views are known as freed from now on."""
        with self._lock:
            entry = self._arrays.pop(a.start, None)
        if entry is not None:
            self._remember_freed(entry[2], a.name)

    def allocation(self, array):
        """(Allocation, kind) of the live array ``array`` is a view of; TypeError or
        ValueError (naming the array if it was freed) otherwise."""
        if not isinstance(array, np.ndarray):
            raise TypeError(f"expected a shared numpy array from this cluster, not {type(array).__name__}")
        name = self.freed_name(array)
        if name is not None:
            raise ValueError(f"use after free: this is a view of array {name!r}, which was freed")
        address = array.__array_interface__["data"][0]
        entry = self._holding(address)
        if entry is None:
            raise ValueError(f"array at {address:#x} is not a live shared array of this cluster "
                             "(never allocated here, or already freed)")
        return entry[0], entry[1]

    def check_not_reused(self, array: np.ndarray) -> None:
        """For run(): a view of a freed array whose addresses now hold another
        array is refused (on the nodes it would be that array's memory); while
        they are quarantined it travels as usual and faults where it is touched."""
        name = self.freed_name(array)
        if name is not None and self._holding(array.__array_interface__["data"][0]) is not None:
            raise ValueError(f"use after free: an argument is a view of array {name!r}, which was freed; "
                             "its addresses now belong to another array")

    def freed_name(self, array: np.ndarray) -> str | None:
        """The name of the freed array ``array`` is a view of, or None."""
        root = root_buffer(array)
        entry = self._freed.get(id(root))
        return entry[1] if entry is not None and entry[0]() is root else None

    def _holding(self, address: int):
        with self._lock:
            for start, entry in self._arrays.items():
                if start <= address < start + entry[0].npages * PAGE:
                    return entry
        return None

    def _remember_freed(self, view: np.ndarray, name: str) -> None:
        root, freed = root_buffer(view), self._freed
        key = id(root)

        def forget(ref, key=key):
            if freed.get(key, (None,))[0] is ref:
                del freed[key]
        try:
            freed[key] = (weakref.ref(root, forget), name)
        except TypeError:  # not weakly referenceable: no generation check for it
            pass


def root_buffer(array):
    """The object at the end of an array's base chain (arrays, memoryviews)."""
    obj = array
    for _ in range(64):
        if isinstance(obj, np.ndarray) and obj.base is not None:
            obj = obj.base
        elif isinstance(obj, memoryview):
            obj = obj.obj
        else:
            break
    return obj


def check_shape(shape) -> tuple:
    """``shape`` as a tuple of non-negative ints (an int is a 1-d shape)."""
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, tuple) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f"shape must be a non-negative int or a tuple of them, not {shape!r}")
    return tuple(int(d) for d in shape)


def check_dtype(dtype) -> np.dtype:
    """``dtype`` as a numpy dtype that can live in shared memory (no Python objects)."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype {dtype!r} is not a numpy dtype (e.g. 'float64', np.int32): {exc}") from None
    if dt.hasobject:
        raise ValueError(f"dtype {dt} holds Python objects, which cannot live in shared memory; "
                         "use a numeric or fixed-size dtype")
    return dt
