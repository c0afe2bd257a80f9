"""COR: the cached object representation, i.e. the backing store of an FCM.

Two kinds, sibling classes with one interface:

* `AnonymousCOR` — memory that starts as zeros.  First touch anywhere is a
  zero fill.  A page evicted by its owner is written to a swap memfd (sparse,
  created on the first write-back) and read back from it on the next touch.
* `FileCOR` — a real file.  First touch of a page anywhere in the cluster
  reads it with ``pread``; ``write_back`` writes dirty pages with ``pwrite``
  and ``flush`` makes them durable with ``fsync``, so a file-backed region
  survives the cluster.

A COR is a singleton per backing store in the cluster (the file lives on
one host), so these classes are the state of that one rep; other
nodes reach it by PPC and get page contents back as raw bytes.  The last page
of a file whose length is not a page multiple is zero-padded in memory and
only its real bytes are written back.
"""

from __future__ import annotations

import itertools
import os
import threading

import numpy as np

from tornado_dsm.kernel import PAGE, ClusteredRep, ClusteredRoot, peek_count

from ._interfaces import COR
from ._records import CORStatistics


class AnonymousCOR:
    """Zero-filled memory of ``npages`` pages, with swap for evicted pages."""

    kind = "anonymous"

    def __init__(self, npages: int) -> None:
        if npages < 1:
            raise ValueError(f"a COR needs at least one page, not {npages}")
        self.npages = npages
        self.swapped = np.zeros(npages, dtype=np.uint8)
        self.swap_fd: int | None = None
        # PPC threads write back concurrently: the memfd is made once under
        # this lock, or two first write-backs would each make one and the
        # page written to the losing memfd would be lost.
        self._swap_lock = threading.Lock()
        self._reads = self._zero_fills = self._writes = 0

    def read_page(self, page: int) -> bytes | None:
        """Contents of a page no node holds: None means zeros (nothing to copy)."""
        self._check(page)
        if not self.swapped[page]:
            self._zero_fills += 1
            return None
        self._reads += 1
        return os.pread(self.swap_fd, PAGE, page * PAGE)

    def write_back(self, page: int, data) -> None:
        """Keep an evicted page in swap until it is touched again."""
        self._check(page)
        _pwrite_all(self._swap(), data, page * PAGE, PAGE)
        self.swapped[page] = 1
        self._writes += 1

    def _swap(self) -> int:
        with self._swap_lock:
            if self.swap_fd is None:
                self.swap_fd = os.memfd_create("tornado_dsm-swap", os.MFD_CLOEXEC)
            return self.swap_fd

    def flush(self) -> None:
        """Swap is not durable: nothing to do."""

    def close(self) -> None:
        """Drop the swap.  Idempotent."""
        with self._swap_lock:
            if self.swap_fd is not None:
                os.close(self.swap_fd)
                self.swap_fd = None

    def statistics(self) -> CORStatistics:
        """Pages read back from swap, zero-filled and swapped out."""
        return CORStatistics(self._reads, self._zero_fills, self._writes, 0)

    def _check(self, page: int) -> None:
        if not 0 <= page < self.npages:
            raise ValueError(f"page {page} is outside the backing store's pages [0, {self.npages})")


def _pwrite_all(fd: int, data, offset: int, n: int) -> None:
    view = memoryview(data).cast("B")[:n]
    written = os.pwrite(fd, view, offset)
    if written != n:
        raise OSError(f"short write at offset {offset}: {written} of {n} bytes")


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
        _pwrite_all(self.fd, data, self.offset + page * PAGE, self._bytes_in(page))
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


class CORClient:
    """A manager's handle on its FCM's COR (``cor``, a reference typed by the
    COR interface: a PPC when the COR lives on another node).

    An anonymous COR holds a page only once it has been spilled to it, and a
    spill is always made by the manager that fills that page later (the
    directory's rep of the page, or under the dynamic manager the owner,
    which keeps the page it evicted), which marks it ``backed``.  So until then the manager knows
    the page is zeros and answers without calling the COR: a first touch of
    anonymous memory costs no PPC.  A file's pages are always read from it.
    ``backed`` is made at the first spill: only memory under a frame budget
    spills, so most nodes never pay its byte per page.
    """

    def __init__(self, cor, npages: int, anonymous: bool) -> None:
        self.cor, self.npages, self.anonymous = cor, npages, anonymous
        self.backed = None   # uint8 per page once a page was spilled (anonymous memory only)
        self._lock = threading.Lock()
        self._zero_fills = itertools.count()

    def known_zero(self, page: int) -> bool:
        """True if the page is zeros without asking the COR."""
        return self.anonymous and (self.backed is None or not self.backed[page])

    def fill(self, page: int):
        """First-touch contents: None for zeros, else the COR's bytes."""
        if self.known_zero(page):
            self.count_zero_fill()
            return None
        return self.cor.read_page(page)

    def count_zero_fill(self) -> None:
        """A manager zero-filled a page itself (it checked ``known_zero``)."""
        next(self._zero_fills)

    def spill(self, page: int, data, dirty: bool) -> None:
        """Write an evicted owned page back to the COR (which holds it from now on)."""
        if self.anonymous:
            if self.backed is None:
                with self._lock:   # two first spills at once must make one array, or a mark is lost
                    if self.backed is None:
                        self.backed = np.zeros(self.npages, dtype=np.uint8)
            self.backed[page] = 1
        self.cor.write_back(page, data, dirty)

    @property
    def zero_fills(self) -> int:
        """Pages zero-filled without a call to the COR."""
        return peek_count(self._zero_fills)


# ---- the COR as a clustered object ------------------------------------------------------

class CORRep(ClusteredRep, COR):
    """The backing store (one rep: singleton on the node that has the file)."""

    def __init__(self, kind: str, npages: int, path: str, length: int, mode: str) -> None:
        self.store = AnonymousCOR(npages) if kind == "anonymous" else FileCOR(path, 0, length, mode)

    def read_page(self, page: int):
        return self.store.read_page(page)

    def write_back(self, page: int, data: bytes, dirty: bool = True) -> None:
        if dirty or self.store.kind == "anonymous":
            self.store.write_back(page, data)

    def write_pages(self, pages: list) -> int:
        """Write back [page, bytes] pairs and fsync; returns how many."""
        for page, data in pages:
            self.store.write_back(page, data)
        self.store.flush()
        return len(pages)

    def statistics(self) -> CORStatistics:
        return self.store.statistics()

    def cleanup(self) -> None:
        self.store.close()


class CORRoot(ClusteredRoot):
    """Root of a COR; validates the file at creation so errors reach the caller."""

    Rep = CORRep
    POLICIES = ("singleton",)

    def __init__(self, kind: str, npages: int, path: str = "", length: int = 0, mode: str = "r+") -> None:
        if kind == "file":
            FileCOR(path, 0, length, mode).close()  # raises for a short file, bad mode, ...
        self.args = [kind, npages, path, length, mode]

    def rep_args(self, node: int) -> list:
        return self.args
