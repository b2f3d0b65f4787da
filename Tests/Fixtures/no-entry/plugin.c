/* Test fixture: a shared object that is not a GiantVM plugin (no entry symbol). */
#include "giantvm_plugin.h"

GVM_EXPORT int not_a_plugin(void) { return 42; }
