"""tornado_dsm: Tornado-style clustered-object virtual memory over a page-based DSM."""

__version__ = "0.1.0"

from .kernel import (  # noqa: E402
    DSMInternalError,
    MemoryLayoutError,
    NodeLost,
    ObjectDestroyed,
    PPCTimeout,
    SegmentationFault,
)

__all__ = [
    "__version__", "DSMInternalError", "MemoryLayoutError", "NodeLost", "ObjectDestroyed",
    "PPCTimeout", "SegmentationFault",
]
