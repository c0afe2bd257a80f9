"""IVY's dynamic distributed manager: no directory, probable owners and forwarding.

Every node keeps, per page, a hint ``prob_owner`` and, if it owns the page,
the copyset.  A fault is sent to the hint; a node that does not own the page
forwards it along its own hint (for a write it then points its hint at the
requester, who is about to own the page); the owner answers.  The reply
carries the owner, so the requester's hint becomes exact.

Initially the FCM's home node owns every page without a copy; the first
toucher anywhere becomes the owner (first-touch placement).

The owner's own faults (a first touch of a page it owns without a copy, an
upgrade of its read copy) need no message when no other node holds a copy
and the COR has nothing to read: ``locked_local_grant`` grants them in the
faulting thread's lock section, as IVY's owner serves itself.

Serialization: the owner serves one request of a page at a time
(``serving``), holding it across the invalidations it sends.  A request that
reaches a node with its own request for that page outstanding waits for it
(IVY: a request for a page in transition waits at the next owner), so a
request never chases an ownership that is still in flight.  Forwarding holds
nothing.  A hop limit turns a broken hint chain into a loud internal error
instead of endless forwarding.
"""

from __future__ import annotations

import numpy as np

from tornado_dsm.kernel import DSMInternalError

from ._fanout import bits, thread_fanout
from ._fcm import KEPT, NIL, READ, RELEASED, WRITE, ZERO_FILL, Grant, wait

