"""``tornado-dsm bench ppc``: the cost of a protected procedure call.

One run starts a two-node cluster (node 0 is this process, node 1 a spawned
process, Unix sockets by default) and measures, interleaved round by round so
every path sees the same machine:

* the floor: a raw Python socket round trip between the same two processes
  (64 bytes each way; node 1 echoes on one thread blocked in ``recv``, as the
  runtime's reader thread is), and beside it the same round trip with each
  end polling its socket up to 200 us before it sleeps in ``recv``, as the
  channels' readers do (kernel/net/_spinwait.py): the floor of a polled call;
* remote PPC, transport level: ``runtime.call(1, 0, "ping", None)``, served
  by node 1's node service on a pool worker;
* remote PPC through the COS: a call on a singleton NullObject homed on node
  1, from node 0 (its stub turns the call into a remote PPC);
* local PPC through the COS: a call on a singleton NullObject homed on node 0
  (translation table lookup, entry count, direct method call), timed in
  batches because a single call is close to the clock's resolution.

Under ``mpiexec -n 2`` the nodes are the job's ranks and ``--transport``
(default ``tcp,mpi``) measures each transport in turn, rows prefixed by its
name: "tcp" (ranks supervise child nodes that talk TCP) and "mpi" (the ranks
are the nodes, frames are MPI messages).  The "mpi" floor is a raw mpi4py
ping-pong of 16 bytes (and a row for 4 KiB) whose two ends wait in blocking
calls, MPICH's busy loop: the transport's readers poll instead (see
kernel/net/_mpi_transport.py), so the floor is what MPI could give with a CPU
spinning per waiter.  The transports are measured one after the other, not
interleaved: compare runs, not one row.

Where the scheduler puts the two processes decides the floor: on one CPU a
round trip is two context switches (about 5 µs here), across CPUs two
cross-CPU wake-ups (about 40-60 µs).  ``--pin`` fixes the placement so runs
compare; the remote PPC's extra cost is Python work (framing, msgpack, the
call bookkeeping) that the raw loop does not do, so its ratio is highest
when the floor is lowest (same CPU).
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import threading
import time

import attrs
import numpy as np

from tornado_dsm._bench import BenchResult, summarize
from tornado_dsm.kernel import MPI_TRANSPORTS, launched_by_mpi, spin_readable

HELP = "PPC latency: local and remote calls vs a raw socket round trip between the same processes"

_MSG = 64
ECHO_TAG = 30000   # the raw MPI ping-pong's tags (the transport's are 2 * node + 0/1)
_BATCH = 200   # local calls per timed batch
_POLL = 200e-6   # the polled floor: each end polls this long before it sleeps in recv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bench ppc``."""
    parser.add_argument("--calls", type=int, default=2000, help="round trips per path per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    parser.add_argument("--transport", type=transports, default=None,
                        help="transport(s) between the two nodes, comma-separated, measured one "
                             "after the other: unix, tcp; under mpiexec tcp, mpi (default unix; "
                             "under mpiexec tcp,mpi)")
    parser.add_argument("--pin", choices=("none", "same", "split"), default="none",
                        help="CPU placement: leave it to the scheduler (default), both nodes on "
                             "CPU 0 (same), or node 0 on CPU 0 and node 1 on CPU 1 (split)")


def transports(text: str) -> list[str]:
    """``--transport``'s value: a comma-separated list of transports, checked."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    accepted = MPI_TRANSPORTS if launched_by_mpi() else ("unix", "tcp")
    bad = [t for t in names if t not in accepted]
    if not names or bad:
        where = "under mpiexec" if launched_by_mpi() else "outside mpiexec; mpi needs mpiexec"
        raise argparse.ArgumentTypeError(f"{text!r}: accepted are {', '.join(accepted)} ({where}), "
                                         f"comma-separated")
    return names


def chosen_transports(args: argparse.Namespace) -> list[str]:
    """The transports to measure: ``--transport``, or every one this launch allows."""
    if args.transport is not None:
        return args.transport
    return list(MPI_TRANSPORTS) if launched_by_mpi() else ["unix"]


def over_transports(args: argparse.Namespace, measure_one) -> list[BenchResult]:
    """``measure_one(args, transport)`` for each chosen transport; with more than one,
    every row's name starts with its transport in brackets."""
    names = chosen_transports(args)
    out = []
    for transport in names:
        rows = measure_one(args, transport)
        out += [attrs.evolve(r, name=f"[{transport}] {r.name}") for r in rows] if len(names) > 1 else rows
    return out


