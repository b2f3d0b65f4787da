/*
 * rdma_lane.c — see include/rdma_lane.h. Pure logic: no verbs, no sockets, no locks.
 */
#include "rdma_lane.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

void gvm_rdma_lane_init(gvm_rdma_lane_queue *q, uint32_t slot_count, size_t queue_limit) {
    memset(q, 0, sizeof *q);
    if (slot_count < 1) slot_count = 1;
    if (slot_count > GVM_RDMA_MAX_SLOTS) slot_count = GVM_RDMA_MAX_SLOTS;
    q->slot_count = slot_count;
    q->queue_limit = queue_limit;
}

uint32_t gvm_rdma_lane_drop_queued(gvm_rdma_lane_queue *q) {
    uint32_t n = 0;
    while (q->head) {
        gvm_rdma_pending *p = q->head;
        q->head = p->next;
        free(p);
        n++;
    }
    q->tail = NULL;
    q->queued_bytes = 0;
    return n;
}

void gvm_rdma_lane_destroy(gvm_rdma_lane_queue *q) {
    gvm_rdma_lane_drop_queued(q);
    q->busy = 0;
}

static int take_free_slot(gvm_rdma_lane_queue *q, uint32_t *slot) {
    for (uint32_t i = 0; i < q->slot_count; i++) {
        uint32_t s = (q->next_slot + i) % q->slot_count;
        if (!(q->busy & (UINT64_C(1) << s))) {
            q->busy |= UINT64_C(1) << s;
            q->next_slot = (s + 1) % q->slot_count;
            *slot = s;
            return 1;
        }
    }
    return 0;
}

gvm_rdma_submit gvm_rdma_lane_submit(gvm_rdma_lane_queue *q, const gvm_iovec *iov, uint32_t iov_count,
                                     size_t len, uint32_t *slot) {
    if (!q->head && take_free_slot(q, slot)) return GVM_RDMA_POST;
    if (len > q->queue_limit || q->queued_bytes > q->queue_limit - len) return GVM_RDMA_FULL;
    gvm_rdma_pending *p = malloc(sizeof *p + len);
    if (!p) return GVM_RDMA_NO_MEMORY;
    p->next = NULL;
    p->len = len;
    size_t off = 0;
    for (uint32_t i = 0; i < iov_count && off < len; i++) {
        size_t n = iov[i].len <= len - off ? iov[i].len : len - off;
        if (n > 0 && iov[i].base) memcpy(p->bytes + off, iov[i].base, n);
        off += n;
    }
    if (off < len) memset(p->bytes + off, 0, len - off);
    if (q->tail) q->tail->next = p;
    else q->head = p;
    q->tail = p;
    q->queued_bytes += len;
    q->queued_total++;
    return GVM_RDMA_QUEUED;
}

int gvm_rdma_lane_complete(gvm_rdma_lane_queue *q, uint32_t slot, gvm_rdma_pending **next) {
    *next = NULL;
    if (slot >= q->slot_count || !(q->busy & (UINT64_C(1) << slot))) return -1;
    if (q->head) {
        gvm_rdma_pending *p = q->head;
        q->head = p->next;
        if (!q->head) q->tail = NULL;
        q->queued_bytes -= p->len;
        *next = p; /* the slot stays busy: it now carries p */
        return 0;
    }
    q->busy &= ~(UINT64_C(1) << slot);
    return 0;
}

uint32_t gvm_rdma_lane_busy_count(const gvm_rdma_lane_queue *q) {
    return (uint32_t)__builtin_popcountll(q->busy);
}

static size_t put(uint8_t *out, size_t cap, size_t at, const void *src, size_t n) {
    if (at > cap || n > cap - at) return SIZE_MAX;
    memcpy(out + at, src, n);
    return at + n;
}

size_t gvm_rdma_auth_material(uint8_t *out, size_t cap, const char *cluster, uint32_t signer, uint32_t verifier,
                              const void *verifier_hello, size_t verifier_len, const void *signer_hello,
                              size_t signer_len) {
    static const char label[] = "giantvm-transport-rdma-auth-v2";
    size_t name_len = strlen(cluster);
    if (name_len > 0xFFFF) return 0;
    uint8_t n16[2] = {(uint8_t)name_len, (uint8_t)(name_len >> 8)};
    uint8_t ids[8];
    for (int i = 0; i < 4; i++) {
        ids[i] = (uint8_t)(signer >> (8 * i));
        ids[4 + i] = (uint8_t)(verifier >> (8 * i));
    }
    size_t at = 0;
    if ((at = put(out, cap, at, label, sizeof label - 1)) == SIZE_MAX) return 0;
    if ((at = put(out, cap, at, n16, 2)) == SIZE_MAX) return 0;
    if ((at = put(out, cap, at, cluster, name_len)) == SIZE_MAX) return 0;
    if ((at = put(out, cap, at, ids, 8)) == SIZE_MAX) return 0;
    if ((at = put(out, cap, at, verifier_hello, verifier_len)) == SIZE_MAX) return 0;
    if ((at = put(out, cap, at, signer_hello, signer_len)) == SIZE_MAX) return 0;
    return at;
}

int gvm_rdma_random(void *buf, size_t len) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
