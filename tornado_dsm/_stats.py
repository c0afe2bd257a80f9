"""Cluster.statistics(): faults, PPCs, messages, bytes, invalidations per node."""

from __future__ import annotations

import collections

import attrs

from tornado_dsm.kernel import current_cos, log2_percentile
from tornado_dsm.objects import (
    FCM, DirectoryStatistics, FCMStatistics, FrameStatistics, PageDirectory, Region, RegionStatistics,
)


@attrs.frozen
class NodeStatistics:
    """What one node (or the total) did."""

    node: int  # -1 for the total
    read_faults: int = 0
    write_faults: int = 0
    refused_faults: int = 0
    incore_faults: int = 0      # resolved from this node's FCM cache, no coherence traffic
    coherence_faults: int = 0   # needed the manager (a grant or a request), first touches excluded
    first_touch_faults: int = 0  # faults on this node granted as zeros (first touch of anonymous memory)
    zero_fills: int = 0         # first touches of anonymous pages the managers on this node zero-filled
    invalidations: int = 0      # sent by managers on this node
    forwards: int = 0           # dynamic manager: requests forwarded along probOwner
    stale_grants: int = 0
    prefetched: int = 0         # read copies installed beside another page's grant (region prefetch)
    prefetch_hits: int = 0      # ... that a later access used
    resident_pages: int = 0
    evicted_copies: int = 0
    evicted_owned: int = 0
    ppc_local: int = 0
    ppc_remote: int = 0         # remote PPCs this node made: one request + one reply each
    messages: int = 0
    bytes: int = 0
    latency_histogram: tuple = attrs.field(default=(0,) * 64, repr=False)  # faults per log2-ns bucket

    @property
    def prefetch_hit_rate(self) -> float | None:
        """Prefetched copies used / installed (None if nothing was prefetched)."""
        return self.prefetch_hits / self.prefetched if self.prefetched else None

    @property
    def faults(self) -> int:
        """Every fault resolved on this node: in-core + coherence + first touch."""
        return self.incore_faults + self.coherence_faults + self.first_touch_faults

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

    def __sub__(self, earlier: "NodeStatistics") -> "NodeStatistics":
        """What happened between ``earlier`` and this snapshot (levels, such as
        resident pages, as of this one; a counter of an array freed meanwhile
        drops out, so no difference goes below zero)."""
        fields = {f.name: max(0, getattr(self, f.name) - getattr(earlier, f.name))
                  for f in attrs.fields(NodeStatistics) if f.name not in _LEVELS}
        fields["latency_histogram"] = tuple(max(0, a - b) for a, b in
                                            zip(self.latency_histogram, earlier.latency_histogram))
        return attrs.evolve(self, **fields)


_LEVELS = ("node", "resident_pages", "latency_histogram")
_COLUMNS = (("faults", "faults"), ("read", "read_faults"), ("write", "write_faults"),
            ("in-core", "incore_faults"), ("coher.", "coherence_faults"), ("1st touch", "first_touch_faults"),
            ("refused", "refused_faults"), ("inval.", "invalidations"), ("PPC loc", "ppc_local"),
            ("PPC rem", "ppc_remote"), ("msgs", "messages"), ("KiB", "bytes"), ("resident", "resident_pages"))


@attrs.frozen
class ClusterStatistics:
    """Per-node figures and their total."""

    nodes: tuple[NodeStatistics, ...]
    total: NodeStatistics
    backends: tuple[str, ...] = ()  # the fault backend of each node ("uffd" or "mprotect")

    def __sub__(self, earlier: "ClusterStatistics") -> "ClusterStatistics":
        """The figures of the interval since ``earlier`` (see NodeStatistics.__sub__)."""
        return ClusterStatistics(tuple(a - b for a, b in zip(self.nodes, earlier.nodes)),
                                 self.total - earlier.total)

    def __str__(self) -> str:
        """One row per node and the total; latency percentiles in µs."""
        header = [name for name, _ in _COLUMNS] + ["p50 µs", "p99 µs"]
        rows = [[str(s.node) if s.node >= 0 else "total", *(_cell(s, key) for _, key in _COLUMNS),
                 f"{s.fault_p50_us:.1f}", f"{s.fault_p99_us:.1f}"] for s in (*self.nodes, self.total)]
        widths = [max(len(h), *(len(r[i + 1]) for r in rows)) for i, h in enumerate(header)]
        lines = ["node   " + "  ".join(h.rjust(w) for h, w in zip(header, widths))]
        lines += [r[0].ljust(5) + "  " + "  ".join(c.rjust(w) for c, w in zip(r[1:], widths)) for r in rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        t = self.total
        return (f"ClusterStatistics({len(self.nodes)} nodes: {t.faults} faults, {t.ppc_remote} remote PPCs, "
                f"{t.invalidations} invalidations; print() it for the table)")


def _cell(s: NodeStatistics, key: str) -> str:
    value = getattr(s, key)
    return str(value // 1024) if key == "bytes" else str(value)


# What each object's statistics record adds to its node's NodeStatistics.

def _from_fcm(s: FCMStatistics) -> dict:
    return {"incore_faults": s.incore_faults, "coherence_faults": s.coherence_faults,
            "first_touch_faults": s.first_touches, "read_faults": s.read_faults, "write_faults": s.write_faults,
            "stale_grants": s.stale_grants, "forwards": s.forwards,
            "invalidations": s.invalidations, "zero_fills": s.zero_fills,
            "prefetched": s.prefetched, "prefetch_hits": s.prefetch_hits}


def _from_region(s: RegionStatistics) -> dict:
    # reads and writes are counted by the FCM reps, on the faulting node; a
    # singleton Region would count them all on its home node
    return {"refused_faults": s.refused}


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
    backends = tuple(cluster.backends().values())
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


class Measurement:
    """What a ``cluster.measure()`` block did: ``statistics`` and ``seconds``
    (None until the block ends)."""

    def __init__(self) -> None:
        self.statistics = None
        self.seconds = None

    def __repr__(self) -> str:
        return f"Measurement(seconds={self.seconds}, statistics={self.statistics!r})"
