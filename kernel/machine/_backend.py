"""Fault backends: how a window's protections reach the page tables.

* ``mprotect``: the application view's protections are mprotect-ed page
  runs and a fault is a SIGSEGV.  Works everywhere, but every boundary
  between pages of different protection splits a kernel mapping, so a node
  holds at most about vm.max_map_count / 2 pages whose protections
  alternate (the HAT then sheds its mappings and the faulting thread gets
  `MemoryLayoutError`), and every change takes the address-space lock for
  writing.
* ``uffd``: the view stays one read-write mapping registered with a
  userfaultfd (missing, minor and write-protect modes, SIGBUS delivery); a
  fault is a SIGBUS in the faulting thread and protections are page-table
  entries (_uffd.c).  No mapping is ever split; needs Linux with minor
  faults and write protection on shmem, and permission to use userfaultfd
  (root, or user-mode-only faults, which this project asks for first).
* ``auto``: ``uffd`` where the kernel allows it, else ``mprotect``.

The default is the environment variable TORNADO_DSM_BACKEND if set (so a
whole test run, node processes included, can be switched), else
DEFAULT_BACKEND: ``auto`` (the whole test suite passes on both backends).
"""

from __future__ import annotations

import errno
import functools
import os

import attrs

from ._errors import MemoryLayoutError
from ._lib import ffi, lib

BACKENDS = ("auto", "uffd", "mprotect")
DEFAULT_BACKEND = "auto"
ENV_VAR = "TORNADO_DSM_BACKEND"

# The features the uffd backend enables, with what each one is for.
FEATURES = {
    "UFFD_FEATURE_SIGBUS": (lib.UFFD_FEATURE_SIGBUS, "signal the faulting thread (SIGBUS) instead of queueing"),
    "UFFD_FEATURE_MINOR_SHMEM": (lib.UFFD_FEATURE_MINOR_SHMEM, "minor faults on shmem"),
    "UFFD_FEATURE_WP_HUGETLBFS_SHMEM": (lib.UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
                                        "write protection on shmem"),
}


@attrs.frozen
class UffdSupport:
    """Whether this process may use the uffd backend, and if not, why."""

    ok: bool
    reason: str = ""


def default_backend() -> str:
    """The backend a NodeMemory gets when none is named: $TORNADO_DSM_BACKEND or DEFAULT_BACKEND."""
    return os.environ.get(ENV_VAR) or DEFAULT_BACKEND


def check_backend(backend: str, what: str = "backend") -> str:
    """``backend`` if it is one of BACKENDS, else ValueError naming them."""
    if backend not in BACKENDS:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
    return backend


def resolve(backend: str | None) -> tuple[str, str]:
    """(the backend to use, "uffd" or "mprotect"; a note on how ``auto`` chose).

    ``None`` means `default_backend`.  An explicit ``uffd`` the kernel
    refuses is a MemoryLayoutError naming what is missing.
    """
    if backend is None:
        backend = check_backend(default_backend(), f"${ENV_VAR}")
    check_backend(backend)
    if backend == "mprotect":
        return "mprotect", ""
    support = uffd_support()
    if support.ok:
        return "uffd", "auto: userfaultfd available" if backend == "auto" else ""
    if backend == "auto":
        return "mprotect", f"auto: {support.reason}"
    raise MemoryLayoutError(errno.ENOTSUP, f"backend='uffd' is not available here: {support.reason}; "
                                           "use backend='mprotect' or 'auto'")


@functools.cache
def uffd_support() -> UffdSupport:
    """Probe once per process: a userfaultfd can be opened, has every feature
    of FEATURES, and UFFDIO_CONTINUE takes UFFDIO_CONTINUE_MODE_WP."""
    fd = lib.td_uffd_open()
    if fd < 0:
        return UffdSupport(False, _open_failure(-fd))
    try:
        available = ffi.new("uint64_t *")
        rc = lib.td_uffd_api(fd, lib.TD_UFFD_FEATURES, available)
        if rc == -errno.EINVAL:
            return UffdSupport(False, _missing_features())
        if rc:
            return UffdSupport(False, f"UFFDIO_API failed: {os.strerror(-rc)}")
        wp = lib.td_uffd_probe_continue_wp(fd)
        if wp < 0:
            return UffdSupport(False, f"registering a shmem page failed: {os.strerror(-wp)}")
        if not wp:
            return UffdSupport(False, "this kernel's UFFDIO_CONTINUE lacks UFFDIO_CONTINUE_MODE_WP "
                                      "(needed to map a page read-only atomically)")
        return UffdSupport(True)
    finally:
        lib.close(fd)


def open_uffd(base: int, size: int) -> int:
    """A userfaultfd with the backend's features, registered over [base, base + size)."""
    fd = lib.td_uffd_open()
    if fd < 0:
        raise MemoryLayoutError(-fd, _open_failure(-fd))
    available = ffi.new("uint64_t *")
    rc = lib.td_uffd_api(fd, lib.TD_UFFD_FEATURES, available)
    if rc == 0:
        rc = lib.td_uffd_register(fd, base, size)
    if rc:
        lib.close(fd)
        raise MemoryLayoutError(-rc, f"userfaultfd set-up of the window at {base:#x} failed: {os.strerror(-rc)}")
    return fd


def _open_failure(err: int) -> str:
    if err == errno.ENOSYS:
        return "this kernel has no userfaultfd (CONFIG_USERFAULTFD)"
    if err == errno.EPERM:
        return ("userfaultfd is not permitted (vm.unprivileged_userfaultfd is 0, user-mode-only "
                "faults were refused, and /dev/userfaultfd is not accessible)")
    return f"userfaultfd() failed: {os.strerror(err)}"


def _missing_features() -> str:
    fd = lib.td_uffd_open()
    if fd < 0:
        return _open_failure(-fd)
    try:
        available = ffi.new("uint64_t *")
        lib.td_uffd_api(fd, 0, available)
        missing = [f"{name} ({why})" for name, (bit, why) in FEATURES.items() if not available[0] & bit]
    finally:
        lib.close(fd)
    return "this kernel's userfaultfd lacks " + ", ".join(missing or ["a requested feature"])
