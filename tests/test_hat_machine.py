"""HAT and trap against a model: random reads, writes and protection changes on
random pages of a window, from several threads, checked after every step, on
each fault backend."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

import tornado_dsm as td
from tornado_dsm.kernel import PAGE, PROT_NONE, PROT_READ, PROT_WRITE, KernelPager, NodeMemory, trap

from helpers import fresh_base
from strategies import WINDOW_PAGES, WORDS_PER_PAGE, page_runs, pages, protections, values, words

THREADS = 3


def _read(arr, i):
    v = int(arr[i])
    trap.check()
    return v


def _write(arr, i, v):
    arr[i] = v
    trap.check()


class WindowMachine(RuleBasedStateMachine):
    """Model: contents (int64 words), what the pager allows, and the HAT protection."""

    def __init__(self, backend: str = "mprotect") -> None:
        super().__init__()
        self.mem = NodeMemory(base=fresh_base(), size=WINDOW_PAGES * PAGE, backend=backend)
        self.pager = KernelPager(self.mem)
        self.mem.set_handler(self.pager)
        self.arr = self.mem.array(0, (WINDOW_PAGES * WORDS_PER_PAGE,), np.int64)
        self.pool = ThreadPoolExecutor(THREADS)
        self.contents = np.zeros(WINDOW_PAGES * WORDS_PER_PAGE, dtype=np.int64)
        self.allowed = np.full(WINDOW_PAGES, PROT_WRITE, dtype=np.uint8)
        self.prot = np.zeros(WINDOW_PAGES, dtype=np.uint8)

    def _in_thread(self, fn, *args):
        """Run fn in one of the pool's threads; return (value, SegmentationFault or None)."""
        def call():
            try:
                return fn(*args), None
            except td.SegmentationFault as e:
                return None, e
        return self.pool.submit(call).result(timeout=60)

    @rule(page=pages, word=words)
    def read(self, page, word):
        i = page * WORDS_PER_PAGE + word
        value, fault = self._in_thread(_read, self.arr, i)
        if self.allowed[page] == PROT_NONE:
            assert fault is not None and fault.access == "read"
        else:
            assert fault is None and value == self.contents[i]
            self.prot[page] = max(self.prot[page], PROT_READ)

    @rule(page=pages, word=words, value=values)
    def write(self, page, word, value):
        i = page * WORDS_PER_PAGE + word
        _, fault = self._in_thread(_write, self.arr, i, value)
        if self.allowed[page] == PROT_WRITE:
            assert fault is None
            self.contents[i] = value
            self.prot[page] = PROT_WRITE
        else:
            assert fault is not None and fault.access == "write"

    @rule(data=st.data())
    def concurrent_writes(self, data):
        """Several threads write distinct words of writable pages at the same time."""
        targets = data.draw(st.lists(st.tuples(pages, words, values), min_size=2, max_size=THREADS,
                                     unique_by=lambda t: (t[0], t[1])))
        targets = [t for t in targets if self.allowed[t[0]] == PROT_WRITE]
        barrier = threading.Barrier(len(targets)) if targets else None

        def go(page, word, value):
            barrier.wait(timeout=30)
            _write(self.arr, page * WORDS_PER_PAGE + word, value)

        for f in [self.pool.submit(go, *t) for t in targets]:
            f.result(timeout=60)
        for page, word, value in targets:
            self.contents[page * WORDS_PER_PAGE + word] = value
            self.prot[page] = PROT_WRITE

    @rule(run=page_runs(), prot=protections)
    def allow(self, run, prot):
        first, count = run
        self.pager.allow(first, count, prot)
        self.allowed[first:first + count] = prot
        np.minimum(self.prot[first:first + count], prot, out=self.prot[first:first + count])

    @rule(run=page_runs())
    def unmap(self, run):
        self.mem.hat.unmap(*run)
        self.prot[run[0]:run[0] + run[1]] = PROT_NONE

    @rule(run=page_runs())
    def release(self, run):
        first, count = run
        self.mem.release(first, count)
        self.prot[first:first + count] = PROT_NONE
        self.contents[first * WORDS_PER_PAGE:(first + count) * WORDS_PER_PAGE] = 0

    @invariant()
    def protections_match(self):
        assert (self.mem.hat.prot == self.prot).all()

    @invariant()
    def frames_match(self):
        frames = self.mem.kernel_view.view(np.int64)
        assert (frames == self.contents).all()

    def teardown(self):
        self.pool.shutdown(wait=True)
        self.mem.close()


def test_window_machine(backend):
    """Random accesses and protection changes from several threads keep the HAT and the frames equal to the model."""
    run_state_machine_as_test(lambda: WindowMachine(backend),
                              settings=settings(max_examples=60, stateful_step_count=40, deadline=None))
