// Tests/Fixtures/no-entry: a plugin; its only export is giantvm_plugin_entry (see giantvm_plugin.h).
#pragma once
#include "giantvm_plugin.h"