class DynamicManager:
    """The dynamic manager's state on one node for one FCM (``pages``, an FCMPages).

    ``call(node, method, *args)`` reaches this FCM's manager on another node
    (``fanout(nodes, method, *args)`` several at once); ``store`` is the
    CORClient: ``fill(page)`` gives first-touch contents (None for zeros) and
    ``spill(page, data, dirty)`` writes an evicted page back to the COR.
    """

    def __init__(self, pages, node: int, nnodes: int, home: int, call, store, fanout=None) -> None:
        self.pages, self.node, self.nnodes, self.home = pages, node, nnodes, home
        self.call, self.store = call, store
        self.fanout = fanout or thread_fanout(call)
        n = pages.npages
        self.owner = pages.owned  # one ownership array, shared with the FCM pages
        self.owner[:] = node == home
        pages.release_owned = self.release_owned
        self.prob_owner = np.full(n, home, dtype=np.int16)
        self.copyset = np.zeros(n, dtype=np.uint64)
        self.serving = np.zeros(n, dtype=np.uint8)
        self.forwards = 0
        self.invalidations = 0
        self.debug_check = None  # (page, owner, copyset) -> None; raises on a broken invariant
        # The local fast path reads single pages: memoryviews index faster than numpy.
        self._owner, self._serving = memoryview(self.owner), memoryview(self.serving)
        self._copyset, self._access = memoryview(self.copyset), memoryview(pages.access)
        self._version = memoryview(pages.version)
        pages.local_grant = self.locked_local_grant

    # -- the owner's own faults ----------------------------------------------------

    def locked_local_grant(self, page: int, want: int) -> int:
        """FCMPages' hook, cond held: our own fault on a page we own, with no
        reader to invalidate and no COR call to make, is granted here in the
        faulting thread's lock section, without a message (IVY's owner serves
        itself).  Returns the new version, or 0: take the full path."""
        if not self._owner[page] or self._serving[page] or self._copyset[page]:
            return 0
        if self._access[page] == NIL:  # first touch: zeros, unless the COR has the page
            if not self.store.known_zero(page):
                return 0
            self.store.count_zero_fill()
        if self.debug_check is not None:
            self.serving[page] = 1  # held until local_done has checked the invariants
        return self._version[page] + 1

    def enable_debug(self, check) -> None:
        """Check IVY's invariants with ``check(page, owner, copyset)`` after every step."""
        self.debug_check = check
        self.pages.local_done = self.local_done

    def local_done(self, page: int) -> None:
        """Debug mode, after a local grant is installed: check, then let requests in."""
        try:
            self.debug_check(page, self.node, 0)
        finally:
            with self.pages.cond:
                self.serving[page] = 0
                self.pages.cond.notify_all()

    # -- requester side ----------------------------------------------------------

    def request(self, page: int, want: int, have_version: int) -> Grant:
        """FCMPages' requester hook: ask the probable owner (maybe ourselves)."""
        target = int(self.prob_owner[page])
        if target == self.node:
            grant, owner = self.serve(page, self.node, want, have_version, 0)
        else:
            grant, owner = self.call(target, "serve", page, self.node, want, have_version, 0)
        with self.pages.cond:
            self.prob_owner[page] = owner
        return grant

    # -- every node: serve or forward ---------------------------------------------

    def serve(self, page: int, requester: int, want: int, have_version: int, hops: int):
        """Answer a request as owner, or forward it; returns (Grant, owner node).

        A read of a page we hold is answered in the one lock section that
        finds us owner (IVY's read service: downgrade, copy, join the
        copyset); everything else holds the page (``serving``) across the
        invalidations, COR reads and transfers it needs."""
        if hops > 4 * self.nnodes:
            raise DSMInternalError("DynamicManager.serve", f"page {page}: request of node {requester} forwarded {hops} times")
        cond = self.pages.cond
        with cond:
            while self.serving[page] or (requester != self.node and self.pages.requesting[page]):
                wait(cond)
            if not self.owner[page]:
                target = int(self.prob_owner[page])
                if want == WRITE:
                    self.prob_owner[page] = requester
                self.forwards += 1
            else:
                target, grant = None, None
                if want == READ and self._access[page] != NIL:
                    grant = self._locked_share(page, requester)
                    if self.debug_check is None:
                        return grant, self.node
                self.serving[page] = 1  # held until the grant is made (and checked)
        if target is not None:
            return self.call(target, "serve", page, requester, want, have_version, hops + 1)
        try:
            if grant is None:
                grant, owner = self._serve_owned(page, requester, want, have_version)
            else:
                owner = self.node
            if self.debug_check is not None:  # the page is still held: no request can interleave
                self.debug_check(page, owner, int(self.copyset[page]) if owner == self.node else 0)
            return grant, owner
        finally:
            with cond:
                self.serving[page] = 0
                cond.notify_all()

    def _locked_share(self, page: int, requester: int) -> Grant:
        """A read copy of our page for ``requester`` (cond held)."""
        if requester == self.node:
            raise DSMInternalError("DynamicManager._locked_share", f"owner {self.node} of page {page} asks for a copy")
        data = self.pages.locked_copy_for_reader(page)
        self.copyset[page] |= np.uint64(1 << requester)
        return Grant(int(self.pages.version[page]), READ, data, owner=False)

    def _serve_owned(self, page: int, requester: int, want: int, have_version: int):
        pages = self.pages
        version = int(pages.version[page])
        first_touch = pages.access[page] == NIL  # owned without a copy: the COR has it
        new = version + 1
        self._invalidate(page, requester, new)
        if first_touch:
            data = self.store.fill(page)
            data, dirty = (ZERO_FILL if data is None else data), False
        elif requester == self.node:
            return Grant(new, WRITE, None, owner=True), self.node
        else:
            data, dirty = pages.give_page(page, version, new, have_version != version)
        self._hand_over(page, requester)
        return Grant(new, want, data, dirty, owner=True), requester

    def _hand_over(self, page: int, requester: int) -> None:
        """Ownership leaves this node (unless the requester is this node)."""
        with self.pages.cond:
            self.copyset[page] = 0
            if requester != self.node:
                self.owner[page] = 0
                self.prob_owner[page] = requester

    def _invalidate(self, page: int, requester: int, new_version: int) -> None:
        """Invalidate every reader in our copyset but the requester, in parallel."""
        mask = int(self.copyset[page]) & ~(1 << requester) & ~(1 << self.node)
        if not mask:
            return
        readers = bits(mask)
        self.fanout(readers, "invalidate", page, new_version, requester)
        with self.pages.cond:
            self.copyset[page] = 0
        self.invalidations += len(readers)

    def release_owned(self, page: int, version: int, data: bytes, dirty: bool):
        """FCM eviction hook: write an owned page back and give ownership
        (without a copy) to the home node; readers keep their copies."""
        cond = self.pages.cond
        with cond:
            while self.serving[page]:
                wait(cond)
            if not self.owner[page] or self.pages.version[page] != version:
                return None
            self.serving[page] = 1
        try:
            self.store.spill(page, data, dirty)
            if self.home == self.node:
                return KEPT
            self.call(self.home, "take_back", page, version, int(self.copyset[page]))
            with cond:
                self.copyset[page], self.prob_owner[page] = 0, self.home
            return RELEASED
        finally:
            with cond:
                self.serving[page] = 0
                cond.notify_all()

    def take_back(self, page: int, version: int, copyset: int) -> None:
        """At the home: own ``page`` again, without a copy unless we hold a read copy."""
        self.store.mark_backed(page)  # the COR has it now: the next first touch reads it
        with self.pages.cond:
            self.owner[page] = 1
            self.prob_owner[page] = self.node
            self.copyset[page] = np.uint64(copyset & ~(1 << self.node))
            self.pages.version[page] = max(int(self.pages.version[page]), version)
            self.pages.cond.notify_all()

    def invalidate(self, page: int, new_version: int, new_owner: int) -> None:
        """Drop our read copy; the page's next owner is ``new_owner`` (a better hint)."""
        with self.pages.cond:
            self.pages.locked_invalidate(page, new_version)
            self.prob_owner[page] = new_owner
