"""Clusters and scenario commands under an MPI launcher (``mpiexec -n N``).

Every rank runs the same program.  Rank 0 is node 0 and the only one that
goes on with it; every other rank serves as a node of each cluster rank 0
starts (``tornado_dsm.kernel.serve_mpi_ranks``) and, once rank 0's program
has ended, leaves with SystemExit: status 0, or non-zero if a node was lost
or rank 0's program failed.  The mechanism is in kernel/net/_mpi.py.
"""

from __future__ import annotations

from tornado_dsm.kernel import launched_by_mpi, mpi_job, serve_mpi_ranks, start_mpi_nodes


def serve_unless_rank0() -> int:
    """The job size, on rank 0; on any other rank, serve as a node until rank 0's
    program ends, then leave the process (SystemExit with the rank's status)."""
    job = mpi_job()
    if job.rank != 0:
        raise SystemExit(serve_mpi_ranks())
    return job.size


def from_mpi_nodes(nodes) -> int:
    """``Cluster.from_mpi``'s node count: one node per rank (``nodes`` may only repeat it)."""
    size = serve_unless_rank0()
    if nodes is not None and nodes != size:
        raise ValueError(f"Cluster.from_mpi(nodes={nodes!r}) in an MPI job of {size} ranks: from_mpi "
                         f"makes one node per rank; leave nodes out, or run mpiexec -n {nodes}")
    return size


def start_nodes(nodes: int, *, transport=None, init=None, init_args=(), timeout=None, route=None,
                address=None, key=None, join=0):
    """``Cluster``'s node start under ``launcher="mpi"`` (the arguments of ``start_nodes``;
    ``transport`` "tcp", "mpi" or None for the default, and every node is a rank: no
    route, no joiners)."""
    return start_mpi_nodes(nodes, transport=transport, init=init, init_args=init_args,
                           timeout=timeout, address=address, key=key)


def run_command(body, args) -> int:
    """Run a scenario subcommand ``body(args, launcher, job_size)``: under an MPI launcher,
    on rank 0 only (the others serve as nodes until it ends, then exit with its status)."""
    if not launched_by_mpi():
        return body(args, "spawn", None)
    size = serve_unless_rank0()
    status = 1    # if body raises: the traceback is rank 0's report, every rank exits non-zero
    try:
        status = body(args, "mpi", size)
    finally:
        mpi_job().end(status or None)   # 0: still non-zero if a node was lost
    return status


__all__ = ["from_mpi_nodes", "run_command", "serve_unless_rank0", "start_nodes"]
