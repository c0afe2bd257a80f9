"""The Jacobi of ``bench apps`` as an mpi4py program: what a user would write instead of DSM.

``mpiexec -n N python -m tornado_dsm._apps_mpi N_GRID SWEEPS``: each rank keeps
its band of rows plus one halo row above and below in private memory and
swaps its boundary rows with its neighbours (``Sendrecv``) before every
sweep.  Rank 0 gathers the grid, checks it against the private reference
and prints one JSON line: {"ranks", "seconds", "ok"}.
"""

from __future__ import annotations

import json
import sys
from time import perf_counter

import numpy as np

from tornado_dsm._apps import band, jacobi_reference
from tornado_dsm._workloads import relax


def _exchange(comm, grid: np.ndarray, rank: int, size: int) -> None:
    """Swap boundary rows with the neighbours: row 1 up, row -2 down, halos filled."""
    from mpi4py import MPI

    up = rank - 1 if rank > 0 else MPI.PROC_NULL
    down = rank + 1 if rank < size - 1 else MPI.PROC_NULL
    comm.Sendrecv(grid[1], dest=up, recvbuf=grid[-1], source=down)
    comm.Sendrecv(grid[-2], dest=down, recvbuf=grid[0], source=up)


def jacobi(n: int, sweeps: int) -> dict:
    """Run the sweeps on every rank; on rank 0 the result, else {}."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    lo, hi = band(n - 2, rank, size, 1)
    grids = [np.zeros((hi - lo + 2, n)) for _ in range(2)]   # band + a halo row each side
    if rank == 0:
        for g in grids:
            g[0] = 1.0      # the top boundary is rank 0's upper halo, never overwritten
    comm.Barrier()
    t0 = perf_counter()
    for k in range(sweeps):
        old, new = grids[k % 2], grids[(k + 1) % 2]
        _exchange(comm, old, rank, size)
        relax(old, new, 1, len(old) - 1)
    seconds = comm.allreduce(perf_counter() - t0, op=MPI.MAX)
    bands = comm.gather(grids[sweeps % 2][1:-1], root=0)
    if rank != 0:
        return {}
    result = np.concatenate([np.ones((1, n)), *bands, np.zeros((1, n))])
    return {"ranks": size, "seconds": seconds, "ok": bool(np.allclose(result, jacobi_reference(n, sweeps)))}


def main(argv: list[str]) -> int:
    """Entry point under mpiexec: N_GRID SWEEPS."""
    out = jacobi(int(argv[0]), int(argv[1]))
    if out:
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
