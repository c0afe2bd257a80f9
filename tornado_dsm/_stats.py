"""Cluster.statistics(): faults, PPCs, messages, bytes, invalidations per node."""

from __future__ import annotations

import attrs

from tornado_dsm.kernel import current_cos, log2_percentile


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


def _sum_stats(stats: dict, into: dict, keys: dict) -> None:
    for src, dst in keys.items():
        into[dst] = into.get(dst, 0) + int(stats.get(src, 0))


def gather_statistics(cluster, oids: list) -> ClusterStatistics:
    """Ask the reps of the arrays' objects, every node's DSM rep and PPC counters."""
    cos, reps = current_cos(), cluster.vm.rep_nodes
    nodes = tuple(range(cluster.nnodes))
    per_node = {n: {} for n in nodes}
    for fcm, region, directory, _cor in oids:
        for n, s in cos.call_reps(fcm, reps(fcm), "statistics", ()).items():
            _sum_stats(s, per_node[n], {"incore_faults": "incore_faults", "coherence_faults": "coherence_faults",
                                        "stale_grants": "stale_grants", "forwards": "forwards",
                                        "invalidations": "invalidations", "zero_fills": "zero_fills"})
        for n, s in cos.call_reps(region, reps(region), "statistics", ()).items():
            _sum_stats(s, per_node[n], {"read_faults": "read_faults", "write_faults": "write_faults",
                                        "refused": "refused_faults"})
        if directory:
            for n, s in cos.call_reps(directory, reps(directory), "statistics", ()).items():
                _sum_stats(s, per_node[n], {"invalidations": "invalidations", "zero_fills": "zero_fills"})
    for n, s in cos.call_reps(int(cluster.vm.dsm), nodes, "statistics", ()).items():
        _sum_stats(s, per_node[n], {"resident": "resident_pages", "evicted_copies": "evicted_copies",
                                    "evicted_owned": "evicted_owned"})
    for n, totals in enumerate(cluster.node_set.run_on_all(ppc_totals)):
        per_node[n].update(totals)
    result = tuple(NodeStatistics(node=n, **per_node[n]) for n in nodes)
    total = result[0]
    for s in result[1:]:
        total = total + s
    return ClusterStatistics(result, attrs.evolve(total, node=-1))


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
