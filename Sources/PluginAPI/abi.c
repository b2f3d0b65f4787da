// The PluginAPI target is header-only in substance; SwiftPM needs one source file per C target.
#include "giantvm_plugin.h"
