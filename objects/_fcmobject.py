"""The FCM and PageDirectory as clustered objects.

FCM: policy ``per_node`` always (its reps *are* the per-node page caches).
Each rep wraps an FCMPages on this node's memory plus the requester half of
its manager:

* ``centralized``: a singleton PageDirectory object (on the FCM's home);
* ``fixed``: a partitioned PageDirectory object, page p on node p mod N
  (the COS routes the keyed call ``request(page, ...)`` to the owning rep);
* ``dynamic``: no directory; a DynamicManager in every FCM rep.

Protocol messages between nodes are PPCs on the FCM's own oid to the rep on
a given node (``send_copy``, ``give_page``, ``invalidate``, ``serve``,
``take_back``), so they are counted per object and method.  Grants cross the
wire as lists (msgpack), page contents as bytes.

The debug mode (``debug=True`` at creation) checks IVY's invariants for a
page at the manager after every request, while the page is still held, by
asking every node for its access to that page.
"""

from __future__ import annotations

import numpy as np

from tornado_dsm.kernel import ClusteredRep, ClusteredRoot, current_cos

from . import _nodestate
from ._cor import CORClient
from ._directory import PROTOCOLS, PageDirectory
from ._dynamic import DynamicManager
from ._fcm import FCMPages, Grant
from ._invariants import check_page

MANAGERS = ("centralized", "fixed", "dynamic")  # the one list of IVY managers


def grant_to_wire(g: Grant) -> list:
    return [g.version, g.access, g.data, g.dirty, g.owner]


def grant_from_wire(w) -> Grant:
    return Grant(int(w[0]), int(w[1]), w[2], bool(w[3]), bool(w[4]))


def rep_fanout(oid: int):
    """fanout(nodes, method, *args): the method on the rep of ``oid`` on every
    node at once, requests sent before any reply is awaited (call_async);
    results in ``nodes`` order."""
    cos = current_cos()
    rt = cos.runtime

    def fanout(nodes, method, *args):
        pending = {n: rt.call_async(n, oid, method, list(args)) for n in nodes if n != cos.node}
        if cos.node in nodes:
            local = cos.call_reps(oid, (cos.node,), method, args)[cos.node]
        return [local if n == cos.node else pending[n].result() for n in nodes]
    return fanout


def accesses(oid: int, page: int) -> np.ndarray:
    """Every node's access to ``page`` of FCM ``oid``, by node (debug checks)."""
    nodes = tuple(range(current_cos().nnodes))
    return np.array(rep_fanout(oid)(nodes, "access_of", page), dtype=np.uint8)


def cor_client(cor_oid: int, npages: int, anonymous: bool) -> CORClient:
    """A manager's CORClient reaching COR ``cor_oid`` through the COS."""
    call = current_cos().call
    return CORClient(lambda method, *args: call(cor_oid, method, *args), npages, anonymous)


def rep_caller(oid: int):
    """call(node, method, *args) on the rep of ``oid`` on ``node`` (direct if local)."""
    cos = current_cos()

    def call(node: int, method: str, *args):
        if node == cos.node:
            return cos.call_reps(oid, (node,), method, args)[node]
        return cos.runtime.call(node, oid, method, list(args))
    return call


class PageDirectoryRep(ClusteredRep):
    """The manager of (a slice of) an FCM's pages."""

    KEYED = frozenset({"request", "evict"})

    def __init__(self, fcm_oid: int, npages: int, protocol: str, cor_oid: int, anonymous: bool,
                 debug: bool) -> None:
        self.fcm_oid, self.cor_oid, self.debug = fcm_oid, cor_oid, debug
        self.store = cor_client(cor_oid, npages, anonymous)
        self.call = rep_caller(fcm_oid)
        self.dir = PageDirectory(npages, self.call, self.store, protocol=protocol, fanout=rep_fanout(fcm_oid))

    def request(self, page: int, node: int, want: int, have_version: int) -> list:
        """Serve a fault (see PageDirectory.request); the grant as a list."""
        grant = self.dir.request(page, node, want, have_version)
        if self.debug:
            self._check(page)
        return grant_to_wire(grant)

    def evict(self, page: int, node: int, version: int, data: bytes, dirty: bool):
        """An owner gives a page back to the backing store."""
        return self.dir.evict(page, node, version, data, dirty)

    def _check(self, page: int) -> None:
        owner, _ = self.dir.holders(page)
        check_page(page, accesses(self.fcm_oid, page), owner, int(self.dir.copyset[page]), self.dir.protocol)

    def statistics(self) -> dict:
        """Invalidations sent and pages zero-filled by this directory rep."""
        return {"invalidations": self.dir.invalidations, "zero_fills": self.store.zero_fills}


class PageDirectoryRoot(ClusteredRoot):
    """Root of a PageDirectory; its reps start from the same arguments."""

    Rep = PageDirectoryRep
    POLICIES = ("singleton", "partitioned")

    def __init__(self, *args) -> None:
        self.args = list(args)

    def rep_args(self, node: int) -> list:
        return self.args


