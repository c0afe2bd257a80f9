"""Object migration: a singleton's root and rep move to another home node.

Design essay
------------
A migration is a hot swap whose new policy is the old one at another home,
and it runs the same protocol (_swap): on the current home, every node
interposes a mediator, the calls in flight drain, the old rep's state is
exported (``swap_export``), and then -- the part a swap does not have --
the root's own state is exported (``migrate_export``, with the root's lock
held: nothing can change it any more, every call that could is drained or
waiting) and sent with the record (name, policy, swap generation, history)
to the new home, which builds the root from it (``migrate_import`` instead
of ``__init__``, then ``swap_import`` of the rep's state).  Only once the
new home holds the record does the old home give it up, and the commit
lets the waiting calls go on to the new home.  Any failure before that
point (a node lost during drain or transfer, a drain that does not finish,
the new home refusing the import) aborts on every surviving node, exactly
as a swap does: the object stays usable at its old home, and ``SwapFailed``
names what went wrong.

Where an object's home is
~~~~~~~~~~~~~~~~~~~~~~~~~
The oid still encodes the home it was created on, but that is now only
the first answer: every node keeps a *home map* (``cos._homes``: oid ->
home) and ``cos.home_of_object(oid)`` reads it before the oid's bits.
References stay valid everywhere because no reference holds a home: the
entries do (a stub's target, a rep's ``home``), and every entry of the
object is rebuilt after the commit.

Two ways to keep the home right were open: the old home forwards every
call that reaches it after the move, or every node's map is updated at the
commit.  We update the maps at the commit.  The commit visits every node
anyway (each must drop its mediator), so the update costs no message; after
it, a miss, a root call, a swap or a destroy goes straight to the new home
in one hop.  Forwarding alone would make every later miss from every node
pay a second PPC, forever, and would tie the object to its *old* home: the
object would die with a node it no longer lives on -- often the very node
one moves an object off (to unload it, or before retiring it).

What the old home keeps is a forwarding address (``cos._moved``) for
requests that are addressed before their sender's commit (a miss sent just
before, a mediator adopting an entry) or by code that reads the home from
the oid's bits: COS operations on a root it no longer holds are sent on to
the new home (``ClusteredObjectSystem._homed``), one more hop, so no such
request is refused.  It is a tombstone for the race, not the mechanism:
after the commit no node's map sends anything there.

Messages (to ``COS_OID``):

    migrate         [oid, new_home, timeout]   current home: run the protocol
    migrate_import  [oid, package]             new home: build the root and its record
    migrate_commit  [oid, generation, home]    every node: new home in the map, swap commit
    migrate_settle  [oid, history entry]       new home: record it, accept swaps and destroys
    migrate_discard [oid]                      new home: forget an import (the migration failed)
"""

from __future__ import annotations

import threading
from time import perf_counter

from ..machine import DSMInternalError
from ..net import LOST
from . import _swap
from ._policy import bind, load_class, parse_policy
from ._swap import SwapFailed


def check_target(cos, oid: int, new_home) -> None:
    """ValueError for a destination that cannot be: not a node id of the cluster, or a lost node."""
    if isinstance(new_home, bool) or not isinstance(new_home, int) or not 0 <= new_home < cos.nnodes:
        raise ValueError(f"migrate: the new home must be a node id from 0 to {cos.nnodes - 1}, "
                         f"not {new_home!r}")
    lost = cos.runtime.lost_peers()
    if new_home in lost:
        live = [n for n in range(cos.nnodes) if n not in lost]
        raise ValueError(f"migrate: node {new_home} is lost ({lost[new_home]}); accepted: a live "
                         f"node ({', '.join(map(str, live))}) other than the object's home")


def migrate_home(cos, oid: int, new_home: int, timeout: float) -> dict:
    """The migration protocol, run on the object's current home (see the essay);
    the migration's history record."""
    record = start(cos, oid, new_home)
    t0 = perf_counter()
    try:
        try:
            states = _swap.steps(cos, oid, timeout)
            package = locked_package(record, states)
            cos._remote(new_home, "migrate_import", [oid, package], timeout=timeout + 30)
        except BaseException as exc:
            cos._all_nodes("swap_abort", [oid])
            _discard_quietly(cos, oid, new_home)
            raise _error(record, cos.node, new_home, exc) from exc
        with cos._lock:  # from here on the new home holds the object
            del cos._roots[oid]
            cos._moved[oid] = new_home
        waits = cos._all_nodes("migrate_commit", [oid, package["generation"], new_home])
    finally:
        done, record.swap_done = record.swap_done, None
        done.set()
    policy = str(record.policy)
    entry = _swap.history_entry(policy, policy, cos.node, new_home, t0, waits, "migrate")
    cos._remote(new_home, "migrate_settle", [oid, entry], timeout=timeout + 30)
    return entry


