"""What the coherence layer keeps per page on each node, measured with tracemalloc.

numpy reports its data allocations to tracemalloc in a domain of its own, so
the growth of that domain on a node, from before an array is allocated to
after every node has read and written it, is the per-page state its FCM rep,
its coherence manager and its directory slice keep there (the arrays are made
when the reps are, so the count does not depend on the access pattern).  The
HAT's one protection byte per window page is made with the window, before
any array, and is added to the figure as the constant it is.
"""

from __future__ import annotations

import tracemalloc

import attrs
import numpy as np

from tornado_dsm.kernel import PAGE

NUMPY_DOMAIN = 389047   # numpy's tracemalloc domain (numpy/core/include/numpy/ndarraytypes.h)
HAT_BYTES = 1           # the HAT's protection byte of each window page (kernel/machine/_hat.py)


@attrs.frozen
class MetadataFigure:
    """Bytes of per-page state on each node for one array, per page of it."""

    manager: str
    nnodes: int
    npages: int
    per_node: tuple  # bytes per page on node 0, 1, ... (coherence state + the HAT byte)

    @property
    def worst(self) -> float:
        """The largest figure of any node."""
        return max(self.per_node)


def start_tracing() -> None:
    """On a node: trace allocations from here on (a no-op if already tracing)."""
    if not tracemalloc.is_tracing():
        tracemalloc.start()


def numpy_bytes() -> int:
    """On a node: bytes numpy holds now among the traced allocations."""
    snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.DomainFilter(True, NUMPY_DOMAIN)])
    return sum(stat.size for stat in snap.statistics("filename"))


def stop_tracing() -> None:
    """On a node: stop tracing."""
    tracemalloc.stop()


def read_all_write_mine(a: np.ndarray, nnodes: int) -> int:
    """Read every page of ``a`` (bytes), then write the pages p with p mod nnodes == this node."""
    from tornado_dsm import current_node
    pages = a.reshape(-1, PAGE)
    total = int(pages[:, 0].sum())
    pages[current_node()::nnodes, 0] = 1
    return total


def measure(manager: str, nnodes: int = 3, npages: int = 1 << 15, backend: str | None = None,
            prefetch: int = 0, base: int | None = None) -> MetadataFigure:
    """Per-page state on every node for an array of ``npages`` pages under ``manager``
    (``base``: the cluster's window address, None for the default)."""
    import tornado_dsm as td

    where = {} if base is None else {"base": base}
    with td.Cluster(nodes=nnodes, manager=manager, backend=backend, **where) as c:
        run_all = c.node_set.run_on_all
        run_all(start_tracing)
        before = run_all(numpy_bytes)
        a = c.zeros((npages * PAGE,), np.uint8, prefetch=prefetch)
        c.run(read_all_write_mine, a, nnodes, threads=1)
        after = run_all(numpy_bytes)
        run_all(stop_tracing)
    per_node = tuple(round((b - s) / npages + HAT_BYTES, 2) for s, b in zip(before, after))
    return MetadataFigure(manager, nnodes, npages, per_node)
