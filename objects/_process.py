"""The Process and Region objects, and the fault handler that starts with them.

The fault path, in the faulting thread of the faulting node
(docs/architecture.md follows it hop by hop):

    trap -> handle_fault(addr, access)                           (this module)
         -> Process.find_region(addr)      ProcessRep, here      replicated: local; singleton: PPC to home
         -> Region.translate(addr, access) RegionRep, here       per_node: local; singleton: PPC to home
         -> FCM.get_page(page, access)     FCMRep, _fcm.py       always this node's rep
              -> its coherence manager (_directory.py, _dynamic.py), COR on first touch, DSM frames
         -> HAT.map_page_unchecked         kernel/machine/_hat.py

Each arrow is a call on a reference typed by the object's interface
(_interfaces.py) through this node's translation table: a local PPC on a
rep, a remote PPC through a stub (kernel/cobj/_table.py).

Process: the root holds the authoritative region list and the address-space
allocator; reps cache an immutable RegionList snapshot.  attach/detach go
through the root, which updates every rep (broadcast) before returning.
Policies: ``per_node`` (lookups are local) or ``singleton``
(every lookup from another node is a remote PPC to the home).

Region: a virtual range, its protection and the FCM behind it.  ``translate``
checks the access and counts faults; it returns where to go next (the FCM
and the page in it) or raises FaultRefused, and the faulting node then calls
its own FCM rep (the page must be mapped where the fault happened, so only
the lookup crosses nodes for a singleton Region).
Policies: ``per_node`` (default), ``singleton``, ``group:k``.
"""

from __future__ import annotations

import bisect
from time import perf_counter_ns

import attrs

from tornado_dsm.kernel import (
    PAGE, ClusteredRep, ClusteredRoot, FaultRefused, NodeLost, ObjectDestroyed, PPCTimeout, current_cos,
)

from ._interfaces import FCM, Process, Region
from ._layout import AddressSpace
from ._records import RegionStatistics

READ_ONLY, READ_WRITE = "r", "rw"
_ACCESS_WRITE = 2


# ---- the fault handler ---------------------------------------------------------------------

class _Refs(dict):
    """oid -> a reference typed by ``interface``, made at first use: the fault
    path's cache, so a fault builds no reference.  Oids are never reused, so
    an entry never goes stale (a destroyed object's calls raise ObjectDestroyed)."""

    def __init__(self, cos, interface: type) -> None:
        super().__init__()
        self.cos, self.interface = cos, interface

    def __missing__(self, oid: int):
        ref = self[oid] = self.cos.ref(oid, self.interface)
        return ref


_process = None        # this node's reference to the Process (set_process)
_regions: _Refs | None = None
_fcms: _Refs | None = None


def set_process(oid: int) -> None:
    """On every node: the Process object whose regions this node's faults use."""
    global _process, _regions, _fcms
    cos = current_cos()
    _regions, _fcms = _Refs(cos, Region), _Refs(cos, FCM)
    _process = cos.ref(oid, Process)


# Fault latency on this node: _latency[b] counts faults that took [2**(b-1), 2**b) ns.
_latency = [0] * 64


def fault_latency_histogram() -> list:
    """This node's fault-latency histogram (log2 ns buckets), a copy."""
    return list(_latency)


def handle_fault(address: int, access: int) -> None:
    """The trap's fault handler on every node (see module docstring).  One
    function on purpose: this is the fast path, a frame costs here."""
    t0 = perf_counter_ns()
    try:
        region = _process.find_region(address)
        if region is None:
            raise FaultRefused(_why_unmapped(address))
        fcm, page = _regions[region].translate(address, access)
        _fcms[fcm].get_page(page, access)
    except ObjectDestroyed as exc:
        raise FaultRefused(f"use after free: {exc}") from None
    except (NodeLost, PPCTimeout) as exc:
        raise FaultRefused(f"{type(exc).__name__} in {_array_name(address)}: {exc}") from None
    finally:
        _latency[(perf_counter_ns() - t0).bit_length()] += 1


def _array_name(address: int) -> str:
    """The name of the array at ``address``, for fault messages (slow path only)."""
    name = _process.region_name(address)
    return f"array {name!r}" if name else "an array"


NO_REGION = "no region at this address (never allocated, or freed)"


def _why_unmapped(address: int) -> str:
    """The reason a fault outside every region is refused: the freed array
    it belonged to if the Process still remembers one (a refused fault is
    rare, so asking the root is fine), else the generic reason."""
    try:
        return _process.why_unmapped(address) or NO_REGION
    except Exception:  # noqa: BLE001 -- a diagnostic must never turn into another failure
        return NO_REGION


# ---- Process -------------------------------------------------------------------------------

