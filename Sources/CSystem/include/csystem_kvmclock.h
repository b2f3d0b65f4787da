// csystem_kvmclock.h: the VM-wide kvmclock (KVM_GET_CLOCK / KVM_SET_CLOCK, Documentation/virt/kvm/api.rst),
// for the KVM layer's KVMClock.swift. struct kvm_clock_data has a padded tail Swift imports
// awkwardly; these functions take and return plain integers. Nothing here has state.
#ifndef GVM_CSYSTEM_KVMCLOCK_H
#define GVM_CSYSTEM_KVMCLOCK_H
#include <stdint.h>
#include <string.h>
#include <errno.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

static inline int gvm_KVM_CAP_ADJUST_CLOCK(void) { return KVM_CAP_ADJUST_CLOCK; }

/// KVM_GET_CLOCK on VM fd `vmfd`: the VM's kvmclock in ns (`*clock`), its flags (`*flags`:
/// KVM_CLOCK_TSC_STABLE 2, KVM_CLOCK_REALTIME 4, KVM_CLOCK_HOST_TSC 8) and, when the flags say
/// so, the host TSC the clock was read at (`*host_tsc`, else 0). Returns 0, or -errno.
/// Thread: any (a VM ioctl that does not change state).
static inline int gvm_kvm_get_clock(int vmfd, uint64_t *clock, uint32_t *flags, uint64_t *host_tsc) {
    struct kvm_clock_data d;
    memset(&d, 0, sizeof d);
    if (ioctl(vmfd, KVM_GET_CLOCK, &d) != 0) return -errno;
    *clock = d.clock;
    *flags = d.flags;
#ifdef KVM_CLOCK_HOST_TSC
    *host_tsc = (d.flags & KVM_CLOCK_HOST_TSC) ? d.host_tsc : 0;
#else
    *host_tsc = 0;
#endif
    return 0;
}

/// KVM_SET_CLOCK on VM fd `vmfd`: the VM's kvmclock reads `clock` ns now (flags 0: no
/// realtime correction). KVM asks every vCPU to rewrite its pvclock page at its next entry.
/// Returns 0, or -errno. Thread: the VM's setup thread, before or between vCPU runs.
static inline int gvm_kvm_set_clock(int vmfd, uint64_t clock) {
    struct kvm_clock_data d;
    memset(&d, 0, sizeof d);
    d.clock = clock;
    return ioctl(vmfd, KVM_SET_CLOCK, &d) == 0 ? 0 : -errno;
}
#endif
