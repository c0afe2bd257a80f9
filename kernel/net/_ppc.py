"""Protected procedure calls between nodes: one request, one reply.

Design
------
A remote PPC is a REQUEST frame ``[method, args]`` (msgpack) plus an optional
raw payload, answered by one REPLY (the result, msgpack; flag ``F_PAYLOAD``
when the result is a ``Payload`` whose bytes follow raw) or one ERROR frame
(the exception by name, its reduce arguments and the remote traceback).
Either direction, a wire record's long bytes field (a Grant's page) leaves
the body for the payload, ahead of any raw data (``_wire.pack_parts``).

The caller and target sides are the call and serve channels of
``_channel`` (one connection per ordered node pair; no thread hop on
either side when calls do not overlap).  Requests run on workers of a pool
that grows on demand: a worker is started whenever none is idle, so a handler
that blocks on a third node never delays any other request (idle workers
retire after ``IDLE_TIMEOUT``).  A request runs inline on the worker that
read it; the reading role moves to another worker when the handler may block
(see ``_channel``).  A timeout raises ``PPCTimeout`` and forgets
the call (a late reply is dropped); a peer that dies fails all its pending
calls at once with ``NodeLost``.  ``PPCCore.fan_out`` is the one way to call
several nodes at once (all requests sent first, this node's share run on the
calling thread): the node set, the COS and the Cluster API all use it.

Exceptions cross by name (``_wire``): builtin exception types and the ``tornado_dsm``
exceptions are rebuilt as themselves (from their ``__reduce__`` arguments);
anything else becomes ``RemoteError`` carrying the type name and traceback.
No pickle on this path: ``run_on`` pickles inside its own payload.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time

from ._channel import F_PAYLOAD, CallChannel, PendingCall, ServeChannel, before_blocking, monitor
from ._stats import PPCCounters, PPCStatistics
from ._transport import ERROR, REPLY, Connection, FrameReader
from ._wire import NodeLost, Payload, encode_error, pack_parts

log = logging.getLogger("tornado_dsm.ppc")

IDLE_TIMEOUT = 60.0    # seconds an idle pool worker waits before it retires


class _Lost:
    """The type of ``LOST``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LOST"


LOST = _Lost()   # a lost node's result in a fan-out that tolerates lost nodes


