/*
 * The trap: tornado_dsm's SIGSEGV and SIGBUS handler.
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
 * Two fault backends share this handler (a window says which it uses):
 * "mprotect" windows fault with SIGSEGV (the HAT's protections are
 * mprotect-ed page runs); "uffd" windows fault with SIGBUS (the view stays
 * one read-write mapping registered with a userfaultfd whose SIGBUS feature
 * signals the faulting thread instead of queueing an event; _uffd.c).  Both
 * signals go through the same steps; the previous handler of each is kept
 * apart, and a fatal case dies by the signal that arrived.
 *
 * Contract of td_trap_handler, for a SIGSEGV or SIGBUS at address A:
 *   1. A outside every registered window -> chain to the previous handler
 *      of that signal exactly as if the trap were not installed
 *      (faulthandler, SIG_DFL, ...).
 *   2. A fault while this thread is already inside the handler -> fatal, with
 *      a message; never a hang and never a silent retry loop.
 *   3. Decode read/write: x86-64 REG_ERR bit 1 (the kernel sets it for a
 *      userfaultfd SIGBUS too); portable mode (or another architecture): a
 *      page already readable in the HAT faulted on a write, otherwise it is
 *      a read (grant read first, a write faults again).
 *   3b. uffd only: the HAT already grants the access -> the PTE went away
 *      without the HAT (td_uffd_refresh puts it back, in C).  With mprotect
 *      this cannot persist (the protection is in the VMA), so the handler
 *      only ever sees it as a race it answers by returning.
 *   4. Resolve: a FLOOR window resolves in C (the HAT grants read-write),
 *      the benchmark's floor; a PYTHON window calls td_py_fault in this thread.
 *   5. Refused: map a private scratch page over the faulting page so the
 *      instruction completes, and arm an asynchronous SegmentationFault in
 *      this thread; raising it restores the real mapping (restore_scratch).
 *      Until it is raised, further faults of that thread in any window go
 *      to scratch without calling Python (the statement is failing anyway;
 *      Python code would receive the armed exception instead); a thread
 *      keeps at most TD_SCRATCH_MAX of them, putting older ones back.  A thread
 *      with no Python thread state can never raise it: that case is fatal
 *      with a diagnostic.  On a uffd window the scratch page splits the
 *      registered mapping in three until the fault is raised; the restore
 *      registers the page again and the kernel merges it back (_uffd.c).
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
/* The HAT lock is striped by page-table span (512 pages, 2 MiB), so threads
 * changing pages of different spans do not wait for each other: the uffd
 * backend's page-table changes run in parallel in the kernel too.  The
 * mprotect backend uses stripe 0 only: every mprotect takes the address
 * space lock for writing anyway, and a shed changes the whole window. */
#define TD_HAT_STRIPES 64
#define TD_HAT_SPAN_SHIFT 9
#define TD_MODE_PYTHON 0
#define TD_MODE_FLOOR 1
#define TD_ACCESS_READ 1
#define TD_ACCESS_WRITE 2
#define TD_PROT_NONE 0
#define TD_PROT_READ 1
#define TD_PROT_WRITE 2 /* read-write */
#define TD_FAULT_REFUSED 1  /* td_py_fault results; 0: resolved */
#define TD_FAULT_RETRY 2    /* an interrupt fired before the handler ran: fault again */
#define TD_BACKEND_MPROTECT 0
#define TD_BACKEND_UFFD 1
/* td_hat_protect's results besides 0 and -errno (mprotect backend, map limit) */
#define TD_HAT_SHED 1         /* the window was shed to no access; the request is met */
#define TD_HAT_SHED_REFUSED 2 /* the window was shed; the request (an upgrade) is not */

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
    int backend;              /* TD_BACKEND_* */
    int uffd;                 /* the window's userfaultfd (uffd backend), else -1 */
    pthread_mutex_t hat_lock[TD_HAT_STRIPES]; /* order page-table + prot[] updates of the HAT */
    uint64_t hat_calls;       /* protection changes made by td_hat_protect (atomic) */
    uint64_t hat_pages;       /* pages those calls changed (atomic) */
    uint64_t hat_sheds;       /* times the window shed every mapping (map limit) */
} td_window;

static td_window td_windows[TD_MAX_WINDOWS];

/* The stripes of the HAT lock that cover pages [first, first + count). */
static void td_stripes(td_window *w, size_t first, size_t count, size_t *lo, size_t *n)
{
    if (w->backend != TD_BACKEND_UFFD) {
        *lo = 0, *n = 1;
        return;
    }
    size_t a = first >> TD_HAT_SPAN_SHIFT, b = (first + count - 1) >> TD_HAT_SPAN_SHIFT;
    *lo = a % TD_HAT_STRIPES;
    *n = b - a + 1 < TD_HAT_STRIPES ? b - a + 1 : TD_HAT_STRIPES;
}

