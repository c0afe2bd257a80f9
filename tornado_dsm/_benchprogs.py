"""Functions the benchmarks run on nodes (module level: importable everywhere)."""

from __future__ import annotations

import numpy as np

from tornado_dsm.kernel import PAGE, current_cos, trap


def touch_pages(a: np.ndarray, write: int) -> None:
    """Touch one byte per page of ``a`` (write=0 reads, else stores the byte)."""
    trap.touch(a.__array_interface__["data"][0], a.nbytes // PAGE, PAGE, write)


def drop_mappings(a: np.ndarray) -> None:
    """Drop this node's HAT mappings of ``a``'s pages, keeping the cached copies."""
    from tornado_dsm.objects._vm import _process_oid, drop_mappings as drop

    region = current_cos().call(_process_oid, "find_region", a.__array_interface__["data"][0])
    drop([region])
