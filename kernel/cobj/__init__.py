"""tornado_dsm.kernel.cobj: the Clustered Object System — references, tables, misses, policies.

Owns clustered objects (Tornado/K42): integer object references whose low
bits name the home node, one translation table per node (oid -> rep, stub or
destroyed entry) with existence by reference counts, the global miss handler
and the partitioned miss-handler table of roots, the replication policies
(singleton, per_node, partitioned, group:k), object locks and the lock-debug
mode, destroy, and the replication-level inspection.  It may import the net
and machine layers and its own modules; it knows nothing of virtual memory.
Its ``start_nodes`` is the net layer's with the COS attached on every node.
"""

from ._cos import COS_OID, ClusteredObjectSystem, attach, current_cos, home_of, start_mpi_nodes, start_nodes
from ._inspect import EntryView, ObjectView, ReplicationView, history_lines
from ._adaptive_params import is_adaptive
from ._lock import ObjectLock
from ._null import NullObject, local_ppc_seconds
from ._policy import ClusteredRep, ClusteredRoot, Policy, parse_policy
from ._ref import Interface, ObjectRef, TypedRef, interface_methods
from ._swap import SwapFailed
from ._table import DrainTimeout, ObjectDestroyed

__all__ = [
    "COS_OID", "ClusteredObjectSystem", "attach", "current_cos", "home_of", "start_mpi_nodes", "start_nodes",
    "EntryView", "ObjectView", "ReplicationView", "history_lines", "ObjectLock", "NullObject", "local_ppc_seconds",
    "ClusteredRep", "ClusteredRoot", "Policy", "parse_policy", "Interface", "ObjectRef", "TypedRef",
    "interface_methods", "DrainTimeout", "is_adaptive",
    "ObjectDestroyed", "SwapFailed",
]
