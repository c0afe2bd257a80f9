/*
 * The trap: tornado_dsm's SIGSEGV handler.
 *
 * Included into the cffi-generated extension (see _build.py), so Python.h is
 * already in scope and the extern "Python" callback td_py_fault is declared
 * by cffi below this file's prelude (we declare it ourselves, as cffi asks).
 *
 * Why a signal handler that calls Python: the faulting thread runs its own
 * fault path (Tornado's rule: the faulting processor handles the fault), so
 * no pager thread and no cross-CPU wake-up is on the path.  cffi's callback
 * takes the GIL if the thread does not hold it; blocking calls inside the
 * Python handler release it again, so a fault that waits on another node
 * never stops the rest of the process.
 *
 * Contract of td_trap_handler, for a SIGSEGV at address A:
 *   1. A outside every registered window -> chain to the previous handler
 *      exactly as if the trap were not installed (faulthandler, SIG_DFL, ...).
 *   2. A fault while this thread is already inside the handler -> fatal, with
 *      a message; never a hang and never a silent retry loop.
 *   3. Decode read/write: x86-64 REG_ERR bit 1; portable mode (or another
 *      architecture): a page already readable in the HAT faulted on a write,
 *      otherwise it is a read (grant read first, a write faults again).
 *   4. Resolve: a FLOOR window resolves in C (mprotect read-write), the
 *      benchmark's floor; a PYTHON window calls td_py_fault in this thread.
 *   5. Refused: map a private scratch page over the faulting page so the
 *      instruction completes, and arm an asynchronous SegmentationFault in
 *      this thread; raising it restores the real mapping (restore_scratch).
 *      Until it is raised, further faults of that thread in any window go
 *      to scratch without calling Python (the statement is failing anyway;
 *      Python code would receive the armed exception instead).  A thread
 *      with no Python thread state can never raise it: that case is fatal
 *      with a diagnostic.
 */

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define TD_MAX_WINDOWS 32
#define TD_MODE_PYTHON 0
#define TD_MODE_FLOOR 1
#define TD_ACCESS_READ 1
#define TD_ACCESS_WRITE 2
#define TD_PROT_NONE 0
#define TD_PROT_READ 1
#define TD_PROT_WRITE 2 /* read-write */
#define TD_FAULT_REFUSED 1  /* td_py_fault results; 0: resolved */
#define TD_FAULT_RETRY 2    /* an interrupt fired before the handler ran: fault again */

static int td_py_fault(int window, uintptr_t addr, int access);
int td_hat_protect(int slot, size_t first, size_t count, int prot);

typedef struct {
    volatile int active;
    uintptr_t base;
    size_t npages;
    volatile uint8_t *prot; /* the HAT's per-page protection array (numpy) */
    int memfd;              /* the node's frames: page v at offset v*PAGE */
    int mode;
    int node;
    pthread_mutex_t hat_lock; /* orders mprotect + prot[] updates of the HAT */
    uint64_t hat_calls;       /* mprotect calls made by td_hat_protect */
    uint64_t hat_pages;       /* pages those calls changed */
} td_window;

static td_window td_windows[TD_MAX_WINDOWS];
static struct sigaction td_previous;
static volatile int td_installed;
static volatile int td_portable_decode;
static size_t td_page = 4096;
static PyObject *td_async_class; /* tornado_dsm.kernel.machine._trap._AsyncSegmentationFault */

static __thread int td_depth;          /* > 0 while this thread runs the handler */
/* 1: the thread had a Python thread state at its first fault; 2: it had none
 * (a C thread).  Decided before the first callback, because cffi keeps the
 * thread state it creates for a C thread alive afterwards. */
static __thread int td_thread_kind;
static __thread uintptr_t td_nested_at; /* the fault being handled */
static __thread uintptr_t *td_scratch;  /* pages mapped to scratch, not yet raised */
static __thread size_t td_nscratch, td_capscratch;

/* Write a message to stderr with write(2) only (async-signal-safe). */
static void td_say(const char *msg)
{
    size_t n = strlen(msg);
    while (n > 0) {
        ssize_t w = write(2, msg, n);
        if (w <= 0)
            return;
        msg += w;
        n -= (size_t)w;
    }
}

