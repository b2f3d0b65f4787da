// csystem_dist.h: what the distributed-VM layer needs from C (the host TSC for time sync).
#ifndef GVM_CSYSTEM_DIST_H
#define GVM_CSYSTEM_DIST_H
#include <stdint.h>
#include <errno.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

/// The host's time-stamp counter (RDTSC), the clock KVM derives every guest TSC from.
static inline uint64_t gvm_host_rdtsc(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_ia32_rdtsc();
#else
    return 0;
#endif
}

/// KVM_VCPU_TSC_OFFSET of a vCPU (group KVM_VCPU_TSC_CTRL): guest TSC = host TSC + offset.
/// Returns 0 or -errno (ENXIO when the kernel lacks the attribute).
static inline int gvm_vcpu_get_tsc_offset(int vcpu_fd, int64_t *offset) {
    struct kvm_device_attr a = { .group = 0 /* KVM_VCPU_TSC_CTRL */, .attr = 0 /* KVM_VCPU_TSC_OFFSET */,
                                 .addr = (uint64_t)(uintptr_t)offset };
    return ioctl(vcpu_fd, KVM_GET_DEVICE_ATTR, &a) == 0 ? 0 : -errno;
}
static inline int gvm_vcpu_set_tsc_offset(int vcpu_fd, int64_t offset) {
    struct kvm_device_attr a = { .group = 0, .attr = 0, .addr = (uint64_t)(uintptr_t)&offset };
    return ioctl(vcpu_fd, KVM_SET_DEVICE_ATTR, &a) == 0 ? 0 : -errno;
}
#endif
