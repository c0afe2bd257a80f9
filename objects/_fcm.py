"""FCM: the pages of one memory object as cached on one node (its rep).

Design essay
------------
Per-page state is a handful of numpy arrays (never a Python object per page):

    access     NIL / READ / WRITE   what this node may do with its copy
    version    uint32               the version of the copy installed here
    inval      uint32               highest version an invalidation announced here (only
                                    pages with a request out, unless the region prefetches)
    requesting uint8                a local thread (or an eviction) is changing the page
    dirty      uint8                written here since the last write-back
    owned      uint8                this node owns the page (IVY ownership)
    prefetched uint8                a prefetched copy not yet touched (only with prefetch > 0)

Versions are how a grant and an invalidation that cross in the network are
ordered without holding locks across nodes.  The manager (a PageDirectory
for IVY, or the owner chain for the dynamic manager) serializes the requests
of a page and gives each write grant the next version.  Two races follow and
are closed here:

* A read copy of version v is still travelling to us when the write grant
  v+1 elsewhere invalidates us: the invalidation raises ``inval`` to v+1,
  and installing a copy older than ``inval`` is refused; the fault retries.
  A copy only ever arrives as the reply to a request, so ``inval`` is kept
  only for pages with a request out (``requesting``), a dict of a few
  entries, and forgotten when the request ends: an invalidation before the
  request is sent is ordered before its grant by the manager anyway.  A
  region that prefetches keeps it for every page in an array, since
  prefetched copies arrive for pages this node never asked for.
* We were granted ownership (version v) but have not installed it yet when
  the manager already asks us, as owner, for a copy: owner-side handlers wait
  until ``version >= v`` (a request for a page in transition waits for it).
  They never wait for a request that has not been granted, so no cycle of
  nodes can form.

Locking: one Condition per rep, held only for local state and HAT changes,
never across a remote call; remote requests run with the page marked
``requesting`` so that other local threads faulting on the same page wait
for the one request instead of sending their own.  A fault the manager can
grant on this node (``locked_local_grant``) is checked, granted and mapped
in one lock section: the fast path of a local fault.

The page table is given its coherence manager, an object with the interface
of ``CoherenceManager`` below: the FCM-side half of a directory scheme
(``DirectoryClient``, _directory.py) or IVY's dynamic manager
(``DynamicManager``, _dynamic.py).  ``migrate`` is not a manager but a
protocol over either: every fault asks for WRITE, so the one copy moves.
"""

from __future__ import annotations

import threading

import attrs
import numpy as np

from tornado_dsm.kernel import (
    PAGE, PROT_NONE, PROT_READ, PROT_WRITE, ClusteredRep, ClusteredRoot, DSMInternalError, before_blocking,
    wire_record,
)

from . import _nodestate
from ._cor import CORClient
from ._interfaces import COR, FCM
from ._records import FCMStatistics, Grant

NIL, READ, WRITE = PROT_NONE, PROT_READ, PROT_WRITE


class RequestInvalidations(dict):
    """{page: highest version an invalidation announced} for the pages with a
    request out; a page without an entry reads 0 (no invalidation to respect)."""

    def __missing__(self, page: int) -> int:
        return 0
PROTOCOLS = ("ivy", "migrate")                    # the one list of protocols
MANAGERS = ("centralized", "fixed", "dynamic")   # the one list of IVY managers


def wait(cond) -> None:
    """cond.wait(), first handing on the PPC channel this thread may be serving:
    a protocol handler that waits for a page in transition must not hold up the
    other requests arriving on its connection."""
    before_blocking()
    cond.wait()


# What a manager's release_owned reports for an evicted owned page:
RELEASED = "released"  # ownership left this node with the data
KEPT = "kept"          # still the owner, without a copy (the backing store has it)
# (None: ownership had already moved; nothing to do)

# A grant's data meaning "the page is zeros" (first touch of anonymous memory).
# Installing it costs nothing: every path that stops holding a page punches
# its frame out (_locked_free_frame), so a page not held here is a hole in the
# memfd, which reads as zeros; the frame is allocated by the first access.
ZERO_FILL = b""

