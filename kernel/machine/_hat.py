"""HAT: the hardware address translation of one node's application view.

Maps runs of virtual pages to the node's frames with a protection.  The frame
of page v is always at memfd offset v * PAGE (identity placement), so mapping
is only a protection change, one system call per run of contiguous pages: an
`mprotect` (backend "mprotect", which keeps neighbouring pages of equal
protection in one kernel mapping), or on backend "uffd" a page-table change
of the one registered mapping (UFFDIO_CONTINUE / UFFDIO_WRITEPROTECT /
MADV_DONTNEED, _uffd.c).  The interface and the per-page state are the same
for both: one uint8 numpy array that the C trap reads too (portable decode,
scratch restore).  Revoking all access to pages wakes the threads waiting on
words of them (_waitq): that is how a write on another node reaches a waiter.

At the mprotect backend's map limit (vm.max_map_count) the C primitive
sheds: it revokes every page of the window in one call, which only merges
mappings.  A request that lowered protections is met by that; one that
raised one (a fault being mapped) raises MemoryLayoutError advising the
uffd backend.  Either way the node goes on: later faults map pages again
from their cached copies (in-core faults), and revocations asked by other
nodes no longer need new mappings.
"""

from __future__ import annotations

import errno
import os

import attrs
import numpy as np

from ._errors import MemoryLayoutError
from ._lib import PAGE, ffi, lib
from . import _waitq

PROT_NONE = 0
PROT_READ = 1
PROT_WRITE = 2  # read-write: x86 has no write-only pages
PROT_NAMES = {PROT_NONE: "none", PROT_READ: "read", PROT_WRITE: "read-write"}


@attrs.frozen
class HATStatistics:
    """Mapped pages by protection and the cost of keeping them."""

    pages_none: int
    pages_read: int
    pages_write: int
    mprotect_calls: int    # protection changes (one per run; ioctls/madvise on uffd)
    pages_changed: int
    backend: str = "mprotect"
    sheds: int = 0         # times the window revoked every page at the map limit (mprotect)

    @property
    def pages_per_call(self) -> float:
        """Mean number of pages one mprotect changed."""
        return self.pages_changed / self.mprotect_calls if self.mprotect_calls else 0.0


class HAT:
    """Protections of ``npages`` pages starting at ``base``.

    The window must be registered with the trap (`bind`) before use: the
    protect-and-record step runs in C under the window's HAT lock, so the
    array always matches the page tables even when threads race on a page.
    """

    def __init__(self, base: int, npages: int, backend: str = "mprotect") -> None:
        self.base = base
        self.npages = npages
        self.backend = backend
        self.prot = np.zeros(npages, dtype=np.uint8)
        self._prot = memoryview(self.prot)  # one page: ~20x faster to read than numpy
        self.slot = -1

    def unmapped(self, first: int, count: int = 1) -> bool:
        """Whether every page of [first, first + count) has no access."""
        if count == 1:
            return not self._prot[first]
        return not self.prot[first:first + count].any()

    def bind(self, slot: int) -> None:
        """Attach to the trap window registered with this HAT's prot array."""
        self.slot = slot

    def protect(self, first: int, count: int, prot: int) -> None:
        """Set pages [first, first + count) to ``prot`` with one mprotect."""
        if not (0 <= first and 0 < count and first + count <= self.npages and 0 <= prot <= 2):
            self._bad_run(first, count, prot)
        rc = _protect(self.slot, first, count, prot)
        if rc:
            self._failed(rc, first, count)
        elif prot == PROT_NONE and _waitq.waiting:   # a revoked copy: its waiters re-read
            _waitq.wake_pages(self.base + first * PAGE, count)

    def protect_pages(self, pages, prot: int) -> None:
        """Set every page in ``pages`` (any order, repeats allowed) to ``prot``,
        one mprotect per run of contiguous pages."""
        pages = np.unique(np.asarray(pages, dtype=np.int64))
        if pages.size == 0:
            return
        breaks = np.flatnonzero(np.diff(pages) != 1) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [pages.size]))
        for s, e in zip(starts.tolist(), ends.tolist()):
            self.protect(int(pages[s]), e - s, prot)

    def map_page_unchecked(self, page: int, prot: int) -> None:
        """Fault-path form of protect(page, 1, prot) without the argument checks:
        the caller guarantees 0 <= page < npages and prot in 0..2 (the trap
        only reports addresses inside the window)."""
        rc = _protect(self.slot, page, 1, prot)
        if rc:
            self._failed(rc, page, 1)
        elif prot == PROT_NONE and _waitq.waiting:
            _waitq.wake_pages(self.base + page * PAGE, 1)

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
        out = ffi.new("uint64_t[3]")
        lib.td_hat_counters(self.slot, out)
        return HATStatistics(
            pages_none=int(counts[PROT_NONE]),
            pages_read=int(counts[PROT_READ]),
            pages_write=int(counts[PROT_WRITE]),
            mprotect_calls=int(out[0]),
            pages_changed=int(out[1]),
            backend=self.backend,
            sheds=int(out[2]),
        )

    def _failed(self, rc: int, first: int, count: int) -> None:
        """A protection change that did not simply succeed (rc from the C primitive)."""
        if rc in (lib.TD_HAT_SHED, lib.TD_HAT_SHED_REFUSED):
            if _waitq.waiting:  # every page lost its access
                _waitq.wake_pages(self.base, self.npages)
            if rc == lib.TD_HAT_SHED:
                return
            rc = -errno.ENOMEM
        _raise_protect_error(-rc, first, count, self.backend)

    def _bad_run(self, first: int, count: int, prot: int) -> None:
        if prot not in PROT_NAMES:
            raise ValueError(f"protection must be PROT_NONE, PROT_READ or PROT_WRITE (0-2), not {prot!r}")
        raise ValueError(
            f"page run [{first}, {first + count}) is not inside the window's pages [0, {self.npages})"
        )


_protect = lib.td_hat_protect


def _raise_protect_error(err: int, first: int, count: int, backend: str = "mprotect") -> None:
    if err == errno.ENOMEM and backend == "mprotect":
        raise MemoryLayoutError(
            errno.ENOMEM,
            "mprotect: the process has too many memory mappings (every change of protection "
            "between neighbouring pages splits one); use the userfaultfd fault backend, which "
            "never splits a mapping (backend='uffd', or 'auto'; cluster.backend in a scenario; "
            "TORNADO_DSM_BACKEND=uffd), or raise the limit with "
            f"`sysctl -w vm.max_map_count=262144` (now {_max_map_count()})",
        )
    what = "mprotect" if backend == "mprotect" else "userfaultfd protection change"
    raise OSError(err, f"{what} of pages [{first}, {first + count}) failed: {os.strerror(err)}")


def _max_map_count() -> str:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return f.read().strip()
    except OSError:
        return "unknown"
