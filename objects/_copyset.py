"""Reaching several nodes at once, and the copyset bitmask."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

# For callers without asynchronous calls (the in-process protocol tests):
# each blocking call on its own thread.
_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="tornado_dsm-fanout")


def thread_fanout(call):
    """A fanout(nodes, method, *args) running ``call`` for each node on threads."""
    def fanout(nodes, method, *args):
        futures = [_pool.submit(call, n, method, *args) for n in nodes]
        return [f.result() for f in futures]
    return fanout


MAX_NODES = 64  # a copyset is a uint64 bitmask of nodes


def bits(mask: int) -> list[int]:
    """Node ids set in a copyset mask."""
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out
