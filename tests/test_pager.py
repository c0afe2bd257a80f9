"""The kernel-only pager: zero fill, read grants read, write grants read-write."""

from __future__ import annotations

import numpy as np
import pytest

import tornado_dsm as td
from tornado_dsm.kernel import PROT_NONE, PROT_READ, PROT_WRITE, trap


class TestCall:
    def test_zero_fill_once_per_page(self, memory):
        """Each page counts one zero fill however often it faults."""
        a = memory.array(0, (memory.size // 8,), np.int64)
        assert a[0] == 0 and a[1] == 0
        a[0] = 1
        memory.hat.unmap(0)
        a[0]
        stats = memory.pager.statistics()
        assert stats.zero_fills == 1 and stats.read_faults == 2 and stats.write_faults == 1

    def test_read_grants_read_only(self, memory):
        """A read fault maps the page read-only; a later write upgrades it."""
        a = memory.array(0, (8,), np.int64)
        a[0]
        assert memory.hat.prot[0] == PROT_READ
        a[0] = 2
        assert memory.hat.prot[0] == PROT_WRITE


class TestAllow:
    def test_lowering_unmaps(self, memory):
        """Lowering what pages may be mapped revokes current mappings above it."""
        a = memory.array(0, (memory.size // 8,), np.int64)
        a[:] = 1
        memory.pager.allow(0, 4, PROT_READ)
        assert (memory.hat.prot[:4] == PROT_READ).all() and memory.hat.prot[4] == PROT_WRITE
        with pytest.raises(td.SegmentationFault, match="read-only"):
            a[0] = 2
            trap.check()
        assert a[0] == 1

    def test_bad_protection(self, memory):
        """allow() names the accepted protections."""
        with pytest.raises(ValueError, match="PROT_NONE, PROT_READ or PROT_WRITE"):
            memory.pager.allow(0, 1, 7)


class TestHATStatistics:
    def test_runs_are_one_call(self, memory):
        """protect_pages issues one mprotect per contiguous run and counts pages."""
        before = memory.hat.statistics()
        memory.hat.protect_pages([5, 3, 4, 10, 11, 20], PROT_READ)
        after = memory.hat.statistics()
        assert after.mprotect_calls - before.mprotect_calls == 3
        assert after.pages_changed - before.pages_changed == 6
        assert after.pages_read == 6 and after.pages_none == memory.npages - 6

    def test_bad_run(self, memory):
        """A run outside the window is a ValueError naming the window's pages."""
        with pytest.raises(ValueError, match=r"\[0, 64\)"):
            memory.hat.protect(60, 8, PROT_NONE)
        with pytest.raises(ValueError, match="PROT_NONE"):
            memory.hat.protect(0, 1, 9)
