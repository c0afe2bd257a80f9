"""Ctrl-C during `Cluster.run`: interrupt the function on every node, keep the cluster.

Without this, SIGINT reaches only node 0's main thread, as a KeyboardInterrupt
raised wherever that thread is: in the middle of a message being framed, or
of a fault being resolved, which leaves a half-written frame or a page
stuck.  So while `run` waits, node 0's main thread only waits on an Event;
the calls to the nodes run on a helper thread, and SIGINT is caught by a
handler that raises nothing:

* the first Ctrl-C asks every chosen node to interrupt the run's threads
  (`_runner.interrupt_run`: a KeyboardInterrupt raised asynchronously in each,
  never inside the fault handler), then `run` raises KeyboardInterrupt once
  they finished, or after ``GRACE_S`` if some did not (a long C call or a
  sleep cannot be interrupted; those threads run on).  The cluster stays
  usable.
* a second Ctrl-C closes the cluster (file-backed arrays are written back)
  and raises KeyboardInterrupt.

Outside `run`, while a cluster is open, Ctrl-C raises KeyboardInterrupt as
usual except inside the fault handler (a fault of node 0's main thread):
there it is kept until the fault is resolved (`guard_faults`).  All this
applies only where Python delivers SIGINT: in the main thread, with the
default handler in place (a program with its own handler keeps it).
"""

from __future__ import annotations

import signal
import threading
import time

from tornado_dsm.kernel import trap

GRACE_S = 1.0


def can_catch() -> bool:
    """Whether `run` may take SIGINT over here (main thread, default handler)."""
    return (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) in (signal.default_int_handler, sigint_outside_faults))


def guard_faults() -> object:
    """While a cluster is open on node 0: Ctrl-C outside `run` raises as usual, but
    never inside the fault handler (it is kept until the fault is resolved).
    Returns the handler to give back to `unguard_faults` (None: nothing done)."""
    if not can_catch():
        return None
    return signal.signal(signal.SIGINT, sigint_outside_faults)


def unguard_faults(previous) -> None:
    """Put the SIGINT handler `guard_faults` replaced back (main thread only)."""
    if previous is not None and threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGINT) is sigint_outside_faults:
        signal.signal(signal.SIGINT, previous)


def run_interruptibly(call, interrupt, close, what: str, interrupted=lambda result: False):
    """``call()`` on a helper thread; Ctrl-C: ``interrupt()`` once, ``close()`` twice.
    A Ctrl-C is never lost: if the call still returns normally, without a result that
    ``interrupted(result)`` says shows the interrupt, KeyboardInterrupt is raised here."""
    done, box = threading.Event(), {}

    def body() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:  # handed to the waiting thread
            box["error"] = exc
        finally:
            done.set()

    presses = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: presses.append(time.monotonic()))
    try:
        threading.Thread(target=body, name="tornado_dsm-run", daemon=True).start()
        _wait(done, presses, interrupt, close, what)
    finally:
        signal.signal(signal.SIGINT, old)
    # pressed as the call finished (before a poll saw it, or before the interrupt reached
    # the threads): the call's result does not show it, so it is raised here
    if presses and "error" not in box and not interrupted(box["result"]):
        raise KeyboardInterrupt(f"{what}: interrupted as it finished")
    if "error" in box:
        raise box["error"]
    return box["result"]


def _wait(done, presses, interrupt, close, what: str) -> None:
    asked = None
    while not done.wait(0.05):
        if len(presses) >= 2:
            close()
            raise KeyboardInterrupt(f"{what}: interrupted twice; the cluster is closed")
        if presses and asked is None:
            asked = time.monotonic()
            threading.Thread(target=interrupt, name="tornado_dsm-interrupt", daemon=True).start()
        if asked is not None and time.monotonic() - asked > GRACE_S:
            raise KeyboardInterrupt(f"{what}: interrupted; some threads did not stop within {GRACE_S} s "
                                    "(a long C call or a sleep) and run on; the cluster stays usable")


def sigint_outside_faults(signum, frame) -> None:
    """SIGINT as KeyboardInterrupt, except inside the fault handler (then deferred)."""
    if not trap.defer_interrupt_if_faulting():
        raise KeyboardInterrupt
