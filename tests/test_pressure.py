"""Memory pressure: evictions under every protocol and manager end, and lose no write.

Each run is a program of its own (``helpers.run_isolated``) with a timeout, since
the failure these tests guard against is a cluster that never returns: the
dynamic manager used to hand an evicted page to its home out of band, and the
home's own request then waited on the others' in a cycle (3 runs in 3).
"""

from __future__ import annotations

import pytest

from helpers import run_isolated

COMBINATIONS = [(p, m) for p in ("ivy", "migrate") for m in ("centralized", "fixed", "dynamic")]


@pytest.mark.multinode
class TestEvictionUnderContention:
    @pytest.mark.parametrize(("protocol", "manager"), COMBINATIONS)
    def test_one_frame_per_node(self, protocol, manager):
        """Three nodes, one frame each, two contended pages: every increment counts."""
        first, second, evictions = run_isolated("pressure_counts", 3, protocol, manager, 1, 100)
        assert (first, second) == (300, 300) and evictions > 0

    @pytest.mark.parametrize("manager", ["dynamic", "fixed"])
    def test_two_nodes_migrate(self, manager):
        """Two nodes under migrate, one frame each: the page ping-pongs through eviction."""
        first, second, evictions = run_isolated("pressure_counts", 2, "migrate", manager, 1, 150)
        assert (first, second) == (300, 300) and evictions > 0
