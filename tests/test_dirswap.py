"""The PageDirectory's state transfer at a hot swap (objects/_dirswap.py), in one process."""

from __future__ import annotations

import numpy as np
import pytest

from tornado_dsm.kernel import DSMInternalError
from tornado_dsm.objects._directory import Directory
from tornado_dsm.objects._dirswap import NOT_HELD, TAKEN, HeldSlices, export_slice, load_slice

NPAGES, NNODES = 10, 3


def _fixed_slices() -> list:
    """The three fixed-manager slices of 10 pages, page p owned by p % 2 at version p."""
    slices = []
    for offset in range(NNODES):
        d = Directory(NPAGES, None, None, nnodes=NNODES, stride=NNODES, offset=offset)
        pages = np.arange(offset, NPAGES, NNODES)
        d.owner[:], d.version[:], d.copyset[:] = pages % 2, pages, 1 << 2
        slices.append(d)
    return slices


class TestHeldSlices:
    def test_fixed_to_centralized_and_back(self):
        """Three exported slices merge into one centralized slice and back into the same three."""
        held = HeldSlices(NPAGES, NNODES)
        assert held.rep_generation(0) == NOT_HELD
        held.merge([export_slice(d, [1, 2]) for d in _fixed_slices()], 1)
        one = Directory(NPAGES, None, None, nnodes=NNODES)
        state = held.take(held.rep_generation(0), 0)
        load_slice(one, state)
        assert list(one.owner) == [p % 2 for p in range(NPAGES)] and list(one.version) == list(range(NPAGES))
        assert state[3] == [3, 6]  # the three reps' counts, carried once
        held.merge([export_slice(one, [0, 0])], NNODES)
        for d in _fixed_slices():
            again = Directory(NPAGES, None, None, nnodes=NNODES, stride=NNODES, offset=d.offset)
            load_slice(again, held.take(held.generation, d.offset))
            assert np.array_equal(again.owner, d.owner) and np.array_equal(again.copyset, d.copyset)

    def test_a_slice_is_taken_once(self):
        """A second take of a slice stops loudly, and a rep built after it is told TAKEN."""
        held = HeldSlices(NPAGES, NNODES)
        held.merge([], NNODES)
        held.take(held.generation, 1)
        assert held.rep_generation(1) == TAKEN
        with pytest.raises(DSMInternalError, match="slice 1 of layout generation 1 is not held"):
            held.take(held.generation, 1)

    def test_untaken_slices_survive_the_next_merge(self):
        """A slice no rep took (its rep exported None) keeps its pages through the next swap."""
        held = HeldSlices(NPAGES, NNODES)
        held.merge([export_slice(d, [0, 0]) for d in _fixed_slices()], 1)
        held.merge([], NNODES)
        owner = np.frombuffer(held.take(held.generation, 2)[0], dtype=np.int8)
        assert list(owner) == [p % 2 for p in range(2, NPAGES, NNODES)]

    def test_wire_round_trip(self):
        """What a migration carries rebuilds the same held slices."""
        held = HeldSlices(NPAGES, NNODES)
        held.merge([export_slice(d, [4, 5]) for d in _fixed_slices()], NNODES)
        copy = HeldSlices(NPAGES, NNODES)
        copy.load_wire(held.to_wire())
        assert copy.take(copy.generation, 0) == held.take(held.generation, 0)

    def test_busy_page_at_export_stops_loudly(self):
        """A page still busy when the old rep exports means a broken drain: an internal error."""
        d = _fixed_slices()[0]
        d.busy.add(1)
        with pytest.raises(DSMInternalError, match=r"slots \[1\] still busy"):
            export_slice(d, [0, 0])
