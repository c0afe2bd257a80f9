"""Fixtures and session setup; the helpers the test modules share are in helpers.py."""

from __future__ import annotations

import os
import signal

import pytest
from hypothesis import Phase, settings

# ---- session: lock-debug mode for the whole suite ---------------------------------------
# Set before any node starts, so spawned nodes inherit it, and before the kernel is
# imported here; refresh() in case something imported the kernel earlier still.
os.environ["TORNADO_DSM_DEBUG_LOCKS"] = "1"

from tornado_dsm.kernel import KernelPager, NodeMemory, start_nodes  # noqa: E402
from tornado_dsm.kernel.cobj import _lock as _cobj_lockdebug  # noqa: E402

from helpers import BACKEND_PARAMS, NNODES, fresh_base, process_gone  # noqa: E402

_cobj_lockdebug.refresh()

# ---- session: Ctrl-C as a terminal delivers it ----------------------------------------
# A runner that starts pytest with SIGINT ignored (a background job of a shell without job
# control) would pass that on to every program the Ctrl-C tests start: an ignored signal
# stays ignored across exec, so their SIGINT would never arrive.  A handler does not
# survive exec (it becomes the default), so catching SIGINT here gives the programs the
# terminal's disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# ---- hypothesis: no deadline (node processes on 2 shared cores are slow at times,
# and a slow example is not a wrong one), and no "explain" phase, whose patch
# writer imports libcst where it is installed and fails under filterwarnings=error.
settings.register_profile("tornado_dsm", deadline=None,
                          phases=[p for p in Phase if p is not Phase.explain])
settings.load_profile("tornado_dsm")

# ---- kernel: windows -----------------------------------------------------------------


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """Each fault backend in turn: "mprotect", then "uffd" (skipped, naming the
    kernel's reason, where userfaultfd is refused)."""
    return request.param


@pytest.fixture
def memory(backend):
    """A 64-page window on node 0 with a kernel-only pager allowing everything,
    on each fault backend."""
    with NodeMemory(base=fresh_base(), size=64 * 4096, node=0, backend=backend) as mem:
        mem.pager = KernelPager(mem)
        mem.set_handler(mem.pager)
        yield mem


# ---- nodes: clusters that clean up ---------------------------------------------------


@pytest.fixture
def cluster_factory():
    """``start(n, **kw)`` -> a started cluster; each is closed after the test and
    none of its spawned node processes may remain."""
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


# ---- nodes: clusters shared by a whole module -------------------------------------------


@pytest.fixture(scope="module")
def three_nodes():
    """``NNODES`` (three) nodes for the whole module (node 0 is this process)."""
    with start_nodes(NNODES) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def two_nodes():
    """Two nodes on Unix sockets for the whole module (node 0 is this process)."""
    with start_nodes(2) as cluster:
        yield cluster