class FCMRep(ClusteredRep):
    """The pages of one memory object as cached on this node."""

    def __init__(self, vpage: int, npages: int, protocol: str, manager: str, cor_oid: int, anonymous: bool,
                 dir_oid: int, nnodes: int, debug: bool) -> None:
        state = _nodestate.current()
        self.protocol, self.manager, self.cor_oid, self.dir_oid = protocol, manager, cor_oid, dir_oid
        self.pages = FCMPages(state.memory, vpage, npages, self._request, state.frames,
                              migrate=protocol == "migrate")
        self.dyn = None
        cos = current_cos()
        self._cos = cos
        if manager == "dynamic":
            store = cor_client(cor_oid, npages, anonymous)
            self.dyn = DynamicManager(self.pages, self.node, nnodes, self.home, self._call_dyn, store,
                                      rep_fanout(self.oid))
            self.pages.request = self.dyn.request
            if debug:
                self.dyn.enable_debug(self._check_page)
        else:
            self.pages.release_owned = self._release_owned
        self.incore_faults = self.coherence_faults = 0

    # -- the fault path (local calls on the faulting node) -------------------

    def get_page(self, page: int, want: int) -> bool:
        """Make ``page`` accessible here for ``want``; True if it took coherence traffic."""
        remote = self.pages.get_page(page, want)
        if remote:
            self.coherence_faults += 1
        else:
            self.incore_faults += 1
        return remote

    def _request(self, page: int, want: int, have: int) -> Grant:
        wire = self._cos.call(self.dir_oid, "request", page, self.node, want, have)
        return grant_from_wire(wire)

    def _release_owned(self, page: int, version: int, data: bytes, dirty: bool):
        return self._cos.call(self.dir_oid, "evict", page, self.node, version, data, dirty)

    def _call_dyn(self, node, method, *args):
        if node == self.node:
            result = getattr(self.dyn, method)(*args)
        else:
            result = self._cos.runtime.call(node, self.oid, method, list(args))
        if method == "serve":
            grant, owner = result
            return (grant if isinstance(grant, Grant) else grant_from_wire(grant)), owner
        return result

    # -- protocol messages from other nodes ---------------------------------

    def send_copy(self, page: int, expect_version: int) -> bytes:
        return self.pages.send_copy(page, expect_version)

    def give_page(self, page: int, expect_version: int, new_version: int, need_data: bool) -> list:
        return list(self.pages.give_page(page, expect_version, new_version, need_data))

    def invalidate(self, page: int, new_version: int, new_owner: int = -1) -> None:
        if self.dyn is not None:
            self.dyn.invalidate(page, new_version, new_owner)
        else:
            self.pages.invalidate(page, new_version)

    def serve(self, page: int, requester: int, want: int, have: int, hops: int) -> list:
        grant, owner = self.dyn.serve(page, requester, want, have, hops)
        return [grant_to_wire(grant), owner]

    def take_back(self, page: int, version: int, copyset: int) -> None:
        self.dyn.take_back(page, version, copyset)

    def _check_page(self, page: int, owner: int, copyset: int) -> None:
        """Debug mode (dynamic manager): IVY's invariants for ``page`` across all nodes."""
        access = accesses(self.oid, page)
        check_page(page, access, owner if access[owner] else -1, copyset, self.protocol)

    def access_of(self, page: int) -> int:
        return int(self.pages.access[page])

    # -- whole-object operations ---------------------------------------------

    def drop_mappings(self) -> None:
        """Unmap our pages in the HAT, keep the cached copies (in-core faults next)."""
        self.pages.drop_mappings()

    def dirty_pages(self) -> list:
        """[page, bytes] of every page written here since the last write-back."""
        with self.pages.cond:
            pages = np.flatnonzero(self.pages.dirty & (self.pages.access != 0)).tolist()
            out = [[p, self.pages.memory.frame(self.pages.vpage + p).tobytes()] for p in pages]
            self.pages.dirty[pages] = 0
        return out

    def statistics(self) -> dict:
        """Fault and protocol counters of this rep."""
        d = {"incore_faults": self.incore_faults, "coherence_faults": self.coherence_faults,
             "stale_grants": self.pages.stale_grants, "resident": self.pages.resident()}
        if self.dyn is not None:
            d.update(forwards=self.dyn.forwards, invalidations=self.dyn.invalidations,
                     zero_fills=self.dyn.store.zero_fills)
        return d

    def cleanup(self) -> None:
        """Give every frame of this object back (the region is gone)."""
        state = _nodestate.current()
        state.frames.unregister(self.pages)
        state.memory.release(self.pages.vpage, self.pages.npages)


class FCMRoot(ClusteredRoot):
    """Root of an FCM: creates its directory (centralized/fixed) and knows its args."""

    Rep = FCMRep
    POLICIES = ("per_node",)

    def __init__(self, vpage: int, npages: int, protocol: str, manager: str, cor_oid: int, anonymous: bool,
                 nnodes: int, debug: bool) -> None:
        if manager not in MANAGERS:
            raise ValueError(f"manager must be one of {MANAGERS}, not {manager!r}")
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, not {protocol!r}")
        self.args = [vpage, npages, protocol, manager, cor_oid, anonymous, 0, nnodes, debug]

    def set_directory(self, dir_oid: int) -> None:
        """Record the directory (created by the VM right after the FCM)."""
        self.args[6] = dir_oid

    def rep_args(self, node: int) -> list:
        return self.args
