#ifndef GVM_CSYSTEM_NET_H
#define GVM_CSYSTEM_NET_H
// (filled by the net layer)
#endif
