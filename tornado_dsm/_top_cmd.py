"""``tornado-dsm top``: watch a running cluster of this host, refreshed every second."""

from __future__ import annotations

import os
import sys
import time

from ._watch import Watcher, find_clusters, rates

HELP = "watch a running cluster on this host: faults, PPCs and objects per second"
CLEAR = "\x1b[H\x1b[2J"


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", nargs="?", help="the cluster's run directory (default: the only one "
                        "running, or the newest; `--list` shows them)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes (default 1)")
    parser.add_argument("--once", action="store_true", help="print one view (over one interval) and exit")
    parser.add_argument("--list", action="store_true", help="list the running clusters and exit")


def run(args) -> int:
    if not args.interval > 0:
        print(f"tornado-dsm: error: --interval must be a number of seconds > 0, not {args.interval}",
              file=sys.stderr)
        return 2
    found = find_clusters()
    if args.list:
        print("\n".join(found) if found else "no running cluster of this user on this host")
        return 0
    run_dir = args.run_dir or (found[0] if found else None)
    if run_dir is None or not os.path.isdir(run_dir):
        print(f"tornado-dsm: error: {'no running cluster of this user on this host' if run_dir is None else run_dir + ': no such run directory'}"
              " (start one: a program with td.Cluster, or tornado-dsm run)", file=sys.stderr)
        return 1
    try:
        watcher = Watcher(run_dir)
    except (OSError, ValueError) as exc:
        print(f"tornado-dsm: error: cannot attach to {run_dir}: {exc}", file=sys.stderr)
        return 1
    try:
        return _loop(watcher, run_dir, args)
    except KeyboardInterrupt:
        return 0
    except ConnectionError as exc:
        print(f"tornado-dsm: {exc}", file=sys.stderr)
        return 0
    finally:
        watcher.close()


def _loop(watcher, run_dir: str, args) -> int:
    before = watcher.snapshot()
    while True:
        time.sleep(args.interval)
        after = watcher.snapshot()
        text = f"tornado-dsm top: {after['nnodes']} nodes, {run_dir}\n{rates(before, after)}"
        if args.once:
            print(text)
            return 0
        print(CLEAR + text, flush=True)
        before = after
