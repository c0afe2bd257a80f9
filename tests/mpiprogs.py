"""Programs the MPI tests run under mpiexec: ``mpiexec -n N python mpiprogs.py NAME [ARGS]``.

Every rank runs this file; ``td.Cluster.from_mpi`` keeps rank 0 and makes the
other ranks serve as nodes.  Rank 0 prints one line ``RESULT <json>`` with what
the test checks; a line ``BODY`` for each process that ran the code after
``from_mpi`` (there must be one).  Functions run on nodes are defined here, in
``__main__``: they reach the nodes by value.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import clusterprogs as progs
import tornado_dsm as td
from tornado_dsm.kernel import DEFAULT_BASE

WINDOW_AREA = (DEFAULT_BASE, DEFAULT_BASE + (1 << 40))   # every window a cluster here may use


def result(value) -> None:
    print("RESULT " + json.dumps(value), flush=True)


def mappings_in_window_area() -> list[str]:
    """This process's mappings that overlap the window area, as /proc/self/maps lines."""
    found = []
    with open("/proc/self/maps") as f:
        for line in f:
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            if start < WINDOW_AREA[1] and end > WINDOW_AREA[0]:
                found.append(line.strip())
    return found


def loads_mpi() -> bool:
    """Whether this process has the MPI library (libmpi) mapped."""
    with open("/proc/self/maps") as f:
        return "libmpi" in f.read()


def place(grid, nodes):
    """Each node writes its band of rows; returns where it ran and what it sees."""
    me = td.current_node()
    rows = grid.shape[0] // nodes
    grid[me * rows:(me + 1) * rows] = me + 1
    return {"node": me, "pid": os.getpid(), "parent": os.getppid(), "mpi": loads_mpi(),
            "netns": os.stat("/proc/self/ns/net").st_ino,
            "band": float(grid[me * rows:(me + 1) * rows].sum()),
            "window_maps": mappings_in_window_area()}


def key_exposed(key: bytes, run_dir: str | None = None) -> list[str]:
    """Where this node's process, its parent (the rank) or ``run_dir``'s files show the key."""
    places = [f"/proc/{pid}/{what}" for pid in (os.getpid(), os.getppid()) for what in ("cmdline", "environ")]
    if run_dir:
        places += [os.path.join(run_dir, name) for name in os.listdir(run_dir)]
    found = []
    for path in places:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue   # a socket, or gone
        if key in data or key.hex().encode() in data:
            found.append(path)
    return found


def wrong_key_joiner(address: str) -> dict:
    """A process that tries to join with a key that is not the cluster's."""
    code = ("import sys, tornado_dsm as td; "
            "sys.exit(td.join_cluster(sys.argv[1], key=bytes(32), start_timeout=10))")
    r = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=60)
    return {"status": r.returncode, "stderr": r.stderr}


def basic() -> None:
    """Shared arrays across the ranks, where the nodes run, the window, a wrong-key joiner."""
    before = mappings_in_window_area()      # MPI is up (mpi4py imported by from_mpi's job)
    with td.Cluster.from_mpi(debug=True, transport="tcp") as cluster:
        print("BODY", flush=True)
        grid = cluster.zeros((300, 1024), np.float64)
        nodes = cluster.run(place, grid, cluster.nnodes)
        host, port = cluster.node_set.runtime.address
        refused = wrong_key_joiner(f"{host}:{port}")
        key = cluster.node_set.runtime.key
        exposed = cluster.run(key_exposed, key) + [key_exposed(key, cluster.node_set.run_dir)]
        result({"nnodes": cluster.nnodes, "nodes": nodes, "total": float(grid.sum()),
                "rank0_pid": os.getpid(), "rank0_window_maps_before": before,
                "rank0_window_maps": mappings_in_window_area(), "refused": refused,
                "after_refusal": cluster.run(td.current_node), "key_exposed": exposed})


def echo_page(page: bytes):
    """The page back, with its digest as this node computed it (a payload each way)."""
    return hashlib.sha256(page).hexdigest(), page


def over_mpi(transport: str = "mpi") -> None:
    """transport="mpi": nodes in the rank processes, a shared array written on every
    node, a page-sized payload to every node and back, and a 3 MiB one."""
    with td.Cluster.from_mpi(transport=transport, debug=True) as cluster:
        print("BODY", flush=True)
        grid = cluster.zeros((300, 1024), np.float64)
        nodes = cluster.run(place, grid, cluster.nnodes)
        page = np.random.default_rng(18).integers(0, 256, 4096, dtype=np.uint8).tobytes()
        echoes = [cluster.node_set.run_on(k, echo_page, page) for k in range(1, cluster.nnodes)]
        big = os.urandom(3 << 20)   # beyond MPICH's eager limit: a rendezvous each way
        big_echo = cluster.node_set.run_on(2, echo_page, big)
        timed = cluster.node_set.runtime.call(2, 0, "ping", None, timeout=10.0)
        try:
            cluster.node_set.run_on(1, time.sleep, 1.0, timeout=0.2)
            timed_out = "no timeout"
        except td.PPCTimeout as e:
            timed_out = str(e)
        result({"nnodes": cluster.nnodes, "nodes": nodes, "rank0_pid": os.getpid(),
                "total": float(grid.sum()), "sums": [float(grid[i * 100:(i + 1) * 100].sum()) for i in range(3)],
                "echoes_intact": [d == hashlib.sha256(page).hexdigest() and p == page for d, p in echoes],
                "big_intact": big_echo[0] == hashlib.sha256(big).hexdigest() and big_echo[1] == big,
                "timed_ping": timed, "timed_out": timed_out,
                "transport": cluster.node_set.runtime._calls[1].conn.__class__.__name__})


