"""The runtime of one node process: its connections, the node service, stopping.

A ``NodeRuntime`` is a PPC core (``_ppc``) with a node id: it listens and
admits authenticated peers (HELLO names the peer; node 0 assigns ids to
joiners), dials the others, serves oid 0 (the node service below) and
notifies listeners when a peer is lost.  Start-up and shutdown of a whole
cluster are in ``_startup``.

oid 0 is the node service: register, ready, run_on (pickle, allowed only on
authenticated connections and only inside its payload), ping, quiesce,
shutdown, stats.
"""

from __future__ import annotations

import logging
import pickle
import socket
import threading
import traceback

from ._ppc import PPCCore
from ._stats import to_wire
from ._wire import Payload, decode_error, encode_error, pack, unpackb
from ._transport import (DEFAULT_MAX_FRAME, HELLO, Connection,
                         FrameReader, check_key, connect, handshake_accept, listen,
                         local_address)

log = logging.getLogger("tornado_dsm.node")

EXIT_GRACE = 5.0   # seconds a stopping node may take before it is forced out

_current = None


def current_runtime():
    """This process's ``NodeRuntime``, or None outside a cluster."""
    return _current


def _set_current(rt) -> None:
    global _current
    _current = rt


class NodeStartupError(RuntimeError):
    """A node failed to start; ``node`` is its id, ``remote_traceback`` its traceback text."""

    def __init__(self, node, reason: str, remote_traceback: str = "") -> None:
        text = f"node {node} failed to start: {reason}"
        if remote_traceback:
            text += f"\n--- traceback on node {node} ---\n{remote_traceback}"
        super().__init__(text)
        self.node = node
        self.reason = reason
        self.remote_traceback = remote_traceback


class NodeRuntime(PPCCore):
    """The runtime of one node process: its id, its connections, its PPC endpoint.

    Public: ``node_id``, ``nnodes``, ``call``, ``call_async``,
    ``set_object_dispatcher``, ``record_ppc``, ``ppc_statistics``,
    ``add_node_lost_listener``; ``cos`` once the COS is attached.
    """

    def __init__(self, node_id, nnodes, key: bytes, max_frame: int = DEFAULT_MAX_FRAME,
                 timeout: float | None = None) -> None:
        super().__init__(node_id, max_frame, timeout)
        self.nnodes = nnodes
        self.key = check_key(key)
        self.cos = None
        self.listener: socket.socket | None = None
        self.address = None
        self.stopping = False
        self.stopped = threading.Event()
        self._lost_listeners: list = []
        self._registrar = None   # node 0 only: the start-up bookkeeping
        self.describe_loss = None   # node 0: fn(peer) -> how its process ended ("" if unknown)
        self.node0_lost = False     # not node 0: node 0 went away without closing the cluster
        self.registered = threading.Event()   # node_id and nnodes are known
        if nnodes is not None:
            self.registered.set()

    def __repr__(self) -> str:
        return f"<NodeRuntime node {self.node_id} of {self.nnodes}>"

    def add_node_lost_listener(self, fn) -> None:
        """Call ``fn(node, reason)`` (on a reader thread) whenever a peer is lost,
        before any call pending on that peer fails with NodeLost."""
        self._lost_listeners.append(fn)

    # -- listening --

    def start_listening(self, address) -> None:
        """Listen on ``address`` (Unix path or (host, port)) and accept peers."""
        self.listener = listen(address)
        self.address = local_address(self.listener)
        threading.Thread(target=self._accept_loop, name=f"node{self.node_id}-accept",
                         daemon=True).start()

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except OSError:
                return   # listener closed
            threading.Thread(target=self._admit, args=(sock, peer),
                             name=f"node{self.node_id}-admit", daemon=True).start()

    def _admit(self, sock: socket.socket, peer) -> None:
        """Authenticate a new connection and read its HELLO; drop it on any failure."""
        who = peer or "unix peer"
        try:
            handshake_accept(sock, self.key)
            reader = FrameReader(sock, self.max_frame)
            sock.settimeout(5.0)
            kind, _f, _r, _o, body, payload = reader.next()
            sock.settimeout(None)
            if kind != HELLO or payload is not None:
                raise ConnectionError(f"first frame is kind {kind}, expected HELLO")
            hello = unpackb(body)
            if not self.registered.wait(60.0):   # a peer may dial before our directory came
                raise ConnectionError("this node never registered")
            node = self._hello_node(hello)
        except (ConnectionError, OSError, ValueError, TypeError) as e:
            log.warning("node %s: dropped connection from %s: %s: %s",
                        self.node_id, who, type(e).__name__, e)
            sock.close()
            return
        except Exception as e:   # msgpack errors on garbage after a valid handshake
            log.warning("node %s: dropped connection from %s: undecodable HELLO: %s",
                        self.node_id, who, e)
            sock.close()
            return
        self.add_serve_channel(Connection(sock, self.max_frame), reader, node)

    def _hello_node(self, hello) -> int:
        """The peer id a HELLO claims, checked (node 0 assigns ids to joiners)."""
        node = hello.get("node") if isinstance(hello, dict) else "?"
        if node is None and self._registrar is not None:
            node = self._registrar.assign_joiner()
        if not isinstance(node, int) or not 0 <= node < self.nnodes or node == self.node_id:
            raise ValueError(f"HELLO names node {node!r}; this cluster has nodes 0..{self.nnodes - 1}")
        if node in self._serves:
            raise ValueError(f"HELLO names node {node}, which is already connected")
        return node

    def dial(self, node: int, address) -> None:
        """Connect to ``node`` at ``address``, authenticate and say HELLO."""
        sock = connect(address, self.key)
        conn = Connection(sock, self.max_frame)
        conn.send(HELLO, 0, 0, pack({"node": self.node_id}))
        self.add_call_channel(conn, FrameReader(sock, self.max_frame), node)

    def wait_connected(self, timeout: float) -> None:
        """Block until connected to every other node (TimeoutError otherwise)."""
        want = set(range(self.nnodes)) - {self.node_id}
        with self._changed:
            if not self._changed.wait_for(
                    lambda: (want <= set(self._calls) and want <= set(self._serves)) or self.stopping,
                    timeout):
                missing = sorted(want - (set(self._calls) & set(self._serves)))
                raise TimeoutError(f"node {self.node_id}: no connection from nodes {missing} "
                                   f"within {timeout} s")

    # -- the node service (oid 0) --

    def _serve_service(self, conn, method, args, payload):
        handler = _SERVICE.get(method)
        if handler is None:
            raise ValueError(f"node service has no method {method!r}; "
                             f"methods: {', '.join(sorted(_SERVICE))}")
        return handler(self, conn, args, payload)

    def _announce_lost(self, peer: int, reason: str) -> None:
        """Log the loss and call the node-lost listeners (before the peer's calls fail)."""
        if self.stopping:
            log.debug("node %s: node %s disconnected while stopping", self.node_id, peer)
        else:
            log.warning("node %s: lost node %s: %s", self.node_id, peer, reason)
        for fn in list(self._lost_listeners):
            try:
                fn(peer, reason)
            except Exception:
                log.exception("node-lost listener %r failed", fn)

    def _peer_lost(self, peer: int, reason: str) -> bool:
        if self.describe_loss is not None and not self.stopping and peer not in self._lost:
            detail = self.describe_loss(peer)   # the process's end, read before anyone is told
            reason = f"{reason}; {detail}" if detail else reason
        if not super()._peer_lost(peer, reason):
            return False
        if peer == 0 and self.node_id != 0:
            self.node0_lost = not self.stopping
            self.stop()   # node 0 is gone: the cluster is over
        return True

    def lost_peers(self) -> dict:
        """{node: reason} of every peer lost so far (empty while none is)."""
        with self._changed:
            return dict(self._lost)

    # -- stopping --

    def stop(self) -> None:
        """Stop accepting and serving; close every connection (idempotent)."""
        self.stopping = True
        if self.listener is not None:
            try:   # shutdown wakes the accept thread (close alone does not on Linux)
                self.listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.listener.close()
        self.close_channels()
        self.stopped.set()


