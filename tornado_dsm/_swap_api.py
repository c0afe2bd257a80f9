"""What ``Cluster.set_policy``, ``Cluster.migrate`` and ``Cluster.swap_history`` act on:
an array's objects, the Process, or any clustered object."""

from __future__ import annotations

import numpy as np

from tornado_dsm.kernel import current_cos

PARTS = ("region", "directory")


def object_of(cluster, target, part: str, verb: str = "set_policy") -> int:
    """The oid ``target`` names: ``"process"``, an array's Region or PageDirectory
    (``part``), or a clustered-object reference / oid given as it is.  ``verb``
    names the caller in the errors."""
    if isinstance(target, str):
        if target != "process":
            raise ValueError(f"{verb}: the only object named by a string is 'process', not {target!r}")
        return int(cluster.vm.process)
    if isinstance(target, np.ndarray):
        a, _kind = cluster._arrays.allocation(target)
        oids = {"region": a.region, "directory": a.directory}
        if part not in oids:
            raise ValueError(f"part must be one of {PARTS}, not {part!r}")
        if not oids[part]:
            raise ValueError(f"array {a.name!r} has no {part} object (the dynamic manager keeps "
                             "no directory; create the cluster with manager='centralized' or 'fixed')")
        return oids[part]
    if isinstance(target, bool) or not (isinstance(target, int) or hasattr(target, "oid")):
        raise TypeError(f"{verb} takes a shared array, 'process' or an object reference, not {target!r}")
    return int(target)


# IVY's names of the directory's two policies (set_policy with part="directory")
MANAGER_POLICIES = {"centralized": "singleton", "fixed": "partitioned"}


def policy_of(part: str, policy):
    """The COS policy ``policy`` names: for a PageDirectory (``part="directory"``) IVY's
    manager names "centralized" and "fixed" stand for singleton and partitioned."""
    if part == "directory" and isinstance(policy, str):
        return MANAGER_POLICIES.get(policy, policy)
    if isinstance(policy, str) and policy in MANAGER_POLICIES:
        raise ValueError(f"policy {policy!r} names a directory manager: use it with "
                         f"part='directory' (an array's PageDirectory), not part={part!r}")
    return policy


def migrate(cluster, target, node, part: str, timeout: float) -> dict:
    """``Cluster.migrate``: move the singleton ``target`` names to home ``node``."""
    return current_cos().migrate(object_of(cluster, target, part, "migrate"), node, timeout)
