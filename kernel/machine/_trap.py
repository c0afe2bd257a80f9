"""The trap, Python side: installation, windows and the fault callback.

A *window* is a range of pages whose SIGSEGVs the trap handles.  Each window
has a fault handler: a callable ``handler(address, access)`` run in the
faulting thread, where access is READ or WRITE.  It resolves the fault (maps
the page, usually through a HAT) and returns, or refuses it by raising
`FaultRefused(reason)`.  A refused fault becomes a `SegmentationFault` raised
in the faulting thread once it is back in Python (see _trap.c, step 5).  A
`MemoryLayoutError` from a handler (the mprotect backend's map limit) is an
expected failure too: that very exception is raised in the faulting thread
the same way, once, with no traceback printed.  Any other exception from a
handler is a bug: it is printed and the fault is refused with that reason,
so the process goes on.

The kernel-only pager (_pager.py) is one such handler; the Process object of
the VM layer replaces it on the same hook.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import traceback
from collections.abc import Callable

from ._errors import DSMInternalError, MemoryLayoutError, SegmentationFault
from ._lib import PAGE, ffi, lib

READ = 1
WRITE = 2
ACCESS_NAMES = {READ: "read", WRITE: "write"}

MODE_PYTHON = 0
MODE_FLOOR = 1  # resolved in C: the benchmark's floor

FaultHandler = Callable[[int, int], None]


class FaultRefused(Exception):
    """Raised by a fault handler that will not resolve a fault."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# The refused fault of each thread that has not been raised yet.  The trap
# records it here (in the faulting thread) and arms an asynchronous exception;
# CPython instantiates _AsyncSegmentationFault with no arguments in that same
# thread when it raises, which is the moment the scratch pages go away.
_pending = threading.local()


def record_refused_fault(address: int, access: str, node: int, reason: str) -> None:
    """Remember the first refused fault of this thread until it is raised."""
    if getattr(_pending, "fault", None) is None:
        _pending.fault = (address, access, node, reason)


def record_failed_fault(exc: BaseException) -> None:
    """Remember an expected failure of this thread's fault (raised as itself)."""
    if getattr(_pending, "fault", None) is None:
        _pending.fault = exc


class _AsyncSegmentationFault(SegmentationFault):
    """The form the trap arms with PyThreadState_SetAsyncExc (no arguments);
    _trap.c binds this class by name (td_trap_bind_python).  CPython builds
    it with no arguments in the faulting thread; when the pending fault is an
    exception of its own (record_failed_fault), ``__new__`` returns that one,
    and CPython raises whatever exception instance the class call returned."""

    def __new__(cls, *args):
        fault = getattr(_pending, "fault", None)
        if not args and isinstance(fault, BaseException):
            _pending.fault = None
            restore_scratch()
            return fault
        return super().__new__(cls, *args)

    def __init__(self, *args) -> None:
        if args:  # unpickling or an explicit construction
            super().__init__(*args)
            return
        fault = getattr(_pending, "fault", None)
        _pending.fault = None
        restore_scratch()
        if fault is None:
            raise DSMInternalError("_AsyncSegmentationFault", "raised with no pending fault")
        super().__init__(*fault)


# Shown as tornado_dsm.SegmentationFault in tracebacks.
_AsyncSegmentationFault.__name__ = _AsyncSegmentationFault.__qualname__ = "SegmentationFault"
_AsyncSegmentationFault.__module__ = "tornado_dsm"


# slot -> (handler, node).  Read by the callback without a lock: assignment of
# a list item is atomic under the GIL and slots are set before registration.
_handlers: list[tuple[FaultHandler, int] | None] = [None] * 32
_ranges: dict[int, tuple[int, int]] = {}  # slot -> (base, end)
_install_lock = threading.Lock()


class _AsyncInterrupt(KeyboardInterrupt):
    """The interrupt `interrupt_thread` arms in a thread (_interrupt.c binds it by name)."""


_AsyncInterrupt.__name__ = _AsyncInterrupt.__qualname__ = "KeyboardInterrupt"
_AsyncInterrupt.__module__ = "builtins"


def _callback_error(exc_type, exc, tb) -> int:
    """td_py_fault's onerror: an exception before its body ran.  An interrupt armed
    just before the fault fires there: retry the fault and arm it again afterwards."""
    if issubclass(exc_type, KeyboardInterrupt):
        lib.td_interrupt_defer()
        return 2
    traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
    return 1


@ffi.def_extern(error=1, onerror=_callback_error)
def td_py_fault(window: int, addr: int, access: int) -> int:
    """C -> Python: resolve one fault; 0 resolved, 1 refused."""
    entry = _handlers[window]
    if entry is None:
        record_refused_fault(addr, ACCESS_NAMES[access], -1, "window has no fault handler")
        return 1
    handler, node = entry
    try:
        handler(addr, access)
        return 0
    except FaultRefused as exc:
        record_refused_fault(addr, ACCESS_NAMES[access], node, exc.reason)
    except MemoryLayoutError as exc:  # expected (the map limit): raised as itself, no traceback
        record_failed_fault(exc.with_traceback(None))
    except BaseException as exc:  # a bug in a handler must not kill the process
        traceback.print_exc(file=sys.stderr)
        record_refused_fault(addr, ACCESS_NAMES[access], node, f"fault handler raised {exc!r}")
    return 1


