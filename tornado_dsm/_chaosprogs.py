"""What chaos trials run on the nodes (module level: nodes import them by name)."""

from __future__ import annotations

import os
import time

from tornado_dsm.kernel import PAGE, atomic, current_runtime
from tornado_dsm.objects import pages_in_flight

WORDS = PAGE // 8


def hammer(array, pages: list, seconds: float) -> int:
    """For ``seconds``, round after round, atomically add 1 to word 0 of each
    page in ``pages``; returns the rounds done (the caller's ground truth)."""
    base, rounds = array.ctypes.data, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for p in pages:
            atomic.fetch_add(base + p * PAGE, 1)
        rounds += 1
    return rounds


def residue(lost: list) -> list:
    """[connections still open to the lost nodes, pages still in flight] on this node."""
    rt = current_runtime()
    open_ = sum(1 for n in lost if n in rt._calls or n in rt._serves)
    return [open_, pages_in_flight()]


def pid() -> int:
    return os.getpid()
