"""Clusters across hosts from the public API: key files and joining nodes.

``write_key_file`` / ``read_key_file`` make and read the file a joining host
needs (the cluster key as hex text, mode 0600); ``join_cluster`` is
``tornado-dsm node --join`` as a function: this process becomes a node of a
cluster whose node 0 runs elsewhere and serves until that cluster ends.
"""

from __future__ import annotations

import os

from tornado_dsm.kernel import attach, check_key, new_key, parse_address, run_node
from tornado_dsm.kernel import read_key_file as _read_key_file
from tornado_dsm.kernel import write_key_file as _write_key_file


def write_key_file(path, key: bytes | None = None) -> bytes:
    """Store ``key`` (default: a fresh random 32-byte key) as hex text in a new file
    ``path`` with mode 0600, and return the key.  An existing file is never
    overwritten (FileExistsError): a key file is a secret someone may rely on."""
    key = new_key() if key is None else check_key(key)
    _write_key_file(os.fspath(path), key)
    return key


def read_key_file(path) -> bytes:
    """The key stored as hex text in ``path``; PermissionError if group or others
    may access the file, ValueError if it holds no key of at least 16 bytes."""
    return _read_key_file(os.fspath(path))


def join_cluster(address: str, *, key: bytes | None = None, key_file=None, listen: str | None = None,
                 timeout: float | None = None, start_timeout: float = 60.0) -> int:
    """Join the cluster whose node 0 listens at ``address`` ("HOST:PORT") and serve
    as one of its nodes until node 0 closes the cluster or dies.

    The key is ``key`` or the content of ``key_file`` (exactly one of them).
    ``listen``: the host this node listens on for its peers (default: the
    interface that reaches node 0).  ``timeout``: the default PPC timeout;
    ``start_timeout``: how long to wait for the other nodes at start-up.
    Returns the exit status: 0 once the cluster shut down, 1 if this node
    could not join or failed (the reason is on stderr, or raised on node 0).
    """
    if (key is None) == (key_file is None):
        raise ValueError("join_cluster needs exactly one of key= (bytes) and key_file= (a path), "
                         f"got key={'given' if key is not None else None}, key_file={key_file!r}")
    key = check_key(key) if key is not None else read_key_file(key_file)
    host, port = parse_address(address)
    config = {"node": None, "address": [host, port], "key": key, "timeout": timeout,
              "start_timeout": start_timeout, "listen": [listen, 0] if listen else None,
              "attach": attach}
    return run_node(config)


__all__ = ["write_key_file", "read_key_file", "join_cluster"]
