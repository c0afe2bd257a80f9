"""Node 0's program in the two-namespace test: ``python netnsprogs.py ADDRESS KEY_FILE DIR``.

It runs in the "near" network namespace and starts a 3-node cluster over TCP at
ADDRESS; nodes 1 and 2 join from the "far" namespace (``tornado-dsm node --join``).
It prints ``RESULT <json>`` lines: where the nodes run, a litmus subset, a
file-backed array written and flushed from the far side, then a far node killed.
Functions defined here reach the far nodes by value; clusterprogs by name
(the test puts this directory on their PYTHONPATH).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import clusterprogs as progs
import tornado_dsm as td

LITMUS = {   # name: (two threads' programs on words x and y, outcomes SC forbids)
    "MP": ([[("w", "x", 1), ("w", "y", 1)], [("r", "y"), ("r", "x")]], {((), (1, 0))}),
    "SB": ([[("w", "x", 1), ("r", "y")], [("w", "y", 1), ("r", "x")]], {((0,), (0,))}),
    "LB": ([[("r", "x"), ("w", "y", 1)], [("r", "y"), ("w", "x", 1)]], {((1,), (1,))}),
}


def result(name: str, value) -> None:
    print("RESULT " + json.dumps({name: value}), flush=True)


def where():
    return {"node": td.current_node(), "pid": os.getpid(), "netns": os.stat("/proc/self/ns/net").st_ino}


def litmus(cluster, iterations: int) -> dict:
    """Each test with its threads on nodes (0, 1) (across the veth) and (1, 2) (far side)."""
    a = cluster.zeros((1024,), np.int64)
    rnd, seen = random.Random(4), {}
    with ThreadPoolExecutor(2) as pool:
        for (name, (threads, forbidden)), on, y in itertools.product(LITMUS.items(), ((0, 1), (1, 2)), (8, 512)):
            words = {"x": 0, "y": y}
            programs = [[(op[0], words[op[1]], *op[2:]) for op in t] for t in threads]
            outcomes = {_once(cluster, a, programs, words, on, pool, rnd) for _ in range(iterations)}
            seen[f"{name}/nodes{on[0]}{on[1]}/{'same-page' if y == 8 else 'two-pages'}"] = \
                sorted(map(str, outcomes & forbidden))
    cluster.free(a)
    return seen


def _once(cluster, a, programs, words, on, pool, rnd):
    cluster.run(progs.reset_words, a, list(words.values()), on=0, threads=1)
    futures = [pool.submit(cluster.run, progs.litmus_thread, a, ops,
                           [rnd.randrange(0, 1000) if rnd.random() < 0.5 else 0 for _ in ops],
                           on=node, threads=1)
               for node, ops in zip(on, programs)]
    return tuple(tuple(f.result(timeout=60)[0]) for f in futures)


def fill(a, value: int) -> int:
    a[:] = value
    return int(a[0])


def file_backed(cluster, path: str) -> dict:
    """Node 2 (far) writes the whole file-backed array; node 0 flushes; the file has it."""
    n = 64 * 512
    with open(path, "wb") as f:
        f.truncate(n * 8)
    a = cluster.map_file(path, (n,), np.int64)
    written_far = cluster.run(fill, a, 1234, on=2)
    flushed = cluster.flush(a)
    on_disk = np.fromfile(path, dtype=np.int64)
    cluster.free(a)          # before a far node is killed: its pages must not be lost with it
    return {"written_far": written_far, "flushed_pages": flushed,
            "on_disk_all_1234": bool((on_disk == 1234).all()), "on_disk_words": int(on_disk.size)}


def kill_far_node(cluster, node: int) -> dict:
    """Kill ``node`` (in the far namespace) while a run waits on it: how soon NodeLost comes."""
    pid = cluster.run(os.getpid, on=node)[0]
    caught: dict = {}

    def wait_on_it():
        try:
            cluster.run(time.sleep, 30, on=node)
            caught["error"] = "the run finished"
        except td.NodeLost as e:
            caught["error"], caught["at"] = str(e), time.monotonic()

    t = threading.Thread(target=wait_on_it)
    t.start()
    time.sleep(0.5)          # the run is under way on the node
    killed_at = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    t.join(30)
    return {"error": caught.get("error"), "seconds": caught.get("at", 1e9) - killed_at,
            "survivors": cluster.run(td.current_node), "lost": sorted(cluster.lost_nodes())}


def main(address: str, key_file: str, directory: str) -> None:
    with td.Cluster(nodes=3, transport="tcp", address=address, key=td.read_key_file(key_file),
                    join=2, debug=True, size=64 << 20) as cluster:
        result("where", cluster.run(where))
        result("litmus", litmus(cluster, 12))
        result("file", file_backed(cluster, os.path.join(directory, "far.bin")))
        result("kill", kill_far_node(cluster, 2))


if __name__ == "__main__":
    main(*sys.argv[1:])
