"""Per-page metadata: the narrow dtypes, the compact directory slices, and what a node
keeps per page of an array, measured with tracemalloc on real nodes."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import fresh_base
from tornado_dsm import _metadata
from tornado_dsm.kernel import DSMInternalError
from tornado_dsm.objects._copyset import copyset_dtype, node_dtype
from tornado_dsm.objects._directory import Directory

PAGES = 4096


class TestCopysetDtype:
    def test_one_bit_per_node_in_the_narrowest_width(self):
        """The copyset dtype is the narrowest unsigned type with a bit for every node."""
        widths = {n: copyset_dtype(n).itemsize for n in (1, 8, 9, 16, 17, 32, 33, 64)}
        assert widths == {1: 1, 8: 1, 9: 2, 16: 2, 17: 4, 32: 4, 33: 8, 64: 8}
        assert all(copyset_dtype(n).kind == "u" for n in widths)

    def test_more_nodes_than_bits_is_refused(self):
        """A node count beyond the widest copyset is a clear error."""
        with pytest.raises(ValueError, match="at most 64 nodes, not 65"):
            copyset_dtype(65)


class TestNodeDtype:
    def test_holds_every_node_id_and_none(self):
        """The node-id dtype holds -1 and the largest node id."""
        for n in (2, 127, 128, 300):
            info = np.iinfo(node_dtype(n))
            assert info.min <= -1 and info.max >= n - 1
        assert node_dtype(3).itemsize == 1


class TestDirectorySlot:
    def test_a_slice_keeps_only_its_pages(self):
        """A fixed-manager slice (stride 3, offset 1) of 10 pages has 3 slots, page p at p // 3."""
        d = Directory(10, None, None, nnodes=3, stride=3, offset=1)
        assert len(d.owner) == len(d.copyset) == len(d.version) == 3
        assert [d.slot(p) for p in (1, 4, 7)] == [0, 1, 2]

    def test_a_page_of_another_slice_stops_loudly(self):
        """A page routed to the wrong slice (or outside the object) is an internal error naming it."""
        d = Directory(10, None, None, nnodes=3, stride=3, offset=1)
        for page in (0, 3, 10, -2):
            with pytest.raises(DSMInternalError, match=f"page {page} is not in this directory's slice"):
                d.slot(page)

    def test_bad_slice_is_refused(self):
        """An offset outside [0, stride) is a ValueError naming both."""
        with pytest.raises(ValueError, match="offset 3, stride 3"):
            Directory(10, None, None, stride=3, offset=3)


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestMeasure:
    @pytest.mark.parametrize("manager", ["dynamic", "fixed", "centralized"])
    @pytest.mark.parametrize("nnodes", [2, 3])
    def test_at_most_16_bytes_per_page_per_node(self, manager, nnodes):
        """Under every manager every node keeps at most 16 bytes per page (HAT byte included)."""
        fig = _metadata.measure(manager, nnodes, PAGES, base=fresh_base())
        assert len(fig.per_node) == nnodes
        assert fig.worst <= 16, fig

    def test_the_centralized_table_is_on_the_manager_only(self):
        """Under the centralized manager the other nodes keep 9 bytes per page; the manager adds its 6-byte table."""
        fig = _metadata.measure("centralized", 3, PAGES, base=fresh_base())
        assert fig.per_node == (15.0, 9.0, 9.0), fig

    def test_prefetch_keeps_invalidations_of_every_page(self):
        """A region with prefetch keeps 5 more bytes per page: every page's invalidation version and its prefetched flag."""
        plain = _metadata.measure("dynamic", 2, PAGES, base=fresh_base())
        fig = _metadata.measure("dynamic", 2, PAGES, prefetch=2, base=fresh_base())
        assert np.subtract(fig.per_node, plain.per_node).tolist() == [5.0, 5.0], (plain, fig)
