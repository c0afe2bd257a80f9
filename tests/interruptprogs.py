"""Programs the interrupt tests run as scripts (SIGINT is sent to them by the test)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import tornado_dsm as td


def spin(a, seconds):
    """Write this node's word of every page in turn (faults all the time) for ``seconds``."""
    t0, n = time.monotonic(), 0
    while time.monotonic() - t0 < seconds:
        a[(n % 16) * 512 + td.current_node()] = n
        n += 1
    return n


def touch_all(a):
    """Write every page once (a page left stuck by an interrupt would hang here)."""
    a[8 + td.current_node()::512] = 1
    return int(a[8 + td.current_node()::512].sum())


def interrupt_in(seconds: float) -> None:
    """Ctrl-C as a terminal sends it: to the whole process group (node processes too)."""
    threading.Timer(seconds, lambda: os.killpg(os.getpgid(0), signal.SIGINT)).start()


def main(mode: str) -> None:
    with td.Cluster(nodes=3, threads_per_node=2, timeout=60) as c:
        a = c.zeros(16 * 512, "int64")
        if mode == "once":
            for _ in range(5):
                interrupt_in(0.5)
                t0 = time.monotonic()
                try:
                    c.run(spin, a, 60)
                except KeyboardInterrupt:
                    print(f"interrupted in {time.monotonic() - t0:.2f} s", flush=True)
                print("after:", c.run(touch_all, a, threads=1, timeout=20), flush=True)
        else:
            interrupt_in(0.5)
            interrupt_in(0.7)
            try:
                c.run(time.sleep, 30)
            except KeyboardInterrupt as exc:
                print("closed:", exc, flush=True)
            try:
                c.zeros(4)
            except RuntimeError as exc:
                print(exc, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
