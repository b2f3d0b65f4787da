// csystem_uffd.h: userfaultfd shims for the UserfaultFD and GuestMemory targets.
//
// Swift cannot expand the _IOWR() request macros nor call the variadic ioctl/syscall, and it
// imports the anonymous unions of `struct uffd_msg` awkwardly; these inline helpers do it in C.
// Every helper returns 0 (or a count) on success and -errno on failure, so Swift never reads a
// stale errno. Nothing here keeps state.
#ifndef GVM_CSYSTEM_UFFD_H
#define GVM_CSYSTEM_UFFD_H

#include <stdint.h>
#include <stddef.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>
#include <linux/userfaultfd.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

/// A non-blocking, close-on-exec eventfd (the kick that stops fault-handler threads), or -errno.
static inline int gvm_uffd_kick_eventfd(void) {
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

/// Size of one `struct uffd_msg` (what one read(2) returns per event).
static inline size_t gvm_uffd_msg_size(void) { return sizeof(struct uffd_msg); }

/// userfaultfd(2) with O_CLOEXEC | O_NONBLOCK (never UFFD_USER_MODE_ONLY: faults taken inside
/// KVM are kernel-mode faults). Returns the fd or -errno.
static inline int gvm_uffd_open_syscall(void) {
    long fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    return fd < 0 ? -errno : (int)fd;
}

/// The /dev/userfaultfd route (Linux 6.1+): open the device and ask it for a new uffd.
/// Returns the fd or -errno (of the open, or of the ioctl).
static inline int gvm_uffd_open_device(void) {
    int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0) return -errno;
    // Sound: USERFAULTFD_IOC_NEW takes the new fd's flags as its integer argument.
    int fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
    int err = errno;
    close(dev);
    return fd < 0 ? -err : fd;
}

/// UFFDIO_API handshake. `features` in: requested; out: offered. `ioctls` out: supported ioctls.
static inline int gvm_uffd_api(int fd, uint64_t *features, uint64_t *ioctls) {
    struct uffdio_api api = { .api = UFFD_API, .features = *features, .ioctls = 0 };
    // Sound: UFFDIO_API reads and writes exactly one struct uffdio_api on our stack.
    if (ioctl(fd, UFFDIO_API, &api) < 0) return -errno;
    *features = api.features;
    *ioctls = api.ioctls;
    return 0;
}

/// UFFDIO_REGISTER of [start, start+len) in `mode` (UFFDIO_REGISTER_MODE_*). `ioctls` out: the
/// range ioctls available on it.
static inline int gvm_uffd_register(int fd, uint64_t start, uint64_t len, uint64_t mode, uint64_t *ioctls) {
    struct uffdio_register reg = { .range = { .start = start, .len = len }, .mode = mode, .ioctls = 0 };
    // Sound: UFFDIO_REGISTER reads and writes one struct uffdio_register on our stack.
    if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0) return -errno;
    *ioctls = reg.ioctls;
    return 0;
}

