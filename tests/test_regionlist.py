"""The Process rep's region list."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tornado_dsm.objects._process import RegionEntry, RegionList


class TestFind:
    @given(st.lists(st.integers(0, 50), unique=True, max_size=12), st.integers(0, 60 * 4096))
    def test_matches_linear_scan(self, slots, address):
        """find() returns exactly the region a linear scan finds (regions of one 4 KiB slot each)."""
        rl = RegionList()
        for s in slots:
            rl = rl.with_region(RegionEntry(s * 4096, (s + 1) * 4096, oid=s + 1))
        expected = next((e for e in rl.entries if e.start <= address < e.end), None)
        assert rl.find(address) == expected


class TestWithRegion:
    def test_overlap_refused(self):
        """A region overlapping an attached one is a ValueError; the list is unchanged."""
        rl = RegionList().with_region(RegionEntry(0x1000, 0x3000, 1))
        with pytest.raises(ValueError, match="overlaps"):
            rl.with_region(RegionEntry(0x2000, 0x4000, 2))
        assert len(rl) == 1


class TestWithout:
    def test_remove_and_missing(self):
        """without() drops a region; an unknown oid is a KeyError."""
        rl = RegionList().with_region(RegionEntry(0, 10, 1)).with_region(RegionEntry(10, 20, 2))
        assert rl.without(1).find(5) is None and rl.without(1).find(15).oid == 2
        with pytest.raises(KeyError):
            rl.without(3)
