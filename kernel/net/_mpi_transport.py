"""MPI as a transport (``transport="mpi"``): PPC frames as MPI messages between ranks.

Design
------
Under ``mpiexec`` with ``transport="mpi"`` every node is its MPI rank's own
process (node k is rank k; no child process, no socket) and the frames of
``_transport`` travel as MPI messages on a communicator made per cluster
(``MPI_Comm_create_group`` over ranks 0..n-1, so ranks beyond the cluster
take no part and clusters never see each other's messages).

* ``MPIConnection`` has ``Connection``'s ``send``/``close``: the fixed header
  and the msgpack body go as one message; a payload (the bytes of a
  ``run_on``, a page) goes as a second message straight from the caller's
  buffer (no copy), on the same tag under the send lock, so the two stay
  adjacent (MPI keeps the order of messages from one source on one tag).
* ``MPIFrameReader`` has ``FrameReader``'s ``next``/``has_frame`` and the
  ``wait_readable(timeout)`` that a call channel uses for a timed wait: it
  matches a message with ``Mprobe`` (its size is known before it is
  received), receives it into a reused buffer, and a payload into a fresh
  bytearray of its own (the ``Payload`` the handler gets).

Tags.  On rank r, the messages on tag ``2*p + d`` come from peer p only:
d = 0 its requests, d = 1 its replies.  A reader probes its tag with
``ANY_SOURCE`` so that its own rank can wake it: closing a connection sends
a zero-length message to the peer (its "EOF") and one to itself on the tag
its reader waits on, which then raises ConnectionError as a socket reader
does at EOF.  Sends of these are ``Isend`` and never waited for: a peer that
no longer reads must not hold ``close``.

Start-up needs no handshake: the launcher's ranks are the job's and MPI
authenticates nothing more than a socket would; the cluster key is still
made on rank 0 and sent over MPI (``_mpi``), because run_on's pickles and
the node service expect one.  Rank 0 sends every rank its start message,
all make the communicator and their channels (messages that come before a
reader exists wait in MPI's queue), each rank runs ``attach`` and calls
node 0's ``ready``; node 0 then runs ``init`` everywhere (``_startup``).

How a reader waits.  A thread blocked in an MPICH wait (``Mprobe``,
``Recv``) busy-polls, with the GIL released: one CPU per waiting reader, and
every node has one reader per peer waiting for requests.  Measured on a
loaded 2-CPU machine, 3 nodes idle for 2 s used 0.76-1.23 s of CPU each that
way; neither ``MPIR_CVAR_ENABLE_HEAVY_YIELD=1`` (0.93 s) nor
``MPIR_CVAR_CH4_PROGRESS_THROTTLE=1`` (0.86 s) changed that much, and a 3-node
program took 34 s instead of about 3 s.  So a reader polls (``_match``): a
non-blocking ``Improbe``, then ``sched_yield`` between probes for the first
POLL_YIELDS probes (a reply or the next request is usually that close, and a
yield gives the CPU to whoever needs it), then sleeps of POLL_MIN doubling up
to POLL_MAX, with the GIL free (a spinning Python loop would keep the node's
other threads off the GIL for its 5 ms switch interval).  The thread's timer
slack is set to 1 us so the short sleeps are short.  An idle node then uses
about 4% of a CPU (1% over TCP), and a frame to a node idle for long waits
up to POLL_MAX for its reader.  ``TORNADO_DSM_MPI_WAIT=block`` restores
MPICH's blocking wait (fastest with a CPU free per reader; two nodes only);
``TORNADO_DSM_MPI_YIELDS`` (200) and ``TORNADO_DSM_MPI_POLL_MAX`` (1e-3 s)
tune the two phases (5 runs of ``bench coherence --nodes 3`` each with 50,
1000, 3000 or 10000 yields, or a 0.3 ms longest sleep, did not beat these
values; a 0.1 ms longest sleep made an idle node use 15% of a CPU).  One
polling thread per node that wakes sleeping readers was tried too: the hop
to the woken reader made a remote PPC 4x slower (114 vs 27 us).

Trade-off (README, "Beyond one host"): a node dying by a signal ends the
whole job.  MPICH's launcher SIGKILLs every rank within about 0.1 s of one
rank process dying by a signal, so rank 0 never raises ``NodeLost``; the job
still ends at once, with a non-zero status and no hang.  ``transport="tcp"``
(supervisor ranks, child nodes over TCP) keeps ``NodeLost``.
"""

from __future__ import annotations

import ctypes
import logging
import os
import tempfile
import threading
import time
import traceback

from ._runtime import NodeRuntime, NodeStartupError, _set_current
from ._transport import DEFAULT_MAX_FRAME, HEADER, HEADER_SIZE, FrameError, read_header

log = logging.getLogger("tornado_dsm.node")

