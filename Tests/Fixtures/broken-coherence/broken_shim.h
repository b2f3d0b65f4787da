/*
 * Tests/Fixtures/broken-coherence: the migratory protocol of templates/coherence-c (correct, and
 * certified by `giantvm conformance --model sc`) with ONE bug injected between it and the host:
 * each fixture defines BROKEN_NAME, BROKEN_SUMMARY and one of
 *
 *   BUG_KEEPS_OLD_COPY   page_drop write-protects instead of dropping: the node that hands a
 *                        page on keeps a readable copy, a sharer nobody ever invalidates;
 *   BUG_LOSES_WRITEBACK  page_drop drops the page but does not copy its bytes out: the new owner
 *                        gets a zeroed page, the previous owner's writes are lost;
 *   BUG_FORGETS_WAKE     the page_wake after a zero-filled first touch is left out: the thread
 *                        that faulted waits for ever;
 *
 * then includes this file. `giantvm conformance` must fail each of them with a replayable seed.
 * The plugin sees a gvm_coherence_host table whose `host` is this shim; every call but the broken
 * one passes through unchanged.
 */
#define giantvm_plugin_entry migratory_template_entry
#include "../../../templates/coherence-c/migratory.c"
#undef giantvm_plugin_entry

typedef struct shim {
    gvm_coherence_host table;      /* what the protocol is given */
    const gvm_coherence_host *real;
    void *inner;
    uint64_t zero_installed;       /* BUG_FORGETS_WAKE: the page last installed from zeros */
} shim;

static shim *S(gvm_host *h) { return (shim *)h; }
#define REAL(h) S(h)->real->host

static int s_send(gvm_host *h, uint32_t d, const gvm_iovec *v, uint32_t n) { return S(h)->real->send(REAL(h), d, v, n); }
static int s_send_urgent(gvm_host *h, uint32_t d, const gvm_iovec *v, uint32_t n) { return S(h)->real->send_urgent(REAL(h), d, v, n); }
static int s_install(gvm_host *h, uint64_t g, const void *b, uint32_t st) {
    S(h)->zero_installed = b ? UINT64_MAX : g;
    return S(h)->real->page_install(REAL(h), g, b, st);
}
static int s_upgrade(gvm_host *h, uint64_t g) { return S(h)->real->page_upgrade(REAL(h), g); }
static int s_downgrade(gvm_host *h, uint64_t g, void *o) { return S(h)->real->page_downgrade(REAL(h), g, o); }
static int s_drop(gvm_host *h, uint64_t g, void *out) {
#if defined(BUG_KEEPS_OLD_COPY)
    return S(h)->real->page_downgrade(REAL(h), g, out);
#elif defined(BUG_LOSES_WRITEBACK)
    int rc = S(h)->real->page_drop(REAL(h), g, NULL);
    if (rc == GVM_OK && out) memset(out, 0, GVM_PAGE_SIZE);
    return rc;
#else
    return S(h)->real->page_drop(REAL(h), g, out);
#endif
}
static int s_read(gvm_host *h, uint64_t g, void *o) { return S(h)->real->page_read(REAL(h), g, o); }
static int s_patch(gvm_host *h, uint64_t g, uint32_t off, const void *b, uint32_t len) { return S(h)->real->page_patch(REAL(h), g, off, b, len); }
static uint32_t s_state(gvm_host *h, uint64_t g) { return S(h)->real->page_state(REAL(h), g); }
static uint32_t s_pinned(gvm_host *h, uint64_t g) { return S(h)->real->page_pinned(REAL(h), g); }
static void s_wake(gvm_host *h, uint64_t g) {
#if defined(BUG_FORGETS_WAKE)
    if (S(h)->zero_installed == g) { S(h)->zero_installed = UINT64_MAX; return; }
#endif
    S(h)->real->page_wake(REAL(h), g);
}

static void *b_create(const gvm_host_services *svc, const gvm_coherence_host *mem, const gvm_cluster_info *cl,
                      const gvm_setting *settings, uint32_t n, gvm_error *err) {
    shim *s = calloc(1, sizeof *s);
    if (!s) { snprintf(err->message, GVM_ERROR_MAX, "out of memory"); return NULL; }
    s->real = mem;
    s->zero_installed = UINT64_MAX;
    s->table = (gvm_coherence_host){ .size = sizeof(gvm_coherence_host), .host = (gvm_host *)s, .page_count = mem->page_count,
        .send = s_send, .send_urgent = s_send_urgent, .page_install = s_install, .page_upgrade = s_upgrade,
        .page_downgrade = s_downgrade, .page_drop = s_drop, .page_read = s_read, .page_patch = s_patch,
        .page_state = s_state, .page_pinned = s_pinned, .page_wake = s_wake };
    s->inner = mig_create(svc, &s->table, cl, settings, n, err);
    if (!s->inner) { free(s); return NULL; }
    return s;
}
static void b_fault(void *p, uint64_t g, uint32_t a, uint32_t f) { mig_fault(((shim *)p)->inner, g, a, f); }
static void b_receive(void *p, uint32_t src, const void *m, size_t len) { mig_receive(((shim *)p)->inner, src, m, len); }
static void b_unpinned(void *p, uint64_t g) { mig_unpinned(((shim *)p)->inner, g); }
static size_t b_describe(void *p, char *buf, size_t cap) { return mig_describe(((shim *)p)->inner, buf, cap); }
static void b_destroy(void *p) {
    if (!p) return;
    mig_destroy(((shim *)p)->inner);
    free(p);
}

static const gvm_coherence_ops broken_ops = {
    .size = sizeof(gvm_coherence_ops), .create = b_create, .fault = b_fault, .receive = b_receive,
    .page_unpinned = b_unpinned, .describe = b_describe, .destroy = b_destroy,
};
static const gvm_plugin_descriptor broken_descriptor = {
    .abi_version = GVM_ABI_VERSION, .kind = GVM_PLUGIN_COHERENCE, .name = BROKEN_NAME, .version = "0.0.1",
    .summary = BROKEN_SUMMARY, .ops = &broken_ops,
};

GVM_EXPORT const gvm_plugin_descriptor *giantvm_plugin_entry(void) { return &broken_descriptor; }
