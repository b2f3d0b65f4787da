#ifndef GVM_CSYSTEM_COMMON_H
#define GVM_CSYSTEM_COMMON_H
#include <stdint.h>
#include <sys/ioctl.h>
#include <errno.h>

/// ioctl(2) with a pointer argument (ioctl is variadic, so Swift cannot call it directly).
static inline int gvm_ioctl_ptr(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
/// ioctl(2) with an integer argument.
static inline int gvm_ioctl_int(int fd, unsigned long request, unsigned long arg) { return ioctl(fd, request, arg); }
/// errno, readable from Swift without Glibc overlay quirks.
static inline int gvm_errno(void) { return errno; }
#endif
