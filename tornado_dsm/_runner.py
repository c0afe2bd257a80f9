"""Running user functions on nodes' threads, with shared arrays passed by address.

A job is the function and its arguments pickled with cloudpickle, so a
function defined anywhere — a module, the main script, a notebook, the REPL,
``python -c``, a closure or a lambda — reaches the nodes: importable ones by
reference, the others by value.  A shared array anywhere in the job (an
argument, inside a list, or captured by a closure) travels by address and is
rebuilt on the node as a view of its own application view, so every node
works on the same memory.  Results and exceptions come back pickled
(connections between nodes are authenticated before anything is unpickled).
"""

from __future__ import annotations

import io
import pickle
import threading
import time
import traceback

import cloudpickle
import numpy as np

from tornado_dsm.kernel import PAGE, atomic, current_cos, trap, view_at

_local = threading.local()

ANSWER_GRACE = 2.0   # seconds a node may take to answer after its threads' time limit
_LATE = ("late",)    # the outcome of a thread still running at the limit


def current_node() -> int:
    """The node this code runs on (0 is the process that made the cluster)."""
    return current_cos().node


def current_thread() -> int:
    """The thread index of this call within its node's `Cluster.run` (0 outside run)."""
    return getattr(_local, "thread", 0)


def check_nodes(nodes, nnodes: int, name: str = "nodes") -> list:
    """Node ids chosen by ``nodes`` ("all", an id, or a list of ids); ``name``: the
    argument's name in the error."""
    if nodes == "all":
        return list(range(nnodes))
    chosen = [nodes] if isinstance(nodes, int) and not isinstance(nodes, bool) else nodes
    if not isinstance(chosen, (list, tuple)) or not chosen or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n < nnodes for n in chosen):
        raise ValueError(f"{name} must be 'all', a node id or a list of ids from 0 to {nnodes - 1}, "
                         f"not {nodes!r}")
    return list(chosen)


def pack(fn, args, arrays: dict, window: tuple | None = None, check=None) -> bytes:
    """``(fn, args)`` pickled by cloudpickle, with every shared array in them by address.

    ``arrays``: {start: (start, npages)} of the live arrays; ``window``:
    (base, end) of the DSM window — any array on window memory travels by
    address (a view of a freed array then faults on the node that touches
    it, as it would here), never as a copy; ``check(array)`` may refuse one.
    """
    if not callable(fn):
        raise TypeError(f"run() needs a callable, not {type(fn).__name__} {fn!r}")
    buffer = io.BytesIO()
    _JobPickler(buffer, arrays, window, check).dump((fn, list(args)))
    return buffer.getvalue()


class _JobPickler(cloudpickle.Pickler):
    """cloudpickle's pickler, with shared arrays reduced to their address."""

    def __init__(self, file, arrays: dict, window, check) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._arrays, self._window, self._check = arrays, window, check

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray) and _is_shared(obj, self._arrays, self._window):
            if self._check is not None:
                self._check(obj)
            return _shared_view, (obj.__array_interface__["data"][0], obj.shape, obj.dtype.str, obj.strides)
        return super().reducer_override(obj)


def _is_shared(value: np.ndarray, arrays: dict, window) -> bool:
    address = value.__array_interface__["data"][0]
    if window is not None and window[0] <= address < window[1]:
        return True
    return any(start <= address < start + npages * PAGE for start, npages in arrays.values())


def _shared_view(address: int, shape, dtype: str, strides) -> np.ndarray:
    """On the node: the shared array as a view of this node's application view."""
    return view_at(address, tuple(shape), dtype, tuple(strides))


_runs: dict = {}   # run id -> its worker threads on this node (while they run)


def interrupt_run(run_id: int) -> int:
    """On a node: raise KeyboardInterrupt in every thread of run ``run_id`` still
    running here (outside the fault handler: see kernel trap.interrupt_thread),
    and wake the threads waiting on words so they see it; returns how many."""
    threads = [t for t in _runs.get(run_id, ()) if t.is_alive()]
    for t in threads:
        trap.interrupt_thread(t.ident)
    atomic.wake_all_waiters()
    return len(threads)


def run_job(job: bytes, threads: int, limit: float | None = None, run_id: int = 0) -> list:
    """On a node: run the job on ``threads`` threads; [("ok", pickled) | ("error", ...)
    | ("late",)] per thread.  ``limit``: seconds to wait for the threads; one still
    running then is reported late and left to run (daemon: it cannot hold the node's exit)."""
    fn, args = pickle.loads(job)
    outcomes: list = [None] * threads

    def body(t: int) -> None:
        _local.thread = t
        try:
            outcomes[t] = ("ok", pickle.dumps(fn(*args)))
        except BaseException as exc:  # reported to the caller with node and thread
            outcomes[t] = ("error", _pickle_exc(exc), traceback.format_exc())

    workers = [threading.Thread(target=body, args=(t,), name=f"tornado_dsm-run-{t}", daemon=True)
               for t in range(threads)]
    _runs[run_id] = workers
    try:
        for w in workers:
            w.start()
        deadline = None if limit is None else time.monotonic() + limit
        for w in workers:
            w.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
    finally:
        _runs.pop(run_id, None)
    return [_LATE if o is None else o for o in outcomes]


def _late(nodes: list, outcomes: list) -> list:
    """'node N (threads [..] still running)' / 'node N (no answer: ...)' for each late node."""
    late = []
    for node, out in zip(nodes, outcomes):
        if isinstance(out, TimeoutError):
            late.append(f"node {node} (no answer: stopped or overloaded)")
        elif not isinstance(out, BaseException):
            threads = [t for t, o in enumerate(out) if o == _LATE]
            if threads:
                late.append(f"node {node} (threads {threads} still running)")
    return late


def _pickle_exc(exc: BaseException) -> bytes:
    if isinstance(exc, KeyboardInterrupt):   # the trap's interrupt class is not importable
        exc = KeyboardInterrupt(*exc.args)
    try:
        return pickle.dumps(exc)
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def shows_interrupt(outcomes: list) -> bool:
    """Whether some node or thread of a run ended with KeyboardInterrupt (`unpack_results`
    then raises it, naming where)."""
    for per_thread in outcomes:
        if isinstance(per_thread, BaseException):
            if isinstance(per_thread, KeyboardInterrupt):
                return True
        elif any(o[0] == "error" and isinstance(pickle.loads(o[1]), KeyboardInterrupt) for o in per_thread):
            return True
    return False


def unpack_results(nodes: list, outcomes: list, fn=None, limit: float | None = None) -> list:
    """Results ordered by node then thread.  Late threads or nodes (``limit``)
    are one TimeoutError naming them all; else the first failure is re-raised, named."""
    late = _late(nodes, outcomes)
    if late:
        name = getattr(fn, "__qualname__", repr(fn))
        raise TimeoutError(f"run of {name} did not finish within {limit} s: {'; '.join(late)}")
    results = []
    for node, per_thread in zip(nodes, outcomes):
        if isinstance(per_thread, BaseException):
            raise per_thread
        for t, outcome in enumerate(per_thread):
            if outcome[0] == "error":
                exc = pickle.loads(outcome[1])
                exc.add_note(f"raised on node {node}, thread {t}; its traceback there:\n{outcome[2]}")
                raise exc
            results.append(pickle.loads(outcome[1]))
    return results
