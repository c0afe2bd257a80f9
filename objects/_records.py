"""The frozen records the VM's objects pass between nodes: a manager's Grant
and what each object counts.

Each is a ``wire_record``: a method returns one of these whether it is
called on its own node or by PPC from another.  The Cluster API adds the
statistics up per node (tornado_dsm/_stats.py); counts are since the object
was created.
"""

from __future__ import annotations

import attrs

from tornado_dsm.kernel import wire_record


@wire_record
@attrs.frozen
class Grant:
    """A manager's answer to a request: install ``data`` (None: keep the
    frame, ZERO_FILL: zeros) at ``version`` with ``access``; ``owner`` says
    whether ownership comes with it and ``dirty`` travels with ownership."""

    version: int
    access: int
    data: bytes | None = None
    dirty: bool = False
    owner: bool = False


@wire_record
@attrs.frozen
class CORStatistics:
    """I/O done by a backing store."""

    pages_read: int         # pages read back: from the file, or from swap after an eviction
    pages_zero_filled: int  # first touches the COR itself answered with zeros
    pages_written: int      # pages written back: evictions, flushes, frees
    fsyncs: int             # fsync calls (a file's flush); 0 for anonymous memory


@wire_record
@attrs.frozen
class FrameStatistics:
    """Frames of one node."""

    capacity: int | None  # frames this node may hold (memory_per_node in pages); None: no limit
    resident: int         # frames allocated in the node's memfd now
    evicted_copies: int   # read copies dropped to make room
    evicted_owned: int    # owned pages handed back to their backing store to make room


@wire_record
@attrs.frozen
class RegionStatistics:
    """Faults one Region rep translated."""

    read_faults: int = 0   # read accesses translated (each is a fault on some node)
    write_faults: int = 0  # write accesses translated
    refused: int = 0       # accesses refused: outside the region, or a write to a read-only one


@wire_record
@attrs.frozen
class FCMStatistics:
    """Faults and protocol work of one FCM rep (one node's cache of a memory object)."""

    incore_faults: int = 0     # the copy was already here: only the HAT mapping was missing
    coherence_faults: int = 0  # needed the manager (a local grant or a request), not a first touch
    stale_grants: int = 0      # grants discarded because an invalidation overtook them
    resident: int = 0          # pages this node holds a copy of now
    forwards: int = 0          # dynamic manager: requests forwarded along probOwner
    invalidations: int = 0     # dynamic manager: invalidations this rep sent as owner
    zero_fills: int = 0        # dynamic manager: first touches this rep zero-filled as owner
    first_touches: int = 0     # faults here granted as zeros (first touch of anonymous memory)
    read_faults: int = 0       # faults here that asked to read ...
    write_faults: int = 0      # ... and to write (counted on the faulting node)
    prefetched: int = 0        # read copies installed here beside another page's grant (prefetch)
    prefetch_hits: int = 0     # ... of which a later access used
    prefetch_discarded: int = 0  # prefetched copies refused: overtaken by an invalidation, or not needed
    prefetch_sent: int = 0     # dynamic manager: pages this rep shared as owner beside a read grant


@wire_record
@attrs.frozen
class DirectoryStatistics:
    """Work of one PageDirectory rep (centralized and fixed managers)."""

    invalidations: int = 0  # invalidations sent to readers before write grants
    zero_fills: int = 0     # first touches answered with zeros, without a COR call
