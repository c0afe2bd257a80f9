"""The kernel-only pager: the simplest fault handler that makes a window real.

Zero fill on first touch (a memfd hole reads as zeros, so nothing is copied),
a read fault grants read, a write fault grants read-write.  What a page may
become is a per-page numpy array set with `allow`: PROT_NONE (no mapping,
faults are refused), PROT_READ (read-only, writes refused) or PROT_WRITE.
It is a plain handler on the trap's hook; the VM layer's Process object
replaces it on the same hook.
"""

from __future__ import annotations

import attrs
import numpy as np

from ._hat import PROT_NONE, PROT_READ, PROT_WRITE
from ._lib import PAGE
from ._trap import READ, FaultRefused

PAGE_SHIFT = PAGE.bit_length() - 1


@attrs.frozen
class PagerStatistics:
    """Faults the pager saw, by outcome."""

    read_faults: int   # read faults seen (refused ones included)
    write_faults: int  # write faults seen (refused ones included)
    zero_fills: int    # first touches of a page
    refused: int       # faults turned into SegmentationFault


class KernelPager:
    """Resolves faults of one NodeMemory window; install with memory.set_handler(pager)."""

    def __init__(self, memory, allow_all: bool = True) -> None:
        self.memory = memory
        self.allowed = np.full(memory.npages, PROT_WRITE if allow_all else PROT_NONE, dtype=np.uint8)
        self.touched = np.zeros(memory.npages, dtype=np.uint8)
        # The fault path indexes single pages: memoryviews of the same arrays
        # are ~3x faster than numpy scalar indexing there.
        self._allowed, self._touched = memoryview(self.allowed), memoryview(self.touched)
        self._prot = memoryview(memory.hat.prot)
        self._base, self._map_page = memory.base, memory.hat.map_page_unchecked
        self._reads = self._writes = self._zero_fills = self._refused = 0

    def allow(self, first: int, count: int, prot: int) -> None:
        """What pages [first, first + count) may be mapped as; lowering it unmaps them."""
        if prot not in (PROT_NONE, PROT_READ, PROT_WRITE):
            raise ValueError(f"prot must be PROT_NONE, PROT_READ or PROT_WRITE, not {prot!r}")
        self.allowed[first:first + count] = prot
        over = np.flatnonzero(self.memory.hat.prot[first:first + count] > prot) + first
        self.memory.hat.protect_pages(over, prot)

    def __call__(self, address: int, access: int) -> None:
        """The fault handler (see kernel._trap)."""
        page = (address - self._base) >> PAGE_SHIFT
        allowed = self._allowed[page]
        if access == READ:
            self._reads += 1
            want = PROT_READ
        else:
            self._writes += 1
            want = PROT_WRITE
        if allowed < want:
            self._refused += 1
            raise FaultRefused("no mapping at this address" if allowed == PROT_NONE
                               else "write to a read-only page")
        if not self._touched[page]:
            self._touched[page] = 1
            self._zero_fills += 1
        if self._prot[page] < want:  # another thread may have resolved it already
            self._map_page(page, want)

    def statistics(self) -> PagerStatistics:
        """Counts of faults by outcome."""
        return PagerStatistics(read_faults=self._reads, write_faults=self._writes,
                               zero_fills=self._zero_fills, refused=self._refused)
