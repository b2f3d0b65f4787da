/* Test fixture (see ../broken-coherence/broken_shim.h): fixture: migratory protocol whose previous holder keeps a copy nobody invalidates. */
#define BROKEN_NAME "test-broken-no-invalidate"
#define BROKEN_SUMMARY "fixture: migratory protocol whose previous holder keeps a copy nobody invalidates"
#define BUG_KEEPS_OLD_COPY 1
#include "../broken-coherence/broken_shim.h"
