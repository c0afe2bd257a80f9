"""The directory schemes of IVY (centralized and fixed distributed), both halves.

``Directory`` is the state and logic of a PageDirectory rep (the manager);
``DirectoryClient`` is the coherence manager of the FCM reps that use it
(the requester's side: ask the directory, hand evicted pages back to it).

For each page the directory knows the owner, the copyset (a bitmask of nodes
holding read copies, owner excluded) and the version of the last write grant.
It serializes the requests of a page: one request at a time holds the page
(``busy``) across its remote calls; the others wait.  Different pages proceed
in parallel.

Message counts, requester k, owner o, manager M, all distinct (IVY's analysis;
each remote call is one request and one reply):

    read fault   k->M, M->o (send_copy), o->M, M->k                     = 4
    write fault  k->M, M->c and back for each reader c and M->o (give)
                 and back, all in parallel, then M->k                   = 4 + 2r
                 (latency: 2 round trips from k, the owner's hand-over
                 overlapping the invalidations)

The centralized scheme has one directory (on its home node); the fixed
scheme has one per node, page p on node p mod N.  Both use these classes;
the difference is only which node a requester's call goes to, which the
PageDirectory object's policy (singleton or partitioned) decides.

``migrate`` (single reader / single writer) needs nothing here: its FCM pages
ask for WRITE on every fault, so every request moves the page.  ``protocol``
only tells the debug checks which invariants apply.
"""

from __future__ import annotations

import threading
import numpy as np

from tornado_dsm.kernel import LOST, ClusteredRep, ClusteredRoot, DSMInternalError, NodeLost

from ._copyset import bits
from ._fcm import (
    PROTOCOLS, READ, RELEASED, WRITE, ZERO_FILL, CoherenceManager, FCMRep, FCMRoot, FCMSpec, Grant,
    cor_client, gather_access, wait,
)
from ._interfaces import FCM, PageDirectory
from ._invariants import check_page
from ._records import DirectoryStatistics

class DirectoryClient(CoherenceManager):
    """An FCM rep's coherence manager under a directory scheme: every fault
    that is not in-core asks the PageDirectory (a typed reference: the COS
    routes the call to the directory rep that manages the page)."""

    def __init__(self, directory, node: int) -> None:
        self.directory, self.node = directory, node

    def request(self, page: int, want: int, have_version: int) -> Grant:
        """Ask the directory for ``page``."""
        return self.directory.request(page, self.node, want, have_version)

    def release_owned(self, page: int, version: int, data: bytes, dirty: bool):
        """Hand an evicted owned page back to the backing store through the directory."""
        return self.directory.evict(page, self.node, version, data, dirty)


