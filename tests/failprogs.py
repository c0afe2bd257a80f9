"""Programs the node-failure tests run on nodes (module level: nodes import them by name)."""

from __future__ import annotations

import ctypes
import os
import time


def crash_outside_window():
    """Segfault in user code, outside the DSM window (a NULL read)."""
    ctypes.string_at(0)


def pid():
    return os.getpid()


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def fill(array, value: int) -> int:
    array[:] = value
    return int(array[0])


def total(array) -> int:
    return int(array.sum())