# What a fault was, for the statistics (FCMPages.get_page).
INCORE, COHERENCE, FIRST_TOUCH = 0, 1, 2

MAX_PREFETCH = 64   # pages a read reply may carry beyond the one asked for


def check_prefetch(prefetch) -> int:
    """``prefetch`` as an int in [0, MAX_PREFETCH]; ValueError naming the value and the range."""
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or not 0 <= prefetch <= MAX_PREFETCH:
        raise ValueError(f"prefetch must be a whole number of pages from 0 to {MAX_PREFETCH}, not {prefetch!r}")
    return prefetch


class CoherenceManager:
    """What a page table asks of its coherence manager on one node.

    ``attach`` is called once, by the FCMPages being built.  The variants
    (DirectoryClient, DynamicManager) are sibling subclasses.
    """

    checking = False  # True: local_done must run after every local grant (debug checks)

    def attach(self, pages: "FCMPages") -> None:
        """Learn the page table this manager serves (its per-page state)."""
        self.pages = pages

    def request(self, page: int, want: int, have_version: int) -> Grant:
        """The requester half of a fault: ask the manager, return its Grant."""
        raise NotImplementedError

    def locked_local_grant(self, page: int, want: int) -> int:
        """With the page table's cond held: the new version if the fault can be
        granted here without a message, else 0 (ask with ``request``)."""
        return 0

    def local_done(self, page: int) -> None:
        """After a local grant was installed (only when ``checking``)."""

    def release_owned(self, page: int, version: int, data: bytes, dirty: bool):
        """Eviction of an owned page: write it back; RELEASED, KEPT or None (it moved)."""
        raise NotImplementedError

    def invalidate(self, page: int, new_version: int, new_owner: int = -1) -> None:
        """Another node is granted a write of ``new_version``: drop our read copy."""
        self.pages.invalidate(page, new_version)


