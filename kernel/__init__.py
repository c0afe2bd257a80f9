"""tornado_dsm.kernel: the machine — trap, node memory, HAT, atomics.

Everything here touches the real OS; nothing here knows about Regions or FCMs.
"""

from ._lib import PAGE
from ._errors import (
    DSMInternalError,
    MemoryLayoutError,
    NodeLost,
    ObjectDestroyed,
    PPCTimeout,
    SegmentationFault,
)
from ._hat import HAT, HATStatistics, PROT_NONE, PROT_READ, PROT_WRITE
from ._memory import DEFAULT_BASE, DEFAULT_SIZE, NodeMemory, view_at
from ._pager import KernelPager, PagerStatistics
from ._trap import READ, WRITE, MODE_FLOOR, MODE_PYTHON, FaultRefused
from . import _atomic as atomic
from . import _trap as trap

__all__ = [
    "PAGE", "DSMInternalError", "MemoryLayoutError", "NodeLost", "ObjectDestroyed",
    "PPCTimeout", "SegmentationFault", "HAT", "HATStatistics", "PROT_NONE", "PROT_READ",
    "PROT_WRITE", "DEFAULT_BASE", "DEFAULT_SIZE", "NodeMemory", "view_at", "KernelPager",
    "PagerStatistics", "READ", "WRITE", "MODE_FLOOR", "MODE_PYTHON", "FaultRefused",
    "atomic", "trap",
]

# ---- the Clustered Object System (issue 4, part b) ----
from ._cobj import (
    COS_OID, ClusteredObjectSystem, NullObject, ObjectRef, current_cos, home_of, local_ppc_seconds,
)
from ._cobj_inspect import EntryView, ObjectView, ReplicationView
from ._cobj_lock import ObjectLock
from ._cobj_policy import ClusteredRep, ClusteredRoot, Policy, parse_policy
from ._cobj_table import DrainTimeout

__all__ += [
    "COS_OID", "ClusteredObjectSystem", "NullObject", "ObjectRef", "current_cos", "home_of",
    "local_ppc_seconds", "EntryView", "ObjectView", "ReplicationView", "ObjectLock", "ClusteredRep",
    "ClusteredRoot", "Policy", "parse_policy", "DrainTimeout",
]

# nodes, transport and PPC (issue 4a)
from ._ppc import Payload, RemoteError  # noqa: E402
from ._ppc_stats import PPCCounter, PPCStatistics, peek as peek_count  # noqa: E402
from ._node import NodeRuntime, NodeStartupError, current_runtime  # noqa: E402
from ._cluster import Cluster, start_nodes  # noqa: E402

__all__ += ["Payload", "RemoteError", "PPCCounter", "PPCStatistics", "peek_count", "NodeRuntime",
            "NodeStartupError", "current_runtime", "Cluster", "start_nodes"]

from ._ppc_channel import before_blocking  # noqa: E402  (a handler about to wait hands its channel on)

__all__ += ["before_blocking"]
