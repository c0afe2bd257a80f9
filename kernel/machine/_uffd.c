/*
 * The userfaultfd fault backend (backend="uffd"): the HAT's protections
 * without ever changing a kernel mapping.  Included after _trap.c (it uses
 * td_window and td_page from there).
 *
 * Why.  The mprotect backend splits the application view's VMA at every
 * boundary between pages of different protection, so a node runs into
 * vm.max_map_count (about 32,700 pages whose protections alternate), and
 * every mprotect takes the address-space lock for writing.  Here the view
 * stays ONE read-write MAP_SHARED mapping of the memfd, registered with a
 * userfaultfd in three modes, and "protection" lives in the page tables:
 *
 *   HAT prot     page-table state of the page in the application view
 *   PROT_NONE    no PTE (MADV_DONTNEED zapped it; the frame stays in the
 *                memfd, so the next access is a MINOR fault, or a MISSING
 *                fault if the frame is a hole)
 *   PROT_READ    PTE present, uffd-write-protected (a store is a WP fault)
 *   PROT_WRITE   PTE present, writable
 *
 * UFFD_FEATURE_SIGBUS turns every one of those faults into a SIGBUS in the
 * faulting thread (no event is queued, nobody sleeps), which _trap.c
 * handles exactly like the mprotect backend's SIGSEGV.  The error code in
 * REG_ERR still says read or write (bit 1), so decoding is unchanged.
 *
 * The transitions, each one system call in the common case:
 *   -> NONE          MADV_DONTNEED on the run (zaps PTEs, flushes TLBs; a
 *                    write-protected PTE leaves a uffd-wp marker behind,
 *                    which faults like an empty PTE and which CONTINUE
 *                    overwrites)
 *   NONE -> READ     UFFDIO_CONTINUE with UFFDIO_CONTINUE_MODE_WP: the PTE
 *                    is installed already write-protected, so no thread can
 *                    ever store through a page the HAT only grants reading
 *                    (CONTINUE then WRITEPROTECT would leave such a window)
 *   NONE -> WRITE    UFFDIO_CONTINUE
 *   READ <-> WRITE   UFFDIO_WRITEPROTECT off / on (a downgrade flushes TLBs
 *                    before it returns, as mprotect does)
 *
 * Holes.  CONTINUE maps a page that is in the page cache; a frame that was
 * never written (or was punched) is a hole and CONTINUE answers EFAULT.
 * Then fallocate(mode 0) allocates every hole of the rest of the run in one
 * call (present pages are left alone; shmem zeroes the new ones lazily, when
 * CONTINUE looks them up) and CONTINUE is repeated.  That costs what the
 * kernel would have spent on a first touch anyway (measured here: a fault
 * on a hole 8.5-9 us against 5.5 us on a present page, about the same as
 * with mprotect), needs no zero source buffer, and works for runs that mix
 * holes and present pages.  UFFDIO_COPY/ZEROPAGE would fill a hole in one
 * ioctl but fail on present pages (EEXIST), so a run would need both.
 *
 * Scratch pages (a refused fault, _trap.c step 5) are the one place a
 * mapping is split: a private anonymous page is mapped MAP_FIXED over the
 * faulting page (it is not registered, so the instruction completes), which
 * cuts the registered VMA in three until the fault is raised.  Restoring it
 * maps the memfd page back PROT_NONE, registers it, then makes it
 * read-write: the kernel merges it with its neighbours again, and no thread
 * can touch it unregistered in between.  A HAT call over a run that crosses
 * another thread's scratch page gets ENOENT from the ioctls; it then goes
 * page by page and leaves that page to the restore, which applies the
 * HAT's protection under the HAT lock.
 *
 * Every function here runs with the window's HAT lock held by its caller
 * (the stripes of the pages it changes, _trap.c).
 */

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#ifndef UFFDIO_CONTINUE_MODE_WP /* Linux headers older than the kernel */
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1)
#endif

#define TD_UFFD_MODES (UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MINOR)
#define TD_UFFD_FEATURES (UFFD_FEATURE_SIGBUS | UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM)
#define TD_UFFD_FILL_TRIES 8 /* holes punched again while we fill them: give up after this */

static int td_uffd_map(td_window *w, uintptr_t start, size_t len, int wp);

/* Open a userfaultfd: user-mode-only first (allowed unprivileged even when
 * vm.unprivileged_userfaultfd is 0; with SIGBUS delivery kernel-mode faults
 * end in EFAULT either way), then a plain one, then /dev/userfaultfd.
 * Returns the fd or -errno of the first attempt. */
int td_uffd_open(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
    if (fd >= 0)
        return fd;
    int first = errno;
    fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    if (fd >= 0)
        return fd;
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
        fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC);
        close(dev);
        if (fd >= 0)
            return fd;
    }
    return -first;
}

