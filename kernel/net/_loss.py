"""How a node process ended, told to node 0 when the node is lost.

A node that crashes in user code (a segfault outside the DSM window, an
abort in a C extension) used to show up on node 0 only as "peer closed the
connection".  Every spawned node now enables ``faulthandler`` on a file in
node 0's private run directory before anything else runs (so the trap, which
installs its SIGSEGV handler later, chains to it for faults outside the
window).  When node 0 loses the connection, ``describe_end`` waits briefly
for the process to exit and reads its exit status and the last Python frame
the crashing thread ran; the text becomes part of the NodeLost reason every
failing call carries.  A node that joined from another host has no such file
here: its diagnostics stay on its own stderr.
"""

from __future__ import annotations

import faulthandler
import os
import re
import signal

EXIT_WAIT = 2.0   # seconds node 0 waits for a lost node's process to exit
STILL_RUNNING = "its process is still running"
_FRAME = re.compile(r'^\s+File "(?P<file>[^"]*)", line (?P<line>\d+) in (?P<fn>\S+)')
_crash_file = None   # kept open for faulthandler for the life of the process


def crash_log_path(run_dir: str, node: int) -> str:
    """Where node ``node`` writes its faulthandler report."""
    return os.path.join(run_dir, f"node{node}.crash")


def enable_crash_log(path: str | None) -> None:
    """In a spawned node, first thing: faulthandler writes fatal-signal reports to ``path``."""
    global _crash_file
    if path:
        _crash_file = open(path, "w")   # noqa: SIM115 -- must outlive this function
        faulthandler.enable(_crash_file, all_threads=True)


def describe_end(proc, log_path: str | None) -> str:
    """How the node process ``proc`` ended: its signal or exit code and the
    last Python frame of the thread that crashed, as one line ("" if it runs on)."""
    proc.join(EXIT_WAIT)
    code = proc.exitcode
    if code is None:
        return STILL_RUNNING
    if code < 0:
        what = f"its process was killed by {_signal_name(-code)}"
    else:
        what = f"its process exited with code {code}"
    frame = last_frame(log_path)
    return f"{what}; last Python frame: {frame}" if frame else what


def last_frame(log_path: str | None) -> str:
    """The most recent frame of the crashing thread in a faulthandler report ("" if none)."""
    try:
        with open(log_path, errors="replace") as f:
            text = f.read()
    except (OSError, TypeError):
        return ""
    current = text.find("Current thread")
    for line in text[current if current >= 0 else 0:].splitlines():
        m = _FRAME.match(line)
        if m:
            return f'File "{m["file"]}", line {m["line"]} in {m["fn"]}'
    return ""


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
