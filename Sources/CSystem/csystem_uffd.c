// The raw floor of a userfaultfd fault round trip: the least a handler can do (read one event,
// one UFFDIO_COPY that also wakes the faulter), in C, with no bookkeeping. `giantvm bench fault`
// runs it in the same process and wake mode as the GuestMemory path and prints both.
#define _GNU_SOURCE
#include "csystem_uffd.h"
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <sched.h>

_Static_assert(sizeof(gvm_cpu_mask) >= sizeof(cpu_set_t), "gvm_cpu_mask must hold a cpu_set_t");

int gvm_thread_get_affinity(gvm_cpu_mask *out) {
    int rc = pthread_getaffinity_np(pthread_self(), sizeof(cpu_set_t), (cpu_set_t *)out->bits);
    return -rc;
}

int gvm_thread_set_affinity(const gvm_cpu_mask *mask) {
    int rc = pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), (const cpu_set_t *)mask->bits);
    return -rc;
}

int gvm_thread_pin_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return -pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int gvm_nth_available_cpu(int n) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0) return -1;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &set) && n-- == 0) return cpu;
    }
    return -1;
}

#define FLOOR_PAGE 4096u

typedef struct floor_ctx {
    int uffd;
    int kick;                /* eventfd: wakes the handler out of poll to stop it */
    int wake_mode;
    int handler_cpu;
    uint64_t spin_ns;
    atomic_int stop;
    int error;               /* first -errno the handler saw */
    unsigned char *page;     /* the bytes copied in */
} floor_ctx;

static uint64_t floor_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *floor_handler(void *arg) {
    floor_ctx *c = arg;
    if (c->handler_cpu >= 0) gvm_thread_pin_cpu(c->handler_cpu);
    struct uffd_msg msg;
    struct pollfd pfd[2] = { { .fd = c->uffd, .events = POLLIN }, { .fd = c->kick, .events = POLLIN } };
    while (!atomic_load_explicit(&c->stop, memory_order_acquire)) {
        ssize_t n = read(c->uffd, &msg, sizeof msg);
        if (n < 0 && errno == EAGAIN) {
            if (c->wake_mode == 1) {
                uint64_t until = floor_now() + c->spin_ns;
                int got = 0;
                while (floor_now() < until && !atomic_load_explicit(&c->stop, memory_order_relaxed)) {
                    n = read(c->uffd, &msg, sizeof msg);
                    if (n > 0 || (n < 0 && errno != EAGAIN)) { got = 1; break; }
                    gvm_cpu_relax();
                }
                if (!got) { poll(pfd, 2, -1); continue; }
            } else {
                poll(pfd, 2, -1);
                continue;
            }
        }
        if (n < 0) { if (errno == EINTR) continue; c->error = -errno; break; }
        if (n != (ssize_t)sizeof msg || msg.event != UFFD_EVENT_PAGEFAULT) continue;
        uint64_t addr = msg.arg.pagefault.address & ~(uint64_t)(FLOOR_PAGE - 1);
        int64_t copied;
        int rc = gvm_uffd_copy(c->uffd, addr, c->page, FLOOR_PAGE, 0, &copied);
        if (rc == -EEXIST) gvm_uffd_wake(c->uffd, addr, FLOOR_PAGE);
        else if (rc < 0) { c->error = rc; break; }
    }
    return NULL;
}