def cpu_seconds() -> float:
    """CPU time this node's process has used so far (every thread)."""
    return time.process_time()


def idle_cpu(transport: str, seconds: str = "2") -> None:
    """The CPU each node's process uses while the cluster sits idle for ``seconds``."""
    with td.Cluster.from_mpi(transport=transport) as cluster:
        time.sleep(0.5)   # start-up's traffic is over
        before = cluster.run(cpu_seconds)
        time.sleep(float(seconds))
        used = [b - a for a, b in zip(before, cluster.run(cpu_seconds))]
        result({"transport": transport, "seconds": float(seconds), "cpu": used})


X, Y = 0, 512          # two words: on two pages ("two-pages"), or Y = 8 for "same-page"
TESTS = {              # name: (thread programs, outcomes SC forbids: registers of both threads)
    "MP": ([[("w", "x", 1), ("w", "y", 1)], [("r", "y"), ("r", "x")]], {((), (1, 0))}),
    "SB": ([[("w", "x", 1), ("r", "y")], [("w", "y", 1), ("r", "x")]], {((0,), (0,))}),
    "LB": ([[("r", "x"), ("w", "y", 1)], [("r", "y"), ("w", "x", 1)]], {((1,), (1,))}),
}


def litmus(iterations: str, transport: str = "") -> None:
    """MP, SB and LB with thread i on node i + 1, concurrently, on one and on two pages
    (over ``transport``, default the MPI job's default)."""
    with td.Cluster.from_mpi(debug=True, transport=transport or None) as cluster:
        a = cluster.zeros((1024,), np.int64)
        rnd = random.Random(18)
        seen = {}
        with ThreadPoolExecutor(2) as pool:
            for (name, (threads, forbidden)), y in itertools.product(TESTS.items(), (8, Y)):
                words = {"x": X, "y": y}
                programs = [[(op[0], words[op[1]], *op[2:]) for op in t] for t in threads]
                outcomes = {_once(cluster, a, programs, words, pool, rnd) for _ in range(int(iterations))}
                seen[f"{name}/{'same-page' if y == 8 else 'two-pages'}"] = {
                    "outcomes": sorted(map(str, outcomes)),
                    "forbidden_seen": sorted(map(str, outcomes & forbidden))}
        result(seen)


def _once(cluster, a, programs, words, pool, rnd):
    cluster.run(progs.reset_words, a, list(words.values()), on=0, threads=1)
    futures = [pool.submit(cluster.run, progs.litmus_thread, a, ops,
                           [rnd.randrange(0, 2000) if rnd.random() < 0.5 else 0 for _ in ops],
                           on=t + 1, threads=1)
               for t, ops in enumerate(programs)]
    return tuple(tuple(f.result(timeout=60)[0]) for f in futures)


def die_on(node: int) -> int:
    """SIGKILL this node's own process if it is ``node``; the others nap."""
    if td.current_node() == node:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.5)
    return td.current_node()


def pid_and_parent():
    return os.getpid(), os.getppid()


def kill_node(node: str, transport: str = "tcp") -> None:
    """Node ``node`` is SIGKILLed during a run: rank 0 reports the NodeLost, then raises it
    (transport="mpi": the node is its rank, and the launcher ends the job instead)."""
    with td.Cluster.from_mpi(transport=transport) as cluster:
        pids = cluster.run(pid_and_parent)
        print("PIDS " + json.dumps(pids), flush=True)
        t0 = time.monotonic()
        try:
            cluster.run(die_on, int(node))
        except td.NodeLost as e:
            result({"error": str(e),
                    "seconds": time.monotonic() - t0, "pids": pids, "survivors": cluster.run(td.current_node)})
            raise


def kill_rank(rank: str) -> None:
    """The MPI process of rank ``rank`` (not its node) is SIGKILLed: the launcher ends the job."""
    with td.Cluster.from_mpi(transport="tcp") as cluster:
        pids = cluster.run(pid_and_parent)
        result({"pids": pids})
        os.kill(pids[int(rank)][1], signal.SIGKILL)
        cluster.run(time.sleep, 30)
        result({"error": "the job went on"})


def too_many(nodes: str) -> None:
    """from_mpi(nodes=...) that is not the job size."""
    with td.Cluster.from_mpi(nodes=int(nodes)):
        print("BODY", flush=True)


def bad_transport(transport: str) -> None:
    """from_mpi with a transport an MPI job does not take."""
    td.Cluster.from_mpi(transport=transport)


def fail_before() -> None:
    """Rank 0 raises before from_mpi; the others are already waiting in it."""
    from mpi4py import MPI
    if MPI.COMM_WORLD.Get_rank() == 0:
        raise RuntimeError("rank 0 failed before the cluster")
    td.Cluster.from_mpi()


if __name__ == "__main__":
    globals()[sys.argv[1]](*sys.argv[2:])
