#ifndef GVM_CSYSTEM_KVM_H
#define GVM_CSYSTEM_KVM_H
// (filled by the kvm layer)
#endif
