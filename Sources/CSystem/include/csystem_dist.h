// csystem_dist.h: what the distributed-VM layer needs from C (the host TSC for time sync).
#ifndef GVM_CSYSTEM_DIST_H
#define GVM_CSYSTEM_DIST_H
#include <stdint.h>

/// The host's time-stamp counter (RDTSC), the clock KVM derives every guest TSC from.
static inline uint64_t gvm_host_rdtsc(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_ia32_rdtsc();
#else
    return 0;
#endif
}
#endif