/* UFFDIO_API on a fresh fd, enabling ``features``.  *available receives the
 * features the kernel reported (all of them when features is 0).  Returns 0
 * or -errno (EINVAL: a requested feature is missing). */
int td_uffd_api(int fd, uint64_t features, uint64_t *available)
{
    struct uffdio_api api = {.api = UFFD_API, .features = features};
    int rc = ioctl(fd, UFFDIO_API, &api) == 0 ? 0 : -errno;
    *available = api.features;
    return rc;
}

/* Whether UFFDIO_CONTINUE accepts UFFDIO_CONTINUE_MODE_WP: 1, 0, or -errno.
 * Asked on a one-page memfd registered on ``fd`` (API done): an unknown mode
 * is EINVAL, a known one on a hole is EFAULT.  Nothing is allocated. */
int td_uffd_probe_continue_wp(int fd)
{
    int mfd = memfd_create("tornado_dsm-probe", MFD_CLOEXEC);
    if (mfd < 0)
        return -errno;
    void *p = MAP_FAILED;
    int rc = ftruncate(mfd, (off_t)td_page) == 0 ? 0 : -errno;
    if (rc == 0) {
        p = mmap(NULL, td_page, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
        rc = p == MAP_FAILED ? -errno : 0;
    }
    if (rc == 0) {
        struct uffdio_register r = {{(uintptr_t)p, td_page}, TD_UFFD_MODES, 0};
        struct uffdio_continue c = {{(uintptr_t)p, td_page}, UFFDIO_CONTINUE_MODE_WP, 0};
        if (ioctl(fd, UFFDIO_REGISTER, &r) != 0)
            rc = -errno;
        else
            rc = ioctl(fd, UFFDIO_CONTINUE, &c) == 0 || errno != EINVAL;
        munmap(p, td_page);
    }
    close(mfd);
    return rc;
}

/* Register [base, base + len) in missing, write-protect and minor modes.
 * Returns 0, -errno, or -ENOTSUP when the range lacks CONTINUE or
 * WRITEPROTECT (a kernel that registers but cannot resolve). */
int td_uffd_register(int fd, uintptr_t base, size_t len)
{
    struct uffdio_register r = {{base, len}, TD_UFFD_MODES, 0};
    if (ioctl(fd, UFFDIO_REGISTER, &r) != 0)
        return -errno;
    uint64_t need = (1ull << _UFFDIO_CONTINUE) | (1ull << _UFFDIO_WRITEPROTECT);
    return (r.ioctls & need) == need ? 0 : -ENOTSUP;
}

/* Allocate the holes of [start, start + len) in the memfd (present pages are
 * left alone) so CONTINUE can map them.  0 or -errno (ENOSPC: no memory). */
static int td_uffd_fill(td_window *w, uintptr_t start, size_t len)
{
    return fallocate(w->memfd, 0, (off_t)(start - w->base), (off_t)len) == 0 ? 0 : -errno;
}

/* UFFDIO_WRITEPROTECT on (wp=1) or off on [start, start + len): one ioctl;
 * across another thread's scratch page (ENOENT), page by page, skipping it.
 * 0 or -errno. */
static int td_uffd_wp(td_window *w, uintptr_t start, size_t len, int wp)
{
    for (;;) {
        struct uffdio_writeprotect r = {{start, len}, wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
        if (ioctl(w->uffd, UFFDIO_WRITEPROTECT, &r) == 0)
            return 0;
        if (errno == EAGAIN)
            continue;
        if (errno != ENOENT)
            return -errno;
        if (len == td_page)
            return 0; /* a scratch page: its restore applies the HAT's protection */
        for (size_t off = 0; off < len; off += td_page) {
            int rc = td_uffd_wp(w, start + off, td_page, wp);
            if (rc != 0)
                return rc;
        }
        return 0;
    }
}

/* One failed CONTINUE at ``*start`` with ``err``: move on, or fail.
 * Returns 0 to go on with [*start, + *len), 1 if the range was finished
 * page by page (ENOENT), or -errno. */
static int td_uffd_map_step(td_window *w, uintptr_t *start, size_t *len, int wp, int err, int *fills)
{
    switch (err) {
    case EAGAIN: /* partial progress (already accounted) or the mm was changing */
        return 0;
    case EFAULT: /* a hole: allocate the holes of the rest, then CONTINUE again */
        if (++*fills > TD_UFFD_FILL_TRIES)
            return -EFAULT;
        return td_uffd_fill(w, *start, *len);
    case EEXIST: /* already has a PTE: only its write protection may need changing */
    {
        int rc = td_uffd_wp(w, *start, td_page, wp);
        *start += td_page;
        *len -= td_page;
        return rc;
    }
    case ENOENT: /* crosses another thread's scratch page: page by page */
        if (*len == td_page)
            return 1;
        for (size_t off = 0; off < *len; off += td_page) {
            int rc = td_uffd_map(w, *start + off, td_page, wp);
            if (rc != 0)
                return rc;
        }
        return 1;
    default:
        return -err;
    }
}

/* Install PTEs for [start, start + len), write-protected if wp: UFFDIO_CONTINUE
 * (with MODE_WP), filling holes first when it meets one.  0 or -errno. */
static int td_uffd_map(td_window *w, uintptr_t start, size_t len, int wp)
{
    int fills = 0;
    while (len > 0) {
        struct uffdio_continue c = {{start, len}, wp ? UFFDIO_CONTINUE_MODE_WP : 0, 0};
        if (ioctl(w->uffd, UFFDIO_CONTINUE, &c) == 0)
            return 0;
        int err = errno;
        if (c.mapped > 0) {
            start += (size_t)c.mapped;
            len -= (size_t)c.mapped;
        }
        int rc = td_uffd_map_step(w, &start, &len, wp, err, &fills);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    return 0;
}

/* Drop the PTEs of [start, start + len) (-> PROT_NONE).  0 or -errno. */
static int td_uffd_zap(uintptr_t start, size_t len)
{
    return madvise((void *)start, len, MADV_DONTNEED) == 0 ? 0 : -errno;
}

/* Change pages [first, first + n), all at protection ``old``, to ``prot``.
 * On failure of a map the run is zapped back to no access, so the page
 * tables never grant more than the prot array says.  0 or -errno. */
static int td_uffd_change(td_window *w, size_t first, size_t n, int old, int prot)
{
    uintptr_t start = w->base + first * td_page;
    size_t len = n * td_page;
    if (old == prot)
        return 0;
    if (old != TD_PROT_NONE)
        return td_uffd_wp(w, start, len, prot == TD_PROT_READ);
    int rc = td_uffd_map(w, start, len, prot == TD_PROT_READ);
    if (rc != 0)
        td_uffd_zap(start, len);
    return rc;
}

/* td_hat_protect's uffd half: set [first, first + count) to ``prot``, one
 * sub-run of equal old protection at a time (one sub-run, one system call,
 * in the common case), recording each in the prot array as it is done, so
 * the array matches the page tables even when a later sub-run fails.
 * 0 or -errno. */
static int td_uffd_protect(td_window *w, size_t first, size_t count, int prot)
{
    if (prot == TD_PROT_NONE) {
        int rc = td_uffd_zap(w->base + first * td_page, count * td_page);
        if (rc == 0)
            memset((void *)(w->prot + first), TD_PROT_NONE, count);
        return rc;
    }
    for (size_t i = first, end = first + count; i < end;) {
        int old = w->prot[i];
        size_t j = i + 1;
        while (j < end && w->prot[j] == old)
            j++;
        int rc = td_uffd_change(w, i, j - i, old, prot);
        if (rc != 0)
            return rc;
        memset((void *)(w->prot + i), prot, j - i);
        i = j;
    }
    return 0;
}

/* A fault on a page the HAT already grants (``access`` allowed by prot[page]):
 * the PTE is gone although the HAT did not take it (the kernel dropped it, or
 * a restore raced).  Put it back as the prot array says.  Returns 1 if
 * resolved, 0 if the HAT no longer grants the access (let the fault handler
 * decide), or -errno. */
static int td_uffd_refresh(td_window *w, size_t page, int access)
{
    int prot = w->prot[page];
    if (prot < access)
        return 0;
    int rc = td_uffd_map(w, w->base + page * td_page, td_page, prot == TD_PROT_READ);
    return rc != 0 ? rc : 1;
}

/* Put the memfd page back under a scratch page at page_addr: mapped PROT_NONE,
 * registered, then read-write (so it is never reachable unregistered; the
 * kernel merges it with its neighbours again), then mapped as prot[page].
 * 0 or -errno. */
static int td_uffd_restore(td_window *w, uintptr_t page_addr, size_t page)
{
    void *p = mmap((void *)page_addr, td_page, PROT_NONE, MAP_FIXED | MAP_SHARED | MAP_NORESERVE,
                   w->memfd, (off_t)(page * td_page));
    if (p == MAP_FAILED)
        return -errno;
    int rc = td_uffd_register(w->uffd, page_addr, td_page);
    if (rc != 0)
        return rc;
    if (mprotect((void *)page_addr, td_page, PROT_READ | PROT_WRITE) != 0)
        return -errno;
    int prot = w->prot[page];
    return prot == TD_PROT_NONE ? 0 : td_uffd_map(w, page_addr, td_page, prot == TD_PROT_READ);
}
