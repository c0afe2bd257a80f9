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
reaches a non-owner with its own request for that page outstanding waits for
it (IVY: a request for a page in transition waits at the next owner), so a
request never chases an ownership that is still in flight.  Forwarding holds
nothing.  A hop limit turns a broken hint chain into a loud internal error
instead of endless forwarding.

Why no cycle of waits can form (the rule the eviction path keeps):

1. Ownership moves only with a grant, along the request chain.  Nothing
   else may hand it on.  An evicted owned page is written back to the COR
   and its owner stays the owner, without a copy (``release_owned``: KEPT),
   so the next request is served from the COR.  (Handing it to the home
   out of band instead made the home an owner while its own request was
   still chasing the old one: owners then waited on each other's requests
   under memory pressure, 3 runs in 3, and read grants of the old version
   installed beside the new owner's writes.)
2. So an owner's hint is itself and its own faults never leave the node.
   A request waits at a node that is changing the page (``requesting``):
   either a non-owner whose request is heading for the owner, or the owner
   itself, granting its own fault or evicting, which needs nothing but
   invalidation acks and the COR, and neither waits.  (The owner must wait
   too: its own grant is made before it is installed, and a request served
   in between would be granted the same version.)  So waits form chains
   that end at the owner, never cycles.
3. An eviction needs only the COR, which never waits and needs no frame:
   a node whose frames are full can always finish the evictions others'
   faults are waiting for.
"""

from __future__ import annotations

import time

import numpy as np

import attrs

from tornado_dsm.kernel import DSMInternalError, NodeLost, Payload

from ._copyset import bits, copyset_dtype, node_dtype
from ._fcm import (
    KEPT, NIL, READ, WRITE, ZERO_FILL, CoherenceManager, FCMRep, FCMRoot, FCMSpec, Grant,
    cor_client, gather_access, wait,
)
from ._interfaces import DynamicFCM
from ._invariants import check_page
from ._records import FCMStatistics


class DynamicManager(CoherenceManager):
    """The dynamic manager's state on one node for one FCM (its page table
    arrives with ``attach``).

    ``fcm`` reaches this FCM's reps on other nodes: ``fcm.on(node).serve(...)``,
    ``fcm.on_each(nodes).invalidate(...)``.  ``store`` is the CORClient:
    ``fill(page)`` gives first-touch contents (None for zeros) and
    ``spill(page, data, dirty)`` writes an evicted page back to the COR.
    ``check(page, owner, copyset)``, if given, checks IVY's invariants after
    every grant (the debug mode) and raises on a broken one.
    """

    def __init__(self, node: int, nnodes: int, home: int, fcm, store, check=None) -> None:
        self.node, self.nnodes, self.home = node, nnodes, home
        self.fcm, self.store = fcm, store
        self.forwards = 0
        self.invalidations = 0
        self.prefetch_sent = 0   # pages shared as owner beside a read grant (prefetch)
        self.debug_check = check
        self.checking = check is not None

    def attach(self, pages) -> None:
        """Take the page table: the home owns every page at first, without a copy."""
        self.pages = pages
        n = pages.npages
        self.owner = pages.owned  # one ownership array, shared with the FCM pages
        self.owner[:] = self.node == self.home
        self.prob_owner = np.full(n, self.home, dtype=node_dtype(self.nnodes))
        self.copyset = np.zeros(n, dtype=copyset_dtype(self.nnodes))
        self.serving = np.zeros(n, dtype=np.uint8)
        # The local fast path reads single pages: memoryviews index faster than numpy.
        self._owner, self._serving = memoryview(self.owner), memoryview(self.serving)
        self._copyset, self._access = memoryview(self.copyset), memoryview(pages.access)
        self._version = memoryview(pages.version)

    # -- the owner's own faults ----------------------------------------------------

    def locked_local_grant(self, page: int, want: int) -> int:
        """With the page table's cond held: our own fault on a page we own, with no
        reader to invalidate and no COR call to make, is granted here in the
        faulting thread's lock section, without a message (IVY's owner serves
        itself).  Returns the new version, or 0: take the full path."""
        if not self._owner[page] or self._serving[page] or self._copyset[page]:
            return 0
        if self._access[page] == NIL:  # first touch: zeros, unless the COR has the page
            if not self.store.known_zero(page):
                return 0
            self.store.count_zero_fill()
        if self.checking:
            self.serving[page] = 1  # held until local_done has checked the invariants
        return self._version[page] + 1

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
        """The requester half: ask the probable owner (maybe ourselves)."""
        target = int(self.prob_owner[page])
        if target == self.node:
            reply = self.serve(page, self.node, want, have_version, 0)
        else:
            try:
                reply = self.fcm.on(target).serve(page, self.node, want, have_version, 0)
            except NodeLost as lost:
                target = self._find_owner(page, lost)
                reply = self.fcm.on(target).serve(page, self.node, want, have_version, 0)
        if isinstance(reply, Payload):   # a read with prefetched pages beside it
            (grant, owner, extras), data = reply.value, reply.data
            self.pages.install_prefetched(extras, data)
            with self.pages.cond:
                self.prob_owner[[q for q, _v in extras]] = owner
        else:
            grant, owner = reply
        with self.pages.cond:
            self.prob_owner[page] = owner
        return grant

    def _find_owner(self, page: int, lost: NodeLost) -> int:
        """A hint led to a lost node: ask every live node whether it owns the
        page (IVY's broadcast).  A transfer in flight leaves no owner for a
        moment, so ask a few times; no owner then means the page died with
        the lost node: re-raise naming the page."""
        others = [n for n in self.fcm.cos.runtime.connected_peers() if n != self.node]
        for attempt in range(5):
            owns = self.fcm.on_each(others, tolerate_lost=True).owns(page)
            found = [n for n, yes in zip(others, owns) if yes is True]
            if found:
                return found[0]
            time.sleep(0.01 * (attempt + 1))
        raise NodeLost(f"page {page} was owned by a lost node, no live node owns it ({lost})")

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
                    if self.pages.prefetch:
                        grant = self._locked_prefetch(page, requester, grant)
                    if not self.checking:
                        return _reply(grant, self.node)
                self.serving[page] = 1  # held until the grant is made (and checked)
        if target is not None:
            return self.fcm.on(target).serve(page, requester, want, have_version, hops + 1)
        try:
            if grant is None:
                grant, owner = self._serve_owned(page, requester, want, have_version)
            else:
                owner = self.node
            if self.checking:  # the page is still held: no request can interleave
                self.debug_check(page, owner, int(self.copyset[page]) if owner == self.node else 0)
            return _reply(grant, owner)
        finally:
            with cond:
                self.serving[page] = 0
                cond.notify_all()

    def _locked_share(self, page: int, requester: int) -> Grant:
        """A read copy of our page for ``requester`` (cond held)."""
        if requester == self.node:
            raise DSMInternalError("DynamicManager._locked_share", f"owner {self.node} of page {page} asks for a copy")
        data = self.pages.locked_copy_for_reader(page)
        self._copyset[page] |= 1 << requester
        return Grant(int(self.pages.version[page]), READ, data, owner=False)

    def _locked_prefetch(self, page: int, requester: int, grant: Grant):
        """With the read grant of ``page`` made (cond held): share the pages after it
        that we own and hold, up to ``prefetch`` of them, stopping at the first we
        do not (IVY's read service for each, in the same lock section).  Returns
        the grant alone, or a Payload of the extra pages' bytes, one after the
        other, with [grant, owner, [[page, version], ...]]."""
        pages, bit, extras, chunks = self.pages, 1 << requester, [], []
        for q in range(page + 1, min(page + 1 + pages.prefetch, pages.npages)):
            if not self._owner[q] or self._serving[q] or pages.requesting[q] or self._access[q] == NIL:
                break
            if self._copyset[q] & bit:
                continue   # it holds this one already (or dropped it: it will ask)
            chunks.append(pages.locked_copy_for_reader(q))
            self._copyset[q] |= bit
            extras.append([q, int(pages.version[q])])
        if not extras:
            return grant
        self.prefetch_sent += len(extras)
        return Payload(b"".join(chunks), [grant, self.node, extras])

    def _serve_owned(self, page: int, requester: int, want: int, have_version: int):
        """As owner, with the page held (``serving``): grant a write, or a read of a
        page we own without a copy; (Grant, the page's owner afterwards).  A
        requester holding the current copy gets no data (an upgrade)."""
        pages = self.pages
        version = int(pages.version[page])
        first_touch = pages.access[page] == NIL  # owned without a copy: the COR has it
        new = version + 1
        if first_touch or requester == self.node:
            self._invalidate(page, requester, new)
        if first_touch:
            data = self.store.fill(page)
            data, dirty = (ZERO_FILL if data is None else data), False
        elif requester == self.node:
            return Grant(new, WRITE, None, owner=True), self.node
        else:
            data, dirty = self._give_while_invalidating(page, requester, version, new, have_version != version)
        self._hand_over(page, requester)
        return Grant(new, want, data, dirty, owner=True), requester

    def _give_while_invalidating(self, page: int, requester: int, version: int, new: int, need: bool):
        """Our own hand-over (revoke, copy if ``need``, free the frame) runs while the
        invalidations are in flight: it is the local share of the same fan-out.
        (bytes or None, dirty) once every reader has acknowledged.

        Sequential consistency holds as before: the grant leaves only after
        every copy, ours included, is gone; the copies are independent, so
        revoking them at once changes no outcome, only the time."""
        mask = int(self.copyset[page]) & ~(1 << requester) & ~(1 << self.node)
        readers = bits(mask)
        # a lost reader's copy died with it: nothing to wait for (LOST)
        out = self.fcm.on_each(readers + [self.node], tolerate_lost=True).relinquish(
            page, self.node, version, new, need, requester)
        if readers:
            with self.pages.cond:
                self.copyset[page] = 0
            self.invalidations += len(readers)
        data, dirty = out[-1]
        return data, dirty

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
        # a lost reader's copy died with it: nothing to wait for (LOST)
        self.fcm.on_each(readers, tolerate_lost=True).invalidate(page, new_version, requester)
        with self.pages.cond:
            self.copyset[page] = 0
        self.invalidations += len(readers)

    def release_owned(self, page: int, version: int, data: bytes, dirty: bool):
        """Eviction of an owned page: write it back and stay its owner, without
        a copy (KEPT); readers keep theirs.  The next request is served from
        the COR.  Ownership is not handed to anyone: it moves only with a grant
        (see the essay).  None if the page was given away meanwhile."""
        cond = self.pages.cond
        with cond:
            while self.serving[page]:
                wait(cond)
            if not self.owner[page] or self.pages.version[page] != version:
                return None
            self.serving[page] = 1
        try:
            self.store.spill(page, data, dirty)
            return KEPT
        finally:
            with cond:
                self.serving[page] = 0
                cond.notify_all()

    def invalidate(self, page: int, new_version: int, new_owner: int = -1) -> None:
        """Drop our read copy; the page's next owner is ``new_owner`` (a better hint)."""
        with self.pages.cond:
            self.pages.locked_invalidate(page, new_version)
            if new_owner >= 0:
                self.prob_owner[page] = new_owner


def _reply(grant, owner: int):
    """What ``serve`` answers: (Grant, owner), or the Payload a prefetch made (it names the owner)."""
    return grant if isinstance(grant, Payload) else (grant, owner)


# ---- as a clustered object: the FCM variant whose reps are the dynamic manager --------------

class DynamicFCMRep(FCMRep, DynamicFCM):
    """An FCM rep that is IVY's dynamic distributed manager for its node."""

    def _make_manager(self, spec: FCMSpec) -> DynamicManager:
        self.fcm = self._cos.ref(self.oid, DynamicFCM)
        check = self._check_page if spec.debug else None
        return DynamicManager(self.node, self._cos.nnodes, self.home, self.fcm, cor_client(self._cos, spec), check)

    def serve(self, page: int, requester: int, want: int, have_version: int, hops: int) -> tuple:
        return self.manager.serve(page, requester, want, have_version, hops)

    def owns(self, page: int) -> bool:
        return bool(self.manager.owner[page])

    def _check_page(self, page: int, owner: int, copyset: int) -> None:
        """Debug mode: IVY's invariants for ``page`` across all nodes."""
        access = gather_access(self.fcm, self._cos.nnodes, page)
        check_page(page, access, owner if access[owner] else -1, copyset, self.spec.protocol)

    def statistics(self) -> FCMStatistics:
        m = self.manager
        return attrs.evolve(super().statistics(), forwards=m.forwards, invalidations=m.invalidations,
                            zero_fills=m.store.zero_fills, prefetch_sent=m.prefetch_sent)


class DynamicFCMRoot(FCMRoot):
    """Root of an FCM under the dynamic manager."""

    Rep = DynamicFCMRep