def start(cos, oid: int, new_home: int):
    """Check ``oid`` can move from this node to ``new_home``; mark the migration started
    (as a swap, so no swap, migration or destroy runs beside it)."""
    check_target(cos, oid, new_home)
    record, _policy = _swap.start(cos, oid, None)
    try:
        _check_movable(cos, record, new_home)
    except BaseException:
        done, record.swap_done = record.swap_done, None
        done.set()
        raise
    return record


def _check_movable(cos, record, new_home: int) -> None:
    """ValueError unless the object is a singleton that can migrate, homed elsewhere than ``new_home``."""
    name = f"{record.info['name']} ({record.root.oid:#x})"
    if str(record.policy) != "singleton":
        raise ValueError(f"migrate: {name} has policy {record.policy}; only a singleton "
                         "migrates (accepted: policy singleton; set_policy it first)")
    if new_home == cos.node:
        raise ValueError(f"migrate: {name} is already homed on node {new_home}; accepted: "
                         f"another live node of 0..{cos.nnodes - 1}")
    cls = type(record.root)
    if not (cls.MIGRATE and cls.SWAP):  # the rep's state moves as in a swap, the root's besides
        raise ValueError(f"{record.info['cls']} cannot migrate (its Root does not set MIGRATE = True "
                         "and SWAP = True: its state has no migrate_export / migrate_import)")


def locked_package(record, states: list) -> dict:
    """What the new home needs to become the object's home (takes the root's lock)."""
    root = record.root
    with root.lock:
        state = root.migrate_export()
    return {"path": record.info["path"], "info": dict(record.info), "policy": str(record.policy),
            "generation": record.generation + 1, "history": list(record.history), "root": state,
            "reps": [s for s in states if s is not LOST and s is not None]}


def import_root(cos, oid: int, package: dict) -> None:
    """On the new home: build the root from ``package``, then hold its record (swaps and
    destroys wait for ``settle``; misses are answered at once, under the new generation)."""
    cls = load_class(package["path"])
    info = dict(package["info"], home=cos.node)
    root = cls.__new__(cls)
    bind(root, cos, oid, cos.node, info["name"], cos.node, "root")
    root.policy = parse_policy(package["policy"], cos.nnodes)
    with root.lock:
        root.migrate_import(package["root"])
        root.swap_import(package["reps"])
    record = cos.RootRecord(root, info)
    record.generation, record.history = package["generation"], list(package["history"])
    record.swap_done, record.arriving = threading.Event(), True
    with cos._lock:
        if oid in cos._roots:
            raise DSMInternalError("migrate_import", f"node {cos.node} already holds the root of {oid:#x}")
        cos._roots[oid] = record  # a forwarding address it left here stays until settle


def commit(cos, oid: int, generation: int, new_home: int) -> list:
    """On every node: the new home goes into the map, then the swap's commit (the mediator
    leaves, the waiting calls go on -- to the new home).  [calls that waited, seconds]."""
    with cos._lock:
        cos._homes[oid] = new_home
    return _swap.commit(cos, oid, generation)


def settle(cos, oid: int, entry: dict) -> None:
    """On the new home, after every node committed: record the migration; swaps and
    destroys that waited for it go on."""
    with cos._lock:
        record = cos._roots.get(oid)
    if record is None or not record.arriving:
        raise DSMInternalError("migrate_settle", f"node {cos.node} has no migration of {oid:#x} to settle")
    record.history.append(entry)
    with cos._lock:
        cos._moved.pop(oid, None)  # it came back to a node it once left
    record.arriving = False
    done, record.swap_done = record.swap_done, None
    done.set()


def discard(cos, oid: int) -> None:
    """On the would-be new home of a failed migration: forget the imported root, if any."""
    with cos._lock:
        record = cos._roots.get(oid)
        if record is not None and record.arriving:  # imported, never settled
            del cos._roots[oid]
            record.swap_done.set()


def _discard_quietly(cos, oid: int, new_home: int) -> None:
    """Ask the new home to forget an import; a lost or silent node has nothing to forget."""
    try:
        cos._remote(new_home, "migrate_discard", [oid], timeout=30)
    except Exception:  # noqa: BLE001 -- best effort: the migration has failed already
        pass


def _error(record, old_home: int, new_home: int, exc: BaseException) -> SwapFailed:
    """The error of a migration that was undone: what failed, and that the object stays put."""
    return SwapFailed(f"migration of {record.info['name']} ({record.root.oid:#x}) from node {old_home} "
                      f"to node {new_home} failed and was undone (the object stays on node {old_home}): "
                      f"{type(exc).__name__}: {exc}")
