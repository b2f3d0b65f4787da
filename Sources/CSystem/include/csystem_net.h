#ifndef GVM_CSYSTEM_NET_H
#define GVM_CSYSTEM_NET_H
// Shims for the network layer (transport-tcp, Cluster): fcntl is variadic and accept4/pipe2 need
// _GNU_SOURCE, which Swift's Glibc module does not always expose.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#include <signal.h>
#include <pthread.h>
#include <sys/prctl.h>

// Declared here because _GNU_SOURCE may come too late once other headers are in (same
// prototypes as glibc's, so a second declaration is harmless).
extern int pthread_setname_np(pthread_t thread, const char *name);
extern ssize_t getrandom(void *buf, size_t len, unsigned int flags);

/// Names the calling thread (15 characters at most; longer names are cut).
static inline void gvm_net_set_thread_name(const char *name) {
    char buf[16];
    size_t i = 0;
    for (; i < 15 && name[i]; i++) buf[i] = name[i];
    buf[i] = 0;
    pthread_setname_np(pthread_self(), buf);
}
/// Random bytes from the kernel (getrandom(2)); returns bytes written or -1.
static inline long gvm_net_random(void *buf, size_t len) { return (long)getrandom(buf, len, 0); }

/// Sets or clears O_NONBLOCK on fd. Returns 0 or -1 (errno set).
static inline int gvm_net_set_nonblocking(int fd, int on) {
    int flags = fcntl(fd, F_GETFL, 0);
    if (flags < 0) return -1;
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, flags);
}
/// accept(2), then close-on-exec, not keeping the peer address. (accept4 is not declared
/// without _GNU_SOURCE, and redeclaring it clashes with glibc's transparent-union form.)
static inline int gvm_net_accept(int fd) {
    int c = accept(fd, 0, 0);
    if (c >= 0) fcntl(c, F_SETFD, FD_CLOEXEC);
    return c;
}
/// pipe(2) with close-on-exec and O_NONBLOCK on both ends (wake-up pipes).
static inline int gvm_net_pipe(int fds[2]) {
    if (pipe(fds) != 0) return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL, 0) | O_NONBLOCK);
    }
    return 0;
}
/// pipe(2) with close-on-exec on both ends (blocking: child output relays).
static inline int gvm_net_pipe_cloexec(int fds[2]) {
    if (pipe(fds) != 0) return -1;
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    return 0;
}
/// Ignores SIGPIPE process-wide (writes to a closed socket then fail with EPIPE).
static inline void gvm_net_ignore_sigpipe(void) { signal(SIGPIPE, SIG_IGN); }
/// Asks the kernel to send `sig` to this process when its parent exits (prctl is variadic).
static inline int gvm_net_parent_death_signal(int sig) { return prctl(PR_SET_PDEATHSIG, (unsigned long)sig, 0, 0, 0); }
#endif
