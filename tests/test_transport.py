"""The authenticated transport: handshake, key files, framing, and a live node
that drops bad peers and keeps serving the others."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import pytest

from tornado_dsm.kernel import current_runtime
from tornado_dsm.kernel.net._transport import (
    HEADER, HELLO, MAGIC, NONCE, REPLY, REQUEST, AuthenticationError, Connection, FrameError,
    FrameReader, connect, handshake_accept, handshake_connect, new_key, parse_address,
    read_key_file, write_key_file,
)
from tornado_dsm.kernel.net._wire import pack_parts, unpack_parts
from tornado_dsm.objects._records import Grant

PAGE = 4096

KEY = b"k" * 32


def _pair_handshake(server_key: bytes, client_key: bytes, client_bytes: bytes | None = None):
    """Run both handshake sides on a socketpair; returns (server error, client error)."""
    a, b = socket.socketpair()
    errors = [None, None]

    def server():
        try:
            handshake_accept(a, server_key)
        except AuthenticationError as e:
            errors[0] = e
        finally:
            a.close()

    t = threading.Thread(target=server)
    t.start()
    try:
        if client_bytes is None:
            handshake_connect(b, client_key)
        else:
            b.recv(len(MAGIC) + NONCE)
            b.sendall(client_bytes)
            b.recv(64)
    except AuthenticationError as e:
        errors[1] = e
    finally:
        t.join()
        b.close()
    return errors


class TestHandshake:
    def test_same_key_authenticates_both_ways(self):
        """Two sides holding the same key both accept."""
        assert _pair_handshake(KEY, KEY) == [None, None]

    def test_wrong_key_is_refused_by_both(self):
        """A wrong key fails on the accepting side, and the connecting side is told nothing."""
        server_error, client_error = _pair_handshake(KEY, b"w" * 32)
        assert "did not prove" in str(server_error) and client_error is not None

    def test_garbage_is_refused(self):
        """Bytes that are not a handshake answer are refused without being parsed."""
        server_error, _ = _pair_handshake(KEY, KEY, client_bytes=b"GET / HTTP/1.1\r\n" * 4)
        assert isinstance(server_error, AuthenticationError)

    def test_connecting_side_checks_the_server(self):
        """A server that does not know the key cannot fake its answer."""
        a, b = socket.socketpair()

        def fake_server():
            a.sendall(MAGIC + os.urandom(NONCE))
            a.recv(64)
            a.sendall(os.urandom(32))

        t = threading.Thread(target=fake_server)
        t.start()
        with pytest.raises(AuthenticationError, match="did not prove"):
            handshake_connect(b, KEY)
        t.join()
        a.close()
        b.close()


class TestKeyFile:
    def test_round_trip_with_mode_0600(self, tmp_path):
        """A written key file is mode 0600 and reads back the same key."""
        key, path = new_key(), str(tmp_path / "key")
        write_key_file(path, key)
        assert os.stat(path).st_mode & 0o777 == 0o600 and read_key_file(path) == key

    def test_readable_by_others_is_refused(self, tmp_path):
        """A key file others can read is refused with the chmod that fixes it."""
        path = tmp_path / "key"
        path.write_text(KEY.hex())
        path.chmod(0o644)
        with pytest.raises(PermissionError, match="chmod 600"):
            read_key_file(str(path))

    def test_bad_content_is_refused(self, tmp_path):
        """A key file that is not hex of at least 16 bytes is refused, naming the file."""
        path = tmp_path / "key"
        path.write_text("not hex")
        path.chmod(0o600)
        with pytest.raises(ValueError, match="hex"):
            read_key_file(str(path))


class TestParseAddress:
    def test_good_and_bad(self):
        """HOST:PORT parses; anything else raises ValueError naming the text."""
        assert parse_address("127.0.0.1:7000") == ("127.0.0.1", 7000)
        for bad in ("127.0.0.1", ":80", "host:x", "h:70000"):
            with pytest.raises(ValueError, match="HOST:PORT"):
                parse_address(bad)


class TestFrames:
    def test_header_body_payload_round_trip(self):
        """A frame arrives with its kind, ids, body and raw payload."""
        a, b = socket.socketpair()
        with a, b:
            Connection(a).send(REQUEST, 7, 99, b"body", b"payload", flags=1)
            kind, flags, rid, oid, body, payload = FrameReader(b).next()
            assert (kind, flags, rid, oid, bytes(body), payload) == (
                REQUEST, 1, 7, 99, b"body", bytearray(b"payload"))

    def test_large_payload_and_body(self):
        """A payload and a body larger than the read buffer arrive intact."""
        a, b = socket.socketpair()
        body, data = os.urandom(100_000), os.urandom(3 << 20)
        with a, b:
            t = threading.Thread(target=Connection(a).send, args=(REQUEST, 1, 2, body, data))
            t.start()
            _k, _f, _r, _o, got_body, got = FrameReader(b).next()
            t.join()
            assert bytes(got_body) == body and bytes(got) == data

    def test_oversized_frame_is_refused_both_ways(self):
        """A frame over max_frame is refused by the sender and by the reader from its header."""
        a, b = socket.socketpair()
        with a, b:
            with pytest.raises(ValueError, match="max_frame=100"):
                Connection(a, max_frame=100).send(REQUEST, 1, 1, b"x" * 101)
            a.sendall(HEADER.pack(REQUEST, 0, 0, 1, 1, 0, 1 << 30))
            with pytest.raises(FrameError, match="exceeds max_frame"):
                FrameReader(b, max_frame=1 << 20).next()

    def test_unknown_kind_and_eof(self):
        """An unknown frame kind is a FrameError; a closed peer is a ConnectionError."""
        a, b = socket.socketpair()
        with b:
            a.sendall(HEADER.pack(77, 0, 0, 1, 1, 0, 0))
            with pytest.raises(FrameError, match="kind 77"):
                FrameReader(b).next()
            a.close()
            with pytest.raises(ConnectionError):
                FrameReader(b).next()


    def test_page_grant_arrives_intact(self):
        """A Grant's page sent out of band arrives byte for byte, as a view of the payload."""
        page = os.urandom(PAGE)
        body, parts = pack_parts([Grant(5, 1, page, owner=False), 1])
        a, b = socket.socketpair()
        with a, b:
            Connection(a).send(REPLY, 3, 4, body, parts)
            _k, _f, _r, _o, got_body, payload = FrameReader(b).next()
            (grant, owner), data = unpack_parts(got_body, payload)
        assert bytes(grant.data) == page and grant.version == 5 and owner == 1 and data is None
        assert len(payload) == PAGE and grant.data.obj is payload

    @pytest.mark.parametrize("cuts", [(1,), (HEADER.size - 1, HEADER.size + 3), (HEADER.size + 20, 2000)])
    def test_frame_split_across_reads(self, cuts):
        """A frame whose bytes arrive in pieces (inside the header, body or payload) reads whole."""
        page = os.urandom(PAGE)
        body, parts = pack_parts([Grant(2, 1, page), 0])
        a, b = socket.socketpair()
        with a, b:
            Connection(a).send(REPLY, 9, 1, body, parts)
            wire = b.recv(1 << 16)
            while len(wire) < HEADER.size + len(body) + PAGE:
                wire += b.recv(1 << 16)
        c, d = socket.socketpair()
        with c, d:
            def drip():
                at = 0
                for cut in (*cuts, len(wire)):
                    c.sendall(wire[at:cut])
                    at = cut
                    time.sleep(0.02)   # let the reader see a partial frame
            t = threading.Thread(target=drip)
            t.start()
            _k, _f, rid, _o, got_body, payload = FrameReader(d).next()
            t.join()
            (grant, _owner), _data = unpack_parts(got_body, payload)
        assert rid == 9 and bytes(grant.data) == page


