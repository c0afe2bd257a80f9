"""The counter clustered object (K42's integer-counter experiment), in three forms.

* ``SingletonCounter`` (policy ``singleton``): one integer on the home node;
  every other node's calls are remote PPCs to it.  Exact and simple; every
  ``inc`` from another node pays a round trip.
* ``PerNodeCounter`` (``per_node``, or ``group:k``): each rep counts the
  increments of its node (or group) locally — ``inc`` never leaves the node;
  ``value()`` is forwarded to the root, which gathers every rep's count (one
  PPC per rep, in parallel) and sums them.  ``reset()`` goes through the root,
  which broadcasts it to every rep.  Cheap increments, expensive reads.
* ``PartitionedCounter`` (``partitioned``): a counter per key; the rep on
  node ``Rep.partition(key, N)`` owns the key, so ``inc(key)``/``get(key)`` run
  there (local when the key is this node's, one remote PPC otherwise);
  ``value()`` sums every rep's keys through the root.

Every rep method first checks the rep is alive: a call reaching a freed rep
is a bug the destroy tests look for.  Reps take their own lock only around
their own state, never across a call.
"""

from __future__ import annotations

from tornado_dsm.kernel import ClusteredRep, ClusteredRoot


class SingletonCounterRep(ClusteredRep):
    """The one integer of a singleton counter (on the home node)."""

    def __init__(self, initial: int = 0) -> None:
        self._value = initial

    def inc(self, n: int = 1) -> int:
        """Add ``n``; return the new value."""
        self.assert_alive()
        with self.lock:
            self._value += n
            return self._value

    def value(self) -> int:
        """The current value."""
        self.assert_alive()
        return self._value

    def reset(self) -> None:
        """Set the value to 0."""
        self.assert_alive()
        with self.lock:
            self._value = 0


class SingletonCounter(ClusteredRoot):
    """A counter with one rep on its home (``create(SingletonCounter, initial=0)``)."""

    Rep = SingletonCounterRep
    POLICIES = ("singleton",)

    def __init__(self, initial: int = 0) -> None:
        self._initial = initial

    def rep_args(self, node: int) -> list:
        """The one rep starts from the initial value."""
        return [self._initial]


class PerNodeCounterRep(ClusteredRep):
    """One node's (or group's) share of a replicated counter."""

    def __init__(self) -> None:
        self._local = 0

    def inc(self, n: int = 1) -> None:
        """Add ``n`` to this node's share (never leaves the node)."""
        self.assert_alive()
        with self.lock:
            self._local += n

    def value(self) -> int:
        """The counter's total: the root gathers and sums every rep's share."""
        self.assert_alive()
        return self.call_root("value")

    def reset(self) -> None:
        """Zero every rep (the root broadcasts it)."""
        self.assert_alive()
        self.call_root("reset")

    def local_value(self) -> int:
        """This rep's share."""
        self.assert_alive()
        return self._local

    def local_reset(self) -> None:
        """Zero this rep's share (the root's broadcast)."""
        self.assert_alive()
        with self.lock:
            self._local = 0


class PerNodeCounter(ClusteredRoot):
    """A replicated counter: ``inc`` local on every node, ``value`` summed by the root."""

    Rep = PerNodeCounterRep
    POLICIES = ("per_node", "group")

    def __init__(self, initial: int = 0) -> None:
        self._base = initial

    def value(self) -> int:
        """Initial value plus the share of every rep."""
        return self._base + sum(self.gather("local_value").values())

    def reset(self) -> None:
        """Zero the base and broadcast a reset to every rep."""
        with self.lock:
            self._base = 0
        self.broadcast("local_reset")


class PartitionedCounterRep(ClusteredRep):
    """The counters of the keys this node owns."""

    KEYED = frozenset({"inc", "get"})

    def __init__(self) -> None:
        self._counts: dict = {}

    def inc(self, key, n: int = 1) -> int:
        """Add ``n`` to ``key``'s counter (on its owner node); return its new value."""
        self.assert_alive()
        self._check_owner(key)
        with self.lock:
            value = self._counts[key] = self._counts.get(key, 0) + n
        return value

    def get(self, key) -> int:
        """``key``'s counter (0 if never incremented)."""
        self.assert_alive()
        self._check_owner(key)
        return self._counts.get(key, 0)

    def value(self) -> int:
        """The sum over every key: the root gathers every rep's total."""
        self.assert_alive()
        return self.call_root("value")

    def local_total(self) -> int:
        """Sum of the keys this rep owns."""
        self.assert_alive()
        with self.lock:
            return sum(self._counts.values())

    def _check_owner(self, key) -> None:
        """Refuse a key another node's rep owns (a routing bug if it ever happens)."""
        owner = self.partition(key, self._cos.nnodes)
        if owner != self.node:
            raise ValueError(f"key {key!r} belongs to node {owner}, not {self.node}")


class PartitionedCounter(ClusteredRoot):
    """Counters by key, each key owned by the rep on node ``partition(key, N)``."""

    Rep = PartitionedCounterRep
    POLICIES = ("partitioned",)

    def value(self) -> int:
        """Sum of every key's counter over every rep."""
        return sum(self.gather("local_total").values())


COUNTERS = {"singleton": SingletonCounter, "per_node": PerNodeCounter, "partitioned": PartitionedCounter}


def counter_class(policy: str):
    """The counter variant for ``policy`` (``group:k`` uses the per-node counter)."""
    if policy.startswith("group:"):
        return PerNodeCounter
    try:
        return COUNTERS[policy]
    except KeyError:
        raise ValueError(f"no counter for policy {policy!r}; accepted: singleton, per_node, partitioned, group:k") from None
