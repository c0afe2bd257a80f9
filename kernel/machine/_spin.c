/* Spin-then-block for a socket a reply is expected on soon.
 *
 * Why: on a virtual machine a blocked reader's wake-up (the sender's IPI, the
 * halted vCPU's exit and re-entry, the scheduler's switch) costs 30-50 us,
 * several times a whole loopback round trip between two running processes.
 * A caller that expects its reply within a fault's service time polls the
 * socket instead, for a bounded time, with the GIL released (cffi releases
 * it around every call), yielding the CPU between polls so that a runnable
 * thread of any node on this CPU runs first: a spinner never starves the
 * node it is waiting for.  After the bound the caller blocks as before.
 */
#include <poll.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>

static int64_t td_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Contract: 1 as soon as fd is readable (or has an error / hang-up to report,
 * which the caller's blocking read then meets), 0 once max_ns passed without
 * that.  Never blocks; max_ns <= 0 checks once. */
int td_spin_readable(int fd, int64_t max_ns)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int64_t until = td_now_ns() + max_ns;
    for (;;) {
        p.revents = 0;
        if (poll(&p, 1, 0) > 0)
            return 1;
        if (td_now_ns() >= until)
            return 0;
        sched_yield();
    }
}
