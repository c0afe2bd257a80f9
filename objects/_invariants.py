"""Coherence invariants of IVY (the debug mode checks them after every step).

For every page, over the accesses of all nodes:

* at most one node has WRITE;
* a writer excludes every reader;
* the copyset covers every reader (the owner aside);
* the owner, when there is one, holds a copy (READ or WRITE).

Under migrate there is at most one node with any access at all.
"""

from __future__ import annotations

import numpy as np

from tornado_dsm.kernel import DSMInternalError

from ._fcm import NIL, READ, WRITE


def check_page(page: int, access: np.ndarray, owner: int, copyset: int, protocol: str = "ivy") -> None:
    """Raise DSMInternalError if the accesses of all nodes (``access[node]``)
    break a coherence invariant for ``page`` with this owner and copyset."""
    writers = np.flatnonzero(access == WRITE)
    readers = np.flatnonzero(access == READ)
    holders = np.flatnonzero(access != NIL)
    where = f"page {page}: access by node {access.tolist()}, owner {owner}, copyset {copyset:#x}"
    if len(writers) > 1:
        raise DSMInternalError("coherence", f"several writers; {where}")
    if len(writers) == 1 and len(readers) > 0:
        raise DSMInternalError("coherence", f"a writer and readers at once; {where}")
    if protocol == "migrate" and len(holders) > 1:
        raise DSMInternalError("coherence", f"migrate page held by several nodes; {where}")
    for r in readers.tolist():
        if r != owner and not copyset >> r & 1:
            raise DSMInternalError("coherence", f"reader {r} missing from the copyset; {where}")
    if len(holders) and owner >= 0 and access[owner] == NIL:
        raise DSMInternalError("coherence", f"the owner holds no copy; {where}")