# The sorted region list a Process rep caches: immutable snapshots.  attach and
# detach build a new list and the rep swaps its reference in one assignment, so
# the fault path looks regions up without any lock (readers see the old or the
# new list, never half of one).  Lookup is a bisect over a plain list of start
# addresses: faster than numpy's searchsorted for the handful of regions a
# process has.

@attrs.frozen
class RegionEntry:
    """One attached region: [start, end) and the oid of its Region object."""

    start: int
    end: int
    oid: int
    name: str = ""


@attrs.frozen
class RegionList:
    """Regions sorted by start; never overlapping."""

    entries: tuple[RegionEntry, ...] = ()
    starts: tuple[int, ...] = ()

    @classmethod
    def of(cls, rows) -> "RegionList":
        """A list from ``to_wire`` rows ([start, end, oid, name], sorted, not overlapping)."""
        entries = tuple(RegionEntry(*row) for row in rows)
        return cls(entries, tuple(e.start for e in entries))

    def to_wire(self) -> list:
        """The entries as msgpack-able rows, in order."""
        return [[e.start, e.end, e.oid, e.name] for e in self.entries]

    def find(self, address: int) -> RegionEntry | None:
        """The region containing ``address``, or None."""
        i = bisect.bisect_right(self.starts, address) - 1
        if i >= 0:
            entry = self.entries[i]
            if address < entry.end:
                return entry
        return None

    def with_region(self, entry: RegionEntry) -> "RegionList":
        """A new list with ``entry`` added; ValueError if it overlaps another."""
        if entry.end <= entry.start:
            raise ValueError(f"region [{entry.start:#x}, {entry.end:#x}) is empty")
        i = bisect.bisect_right(self.starts, entry.start)
        if i > 0 and self.entries[i - 1].end > entry.start or i < len(self.entries) and self.entries[i].start < entry.end:
            raise ValueError(f"region [{entry.start:#x}, {entry.end:#x}) overlaps an attached region")
        entries = self.entries[:i] + (entry,) + self.entries[i:]
        return RegionList(entries, tuple(e.start for e in entries))

    def without(self, oid: int) -> "RegionList":
        """A new list without the region ``oid``; KeyError if it is not attached."""
        entries = tuple(e for e in self.entries if e.oid != oid)
        if len(entries) == len(self.entries):
            raise KeyError(f"region {oid:#x} is not attached")
        return RegionList(entries, tuple(e.start for e in entries))

    def __len__(self) -> int:
        return len(self.entries)


class ProcessRep(ClusteredRep, Process):
    """A cached copy of the region list."""

    def __init__(self, entries: list) -> None:
        self.set_regions(entries)

    def set_regions(self, entries: list) -> None:
        self.regions = RegionList.of(entries)  # one assignment: lookups see the old or the new list

    def find_region(self, address: int) -> int | None:
        entry = self.regions.find(address)
        return None if entry is None else entry.oid

    def region_name(self, address: int) -> str:
        entry = self.regions.find(address)
        return "" if entry is None else entry.name

    # Rare operations go to the root (K42: reps forward what needs the whole picture).

    def allocate(self, npages: int) -> int:
        return self.call_root("allocate", npages)

    def release(self, first_page: int) -> None:
        self.call_root("release", first_page)

    def retire(self, first_page: int) -> None:
        self.call_root("retire", first_page)

    def why_unmapped(self, address: int) -> str:
        return self.call_root("why_unmapped", address)

    def attach(self, start: int, end: int, region: int, name: str) -> None:
        self.call_root("attach", start, end, region, name)

    def detach(self, region: int) -> None:
        self.call_root("detach", region)


