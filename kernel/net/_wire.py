"""What a message carries: msgpack bodies, raw payloads and exceptions by name.

A REQUEST body is ``[method, args]`` and a REPLY body the result, packed
with msgpack (``pack``: one Packer per thread, ``msgpack.packb`` would build
one per call).  Raw bytes travel after the body as a ``Payload``.  A frozen
attrs class registered with ``wire_record`` (a Grant, an object's
statistics) travels as itself: an extension value holding its registered
name and its fields in order, rebuilt on arrival by calling the class, so a
method returns the same type whether it was called locally or remotely.  An ERROR
body names the exception: builtin types and the ``tornado_dsm`` exceptions
are rebuilt as themselves from their ``__reduce__`` arguments, anything else
becomes ``RemoteError`` carrying the type name and traceback.  Decoding
never runs code and never imports a module on request.

Out-of-band buffers: a record's bytes field (one annotated bytes-like) of
at least ``OOB_MIN`` bytes (a Grant's page) is not copied into the msgpack body.  ``pack_parts`` names
it in the record's body by (field, offset, length) instead and returns the
buffer itself beside the body, to travel raw in the frame's payload
(gathered by ``sendmsg``, no encoding copy); ``unpack_parts`` rebuilds the
field as a memoryview of the received payload (no decoding copy).  Buffers
come first in the payload, a message's own raw data (``Payload``) after.

The net layer's expected failures live here too: ``NodeLost`` and
``PPCTimeout``.
"""

from __future__ import annotations

import builtins
import functools
import operator
import sys
import threading
import traceback

import attrs
import msgpack



class _ThreadState(threading.local):
    """Per thread: its Packers (made at first use), and the out-of-band state of
    the message it packs (``oob``, ``oob_at``) or decodes (``rx``, ``rx_end``)."""

    pack = nested = oob = rx = None
    nesting = False
    oob_at = rx_end = 0


_tls = _ThreadState()
RECORD = 1                 # msgpack extension type code of a wire record
OOB_MIN = 1024             # a record's bytes field this long or longer travels out of band
_records: dict[str, type] = {}


def wire_record(cls: type) -> type:
    """Class decorator: instances of the frozen attrs class ``cls`` may travel
    in PPC arguments and results.  Registered by ``module:qualname``; the
    receiving node must have imported the class (it is never imported on
    request)."""
    if not attrs.has(cls):
        raise TypeError(f"wire_record needs an attrs class, not {cls!r}")
    cls.__wire_name__ = f"{cls.__module__}:{cls.__qualname__}"
    cls.__wire_fields__ = tuple(f.name for f in attrs.fields(cls))
    # bound once, the record's hot path: its fields as a tuple, and its packed
    # name, so only the fields pack per call
    getter = operator.attrgetter(*cls.__wire_fields__)
    cls.__wire_get__ = getter if len(cls.__wire_fields__) > 1 else lambda obj: (getter(obj),)
    cls.__wire_name_packed__ = msgpack.packb(cls.__wire_name__, use_bin_type=True)
    # the fields that may travel out of band: those annotated bytes-like
    cls.__wire_buffers__ = tuple(i for i, f in enumerate(attrs.fields(cls))
                                 if any(t in str(f.type) for t in ("bytes", "bytearray", "memoryview")))
    _records[cls.__wire_name__] = cls
    return cls


def _default(obj):
    """msgpack's hook for values it does not know: wire records, else TypeError.
    A record's body is [name, fields], or [name, fields, [[field, offset,
    length], ...]] when some of its fields went out of band (see pack_parts)."""
    cls = type(obj)
    name = getattr(cls, "__wire_name_packed__", None)
    if name is None:
        raise TypeError(f"cannot send a {cls.__qualname__} in a PPC (not msgpack-able, not a wire_record)")
    fields = cls.__wire_get__(obj)
    if cls.__wire_buffers__ and _tls.oob is not None:
        fields, refs = _out_of_band(fields, cls.__wire_buffers__)
        if refs:   # [name, fields, refs]: the packed pair (fields, refs) minus its array header
            return _ext(RECORD, b"\x93" + name + _pack_nested((fields, refs))[1:])
    return _ext(RECORD, b"\x92" + name + _pack_nested(fields))


_BUFFERS = (bytes, bytearray, memoryview)


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    """An ExtType built without its constructor's Python-level checks (ours are valid)."""
    return tuple.__new__(msgpack.ExtType, (code, data))


def _out_of_band(fields: tuple, buffers: tuple) -> tuple:
    """Move the long bytes-like values among ``fields[i]``, i in ``buffers``, to
    this thread's out-of-band buffers (see pack_parts): (the fields, None in
    their places; the [field index, offset, length] of each, None if none moved)."""
    refs = None
    for i in buffers:
        value = fields[i]
        if type(value) not in _BUFFERS:
            continue
        view = memoryview(value).cast("B") if type(value) is memoryview else value
        if len(view) < OOB_MIN:
            continue
        if refs is None:
            refs, fields = [], list(fields)
        _tls.oob.append(view)
        refs.append((i, _tls.oob_at, len(view)))
        _tls.oob_at += len(view)
        fields[i] = None
    return fields, refs


def _pack_nested(value) -> bytes:
    """msgpack a record's body: this thread's second Packer (its first is busy
    packing the message around the record), a fresh one for a record inside a record."""
    if _tls.nesting:
        return msgpack.packb(value, use_bin_type=True, default=_default)
    packer = _tls.nested
    if packer is None:
        packer = _tls.nested = msgpack.Packer(use_bin_type=True, autoreset=True, default=_default).pack
    _tls.nesting = True
    try:
        return packer(value)
    finally:
        _tls.nesting = False


