"""Node memory: one sparse memfd seen through two views (README,
"Node memory: one file, two views").

* The application view is mapped MAP_SHARED at the window's fixed base, the
  same on every node, with MAP_FIXED_NOREPLACE so it never silently replaces
  something already there.  Its protections (the HAT) are what faults:
  mprotect-ed page runs (backend "mprotect": the view is mapped PROT_NONE),
  or page-table entries of one read-write mapping registered with a
  userfaultfd (backend "uffd"; _backend.py, _uffd.c).
* The kernel view maps the same file read-write at an address the OS picks.
  The runtime fills and reads frames through it, so a page is complete before
  the application view lets anyone see it.

Frame of page v = file offset v * PAGE.  A hole in the file reads as zeros
(zero fill is free) and `release` punches frames back into holes.
"""

from __future__ import annotations

import errno
import gc
import os

import numpy as np

from ._errors import DSMInternalError, MemoryLayoutError
from ._hat import HAT
from ._lib import PAGE, ffi, lib
from . import _backend, _trap, _waitq

# Far from the heap (0x55.., 0x56..), the mmap area and stacks (0x7f..): 32 TiB.
DEFAULT_BASE = 0x2000_0000_0000
DEFAULT_SIZE = 1 << 30
USER_SPACE_END = 0x7FFF_FFFF_F000  # no window may pass it (x86-64's 47-bit user space, less a page)
_MAP_FAILED = ffi.cast("void *", -1)


class NodeMemory:
    """The DSM window of one node: frames, two views, a HAT and a fault hook.

    ``handler(address, access)`` resolves faults in the window (see _trap);
    it can be replaced later with `set_handler`.  ``backend``: "mprotect",
    "uffd" or "auto" (None: $TORNADO_DSM_BACKEND, else "auto"; see
    _backend.py); the one taken is ``self.backend`` and how ``auto`` chose
    is ``self.backend_note``.  Use as a context manager or call `close`.
    """

    def __init__(self, base: int = DEFAULT_BASE, size: int = DEFAULT_SIZE, node: int = 0,
                 handler=None, mode: int = _trap.MODE_PYTHON, backend: str | None = None) -> None:
        _check_layout(base, size)
        self.backend, self.backend_note = _backend.resolve(backend)
        self.base, self.size, self.node = base, size, node
        self.npages = size // PAGE
        self.memfd = os.memfd_create(f"tornado_dsm-node{node}", os.MFD_CLOEXEC)
        self._app = self._kernel = None
        self.uffd = -1
        uffd = self.backend == "uffd"
        try:
            os.ftruncate(self.memfd, size)
            self._app = _map_application_view(base, size, self.memfd, writable=uffd)
            if uffd:  # registered before anything can touch the view
                self.uffd = _backend.open_uffd(base, size)
            self._kernel = _map_kernel_view(size, self.memfd)
            self.hat = HAT(base, self.npages, self.backend)
            self.kernel_view = np.frombuffer(ffi.buffer(self._kernel, size), dtype=np.uint8)
            self.slot = _trap.register_window(base, self.npages, self.hat.prot, self.memfd,
                                              node, handler or _no_handler, mode,
                                              lib.TD_BACKEND_UFFD if uffd else lib.TD_BACKEND_MPROTECT,
                                              self.uffd)
            self.hat.bind(self.slot)
        except BaseException:
            self._unmap()
            raise

    def __enter__(self) -> "NodeMemory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def end(self) -> int:
        """First address past the window."""
        return self.base + self.size

    def frame(self, page: int) -> np.ndarray:
        """The kernel-view bytes of a page's frame (always read-write)."""
        return self.kernel_view[page * PAGE:(page + 1) * PAGE]

    def write_frame(self, page: int, data) -> None:
        """Fill a page's frame with ``data`` (PAGE bytes) by ``pwrite`` on the
        memfd: a frame that is a hole is allocated inside the kernel, with no
        page fault on the kernel view (about half the cost of a copy there)."""
        n = os.pwrite(self.memfd, data, page * PAGE)
        if n != PAGE:
            raise DSMInternalError("NodeMemory.write_frame", f"page {page}: wrote {n} of {PAGE} bytes")

    def array(self, offset: int, shape, dtype) -> np.ndarray:
        """A numpy array on the application view at base + offset (it faults)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if offset < 0 or offset + nbytes > self.size:
            raise ValueError(f"[{offset}, {offset + nbytes}) does not fit the {self.size}-byte window")
        buf = ffi.buffer(ffi.cast("char *", self.base + offset), nbytes)
        return np.frombuffer(buf, dtype=dtype).reshape(shape)

    def release(self, first: int, count: int = 1) -> None:
        """Unmap a run of pages and give their frames back (they read as zeros after)."""
        self.hat.unmap(first, count)
        self._punch(first, count)

    def discard(self, first: int, count: int = 1) -> None:
        """Give back the frames of a run the HAT already maps with no access
        (the fault path unmaps first, then frees: one mprotect, not two).
        A mapped page here is a caller's bug: DSMInternalError."""
        if not self.hat.unmapped(first, count):
            raise DSMInternalError("NodeMemory.discard", f"pages [{first}, {first + count}) are still mapped")
        self._punch(first, count)

    def _punch(self, first: int, count: int) -> None:
        flags = lib.FALLOC_FL_PUNCH_HOLE | lib.FALLOC_FL_KEEP_SIZE
        if lib.fallocate(self.memfd, flags, first * PAGE, count * PAGE) != 0:
            raise OSError(ffi.errno, f"fallocate(PUNCH_HOLE) of pages [{first}, {first + count}) failed")

    def resident_pages(self) -> int:
        """Frames that hold data (not holes), from the memfd's allocated blocks."""
        return os.fstat(self.memfd).st_blocks * 512 // PAGE

    def set_handler(self, handler) -> None:
        """Replace the fault handler of this window."""
        _trap.set_handler(self.slot, handler)

    def close(self) -> None:
        """Unregister the window, unmap both views, close the memfd.  Idempotent."""
        if getattr(self, "slot", None) is not None:
            _trap.unregister_window(self.slot)
            self.slot = None
            _waitq.wake_pages(self.base, self.npages)  # their next read finds no window
        self._unmap()

    def _unmap(self) -> None:
        if self._app is not None:
            lib.munmap(self._app, self.size)  # also ends its userfaultfd registration
            self._app = None
        if self.uffd >= 0:
            lib.close(self.uffd)
            self.uffd = -1
        if self._kernel is not None:
            self.kernel_view = None
            lib.munmap(self._kernel, self.size)
            self._kernel = None
        if self.memfd is not None:
            os.close(self.memfd)
            self.memfd = None


