"""Authenticated, framed connections between node processes.

Design
------
A connection is a stream socket (Unix or TCP) between two nodes.  Nothing a
peer sends is decoded before it has proven it holds the per-cluster secret:

1. the accepting side sends ``MAGIC`` and a fresh 32-byte nonce ``ns``;
2. the connecting side answers with its own nonce ``nc`` and
   ``HMAC(key, b"C" + ns + nc)``;
3. the accepting side checks it with ``hmac.compare_digest`` and answers
   ``HMAC(key, b"S" + nc + ns)``, which the connecting side checks the same way.

Every handshake message has a fixed length, so authentication reads raw bytes
and never parses anything.  Fresh nonces on both sides make a recorded
handshake useless; the two labels ("C", "S") stop a reflection.  The whole
handshake has one deadline (HANDSHAKE_TIMEOUT; the accepting node's HELLO read
shares it), not a timeout per recv, so dripping bytes cannot hold it open.

After authentication the stream carries frames: a fixed ``struct`` header
(kind, request id, oid, body length, payload length), a msgpack body, and an
optional raw payload, sent without an encoding copy (the node service's
``run_on`` uses it, and a Grant's page travels there as an out-of-band
buffer of its record: see ``_wire``).  A header announcing
more than ``max_frame`` bytes drops the connection before any body is read.
A frame is written with one ``sendall`` (or one ``sendmsg`` for a large
payload) under the connection's send lock, so frames from several threads
never interleave.

Who reads a connection is decided in ``_channel`` (a calling thread reads its
own replies as leader; serving workers hand the reading role on);
``FrameReader`` buffers the stream so a small frame costs one ``recv``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import select
import socket
import stat
import struct
import threading
import time

from ..machine import spin_readable

log = logging.getLogger("tornado_dsm.transport")

MAGIC = b"TDSM\x01"
NONCE = 32
DIGEST = 32
HANDSHAKE_TIMEOUT = 5.0   # seconds for a whole handshake (and, when accepting, the HELLO)
DEFAULT_MAX_FRAME = 64 << 20
MIN_KEY = 16

# kind u8, flags u8, pad u16, request id u64, oid u64, body len u32, payload len u32
HEADER = struct.Struct("<BBHQQII")
HEADER_SIZE = HEADER.size

# Frame kinds.
HELLO, REQUEST, REPLY, ERROR = 1, 2, 3, 4
KINDS = frozenset((HELLO, REQUEST, REPLY, ERROR))

_BUFSIZE = 1 << 16
_SMALL = 1 << 14  # below this a frame is joined into one buffer before sending


class AuthenticationError(ConnectionError):
    """A peer failed the HMAC challenge-response (no key, wrong key, garbage)."""


class FrameError(ConnectionError):
    """A peer sent a frame that breaks the framing rules (kind, size)."""


def new_key() -> bytes:
    """A fresh 32-byte per-cluster secret."""
    return secrets.token_bytes(32)


def check_key(key) -> bytes:
    """Return ``key`` as bytes, or raise ValueError naming what is accepted."""
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY:
        raise ValueError(f"cluster key must be bytes of length >= {MIN_KEY}, "
                         f"got {type(key).__name__} of length {len(key) if hasattr(key, '__len__') else '?'}")
    return bytes(key)


def read_key_file(path: str) -> bytes:
    """The key stored as hex text in ``path`` (which must not be readable by others)."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(f"key file {path} is accessible by group/others "
                              f"(mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}")
    with open(path) as f:
        text = f.read().strip()
    try:
        return check_key(bytes.fromhex(text))
    except ValueError as e:
        raise ValueError(f"key file {path} must hold the key as hex text "
                         f"(>= {MIN_KEY} bytes, e.g. secrets.token_hex(32)): {e}") from None


def write_key_file(path: str, key: bytes) -> None:
    """Store ``key`` as hex text in a new file ``path`` with mode 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(check_key(key).hex() + "\n")


# ---- addresses ---------------------------------------------------------------

def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port), or ValueError naming the bad text."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"bad address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:7000")
    return host.strip("[]"), int(port)


def listen(address) -> socket.socket:
    """A listening socket: ``address`` is a Unix path (str starting with '/')
    or a (host, port) pair for TCP."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(address)
    else:
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(tuple(address))
    sock.listen(128)
    return sock


