"""The trap: real faults, resolved in the faulting thread, on each fault backend: SIGSEGVs
from mprotect-ed pages, and SIGBUS from a userfaultfd-registered view."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import tornado_dsm as td
from tornado_dsm.kernel import PAGE, PROT_NONE, PROT_READ, PROT_WRITE, FaultRefused, trap
from tornado_dsm.kernel.machine._lib import ffi, lib

from helpers import BACKEND_PARAMS, FAULT_SIGNAL, fresh_base


def run_script(body: str, backend: str | None = None) -> subprocess.CompletedProcess:
    """Run a Python script in a fresh interpreter (its windows on ``backend``, if
    given, through $TORNADO_DSM_BACKEND); return its outcome."""
    prologue = f"BASE = {fresh_base():#x}\n"
    env = dict(os.environ, TORNADO_DSM_BACKEND=backend) if backend else None
    return subprocess.run([sys.executable, "-c", prologue + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=120, env=env)


def window_mappings(mem) -> int:
    """How many kernel mappings (lines of /proc/self/maps) cover the window."""
    count = 0
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            count += lo < mem.end and hi > mem.base
    return count


class TestResolveGILHeld:
    def test_numpy_read_then_write(self, memory):
        """Numpy indexing with the GIL held faults, is resolved, and sees zero-filled memory."""
        a = memory.array(0, (memory.size // 8,), np.int64)
        assert a[10] == 0
        assert memory.hat.prot[0] == PROT_READ
        a[10] = 77
        assert a[10] == 77
        assert memory.hat.prot[0] == PROT_WRITE
        stats = memory.pager.statistics()
        assert (stats.read_faults, stats.write_faults, stats.refused) == (1, 1, 0)

    def test_kernel_view_sees_application_writes(self, memory):
        """A write through the application view lands in the node's frame."""
        a = memory.array(3 * PAGE, (PAGE,), np.uint8)
        a[5] = 200
        assert memory.frame(3)[5] == 200


