"""What every workload shares: the words of a page, a thread's result, who am I.

Its own module so that the workload modules (_workloads, _workloads_phases)
can all build on it without importing each other.
"""

from __future__ import annotations

import attrs

import tornado_dsm as td

WORDS = 512  # int64/float64 words per 4 KiB page


@attrs.frozen
class ThreadResult:
    """What one thread did in one measured step: accesses, seconds, a checksum."""

    node: int
    thread: int
    ops: int
    seconds: float
    checksum: float = 0.0


def _me(tpn: int) -> tuple[int, int, int]:
    """(node, thread, global thread index) of the calling thread."""
    node, thread = td.current_node(), td.current_thread()
    return node, thread, node * tpn + thread
