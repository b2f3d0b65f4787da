/*
 * example-c: a complete GiantVM plugin in plain C, built against giantvm_plugin.h alone.
 *
 * It offers one device model, "scratch": an 8-byte register the guest can write and read back
 * (default at port 0x510 + 0x100 = 0x610, or the YAML `base:`), counting accesses in a host
 * counter named "<instance>.accesses". Setting `initial` (an integer) sets the power-on value.
 *
 * Build out of tree:  cc -shared -fPIC -fvisibility=hidden -I <giantvm>/Sources/PluginAPI/include \
 *                        -o libexample-c.so example.c
 */
#include "giantvm_plugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCRATCH_DEFAULT_BASE 0x610u
#define SCRATCH_SIZE 8u

typedef struct scratch {
    const gvm_host_services *svc;
    uint64_t value;
    uint64_t initial;
    uint32_t accesses_counter;
} scratch;

static void *scratch_create(const gvm_host_services *svc, const gvm_device_host *dh,
                            const gvm_device_config *config, const gvm_setting *settings,
                            uint32_t setting_count, gvm_error *err) {
    uint64_t initial = 0;
    for (uint32_t i = 0; i < setting_count; i++) {
        if (strcmp(settings[i].key, "initial") == 0) {
            char *end = NULL;
            initial = strtoull(settings[i].value, &end, 0);
            if (end == settings[i].value || *end != '\0') {
                snprintf(err->message, GVM_ERROR_MAX, "setting 'initial': '%s' is not an integer",
                         settings[i].value);
                return NULL;
            }
        } else {
            snprintf(err->message, GVM_ERROR_MAX, "unknown setting '%s' (accepted: initial)",
                     settings[i].key);
            return NULL;
        }
    }
    scratch *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err->message, GVM_ERROR_MAX, "out of memory");
        return NULL;
    }
    s->svc = svc;
    s->initial = initial;
    s->value = initial;
    char name[256];
    snprintf(name, sizeof name, "%s.accesses", config->instance_name);
    s->accesses_counter = svc->counter(svc->host, name);
    uint64_t base = config->has_base ? config->base : SCRATCH_DEFAULT_BASE;
    if (dh->map_io(dh->host, GVM_SPACE_PIO, base, SCRATCH_SIZE) != GVM_OK) {
        snprintf(err->message, GVM_ERROR_MAX, "ports 0x%llx-0x%llx are taken",
                 (unsigned long long)base, (unsigned long long)(base + SCRATCH_SIZE - 1));
        free(s);
        return NULL;
    }
    return s;
}

static void scratch_io(void *device, uint32_t space, uint64_t offset, uint8_t *data, uint32_t len,
                       int is_write) {
    (void)space;
    scratch *s = device;
    s->svc->counter_add(s->svc->host, s->accesses_counter, 1);
    if (offset >= SCRATCH_SIZE || len > SCRATCH_SIZE - offset) {
        s->svc->log(s->svc->host, GVM_LOG_WARNING, "scratch: access outside the register ignored");
        if (!is_write) memset(data, 0xff, len);
        return;
    }
    uint8_t *bytes = (uint8_t *)&s->value; /* x86 hosts are little endian, as the guest is */
    if (is_write) memcpy(bytes + offset, data, len);
    else memcpy(data, bytes + offset, len);
}

static void scratch_reset(void *device) {
    scratch *s = device;
    s->value = s->initial;
}

static void scratch_destroy(void *device) { free(device); }

static const gvm_device_model models[] = {
    {
        .name = "scratch",
        .summary = "8-byte read/write scratch register (C example)",
        .create = scratch_create,
        .io = scratch_io,
        .console_input = NULL,
        .reset = scratch_reset,
        .destroy = scratch_destroy,
    },
};

static const gvm_device_ops ops = {
    .size = sizeof(gvm_device_ops),
    .model_count = 1,
    .models = models,
};

/* The settings scratch_create accepts (ABI 3 self-description, `giantvm plugins describe`). */
static const gvm_setting_info setting_info[] = {
    {"initial", "0", "power-on value of the 8-byte register (an integer, C notation: 42, 0x2a)", "scratch"},
};

static const gvm_plugin_descriptor descriptor = {
    .abi_version = GVM_ABI_VERSION,
    .kind = GVM_PLUGIN_DEVICE,
    .name = "example-c",
    .version = "0.1.0",
    .summary = "example device plugin written in C against the header alone",
    .ops = &ops,
    .description = NULL,
    .setting_count = 1,
    .settings = setting_info,
};

GVM_EXPORT const gvm_plugin_descriptor *giantvm_plugin_entry(void) { return &descriptor; }
