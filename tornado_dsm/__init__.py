"""tornado_dsm: Tornado-style clustered-object virtual memory over a page-based DSM.

    import tornado_dsm as td
    with td.Cluster(nodes=2) as cluster:
        a = cluster.zeros((1024,), "int64")
        cluster.run(work, a)            # work is a module-level function
"""

__version__ = "0.1.0"

from .kernel import (  # noqa: E402
    DSMInternalError,
    MemoryLayoutError,
    NodeLost,
    ObjectDestroyed,
    PPCTimeout,
    SegmentationFault,
    SwapFailed,
)

__all__ = [
    "__version__", "Cluster", "current_node", "current_thread", "DSMInternalError",
    "MemoryLayoutError", "NodeLost", "ObjectDestroyed", "PPCTimeout", "SegmentationFault", "SwapFailed",
    "WriteBackError", "Word", "word", "wait", "notify", "notify_all", "Lock", "Barrier",
    "write_key_file", "read_key_file", "join_cluster",
]


def __getattr__(name):
    # The Cluster API pulls in the node and VM layers; import it on first use so
    # that `import tornado_dsm` stays light for the kernel-only tools.
    if name in ("Cluster", "WriteBackError"):
        from . import _cluster
        return getattr(_cluster, name)
    if name in ("Word", "word", "wait", "notify", "notify_all"):
        from . import _words
        return getattr(_words, name)
    if name in ("Lock", "Barrier"):
        from . import _barriers, _locks
        return getattr(_locks if name == "Lock" else _barriers, name)
    if name in ("write_key_file", "read_key_file", "join_cluster"):
        from . import _join
        return getattr(_join, name)
    if name in ("current_node", "current_thread"):
        from . import _runner
        return getattr(_runner, name)
    raise AttributeError(f"module 'tornado_dsm' has no attribute {name!r}")