/* Pass the signal on to whoever had SIGSEGV before us, exactly. */
static void td_chain(int sig, siginfo_t *info, void *ctx)
{
    if (td_previous.sa_flags & SA_SIGINFO) {
        td_previous.sa_sigaction(sig, info, ctx);
        return;
    }
    if (td_previous.sa_handler == SIG_DFL || td_previous.sa_handler == SIG_IGN) {
        /* A real fault cannot be ignored: die the way the default would. */
        signal(SIGSEGV, SIG_DFL);
        raise(SIGSEGV);
        return;
    }
    td_previous.sa_handler(sig);
}

/* Die by SIGSEGV after a message, through the previous handler (traceback). */
static void td_fatal(const char *what, uintptr_t addr, int sig, siginfo_t *info, void *ctx)
{
    char buf[256];
    snprintf(buf, sizeof buf, "tornado_dsm: fatal: %s at %#lx\n", what, (unsigned long)addr);
    td_say(buf);
    td_chain(sig, info, ctx);
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
}

static int td_find_window(uintptr_t addr)
{
    for (int i = 0; i < TD_MAX_WINDOWS; i++) {
        td_window *w = &td_windows[i];
        if (w->active && addr >= w->base && addr < w->base + w->npages * td_page)
            return i;
    }
    return -1;
}

static int td_decode_access(td_window *w, size_t page, void *ctx)
{
#if defined(__x86_64__)
    if (!td_portable_decode) {
        ucontext_t *uc = (ucontext_t *)ctx;
        return (uc->uc_mcontext.gregs[REG_ERR] & 2) ? TD_ACCESS_WRITE : TD_ACCESS_READ;
    }
#else
    (void)ctx;
#endif
    return w->prot[page] >= TD_PROT_READ ? TD_ACCESS_WRITE : TD_ACCESS_READ;
}

/* Remember a scratch page of this thread; 0 on success. */
static int td_push_scratch(uintptr_t page_addr)
{
    if (td_nscratch == td_capscratch) {
        size_t cap = td_capscratch ? 2 * td_capscratch : 16;
        uintptr_t *grown = realloc(td_scratch, cap * sizeof *grown);
        if (grown == NULL)
            return -1;
        td_scratch = grown;
        td_capscratch = cap;
    }
    td_scratch[td_nscratch++] = page_addr;
    return 0;
}

/* Refused fault: let the instruction finish on scratch, raise in this thread. */
static void td_refuse(uintptr_t page_addr, int sig, siginfo_t *info, void *ctx)
{
    if (td_thread_kind != 1 || td_async_class == NULL)
        td_fatal("unresolvable fault in a thread that has no Python state "
                 "(it can never raise SegmentationFault)", page_addr, sig, info, ctx);
    void *p = mmap((void *)page_addr, td_page, PROT_READ | PROT_WRITE,
                   MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || td_push_scratch(page_addr) != 0)
        td_fatal("cannot map a scratch page for an unresolvable fault", page_addr, sig, info, ctx);
    PyGILState_STATE g = PyGILState_Ensure();
    if (td_nscratch == 1)
        PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), td_async_class);
    PyGILState_Release(g);
}

