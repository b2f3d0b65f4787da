/* Test fixture (see ../broken-coherence/broken_shim.h): fixture: migratory protocol that loses the previous owner's writes when a page moves. */
#define BROKEN_NAME "test-broken-lost-writeback"
#define BROKEN_SUMMARY "fixture: migratory protocol that loses the previous owner's writes when a page moves"
#define BUG_LOSES_WRITEBACK 1
#include "../broken-coherence/broken_shim.h"
