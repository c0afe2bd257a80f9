"""Node processes: start-up, the full mesh of connections, the node service, shutdown.

Design
------
Node 0 is the process that calls ``start_nodes``; it listens first.  Nodes
1..s are spawned (``multiprocessing`` spawn context); nodes s+1..n-1 join
from other hosts with ``tornado-dsm node --join``.  Start-up of node k:

1. listen on its own address (a socket in node 0's private 0700 directory,
   or a TCP port);
2. connect to node 0, authenticate, say HELLO (its id, or none for a joiner:
   node 0 assigns one), then call node 0's service ``register`` with its
   address.  Once every node has registered, node 0 connects to each of
   them and ``register`` answers with the directory of all addresses;
3. connect to every other node, and wait until every other node has
   connected: one connection per ordered pair, the dialer's calls go on it
   (see ``_ppc_channel``);
4. attach the clustered object system, then call ``ready`` (with the
   traceback if anything failed: start-up errors are raised in node 0).

Node 0 then runs ``init`` on every node and ``start_nodes`` returns.

Liveness: a node other than 0 stops when its connection to node 0 breaks,
which is how it notices node 0 dying, even by SIGKILL (the kernel closes the
socket).  ``Cluster.close`` (the context manager, and an atexit hook) tells
every node to stop, then joins, terminates and finally kills the processes.

oid 0 is the node service: register, ready, run_on (pickle, allowed only on
authenticated connections and only inside its payload), ping, quiesce,
shutdown.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import socket
import sys
import threading
import traceback

from ._ppc import Payload, PPCCore, decode_error, encode_error, _pack, _unpackb
from ._ppc_stats import to_wire
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
        self.registered = threading.Event()   # node_id and nnodes are known
        if nnodes is not None:
            self.registered.set()

    def __repr__(self) -> str:
        return f"<NodeRuntime node {self.node_id} of {self.nnodes}>"

    def add_node_lost_listener(self, fn) -> None:
        """Call ``fn(node, reason)`` (on a reader thread) whenever a peer is lost."""
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
            hello = _unpackb(body)
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
        conn.send(HELLO, 0, 0, _pack({"node": self.node_id}))
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

    def _peer_lost(self, peer: int, reason: str) -> bool:
        if not super()._peer_lost(peer, reason):
            return False
        if self.stopping:
            log.debug("node %s: node %s disconnected while stopping", self.node_id, peer)
        else:
            log.warning("node %s: lost node %s: %s", self.node_id, peer, reason)
        for fn in list(self._lost_listeners):
            try:
                fn(peer, reason)
            except Exception:
                log.exception("node-lost listener %r failed", fn)
        if peer == 0 and self.node_id != 0:
            self.stop()   # node 0 is gone: the cluster is over
        return True

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
        raise decode_error(_unpackb(rest[0]), node)
    exc, tb = rest
    exc.add_note(f"--- remote traceback (node {node}) ---\n{tb}")
    raise exc


# ---- a node other than 0 ------------------------------------------------------------

def run_node(config: dict) -> int:
    """Body of a node process other than 0; returns its exit status.

    ``config``: node (id or None to join), address (node 0's), key, listen
    (address to listen on; port 0 picks one), max_frame, timeout,
    start_timeout.
    """
    rt = NodeRuntime(config.get("node"), None, config["key"],
                     config.get("max_frame", DEFAULT_MAX_FRAME), config.get("timeout"))
    _set_current(rt)
    try:
        _join(rt, config)
    except BaseException as e:
        if rt.stopping:   # node 0 closed the cluster while we were starting: not a failure
            return 0
        _report_failure(rt, e)
        rt.stop()
        return 1
    rt.stopped.wait()
    _watchdog()
    return 0


def _join(rt: NodeRuntime, config: dict) -> None:
    """Start-up steps 1-4 of the module docstring."""
    rt.start_listening(config["listen"] if config["listen"] else _guess_listen(config))
    sock = connect(config["address"], rt.key, timeout=config.get("start_timeout", 60))
    conn = Connection(sock, rt.max_frame)
    conn.send(HELLO, 0, 0, _pack({"node": rt.node_id}))
    rt.add_call_channel(conn, FrameReader(sock, rt.max_frame), 0)
    reply = rt.call(0, 0, "register", {"address": rt.address}, timeout=None)
    rt.node_id, rt.nnodes = reply["node"], reply["nnodes"]
    rt.registered.set()
    log.info("registered as node %d of %d", rt.node_id, rt.nnodes)
    rt.pool.name = f"ppc-node{rt.node_id}"
    for j in range(1, rt.nnodes):
        if j != rt.node_id:
            rt.dial(j, reply["addresses"][j])
    rt.wait_connected(config.get("start_timeout", 60))
    _attach_cos(rt)
    rt.call(0, 0, "ready", {"error": None})


def _guess_listen(config: dict):
    """Listen on the interface that reaches node 0 (a joiner without --listen)."""
    host = config["address"][0]
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((host, int(config["address"][1])))
        return [s.getsockname()[0], 0]


def _report_failure(rt: NodeRuntime, exc: BaseException) -> None:
    """Tell node 0 why start-up failed, or say it on stderr if node 0 is out of reach."""
    if 0 not in rt._calls and isinstance(exc, (OSError, ConnectionError)):
        print(f"tornado_dsm node: cannot join the cluster: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return
    text = "".join(traceback.format_exception(exc))
    try:
        rt.call(0, 0, "ready", {"error": text}, timeout=5.0)
    except Exception:
        print(f"tornado_dsm node {rt.node_id} failed to start:\n{text}", file=sys.stderr)


def _attach_cos(rt) -> None:
    """Give this node its clustered object system before any user code runs."""
    try:
        from . import _cobj
    except ImportError:
        # TODO(COS): kernel/_cobj.py must provide attach(runtime); skipped while absent.
        return
    attach = getattr(_cobj, "attach", None)
    if attach is not None:
        attach(rt)


def _watchdog() -> None:
    """Force the process out if interpreter shutdown hangs on some user thread."""
    t = threading.Timer(EXIT_GRACE, os._exit, args=(3,))
    t.daemon = True
    t.start()


def spawned_main(config: dict) -> None:
    """Entry point of a spawned node process (multiprocessing target)."""
    # Ctrl-C in a terminal reaches the whole process group: node 0 handles it
    # (closing the cluster stops this node); a spawned node ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=config.get("log_level", logging.WARNING),
                        format=f"tornado_dsm node {config.get('node')}: %(levelname)s %(message)s")
    code = run_node(config)
    if code:
        sys.exit(code)


def cleanup_dir(path) -> None:
    """Remove node 0's private socket directory."""
    if path:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["NodeRuntime", "NodeStartupError", "current_runtime", "run_node", "spawned_main"]
