"""The shared address space's layout: which page runs of the window are taken.

First fit over a sorted list of free runs, page granular.  Lives in the
Process root (the one place that attaches and detaches regions), so one
allocator serves the whole cluster and an address means the same thing on
every node.

Freed runs are quarantined, not reused: ``retire`` puts a run aside
(oldest first) instead of back on the free list, so a view of a freed
array never aliases the next allocation — its pages stay unmapped on every
node and touching them faults.  Only when no free run fits a request are
quarantined runs given back, oldest first, until one fits: from then on a
stale view of those pages may alias a new array (use after free detection
is best-effort once the window has been used up).

A *tombstone* remembers the name of each freed run, for the fault message
("use after free: 'array3' was freed"), until a new allocation covers it.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict


class AddressSpace:
    """Free, used and quarantined page runs of a window of ``npages`` pages."""

    def __init__(self, npages: int) -> None:
        if npages < 1:
            raise ValueError(f"an address space needs at least one page, not {npages}")
        self.npages = npages
        self._free: list[tuple[int, int]] = [(0, npages)]  # sorted (first, count)
        self._used: dict[int, int] = {}  # first -> count
        self._quarantine: OrderedDict[int, int] = OrderedDict()  # first -> count, oldest first
        self._tombs: list[tuple[int, int, str]] = []  # sorted (first, count, name), disjoint
        self.reclaimed = 0  # quarantined runs handed back because the window was full

    def allocate(self, count: int) -> int:
        """Take the first free run of ``count`` pages; return its first page.

        Quarantined runs are given back (oldest first) only when no free run
        fits.  MemoryError names the request and the largest free run when
        even that does not make room.
        """
        if count < 1:
            raise ValueError(f"a region needs at least one page, not {count}")
        first = self._take(count)
        while first is None and self._quarantine:
            old, n = self._quarantine.popitem(last=False)
            self.reclaimed += 1
            self._put_free(old, n)
            first = self._take(count)
        if first is None:
            largest = max((n for _, n in self._free), default=0)
            raise MemoryError(
                f"no room for {count} pages ({count * 4096} bytes) in the DSM window: the largest "
                f"free run is {largest} pages of {self.npages}; free arrays or make the window larger"
            )
        self._bury(first, count)
        return first

    def _take(self, count: int) -> int | None:
        for i, (first, n) in enumerate(self._free):
            if n >= count:
                if n == count:
                    del self._free[i]
                else:
                    self._free[i] = (first + count, n - count)
                self._used[first] = count
                return first
        return None

    def release(self, first: int) -> int:
        """Give back the run starting at ``first`` at once (an allocation that
        was never used); returns its page count."""
        count = self._pop_used(first)
        self._put_free(first, count)
        return count

    def retire(self, first: int, name: str = "") -> int:
        """Quarantine the freed run starting at ``first`` (see the module
        docstring); ``name`` is what faults on it will say was freed.
        Returns its page count."""
        count = self._pop_used(first)
        self._quarantine[first] = count
        self._bury(first, count)
        i = bisect.bisect_left(self._tombs, (first,))
        self._tombs.insert(i, (first, count, name))
        return count

    def freed_at(self, page: int) -> tuple[int, int, str] | None:
        """(first, count, name) of the freed run holding ``page`` that no
        allocation has covered since, or None."""
        i = bisect.bisect_right(self._tombs, (page, float("inf"))) - 1
        if i >= 0:
            first, count, name = self._tombs[i]
            if page < first + count:
                return first, count, name
        return None

    def _pop_used(self, first: int) -> int:
        count = self._used.pop(first, None)
        if count is None:
            raise ValueError(f"page {first} does not start an allocated run")
        return count

    def _put_free(self, first: int, count: int) -> None:
        i = bisect.bisect_left(self._free, (first, 0))
        self._free.insert(i, (first, count))
        self._coalesce(i)

    def _bury(self, first: int, count: int) -> None:
        """Forget (trim) the tombstones that pages [first, first + count) overlap."""
        end = first + count
        lo = max(bisect.bisect_right(self._tombs, (first, float("inf"))) - 1, 0)
        kept, i = [], lo
        while i < len(self._tombs) and self._tombs[i][0] < end:
            t_first, t_count, name = self._tombs[i]
            t_end = t_first + t_count
            if t_end > first:  # overlaps: keep what sticks out on either side
                if t_first < first:
                    kept.append((t_first, first - t_first, name))
                if t_end > end:
                    kept.append((end, t_end - end, name))
            else:
                kept.append(self._tombs[i])
            i += 1
        self._tombs[lo:i] = kept

    def _coalesce(self, i: int) -> None:
        """Merge run i with its neighbours where they touch."""
        if i + 1 < len(self._free) and sum(self._free[i]) == self._free[i + 1][0]:
            self._free[i] = (self._free[i][0], self._free[i][1] + self._free.pop(i + 1)[1])
        if i > 0 and sum(self._free[i - 1]) == self._free[i][0]:
            self._free[i - 1] = (self._free[i - 1][0], self._free[i - 1][1] + self._free.pop(i)[1])

    def used_pages(self) -> int:
        """Pages currently allocated."""
        return sum(self._used.values())

    def quarantined_pages(self) -> int:
        """Pages of freed runs not yet given back for reuse."""
        return sum(self._quarantine.values())

    def to_wire(self) -> list:
        """The whole layout as msgpack-able rows (for a migration of the Process root)."""
        return [self.npages, [list(r) for r in self._free], [list(r) for r in self._used.items()],
                [list(r) for r in self._quarantine.items()], [list(t) for t in self._tombs],
                self.reclaimed]

    @classmethod
    def of(cls, rows: list) -> "AddressSpace":
        """The layout ``to_wire`` described (the same runs, in the same order)."""
        npages, free, used, quarantine, tombs, reclaimed = rows
        space = cls(npages)
        space._free = [tuple(r) for r in free]
        space._used = {first: count for first, count in used}
        space._quarantine = OrderedDict((first, count) for first, count in quarantine)
        space._tombs = [tuple(t) for t in tombs]
        space.reclaimed = reclaimed
        return space