def local_address(sock: socket.socket):
    """The address peers use to reach listening socket ``sock`` (path or [host, port])."""
    name = sock.getsockname()
    return name if isinstance(name, str) else [name[0], name[1]]


def _tune(sock: socket.socket) -> None:
    """TCP: no Nagle delay; keepalive probes so a peer host that vanishes
    without closing (crash, network cut) is noticed in about 10 s."""
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in (("TCP_KEEPIDLE", 4), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)


# Contract: a moment ``seconds`` from now by which a whole exchange of several
# sends and recvs must be finished.  A timeout per recv would let a peer that
# sends one byte just before each expires hold a connection (and the thread
# reading it) for ever; under a Deadline each recv gets only the time left.
class Deadline:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    # Contract: the error to raise once the budget is spent; it names the deadline.
    def expired(self) -> ConnectionError:
        return ConnectionError(f"not finished within the {self.seconds:g} s handshake deadline")

    # Contract: set ``sock``'s timeout to the time left, or raise ``expired()``.
    def arm(self, sock: socket.socket) -> None:
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.expired()
        sock.settimeout(left)


# Contract: a fresh Deadline of HANDSHAKE_TIMEOUT, read at each call (not bound
# at import) so one setting -- or a test's monkeypatch -- reaches every caller.
def handshake_deadline() -> Deadline:
    return Deadline(HANDSHAKE_TIMEOUT)


# Contract: one ``recv_into``; under ``deadline`` it may block only for the time
# left, and running out raises ``deadline.expired()``, not a bare "timed out".
def _recv_into(sock: socket.socket, view, deadline: Deadline | None) -> int:
    if deadline is None:
        return sock.recv_into(view)
    deadline.arm(sock)
    try:
        return sock.recv_into(view)
    except TimeoutError:
        raise deadline.expired() from None


# Contract: exactly ``n`` bytes; ConnectionError at EOF or once ``deadline`` passes.
def _recv_exact(sock: socket.socket, n: int, deadline: Deadline | None = None) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = _recv_into(sock, view[got:], deadline)
        if k == 0:
            raise ConnectionError("peer closed the connection")
        got += k
    return bytes(buf)


# ---- handshake -----------------------------------------------------------------

def _mac(key: bytes, label: bytes, a: bytes, b: bytes) -> bytes:
    return hmac.new(key, label + a + b, hashlib.sha256).digest()


# Contract: bound a handshake by ``deadline`` and make any failure an
# AuthenticationError; once it succeeded, the socket is left blocking and tuned.
@contextlib.contextmanager
def _handshaking(sock: socket.socket, deadline: Deadline):
    try:
        deadline.arm(sock)   # sends too: a peer that never reads must not stall us
        yield
    except AuthenticationError:
        raise
    except (OSError, ValueError) as e:
        raise AuthenticationError(f"handshake failed: {e}") from None
    sock.settimeout(None)
    _tune(sock)


# Contract: authenticate the peer that connected on ``sock``, all of it before
# ``deadline`` (default: HANDSHAKE_TIMEOUT from now); AuthenticationError if not.
def handshake_accept(sock: socket.socket, key: bytes, deadline: Deadline | None = None) -> None:
    """Authenticate the peer that connected on ``sock``; AuthenticationError if it fails."""
    deadline = deadline or handshake_deadline()
    with _handshaking(sock, deadline):
        ns = secrets.token_bytes(NONCE)
        sock.sendall(MAGIC + ns)
        answer = _recv_exact(sock, NONCE + DIGEST, deadline)
        nc, mac = answer[:NONCE], answer[NONCE:]
        if not hmac.compare_digest(mac, _mac(key, b"C", ns, nc)):
            raise AuthenticationError("peer did not prove it holds the cluster key")
        deadline.arm(sock)
        sock.sendall(_mac(key, b"S", nc, ns))


