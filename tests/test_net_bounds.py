"""Bounds on admitting peers: a failing accept backs off instead of ending the
accept loop, a handshake has one deadline however slowly its bytes drip, and
only so many unauthenticated connections may be pending at once."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tornado_dsm.kernel.net import _runtime, _transport
from tornado_dsm.kernel.net._runtime import NodeRuntime
from tornado_dsm.kernel.net._transport import (
    HEADER, HELLO, MAGIC, NONCE, AuthenticationError, Connection, connect, handshake_accept,
)
from tornado_dsm.kernel.net._wire import pack

KEY = b"b" * 32
NODE = 5            # the runtime under test; its admit threads are "node5-admit"
DEADLINE = 1.0      # HANDSHAKE_TIMEOUT while these tests run
SLACK = 1.5         # how much later than the deadline a drop may come


@pytest.fixture
def short_deadline(monkeypatch):
    """HANDSHAKE_TIMEOUT is DEADLINE seconds."""
    monkeypatch.setattr(_transport, "HANDSHAKE_TIMEOUT", DEADLINE)


@pytest.fixture
def runtime():
    """A listening NodeRuntime (node NODE of 8, registered) on a Unix socket."""
    directory = tempfile.mkdtemp(prefix="td-bounds-")
    rt = NodeRuntime(NODE, 8, KEY)
    rt.start_listening(os.path.join(directory, "n.sock"))
    yield rt
    rt.stop()
    shutil.rmtree(directory, ignore_errors=True)


def _raw(address) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(address)
    return sock


def _drip(sock: socket.socket, data: bytes, limit: float) -> float:
    """Send ``data`` one byte every 0.5 s; the seconds until the peer dropped us
    (or ``limit`` if it still had not)."""
    start = time.monotonic()
    sock.settimeout(0.5)
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(1) == b"":
                return time.monotonic() - start
        except TimeoutError:
            pass
        except OSError:     # EPIPE / ECONNRESET: dropped
            return time.monotonic() - start
        if time.monotonic() - start >= limit:
            break
    return limit


def _admit_threads() -> int:
    return sum(t.name == f"node{NODE}-admit" for t in threading.enumerate())


def _say_hello(address, node: int = 1) -> socket.socket:
    """A correctly keyed peer: handshake, then HELLO naming ``node``."""
    sock = connect(address, KEY)
    Connection(sock).send(HELLO, 0, 0, pack({"node": node}))
    return sock


def _wait_served(rt, node: int, seconds: float) -> bool:
    with rt._changed:
        return rt._changed.wait_for(lambda: node in rt._serves, seconds)


class TestHandshakeAccept:
    @pytest.mark.timeout(30)
    def test_dripping_peer_fails_at_the_deadline(self, short_deadline):
        """A peer sending one byte every 0.5 s fails at the whole-handshake deadline, naming it."""
        a, b = socket.socketpair()
        outcome = {}

        def server():
            start = time.monotonic()
            try:
                handshake_accept(a, KEY)
            except AuthenticationError as e:
                outcome["error"] = str(e)
            outcome["seconds"] = time.monotonic() - start
            a.close()

        t = threading.Thread(target=server)
        t.start()
        b.recv(len(MAGIC) + NONCE)
        _drip(b, b"\0" * 64, limit=8.0)
        b.close()
        t.join()
        assert outcome["seconds"] < DEADLINE + SLACK, outcome
        assert "deadline" in outcome.get("error", ""), outcome


class TestAdmit:
    @pytest.mark.timeout(30)
    def test_slow_handshake_is_dropped(self, short_deadline, runtime, caplog):
        """A node drops a peer dripping its handshake answer within the deadline and logs why."""
        with caplog.at_level(logging.WARNING, logger="tornado_dsm.node"):
            sock = _raw(runtime.address)
            sock.recv(len(MAGIC) + NONCE)
            with sock:
                seconds = _drip(sock, b"\0" * 64, limit=8.0)
        assert seconds < DEADLINE + SLACK, f"still connected after {seconds:.1f} s"
        assert any("dropped connection" in r.message and "deadline" in r.message
                   for r in caplog.records), [r.message for r in caplog.records]

    @pytest.mark.timeout(30)
    def test_slow_hello_shares_the_deadline(self, short_deadline, runtime):
        """A keyed peer dripping its HELLO after a quick handshake is dropped at the same deadline."""
        sock = connect(runtime.address, KEY)
        with sock:
            seconds = _drip(sock, HEADER.pack(HELLO, 0, 0, 0, 0, 64, 0) + b"\0" * 64, limit=8.0)
        assert seconds < DEADLINE + SLACK, f"still connected after {seconds:.1f} s"


class TestAcceptLoop:
    @pytest.mark.timeout(30)
    def test_pending_handshakes_are_capped(self, short_deadline, monkeypatch, runtime, caplog):
        """With the cap at 4, ten silent peers leave at most 4 handshakes pending; a keyed peer gets in after."""
        monkeypatch.setattr(_runtime, "MAX_PENDING_HANDSHAKES", 4, raising=False)
        with caplog.at_level(logging.WARNING, logger="tornado_dsm.node"):
            silent = [_raw(runtime.address) for _ in range(10)]
            try:
                most, end = 0, time.monotonic() + DEADLINE + SLACK
                while time.monotonic() < end and (most == 0 or _admit_threads()):
                    most = max(most, _admit_threads())
                    time.sleep(0.01)
                left = _admit_threads()   # the node dropped the silent ones by now
                with _say_hello(runtime.address):
                    served = _wait_served(runtime, 1, 5.0)
            finally:
                for sock in silent:
                    sock.close()
        assert most <= 4, f"{most} handshakes pending at once"
        assert left == 0, f"{left} silent handshakes still pending after the deadline"
        assert served, "a keyed peer was not admitted after the silent ones"
        assert sum("MAX_PENDING_HANDSHAKES=4" in r.message for r in caplog.records) == 1

    @pytest.mark.multinode
    @pytest.mark.timeout(60)
    def test_accept_survives_emfile(self, tmp_path):
        """A node out of file descriptors logs EMFILE, backs off, and admits a keyed peer once fds are free."""
        directory = tempfile.mkdtemp(prefix="td-emfile-")
        address = os.path.join(directory, "n.sock")
        errfile = tmp_path / "stderr"
        with open(errfile, "w") as err, subprocess.Popen(
                [sys.executable, "-c", _EMFILE_NODE, KEY.hex(), address, "48"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True) as proc:
            try:
                assert proc.stdout.readline().strip() == "listening"
                flood = [_raw(address) for _ in range(100)]   # more than the node has fds for
                _wait_for_text(errfile, "EMFILE", 5.0)
                for sock in flood:
                    sock.close()
                served, got_in = _keyed_peer_served(proc, address)
                log = errfile.read_text()
            finally:
                proc.kill()
                shutil.rmtree(directory, ignore_errors=True)
        assert got_in is None, f"keyed peer refused after EMFILE: {got_in}\n{log[-2000:]}"
        assert served == "serves [1]", log[-2000:]
        assert "EMFILE" in log and "backing off" in log, log[-2000:]


def _keyed_peer_served(proc, address):
    """(what the node process reports it serves, None) once a keyed peer said HELLO,
    or ("", the error) if the peer could not even finish its handshake."""
    try:
        with _say_hello(address):
            proc.stdin.write("\n")
            proc.stdin.flush()
            return proc.stdout.readline().strip(), None
    except (AuthenticationError, OSError) as e:
        return "", e


def _wait_for_text(path, text: str, seconds: float) -> None:
    """Wait up to ``seconds`` for ``text`` to appear in file ``path``."""
    end = time.monotonic() + seconds
    while text not in path.read_text() and time.monotonic() < end:
        time.sleep(0.05)


# A node whose fd limit is lowered once it listens; its handshakes may take long,
# so accepted silent connections keep their fds until the test closes them.
_EMFILE_NODE = """
import logging, os, resource, sys, time
from tornado_dsm.kernel.net import _transport
from tornado_dsm.kernel.net._runtime import NodeRuntime
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")
_transport.HANDSHAKE_TIMEOUT = 30.0
key, address, limit = bytes.fromhex(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rt = NodeRuntime(5, 8, key)
rt.start_listening(address)
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
print("listening", flush=True)
sys.stdin.readline()
with rt._changed:
    rt._changed.wait_for(lambda: 1 in rt._serves, 10.0)
print("serves", sorted(rt._serves), flush=True)
"""
