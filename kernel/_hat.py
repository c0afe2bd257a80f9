"""HAT: the hardware address translation of one node's application view.

Maps runs of virtual pages to the node's frames with a protection.  The frame
of page v is always at memfd offset v * PAGE (identity placement), so mapping
is only a protection change: one `mprotect` per run of contiguous pages, which
keeps neighbouring pages in one kernel mapping and makes a run cost about as
much as one page.  Per-page state is one uint8 numpy array that the C trap
reads too (portable decode, scratch restore).
"""

from __future__ import annotations

import errno
import threading

import attrs
import numpy as np

from ._errors import MemoryLayoutError
from ._lib import PAGE, ffi, lib

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2  # read-write: x86 has no write-only pages
PROT_NAMES = {PROT_NONE: "none", PROT_READ: "read", PROT_WRITE: "read-write"}
_OS_PROT = {
    PROT_NONE: lib.PROT_NONE,
    PROT_READ: lib.PROT_READ,
    PROT_WRITE: lib.PROT_READ | lib.PROT_WRITE,
}


@attrs.frozen
class HATStatistics:
    """Mapped pages by protection and the cost of keeping them."""

    pages_none: int
    pages_read: int
    pages_write: int
    mprotect_calls: int
    pages_changed: int

    @property
    def pages_per_call(self) -> float:
        """Mean number of pages one mprotect changed."""
        return self.pages_changed / self.mprotect_calls if self.mprotect_calls else 0.0


class HAT:
    """Protections of ``npages`` pages starting at ``base``."""

    def __init__(self, base: int, npages: int) -> None:
        self.base = base
        self.npages = npages
        self.prot = np.zeros(npages, dtype=np.uint8)
        self._lock = threading.Lock()
        self._calls = 0
        self._changed = 0

    def protect(self, first: int, count: int, prot: int) -> None:
        """Set pages [first, first + count) to ``prot`` with one mprotect."""
        self._check_run(first, count, prot)
        with self._lock:
            self._locked_mprotect(first, count, prot)

    def protect_pages(self, pages, prot: int) -> None:
        """Set every page in ``pages`` (any order, repeats allowed) to ``prot``,
        one mprotect per run of contiguous pages."""
        pages = np.unique(np.asarray(pages, dtype=np.int64))
        if pages.size == 0:
            return
        self._check_run(int(pages[0]), int(pages[-1] - pages[0] + 1), prot)
        breaks = np.flatnonzero(np.diff(pages) != 1) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [pages.size]))
        with self._lock:
            for s, e in zip(starts.tolist(), ends.tolist()):
                self._locked_mprotect(int(pages[s]), e - s, prot)

    def map(self, first: int, count: int = 1, prot: int = PROT_READ) -> None:
        """Map a run readable (PROT_READ) or writable (PROT_WRITE)."""
        if prot not in (PROT_READ, PROT_WRITE):
            raise ValueError(f"map takes PROT_READ or PROT_WRITE, not {prot!r}")
        self.protect(first, count, prot)

    def unmap(self, first: int, count: int = 1) -> None:
        """Revoke every access to a run (the frames are kept)."""
        self.protect(first, count, PROT_NONE)

    def statistics(self) -> HATStatistics:
        """A snapshot of the HAT's state and counters."""
        counts = np.bincount(self.prot, minlength=3)
        return HATStatistics(
            pages_none=int(counts[PROT_NONE]),
            pages_read=int(counts[PROT_READ]),
            pages_write=int(counts[PROT_WRITE]),
            mprotect_calls=self._calls,
            pages_changed=self._changed,
        )

    def _check_run(self, first: int, count: int, prot: int) -> None:
        if prot not in _OS_PROT:
            raise ValueError(f"protection must be PROT_NONE, PROT_READ or PROT_WRITE (0-2), not {prot!r}")
        if count < 1 or first < 0 or first + count > self.npages:
            raise ValueError(
                f"page run [{first}, {first + count}) is outside the window's pages [0, {self.npages})"
            )

    def _locked_mprotect(self, first: int, count: int, prot: int) -> None:
        """mprotect one run and record it; the caller holds self._lock."""
        addr = ffi.cast("void *", self.base + first * PAGE)
        if lib.mprotect(addr, count * PAGE, _OS_PROT[prot]) != 0:
            err = ffi.errno
            if err == errno.ENOMEM:
                raise MemoryLayoutError(
                    errno.ENOMEM,
                    "mprotect: the process has too many memory mappings; raise the "
                    "limit with `sysctl -w vm.max_map_count=262144` (now "
                    f"{_max_map_count()}), or map pages in longer runs",
                )
            raise OSError(err, f"mprotect of pages [{first}, {first + count}) failed")
        self.prot[first:first + count] = prot
        self._calls += 1
        self._changed += count


def _max_map_count() -> str:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return f.read().strip()
    except OSError:
        return "unknown"
