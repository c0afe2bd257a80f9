"""A PageDirectory's state across a hot swap (centralized <-> fixed) or a migration.

Design essay
------------
The directory's state (owner, copyset, version of every page) lives in its
reps: one rep with every page under the centralized manager (policy
``singleton``), one slice per node under the fixed manager (``partitioned``:
node n keeps pages n, n + N, ...).  A swap (kernel/cobj/_swap.py) drains every
call first, so no page is busy when the old reps export their slices
(``export_slice``); the root merges them (``HeldSlices.merge``) and cuts the
result into the slices of the new policy's layout, which it *holds*.

Why the root holds the slices instead of handing them out in ``rep_args``:
a rep built from ``rep_args`` is not yet a rep that will serve.  A miss
answered while a swap runs is thrown away by the node that asked (it raced
the swap: a mediator is in its table, or the answer's generation is older
than the swap it has seen), and such a rep never served a call.  Had it
carried the slice's only copy, the slice would be gone with it.  So a new
rep is told only that the root holds its slice (``rep_args``: the layout's
generation), and takes it (``HeldSlices.take``) at its first call -- a rep
that serves a call is installed, and only one rep per slice is installed per
generation.  A rep that never served a call exports nothing (None): its
slice is still the root's, and the next merge starts from what the root
still holds.  The root keeps a slice only until its rep's first call, so the
fixed manager's saving (a node pays for 1/N of the pages) holds again once
every node has faulted.

The reps' work counts (invalidations, zero fills) travel with the state:
the first slice taken after a swap carries the retired reps' counts, so
every count is kept once.
"""

from __future__ import annotations

import numpy as np

from tornado_dsm.kernel import DSMInternalError

from ._copyset import copyset_dtype, node_dtype

NOT_HELD = -1  # rep_args' generation for a rep whose slice starts empty (nothing to take)
TAKEN = -2     # ... for a second rep of a slice already taken (one that must never serve)


def export_slice(directory, counts) -> list:
    """A drained directory slice for the root (msgpack-able): [stride, offset, owner,
    copyset, version bytes, [invalidations, zero fills]].  A busy page here means a
    call was still inside the directory: the swap's drain is broken, stop loudly."""
    if directory.busy:
        raise DSMInternalError("PageDirectory.swap_export", f"slots {sorted(directory.busy)} still "
                               "busy after the swap drained every call")
    return [directory.stride, directory.offset, directory.owner.tobytes(),
            directory.copyset.tobytes(), directory.version.tobytes(), list(counts)]


def load_slice(directory, state: list) -> None:
    """Fill an empty ``directory`` slice from what ``HeldSlices.take`` returned."""
    owner, copyset, version = state[:3]
    directory.owner[:] = np.frombuffer(owner, dtype=directory.owner.dtype)
    directory.copyset[:] = np.frombuffer(copyset, dtype=directory.copyset.dtype)
    directory.version[:] = np.frombuffer(version, dtype=np.uint32)


class HeldSlices:
    """On the root: the directory state of the current layout that no rep has taken yet,
    one slice (owner, copyset, version arrays) per offset."""

    def __init__(self, npages: int, nnodes: int) -> None:
        self.npages, self.nnodes = npages, nnodes
        self.dtypes = (node_dtype(nnodes), copyset_dtype(nnodes), np.dtype(np.uint32))
        self.stride = 1
        self.slices: dict[int, list] = {}  # offset -> [owner, copyset, version]
        self.generation = 0                # bumped by every merge
        self.counts = [0, 0]               # the retired reps' work counts, for the next take

    def rep_generation(self, offset: int) -> int:
        """What ``rep_args`` tells the new rep of slice ``offset``: this layout's
        generation if the root holds its slice, NOT_HELD before the first merge (every
        slice starts empty), TAKEN if a rep took it already: a second rep of a slice is
        only ever built by a miss that raced the first one and is thrown away, so it
        must never serve (it would start empty and forget the pages)."""
        if offset in self.slices:
            return self.generation
        return TAKEN if self.generation else NOT_HELD

    def merge(self, states: list, stride: int) -> None:
        """The held slices plus the old reps' exports, laid out anew as ``stride`` slices."""
        full = self._full()
        for s_stride, offset, *arrays, counts in states:
            for column, raw, dtype in zip(full, arrays, self.dtypes):
                column[offset::s_stride] = np.frombuffer(raw, dtype=dtype)
            self.counts = [a + b for a, b in zip(self.counts, counts)]
        self.stride = stride
        self.slices = {o: [column[o::stride].copy() for column in full] for o in range(stride)}
        self.generation += 1

    def _full(self) -> list:
        """Every page's (owner, copyset, version), from the held slices (untouched elsewhere)."""
        owner, copyset, version = (np.zeros(self.npages, dtype=d) for d in self.dtypes)
        owner[:] = -1
        for offset, arrays in self.slices.items():
            for column, part in zip((owner, copyset, version), arrays):
                column[offset::self.stride] = part
        return [owner, copyset, version]

    def take(self, generation: int, offset: int) -> list:
        """Give slice ``offset`` to its rep (once): [owner, copyset, version bytes, counts]."""
        if generation != self.generation or offset not in self.slices:
            raise DSMInternalError("PageDirectory.take_slice", f"slice {offset} of layout generation "
                                   f"{generation} is not held (held: generation {self.generation}, "
                                   f"slices {sorted(self.slices)})")
        counts, self.counts = self.counts, [0, 0]  # to the first rep only: counted once
        return [part.tobytes() for part in self.slices.pop(offset)] + [counts]

    def to_wire(self) -> list:
        """This state for a migration (msgpack-able)."""
        return [self.stride, self.generation, self.counts,
                [[o] + [p.tobytes() for p in parts] for o, parts in self.slices.items()]]

    def load_wire(self, state: list) -> None:
        """Become the state ``to_wire`` described."""
        self.stride, self.generation, self.counts, slices = state
        self.counts = list(self.counts)
        self.slices = {o: [np.frombuffer(raw, dtype=d).copy() for raw, d in zip(parts, self.dtypes)]
                       for o, *parts in slices}
