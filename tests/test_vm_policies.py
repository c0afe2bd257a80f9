"""VM objects under each replication policy, inspection, and frame capacity."""

from __future__ import annotations

import numpy as np
import pytest

import clusterprogs as progs
from helpers import new_cluster, remote_calls

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(180)]


def remote_calls_to(cluster, name_prefix: str) -> int:
    """Remote PPCs made cluster-wide on objects whose name starts with name_prefix."""
    return remote_calls(cluster, {o.oid for o in cluster.inspect().objects if o.name.startswith(name_prefix)})


# Node 1 takes 16 write faults and node 2 16 read faults.  Expected remote lookups
# (Process.find_region, Region.translate): a singleton makes all 32 remote; group:2
# on 3 nodes groups node 1 with home node 0 (a stub: 16) and gives node 2 its own rep.
@pytest.mark.parametrize("process,region,expected", [
    ("replicated", "per_node", (0, 0)),
    ("singleton", "singleton", (32, 32)),
    ("replicated", "group:2", (0, 16)),
])
class TestPolicies:
    def test_remote_lookups_per_policy(self, process, region, expected):
        """Faults resolve under every policy, with exactly the remote lookups the policy implies."""
        with new_cluster(3, policies={"process": process, "region": region}) as c:
            a = c.zeros((16 * 512,), np.int64)
            c.run(progs.write_pages, a, 1, on=[1], threads=1)
            assert c.run(progs.sum_pages, a, on=[2], threads=1) == [16]
            assert (remote_calls_to(c, "process"), remote_calls_to(c, "region")) == expected


class TestInspect:
    def test_replication_levels(self):
        """inspect() shows the VM objects with their policies and the nodes holding reps."""
        with new_cluster(3) as c:
            a = c.zeros((4 * 512,), np.int64)
            c.run(progs.write_pages, a, 1, threads=1)
            view = c.inspect()
            by_name = {o.name: o for o in view.objects}
            assert by_name["process"].policy == "per_node" and set(by_name["process"].rep_nodes) == {0, 1, 2}
            fcm = next(o for n, o in by_name.items() if n.startswith("fcm:"))
            assert set(fcm.rep_nodes) == {0, 1, 2}
            assert "process" in str(view)


class TestCapacity:
    def test_eviction_keeps_contents(self):
        """With 8 frames per node, 16 pages written and read back across nodes stay intact."""
        with new_cluster(2, memory_per_node=8 * 4096) as c:
            a = c.zeros((16 * 512,), np.int64)
            for node in (0, 1):
                c.run(progs.write_pages, a, node + 5, on=[node], threads=1)
                assert c.run(progs.sum_pages, a, on=[1 - node], threads=1) == [16 * (node + 5)]
            stats = c.statistics()
            assert stats.total.evicted_owned + stats.total.evicted_copies > 0
            assert all(n.resident_pages <= 8 + 1 for n in stats.nodes)

    def test_beyond_the_nodes_memory_is_admitted(self):
        """memory_per_node is a frame budget: an array larger than all nodes' memory is admitted."""
        with new_cluster(2, memory_per_node=8 * 4096) as c:
            assert c.zeros((17 * 512,), np.int64).size == 17 * 512


class TestLocalGrants:
    def test_owner_faults_need_no_message(self):
        """The dynamic owner's first touches and upgrades are granted in place: no PPC, no COR call."""
        with new_cluster(2) as c:
            a = c.zeros((8 * 512,), np.int64)
            assert c.run(progs.sum_pages, a, on=[0], threads=1) == [0]
            c.run(progs.write_pages, a, 2, on=[0], threads=1)
            stats = c.statistics()
            by_name = {o.name.split(":")[0]: o.oid for o in c.inspect().objects}
            ppc = c.ppc_statistics()
            cor_calls = sum(s.calls(oid=by_name["cor"]) for s in ppc)
            fcm_remote = sum(s.calls(kind="remote", oid=by_name["fcm"]) for s in ppc)
            # 8 first touches (zeros), then 8 read-to-write upgrades, all granted in place
            assert (stats.total.zero_fills, stats.total.first_touch_faults, stats.total.coherence_faults,
                    cor_calls, fcm_remote) == (8, 8, 8, 0, 0)
            assert c.run(progs.sum_pages, a, on=[1], threads=1) == [16]


class TestInCore:
    def test_drop_mappings_makes_incore_faults(self):
        """After drop_mappings, faults are resolved from the node's FCM cache: no coherence traffic."""
        with new_cluster(2) as c:
            a = c.zeros((8 * 512,), np.int64)
            c.run(progs.write_pages, a, 3, on=[1], threads=1)
            assert c.drop_mappings(a, nodes=[1]) == [8]
            before = c.statistics().nodes[1]
            assert c.run(progs.sum_pages, a, on=[1], threads=1) == [24]
            after = c.statistics().nodes[1]
            assert after.incore_faults - before.incore_faults == 8
            assert after.coherence_faults == before.coherence_faults
            assert after.fault_p50_us > 0 and after.fault_p99_us >= after.fault_p50_us


class TestObservation:
    def test_no_side_effects(self):
        """statistics, flush and drop_mappings build no reps on untouched nodes and count no faults."""
        with new_cluster(3) as c:
            a = c.zeros((4 * 512,), np.int64)
            c.run(progs.write_pages, a, 1, on=[1], threads=1)
            fcm = next(o for o in c.inspect().objects if o.name.startswith("fcm:"))
            before = c.statistics().total
            c.flush(a)
            assert c.drop_mappings(a) == [0, 4, 0]
            after = c.statistics().total
            assert (after.read_faults, after.write_faults) == (before.read_faults, before.write_faults) == (0, 4)
            now = next(o for o in c.inspect().objects if o.oid == fcm.oid)
            assert set(now.rep_nodes) == set(fcm.rep_nodes) and 2 not in now.rep_nodes
