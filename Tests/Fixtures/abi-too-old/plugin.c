/* Test fixture: a plugin declaring an ABI version the host must refuse as too old. */
#include "giantvm_plugin.h"

static const gvm_device_ops ops = {.size = sizeof(gvm_device_ops), .model_count = 0, .models = 0};
static const gvm_plugin_descriptor descriptor = {
    .abi_version = GVM_ABI_MIN_VERSION - 1u, /* the last version this host no longer loads */
    .kind = GVM_PLUGIN_DEVICE,
    .name = "test-abi-too-old",
    .version = "0.0.1",
    .summary = "fixture: ABI too old",
    .ops = &ops,
};

GVM_EXPORT const gvm_plugin_descriptor *giantvm_plugin_entry(void) { return &descriptor; }