static void td_trap_handler(int sig, siginfo_t *info, void *ctx)
{
    int saved_errno = errno;
    uintptr_t addr = (uintptr_t)info->si_addr;
    int wi = td_find_window(addr);
    if (wi < 0) {
        td_chain(sig, info, ctx);
        errno = saved_errno;
        return;
    }
    if (td_depth > 0) {
        char what[160];
        snprintf(what, sizeof what, "page fault inside the tornado_dsm fault handler (the "
                 "handler touched the application view) while handling the fault at %#lx; "
                 "nested fault", (unsigned long)td_nested_at);
        td_fatal(what, addr, sig, info, ctx);
    }
    td_window *w = &td_windows[wi];
    size_t page = (addr - w->base) / td_page;
    uintptr_t page_addr = w->base + page * td_page;
    int access = td_decode_access(w, page, ctx);
    if (td_nscratch > 0) {
        /* This thread already fails with a pending SegmentationFault: running
         * Python now would deliver it inside the callback.  The statement is
         * aborted anyway, so its further accesses go to scratch too. */
        td_refuse(page_addr, sig, info, ctx);
        errno = saved_errno;
        return;
    }
    if (w->mode == TD_MODE_FLOOR) {
        if (td_hat_protect(wi, page, 1, TD_PROT_WRITE) != 0)
            td_fatal("floor mprotect failed", addr, sig, info, ctx);
        errno = saved_errno;
        return;
    }
    if (td_thread_kind == 0)
        td_thread_kind = PyGILState_GetThisThreadState() != NULL ? 1 : 2;
    td_depth++;
    td_nested_at = addr;
    td_handler_enter();                 /* _interrupt.c: no interrupt lands in here */
    int rc = td_py_fault(wi, addr, access);
    td_depth--;
    td_handler_leave(rc == TD_FAULT_RETRY);
    if (rc == TD_FAULT_REFUSED)
        td_refuse(page_addr, sig, info, ctx);
    errno = saved_errno;
}

/* Install the handler (idempotent).  If someone replaced it since, chain to
 * them and take SIGSEGV back.  Returns 0 or -errno. */
int td_trap_install(void)
{
    struct sigaction cur, sa;
    td_page = (size_t)sysconf(_SC_PAGESIZE);
    if (sigaction(SIGSEGV, NULL, &cur) != 0)
        return -errno;
    if (td_installed && (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == td_trap_handler)
        return 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = td_trap_handler;
    /* NODEFER: a nested fault must reach us (to be reported), not kill silently. */
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    td_previous = cur;
    if (sigaction(SIGSEGV, &sa, NULL) != 0)
        return -errno;
    td_installed = 1;
    return 0;
}

/* Give SIGSEGV back to the previous handler.  Returns 0 or -errno. */
int td_trap_uninstall(void)
{
    struct sigaction cur;
    if (!td_installed)
        return 0;
    if (sigaction(SIGSEGV, NULL, &cur) != 0)
        return -errno;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == td_trap_handler)
        if (sigaction(SIGSEGV, &td_previous, NULL) != 0)
            return -errno;
    td_installed = 0;
    return 0;
}

