#ifndef GVM_CSYSTEM_KVM_H
#define GVM_CSYSTEM_KVM_H
// C shims for the typed KVM layer (Sources/KVM). KVM's request numbers are built by _IO* macros
// and struct kvm_run is a tagged union with anonymous members, neither of which Swift imports
// cleanly: these inline functions give every number and field a name. Nothing here has state.
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <pthread.h>
#include <linux/kvm.h>

// ---- ioctl request numbers (one function per KVM_* constant) --------------------------------
static inline unsigned long gvm_KVM_GET_API_VERSION(void) { return KVM_GET_API_VERSION; }
static inline unsigned long gvm_KVM_CREATE_VM(void) { return KVM_CREATE_VM; }
static inline unsigned long gvm_KVM_CHECK_EXTENSION(void) { return KVM_CHECK_EXTENSION; }
static inline unsigned long gvm_KVM_GET_VCPU_MMAP_SIZE(void) { return KVM_GET_VCPU_MMAP_SIZE; }
static inline unsigned long gvm_KVM_GET_SUPPORTED_CPUID(void) { return KVM_GET_SUPPORTED_CPUID; }
static inline unsigned long gvm_KVM_CREATE_VCPU(void) { return KVM_CREATE_VCPU; }
static inline unsigned long gvm_KVM_SET_USER_MEMORY_REGION(void) { return KVM_SET_USER_MEMORY_REGION; }
static inline unsigned long gvm_KVM_SET_TSS_ADDR(void) { return KVM_SET_TSS_ADDR; }
static inline unsigned long gvm_KVM_SET_IDENTITY_MAP_ADDR(void) { return KVM_SET_IDENTITY_MAP_ADDR; }
static inline unsigned long gvm_KVM_RUN(void) { return KVM_RUN; }
static inline unsigned long gvm_KVM_GET_REGS(void) { return KVM_GET_REGS; }
static inline unsigned long gvm_KVM_SET_REGS(void) { return KVM_SET_REGS; }
static inline unsigned long gvm_KVM_GET_SREGS(void) { return KVM_GET_SREGS; }
static inline unsigned long gvm_KVM_SET_SREGS(void) { return KVM_SET_SREGS; }
static inline unsigned long gvm_KVM_GET_FPU(void) { return KVM_GET_FPU; }
static inline unsigned long gvm_KVM_SET_FPU(void) { return KVM_SET_FPU; }
static inline unsigned long gvm_KVM_SET_CPUID2(void) { return KVM_SET_CPUID2; }
static inline unsigned long gvm_KVM_GET_MSRS(void) { return KVM_GET_MSRS; }
static inline unsigned long gvm_KVM_SET_MSRS(void) { return KVM_SET_MSRS; }
static inline unsigned long gvm_KVM_INTERRUPT(void) { return KVM_INTERRUPT; }
static inline unsigned long gvm_KVM_NMI(void) { return KVM_NMI; }
static inline unsigned long gvm_KVM_SET_TSC_KHZ(void) { return KVM_SET_TSC_KHZ; }
static inline unsigned long gvm_KVM_GET_TSC_KHZ(void) { return KVM_GET_TSC_KHZ; }
// vCPU state for live migration (Sources/KVM/VCPUState.swift).
static inline unsigned long gvm_KVM_GET_XSAVE(void) { return KVM_GET_XSAVE; }
static inline unsigned long gvm_KVM_SET_XSAVE(void) { return KVM_SET_XSAVE; }
static inline unsigned long gvm_KVM_GET_XCRS(void) { return KVM_GET_XCRS; }
static inline unsigned long gvm_KVM_SET_XCRS(void) { return KVM_SET_XCRS; }
static inline unsigned long gvm_KVM_GET_VCPU_EVENTS(void) { return KVM_GET_VCPU_EVENTS; }
static inline unsigned long gvm_KVM_SET_VCPU_EVENTS(void) { return KVM_SET_VCPU_EVENTS; }
static inline unsigned long gvm_KVM_GET_DEBUGREGS(void) { return KVM_GET_DEBUGREGS; }
static inline unsigned long gvm_KVM_SET_DEBUGREGS(void) { return KVM_SET_DEBUGREGS; }
static inline size_t gvm_sizeof_kvm_xsave(void) { return sizeof(struct kvm_xsave); }
static inline size_t gvm_sizeof_kvm_xcrs(void) { return sizeof(struct kvm_xcrs); }
static inline size_t gvm_sizeof_kvm_vcpu_events(void) { return sizeof(struct kvm_vcpu_events); }
static inline size_t gvm_sizeof_kvm_debugregs(void) { return sizeof(struct kvm_debugregs); }
static inline size_t gvm_sizeof_kvm_fpu(void) { return sizeof(struct kvm_fpu); }

