"""Durability of file-backed arrays (close, discard, flush, a crash) and use after free
(freed addresses are quarantined, so a stale view faults instead of aliasing)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

import tornado_dsm as td
from tornado_dsm.kernel import trap, view_at
from tornado_dsm.objects._layout import AddressSpace

import clusterprogs as progs
from helpers import new_cluster

PAGE_WORDS = 512  # int64 words in a page


def words(path) -> np.ndarray:
    """The first int64 word of every page of the file at ``path``."""
    return np.frombuffer(path.read_bytes(), np.int64)[::PAGE_WORDS].copy()


@pytest.fixture
def four_pages(tmp_path):
    """A 4-page file whose page i starts with the word 100 + i."""
    path = tmp_path / "data.bin"
    data = np.zeros(4 * PAGE_WORDS, np.int64)
    data[::PAGE_WORDS] = 100 + np.arange(4)
    path.write_bytes(data.tobytes())
    return path


def address(array) -> int:
    return array.__array_interface__["data"][0]


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestCloseWritesBack:
    def test_with_block_writes_back(self, tmp_path):
        """Unflushed writes from every node are in the file once the with-block has closed the cluster."""
        path = tmp_path / "grid.bin"
        path.write_bytes(bytes(3 * 1024 * 8))
        with new_cluster(3) as c:
            a = c.map_file(path, (3, 1024), np.float64)
            c.run(progs.fill_rows, a, 2.0)
            expected = np.array(a)
        assert path.read_bytes() == expected.tobytes()

    def test_block_that_raised_still_writes_back(self, four_pages):
        """A with-block that raised still writes its file-backed arrays back; its exception propagates."""
        with pytest.raises(KeyError, match="boom"):
            with new_cluster(2) as c:
                a = c.map_file(four_pages, (4 * PAGE_WORDS,), np.int64)
                c.run(progs.write_page_words, a, [0, 3], 7, on=[1])
                raise KeyError("boom")
        assert words(four_pages).tolist() == [7, 101, 102, 7]

    def test_writes_after_a_flush_are_written_again(self, four_pages):
        """A page written, flushed and written again is flushed again, and close writes a third write."""
        with new_cluster(2) as c:
            a = c.map_file(four_pages, (4 * PAGE_WORDS,), np.int64)
            c.run(progs.write_page_words, a, [1], 1, on=[1])
            assert c.flush(a) == 1
            c.run(progs.write_page_words, a, [1], 2, on=[1])
            assert c.flush(a) == 1
            assert words(four_pages).tolist() == [100, 2, 102, 103]
            a[PAGE_WORDS] = 3
        assert words(four_pages).tolist() == [100, 3, 102, 103]


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestCloseDiscard:
    def test_discard_leaves_the_file_unchanged(self, four_pages):
        """close(discard=True) drops unflushed writes: the file is byte for byte what it was."""
        before = four_pages.read_bytes()
        c = new_cluster(2)
        try:
            a = c.map_file(four_pages, (4 * PAGE_WORDS,), np.int64)
            c.run(progs.write_pages, a, 9)
        finally:
            c.close(discard=True)
        assert four_pages.read_bytes() == before

    def test_discard_keeps_what_was_flushed(self, four_pages):
        """close(discard=True) after a flush leaves the flushed bytes and drops only the later writes."""
        c = new_cluster(2)
        try:
            a = c.map_file(four_pages, (4 * PAGE_WORDS,), np.int64)
            c.run(progs.write_page_words, a, [0], 5, on=[1])
            c.flush(a)
            c.run(progs.write_page_words, a, [0, 2], 6, on=[1])
        finally:
            c.close(discard=True)
        assert words(four_pages).tolist() == [5, 101, 102, 103]


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestCrashAfterFlush:
    def test_flushed_pages_survive_sigkill_of_a_node(self, four_pages):
        """After a flush, SIGKILL of node 1 keeps its flushed bytes; close still writes the survivors'
        later writes, stops every node, and raises WriteBackError naming the array and the lost node."""
        with new_cluster(3) as c:
            a = c.map_file(four_pages, (4 * PAGE_WORDS,), np.int64)
            c.run(progs.write_page_words, a, [0, 1, 2, 3], 5, on=[1])
            assert c.flush(a) == 4
            c.run(progs.write_page_words, a, [0, 1], 6, on=[1])   # lost with node 1
            c.run(progs.write_page_words, a, [2, 3], 7, on=[2])   # node 2 survives
            os.kill(c.node_set.pids[1], signal.SIGKILL)
            with pytest.raises(td.WriteBackError, match="node 1") as info:
                c.close()
            assert [name for name, _ in info.value.failures] == [str(four_pages)]
        assert words(four_pages).tolist() == [5, 5, 7, 7]

    def test_failed_write_back_is_a_note_on_the_blocks_exception(self, four_pages):
        """When the with-block raised, a write-back that misses a lost node is a note on that exception."""
        with pytest.raises(KeyError, match="boom") as info:
            with new_cluster(2) as c:
                a = c.map_file(four_pages, (4 * PAGE_WORDS,), np.int64)
                c.run(progs.write_page_words, a, [0], 5, on=[1])
                c.flush(a)
                c.run(progs.write_page_words, a, [0], 6, on=[1])
                os.kill(c.node_set.pids[1], signal.SIGKILL)
                raise KeyError("boom")
        assert any("WriteBackError" in note and str(four_pages) in note for note in info.value.__notes__)
        assert words(four_pages).tolist() == [5, 101, 102, 103]


class TestQuarantine:
    def test_freed_run_is_not_handed_out_again(self):
        """A retired run is not reused while other free runs fit the request."""
        space = AddressSpace(10)
        a = space.allocate(3)
        space.retire(a, "array0")
        assert space.allocate(3) != a and space.quarantined_pages() == 3

    def test_full_window_reuses_oldest_first(self):
        """When nothing else fits, quarantined runs are given back oldest first, only as many as needed."""
        space = AddressSpace(6)
        a, b, c = space.allocate(2), space.allocate(2), space.allocate(2)
        space.retire(b, "b")
        space.retire(a, "a")
        space.retire(c, "c")
        assert space.allocate(2) == b and space.quarantined_pages() == 4
        assert space.allocate(2) == a and space.allocate(2) == c

    def test_tombstone_names_the_freed_run_until_covered(self):
        """freed_at names the freed run of a page until a new allocation covers that page."""
        space = AddressSpace(4)
        a = space.allocate(4)
        space.retire(a, "array0")
        assert space.freed_at(2) == (0, 4, "array0")
        assert space.allocate(1) == 0  # the window is full: the run is reused
        assert space.freed_at(0) is None and space.freed_at(2) == (1, 3, "array0")


FREED = r"use after free: array 'array0' .* was freed"


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestUseAfterFree:
    def test_old_view_faults_on_node_0(self):
        """After free and a same-shape zeros, the old view is not the new array: touching it on node 0
        is a SegmentationFault naming the freed array, and the new array stays zeros on every node."""
        with new_cluster(2) as c:
            old = c.zeros((PAGE_WORDS,), np.int64)
            old[0] = 5
            c.free(old)
            new = c.zeros((PAGE_WORDS,), np.int64)
            assert address(new) != address(old)
            with pytest.raises(td.SegmentationFault, match=FREED) as info:
                old[0] = 99
                trap.check()
            assert info.value.node == 0 and info.value.access == "write"
            assert new[0] == 0 and c.run(progs.read_word, new, 0, 0) == [0, 0]

    def test_old_view_faults_on_a_remote_node(self):
        """An old view passed to run faults on the remote node that touches it, naming the freed array,
        even on a node that had the page mapped; the new array is unaffected everywhere."""
        with new_cluster(3) as c:
            old = c.zeros((PAGE_WORDS,), np.int64)
            c.run(progs.write_word, old, 0, 5, 0, on=[1])  # node 1 maps and owns the page
            c.free(old)
            new = c.zeros((PAGE_WORDS,), np.int64)
            with pytest.raises(td.SegmentationFault, match=FREED) as info:
                c.run(progs.write_word, old, 0, 99, 0, on=[1])
            assert info.value.node == 1
            with pytest.raises(td.SegmentationFault, match=FREED):
                c.run(progs.read_word, old, 0, 0, on=[2])
            assert c.run(progs.read_word, new, 0, 0) == [0, 0, 0]

    def test_api_refuses_a_stale_view_after_reuse(self):
        """Once a full window hands the freed addresses out again, free and run still refuse the old
        view (naming the freed array) and the new array stays live and unchanged."""
        with new_cluster(2, size=4 * 4096) as c:
            old = c.zeros((4 * PAGE_WORDS,), np.int64)
            c.free(old)
            new = c.zeros((4 * PAGE_WORDS,), np.int64)
            assert address(new) == address(old)  # no other room: reused (detection is best-effort now)
            new[0] = 3
            with pytest.raises(ValueError, match=r"use after free: .*'array0'.* was freed"):
                c.free(old[1:])
            with pytest.raises(ValueError, match=r"use after free: .*'array0'.* was freed"):
                c.run(progs.write_word, old, 0, 99, 0, on=[1])
            assert c.run(progs.read_word, new, 0, 0) == [3, 3]
            assert [address(x) for x in c.arrays()] == [address(new)]
            # a view made from the address alone cannot be told apart: it is the new array
            assert int(view_at(address(old), (1,), np.int64)[0]) == 3