/* 1 if our handler is the one the kernel will call for SIGSEGV. */
int td_trap_is_current(void)
{
    struct sigaction cur;
    if (sigaction(SIGSEGV, NULL, &cur) != 0)
        return 0;
    return (cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == td_trap_handler;
}

/* Bind the class armed for refused faults (needs the GIL; cffi released it). */
int td_trap_bind_python(void)
{
    return td_bind_trap_class("_AsyncSegmentationFault", &td_async_class);   /* _interrupt.c */
}

/* Register a window; returns its slot or -1 when the table is full. */
int td_window_register(uintptr_t base, size_t npages, uint8_t *prot, int memfd, int mode, int node)
{
    for (int i = 0; i < TD_MAX_WINDOWS; i++) {
        if (!td_windows[i].active) {
            td_window *w = &td_windows[i];
            w->base = base;
            w->npages = npages;
            w->prot = prot;
            w->memfd = memfd;
            w->mode = mode;
            w->node = node;
            pthread_mutex_init(&w->hat_lock, NULL);
            w->hat_calls = w->hat_pages = 0;
            __atomic_store_n(&w->active, 1, __ATOMIC_SEQ_CST);
            return i;
        }
    }
    return -1;
}

void td_window_unregister(int slot)
{
    if (slot >= 0 && slot < TD_MAX_WINDOWS)
        __atomic_store_n(&td_windows[slot].active, 0, __ATOMIC_SEQ_CST);
}

void td_window_set_mode(int slot, int mode)
{
    if (slot >= 0 && slot < TD_MAX_WINDOWS)
        td_windows[slot].mode = mode;
}

void td_trap_set_portable(int on) { td_portable_decode = on; }

/* The HAT's one primitive: set pages [first, first+count) of a window to
 * prot (TD_PROT_*) with one mprotect, and record it in the prot array, both
 * under the window's HAT lock so the array always matches the page tables.
 * The caller (HAT.protect) has checked the run.  Returns 0 or -errno. */
int td_hat_protect(int slot, size_t first, size_t count, int prot)
{
    static const int os_prot[3] = {PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE};
    td_window *w = &td_windows[slot];
    int rc = 0;
    pthread_mutex_lock(&w->hat_lock);
    if (mprotect((void *)(w->base + first * td_page), count * td_page, os_prot[prot]) != 0) {
        rc = -errno;
    } else {
        memset((void *)(w->prot + first), prot, count);
        w->hat_calls++;
        w->hat_pages += count;
    }
    pthread_mutex_unlock(&w->hat_lock);
    return rc;
}

/* Counters of td_hat_protect for a window: out[0] calls, out[1] pages. */
void td_hat_counters(int slot, uint64_t *out)
{
    td_window *w = &td_windows[slot];
    pthread_mutex_lock(&w->hat_lock);
    out[0] = w->hat_calls;
    out[1] = w->hat_pages;
    pthread_mutex_unlock(&w->hat_lock);
}

/* Put back the real frame (with the HAT's protection) under every scratch
 * page of this thread.  Called when the SegmentationFault is raised.
 * Returns the number of pages restored, or -errno. */
int td_trap_restore_scratch(void)
{
    int restored = 0;
    for (size_t i = 0; i < td_nscratch; i++) {
        uintptr_t a = td_scratch[i];
        int wi = td_find_window(a);
        if (wi < 0)
            continue; /* the window is gone: its whole range was unmapped */
        td_window *w = &td_windows[wi];
        size_t page = (a - w->base) / td_page;
        int prot = w->prot[page] == TD_PROT_WRITE ? PROT_READ | PROT_WRITE
                 : w->prot[page] == TD_PROT_READ ? PROT_READ : PROT_NONE;
        void *p = mmap((void *)a, td_page, prot, MAP_FIXED | MAP_SHARED, w->memfd,
                       (off_t)(page * td_page));
        if (p == MAP_FAILED)
            return -errno;
        restored++;
    }
    td_nscratch = 0;
    return restored;
}

/* Touch n pages from addr, stride bytes apart, with the GIL released (cffi
 * releases it around calls): the "GIL-released trigger".  write != 0 stores
 * that byte value; write == 0 reads.  If ns is not NULL,
 * ns[i] receives the latency of touch i in nanoseconds.  Returns the sum of
 * the bytes read (so the reads cannot be optimised away). */
uint64_t td_touch(uintptr_t addr, size_t n, size_t stride, int write, uint64_t *ns)
{
    uint64_t sum = 0;
    struct timespec t0, t1;
    for (size_t i = 0; i < n; i++) {
        volatile uint8_t *p = (volatile uint8_t *)(addr + i * stride);
        if (ns)
            clock_gettime(CLOCK_MONOTONIC, &t0);
        if (write)
            *p = (uint8_t)write; /* a pure store: one write fault, no read first */
        else
            sum += *p;
        if (ns) {
            clock_gettime(CLOCK_MONOTONIC, &t1);
            ns[i] = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000u + (uint64_t)(t1.tv_nsec - t0.tv_nsec);
        }
    }
    return sum;
}

typedef struct {
    uintptr_t addr;
    int write;
    uint64_t result;
} td_foreign_arg;

static void *td_foreign_main(void *p)
{
    td_foreign_arg *a = p;
    a->result = td_touch(a->addr, 1, 1, a->write, NULL);
    return NULL;
}

/* Touch one byte from a new pthread that has never run Python (like a BLAS
 * or OpenMP worker), and join it.  Returns the byte read, or -1 if the
 * thread could not start. */
int64_t td_touch_foreign(uintptr_t addr, int write)
{
    pthread_t t;
    td_foreign_arg a = {addr, write, 0};
    if (pthread_create(&t, NULL, td_foreign_main, &a) != 0)
        return -1;
    pthread_join(t, NULL);
    return (int64_t)a.result;
}