def interrupt_thread(ident: int) -> None:
    """Raise KeyboardInterrupt in thread ``ident`` once it runs Python code outside
    the fault handler (never inside it: see _interrupt.c).  A thread blocked in
    C (a sleep, a lock) gets it when it comes back to Python."""
    if lib.td_interrupt_thread(ident):
        _set_async_exc(ctypes.c_ulong(ident), ctypes.py_object(_AsyncInterrupt))


def defer_interrupt_if_faulting() -> bool:
    """For a SIGINT handler: if this thread is inside the fault handler, keep the
    interrupt for when it leaves (True); else False (raise it now)."""
    if lib.td_in_handler():
        lib.td_interrupt_defer()
        return True
    return False


_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)


def install() -> None:
    """Install the SIGSEGV and SIGBUS handler, or take them back if another replaced it.

    Idempotent.  Faults outside every window go to the previous handler.
    """
    with _install_lock:
        if lib.td_trap_bind_python() != 0 or lib.td_interrupt_bind() != 0:
            raise DSMInternalError("trap.install", "cannot bind the SegmentationFault or interrupt class")
        rc = lib.td_trap_install()
        if rc != 0:
            raise OSError(-rc, "sigaction(SIGSEGV/SIGBUS) failed")


def uninstall() -> None:
    """Give SIGSEGV and SIGBUS back to the handlers that had them before `install`."""
    with _install_lock:
        rc = lib.td_trap_uninstall()
        if rc != 0:
            raise OSError(-rc, "sigaction(SIGSEGV/SIGBUS) failed")


def is_installed() -> bool:
    """True if the trap's handler is the one SIGSEGV and SIGBUS reach now."""
    return bool(lib.td_trap_is_current())


def register_window(base: int, npages: int, prot_array, memfd: int, node: int,
                    handler: FaultHandler, mode: int = MODE_PYTHON, backend: int = 0, uffd: int = -1) -> int:
    """Register [base, base + npages pages) with its handler; returns the slot.

    ``prot_array`` is the HAT's uint8 per-page protection array; the C side
    reads it (portable decode, scratch restore) and must outlive the window.
    ``backend``: lib.TD_BACKEND_MPROTECT (0) or lib.TD_BACKEND_UFFD, whose
    ``uffd`` is already registered over the window.
    """
    install()
    ptr = ffi.cast("uint8_t *", ffi.from_buffer(prot_array))
    with _install_lock:
        slot = lib.td_window_register(base, npages, ptr, memfd, mode, node, backend, uffd)
        if slot < 0:
            raise MemoryError("too many tornado_dsm windows in this process (at most 32)")
        _handlers[slot] = (handler, node)
        _ranges[slot] = (base, base + npages * PAGE)
    return slot


def unregister_window(slot: int) -> None:
    """Stop handling faults in a window (they chain to the previous handler)."""
    lib.td_window_unregister(slot)
    _handlers[slot] = None
    _ranges.pop(slot, None)


def in_window(address: int, size: int = 1) -> bool:
    """True if [address, address + size) lies inside one registered window."""
    return any(b <= address and address + size <= e for b, e in list(_ranges.values()))


def set_handler(slot: int, handler: FaultHandler) -> None:
    """Replace a window's fault handler (the Process object takes over here)."""
    entry = _handlers[slot]
    if entry is None:
        raise ValueError(f"window slot {slot} is not registered")
    _handlers[slot] = (handler, entry[1])


def set_mode(slot: int, mode: int) -> None:
    """MODE_PYTHON (the handler runs) or MODE_FLOOR (C grants read-write)."""
    if mode not in (MODE_PYTHON, MODE_FLOOR):
        raise ValueError(f"mode must be MODE_PYTHON (0) or MODE_FLOOR (1), not {mode!r}")
    lib.td_window_set_mode(slot, mode)


def set_portable_decode(on: bool) -> None:
    """Decode read/write the portable way (grant read first, a write faults again)."""
    lib.td_trap_set_portable(1 if on else 0)


def restore_scratch() -> int:
    """Put real frames back under this thread's scratch pages; returns how many."""
    n = lib.td_trap_restore_scratch()
    if n < 0:
        raise OSError(-n, "cannot restore the mapping under a refused fault")
    return n


def check() -> None:
    """Deliver this thread's pending SegmentationFault now, if there is one.

    A refused fault is raised at the thread's next eval-breaker check: the
    next call or loop iteration after the faulting bytecode.  Calling check()
    right after an access pins the exception to that statement.
    """
    # Entering this function's frame is itself the check (CPython's RESUME).


def touch(address: int, count: int, stride: int, write: int = 0, latencies=None) -> int:
    """Touch ``count`` bytes ``stride`` apart from C with the GIL released.

    write=0 reads, write=v stores the byte v.  ``latencies`` (uint64 numpy
    array of length count, optional) receives each touch's time in ns.
    """
    ns = ffi.NULL if latencies is None else ffi.cast("uint64_t *", ffi.from_buffer(latencies))
    return lib.td_touch(address, count, stride, write, ns)


def touch_from_foreign_thread(address: int, write: int = 0) -> int:
    """Touch one byte from a new C thread that has no Python thread state
    (as a BLAS/OpenMP worker would) and wait for it; returns the byte read."""
    result = lib.td_touch_foreign(address, write)
    if result < 0:
        raise OSError("pthread_create failed")
    return result