class ProcessRoot(ClusteredRoot):
    """The authoritative region list and allocator of the shared address space."""

    Rep = ProcessRep
    POLICIES = ("singleton", "per_node")
    SWAP = True  # the root holds the region list; reps are caches built from rep_args
    MIGRATE = True  # the root's state is the layout, the region list and the detached runs

    def __init__(self, base: int, npages: int) -> None:
        self.base = base
        self.space = AddressSpace(npages)
        self.regions = RegionList()
        self.detached: dict[int, tuple[int, str]] = {}  # first page -> (count, name), detach to retire

    def rep_args(self, node: int) -> list:
        return [self.regions.to_wire()]

    def migrate_export(self) -> list:
        """The root's whole state, for a move to another home (kernel/cobj/_migrate.py)."""
        return [self.base, self.space.to_wire(), self.regions.to_wire(),
                [[first, n, name] for first, (n, name) in self.detached.items()]]

    def migrate_import(self, state: list) -> None:
        """Become the root ``migrate_export`` described (on the new home)."""
        self.base, space, regions, detached = state
        self.space, self.regions = AddressSpace.of(space), RegionList.of(regions)
        self.detached = {first: (n, name) for first, n, name in detached}

    def allocate(self, npages: int) -> int:
        """Reserve ``npages`` pages of the window; returns the first page."""
        with self.lock:
            return self.space.allocate(npages)

    def release(self, first_page: int) -> None:
        """Give a reserved run that was never attached back at once."""
        with self.lock:
            self.space.release(first_page)

    def retire(self, first_page: int) -> None:
        """Give back the run of a freed (detached) region: it is quarantined
        (_layout.py), so its addresses are not handed out again while the
        window has other room, and faults on it name the freed region."""
        with self.lock:
            _count, name = self.detached.pop(first_page, (0, ""))
            self.space.retire(first_page, name)

    def why_unmapped(self, address: int) -> str:
        """Why a fault at ``address``, in no region, is refused: "use after
        free" naming the freed region there, or "" if none is remembered."""
        page = (address - self.base) // PAGE
        with self.lock:
            found = self.space.freed_at(page) if 0 <= page < self.space.npages else None
            if found is None:  # detached, its objects being destroyed, not yet retired
                found = next(((first, n, name) for first, (n, name) in self.detached.items()
                              if first <= page < first + n), None)
        if found is None:
            return ""
        first, count, name = found
        start = self.base + first * PAGE
        return (f"use after free: array {name!r} [{start:#x}, {start + count * PAGE:#x}) was freed "
                "(its addresses stay unmapped until the window needs them again)")

    def attach(self, start: int, end: int, region_oid: int, name: str) -> None:
        """Add a region; every rep knows it before this returns (ValueError if it overlaps)."""
        with self.lock:
            self.regions = self.regions.with_region(RegionEntry(start, end, region_oid, name))
            entries = self.regions.to_wire()
        self.broadcast("set_regions", entries)

    def detach(self, region_oid: int) -> None:
        """Remove a region; every rep has forgotten it before this returns (KeyError if unknown)."""
        with self.lock:
            gone = next((e for e in self.regions.entries if e.oid == region_oid), None)
            self.regions = self.regions.without(region_oid)
            if gone is not None:  # remembered from now on, so a fault on it can name it
                first = (gone.start - self.base) // PAGE
                self.detached[first] = ((gone.end - gone.start) // PAGE, gone.name)
            entries = self.regions.to_wire()
        self.broadcast("set_regions", entries)


# ---- Region --------------------------------------------------------------------------------

class RegionRep(ClusteredRep, Region):
    """Range checks, protection and fault counts of one region."""

    def __init__(self, start: int, npages: int, prot: str, fcm_oid: int, counts=(0, 0, 0)) -> None:
        self.start_address, self.npages, self.prot, self.fcm_oid = start, npages, prot, fcm_oid
        self.end = start + npages * PAGE
        self.read_faults, self.write_faults, self.refused = counts

    def swap_export(self) -> list:
        """The fault counts move to the new reps at a hot swap (so none is lost)."""
        return [self.read_faults, self.write_faults, self.refused]

    def translate(self, address: int, access: int) -> tuple[int, int]:
        if not self.start_address <= address < self.end:
            self.refused += 1
            raise FaultRefused(f"address {address:#x} is outside region [{self.start_address:#x}, {self.end:#x})")
        if access == _ACCESS_WRITE and self.prot == READ_ONLY:
            self.refused += 1
            raise FaultRefused("write to a read-only region")
        if access == _ACCESS_WRITE:
            self.write_faults += 1
        else:
            self.read_faults += 1
        return self.fcm_oid, (address - self.start_address) >> 12

    def statistics(self) -> RegionStatistics:
        return RegionStatistics(self.read_faults, self.write_faults, self.refused)


class RegionRoot(ClusteredRoot):
    """Root of a Region."""

    Rep = RegionRep
    POLICIES = ("singleton", "per_node", "group")
    SWAP = True  # the reps' fault counts move through swap_export / swap_import
    MIGRATE = True  # the root's state is its arguments and the counts it carries

    def __init__(self, start: int, npages: int, prot: str, fcm_oid: int) -> None:
        if prot not in (READ_ONLY, READ_WRITE):
            raise ValueError(f"region protection must be 'r' or 'rw', not {prot!r}")
        self.args = [start, npages, prot, fcm_oid]
        self.carried = [0, 0, 0]  # fault counts of the reps a hot swap retired

    def rep_args(self, node: int) -> list:
        carried, self.carried = self.carried, [0, 0, 0]  # to the first new rep only: counted once
        return self.args + [carried]

    def migrate_export(self) -> list:
        """The root's state, for a move to another home (kernel/cobj/_migrate.py)."""
        return [self.args, self.carried]

    def migrate_import(self, state: list) -> None:
        """Become the root ``migrate_export`` described (on the new home)."""
        self.args, self.carried = list(state[0]), list(state[1])

    def swap_import(self, states: list) -> None:
        """Sum the retired reps' fault counts; the first rep built after the swap carries them."""
        for state in states:
            self.carried = [a + b for a, b in zip(self.carried, state)]