# Contract: authenticate ourselves to, and the accepting peer on, ``sock``, all
# of it before ``deadline`` (default: HANDSHAKE_TIMEOUT from now).
def handshake_connect(sock: socket.socket, key: bytes, deadline: Deadline | None = None) -> None:
    """Authenticate ourselves to, and the accepting peer on, ``sock``."""
    deadline = deadline or handshake_deadline()
    with _handshaking(sock, deadline):
        hello = _recv_exact(sock, len(MAGIC) + NONCE, deadline)
        if not hmac.compare_digest(hello[:len(MAGIC)], MAGIC):
            raise AuthenticationError("peer is not a tornado_dsm node (bad magic)")
        ns = hello[len(MAGIC):]
        nc = secrets.token_bytes(NONCE)
        deadline.arm(sock)
        sock.sendall(nc + _mac(key, b"C", ns, nc))
        mac = _recv_exact(sock, DIGEST, deadline)
        if not hmac.compare_digest(mac, _mac(key, b"S", nc, ns)):
            raise AuthenticationError("peer did not prove it holds the cluster key")


def connect(address, key: bytes, timeout: float = HANDSHAKE_TIMEOUT) -> socket.socket:
    """Connect to a node's listening ``address`` and authenticate both ways."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target = address
    else:
        target = (address[0], int(address[1]))
        sock = socket.socket(socket.AF_INET6 if ":" in target[0] else socket.AF_INET,
                             socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(target)
        handshake_connect(sock, key)
    except BaseException:
        sock.close()
        raise
    return sock


# ---- frames --------------------------------------------------------------------

class Connection:
    """An authenticated socket to one peer: framed sends under a lock.

    ``peer`` is the peer's node id once known (None while it is anonymous).
    """

    def __init__(self, sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.sock = sock
        self.max_frame = max_frame
        self.peer: int | None = None
        self.closed = False
        self._send_lock = threading.Lock()

    def send(self, kind: int, rid: int, oid: int, body: bytes, payload=None, flags: int = 0) -> int:
        """Write one frame; returns its size.  ``payload`` is bytes-like or a
        list of bytes-like parts sent one after the other (the list is ours to
        change).  Raises ValueError
        if it exceeds ``max_frame`` and OSError if the socket is broken."""
        blen = len(body)
        if payload is None or payload == []:
            if blen > self.max_frame:
                raise ValueError(f"frame of {blen} bytes exceeds max_frame={self.max_frame}")
            with self._send_lock:
                self.sock.sendall(HEADER.pack(kind, flags, 0, rid, oid, blen, 0) + body)
            return HEADER_SIZE + blen
        parts = payload if type(payload) is list else [payload]
        for i, part in enumerate(parts):
            if type(part) is not bytes:   # any buffer: counted and gathered as bytes
                parts[i] = memoryview(part).cast("B")
        plen = sum(map(len, parts))
        if blen + plen > self.max_frame:
            raise ValueError(f"frame of {blen + plen} bytes exceeds max_frame={self.max_frame}")
        header = HEADER.pack(kind, flags, 0, rid, oid, blen, plen)
        with self._send_lock:
            if plen < _SMALL:
                self.sock.sendall(b"".join((header, body, *parts)))
            else:   # no copy of a large payload: one sendmsg gathers the parts
                _sendmsg_all(self.sock, [header + body, *parts])
        return HEADER_SIZE + blen + plen

    def close(self) -> None:
        """Shut the socket down (wakes the reader with EOF) and close it."""
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def _sendmsg_all(sock: socket.socket, parts: list) -> None:
    views = [memoryview(p) for p in parts]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def read_header(buf, at: int, max_frame: int) -> tuple:
    """(kind, flags, rid, oid, body length, payload length) of the header at
    ``buf[at:]``; FrameError for an unknown kind or a frame beyond ``max_frame``
    (checked before any body is read, by every transport's reader)."""
    kind, flags, _pad, rid, oid, blen, plen = HEADER.unpack_from(buf, at)
    if kind not in KINDS:
        raise FrameError(f"unknown frame kind {kind}")
    if blen + plen > max_frame:
        raise FrameError(f"frame of {blen + plen} bytes exceeds max_frame={max_frame}")
    return kind, flags, rid, oid, blen, plen


class FrameReader:
    """Reads frames from one socket with a buffer: ``next()`` returns
    (kind, flags, rid, oid, body memoryview, payload bytearray | None).

    Raises ConnectionError at EOF and FrameError on a bad header.  The body
    view is valid only until the next call (decode it first).
    """

    def __init__(self, sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.sock = sock
        self.max_frame = max_frame
        self.buf = bytearray(_BUFSIZE)
        self.view = memoryview(self.buf)
        self.start = 0
        self.end = 0
        # Set while an unauthenticated-so-far connection's HELLO is read: all its
        # recvs share the handshake's deadline.  None for every later frame.
        self.deadline: Deadline | None = None
        self._poll = None   # select.poll of the socket, for wait_readable

    def _fill(self, need: int) -> None:
        """Make at least ``need`` bytes available from ``start``."""
        if self.start == self.end:
            self.start = self.end = 0
        elif self.start + need > len(self.buf):
            # compact: move the unread tail to the front
            n = self.end - self.start
            self.buf[:n] = self.buf[self.start:self.end]
            self.start, self.end = 0, n
        while self.end - self.start < need:
            k = _recv_into(self.sock, self.view[self.end:], self.deadline)
            if k == 0:
                raise ConnectionError("peer closed the connection")
            self.end += k

    def has_frame(self) -> bool:
        """Whether a whole frame is already buffered (``next`` will not block)."""
        n = self.end - self.start
        if n < HEADER_SIZE:
            return False
        _k, _f, _p, _r, _o, blen, plen = HEADER.unpack_from(self.buf, self.start)
        return n >= HEADER_SIZE + blen + plen

    def wait_readable(self, timeout: float | None) -> bool:
        """Whether a frame is buffered or the socket has bytes to read, waiting up to
        ``timeout`` seconds (None: as long as it takes)."""
        if self.has_frame():
            return True
        if self._poll is None:   # made once: a poll object costs less than a select per wait
            self._poll = select.poll()
            self._poll.register(self.sock.fileno(), select.POLLIN)
        return bool(self._poll.poll(None if timeout is None else timeout * 1000.0))

    def spin(self, seconds: float) -> bool:
        """Whether a frame is buffered or bytes arrive within ``seconds`` of polling
        (GIL released, CPU yielded between polls): a reader expecting a frame soon
        spins, then blocks in ``next``, and so skips a sleeping thread's wake-up."""
        return self.has_frame() or spin_readable(self.sock.fileno(), seconds)

    def next(self):
        """The next frame (see class docstring)."""
        start = self.start
        if self.end - start < HEADER_SIZE:
            self._fill(HEADER_SIZE)
            start = self.start
        kind, flags, rid, oid, blen, plen = read_header(self.buf, start, self.max_frame)
        if HEADER_SIZE + blen > len(self.buf):  # a large body gets its own buffer
            self.start += HEADER_SIZE
            body = memoryview(self._payload(blen))
        else:
            if self.end - start < HEADER_SIZE + blen:
                self._fill(HEADER_SIZE + blen)
            b0 = self.start + HEADER_SIZE
            body = self.view[b0:b0 + blen]
            self.start = b0 + blen
        payload = self._payload(plen) if plen else None
        return kind, flags, rid, oid, body, payload

    def _payload(self, plen: int) -> bytearray:
        """Take ``plen`` payload bytes: what is buffered, then recv straight into it."""
        start = self.start
        if self.end - start >= plen:   # all buffered (a page reply): one slice copies it out
            self.start = start + plen
            return self.buf[start:start + plen]
        out = bytearray(plen)
        have = min(plen, self.end - self.start)
        out[:have] = self.view[self.start:self.start + have]
        self.start += have
        view = memoryview(out)
        got = have
        while got < plen:
            k = _recv_into(self.sock, view[got:], self.deadline)
            if k == 0:
                raise ConnectionError("peer closed the connection")
            got += k
        return out
