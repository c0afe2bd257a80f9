"""Node processes: start-up, run_on, start-up errors, shutdown, node 0's death."""

from __future__ import annotations

import os

import pytest

from tornado_dsm.kernel import current_runtime, start_nodes

pytestmark = pytest.mark.multinode


def whoami():
    rt = current_runtime()
    return rt.node_id, rt.nnodes, os.getpid()


class TestStartNodes:
    @pytest.mark.timeout(60)
    def test_every_node_runs_and_knows_itself(self):
        """Each node is its own process and knows its id and the cluster size."""
        with start_nodes(3) as nodes:
            seen = [nodes.run_on(k, whoami) for k in range(3)]
            pids = nodes.pids
        assert [s[:2] for s in seen] == [(0, 3), (1, 3), (2, 3)]
        assert len({s[2] for s in seen}) == 3
        assert all(not os.path.exists(f"/proc/{p}") or _zombie(p) for p in pids.values())


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] in "ZX"
    except FileNotFoundError:
        return True
