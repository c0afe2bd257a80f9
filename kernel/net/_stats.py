"""PPC counting: calls, bytes and a latency histogram per (oid, method, kind).

Recording sits on the local-PPC fast path (the COS records every local call),
so it takes no lock: each thread counts into its own dict, registered once in
a list, and ``snapshot()`` merges them.  A thread only ever writes its own
counters, so no count is lost; a snapshot taken while calls run sees each
thread's counters at some instant (CPython's ``dict.copy`` and list copies are
atomic under the GIL).

Local calls (the COS's fast path) are cheaper still: each (oid, method) has
one ``itertools.count`` per latency bucket, shared by every thread, and a
call does one ``next()`` on its bucket (a single C call, atomic under the
GIL); ``local_histogram`` hands the counters out, ``snapshot`` reads them
without advancing them.

Latency buckets are log2 of microseconds (machine's ``log2_percentile``):
bucket 0 holds calls under 1 µs, bucket b >= 1 holds [2**(b-1), 2**b) µs;
percentiles are upper bounds.
"""

from __future__ import annotations

import itertools
import threading

import attrs

from ..machine import log2_percentile

NBUCKETS = 32
WIDE = 64  # buckets a local histogram has: any int's bit_length fits; folded into NBUCKETS
LOCAL, REMOTE = "local", "remote"


@attrs.frozen
class PPCCounter:
    """The calls of one (oid, method, kind); kind is "local" or "remote"."""

    oid: int
    method: str
    kind: str
    calls: int
    bytes: int
    histogram: tuple[int, ...]   # log2 µs buckets (see module docstring)
    median_us: float             # upper bound of the median latency
    p90_us: float                # upper bound of the 90th-percentile latency


@attrs.frozen
class PPCStatistics:
    """A snapshot of one node's PPC counters (``NodeRuntime.ppc_statistics()``)."""

    node: int
    counters: tuple[PPCCounter, ...]

    def get(self, oid: int, method: str, kind: str) -> PPCCounter | None:
        """The counter of (oid, method, kind), or None if no such call was made."""
        for c in self.counters:
            if (c.oid, c.method, c.kind) == (oid, method, kind):
                return c
        return None

    def calls(self, kind: str | None = None, oid: int | None = None) -> int:
        """Total calls, optionally only of one kind and/or one oid."""
        return sum(c.calls for c in self.counters
                   if (kind is None or c.kind == kind) and (oid is None or c.oid == oid))

    def __str__(self) -> str:
        lines = [f"PPC statistics of node {self.node}",
                 f"{'oid':>18}  {'method':<20} {'kind':<6} {'calls':>9} {'bytes':>11} "
                 f"{'p50 µs':>8} {'p90 µs':>8}"]
        for c in self.counters:
            lines.append(f"{c.oid:>#18x}  {c.method:<20} {c.kind:<6} {c.calls:>9} {c.bytes:>11} "
                         f"{c.median_us:>8g} {c.p90_us:>8g}")
        return "\n".join(lines)


def to_wire(stats: PPCStatistics) -> list:
    """``stats`` as msgpack-able rows (the node service's ``stats`` reply)."""
    return [[c.oid, c.method, c.kind, c.calls, c.bytes, list(c.histogram)] for c in stats.counters]


def from_wire(node: int, rows) -> PPCStatistics:
    """The ``PPCStatistics`` of ``node`` from its ``to_wire`` rows."""
    return PPCStatistics(node=node, counters=tuple(
        PPCCounter(oid=oid, method=method, kind=kind, calls=calls, bytes=nbytes,
                   histogram=tuple(hist), median_us=log2_percentile(hist, 0.5),
                   p90_us=log2_percentile(hist, 0.9))
        for oid, method, kind, calls, nbytes, hist in rows))


class PPCCounters:
    """Lock-free per-thread counters of one node (see module docstring)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._tables: list[dict] = []
        self._hists: dict[tuple, list] = {}  # (oid, method) -> WIDE counters of local calls
        self._lock = threading.Lock()   # only to register a new thread's table or histogram

    def local_histogram(self, oid: int, method: str) -> list:
        """The counters of local calls of ``method`` on ``oid``: a call that took
        ``ns`` does ``next(hist[(ns // 1000).bit_length()])``."""
        hist = self._hists.get((oid, method))
        if hist is None:
            with self._lock:
                hist = self._hists.setdefault((oid, method), [itertools.count() for _ in range(WIDE)])
        return hist

    def _table(self) -> dict:
        table = {}
        self._local.table = table
        with self._lock:
            self._tables.append(table)
        return table

    def record(self, oid: int, method: str, remote: bool, nbytes: int, seconds: float) -> None:
        """Count one call of ``method`` on ``oid`` that moved ``nbytes`` and took ``seconds``."""
        try:
            table = self._local.table
        except AttributeError:
            table = self._table()
        key = (oid, method, remote)
        entry = table.get(key)
        if entry is None:
            entry = table[key] = [0, 0, [0] * NBUCKETS]
        entry[0] += 1
        entry[1] += nbytes
        b = int(seconds * 1e6).bit_length()
        entry[2][b if b < NBUCKETS else NBUCKETS - 1] += 1

    def snapshot(self, node: int) -> PPCStatistics:
        """Merge every thread's counters into one frozen ``PPCStatistics``."""
        merged: dict = {}
        with self._lock:
            tables = list(self._tables)
            hists = list(self._hists.items())
        for (oid, method), hist in hists:
            counts = [peek(c) for c in hist]
            folded = counts[:NBUCKETS - 1] + [sum(counts[NBUCKETS - 1:])]
            if sum(folded):
                m = merged.setdefault((oid, method, False), [0, 0, [0] * NBUCKETS])
                m[0] += sum(folded)
                m[2] = [a + b for a, b in zip(m[2], folded)]
        for table in tables:
            for key, (calls, nbytes, hist) in table.copy().items():
                m = merged.setdefault(key, [0, 0, [0] * NBUCKETS])
                m[0] += calls
                m[1] += nbytes
                for i, n in enumerate(list(hist)):
                    m[2][i] += n
        counters = tuple(
            PPCCounter(oid=oid, method=method, kind=REMOTE if remote else LOCAL,
                       calls=c, bytes=n, histogram=tuple(h),
                       median_us=log2_percentile(h, 0.5), p90_us=log2_percentile(h, 0.9))
            for (oid, method, remote), (c, n, h) in sorted(merged.items(), key=_order))
        return PPCStatistics(node=node, counters=counters)


def peek(counter: itertools.count) -> int:
    """The next value of an itertools.count without advancing it."""
    return int(repr(counter)[6:-1])


def _order(item):
    (oid, method, remote), _ = item
    return (oid, method, remote)
