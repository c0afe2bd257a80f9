"""``tornado-dsm run | inspect | list``: scenarios from the command line.

Each subcommand is a namespace with HELP, add_arguments(parser) and
run(args) -> exit status, registered in _cli.SUBCOMMANDS.  Heavy imports
(numpy work, matplotlib) happen only when a subcommand runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
from pathlib import Path


def scenario_dirs() -> list[Path]:
    """Where shipped scenarios are looked for: installed with the package
    (tornado_dsm/scenarios), the repository's scenarios/, then ./scenarios."""
    here = Path(__file__).resolve().parent
    dirs = (here / "scenarios", here.parent / "scenarios", Path.cwd() / "scenarios")
    return [d for d in dirs if d.is_dir()]


def find_scenario(name: str) -> str:
    """``name`` if it is a file, else the shipped scenario of that name (with or without .toml)."""
    if Path(name).is_file():
        return name
    for d in scenario_dirs():
        for candidate in (d / name, d / f"{name}.toml"):
            if candidate.is_file():
                return str(candidate)
    return name  # load() reports the missing file


def _add_scenario_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a scenario file, or the name of a shipped one")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key (e.g. nodes=2, workload.repeats=1); repeatable")
    parser.add_argument("--vary", action="append", default=[], metavar="KEY=V1,V2",
                        help="compare values of a key (replaces [vary] for that key); repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--base", type=address, default=None, metavar="ADDRESS",
                        help="DSM window base of the first cluster (default: the library's); "
                             "each further combination's window follows it")


# An integer written in Python's syntax (decimal, 0x..., 0o..., 0b...); argparse
# turns the ValueError into "argument --base: invalid address value: 'TEXT'".
def address(text: str) -> int:
    return int(text, 0)


# The scenario of ``args``, loaded and checked with the --base windows, the
# ``outputs`` ((option, path or None), ...) and the MPI job's size (None: not under
# mpiexec), before any node starts; None after printing the one-line error (the
# caller exits with status 2).
def _load(args, outputs=(), job_size=None):
    from tornado_dsm.kernel import DEFAULT_BASE

    from ._scenario_config import ScenarioError, load
    from ._scenario_run import plan_runs

    try:
        scenario = load(find_scenario(args.file), args.set, args.vary)
        for option, path in outputs:
            _check_output(scenario.source, option, path)
        runs = plan_runs(scenario, DEFAULT_BASE if args.base is None else args.base)
        if job_size is not None:
            _check_job_size(scenario.source, sorted({s["cluster.nodes"] for _o, s, _b in runs}), job_size)
        return scenario
    except ScenarioError as exc:
        print(f"tornado-dsm: error: {exc}", file=sys.stderr)
        return None


