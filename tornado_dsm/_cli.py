"""The ``tornado-dsm`` command.  Each subcommand lives in its own module and
registers itself in SUBCOMMANDS with (help, add_arguments, run)."""

from __future__ import annotations

import argparse
import sys

from . import __version__, _bench, _chaos, _cli_run, _node_cmd, _top_cmd

# name -> module exposing HELP, add_arguments(parser) and run(args) -> int
SUBCOMMANDS = {
    "bench": _bench,
    "chaos": _chaos,
    "node": _node_cmd,
    "run": _cli_run.RUN,
    "inspect": _cli_run.INSPECT,
    "list": _cli_run.LIST,
    "top": _top_cmd,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="tornado-dsm",
        description="Tornado-style clustered-object virtual memory over a page-based DSM.",
    )
    parser.add_argument("--version", action="version", version=f"tornado-dsm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in SUBCOMMANDS.items():
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return SUBCOMMANDS[args.command].run(args)
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