# ---- service methods ---------------------------------------------------------------

def _svc_ping(rt, conn, args, payload):
    return rt.node_id


def _svc_run_on(rt, conn, args, payload):
    """Run a pickled (fn, args) here; the reply pickles ("ok", result) or ("err", ...)."""
    fn, fargs = pickle.loads(payload)
    try:
        result = ("ok", fn(*fargs))
    except Exception as e:
        result = ("err", e, "".join(traceback.format_exception(e)))
    try:
        return Payload(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception as e:   # an unpicklable result or exception: send it by name
        exc = result[1] if result[0] == "err" else e
        return Payload(pickle.dumps(("err-by-name", encode_error(exc))))


def _svc_quiesce(rt, conn, args, payload):
    rt.stopping = True   # peers disconnecting from now on are expected


def _svc_shutdown(rt, conn, args, payload):
    # No reply: the caller (node 0, closing) sees this node's channels close.
    rt.stop()


def _svc_register(rt, conn, args, payload):
    return rt._registrar.register(conn.peer, args)


def _svc_ready(rt, conn, args, payload):
    rt._registrar.ready(conn.peer, args)


def _svc_stats(rt, conn, args, payload):
    return to_wire(rt.ppc_statistics())


_SERVICE = {
    "ping": _svc_ping, "run_on": _svc_run_on, "quiesce": _svc_quiesce,
    "shutdown": _svc_shutdown, "register": _svc_register, "ready": _svc_ready,
    "stats": _svc_stats,
}


def unpack_run_on(node: int, reply: Payload):
    """The result of a run_on reply, or raise its exception with the remote traceback."""
    status, *rest = pickle.loads(reply.data)
    if status == "ok":
        return rest[0]
    if status == "err-by-name":
        raise decode_error(unpackb(rest[0]), node)
    exc, tb = rest
    exc.add_note(f"--- remote traceback (node {node}) ---\n{tb}")
    raise exc


__all__ = ["NodeRuntime", "NodeStartupError", "current_runtime", "unpack_run_on"]
