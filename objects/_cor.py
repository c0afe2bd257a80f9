"""COR: the cached object representation, i.e. the backing store of an FCM.

Two kinds, sibling classes with one interface:

* `AnonymousCOR` — memory that starts as zeros.  First touch anywhere is a
  zero fill; nothing is ever written back.
* `FileCOR` — a real file.  First touch of a page anywhere in the cluster
  reads it with ``pread``; ``write_back`` writes dirty pages with ``pwrite``
  and ``flush`` makes them durable with ``fsync``, so a file-backed region
  survives the cluster.

A COR is a singleton per backing store in the cluster (DESIGN.md: the file
lives on one host), so these classes are the state of that one rep; other
nodes reach it by PPC and get page contents back as raw bytes.  The last page
of a file whose length is not a page multiple is zero-padded in memory and
only its real bytes are written back.
"""

from __future__ import annotations

import os

import attrs
import numpy as np

from tornado_dsm.kernel import PAGE


@attrs.frozen
class CORStatistics:
    """I/O done by a backing store."""

    pages_read: int
    pages_zero_filled: int
    pages_written: int
    fsyncs: int


class AnonymousCOR:
    """Zero-filled memory of ``npages`` pages."""

    kind = "anonymous"

    def __init__(self, npages: int) -> None:
        if npages < 1:
            raise ValueError(f"a COR needs at least one page, not {npages}")
        self.npages = npages
        self._zero_fills = 0

    def read_page(self, page: int) -> bytes | None:
        """Contents of a page on first touch: None means zeros (nothing to copy)."""
        self._check(page)
        self._zero_fills += 1
        return None

    def write_back(self, page: int, data) -> None:
        """Anonymous memory has nowhere to go: dropping a page loses nothing needed."""
        self._check(page)

    def flush(self) -> None:
        """Nothing to make durable."""

    def close(self) -> None:
        """Nothing to release."""

    def statistics(self) -> CORStatistics:
        """Counts of I/O (only zero fills here)."""
        return CORStatistics(0, self._zero_fills, 0, 0)

    def _check(self, page: int) -> None:
        if not 0 <= page < self.npages:
            raise ValueError(f"page {page} is outside the backing store's pages [0, {self.npages})")


class FileCOR(AnonymousCOR):
    """``length`` bytes of the file at ``path`` from ``offset``, page by page.

    ``mode`` "r+" (read-write) or "r" (read-only).  The file must already
    hold offset + length bytes: a shorter file is an error naming both sizes.
    """

    kind = "file"

    def __init__(self, path: str, offset: int, length: int, mode: str = "r+") -> None:
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' (read-only) or 'r+' (read-write), not {mode!r}")
        if offset < 0 or offset % PAGE:
            raise ValueError(f"file offset {offset} must be a non-negative multiple of {PAGE}")
        if length < 1:
            raise ValueError(f"the mapped length must be positive, not {length}")
        super().__init__(-(-length // PAGE))
        self.path, self.offset, self.length, self.mode = os.fspath(path), offset, length, mode
        self.fd = os.open(self.path, os.O_RDWR if mode == "r+" else os.O_RDONLY)
        size = os.fstat(self.fd).st_size
        if size < offset + length:
            os.close(self.fd)
            raise ValueError(
                f"file {self.path!r} has {size} bytes, shorter than the mapping "
                f"(offset {offset} + {length} bytes = {offset + length})"
            )
        self._reads = self._writes = self._fsyncs = 0

    def read_page(self, page: int) -> bytes:
        """pread the page's bytes (zero-padded past the mapping's end)."""
        self._check(page)
        n = self._bytes_in(page)
        data = os.pread(self.fd, n, self.offset + page * PAGE)
        if len(data) != n:
            raise OSError(f"short read of page {page} from {self.path!r}: {len(data)} of {n} bytes")
        self._reads += 1
        return data if n == PAGE else data + bytes(PAGE - n)

    def write_back(self, page: int, data) -> None:
        """pwrite a page's bytes (only those inside the mapping)."""
        self._check(page)
        if self.mode != "r+":
            raise PermissionError(f"{self.path!r} is mapped read-only: page {page} cannot be written back")
        n = self._bytes_in(page)
        view = memoryview(np.asarray(data, dtype=np.uint8)).cast("B")[:n]
        written = os.pwrite(self.fd, view, self.offset + page * PAGE)
        if written != n:
            raise OSError(f"short write of page {page} to {self.path!r}: {written} of {n} bytes")
        self._writes += 1

    def flush(self) -> None:
        """fsync what was written back."""
        if self.mode == "r+":
            os.fsync(self.fd)
            self._fsyncs += 1

    def close(self) -> None:
        """Flush and close the file.  Idempotent."""
        if self.fd is not None:
            self.flush()
            os.close(self.fd)
            self.fd = None

    def statistics(self) -> CORStatistics:
        """Pages read, written and fsync calls."""
        return CORStatistics(self._reads, 0, self._writes, self._fsyncs)

    def _bytes_in(self, page: int) -> int:
        return min(PAGE, self.length - page * PAGE)
