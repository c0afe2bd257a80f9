"""Backing stores: anonymous zero fill and real files with pread/pwrite/fsync."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from tornado_dsm.kernel import PAGE
from tornado_dsm.objects._cor import AnonymousCOR, CORClient, FileCOR


class TestAnonymousCOR:
    def test_zero_fill(self):
        """Anonymous pages are zeros (None: nothing to copy) and counted."""
        cor = AnonymousCOR(4)
        assert cor.read_page(3) is None and cor.statistics().pages_zero_filled == 1

    def test_swap_roundtrip(self):
        """An evicted page comes back from swap; untouched pages stay zeros."""
        cor = AnonymousCOR(4)
        cor.write_back(2, np.full(PAGE, 5, dtype=np.uint8))
        assert cor.read_page(2) == bytes([5]) * PAGE and cor.read_page(1) is None
        assert cor.statistics() == type(cor.statistics())(1, 1, 1, 0)
        cor.close()

    def test_bad_page(self):
        """A page outside the store is a ValueError naming the range."""
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            AnonymousCOR(4).read_page(4)

    def test_concurrent_first_write_backs(self, monkeypatch):
        """Pages written back at once by many threads, before any swap exists, all come back."""
        real = os.memfd_create
        monkeypatch.setattr(os, "memfd_create", lambda *a: (time.sleep(0.01), real(*a))[1])
        cor, start = AnonymousCOR(8), threading.Barrier(8)

        def spill(page):
            start.wait()
            cor.write_back(page, np.full(PAGE, page + 1, dtype=np.uint8))

        threads = [threading.Thread(target=spill, args=(p,)) for p in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [cor.read_page(p)[0] for p in range(8)] == list(range(1, 9))
        cor.close()


class TestFileCOR:
    def test_read_write_back_roundtrip(self, tmp_path):
        """Pages read with pread come back to the file with pwrite; a partial last page keeps its length."""
        path = tmp_path / "data.bin"
        original = np.arange(PAGE + 100, dtype=np.uint8).tobytes()
        path.write_bytes(original)
        cor = FileCOR(str(path), 0, len(original))
        assert cor.npages == 2
        assert cor.read_page(0) == original[:PAGE]
        last = cor.read_page(1)
        assert len(last) == PAGE and last[:100] == original[PAGE:] and last[100:] == bytes(PAGE - 100)
        cor.write_back(1, np.full(PAGE, 9, dtype=np.uint8))
        cor.close()
        data = path.read_bytes()
        assert len(data) == len(original) and data[PAGE:] == bytes([9]) * 100
        assert cor.statistics() == type(cor.statistics())(2, 0, 1, 1)

    def test_short_file(self, tmp_path):
        """A file shorter than the mapping is refused with both sizes named."""
        path = tmp_path / "short.bin"
        path.write_bytes(bytes(100))
        with pytest.raises(ValueError, match="has 100 bytes, shorter than the mapping"):
            FileCOR(str(path), 0, PAGE)

    def test_read_only(self, tmp_path):
        """A read-only mapping refuses write-back."""
        path = tmp_path / "ro.bin"
        path.write_bytes(bytes(PAGE))
        cor = FileCOR(str(path), 0, PAGE, mode="r")
        with pytest.raises(PermissionError, match="read-only"):
            cor.write_back(0, bytes(PAGE))
        cor.close()

    @pytest.mark.parametrize("kwargs,match", [(dict(mode="w"), "mode"), (dict(offset=3), "offset"),
                                              (dict(length=0), "length")])
    def test_bad_arguments(self, tmp_path, kwargs, match):
        """Bad mode, offset or length name the accepted values."""
        path = tmp_path / "f.bin"
        path.write_bytes(bytes(PAGE))
        args = dict(offset=0, length=PAGE, mode="r+") | kwargs
        with pytest.raises(ValueError, match=match):
            FileCOR(str(path), args["offset"], args["length"], args["mode"])


class TestCORClient:
    class RecordingCOR:
        """The COR interface, recording (method, page) of each call."""

        def __init__(self) -> None:
            self.calls = []

        def read_page(self, page):
            self.calls.append(("read_page", page))
            return b"x" * PAGE

        def write_back(self, page, data, dirty=True):
            self.calls.append(("write_back", page))

    @classmethod
    def client(cls, anonymous: bool):
        cor = cls.RecordingCOR()
        return CORClient(cor, 4, anonymous), cor.calls

    def test_anonymous_pages_are_zeros_without_a_call(self):
        """An anonymous page never spilled is zero-filled without calling the COR, and counted."""
        store, calls = self.client(anonymous=True)
        assert store.fill(1) is None and store.known_zero(1)
        store.count_zero_fill()
        assert calls == [] and store.zero_fills == 2

    def test_spilled_page_is_read_back(self):
        """After a spill, the page is read from the COR; the other pages stay known zeros."""
        store, calls = self.client(anonymous=True)
        store.spill(2, b"y" * PAGE, True)
        assert store.fill(2) == b"x" * PAGE and store.known_zero(3)
        assert calls == [("write_back", 2), ("read_page", 2)] and store.zero_fills == 0

    def test_file_pages_always_read(self):
        """A file's pages are never assumed zero."""
        store, calls = self.client(anonymous=False)
        assert not store.known_zero(0) and store.fill(0) == b"x" * PAGE and calls == [("read_page", 0)]
