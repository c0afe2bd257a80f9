"""What every lock and barrier is made of: a space of DSM words and slots.

A synchronization object lives in a shared array of its own, made by the
cluster.  Its words are numbered; ``padding="page"`` puts word i on page i
(a page is the DSM's coherence unit, its "cache line"), ``padding="word"``
packs them 8 bytes apart so that spin variables share pages (false sharing).
The object itself is a small frozen description (kind, name, address,
stride, capacity, uid) that travels to `Cluster.run` by value: addresses
mean the same on every node.

Per-thread state never lives in a Python object shared across nodes: a
thread's *slot* (its qnode, its flag, its party id) is claimed once by a
fetch-and-add on the space's claim word and remembered in this node's
process, keyed by the object's uid and the calling thread's (node, thread
index) — the same key in every `run`, since run threads are made anew.
Counters of atomic read-modify-writes are kept per node the same way.
"""

from __future__ import annotations

import threading
import time

import attrs

from tornado_dsm.kernel import PAGE, atomic

from . import _runner

PADDINGS = ("page", "word")
WORD = 8

_lock = threading.Lock()
_slots: dict = {}        # (uid, node, thread) -> slot claimed on this node
_episodes: dict = {}     # (uid, slot) -> episodes this party has passed (barriers)
_counts: dict = {}       # uid -> [acquires or episodes, atomic RMWs] made on this node
_closed: set = set()     # uids of objects whose cluster was closed (node 0)


def words_layout(padding: str, nwords: int) -> tuple[int, int]:
    """(stride in bytes, pages) of ``nwords`` words under ``padding``."""
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}: 'page' puts every spin "
                         f"variable on its own page, 'word' packs them; not {padding!r}")
    stride = PAGE if padding == "page" else WORD
    return stride, -(-nwords * stride // PAGE)


@attrs.frozen
class SyncSpace:
    """The words of one lock or barrier: word i is at ``address + i * stride``.

    Word 0 is the claim counter of slots; the kinds number the others.
    """

    kind: str
    name: str
    address: int
    stride: int
    npages: int
    capacity: int      # slots: threads that may ever use it (parties of a barrier)
    uid: int

    def at(self, i: int) -> int:
        """The address of word ``i``."""
        return self.address + i * self.stride

    def check_open(self) -> None:
        """RuntimeError if the cluster that made this object is closed."""
        if self.uid in _closed:
            raise RuntimeError(f"{self.name} belongs to a cluster that is closed")

    def slot(self, what: str) -> int:
        """The calling thread's slot (claimed at its first use); RuntimeError
        naming the capacity when more threads than that use the object."""
        key = (self.uid, *thread_key())
        found = _slots.get(key)
        if found is not None:
            return found
        with _lock:
            if key not in _slots:
                claimed = atomic.fetch_add(self.at(0), 1)
                if claimed >= self.capacity:
                    raise RuntimeError(
                        f"{self.name} was made for {self.capacity} {what}; a thread beyond them "
                        f"(node {key[1]}, thread {key[2]}) used it: pass a larger number when you make it")
                _slots[key] = claimed
            return _slots[key]

    def count(self, rmws: int, events: int = 0) -> None:
        """Add ``rmws`` atomic read-modify-writes (and ``events`` acquires or
        episodes) to this node's counters of the object."""
        c = _counts.get(self.uid)
        if c is None:
            c = _counts.setdefault(self.uid, [0, 0])
        c[0] += events
        c[1] += rmws


class SyncObject:
    """What locks and barriers share: their ``space`` names their kind and them."""

    __slots__ = ()

    @property
    def kind(self) -> str:
        """The algorithm (one of the module's KINDS)."""
        return self.space.kind

    @property
    def name(self) -> str:
        """Its name in messages ("lock 'lock0' (mcs)")."""
        return self.space.name


def deadline_of(timeout) -> float | None:
    """The monotonic deadline of a ``timeout`` in seconds (None: none); ValueError
    naming what is accepted for anything else."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise ValueError(f"timeout must be a number of seconds >= 0 or None, not {timeout!r}")
    return time.monotonic() + float(timeout)


def thread_key() -> tuple[int, int]:
    """(node, thread index) of the caller; -1 for a thread outside `run`."""
    return _runner.current_node(), getattr(_runner._local, "thread", -1)


def counters(uid: int) -> tuple[int, int]:
    """(acquires or episodes, atomic RMWs) made on this node for object ``uid``."""
    c = _counts.get(uid, (0, 0))
    return int(c[0]), int(c[1])


def episode(uid: int, slot: int) -> int:
    """How many episodes party ``slot`` of barrier ``uid`` has passed on this node."""
    return _episodes.get((uid, slot), 0)


def set_episode(uid: int, slot: int, value: int) -> None:
    _episodes[(uid, slot)] = value


def mark_closed(uids) -> None:
    """Node 0: the objects ``uids`` belong to a cluster that closed."""
    _closed.update(uids)


def check_count(name: str, value, low: int = 1) -> int:
    """A positive integer argument, or ValueError naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, not {value!r}")
    return value
