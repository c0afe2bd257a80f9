"""cffi (API mode) build of tornado_dsm.kernel.machine._core from the C files beside it.

Run by setuptools through setup.py's ``cffi_modules``; ``pip install .`` and
``pip install -e .`` both build it.
"""

import pathlib

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent

CDEF = """
#define PROT_NONE ...
#define PROT_READ ...
#define PROT_WRITE ...
#define MAP_SHARED ...
#define MAP_PRIVATE ...
#define MAP_ANONYMOUS ...
#define MAP_FIXED ...
#define MAP_FIXED_NOREPLACE ...
#define MAP_NORESERVE ...
#define FALLOC_FL_KEEP_SIZE ...
#define FALLOC_FL_PUNCH_HOLE ...
#define MADV_DONTNEED ...
#define UFFD_FEATURE_SIGBUS ...
#define UFFD_FEATURE_MINOR_SHMEM ...
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM ...
#define TD_UFFD_FEATURES ...
#define TD_BACKEND_MPROTECT ...
#define TD_BACKEND_UFFD ...
#define TD_HAT_SHED ...
#define TD_HAT_SHED_REFUSED ...
void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
int munmap(void *addr, size_t length);
int mprotect(void *addr, size_t len, int prot);
int fallocate(int fd, int mode, long offset, long len);
int madvise(void *addr, size_t length, int advice);
int close(int fd);

extern "Python" int td_py_fault(int window, uintptr_t addr, int access);
int td_trap_install(void);
int td_trap_uninstall(void);
int td_trap_is_current(void);
int td_trap_bind_python(void);
int td_window_register(uintptr_t base, size_t npages, uint8_t *prot, int memfd, int mode, int node,
                       int backend, int uffd);
void td_window_unregister(int slot);
void td_window_set_mode(int slot, int mode);
void td_trap_set_portable(int on);
int td_trap_restore_scratch(void);
int td_hat_protect(int slot, size_t first, size_t count, int prot);
void td_hat_counters(int slot, uint64_t *out);
uint64_t td_touch(uintptr_t addr, size_t n, size_t stride, int write, uint64_t *ns);
int64_t td_touch_foreign(uintptr_t addr, int write);
int td_interrupt_thread(uintptr_t tid);
void td_interrupt_defer(void);
int td_interrupt_bind(void);
int td_in_handler(void);

int td_uffd_open(void);
int td_uffd_api(int fd, uint64_t features, uint64_t *available);
int td_uffd_probe_continue_wp(int fd);
int td_uffd_register(int fd, uintptr_t base, size_t len);

uint32_t td_load32(uintptr_t a);
uint64_t td_load64(uintptr_t a);
void td_store32(uintptr_t a, uint32_t v);
void td_store64(uintptr_t a, uint64_t v);
uint32_t td_xchg32(uintptr_t a, uint32_t v);
uint64_t td_xchg64(uintptr_t a, uint64_t v);
uint32_t td_fadd32(uintptr_t a, uint32_t v);
uint64_t td_fadd64(uintptr_t a, uint64_t v);
uint32_t td_cas32(uintptr_t a, uint32_t expected, uint32_t desired);
uint64_t td_cas64(uintptr_t a, uint64_t expected, uint64_t desired);
uint32_t td_tas32(uintptr_t a);
uint64_t td_tas64(uintptr_t a);
void td_fadd_loop64(uintptr_t a, uint64_t n);

int td_spin_readable(int fd, int64_t max_ns);
"""

PRELUDE = """
#include <fcntl.h>
#include <linux/falloc.h>
#include <time.h>
#include "_interrupt.c"
#include "_trap.c"
#include "_uffd.c"
#include "_atomic.c"
#include "_spin.c"
"""

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
ffibuilder.set_source(
    "tornado_dsm.kernel.machine._core",
    PRELUDE,
    include_dirs=[str(HERE)],
    depends=[str(HERE / "_trap.c"), str(HERE / "_uffd.c"), str(HERE / "_atomic.c"), str(HERE / "_interrupt.c"),
             str(HERE / "_spin.c")],
    extra_compile_args=["-O2", "-Wall", "-Wno-unused-function", "-Werror=implicit-function-declaration"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
