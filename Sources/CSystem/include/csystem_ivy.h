// csystem_ivy.h: word-sized atomics on arbitrary guest-memory addresses, for the DSM workloads
// (threads acting on guest RAM as vCPUs would). On x86-64 acquire loads and release stores are
// plain MOVs (the hardware's TSO), and the read-modify-writes are LOCK-prefixed instructions, so
// the workloads exercise exactly what guest code would.
#ifndef GVM_CSYSTEM_IVY_H
#define GVM_CSYSTEM_IVY_H
#include <stdint.h>

static inline uint64_t gvm_ivy_load_acquire64(const void *p) {
    return __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE);
}
static inline void gvm_ivy_store_release64(void *p, uint64_t v) {
    __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE);
}
static inline int gvm_ivy_cas64(void *p, uint64_t expect, uint64_t desired) {
    return __atomic_compare_exchange_n((uint64_t *)p, &expect, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
static inline uint64_t gvm_ivy_fetch_add64(void *p, uint64_t v) {
    return __atomic_fetch_add((uint64_t *)p, v, __ATOMIC_SEQ_CST);
}
static inline void gvm_ivy_fence_full(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void gvm_ivy_pause(void) { __builtin_ia32_pause(); }
#endif
