// CSystem: C shims for what Swift cannot call directly on Linux (variadic ioctl/fcntl, ioctl
// request numbers built by macros, kernel structs). One header per concern; this is the umbrella.
#ifndef GVM_CSYSTEM_H
#define GVM_CSYSTEM_H
#include "csystem_common.h"
#include "csystem_uffd.h"
#include "csystem_kvm.h"
#include "csystem_net.h"
#include "csystem_ivy.h"
#include "csystem_dist.h"
#include "csystem_kvmclock.h"
#endif