def _ext_hook(code: int, data: bytes):
    """Rebuild a wire record (its out-of-band fields as views of the payload
    being decoded, see unpack_parts); any other extension value is refused."""
    if code != RECORD:
        raise ValueError(f"unknown msgpack extension type {code} in a message")
    body = unpackb(data)
    name, fields = body[0], body[1]
    cls = _records.get(name)
    if cls is None:
        raise ValueError(f"message holds a {name!r} record, not a registered wire_record")
    if len(body) > 2:
        _in_band(fields, body[2])
    return cls(*fields)


def _in_band(fields: list, refs) -> None:
    """Put the payload's slices that ``refs`` name into ``fields`` (bounds checked)."""
    rx = _tls.rx
    if rx is None:
        raise ValueError("message refers to an out-of-band buffer but carries no payload")
    for i, at, n in refs:
        if not 0 <= at <= at + n <= len(rx) or not 0 <= i < len(fields):
            raise ValueError(f"out-of-band buffer [{at}, {at + n}) of field {i} beyond the "
                             f"{len(rx)}-byte payload or the record")
        fields[i] = rx[at:at + n]
        if at + n > _tls.rx_end:
            _tls.rx_end = at + n


# Decode a msgpack body (wire records rebuilt as their classes).
unpackb = functools.partial(msgpack.unpackb, ext_hook=_ext_hook)


def pack(obj) -> bytes:
    """msgpack ``obj`` with this thread's Packer."""
    return (_tls.pack or _new_packer())(obj)


def _new_packer():
    """This thread's Packer's ``pack``, made at its first message."""
    packer = _tls.pack = msgpack.Packer(use_bin_type=True, autoreset=True, default=_default).pack
    return packer


def pack_parts(obj) -> tuple[bytes, list]:
    """msgpack ``obj`` with its records' long buffers out of band: (body, buffers).

    The buffers travel first in the frame's payload, in order; the body
    refers to them by offset (``unpack_parts`` undoes it)."""
    tls = _tls
    packer = tls.pack or _new_packer()
    tls.oob, tls.oob_at = (oob := []), 0
    try:
        return packer(obj), oob
    finally:
        tls.oob = None


def unpack_parts(body, payload) -> tuple:
    """Decode a body packed by ``pack_parts`` whose frame brought ``payload``
    (None: none): (value, the raw data after its buffers, None if none).
    Buffers come back as memoryviews of ``payload``: no copy."""
    if payload is None:
        return unpackb(body), None
    _tls.rx, _tls.rx_end = memoryview(payload), 0
    try:
        value = unpackb(body)
        end = _tls.rx_end
    finally:
        _tls.rx = None
    if end == 0:
        return value, payload
    return value, (memoryview(payload)[end:] if end < len(payload) else None)


class PPCTimeout(TimeoutError):
    """A remote protected procedure call did not answer in time."""


class NodeLost(ConnectionError):
    """A node died or disconnected; every call pending on it fails with this."""


@attrs.frozen
class Payload:
    """Raw bytes travelling after a PPC's header, with an optional msgpack value.

    Return ``Payload(data, value)`` from a dispatcher to reply with raw bytes;
    ``call`` then returns a ``Payload`` whose ``data`` is a ``bytearray``.
    """

    data: object
    value: object = None


class RemoteError(RuntimeError):
    """An exception of a type that cannot be rebuilt on the caller's node.

    Fields: ``type_name`` (module-qualified), ``message``, ``remote_traceback``
    (text), ``node`` (where it was raised).
    """

    def __init__(self, type_name: str, message: str, remote_traceback: str, node: int) -> None:
        super().__init__(f"{type_name}: {message} (raised on node {node})")
        self.type_name = type_name
        self.message = message
        self.remote_traceback = remote_traceback
        self.node = node

    def __reduce__(self):
        return (RemoteError, (self.type_name, self.message, self.remote_traceback, self.node))


# ---- exceptions by name ----------------------------------------------------------

def encode_error(exc: BaseException) -> bytes:
    """The ERROR body of ``exc``: type, message, rebuild arguments, traceback."""
    cls = type(exc)
    tb = "".join(traceback.format_exception(exc))
    reduced = exc.__reduce__()
    info = {"module": cls.__module__, "name": cls.__name__, "message": str(exc),
            "traceback": tb, "args": None, "state": None}
    try:
        info["args"] = list(reduced[1])
        pack(info["args"])
    except Exception:
        info["args"] = None
    state = reduced[2] if len(reduced) > 2 else None
    if isinstance(state, dict):
        try:
            pack(state)
            info["state"] = state
        except Exception:
            pass
    return pack(info)


def _lookup(module: str, name: str):
    """The exception class a name refers to, among the types we rebuild."""
    if module == "builtins":
        cls = getattr(builtins, name, None)
    elif module == "tornado_dsm" or module.startswith("tornado_dsm."):
        cls = getattr(sys.modules.get(module), name, None)   # never import on request
    else:
        cls = None
    if isinstance(cls, type) and issubclass(cls, Exception):
        return cls
    return None


def decode_error(info: dict, node: int) -> BaseException:
    """Rebuild the exception an ERROR body describes, with the remote traceback as a note."""
    cls = _lookup(str(info.get("module")), str(info.get("name")))
    exc = None
    if cls is not None and info.get("args") is not None:
        try:
            exc = cls(*info["args"])
            if info.get("state"):
                exc.__dict__.update(info["state"])
        except Exception:
            exc = None
    if exc is None:
        exc = RemoteError(f"{info.get('module')}.{info.get('name')}", str(info.get("message")),
                          str(info.get("traceback")), node)
    exc.add_note(f"--- remote traceback (node {node}) ---\n{info.get('traceback')}")
    return exc