class FCMPages:
    """Per-page coherence state of one memory object on one node.

    ``memory`` is the node's NodeMemory; the object's page i lives at virtual
    page ``vpage + i`` (identity placement: frame i is at that page's file
    offset).  ``manager`` is the CoherenceManager that grants faults.  With
    ``migrate`` every fault asks for WRITE (the managers need not know).
    """

    def __init__(self, memory, vpage: int, npages: int, manager: CoherenceManager, frames=None,
                 migrate: bool = False, prefetch: int = 0) -> None:
        if vpage < 0 or vpage + npages > memory.npages:
            raise ValueError(f"pages [{vpage}, {vpage + npages}) are outside the window's {memory.npages} pages")
        self.memory, self.vpage, self.npages = memory, vpage, npages
        # migrate (single reader / single writer): every fault takes the page
        # read-write, so the one copy moves to wherever it is accessed.
        self.migrate = migrate
        self.access = np.zeros(npages, dtype=np.uint8)
        self.version = np.zeros(npages, dtype=np.uint32)
        self.requesting = np.zeros(npages, dtype=np.uint8)
        self.dirty = np.zeros(npages, dtype=np.uint8)
        self.owned = np.zeros(npages, dtype=np.uint8)
        # prefetch: read copies that came with another page's grant, not yet
        # touched here (left unmapped, so the first access is an in-core fault
        # that counts the hit); a region without prefetch keeps no such byte
        self.prefetch = check_prefetch(prefetch)
        self.prefetched = np.zeros(npages if self.prefetch else 0, dtype=np.uint8)
        # invalidation versions (see the essay): for every page when the region
        # prefetches (a prefetched copy may be overtaken on a page never asked
        # for), else only for the pages with a request out, since a grant is only
        # ever the reply to one: at most an entry per requesting thread
        self.inval = np.zeros(npages, dtype=np.uint32) if self.prefetch else RequestInvalidations()
        self.prefetch_installed = self.prefetch_hits = self.prefetch_discarded = 0
        self.cond = threading.Condition()
        self.stale_grants = 0
        # The fault path reads single pages: memoryviews of the same arrays index
        # about 3x faster than numpy scalars (the arrays stay the storage).
        self._access, self._requesting = memoryview(self.access), memoryview(self.requesting)
        self._version, self._owned, self._dirty = memoryview(self.version), memoryview(self.owned), memoryview(self.dirty)
        self._prefetched = memoryview(self.prefetched)
        self._inval = memoryview(self.inval) if self.prefetch else self.inval
        self._hat_prot = memoryview(memory.hat.prot)
        self._map_page = memory.hat.map_page_unchecked
        self.frames = frames  # the node's DSM frame account (None: no capacity limit)
        self.manager = manager
        manager.attach(self)
        self._local_grant = manager.locked_local_grant  # bound once: the fast path calls it
        if frames is not None:
            frames.register(self)

    # -- requester side (the faulting thread) ---------------------------------

    def get_page(self, page: int, want: int) -> bool:
        """Make ``page`` accessible here with at least ``want``; map it in the HAT.

        Returns INCORE (0: the copy was already here), COHERENCE (the manager
        granted it, maybe served locally) or FIRST_TOUCH (granted as zeros: the
        first touch of anonymous memory anywhere); only INCORE is false.
        """
        if self.migrate:
            want = WRITE
        if self.frames is not None and self._access[page] == NIL:
            self.frames.make_room(self, page)
        remote = False
        while True:
            with self.cond:
                while self._requesting[page]:
                    wait(self.cond)
                if self._access[page] >= want:
                    if self.prefetch and self._prefetched[page]:
                        self._prefetched[page] = 0
                        self.prefetch_hits += 1
                    self._locked_map(page)
                    return COHERENCE if remote else INCORE
                version = self._local_grant(page, want)
                if version:
                    self._locked_install_owned(page, version, want)
                    kind = FIRST_TOUCH if version == 1 else COHERENCE   # version 1: never held before
                    break
                self.requesting[page] = 1
                have = int(self.version[page]) if self._access[page] >= READ else -1
            remote, grant = True, None
            try:
                grant = self.manager.request(page, want, have)
            finally:
                with self.cond:  # one section: end the request, install its grant, wake waiters
                    self.requesting[page] = 0
                    try:  # the HAT may fail to map (the map limit): the waiters still wake
                        installed = grant is not None and self._locked_try_install(page, grant)
                    finally:
                        self._locked_end_request(page)
            if installed:
                return FIRST_TOUCH if grant.data is not None and not len(grant.data) else COHERENCE
        if self.manager.checking:
            self.manager.local_done(page)
        return kind

    def _locked_try_install(self, page: int, grant: Grant) -> bool:
        """Install a grant unless an invalidation overtook it; True if installed."""
        if grant.version < self.inval[page]:
            self.stale_grants += 1
            return False
        self._locked_install(page, grant)
        return True

    def _locked_install_owned(self, page: int, version: int, want: int) -> None:
        """Install the manager's local grant (cond held; nothing was marked
        requesting, so no waiter to wake): ownership with ``want`` at
        ``version``, keeping the frame (a page not held is a hole: zeros).
        An owner's grant cannot be overtaken by an invalidation."""
        if version < self._inval[page]:
            raise DSMInternalError("FCMPages._locked_install_owned",
                                   f"page {page}: local grant {version} older than invalidation {self.inval[page]}")
        self._locked_set(page, want, version, True, want == WRITE)

    def _locked_install(self, page: int, grant: Grant) -> None:
        if grant.data:  # ZERO_FILL needs nothing: a page not held here is a hole
            self.memory.write_frame(self.vpage + page, grant.data)
        elif grant.data is None and self._access[page] == NIL and grant.version != self._version[page]:
            raise DSMInternalError("FCMPages._locked_install", f"page {page}: grant without data for a page not held")
        self._locked_set(page, grant.access, grant.version, grant.owner, grant.dirty or grant.access == WRITE)

    def install_prefetched(self, extras: list, data) -> None:
        """Install the read copies that came with a grant: ``extras`` is
        [[page, version], ...] and ``data`` their bytes, one page after the other.

        A copy is discarded (counted) if an invalidation overtook it (its
        version is older than ``inval``, the stale-grant rule), if a local
        request for the page is under way (its own grant decides), or if the
        page is held here already.  Installed copies stay unmapped: the first
        access is an in-core fault, which counts the prefetch hit."""
        if self.frames is not None and self.frames.capacity is not None:
            self.prefetch_discarded += len(extras)   # under a frame budget only faults take frames
            return
        view = memoryview(data)
        with self.cond:
            for i, (page, version) in enumerate(extras):
                if self._access[page] != NIL or self._requesting[page] or version < self._inval[page]:
                    self.prefetch_discarded += 1
                    continue
                self.memory.write_frame(self.vpage + page, view[i * PAGE:(i + 1) * PAGE])
                self._access[page], self._version[page] = READ, version
                self._owned[page] = self._dirty[page] = 0
                self._prefetched[page] = 1
                self.prefetch_installed += 1
            self.cond.notify_all()

    def _locked_set(self, page: int, access: int, version: int, owned: bool, dirty: bool) -> None:
        """Record what was granted and map the page with it."""
        if self.prefetch:
            self._prefetched[page] = 0
        self._access[page] = access
        self._version[page] = version
        self._owned[page] = owned
        self._dirty[page] = dirty
        self._locked_map(page)

    def _locked_map(self, page: int) -> None:
        """Map the page in the HAT with this node's access (cond held).  The page
        is inside the window by construction, so the unchecked form is safe."""
        v, access = self.vpage + page, self._access[page]
        if self._hat_prot[v] != access:
            self._map_page(v, access)

    def _locked_lower_map(self, page: int) -> None:
        """Lower the HAT's protection of the page to this node's access, never
        raise it (cond held).  A revocation must not map a page whose mapping
        the HAT dropped (drop_mappings, or a shed at the mprotect backend's map
        limit): that would cost a call for nothing, and at the map limit fail
        in a thread serving another node.  The next access maps it (in-core)."""
        v, access = self.vpage + page, self._access[page]
        if self._hat_prot[v] > access:
            self._map_page(v, access)

    # -- owner / holder side (worker threads answering other nodes) -----------

    def send_copy(self, page: int, expect_version: int) -> bytes:
        """As owner: downgrade to READ and return the page's bytes."""
        with self.cond:
            self._locked_wait_version(page, expect_version)
            return self.locked_copy_for_reader(page)

    def locked_copy_for_reader(self, page: int) -> bytes:
        """As owner with a copy (cond held): downgrade to READ, return the bytes."""
        if self._access[page] == WRITE:
            self._access[page] = READ
            self._locked_lower_map(page)  # revoke write first: no store races the copy
        return self.memory.frame(self.vpage + page).tobytes()

    def give_page(self, page: int, expect_version: int, new_version: int, need_data: bool):
        """As owner: give the page up (ownership moves); returns (bytes or None, dirty)."""
        with self.cond:
            self._locked_wait_version(page, expect_version)
            self.access[page] = NIL
            self._locked_map(page)
            self._locked_note_invalidation(page, new_version)
            data = self.memory.frame(self.vpage + page).tobytes() if need_data else None
            dirty = bool(self.dirty[page])
            self.dirty[page] = self.owned[page] = 0
            self._locked_free_frame(page)
            return data, dirty

    def invalidate(self, page: int, new_version: int) -> None:
        """Drop our read copy: a write of ``new_version`` is being granted elsewhere."""
        with self.cond:
            self.locked_invalidate(page, new_version)

    def locked_invalidate(self, page: int, new_version: int) -> None:
        """``invalidate`` with cond held (a manager updating its own state in the same section)."""
        self._locked_note_invalidation(page, new_version)
        if self._version[page] < new_version and self._access[page] != NIL:
            self._access[page] = NIL
            self._locked_map(page)
            self._locked_free_frame(page)

    def _locked_note_invalidation(self, page: int, new_version: int) -> None:
        """Remember that a write of ``new_version`` took our copy away, where a
        grant still in flight could need the stale-grant rule (cond held)."""
        if (self.prefetch or self._requesting[page]) and self._inval[page] < new_version:
            self._inval[page] = new_version

    def _locked_end_request(self, page: int) -> None:
        """A request (a fault's, or an eviction's) of ``page`` is over: its
        invalidation record goes, and the threads waiting for the page wake."""
        if not self.prefetch:
            self.inval.pop(page, None)
        self.cond.notify_all()

    def _locked_wait_version(self, page: int, expect_version: int) -> None:
        while self.version[page] < expect_version:
            wait(self.cond)

    def _locked_free_frame(self, page: int) -> None:
        """Give the frame of a page we no longer hold back to the node; every
        caller has just unmapped it (``_locked_map`` with access NIL)."""
        self.memory.discard(self.vpage + page, 1)

    # -- eviction (the DSM object asks when the node is over capacity) ----------

    def evict(self, page: int) -> bool:
        """Give up our copy of ``page``: a read copy is dropped here; an owned
        page goes back to the backing store through the manager.  Returns
        False if the page is busy or not held."""
        with self.cond:
            if self.requesting[page] or self.access[page] == NIL:
                return False
            if not self.owned[page]:
                self.access[page] = NIL
                self._locked_map(page)
                self._locked_free_frame(page)
                return True
            # No access while the manager decides: the bytes sent back are final,
            # and once the directory forgets us no local read may see them.
            self.requesting[page] = 1
            before = int(self.access[page])
            self.access[page] = NIL
            self._locked_map(page)
            version, dirty = int(self.version[page]), bool(self.dirty[page])
            data = self.memory.frame(self.vpage + page).tobytes()
        outcome = None
        try:
            outcome = self.manager.release_owned(page, version, data, dirty)
        finally:
            with self.cond:
                self._locked_finish_release(page, version, before, outcome)
        return True

    def _locked_finish_release(self, page: int, version: int, before: int, outcome) -> None:
        """Settle an eviction of an owned page.  Only if it is still ours: a
        request served between the manager's section and this one may have
        given the page away (give_page clears owned and sets access)."""
        self.requesting[page] = 0
        if self.version[page] == version and self.owned[page]:
            if outcome:
                self.dirty[page] = 0
                self.owned[page] = outcome == KEPT
                self._locked_free_frame(page)
            else:
                self.access[page] = before  # refused: the page stays as it was (the next access maps it)
        self._locked_end_request(page)

    # -- in-core fault support and inspection ----------------------------------

    def drop_mappings(self) -> None:
        """Unmap every page in the HAT but keep the cached copies (Tornado's
        in-core fault test: the next fault is resolved without coherence)."""
        with self.cond:
            self.memory.hat.protect(self.vpage, self.npages, PROT_NONE)

    def take_dirty(self) -> list:
        """[page, bytes] of every page written here since the last write-back,
        now clean.  A writable one is write-protected first (kept, READ, still
        owned, as after a reader's copy): no store races the copy, and the next
        store faults and marks it dirty again, so the next flush writes it."""
        with self.cond:
            dirty = np.flatnonzero(self.dirty & (self.access != NIL)).tolist()
            for p in dirty:
                if self._access[p] == WRITE:
                    self._access[p] = READ
                    self._locked_lower_map(p)
            out = [[p, self.memory.frame(self.vpage + p).tobytes()] for p in dirty]
            self.dirty[dirty] = 0
        return out

    def resident(self) -> int:
        """Pages this node holds a copy of."""
        return int(np.count_nonzero(self.access))