/// UFFDIO_UNREGISTER of [start, start+len): faults there are the kernel's own again.
static inline int gvm_uffd_unregister(int fd, uint64_t start, uint64_t len) {
    struct uffdio_range r = { .start = start, .len = len };
    // Sound: UFFDIO_UNREGISTER reads one struct uffdio_range on our stack.
    return ioctl(fd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

/// UFFDIO_COPY of len bytes from src to dst (both page aligned) with `mode` (UFFDIO_COPY_MODE_*).
/// `copied` out: bytes copied (also on a partial failure), or 0.
static inline int gvm_uffd_copy(int fd, uint64_t dst, const void *src, uint64_t len, uint64_t mode,
                                int64_t *copied) {
    struct uffdio_copy c = { .dst = dst, .src = (uint64_t)(uintptr_t)src, .len = len, .mode = mode, .copy = 0 };
    // Sound: UFFDIO_COPY reads one struct uffdio_copy on our stack; src must hold len readable
    // bytes (the caller's buffer) and dst lies in a range registered on fd.
    int rc = ioctl(fd, UFFDIO_COPY, &c);
    int err = errno;
    *copied = c.copy > 0 ? c.copy : 0;
    return rc < 0 ? -err : 0;
}

/// UFFDIO_WRITEPROTECT of [start, start+len): mode UFFDIO_WRITEPROTECT_MODE_WP set or clears.
static inline int gvm_uffd_writeprotect(int fd, uint64_t start, uint64_t len, uint64_t mode) {
    struct uffdio_writeprotect wp = { .range = { .start = start, .len = len }, .mode = mode };
    // Sound: UFFDIO_WRITEPROTECT reads one struct uffdio_writeprotect on our stack.
    return ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

/// UFFDIO_WAKE of every thread blocked on a fault in [start, start+len).
static inline int gvm_uffd_wake(int fd, uint64_t start, uint64_t len) {
    struct uffdio_range r = { .start = start, .len = len };
    // Sound: UFFDIO_WAKE reads one struct uffdio_range on our stack.
    return ioctl(fd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

/// UFFDIO_ZEROPAGE exists but is deliberately not wrapped: it has no write-protect mode, so a
/// zero page installed that way could be written behind the DSM's back. Copy a zero buffer with
/// UFFDIO_COPY_MODE_WP instead.

// --- struct uffd_msg accessors (packed struct with anonymous unions) -------------------------
static inline uint8_t gvm_uffd_msg_event(const void *msg) { return ((const struct uffd_msg *)msg)->event; }
static inline uint64_t gvm_uffd_msg_fault_flags(const void *msg) {
    return ((const struct uffd_msg *)msg)->arg.pagefault.flags;
}
static inline uint64_t gvm_uffd_msg_fault_address(const void *msg) {
    return ((const struct uffd_msg *)msg)->arg.pagefault.address;
}
static inline uint32_t gvm_uffd_msg_fault_tid(const void *msg) {
    return ((const struct uffd_msg *)msg)->arg.pagefault.feat.ptid;
}

// --- relaxed/acquire atomics on plain per-page arrays (GuestMemory page tables) -------------
static inline uint8_t gvm_atomic_load_u8(const uint8_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void gvm_atomic_store_u8(uint8_t *p, uint8_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint32_t gvm_atomic_load_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void gvm_atomic_store_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint32_t gvm_atomic_add_u32(uint32_t *p, uint32_t v) { return __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL); }
static inline uint64_t gvm_atomic_add_u64(uint64_t *p, uint64_t v) { return __atomic_add_fetch(p, v, __ATOMIC_RELAXED); }
static inline uint64_t gvm_atomic_load_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
/// A CPU pause hint for spin loops.
static inline void gvm_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

// --- the raw floor: a minimal C userfaultfd handler, for `giantvm bench fault` ---------------
/// Measures `iterations` fault round trips: one thread reads a missing page of a fresh
/// uffd-registered (MISSING|WP) anonymous mapping, another thread resolves it with one
/// UFFDIO_COPY (which wakes the faulter). wake_mode 0 = handler blocks in poll(2); 1 = handler
/// spins on non-blocking read(2) for up to spin_ns, then polls. Writes each round trip in ns to
/// out_ns[i]. handler_cpu >= 0 pins the handler thread to that CPU (the caller pins itself).
/// Returns 0 or -errno (after the fd, threads and mapping are cleaned up).
int gvm_uffd_floor_bench(int wake_mode, uint32_t iterations, uint64_t spin_ns, int handler_cpu, uint64_t *out_ns);

/// A CPU affinity mask (cpu_set_t, opaque to Swift).
typedef struct gvm_cpu_mask { unsigned char bits[128]; } gvm_cpu_mask;
/// The calling thread's affinity into *out; 0 or -errno.
int gvm_thread_get_affinity(gvm_cpu_mask *out);
/// Restores a mask from gvm_thread_get_affinity; 0 or -errno.
int gvm_thread_set_affinity(const gvm_cpu_mask *mask);
/// Pins the calling thread to one CPU; 0 or -errno.
int gvm_thread_pin_cpu(int cpu);

/** The calling thread's kernel id (the id userfaultfd reports with UFFD_FEATURE_THREAD_ID). */
static inline uint32_t gvm_gettid(void) { return (uint32_t)syscall(SYS_gettid); }
/// The id of the n-th (from 0) CPU this process may run on (sched_getaffinity), or -1.
int gvm_nth_available_cpu(int n);

/// Reads the /proc/self/pagemap entry of the page at addr (bit 63 present, bit 57 uffd-wp).
/// Returns 0 and fills *entry, or -errno.
int gvm_pagemap_entry(uint64_t addr, uint64_t *entry);

/// Test support: fork a child that drops to `uid` and tries userfaultfd(2) and /dev/userfaultfd;
/// each result is 0 (opened) or -errno. Returns 0, or -errno if the probe could not run
/// (-EPERM: this process cannot change uid).
int gvm_uffd_probe_as_user(uint32_t uid, int *syscall_result, int *device_result);

#endif
