// Tests/Fixtures/broken-no-invalidate: a plugin; its only export is giantvm_plugin_entry (see giantvm_plugin.h).
#pragma once
#include "giantvm_plugin.h"
const gvm_plugin_descriptor *giantvm_plugin_entry(void);