REQUESTS, REPLIES = 0, 1   # the direction part of a tag (see module docstring)
# How a reader waits for a message (TORNADO_DSM_MPI_WAIT): "poll" probes without
# blocking, yields the CPU between the first POLL_YIELDS probes, then sleeps
# (POLL_MIN seconds for POLL_FAST probes, then doubling up to POLL_MAX); "block"
# waits in MPI_Mprobe, which MPICH implements as a busy loop (a CPU per waiting
# reader).  See "How a reader waits" above.
PR_SET_TIMERSLACK = 29


def _env_number(name: str, default: str, kind):
    """$name as a number >= 0 of ``kind`` (int or float), or ValueError naming it."""
    text = os.environ.get(name, default)
    try:
        value = kind(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name}={text!r}: expected a{'n integer' if kind is int else ' number'} >= 0 "
                         f"(default {default})")
    return value


WAIT = os.environ.get("TORNADO_DSM_MPI_WAIT", "poll")
POLL_MIN, POLL_FAST = 10e-6, 20
POLL_MAX = _env_number("TORNADO_DSM_MPI_POLL_MAX", "1e-3", float)   # seconds
POLL_YIELDS = _env_number("TORNADO_DSM_MPI_YIELDS", "200", int)
_BUFSIZE = 1 << 16         # a reader's reused buffer; a larger message gets its own


def _mpi():
    from mpi4py import MPI
    return MPI


def tag_of(peer: int, direction: int) -> int:
    """The tag on which ``peer``'s frames of ``direction`` arrive at any rank."""
    return 2 * peer + direction


