"""The copyset (the nodes holding read copies of a page, as a bitmask) and the
per-page node-id arrays, in the narrowest dtypes the cluster's node count allows.

Why narrow: a node keeps a copyset and an owner hint for every page of every
array, so their width is most of the per-page metadata.  With one bit per
node, a cluster of up to 8 nodes needs one byte per page where a fixed uint64
would take eight; a node id fits int8 (with -1 for "none") up to 127 nodes.
The arrays are still numpy arrays, read and written with Python ints.
"""

from __future__ import annotations

import numpy as np

MAX_NODES = 64  # the widest copyset is a uint64 bitmask of nodes

_WIDTHS = ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64))


def copyset_dtype(nnodes: int) -> np.dtype:
    """The narrowest unsigned dtype with a bit for each of ``nnodes`` nodes."""
    for width, dtype in _WIDTHS:
        if nnodes <= width:
            return np.dtype(dtype)
    raise ValueError(f"a copyset holds at most {MAX_NODES} nodes, not {nnodes}")


def node_dtype(nnodes: int) -> np.dtype:
    """The narrowest signed dtype holding node ids 0..nnodes-1 and -1 (no node)."""
    return np.dtype(np.int8 if nnodes <= 127 else np.int16)


def bits(mask: int) -> list[int]:
    """Node ids set in a copyset mask, in increasing order."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out
