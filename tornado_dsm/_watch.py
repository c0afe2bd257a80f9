"""Watching a running cluster: snapshots, rates, and the watch socket `top` attaches to.

A *snapshot* is what node 0 can gather about the cluster at one instant:
every node's counters (faults by kind, PPCs, resident pages), every
clustered object's calls, misses, reps and stubs, and every array's faults
and resident pages.  A `WatchView` is the difference of two snapshots over
their interval: rates per second, plus the current levels.

`cluster.watch()` takes the snapshots itself.  `tornado-dsm top` runs in
another process: every cluster listens on ``watch.sock`` in node 0's private
run directory (mode 0700), next to a key of its own (mode 0600: not the cluster
key, which would let whoever reads the file run code on every node); a
client proves it holds the key with the same HMAC challenge-response as a
node, then asks for snapshots one at a time (one request byte, one
length-prefixed msgpack reply), so it sets the pace.  A snapshot costs one
statistics gather (a few PPCs per node); the cluster does nothing for a
watcher between its requests.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import attrs
import msgpack

from tornado_dsm.kernel import connect, handshake_accept, listen, read_key_file, write_key_file

from ._columns import ruled

SOCKET, KEY = "watch.sock", "watch.key"
MAX_WATCHERS = 8
_LENGTH = struct.Struct("!I")
_NODE_COUNTERS = ("read_faults", "write_faults", "incore_faults", "coherence_faults", "ppc_local",
                  "ppc_remote", "messages", "bytes")


def snapshot(cluster) -> dict:
    """The cluster's counters now (msgpack-able): nodes, objects, arrays."""
    stats = cluster.statistics()
    view = cluster.inspect()
    nodes = [dict({k: getattr(s, k) for k in _NODE_COUNTERS}, node=s.node, resident=s.resident_pages)
             for s in stats.nodes]
    objects = [{"name": o.name, "cls": o.cls, "policy": o.policy, "home": o.home, "reps": len(o.rep_nodes),
                "stubs": len(o.stub_nodes), "local": o.calls_local, "remote": o.calls_remote,
                "misses": o.misses} for o in view.objects]
    return {"time": time.monotonic(), "nnodes": cluster.nnodes, "nodes": nodes, "objects": objects}


@attrs.frozen
class WatchView:
    """Rates over ``seconds`` between two snapshots; ``nodes`` and ``objects`` are
    rows of dicts (rates end in ``_per_s``); printing it gives the two tables."""

    seconds: float
    nodes: tuple
    objects: tuple

    def __str__(self) -> str:
        return "\n".join([f"over the last {self.seconds:.1f} s", _node_table(self.nodes), "",
                          _object_table(self.objects)])


def rates(before: dict, after: dict) -> WatchView:
    """The WatchView from snapshot ``before`` to snapshot ``after``."""
    dt = max(after["time"] - before["time"], 1e-9)
    nodes = []
    for b, a in zip(before["nodes"], after["nodes"]):
        row = {"node": a["node"], "resident": a["resident"]}
        row.update({f"{k}_per_s": (a[k] - b[k]) / dt for k in _NODE_COUNTERS})
        nodes.append(row)
    old = {o["name"]: o for o in before["objects"]}
    objects = []
    for o in after["objects"]:
        b = old.get(o["name"], dict(o, local=0, remote=0, misses=0))
        objects.append({**{k: o[k] for k in ("name", "cls", "policy", "home", "reps", "stubs")},
                        "local_per_s": (o["local"] - b["local"]) / dt,
                        "remote_per_s": (o["remote"] - b["remote"]) / dt,
                        "misses_per_s": (o["misses"] - b["misses"]) / dt})
    return WatchView(dt, tuple(nodes), tuple(objects))


def _node_table(nodes) -> str:
    header = ["node", "read/s", "write/s", "in-core/s", "coher./s", "PPC loc/s", "PPC rem/s", "msgs/s",
              "KiB/s", "resident"]
    rows = [[str(n["node"]), *(f"{n[k + '_per_s']:.0f}" for k in _NODE_COUNTERS[:7]),
             f"{n['bytes_per_s'] / 1024:.0f}", str(n["resident"])] for n in nodes]
    return "\n".join(ruled(header, rows))


def _object_table(objects) -> str:
    header = ["object", "class", "policy", "home", "reps", "stubs", "calls loc/s", "calls rem/s", "misses/s"]
    rows = [[o["name"], o["cls"], o["policy"], str(o["home"]), str(o["reps"]), str(o["stubs"]),
             f"{o['local_per_s']:.0f}", f"{o['remote_per_s']:.0f}", f"{o['misses_per_s']:.0f}"]
            for o in objects]
    return "\n".join(ruled(header, rows))


# ---- the watch socket (node 0) ------------------------------------------------------

class WatchServer:
    """Serves snapshots of ``cluster`` on ``run_dir/watch.sock`` to key holders."""

    def __init__(self, cluster, run_dir: str, key: bytes) -> None:
        self._cluster, self._path = cluster, os.path.join(run_dir, SOCKET)
        write_key_file(os.path.join(run_dir, KEY), key)
        self._key, self._clients = key, threading.BoundedSemaphore(MAX_WATCHERS)
        self._sock = listen(self._path)
        self._thread = threading.Thread(target=self._accept, name="tornado_dsm-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop accepting (watchers being served get a closed connection)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _accept(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return          # closed
            if not self._clients.acquire(blocking=False):
                conn.close()    # too many watchers: refuse, never queue
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True, name="tornado_dsm-watcher").start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            handshake_accept(conn, self._key)
            while conn.recv(1) and self._sock is not None:
                body = msgpack.packb(snapshot(self._cluster))
                conn.sendall(_LENGTH.pack(len(body)) + body)
        except (OSError, RuntimeError):
            pass                # watcher gone, or the cluster closed under it
        finally:
            conn.close()
            self._clients.release()


# ---- a watcher (any process of the same user) -----------------------------------------

class Watcher:
    """A connection to the watch socket of the cluster whose run directory is ``run_dir``."""

    def __init__(self, run_dir: str, timeout: float = 10.0) -> None:
        key = read_key_file(os.path.join(run_dir, KEY))
        self._sock = connect(os.path.join(run_dir, SOCKET), key, timeout=timeout)
        self._sock.settimeout(timeout)

    def snapshot(self) -> dict:
        """One snapshot, taken by node 0 now."""
        self._sock.sendall(b"S")
        (n,) = _LENGTH.unpack(_recv_exact(self._sock, _LENGTH.size))
        return msgpack.unpackb(_recv_exact(self._sock, n))

    def close(self) -> None:
        self._sock.close()


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError("the cluster closed the watch connection (it has stopped)")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def find_clusters() -> list[str]:
    """Run directories of this user's running clusters on this host (newest first)."""
    import glob
    import tempfile
    dirs = [os.path.dirname(p) for p in glob.glob(os.path.join(tempfile.gettempdir(), "tornado-dsm-*", SOCKET))]
    mine = [d for d in dirs if os.stat(d).st_uid == os.getuid()]
    return sorted(mine, key=lambda d: os.stat(d).st_mtime, reverse=True)