# ---- the FCM as a clustered object: what every rep is built from, the common rep and root ----
# (the sibling variants, one per manager, are DirectoryFCMRep in _directory.py
# and DynamicFCMRep in _dynamic.py)

@wire_record
@attrs.frozen
class FCMSpec:
    """What every rep of an FCM (and of its PageDirectory) is built from.
    The manager is not in it: it is the FCM's variant class (``fcm_root``)."""

    vpage: int           # first virtual page of the memory object in the window
    npages: int
    protocol: str        # "ivy" or "migrate"
    cor: int             # oid of the COR (the backing store)
    anonymous: bool      # zero-filled memory (else a file)
    debug: bool = False  # check IVY's invariants after every request
    directory: int = 0   # oid of the PageDirectory (centralized, fixed), set after creation
    prefetch: int = 0    # dynamic manager: pages a read reply brings beyond the missing one

    def check(self) -> None:
        """ValueError naming a bad protocol and the accepted ones."""
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {self.protocol!r}")
        check_prefetch(self.prefetch)


def gather_access(fcm, nnodes: int, page: int) -> np.ndarray:
    """Every node's access to ``page`` of the FCM ``fcm`` (typed ref), by node (debug checks)."""
    return np.array(fcm.on_each(range(nnodes)).access_of(page), dtype=np.uint8)


