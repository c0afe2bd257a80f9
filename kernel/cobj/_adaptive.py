"""Usage-driven replication: the ``adaptive`` policy and its monitor.

Design essay
------------
Tornado's case for clustered objects is that "usage pattern determines the
level of replication": a Region that every node faults through wants a rep
per node, while a Process whose region list changes at every attach wants
one copy, since each change must reach every rep before ``attach`` returns.
An object created (or ``set_policy``-ed) with policy ``adaptive`` runs under
``singleton`` or ``per_node`` (``start`` says which first), and a *monitor*
on its home switches it between the two through the hot swap (_swap); each
switch goes into the object's swap history with reason ``adaptive`` and the
figures that caused it.

What the monitor reads is the object's own PPC counts, the ones the COS keeps
per object for inspection.  The per-method statistics of kernel/net/_stats
hold the same calls, but a snapshot of them merges every thread's counters of
every object: 0.6-1.5 ms per node here after a read and a churn phase, against
3-4 µs to read the counters, and it holds the GIL against the faulting thread
(with snapshots, the adaptive scenario's read phases ran 1.2-2.3x below
per_node; with the counters, about 1.1x).  They are gathered from
every node once per window of ``period`` seconds: calls on the node's rep
(local PPCs), calls through its stub (remote PPCs), the root's remote calls
(a rep's forwards to its root elsewhere; on the home, the broadcasts to other
nodes' reps), and the misses of its entries; and, on the home, the root's
``broadcast`` calls (updates every rep must see, counted by ClusteredRoot).
Over the window:

    demand           calls/s that nodes other than the home made on the object
    remote           those of them that were remote PPCs (what it pays now)
    updates          root broadcasts/s
    fanout           remote rep calls per broadcast (per_node: measured;
                     singleton: nnodes - 1, the reps there would be)
    cost_singleton   = demand: under singleton each of those calls is a remote PPC
    cost_replicated  per_node: forwards + broadcast PPCs, measured; singleton:
                     updates x nnodes (one forward, nnodes - 1 broadcast PPCs)

Both costs are remote PPCs per second, the unit a call pays on this machine
(tens of µs, against a few for a local call).  Misses are reported but not
costed: a switch makes one per node, once, which ``dwell`` amortizes.  The rule:

    singleton -> per_node   demand >= up and cost_singleton > ratio x cost_replicated
    per_node  -> singleton  demand < down, or cost_replicated > ratio x cost_singleton

with hysteresis four ways: ``down < up`` and ``ratio >= 1`` leave a band in
which neither rule fires, the rule must ask for the same switch in CONFIRM
windows in a row (on a loaded 2-core machine a node can stall for a whole
window, which then shows no demand at all), and no switch happens within
``dwell`` seconds of the last one.  A swap costs a drain and a miss per node, so an object whose
figures sit near one threshold must not flap.
The window after a swap is dropped: its drain and misses say nothing of the
new policy.

Why a daemon thread on the home (one per node, ticking every monitor whose
object it is home of) and not a check driven by calls: once replicated, the
object's calls are local on every node and never reach the home, so a check
there would never see the demand fall; and the figures come by a PPC to every
node, which must not run inside a caller's call (the fault path).  The
thread runs the swap itself, so a monitor never overlaps its own swap.  It
ends when the node's runtime stops.  A failure (a node lost, a swap undone)
is kept in ``last_error``; the object stays usable under its old policy
(_swap) and the monitor tries again after ``dwell``.  A ``set_policy`` from a
user while the monitor swaps fails with SwapFailed ("already being swapped"),
as any two concurrent swaps do; a fixed policy set that way ends the monitor.

Not covered: an adaptive object that migrates (cluster.migrate) leaves its
monitor behind and keeps its policy at the new home; group:k and partitioned
are never chosen.
"""

from __future__ import annotations

import math
import threading
import time

from ..net import LOST, peek_count as peek
from . import _swap
from ._policy import parse_policy
from ._adaptive_params import ADAPTIVE, DEFAULTS, TARGETS
from ._table import ObjectDestroyed

FIGURES_TIMEOUT = 10.0  # seconds a node may take to report its counters
CONFIRM = 2  # windows in a row the rule must ask for a switch (one can be a scheduling stall)


