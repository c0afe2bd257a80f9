"""Replication policies and the Root / Rep base classes of clustered objects.

A clustered object is written K42-style as a Root class (one instance, on
the object's home node: the miss handler, the one place that knows where the
reps are and coordinates them) and a Rep class (the representatives that
calls actually run on).  Variants of one object (a singleton counter, a
per-node counter, a partitioned counter) are sibling classes; each Root class
names the policies it supports in ``POLICIES``.

What a node gets at its first miss is decided by the policy (``decide``):

    singleton      a rep on the home node; a stub (remote PPC to home) elsewhere
    per_node       a rep on every node, created lazily at that node's first miss
    partitioned    a rep on every node, each owning the keys ``Rep.partition``
                   maps to it; a keyed call (first argument is the key, method
                   listed in ``Rep.KEYED``) goes to the owning node's rep
    group:k        one rep per group of k consecutive nodes (nodes n with the
                   same n // k), on the group's leader: the home if it is in
                   the group, else the group's lowest node; stubs elsewhere

Reps are filled on demand: the root's ``rep_args(node)`` is called, under
the root's lock and atomically with recording the new rep, to produce the
state the rep starts from (K42's ProcessReplicated); updates after that are
the root's to broadcast (``broadcast``) to the reps it knows.
"""

from __future__ import annotations

import itertools
import zlib

import attrs

from ..machine import DSMInternalError
from ..net import LOST
from ._adaptive_params import is_adaptive, parse_params
from ._lock import ObjectLock

POLICY_NAMES = ("singleton", "per_node", "partitioned", "group:k", "adaptive[:key=value,...]")


@attrs.frozen
class Policy:
    """A parsed replication policy: ``kind`` in singleton/per_node/partitioned/group/adaptive,
    ``k`` for group, ``params`` (the (key, value) pairs given) for adaptive."""

    kind: str
    k: int = 0
    params: tuple = ()

    def __str__(self) -> str:
        if self.kind == "adaptive" and self.params:
            return "adaptive:" + ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in self.params)
        return f"group:{self.k}" if self.kind == "group" else self.kind

    def decide(self, node: int, home: int, nnodes: int) -> tuple[str, int]:
        """What ``node`` gets at a miss: ("rep", node) or ("stub", node the stub calls)."""
        if self.kind == "adaptive":  # never in force: the root's record holds singleton or per_node
            raise DSMInternalError("Policy.decide", "adaptive chooses between policies; it decides no miss")
        if self.kind == "singleton":
            return ("rep", node) if node == home else ("stub", home)
        if self.kind in ("per_node", "partitioned"):
            return ("rep", node)
        leader = group_leader(node, home, self.k)
        return ("rep", node) if leader == node else ("stub", leader)


