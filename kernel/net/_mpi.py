"""Nodes started by an MPI launcher: ``mpiexec -n N`` runs N copies of one program.

Design
------
Rank 0 is node 0: it runs the program (or the scenario).  Every other rank
serves as a node of each cluster rank 0 starts, until rank 0's program ends.
Two transports (``MPI_TRANSPORTS``):

* "tcp" (the default, ``DEFAULT_TRANSPORT``): MPI carries only the control
  messages; rank k supervises node k as a child process, the nodes talk over
  the ordinary authenticated TCP transport, and node k joins through the
  ordinary join path (``run_node``) with k as its node id.  A node that dies
  is a ``NodeLost`` on rank 0.
* "mpi": rank k is node k, in its own process, and PPC frames are MPI
  messages (``_mpi_transport``).  A node dying by a signal ends the whole job
  (see below), with no ``NodeLost``.

Why "tcp" stays the default: measured here (README, "Beyond one host") "mpi"
makes a lone remote PPC between two ranks about 1.6x faster (median of 5
runs 21 vs 35 us), but on 3 nodes sharing 2 loaded CPUs its remote read
faults were slower in the median of 15 runs (167 vs 140 us) and far more
variable, and a write invalidating a reader 1.5x slower (519 vs 354 us): MPI's shared memory must
be polled, and polling readers compete with the work for the CPUs.  It is
not clearly faster, and it gives up ``NodeLost``.

Why, over "tcp", a rank does not serve in its own process: MPICH's launcher
SIGKILLs every rank within about 0.1 s of one rank process dying by a signal
(even with ``-disable-auto-cleanup``), so rank 0 could not raise ``NodeLost``.  Rank k is
therefore a thin supervisor: it spawns its node as a child process, as
``start_nodes`` spawns nodes on one host, and waits for it.  A node that dies
(a crash, the OOM killer, SIGKILL) is a child that died: rank 0 loses its
connection at once, the supervisor sends over MPI how it ended (signal or
exit code, last Python frame) for the ``NodeLost`` message, and stays alive,
so the launcher leaves the job running.  Rank 0's end message then carries a
non-zero status (a node was lost, or the program raised), every rank
finalizes MPI and exits with it: the launcher kills nobody after a process
finalized, whatever its status.  A rank process killed outright is the
launcher's business: it kills every rank at once (no hang, non-zero status).

Rank 0 sends the end message from an atexit hook registered when this module
is imported (after every cluster has closed), also when its program failed
before making a cluster: MPICH's MPI_Finalize waits for every rank, and the
others would wait for rank 0 for ever.

Waiting ranks poll with ``iprobe`` and a short sleep instead of a blocking
receive: MPICH's blocking calls spin a CPU, and the nodes need the CPUs.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import logging
import multiprocessing
import os
import signal
import socket
import struct
import sys
import tempfile
import threading
import time

from ._loss import describe_end
from ._mpi_transport import serve_over_mpi, start_over_mpi
from ._startup import cleanup_dir, spawned_main, start_nodes
from ._transport import DEFAULT_MAX_FRAME, check_key, new_key, parse_address


# Set by the launchers that start MPI processes: MPICH's hydra, Intel MPI and
# Slurm's PMI (PMI_RANK), PMIx launchers (PMIX_RANK), Open MPI (OMPI_COMM_WORLD_RANK).
LAUNCHER_VARIABLES = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK")
# MPI tags: rank k -> rank 0 (where it runs; how its node ended), rank 0 -> rank k (start, end)
PLACE, LOSS, CONTROL = 7100, 7102, 7101
# transport="tcp": ranks supervise child nodes that talk TCP; "mpi": every rank is its
# node and frames are MPI messages (_mpi_transport).  The default: see DEFAULT_TRANSPORT.
MPI_TRANSPORTS = ("tcp", "mpi")
DEFAULT_TRANSPORT = "tcp"
POLL = 0.02                  # seconds between polls of a waiting rank
REPORT_WAIT = 2.0            # seconds rank 0 waits for a lost node's rank to say how it ended
SIOCGIFADDR = 0x8915

_job = None


def launched_by_mpi() -> bool:
    """Whether an MPI launcher (mpiexec, mpirun, srun) started this process."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def _launcher_rank() -> int | None:
    """This process's rank as the launcher says (before MPI is initialized)."""
    for name in LAUNCHER_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def mpi_job() -> "MPIJob":
    """This process's MPI job (MPI is initialized on the first call)."""
    global _job
    if _job is None:
        if not launched_by_mpi():
            raise RuntimeError(f"this process was not started by an MPI launcher (none of "
                               f"{', '.join(LAUNCHER_VARIABLES)} is set): run it as "
                               f"`mpiexec -n N python program.py` or `mpiexec -n N tornado-dsm run FILE`")
        _job = MPIJob(_comm_world())
    return _job


