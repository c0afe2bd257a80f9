"""The public Cluster API: nodes, shared numpy arrays, and work on them.

A Cluster starts its node processes (node 0 is this process), starts the VM
on every node, and creates the Process and DSM objects.  Every array it
hands out lives at the same address on every node; arrays passed to `run`
travel as (address, shape, dtype, strides) and arrive as views of the same
shared memory, never as copies.
"""

from __future__ import annotations

import threading

import numpy as np

from tornado_dsm.kernel import DEFAULT_BASE, PAGE, current_cos, start_nodes, view_at
from tornado_dsm.objects import (
    VirtualMemory, VMConfig, drop_mappings, lost_pages, set_process, start_node, stop_node,
)

from . import _runner
from ._config import check_cluster_args, check_timeout
from ._stats import gather_statistics

DEFAULT_WINDOW = 1 << 30
STOP_TIMEOUT = 5.0   # seconds close() waits for each node to unmap its window


class Cluster:
    """A shared address space over ``nodes`` processes.  Use as a context manager.

    ``protocol``: "ivy" (multiple readers, single writer) or "migrate".
    ``manager``: "centralized", "fixed" or "dynamic" (IVY's three managers).
    ``policies``: {"process": "replicated" | "singleton",
    "region": "per_node" | "singleton" | "group:k"}.  ``memory_per_node``:
    bytes of frames a node may hold (None: no limit).  ``base``/``size``:
    the DSM window (same address on every node).  ``timeout``: seconds
    within which every call between nodes (and every `run`, unless it says
    otherwise) must answer; None (default) waits as long as the nodes live.
    """

    def __init__(self, nodes: int = 2, threads_per_node: int = 1, protocol: str = "ivy",
                 manager: str = "dynamic", policies: dict | None = None,
                 memory_per_node: int | None = None, base: int = DEFAULT_BASE,
                 size: int = DEFAULT_WINDOW, transport: str = "unix", debug: bool = False,
                 timeout: float | None = None) -> None:
        self.policies, frames = check_cluster_args(nodes, threads_per_node, protocol, manager,
                                                   policies, memory_per_node, base, size)
        self.timeout = check_timeout("timeout", timeout)
        self.nnodes, self.threads_per_node = nodes, threads_per_node
        self.config = VMConfig(base, size, protocol, manager, frames, debug)
        self._arrays: dict[int, tuple] = {}  # start address -> (Allocation, kind, array)
        self._names: dict[int, str] = {}     # start address -> the array's name
        self._lock = threading.Lock()
        self._nodes = start_nodes(nodes, transport=transport, init=start_node, init_args=(self.config,),
                                  timeout=self.timeout)
        try:
            self.vm = VirtualMemory(self.config, self.policies)
            self._nodes.run_on_all(set_process, int(self.vm.process))
        except BaseException:
            self._nodes.__exit__(None, None, None)
            raise

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- arrays -----------------------------------------------------------------------

    def zeros(self, shape, dtype=np.float64) -> np.ndarray:
        """A new shared array of zeros (first touch anywhere is a zero fill)."""
        shape, dtype = _check_shape(shape), _check_dtype(dtype)
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1)
        self._check_room(nbytes)
        name = f"array{len(self._names)}"
        a = self.vm.allocate(nbytes, name=name)
        return self._register(a, "anonymous", shape, dtype, name)

    def empty(self, shape, dtype=np.float64) -> np.ndarray:
        """Like `zeros` (shared memory starts zeroed; no cheaper way exists)."""
        return self.zeros(shape, dtype)

    def map_file(self, path, shape, dtype=np.uint8, mode: str = "r+") -> np.ndarray:
        """A shared array backed by ``path`` (read on first touch, written by `flush`).

        ``mode`` "r+" (read-write) or "r" (read-only: a write faults with
        SegmentationFault).  The file must hold the whole array.
        """
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' (read-only) or 'r+' (read-write), not {mode!r}")
        shape, dtype = _check_shape(shape), _check_dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < 1:
            raise ValueError(f"a file mapping needs at least one byte, not shape {shape}")
        self._check_room(nbytes)
        a = self.vm.allocate(nbytes, name=str(path), prot="r" if mode == "r" else "rw",
                             path=str(path), mode=mode)
        return self._register(a, "file", shape, dtype, str(path))

    def flush(self, array: np.ndarray) -> int:
        """Write the dirty pages of a file-backed array back (pwrite + fsync); returns how many."""
        a, kind = self._allocation(array)
        return self.vm.flush(a) if kind == "file" else 0

    def free(self, array: np.ndarray) -> None:
        """Free a shared array (file-backed: flushed first).  Nodes faulting on it
        finish or get SegmentationFault ("use after free"), never a freed object."""
        a, kind = self._allocation(array)
        if kind == "file":
            self.vm.flush(a)
        with self._lock:
            self._arrays.pop(a.start, None)
        self.vm.free(a)

    def drop_mappings(self, array: np.ndarray, nodes="all") -> list:
        """On each chosen node, unmap the array's pages in the HAT but keep the
        copies cached in the node's FCM rep, so the next faults there are in-core
        (Tornado's in-core page-fault test).  Returns the pages cached per node."""
        a, _ = self._allocation(array)
        chosen = _runner.check_nodes(nodes, self.nnodes)
        holders = self.vm.rep_nodes(a.fcm)  # a node without a rep caches nothing
        return [self._nodes.run_on(n, drop_mappings, [a.fcm]) if n in holders else 0 for n in chosen]

    # ---- work --------------------------------------------------------------------------

    def run(self, fn, *args, nodes="all", threads: int | None = None,
            timeout: float | None = None) -> list:
        """Run module-level ``fn(*args)`` on ``threads`` threads of each chosen node.

        ``nodes``: "all" (every node still alive: see `lost_nodes`), a node id
        or a list of ids.  Returns the results ordered by node, then thread.
        An exception on a node is re-raised here with the node and thread
        named; a lost node raises NodeLost with how its process ended.
        ``timeout`` (default: the cluster's): seconds within which every
        thread must return, else TimeoutError naming the late nodes and
        threads (which run on: Python cannot stop a thread).
        """
        chosen = self._live(nodes)
        threads = self.threads_per_node if threads is None else threads
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, not {threads!r}")
        limit = self.timeout if timeout is None else check_timeout("timeout", timeout)
        job = _runner.pack(fn, args, self._arrays_by_start())
        # every chosen node at once; node 0's share runs its threads from this one.
        # A node stops waiting for its threads at the limit and says which are
        # late; the grace is for its answer, so only a node that cannot answer
        # (stopped, overloaded) is a PPC timeout.
        ppc_limit = None if limit is None else limit + _runner.ANSWER_GRACE
        outcomes = self.node_set.run_on_each(chosen, _runner.run_job, job, threads, limit,
                                             timeout=ppc_limit, return_errors=True)
        return _runner.unpack_results(chosen, outcomes, fn, limit)

    # ---- observation --------------------------------------------------------------------

    def inspect(self):
        """The replication levels of every clustered object (a ReplicationView)."""
        return current_cos().inspect()

    def ppc_statistics(self) -> list:
        """Every node's PPC counters (a kernel ``PPCStatistics`` per node, by node id):
        calls, bytes and latencies per (object, method, local/remote)."""
        return self.node_set.ppc_statistics()

    def lost_nodes(self) -> dict:
        """{node: reason} of every node lost while the cluster ran (empty if none):
        the reason says how its process ended (signal or exit code, and the
        last Python frame it ran when it crashed)."""
        return self.node_set.lost_nodes()

    def node_status(self) -> dict:
        """{node: "alive" or "lost: <reason>"} for every node."""
        lost = self.lost_nodes()
        return {n: f"lost: {lost[n]}" if n in lost else "alive" for n in range(self.nnodes)}

    def lost_arrays(self) -> dict:
        """{array name: number of pages lost} for the live arrays that lost pages
        with a lost node (their other pages still work; touching a lost one
        raises SegmentationFault naming the array).  Empty if nothing was lost."""
        lost = set(self.lost_nodes())
        if not lost:
            return {}
        with self._lock:
            live = [(self._names[start], a) for start, (a, *_rest) in self._arrays.items()]
        counts = {name: len(lost_pages(self.vm, a, lost)) for name, a in live}
        return {name: n for name, n in counts.items() if n}

    def arrays(self) -> list:
        """The live shared arrays of this cluster (not yet freed), oldest first."""
        with self._lock:
            return [view for _a, _kind, view in self._arrays.values()]

    @property
    def node_set(self):
        """The kernel's ``NodeSet`` of this cluster's nodes, for work below the array API:
        ``run_on(node, fn, *args)``, ``run_on_each(nodes, fn, *args)``, ``run_on_all(fn, *args)``
        (a plain call on each node, no threads or array passing) and ``runtime`` (node 0's
        ``NodeRuntime``: raw PPCs).  RuntimeError once the cluster is closed."""
        nodes = self._nodes
        if nodes is None:
            raise RuntimeError("this cluster is closed")
        return nodes

    def statistics(self):
        """Faults, PPCs, messages, bytes and invalidations per node and in total."""
        oids = [(a.fcm, a.region, a.directory, a.cor) for a, *_ in list(self._arrays.values())]
        return gather_statistics(self, oids)

    def close(self) -> None:
        """Stop every node; idempotent."""
        nodes, self._nodes = getattr(self, "_nodes", None), None
        if nodes is None:
            return
        try:
            # in parallel and bounded: a node lost, stopped or hung is reaped
            # (terminated, then killed) by the NodeSet, whose exit unmaps it anyway
            others = [n for n in range(1, self.nnodes) if n not in nodes.lost_nodes()]
            outcomes = nodes.run_on_each(others, stop_node, timeout=STOP_TIMEOUT, return_errors=True)
            for n, out in zip(others, outcomes):
                if isinstance(out, TimeoutError) and n in nodes.processes:
                    nodes.processes[n].kill()   # stopped or hung: it would not obey shutdown either
        finally:
            nodes.__exit__(None, None, None)
            stop_node()

    # ---- helpers ------------------------------------------------------------------------

    def _register(self, a, kind: str, shape, dtype, name: str) -> np.ndarray:
        view = view_at(a.start, shape, dtype)
        with self._lock:
            self._arrays[a.start] = (a, kind, view)
            self._names[a.start] = name
        return view

    def _live(self, nodes) -> list:
        """The chosen node ids; "all" leaves out the lost nodes."""
        chosen = _runner.check_nodes(nodes, self.nnodes)
        if nodes == "all":
            lost = self.lost_nodes()
            chosen = [n for n in chosen if n not in lost]
        return chosen

    def _arrays_by_start(self) -> dict:
        with self._lock:
            return {start: (a.start, a.npages) for start, (a, *_) in self._arrays.items()}

    def _allocation(self, array):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"expected a shared numpy array from this cluster, not {type(array).__name__}")
        address = array.__array_interface__["data"][0]
        with self._lock:
            for start, (a, kind, _view) in self._arrays.items():
                if start <= address < start + a.npages * PAGE:
                    return a, kind
        raise ValueError(f"array at {address:#x} is not a live shared array of this cluster "
                         "(never allocated here, or already freed)")

    def _check_room(self, nbytes: int) -> None:
        if nbytes > self.config.size:
            raise MemoryError(f"{nbytes} bytes do not fit the {self.config.size}-byte DSM window; "
                              "pass a larger size= to Cluster")
        cap = self.config.memory_per_node
        if cap is not None and nbytes > cap * PAGE * self.nnodes:
            raise MemoryError(f"{nbytes} bytes exceed the nodes' memory ({self.nnodes} x "
                              f"{cap * PAGE} bytes, memory_per_node)")


def _check_shape(shape) -> tuple:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (int(shape),)
    if not isinstance(shape, tuple) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ValueError(f"shape must be a non-negative int or a tuple of them, not {shape!r}")
    return tuple(int(d) for d in shape)


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ValueError(f"dtype {dtype!r} is not a numpy dtype (e.g. 'float64', np.int32): {exc}") from None
    if dt.hasobject:
        raise ValueError(f"dtype {dt} holds Python objects, which cannot live in shared memory; "
                         "use a numeric or fixed-size dtype")
    return dt
