"""Typed references: an Interface declared once, calls through the translation table."""

from __future__ import annotations

import inspect

import attrs
import pytest

from tornado_dsm.kernel import ClusteredRep, ClusteredRoot, Interface, TypedRef, current_cos, wire_record
from tornado_dsm.kernel.cobj._ref import interface_methods, ref_class

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(120)]


# ---- a test object: module level, nodes import it by name --------------------------

@wire_record
@attrs.frozen
class Where:
    """Where a call ran, as a record (travels as itself)."""

    node: int
    calls: int


class Tally(Interface):
    """A per-node tally."""

    def add(self, k: int) -> int:
        """Add ``k`` here; the new local total."""
        ...

    def where(self) -> Where:
        """The node of the rep that ran the call."""
        ...


class TallyRep(ClusteredRep, Tally):
    def __init__(self) -> None:
        self.n = 0

    def add(self, k: int) -> int:
        with self.lock:
            self.n += k
            return self.n

    def where(self) -> Where:
        return Where(self.node, self.n)


class TallyRoot(ClusteredRoot):
    Rep = TallyRep
    POLICIES = ("singleton", "per_node")


class HalfRep(ClusteredRep, Tally):
    def add(self, k: int) -> int:
        return k


class HalfRoot(ClusteredRoot):
    Rep = HalfRep


def create(policy: str) -> int:
    """A new Tally on this node; its oid."""
    return int(current_cos().create(TallyRoot, policy=policy))


def typed_where(oid: int) -> Where:
    """``where`` through a typed reference made on this node."""
    return current_cos().ref(oid, Tally).where()


def entry_counts(oid: int) -> tuple:
    """(local, remote) calls counted on this node's table entry for ``oid``."""
    (row,) = [e for e in current_cos().table() if e.oid == oid]
    return row.calls_local, row.calls_remote


# ---- tests ----------------------------------------------------------------------------

class TestRefClass:
    def test_methods_are_the_interface(self):
        """The generated class has exactly the interface's methods, with their signatures and docs."""
        cls = ref_class(Tally)
        assert interface_methods(Tally) == ("add", "where")
        assert issubclass(cls, Tally) and issubclass(cls, TypedRef)
        assert list(inspect.signature(cls.add).parameters) == ["self", "k"]
        assert cls.add.__doc__ == Tally.add.__doc__

    def test_not_an_interface(self):
        """Anything but an Interface subclass is refused by name."""
        with pytest.raises(TypeError, match="not an Interface subclass"):
            ref_class(int)


class TestCalls:
    def test_local_rep_call(self, three_nodes):
        """A typed call on a node holding a rep is a local PPC on its table entry."""
        oid = create("per_node")
        ref = current_cos().ref(oid, Tally)
        assert ref.add(2) == 2 and ref.add(3) == 5
        assert entry_counts(oid) == (2, 0)

    def test_stub_call_is_remote(self, three_nodes):
        """Through a stub, a typed call is one remote PPC to the home, and a record comes back as itself."""
        oid = create("singleton")
        assert three_nodes.run_on(1, typed_where, oid) == Where(0, 0)
        assert three_nodes.run_on(1, entry_counts, oid) == (0, 1)

    def test_on_node_and_on_each(self, three_nodes):
        """on(node) reaches that node's rep; on_each(nodes) reaches several, results in order."""
        oid = create("per_node")
        ref = current_cos().ref(oid, Tally)
        assert ref.on(2).where() == Where(2, 0)
        assert ref.on_each([2, 0, 1]).add(4) == [4, 4, 4]

    def test_unknown_method(self, three_nodes):
        """A method the interface does not declare is an AttributeError."""
        ref = current_cos().ref(create("per_node"), Tally)
        with pytest.raises(AttributeError):
            ref.reset()

    def test_rep_must_implement_the_interface(self, three_nodes):
        """The COS refuses an object whose Rep leaves an interface method out, naming it."""
        with pytest.raises(TypeError, match="HalfRep does not implement Tally.where"):
            current_cos().create(HalfRoot, policy="per_node")

    def test_equality_with_untyped(self, three_nodes):
        """A typed and an untyped reference to one oid are equal and hash alike."""
        oid = create("per_node")
        typed, plain = current_cos().ref(oid, Tally), current_cos().ref(oid)
        assert typed == plain and hash(typed) == hash(plain) and int(typed) == oid
