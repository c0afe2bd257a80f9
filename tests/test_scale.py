"""Many pages whose protections alternate, across nodes (issue 16's case): 3 nodes, nodes 1
and 2 writing every other page of a 312 MiB array (80,000 pages).  On uffd it runs and no
kernel mapping is ever split; on mprotect it hits vm.max_map_count and says so, once."""

from __future__ import annotations

import numpy as np
import pytest

import tornado_dsm as td
import clusterprogs as progs
from helpers import BACKEND_PARAMS, new_cluster

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(150)]

PAGES = 80_000            # 312.5 MiB of float64: more alternating pages than vm.max_map_count allows
WINDOW = 512 << 20
SAMPLE = 1000             # pages node 0 reads back (each one a remote read fault)
with open("/proc/sys/vm/max_map_count") as _f:
    MAX_MAP_COUNT = int(_f.read())


@pytest.mark.parametrize("backend", BACKEND_PARAMS[1:])
def test_interleaved_writers_on_uffd(backend):
    """On uffd, two nodes writing alternate pages of 80,000 succeed, and each window stays a few kernel mappings."""
    with new_cluster(3, size=WINDOW, backend=backend) as c:
        a = c.zeros((PAGES * 512,), np.float64)
        assert c.run(progs.write_every_other_page, a, 1, on=[1, 2]) == [PAGES // 2] * 2
        assert c.run(progs.pages_holding_node, a, 1, on=[1, 2]) == [PAGES // 2] * 2
        states = c.node_set.run_on_each([1, 2], progs.window_state)
        assert all(b == "uffd" and maps <= 3 and sheds == 0 for b, maps, sheds in states), states
        firsts = a.reshape(-1, 512)[:SAMPLE, 0]
        assert (firsts == np.resize([1, 2], SAMPLE)).all()


@pytest.mark.skipif(MAX_MAP_COUNT > PAGES, reason=f"vm.max_map_count is {MAX_MAP_COUNT}: a node's "
                    f"{PAGES // 2} alternating pages fit (tests may not lower the sysctl)")
def test_interleaved_writers_hit_the_limit_on_mprotect(capfd):
    """On mprotect, the writers get one MemoryLayoutError advising uffd, nothing printed, and the nodes go on serving."""
    with new_cluster(3, size=WINDOW, backend="mprotect") as c:
        a = c.zeros((PAGES * 512,), np.float64)
        with pytest.raises(td.MemoryLayoutError) as info:
            c.run(progs.write_every_other_page, a, 1, on=[1, 2])
        message = str(info.value)
        assert "vm.max_map_count" in message and "backend='uffd'" in message
        states = c.node_set.run_on_each([1, 2], progs.window_state)
        assert all(b == "mprotect" and sheds >= 1 for b, _maps, sheds in states), states
        firsts = a.reshape(-1, 512)[:SAMPLE, 0]          # served by the nodes that shed
        assert (firsts == np.resize([1, 2], SAMPLE)).all()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_cluster_names_its_backend(backend):
    """A Cluster started on a backend says, for every node, that it took it."""
    with new_cluster(2, backend=backend) as c:
        assert c.backends() == {0: backend, 1: backend}
        assert c.statistics().backends == (backend, backend)


def test_bad_backend_is_refused_before_nodes_start():
    """An unknown backend is a ValueError naming the accepted ones, before any node starts."""
    with pytest.raises(ValueError, match="'auto', 'uffd', 'mprotect'"):
        td.Cluster(nodes=2, backend="userfault")