def two_nodes(transport: str):
    """A two-node cluster over ``transport`` (the ranks of an MPI job under mpiexec)."""
    from tornado_dsm.kernel import start_mpi_nodes, start_nodes

    if launched_by_mpi():
        return start_mpi_nodes(2, transport=transport)
    return start_nodes(2, transport=transport)


def measure(args: argparse.Namespace) -> list[BenchResult]:
    """Run the benchmark over each transport: the floor first, then each path with its ratio."""
    if args.calls < 1 or args.rounds < 1:
        raise SystemExit(f"--calls and --rounds must be >= 1 (got {args.calls}, {args.rounds})")
    return over_transports(args, _measure_one)


def _measure_one(args: argparse.Namespace, transport: str) -> list[BenchResult]:
    with two_nodes(transport) as nodes:
        saved = os.sched_getaffinity(0)
        try:
            if args.pin != "none":
                pin_process(0)
                nodes.run_on(1, pin_process, 0 if args.pin == "same" else 1)
            samples = _collect(nodes, args.calls, args.rounds, transport)
        finally:
            pin_process(saved)
    where = "" if args.pin == "none" else f", pinned {args.pin}"
    if transport == "mpi":
        floor = summarize(f"floor: raw MPI ping-pong, 16 B (Recv-blocked echo{where})", samples["raw"])
        extra = [summarize("raw MPI ping-pong, 4 KiB", samples["raw 4k"], floor)]
    else:
        floor = summarize(f"floor: raw socket round trip ({transport}{where})", samples["raw"])
        extra = [summarize("raw round trip, both ends polling", samples["raw polled"], floor,
                           note=f"each end polls up to {_POLL * 1e6:.0f} us before it sleeps in recv, "
                                f"as the channels do (TORNADO_DSM_SPIN_US)")]
    return [
        floor, *extra,
        _vs_floors("remote PPC, transport (node service ping)", samples["ppc"], floor, extra),
        _vs_floors("remote PPC through the COS (singleton stub)", samples["cos-remote"], floor, extra),
        summarize("local PPC through the COS (translation table)", samples["cos-local"],
                  note=f"target: <= 2 us; timed in batches of {_BATCH}"),
    ]


def _vs_floors(name: str, ns, floor: BenchResult, extra: list) -> BenchResult:
    """A remote PPC row: its ratio to the floor (target <= 1.25x), and to the
    polled round trip where there is one."""
    row = summarize(name, ns, floor)
    polled = [r for r in extra if r.name.startswith("raw round trip, both ends polling")]
    note = "target: <= 1.25x floor" + (f"; {row.median_us / polled[0].median_us:.2f}x the polled round trip"
                                        if polled else "")
    return attrs.evolve(row, note=note)


