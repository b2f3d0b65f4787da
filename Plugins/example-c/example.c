#include "giantvm_plugin.h"
