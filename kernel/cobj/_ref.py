"""Object references: ``ObjectRef``, an oid bound to this node's COS."""

from __future__ import annotations

import functools

from ._table import DRAIN_TIMEOUT


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
