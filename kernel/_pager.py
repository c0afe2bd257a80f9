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


@attrs.frozen
class PagerStatistics:
    """Faults the pager saw, by outcome."""

    read_faults: int
    write_faults: int
    zero_fills: int
    refused: int


class KernelPager:
    """Resolves faults of one NodeMemory window; install with memory.set_handler(pager)."""

    def __init__(self, memory, allow_all: bool = True) -> None:
        self.memory = memory
        self.allowed = np.full(memory.npages, PROT_WRITE if allow_all else PROT_NONE, dtype=np.uint8)
        self.touched = np.zeros(memory.npages, dtype=bool)
        self._counts = np.zeros(4, dtype=np.int64)  # read, write, zero fill, refused

    def allow(self, first: int, count: int, prot: int) -> None:
        """What pages [first, first + count) may be mapped as; lowering it unmaps them."""
        if prot not in (PROT_NONE, PROT_READ, PROT_WRITE):
            raise ValueError(f"prot must be PROT_NONE, PROT_READ or PROT_WRITE, not {prot!r}")
        self.allowed[first:first + count] = prot
        over = np.flatnonzero(self.memory.hat.prot[first:first + count] > prot) + first
        self.memory.hat.protect_pages(over, prot)

    def __call__(self, address: int, access: int) -> None:
        """The fault handler (see kernel._trap)."""
        page = (address - self.memory.base) // PAGE
        allowed = self.allowed[page]
        if allowed == PROT_NONE:
            self._counts[3] += 1
            raise FaultRefused("no mapping at this address")
        if access != READ and allowed == PROT_READ:
            self._counts[3] += 1
            raise FaultRefused("write to a read-only page")
        self._counts[0 if access == READ else 1] += 1
        if not self.touched[page]:
            self.touched[page] = True
            self._counts[2] += 1
        want = PROT_READ if access == READ else PROT_WRITE
        if self.memory.hat.prot[page] < want:  # another thread may have won the race
            self.memory.hat.map(page, 1, want)

    def statistics(self) -> PagerStatistics:
        """Counts of faults by outcome."""
        r, w, z, x = (int(v) for v in self._counts)
        return PagerStatistics(read_faults=r, write_faults=w, zero_fills=z, refused=x)
