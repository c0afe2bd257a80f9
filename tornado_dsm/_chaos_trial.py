"""One chaos trial, run in a process of its own by ``_chaos`` (``python -m``).

A trial starts a 3-node cluster whose every call is bounded
(``Cluster(timeout=BOUND)``), runs a workload of atomic increments on a
shared array, and injects one fault while it runs:

  kill      SIGKILL a node          stop   SIGSTOP a node (never resumed; killed later)
  stall     SIGSTOP, SIGCONT 0.5 s later
  delay     every byte into a node held 20 ms by its relay
  drop      a node's relay closes all its connections
  pressure  one frame per node: every fault evicts

Then it checks, with the ground truth it knows:

* every call ended, with a result or a clear error (NodeLost, TimeoutError,
  SegmentationFault naming a lost array), within BOUND + SLACK ("late" if not);
* a fault that loses no node (stall, delay, pressure) loses no write: the
  totals are exact;
* after a loss, the survivors still work: a fresh array hammered by every
  survivor gives exact totals on every page whose manager survived (the
  fixed manager's directory slice on the lost node is reported by
  ``lost_arrays``, and touching it must fail clearly);
* no survivor keeps a connection to the lost node or a page in flight.

It prints one JSON object: the counts ``_chaos`` adds up.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
import time

import numpy as np

from . import _chaosprogs as progs
from ._cluster import Cluster
from tornado_dsm.kernel import SegmentationFault
from ._relay import Relay

BOUND = 8.0     # seconds every call must end within
SLACK = 4.0     # scheduling and reporting on a loaded machine
WORK = 1.0      # seconds the workload runs (the fault comes 0.1-0.7 s in)
AFTER = 0.3     # seconds the survivors' workload runs
PAGES = 6
# the clear ends of a call: NodeLost is a ConnectionError, PPCTimeout a TimeoutError
CLEAR = (ConnectionError, TimeoutError, SegmentationFault)
DESTRUCTIVE = ("kill", "stop", "drop")


class Trial:
    """The state and counts of one trial."""

    def __init__(self, spec: dict) -> None:
        self.spec, self.kind = spec, spec["kind"]
        self.rng = random.Random(spec["seed"])
        self.victim = self.rng.choice([1, 2])
        self.relays: dict = {}
        self.counts = {"faults": 0, "calls": 0, "late": 0, "lost_writes": 0, "unclear": [],
                       "residue": 0, "reported_losses": 0, "during_call": 0}

    def run(self) -> dict:
        # two frames per node for 6 hammered pages: faults evict all the time
        kw = {"memory_per_node": 2 * 4096} if self.kind == "pressure" else {}
        route = self._route if self.kind in ("delay", "drop") else None
        c = Cluster(3, protocol=self.spec["protocol"], manager=self.spec["manager"],
                    size=16 << 20, timeout=BOUND, route=route, **kw)
        try:
            self.pids = c.run(progs.pid)
            self._fault_phase(c)
            self._survivor_phase(c)
        finally:
            self._call(lambda: c.close(discard=True), "close", limit=BOUND + 15)
            for r in self.relays.values():
                r.close()
        return self.counts

    def _route(self, node: int, address):
        if node == 0:
            return address
        self.relays[node] = relay = Relay(address)
        return relay.address

    # -- phase 1: a fault while the workload runs --------------------------------

    def _fault_phase(self, c) -> None:
        shared = c.zeros((PAGES * progs.WORDS,), np.int64)
        timer = threading.Timer(self.rng.uniform(0.1, 0.7), self._inject)
        timer.start()
        ok = self._call(lambda: c.run(progs.hammer, shared, list(range(PAGES)), WORK), "run")
        ended = time.monotonic()
        timer.join()
        self.counts["during_call"] += int(self.injected_at < ended)
        if self.kind not in DESTRUCTIVE:
            if ok:
                self._count_lost(shared, range(PAGES), sum(ok))
            else:
                self.counts["unclear"].append(f"{self.kind}: the workload failed without a lost node")

    def _inject(self) -> None:
        self.counts["faults"] += 1
        self.injected_at = time.monotonic()
        pid, kind = self.pids[self.victim], self.kind
        if kind == "kill":
            os.kill(pid, signal.SIGKILL)
        elif kind in ("stop", "stall"):
            os.kill(pid, signal.SIGSTOP)
            if kind == "stall":
                threading.Timer(0.5, os.kill, (pid, signal.SIGCONT)).start()
        elif kind == "delay":
            self.relays[self.victim].set_delay(0.02)
        elif kind == "drop":
            self.relays[self.victim].drop()

    # -- phase 2: the survivors ---------------------------------------------------

    def _survivor_phase(self, c) -> None:
        if self.kind == "stop":   # a node that never resumes: make it a loss
            os.kill(self.pids[self.victim], signal.SIGKILL)
        if self.kind in DESTRUCTIVE:
            self._await_loss(c)
        lost = sorted(c.lost_nodes())
        live = [n for n in range(3) if n not in lost]
        fresh = c.zeros((PAGES * progs.WORDS,), np.int64)
        pages = self._live_pages(c, lost)
        rounds = self._call(lambda: c.run(progs.hammer, fresh, pages, AFTER, on=live), "survivors")
        if rounds:
            self._count_lost(fresh, pages, sum(rounds))
        self._check_residue(c, lost, live)

    def _count_lost(self, array, pages, expected: int) -> None:
        """Increments missing (or extra) on ``pages``: each must hold ``expected``."""
        got = array[::progs.WORDS][list(pages)].tolist()
        self.counts["lost_writes"] += sum(abs(expected - g) for g in got)

    def _await_loss(self, c) -> None:
        deadline = time.monotonic() + BOUND
        while self.victim not in c.lost_nodes() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.victim not in c.lost_nodes():
            self.counts["unclear"].append(f"{self.kind}: node {self.victim} never reported lost")

    def _live_pages(self, c, lost: list) -> list:
        """The fresh array's pages whose manager survived (fixed: page p's slice is
        node p mod 3, and ``lost_arrays`` must report the others)."""
        if self.spec["manager"] != "fixed" or not lost:
            return list(range(PAGES))
        dead = [p for p in range(PAGES) if p % 3 in lost]
        reported = c.lost_arrays().get("array1", 0)   # the fresh array: the second made
        if reported == len(dead):
            self.counts["reported_losses"] += 1
        else:
            self.counts["unclear"].append(f"fixed: {len(dead)} pages lost with their directory "
                                          f"slice, lost_arrays reports {reported}")
        return [p for p in range(PAGES) if p not in dead]

    def _check_residue(self, c, lost: list, live: list) -> None:
        if not lost:
            return
        out = self._call(lambda: c.run(progs.residue, lost, on=live), "residue")
        if out:
            self.counts["residue"] += sum(a + b for a, b in out)

    # -- every call: bounded, and ends clearly --------------------------------------

    def _call(self, fn, what: str, limit: float = BOUND + SLACK):
        """fn()'s result, or None after a clear error; counts late and unclear ends."""
        self.counts["calls"] += 1
        start = time.monotonic()
        try:
            return fn() or True
        except Exception as e:  # noqa: BLE001 -- classified below
            if not isinstance(e, CLEAR):
                self.counts["unclear"].append(f"{what}: {type(e).__name__}: {e}"[:300])
            return None
        finally:
            if time.monotonic() - start > limit:
                self.counts["late"] += 1


def main() -> None:
    spec = json.loads(sys.argv[1])
    counts = Trial(spec).run()
    print(json.dumps(counts), flush=True)


if __name__ == "__main__":
    main()
