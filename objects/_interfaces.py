"""The interfaces of the VM's clustered objects, each declared once.

Every call one object makes on another goes through a reference typed by
one of these (``cos.ref(oid, Region)``), so the fault path reads as method
calls — ``process.find_region(address)``, ``region.translate(address,
access)``, ``fcm.get_page(page, want)`` — while each still goes through this
node's translation table: a local PPC on a rep, a remote PPC through a stub,
counted per object and method (kernel/cobj/_ref.py).  The Rep classes in
_process.py, _fcm.py, _directory.py, _dynamic.py, _cor.py and _frames.py subclass these and implement every method;
the COS refuses an object whose Rep leaves one out.

Arguments and results cross nodes with msgpack: ints, bytes, lists, and the
frozen records registered with ``wire_record`` (Grant, the statistics).
"""

from __future__ import annotations

from tornado_dsm.kernel import Interface

from ._records import (
    CORStatistics, DirectoryStatistics, FCMStatistics, FrameStatistics, Grant, RegionStatistics,
)


class Process(Interface):
    """The shared address space: its regions and its allocator."""

    def find_region(self, address: int) -> int | None:
        """The oid of the Region holding ``address``, or None (the fault is refused)."""
        ...

    def region_name(self, address: int) -> str:
        """The name of the array whose Region holds ``address`` ("" if none): for fault messages."""
        ...

    def set_regions(self, entries: list) -> None:
        """Replace a rep's cached region list (the root broadcasts it)."""
        ...

    def allocate(self, npages: int) -> int:
        """Reserve ``npages`` pages of the window; the first page (forwarded to the root)."""
        ...

    def release(self, first_page: int) -> None:
        """Give a reserved run that was never attached back (forwarded to the root)."""
        ...

    def retire(self, first_page: int) -> None:
        """Quarantine the run of a freed region: not reused while the window has room (to the root)."""
        ...

    def why_unmapped(self, address: int) -> str:
        """"use after free" naming the freed region at ``address``, or "" (forwarded to the root)."""
        ...

    def attach(self, start: int, end: int, region: int, name: str) -> None:
        """Add a region; every rep knows it on return (forwarded to the root)."""
        ...

    def detach(self, region: int) -> None:
        """Remove a region; every rep has forgotten it on return (forwarded to the root)."""
        ...


class Region(Interface):
    """A virtual range, its protection and the FCM behind it."""

    def translate(self, address: int, access: int) -> tuple[int, int]:
        """(FCM oid, page in the FCM) for a legal access; FaultRefused naming why not."""
        ...

    def statistics(self) -> RegionStatistics:
        """Faults this rep translated, by kind, and refusals."""
        ...


class FCM(Interface):
    """The pages of one memory object as cached on each node (one rep per node)."""

    def get_page(self, page: int, want: int) -> bool:
        """Make ``page`` accessible here for ``want`` and map it; True if it took the manager."""
        ...

    def send_copy(self, page: int, expect_version: int) -> bytes:
        """As owner: downgrade to READ, return the page's bytes."""
        ...

    def give_page(self, page: int, expect_version: int, new_version: int, need_data: bool) -> tuple:
        """As owner: give the page up; (bytes or None, dirty)."""
        ...

    def invalidate(self, page: int, new_version: int, new_owner: int = -1) -> None:
        """Drop a read copy: a write of ``new_version`` is granted to ``new_owner``."""
        ...

    def relinquish(self, page: int, owner: int, expect_version: int, new_version: int, need_data: bool,
                   new_owner: int) -> tuple | None:
        """A write of ``new_version`` goes to ``new_owner``: on ``owner``, give the page up
        as ``give_page`` does, (bytes or None, dirty); on a reader, drop the copy, None.
        One method for both, so the owner's hand-over and the readers' invalidations
        travel in one fan-out."""
        ...

    def access_of(self, page: int) -> int:
        """This node's access to ``page`` (NIL, READ, WRITE): the debug checks gather it."""
        ...

    def owned_pages(self) -> bytes:
        """The pages this node owns, as ``np.packbits`` of the ownership array (node loss accounting)."""
        ...

    def drop_mappings(self) -> int:
        """Unmap every page here, keep the cached copies; the pages cached here."""
        ...

    def dirty_pages(self) -> list:
        """[page, bytes] of every page written here since the last write-back."""
        ...

    def statistics(self) -> FCMStatistics:
        """Fault and protocol counts of this rep."""
        ...


class DynamicFCM(FCM):
    """An FCM whose reps are IVY's dynamic distributed manager (no directory)."""

    def serve(self, page: int, requester: int, want: int, have_version: int, hops: int) -> tuple:
        """Answer a request as owner or forward it along probOwner; (Grant, owner node)."""
        ...

    def owns(self, page: int) -> bool:
        """True if this node owns ``page`` (the search for an owner when a hint points at a lost node)."""
        ...


class PageDirectory(Interface):
    """IVY's manager for the centralized (singleton) and fixed (partitioned) schemes."""

    def request(self, page: int, node: int, want: int, have_version: int) -> Grant:
        """Serve a fault of ``node`` on ``page`` for ``want``."""
        ...

    def evict(self, page: int, node: int, version: int, data: bytes, dirty: bool) -> str | None:
        """The owner gives ``page`` back to the backing store: RELEASED, or None if it moved."""
        ...

    def statistics(self) -> DirectoryStatistics:
        """Invalidations sent and pages zero-filled by this directory rep."""
        ...

    def owners(self) -> bytes:
        """This rep's owner per page (int16, -1: none yet), as bytes (node loss accounting)."""
        ...


class COR(Interface):
    """The backing store of an FCM (singleton, where the file is)."""

    def read_page(self, page: int) -> bytes | None:
        """First-touch contents of ``page``: None means zeros."""
        ...

    def write_back(self, page: int, data: bytes, dirty: bool = True) -> None:
        """Keep an evicted page (an anonymous page always, a file page if dirty)."""
        ...

    def write_pages(self, pages: list) -> int:
        """Write back [page, bytes] pairs and make them durable; how many."""
        ...

    def statistics(self) -> CORStatistics:
        """Pages read, zero-filled and written, and fsyncs."""
        ...


class DSM(Interface):
    """The frames of each node (the DRAM object, one rep per node)."""

    def statistics(self) -> FrameStatistics:
        """This node's frame capacity, resident pages and evictions."""
        ...
