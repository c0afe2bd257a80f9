"""Which pages of an allocation died with lost nodes (node 0's accounting).

A node that dies takes its frames with it.  A page survives if a live node
can still resolve it: a live node owns it, or (under the centralized and
fixed managers) its directory slice is on a live node and names no lost
owner.  So:

* dynamic manager: every page has exactly one owner (the home, node 0,
  owns untouched pages), so a page is lost iff no live node owns it;
* centralized and fixed managers: a page is lost iff its directory slice
  was on a lost node (fixed: page p's slice is on node p mod N), or its
  directory names a lost node as owner.  Read copies on live nodes do not
  save a page whose owner died: IVY serves every fault from the owner.

Calls here tolerate further losses (LOST results) and never create state
on a node just to answer.
"""

from __future__ import annotations

import numpy as np

from tornado_dsm.kernel import LOST, NodeLost, home_of

from ._interfaces import FCM, PageDirectory


def lost_pages(vm, a, lost: set) -> np.ndarray:
    """Indices of the pages of allocation ``a`` that died with the ``lost`` nodes."""
    if not lost:
        return np.zeros(0, dtype=np.int64)
    nnodes = vm.cos.nnodes
    live = [n for n in range(nnodes) if n not in lost]
    if vm.config.manager == "dynamic":
        return np.flatnonzero(~_owned_by(vm, a, live))
    owners = _directory_owners(vm, a, live, nnodes)
    dead = np.isin(owners, list(lost)) | (owners == _NO_SLICE)
    return np.flatnonzero(dead)


_NO_SLICE = -2   # the page's directory slice was on a lost node


def _owned_by(vm, a, live: list) -> np.ndarray:
    """True for the pages some node of ``live`` owns."""
    holders = [n for n in vm.rep_nodes(a.fcm) if n in live]
    owned = np.zeros(a.npages, dtype=bool)
    for bits in vm.cos.ref(a.fcm, FCM).on_each(holders, tolerate_lost=True).owned_pages():
        if bits is not LOST:
            owned |= np.unpackbits(np.frombuffer(bits, dtype=np.uint8))[:a.npages].astype(bool)
    return owned


def _directory_owners(vm, a, live: list, nnodes: int) -> np.ndarray:
    """Each page's owner by its directory slice (_NO_SLICE where the slice is lost).
    The slices' nodes come from the directory's root: a hot swap or a migration
    changes them (centralized: the home; fixed: every node)."""
    directory = vm.cos.ref(a.directory, PageDirectory)
    owners = np.full(a.npages, _NO_SLICE, dtype=np.int64)
    try:
        nodes = [n for n in vm.cos.call_root(a.directory, home_of(a.directory), "slice_nodes", [])
                 if n in live]
    except NodeLost:  # the centralized directory's home died with every page's state
        return owners
    for raw in directory.on_each(nodes, tolerate_lost=True).owners():
        if raw is not LOST:
            stride, offset, table = raw
            owners[offset::stride] = np.frombuffer(table, dtype=np.int16)  # slot k: its k-th page
    return owners


def pages_in_flight() -> int:
    """On one node: pages some thread is still resolving (a request out, or
    the dynamic manager serving one).  Zero once every call has ended: a
    thread left waiting on a lost peer would show here."""
    from . import _nodestate   # the node's state exists only inside a running node
    total = 0
    for pages in list(_nodestate.current().frames.fcms):
        total += int(np.count_nonzero(pages.requesting))
        serving = getattr(pages.manager, "serving", None)
        total += 0 if serving is None else int(np.count_nonzero(serving))
    return total
