"""How long a reader polls for a frame it expects before it sleeps in ``recv``.

Design
------
A remote PPC's round trip between two Python processes is short (10-30 us)
next to what it costs to wake a thread that sleeps in ``recv``: the sender's
wake-up IPI, on a virtual machine the halted vCPU's exit and re-entry, the
scheduler's switch -- 30-50 us per sleeping end on the machines this was
measured on, paid at both ends of every call.  So a thread that expects a
frame soon polls its socket first (``FrameReader.spin``: ``poll`` with no
timeout in a C loop, the GIL released, ``sched_yield`` between polls so
any runnable thread of this CPU runs first), and sleeps only when nothing
came within the bound:

* a caller leading its channel (``CallChannel``) expects its reply within a
  fault's service time: it polls up to ``CALL`` seconds (default 200 us);
* a serving reader (``ServeChannel``) that has just answered a request
  expects the next one of a burst (a fault stream): while its requests come
  within twice ``SERVE`` of its replies it polls up to ``SERVE`` seconds
  (default 50 us) before it sleeps; a lone request (an invalidation, a
  barrier's wait) is not followed by a poll, so on a machine with more
  nodes than CPUs the readers that have nothing coming do not compete with
  the ones that work.

A node that has nothing to do polls at most these bounds after its last
frame and then sleeps: idle nodes use no CPU.  The cost is CPU while
waiting: at most one polling thread per channel, and each poll yields.

``TORNADO_DSM_SPIN_US`` sets the bounds in microseconds, ``CALL[,SERVE]``
(``0`` turns polling off: every reader sleeps at once, as before).
"""

from __future__ import annotations

import os

ENV_VAR = "TORNADO_DSM_SPIN_US"
DEFAULT = "200,50"


def parse(text: str) -> tuple[float, float]:
    """(call, serve) bounds in seconds from ``CALL[,SERVE]`` microseconds; one
    number sets both.  ValueError naming the text and the accepted form."""
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 2 or not all(0 <= v <= 1e6 for v in values):
        raise ValueError(f"{ENV_VAR}={text!r}: expected CALL[,SERVE] microseconds, each 0..1000000 "
                         f"(default {DEFAULT}; 0 turns polling off)")
    call = values[0]
    serve = values[1] if len(values) == 2 else call
    return call * 1e-6, serve * 1e-6


CALL, SERVE = parse(os.environ.get(ENV_VAR, DEFAULT))
