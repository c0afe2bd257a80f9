"""Starting and stopping a cluster: node 0's side (``start_nodes``, ``NodeSet``) and the other nodes' (``run_node``).

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
   (see ``_channel``);
4. run the ``attach`` hook (the clustered object system), then call ``ready`` (with the
   traceback if anything failed: start-up errors are raised in node 0).

Node 0 then runs ``init`` on every node and ``start_nodes`` returns.

Liveness: a node other than 0 stops when its connection to node 0 breaks,
which is how it notices node 0 dying, even by SIGKILL (the kernel closes the
socket).  ``NodeSet.close`` (the context manager, and an atexit hook) tells
every node to stop, then joins, terminates and finally kills the processes.
The node service (oid 0) these steps call is in ``_runtime``.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import multiprocessing.util  # noqa: F401  (its atexit hook must be registered before ours)
import os
import pickle
import tempfile
import threading
import time

import shutil
import signal
import socket
import sys
import traceback

from ._loss import STILL_RUNNING, crash_log_path, describe_end, enable_crash_log
from ._runtime import EXIT_GRACE, NodeRuntime, NodeStartupError, _set_current, unpack_run_on
from ._stats import from_wire
from ._transport import (DEFAULT_MAX_FRAME, HELLO, Connection, FrameReader, check_key, connect,
                         new_key, parse_address)
from ._wire import pack

log = logging.getLogger("tornado_dsm.node")

TRANSPORTS = ("unix", "tcp")
_open_clusters: list = []   # in start order; the newest open one is "current"
_atexit_registered = False


class _Registrar:
    """Node 0's start-up bookkeeping: addresses, joiner ids, readiness."""

    def __init__(self, rt: NodeRuntime, spawned: int, route=None) -> None:
        self.rt = rt
        self.nnodes = rt.nnodes
        self.cond = threading.Condition()
        self.route = route or (lambda node, address: address)
        self.addresses = {0: self.route(0, rt.address)}
        self.next_joiner = spawned + 1
        self.ready_nodes: dict[int, str | None] = {}
        self.directory: list | None = None
        self.aborted: str | None = None

    def assign_joiner(self) -> int:
        """The id of a node that joins without one."""
        with self.cond:
            if self.next_joiner >= self.nnodes:
                raise ValueError(f"cluster is full: all {self.nnodes} nodes are placed")
            node, self.next_joiner = self.next_joiner, self.next_joiner + 1
            return node

    def register(self, node: int, args) -> dict:
        """Record ``node``'s address; answer with the directory once all registered."""
        address = args["address"]
        if isinstance(address, list) and address[0] in ("0.0.0.0", "::", ""):
            address = [self.rt._serves[node].conn.sock.getpeername()[0], address[1]]
        with self.cond:
            self.addresses[node] = self.route(node, address)
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.directory is not None or self.aborted)
            if self.aborted:
                raise RuntimeError(f"cluster start-up aborted: {self.aborted}")
            return {"node": node, "nnodes": self.nnodes, "addresses": self.directory}

    def ready(self, node: int, args) -> None:
        """Record that ``node`` finished start-up (``args["error"]``: traceback or None)."""
        with self.cond:
            self.ready_nodes[node] = args.get("error")
            self.cond.notify_all()

    def wait(self, procs: dict, deadline: float) -> None:
        """Block until every node is ready; NodeStartupError on the first failure.

        Once all have registered, node 0 dials each of them, then publishes
        the directory (which lets every ``register`` answer).
        """
        self._wait_for(lambda: len(self.addresses) == self.nnodes, procs, deadline)
        for node in range(1, self.nnodes):
            self.rt.dial(node, self.addresses[node])
        with self.cond:
            self.directory = [self.addresses[i] for i in range(self.nnodes)]
            self.cond.notify_all()
        self._wait_for(lambda: len(self.ready_nodes) == self.nnodes - 1, procs, deadline)

    def _wait_for(self, predicate, procs: dict, deadline: float) -> None:
        with self.cond:
            while True:
                self._check(procs, deadline)
                if predicate():
                    return
                # a poll with a deadline: a process dying does not notify us
                self.cond.wait(min(0.1, max(0.0, deadline - time.monotonic())))

    def _check(self, procs: dict, deadline: float) -> None:
        for node, error in sorted(self.ready_nodes.items()):
            if error:
                raise NodeStartupError(node, "an exception during start-up", error)
        for node, proc in procs.items():
            if proc.exitcode == MAIN_REIMPORT_EXIT and node not in self.ready_nodes:
                raise NodeStartupError(node, MAIN_REIMPORT_ADVICE)
            if proc.exitcode is not None and node not in self.ready_nodes:
                raise NodeStartupError(node, f"its process exited with code {proc.exitcode} "
                                             f"before it was ready (see its stderr)")
        if time.monotonic() >= deadline:
            missing = sorted(set(range(1, self.nnodes)) - set(self.ready_nodes))
            raise NodeStartupError(missing[0] if missing else "?",
                                   f"nodes {missing} not ready within the start timeout")

    def abort(self, reason: str) -> None:
        """Release every waiting ``register`` with an error."""
        with self.cond:
            self.aborted = reason
            self.cond.notify_all()