/* Lock the HAT for pages [first, first + count): their stripes, in
 * increasing index order (two runs never wait for each other in a cycle). */
static void td_hat_lock(td_window *w, size_t first, size_t count)
{
    size_t lo, n;
    td_stripes(w, first, count, &lo, &n);
    for (size_t i = 0; i < TD_HAT_STRIPES; i++)
        if ((i + TD_HAT_STRIPES - lo) % TD_HAT_STRIPES < n)
            pthread_mutex_lock(&w->hat_lock[i]);
}

static void td_hat_unlock(td_window *w, size_t first, size_t count)
{
    size_t lo, n;
    td_stripes(w, first, count, &lo, &n);
    for (size_t i = 0; i < TD_HAT_STRIPES; i++)
        if ((i + TD_HAT_STRIPES - lo) % TD_HAT_STRIPES < n)
            pthread_mutex_unlock(&w->hat_lock[i]);
}

/* The uffd backend (_uffd.c, included after this file). */
static int td_uffd_protect(td_window *w, size_t first, size_t count, int prot);
static int td_uffd_refresh(td_window *w, size_t page, int access);
static int td_uffd_restore(td_window *w, uintptr_t page_addr, size_t page);
static struct sigaction td_previous[2]; /* [0] SIGSEGV, [1] SIGBUS, before us */
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
static __thread int td_pending;         /* a refused fault is armed, not raised yet */
/* Scratch pages one thread keeps at most: a C loop that goes on after a
 * refusal (say over 100,000 pages) would otherwise map one per page it
 * touches, each a kernel mapping of its own, until the map limit kills it.
 * Past this many the older ones are put back (their instructions have
 * completed; touching them again before the raise faults to scratch again). */
#define TD_SCRATCH_MAX 64

static int td_restore_all(void);

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

static struct sigaction *td_previous_of(int sig)
{
    return &td_previous[sig == SIGBUS];
}

/* Pass the signal on to whoever had it (SIGSEGV or SIGBUS) before us, exactly. */
static void td_chain(int sig, siginfo_t *info, void *ctx)
{
    struct sigaction *prev = td_previous_of(sig);
    if (prev->sa_flags & SA_SIGINFO) {
        prev->sa_sigaction(sig, info, ctx);
        return;
    }
    if (prev->sa_handler == SIG_DFL || prev->sa_handler == SIG_IGN) {
        /* A real fault cannot be ignored: die the way the default would. */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    prev->sa_handler(sig);
}

/* Die by the fault's signal after a message, through the previous handler
 * (traceback). */
static void td_fatal(const char *what, uintptr_t addr, int sig, siginfo_t *info, void *ctx)
{
    char buf[256];
    snprintf(buf, sizeof buf, "tornado_dsm: fatal: %s at %#lx\n", what, (unsigned long)addr);
    td_say(buf);
    td_chain(sig, info, ctx);
    signal(sig, SIG_DFL);
    raise(sig);
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
    if (td_nscratch >= TD_SCRATCH_MAX && td_restore_all() < 0)
        td_fatal("cannot put back the frames under scratch pages", page_addr, sig, info, ctx);
    void *p = mmap((void *)page_addr, td_page, PROT_READ | PROT_WRITE,
                   MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || td_push_scratch(page_addr) != 0)
        td_fatal("cannot map a scratch page for an unresolvable fault", page_addr, sig, info, ctx);
    if (td_pending)
        return;
    td_pending = 1;
    PyGILState_STATE g = PyGILState_Ensure();
    PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), td_async_class);
    PyGILState_Release(g);
}

/* Step 3b under the window's HAT lock (see td_uffd_refresh): 1 resolved,
 * 0 not granted after all, -errno. */
