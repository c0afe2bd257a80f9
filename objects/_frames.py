"""The DSM object's rep on a node: frame accounting with a capacity.

Resident frames are counted by the kernel itself (the node memfd's allocated
blocks): every path that stops holding a page punches its frame out, so the
count is exact without bookkeeping on the fault path.  When a fault needs a
new frame and the node is at capacity, victims are evicted: read copies
first (dropped here, no message), then owned pages (back to the backing
store through their manager).
"""

from __future__ import annotations

import threading

import numpy as np

from tornado_dsm.kernel import ClusteredRep, ClusteredRoot

from . import _nodestate
from ._fcm import NIL
from ._interfaces import DSM
from ._records import FrameStatistics


class FrameAccount:
    """Frames of one node's memory; ``capacity`` pages (None: unlimited)."""

    def __init__(self, memory, capacity: int | None) -> None:
        if capacity is not None and capacity < 1:
            raise ValueError(f"memory_per_node must allow at least one page, not {capacity} pages")
        self.memory, self.capacity = memory, capacity
        self.fcms: list = []
        self._lock = threading.Lock()
        self.evicted_copies = self.evicted_owned = 0

    def register(self, fcm) -> None:
        """Count an FCM's pages on this node among the candidates for eviction."""
        with self._lock:
            self.fcms.append(fcm)

    def unregister(self, fcm) -> None:
        """Forget a freed FCM."""
        with self._lock:
            self.fcms = [f for f in self.fcms if f is not fcm]

    def make_room(self, for_fcm, for_page: int) -> None:
        """Evict until one more frame fits (no-op without a capacity)."""
        if self.capacity is None:
            return
        for _ in range(8 * self.capacity):
            if self.memory.resident_pages() < self.capacity:
                return
            if not (self._evict_one(owned=False, skip=(for_fcm, for_page))
                    or self._evict_one(owned=True, skip=(for_fcm, for_page))):
                return  # nothing evictable now (all busy): go over capacity rather than stall

    def _evict_one(self, owned: bool, skip) -> bool:
        for fcm in list(self.fcms):
            held = (fcm.access != NIL) & (fcm.owned == owned) & (fcm.requesting == 0)
            for page in np.flatnonzero(held).tolist():
                if (fcm, page) != skip and fcm.evict(page):
                    if owned:
                        self.evicted_owned += 1
                    else:
                        self.evicted_copies += 1
                    return True
        return False

    def statistics(self) -> FrameStatistics:
        """Capacity, resident frames and evictions so far."""
        return FrameStatistics(self.capacity, self.memory.resident_pages(),
                               self.evicted_copies, self.evicted_owned)


# ---- the DSM as a clustered object (the DRAM object) -------------------------------------

class DSMRep(ClusteredRep, DSM):
    """This node's frames (the DRAM object)."""

    def statistics(self) -> FrameStatistics:
        return _nodestate.current().frames.statistics()


class DSMRoot(ClusteredRoot):
    """Root of the DSM object (per_node)."""

    Rep = DSMRep
    POLICIES = ("per_node",)
