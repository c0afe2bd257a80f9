/*
 * Atomics on window addresses (README, "Atomics").  Sequentially consistent
 * __atomic builtins.  A read-modify-write faults as a write, so under
 * single-writer coherence an atomic on DSM memory is atomic cluster-wide.
 * The Python wrappers (_atomic.py) check alignment and window membership;
 * these functions trust their arguments.
 */
#include <stdint.h>

uint32_t td_load32(uintptr_t a) { return __atomic_load_n((uint32_t *)a, __ATOMIC_SEQ_CST); }
uint64_t td_load64(uintptr_t a) { return __atomic_load_n((uint64_t *)a, __ATOMIC_SEQ_CST); }
void td_store32(uintptr_t a, uint32_t v) { __atomic_store_n((uint32_t *)a, v, __ATOMIC_SEQ_CST); }
void td_store64(uintptr_t a, uint64_t v) { __atomic_store_n((uint64_t *)a, v, __ATOMIC_SEQ_CST); }
uint32_t td_xchg32(uintptr_t a, uint32_t v) { return __atomic_exchange_n((uint32_t *)a, v, __ATOMIC_SEQ_CST); }
uint64_t td_xchg64(uintptr_t a, uint64_t v) { return __atomic_exchange_n((uint64_t *)a, v, __ATOMIC_SEQ_CST); }
uint32_t td_fadd32(uintptr_t a, uint32_t v) { return __atomic_fetch_add((uint32_t *)a, v, __ATOMIC_SEQ_CST); }
uint64_t td_fadd64(uintptr_t a, uint64_t v) { return __atomic_fetch_add((uint64_t *)a, v, __ATOMIC_SEQ_CST); }

/* Compare-and-swap: returns the value found (== expected on success). */
uint32_t td_cas32(uintptr_t a, uint32_t expected, uint32_t desired)
{
    __atomic_compare_exchange_n((uint32_t *)a, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}

uint64_t td_cas64(uintptr_t a, uint64_t expected, uint64_t desired)
{
    __atomic_compare_exchange_n((uint64_t *)a, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
    return expected;
}

/* Test-and-set on a word: stores 1, returns the previous value. */
uint32_t td_tas32(uintptr_t a) { return __atomic_exchange_n((uint32_t *)a, 1u, __ATOMIC_SEQ_CST); }
uint64_t td_tas64(uintptr_t a) { return __atomic_exchange_n((uint64_t *)a, (uint64_t)1, __ATOMIC_SEQ_CST); }

/* n fetch-and-adds of 1 in a loop with the GIL released (stress tests, benchmarks). */
void td_fadd_loop64(uintptr_t a, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        __atomic_fetch_add((uint64_t *)a, (uint64_t)1, __ATOMIC_SEQ_CST);
}
