"""Applications at a realistic size, written as a user would write them on shared arrays.

Each node computes one band of rows with numpy on the shared arrays; the
band's pages are first touched by the node that computes them, so they are
owned there and the interior of a band never leaves its node.  Only what a
band needs from its neighbours moves: the halo rows of a Jacobi sweep, the
other nodes' rows of B in a matrix multiply.  The references below compute
the same results in private memory (the bench checks every result).

Node functions are module level (importable on every node); each returns
the seconds of its measured part, timed on the node after a start barrier.
"""

from __future__ import annotations

from time import perf_counter

import numpy as np

import tornado_dsm as td

from . import _workloads
from ._workloads import relax


def band(rows: int, node: int, nodes: int, first: int = 0) -> tuple[int, int]:
    """[lo, hi) of node ``node``'s share of ``rows`` rows starting at ``first``: contiguous, balanced."""
    return first + node * rows // nodes, first + (node + 1) * rows // nodes


# ---- Jacobi: 5-point relaxation, a barrier per sweep -------------------------------------

def jacobi_setup(g0, g1, barrier) -> None:
    """Each node zeroes its band of both grids (first touch: the band's pages are
    owned where they are computed); node 0 also sets the top boundary row to 1.0."""
    node, nodes = td.current_node(), barrier.parties
    lo, hi = band(g0.shape[0] - 2, node, nodes, 1)
    for g in (g0, g1):
        g[lo:hi] = 0.0
        if node == 0:
            g[0] = 1.0
        if node == nodes - 1:
            g[-1] = 0.0
    barrier.wait()


def jacobi_sweeps(g0, g1, barrier, sweeps: int) -> float:
    """``sweeps`` sweeps of this node's band (new = mean of old's 4 neighbours),
    a barrier after each; the seconds they took here."""
    node, nodes = td.current_node(), barrier.parties
    lo, hi = band(g0.shape[0] - 2, node, nodes, 1)
    grids = (g0, g1)
    barrier.wait()   # start together: the time is the sweeps', not the run's start-up
    t0 = perf_counter()
    for k in range(sweeps):
        old, new = grids[k % 2], grids[(k + 1) % 2]
        relax(old, new, lo, hi)
        barrier.wait()
    return perf_counter() - t0


def jacobi_reference(n: int, sweeps: int) -> np.ndarray:
    """The same sweeps on a private n x n grid (top row 1.0, the rest 0)."""
    return _workloads.jacobi_reference(n, sweeps, cols=n)


# ---- blocked matrix multiply: C = A B, a band of C's rows per node ------------------------

def matrix_rows(seed: int, lo: int, hi: int, n: int, block: int) -> np.ndarray:
    """Rows [lo, hi) of a seeded random n x n matrix, generated block of rows by
    block (the same values whichever node makes them)."""
    out = np.empty((hi - lo, n))
    for start in range(lo - lo % block, hi, block):
        rows = np.random.default_rng([seed, start]).random((block, n))
        a, b = max(start, lo), min(start + block, hi)
        out[a - lo:b - lo] = rows[a - start:b - start]
    return out


def matmul_setup(a, b, c, barrier, seed: int, block: int) -> None:
    """Each node fills its band of rows of A and B and zeroes its band of C
    (first touch: the band's pages are owned where they are computed)."""
    node, n = td.current_node(), a.shape[0]
    lo, hi = band(n, node, barrier.parties)
    a[lo:hi] = matrix_rows(seed, lo, hi, n, block)
    b[lo:hi] = matrix_rows(seed + 1, lo, hi, n, block)
    c[lo:hi] = 0.0
    barrier.wait()


def matmul_band(a, b, c, barrier, block: int) -> float:
    """This node's band of C's rows, tile by tile: C_ij = sum_k A_ik B_kj with
    block x block tiles (B's tiles of other bands are read from their nodes)."""
    node, n = td.current_node(), a.shape[0]
    lo, hi = band(n, node, barrier.parties)
    barrier.wait()
    t0 = perf_counter()
    for i in range(lo, hi, block):
        rows = slice(i, min(i + block, hi))
        for j in range(0, n, block):
            cols = slice(j, min(j + block, n))
            acc = np.zeros((rows.stop - rows.start, cols.stop - j))
            for k in range(0, n, block):
                acc += a[rows, k:k + block] @ b[k:k + block, cols]
            c[rows, cols] = acc
    seconds = perf_counter() - t0
    barrier.wait()   # every band is written before anyone reads C
    return seconds


def matmul_reference(n: int, seed: int, block: int) -> np.ndarray:
    """A B in private memory, A and B generated as the nodes generate them."""
    return matrix_rows(seed, 0, n, n, block) @ matrix_rows(seed + 1, 0, n, n, block)