# ---- the monitor of one object ---------------------------------------------------------------

class Monitor:
    """The adaptive policy of one object, on its home: parameters, last sample, last switch."""

    def __init__(self, policy) -> None:
        self.params = dict(DEFAULTS, **dict(policy.params))
        self.text = str(policy)
        self.switched = -math.inf  # no switch yet: the first may come at once (dwell is between switches)
        self.due = time.monotonic() + self.params["period"]
        self.sample = None   # (monotonic time, per-node rows, root broadcasts)
        self.figures: dict = {}  # the last window's
        self.last_error = ""
        self.stopped = False
        self.wanted, self.held = None, 0  # the policy the rule asked for, in how many windows in a row

    def window(self, now: float, rows: list, broadcasts: int, home: int, policy: str) -> dict | None:
        """The figures of the window since the last sample (None for the first sample)."""
        prev, self.sample = self.sample, (now, rows, broadcasts)
        if prev is None or now <= prev[0]:
            return None
        dt, nnodes = now - prev[0], len(rows)
        # a count below the last one is a new entry (a swap not ours): it counts from 0
        delta = [[a - b if a >= b else a for a, b in zip(r, p)] if LOST not in (r, p) else [0, 0, 0, 0]
                 for r, p in zip(rows, prev[1])]
        others = [d for n, d in enumerate(delta) if n != home]
        demand = sum(d[0] + d[1] for d in others) / dt
        forwards = sum(d[2] for d in others) / dt
        updates, sent = (broadcasts - prev[2]) / dt, delta[home][2] / dt
        if policy == "per_node":
            fanout, replicated = (sent / updates if updates else nnodes - 1), forwards + sent
        else:
            fanout, replicated = nnodes - 1, updates * nnodes
        f = {"period": dt, "demand": demand, "remote": sum(d[1] for d in others) / dt,
             "updates": updates, "forwards": forwards, "fanout": fanout, "cost_singleton": demand,
             "cost_replicated": replicated, "misses": sum(r[3] for r in rows if r is not LOST)}
        return {k: float(f"{v:.4g}") for k, v in f.items()}

    def choose(self, policy: str, f: dict) -> str | None:
        """The policy the rule asks for under figures ``f`` (None: stay)."""
        p = self.params
        if policy == "singleton":
            if f["demand"] >= p["up"] and f["cost_singleton"] > p["ratio"] * f["cost_replicated"]:
                return "per_node"
        elif policy == "per_node":
            if f["demand"] < p["down"] or f["cost_replicated"] > p["ratio"] * f["cost_singleton"]:
                return "singleton"
        return None

    def tick(self, cos, oid: int, now: float) -> dict | None:
        """One window: sample every node; swap if the rule says so and dwell has passed.
        The switch's history record, or None."""
        record = cos._roots.get(oid)
        if record is None or record.destroyed or record.adaptive is not self:
            self.stopped = True  # destroyed, moved, or set_policy made it fixed
            return None
        rows = cos._all_nodes("adaptive_figures", [oid], timeout=FIGURES_TIMEOUT)
        policy = str(record.policy)
        f = self.window(now, rows, peek(record.root._broadcasts), cos.node, policy)
        if f is None:
            return None
        self.figures = f
        target = self.choose(policy, f)
        held = self.held + 1 if target is not None and target == self.wanted else 1
        self.wanted, self.held = target, held
        if target is None or held < CONFIRM or now - self.switched < self.params["dwell"]:
            return None
        began = time.monotonic()
        try:
            return _swap.swap_home(cos, oid, target, _swap.SWAP_TIMEOUT, reason=ADAPTIVE, figures=f)
        finally:  # dwell counts from the swap's end, on the clock ``now`` is read from
            self.switched, self.sample, self.wanted = now + time.monotonic() - began, None, None


def node_figures(cos, oid: int) -> list:
    """This node's PPC counts for ``oid`` (the ``adaptive_figures`` COS operation):
    [calls on its rep, calls through its stub, the root's remote calls (a rep's
    forwards to a root elsewhere; on the home, broadcasts to other nodes), misses]."""
    entry = cos._table.get(oid)
    counts = getattr(entry, "counts", None)
    local, _served, remote = counts() if counts else (0, 0, 0)
    root = cos._root_calls.get(oid)
    return [local, remote, peek(root[1]) if root else 0, getattr(entry, "misses", 0)]