def _comm_world():
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise RuntimeError(f"nodes under an MPI launcher need mpi4py and an MPI library: "
                           f"pip install 'tornado_dsm[mpi]' ({e})") from None
    return MPI.COMM_WORLD


class MPIJob:
    """The ranks of this MPI job: ``rank``, ``size``, where each runs, and (rank 0) how it ends.

    No collective call: a rank k sends rank 0 where it runs and goes on to
    wait for control messages, so a rank 0 that never makes a cluster (it
    failed first) can still end the job (see ``_end_at_exit``)."""

    def __init__(self, comm) -> None:
        self.comm, self.rank, self.size = comm, comm.Get_rank(), comm.Get_size()
        self.places = [_place()]
        if self.rank == 0:
            self.places += [self._poll_recv(rank, PLACE) for rank in range(1, self.size)]
        else:
            self._sent = comm.isend(self.places[0], dest=0, tag=PLACE)
        self.clusters = itertools.count(1)   # rank 0: the clusters it started, numbered
        self.failed = False                  # rank 0: a node was lost
        self.ended = False
        self._mpi_lock = threading.Lock()    # rank 0: reader threads ask for loss reports

    def _poll_recv(self, source: int, tag: int):
        """A message from ``source``, waited for without spinning a CPU."""
        while not self.comm.iprobe(source=source, tag=tag):
            time.sleep(POLL)
        return self.comm.recv(source=source, tag=tag)

    # -- where the ranks run --

    def local(self, rank: int) -> bool:
        """Whether rank 0's loopback reaches ``rank`` (same boot, same network namespace)."""
        return self.places[rank][:2] == self.places[0][:2]

    def node0_host(self, rank: int, listen_host: str) -> str:
        """The address of rank 0 that ``rank`` should dial."""
        if listen_host not in ("0.0.0.0", ""):
            return listen_host
        if self.local(rank):
            return "127.0.0.1"
        theirs = self.places[rank][2]
        if not theirs:
            raise RuntimeError(f"MPI rank {rank} runs on another host and has no IPv4 address: "
                               f"give rank 0's address with address='HOST:PORT'")
        return _source_toward(theirs[0])

    # -- rank 0 --

    def send_start(self, rank: int, cluster: int, config: dict) -> None:
        self.comm.send({"kind": "start", "cluster": cluster, "config": config}, dest=rank, tag=CONTROL)

    def describe_loss(self, cluster: int, node: int) -> str:
        """How node ``node``'s process ended, as its rank reports it (rank 0, on a loss)."""
        deadline = time.monotonic() + REPORT_WAIT
        while time.monotonic() < deadline:
            with self._mpi_lock:
                report = self.comm.recv(source=node, tag=LOSS) \
                    if self.comm.iprobe(source=node, tag=LOSS) else None
            if report is not None and report[0] == cluster:
                return f"{report[1]} (MPI rank {node})"
            if report is None:
                time.sleep(POLL)
        return f"MPI rank {node} did not say how its node ended within {REPORT_WAIT:g} s"

    def end(self, status: int | None = None) -> None:
        """Tell every other rank the job is over, with the status they exit with (once).
        Default: 1 if a node was lost or the program died of an exception, else 0."""
        if self.ended or self.rank != 0:
            return
        self.ended = True
        _send_end(self.comm, (1 if self.failed or _died_of_exception() else 0) if status is None else status)

    # -- rank k > 0 --

    def receive(self) -> dict:
        """The next control message from rank 0."""
        return self._poll_recv(0, CONTROL)

    def report_loss(self, cluster: int, text: str) -> None:
        self.comm.send((cluster, text), dest=0, tag=LOSS)


