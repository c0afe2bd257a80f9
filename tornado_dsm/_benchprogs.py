"""Functions the benchmarks run on nodes (module level: importable everywhere)."""

from __future__ import annotations

import numpy as np

from tornado_dsm.kernel import PAGE, trap


def touch_pages(a: np.ndarray, write: int) -> None:
    """Touch one byte per page of ``a`` (write=0 reads, else stores the byte)."""
    trap.touch(a.__array_interface__["data"][0], a.nbytes // PAGE, PAGE, write)


def touch_every_other_page(a: np.ndarray, first_node: int) -> tuple:
    """Node n stores one byte in every other page of ``a``, starting at page n - first_node
    (two nodes interleave page by page), from a C loop; returns (pages, seconds)."""
    import time

    from tornado_dsm import current_node

    start = a.__array_interface__["data"][0] + (current_node() - first_node) * PAGE
    pages = (a.nbytes // PAGE + 1 - (current_node() - first_node)) // 2
    t0 = time.perf_counter()
    trap.touch(start, pages, 2 * PAGE, 1)
    return pages, time.perf_counter() - t0
