"""Functions the benchmarks run on nodes (module level: importable everywhere)."""

from __future__ import annotations

import numpy as np

from tornado_dsm.kernel import PAGE, current_cos, trap


def touch_pages(a: np.ndarray, write: int) -> None:
    """Touch one byte per page of ``a`` (write=0 reads, else stores the byte)."""
    trap.touch(a.__array_interface__["data"][0], a.nbytes // PAGE, PAGE, write)


def drop_mappings(a: np.ndarray) -> None:
    """Drop this node's HAT mappings of ``a``'s pages, keeping the cached copies
    (the next faults are in-core: Process -> Region -> local FCM -> HAT)."""
    from tornado_dsm.objects._vm import _process_oid

    cos = current_cos()
    address = a.__array_interface__["data"][0]
    region = cos.call(_process_oid, "find_region", address)
    fcm = cos.call(region, "translate", address, 1)[0]
    cos.call(fcm, "drop_mappings")