def _send_end(comm, status: int) -> None:
    for rank in range(1, comm.Get_size()):
        comm.send({"kind": "end", "status": status}, dest=rank, tag=CONTROL)


def _died_of_exception() -> bool:
    """At exit: whether the program ended with an uncaught exception (CPython keeps it
    in sys.last_value when it prints the traceback, before the atexit handlers run)."""
    return getattr(sys, "last_value", None) is not None


def _end_at_exit() -> None:
    """Rank 0 at exit: end the job, so the waiting ranks do not wait for ever.  Also when
    the program failed before it made any cluster, if it had initialized MPI: MPICH's
    MPI_Finalize waits for every rank, and the others wait for this message."""
    if _job is not None:
        _job.end()
        return
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is not None and MPI.Is_initialized() and not MPI.Is_finalized():
        _send_end(MPI.COMM_WORLD, 1 if _died_of_exception() else 0)


# Registered at import, before any cluster's (atexit runs the last registered first, so
# every cluster is closed before this runs; mpi4py finalizes MPI after every atexit hook).
if launched_by_mpi() and _launcher_rank() == 0:
    atexit.register(_end_at_exit)


def _place() -> tuple:
    """(boot id, network namespace, IPv4 addresses) of this process."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = f.read().strip()
    return boot, os.stat("/proc/self/ns/net").st_ino, _ipv4_addresses()


def _ipv4_addresses() -> list[str]:
    """The primary IPv4 address of every interface but loopback."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue   # no IPv4 address on this interface
            address = socket.inet_ntoa(packed[20:24])
            if not address.startswith("127."):
                found.append(address)
    return found


def _source_toward(address: str) -> str:
    """This host's address on the route to ``address`` (the kernel's choice; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((address, 9))
        return s.getsockname()[0]


# ---- rank 0 ---------------------------------------------------------------------------

def start_mpi_nodes(nnodes: int | None = None, *, transport: str | None = None,
                    address: str | None = None, key: bytes | None = None,
                    attach=None, timeout: float | None = None, start_timeout: float = 60.0,
                    max_frame: int = DEFAULT_MAX_FRAME, log_level: int = logging.WARNING,
                    **options):
    """On rank 0: a cluster of ``nnodes`` nodes (default: the job size), node k on MPI rank k.

    ``transport``: "tcp" (rank k supervises node k as a child process; the
    nodes talk TCP, and a node that dies is a ``NodeLost``) or "mpi" (rank k
    is node k; frames are MPI messages, see ``_mpi_transport``); None:
    ``DEFAULT_TRANSPORT``.  ``address`` (tcp): "HOST:PORT" node 0 listens on
    (default 127.0.0.1 when every rank of the cluster shares rank 0's host
    and network, else 0.0.0.0, port chosen by the kernel).  ``key``: the
    cluster secret (default: a fresh one, sent to the ranks over MPI).
    ``options``: the other ``start_nodes`` arguments (init, init_args).
    Returns a ``NodeSet``.
    """
    job = mpi_job()
    nnodes = job.size if nnodes is None else nnodes
    _check_rank0(job, nnodes)
    transport = _check_transport(transport, address)
    key = new_key() if key is None else check_key(key)
    cluster = next(job.clusters)
    node = {"key": key, "attach": attach, "timeout": timeout, "start_timeout": start_timeout,
            "max_frame": max_frame, "log_level": log_level}
    if transport == "mpi":
        nodes = start_over_mpi(job, nnodes, cluster, node, **options)
    else:
        nodes = _start_tcp(job, nnodes, cluster, node, address, **options)
    rt = nodes.runtime
    rt.add_node_lost_listener(lambda peer, reason: _lost(job, rt))
    return nodes


def _check_transport(transport, address) -> str:
    """The transport of an MPI job's cluster, checked (None: the default)."""
    transport = DEFAULT_TRANSPORT if transport is None else transport
    if transport not in MPI_TRANSPORTS:
        raise ValueError(f"transport={transport!r} under an MPI launcher: accepted are "
                         f"{', '.join(map(repr, MPI_TRANSPORTS))} (default {DEFAULT_TRANSPORT!r})")
    if address is not None and transport != "tcp":
        raise ValueError(f"address={address!r} needs transport='tcp' (the nodes of transport="
                         f"{transport!r} listen on nothing)")
    return transport


