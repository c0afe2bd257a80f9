"""PageDirectory: IVY's manager for the centralized and fixed distributed schemes.

For each page the directory knows the owner, the copyset (a bitmask of nodes
holding read copies, owner excluded) and the version of the last write grant.
It serializes the requests of a page: one request at a time holds the page
(``busy``) across its remote calls; the others wait.  Different pages proceed
in parallel.

Message counts, requester k, owner o, manager M, all distinct (IVY's analysis;
each remote call is one request and one reply):

    read fault   k->M, M->o (send_copy), o->M, M->k                     = 4
    write fault  k->M, M->c and back for each reader c (in parallel),
                 M->o (give_page), o->M, M->k                          = 4 + 2r

The centralized scheme has one directory (on its home node); the fixed
scheme has one per node, page p on node p mod N.  Both use this class; the
difference is only which node a requester sends to.

``migrate`` (single reader / single writer) needs nothing here: its FCM pages
ask for WRITE on every fault, so every request moves the page.  ``protocol``
only tells the debug checks which invariants apply.
"""

from __future__ import annotations

import threading
import numpy as np

from tornado_dsm.kernel import DSMInternalError

from ._fanout import bits, thread_fanout
from ._fcm import READ, RELEASED, WRITE, ZERO_FILL, Grant, wait

PROTOCOLS = ("ivy", "migrate")  # the one list of protocols (the FCM and the API import it)

class PageDirectory:
    """Owner, copyset and version of ``npages`` pages.

    ``call(node, method, *args)`` reaches the FCM rep of this memory object on
    a node (send_copy, give_page, invalidate); ``store`` is the CORClient:
    ``store.fill(page)`` returns the first-touch contents (None for zeros)
    and ``store.spill(page, data, dirty)`` writes an evicted owned page back.
    ``fanout(nodes, method, *args)`` calls the FCM reps of several nodes at
    once (all requests sent before any reply is awaited); by default, one
    thread per call.
    """

    def __init__(self, npages: int, call, store, protocol: str = "ivy", fanout=None) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
        self.npages, self.call, self.store, self.protocol = npages, call, store, protocol
        self.fanout = fanout or thread_fanout(call)
        self.owner = np.full(npages, -1, dtype=np.int16)
        self.copyset = np.zeros(npages, dtype=np.uint64)
        self.version = np.zeros(npages, dtype=np.uint32)
        self.busy = np.zeros(npages, dtype=np.uint8)
        self.cond = threading.Condition()
        self.invalidations = 0

    def request(self, page: int, node: int, want: int, have_version: int) -> Grant:
        """Serve a fault of ``node`` on ``page`` for ``want`` (READ or WRITE)."""
        if not 0 <= page < self.npages:
            raise DSMInternalError("PageDirectory.request", f"page {page} outside [0, {self.npages})")
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
            raise DSMInternalError("PageDirectory._locked_read", f"owner {node} of page {page} asks for a copy")
        data = self.call(owner, "send_copy", page, version)
        self.copyset[page] |= np.uint64(1 << node)
        return Grant(version, READ, data)

    def _locked_write(self, page: int, node: int, have_version: int) -> Grant:
        """Write grant: invalidate readers, move ownership (and data if needed)."""
        owner, version = int(self.owner[page]), int(self.version[page])
        new = version + 1
        self._locked_invalidate(page, node, owner, new)
        dirty, data = False, None
        if owner < 0:
            data = self._first_touch(page)
        elif owner != node:
            need = have_version != version
            data, dirty = self.call(owner, "give_page", page, version, new, need)
        elif have_version != version:
            raise DSMInternalError("PageDirectory._locked_write", f"owner {node} of page {page} lost its copy")
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
        self.fanout(readers, "invalidate", page, new_version)
        self.invalidations += len(readers)

    def _first_touch(self, page: int) -> bytes:
        """Contents of a page no node holds yet: from the COR, or zeros."""
        data = self.store.fill(page)
        return ZERO_FILL if data is None else data

    def holders(self, page: int) -> tuple[int, list[int]]:
        """(owner, readers) of a page, for invariant checks and inspection."""
        return int(self.owner[page]), bits(int(self.copyset[page]))