def _no_handler(address: int, access: int) -> None:
    raise _trap.FaultRefused("no fault handler is installed on this window")


def _check_layout(base: int, size: int) -> None:
    if base <= 0 or base % PAGE:
        raise ValueError(f"base {base:#x} must be a positive multiple of the page size ({PAGE})")
    if size <= 0 or size % PAGE:
        raise ValueError(f"size {size} must be a positive multiple of the page size ({PAGE})")
    if base + size > USER_SPACE_END:
        raise ValueError(f"window [{base:#x}, {base + size:#x}) passes the end of user space (0x7ffffffff000)")


def _map_application_view(base: int, size: int, fd: int, writable: bool = False):
    """mprotect backend: PROT_NONE (the HAT opens page runs); uffd: read-write
    (the userfaultfd registration makes every page fault until the HAT maps it)."""
    flags = lib.MAP_SHARED | lib.MAP_FIXED_NOREPLACE | lib.MAP_NORESERVE
    prot = lib.PROT_READ | lib.PROT_WRITE if writable else lib.PROT_NONE
    p = lib.mmap(ffi.cast("void *", base), size, prot, flags, fd, 0)
    if p == _MAP_FAILED and ffi.errno == errno.EEXIST:
        # An earlier window at this base stays mapped while an array on it lives; one
        # kept only by a reference cycle (a traceback's frame, say) goes at a collection.
        gc.collect()
        p = lib.mmap(ffi.cast("void *", base), size, prot, flags, fd, 0)
    if p == _MAP_FAILED:
        err = ffi.errno
        if err == errno.EEXIST:
            raise MemoryLayoutError(
                errno.EEXIST,
                f"the DSM window [{base:#x}, {base + size:#x}) collides with a mapping "
                "already in this process (an array of an earlier cluster still alive keeps its "
                "window mapped); free it, or choose another address with the base= option",
            )
        raise MemoryLayoutError(err, f"mmap of the application view at {base:#x} failed: {os.strerror(err)}")
    if int(ffi.cast("uintptr_t", p)) != base:  # a kernel without MAP_FIXED_NOREPLACE
        lib.munmap(p, size)
        raise MemoryLayoutError(errno.EEXIST, f"the window could not be placed at {base:#x}; choose another base=")
    return p


def _map_kernel_view(size: int, fd: int):
    flags = lib.MAP_SHARED | lib.MAP_NORESERVE
    p = lib.mmap(ffi.NULL, size, lib.PROT_READ | lib.PROT_WRITE, flags, fd, 0)
    if p == _MAP_FAILED:
        raise MemoryLayoutError(ffi.errno, "mmap of the kernel view failed")
    return p


def view_at(address: int, shape, dtype, strides=None) -> np.ndarray:
    """A numpy array on the memory at ``address`` (a window's application view:
    touching it faults like any access).  ``strides`` default to C order."""
    dtype = np.dtype(dtype)
    shape = tuple(shape)
    if strides is None:
        strides = _c_strides(shape, dtype.itemsize)
    span = 0 if 0 in shape else sum((d - 1) * s for d, s in zip(shape, strides)) + dtype.itemsize
    buf = ffi.buffer(ffi.cast("char *", address), max(span, 1))
    return np.ndarray(shape, dtype, buffer=buf, strides=strides)


def _c_strides(shape: tuple, itemsize: int) -> tuple:
    strides, step = [], itemsize
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))
