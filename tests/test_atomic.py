"""Atomics on window addresses."""

from __future__ import annotations

import threading

import pytest

from tornado_dsm.kernel import PAGE, atomic


def hammer(fn, threads: int = 4) -> None:
    """Run fn(t) in `threads` threads started together; re-raise the first error."""
    errors, barrier = [], threading.Barrier(threads)

    def body(t):
        barrier.wait(timeout=30)
        try:
            fn(t)
        except BaseException as e:  # collected and re-raised below
            errors.append(e)

    ts = [threading.Thread(target=body, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)
    if errors:
        raise errors[0]


class TestFetchAdd:
    @pytest.mark.parametrize("size", [4, 8])
    def test_exact_total_under_threads(self, memory, size):
        """4 threads x 5000 fetch-and-adds on one word give an exact total."""
        addr = memory.base + 3 * PAGE + 16
        hammer(lambda t: [atomic.fetch_add(addr, 1, size) for _ in range(5000)])
        assert atomic.load(addr, size) == 20000

    def test_wraps(self, memory):
        """A 4-byte add wraps modulo 2**32 and negative deltas subtract."""
        addr = memory.base
        atomic.store(addr, 2**32 - 1, 4)
        assert atomic.fetch_add(addr, 1, 4) == 2**32 - 1
        assert atomic.load(addr, 4) == 0
        atomic.fetch_add(addr, -1, 4)
        assert atomic.load(addr, 4) == 2**32 - 1


class TestCompareAndSwap:
    def test_success_and_failure(self, memory):
        """CAS swaps only when the word matches and always returns the word found."""
        addr = memory.base + 8
        atomic.store(addr, 5)
        assert atomic.compare_and_swap(addr, 4, 9) == 5 and atomic.load(addr) == 5
        assert atomic.compare_and_swap(addr, 5, 9) == 5 and atomic.load(addr) == 9

    def test_lock_counter(self, memory):
        """A CAS loop increments exactly under 4 threads."""
        addr = memory.base + 4 * PAGE

        def inc(t):
            for _ in range(2000):
                while True:
                    old = atomic.load(addr)
                    if atomic.compare_and_swap(addr, old, old + 1) == old:
                        break

        hammer(inc)
        assert atomic.load(addr) == 8000


class TestExchangeAndTestAndSet:
    def test_spinlock_mutual_exclusion(self, memory):
        """A test-and-set spinlock protects a plain counter: the total is exact."""
        lock, counter = memory.base + 5 * PAGE, memory.base + 6 * PAGE

        def work(t):
            for _ in range(2000):
                while atomic.test_and_set(lock, 4):
                    pass
                atomic.store(counter, atomic.load(counter) + 1)
                atomic.exchange(lock, 0, 4)

        hammer(work)
        assert atomic.load(counter) == 8000

    def test_exchange_returns_old(self, memory):
        """exchange stores the new value and returns the old one."""
        assert atomic.exchange(memory.base, 3) == 0 and atomic.exchange(memory.base, 4) == 3


class TestValidation:
    @pytest.mark.parametrize("offset,size,match", [(2, 4, "aligned"), (4, 8, "aligned"),
                                                   (0, 2, "4 or 8")])
    def test_bad_alignment_or_size(self, memory, offset, size, match):
        """Misaligned addresses and sizes other than 4 and 8 are ValueErrors."""
        with pytest.raises(ValueError, match=match):
            atomic.load(memory.base + offset, size)

    def test_outside_window(self, memory):
        """An address outside every window, or straddling its end, is a ValueError."""
        with pytest.raises(ValueError, match="not inside"):
            atomic.load(memory.end)
        with pytest.raises(ValueError, match="not inside"):
            atomic.fetch_add(0x1000, 1)
