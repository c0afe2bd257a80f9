"""The runtime of one node process: its connections, the node service, stopping.

A ``NodeRuntime`` is a PPC core (``_ppc``) with a node id: it listens and
admits authenticated peers (HELLO names the peer; node 0 assigns ids to
joiners), dials the others, serves oid 0 (the node service below) and
notifies listeners when a peer is lost.  Start-up and shutdown of a whole
cluster are in ``_startup``.

oid 0 is the node service: register, ready, run_on (pickle, allowed only on
authenticated connections and only inside its payload), ping, quiesce,
shutdown, stats.

Admission is bounded: at most MAX_PENDING_HANDSHAKES accepted connections may
be unauthenticated at once (more are closed on arrival), each gets one deadline
for the handshake and its HELLO together, and a failing accept (out of file
descriptors, say) backs off and retries instead of ending the accept loop.
"""

from __future__ import annotations

import errno
import logging
import pickle
import socket
import threading
import traceback

from ._ppc import PPCCore
from ._stats import to_wire
from ._wire import Payload, decode_error, encode_error, pack, unpackb
from ._transport import (DEFAULT_MAX_FRAME, HELLO, Connection,
                         FrameReader, check_key, connect, handshake_accept,
                         handshake_deadline, listen, local_address)

log = logging.getLogger("tornado_dsm.node")

EXIT_GRACE = 5.0   # seconds a stopping node may take before it is forced out

# Connections accepted but not yet authenticated (each holds a thread and an fd
# for up to HANDSHAKE_TIMEOUT); beyond this many, new ones are closed at once.
MAX_PENDING_HANDSHAKES = 64

# After a failed accept (out of fds or buffers, an aborted connection) the
# accept loop waits this long before trying again, doubling up to the cap.
ACCEPT_BACKOFF_MIN = 0.01
ACCEPT_BACKOFF_MAX = 1.0

# What accept reports on a listener that stop() (or someone) closed.
_LISTENER_GONE = frozenset((errno.EBADF, errno.EINVAL, errno.ENOTSOCK))

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
        self._pending_lock = threading.Lock()
        self.pending_handshakes = 0   # admit threads not yet past HELLO
        self._cap_warned = False      # the at-cap warning was logged for this burst
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

    # Contract: accepts until the listener is closed and only then returns
    # (quietly when stop() closed it).  Any other accept failure -- EMFILE,
    # ENFILE, ENOBUFS, ENOMEM, ECONNABORTED, ... -- is transient: warn once per
    # burst of failures and retry after a back-off, since returning would leave
    # the node deaf for ever while its listener still queues connections.
    def _accept_loop(self) -> None:
        delay = 0.0   # 0: the last accept succeeded (no burst in progress)
        while True:
            try:
                sock, peer = self.listener.accept()
            except OSError as e:
                if e.errno in _LISTENER_GONE or self.listener.fileno() < 0:
                    self._listener_gone(e)
                    return
                delay = self._accept_failed(e, delay)
                continue
            delay = 0.0
            self._dispatch(sock, peer)

    # Contract: called after a failed accept with the delay of the previous
    # failure (0 for the first of a burst); logs the first, sleeps, and returns
    # the delay to use next.  Sleeping on ``stopped`` lets stop() cut it short.
    def _accept_failed(self, e: OSError, delay: float) -> float:
        if delay == 0.0:
            name = errno.errorcode.get(e.errno, str(e.errno))
            log.warning("node %s: accept failed with %s (%s); backing off (%g s doubling "
                        "to %g s) until it succeeds", self.node_id, name, e.strerror,
                        ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX)
        delay = min(max(2 * delay, ACCEPT_BACKOFF_MIN), ACCEPT_BACKOFF_MAX)
        self.stopped.wait(delay)
        return delay

    # Contract: the accept loop is ending; silent if stop() closed the listener,
    # otherwise a warning, because nothing will be accepted any more.
    def _listener_gone(self, e: OSError) -> None:
        if not self.stopping:
            log.warning("node %s: listener closed unexpectedly (%s); no longer accepting",
                        self.node_id, e)

    # Contract: every accepted socket is either handed to an admit thread that
    # holds one pending-handshake slot, or closed now.  The cap bounds the
    # threads and fds that peers who never finish a handshake can pin.
    def _dispatch(self, sock: socket.socket, peer) -> None:
        if not self._claim_pending():
            sock.close()
            return
        try:
            threading.Thread(target=self._admit, args=(sock, peer),
                             name=f"node{self.node_id}-admit", daemon=True).start()
        except RuntimeError as e:   # no thread to be had: drop this one, keep accepting
            self._release_pending()
            sock.close()
            log.warning("node %s: dropped a connection: cannot start its thread: %s",
                        self.node_id, e)

    # Contract: take a pending-handshake slot (True) or refuse (False) when
    # MAX_PENDING_HANDSHAKES are taken, warning once until the count drains to 0.
    def _claim_pending(self) -> bool:
        with self._pending_lock:
            if self.pending_handshakes < MAX_PENDING_HANDSHAKES:
                self.pending_handshakes += 1
                return True
            warn, self._cap_warned = not self._cap_warned, True
        if warn:
            log.warning("node %s: %d handshakes already pending (MAX_PENDING_HANDSHAKES=%d); "
                        "closing new connections until they finish", self.node_id,
                        MAX_PENDING_HANDSHAKES, MAX_PENDING_HANDSHAKES)
        return False

    # Contract: give back a slot taken by ``_claim_pending``; a count drained to 0
    # ends the burst, so the next time the cap is hit it is logged again.
    def _release_pending(self) -> None:
        with self._pending_lock:
            self.pending_handshakes -= 1
            if self.pending_handshakes == 0:
                self._cap_warned = False

    # Contract: runs on its own thread holding a pending slot, which it gives
    # back as soon as the peer has proven the key and said HELLO (or failed);
    # then the connection becomes a serve channel or is closed with one warning.
    def _admit(self, sock: socket.socket, peer) -> None:
        who = peer or "unix peer"
        try:
            try:
                reader, hello = self._read_hello(sock)
            finally:
                self._release_pending()
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

    # Contract: returns (reader, decoded HELLO) once the handshake and the HELLO
    # frame have both arrived within one deadline (HANDSHAKE_TIMEOUT in all);
    # raises otherwise.  One budget for both, so no drip of bytes -- before or
    # after the MACs -- keeps an unidentified peer's thread alive longer.
    def _read_hello(self, sock: socket.socket):
        deadline = handshake_deadline()
        handshake_accept(sock, self.key, deadline)
        reader = FrameReader(sock, self.max_frame)
        reader.deadline = deadline
        kind, _f, _r, _o, body, payload = reader.next()
        reader.deadline = None
        sock.settimeout(None)
        if kind != HELLO or payload is not None:
            raise ConnectionError(f"first frame is kind {kind}, expected HELLO")
        return reader, unpackb(body)

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
