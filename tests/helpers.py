"""Helpers shared by the test modules (conftest.py holds only fixtures and session setup).

* ``fresh_base``: a window base in an address slot of its own;
* ``BACKEND_PARAMS``: the fault backends as pytest params (uffd skipped, with
  the kernel's reason, where it is refused); ``FAULT_SIGNAL``: each one's signal;
* ``process_gone``: whether a node process has exited;
* ``NNODES``: the size of conftest's ``three_nodes`` cluster;
* ``new_cluster``: a ``tornado_dsm.Cluster`` whose window is in a slot of its own;
* ``remote_calls``: remote PPCs counted cluster-wide on some objects;
* ``attempt``: runs on a node (module level, so nodes import it by name);
* ``run_isolated``: a ``clusterprogs`` program in a Python process of its own,
  killed with its nodes after a timeout (for runs that could hang);
* ``tool``, ``MPI_SKIP``, ``mpiexec``: this environment's commands, why the MPI
  tests cannot run here (None if they can), and an ``mpiexec`` job run to its end.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tornado_dsm as td
from tornado_dsm.kernel import DEFAULT_BASE
from tornado_dsm.kernel.machine import _backend

# ---- address space ------------------------------------------------------------------
# Every window a test creates gets its own 4 GiB slot above the default base,
# so a test that leaks a window cannot make the next one collide.
_next_slot = itertools.count(1)


def fresh_base() -> int:
    """A window base no other test in this process has used."""
    return DEFAULT_BASE + next(_next_slot) * (1 << 32)


# ---- fault backends -----------------------------------------------------------------

_UFFD = _backend.uffd_support()
BACKEND_PARAMS = [
    pytest.param("mprotect", id="mprotect"),
    pytest.param("uffd", id="uffd", marks=pytest.mark.skipif(
        not _UFFD.ok, reason=f"the uffd fault backend is refused here: {_UFFD.reason}")),
]
FAULT_SIGNAL = {"mprotect": signal.SIGSEGV, "uffd": signal.SIGBUS}  # what a fault is on each


# ---- node processes -----------------------------------------------------------------

NNODES = 3  # the size of the shared `three_nodes` cluster


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


# ---- VM clusters --------------------------------------------------------------------


def new_cluster(nodes: int, *, size: int = 16 << 20, **options) -> td.Cluster:
    """A ``tornado_dsm.Cluster`` of ``nodes`` nodes whose window (``size`` bytes) is in a
    fresh slot; ``options`` are the other ``Cluster`` arguments.  Use it as a context manager."""
    return td.Cluster(nodes=nodes, base=fresh_base(), size=size, **options)


def remote_calls(cluster, oids) -> int:
    """Remote PPCs made so far on the objects ``oids``, summed over every node of ``cluster``."""
    return sum(s.calls(kind="remote", oid=o) for s in cluster.ppc_statistics() for o in oids)


# ---- run on a node ------------------------------------------------------------------


def attempt(fn, *args):
    """("ok", result) or (exception type name, message): errors checked on the node itself."""
    try:
        return ("ok", fn(*args))
    except Exception as e:  # noqa: BLE001
        return (type(e).__name__, str(e))


# ---- a program that could hang, in a process of its own ----------------------------

_TESTS = os.path.dirname(os.path.abspath(__file__))


def run_in_session(argv: list, timeout: float, what: str, cwd: str = _TESTS):
    """Run ``argv`` in a session of its own (its node processes go with it); returns
    (proc, stdout, stderr).  Still running after ``timeout`` seconds: killed, group
    and all, and the test fails as a hang naming ``what`` with the output's tail."""
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{what} hung: still running after {timeout} s\n"
                             f"{out[-2000:]}\n{err[-2000:]}") from None
    return proc, out, err


def run_isolated(program: str, *args, timeout: float = 60.0):
    """Run ``clusterprogs.<program>(*args)`` in a new Python process (a session of
    its own, so its node processes go with it) and return what it returns
    (JSON-able).  A run still going after ``timeout`` seconds is killed, group and
    all, and fails the test as a hang; a run that raised fails with its stderr."""
    code = (f"import json, sys, clusterprogs; "
            f"print(json.dumps(clusterprogs.{program}(*json.loads(sys.argv[1]))))")
    proc, out, err = run_in_session([sys.executable, "-c", code, json.dumps(args)], timeout,
                                    f"{program}{args}", cwd=_TESTS)
    if proc.returncode != 0:
        raise AssertionError(f"{program}{args} exited with {proc.returncode}:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


# ---- MPI jobs ----------------------------------------------------------------------

def tool(name: str) -> str | None:
    """The command ``name`` of this environment (next to its python), else from PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.is_file() else shutil.which(name)


MPIEXEC = tool("mpiexec")


def _hydra() -> bool:
    """Whether MPIEXEC is MPICH's hydra (the tests read its -print-all-exitcodes)."""
    try:
        r = subprocess.run([MPIEXEC, "-info"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "HYDRA" in r.stdout.upper()


def _mpi_skip_reason() -> str | None:
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed: pip install -e '.[test,mpi]'"
    if MPIEXEC is None:
        return "no mpiexec in this environment or on PATH: pip install -e '.[test,mpi]' (the mpich wheel)"
    if not _hydra():
        return f"{MPIEXEC} is not MPICH's hydra (the mpich wheel of the `mpi` extra)"
    return None


MPI_SKIP = _mpi_skip_reason()


class Job:
    """A finished mpiexec run: ``returncode``, ``stdout``, ``stderr``, ``seconds``, and
    ``ranks``: each rank's end as ("exit", code) or ("signal", number)."""

    def __init__(self, returncode: int, stdout: str, stderr: str, seconds: float) -> None:
        self.returncode, self.stdout, self.stderr, self.seconds = returncode, stdout, stderr, seconds
        line = re.search(r"Exit codes: (.*)", stdout + stderr)
        statuses = re.findall(r"\d+", re.sub(r"\[[^]]*\]", "", line.group(1))) if line else []
        self.ranks = [("signal", s & 0x7F) if s & 0x7F else ("exit", s >> 8) for s in map(int, statuses)]

    def result(self):
        """The last ``RESULT`` json line rank 0 printed."""
        lines = [ln for ln in self.stdout.splitlines() if ln.startswith("RESULT ")]
        assert lines, f"no RESULT line (status {self.returncode}):\n{self.stdout}\n{self.stderr[-3000:]}"
        return json.loads(lines[-1][len("RESULT "):])

    def __repr__(self) -> str:
        return f"<mpiexec job: status {self.returncode}, ranks {self.ranks}>\n{self.stderr[-3000:]}"


def mpiexec(n: int, *command: str, timeout: float = 60.0, cwd: str = _TESTS) -> Job:
    """Run ``command`` on ``n`` ranks (MPMD: ``":"`` in ``command`` starts another group)
    in ``cwd``; a job still running after ``timeout`` s is killed, session and all, and
    fails the test as a hang."""
    t0 = time.monotonic()
    proc, out, err = run_in_session([MPIEXEC, "-print-all-exitcodes", "-n", str(n), *command], timeout,
                                    f"mpiexec -n {n} {' '.join(command)}", cwd=cwd)
    return Job(proc.returncode, out, err, time.monotonic() - t0)