// ---- capabilities ------------------------------------------------------------------------------
static inline int gvm_KVM_CAP_IMMEDIATE_EXIT(void) { return KVM_CAP_IMMEDIATE_EXIT; }
static inline int gvm_KVM_CAP_USER_MEMORY(void) { return KVM_CAP_USER_MEMORY; }
static inline int gvm_KVM_CAP_EXT_CPUID(void) { return KVM_CAP_EXT_CPUID; }
static inline int gvm_KVM_CAP_NR_VCPUS(void) { return KVM_CAP_NR_VCPUS; }
static inline int gvm_KVM_CAP_MAX_VCPUS(void) { return KVM_CAP_MAX_VCPUS; }
static inline int gvm_KVM_CAP_USER_NMI(void) { return KVM_CAP_USER_NMI; }
static inline int gvm_KVM_CAP_GET_TSC_KHZ(void) { return KVM_CAP_GET_TSC_KHZ; }
static inline int gvm_KVM_CAP_SET_TSS_ADDR(void) { return KVM_CAP_SET_TSS_ADDR; }
static inline int gvm_KVM_CAP_X86_MSR_FILTER(void) { return KVM_CAP_X86_MSR_FILTER; }

/// KVM_X86_SET_MSR_FILTER on VM fd `vmfd`: default allow, and `n` (<= 16) ranges
/// [bases[i], bases[i] + counts[i]) denied for reads and writes (guest accesses #GP). Each
/// count is at most 0x600 * 8 MSRs. KVM copies the bitmaps during the call. Returns the
/// ioctl's result (-1 with errno on failure; EINVAL for a bad range or n > 16).
static inline int gvm_set_msr_deny_filter(int vmfd, const uint32_t *bases, const uint32_t *counts, uint32_t n) {
    static uint8_t zeros[KVM_MSR_FILTER_MAX_BITMAP_SIZE];
    struct kvm_msr_filter f;
    memset(&f, 0, sizeof f);
    f.flags = KVM_MSR_FILTER_DEFAULT_ALLOW;
    if (n > KVM_MSR_FILTER_MAX_RANGES) { errno = EINVAL; return -1; }
    for (uint32_t i = 0; i < n; i++) {
        if (counts[i] == 0 || counts[i] > KVM_MSR_FILTER_MAX_BITMAP_SIZE * 8) { errno = EINVAL; return -1; }
        f.ranges[i].flags = KVM_MSR_FILTER_READ | KVM_MSR_FILTER_WRITE;
        f.ranges[i].nmsrs = counts[i];
        f.ranges[i].base = bases[i];
        f.ranges[i].bitmap = zeros;
    }
    return ioctl(vmfd, KVM_X86_SET_MSR_FILTER, &f);
}

// ---- struct kvm_run fields ---------------------------------------------------------------------
static inline uint32_t gvm_run_exit_reason(const struct kvm_run *r) { return r->exit_reason; }
static inline uint8_t gvm_run_ready_for_interrupt_injection(const struct kvm_run *r) { return r->ready_for_interrupt_injection; }
static inline uint8_t gvm_run_if_flag(const struct kvm_run *r) { return r->if_flag; }
static inline uint64_t gvm_run_cr8(const struct kvm_run *r) { return r->cr8; }
static inline void gvm_run_set_cr8(struct kvm_run *r, uint64_t v) { r->cr8 = v; }
static inline uint64_t gvm_run_apic_base(const struct kvm_run *r) { return r->apic_base; }
static inline void gvm_run_set_request_interrupt_window(struct kvm_run *r, uint8_t v) { r->request_interrupt_window = v; }
/// immediate_exit is written by kicking threads while the vCPU thread reads it: volatile access.
static inline void gvm_run_set_immediate_exit(struct kvm_run *r, uint8_t v) {
    __atomic_store_n(&r->immediate_exit, v, __ATOMIC_SEQ_CST);
}
// KVM_EXIT_IO
static inline uint8_t gvm_run_io_direction(const struct kvm_run *r) { return r->io.direction; }
static inline uint8_t gvm_run_io_size(const struct kvm_run *r) { return r->io.size; }
static inline uint16_t gvm_run_io_port(const struct kvm_run *r) { return r->io.port; }
static inline uint32_t gvm_run_io_count(const struct kvm_run *r) { return r->io.count; }
static inline uint64_t gvm_run_io_data_offset(const struct kvm_run *r) { return r->io.data_offset; }
// KVM_EXIT_MMIO
static inline uint64_t gvm_run_mmio_phys_addr(const struct kvm_run *r) { return r->mmio.phys_addr; }
static inline uint8_t *gvm_run_mmio_data(struct kvm_run *r) { return r->mmio.data; }
static inline uint32_t gvm_run_mmio_len(const struct kvm_run *r) { return r->mmio.len; }
static inline uint8_t gvm_run_mmio_is_write(const struct kvm_run *r) { return r->mmio.is_write; }
// KVM_EXIT_FAIL_ENTRY
static inline uint64_t gvm_run_fail_entry_reason(const struct kvm_run *r) { return r->fail_entry.hardware_entry_failure_reason; }
// KVM_EXIT_INTERNAL_ERROR
static inline uint32_t gvm_run_internal_suberror(const struct kvm_run *r) { return r->internal.suberror; }
static inline uint32_t gvm_run_internal_ndata(const struct kvm_run *r) { return r->internal.ndata; }
static inline uint64_t gvm_run_internal_data(const struct kvm_run *r, uint32_t i) { return i < 16 ? r->internal.data[i] : 0; }
// KVM_EXIT_SYSTEM_EVENT
static inline uint32_t gvm_run_system_event_type(const struct kvm_run *r) { return r->system_event.type; }
// KVM_EXIT_EXCEPTION
static inline uint32_t gvm_run_ex_exception(const struct kvm_run *r) { return r->ex.exception; }
static inline uint32_t gvm_run_ex_error_code(const struct kvm_run *r) { return r->ex.error_code; }
// KVM_EXIT_HYPERCALL
static inline uint64_t gvm_run_hypercall_nr(const struct kvm_run *r) { return r->hypercall.nr; }

