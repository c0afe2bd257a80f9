"""The sorted region list a Process rep caches: which region holds an address?

Immutable snapshots: attach and detach build a new list and the rep swaps its
reference in one assignment, so the fault path looks regions up without any
lock (readers see the old or the new list, never half of one).  Lookup is a
bisect over a plain list of start addresses — faster than numpy's
searchsorted for the handful of regions a process has.
"""

from __future__ import annotations

import bisect

import attrs


@attrs.frozen
class RegionEntry:
    """One attached region: [start, end) and the oid of its Region object."""

    start: int
    end: int
    oid: int
    name: str = ""


@attrs.frozen
class RegionList:
    """Regions sorted by start; never overlapping."""

    entries: tuple[RegionEntry, ...] = ()
    starts: tuple[int, ...] = ()

    @classmethod
    def of(cls, rows) -> "RegionList":
        """A list from ``to_wire`` rows ([start, end, oid, name], sorted, not overlapping)."""
        entries = tuple(RegionEntry(*row) for row in rows)
        return cls(entries, tuple(e.start for e in entries))

    def to_wire(self) -> list:
        """The entries as msgpack-able rows, in order."""
        return [[e.start, e.end, e.oid, e.name] for e in self.entries]

    def find(self, address: int) -> RegionEntry | None:
        """The region containing ``address``, or None."""
        i = bisect.bisect_right(self.starts, address) - 1
        if i >= 0:
            entry = self.entries[i]
            if address < entry.end:
                return entry
        return None

    def with_region(self, entry: RegionEntry) -> "RegionList":
        """A new list with ``entry`` added; ValueError if it overlaps another."""
        if entry.end <= entry.start:
            raise ValueError(f"region [{entry.start:#x}, {entry.end:#x}) is empty")
        i = bisect.bisect_right(self.starts, entry.start)
        if i > 0 and self.entries[i - 1].end > entry.start or i < len(self.entries) and self.entries[i].start < entry.end:
            raise ValueError(f"region [{entry.start:#x}, {entry.end:#x}) overlaps an attached region")
        entries = self.entries[:i] + (entry,) + self.entries[i:]
        return RegionList(entries, tuple(e.start for e in entries))

    def without(self, oid: int) -> "RegionList":
        """A new list without the region ``oid``; KeyError if it is not attached."""
        entries = tuple(e for e in self.entries if e.oid != oid)
        if len(entries) == len(self.entries):
            raise KeyError(f"region {oid:#x} is not attached")
        return RegionList(entries, tuple(e.start for e in entries))

    def __len__(self) -> int:
        return len(self.entries)
