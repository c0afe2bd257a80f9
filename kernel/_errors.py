"""The exceptions of the whole stack.

Two tiers (DESIGN.md, Conventions): expected failures are specific exceptions
that subclass a builtin and carry fields; a broken invariant is one
`DSMInternalError` naming the function and the reason.  They live in the kernel
because every layer above raises them and the dependency direction is one way.
"""

from __future__ import annotations

import threading


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


# The refused fault of each thread that has not been raised yet.  The trap
# records it here (in the faulting thread) and arms an asynchronous exception;
# CPython instantiates _AsyncSegmentationFault with no arguments in that same
# thread when it raises, which is the moment the scratch pages go away.
_pending = threading.local()

# Puts the real frames back under this thread's scratch pages; the trap
# installs it when it is imported (the trap depends on this module, not back).
restore_scratch_hook = None


def record_refused_fault(address: int, access: str, node: int, reason: str) -> None:
    """Remember the first refused fault of this thread until it is raised."""
    if getattr(_pending, "fault", None) is None:
        _pending.fault = (address, access, node, reason)


class _AsyncSegmentationFault(SegmentationFault):
    """The form the trap arms with PyThreadState_SetAsyncExc (no arguments)."""

    def __init__(self, *args) -> None:
        if args:  # unpickling or an explicit construction
            super().__init__(*args)
            return
        fault = getattr(_pending, "fault", None)
        _pending.fault = None
        restore_scratch_hook()
        if fault is None:
            raise DSMInternalError("_AsyncSegmentationFault", "raised with no pending fault")
        super().__init__(*fault)


# Shown as tornado_dsm.SegmentationFault in tracebacks.
_AsyncSegmentationFault.__name__ = "SegmentationFault"
_AsyncSegmentationFault.__qualname__ = "SegmentationFault"
_AsyncSegmentationFault.__module__ = SegmentationFault.__module__ = "tornado_dsm"


class MemoryLayoutError(OSError):
    """The node memory could not be laid out (address collision, map limit, ...)."""


class ObjectDestroyed(LookupError):
    """A call reached a clustered object that has been destroyed."""


class PPCTimeout(TimeoutError):
    """A remote protected procedure call did not answer in time."""


class NodeLost(ConnectionError):
    """A node died or disconnected; every call pending on it fails with this."""
