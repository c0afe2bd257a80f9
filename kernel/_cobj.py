"""The Clustered Object System (COS): translation tables, miss handling, existence.

Minimal first version: ``attach(runtime)`` creates the node's COS and
registers its dispatcher with the runtime, so node start-up works while the
rest is written.
"""

from __future__ import annotations

import threading

from ._errors import ObjectDestroyed

_current = threading.local()
_cos = None


class ClusteredObjectSystem:
    """The COS of one node (placeholder: knows no objects yet)."""

    def __init__(self, runtime) -> None:
        self.runtime = runtime
        self.node = runtime.node_id
        self.table: dict[int, object] = {}

    def dispatch(self, oid: int, method: str, args, payload):
        """Serve a request from another node for object ``oid``."""
        raise ObjectDestroyed(f"no clustered object {oid:#x} on node {self.node}")


def attach(runtime) -> ClusteredObjectSystem:
    """Create this node's COS for ``runtime`` and register its dispatcher."""
    global _cos
    cos = ClusteredObjectSystem(runtime)
    runtime.set_object_dispatcher(cos.dispatch)
    runtime.cos = cos
    _cos = cos
    return cos


def current_cos() -> ClusteredObjectSystem:
    """The COS of this node (after ``attach``)."""
    if _cos is None:
        raise RuntimeError("no clustered object system: this process is not a node (start_nodes)")
    return _cos