class NodeSet:
    """The nodes of a running cluster, seen from node 0: ``runtime``, ``nnodes``, ``run_on``,
    ``run_on_each``, ``run_on_all``, ``ppc_statistics``, ``close``."""

    def __init__(self, runtime: NodeRuntime, tmpdir: str | None) -> None:
        self.runtime = runtime
        self.nnodes = runtime.nnodes
        self.processes: dict[int, multiprocessing.Process] = {}
        self._tmpdir = tmpdir
        self.closed = False
        runtime.describe_loss = self._describe_loss

    def _describe_loss(self, node: int) -> str:
        """How a lost spawned node's process ended (see ``_loss``); "" for a joined node."""
        proc = self.processes.get(node)
        if proc is None:
            return ""
        return describe_end(proc, crash_log_path(self._tmpdir, node))

    def lost_nodes(self) -> dict:
        """{node: reason} of the nodes lost while the cluster ran.  A process
        that had not yet exited when its loss was announced is asked again."""
        if self.closed:
            return {}
        lost = self.runtime.lost_peers()
        for node, reason in lost.items():
            if reason.endswith(STILL_RUNNING):
                lost[node] = reason[:-len(STILL_RUNNING)] + self._describe_loss(node)
        return lost

    def __enter__(self) -> "NodeSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def run_dir(self) -> str | None:
        """Node 0's private (0700) run directory: sockets, crash reports, the watch socket."""
        return self._tmpdir

    @property
    def pids(self) -> dict[int, int]:
        """Process ids of the spawned nodes (joined nodes run elsewhere)."""
        return {k: p.pid for k, p in self.processes.items()}

    def run_on(self, node: int, fn, *args, timeout: float | None = None):
        """Run module-level ``fn(*args)`` on ``node`` (a worker thread there; this
        thread if ``node`` is 0) and return its result; its exception is
        re-raised here with the remote traceback in a note."""
        return self.run_on_each((node,), fn, *args, timeout=timeout)[0]

    def run_on_each(self, nodes, fn, *args, timeout: float | None = None,
                    return_errors: bool = False) -> list:
        """Run module-level ``fn(*args)`` on every node of ``nodes`` at once; results in
        ``nodes`` order.  Node 0's share runs on this thread after the others'
        requests are sent; every node finishes before the first exception (in
        ``nodes`` order, with its remote traceback in a note) is raised.
        ``timeout`` defaults to the runtime's.  ``return_errors``: each node's
        exception is its result instead of being raised."""
        rt = self.runtime
        return _run_each(rt, nodes, fn, args, rt.default_timeout if timeout is None else timeout,
                         return_errors=return_errors)

    def run_on_all(self, fn, *args, timeout: float | None = None) -> list:
        """``run_on_each`` on every node: ``fn(*args)`` everywhere at once; results by node."""
        return self.run_on_each(range(self.nnodes), fn, *args, timeout=timeout)

    def ppc_statistics(self) -> list:
        """Every node's ``PPCStatistics``, by node id (gathered in parallel)."""
        rt = self.runtime
        return rt.fan_out(range(self.nnodes), 0, "stats", None, local=rt.ppc_statistics,
                          reply=from_wire, timeout=rt.default_timeout)

    def close(self) -> None:
        """Stop every node and wait for the spawned processes (kill stragglers)."""
        if self.closed:
            return
        self.closed = True
        rt = self.runtime
        rt.stopping = True
        for method in ("quiesce", "shutdown"):
            _broadcast(rt, method)
        self._reap(time.monotonic() + EXIT_GRACE)
        rt.stop()
        cleanup_dir(self._tmpdir)
        if self in _open_clusters:
            _open_clusters.remove(self)
        # another cluster of this process still open becomes current again
        _set_current(_open_clusters[-1].runtime if _open_clusters else None)

    def _reap(self, deadline: float) -> None:
        for proc in self.processes.values():
            proc.join(max(0.0, deadline - time.monotonic()))
        for proc in self.processes.values():
            if proc.is_alive():
                log.warning("node process %s did not stop: terminating it", proc.pid)
                proc.terminate()
                proc.join(1.0)
            if proc.is_alive():
                proc.kill()
                proc.join()


