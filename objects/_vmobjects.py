"""Process, Region, COR and DSM as clustered objects (FCM: _fcmobject).

Process: the root holds the authoritative region list and the address-space
allocator; reps cache an immutable RegionList snapshot.  attach/detach go
through the root, which updates every rep (broadcast) before returning.
Policies: ``replicated`` (per_node; lookups are local) or ``singleton``
(every lookup from another node is a remote PPC to the home).

Region: a virtual range, its protection and the FCM behind it.  ``translate``
checks the access and counts faults; it returns where to go next, and the
faulting node then calls its own FCM rep (the page must be mapped where the
fault happened, so only the lookup crosses nodes for a singleton Region).
Policies: ``per_node`` (default), ``singleton``, ``group:k``.

COR: singleton per backing store, on the node that created it (the file is
on that host).  DSM: per_node; each rep reports its node's frames.
"""

from __future__ import annotations


from tornado_dsm.kernel import PAGE, ClusteredRep, ClusteredRoot

from . import _nodestate
from ._cor import AnonymousCOR, FileCOR
from ._layout import AddressSpace
from ._regionlist import RegionEntry, RegionList

READ_ONLY, READ_WRITE = "r", "rw"
_ACCESS_WRITE = 2


class ProcessRep(ClusteredRep):
    """A cached copy of the region list."""

    def __init__(self, entries: list) -> None:
        self.set_regions(entries)

    def set_regions(self, entries: list) -> None:
        """Replace the cached list (the root broadcasts this on attach/detach)."""
        self.regions = RegionList.of(entries)  # one assignment: lookups see the old or the new list

    def find_region(self, address: int):
        """The oid of the region holding ``address``, or None."""
        entry = self.regions.find(address)
        return None if entry is None else entry.oid

    # Rare operations go to the root (K42: reps forward what needs the whole picture).

    def allocate(self, npages: int) -> int:
        return self.call_root("allocate", npages)

    def release(self, first_page: int) -> None:
        self.call_root("release", first_page)

    def attach(self, start: int, end: int, region_oid: int, name: str) -> None:
        self.call_root("attach", start, end, region_oid, name)

    def detach(self, region_oid: int) -> None:
        self.call_root("detach", region_oid)


class ProcessRoot(ClusteredRoot):
    """The authoritative region list and allocator of the shared address space."""

    Rep = ProcessRep
    POLICIES = ("singleton", "per_node")

    def __init__(self, base: int, npages: int) -> None:
        self.base = base
        self.space = AddressSpace(npages)
        self.regions = RegionList()

    def rep_args(self, node: int) -> list:
        return [self.regions.to_wire()]

    def allocate(self, npages: int) -> int:
        """Reserve ``npages`` pages of the window; returns the first page."""
        with self.lock:
            return self.space.allocate(npages)

    def release(self, first_page: int) -> None:
        """Give a reserved run back."""
        with self.lock:
            self.space.release(first_page)

    def attach(self, start: int, end: int, region_oid: int, name: str) -> None:
        """Add a region; every rep knows it before this returns (ValueError if it overlaps)."""
        with self.lock:
            self.regions = self.regions.with_region(RegionEntry(start, end, region_oid, name))
            entries = self.regions.to_wire()
        self.broadcast("set_regions", entries)

    def detach(self, region_oid: int) -> None:
        """Remove a region; every rep has forgotten it before this returns (KeyError if unknown)."""
        with self.lock:
            self.regions = self.regions.without(region_oid)
            entries = self.regions.to_wire()
        self.broadcast("set_regions", entries)


class RegionRep(ClusteredRep):
    """Range checks, protection and fault counts of one region."""

    def __init__(self, start: int, npages: int, prot: str, fcm_oid: int) -> None:
        self.start_address, self.npages, self.prot, self.fcm_oid = start, npages, prot, fcm_oid
        self.end = start + npages * PAGE
        self.read_faults = self.write_faults = self.refused = 0

    def translate(self, address: int, access: int):
        """[fcm oid, page] for a legal access, else the reason it is refused."""
        if not self.start_address <= address < self.end:
            self.refused += 1
            return f"address {address:#x} is outside region [{self.start_address:#x}, {self.end:#x})"
        if access == _ACCESS_WRITE and self.prot == READ_ONLY:
            self.refused += 1
            return "write to a read-only region"
        if access == _ACCESS_WRITE:
            self.write_faults += 1
        else:
            self.read_faults += 1
        return [self.fcm_oid, (address - self.start_address) >> 12]

    def statistics(self) -> dict:
        return {"read_faults": self.read_faults, "write_faults": self.write_faults,
                "refused": self.refused}


class RegionRoot(ClusteredRoot):
    """Root of a Region."""

    Rep = RegionRep
    POLICIES = ("singleton", "per_node", "group")

    def __init__(self, start: int, npages: int, prot: str, fcm_oid: int) -> None:
        if prot not in (READ_ONLY, READ_WRITE):
            raise ValueError(f"region protection must be 'r' or 'rw', not {prot!r}")
        self.args = [start, npages, prot, fcm_oid]

    def rep_args(self, node: int) -> list:
        return self.args


class CORRep(ClusteredRep):
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

    def statistics(self) -> dict:
        s = self.store.statistics()
        return {"pages_read": s.pages_read, "pages_zero_filled": s.pages_zero_filled,
                "pages_written": s.pages_written, "fsyncs": s.fsyncs}

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


class DSMRep(ClusteredRep):
    """This node's frames (the DRAM object)."""

    def statistics(self) -> dict:
        s = _nodestate.current().frames.statistics()
        return {"capacity": s.capacity, "resident": s.resident,
                "evicted_copies": s.evicted_copies, "evicted_owned": s.evicted_owned}


class DSMRoot(ClusteredRoot):
    """Root of the DSM object (per_node)."""

    Rep = DSMRep
    POLICIES = ("per_node",)
