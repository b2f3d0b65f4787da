#ifndef GVM_CSYSTEM_UFFD_H
#define GVM_CSYSTEM_UFFD_H
// (filled by the uffd layer)
#endif
