"""The copyset: the nodes holding read copies of a page, as a uint64 bitmask."""

from __future__ import annotations

MAX_NODES = 64  # a copyset is a uint64 bitmask of nodes


def bits(mask: int) -> list[int]:
    """Node ids set in a copyset mask, in increasing order."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out
