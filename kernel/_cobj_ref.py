"""Object references (``ObjectRef``) and the local-PPC floor (``NullObject``).

``local_ppc_seconds`` is what ``tornado-dsm bench ppc`` and the tests time:
a local call through the translation table on an object whose method does
nothing.
"""

from __future__ import annotations

import functools
from time import perf_counter

from ._cobj_policy import ClusteredRep, ClusteredRoot

DRAIN_TIMEOUT = 60.0  # seconds destroy waits for a node's calls in flight


class ObjectRef:
    """A reference to a clustered object bound to this node's COS.

    ``ref.oid`` is the integer reference (the same on every node);
    ``ref.call("m", *a)`` or ``ref.m(*a)`` calls it; ``ref.destroy()``.
    """

    __slots__ = ("cos", "oid")

    def __init__(self, cos, oid: int) -> None:
        self.cos, self.oid = cos, oid

    def call(self, method: str, *args):
        """``cos.call(oid, method, *args)``."""
        return self.cos.call(self.oid, method, *args)

    def destroy(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """``cos.destroy(oid)``."""
        self.cos.destroy(self.oid, timeout)

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        return functools.partial(self.cos.call, self.oid, method)

    def __int__(self) -> int:
        return self.oid

    def __eq__(self, other) -> bool:
        return isinstance(other, ObjectRef) and other.oid == self.oid

    def __hash__(self) -> int:
        return hash(self.oid)

    def __repr__(self) -> str:
        return f"ObjectRef({self.oid:#x}, node {self.cos.node})"


class NullObject(ClusteredRoot):
    """A clustered object whose one method does nothing: the local-PPC floor."""

    class Rep(ClusteredRep):
        """The rep: ``nop()`` returns None."""

        def nop(self) -> None:
            """Do nothing."""


def local_ppc_seconds(n: int = 100_000) -> float:
    """Seconds per local PPC: ``n`` calls of ``nop`` on a singleton NullObject on this node."""
    from ._cobj import current_cos  # noqa: PLC0415 (the COS module imports this one)

    cos = current_cos()
    ref = cos.create(NullObject, name="bench-null")
    call, oid = cos.call, ref.oid
    call(oid, "nop")  # the miss
    t0 = perf_counter()
    for _ in range(n):
        call(oid, "nop")
    elapsed = perf_counter() - t0
    ref.destroy()
    return elapsed / n
