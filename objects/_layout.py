"""The shared address space's layout: which page runs of the window are taken.

First fit over a sorted list of free runs, page granular.  Lives in the
Process root (the one place that attaches and detaches regions), so one
allocator serves the whole cluster and an address means the same thing on
every node.
"""

from __future__ import annotations

import bisect


class AddressSpace:
    """Free and used page runs of a window of ``npages`` pages."""

    def __init__(self, npages: int) -> None:
        if npages < 1:
            raise ValueError(f"an address space needs at least one page, not {npages}")
        self.npages = npages
        self._free: list[tuple[int, int]] = [(0, npages)]  # sorted (first, count)
        self._used: dict[int, int] = {}  # first -> count

    def allocate(self, count: int) -> int:
        """Take the first free run of ``count`` pages; return its first page.

        MemoryError names the request and the largest free run when none fits.
        """
        if count < 1:
            raise ValueError(f"a region needs at least one page, not {count}")
        for i, (first, n) in enumerate(self._free):
            if n >= count:
                if n == count:
                    del self._free[i]
                else:
                    self._free[i] = (first + count, n - count)
                self._used[first] = count
                return first
        largest = max((n for _, n in self._free), default=0)
        raise MemoryError(
            f"no room for {count} pages ({count * 4096} bytes) in the DSM window: the largest "
            f"free run is {largest} pages of {self.npages}; free arrays or make the window larger"
        )

    def release(self, first: int) -> int:
        """Give back the run starting at ``first``; returns its page count."""
        count = self._used.pop(first, None)
        if count is None:
            raise ValueError(f"page {first} does not start an allocated run")
        i = bisect.bisect_left(self._free, (first, 0))
        self._free.insert(i, (first, count))
        self._coalesce(i)
        return count

    def _coalesce(self, i: int) -> None:
        """Merge run i with its neighbours where they touch."""
        if i + 1 < len(self._free) and sum(self._free[i]) == self._free[i + 1][0]:
            self._free[i] = (self._free[i][0], self._free[i][1] + self._free.pop(i + 1)[1])
        if i > 0 and sum(self._free[i - 1]) == self._free[i][0]:
            self._free[i - 1] = (self._free[i - 1][0], self._free[i - 1][1] + self._free.pop(i)[1])

    def used_pages(self) -> int:
        """Pages currently allocated."""
        return sum(self._used.values())