def _collect(nodes, calls: int, rounds: int, transport: str) -> dict:
    from tornado_dsm.kernel import current_cos

    rt, cos = nodes.runtime, current_cos()
    local_oid = _create_null()
    remote_oid = nodes.run_on(1, _create_null)
    raw = _MPIRawPair(nodes) if transport == "mpi" else _RawPair(nodes, transport)
    paths = {
        "ppc": lambda: rt.call(1, 0, "ping", None),
        "cos-remote": lambda: cos.call(remote_oid, "nop"),
    }
    samples: dict = {}
    try:
        for r in range(rounds + 1):   # round 0 warms up (misses, pool threads, caches)
            for name, ns in raw.time(calls).items():
                if r:
                    samples.setdefault(name, []).append(ns)
            for name, fn in paths.items():
                ns = _time_each(fn, calls)
                if r:
                    samples.setdefault(name, []).append(ns)
            ns = _time_batches(lambda: cos.call(local_oid, "nop"), max(1, calls // 10))
            if r:
                samples.setdefault("cos-local", []).append(ns)
    finally:
        raw.close()
    return {k: np.concatenate(v) for k, v in samples.items()}


def pin_process(cpus) -> None:
    """Pin every thread of this process (and so the threads it starts) to ``cpus``."""
    cpus = {cpus} if isinstance(cpus, int) else set(cpus)
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, OSError):
            pass   # a thread that has just exited


def _time_each(fn, n: int) -> np.ndarray:
    ns = np.empty(n, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        fn()
        ns[i] = clock() - t0
    return ns


def _time_batches(fn, n: int) -> np.ndarray:
    ns = np.empty(n, dtype=np.float64)
    clock = time.perf_counter_ns
    for i in range(n):
        t0 = clock()
        for _ in range(_BATCH):
            fn()
        ns[i] = (clock() - t0) / _BATCH
    return ns


def _create_null() -> int:
    """On the calling node: a singleton NullObject homed here; returns its oid."""
    from tornado_dsm.kernel import current_cos
    from tornado_dsm.kernel import NullObject

    return current_cos().create(NullObject, name=f"bench-null-{os.getpid()}").oid


class _RawPair:
    """A plain socket between node 0 (this thread) and an echo thread on node 1."""

    def __init__(self, nodes, transport: str) -> None:
        self._dir = tempfile.mkdtemp(prefix="tornado-dsm-bench-")
        if transport == "unix":
            address = os.path.join(self._dir, "raw.sock")
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(address)
        else:
            server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            server.bind(("127.0.0.1", 0))
            address = list(server.getsockname())
        server.listen(1)
        self.sock, self.polled = (self._echo_connection(nodes, server, address, polled, transport)
                                  for polled in (False, True))
        server.close()
        self.msg = b"x" * _MSG

    @staticmethod
    def _echo_connection(nodes, server, address, polled: bool, transport: str) -> socket.socket:
        nodes.run_on(1, _start_echo, address, polled)
        sock, _ = server.accept()
        if transport == "tcp":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def time(self, calls: int) -> dict:
        """{"raw": ns of ``calls`` round trips, each end blocked in recv;
        "raw polled": the same with each end polling first, as the channels do}."""
        return {"raw": _time_each(lambda: self.round_trip(self.sock, 0.0), calls),
                "raw polled": _time_each(lambda: self.round_trip(self.polled, _POLL), calls)}

    def round_trip(self, sock: socket.socket, poll: float) -> None:
        """One message there and back; with ``poll`` > 0 s, poll that long before each recv."""
        sock.sendall(self.msg)
        got = 0
        while got < _MSG:
            if poll:
                spin_readable(sock.fileno(), poll)
            got += len(sock.recv(_MSG - got))

    def close(self) -> None:
        """Close both sockets (each echo thread sees EOF and ends)."""
        self.sock.close()
        self.polled.close()
        os.rmdir(self._dir) if not os.listdir(self._dir) else _unlink_all(self._dir)


class _MPIRawPair:
    """Raw mpi4py ping-pong between node 0 (this thread) and a thread of node 1, on the
    cluster's communicator (tags of its own).  Both ends wait in blocking calls,
    MPICH's busy loop: the best latency MPI offers, at a CPU per waiter, so the echo
    thread runs only while its round trips are timed (``time``), never beside the
    other paths."""

    def __init__(self, nodes) -> None:
        self.nodes = nodes
        self.comm = nodes.runtime._calls[1].conn.comm

    def time(self, calls: int) -> dict:
        """{"raw": ns of 16-byte round trips, "raw 4k": of 4 KiB ones}."""
        from mpi4py import MPI

        out = {}
        for name, size in (("raw", 16), ("raw 4k", 4096)):
            self.nodes.run_on(1, _start_mpi_echo, size)
            ping, pong = bytearray(size), bytearray(size)
            out[name] = _time_each(lambda: self._round_trip(ping, pong), calls)
            self.comm.Send([bytearray(0), MPI.BYTE], 1, ECHO_TAG)   # ends the echo thread
        return out

    def _round_trip(self, ping, pong) -> None:
        self.comm.Send(ping, 1, ECHO_TAG)
        self.comm.Recv(pong, 1, ECHO_TAG + 1)

    def close(self) -> None:
        """Nothing to close: each echo thread ended with its timing."""


def _start_mpi_echo(size: int) -> None:
    """On node 1: echo ``size``-byte MPI messages from node 0 on a thread, until an empty one."""
    from tornado_dsm.kernel import current_runtime

    comm = current_runtime()._calls[0].conn.comm
    threading.Thread(target=_mpi_echo, args=(comm, size), daemon=True, name="bench-mpi-echo").start()


def _mpi_echo(comm, size: int) -> None:
    from mpi4py import MPI

    buf, status = bytearray(size), MPI.Status()
    while True:
        comm.Recv(buf, 0, ECHO_TAG, status)
        if status.Get_count(MPI.BYTE) == 0:
            return
        comm.Send(buf, 0, ECHO_TAG + 1)


def _unlink_all(path: str) -> None:
    for name in os.listdir(path):
        os.unlink(os.path.join(path, name))
    os.rmdir(path)


def _start_echo(address, polled: bool = False) -> None:
    """On node 1: connect to ``address`` and echo everything back, on a thread
    (``polled``: polling before each recv, as a channel's reader does)."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address)
    else:
        sock = socket.create_connection(tuple(address))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=_echo, args=(sock, polled), daemon=True, name="bench-echo").start()


def _echo(sock: socket.socket, polled: bool) -> None:
    with sock:
        while True:
            if polled:
                spin_readable(sock.fileno(), _POLL)
            data = sock.recv(65536)
            if not data:
                return
            sock.sendall(data)