// ---- MSR accesses in user space (KVM_CAP_X86_USER_SPACE_MSR; the x2APIC MSRs) --------------------
static inline unsigned long gvm_KVM_ENABLE_CAP(void) { return KVM_ENABLE_CAP; }
static inline int gvm_KVM_CAP_X86_USER_SPACE_MSR(void) { return KVM_CAP_X86_USER_SPACE_MSR; }
/// The MSR accesses KVM sends to user space once enabled: ones it would fail with #GP (INVAL: the
/// x2APIC MSRs without an in-kernel APIC, bad values) and ones it does not know (UNKNOWN).
static inline uint64_t gvm_msr_exit_reasons(void) { return KVM_MSR_EXIT_REASON_INVAL | KVM_MSR_EXIT_REASON_UNKNOWN; }
/// KVM_ENABLE_CAP(KVM_CAP_X86_USER_SPACE_MSR, reasons) on a VM fd. Returns 0 or -1 (errno).
static inline int gvm_enable_user_space_msr(int vmfd, uint64_t reasons) {
    struct kvm_enable_cap c;
    memset(&c, 0, sizeof c);
    c.cap = KVM_CAP_X86_USER_SPACE_MSR;
    c.args[0] = reasons;
    return ioctl(vmfd, KVM_ENABLE_CAP, &c);
}
static inline int gvm_KVM_EXIT_X86_RDMSR(void) { return KVM_EXIT_X86_RDMSR; }
static inline int gvm_KVM_EXIT_X86_WRMSR(void) { return KVM_EXIT_X86_WRMSR; }
static inline uint32_t gvm_run_msr_index(const struct kvm_run *r) { return r->msr.index; }
static inline uint32_t gvm_run_msr_reason(const struct kvm_run *r) { return r->msr.reason; }
static inline uint64_t gvm_run_msr_data(const struct kvm_run *r) { return r->msr.data; }
/// Completes an MSR exit before the next KVM_RUN: `error` 1 makes KVM raise #GP; for RDMSR `data`
/// is the value read.
static inline void gvm_run_msr_complete(struct kvm_run *r, uint8_t error, uint64_t data) {
    r->msr.error = error;
    r->msr.data = data;
}

// ---- variable-length structs -------------------------------------------------------------------
/// Allocates a zeroed kvm_cpuid2 with room for n entries (free with free()).
static inline struct kvm_cpuid2 *gvm_cpuid2_alloc(uint32_t n) {
    struct kvm_cpuid2 *c = calloc(1, sizeof(struct kvm_cpuid2) + (size_t)n * sizeof(struct kvm_cpuid_entry2));
    if (c) c->nent = n;
    return c;
}
static inline struct kvm_cpuid_entry2 *gvm_cpuid2_entries(struct kvm_cpuid2 *c) { return c->entries; }

/// Allocates a zeroed kvm_msrs with room for n entries (free with free()).
static inline struct kvm_msrs *gvm_msrs_alloc(uint32_t n) {
    struct kvm_msrs *m = calloc(1, sizeof(struct kvm_msrs) + (size_t)n * sizeof(struct kvm_msr_entry));
    if (m) m->nmsrs = n;
    return m;
}
static inline struct kvm_msr_entry *gvm_msrs_entries(struct kvm_msrs *m) { return m->entries; }

// ---- kick signal -------------------------------------------------------------------------------
static inline void gvm_kick_handler(int sig) { (void)sig; }
/// Installs a no-op handler (without SA_RESTART) for the signal used to kick vCPU threads out of
/// KVM_RUN, so the ioctl returns EINTR instead of the process dying. Returns 0 or -1 (errno).
static inline int gvm_install_kick_handler(int sig) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = gvm_kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    return sigaction(sig, &sa, NULL);
}
static inline int gvm_sigrtmin(void) { return SIGRTMIN; }
/// Makes sure the kick signal is not blocked on the calling thread.
static inline int gvm_unblock_signal(int sig) {
    sigset_t s;
    sigemptyset(&s);
    sigaddset(&s, sig);
    return pthread_sigmask(SIG_UNBLOCK, &s, NULL);
}
#endif