def _run_each(rt: NodeRuntime, nodes, fn, args: tuple, timeout: float | None,
              on_error=None, return_errors: bool = False) -> list:
    """``fn(*args)`` on ``nodes`` through the node service's ``run_on`` (see ``PPCCore.fan_out``)."""
    nodes = tuple(nodes)
    # pickled only when it leaves this process: a local run takes any callable
    remote = any(n != rt.node_id for n in nodes)
    payload = pickle.dumps((fn, tuple(args)), protocol=pickle.HIGHEST_PROTOCOL) if remote else None
    return rt.fan_out(nodes, 0, "run_on", None, local=lambda: fn(*args), payload=payload,
                      reply=unpack_run_on, on_error=on_error, timeout=timeout,
                      return_errors=return_errors)


def _broadcast(rt: NodeRuntime, method: str) -> None:
    """Call node-service ``method`` on every connected node at once, ignoring every failure."""
    try:
        rt.fan_out(rt.connected_peers(), 0, method, None, timeout=2.0, tolerate_lost=True)
    except Exception:  # noqa: BLE001
        pass   # a node that is gone or slow is reaped by process join/kill


# A spawned node imports the main script again (multiprocessing's spawn does, so
# that what it defines exists there).  A script that starts a cluster at import
# would start one in every node: the node says so in one line and exits with this code.
MAIN_REIMPORT_EXIT = 87
MAIN_REIMPORT_ADVICE = ("the main script starts a cluster when it is imported, and every spawned node "
                        "imports it again: put that code under `if __name__ == \"__main__\":`")


