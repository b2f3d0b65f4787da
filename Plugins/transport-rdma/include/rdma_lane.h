/*
 * rdma_lane.h — the device-independent logic of transport-rdma: per-lane send slots with an
 * overflow queue, the handshake's signed material, and the random nonce. Pure C (no verbs, no
 * sockets, no threads), so a unit test exercises it without an RDMA device
 * (Tests/RDMALaneTests; Tests/RDMALane holds symlinks to these files).
 *
 * Send slots. Each lane (one RC queue pair to one peer) owns `slot_count` registered send
 * buffers; a slot is busy from the post of a SEND until its completion. A frame that finds no
 * free slot is copied into the lane's overflow queue (at most `queue_limit` bytes) and posted
 * from the completion that frees a slot, in order: send() never waits for a completion. (A send
 * that spun for a free slot deadlocked when the host sent from inside deliver(), which runs on
 * the completion poller: the only thread that frees slots.) The slots are also the credits:
 * at most slot_count SENDs are in flight per lane, and the peer posts slot_count receive buffers
 * per lane, reposting each after delivering it; the RC queue pair's RNR retry covers the window
 * between a delivery and its repost.
 *
 * Threading: none inside. The caller holds the lane's lock around every call, and posts the
 * SEND for a slot handed out here before releasing it, so frames reach the wire in the order
 * they were submitted.
 */
#ifndef GIANTVM_RDMA_LANE_H
#define GIANTVM_RDMA_LANE_H

#include <stddef.h>
#include <stdint.h>

#include "giantvm_plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Most send slots one lane can have (one bit each in `busy`). */
#define GVM_RDMA_MAX_SLOTS 64u

/** A frame waiting in a lane's overflow queue (bytes follow the header). */
typedef struct gvm_rdma_pending {
    struct gvm_rdma_pending *next;
    size_t len;
    uint8_t bytes[];
} gvm_rdma_pending;

typedef struct gvm_rdma_lane_queue {
    uint32_t slot_count;  /* 1 .. GVM_RDMA_MAX_SLOTS */
    uint32_t next_slot;   /* where the search for a free slot starts (round robin) */
    uint64_t busy;        /* bit i: slot i holds a posted SEND not yet completed */
    gvm_rdma_pending *head, *tail;
    size_t queued_bytes;  /* bytes in the overflow queue */
    size_t queue_limit;   /* bound on queued_bytes */
    uint64_t queued_total; /* frames that ever waited in the queue (statistics) */
} gvm_rdma_lane_queue;

/** Outcomes of gvm_rdma_lane_submit. */
typedef enum gvm_rdma_submit {
    GVM_RDMA_POST = 0,   /* *slot is now busy: copy the frame into it and post the SEND */
    GVM_RDMA_QUEUED = 1, /* copied into the overflow queue; posted later from a completion */
    GVM_RDMA_FULL = 2,   /* the overflow queue is at queue_limit: send returns GVM_ERR_NOMEM */
    GVM_RDMA_NO_MEMORY = 3, /* malloc failed: send returns GVM_ERR_NOMEM */
} gvm_rdma_submit;

/** Initializes an empty lane; slot_count is clamped to 1 .. GVM_RDMA_MAX_SLOTS. */
void gvm_rdma_lane_init(gvm_rdma_lane_queue *q, uint32_t slot_count, size_t queue_limit);

/** Frees every queued frame (the lane's slots are forgotten). */
void gvm_rdma_lane_destroy(gvm_rdma_lane_queue *q);

/** A new frame of `len` bytes (the concatenation of iov). Never waits. While frames are queued,
 *  a new frame queues behind them even if a slot is free, so the order holds. */
gvm_rdma_submit gvm_rdma_lane_submit(gvm_rdma_lane_queue *q, const gvm_iovec *iov, uint32_t iov_count,
                                     size_t len, uint32_t *slot);

/** The SEND in `slot` completed (or its post failed). Frees the slot, unless a queued frame
 *  takes it: then *next is that frame (the caller copies it into the slot's buffer, posts it and
 *  frees it with free()) and the slot stays busy. Returns -1 if the slot was not busy (a stray
 *  completion), else 0. */
int gvm_rdma_lane_complete(gvm_rdma_lane_queue *q, uint32_t slot, gvm_rdma_pending **next);

/** Drops every queued frame (the peer is gone); returns how many were dropped. */
uint32_t gvm_rdma_lane_drop_queued(gvm_rdma_lane_queue *q);

/** Number of busy slots. */
uint32_t gvm_rdma_lane_busy_count(const gvm_rdma_lane_queue *q);

/** Builds the bytes node `signer` signs to prove the cluster key to node `verifier`: a fixed
 *  label, the cluster name, both ids, then the verifier's hello and the signer's hello exactly as
 *  sent (each hello holds its sender's random nonce, node id, cluster name, queue-pair numbers
 *  and regions), so a proof is bound to both nonces and to everything either side announced, and
 *  can be neither replayed on another connection, relayed, nor reflected. Returns the length
 *  written, or 0 if `cap` is too small. */
size_t gvm_rdma_auth_material(uint8_t *out, size_t cap, const char *cluster, uint32_t signer, uint32_t verifier,
                              const void *verifier_hello, size_t verifier_len, const void *signer_hello,
                              size_t signer_len);

/** Fills buf with `len` bytes from getrandom(2). Returns 0, or -1 with errno set if the kernel
 *  cannot provide them (there is no weaker fallback: a predictable nonce makes proofs replayable). */
int gvm_rdma_random(void *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif
