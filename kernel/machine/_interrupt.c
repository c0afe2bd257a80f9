/*
 * Interrupts of threads that may be inside the fault handler.
 *
 * An interrupt (a KeyboardInterrupt raised asynchronously in another thread,
 * with PyThreadState_SetAsyncExc) must never land in the middle of the fault
 * path: a page left "requesting" or a lock section cut in half would hang
 * every later fault on it.  So each thread that runs the fault handler has a
 * slot here with its handler depth and a pending flag, readable by the
 * interrupting thread:
 *
 *   interrupter (td_interrupt_thread):  pending = 1; if depth == 0 and it can
 *       take pending back (CAS 1 -> 0), it arms the exception itself;
 *   the faulting thread, leaving the handler:  depth = 0; if it can take
 *       pending (CAS 1 -> 0), it arms the exception on itself.
 *
 * Both sides store, then load, with sequentially consistent atomics, so at
 * least one sees the other and exactly one wins the CAS: the interrupt is
 * armed once, always outside the handler.  One window remains: an interrupt
 * armed just before the thread faults fires at the first bytecode of the
 * Python callback, before any state changed; the callback's onerror then
 * asks for a retry (td_interrupt_defer) and the interrupt is armed again
 * once the retried fault is resolved.
 *
 * A slot is claimed at a thread's first fault and released by a pthread key
 * destructor when the thread exits (run threads are made anew for every run).
 */

#include <pthread.h>
#include <stdint.h>

#define TD_MAX_THREADS 1024

typedef struct {
    volatile uintptr_t tid;   /* pthread_self of the owner, 0: free */
    volatile int depth;
    volatile int pending;
} td_thread_slot;

static td_thread_slot td_threads[TD_MAX_THREADS];
static __thread int td_my_slot;           /* slot + 1, 0: none yet */
static pthread_key_t td_slot_key;
static pthread_once_t td_slot_once = PTHREAD_ONCE_INIT;
static PyObject *td_interrupt_class;      /* _trap._AsyncInterrupt */

static void td_release_slot(void *p)
{
    __atomic_store_n(&td_threads[(uintptr_t)p - 1].tid, 0, __ATOMIC_SEQ_CST);
}

static void td_make_slot_key(void) { pthread_key_create(&td_slot_key, td_release_slot); }

/* This thread's slot, claimed on first use; NULL if the table is full (the
 * thread then cannot be interrupted inside a fault, only outside). */
static td_thread_slot *td_self_slot(void)
{
    if (td_my_slot)
        return &td_threads[td_my_slot - 1];
    pthread_once(&td_slot_once, td_make_slot_key);
    uintptr_t me = (uintptr_t)pthread_self();
    for (int i = 0; i < TD_MAX_THREADS; i++) {
        uintptr_t expected = 0;
        if (__atomic_compare_exchange_n(&td_threads[i].tid, &expected, me, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            td_threads[i].depth = 0;
            td_threads[i].pending = 0;
            td_my_slot = i + 1;
            pthread_setspecific(td_slot_key, (void *)(uintptr_t)td_my_slot);
            return &td_threads[i];
        }
    }
    return NULL;
}

static void td_arm_interrupt(void)
{
    if (td_interrupt_class == NULL)
        return;
    PyGILState_STATE g = PyGILState_Ensure();
    PyThreadState_SetAsyncExc(PyThread_get_thread_ident(), td_interrupt_class);
    PyGILState_Release(g);
}

/* Around the Python callback of the trap (signal handler context). */
static void td_handler_enter(void)
{
    td_thread_slot *s = td_self_slot();
    if (s)
        __atomic_store_n(&s->depth, 1, __ATOMIC_SEQ_CST);
}

static void td_handler_leave(int retry)
{
    if (!td_my_slot)
        return;
    td_thread_slot *s = &td_threads[td_my_slot - 1];
    __atomic_store_n(&s->depth, 0, __ATOMIC_SEQ_CST);
    int one = 1;
    if (!retry && __atomic_compare_exchange_n(&s->pending, &one, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        td_arm_interrupt();
}

/* Called with the GIL held: interrupt thread ``tid``.  Returns 1 if the caller
 * must arm the exception now (the thread is outside the handler), 0 if the
 * thread will arm it itself when it leaves the handler. */
int td_interrupt_thread(uintptr_t tid)
{
    for (int i = 0; i < TD_MAX_THREADS; i++) {
        td_thread_slot *s = &td_threads[i];
        if (__atomic_load_n(&s->tid, __ATOMIC_SEQ_CST) != tid)
            continue;
        __atomic_store_n(&s->pending, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&s->depth, __ATOMIC_SEQ_CST))
            return 0;
        int one = 1;
        return __atomic_compare_exchange_n(&s->pending, &one, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    }
    return 1;   /* never faulted: it is not in the handler */
}

/* The callback's onerror, for an interrupt that fired at its first bytecode:
 * keep it pending; the handler retries the fault and arms it on leaving. */
void td_interrupt_defer(void)
{
    if (td_my_slot)
        __atomic_store_n(&td_threads[td_my_slot - 1].pending, 1, __ATOMIC_SEQ_CST);
}

/* Whether the calling thread is inside the fault handler (a SIGINT handler
 * running in it then defers the interrupt instead of raising). */
int td_in_handler(void)
{
    return td_my_slot && __atomic_load_n(&td_threads[td_my_slot - 1].depth, __ATOMIC_SEQ_CST);
}

/* Bind the class ``name`` of _trap into ``*slot`` (a class the trap arms with
 * PyThreadState_SetAsyncExc); needs the GIL, which cffi released.  0 or -1. */
static int td_bind_trap_class(const char *name, PyObject **slot)
{
    PyGILState_STATE g = PyGILState_Ensure();
    int rc = -1;
    PyObject *mod = PyImport_ImportModule("tornado_dsm.kernel.machine._trap");
    if (mod != NULL) {
        PyObject *cls = PyObject_GetAttrString(mod, name);
        if (cls != NULL) {
            PyObject *old = *slot;
            *slot = cls;
            Py_XDECREF(old);
            rc = 0;
        }
        Py_DECREF(mod);
    }
    if (rc != 0)
        PyErr_Print();
    PyGILState_Release(g);
    return rc;
}

/* Bind _trap._AsyncInterrupt (the class armed in a thread's own state). */
int td_interrupt_bind(void)
{
    return td_bind_trap_class("_AsyncInterrupt", &td_interrupt_class);
}
