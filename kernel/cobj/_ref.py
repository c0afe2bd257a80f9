"""Object references: ``ObjectRef`` (an oid bound to this node's COS) and
typed references generated from an object's ``Interface``.

Design essay
------------
A clustered object's calls are declared once, as an ``Interface`` subclass:
its public methods, with signatures, docstrings and a body of ``...``.  The
object's Rep class subclasses the interface and implements every method
(the COS refuses to create an object whose Rep leaves one out).  A typed
reference, ``cos.ref(oid, Process)``, is an instance of a class generated
from the interface: ``process.find_region(address)`` looks the oid up in
this node's translation table and invokes the entry exactly as
``cos.call(oid, "find_region", address)`` does — a local PPC on a rep, a
remote PPC through a stub, a miss to the home when there is no entry — so
the calls are counted per object and method as before, and cost the same
(one Python frame).  Readers and tools see a method call on a variable
typed by the interface, so "find usages" of ``Process.find_region`` finds
both the implementation and every caller.

``ref.on(node)`` is the same interface aimed at the rep on one node (the
protocol messages of a coherence manager: "owner, send me a copy"), and
``ref.on_each(nodes)`` aims every method at several nodes at once (requests
sent before any reply is awaited), returning the results in node order.
"""

from __future__ import annotations

import functools

from ._policy import ClusteredRep
from ._table import DRAIN_TIMEOUT, through_table


class Interface:
    """Base of a clustered object's interface (see the module essay).

    Subclasses declare public methods with a body of ``...``; the object's
    Rep subclasses the interface and implements them all.
    """


def interface_methods(iface: type) -> tuple[str, ...]:
    """The calls ``iface`` declares (its own and its interface bases'), sorted."""
    names = set()
    for cls in iface.__mro__:
        if issubclass(cls, Interface) and cls is not Interface:
            names.update(n for n, v in vars(cls).items() if not n.startswith("_") and callable(v))
    return tuple(sorted(names))


def interfaces_of(rep_class: type) -> tuple[type, ...]:
    """The interfaces a Rep class implements (its Interface bases that are not reps)."""
    return tuple(c for c in rep_class.__mro__
                 if issubclass(c, Interface) and c is not Interface and not issubclass(c, ClusteredRep))


def check_implements(rep_class: type) -> None:
    """TypeError unless ``rep_class`` implements every method of its interfaces."""
    for iface in interfaces_of(rep_class):
        for name in interface_methods(iface):
            if getattr(rep_class, name) is getattr(iface, name):
                raise TypeError(f"{rep_class.__qualname__} does not implement {iface.__qualname__}.{name}")


class _Reference:
    """What every reference has: the oid, its COS, identity and destroy."""

    __slots__ = ("cos", "oid")

    def __init__(self, cos, oid: int) -> None:
        self.cos, self.oid = cos, oid

    def destroy(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """``cos.destroy(oid)``."""
        self.cos.destroy(self.oid, timeout)

    def __int__(self) -> int:
        return self.oid

    def __eq__(self, other) -> bool:
        return isinstance(other, _Reference) and other.oid == self.oid

    def __hash__(self) -> int:
        return hash(self.oid)


class ObjectRef(_Reference):
    """A reference to a clustered object bound to this node's COS.

    ``ref.oid`` is the integer reference (the same on every node);
    ``ref.call("m", *a)`` or ``ref.m(*a)`` calls it; ``ref.destroy()``.
    """

    __slots__ = ()

    def call(self, method: str, *args):
        """``cos.call(oid, method, *args)``."""
        return self.cos.call(self.oid, method, *args)

    def __getattr__(self, method: str):
        if method.startswith("_"):
            raise AttributeError(method)
        return functools.partial(self.cos.call, self.oid, method)

    def __repr__(self) -> str:
        return f"ObjectRef({self.oid:#x}, node {self.cos.node})"


class TypedRef(_Reference):
    """Base of the classes ``ref_class`` generates: the interface's methods,
    ``on``, ``on_each`` and ``destroy``.  Not an ObjectRef subclass on purpose:
    a class with ``__getattr__`` makes every attribute lookup on its instances
    slower, and these are on the fault path."""

    __slots__ = ("_table", "_on")
    INTERFACE: type = Interface

    def __init__(self, cos, oid: int) -> None:
        super().__init__(cos, oid)
        self._table, self._on = cos._table, None

    def on(self, node: int):
        """The same interface aimed at the rep on ``node`` (direct if it is this node)."""
        on = self._on
        if on is None:
            cls = _peer_class(self.INTERFACE, _OnNode)
            on = self._on = [cls(self.cos, self.oid, n) for n in range(self.cos.nnodes)]
        return on[node]

    def on_each(self, nodes, tolerate_lost: bool = False):
        """The same interface aimed at the reps on ``nodes`` at once: each method
        returns the list of results in ``nodes`` order.  ``tolerate_lost``: a
        node lost before or during the call gives ``LOST`` instead of raising
        NodeLost (for calls whose purpose dies with the node, e.g. invalidating
        its copy)."""
        target = tuple(nodes)
        return _peer_class(self.INTERFACE, _OnEach)(self.cos, self.oid, (target, tolerate_lost))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.oid:#x}, node {self.cos.node})"


class _Aimed:
    """An interface aimed at given reps: ``target`` is one node (``on``) or a
    (tuple of nodes, tolerate_lost) pair (``on_each``); the subclasses make the methods."""

    __slots__ = ("cos", "oid", "target")

    def __init__(self, cos, oid: int, target) -> None:
        self.cos, self.oid, self.target = cos, oid, target


class _OnNode(_Aimed):
    """Each method is a call on the rep of node ``target`` (``TypedRef.on``)."""

    __slots__ = ()

    @staticmethod
    def _make(name: str, declared):
        def method(self, *args):
            return self.cos.call_rep(self.oid, self.target, name, *args)
        return functools.update_wrapper(method, declared)


class _OnEach(_Aimed):
    """Each method calls the reps of the nodes ``target`` at once (``TypedRef.on_each``)."""

    __slots__ = ()

    @staticmethod
    def _make(name: str, declared):
        def method(self, *args):
            nodes, tolerate_lost = self.target
            return self.cos.call_reps(self.oid, nodes, name, args, tolerate_lost)
        return functools.update_wrapper(method, declared)


_classes: dict[tuple, type] = {}


def ref_class(iface: type) -> type:
    """The typed-reference class of ``iface`` (generated once, then cached)."""
    cls = _classes.get((iface, TypedRef))
    if cls is None:
        if not (isinstance(iface, type) and issubclass(iface, Interface)):
            raise TypeError(f"{iface!r} is not an Interface subclass")
        methods = {n: through_table(n, getattr(iface, n)) for n in interface_methods(iface)}
        cls = type(f"{iface.__name__}Ref", (TypedRef, iface), {"__slots__": (), "INTERFACE": iface, **methods})
        _classes[(iface, TypedRef)] = cls
    return cls


def _peer_class(iface: type, kind: type) -> type:
    """The class of ``kind`` (_OnNode or _OnEach) for ``iface``, cached."""
    cls = _classes.get((iface, kind))
    if cls is None:
        methods = {n: kind._make(n, getattr(iface, n)) for n in interface_methods(iface)}
        cls = type(f"{iface.__name__}{kind.__name__}", (kind,), {"__slots__": (), **methods})
        _classes[(iface, kind)] = cls
    return cls