def _start_tcp(job: MPIJob, nnodes: int, cluster: int, node: dict, address, **options):
    """Rank 0's side of transport="tcp": node 0 listens, rank k spawns node k, which joins."""
    ranks = range(1, nnodes)
    listen = address or ("127.0.0.1:0" if all(job.local(r) for r in ranks) else "0.0.0.0:0")

    def announce(where: str) -> None:
        host, port = parse_address(where)
        for r in ranks:
            listen_at = [host if host != "0.0.0.0" else "127.0.0.1", 0] if job.local(r) else None
            job.send_start(r, cluster, dict(node, address=[job.node0_host(r, host), port], listen=listen_at))

    nodes = start_nodes(nnodes, "tcp", address=listen, join=nnodes - 1, announce=announce, **node, **options)
    nodes.runtime.describe_loss = lambda peer: job.describe_loss(cluster, peer)
    return nodes


def _check_rank0(job: MPIJob, nnodes) -> None:
    if job.rank != 0:
        raise RuntimeError(f"start_mpi_nodes runs on MPI rank 0 (node 0), not on rank {job.rank}: "
                           f"the other ranks call serve_mpi_ranks()")
    if not isinstance(nnodes, int) or isinstance(nnodes, bool) or not 1 <= nnodes <= job.size:
        raise ValueError(f"nodes={nnodes!r} does not fit the MPI job of {job.size} ranks "
                         f"(mpiexec -n {job.size}): expected an int from 1 to {job.size}")


def _lost(job: MPIJob, rt) -> None:
    if not rt.stopping:   # nodes disconnecting while the cluster closes are not lost
        job.failed = True


# ---- rank k > 0 -----------------------------------------------------------------------

def serve_mpi_ranks() -> int:
    """On rank k > 0: serve as node k of every cluster rank 0 starts, until rank 0 ends
    the job; returns this rank's exit status (rank 0's, or 1 if this rank's node died)."""
    job = mpi_job()
    if job.rank == 0:
        raise RuntimeError("serve_mpi_ranks runs on MPI ranks other than 0; rank 0 starts the "
                           "clusters (start_mpi_nodes)")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # node 0 decides what a Ctrl-C means
    failed = False
    while True:
        message = job.receive()
        if message["kind"] == "end":
            return message["status"] or int(failed)
        failed |= not _serve(job, message)


def _serve(job: MPIJob, message: dict) -> bool:
    """Run this rank's node of one cluster (transport="tcp": in a child process,
    "mpi": in this process); False if it ended badly."""
    if message["config"].get("transport") == "mpi":
        return serve_over_mpi(job, message)
    rundir = tempfile.mkdtemp(prefix="tornado-dsm-")
    try:
        config = dict(message["config"], node=job.rank, crash_log=os.path.join(rundir, "node.crash"))
        proc = multiprocessing.get_context("spawn").Process(
            target=spawned_main, args=(config,), name=f"tornado-dsm-node-{job.rank}")
        with _main_not_rerun():
            proc.start()
        proc.join()
        if proc.exitcode == 0:
            return True
        text = describe_end(proc, config["crash_log"])
    finally:
        cleanup_dir(rundir)
    job.report_loss(message["cluster"], text)
    print(f"tornado-dsm: node {job.rank} (MPI rank {job.rank}) ended: {text}", file=sys.stderr, flush=True)
    return False


@contextlib.contextmanager
def _main_not_rerun():
    """Spawn a node without importing the main script again: every rank already runs
    it, and the node gets the functions it runs by value (cloudpickle)."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update(saved)


__all__ = ["MPIJob", "launched_by_mpi", "mpi_job", "serve_mpi_ranks", "start_mpi_nodes"]
