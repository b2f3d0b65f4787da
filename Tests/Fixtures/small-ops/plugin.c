/* Test fixture: a coherence plugin whose ops table declares a size that stops before its last
 * REQUIRED hook (destroy), as a plugin built against an older, shorter table would. Every hook is
 * set, so only the size check can refuse it; the host must refuse it and unload it. */
#include <stddef.h>
#include "giantvm_plugin.h"

static void *create(const gvm_host_services *svc, const gvm_coherence_host *mem, const gvm_cluster_info *cluster,
                    const gvm_setting *settings, uint32_t setting_count, gvm_error *err) {
    (void)svc; (void)mem; (void)cluster; (void)settings; (void)setting_count; (void)err;
    return 0;
}
static void fault(void *c, uint64_t gfn, uint32_t access, uint32_t flags) { (void)c; (void)gfn; (void)access; (void)flags; }
static void receive(void *c, uint32_t src, const void *msg, size_t len) { (void)c; (void)src; (void)msg; (void)len; }
static void destroy(void *c) { (void)c; }

static const gvm_coherence_ops ops = {
    .size = (uint32_t)offsetof(gvm_coherence_ops, destroy),
    .create = create,
    .fault = fault,
    .receive = receive,
    .destroy = destroy,
};
static const gvm_plugin_descriptor descriptor = {
    .abi_version = GVM_ABI_VERSION,
    .kind = GVM_PLUGIN_COHERENCE,
    .name = "test-small-ops",
    .version = "0.0.1",
    .summary = "fixture: coherence ops table smaller than its required hooks",
    .ops = &ops,
};

GVM_EXPORT const gvm_plugin_descriptor *giantvm_plugin_entry(void) { return &descriptor; }
