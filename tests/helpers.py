"""Helpers shared by the test modules (conftest.py holds only fixtures and session setup).

* ``fresh_base``: a window base in an address slot of its own;
* ``process_gone``: whether a node process has exited;
* ``NNODES``: the size of conftest's ``three_nodes`` cluster;
* ``new_cluster``: a ``tornado_dsm.Cluster`` whose window is in a slot of its own;
* ``remote_calls``: remote PPCs counted cluster-wide on some objects;
* ``attempt``: runs on a node (module level, so nodes import it by name).
"""

from __future__ import annotations

import itertools

import tornado_dsm as td
from tornado_dsm.kernel import DEFAULT_BASE

# ---- address space ------------------------------------------------------------------
# Every window a test creates gets its own 4 GiB slot above the default base,
# so a test that leaks a window cannot make the next one collide.
_next_slot = itertools.count(1)


def fresh_base() -> int:
    """A window base no other test in this process has used."""
    return DEFAULT_BASE + next(_next_slot) * (1 << 32)


# ---- node processes -----------------------------------------------------------------

NNODES = 3  # the size of the shared `three_nodes` cluster


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


# ---- VM clusters --------------------------------------------------------------------


def new_cluster(nodes: int, *, size: int = 16 << 20, **options) -> td.Cluster:
    """A ``tornado_dsm.Cluster`` of ``nodes`` nodes whose window (``size`` bytes) is in a
    fresh slot; ``options`` are the other ``Cluster`` arguments.  Use it as a context manager."""
    return td.Cluster(nodes=nodes, base=fresh_base(), size=size, **options)


def remote_calls(cluster, oids) -> int:
    """Remote PPCs made so far on the objects ``oids``, summed over every node of ``cluster``."""
    return sum(s.calls(kind="remote", oid=o) for s in cluster.ppc_statistics() for o in oids)


# ---- run on a node ------------------------------------------------------------------


def attempt(fn, *args):
    """("ok", result) or (exception type name, message): errors checked on the node itself."""
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001
        return (type(e).__name__, str(e))