# ---- the ticker: one daemon thread per node for the monitors it is home of ---------------

class Ticker:
    """Ticks every monitor of this node's adaptive objects when its window is due."""

    def __init__(self, cos) -> None:
        self.cos = cos
        self.monitors: dict[int, Monitor] = {}
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, oid: int, monitor: Monitor) -> None:
        """Watch ``oid`` with ``monitor`` (replacing a previous one); start the thread once."""
        with self.lock:
            self.monitors[oid] = monitor
            if self.thread is None:
                self.thread = threading.Thread(target=self.run, daemon=True,
                                               name=f"adaptive monitor of node {self.cos.node}")
                self.thread.start()

    def run(self) -> None:
        """Until the runtime stops: tick the monitors that are due, then sleep to the next."""
        rt = self.cos.runtime
        while not rt.stopping:
            with self.lock:
                due = list(self.monitors.items())
            for oid, monitor in due:
                self.tick(oid, monitor)
            with self.lock:
                wake = min((m.due for m in self.monitors.values()), default=time.monotonic() + 0.1)
            rt.stopped.wait(min(max(wake - time.monotonic(), 0.001), 0.1))

    def tick(self, oid: int, monitor: Monitor) -> None:
        """Tick ``monitor`` if due; forget it once stopped.  Never raises: a failure is
        kept in ``last_error`` and waits out a dwell (the object keeps its policy)."""
        now = time.monotonic()
        if not monitor.stopped and now >= monitor.due:
            monitor.due = now + monitor.params["period"]
            try:
                monitor.tick(self.cos, oid, now)
            except Exception as exc:  # noqa: BLE001 -- a monitor must never kill the thread
                monitor.last_error = f"{type(exc).__name__}: {exc}"
                monitor.switched, monitor.sample = time.monotonic(), None
                monitor.stopped = self.cos.runtime.stopping or isinstance(exc, ObjectDestroyed)
        if monitor.stopped:
            with self.lock:
                if self.monitors.get(oid) is monitor:
                    del self.monitors[oid]


# ---- the COS's hooks ------------------------------------------------------------------------

def install(cos) -> None:
    """Give ``cos`` its ticker and the ``adaptive_figures`` operation."""
    cos.ticker = Ticker(cos)
    cos._system_ops["adaptive_figures"] = lambda oid: node_figures(cos, oid)


def initial(policy):
    """(the policy an object created with ``policy`` starts under, its Monitor or None)."""
    if policy.kind != ADAPTIVE:
        return policy, None
    monitor = Monitor(policy)
    return parse_policy(monitor.params["start"], 1), monitor


def watch(cos, oid: int, record, monitor) -> None:
    """Start ``monitor`` on the new object ``oid`` (nothing if None)."""
    if monitor is not None:
        record.adaptive = monitor
        cos.ticker.add(oid, monitor)


def swap_home(cos, oid: int, policy_text: str, timeout: float) -> dict:
    """The COS's ``swap`` operation on the home: a fixed policy is a hot swap (and ends
    the object's monitor); ``adaptive`` starts a monitor (after a swap to its ``start``
    if the object is under neither singleton nor per_node)."""
    policy = parse_policy(policy_text, cos.nnodes)
    with cos._lock:
        record = cos._roots.get(oid)
    if record is None or record.destroyed:
        raise cos._unknown(oid)
    cos.check_class(type(record.root), policy)
    if policy.kind != ADAPTIVE:
        record.adaptive = None
        return _swap.swap_home(cos, oid, policy_text, timeout)
    monitor = Monitor(policy)
    if str(record.policy) not in TARGETS:
        _swap.swap_home(cos, oid, monitor.params["start"], timeout)
    watch(cos, oid, record, monitor)
    return {"time": time.time(), "from": str(record.policy), "to": str(record.policy), "seconds": 0.0,
            "waited": 0, "wait_seconds": 0.0, "reason": "set_policy", "adaptive": monitor.text}


def status(record) -> dict | None:
    """The monitor of ``record`` for inspection: its policy text, last figures and error."""
    m = record.adaptive
    if m is None:
        return None
    return {"policy": m.text, "figures": dict(m.figures), "last_error": m.last_error}
