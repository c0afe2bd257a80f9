"""Barriers on DSM words: the classic algorithms, reusable for any number of episodes.

A barrier is made for ``parties`` threads; a thread's party id is claimed at
its first `wait` (see _syncspace) and kept on its node, with the number of
episodes it has passed.  Every flag holds an episode number that only grows
(a party signals episode e by storing e + 1), so no flag ever has to be
reset and a fast party of the next episode cannot be mistaken for a slow
one of this episode: this is sense reversal with the episode as the sense.

* ``counter``: one counter (fetch-and-add) and one release word; the last
  arriver resets the counter and bumps the release word, on which everyone
  waits: every arrival and the release touch the same two pages.
* ``tree``: a combining tree of fan-in 2; the last arriver at a tree node
  climbs to its parent; the one that completes the root goes back down the
  path it climbed, releasing each node's waiters (one release word per node).
* ``mcs``: arrival up a 4-ary tree (party i waits for parties 4i+1..4i+4,
  then signals its own arrival word) and wake-up down a binary tree (party i
  wakes 2i+1 and 2i+2): every party waits only on words of its own.
* ``tournament``: ceil(log2 P) rounds of pairs; the loser of each pair
  signals and waits on its own wake word, the winner goes on; the champion
  (party 0) wakes the parties it beat, which wake those they beat.
* ``dissemination``: ceil(log2 P) rounds; in round k party i signals party
  (i + 2^k) mod P and waits for (i - 2^k) mod P.  No tree, no release.
* ``server``: one clustered object on its home node counts the arrivals;
  every party's `wait` is one PPC that returns when the last one came.

Wait operations sleep in `atomic.wait`, so a party that waits uses no CPU.
"""

from __future__ import annotations

import time

import attrs

from tornado_dsm.kernel import atomic

from ._syncspace import SyncObject, SyncSpace, deadline_of, episode, set_episode

KINDS = ("counter", "tree", "mcs", "tournament", "dissemination", "server")
TREE_FANIN = 2


def rounds(parties: int) -> int:
    """ceil(log2 parties): the rounds of tournament and dissemination."""
    return max(0, (parties - 1).bit_length())


def tree_levels(parties: int) -> list[int]:
    """Tree nodes per level of the combining tree, leaves first."""
    levels, n = [], parties
    while n > 1:
        n = -(-n // TREE_FANIN)
        levels.append(n)
    return levels or [1]


def words_needed(kind: str, parties: int) -> int:
    """Words of a barrier of ``kind`` (word 0: party claims)."""
    if kind == "tree":
        return 1 + 2 * sum(tree_levels(parties))
    if kind in ("mcs", "tournament"):
        return 1 + 2 * parties
    if kind == "dissemination":
        return 1 + parties * max(1, rounds(parties))
    return 1 if kind == "server" else 3


@attrs.frozen
class Barrier(SyncObject):
    """A barrier of the cluster (``cluster.barrier(parties, kind=...)``); pass it
    to `run` and call ``wait()`` in every party."""

    space: SyncSpace
    parties: int
    oid: int = 0          # the server barrier's clustered object

    def wait(self, timeout: float | None = None) -> int:
        """Wait until every party has arrived; return this episode's number
        (0 for the first).  ``timeout`` (seconds, None: no limit): TimeoutError
        naming the barrier, the party and the episode; the parties are then
        out of step and the barrier must not be used again."""
        self.space.check_open()
        me = self.space.slot("parties")
        e = episode(self.space.uid, me)
        deadline = deadline_of(timeout)
        try:
            e = _ALGORITHMS[self.kind](self, me, e, deadline)
        except TimeoutError:
            raise TimeoutError(f"{self.name}: party {me} of {self.parties} waited more than {timeout} s "
                               f"in episode {e}; the parties are out of step now") from None
        set_episode(self.space.uid, me, e + 1)
        self.space.count(0, 1)
        return e


def _until_past(address: int, e: int, deadline) -> None:
    """Wait until the word at ``address`` holds more than ``e`` (signalled e + 1)."""
    while (v := atomic.load(address)) <= e:
        atomic.wait(address, v, timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))


def _counter(b: Barrier, me: int, e: int, deadline) -> int:
    s = b.space
    if atomic.fetch_add(s.at(1), 1) == b.parties - 1:
        atomic.store(s.at(1), 0)            # before the release: nobody arrives meanwhile
        atomic.store(s.at(2), e + 1)
    else:
        _until_past(s.at(2), e, deadline)
    s.count(1)
    return e


def _tree(b: Barrier, me: int, e: int, deadline) -> int:
    s, levels = b.space, tree_levels(b.parties)
    first, child, count, climbed = 0, me, b.parties, []
    for width in levels:
        node = first + child // TREE_FANIN
        expected = min(TREE_FANIN, count - (child // TREE_FANIN) * TREE_FANIN)
        s.count(1)
        if atomic.fetch_add(s.at(1 + 2 * node), 1) != expected - 1:
            _until_past(s.at(2 + 2 * node), e, deadline)   # released from above
            break
        atomic.store(s.at(1 + 2 * node), 0)
        climbed.append(node)
        first, child, count = first + width, child // TREE_FANIN, width
    for node in reversed(climbed):
        atomic.store(s.at(2 + 2 * node), e + 1)
    return e


def _mcs(b: Barrier, me: int, e: int, deadline) -> int:
    s, p = b.space, b.parties
    for c in range(4 * me + 1, min(4 * me + 5, p)):
        _until_past(s.at(1 + 2 * c), e, deadline)          # children's arrivals
    if me:
        atomic.store(s.at(1 + 2 * me), e + 1)
        _until_past(s.at(2 + 2 * me), e, deadline)         # woken by (me - 1) // 2
    for c in (2 * me + 1, 2 * me + 2):
        if c < p:
            atomic.store(s.at(2 + 2 * c), e + 1)
    return e


def _tournament(b: Barrier, me: int, e: int, deadline) -> int:
    s, beaten = b.space, []
    for k in range(rounds(b.parties)):
        step = 1 << k
        if me % (2 * step):                                 # lost this round
            atomic.store(s.at(1 + 2 * me), e + 1)
            _until_past(s.at(2 + 2 * me), e, deadline)
            break
        if me + step < b.parties:
            _until_past(s.at(1 + 2 * (me + step)), e, deadline)
            beaten.append(me + step)
    for loser in reversed(beaten):
        atomic.store(s.at(2 + 2 * loser), e + 1)
    return e


def _dissemination(b: Barrier, me: int, e: int, deadline) -> int:
    s, p, r = b.space, b.parties, rounds(b.parties)
    for k in range(r):
        atomic.store(s.at(1 + ((me + (1 << k)) % p) * r + k), e + 1)
        _until_past(s.at(1 + me * r + k), e, deadline)
    return e


def _server(b: Barrier, me: int, e: int, deadline) -> int:
    from tornado_dsm.kernel import current_cos
    left = None if deadline is None else max(0.0, deadline - time.monotonic())
    found = current_cos().call(b.oid, "wait", left)
    if found < 0:
        raise TimeoutError
    return found


_ALGORITHMS = {"counter": _counter, "tree": _tree, "mcs": _mcs, "tournament": _tournament,
               "dissemination": _dissemination, "server": _server}
