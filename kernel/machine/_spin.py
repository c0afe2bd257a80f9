"""Bounded polling of a file descriptor with the GIL released (see _spin.c)."""

from ._lib import lib


def spin_readable(fd: int, seconds: float) -> bool:
    """Whether ``fd`` became readable (or reports an error) within ``seconds`` of
    polling, the CPU yielded between polls; never blocks for longer."""
    return bool(lib.td_spin_readable(fd, int(seconds * 1e9)))