static int td_hat_refresh(td_window *w, size_t page, int access)
{
    td_hat_lock(w, page, 1);
    int rc = td_uffd_refresh(w, page, access);
    td_hat_unlock(w, page, 1);
    return rc;
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
    if (td_pending) {
        /* This thread already fails with a pending SegmentationFault: running
         * Python now would deliver it inside the callback.  The statement is
         * aborted anyway, so its further accesses go to scratch too. */
        td_refuse(page_addr, sig, info, ctx);
        errno = saved_errno;
        return;
    }
    if (w->backend == TD_BACKEND_UFFD && w->prot[page] >= access) {
        int rc = td_hat_refresh(w, page, access);
        if (rc < 0)
            td_fatal("cannot re-establish a page the HAT grants", addr, sig, info, ctx);
        if (rc > 0) {
            errno = saved_errno;
            return;
        }
    }
    if (w->mode == TD_MODE_FLOOR) {
        if (td_hat_protect(wi, page, 1, TD_PROT_WRITE) != 0)
            td_fatal("floor protection change failed", addr, sig, info, ctx);
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

static int td_is_ours(const struct sigaction *sa)
{
    return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == td_trap_handler;
}

/* Install the handler for one signal, keeping the previous one in *prev
 * unless it is ours already.  Returns 0 or -errno. */
static int td_install_one(int sig, struct sigaction *prev)
{
    struct sigaction cur, sa;
    if (sigaction(sig, NULL, &cur) != 0)
        return -errno;
    if (td_installed && td_is_ours(&cur))
        return 0;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = td_trap_handler;
    /* NODEFER: a nested fault must reach us (to be reported), not kill silently. */
    sa.sa_flags = SA_SIGINFO | SA_NODEFER | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (!td_is_ours(&cur))
        *prev = cur;
    return sigaction(sig, &sa, NULL) == 0 ? 0 : -errno;
}

/* Install the handler for SIGSEGV and SIGBUS (idempotent).  If someone
 * replaced it since, chain to them and take the signal back.  Returns 0 or
 * -errno. */
int td_trap_install(void)
{
    td_page = (size_t)sysconf(_SC_PAGESIZE);
    int rc = td_install_one(SIGSEGV, &td_previous[0]);
    if (rc == 0)
        rc = td_install_one(SIGBUS, &td_previous[1]);
    if (rc == 0)
        td_installed = 1;
    return rc;
}

/* Give one signal back to its previous handler if ours is current. */
static int td_uninstall_one(int sig, struct sigaction *prev)
{
    struct sigaction cur;
    if (sigaction(sig, NULL, &cur) != 0)
        return -errno;
    if (td_is_ours(&cur) && sigaction(sig, prev, NULL) != 0)
        return -errno;
    return 0;
}

/* Give SIGSEGV and SIGBUS back to the previous handlers.  Returns 0 or -errno. */
int td_trap_uninstall(void)
{
    if (!td_installed)
        return 0;
    int rc = td_uninstall_one(SIGSEGV, &td_previous[0]);
    if (rc == 0)
        rc = td_uninstall_one(SIGBUS, &td_previous[1]);
    if (rc == 0)
        td_installed = 0;
    return rc;
}

/* 1 if our handler is the one the kernel will call for SIGSEGV and SIGBUS. */
int td_trap_is_current(void)
{
    struct sigaction segv, bus;
    if (sigaction(SIGSEGV, NULL, &segv) != 0 || sigaction(SIGBUS, NULL, &bus) != 0)
        return 0;
    return td_is_ours(&segv) && td_is_ours(&bus);
}

/* Bind the class armed for refused faults (needs the GIL; cffi released it). */
int td_trap_bind_python(void)
{
    return td_bind_trap_class("_AsyncSegmentationFault", &td_async_class);   /* _interrupt.c */
}

/* Register a window; returns its slot or -1 when the table is full.
 * backend: TD_BACKEND_*; uffd: its userfaultfd (registered over the whole
 * application view already) or -1. */
int td_window_register(uintptr_t base, size_t npages, uint8_t *prot, int memfd, int mode, int node,
                       int backend, int uffd)
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
            w->backend = backend;
            w->uffd = uffd;
            for (int k = 0; k < TD_HAT_STRIPES; k++)
                pthread_mutex_init(&w->hat_lock[k], NULL);
            w->hat_calls = w->hat_pages = w->hat_sheds = 0;
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

/* Count one protection change of ``count`` pages. */
static void td_hat_count(td_window *w, size_t count)
{
    __atomic_add_fetch(&w->hat_calls, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&w->hat_pages, count, __ATOMIC_RELAXED);
}

/* Record a change of [first, first + count) to prot (HAT lock held). */
static void td_hat_record(td_window *w, size_t first, size_t count, int prot)
{
    memset((void *)(w->prot + first), prot, count);
    td_hat_count(w, count);
}

/* The mprotect backend ran out of kernel mappings (ENOMEM: vm.max_map_count)
 * changing [first, first + count) to prot.  Shed: revoke every page of the
 * window in one mprotect over whole mappings, which only merges them (so it
 * cannot fail for want of mappings) and leaves room for the scratch page of
 * a refused fault and for later changes.  Taking more access away than
 * asked is always safe: the fault path maps a page again from its cached
 * copy (an in-core fault).  Returns TD_HAT_SHED if the request only lowered
 * protections (it is met now), TD_HAT_SHED_REFUSED if it raised one (the
 * caller reports the map limit), -errno if the shed itself failed. */
static int td_hat_shed(td_window *w, size_t first, size_t count, int prot)
{
    int lowers = 1;
    for (size_t i = first; i < first + count && lowers; i++)
        lowers = w->prot[i] >= prot;
    if (mprotect((void *)w->base, w->npages * td_page, PROT_NONE) != 0)
        return -errno;
    td_hat_record(w, 0, w->npages, TD_PROT_NONE);
    __atomic_add_fetch(&w->hat_sheds, 1, __ATOMIC_RELAXED);
    return lowers ? TD_HAT_SHED : TD_HAT_SHED_REFUSED;
}

/* td_hat_protect's mprotect half: one mprotect for the run.  0, -errno, or
 * a TD_HAT_SHED* result at the map limit. */
static int td_mprotect_protect(td_window *w, size_t first, size_t count, int prot)
{
    static const int os_prot[3] = {PROT_NONE, PROT_READ, PROT_READ | PROT_WRITE};
    if (mprotect((void *)(w->base + first * td_page), count * td_page, os_prot[prot]) == 0) {
        td_hat_record(w, first, count, prot);
        return 0;
    }
    if (errno != ENOMEM)
        return -errno;
    return td_hat_shed(w, first, count, prot);
}

/* The HAT's one primitive: set pages [first, first+count) of a window to
 * prot (TD_PROT_*) and record it in the prot array, both under the window's
 * HAT lock so the array always matches the page tables.  mprotect backend:
 * one mprotect; uffd backend: one ioctl or madvise per sub-run of equal old
 * protection (_uffd.c), under the stripes of the run only.  The caller
 * (HAT.protect) has checked the run.
 * Returns 0, -errno, or (mprotect at the map limit) TD_HAT_SHED /
 * TD_HAT_SHED_REFUSED: every page of the window lost its access. */
int td_hat_protect(int slot, size_t first, size_t count, int prot)
{
    td_window *w = &td_windows[slot];
    int rc;
    td_hat_lock(w, first, count);
    if (w->backend == TD_BACKEND_UFFD) {
        rc = td_uffd_protect(w, first, count, prot); /* records as it goes */
        if (rc == 0)
            td_hat_count(w, count);
    } else {
        rc = td_mprotect_protect(w, first, count, prot);
    }
    td_hat_unlock(w, first, count);
    return rc;
}

/* Counters of td_hat_protect for a window: out[0] calls, out[1] pages,
 * out[2] sheds. */
void td_hat_counters(int slot, uint64_t *out)
{
    td_window *w = &td_windows[slot];
    out[0] = __atomic_load_n(&w->hat_calls, __ATOMIC_RELAXED);
    out[1] = __atomic_load_n(&w->hat_pages, __ATOMIC_RELAXED);
    out[2] = __atomic_load_n(&w->hat_sheds, __ATOMIC_RELAXED);
}

/* Put the real frame back under one scratch page (HAT lock held): mapped
 * with the HAT's protection (MAP_NORESERVE like the view, so the kernel can
 * merge it with its neighbours), or on uffd re-registered (_uffd.c).
 * 0 or -errno. */
static int td_restore_one(td_window *w, uintptr_t a)
{
    size_t page = (a - w->base) / td_page;
    if (w->backend == TD_BACKEND_UFFD)
        return td_uffd_restore(w, a, page);
    int prot = w->prot[page] == TD_PROT_WRITE ? PROT_READ | PROT_WRITE
             : w->prot[page] == TD_PROT_READ ? PROT_READ : PROT_NONE;
    void *p = mmap((void *)a, td_page, prot, MAP_FIXED | MAP_SHARED | MAP_NORESERVE, w->memfd,
                   (off_t)(page * td_page));
    return p == MAP_FAILED ? -errno : 0;
}

/* Put back the real frame under every scratch page of this thread; the
 * refusal stays armed.  Returns the number of pages restored, or -errno. */
static int td_restore_all(void)
{
    int restored = 0;
    for (size_t i = 0; i < td_nscratch; i++) {
        uintptr_t a = td_scratch[i];
        int wi = td_find_window(a);
        if (wi < 0)
            continue; /* the window is gone: its whole range was unmapped */
        td_window *w = &td_windows[wi];
        size_t page = (a - w->base) / td_page;
        td_hat_lock(w, page, 1); /* the protection cannot change under us */
        int rc = td_restore_one(w, a);
        td_hat_unlock(w, page, 1);
        if (rc != 0)
            return rc;
        restored++;
    }
    td_nscratch = 0;
    return restored;
}

/* Put back the real frame under every scratch page of this thread and end
 * its refusal.  Called when the SegmentationFault is raised.  Returns the
 * number of pages restored, or -errno. */
int td_trap_restore_scratch(void)
{
    int rc = td_restore_all();
    if (rc >= 0)
        td_pending = 0;
    return rc;
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