class MPIConnection:
    """Frames to rank ``dest`` on communicator ``comm``: ``Connection``'s ``send`` and
    ``close``.  ``wake`` is the tag this rank's reader of the pair waits on."""

    def __init__(self, comm, me: int, dest: int, direction: int, wake: int,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.comm, self.me, self.dest, self.wake = comm, me, dest, wake
        self.tag = tag_of(me, direction)
        self.max_frame = max_frame
        self.peer: int | None = None
        self.closed = False
        self._send_lock = threading.Lock()
        self._MPI = _mpi()

    # Contract: one frame to ``dest``; returns its size.  ValueError beyond
    # max_frame; ConnectionError (an OSError, as a broken socket) once closed
    # or if MPI fails.  The payload (bytes-like, or a list of parts as for
    # Connection.send, joined only when there are several) is sent from the
    # caller's buffer.
    def send(self, kind: int, rid: int, oid: int, body: bytes, payload=None, flags: int = 0) -> int:
        if isinstance(payload, list):  # parts, as for Connection.send: one MPI message for all
            payload = None if not payload else payload[0] if len(payload) == 1 else b"".join(payload)
        payload = None if payload is None else memoryview(payload).cast("B")
        blen, plen = len(body), (0 if payload is None else len(payload))
        if blen + plen > self.max_frame:
            raise ValueError(f"frame of {blen + plen} bytes exceeds max_frame={self.max_frame}")
        head = HEADER.pack(kind, flags, 0, rid, oid, blen, plen) + body
        byte = self._MPI.BYTE
        with self._send_lock:
            if self.closed:
                raise ConnectionError("connection closed")
            try:
                self.comm.Send([head, byte], self.dest, self.tag)
                if plen:
                    self.comm.Send([payload, byte], self.dest, self.tag)
            except self._MPI.Exception as e:
                raise ConnectionError(f"MPI send to rank {self.dest} failed: {e}") from None
        return HEADER_SIZE + blen + plen

    # Contract: idempotent; the peer's reader sees EOF (a zero-length
    # message) and this rank's reader of the pair wakes with ConnectionError.
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True   # not under the send lock: a send stuck on the peer must not hold it
        empty = [bytearray(0), self._MPI.BYTE]
        try:
            self.comm.Isend(empty, self.dest, self.tag).Free()
            self.comm.Isend(empty, self.me, self.wake).Free()
        except self._MPI.Exception:
            pass   # MPI is going away: nobody is left to wake


class MPIFrameReader:
    """Frames from ``peer`` of one direction: ``FrameReader``'s ``next()`` ->
    (kind, flags, rid, oid, body memoryview, payload bytearray | None), valid
    until the next call; ConnectionError at the peer's close or our own."""

    def __init__(self, comm, me: int, peer: int, direction: int,
                 max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.comm, self.me, self.peer = comm, me, peer
        self.tag = tag_of(peer, direction)
        self.max_frame = max_frame
        self.buf = bytearray(_BUFSIZE)
        self.ended = ""   # why the stream ended, once it has
        self._MPI = _mpi()

    # Contract: never True: a frame is never buffered here (``next`` blocks
    # until the peer's message comes; ``wait_readable`` says whether one has).
    def has_frame(self) -> bool:
        return False

    # Contract: False at once: this reader's waits poll already (``_match``),
    # so a channel's spin before blocking (see _spinwait) has nothing to add.
    def spin(self, seconds: float) -> bool:
        return False

    # Contract: True once a message waits on our tag (a frame, or the EOF /
    # wake of a close), False after ``timeout`` seconds; paced as ``_match``.
    def wait_readable(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        pacing = _Backoff()
        while not self.ended and not self.comm.Iprobe(self._MPI.ANY_SOURCE, self.tag):
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            pacing.pause(left)
        return True

    # Contract: the next frame (see class docstring).  FrameError on a header
    # that breaks the framing rules; ConnectionError at EOF, for good.
    def next(self):
        if self.ended:
            raise ConnectionError(self.ended)
        MPI = self._MPI
        status = MPI.Status()
        message = self._match(status)
        n, source = status.Get_count(MPI.BYTE), status.Get_source()
        buf = self.buf if n <= len(self.buf) else bytearray(n)
        message.Recv([buf, n, MPI.BYTE])
        if source != self.peer or n == 0:
            self.ended = "connection closed" if source != self.peer else "peer closed the connection"
            raise ConnectionError(self.ended)
        kind, flags, rid, oid, blen, plen = _check_header(buf, n, self.max_frame)
        payload = self._payload(plen) if plen else None
        return kind, flags, rid, oid, memoryview(buf)[HEADER_SIZE:n], payload

    # Contract: the next message on our tag, matched (no other thread can take it).
    # "poll": the GIL is free while we sleep, and no CPU spins while nothing comes.
    def _match(self, status):
        ANY = self._MPI.ANY_SOURCE
        if WAIT == "block":
            return self.comm.Mprobe(ANY, self.tag, status)
        pacing = _Backoff()
        while (message := self.comm.Improbe(ANY, self.tag, status)) is None:
            pacing.pause()
        return message

    # Contract: the frame's payload message, received into a bytearray of its own.
    def _payload(self, plen: int) -> bytearray:
        MPI = self._MPI
        out = bytearray(plen)
        status = MPI.Status()
        self.comm.Recv([out, plen, MPI.BYTE], self.peer, self.tag, status)
        if status.Get_count(MPI.BYTE) != plen:
            raise FrameError(f"payload of {status.Get_count(MPI.BYTE)} bytes, header said {plen}")
        return out


class _Backoff:
    """The pauses between a polling reader's probes: POLL_YIELDS yields of the CPU,
    then POLL_FAST sleeps of POLL_MIN, then sleeps doubling up to POLL_MAX."""

    __slots__ = ("probes", "delay")

    def __init__(self) -> None:
        self.probes, self.delay = 0, POLL_MIN

    # Contract: one pause, never longer than ``left`` seconds (None: no limit).
    def pause(self, left: float | None = None) -> None:
        self.probes += 1
        if self.probes <= POLL_YIELDS:
            os.sched_yield()
            return
        time.sleep(self.delay if left is None else min(self.delay, left))
        if self.probes > POLL_YIELDS + POLL_FAST:
            self.delay = min(2 * self.delay, POLL_MAX)


# Contract: (kind, flags, rid, oid, body length, payload length) of a message
# of ``n`` bytes, or FrameError naming what breaks the framing rules.
def _check_header(buf, n: int, max_frame: int) -> tuple:
    if n < HEADER_SIZE:
        raise FrameError(f"message of {n} bytes is shorter than a frame header ({HEADER_SIZE})")
    kind, flags, rid, oid, blen, plen = read_header(buf, 0, max_frame)
    if HEADER_SIZE + blen != n:
        raise FrameError(f"header says a body of {blen} bytes, the message holds {n - HEADER_SIZE}")
    return kind, flags, rid, oid, blen, plen


# ---- a cluster's channels --------------------------------------------------------------

def check_wait() -> None:
    """Refuse a TORNADO_DSM_MPI_WAIT this module does not know, naming the accepted."""
    if WAIT not in ("poll", "block"):
        raise ValueError(f"TORNADO_DSM_MPI_WAIT={WAIT!r}: accepted are 'poll' (default) and 'block'")


def fine_timer_slack() -> None:
    """Let this thread's short sleeps (and those of the threads it starts) end on time:
    Linux's default timer slack of 50 us would make a reader's 10 us sleep 60 us."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    except (OSError, AttributeError):
        pass   # not Linux: sleeps are as coarse as they are


def cluster_comm(world, nnodes: int, cluster: int):
    """The communicator of cluster number ``cluster``: ranks 0..nnodes-1 of ``world``
    (collective over those ranks only; node k is rank k in it)."""
    group = world.Get_group().Range_incl([(0, nnodes - 1, 1)])
    try:
        return world.Create_group(group, cluster)
    finally:
        group.Free()


def add_mpi_channels(rt, comm) -> None:
    """Give runtime ``rt`` a call and a serve channel to every other node over ``comm``."""
    me = rt.node_id
    for peer in range(rt.nnodes):
        if peer == me:
            continue
        replies = MPIFrameReader(comm, me, peer, REPLIES, rt.max_frame)
        requests = MPIFrameReader(comm, me, peer, REQUESTS, rt.max_frame)
        rt.add_call_channel(MPIConnection(comm, me, peer, REQUESTS, replies.tag, rt.max_frame),
                            replies, peer)
        rt.add_serve_channel(MPIConnection(comm, me, peer, REPLIES, requests.tag, rt.max_frame),
                             requests, peer)


# ---- starting a cluster over MPI -------------------------------------------------------

class _Readiness:
    """Node 0's start-up bookkeeping under transport="mpi": which nodes said ``ready``
    (the ranks need no addresses, so nothing registers)."""

    def __init__(self, nnodes: int) -> None:
        self.nnodes = nnodes
        self.cond = threading.Condition()
        self.ready_nodes: dict[int, str | None] = {}

    def register(self, node: int, args) -> dict:
        raise RuntimeError(f"node {node} registered, but under transport='mpi' the ranks need "
                           f"no addresses: it runs another version of tornado_dsm")

    def ready(self, node: int, args) -> None:
        with self.cond:
            self.ready_nodes[node] = args.get("error")
            self.cond.notify_all()

    # Contract: returns once every other node is ready; NodeStartupError for the
    # first that failed, or naming the missing ones at ``deadline``.
    def wait(self, deadline: float) -> None:
        with self.cond:
            while len(self.ready_nodes) < self.nnodes - 1:
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sorted(set(range(1, self.nnodes)) - set(self.ready_nodes))
                    raise NodeStartupError(missing[0], f"nodes {missing} not ready within the start timeout")
                self.cond.wait(left)
        for node, error in sorted(self.ready_nodes.items()):
            if error:
                raise NodeStartupError(node, "an exception during start-up", error)


def start_over_mpi(job, nnodes: int, cluster: int, node: dict, init=None, init_args=()):
    """On rank 0: cluster number ``cluster`` of ``nnodes`` ranks over transport="mpi";
    ``node``: the settings every rank gets (key, attach, timeout, ...).  A NodeSet."""
    from ._startup import NodeSet, _open_clusters, _register_atexit, _run_init

    check_wait()
    rt = NodeRuntime(0, nnodes, node["key"], node["max_frame"], node["timeout"])
    nodes = NodeSet(rt, tempfile.mkdtemp(prefix="tornado-dsm-"))
    _register_atexit()
    _open_clusters.append(nodes)
    try:
        for rank in range(1, nnodes):
            job.send_start(rank, cluster, dict(node, transport="mpi", nnodes=nnodes))
        rt._registrar = _Readiness(nnodes)
        _set_current(rt)
        _connect(rt, cluster_comm(job.comm, nnodes, cluster), node.get("attach"))
        rt._registrar.wait(time.monotonic() + node["start_timeout"])
        if init is not None:
            _run_init(nodes, init, init_args)
    except BaseException:
        nodes.close()
        raise
    return nodes


def _connect(rt, comm, attach) -> None:
    """Channels to every other node over ``comm``, then the layer above (``attach``)."""
    fine_timer_slack()   # before the channels start their readers
    add_mpi_channels(rt, comm)
    if attach is not None:
        attach(rt)


def serve_over_mpi(job, message: dict) -> bool:
    """On rank k > 0: serve as node k of the cluster ``message`` starts, in this
    process, until node 0 ends it; False if it ended badly."""
    config = message["config"]
    logging.basicConfig(level=config.get("log_level", logging.WARNING),
                        format=f"tornado_dsm node {job.rank}: %(levelname)s %(message)s")
    rt = NodeRuntime(job.rank, config["nnodes"], config["key"], config["max_frame"], config["timeout"])
    _set_current(rt)
    comm = cluster_comm(job.comm, config["nnodes"], message["cluster"])
    try:
        _connect(rt, comm, config.get("attach"))
        error = None
    except BaseException:   # said to node 0, which raises it as NodeStartupError
        error = traceback.format_exc()
    try:
        rt.call(0, 0, "ready", {"error": error})
    except Exception as e:   # node 0 is gone: the node stops (below) as it would at the end
        log.warning("node %d: cannot tell node 0 it is ready: %s", job.rank, e)
        rt.stop()
    rt.stopped.wait()
    _set_current(None)
    return error is None and not rt.node0_lost


__all__ = ["MPIConnection", "MPIFrameReader", "add_mpi_channels", "cluster_comm", "serve_over_mpi",
           "start_over_mpi", "tag_of"]
