"""Cluster.statistics(): faults, PPCs, messages, bytes, invalidations per node."""

from __future__ import annotations

import collections

import attrs

from tornado_dsm.kernel import current_cos, log2_percentile
from tornado_dsm.objects import (
    node_backend, FCM, DirectoryStatistics, FCMStatistics, FrameStatistics, PageDirectory, Region, RegionStatistics,
)


@attrs.frozen
class NodeStatistics:
    """What one node (or the total) did."""

    node: int  # -1 for the total
    read_faults: int = 0
    write_faults: int = 0
    refused_faults: int = 0
    incore_faults: int = 0      # resolved from this node's FCM cache, no coherence traffic
    coherence_faults: int = 0   # needed the manager (includes first-touch zero fills)
    zero_fills: int = 0         # first touches of anonymous pages the managers on this node zero-filled
    invalidations: int = 0      # sent by managers on this node
    forwards: int = 0           # dynamic manager: requests forwarded along probOwner
    stale_grants: int = 0
    resident_pages: int = 0
    evicted_copies: int = 0
    evicted_owned: int = 0
    ppc_local: int = 0
    ppc_remote: int = 0         # remote PPCs this node made: one request + one reply each
    messages: int = 0
    bytes: int = 0
    latency_histogram: tuple = (0,) * 64  # faults per log2-ns bucket: [2**(b-1), 2**b) ns

    def fault_latency_us(self, q: float) -> float:
        """Upper bound of the q-quantile (0..1) fault latency, in microseconds."""
        return log2_percentile(self.latency_histogram, q) / 1000.0

    @property
    def fault_p50_us(self) -> float:
        return self.fault_latency_us(0.5)

    @property
    def fault_p90_us(self) -> float:
        return self.fault_latency_us(0.9)

    @property
    def fault_p99_us(self) -> float:
        return self.fault_latency_us(0.99)

    def __add__(self, other: "NodeStatistics") -> "NodeStatistics":
        fields = {f.name: getattr(self, f.name) + getattr(other, f.name)
                  for f in attrs.fields(NodeStatistics) if f.name not in ("node", "latency_histogram")}
        fields["latency_histogram"] = tuple(a + b for a, b in zip(self.latency_histogram, other.latency_histogram))
        return NodeStatistics(node=-1, **fields)


@attrs.frozen
class ClusterStatistics:
    """Per-node figures and their total."""

    nodes: tuple[NodeStatistics, ...]
    total: NodeStatistics
    backends: tuple[str, ...] = ()  # the fault backend of each node ("uffd" or "mprotect")


# What each object's statistics record adds to its node's NodeStatistics.

def _from_fcm(s: FCMStatistics) -> dict:
    return {"incore_faults": s.incore_faults, "coherence_faults": s.coherence_faults,
            "stale_grants": s.stale_grants, "forwards": s.forwards,
            "invalidations": s.invalidations, "zero_fills": s.zero_fills}


def _from_region(s: RegionStatistics) -> dict:
    return {"read_faults": s.read_faults, "write_faults": s.write_faults, "refused_faults": s.refused}


def _from_directory(s: DirectoryStatistics) -> dict:
    return {"invalidations": s.invalidations, "zero_fills": s.zero_fills}


def _from_frames(s: FrameStatistics) -> dict:
    return {"resident_pages": s.resident, "evicted_copies": s.evicted_copies,
            "evicted_owned": s.evicted_owned}


def _add_reps(per_node: dict, ref, nodes: tuple, convert) -> None:
    """Add ``convert(statistics())`` of the rep of ``ref`` on each of ``nodes``."""
    for n, stats in zip(nodes, ref.on_each(nodes).statistics()):
        per_node[n].update(convert(stats))


def gather_statistics(cluster, oids: list) -> ClusterStatistics:
    """Ask the reps of the arrays' objects, every node's DSM rep and PPC counters."""
    cos, reps = current_cos(), cluster.vm.rep_nodes
    nodes = tuple(range(cluster.nnodes))
    per_node = {n: collections.Counter() for n in nodes}
    for fcm, region, directory, _cor in oids:
        _add_reps(per_node, cos.ref(fcm, FCM), reps(fcm), _from_fcm)
        _add_reps(per_node, cos.ref(region, Region), reps(region), _from_region)
        if directory:
            _add_reps(per_node, cos.ref(directory, PageDirectory), reps(directory), _from_directory)
    _add_reps(per_node, cluster.vm.dsm, nodes, _from_frames)
    ppc = cluster.node_set.run_on_all(ppc_totals)
    result = tuple(NodeStatistics(node=n, **per_node[n], **ppc[n]) for n in nodes)
    total = result[0]
    for s in result[1:]:
        total = total + s
    backends = tuple(cluster.node_set.run_on_all(node_backend))
    return ClusterStatistics(result, attrs.evolve(total, node=-1), backends)


def ppc_totals() -> dict:
    """This node's PPC totals and fault-latency histogram (runs on the node)."""
    from tornado_dsm.objects import fault_latency_histogram

    stats = current_cos().runtime.ppc_statistics()
    local = remote = nbytes = 0
    for row in stats.counters:
        if row.kind == "local":
            local += row.calls
        else:
            remote += row.calls
            nbytes += row.bytes
    return {"ppc_local": local, "ppc_remote": remote, "messages": 2 * remote, "bytes": nbytes,
            "latency_histogram": tuple(fault_latency_histogram())}
