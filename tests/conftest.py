"""Shared fixtures.  Each section belongs to the module named in its heading."""

from __future__ import annotations

import itertools

import pytest

from tornado_dsm.kernel import DEFAULT_BASE, KernelPager, NodeMemory

# ---- kernel: windows -----------------------------------------------------------

# Every window a test creates gets its own 4 GiB slot above the default base,
# so a test that leaks a window cannot make the next one collide.
_next_slot = itertools.count(1)


def fresh_base() -> int:
    """A window base no other test in this process has used."""
    return DEFAULT_BASE + next(_next_slot) * (1 << 32)


@pytest.fixture
def memory():
    """A 64-page window on node 0 with a kernel-only pager allowing everything."""
    with NodeMemory(base=fresh_base(), size=64 * 4096, node=0) as mem:
        mem.pager = KernelPager(mem)
        mem.set_handler(mem.pager)
        yield mem

# ---- clustered objects: lock-debug mode for the whole suite -------------------
# Set before any node starts, so spawned nodes inherit it; refresh() because the
# kernel (and its lock module) was imported above, before the variable was set.
import os as _os  # noqa: E402

_os.environ["TORNADO_DSM_DEBUG_LOCKS"] = "1"
from tornado_dsm.kernel.cobj import _lock as _cobj_lockdebug  # noqa: E402

_cobj_lockdebug.refresh()

# ---- nodes: clusters that clean up (test_node, test_ppc, test_transport) -------


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.fixture
def cluster_factory():
    """``start(n, **kw)`` -> a started cluster; each is closed after the test and
    none of its spawned node processes may remain."""
    from tornado_dsm.kernel import start_nodes

    started = []

    def start(*args, **kwargs):
        cluster = start_nodes(*args, **kwargs)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        cluster.close()
    leftovers = [pid for c in started for pid in c.pids.values() if not process_gone(pid)]
    assert not leftovers, f"node processes left behind: {leftovers}"


# ---- clustered objects: three nodes shared by a whole module --------------------
# (test_ppc.py and test_transport.py define their own two-node `nodes`.)
THREE = 3


@pytest.fixture(scope="module")
def nodes():
    """Three nodes for the whole module (node 0 is this process)."""
    from tornado_dsm.kernel import start_nodes

    with start_nodes(THREE) as cluster:
        yield cluster
