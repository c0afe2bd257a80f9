"""Loads the compiled C core, or explains how to get it."""

try:
    from ._core import ffi, lib  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised on broken installs only
    raise ImportError(
        "tornado_dsm's compiled core (tornado_dsm.kernel.machine._core) is missing or broken "
        f"({exc}). It needs a C compiler and the Python headers (e.g. gcc and "
        "python3-dev); rebuild it with:  python3 -m pip install -e .  "
        "(from the project root)"
    ) from exc

PAGE = 4096
