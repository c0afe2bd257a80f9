"""Joining from another host with the public helpers: td.write_key_file, td.read_key_file,
td.join_cluster and Cluster(transport="tcp", key=..., join=k)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest

import tornado_dsm as td
from helpers import fresh_base

# A joining host's program: wait until node 0 listens (read from /proc/net/tcp, so no
# stray connection reaches node 0), then join with the key file and serve.
JOINER = """
import sys, time
import tornado_dsm as td
address, key_file = sys.argv[1], sys.argv[2]
port = int(address.rpartition(":")[2])
def listening():
    with open("/proc/net/tcp") as f:
        return any(int(cols[1].split(":")[1], 16) == port and cols[3] == "0A"
                   for cols in (line.split() for line in list(f)[1:]))
deadline = time.monotonic() + 30
while not listening() and time.monotonic() < deadline:
    time.sleep(0.05)
sys.exit(td.join_cluster(address, key_file=key_file))
"""


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
# the joined node imports this module by name to run its functions
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, os.environ.get("PYTHONPATH", "")]))


def join(address: str, key_file, **kwargs):
    """A joining node in a process of its own (Popen, or run() with ``wait=True``)."""
    cmd = [sys.executable, "-c", JOINER, address, str(key_file)]
    if kwargs.pop("wait", False):
        return subprocess.run(cmd, capture_output=True, text=True, env=ENV, **kwargs)
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=ENV)


def fill(a, value: int) -> int:
    a[:] = value
    return int(a.sum())


def where() -> int:
    return td.current_node()


class TestKeyFiles:
    @pytest.mark.timeout(30)
    def test_write_then_read(self, tmp_path):
        """write_key_file makes a fresh 32-byte key in a 0600 file that read_key_file gives back."""
        key = td.write_key_file(tmp_path / "k")
        assert len(key) == 32 and stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600
        assert td.read_key_file(tmp_path / "k") == key

    @pytest.mark.timeout(30)
    def test_given_key_and_no_overwrite(self, tmp_path):
        """A given key is stored as is, and an existing key file is never overwritten."""
        key = bytes(range(32))
        assert td.write_key_file(tmp_path / "k", key) == key
        with pytest.raises(FileExistsError):
            td.write_key_file(tmp_path / "k")
        assert td.read_key_file(tmp_path / "k") == key

    @pytest.mark.timeout(30)
    def test_refuses_a_file_others_may_read(self, tmp_path):
        """A key file readable by group or others is refused, naming the fix."""
        td.write_key_file(tmp_path / "k")
        os.chmod(tmp_path / "k", 0o644)
        with pytest.raises(PermissionError, match="chmod 600"):
            td.read_key_file(tmp_path / "k")

    @pytest.mark.timeout(30)
    def test_short_key_is_refused(self, tmp_path):
        """A key shorter than 16 bytes is refused, saying what is accepted."""
        with pytest.raises(ValueError, match="length >= 16"):
            td.write_key_file(tmp_path / "k", b"short")

    @pytest.mark.timeout(30)
    def test_join_cluster_needs_one_key(self):
        """join_cluster wants exactly one of key= and key_file=."""
        with pytest.raises(ValueError, match="exactly one of key="):
            td.join_cluster("127.0.0.1:1")
        with pytest.raises(ValueError, match="exactly one of key="):
            td.join_cluster("127.0.0.1:1", key=bytes(32), key_file="k")


@pytest.mark.multinode
class TestJoinCluster:
    @pytest.mark.timeout(120)
    def test_a_joined_node_shares_arrays_and_a_wrong_key_is_refused(self, tmp_path):
        """A join_cluster node shares the arrays; a wrong key is refused; closing ends the node with 0."""
        key = td.write_key_file(tmp_path / "cluster.key")
        td.write_key_file(tmp_path / "wrong.key")
        address = f"127.0.0.1:{free_port()}"
        joined = join(address, tmp_path / "cluster.key")
        try:
            with td.Cluster(nodes=2, transport="tcp", address=address, key=key, join=1,
                            base=fresh_base(), size=16 << 20) as cluster:
                a = cluster.zeros((4096,), np.int64)
                assert cluster.run(fill, a, 7, on=1) == [7 * 4096]
                refused = join(address, tmp_path / "wrong.key", wait=True, timeout=60)
                assert refused.returncode == 1 and "AuthenticationError" in refused.stderr, refused.stderr
                assert cluster.run(where) == [0, 1]
                assert int(a.sum()) == 7 * 4096
            assert joined.wait(15) == 0, joined.stderr.read()
        finally:
            if joined.poll() is None:
                joined.kill()
            joined.communicate()

