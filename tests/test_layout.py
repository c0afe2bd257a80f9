"""The window's address-space allocator."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tornado_dsm.objects._layout import AddressSpace


class TestAllocate:
    def test_first_fit_and_coalesce(self):
        """Freed runs coalesce so a large request fits again."""
        space = AddressSpace(10)
        a, b, c = space.allocate(3), space.allocate(3), space.allocate(4)
        assert (a, b, c) == (0, 3, 6)
        space.release(b)
        space.release(a)
        assert space.allocate(6) == 0

    def test_full(self):
        """No room names the request and the largest free run."""
        space = AddressSpace(4)
        space.allocate(3)
        with pytest.raises(MemoryError, match="no room for 2 pages.*largest free run is 1"):
            space.allocate(2)

    @given(st.lists(st.integers(1, 5), max_size=30), st.randoms())
    @settings(max_examples=50)
    def test_runs_never_overlap(self, sizes, rnd):
        """Allocated runs never overlap and releasing everything frees the whole space."""
        space, runs = AddressSpace(64), {}
        for n in sizes:
            try:
                first = space.allocate(n)
            except MemoryError:
                victim = rnd.choice(sorted(runs)) if runs else None
                if victim is not None:
                    space.release(victim)
                    del runs[victim]
                continue
            assert all(first + n <= f or f + m <= first for f, m in runs.items())
            runs[first] = n
        for first in list(runs):
            space.release(first)
        assert space.used_pages() == 0 and space.allocate(64) == 0


class TestRelease:
    def test_unknown_run(self):
        """Releasing a page that does not start a run is a ValueError."""
        with pytest.raises(ValueError, match="does not start"):
            AddressSpace(4).release(1)