def group_leader(node: int, home: int, k: int) -> int:
    """The node holding the rep of ``node``'s group (groups are n // k)."""
    if node // k == home // k:
        return home
    return (node // k) * k


def parse_policy(text: str, nnodes: int) -> Policy:
    """Parse ``singleton``, ``per_node``, ``partitioned``, ``group:k`` (1 <= k <= nnodes)
    or ``adaptive[:key=value,...]`` (the keys: _adaptive_params.DEFAULTS)."""
    if not isinstance(text, str):
        raise TypeError(f"policy must be a string, one of {POLICY_NAMES}, not {text!r}")
    if text in ("singleton", "per_node", "partitioned"):
        return Policy(text)
    if is_adaptive(text):
        return Policy("adaptive", params=parse_params(text))
    if text.startswith("group:"):
        digits = text[len("group:"):]
        if not digits.isdigit() or not 1 <= int(digits) <= nnodes:
            raise ValueError(
                f"bad group size in policy {text!r}: k must be an integer from 1 to the "
                f"number of nodes ({nnodes})"
            )
        return Policy("group", int(digits))
    raise ValueError(f"unknown policy {text!r}; accepted: {', '.join(POLICY_NAMES)}")


def stable_partition(key, nnodes: int) -> int:
    """The default key -> node map: ints mod N, str/bytes by CRC-32 mod N (same on every node)."""
    if isinstance(key, bool) or not isinstance(key, (int, str, bytes)):
        raise TypeError(f"partition key must be an int, str or bytes, not {key!r}")
    if isinstance(key, int):
        return key % nnodes
    data = key.encode() if isinstance(key, str) else key
    return zlib.crc32(data) % nnodes


class ClusteredRep:
    """Base of a clustered object's representative (one per node or group, per policy).

    The COS sets, before ``__init__(*root.rep_args(node))`` runs: ``oid``,
    ``node`` (where this rep lives), ``home``, ``name``, ``lock``
    (an ObjectLock) and ``alive`` (False once freed: methods that want to
    prove no call sees a freed rep check it with ``assert_alive``).
    Public methods are callable through the COS; ``_private`` and
    ``locked_*`` ones are not.
    """

    KEYED: frozenset = frozenset()  # partitioned: methods whose first argument is the key

    partition = staticmethod(stable_partition)

    def call_root(self, method: str, *args):
        """Forward a (rare) operation to the root: a direct call on home, a remote PPC elsewhere."""
        return self._cos.call_root(self.oid, self.home, method, args)

    def assert_alive(self) -> None:
        """Raise DSMInternalError if this rep has been freed (a call reached a freed rep)."""
        if not self.alive:
            raise DSMInternalError(f"{type(self).__name__}", f"call reached the freed rep of {self.name} ({self.oid:#x}) on node {self.node}")

    def swap_export(self):
        """This rep's state for a hot swap (msgpack-able), handed to the root's
        ``swap_import``; None (the default) when the root holds all the state."""
        return None

    def cleanup(self) -> None:
        """Release this rep's resources; called once, after every node's calls have drained."""


class ClusteredRoot:
    """Base of a clustered object's root (its miss handler), on the object's home node.

    Subclasses set ``Rep`` (the ClusteredRep subclass) and ``POLICIES`` and
    may override ``rep_args`` and ``cleanup``.  The COS sets ``oid``,
    ``home``, ``name``, ``policy`` (a Policy) and ``lock`` before ``__init__(*args)``;
    a hot swap sets ``policy`` to the new one before ``swap_import``, so a root whose
    reps' layout depends on it (``rep_args``) lays the imported state out for it.
    """

    Rep: type = ClusteredRep
    POLICIES: tuple[str, ...] = ("singleton", "per_node", "partitioned", "group")
    SWAP = False  # True: the object's state survives a hot swap (swap_export / swap_import)
    MIGRATE = False  # True: the root's own state can move to another home (migrate_export / _import)

    def rep_args(self, node: int) -> list:
        """Arguments of ``Rep.__init__`` for a new rep on ``node`` (called with ``lock`` held)."""
        return []

    def locked_rep_nodes(self) -> tuple[int, ...]:
        """Nodes holding a rep, in order (call with ``lock`` held for a consistent snapshot)."""
        return tuple(sorted(self._reps))

    def rep_nodes(self) -> tuple[int, ...]:
        """Nodes holding a rep now."""
        with self.lock:
            return self.locked_rep_nodes()

    def broadcast(self, method: str, *args, nodes=None) -> dict[int, object]:
        """An update every rep of ``nodes`` must see: ``gather``, counted (the adaptive
        monitor's measure of what keeping the reps consistent costs)."""
        next(self._broadcasts)
        return self.gather(method, *args, nodes=nodes)

    def gather(self, method: str, *args, nodes=None) -> dict[int, object]:
        """Call ``method(*args)`` on the reps of ``nodes`` (default: every rep) in parallel.

        Returns {node: result}.  Must be called without ``lock`` held.  A rep
        installed after the node list was taken is not called: take the list
        and change ``rep_args``' state under one ``lock`` section.  A lost
        node's rep died with it: it is left out of the result, not an error
        (the survivors must still agree, e.g. on the region list).
        """
        nodes = self.rep_nodes() if nodes is None else tuple(nodes)
        results = self._cos.call_reps(self.oid, nodes, method, args, tolerate_lost=True)
        return {n: r for n, r in zip(nodes, results) if r is not LOST}

    def swap_import(self, states: list) -> None:
        """Take the old reps' ``swap_export`` states (the non-None ones) at a hot swap,
        with ``lock`` held; the new reps start from ``rep_args`` after it."""

    def migrate_export(self):
        """The root's own state (msgpack-able) for a migration to another home, taken
        with ``lock`` held once every call has drained; objects with ``MIGRATE`` define it."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define migrate_export")

    def migrate_import(self, state) -> None:
        """Become the root ``migrate_export`` described, on the new home: called instead
        of ``__init__`` (the COS attributes are set), before ``swap_import`` of the reps'
        states; objects with ``MIGRATE`` define it."""
        raise NotImplementedError(f"{type(self).__qualname__} does not define migrate_import")

    def cleanup(self) -> None:
        """Release the root's resources; called last, after every rep was freed."""


def bind(obj, cos, oid: int, home: int, name: str, node: int, kind: str) -> None:
    """Set the COS-owned attributes of a new root or rep before its ``__init__`` runs."""
    obj._cos, obj.oid, obj.home, obj.name = cos, oid, home, name
    obj.lock = ObjectLock(f"{name} ({oid:#x}) {kind} on node {node}")
    if kind == "rep":
        obj.node, obj.alive = node, True
    else:
        obj._reps = set()
        obj._broadcasts = itertools.count()  # broadcast() calls: updates sent to the reps


def instantiate(cls, cos, oid: int, home: int, name: str, node: int, kind: str, args, policy=None):
    """Create a root or rep of ``cls``: bind the COS attributes (a root's ``policy`` too),
    then run ``__init__(*args)``."""
    obj = cls.__new__(cls)
    bind(obj, cos, oid, home, name, node, kind)
    if policy is not None:
        obj.policy = policy
    obj.__init__(*args)
    return obj


def public_methods(cls) -> tuple[str, ...]:
    """The methods of a Rep class callable through the COS (sorted)."""
    hidden = set(dir(ClusteredRep))
    return tuple(sorted(
        m for m in dir(cls)
        if not m.startswith("_") and not m.startswith("locked_") and m not in hidden
        and callable(getattr(cls, m))
    ))


def class_path(cls) -> str:
    """``module:qualname`` of a module-level class (how nodes name it to each other)."""
    if "<locals>" in cls.__qualname__:
        raise ValueError(f"clustered object class {cls.__qualname__} must be defined at module level")
    return f"{cls.__module__}:{cls.__qualname__}"


def load_class(path: str):
    """Import the class named by ``class_path``."""
    import importlib

    module, _, qual = path.partition(":")
    obj = importlib.import_module(module)
    for part in qual.split("."):
        obj = getattr(obj, part)
    return obj