# ScenarioError (key ``option``) unless ``path`` (None: not asked for) can be
# written: not a directory, in an existing, writable directory.
def _check_output(source: str, option: str, path) -> None:
    from ._scenario_config import ScenarioError

    if path is None:
        return
    folder = Path(path).parent
    accepted = "expected a file path in an existing, writable directory"
    if Path(path).is_dir():
        raise ScenarioError(source, option, path, f"a directory; {accepted}")
    if not folder.is_dir():
        reason = f"{str(folder)!r} is not a directory" if folder.exists() else \
            f"the directory {str(folder)!r} does not exist"
        raise ScenarioError(source, option, path, f"{reason}; {accepted}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ScenarioError(source, option, path, f"the directory {str(folder)!r} is not writable; {accepted}")


# ScenarioError (key cluster.nodes) unless the largest of the scenario's node counts
# ``nodes`` is the MPI job's size: each run's nodes are ranks 0..nodes-1 (the others
# wait), so fewer ranks cannot run it and more would never be used.
def _check_job_size(source: str, nodes: list, size: int) -> None:
    from ._scenario_config import ScenarioError

    if max(nodes) != size:
        shown = nodes[0] if len(nodes) == 1 else nodes
        raise ScenarioError(source, "cluster.nodes", shown,
                            f"the scenario needs {max(nodes)} nodes but the MPI job has {size} ranks "
                            f"(mpiexec -n {size}); under mpiexec the largest nodes must equal the job "
                            f"size: run mpiexec -n {max(nodes)}, or --set nodes={size} / --vary nodes=...")


# Run every combination of the checked ``scenario`` at --base (or the default window),
# each cluster started by ``launcher`` ("spawn", or "mpi" on an mpiexec job's ranks).
def _execute(scenario, args, launcher="spawn"):
    from ._scenario_run import run_scenario

    extra = {} if args.base is None else {"base": args.base}
    return run_scenario(scenario, progress=not args.no_progress, launcher=launcher, **extra)


# ---- run -----------------------------------------------------------------------------

def _run_arguments(parser: argparse.ArgumentParser) -> None:
    _add_scenario_args(parser)
    parser.add_argument("--json", metavar="PATH", help="write every figure to PATH (JSON, see the schema)")
    parser.add_argument("--plot", metavar="PATH",
                        help="draw the comparison to PATH, in the format of its extension: .png, .svg or .pdf")
    parser.add_argument("--metric", action="append", default=[], metavar="NAME[,NAME...]",
                        help="what --plot draws, one panel each (e.g. faults/s,messages; repeatable; "
                             "default: the scenario's; a wrong name lists them all)")
    parser.add_argument("--normalize", action="store_true",
                        help="--plot each value over the fewest-nodes run of the same settings (one node "
                             "count: over the first run); default: absolute values")


def _run(args: argparse.Namespace) -> int:
    """Run every combination, print the table, write the JSON and the plot if asked."""
    from ._mpi import run_command

    return run_command(_run_here, args)


def _run_here(args: argparse.Namespace, launcher: str, job_size) -> int:
    from . import _report

    scenario = _load(args, (("--json", args.json), ("--plot", args.plot)), job_size)
    if scenario is None or not _plot_checked(scenario, args):
        return 2
    runs = _execute(scenario, args, launcher)
    if runs.interrupted is not None:
        print(f"tornado-dsm: interrupted during the run with {runs.interrupted}: {len(runs)} of "
              f"{runs.planned} runs finished" + (", shown below" if runs else ""), file=sys.stderr)
    if runs:
        print(_report.render_table(scenario, runs))
    if args.json:
        doc = _report.to_json(scenario, runs)
        if runs.interrupted is not None:
            doc["partial"] = True
        _report.write_json(args.json, doc)
        print(f"wrote {args.json}" + (" (partial)" if runs.interrupted is not None else ""), file=sys.stderr)
    if args.plot and runs:
        _report.plot(scenario, runs, args.plot, args.metric, args.normalize)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 130 if runs.interrupted is not None else 0


# Whether --plot's format, --metric and --normalize can be honoured for ``scenario``
# (checked before the run); else False after printing the one-line error.
def _plot_checked(scenario, args) -> bool:
    from ._report import PlotError, check_plot

    try:
        check_plot(scenario, args.plot, args.metric, args.normalize)
        return True
    except PlotError as exc:
        print(f"tornado-dsm: error: {exc}", file=sys.stderr)
        return False


# ---- inspect ---------------------------------------------------------------------------

def _inspect(args: argparse.Namespace) -> int:
    """Run the scenario and print the replication levels of every combination."""
    from ._mpi import run_command

    return run_command(_inspect_here, args)


def _inspect_here(args: argparse.Namespace, launcher: str, job_size) -> int:
    from . import _report

    scenario = _load(args, job_size=job_size)
    if scenario is None:
        return 2
    print(_report.render_inspect(_execute(scenario, args, launcher)))
    return 0


# ---- list ------------------------------------------------------------------------------

def _list_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _list(args: argparse.Namespace) -> int:
    """One line per shipped scenario: its file name and description."""
    import tomllib

    dirs = scenario_dirs()
    if not dirs:
        print("no scenarios/ directory found (looked next to the package and in the current directory)",
              file=sys.stderr)
        return 1
    files = sorted(dirs[0].glob("*.toml"))
    width = max((len(f.stem) for f in files), default=0)
    for f in files:
        with open(f, "rb") as fh:
            description = tomllib.load(fh).get("description", "")
        print(f"{f.stem:<{width}}  {description}")
    print(f"({dirs[0]}; run one with: tornado-dsm run NAME)", file=sys.stderr)
    return 0


RUN = types.SimpleNamespace(HELP="run a scenario file: progress bar, then a table (--json, --plot)",
                            add_arguments=_run_arguments, run=_run)
INSPECT = types.SimpleNamespace(HELP="run a scenario and print the replication levels of its objects",
                                add_arguments=_add_scenario_args, run=_inspect)
LIST = types.SimpleNamespace(HELP="list the shipped scenarios, one line each",
                             add_arguments=_list_arguments, run=_list)
