"""Message bodies: msgpack values and wire records (kernel/net/_wire.py)."""

from __future__ import annotations

import os

import attrs
import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tornado_dsm.kernel import wire_record
from tornado_dsm.kernel.net._wire import OOB_MIN, RECORD, pack, pack_parts, unpack_parts, unpackb


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


class TestOutOfBand:
    def test_long_field_leaves_the_body(self):
        """A record's long bytes field travels beside the body, as the very object (no copy)."""
        data = os.urandom(4096)
        body, parts = pack_parts([Pair(data, 3), 7])
        assert len(body) < 100 and len(parts) == 1 and parts[0] is data

    def test_round_trip_as_views_of_the_payload(self):
        """Each buffer comes back intact as a view of the received payload, in order."""
        a, b = os.urandom(OOB_MIN), os.urandom(5000)
        body, parts = pack_parts({"x": Pair(a, Pair(b))})
        payload = bytearray(b"".join(parts))
        value, data = unpack_parts(body, payload)
        inner = value["x"]
        assert bytes(inner.data) == a and bytes(inner.inner.data) == b and data is None
        assert inner.data.obj is payload and inner.inner.data.obj is payload

    def test_short_field_stays_inline(self):
        """A field shorter than OOB_MIN is packed in the body as before."""
        body, parts = pack_parts(Pair(b"x" * (OOB_MIN - 1)))
        assert parts == [] and unpackb(body) == Pair(b"x" * (OOB_MIN - 1))

    def test_only_bytes_annotated_fields_leave(self):
        """A long bytes value in a field not annotated bytes-like stays in the body."""
        data = os.urandom(4096)
        body, parts = pack_parts(Pair(b"", data))
        assert parts == [] and len(body) > 4096 and unpack_parts(body, None)[0] == Pair(b"", data)

    def test_raw_data_follows_the_buffers(self):
        """A message's own raw data after the buffers comes back as the data part."""
        page = os.urandom(4096)
        body, parts = pack_parts([Pair(page)])
        value, data = unpack_parts(body, bytearray(page + b"tail"))
        assert bytes(value[0].data) == page and bytes(data) == b"tail"

    def test_reference_beyond_the_payload_refused(self):
        """An OOB reference past the payload's end is a clear error, not a short read."""
        body, parts = pack_parts(Pair(os.urandom(2048)))
        with pytest.raises(ValueError, match="beyond the 100-byte payload"):
            unpack_parts(body, bytearray(100))
        assert len(body) < 200 and bytes(unpack_parts(body, bytearray(b"".join(parts)))[0].data) == parts[0]

    def test_reference_without_payload_refused(self):
        """A body naming an OOB buffer in a frame without payload is refused."""
        body, _parts = pack_parts(Pair(os.urandom(2048)))
        with pytest.raises(ValueError, match="carries no payload"):
            unpackb(body)

    def test_plain_pack_keeps_fields_inline(self):
        """Outside pack_parts (a body with no payload) a long field stays in the body."""
        data = os.urandom(4096)
        assert unpackb(pack(Pair(data))) == Pair(data)
