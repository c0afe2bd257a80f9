"""Node memory: one sparse memfd, an application view at a fixed base, a kernel view."""

from __future__ import annotations

import errno

import numpy as np
import pytest

import tornado_dsm as td
from tornado_dsm.kernel import PAGE, PROT_WRITE, KernelPager, MemoryLayoutError, NodeMemory, trap
from tornado_dsm.kernel.machine._lib import ffi, lib

from helpers import BACKEND_PARAMS, fresh_base
from test_trap import run_script, window_mappings


class TestLayout:
    def test_collision_with_window(self):
        """A second window at the same base fails naming the address and the base= option."""
        base = fresh_base()
        with NodeMemory(base=base, size=16 * PAGE):
            with pytest.raises(MemoryLayoutError) as info:
                NodeMemory(base=base + 4 * PAGE, size=16 * PAGE)
        assert info.value.errno == errno.EEXIST
        assert f"{base + 4 * PAGE:#x}" in str(info.value) and "base=" in str(info.value)

    def test_collision_with_foreign_mapping(self):
        """A mapping that is not ours at the base is never replaced."""
        base = fresh_base()
        flags = lib.MAP_PRIVATE | lib.MAP_ANONYMOUS | lib.MAP_FIXED_NOREPLACE
        p = lib.mmap(ffi.cast("void *", base), PAGE, lib.PROT_READ | lib.PROT_WRITE, flags, -1, 0)
        assert int(ffi.cast("uintptr_t", p)) == base
        try:
            ffi.cast("char *", p)[0] = b"x"
            with pytest.raises(MemoryLayoutError, match="collides"):
                NodeMemory(base=base, size=4 * PAGE)
            assert ffi.cast("char *", p)[0] == b"x"  # untouched
        finally:
            lib.munmap(p, PAGE)

    @pytest.mark.parametrize("base,size", [(0, PAGE), (fresh_base() + 1, PAGE), (fresh_base(), 100),
                                           (fresh_base(), 0), (0x7FFF_FFFF_0000, 1 << 30)])
    def test_bad_geometry(self, base, size):
        """A misaligned, empty or out-of-range window is a ValueError naming the value."""
        with pytest.raises(ValueError, match="base|size|window"):
            NodeMemory(base=base, size=size)

    def test_sparse(self):
        """A 1 GiB window costs no frames until pages are written."""
        with NodeMemory(base=fresh_base(), size=1 << 30) as mem:
            mem.set_handler(KernelPager(mem))
            assert mem.resident_pages() == 0
            trap.touch(mem.base, 3, 100 * PAGE, write=1)
            assert mem.resident_pages() == 3