int gvm_uffd_floor_bench(int wake_mode, uint32_t iterations, uint64_t spin_ns, int handler_cpu, uint64_t *out_ns) {
    if (iterations == 0) return 0;
    int uffd = gvm_uffd_open_syscall();
    if (uffd == -EPERM || uffd == -EACCES) uffd = gvm_uffd_open_device();
    if (uffd < 0) return uffd;
    uint64_t features = UFFD_FEATURE_PAGEFAULT_FLAG_WP, ioctls = 0;
    int rc = gvm_uffd_api(uffd, &features, &ioctls);
    if (rc < 0) { close(uffd); return rc; }

    /* A window of pages reused round after round: drop them all between rounds. */
    uint32_t window = iterations < 1024 ? iterations : 1024;
    size_t len = (size_t)window * FLOOR_PAGE;
    unsigned char *region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) { rc = -errno; close(uffd); return rc; }
    madvise(region, len, MADV_NOHUGEPAGE);
    rc = gvm_uffd_register(uffd, (uint64_t)(uintptr_t)region, len,
                           UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, &ioctls);
    if (rc < 0) { munmap(region, len); close(uffd); return rc; }

    floor_ctx c = { .uffd = uffd, .wake_mode = wake_mode, .handler_cpu = handler_cpu, .spin_ns = spin_ns, .error = 0 };
    atomic_init(&c.stop, 0);
    c.kick = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    c.page = aligned_alloc(FLOOR_PAGE, FLOOR_PAGE);
    if (c.kick < 0 || !c.page) { rc = -ENOMEM; goto out_nothread; }
    memset(c.page, 0xA5, FLOOR_PAGE);
    pthread_t th;
    if (pthread_create(&th, NULL, floor_handler, &c) != 0) { rc = -EAGAIN; goto out_nothread; }

    volatile unsigned char sink = 0;
    for (uint32_t i = 0; i < iterations && c.error == 0; i++) {
        uint32_t slot = i % window;
        if (slot == 0 && i > 0) madvise(region, len, MADV_DONTNEED);
        uint64_t t0 = floor_now();
        sink ^= ((volatile unsigned char *)region)[(size_t)slot * FLOOR_PAGE + 64];
        out_ns[i] = floor_now() - t0;
    }
    (void)sink;
    rc = c.error;

    atomic_store_explicit(&c.stop, 1, memory_order_release);
    uint64_t one = 1;
    (void)!write(c.kick, &one, sizeof one);
    pthread_join(th, NULL);
out_nothread:
    if (c.kick >= 0) close(c.kick);
    free(c.page);
    /* Nothing can fault now (the only faulting thread is this one): unmapping first and then
     * closing the uffd leaves no fault to fall back to zero-fill. */
    munmap(region, len);
    close(uffd);
    return rc;
}

int gvm_pagemap_entry(uint64_t addr, uint64_t *entry) {
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    off_t off = (off_t)(addr / FLOOR_PAGE) * 8;
    ssize_t n = pread(fd, entry, 8, off);
    int err = errno;
    close(fd);
    if (n != 8) return n < 0 ? -err : -EIO;
    return 0;
}

/* Test support: in a forked child that drops to uid/gid `uid` (and no supplementary groups),
 * try both ways of opening a userfaultfd and report each result (fd >= 0 -> 0, or -errno) back
 * through a pipe. The child only makes async-signal-safe calls, so forking a threaded process is
 * sound. Returns 0, or -errno if the probe itself could not run. */
#include <grp.h>
#include <sys/wait.h>
int gvm_uffd_probe_as_user(uint32_t uid, int *syscall_result, int *device_result) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) return -errno;
    pid_t pid = fork();
    if (pid < 0) { int e = errno; close(p[0]); close(p[1]); return -e; }
    if (pid == 0) {
        int res[2] = { -EPERM, -EPERM };
        if (setgroups(0, NULL) != 0 || setgid(uid) != 0 || setuid(uid) != 0) _exit(3);
        int fd = gvm_uffd_open_syscall();
        res[0] = fd < 0 ? fd : 0;
        if (fd >= 0) close(fd);
        fd = gvm_uffd_open_device();
        res[1] = fd < 0 ? fd : 0;
        if (fd >= 0) close(fd);
        (void)!write(p[1], res, sizeof res);
        _exit(0);
    }
    close(p[1]);
    int res[2];
    ssize_t n = read(p[0], res, sizeof res);
    close(p[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (n != (ssize_t)sizeof res) return WIFEXITED(status) && WEXITSTATUS(status) == 3 ? -EPERM : -EIO;
    *syscall_result = res[0];
    *device_result = res[1];
    return 0;
}
