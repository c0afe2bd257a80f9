"""Protected procedure calls between nodes: one request, one reply.

Design
------
A remote PPC is a REQUEST frame ``[method, args]`` (msgpack) plus an optional
raw payload, answered by one REPLY (the result, msgpack; flag ``F_PAYLOAD``
when the result is a ``Payload`` whose bytes follow raw) or one ERROR frame
(the exception by name, its reduce arguments and the remote traceback).

Caller side.  The calling thread registers a ``PendingCall`` (a pre-acquired
lock and a result slot) in its connection's ``pending`` dict keyed by request
id, writes the frame with one ``sendall`` and blocks on the lock.  The
connection's reader thread pops the entry when the reply arrives, fills the
slot and releases the lock: one thread hop, the one that cannot be avoided
while another thread must keep reading the socket for incoming requests.

Target side.  The reader thread decodes the request and hands it to a pool
worker.  The pool grows on demand: a worker is started whenever none is idle,
so a handler that blocks on a third node never delays any other request
(Tornado's "a worker per call"; idle workers retire after ``IDLE_TIMEOUT``).

Failure.  A timeout raises ``PPCTimeout`` and forgets the call (a late reply
is dropped).  When a connection dies, its reader marks it closed and fails
every pending call at once with ``NodeLost``.  Registering a call and
checking ``closed`` happen in the opposite order to marking it closed and
draining ``pending``, so under the GIL no call can slip between the two and
wait forever.

Exceptions cross by name: builtin exception types and the ``tornado_dsm``
exceptions are rebuilt as themselves (from their ``__reduce__`` arguments);
anything else becomes ``RemoteError`` carrying the type name and traceback.
No pickle on this path: ``run_on`` pickles inside its own payload.
"""

from __future__ import annotations

import builtins
import itertools
import logging
import sys
import threading
import time
import traceback

import attrs
import msgpack

from ._errors import NodeLost, PPCTimeout
from ._ppc_stats import PPCCounters, PPCStatistics
from ._transport import ERROR, REPLY, REQUEST, Connection, FrameReader

log = logging.getLogger("tornado_dsm.ppc")

F_PAYLOAD = 1          # REPLY flag: the result is a Payload (value in body, bytes after)
IDLE_TIMEOUT = 60.0    # seconds an idle pool worker waits before it retires

_unpackb = msgpack.unpackb


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


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
        _pack(info["args"])
    except Exception:
        info["args"] = None
    state = reduced[2] if len(reduced) > 2 else None
    if isinstance(state, dict):
        try:
            _pack(state)
            info["state"] = state
        except Exception:
            pass
    return _pack(info)


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


# ---- the worker pool -------------------------------------------------------------

class _Worker:
    __slots__ = ("wake", "task")

    def __init__(self) -> None:
        self.wake = threading.Lock()
        self.wake.acquire()
        self.task = None


