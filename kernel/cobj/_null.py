"""The local-PPC floor: ``NullObject`` and ``local_ppc_seconds``.

``local_ppc_seconds`` is what ``tornado-dsm bench ppc`` and the tests time:
a local call through the translation table on an object whose method does
nothing.
"""

from __future__ import annotations

from time import perf_counter

from ._cos import current_cos
from ._policy import ClusteredRep, ClusteredRoot


class NullObject(ClusteredRoot):
    """A clustered object whose one method does nothing: the local-PPC floor."""

    class Rep(ClusteredRep):
        """The rep: ``nop()`` returns None."""

        def nop(self) -> None:
            """Do nothing."""


def local_ppc_seconds(n: int = 100_000) -> float:
    """Seconds per local PPC: ``n`` calls of ``nop`` on a singleton NullObject on this node."""
    cos = current_cos()
    ref = cos.create(NullObject, name="bench-null")
    call, oid = cos.call, ref.oid
    call(oid, "nop")  # the miss
    t0 = perf_counter()
    for _ in range(n):
        call(oid, "nop")
    elapsed = perf_counter() - t0
    ref.destroy()
    return elapsed / n
