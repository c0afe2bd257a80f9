"""Running user functions on nodes' threads, with shared arrays passed by address.

A job is (function path, packed args).  Shared arrays inside the args are
replaced by `ArrayRef`s (address, shape, dtype, strides) and rebuilt on the
node as views of its own application view, so every node works on the same
memory.  Results and exceptions come back pickled (connections between nodes
are authenticated before anything is unpickled).
"""

from __future__ import annotations

import importlib
import pickle
import threading
import traceback

import attrs
import numpy as np

from tornado_dsm.kernel import PAGE, current_cos, view_at

_local = threading.local()


@attrs.frozen
class ArrayRef:
    """A shared array by address: rebuilt as a view on the receiving node."""

    address: int
    shape: tuple
    dtype: str
    strides: tuple

    def view(self) -> np.ndarray:
        """The array on this node's application view (same address)."""
        return view_at(self.address, self.shape, self.dtype, self.strides)


def current_node() -> int:
    """The node this code runs on (0 is the process that made the cluster)."""
    return current_cos().node


def current_thread() -> int:
    """The thread index of this call within its node's `Cluster.run` (0 outside run)."""
    return getattr(_local, "thread", 0)


def check_nodes(nodes, nnodes: int) -> list:
    """Node ids chosen by ``nodes`` ("all", an id, or a list of ids)."""
    if nodes == "all":
        return list(range(nnodes))
    chosen = [nodes] if isinstance(nodes, int) and not isinstance(nodes, bool) else nodes
    if not isinstance(chosen, (list, tuple)) or not chosen or not all(
            isinstance(n, int) and not isinstance(n, bool) and 0 <= n < nnodes for n in chosen):
        raise ValueError(f"nodes must be 'all', a node id or a list of ids from 0 to {nnodes - 1}, not {nodes!r}")
    return list(chosen)


def pack(fn, args, arrays: dict, window: tuple | None = None, check=None) -> tuple:
    """(module, qualname, pickled args) with shared arrays replaced by ArrayRefs.

    ``arrays``: {start: (start, npages)} of the live arrays; ``window``:
    (base, end) of the DSM window — any array on window memory travels by
    address (a view of a freed array then faults on the node that touches
    it, as it would here), never as a copy; ``check(array)`` may refuse one.
    """
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not callable(fn) or module is None or "<" in qualname:
        raise TypeError(f"run() needs a module-level function (importable on every node), not {fn!r}")
    packed = [_ref(a, arrays, window, check) for a in args]
    return module, qualname, pickle.dumps(packed)


def _ref(value, arrays: dict, window, check):
    if not isinstance(value, np.ndarray):
        return value
    if check is not None:
        check(value)
    address = value.__array_interface__["data"][0]
    shared = window is not None and window[0] <= address < window[1]
    if not shared:
        shared = any(start <= address < start + npages * PAGE for start, npages in arrays.values())
    if shared:
        return ArrayRef(address, value.shape, value.dtype.str, value.strides)
    return value  # a private array: sent by value


def run_job(job: tuple, threads: int) -> list:
    """On a node: run the job on ``threads`` threads; [("ok", pickled) | ("error", ...)] per thread."""
    module, qualname, packed = job
    fn = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    args = [a.view() if isinstance(a, ArrayRef) else a for a in pickle.loads(packed)]
    outcomes: list = [None] * threads

    def body(t: int) -> None:
        _local.thread = t
        try:
            outcomes[t] = ("ok", pickle.dumps(fn(*args)))
        except BaseException as exc:  # reported to the caller with node and thread
            outcomes[t] = ("error", _pickle_exc(exc), traceback.format_exc())

    workers = [threading.Thread(target=body, args=(t,), name=f"tornado_dsm-run-{t}") for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return outcomes


def _pickle_exc(exc: BaseException) -> bytes:
    try:
        return pickle.dumps(exc)
    except Exception:
        return pickle.dumps(RuntimeError(f"{type(exc).__name__}: {exc}"))


def unpack_results(nodes: list, outcomes: list) -> list:
    """Results ordered by node then thread; the first failure re-raised, named."""
    results = []
    for node, per_thread in zip(nodes, outcomes):
        for t, outcome in enumerate(per_thread):
            if outcome[0] == "error":
                exc = pickle.loads(outcome[1])
                exc.add_note(f"raised on node {node}, thread {t}; its traceback there:\n{outcome[2]}")
                raise exc
            results.append(pickle.loads(outcome[1]))
    return results
