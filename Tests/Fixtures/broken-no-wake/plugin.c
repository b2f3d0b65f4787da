/* Test fixture (see ../broken-coherence/broken_shim.h): fixture: migratory protocol that forgets to wake the waiter of a first touch. */
#define BROKEN_NAME "test-broken-no-wake"
#define BROKEN_SUMMARY "fixture: migratory protocol that forgets to wake the waiter of a first touch"
#define BUG_FORGETS_WAKE 1
#include "../broken-coherence/broken_shim.h"