# ---- a live node under attack ----------------------------------------------------------


def my_address():
    return current_runtime().address


def node_id() -> int:
    return current_runtime().node_id


def _raw_connect(address) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(address)
    return sock


def _until_closed(sock: socket.socket) -> None:
    """Read until the node closes the connection (it logs before closing)."""
    with sock:
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:   # closed with our extra bytes unread
            pass


def _still_serves(nodes) -> None:
    assert nodes.run_on(1, node_id) == 1
    assert nodes.runtime.call(1, 0, "ping", None) == 1


@pytest.mark.multinode
class TestLiveNode:
    @pytest.mark.timeout(30)
    @pytest.mark.parametrize("answer", [b"\0" * 64, os.urandom(64), b"GET / HTTP/1.1\r\n\r\n" * 4],
                             ids=["no-key", "random", "garbage"])
    def test_unauthenticated_peer_is_dropped_and_logged(self, two_nodes, caplog, answer):
        """A peer without the key is dropped and logged; the node keeps serving."""
        with caplog.at_level(logging.WARNING, logger="tornado_dsm.node"):
            sock = _raw_connect(two_nodes.runtime.address)
            sock.recv(len(MAGIC) + NONCE)
            sock.sendall(answer)
            _until_closed(sock)
        assert any("dropped connection" in r.message for r in caplog.records)
        _still_serves(two_nodes)

    @pytest.mark.timeout(30)
    def test_wrong_key_is_dropped(self, two_nodes, caplog):
        """A peer with a wrong key fails the handshake; the node logs it and keeps serving."""
        with caplog.at_level(logging.WARNING, logger="tornado_dsm.node"):
            with pytest.raises(AuthenticationError):
                connect(two_nodes.runtime.address, b"w" * 32)
        _still_serves(two_nodes)

    @pytest.mark.timeout(30)
    @pytest.mark.parametrize("frame", [
        HEADER.pack(HELLO, 0, 0, 0, 0, 1 << 31, 0),                 # oversized
        HEADER.pack(HELLO, 0, 0, 0, 0, 4, 0) + b"\xc1\xc1\xc1\xc1",  # undecodable msgpack
        HEADER.pack(REQUEST, 0, 0, 1, 5, 0, 0),                     # no HELLO first
    ], ids=["oversized", "bad-msgpack", "no-hello"])
    def test_bad_first_frame_after_auth_is_dropped(self, two_nodes, caplog, frame):
        """An authenticated peer sending a bad first frame is dropped and logged."""
        with caplog.at_level(logging.WARNING, logger="tornado_dsm.node"):
            sock = connect(two_nodes.runtime.address, two_nodes.runtime.key)
            sock.sendall(frame)
            _until_closed(sock)
        assert any("dropped connection" in r.message for r in caplog.records)
        _still_serves(two_nodes)

    @pytest.mark.timeout(30)
    def test_hello_claiming_a_connected_node_is_dropped(self, two_nodes, caplog):
        """A HELLO naming a node that is already connected does not replace it."""
        import msgpack

        with caplog.at_level(logging.WARNING, logger="tornado_dsm.node"):
            sock = connect(two_nodes.runtime.address, two_nodes.runtime.key)
            Connection(sock).send(HELLO, 0, 0, msgpack.packb({"node": 1}))
            _until_closed(sock)
        assert any("already connected" in r.message for r in caplog.records)
        _still_serves(two_nodes)

    @pytest.mark.timeout(30)
    def test_attack_on_another_node(self, two_nodes):
        """Garbage and an oversized frame sent to node 1 leave it serving node 0."""
        address = two_nodes.run_on(1, my_address)
        sock = _raw_connect(address)
        sock.recv(len(MAGIC) + NONCE)
        sock.sendall(os.urandom(64))
        _until_closed(sock)
        sock = connect(address, two_nodes.runtime.key)
        sock.sendall(HEADER.pack(HELLO, 0, 0, 0, 0, 1 << 31, 0))
        _until_closed(sock)
        _still_serves(two_nodes)

    @pytest.mark.timeout(30)
    def test_socket_directory_is_private(self, two_nodes):
        """The Unix sockets live in a directory only the owner can enter (0700)."""
        directory = os.path.dirname(two_nodes.runtime.address)
        assert os.stat(directory).st_mode & 0o777 == 0o700