class _Failed:
    """One node's error in a fan-out, kept until every node has finished."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


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
        self.closed = False

    def submit(self, fn, args: tuple) -> None:
        """Run ``fn(*args)`` on an idle worker, or on a new one if none is idle."""
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is not None:
            worker.task = (fn, args)
            worker.wake.release()
            return
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
            if self.closed:
                return None
            self._idle.append(worker)
        if not worker.wake.acquire(timeout=self.idle_timeout):
            with self._lock:
                if worker in self._idle:
                    self._idle.remove(worker)
                    return None
            worker.wake.acquire()   # a submitter took us just now: its task is coming
        return worker.task

    def close(self) -> None:
        """Let every parked worker exit now; busy ones exit when their task ends."""
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.task = None
            worker.wake.release()


# ---- the messaging core ------------------------------------------------------------

class PPCCore:
    """The messaging half of a node runtime: channels, calls, serving, counting.

    Subclasses provide ``node_id``, ``nnodes`` and ``_serve_service`` (oid 0)
    and may override ``_announce_lost`` and extend ``_peer_lost``.
    """

    def __init__(self, node_id, max_frame: int, default_timeout: float | None) -> None:
        self.node_id = node_id
        self.max_frame = max_frame
        self.default_timeout = default_timeout
        self.pool = WorkerPool(f"ppc-node{node_id}")
        self.counters = PPCCounters()
        self._calls: dict[int, CallChannel] = {}
        self._serves: dict[int, ServeChannel] = {}
        self._changed = threading.Condition()
        self._lost: dict[int, str] = {}
        self._announcing: dict[int, int] = {}   # peer -> the thread announcing its loss now
        self._rids = itertools.count(1)
        self._dispatcher = None
        self.stopping = False
        self.closed_down = False   # stops the monitor thread
        self._monitor: threading.Thread | None = None

    # -- public API --

    def set_object_dispatcher(self, fn) -> None:
        """Serve every incoming request with oid != 0 by ``fn(oid, method, args, payload)``.

        ``fn`` runs on a pool worker; ``args`` is the decoded msgpack value
        (sequences as lists), ``payload`` a bytearray or None (a memoryview of
        the frame's payload when records' buffers travelled before it).  Its result
        (msgpack-able, or a ``Payload``) is the reply; its exception is
        re-raised in the caller.
        """
        self._dispatcher = fn

    def record_ppc(self, oid: int, method: str, remote: bool, nbytes: int, seconds: float) -> None:
        """Count one PPC (the COS records its local calls here)."""
        self.counters.record(oid, method, remote, nbytes, seconds)

    def ppc_statistics(self) -> PPCStatistics:
        """A frozen snapshot of this node's PPC counters."""
        return self.counters.snapshot(self.node_id)

    def call(self, node: int, oid: int, method: str, args, payload=None, timeout=None):
        """Remote PPC: run ``method`` of ``oid`` on ``node`` and return its result.

        ``args`` and the result are msgpack-able (sequences arrive as lists);
        ``payload`` is raw bytes sent after the header; a ``Payload`` result
        arrives as a ``Payload`` whose data is a bytearray.  Raises PPCTimeout,
        NodeLost, or the remote exception.  ``timeout`` defaults to the
        runtime's (None: wait as long as the peer lives).
        """
        call = self._channel(node).start(next(self._rids), oid, method, args, payload)
        return call.result(self.default_timeout if timeout is None else timeout)

    def call_async(self, node: int, oid: int, method: str, args, payload=None) -> PendingCall:
        """Send a remote PPC and return at once; ``.result(timeout)`` waits for it."""
        return self._channel(node).start(next(self._rids), oid, method, args, payload)

    def fan_out(self, nodes, oid: int, method: str, args=None, *, local=None, payload=None,
                reply=None, on_error=None, timeout: float | None = None,
                tolerate_lost: bool = False, return_errors: bool = False) -> list:
        """PPC ``method(args)`` on ``oid`` at every node of ``nodes`` at once; results in ``nodes`` order.

        The one parallel call of the kernel.  Contract:

        * every remote request is sent before any reply is awaited, so the
          nodes work in parallel and the whole costs about the slowest node;
        * this node's share (``node_id`` in ``nodes``) is ``local()``, run on
          the calling thread once the requests are out: no PPC, no thread hop
          (without ``local``, naming this node is a ValueError for it);
        * ``reply(node, value)``, if given, turns a remote reply into the
          result (e.g. unpickling); what it raises is that node's error;
        * ``timeout``: seconds from sending within which every reply must
          come (PPCTimeout for a late node); None waits as long as the
          targets live (pass ``default_timeout`` for the runtime's default);
        * ``tolerate_lost``: a node lost before or during the call gives
          ``LOST`` instead of an error;
        * every node is waited for, then the first error in ``nodes`` order
          is raised, as ``on_error(node, error)`` returns it when given
          (``return_errors``: every node's error is its result instead);
        * a node named twice is called twice (this node's share in turn).
        """
        nodes = tuple(nodes)
        mine = self.node_id if local is not None else None   # None: every node is called remotely
        calls = [None if n == mine else self._send(n, oid, method, args, payload) for n in nodes]
        deadline = None if timeout is None else time.monotonic() + timeout
        calls = [_attempt(local) if c is None else c for c in calls]
        outcomes = [_await(n, c, reply, deadline) for n, c in zip(nodes, calls)]
        if return_errors:
            return [o.error if isinstance(o, _Failed) else o for o in outcomes]
        return _results(nodes, outcomes, on_error, tolerate_lost)

    def _send(self, node: int, oid: int, method: str, args, payload):
        """Start one call of a fan-out; an error sending is that node's outcome."""
        try:
            return self.call_async(node, oid, method, args, payload)
        except Exception as e:  # noqa: BLE001 -- raised after every node has finished
            return _Failed(e)

    def _channel(self, node: int) -> CallChannel:
        channel = self._calls.get(node)
        if channel is not None:
            return channel
        if node == self.node_id:
            raise ValueError(f"call to node {node} is local: call the object directly "
                             f"(remote PPC needs another node of 0..{self.nnodes - 1})")
        if not isinstance(node, int) or self.nnodes is None or not 0 <= node < self.nnodes:
            raise ValueError(f"no node {node!r}: nodes are 0..{(self.nnodes or 1) - 1}")
        raise NodeLost(f"node {node} is lost: {self._lost.get(node, 'not connected')}")

    def connected_peers(self) -> list[int]:
        """The node ids this node can call."""
        return sorted(self._calls)

    # -- channels --

    def add_call_channel(self, conn: Connection, reader: FrameReader, peer: int) -> None:
        """Use ``conn`` (dialed by us, authenticated) for our calls to ``peer``."""
        with self._changed:
            self._calls[peer] = CallChannel(self, conn, reader, peer)
            self._changed.notify_all()

    def add_serve_channel(self, conn: Connection, reader: FrameReader, peer: int) -> None:
        """Serve ``peer``'s calls arriving on ``conn`` (dialed by it, authenticated)."""
        channel = ServeChannel(self, conn, reader, peer)
        with self._changed:
            self._serves[peer] = channel
            self._changed.notify_all()
            if self._monitor is None:
                self._monitor = threading.Thread(target=monitor, args=(self,), daemon=True,
                                                 name=f"ppc-node{self.node_id}-monitor")
                self._monitor.start()
        channel.start()

    def serve(self, conn: Connection, rid: int, oid: int, method: str, args, payload) -> None:
        """Run one request in this thread and send its reply (or its exception)."""
        try:
            if oid == 0:
                result = self._serve_service(conn, method, args, payload)
            elif self._dispatcher is None:
                raise RuntimeError(f"node {self.node_id} has no object dispatcher "
                                   f"(no clustered object system attached)")
            else:
                result = self._dispatcher(oid, method, args, payload)
            if isinstance(result, Payload):   # its records' buffers first, its data after
                body, parts = pack_parts(result.value)
                if result.data is not None:
                    parts.append(result.data)
                conn.send(REPLY, rid, oid, body, parts, F_PAYLOAD)
            else:
                body, parts = pack_parts(result)
                conn.send(REPLY, rid, oid, body, parts)
        except BaseException as e:
            if conn.closed:
                return
            try:
                conn.send(ERROR, rid, oid, encode_error(e))
            except OSError:
                pass

    def _serve_service(self, conn, method, args, payload):
        raise NotImplementedError

    before_blocking = staticmethod(before_blocking)

    def _peer_lost(self, peer: int, reason: str) -> bool:
        """Forget ``peer``: announce the loss, then close both its channels and
        fail its calls.  True the first time.  The loss is announced before any
        of the peer's calls fails, and a later report of the same loss (the
        other channel's reader) waits for the announcement: so a thread that
        sees a call fail with NodeLost also sees what the listeners did."""
        with self._changed:
            call, serve = self._calls.pop(peer, None), self._serves.pop(peer, None)
            first = peer not in self._lost and (call is not None or serve is not None)
            if first:
                self._lost[peer] = reason
                self._announcing[peer] = threading.get_ident()
            self._changed.notify_all()
        if first:
            self._announce_once(peer, reason)
        else:
            self._await_announcement(peer)
        if call is not None:
            call.abort(reason)
        if serve is not None:
            serve.abort(reason)
        return first

    def _announce_once(self, peer: int, reason: str) -> None:
        """Run ``_announce_lost``, then let the threads waiting for it go on."""
        try:
            self._announce_lost(peer, reason)
        finally:
            with self._changed:
                del self._announcing[peer]
                self._changed.notify_all()

    def _await_announcement(self, peer: int) -> None:
        """Wait while another thread announces the loss of ``peer``."""
        with self._changed:
            while self._announcing.get(peer, threading.get_ident()) != threading.get_ident():
                self._changed.wait()

    def _announce_lost(self, peer: int, reason: str) -> None:
        """Tell whoever listens that ``peer`` is lost (once, before its calls fail)."""

    def close_channels(self) -> None:
        """Close every channel (their pending calls fail with NodeLost)."""
        self.closed_down = True
        self.pool.close()
        for peer in set(self._calls) | set(self._serves):
            self._peer_lost(peer, "this node is stopping")


def _attempt(fn):
    """``fn()``, or its error kept as a ``_Failed``."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 -- raised after every node has finished
        return _Failed(e)


def _await(node: int, call, reply, deadline: float | None):
    """The outcome of one fan-out call: its (converted) reply or its error."""
    if not isinstance(call, PendingCall):
        return call   # this node's share, or a send that failed
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    return _attempt(lambda: call.result(left) if reply is None else reply(node, call.result(left)))


def _results(nodes: tuple, outcomes: list, on_error, tolerate_lost: bool) -> list:
    """The fan-out's results, or its first error in node order."""
    for i, (node, out) in enumerate(zip(nodes, outcomes)):
        if isinstance(out, _Failed):
            if tolerate_lost and isinstance(out.error, NodeLost):
                outcomes[i] = LOST
            else:
                raise out.error if on_error is None else on_error(node, out.error)
    return outcomes


__all__ = ["LOST", "PPCCore", "PendingCall", "WorkerPool"]