class WorkerPool:
    """Threads that run submitted tasks; a new thread starts whenever none is idle."""

    def __init__(self, name: str, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.name = name
        self.idle_timeout = idle_timeout
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._count = itertools.count(1)
        self.threads_started = 0

    def submit(self, fn, args: tuple) -> None:
        """Run ``fn(*args)`` on an idle worker, or on a new one if none is idle."""
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is not None:
            worker.task = (fn, args)
            worker.wake.release()
            return
        self.threads_started += 1
        t = threading.Thread(target=self._run, args=(_Worker(), (fn, args)),
                             name=f"{self.name}-{next(self._count)}", daemon=True)
        t.start()

    def _run(self, worker: _Worker, task) -> None:
        while task is not None:
            fn, args = task
            try:
                fn(*args)
            except BaseException:  # a task must never kill its worker silently
                log.exception("pool task %r failed", fn)
            task = worker.task = None
            del fn, args
            task = self._wait(worker)

    def _wait(self, worker: _Worker):
        """Park ``worker`` until a task comes (returns it) or it retires (None)."""
        with self._lock:
            self._idle.append(worker)
        if not worker.wake.acquire(timeout=self.idle_timeout):
            with self._lock:
                if worker in self._idle:
                    self._idle.remove(worker)
                    return None
            worker.wake.acquire()   # a submitter took us just now: its task is coming
        return worker.task

    def idle(self) -> int:
        """How many workers are parked."""
        return len(self._idle)


# ---- calls -------------------------------------------------------------------------

class PendingCall:
    """A remote call in flight; ``result(timeout)`` waits for its reply once."""

    __slots__ = ("conn", "rid", "node", "oid", "method", "sent", "t0", "_done",
                 "_value", "_error", "_counters", "_finished")

    def __init__(self, conn, rid, node, oid, method, counters) -> None:
        self.conn, self.rid, self.node, self.oid, self.method = conn, rid, node, oid, method
        self._counters = counters
        self._done = threading.Lock()
        self._done.acquire()
        self._value = self._error = None
        self._finished = False
        self.sent = 0
        self.t0 = 0.0

    def _complete(self, value, error, nbytes: int) -> None:
        """Called by whoever popped this call from ``pending`` (exactly once)."""
        self._value, self._error = value, error
        self.sent += nbytes
        self._done.release()

    def result(self, timeout: float | None = None):
        """The call's result; raises its exception, PPCTimeout or NodeLost."""
        if not self._finished:
            if not self._done.acquire(timeout=-1 if timeout is None else timeout):
                if self.conn.pending.pop(self.rid, None) is not None:
                    self._error = PPCTimeout(
                        f"PPC {self.method!r} on oid {self.oid:#x} at node {self.node} "
                        f"did not answer within {timeout} s")
                else:  # the reply (or NodeLost) is being delivered right now
                    self._done.acquire()
            self._finished = True
            self._counters.record(self.oid, self.method, True, self.sent,
                                  time.perf_counter() - self.t0)
        if self._error is not None:
            raise self._error
        return self._value


class PPCCore:
    """The messaging half of a node runtime: connections, calls, serving, counting.

    Subclasses provide ``node_id``, ``nnodes`` and ``_serve_service`` (oid 0)
    and may override ``_peer_lost``.
    """

    def __init__(self, node_id, max_frame: int, default_timeout: float | None) -> None:
        self.node_id = node_id
        self.max_frame = max_frame
        self.default_timeout = default_timeout
        self.pool = WorkerPool(f"ppc-node{node_id}")
        self.counters = PPCCounters()
        self._conns: dict[int, Connection] = {}
        self._conns_changed = threading.Condition()
        self._lost: dict[int, str] = {}
        self._rids = itertools.count(1)
        self._dispatcher = None

    # -- public API --

    def set_object_dispatcher(self, fn) -> None:
        """Serve every incoming request with oid != 0 by ``fn(oid, method, args, payload)``."""
        self._dispatcher = fn

    def record_ppc(self, oid: int, method: str, remote: bool, nbytes: int, seconds: float) -> None:
        """Count one PPC (the COS records its local calls here)."""
        self.counters.record(oid, method, remote, nbytes, seconds)

    def ppc_statistics(self) -> PPCStatistics:
        """A frozen snapshot of this node's PPC counters."""
        return self.counters.snapshot(self.node_id)

    def call(self, node: int, oid: int, method: str, args, payload=None, timeout=None):
        """Remote PPC: run ``method`` of ``oid`` on ``node`` and return its result.

        ``args`` and the result are msgpack-able; ``payload`` is raw bytes sent
        after the header; a ``Payload`` result arrives as a ``Payload``.  Raises
        PPCTimeout, NodeLost, or the remote exception.  ``timeout`` defaults to
        the runtime's (None: wait as long as the peer lives).
        """
        pending = self.call_async(node, oid, method, args, payload)
        return pending.result(self.default_timeout if timeout is None else timeout)

    def call_async(self, node: int, oid: int, method: str, args, payload=None) -> PendingCall:
        """Send a remote PPC and return at once; ``.result(timeout)`` waits for it."""
        conn = self._connection(node)
        body = _pack([method, args])
        rid = next(self._rids)
        pending = PendingCall(conn, rid, node, oid, method, self.counters)
        conn.pending[rid] = pending
        if conn.closed:        # see the module docstring: register, then check
            conn.pending.pop(rid, None)
            raise NodeLost(f"node {node} is lost: {self._lost.get(node, 'connection closed')}")
        pending.t0 = time.perf_counter()
        try:
            pending.sent = conn.send(REQUEST, rid, oid, body, payload)
        except OSError as e:
            conn.pending.pop(rid, None)
            raise NodeLost(f"node {node} is lost: send failed: {e}") from None
        except BaseException:
            conn.pending.pop(rid, None)
            raise
        return pending

    def _connection(self, node: int) -> Connection:
        conn = self._conns.get(node)
        if conn is not None:
            return conn
        if node == self.node_id:
            raise ValueError(f"call to node {node} is local: call the object directly "
                             f"(remote PPC needs another node, 0..{self.nnodes - 1})")
        if not isinstance(node, int) or not 0 <= node < (self.nnodes or 0):
            raise ValueError(f"no node {node!r}: nodes are 0..{(self.nnodes or 1) - 1}")
        raise NodeLost(f"node {node} is lost: {self._lost.get(node, 'not connected')}")

    # -- connections --

    def add_connection(self, conn: Connection, reader: FrameReader, peer: int) -> None:
        """Start serving authenticated ``conn`` to node ``peer`` (reader thread)."""
        conn.peer = peer
        conn.pending = {}
        with self._conns_changed:
            self._conns[peer] = conn
            self._conns_changed.notify_all()
        threading.Thread(target=self._read_loop, args=(conn, reader),
                         name=f"ppc-node{self.node_id}-reader-{peer}", daemon=True).start()

    def _read_loop(self, conn: Connection, reader: FrameReader) -> None:
        reason = "connection closed"
        try:
            self._read_frames(conn, reader)
        except (ConnectionError, OSError) as e:
            reason = str(e) or type(e).__name__
        except Exception as e:   # undecodable frame from an authenticated peer
            reason = f"protocol error: {type(e).__name__}: {e}"
            log.warning("node %s: dropping connection to node %s: %s", self.node_id, conn.peer, reason)
        finally:
            self._connection_lost(conn, reason)

    def _read_frames(self, conn: Connection, reader: FrameReader) -> None:
        pending = conn.pending
        submit = self.pool.submit
        while True:
            kind, flags, rid, oid, body, payload = reader.next()
            if kind == REQUEST:
                method, args = _unpackb(body)
                submit(self._serve, (conn, rid, oid, str(method), args, payload))
                continue
            # decode fully before popping: a popped call must always be completed
            value = _unpackb(body)
            if kind == REPLY:
                result, error = (Payload(payload, value) if flags & F_PAYLOAD else value), None
            elif kind == ERROR and isinstance(value, dict):
                result, error = None, decode_error(value, conn.peer)
            else:
                raise ValueError(f"unexpected frame kind {kind} on an open connection")
            call = pending.pop(rid, None)
            if call is None:
                log.debug("node %s: late reply %d from node %s dropped", self.node_id, rid, conn.peer)
                continue
            call._complete(result, error, len(body) + (len(payload) if payload is not None else 0))

    def _serve(self, conn: Connection, rid: int, oid: int, method: str, args, payload) -> None:
        """Run one request on this pool worker and send its reply."""
        try:
            if oid == 0:
                result = self._serve_service(conn, method, args, payload)
            elif self._dispatcher is None:
                raise RuntimeError(f"node {self.node_id} has no object dispatcher "
                                   f"(no clustered object system attached)")
            else:
                result = self._dispatcher(oid, method, args, payload)
            if isinstance(result, Payload):
                conn.send(REPLY, rid, oid, _pack(result.value), result.data, F_PAYLOAD)
            else:
                conn.send(REPLY, rid, oid, _pack(result))
        except BaseException as e:
            if conn.closed:
                return
            try:
                conn.send(ERROR, rid, oid, encode_error(e))
            except OSError:
                pass

    def _serve_service(self, conn, method, args, payload):
        raise NotImplementedError

    def _connection_lost(self, conn: Connection, reason: str) -> None:
        """Close ``conn`` and fail all its pending calls with NodeLost at once."""
        conn.close()
        peer = conn.peer
        with self._conns_changed:
            if self._conns.get(peer) is conn:
                del self._conns[peer]
                self._lost[peer] = reason
            self._conns_changed.notify_all()
        while True:
            try:
                _rid, call = conn.pending.popitem()
            except KeyError:
                break
            call._complete(None, NodeLost(f"node {peer} is lost: {reason}"), 0)
        self._peer_lost(peer, reason)

    def _peer_lost(self, peer: int, reason: str) -> None:
        """Hook: node ``peer`` is gone."""

    def connected_peers(self) -> list[int]:
        """The node ids this node has a live connection to."""
        return sorted(self._conns)