def cor_client(cos, spec: FCMSpec) -> CORClient:
    """A manager's CORClient reaching the COR of ``spec`` through the COS."""
    return CORClient(cos.ref(spec.cor, COR), spec.npages, spec.anonymous)


class FCMRep(ClusteredRep, FCM):
    """The pages of one memory object as cached on this node (the common part)."""

    def __init__(self, spec: FCMSpec) -> None:
        state = _nodestate.current()
        self.spec = spec
        self.manager = self._make_manager(spec)
        self.pages = FCMPages(state.memory, spec.vpage, spec.npages, self.manager, state.frames,
                              migrate=spec.protocol == "migrate", prefetch=spec.prefetch)
        self.incore_faults = self.coherence_faults = self.first_touches = 0
        self.read_faults = self.write_faults = 0

    def _make_manager(self, spec: FCMSpec):
        raise NotImplementedError

    # -- the fault path (local calls on the faulting node) -------------------

    def get_page(self, page: int, want: int) -> bool:
        kind = self.pages.get_page(page, want)
        if kind == COHERENCE:
            self.coherence_faults += 1
        elif kind == INCORE:
            self.incore_faults += 1
        else:
            self.first_touches += 1
        if want == WRITE:               # counted here, on the faulting node, whatever the
            self.write_faults += 1      # Region's policy (a singleton Region counts at home)
        else:
            self.read_faults += 1
        return bool(kind)

    # -- protocol messages from other nodes ---------------------------------

    def send_copy(self, page: int, expect_version: int) -> bytes:
        return self.pages.send_copy(page, expect_version)

    def give_page(self, page: int, expect_version: int, new_version: int, need_data: bool) -> tuple:
        return self.pages.give_page(page, expect_version, new_version, need_data)

    def invalidate(self, page: int, new_version: int, new_owner: int = -1) -> None:
        self.manager.invalidate(page, new_version, new_owner)

    def relinquish(self, page: int, owner: int, expect_version: int, new_version: int, need_data: bool,
                   new_owner: int):
        if owner == self.node:
            return self.pages.give_page(page, expect_version, new_version, need_data)
        self.manager.invalidate(page, new_version, new_owner)
        return None

    def access_of(self, page: int) -> int:
        return int(self.pages.access[page])

    def owned_pages(self) -> bytes:
        return np.packbits(self.pages.owned).tobytes()

    # -- whole-object operations ---------------------------------------------

    def drop_mappings(self) -> int:
        self.pages.drop_mappings()
        return self.pages.resident()

    def dirty_pages(self) -> list:
        return self.pages.take_dirty()

    def statistics(self) -> FCMStatistics:
        p = self.pages
        return FCMStatistics(self.incore_faults, self.coherence_faults, p.stale_grants,
                             p.resident(), first_touches=self.first_touches,
                             read_faults=self.read_faults, write_faults=self.write_faults,
                             prefetched=p.prefetch_installed, prefetch_hits=p.prefetch_hits,
                             prefetch_discarded=p.prefetch_discarded)

    def cleanup(self) -> None:
        """Give every frame of this object back (the region is gone)."""
        state = _nodestate.current()
        state.frames.unregister(self.pages)
        state.memory.release(self.pages.vpage, self.pages.npages)


class FCMRoot(ClusteredRoot):
    """Root of an FCM (the common part): its spec, and the directory set after creation."""

    POLICIES = ("per_node",)

    def __init__(self, spec: FCMSpec) -> None:
        spec.check()
        self.spec = spec

    def set_directory(self, directory: int) -> None:
        """Record the PageDirectory (created by the VM right after the FCM, before any rep)."""
        with self.lock:
            self.spec = attrs.evolve(self.spec, directory=directory)

    def rep_args(self, node: int) -> list:
        return [self.spec]