@contextlib.contextmanager
def _main_file_only_if_real():
    """Hide ``__main__.__file__`` from spawn while it is no file ("<stdin>", "<string>"):
    spawn would try to run it on the node and fail.  Functions defined there
    reach the nodes by value (the runner pickles them with cloudpickle)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if path is None or os.path.isfile(path):
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


@contextlib.contextmanager
def _sigint_blocked():
    """Start a node with SIGINT blocked: the child inherits the mask across exec
    (so every thread of the node blocks it), while a SIGINT that reaches this
    process meanwhile stays pending and is delivered here when the mask is
    restored, never lost.  A Ctrl-C in a terminal reaches the whole process
    group, but only node 0 decides what it means (it interrupts the nodes'
    work through PPCs); a node killed by it would be a lost node."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _refuse_main_reimport() -> None:
    """In a spawned node still importing the main script: one line, then exit."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        sys.stderr.write(f"tornado-dsm: node start-up stopped: {MAIN_REIMPORT_ADVICE}\n")
        sys.stderr.flush()
        os._exit(MAIN_REIMPORT_EXIT)


def start_nodes(nnodes: int, transport: str = "unix", *, address: str | None = None,
                key: bytes | None = None, join: int = 0, init=None, init_args: tuple = (),
                timeout: float | None = None, start_timeout: float = 60.0,
                max_frame: int = DEFAULT_MAX_FRAME, announce=None,
                log_level: int = logging.WARNING, attach=None, route=None) -> NodeSet:
    """Start a cluster of ``nnodes`` nodes; this process is node 0.

    ``transport``: "unix" (sockets in a private 0700 directory) or "tcp"
    (``address`` "HOST:PORT" for node 0, default 127.0.0.1:0).  ``join``: how
    many of the nodes join with ``tornado-dsm node --join`` (tcp only); node 0
    calls ``announce(address)`` with its "HOST:PORT" once it listens.  ``key``:
    the cluster secret (default: a fresh random one).  ``init(*init_args)``
    runs on every node after ``attach(runtime)`` (a module-level function:
    spawned nodes receive it by reference) gave the node its object system.
    ``timeout``: default PPC timeout.  ``route(node, address)``, if given,
    returns the address the other nodes dial to reach ``node`` (fault
    injection puts a relay there).  Returns a ``NodeSet`` (a context manager).
    """
    _refuse_main_reimport()
    _check_args(nnodes, transport, address, join)
    key = new_key() if key is None else check_key(key)
    rt = NodeRuntime(0, nnodes, key, max_frame, timeout)
    # the run directory: Unix sockets, and the spawned nodes' crash reports
    tmpdir = tempfile.mkdtemp(prefix="tornado-dsm-")
    cluster = NodeSet(rt, tmpdir)
    _register_atexit()
    _open_clusters.append(cluster)
    try:
        _start(cluster, transport, address, join, start_timeout, announce, log_level, attach, route)
        if init is not None:
            _run_init(cluster, init, init_args)
    except BaseException as e:
        if rt._registrar is not None:
            rt._registrar.abort(f"{type(e).__name__}: {e}")
        cluster.close()
        raise
    return cluster


def _check_args(nnodes, transport, address, join) -> None:
    if not isinstance(nnodes, int) or nnodes < 1:
        raise ValueError(f"nnodes must be an int >= 1, got {nnodes!r}")
    if transport == "mpi":
        raise ValueError(_mpi_transport_refused())
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
    if address is not None and transport != "tcp":
        raise ValueError(f"address={address!r} needs transport='tcp'")
    if not isinstance(join, int) or not 0 <= join < nnodes or (join and transport != "tcp"):
        raise ValueError(f"join must be an int in 0..{nnodes - 1} and needs transport='tcp', "
                         f"got join={join!r} with transport={transport!r}")
    if address is not None:
        parse_address(address)


def _mpi_transport_refused() -> str:
    """Why ``start_nodes`` cannot take transport="mpi" (the nodes it spawns are no MPI ranks)."""
    return (f"transport='mpi' needs every node to be an MPI rank: run the program as `mpiexec -n N "
            f"python program.py` and make the cluster with Cluster.from_mpi() (or the kernel's "
            f"start_mpi_nodes).  Accepted here: {', '.join(map(repr, TRANSPORTS))}")


def _start(cluster: NodeSet, transport, address, join, start_timeout, announce, log_level, attach,
           route=None):
    rt = cluster.runtime
    if transport == "unix":
        rt.start_listening(os.path.join(cluster._tmpdir, "node0.sock"))
    else:
        rt.start_listening(parse_address(address or "127.0.0.1:0"))
    _set_current(rt)
    if attach is not None:
        attach(rt)
    spawned = rt.nnodes - 1 - join
    rt._registrar = _Registrar(rt, spawned, route)
    ctx = multiprocessing.get_context("spawn")
    for k in range(1, spawned + 1):
        config = {"node": k, "address": rt._registrar.addresses[0], "key": rt.key, "max_frame": rt.max_frame,
                  "timeout": rt.default_timeout, "start_timeout": start_timeout,
                  "log_level": log_level, "listen": _child_listen(cluster, transport, k),
                  "attach": attach, "crash_log": crash_log_path(cluster._tmpdir, k)}
        proc = ctx.Process(target=spawned_main, args=(config,), name=f"tornado-dsm-node-{k}")
        with _main_file_only_if_real(), _sigint_blocked():
            proc.start()
        cluster.processes[k] = proc
    if join:
        where = f"{rt.address[0]}:{rt.address[1]}"
        log.info("waiting for %d node(s) to join at %s", join, where)
        if announce is not None:
            announce(where)
    rt._registrar.wait(cluster.processes, time.monotonic() + start_timeout)


def _child_listen(cluster: NodeSet, transport: str, node: int):
    if transport == "unix":
        return os.path.join(cluster._tmpdir, f"node{node}.sock")
    return [cluster.runtime.address[0], 0]


def _run_init(cluster: NodeSet, init, init_args) -> None:
    """``init(*init_args)`` on every node at once; no time limit: init may take long."""
    _run_each(cluster.runtime, range(cluster.nnodes), init, init_args, None, _init_failed)


def _init_failed(node: int, error: Exception) -> NodeStartupError:
    """The start-up error of ``init`` failing on ``node`` (its remote traceback included)."""
    notes = "\n".join(getattr(error, "__notes__", []))
    failed = NodeStartupError(node, f"init raised {type(error).__name__}: {error}", notes)
    failed.__cause__ = error
    return failed


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_close_all)
        _exit_on_sigterm()
        _atexit_registered = True


def _exit_on_sigterm() -> None:
    """SIGTERM (the default: die at once) would leave the run directory and the
    node processes' sockets behind: make it a SystemExit in node 0, so with-blocks
    and the atexit hook close the clusters.  A handler the program set is kept."""
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _sigterm)


def _sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _close_all() -> None:
    for cluster in list(_open_clusters):
        try:
            cluster.close()
        except Exception:
            log.exception("closing a cluster at exit failed")


# ---- a node other than 0 ------------------------------------------------------------

def run_node(config: dict) -> int:
    """Body of a node process other than 0; returns its exit status.

    ``config``: node (id or None to join), address (node 0's), key, listen
    (address to listen on; port 0 picks one), max_frame, timeout,
    start_timeout, attach (``attach(runtime)`` run before the node is ready:
    the layer above gives each node its object system here; optional).
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
    if rt.node0_lost:   # node 0 died without closing: nobody else removes its run directory
        _remove_run_dir(config)
    _watchdog()
    return 0


def _remove_run_dir(config: dict) -> None:
    """Remove node 0's run directory, found beside this node's socket or crash report."""
    for path in (config.get("listen"), config.get("crash_log")):
        if isinstance(path, str) and os.path.basename(os.path.dirname(path)).startswith("tornado-dsm-"):
            cleanup_dir(os.path.dirname(path))
            return


def _join(rt: NodeRuntime, config: dict) -> None:
    """Start-up steps 1-4 of the module docstring."""
    rt.start_listening(config["listen"] if config["listen"] else _guess_listen(config))
    sock = connect(config["address"], rt.key, timeout=config.get("start_timeout", 60))
    conn = Connection(sock, rt.max_frame)
    conn.send(HELLO, 0, 0, pack({"node": rt.node_id}))
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
    if config.get("attach") is not None:
        config["attach"](rt)
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
    enable_crash_log(config.get("crash_log"))
    logging.basicConfig(level=config.get("log_level", logging.WARNING),
                        format=f"tornado_dsm node {config.get('node')}: %(levelname)s %(message)s")
    code = run_node(config)
    if code:
        sys.exit(code)


def cleanup_dir(path) -> None:
    """Remove node 0's private socket directory."""
    if path:
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["NodeSet", "start_nodes", "run_node", "spawned_main"]
