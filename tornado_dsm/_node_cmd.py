"""``tornado-dsm node --join HOST:PORT --key-file FILE``: run a node that joins a cluster.

The cluster's node 0 (a ``start_nodes(..., transport="tcp", join=k)`` call on
some host) listens at HOST:PORT; this process connects, authenticates with the
key in FILE (hex text, mode 0600), gets a node id and serves until node 0
shuts the cluster down or dies.
"""

from __future__ import annotations

import argparse
import logging
import sys

HELP = "run a node that joins a cluster started elsewhere (tcp)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``tornado-dsm node``."""
    parser.add_argument("--join", metavar="HOST:PORT", required=True,
                        help="address node 0 listens on")
    parser.add_argument("--key-file", metavar="FILE", required=True,
                        help="the cluster key as hex text (file mode 0600)")
    parser.add_argument("--listen", metavar="HOST", default=None,
                        help="address this node listens on for its peers "
                             "(default: the interface that reaches node 0)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="default PPC timeout (default: none)")
    parser.add_argument("--start-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="how long to wait for the other nodes at start-up (default 60)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def run(args: argparse.Namespace) -> int:
    """Join the cluster and serve; returns the exit status (0 after a clean shutdown)."""
    from tornado_dsm.kernel import attach, run_node
    from tornado_dsm.kernel import parse_address, read_key_file

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="tornado-dsm node: %(levelname)s %(message)s")
    try:
        host, port = parse_address(args.join)
        key = read_key_file(args.key_file)
    except (OSError, ValueError) as e:
        print(f"tornado-dsm node: {e}", file=sys.stderr)
        return 2
    config = {"node": None, "address": [host, port], "key": key, "timeout": args.timeout,
              "start_timeout": args.start_timeout,
              "listen": [args.listen, 0] if args.listen else None, "attach": attach}
    try:
        return run_node(config)
    except KeyboardInterrupt:
        return 130
