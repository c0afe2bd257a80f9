"""Functions the benchmarks run on nodes (module level: importable everywhere)."""

from __future__ import annotations

import numpy as np

from tornado_dsm.kernel import PAGE, trap


def touch_pages(a: np.ndarray, write: int) -> None:
    """Touch one byte per page of ``a`` (write=0 reads, else stores the byte)."""
    trap.touch(a.__array_interface__["data"][0], a.nbytes // PAGE, PAGE, write)