class TestResolveGILReleased:
    def test_numpy_bulk_operation(self, memory):
        """A numpy ufunc over many pages (GIL released inside) resolves every page."""
        a = memory.array(0, (memory.size // 8,), np.int64)
        np.add(a, 3, out=a)
        assert int(a.sum()) == 3 * a.size
        assert memory.hat.statistics().pages_write == memory.npages

    def test_cffi_c_loop(self, memory):
        """A cffi C loop (GIL released) writing one byte per page resolves every page."""
        trap.touch(memory.base, memory.npages, PAGE, write=9)
        assert all(memory.frame(p)[0] == 9 for p in range(memory.npages))
        assert memory.pager.statistics().write_faults == memory.npages

    def test_thread_without_python_state(self, memory):
        """A C thread that never ran Python gets its fault resolved too."""
        memory.frame(2)[0] = 42
        assert trap.touch_from_foreign_thread(memory.base + 2 * PAGE) == 42


class TestConcurrentFaults:
    def test_many_threads_same_and_distinct_pages(self, memory):
        """Eight threads faulting at once on shared and private pages all complete correctly."""
        a = memory.array(0, (memory.size // 8,), np.int64)
        words = PAGE // 8
        start = threading.Barrier(8)

        def worker(t: int) -> None:
            start.wait()
            for p in range(memory.npages):
                a[p * words + t] = t + 1  # every thread writes every page, its own word

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        view = a.reshape(memory.npages, words)[:, :8]
        assert (view == np.arange(1, 9)).all()


class TestRefusedFault:
    def test_fields_and_type(self, memory):
        """A refused write raises SegmentationFault (a MemoryError) with address, access, node, reason."""
        memory.pager.allow(4, 1, PROT_READ)
        a = memory.array(4 * PAGE, (16,), np.int64)
        with pytest.raises(td.SegmentationFault) as info:
            a[3] = 1
            trap.check()
        e = info.value
        assert isinstance(e, MemoryError)
        assert (e.address, e.access, e.node) == (memory.base + 4 * PAGE + 24, "write", 0)
        assert e.reason == "write to a read-only page"

    def test_faults_again_after_raise(self, memory):
        """Once raised, the same address faults again: no scratch page stays mapped."""
        memory.pager.allow(6, 1, PROT_NONE)
        a = memory.array(6 * PAGE, (16,), np.int64)
        for attempt in range(3):
            with pytest.raises(td.SegmentationFault, match="no mapping"):
                a[0] = 5
                trap.check()
        assert memory.pager.statistics().refused == 3
        assert memory.hat.prot[6] == PROT_NONE
        assert memory.frame(6)[:8].tolist() == [0] * 8  # the writes went to scratch

    def test_other_threads_go_on(self, memory):
        """A refused fault in one thread does not disturb faults resolving in others."""
        memory.pager.allow(0, 1, PROT_NONE)
        a = memory.array(0, (memory.size // 8,), np.int64)
        errors, stop = [], threading.Event()

        def refuser() -> None:
            while not stop.is_set():
                try:
                    a[0] = 1
                    trap.check()
                except td.SegmentationFault as e:
                    errors.append(e)

        th = threading.Thread(target=refuser)
        th.start()
        try:
            np.add(a[PAGE // 8:], 1, out=a[PAGE // 8:])
        finally:
            stop.set()
            th.join(timeout=60)
        assert errors and all(e.reason == "no mapping at this address" for e in errors)
        assert int(a[PAGE // 8:].sum()) == a.size - PAGE // 8

    def test_refused_inside_bulk_operation(self, memory):
        """A refused page in the middle of a GIL-released numpy operation raises after it returns."""
        memory.pager.allow(10, 2, PROT_NONE)
        a = memory.array(0, (memory.size // 8,), np.int64)
        with pytest.raises(td.SegmentationFault) as info:
            a[:] = 1
            trap.check()
        assert info.value.address == memory.base + 10 * PAGE
        assert (memory.hat.prot[10:12] == PROT_NONE).all()

    def test_handler_bug_is_refusal(self, memory, capsys):
        """A handler raising an unexpected exception refuses the fault; the process goes on."""
        def broken(address: int, access: int) -> None:
            raise KeyError("bug")

        memory.set_handler(broken)
        a = memory.array(0, (8,), np.int64)
        with pytest.raises(td.SegmentationFault, match="fault handler raised KeyError"):
            a[0]
            trap.check()
        assert "KeyError" in capsys.readouterr().err

    def test_refusal_from_c_loop(self, memory):
        """A refusal inside a GIL-released cffi loop is raised when the loop returns."""
        memory.set_handler(lambda addr, access: (_ for _ in ()).throw(FaultRefused("nope")))
        with pytest.raises(td.SegmentationFault, match="nope"):
            trap.touch(memory.base, 4, PAGE, write=1)

    def test_pickles(self):
        """SegmentationFault survives pickling with its fields (it crosses nodes)."""
        e = pickle.loads(pickle.dumps(td.SegmentationFault(0x1000, "read", 2, "why")))
        assert (e.address, e.access, e.node, e.reason) == (0x1000, "read", 2, "why")


class TestPortableDecode:
    def test_write_faults_twice(self, memory):
        """Portable decode grants read on the first fault; the write faults again and gets write."""
        trap.set_portable_decode(True)
        try:
            a = memory.array(0, (8,), np.int64)
            a[0] = 11
        finally:
            trap.set_portable_decode(False)
        stats = memory.pager.statistics()
        assert (stats.read_faults, stats.write_faults) == (1, 1)
        assert a[0] == 11 and memory.hat.prot[0] == PROT_WRITE


class TestInstall:
    def test_idempotent_and_reclaims(self):
        """install() is idempotent and takes SIGSEGV back from a handler installed after it."""
        r = run_script("""
            import faulthandler
            from tornado_dsm.kernel import trap
            trap.install(); trap.install()
            assert trap.is_installed()
            faulthandler.enable()          # replaces our handler
            assert not trap.is_installed()
            trap.install()                 # takes it back, chaining to faulthandler
            assert trap.is_installed()
            trap.uninstall()
            assert not trap.is_installed()
            print("ok")
        """)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


class TestChaining:
    CRASH = """
        import ctypes, faulthandler, sys
        {enable}
        from tornado_dsm.kernel import NodeMemory, KernelPager
        mem = NodeMemory(base=BASE, size=1 << 20)
        mem.set_handler(KernelPager(mem))
        def crash_here():
            ctypes.string_at(16)   # a real SIGSEGV outside every window
        crash_here()
    """

    def test_faulthandler_still_reports(self):
        """A crash outside every window reaches faulthandler: traceback printed, death by SIGSEGV."""
        r = run_script(self.CRASH.format(enable="faulthandler.enable()"))
        assert r.returncode == -signal.SIGSEGV, r.stderr
        assert "Segmentation fault" in r.stderr and "crash_here" in r.stderr

    def test_default_action(self):
        """Without faulthandler the process still dies by SIGSEGV."""
        r = run_script(self.CRASH.format(enable=""))
        assert r.returncode == -signal.SIGSEGV, r.stderr

    def test_sigbus_outside_windows_reaches_faulthandler(self):
        """A real SIGBUS outside every window (a mapped page past the end of its file) still reaches faulthandler."""
        r = run_script("""
            import ctypes, faulthandler, mmap, tempfile
            faulthandler.enable()
            from tornado_dsm.kernel import NodeMemory
            mem = NodeMemory(base=BASE, size=1 << 20)
            f = tempfile.TemporaryFile()
            f.truncate(4096)
            m = mmap.mmap(f.fileno(), 4096)
            f.truncate(0)                    # the page is past the end of the file now
            def bus_here():
                ctypes.string_at(ctypes.addressof(ctypes.c_char.from_buffer(m)), 1)
            bus_here()
        """)
        assert r.returncode == -signal.SIGBUS, r.stderr
        assert "Bus error" in r.stderr and "bus_here" in r.stderr


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
class TestFatalCases:
    def test_fault_inside_handler(self, backend):
        """A handler that touches the application view dies by the fault's signal with a clear message, never hangs."""
        r = run_script("""
            import numpy as np
            from tornado_dsm.kernel import NodeMemory
            mem = NodeMemory(base=BASE, size=1 << 20)
            other = mem.array(8 * 4096, (8,), np.int64)
            mem.set_handler(lambda addr, access: int(other[0]))
            mem.array(0, (8,), np.int64)[0]
        """, backend)
        assert r.returncode == -FAULT_SIGNAL[backend], r.stderr
        assert "fault inside the tornado_dsm fault handler" in r.stderr

    def test_refused_in_thread_without_python_state(self, backend):
        """A refused fault in a thread with no Python state dies by the fault's signal with a diagnostic."""
        r = run_script("""
            from tornado_dsm.kernel import NodeMemory, KernelPager, trap
            mem = NodeMemory(base=BASE, size=1 << 20)
            assert mem.backend == %r
            mem.set_handler(KernelPager(mem, allow_all=False))
            trap.touch_from_foreign_thread(mem.base)
        """ % backend, backend)
        assert r.returncode == -FAULT_SIGNAL[backend], r.stderr
        assert "no Python state" in r.stderr


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_refused_c_loop_longer_than_the_map_limit(backend):
    """A C loop refused on its first page, going on over more separate pages than vm.max_map_count, raises once."""
    r = run_script("""
        from tornado_dsm import SegmentationFault
        from tornado_dsm.kernel import NodeMemory, KernelPager, trap
        with open("/proc/sys/vm/max_map_count") as f:
            npages = int(f.read()) + 4096
        mem = NodeMemory(base=BASE, size=2 * npages * 4096)
        mem.set_handler(KernelPager(mem, allow_all=False))
        try:   # every other page, all refused: scratch pages that cannot merge, until the raise
            trap.touch(mem.base, npages, 2 * 4096, write=1)
        except SegmentationFault as e:
            print("raised", e.reason)
        print("resident", mem.resident_pages())
    """, backend)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["raised", "no", "mapping", "at", "this", "address", "resident", "0"], r.stdout


@pytest.mark.parametrize("backend", BACKEND_PARAMS[1:])
class TestUffdMappings:
    def test_refused_fault_heals_the_split(self, backend, memory):
        """A refused fault splits the registered mapping only until it is raised; then it is one mapping again."""
        memory.pager.allow(5, 1, PROT_NONE)
        a = memory.array(0, (memory.size // 8,), np.int64)
        a[0] = 1
        assert window_mappings(memory) == 1
        with pytest.raises(td.SegmentationFault):
            a[5 * PAGE // 8] = 1
            trap.check()
        assert window_mappings(memory) == 1
        memory.pager.allow(5, 1, PROT_WRITE)
        a[5 * PAGE // 8] = 6                  # the restored page is registered: it faults and resolves
        assert memory.frame(5)[0] == 6 and memory.hat.prot[5] == PROT_WRITE

    def test_lost_pte_is_put_back_in_c(self, backend, memory):
        """A page whose entry the kernel dropped behind the HAT is mapped again by the trap, without the handler."""
        a = memory.array(0, (memory.size // 8,), np.int64)
        a[0] = 42
        faults = memory.pager.statistics()
        assert lib.madvise(ffi.cast("void *", memory.base), PAGE, lib.MADV_DONTNEED) == 0
        assert a[0] == 42
        a[1] = 43
        assert memory.pager.statistics() == faults and memory.hat.prot[0] == PROT_WRITE

    def test_read_grant_is_write_protected(self, backend, memory):
        """A page granted read on uffd faults on the first store (write protection), like PROT_READ."""
        memory.pager.allow(2, 1, PROT_READ)
        a = memory.array(2 * PAGE, (8,), np.int64)
        memory.frame(2)[:8] = 7
        assert a[0] == int.from_bytes(bytes([7] * 8), "little")
        with pytest.raises(td.SegmentationFault, match="read-only"):
            a[0] = 1
            trap.check()
        assert memory.frame(2)[0] == 7
