"""tornado_dsm.kernel.machine: one node's machine — memory, trap, HAT, atomics, pager.

Owns everything that touches the OS inside one process: the DSM window (one
sparse memfd mapped as an application view and a kernel view), the SIGSEGV
trap that runs a Python fault handler in the faulting thread, the HAT that
keeps the application view's per-page protections, the atomics on window
words, and the kernel-only pager.  It also holds the one exception for
broken invariants (DSMInternalError) and the log2 histogram every layer
reports latencies with.  It may import only the standard library, numpy,
attrs and its own modules: it knows nothing of nodes, messages or objects.
"""

from ._lib import PAGE
from ._errors import DSMInternalError, MemoryLayoutError, SegmentationFault
from ._hat import HAT, HATStatistics, PROT_NONE, PROT_READ, PROT_WRITE
from ._backend import BACKENDS, check_backend, uffd_support
from ._memory import DEFAULT_BASE, DEFAULT_SIZE, USER_SPACE_END, NodeMemory, view_at
from ._pager import KernelPager, PagerStatistics
from ._trap import READ, WRITE, MODE_FLOOR, MODE_PYTHON, FaultRefused
from ._histogram import log2_percentile
from ._spin import spin_readable
from . import _atomic as atomic
from . import _trap as trap

__all__ = [
    "PAGE", "DSMInternalError", "MemoryLayoutError", "SegmentationFault", "HAT", "HATStatistics",
    "PROT_NONE", "PROT_READ", "PROT_WRITE", "DEFAULT_BASE", "DEFAULT_SIZE", "USER_SPACE_END", "NodeMemory",
    "view_at", "BACKENDS", "check_backend", "uffd_support",
    "KernelPager", "PagerStatistics", "READ", "WRITE", "MODE_FLOOR", "MODE_PYTHON", "FaultRefused",
    "log2_percentile", "spin_readable", "atomic", "trap",
]