class TestTwoViews:
    def test_kernel_writes_invisible_until_mapped(self):
        """Kernel-view writes cannot be seen through the application view until the page is mapped."""
        with NodeMemory(base=fresh_base(), size=8 * PAGE) as mem:
            pager = KernelPager(mem, allow_all=False)
            mem.set_handler(pager)
            mem.frame(1)[:8] = np.arange(8, dtype=np.uint8)
            app = mem.array(PAGE, (8,), np.uint8)
            with pytest.raises(td.SegmentationFault, match="no mapping"):
                app.tolist()
                trap.check()
            pager.allow(1, 1, PROT_WRITE)
            assert app.tolist() == list(range(8))

    def test_release_returns_zeros(self, memory):
        """release() unmaps the pages and punches the frames out: they read as zeros again."""
        a = memory.array(0, (memory.size // 8,), np.int64)
        a[:] = 7
        before = memory.resident_pages()
        memory.release(2, 4)
        assert memory.resident_pages() == before - 4
        assert (memory.hat.prot[2:6] == 0).all()
        assert int(a[2 * PAGE // 8]) == 0 and int(a[0]) == 7


class TestDiscard:
    def test_discard_punches_unmapped_frames(self, memory):
        """discard() gives back the frames of pages already unmapped, with no mprotect of its own."""
        a = memory.array(0, (memory.size // 8,), np.int64)
        a[:] = 7
        memory.hat.unmap(2, 4)
        calls, before = memory.hat.statistics().mprotect_calls, memory.resident_pages()
        memory.discard(2, 4)
        assert memory.resident_pages() == before - 4
        assert memory.hat.statistics().mprotect_calls == calls
        assert bytes(memory.frame(3)) == bytes(PAGE)

    def test_discard_of_mapped_page_is_an_internal_error(self, memory):
        """discard() of a page still mapped stops loudly and keeps the page's bytes."""
        a = memory.array(0, (memory.size // 8,), np.int64)
        a[:] = 7
        for count in (1, 2):   # a single page and a run take different checks
            with pytest.raises(td.DSMInternalError, match="still mapped"):
                memory.discard(0, count)
        assert int(a[0]) == 7 and int(a[PAGE // 8]) == 7


class TestBackend:
    def test_backend_taken_is_named(self, memory, backend):
        """A window says which fault backend it took, and so do its HAT statistics."""
        assert memory.backend == backend and memory.hat.statistics().backend == backend

    def test_auto_takes_uffd_where_allowed(self):
        """backend='auto' takes uffd where the kernel allows it, else mprotect, and says how it chose."""
        from tornado_dsm.kernel.machine._backend import uffd_support
        with NodeMemory(base=fresh_base(), size=4 * PAGE, backend="auto") as mem:
            assert mem.backend == ("uffd" if uffd_support().ok else "mprotect")
            assert mem.backend_note.startswith("auto:")

    def test_bad_backend_names_the_accepted(self):
        """An unknown backend is a ValueError naming the accepted ones."""
        with pytest.raises(ValueError, match="'auto', 'uffd', 'mprotect'"):
            NodeMemory(base=fresh_base(), size=4 * PAGE, backend="mmap")

    def test_environment_sets_the_default(self, monkeypatch, backend):
        """$TORNADO_DSM_BACKEND is the backend of a window that names none."""
        monkeypatch.setenv("TORNADO_DSM_BACKEND", backend)
        with NodeMemory(base=fresh_base(), size=4 * PAGE) as mem:
            assert mem.backend == backend


class TestMapLimit:
    def test_enomem_names_sysctl(self):
        """On mprotect, running out of kernel mappings gives an error advising uffd and naming vm.max_map_count."""
        r = run_script("""
            from tornado_dsm.kernel import NodeMemory, MemoryLayoutError
            limit = int(open("/proc/sys/vm/max_map_count").read())
            mem = NodeMemory(base=BASE, size=(2 * limit + 64) * 4096)
            try:
                for p in range(0, 2 * limit + 64, 2):   # every other page: one mapping each
                    mem.hat.map(p, 1, 1)
            except MemoryLayoutError as e:
                print(e)
        """, "mprotect")
        assert r.returncode == 0, r.stderr
        assert "vm.max_map_count" in r.stdout and "backend='uffd'" in r.stdout

    def test_fault_at_the_limit_raises_once(self):
        """On mprotect, a fault at the map limit raises one MemoryLayoutError, prints nothing, and the window goes on."""
        r = run_script("""
            import numpy as np
            from tornado_dsm.kernel import NodeMemory, KernelPager, MemoryLayoutError, trap
            limit = int(open("/proc/sys/vm/max_map_count").read())
            npages = 2 * limit + 64
            mem = NodeMemory(base=BASE, size=npages * 4096)
            mem.set_handler(KernelPager(mem))
            a = mem.array(0, (npages * 512,), np.int64)
            errors = 0
            try:
                for p in range(0, npages, 2):            # every other page written: one mapping each
                    a[p * 512] = p
                    trap.check()
            except MemoryLayoutError as e:
                errors += 1
                print("error:", e)
            stats = mem.hat.statistics()
            a[0] += 1                                    # the window goes on: in-core faults map again
            print("after:", errors, stats.sheds, int(a[0]), int(a[(p - 2) * 512]) == p - 2, stats.pages_write)
        """, "mprotect")
        assert r.returncode == 0, r.stderr
        assert "Traceback" not in r.stderr and r.stderr.count("MemoryLayoutError") == 0, r.stderr
        assert r.stdout.count("error:") == 1 and "backend='uffd'" in r.stdout
        after = r.stdout.split("after:")[1].split()
        assert after[:4] == ["1", "1", "1", "True"]   # one error, one shed, the pages kept their values
        assert after[4] == "0"                         # every page was revoked by the shed

    @pytest.mark.parametrize("backend", BACKEND_PARAMS[1:])
    def test_uffd_never_splits(self, backend):
        """On uffd, alternating protections over more pages than the map limit allows stay one mapping."""
        with open("/proc/sys/vm/max_map_count") as f:
            npages = 2 * int(f.read()) + 64
        with NodeMemory(base=fresh_base(), size=npages * PAGE, backend=backend) as mem:
            mem.set_handler(KernelPager(mem))
            trap.touch(mem.base, npages // 2, 2 * PAGE, write=1)   # every other page read-write
            mem.hat.protect_pages(np.arange(0, npages, 4), 1)      # every fourth read-only
            assert window_mappings(mem) == 1
            assert mem.hat.statistics().pages_write == npages // 4
