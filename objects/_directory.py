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
scheme has one per node, page p on node p mod N, each keeping only its
slice (slot p // N, so a node pays for 1/N of the pages).  Both use these classes;
the difference is only which node a requester's call goes to, which the
PageDirectory object's policy (singleton or partitioned) decides, and a hot
swap of that policy moves the slices from one layout to the other
(_dirswap.py).

``migrate`` (single reader / single writer) needs nothing here: its FCM pages
ask for WRITE on every fault, so every request moves the page.  ``protocol``
only tells the debug checks which invariants apply.
"""

from __future__ import annotations

import threading
import numpy as np

from tornado_dsm.kernel import LOST, ClusteredRep, ClusteredRoot, DSMInternalError, NodeLost

from ._copyset import bits, copyset_dtype, node_dtype
from ._dirswap import NOT_HELD, TAKEN, HeldSlices, export_slice, load_slice
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

    def __init__(self, npages: int, fcm, store, protocol: str = "ivy", nnodes: int = 64,
                 stride: int = 1, offset: int = 0) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
        if not 0 <= offset < stride:
            raise ValueError(f"a directory slice needs 0 <= offset < stride, not offset {offset}, stride {stride}")
        self.npages, self.fcm, self.store, self.protocol = npages, fcm, store, protocol
        # the slice: pages offset, offset + stride, ... (stride 1: every page), slot page // stride
        self.stride, self.offset = stride, offset
        slots = len(range(offset, npages, stride))
        self.owner = np.full(slots, -1, dtype=node_dtype(nnodes))
        self.copyset = np.zeros(slots, dtype=copyset_dtype(nnodes))
        self.version = np.zeros(slots, dtype=np.uint32)
        # slots with a request in progress: at most one per serving thread, so a
        # set costs nothing per page (a byte array of them would cost one each)
        self.busy: set[int] = set()
        self.cond = threading.Condition()
        self.invalidations = 0

    def slot(self, page: int) -> int:
        """Where ``page``'s state is kept in this slice; a page of another slice,
        or outside the object, is a routing bug and stops loudly."""
        if not 0 <= page < self.npages or page % self.stride != self.offset:
            raise DSMInternalError("Directory.slot", f"page {page} is not in this directory's slice "
                                   f"(pages {self.offset} + k*{self.stride} below {self.npages})")
        return page // self.stride

    def request(self, page: int, node: int, want: int, have_version: int) -> Grant:
        """Serve a fault of ``node`` on ``page`` for ``want`` (READ or WRITE)."""
        i = self.slot(page)
        self._acquire(i)
        try:
            if want == WRITE:
                return self._locked_write(page, i, node, have_version)
            return self._locked_read(page, i, node)
        finally:
            self._release(i)

    def _acquire(self, i: int) -> None:
        with self.cond:
            while i in self.busy:
                wait(self.cond)
            self.busy.add(i)

    def _release(self, i: int) -> None:
        with self.cond:
            self.busy.discard(i)
            self.cond.notify_all()

    def _locked_read(self, page: int, i: int, node: int) -> Grant:
        """Read grant: a copy from the owner, requester joins the copyset (slot ``i``)."""
        owner, version = int(self.owner[i]), int(self.version[i])
        if owner < 0:  # first touch anywhere: the requester becomes the owner
            self.owner[i] = node
            self.version[i] = version + 1
            return Grant(version + 1, READ, self._first_touch(page), owner=True)
        if owner == node:
            raise DSMInternalError("Directory._locked_read", f"owner {node} of page {page} asks for a copy")
        data = self.fcm.on(owner).send_copy(page, version)
        self.copyset[i] = int(self.copyset[i]) | 1 << node
        return Grant(version, READ, data)

    def _locked_write(self, page: int, i: int, node: int, have_version: int) -> Grant:
        """Write grant: invalidate readers, move ownership (and data if needed).
        A requester holding the current copy (``have_version``) gets no data:
        an upgrade moves ownership only."""
        owner, version = int(self.owner[i]), int(self.version[i])
        new = version + 1
        dirty, data = False, None
        if owner >= 0 and owner != node:
            data, dirty = self._locked_take(page, int(self.copyset[i]), node, owner, version, new,
                                            have_version != version)
        else:
            self._locked_invalidate(page, int(self.copyset[i]), node, owner, new)
            if owner < 0:
                data = self._first_touch(page)
            elif have_version != version:
                raise DSMInternalError("Directory._locked_write", f"owner {node} of page {page} lost its copy")
        self.owner[i] = node
        self.copyset[i] = 0
        self.version[i] = new
        return Grant(new, WRITE, data, dirty, owner=True)

    def evict(self, page: int, node: int, version: int, data: bytes, dirty: bool):
        """The owner ``node`` gives ``page`` (at ``version``) back to the backing
        store; readers keep their copies.  RELEASED, or None if ownership
        moved meanwhile."""
        i = self.slot(page)
        self._acquire(i)
        try:
            if self.owner[i] != node or self.version[i] != version:
                return None
            self.store.spill(page, data, dirty)
            self.owner[i] = -1
            return RELEASED
        finally:
            self._release(i)

    def _locked_invalidate(self, page: int, copyset: int, node: int, owner: int, new_version: int) -> None:
        """Invalidate every reader of ``copyset`` but the requester and the owner, in parallel."""
        mask = copyset & ~(1 << node)
        if owner >= 0:
            mask &= ~(1 << owner)
        if not mask:
            return
        readers = bits(mask)
        # a lost reader's copy died with it: nothing to wait for (LOST)
        self.fcm.on_each(readers, tolerate_lost=True).invalidate(page, new_version)
        self.invalidations += len(readers)

    def _locked_take(self, page: int, copyset: int, node: int, owner: int, version: int, new: int, need: bool):
        """The owner's hand-over and the readers' invalidations in one fan-out:
        (bytes or None, dirty) from the owner once every reader has dropped its copy.

        Why this keeps sequential consistency: nothing is granted until every
        copy (the owner's and each reader's) is gone, exactly as when they ran
        one after the other; they are independent of each other (each node
        revokes its own copy), so running them at once only removes a round
        trip from the latency: 2 instead of 3 between manager and nodes."""
        mask = copyset & ~(1 << node) & ~(1 << owner)
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
        i = self.slot(page)
        return int(self.owner[i]), bits(int(self.copyset[i]))


# ---- as clustered objects: the PageDirectory, and the FCM variant that uses it ---------------

class PageDirectoryRep(ClusteredRep, PageDirectory):
    """The manager of (a slice of) an FCM's pages."""

    KEYED = frozenset({"request", "evict"})

    def __init__(self, fcm: int, spec: FCMSpec, stride: int, offset: int, held: int = NOT_HELD) -> None:
        self.debug, self.protocol = spec.debug, spec.protocol
        self.fcm = self._cos.ref(fcm, FCM)
        self.store = cor_client(self._cos, spec)
        self.dir = Directory(spec.npages, self.fcm, self.store, protocol=spec.protocol,
                             nnodes=self._cos.nnodes, stride=stride, offset=offset)
        self.held = held  # >= 0: the root holds this slice (a swap moved it) until the first call
        self.carried = [0, 0]  # invalidations, zero fills of the reps a swap retired
        self._taking = threading.Lock()

    def _state(self) -> Directory:
        """The slice, after taking it from the root if a swap left it there (_dirswap.py)."""
        if self.held != NOT_HELD:
            self._take()
        return self.dir

    def _take(self) -> None:
        """Take the held slice from the root, once (the other threads wait for it)."""
        with self._taking:
            if self.held == NOT_HELD:
                return
            if self.held == TAKEN:
                raise DSMInternalError("PageDirectoryRep", f"a second rep of directory slice "
                                       f"{self.dir.offset} of {self.name} serves a call")
            state = self.call_root("take_slice", self.held, self.dir.offset)
            load_slice(self.dir, state)
            self.carried = [a + b for a, b in zip(self.carried, state[3])]
            self.held = NOT_HELD

    def request(self, page: int, node: int, want: int, have_version: int) -> Grant:
        d = self._state()
        grant = d.request(page, node, want, have_version)
        if self.debug:
            owner, _ = d.holders(page)
            access = gather_access(self.fcm, self._cos.nnodes, page)
            check_page(page, access, owner, int(d.copyset[d.slot(page)]), self.protocol)
        return grant

    def evict(self, page: int, node: int, version: int, data: bytes, dirty: bool):
        return self._state().evict(page, node, version, data, dirty)

    def statistics(self) -> DirectoryStatistics:
        d = self._state()
        return DirectoryStatistics(d.invalidations + self.carried[0], self.store.zero_fills + self.carried[1])

    def owners(self) -> list:
        """[stride, offset, the owner of each page of this slice in slot order as int16
        bytes] (a fixed wire format, whatever the dtype kept here)."""
        d = self._state()
        return [d.stride, d.offset, d.owner.astype(np.int16).tobytes()]

    def swap_export(self):
        """This slice for the root at a hot swap or migration; None if the root still holds it."""
        if self.held != NOT_HELD:
            return None
        counts = [self.dir.invalidations + self.carried[0], self.store.zero_fills + self.carried[1]]
        return export_slice(self.dir, counts)


class PageDirectoryRoot(ClusteredRoot):
    """Root of a PageDirectory; every rep starts from the FCM's oid and spec.

    ``partitioned`` (the fixed manager, the object's policy "partitioned"):
    node n's rep keeps only its slice, pages n, n + N, ... (the COS routes
    page p to node p mod N), in arrays of about npages / N slots; otherwise
    (centralized, "singleton") the one rep keeps every page.  A hot swap
    between the two moves the slices through the root (_dirswap.py)."""

    Rep = PageDirectoryRep
    POLICIES = ("singleton", "partitioned")
    SWAP = True  # the reps' slices move through swap_export / swap_import
    MIGRATE = True  # the root's state is its arguments and the slices it holds

    def __init__(self, fcm: int, spec: FCMSpec) -> None:
        self.fcm, self.spec = fcm, spec
        self.held = HeldSlices(spec.npages, self._cos.nnodes)

    def _layout(self, node: int) -> tuple[int, int]:
        """(stride, offset) of ``node``'s slice under the current policy."""
        if self.policy.kind == "partitioned":
            return self._cos.nnodes, node
        return 1, 0

    def rep_args(self, node: int) -> list:
        stride, offset = self._layout(node)
        return [self.fcm, self.spec, stride, offset, self.held.rep_generation(offset)]

    def swap_import(self, states: list) -> None:
        """Merge the old reps' slices into the layout of the (new) policy; held until taken."""
        self.held.merge(states, self._layout(0)[0])

    def take_slice(self, generation: int, offset: int) -> list:
        """A new rep's first call takes its slice (see _dirswap.py)."""
        with self.lock:
            return self.held.take(generation, offset)

    def slice_nodes(self) -> list:
        """The nodes whose rep keeps a slice under the current policy (for loss accounting)."""
        with self.lock:
            return list(range(self._cos.nnodes)) if self.policy.kind == "partitioned" else [self.home]

    def migrate_export(self) -> list:
        return [self.fcm, self.spec, self.held.to_wire()]

    def migrate_import(self, state: list) -> None:
        self.fcm, self.spec, held = state
        self.held = HeldSlices(self.spec.npages, self._cos.nnodes)
        self.held.load_wire(held)


class DirectoryFCMRep(FCMRep):
    """An FCM rep under IVY's centralized or fixed manager: faults ask the PageDirectory."""

    def _make_manager(self, spec: FCMSpec) -> DirectoryClient:
        return DirectoryClient(self._cos.ref(spec.directory, PageDirectory), self.node)


class DirectoryFCMRoot(FCMRoot):
    """Root of an FCM under the centralized or fixed manager."""

    Rep = DirectoryFCMRep
