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
    from ._join import join_cluster, read_key_file
    from tornado_dsm.kernel import parse_address

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="tornado-dsm node: %(levelname)s %(message)s")
    try:   # bad arguments are one line and status 2, before anything connects
        parse_address(args.join)
        key = read_key_file(args.key_file)
    except (OSError, ValueError) as e:
        print(f"tornado-dsm node: {e}", file=sys.stderr)
        return 2
    try:
        return join_cluster(args.join, key=key, listen=args.listen, timeout=args.timeout,
                            start_timeout=args.start_timeout)
    except KeyboardInterrupt:
        return 130