class Directory:
    """Owner, copyset and version of ``npages`` pages (a PageDirectory rep's state).

    ``fcm`` reaches the FCM reps of this memory object: ``fcm.on(node)``
    one node's (send_copy, give_page), ``fcm.on_each(nodes)`` several at
    once (invalidate; all requests sent before any reply is awaited).
    ``store`` is the CORClient: ``store.fill(page)`` returns the first-touch
    contents (None for zeros) and ``store.spill(page, data, dirty)`` writes
    an evicted owned page back.
    """

    def __init__(self, npages: int, fcm, store, protocol: str = "ivy") -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
        self.npages, self.fcm, self.store, self.protocol = npages, fcm, store, protocol
        self.owner = np.full(npages, -1, dtype=np.int16)
        self.copyset = np.zeros(npages, dtype=np.uint64)
        self.version = np.zeros(npages, dtype=np.uint32)
        self.busy = np.zeros(npages, dtype=np.uint8)
        self.cond = threading.Condition()
        self.invalidations = 0

    def request(self, page: int, node: int, want: int, have_version: int) -> Grant:
        """Serve a fault of ``node`` on ``page`` for ``want`` (READ or WRITE)."""
        if not 0 <= page < self.npages:
            raise DSMInternalError("Directory.request", f"page {page} outside [0, {self.npages})")
        self._acquire(page)
        try:
            if want == WRITE:
                return self._locked_write(page, node, have_version)
            return self._locked_read(page, node)
        finally:
            self._release(page)

    def _acquire(self, page: int) -> None:
        with self.cond:
            while self.busy[page]:
                wait(self.cond)
            self.busy[page] = 1

    def _release(self, page: int) -> None:
        with self.cond:
            self.busy[page] = 0
            self.cond.notify_all()

    def _locked_read(self, page: int, node: int) -> Grant:
        """Read grant: a copy from the owner, requester joins the copyset."""
        owner, version = int(self.owner[page]), int(self.version[page])
        if owner < 0:  # first touch anywhere: the requester becomes the owner
            self.owner[page] = node
            self.version[page] = version + 1
            return Grant(version + 1, READ, self._first_touch(page), owner=True)
        if owner == node:
            raise DSMInternalError("Directory._locked_read", f"owner {node} of page {page} asks for a copy")
        data = self.fcm.on(owner).send_copy(page, version)
        self.copyset[page] |= np.uint64(1 << node)
        return Grant(version, READ, data)

    def _locked_write(self, page: int, node: int, have_version: int) -> Grant:
        """Write grant: invalidate readers, move ownership (and data if needed).
        A requester holding the current copy (``have_version``) gets no data:
        an upgrade moves ownership only."""
        owner, version = int(self.owner[page]), int(self.version[page])
        new = version + 1
        dirty, data = False, None
        if owner >= 0 and owner != node:
            data, dirty = self._locked_take(page, node, owner, version, new, have_version != version)
        else:
            self._locked_invalidate(page, node, owner, new)
            if owner < 0:
                data = self._first_touch(page)
            elif have_version != version:
                raise DSMInternalError("Directory._locked_write", f"owner {node} of page {page} lost its copy")
        self.owner[page] = node
        self.copyset[page] = 0
        self.version[page] = new
        return Grant(new, WRITE, data, dirty, owner=True)

    def evict(self, page: int, node: int, version: int, data: bytes, dirty: bool):
        """The owner ``node`` gives ``page`` (at ``version``) back to the backing
        store; readers keep their copies.  RELEASED, or None if ownership
        moved meanwhile."""
        self._acquire(page)
        try:
            if self.owner[page] != node or self.version[page] != version:
                return None
            self.store.spill(page, data, dirty)
            self.owner[page] = -1
            return RELEASED
        finally:
            self._release(page)

    def _locked_invalidate(self, page: int, node: int, owner: int, new_version: int) -> None:
        """Invalidate every reader but the requester and the owner, in parallel."""
        mask = int(self.copyset[page]) & ~(1 << node)
        if owner >= 0:
            mask &= ~(1 << owner)
        if not mask:
            return
        readers = bits(mask)
        # a lost reader's copy died with it: nothing to wait for (LOST)
        self.fcm.on_each(readers, tolerate_lost=True).invalidate(page, new_version)
        self.invalidations += len(readers)

    def _locked_take(self, page: int, node: int, owner: int, version: int, new: int, need: bool):
        """The owner's hand-over and the readers' invalidations in one fan-out:
        (bytes or None, dirty) from the owner once every reader has dropped its copy.

        Why this keeps sequential consistency: nothing is granted until every
        copy (the owner's and each reader's) is gone, exactly as when they ran
        one after the other; they are independent of each other (each node
        revokes its own copy), so running them at once only removes a round
        trip from the latency: 2 instead of 3 between manager and nodes."""
        mask = int(self.copyset[page]) & ~(1 << node) & ~(1 << owner)
        readers = bits(mask)
        # a lost reader's copy died with it (LOST); a lost owner took the page with it
        out = self.fcm.on_each(readers + [owner], tolerate_lost=True).relinquish(
            page, owner, version, new, need, node)
        if out[-1] is LOST:
            raise NodeLost(f"owner {owner} of page {page} is lost: its contents died with it")
        self.invalidations += len(readers)
        data, dirty = out[-1]
        return data, dirty

    def _first_touch(self, page: int) -> bytes:
        """Contents of a page no node holds yet: from the COR, or zeros."""
        data = self.store.fill(page)
        return ZERO_FILL if data is None else data

    def holders(self, page: int) -> tuple[int, list[int]]:
        """(owner, readers) of a page, for invariant checks and inspection."""
        return int(self.owner[page]), bits(int(self.copyset[page]))


# ---- as clustered objects: the PageDirectory, and the FCM variant that uses it ---------------

class PageDirectoryRep(ClusteredRep, PageDirectory):
    """The manager of (a slice of) an FCM's pages."""

    KEYED = frozenset({"request", "evict"})

    def __init__(self, fcm: int, spec: FCMSpec) -> None:
        self.debug, self.protocol = spec.debug, spec.protocol
        self.fcm = self._cos.ref(fcm, FCM)
        self.store = cor_client(self._cos, spec)
        self.dir = Directory(spec.npages, self.fcm, self.store, protocol=spec.protocol)

    def request(self, page: int, node: int, want: int, have_version: int) -> Grant:
        grant = self.dir.request(page, node, want, have_version)
        if self.debug:
            owner, _ = self.dir.holders(page)
            access = gather_access(self.fcm, self._cos.nnodes, page)
            check_page(page, access, owner, int(self.dir.copyset[page]), self.protocol)
        return grant

    def evict(self, page: int, node: int, version: int, data: bytes, dirty: bool):
        return self.dir.evict(page, node, version, data, dirty)

    def statistics(self) -> DirectoryStatistics:
        return DirectoryStatistics(self.dir.invalidations, self.store.zero_fills)

    def owners(self) -> bytes:
        return self.dir.owner.tobytes()


class PageDirectoryRoot(ClusteredRoot):
    """Root of a PageDirectory; every rep starts from the FCM's oid and spec."""

    Rep = PageDirectoryRep
    POLICIES = ("singleton", "partitioned")

    def __init__(self, fcm: int, spec: FCMSpec) -> None:
        self.fcm, self.spec = fcm, spec

    def rep_args(self, node: int) -> list:
        return [self.fcm, self.spec]


class DirectoryFCMRep(FCMRep):
    """An FCM rep under IVY's centralized or fixed manager: faults ask the PageDirectory."""

    def _make_manager(self, spec: FCMSpec) -> DirectoryClient:
        return DirectoryClient(self._cos.ref(spec.directory, PageDirectory), self.node)


class DirectoryFCMRoot(FCMRoot):
    """Root of an FCM under the centralized or fixed manager."""

    Rep = DirectoryFCMRep
