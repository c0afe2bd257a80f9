"""Message bodies: msgpack values and wire records (kernel/net/_wire.py)."""

from __future__ import annotations

import attrs
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tornado_dsm.kernel import wire_record
from tornado_dsm.kernel.net._wire import RECORD, pack, unpackb


@wire_record
@attrs.frozen
class Pair:
    """A record with bytes and a nested value."""

    data: bytes
    inner: object = None


@attrs.frozen
class Unregistered:
    x: int


class TestWireRecord:
    @given(st.binary(max_size=5000), st.integers(-(2**63), 2**63 - 1))
    def test_round_trip(self, data, n):
        """A record, alone or inside lists and dicts, decodes as an equal record."""
        value = [Pair(data, n), {"k": Pair(b"", [1, 2])}]
        assert unpackb(pack(value)) == value

    def test_nested_records(self):
        """A record inside a record round-trips (its body packs with a fresh packer)."""
        value = Pair(b"a", Pair(b"b", Pair(b"c")))
        assert unpackb(pack(value)) == value

    def test_unregistered_class_refused(self):
        """An attrs class that is not a wire_record cannot be sent, and the error names it."""
        with pytest.raises(TypeError, match="Unregistered"):
            pack([Unregistered(1)])

    def test_unknown_record_refused(self):
        """A body naming a record this node never registered is refused, not imported."""
        body = msgpack.packb(msgpack.ExtType(RECORD, msgpack.packb(["os:system", ["true"]])))
        with pytest.raises(ValueError, match="not a registered wire_record"):
            unpackb(body)

    def test_other_extension_refused(self):
        """Any other msgpack extension type is refused."""
        with pytest.raises(ValueError, match="extension type 7"):
            unpackb(msgpack.packb(msgpack.ExtType(7, b"")))

    def test_decorator_needs_attrs(self):
        """wire_record refuses a class that is not an attrs class."""
        with pytest.raises(TypeError, match="attrs class"):
            wire_record(int)
