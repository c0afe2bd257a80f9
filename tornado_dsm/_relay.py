"""A relay between nodes, for fault injection: delayed and dropped connections.

A ``Relay`` listens on an address of its own and forwards every connection
it accepts to a target (a node's real listener), byte for byte, both ways;
the nodes' handshake and frames pass through untouched (it holds no key).
``Cluster(route=...)`` makes every node dial a node's relay instead of the
node itself, so all traffic into that node crosses it.  Then:

* ``set_delay(seconds)`` holds every chunk that long before forwarding it
  (a slow link: PPCs still answer, later);
* ``drop()`` closes every connection it carries (a broken link: both ends
  see the peer lost) and refuses new ones from then on.

Real sockets and real threads: what the nodes see is what a bad network
does to them, not a mock.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time

import attrs

CHUNK = 1 << 16


@attrs.frozen
class RelayStatistics:
    """Connections accepted and bytes forwarded by one relay, and whether it dropped."""

    connections: int
    bytes_forwarded: int
    dropped: bool


class Relay:
    """Forward connections from ``address`` (after `start`) to ``target``."""

    def __init__(self, target) -> None:
        self.target = target
        self.delay = 0.0
        self.dropped = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self._connections = self._bytes = 0
        self._dir = tempfile.mkdtemp(prefix="tornado-dsm-relay-") if isinstance(target, str) else None
        self.listener = _listen(os.path.join(self._dir, "relay.sock") if self._dir else (target[0], 0))
        name = self.listener.getsockname()
        self.address = name if isinstance(name, str) else [name[0], name[1]]
        threading.Thread(target=self._accept_loop, name="relay-accept", daemon=True).start()

    def set_delay(self, seconds: float) -> None:
        """Hold every chunk ``seconds`` before forwarding it (0: none)."""
        self.delay = float(seconds)

    def drop(self) -> None:
        """Close every carried connection and refuse new ones."""
        with self._lock:
            self.dropped = True
            socks, self._socks = self._socks, []
        for s in socks:
            _close(s)

    def close(self) -> None:
        """Stop listening and drop everything (idempotent)."""
        self.drop()
        _close(self.listener)
        if self._dir:
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)
            self._dir = None

    def statistics(self) -> RelayStatistics:
        with self._lock:
            return RelayStatistics(self._connections, self._bytes, self.dropped)

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return   # closed
            threading.Thread(target=self._carry, args=(client,), name="relay-carry", daemon=True).start()

    def _carry(self, client: socket.socket) -> None:
        """Connect to the target and pump both directions until either side closes."""
        try:
            family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
            server = socket.socket(family, socket.SOCK_STREAM)
            server.connect(self.target if isinstance(self.target, str) else tuple(self.target))
        except OSError:
            _close(client)
            return
        with self._lock:
            if self.dropped:
                _close(client), _close(server)
                return
            self._socks += [client, server]
            self._connections += 1
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
        self._pump(client, server)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        """Copy src -> dst, each chunk held ``delay`` seconds; close both at the end."""
        try:
            while True:
                data = src.recv(CHUNK)
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
                with self._lock:
                    self._bytes += len(data)
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)


def _listen(address) -> socket.socket:
    """A listening socket on a Unix path or a (host, port) pair."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.bind(address)
    sock.listen(128)
    return sock


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
