"""The machine's exceptions, and the one for broken invariants everywhere.

Two tiers: expected failures are
specific exceptions that subclass a builtin and carry fields; a broken
invariant is one `DSMInternalError` naming the function and the reason.
Every layer above raises DSMInternalError, so it lives in the lowest one.
The net and cobj layers define their own expected failures (NodeLost,
PPCTimeout, ObjectDestroyed).
"""

from __future__ import annotations


class DSMInternalError(RuntimeError):
    """A broken invariant: a bug in tornado_dsm, never a user error."""

    def __init__(self, function: str, reason: str) -> None:
        super().__init__(f"internal error in {function}: {reason}")
        self.function = function
        self.reason = reason


class SegmentationFault(MemoryError):
    """A page fault that no handler could resolve, raised in the faulting thread.

    Fields: ``address`` (int), ``access`` ("read" or "write"), ``node`` (the
    node id of the window), ``reason`` (why the fault was refused).
    """

    __module__ = "tornado_dsm"   # shown as tornado_dsm.SegmentationFault in tracebacks

    def __init__(self, address: int, access: str, node: int, reason: str) -> None:
        super().__init__(
            f"segmentation fault: {access} at {address:#x} on node {node}: {reason}"
        )
        self.address = address
        self.access = access
        self.node = node
        self.reason = reason

    def __reduce__(self):
        return (SegmentationFault, (self.address, self.access, self.node, self.reason))


class MemoryLayoutError(OSError):
    """The node memory could not be laid out (address collision, map limit, ...)."""
