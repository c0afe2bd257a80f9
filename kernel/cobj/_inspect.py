"""Inspection: every node's table rows merged into one replication-level view.

Each node reports its entries (rep or stub, calls through it, misses) and the
roots it is home of (where the reps and stubs are).  ``merge_views`` joins
them by oid.  Counting conventions (each PPC counted once, by its caller):

    calls_local   calls by a thread of the node of the rep (direct calls),
                  including reps forwarding to a root on the same node
    calls_remote  remote PPCs made for the object: stub calls, keyed calls
                  routed to another node's rep, reps forwarding to a remote
                  root, and the root's broadcasts to other nodes
    misses        global-miss-handler runs, one per node that installed an entry
"""

from __future__ import annotations

import time

import attrs


@attrs.frozen
class ObjectView:
    """The replication view of one clustered object."""

    oid: int
    name: str
    cls: str
    policy: str
    home: int
    rep_nodes: tuple[int, ...]
    stub_nodes: tuple[int, ...]
    calls_local: int
    calls_remote: int
    served: int
    misses: int
    history: tuple = ()          # its swaps and migrations (dicts: time, from, to, reason, figures)
    adaptive: dict | None = None  # adaptive objects: the monitor's policy, last figures, last error


@attrs.frozen
class EntryView:
    """One entry of one node's translation table (``cos.table()``)."""

    oid: int
    name: str
    cls: str
    policy: str
    home: int
    kind: str  # "rep", "stub" or "destroyed"
    calls_local: int
    served: int
    calls_remote: int
    misses: int


def entry_view(entry) -> EntryView:
    """The EntryView of a live table entry."""
    local, served, remote = entry.counts()
    return EntryView(entry.oid, entry.name, entry.cls, entry.policy, entry.home, entry.kind,
                     local, served, remote, entry.misses)


@attrs.frozen
class ReplicationView:
    """Cluster-wide replication levels: one ObjectView per live object, by oid."""

    nnodes: int
    objects: tuple[ObjectView, ...]
    lost: tuple[int, ...] = ()  # nodes that did not answer because they are gone
    backends: tuple[str, ...] = ()  # per node: its fault backend (filled in by Cluster.inspect)

    def __getitem__(self, oid) -> ObjectView:
        oid = int(oid)
        for view in self.objects:
            if view.oid == oid:
                return view
        raise KeyError(f"no live clustered object {oid:#x} in this view")

    def __contains__(self, oid) -> bool:
        return any(view.oid == int(oid) for view in self.objects)

    def __len__(self) -> int:
        return len(self.objects)

    def __str__(self) -> str:
        head = ("oid", "name", "class", "policy", "home", "reps", "stubs", "local", "remote", "misses")
        rows = [head] + [
            (f"{v.oid:#x}", v.name, v.cls, v.policy, str(v.home), _nodes(v.rep_nodes),
             _nodes(v.stub_nodes), str(v.calls_local), str(v.calls_remote), str(v.misses))
            for v in self.objects
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lost = f" (lost: {_nodes(self.lost)})" if self.lost else ""
        backend = f", fault backend {'/'.join(sorted(set(self.backends)))}" if self.backends else ""
        lines = [f"replication view: {len(self.objects)} object(s) on {self.nnodes} node(s){lost}{backend}"]
        for i, row in enumerate(rows):
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        for v in self.objects:
            lines += history_lines(v.name, v.history)
            if v.adaptive and v.adaptive["last_error"]:  # the object kept its policy (_adaptive)
                lines.append(f"adaptive monitor of {v.name}: last error: {v.adaptive['last_error']}")
        return "\n".join(lines)


def history_lines(name: str, history) -> list[str]:
    """The swap history of object ``name`` as text lines (none if it never changed)."""
    if not history:
        return []
    lines = [f"swap history of {name}:"]
    for h in history:
        when = time.strftime("%H:%M:%S", time.localtime(h["time"])) + f"{h['time'] % 1:.3f}"[1:]
        moved = f" home {h['from_home']} -> {h['to_home']}" if h.get("from_home") != h.get("to_home") else ""
        figures = ", ".join(f"{k} {v:g}" for k, v in h.get("figures", {}).items())
        lines.append(f"  {when}  {h['from']} -> {h['to']}{moved}  ({h['reason']}, {h['seconds'] * 1e3:.1f} ms, "
                     f"{h['waited']} call(s) waited)" + (f"  {figures}" if figures else ""))
    return lines


def _nodes(nodes) -> str:
    """``0,1,2`` or ``-`` for none."""
    return ",".join(map(str, nodes)) if nodes else "-"


def entry_row(entry, root_calls) -> list:
    """One node's row for one table entry: [oid, kind, local, served, remote, misses]."""
    local, served, remote = entry.counts()
    return [entry.oid, entry.kind, local + root_calls[0], served, remote + root_calls[1], entry.misses]


def root_row(root, info: dict, stubs, history=(), adaptive=None) -> list:
    """The home's row for one root: [oid, name, cls, policy, home, reps, stubs, history,
    adaptive]; an adaptive object's policy reads ``adaptive(<policy in force>)``."""
    policy = f"adaptive({info['policy']})" if adaptive else info["policy"]
    return [root.oid, info["name"], info["cls"], policy, info["home"],
            sorted(root.rep_nodes()), sorted(stubs), list(history), adaptive]


def merge_views(nnodes: int, tables: list, lost: tuple = ()) -> ReplicationView:
    """Join every node's rows (the ``table`` COS operation's results) into a ReplicationView."""
    totals: dict[int, list] = {}
    for table in tables:
        for oid, _kind, local, served, remote, misses in table["entries"]:
            t = totals.setdefault(oid, [0, 0, 0, 0])
            t[0] += local
            t[1] += remote
            t[2] += served
            t[3] += misses
    views = []
    for table in tables:
        for oid, name, cls, policy, home, reps, stubs, history, adaptive in table["roots"]:
            local, remote, served, misses = totals.get(oid, (0, 0, 0, 0))
            views.append(ObjectView(oid, name, cls, policy, home, tuple(reps), tuple(stubs),
                                    local, remote, served, misses, tuple(history), adaptive))
    return ReplicationView(nnodes, tuple(sorted(views, key=lambda v: v.oid)), tuple(lost))
