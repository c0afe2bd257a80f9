"""tornado_dsm.kernel: the machine, the nodes and the clustered object system.

Three layers, each a subpackage that may import only the ones below it:

* ``machine`` — one process's memory, trap, HAT, atomics and pager;
* ``net`` — node processes, authenticated transport, PPC, start-up;
* ``cobj`` — the Clustered Object System (tables, misses, policies, destroy).

This module is the one facade the layers above (``tornado_dsm.objects`` and
``tornado_dsm``) import from.  Nothing in the kernel knows about Regions,
FCMs or scenarios.  ``start_nodes`` here is the COS's: every node it starts
has its clustered object system attached before any user code runs.
"""

from .machine import (
    BACKENDS, DEFAULT_BASE, DEFAULT_SIZE, HAT, MODE_FLOOR, MODE_PYTHON, PAGE, PROT_NONE, PROT_READ, PROT_WRITE,
    check_backend, uffd_support,
    READ, USER_SPACE_END, WRITE, DSMInternalError, FaultRefused, HATStatistics, KernelPager,
    MemoryLayoutError, NodeMemory, PagerStatistics, SegmentationFault, atomic, log2_percentile, spin_readable, trap,
    view_at,
)
from .net import (
    LOST, MPIJob, NodeLost, NodeRuntime, NodeSet, NodeStartupError, Payload, PPCCounter, PPCStatistics, PPCTimeout,
    RemoteError, before_blocking, current_runtime, new_key, parse_address, peek_count,
    read_key_file, run_node, launched_by_mpi, MPI_TRANSPORTS, mpi_job, serve_mpi_ranks, wire_record, write_key_file, AuthenticationError, check_key, connect, handshake_accept, listen,
)
from .cobj import (
    COS_OID, ClusteredObjectSystem, ClusteredRep, ClusteredRoot, DrainTimeout, EntryView, Interface, NullObject,
    ObjectDestroyed, ObjectLock, ObjectRef, ObjectView, Policy, ReplicationView, TypedRef, attach, current_cos,
    history_lines, home_of, is_adaptive, local_ppc_seconds, parse_policy, start_mpi_nodes, start_nodes, SwapFailed,
)

__all__ = [
    "BACKENDS", "check_backend", "uffd_support",
    "DEFAULT_BASE", "DEFAULT_SIZE", "HAT", "MODE_FLOOR", "MODE_PYTHON", "PAGE", "PROT_NONE",
    "PROT_READ", "PROT_WRITE", "READ", "USER_SPACE_END", "WRITE", "DSMInternalError", "FaultRefused",
    "HATStatistics",
    "KernelPager", "MemoryLayoutError", "NodeMemory", "PagerStatistics", "SegmentationFault",
    "atomic", "log2_percentile", "spin_readable", "trap", "view_at",
    "LOST", "MPIJob", "NodeLost", "NodeRuntime", "NodeSet", "NodeStartupError", "Payload", "PPCCounter",
    "PPCStatistics", "PPCTimeout", "RemoteError", "before_blocking", "current_runtime", "new_key",
    "parse_address", "peek_count", "read_key_file", "run_node", "launched_by_mpi", "MPI_TRANSPORTS", "mpi_job", "serve_mpi_ranks", "wire_record", "write_key_file",
    "AuthenticationError", "check_key", "connect", "handshake_accept", "listen",
    "COS_OID", "ClusteredObjectSystem", "ClusteredRep", "ClusteredRoot", "DrainTimeout", "EntryView", "Interface",
    "NullObject", "ObjectDestroyed", "ObjectLock", "ObjectRef", "ObjectView", "Policy",
    "ReplicationView", "TypedRef", "attach", "current_cos", "history_lines", "home_of", "is_adaptive", "local_ppc_seconds", "parse_policy",
    "start_mpi_nodes", "start_nodes", "SwapFailed",
]
