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

The net layer's expected failures live here too: ``NodeLost`` and
``PPCTimeout``.
"""

from __future__ import annotations

import builtins
import functools
import sys
import threading
import traceback

import attrs
import msgpack

_tls = threading.local()   # .pack: this thread's Packer
RECORD = 1                 # msgpack extension type code of a wire record
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
    _records[cls.__wire_name__] = cls
    return cls


def _default(obj):
    """msgpack's hook for values it does not know: wire records, else TypeError."""
    cls = type(obj)
    name = getattr(cls, "__wire_name__", None)
    if name is None:
        raise TypeError(f"cannot send a {cls.__qualname__} in a PPC (not msgpack-able, not a wire_record)")
    # a fresh Packer: this thread's own is busy packing the message around the record
    body = [name, [getattr(obj, f) for f in cls.__wire_fields__]]
    return msgpack.ExtType(RECORD, msgpack.packb(body, use_bin_type=True, default=_default))


def _ext_hook(code: int, data: bytes):
    """Rebuild a wire record; any other extension value is refused."""
    if code != RECORD:
        raise ValueError(f"unknown msgpack extension type {code} in a message")
    name, fields = unpackb(data)
    cls = _records.get(name)
    if cls is None:
        raise ValueError(f"message holds a {name!r} record, not a registered wire_record")
    return cls(*fields)


# Decode a msgpack body (wire records rebuilt as their classes).
unpackb = functools.partial(msgpack.unpackb, ext_hook=_ext_hook)


def pack(obj) -> bytes:
    """msgpack ``obj`` with this thread's Packer."""
    packer = getattr(_tls, "pack", None)
    if packer is None:
        packer = _tls.pack = msgpack.Packer(use_bin_type=True, autoreset=True, default=_default).pack
    return packer(obj)


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
