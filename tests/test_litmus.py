"""Litmus tests with each thread on a different node: sequential consistency.

For every manager (and migrate), with the variables on one page and on
different pages:

* forbidden outcomes never appear: the threads run concurrently on their
  nodes, with random delays before each operation to vary the schedule;
* allowed outcomes all appear: for each outcome SC allows, a witness
  interleaving is executed operation by operation, each on its thread's
  node through the real protocol, and must produce exactly that outcome.
  (Waiting for random timing to hit every IRIW outcome on one page would
  take minutes; the witness schedule reaches each one deterministically.)
"""

from __future__ import annotations

import itertools
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import clusterprogs as progs
from helpers import new_cluster

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(600)]

X, Y = "x", "y"
# name: (threads as op lists, outcome function of (registers by thread, final memory))
LITMUS = {
    "SB": ([[("w", X, 1), ("r", Y)], [("w", Y, 1), ("r", X)]], False),
    "MP": ([[("w", X, 1), ("w", Y, 1)], [("r", Y), ("r", X)]], False),
    "LB": ([[("r", X), ("w", Y, 1)], [("r", Y), ("w", X, 1)]], False),
    "WRC": ([[("w", X, 1)], [("r", X), ("w", Y, 1)], [("r", Y), ("r", X)]], False),
    "IRIW": ([[("w", X, 1)], [("w", Y, 1)], [("r", X), ("r", Y)], [("r", Y), ("r", X)]], False),
    "2+2W": ([[("w", X, 1), ("w", Y, 2)], [("w", Y, 1), ("w", X, 2)]], True),
}
LAYOUTS = {"same-page": {X: 0, Y: 8}, "two-pages": {X: 0, Y: 512}}
CONFIGS = [("ivy", "centralized"), ("ivy", "fixed"), ("ivy", "dynamic"), ("migrate", "centralized")]


def sc_outcomes(threads, final: bool) -> dict:
    """{outcome: a witness interleaving (thread ids in order)} over every
    interleaving of the threads (sequential consistency)."""
    outcomes = {}
    order = [i for i, t in enumerate(threads) for _ in t]
    for perm in sorted(set(itertools.permutations(order))):
        mem, pcs, regs = {X: 0, Y: 0}, [0] * len(threads), [[] for _ in threads]
        for t in perm:
            op = threads[t][pcs[t]]
            pcs[t] += 1
            if op[0] == "w":
                mem[op[1]] = op[2]
            else:
                regs[t].append(mem[op[1]])
        outcomes.setdefault(_key(regs, mem, final), perm)
    return outcomes


def _key(regs, mem, final: bool):
    return tuple(tuple(r) for r in regs) + ((mem[X], mem[Y]) if final else ())


def all_outcomes(threads, final: bool) -> set:
    """Every combination of values the registers could take (0/1, or 0/1/2 for finals)."""
    reads = [sum(op[0] == "r" for op in t) for t in threads]
    regs = itertools.product(*[itertools.product((0, 1), repeat=n) for n in reads])
    finals = itertools.product((1, 2), repeat=2) if final else [()]
    return {tuple(r) + f for r, f in itertools.product(list(regs), list(finals))}


@pytest.fixture(scope="module", params=CONFIGS, ids=["-".join(c) for c in CONFIGS])
def litmus_cluster(request):
    """4 nodes (one per thread of the largest litmus test), once per (protocol, manager) of
    CONFIGS, for the whole module."""
    protocol, manager = request.param
    with new_cluster(4, protocol=protocol, manager=manager) as c:
        yield c


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", list(LITMUS))
class TestLitmus:
    def test_forbidden_never_appear(self, litmus_cluster, name, layout):
        """Concurrent runs with random schedules never show an outcome SC forbids."""
        threads, final = LITMUS[name]
        allowed = sc_outcomes(threads, final)
        assert all_outcomes(threads, final) - set(allowed), "a litmus test must forbid something"
        a, programs, words = _setup(litmus_cluster, name, layout)
        seen, rnd = set(), random.Random(f"{name}-{layout}")
        with ThreadPoolExecutor(len(threads)) as pool:
            for _ in range(ITERATIONS):
                seen.add(_iterate(litmus_cluster, a, programs, words, final, pool, rnd))
        litmus_cluster.free(a)
        assert seen <= set(allowed), f"{name} ({layout}): SC forbids {sorted(seen - set(allowed))}"

    def test_allowed_all_appear(self, litmus_cluster, name, layout):
        """Every outcome SC allows is produced by its witness schedule across the nodes."""
        threads, final = LITMUS[name]
        a, programs, words = _setup(litmus_cluster, name, layout)
        for outcome, schedule in sc_outcomes(threads, final).items():
            assert _schedule(litmus_cluster, a, programs, words, final, schedule) == outcome
        litmus_cluster.free(a)


ITERATIONS = 60


def _setup(cluster, name, layout):
    threads, _ = LITMUS[name]
    words = LAYOUTS[layout]
    programs = [[(op[0], words[op[1]], *op[2:]) for op in t] for t in threads]
    return cluster.zeros((1024,), np.int64), programs, words


def _final(cluster, a, words, final):
    values = cluster.run(progs.read_words, a, [words[X], words[Y]], on=0, threads=1)[0]
    return dict(zip((X, Y), values))


def _schedule(cluster, a, programs, words, final, schedule):
    """Run the ops one at a time in ``schedule`` order, each on its thread's node."""
    cluster.run(progs.reset_words, a, list(words.values()), on=0, threads=1)
    pcs, regs = [0] * len(programs), [[] for _ in programs]
    for t in schedule:
        op = programs[t][pcs[t]]
        pcs[t] += 1
        regs[t] += cluster.run(progs.litmus_thread, a, [op], [0], on=t, threads=1)[0]
    return _key(regs, _final(cluster, a, words, final), final)


def _iterate(cluster, a, programs, words, final, pool, rnd):
    cluster.run(progs.reset_words, a, list(words.values()), on=0, threads=1)
    futures = []
    for t, ops in enumerate(programs):
        delays = [rnd.randrange(0, 2000) if rnd.random() < 0.5 else 0 for _ in ops]
        futures.append(pool.submit(cluster.run, progs.litmus_thread, a, ops, delays, on=t, threads=1))
    regs = [f.result(timeout=60)[0] for f in futures]
    return _key(regs, _final(cluster, a, words, final), final)
