"""The public Cluster API: nodes, shared numpy arrays, and work on them.

A Cluster starts its node processes (node 0 is this process), starts the VM
on every node, and creates the Process and DSM objects.  Every array it
hands out lives at the same address on every node; arrays passed to `run`
travel as (address, shape, dtype, strides) and arrive as views of the same
shared memory, never as copies.

Durability and freeing (docs/durability.md): ``close()`` writes every live
file-backed array back before it stops the nodes (``close(discard=True)``
does not); ``free`` quarantines the array's addresses so a stale view
faults, naming it, instead of aliasing the next allocation.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import time
import warnings

import attrs
import numpy as np

from tornado_dsm.kernel import (DEFAULT_BASE, PAGE, check_backend, current_cos, launched_by_mpi, new_key,
                                start_nodes)
from tornado_dsm.objects import (
    check_prefetch, VirtualMemory, VMConfig, drop_mappings, lost_pages, node_backend, set_process, start_node, stop_node,
)

from ._arrays import ArrayTable, WriteBackError, check_dtype, check_shape, lost_reason as _lost_reason
from . import _interrupts, _runner, _swap_api, _syncspace
from ._config import check_cluster_args, check_timeout
from ._stats import Measurement, gather_statistics
from ._watch import WatchServer, rates, snapshot

# 64 GiB: a reservation costs nothing (the memfd is sparse, page tables and the HAT's
# one byte per page are only made where pages are touched), so arrays of tens of GiB fit.
DEFAULT_WINDOW = 64 << 30
STOP_TIMEOUT = 5.0   # seconds close() waits for each node to unmap its window
DEPRECATE_NODES_KEYWORD = False   # turned on once every caller in the package says on=


def _launcher(launcher: str, nodes, join: int, route):
    """(nodes, the function that starts them) for ``launcher``; under "mpi", a rank
    other than 0 serves as a node here and leaves with SystemExit."""
    if launcher == "spawn":
        return nodes, start_nodes
    if launcher != "mpi":
        raise ValueError(f"launcher must be 'spawn' (this process starts the nodes) or 'mpi' "
                         f"(the ranks of an mpiexec job), not {launcher!r}")
    if join or route is not None:
        raise ValueError("launcher='mpi' puts every node on an MPI rank: join= and route= do not apply")
    from . import _mpi
    size = _mpi.serve_unless_rank0()
    return (size if nodes is None else nodes), _mpi.start_nodes


def _spawn_transport(transport):
    """The transport of nodes this process spawns (None: "unix"); transport="mpi" is
    refused with what to do instead, as the process was or was not started by mpiexec."""
    if transport != "mpi":
        return "unix" if transport is None else transport
    if launched_by_mpi():
        how = "this process runs under an MPI launcher: make the cluster with Cluster.from_mpi()"
    else:
        how = ("this process was not started by an MPI launcher: run it as `mpiexec -n N python "
               "program.py` with Cluster.from_mpi()")
    raise ValueError(f"transport='mpi' needs every node to be an MPI rank; {how} (or launcher='mpi').  "
                     f"Accepted with launcher='spawn': 'unix', 'tcp'")


class Cluster:
    """A shared address space over ``nodes`` processes.  Use as a context manager.

    ``protocol``: "ivy" (multiple readers, single writer) or "migrate".
    ``manager``: "centralized", "fixed" or "dynamic" (IVY's three managers).
    ``policies``: {"process": "per_node" | "singleton" | "adaptive[:key=value,...]",
    "region": "per_node" | "singleton" | "group:k" | "adaptive[:key=value,...]"}
    (adaptive: switched between singleton and per_node by usage, README).  ``memory_per_node``:
    bytes of frames a node may hold (None: no limit).  ``base``/``size``:
    the DSM window (same address on every node).  ``timeout``: seconds
    within which every call between nodes (and every `run`, unless it says
    otherwise) must answer; None (default) waits as long as the nodes live.
    ``route(node, address)``: the address the other nodes dial to reach
    ``node`` (fault injection puts a `Relay` there; None: the node itself).
    ``transport``: "unix" (default) or "tcp"; under ``launcher="mpi"`` "tcp"
    (default) or "mpi" (README, "Beyond one host").  ``transport="tcp"`` with
    ``address`` ("HOST:PORT" node 0 listens on),
    ``key`` (the cluster secret, e.g. from `write_key_file`) and ``join=k``:
    the last k nodes join from other hosts (`join_cluster`, ``tornado-dsm
    node --join``) and the constructor returns once they have.
    ``launcher``: "spawn" (this process starts the nodes) or "mpi" (the ranks of
    an ``mpiexec`` job are the nodes, ``nodes`` at most the job size; a rank
    other than 0 serves here and exits: see `from_mpi`).
    ``backend``: how page faults reach the nodes' fault handlers, "mprotect",
    "uffd" (userfaultfd: no limit from vm.max_map_count, needs a kernel and
    permissions that allow it) or "auto" (uffd where allowed); None: each
    node's $TORNADO_DSM_BACKEND, else "auto".  `backends` says what each
    node took.
    """

    def __init__(self, nodes: int = 2, threads_per_node: int = 1, protocol: str = "ivy",
                 manager: str = "dynamic", policies: dict | None = None,
                 memory_per_node: int | None = None, base: int = DEFAULT_BASE,
                 size: int = DEFAULT_WINDOW, transport: str | None = None, debug: bool = False,
                 timeout: float | None = None, route=None, address: str | None = None,
                 key: bytes | None = None, join: int = 0, launcher: str = "spawn",
                 backend: str | None = None) -> None:
        nodes, start = _launcher(launcher, nodes, join, route)
        if launcher == "spawn":
            transport = _spawn_transport(transport)
        self.policies, frames = check_cluster_args(nodes, threads_per_node, protocol, manager,
                                                   policies, memory_per_node, base, size)
        self.timeout = check_timeout("timeout", timeout)
        self.nnodes, self.threads_per_node = nodes, threads_per_node
        if backend is not None:
            check_backend(backend)
        self.config = VMConfig(base, size, protocol, manager, frames, debug, backend)
        self._arrays = ArrayTable()
        self._names = itertools.count()  # array names are never reused ("array3")
        self._sync_names = itertools.count()
        self._sync_uids: list[int] = []
        self._run_ids = itertools.count(1)
        self._baseline = None           # statistics(reset=True) moves it
        self._backends: dict[int, str] = {}  # node -> fault backend, asked once (see backends)
        self._nodes = start(nodes, transport=transport, init=start_node, init_args=(self.config,),
                            timeout=self.timeout, route=route, address=address, key=key, join=join)
        try:
            self.vm = VirtualMemory(self.config, self.policies)
            self._nodes.run_on_all(set_process, int(self.vm.process))
            # a key of its own: the cluster key runs code on every node and stays out of
            # files (under mpiexec it exists only in memory and in MPI messages)
            self._watch = WatchServer(self, self._nodes.run_dir, new_key())
            self._sigint = _interrupts.guard_faults()
        except BaseException:
            self._nodes.__exit__(None, None, None)
            raise

    @classmethod
    def from_mpi(cls, **options) -> "Cluster":
        """The cluster of an MPI job, one node per rank (``mpiexec -n N python prog.py``).

        On rank 0: a Cluster of N nodes, node k on rank k (``options`` are the
        constructor's; ``nodes`` may only repeat N).  On every other rank it
        never returns: the rank serves as a node of every cluster rank 0 makes,
        and when rank 0's program ends the process exits (SystemExit) with
        status 0, or 1 if a node was lost or rank 0's program raised.
        """
        from . import _mpi
        options["nodes"] = _mpi.from_mpi_nodes(options.get("nodes"))
        return cls(launcher="mpi", **options)

    def __enter__(self) -> "Cluster":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """close(): file-backed arrays are written back even when the block raised
        (what it wrote before the error is kept, as a file object's ``with`` does;
        call ``close(discard=True)`` yourself to drop it).  If the block raised,
        a failure of close is added to that exception as a note, never masks it."""
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except Exception as close_exc:  # noqa: BLE001 -- reported on the exception in flight
            exc.add_note(f"and closing the cluster failed: {type(close_exc).__name__}: {close_exc}")

    # ---- arrays -----------------------------------------------------------------------

    def zeros(self, shape, dtype=np.float64, prefetch: int = 0) -> np.ndarray:
        """A new shared array of zeros (first touch anywhere is a zero fill).

        ``prefetch``: pages a read fault that misses brings beyond the one it
        needs, from the same owner in the same reply (the next ones it owns;
        ArgoDSM's load size); needs the dynamic manager.  Hits are counted in
        `statistics` (prefetched, prefetch_hits)."""
        self._check_open()
        shape, dtype = check_shape(shape), check_dtype(dtype)
        prefetch = self._check_prefetch(prefetch)
        nbytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1)
        self._check_room(nbytes)
        a = self.vm.allocate(nbytes, name=f"array{next(self._names)}", prefetch=prefetch)
        return self._arrays.register(a, "anonymous", shape, dtype)

    def empty(self, shape, dtype=np.float64) -> np.ndarray:
        """Like `zeros` (shared memory starts zeroed; no cheaper way exists)."""
        return self.zeros(shape, dtype)

    def _check_prefetch(self, prefetch) -> int:
        """``prefetch`` checked: a page count in range, and the dynamic manager (only its
        owners answer reads themselves, so only they can add their next pages)."""
        prefetch = check_prefetch(prefetch)
        if prefetch and self.config.manager != "dynamic":
            raise ValueError(f"prefetch={prefetch} needs manager='dynamic' (this cluster's manager is "
                             f"{self.config.manager!r}); use prefetch=0 with it")
        return prefetch

    def map_file(self, path, shape, dtype=np.uint8, mode: str = "r+", prefetch: int = 0) -> np.ndarray:
        """A shared array backed by ``path`` (read on first touch; written back by
        `flush`, `free` and `close`).

        ``mode`` "r+" (read-write) or "r" (read-only: a write faults with
        SegmentationFault).  The file must hold the whole array.
        """
        self._check_open()
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' (read-only) or 'r+' (read-write), not {mode!r}")
        shape, dtype = check_shape(shape), check_dtype(dtype)
        prefetch = self._check_prefetch(prefetch)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes < 1:
            raise ValueError(f"a file mapping needs at least one byte, not shape {shape}")
        self._check_room(nbytes)
        a = self.vm.allocate(nbytes, name=str(path), prot="r" if mode == "r" else "rw",
                             path=str(path), mode=mode, prefetch=prefetch)
        return self._arrays.register(a, "file", shape, dtype)

    def flush(self, array: np.ndarray) -> int:
        """Write the dirty pages of a file-backed array, on every node, back
        (pwrite + fsync); returns how many.  Once it returns, those bytes are in
        the file whatever happens to the nodes after.  A node that cannot be
        reached: the others' pages are still written, then WriteBackError."""
        self._check_open()
        a, kind = self._arrays.allocation(array)
        if kind != "file":
            return 0
        wb = self.vm.flush(a)
        if wb.lost:
            raise WriteBackError([(a.name, _lost_reason(wb.lost))])
        return wb.written

    def free(self, array: np.ndarray) -> None:
        """Free a shared array (file-backed: written back first).  Nodes faulting
        on it finish or get SegmentationFault ("use after free"), never a freed
        object.  Its addresses are quarantined: touching any view of it, on any
        node, is a SegmentationFault naming it, and they are handed out again
        only when the window has no other room (from then on a stale view may
        alias a new array; the API calls still refuse views of it).  A file whose
        write-back misses a lost node is still freed, then WriteBackError."""
        self._check_open()
        a, kind = self._arrays.allocation(array)
        wb = self.vm.flush(a) if kind == "file" else None
        self._arrays.forget(a)
        self.vm.free(a)
        if wb is not None and wb.lost:
            raise WriteBackError([(a.name, _lost_reason(wb.lost))])

    def drop_mappings(self, array: np.ndarray, nodes="all") -> list:
        """On each chosen node, unmap the array's pages in the HAT but keep the
        copies cached in the node's FCM rep, so the next faults there are in-core
        (Tornado's in-core page-fault test).  Returns the pages cached per node."""
        self._check_open()
        a, _ = self._arrays.allocation(array)
        chosen = _runner.check_nodes(nodes, self.nnodes)
        holders = self.vm.rep_nodes(a.fcm)  # a node without a rep caches nothing
        return [self._nodes.run_on(n, drop_mappings, [a.fcm]) if n in holders else 0 for n in chosen]

    # ---- synchronization ---------------------------------------------------------------

    def lock(self, kind: str = "mcs", padding: str = "page", threads: int | None = None,
             home: int = 0):
        """A new lock (tornado_dsm._locks): pass it to `run`, use ``with lock:``.

        ``kind``: tas, ttas, backoff, ticket, anderson, mcs (on DSM words) or
        server (a clustered object on ``home``, reached by PPC).  ``padding``:
        "page" puts every spin variable on its own page, "word" packs them.
        ``threads``: how many threads may ever use it (anderson and mcs keep a
        slot per thread); default every run thread of every node, plus one.
        """
        self._check_open()
        from ._locks import KINDS, Lock, initialize, words_needed
        capacity = self._sync_capacity(threads, "threads")
        space = self._sync_space("lock", _choice("lock kind", kind, KINDS), padding,
                                 words_needed(kind, capacity), capacity)
        initialize(kind, space)
        oid = self._sync_object("ServerLock", [], home, space) if kind == "server" else 0
        return Lock(space, home, oid)

    def barrier(self, parties: int, kind: str = "tree", padding: str = "page", home: int = 0):
        """A new barrier for ``parties`` threads (tornado_dsm._barriers): pass it to
        `run`; ``barrier.wait()`` returns the episode number (0, 1, ...).

        ``kind``: counter, tree, mcs, tournament, dissemination (on DSM words)
        or server (a clustered object on ``home``, reached by PPC).  A party is
        a (node, thread index) of `run`; the same parties serve every episode.
        """
        self._check_open()
        from ._barriers import KINDS, Barrier, words_needed
        parties = _syncspace.check_count("parties", parties)
        space = self._sync_space("barrier", _choice("barrier kind", kind, KINDS), padding,
                                 words_needed(kind, parties), parties)
        oid = self._sync_object("ServerBarrier", [parties], home, space) if kind == "server" else 0
        return Barrier(space, parties, oid)

    # ---- work --------------------------------------------------------------------------

    def run(self, fn, *args, on="all", threads: int | None = None,
            timeout: float | None = None, nodes=None) -> list:
        """Run ``fn(*args)`` on ``threads`` threads of each node named by ``on``.

        ``on``: "all" (every node still alive: see `lost_nodes`), a node id
        or a list of ids (``nodes=`` is its old name: a DeprecationWarning, as
        it read like a count).  Returns the results ordered by node, then thread.
        An exception on a node is re-raised here with the node and thread
        named; a lost node raises NodeLost with how its process ended.
        ``timeout`` (default: the cluster's): seconds within which every
        thread must return, else TimeoutError naming the late nodes and
        threads (which run on: Python cannot stop a thread).
        """
        self._check_open()
        chosen = self._live(_on(on, nodes))
        threads = self.threads_per_node if threads is None else threads
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ValueError(f"threads must be a positive integer, not {threads!r}")
        limit = self.timeout if timeout is None else check_timeout("timeout", timeout)
        job = _runner.pack(fn, args, self._arrays.by_start(), window=self._window(),
                           check=self._arrays.check_not_reused)
        # every chosen node at once; node 0's share runs its threads from this one.
        # A node stops waiting for its threads at the limit and says which are
        # late; the grace is for its answer, so only a node that cannot answer
        # (stopped, overloaded) is a PPC timeout.
        ppc_limit = None if limit is None else limit + _runner.ANSWER_GRACE
        run_id = next(self._run_ids)

        def call():
            return self.node_set.run_on_each(chosen, _runner.run_job, job, threads, limit, run_id,
                                             timeout=ppc_limit, return_errors=True)
        if not _interrupts.can_catch():
            outcomes = call()
        else:                           # Ctrl-C interrupts the run (see _interrupts)
            outcomes = _interrupts.run_interruptibly(
                call, lambda: self._interrupt(chosen, run_id), self.close, f"run of {_name(fn)}",
                _runner.shows_interrupt)
        return _runner.unpack_results(chosen, outcomes, fn, limit)

    def _interrupt(self, nodes: list, run_id: int) -> None:
        """Raise KeyboardInterrupt in run ``run_id``'s threads on ``nodes``."""
        nodes_set = self._nodes
        if nodes_set is not None:
            nodes_set.run_on_each(nodes, _runner.interrupt_run, run_id, timeout=5.0, return_errors=True)

    # ---- observation --------------------------------------------------------------------

    def inspect(self):
        """The replication levels of every clustered object (a ReplicationView),
        with each node's fault backend."""
        self._check_open()
        view = current_cos().inspect()
        backends = self.backends()
        return attrs.evolve(view, backends=tuple(backends.get(n, "unknown") for n in range(view.nnodes)))

    def set_policy(self, target, policy: str, *, part: str = "region", timeout: float = 60.0) -> dict:
        """Switch a live clustered object to ``policy`` while faults run (hot swap).

        ``target``: a shared array (its Region, or with ``part="directory"`` its
        PageDirectory: ``singleton`` or ``"centralized"`` is IVY's centralized manager,
        ``partitioned`` or ``"fixed"`` the fixed one; an array of the dynamic manager
        has none), ``"process"``, or an object reference.  Returns the swap's
        record (time, from, to, seconds, calls that waited, seconds waited).
        ValueError for a policy the object does not support; SwapFailed if a node
        was lost or calls did not drain in ``timeout`` s (the old policy stays)."""
        self._check_open()
        oid = _swap_api.object_of(self, target, part)
        return current_cos().set_policy(oid, _swap_api.policy_of(part, policy), timeout)

    def migrate(self, target, node: int, *, part: str = "region", timeout: float = 60.0) -> dict:
        """Move a singleton clustered object (root and rep) to home ``node`` while faults run.

        ``target`` as for ``set_policy``.  References stay valid on every node.
        Returns the migration's record (as ``set_policy``'s, ``reason`` "migrate",
        with ``from_home``/``to_home``).  ValueError for an object that is not a
        singleton, or a node out of range, lost or already its home; SwapFailed if
        a node was lost on the way (the object stays usable at its old home)."""
        self._check_open()
        return _swap_api.migrate(self, target, node, part, timeout)

    def swap_history(self, target, *, part: str = "region") -> list:
        """The swaps and migrations of ``target`` (as ``set_policy`` names it) so far, oldest first."""
        self._check_open()
        return current_cos().swap_history(_swap_api.object_of(self, target, part))

    def backends(self) -> dict:
        """{node: "uffd" or "mprotect"}: the fault backend each node's window took
        (a node's choice is fixed when it starts; a lost node keeps the one it had)."""
        self._check_open()
        if len(self._backends) < self.nnodes:
            live = [n for n in range(self.nnodes) if n not in self.lost_nodes()]
            self._backends.update(zip(live, self.node_set.run_on_each(live, node_backend)))
        return dict(sorted(self._backends.items()))

    def watch(self, interval: float = 1.0, count: int | None = None):
        """Yield a `WatchView` every ``interval`` seconds (``count`` of them, None:
        for ever): per node, faults and PPCs per second and resident pages; per
        clustered object, calls and misses per second, reps and stubs.  What
        `tornado-dsm top` shows from another process."""
        self._check_open()
        if not interval > 0:
            raise ValueError(f"interval must be a number of seconds > 0, not {interval!r}")
        before, shown = snapshot(self), 0
        while count is None or shown < count:
            time.sleep(interval)
            after = snapshot(self)
            yield rates(before, after)
            before, shown = after, shown + 1

    def ppc_statistics(self) -> list:
        """Every node's PPC counters (a kernel ``PPCStatistics`` per node, by node id):
        calls, bytes and latencies per (object, method, local/remote)."""
        self._check_open()
        return self.node_set.ppc_statistics()

    def lost_nodes(self) -> dict:
        """{node: reason} of every node lost while the cluster ran (empty if none):
        the reason says how its process ended (signal or exit code, and the
        last Python frame it ran when it crashed)."""
        self._check_open()
        return self.node_set.lost_nodes()

    def node_status(self) -> dict:
        """{node: "alive" or "lost: <reason>"} for every node."""
        self._check_open()
        lost = self.lost_nodes()
        return {n: f"lost: {lost[n]}" if n in lost else "alive" for n in range(self.nnodes)}

    def lost_arrays(self) -> dict:
        """{array name: number of pages lost} for the live arrays that lost pages
        with a lost node (their other pages still work; touching a lost one
        raises SegmentationFault naming the array).  Empty if nothing was lost."""
        self._check_open()
        lost = set(self.lost_nodes())
        if not lost:
            return {}
        live = [a for a, *_rest in self._arrays.entries()]
        counts = {a.name: len(lost_pages(self.vm, a, lost)) for a in live}
        return {name: n for name, n in counts.items() if n}

    def arrays(self) -> list:
        """The live shared arrays of this cluster (not yet freed), oldest first."""
        self._check_open()
        return [view for _a, kind, view in self._arrays.entries() if kind != "sync"]

    def _check_open(self) -> None:
        if getattr(self, "_nodes", None) is None:
            raise RuntimeError("this cluster is closed (close() was called, or its `with` block ended)")

    @property
    def node_set(self):
        """The kernel's ``NodeSet`` of this cluster's nodes, for work below the array API:
        ``run_on(node, fn, *args)``, ``run_on_each(nodes, fn, *args)``, ``run_on_all(fn, *args)``
        (a plain call on each node, no threads or array passing) and ``runtime`` (node 0's
        ``NodeRuntime``: raw PPCs).  RuntimeError once the cluster is closed."""
        self._check_open()
        return self._nodes

    def statistics(self, reset: bool = False):
        """Faults, PPCs, messages, bytes and invalidations per node and in total
        (a ClusterStatistics: print it for a table), counted since the cluster
        started or since the last ``statistics(reset=True)``, which also starts
        a new interval.  For one phase of a program, `measure` is simpler."""
        self._check_open()
        now = self._raw_statistics()
        since = now if self._baseline is None else now - self._baseline
        if reset:
            self._baseline = now
        return since

    @contextlib.contextmanager
    def measure(self):
        """``with cluster.measure() as m: ...`` -> ``m.statistics``: what the block did
        (a ClusterStatistics), and ``m.seconds``; independent of ``reset``."""
        m = Measurement()
        before, t0 = self._raw_statistics(), time.perf_counter()
        try:
            yield m
        finally:
            if self._nodes is not None:
                m.seconds = time.perf_counter() - t0
                m.statistics = self._raw_statistics() - before

    def _raw_statistics(self):
        oids = [(a.fcm, a.region, a.directory, a.cor) for a, *_ in self._arrays.entries()]
        return gather_statistics(self, oids)

    def close(self, discard: bool = False) -> None:
        """Write every live file-backed array back (as `flush`: every node's dirty
        pages, pwrite + fsync), then stop every node; idempotent.

        ``discard=True`` skips the write-back: unflushed writes to file-backed
        arrays are dropped (the files keep what was flushed).  A write-back
        that fails (a node lost, a disk error) does not stop the others or the
        shutdown: every node is stopped, then WriteBackError names each array
        whose write-back was incomplete.
        """
        nodes, self._nodes = getattr(self, "_nodes", None), None
        if nodes is None:
            return
        _syncspace.mark_closed(self._sync_uids)   # their use from here says "closed"
        if getattr(self, "_watch", None) is not None:
            self._watch.close()
        _interrupts.unguard_faults(getattr(self, "_sigint", None))
        failures = []
        try:
            if not discard:
                failures = self._write_back_all()
        finally:
            self._stop(nodes)
        if failures:
            raise WriteBackError(failures)

    def _write_back_all(self) -> list:
        """Flush every live file-backed array; [(name, reason)] of those not fully written."""
        files = [a for a, _kind, _view in self._arrays.entries("file")]
        failures = []
        for a in files:
            try:
                wb = self.vm.flush(a)
            except Exception as exc:  # noqa: BLE001 -- the others are still written, then reported
                failures.append((a.name, f"{type(exc).__name__}: {exc}"))
            else:
                if wb.lost:
                    failures.append((a.name, _lost_reason(wb.lost)))
        return failures

    def _stop(self, nodes) -> None:
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

    def _sync_capacity(self, threads, what: str) -> int:
        if threads is None:
            return self.nnodes * self.threads_per_node + 1
        return _syncspace.check_count(what, threads)

    def _sync_space(self, what: str, kind: str, padding: str, nwords: int, capacity: int):
        """The words of a new lock or barrier, in an array of their own."""
        stride, npages = _syncspace.words_layout(padding, nwords)
        name = f"{what}{next(self._sync_names)}"
        self._check_room(npages * PAGE)
        a = self.vm.allocate(npages * PAGE, name=name)
        self._arrays.register(a, "sync", (npages * PAGE // 8,), np.uint64)
        uid = secrets.randbits(62)
        self._sync_uids.append(uid)
        return _syncspace.SyncSpace(kind, f"{what} {name!r} ({kind})", a.start, stride, npages, capacity, uid)

    def _sync_object(self, cls: str, args: list, home, space) -> int:
        if not isinstance(home, int) or isinstance(home, bool) or not 0 <= home < self.nnodes:
            raise ValueError(f"home must be a node id from 0 to {self.nnodes - 1}, not {home!r}")
        ref = current_cos().create(f"tornado_dsm._syncserver:{cls}", *args, policy="singleton",
                                   name=space.name, home=home)
        return ref.oid

    def _live(self, nodes) -> list:
        """The chosen node ids; "all" leaves out the lost nodes."""
        chosen = _runner.check_nodes(nodes, self.nnodes, "on")
        if nodes == "all":
            lost = self.lost_nodes()
            chosen = [n for n in chosen if n not in lost]
        return chosen

    def _window(self) -> tuple[int, int]:
        return self.config.base, self.config.base + self.config.size

    # Admission has one rule: an array is admitted when it fits the window (the VM
    # then says whether the window has room).  memory_per_node is not an admission
    # limit but a frame budget, a cache: a node over it evicts (read copies
    # first, then owned pages back to the backing store: the file, or the
    # anonymous swap of the array's COR), so arrays larger than every node's
    # memory together work, one or many.
    def _check_room(self, nbytes: int) -> None:
        if nbytes > self.config.size:
            raise MemoryError(f"{nbytes} bytes do not fit the {self.config.size}-byte DSM window; "
                              "pass a larger size= to Cluster")


def _on(on, nodes):
    """The node choice of run(): ``on``, or the deprecated ``nodes`` keyword."""
    if nodes is None:
        return on
    if on != "all":
        raise TypeError("run() takes on= (the nodes to run on), not both on= and its old name nodes=")
    warnings.warn("run(nodes=...) is now run(on=...): `nodes` read like a count (as in "
                  "Cluster(nodes=3)) but names node ids", DeprecationWarning, stacklevel=3)
    return nodes


def _name(fn) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _choice(what: str, value, accepted) -> str:
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(accepted)}")
    return value
