"""Node memory: one sparse memfd, an application view at a fixed base, a kernel view."""

from __future__ import annotations

import errno

import numpy as np
import pytest

import tornado_dsm as td
from tornado_dsm.kernel import PAGE, PROT_WRITE, KernelPager, MemoryLayoutError, NodeMemory, trap
from tornado_dsm.kernel.machine._lib import ffi, lib

from helpers import fresh_base
from test_trap import run_script


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


class TestMapLimit:
    def test_enomem_names_sysctl(self):
        """Running out of kernel mappings gives an error naming vm.max_map_count."""
        r = run_script("""
            from tornado_dsm.kernel import NodeMemory, MemoryLayoutError
            limit = int(open("/proc/sys/vm/max_map_count").read())
            mem = NodeMemory(base=BASE, size=(2 * limit + 64) * 4096)
            try:
                for p in range(0, 2 * limit + 64, 2):   # every other page: one mapping each
                    mem.hat.map(p, 1, 1)
            except MemoryLayoutError as e:
                print(e)
        """)
        assert r.returncode == 0, r.stderr
        assert "vm.max_map_count" in r.stdout
