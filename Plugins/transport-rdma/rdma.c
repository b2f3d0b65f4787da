/*
 * transport-rdma: GiantVM frames over InfiniBand/RoCE verbs (libibverbs).
 *
 * Design
 *   - One reliable-connected (RC) queue pair per peer per lane, all completing on one CQ that a
 *     poller thread drains: receive completions are handed to the host's deliver(), send
 *     completions free their slot, RDMA-read completions call the reader's callback.
 *   - Every frame is copied into a registered send slot (GVM_MAX_FRAME + 64 bytes); each QP owns
 *     SLOTS send slots and SLOTS posted receive buffers. send() never waits: a frame that finds
 *     every slot in flight waits in the lane's overflow queue and is posted, in order, by the
 *     completion that frees a slot (rdma_lane.c, unit-tested without a device). The host may
 *     send from inside deliver(), which runs on the completion poller.
 *   - Queue-pair numbers, GIDs and registered regions are exchanged over a TCP side channel on
 *     port (node port + cm_port_offset): the lower node id connects to the higher. The side channel
 *     also carries the host's authentication before any queue pair is connected: both sides send
 *     a hello (a getrandom nonce, node id, cluster name, QP numbers, regions), then a proof over
 *     both hellos and both ids (gvm_rdma_auth_material), so a proof cannot be relayed or replayed.
 *     The acceptor accepts only higher-numbered nodes not yet connected; every side-channel socket
 *     has a handshake timeout. start() returns at once: a connector thread meets the peers and
 *     reports each through peer_state.
 *   - register_region() registers memory for one-sided remote reads (REMOTE_READ); read_remote()
 *     posts an RDMA READ into a local registered region.
 *
 * On a machine without an RDMA device, create() fails with a clear message naming the cause
 * (there is no fallback: use transport-tcp there). The code paths past device discovery cannot be
 * exercised on the development machines of this project (no RDMA hardware, no rdma kernel
 * modules); see README "What works".
 *
 * Settings: device (name, default: first device), ib_port (default 1), gid_index (default 0),
 *           cm_port_offset (default 1000), connect_timeout (a duration, default 10s),
 *           handshake_timeout (a duration, default 5s), send_queue_limit (a size: bytes queued
 *           per lane while every slot is in flight, default 64MiB). Durations and sizes use the
 *           config's one grammar (giantvm_units.h): a bare number is seconds, or bytes.
 */
#include "giantvm_plugin.h"
#include "giantvm_units.h"
#include "rdma_lane.h"

#include <arpa/inet.h>
#include <errno.h>
#include <infiniband/verbs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 16u
#define SLOT_BYTES (GVM_MAX_FRAME + 64u)
#define MAX_REGIONS 8u
#define MAX_READS 256u
#define HS_MAGIC 0x47564d52u /* 'GVMR' */
#define CHALLENGE_BYTES 32u

enum { WR_SEND = 1, WR_RECV = 2, WR_READ = 3 };

static uint64_t wr_id(uint32_t kind, uint32_t peer, uint32_t lane, uint32_t slot) {
    return ((uint64_t)kind << 56) | ((uint64_t)peer << 40) | ((uint64_t)lane << 32) | slot;
}

typedef struct region_desc {
    uint64_t addr;
    uint64_t len;
    uint32_t rkey;
    uint32_t pad;
} region_desc;

typedef struct qp_desc {
    uint32_t qpn;
    uint32_t psn;
    uint16_t lid;
    uint8_t gid[16];
} qp_desc;

typedef struct lane_conn {
    struct ibv_qp *qp;
    uint8_t *send_buf, *recv_buf;
    struct ibv_mr *send_mr, *recv_mr;
    pthread_mutex_t lock;  /* guards sendq and the posting of SENDs on qp */
    gvm_rdma_lane_queue sendq;
} lane_conn;

typedef struct peer_conn {
    lane_conn lanes[GVM_LANE_COUNT];
    region_desc regions[MAX_REGIONS];
    uint32_t region_count;
    _Atomic int up;
} peer_conn;

typedef struct local_region {
    void *addr;
    size_t len;
    struct ibv_mr *mr;
} local_region;

typedef struct pending_read {
    gvm_read_done_fn done;
    void *ctx;
    _Atomic int used;
} pending_read;

typedef struct rdma_transport {
    const gvm_host_services *svc;
    const gvm_transport_host *th;
    const gvm_cluster_info *cluster;
    char device_name[64];
    int ib_port;
    int gid_index;
    int cm_port_offset;
    int connect_timeout_ms;
    int handshake_timeout_ms;
    long long send_queue_limit;

    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_cq *cq;
    struct ibv_port_attr port_attr;
    union ibv_gid gid;

    peer_conn *peers;
    local_region regions[MAX_REGIONS];
    uint32_t region_count;
    pending_read reads[MAX_READS];

    int listen_fd;
    pthread_t poller, listener, connector;
    int poller_started, listener_started, connector_started;
    _Atomic int connecting_fd; /* the connector's socket while it handshakes (-1 = none); whoever
                                  exchanges it to -1 owns (closes) it */
    _Atomic int stopping;
} rdma_transport;

static void logf_(rdma_transport *t, gvm_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#include <stdarg.h>
static void logf_(rdma_transport *t, gvm_log_level level, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    t->svc->log(t->svc->host, level, buf);
}

static int parse_int(const char *text, int lo, int hi, int *out) {
    char *end = NULL;
    long v = strtol(text, &end, 0);
    if (end == text || *end != '\0' || v < lo || v > hi) return -1;
    *out = (int)v;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * create / destroy
 * ------------------------------------------------------------------------------------------- */

static void release(rdma_transport *t) {
    if (!t) return;
    if (t->peers) {
        for (uint32_t p = 0; p < t->cluster->node_count; p++) {
            for (uint32_t l = 0; l < GVM_LANE_COUNT; l++) {
                lane_conn *lc = &t->peers[p].lanes[l];
                if (lc->qp) ibv_destroy_qp(lc->qp);
                if (lc->send_mr) ibv_dereg_mr(lc->send_mr);
                if (lc->recv_mr) ibv_dereg_mr(lc->recv_mr);
                free(lc->send_buf);
                free(lc->recv_buf);
                gvm_rdma_lane_destroy(&lc->sendq);
                pthread_mutex_destroy(&lc->lock);
            }
        }
        free(t->peers);
    }
    for (uint32_t i = 0; i < t->region_count; i++)
        if (t->regions[i].mr) ibv_dereg_mr(t->regions[i].mr);
    if (t->cq) ibv_destroy_cq(t->cq);
    if (t->pd) ibv_dealloc_pd(t->pd);
    if (t->ctx) ibv_close_device(t->ctx);
    free(t);
}

static void *rdma_create(const gvm_host_services *svc, const gvm_transport_host *th,
                         const gvm_cluster_info *cluster, const gvm_setting *settings,
                         uint32_t setting_count, gvm_error *err) {
    rdma_transport *t = calloc(1, sizeof *t);
    if (!t) {
        snprintf(err->message, GVM_ERROR_MAX, "out of memory");
        return NULL;
    }
    t->svc = svc;
    t->th = th;
    t->cluster = cluster;
    t->ib_port = 1;
    t->gid_index = 0;
    t->cm_port_offset = 1000;
    t->connect_timeout_ms = 10000;
    t->handshake_timeout_ms = 5000;
    t->send_queue_limit = 64ll << 20;
    t->listen_fd = -1;
    atomic_store(&t->connecting_fd, -1);
    for (uint32_t i = 0; i < setting_count; i++) {
        const char *k = settings[i].key, *v = settings[i].value;
        int bad = 0;
        if (strcmp(k, "device") == 0) snprintf(t->device_name, sizeof t->device_name, "%s", v);
        else if (strcmp(k, "ib_port") == 0) bad = parse_int(v, 1, 255, &t->ib_port);
        else if (strcmp(k, "gid_index") == 0) bad = parse_int(v, 0, 255, &t->gid_index);
        else if (strcmp(k, "cm_port_offset") == 0) bad = parse_int(v, -60000, 60000, &t->cm_port_offset);
        else if (strcmp(k, "connect_timeout") == 0 || strcmp(k, "handshake_timeout") == 0) {
            /* The config's one duration grammar (giantvm_units.h): a bare number is seconds. */
            int connect = k[0] == 'c';
            uint64_t max = connect ? 3600 * GVM_NS_PER_S : 600 * GVM_NS_PER_S, ns = 0;
            int rc = gvm_parse_duration(v, GVM_NS_PER_MS, max, &ns);
            if (rc != GVM_UNIT_OK) {
                char why[GVM_ERROR_MAX];
                gvm_unit_message(rc, GVM_UNIT_DURATION, v, GVM_NS_PER_MS, max, why, sizeof why);
                snprintf(err->message, GVM_ERROR_MAX, "setting '%s': %s", k, why);
                free(t);
                return NULL;
            }
            *(connect ? &t->connect_timeout_ms : &t->handshake_timeout_ms) = (int)(ns / GVM_NS_PER_MS);
        }
        else if (strcmp(k, "send_queue_limit") == 0) {
            uint64_t bytes = 0;
            int rc = gvm_parse_size(v, SLOT_BYTES, 1ull << 34, &bytes);
            if (rc != GVM_UNIT_OK) {
                char why[GVM_ERROR_MAX];
                gvm_unit_message(rc, GVM_UNIT_SIZE, v, SLOT_BYTES, 1ull << 34, why, sizeof why);
                snprintf(err->message, GVM_ERROR_MAX, "setting '%s': %s", k, why);
                free(t);
                return NULL;
            }
            t->send_queue_limit = (long long)bytes;
        }
        else if (strcmp(k, "__faults") == 0) continue; /* consumed by the host's fault injector */
        else {
            snprintf(err->message, GVM_ERROR_MAX,
                     "unknown setting '%s' (accepted: device, ib_port, gid_index, cm_port_offset, "
                     "connect_timeout, handshake_timeout, send_queue_limit)", k);
            free(t);
            return NULL;
        }
        if (bad) {
            snprintf(err->message, GVM_ERROR_MAX, "setting '%s': '%s' is not a valid value", k, v);
            free(t);
            return NULL;
        }
    }

    int count = 0;
    struct ibv_device **list = ibv_get_device_list(&count);
    if (!list || count == 0) {
        snprintf(err->message, GVM_ERROR_MAX,
                 "no RDMA device found (ibv_get_device_list: %d devices%s%s): this machine has no "
                 "InfiniBand/RoCE hardware or its rdma kernel modules are not loaded; use "
                 "transport-tcp instead",
                 count, list ? "" : ", ", list ? "" : strerror(errno));
        if (list) ibv_free_device_list(list);
        free(t);
        return NULL;
    }
    struct ibv_device *dev = NULL;
    for (int i = 0; i < count; i++) {
        if (t->device_name[0] == '\0' || strcmp(ibv_get_device_name(list[i]), t->device_name) == 0) {
            dev = list[i];
            break;
        }
    }
    if (!dev) {
        snprintf(err->message, GVM_ERROR_MAX, "RDMA device '%s' not found (%d other device(s) present)",
                 t->device_name, count);
        ibv_free_device_list(list);
        free(t);
        return NULL;
    }
    snprintf(t->device_name, sizeof t->device_name, "%s", ibv_get_device_name(dev));
    t->ctx = ibv_open_device(dev);
    ibv_free_device_list(list);
    if (!t->ctx) {
        snprintf(err->message, GVM_ERROR_MAX, "cannot open RDMA device '%s': %s", t->device_name, strerror(errno));
        release(t);
        return NULL;
    }
    if (ibv_query_port(t->ctx, (uint8_t)t->ib_port, &t->port_attr) != 0 ||
        ibv_query_gid(t->ctx, (uint8_t)t->ib_port, t->gid_index, &t->gid) != 0) {
        snprintf(err->message, GVM_ERROR_MAX, "RDMA device '%s': cannot query port %d / gid %d: %s",
                 t->device_name, t->ib_port, t->gid_index, strerror(errno));
        release(t);
        return NULL;
    }
    t->pd = ibv_alloc_pd(t->ctx);
    uint32_t peers = cluster->node_count;
    t->cq = t->pd ? ibv_create_cq(t->ctx, (int)(peers * GVM_LANE_COUNT * SLOTS * 2 + MAX_READS), NULL, NULL, 0) : NULL;
    t->peers = calloc(peers, sizeof(peer_conn));
    if (!t->pd || !t->cq || !t->peers) {
        snprintf(err->message, GVM_ERROR_MAX, "RDMA device '%s': cannot allocate PD/CQ: %s", t->device_name,
                 strerror(errno));
        release(t);
        return NULL;
    }
    for (uint32_t p = 0; p < peers; p++) {
        for (uint32_t l = 0; l < GVM_LANE_COUNT; l++) {
            pthread_mutex_init(&t->peers[p].lanes[l].lock, NULL);
            gvm_rdma_lane_init(&t->peers[p].lanes[l].sendq, SLOTS, (size_t)t->send_queue_limit);
        }
    }
    logf_(t, GVM_LOG_INFO, "RDMA device %s port %d ready", t->device_name, t->ib_port);
    return t;
}

/* ---------------------------------------------------------------------------------------------
 * queue pairs
 * ------------------------------------------------------------------------------------------- */

static int setup_lane(rdma_transport *t, lane_conn *lc) {
    lc->send_buf = aligned_alloc(4096, SLOTS * SLOT_BYTES);
    lc->recv_buf = aligned_alloc(4096, SLOTS * SLOT_BYTES);
    if (!lc->send_buf || !lc->recv_buf) return -1;
    lc->send_mr = ibv_reg_mr(t->pd, lc->send_buf, SLOTS * SLOT_BYTES, IBV_ACCESS_LOCAL_WRITE);
    lc->recv_mr = ibv_reg_mr(t->pd, lc->recv_buf, SLOTS * SLOT_BYTES, IBV_ACCESS_LOCAL_WRITE);
    if (!lc->send_mr || !lc->recv_mr) return -1;
    struct ibv_qp_init_attr init = {
        .send_cq = t->cq,
        .recv_cq = t->cq,
        .cap = {.max_send_wr = SLOTS + MAX_READS, .max_recv_wr = SLOTS, .max_send_sge = 1, .max_recv_sge = 1},
        .qp_type = IBV_QPT_RC,
    };
    lc->qp = ibv_create_qp(t->pd, &init);
    if (!lc->qp) return -1;
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT, .pkey_index = 0, .port_num = (uint8_t)t->ib_port,
                            .qp_access_flags = IBV_ACCESS_REMOTE_READ | IBV_ACCESS_LOCAL_WRITE};
    return ibv_modify_qp(lc->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

static int post_recv(lane_conn *lc, uint32_t peer, uint32_t lane, uint32_t slot) {
    struct ibv_sge sge = {.addr = (uintptr_t)(lc->recv_buf + (size_t)slot * SLOT_BYTES), .length = SLOT_BYTES,
                          .lkey = lc->recv_mr->lkey};
    struct ibv_recv_wr wr = {.wr_id = wr_id(WR_RECV, peer, lane, slot), .sg_list = &sge, .num_sge = 1}, *bad;
    return ibv_post_recv(lc->qp, &wr, &bad);
}

static int connect_lane(rdma_transport *t, lane_conn *lc, const qp_desc *remote) {
    struct ibv_qp_attr a = {
        .qp_state = IBV_QPS_RTR,
        .path_mtu = t->port_attr.active_mtu,
        .dest_qp_num = remote->qpn,
        .rq_psn = remote->psn,
        .max_dest_rd_atomic = 1,
        .min_rnr_timer = 12,
        .ah_attr = {.is_global = 1, .dlid = remote->lid, .sl = 0, .src_path_bits = 0, .port_num = (uint8_t)t->ib_port,
                    .grh = {.hop_limit = 1, .sgid_index = (uint8_t)t->gid_index}},
    };
    memcpy(a.ah_attr.grh.dgid.raw, remote->gid, 16);
    if (ibv_modify_qp(lc->qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
                                      IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER) != 0)
        return -1;
    struct ibv_qp_attr s = {.qp_state = IBV_QPS_RTS, .timeout = 14, .retry_cnt = 7, .rnr_retry = 7,
                            .sq_psn = 0, .max_rd_atomic = 1};
    return ibv_modify_qp(lc->qp, &s, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                                         IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

/* ---------------------------------------------------------------------------------------------
 * side channel: authentication and QP exchange
 * ------------------------------------------------------------------------------------------- */

typedef struct hello {
    uint32_t magic;
    uint32_t abi;
    uint32_t node;
    uint32_t region_count;
    char cluster[64];
    uint8_t challenge[CHALLENGE_BYTES];
    qp_desc lanes[GVM_LANE_COUNT];
    region_desc regions[MAX_REGIONS];
} hello;

static int full_io(int fd, void *buf, size_t len, int writing) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = writing ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (n <= 0) {
            if (n < 0 && errno == EINTR) continue;
            return -1; /* includes EAGAIN: the socket's handshake timeout expired */
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Bounds every read and write of a side-channel socket by the handshake timeout. */
static void set_handshake_timeout(rdma_transport *t, int fd) {
    struct timeval tv = {.tv_sec = t->handshake_timeout_ms / 1000, .tv_usec = (t->handshake_timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int fill_hello(rdma_transport *t, uint32_t peer, hello *h) {
    memset(h, 0, sizeof *h);
    h->magic = HS_MAGIC;
    h->abi = GVM_ABI_VERSION;
    h->node = t->cluster->self_id;
    snprintf(h->cluster, sizeof h->cluster, "%s", t->cluster->cluster_name);
    if (gvm_rdma_random(h->challenge, CHALLENGE_BYTES) != 0) {
        logf_(t, GVM_LOG_ERROR, "rdma side channel: getrandom failed (%s): no handshake without a random nonce",
              strerror(errno));
        return -1;
    }
    for (uint32_t l = 0; l < GVM_LANE_COUNT; l++) {
        lane_conn *lc = &t->peers[peer].lanes[l];
        h->lanes[l].qpn = lc->qp->qp_num;
        h->lanes[l].psn = 0;
        h->lanes[l].lid = t->port_attr.lid;
        memcpy(h->lanes[l].gid, t->gid.raw, 16);
    }
    h->region_count = t->region_count;
    for (uint32_t i = 0; i < t->region_count; i++) {
        h->regions[i].addr = (uintptr_t)t->regions[i].addr;
        h->regions[i].len = t->regions[i].len;
        h->regions[i].rkey = t->regions[i].mr->rkey;
    }
    return 0;
}

/* Both sides send hello, then a proof over both hellos (gvm_rdma_auth_material); then QPs
 * connect. Returns the peer's id, or -1 (logged) if the handshake failed. */
static int handshake(rdma_transport *t, int fd, int expected_peer) {
    hello mine, theirs;
    set_handshake_timeout(t, fd);
    /* Who the peer is is only known after its hello when we accepted; QPs are per peer, so the
     * acceptor reads first and the connector writes first. */
    if (expected_peer >= 0) {
        if (fill_hello(t, (uint32_t)expected_peer, &mine) != 0) return -1;
        if (full_io(fd, &mine, sizeof mine, 1) || full_io(fd, &theirs, sizeof theirs, 0)) return -1;
    } else {
        if (full_io(fd, &theirs, sizeof theirs, 0)) {
            logf_(t, GVM_LOG_WARNING, "rdma side channel: no hello within %d ms (handshake_timeout)",
                  t->handshake_timeout_ms);
            return -1;
        }
        /* Only higher-numbered nodes connect to this one, each once. */
        if (theirs.magic != HS_MAGIC || theirs.node >= t->cluster->node_count || theirs.node <= t->cluster->self_id) {
            logf_(t, GVM_LOG_WARNING, "rdma side channel: refused a peer with a malformed hello or a claimed id "
                  "that does not connect to node %u", t->cluster->self_id);
            return -1;
        }
        if (atomic_load(&t->peers[theirs.node].up)) {
            logf_(t, GVM_LOG_WARNING, "rdma side channel: refused a second connection claiming node %u", theirs.node);
            return -1;
        }
        if (fill_hello(t, theirs.node, &mine) != 0) return -1;
        if (full_io(fd, &mine, sizeof mine, 1)) return -1;
    }
    theirs.cluster[sizeof theirs.cluster - 1] = 0;
    uint32_t peer = theirs.node;
    if (theirs.magic != HS_MAGIC || theirs.abi != GVM_ABI_VERSION || peer >= t->cluster->node_count ||
        peer == t->cluster->self_id || (expected_peer >= 0 && peer != (uint32_t)expected_peer) ||
        theirs.region_count > MAX_REGIONS) {
        logf_(t, GVM_LOG_WARNING, "rdma side channel: refused peer claiming node %u (bad hello)", peer);
        return -1;
    }
    /* This node's proof: over the peer's hello (its challenge) and ours, as sent. */
    uint8_t material[2 * sizeof(hello) + 512];
    size_t mlen = gvm_rdma_auth_material(material, sizeof material, t->cluster->cluster_name, t->cluster->self_id,
                                         peer, &theirs, sizeof theirs, &mine, sizeof mine);
    uint8_t proof[64], their_proof[64];
    uint32_t plen = mlen ? (uint32_t)t->th->auth_sign(t->th->host, material, mlen, proof, sizeof proof) : 0;
    uint32_t their_len = 0;
    if (full_io(fd, &plen, 4, 1) || full_io(fd, proof, plen, 1) || full_io(fd, &their_len, 4, 0) ||
        their_len > sizeof their_proof || full_io(fd, their_proof, their_len, 0))
        return -1;
    /* The peer's proof: over our hello (the challenge we chose) and its own. */
    mlen = gvm_rdma_auth_material(material, sizeof material, theirs.cluster, peer, t->cluster->self_id, &mine,
                                  sizeof mine, &theirs, sizeof theirs);
    if (mlen == 0 || t->th->auth_verify(t->th->host, peer, theirs.cluster, material, mlen, their_proof, their_len) != GVM_OK)
        return -1;
    peer_conn *pc = &t->peers[peer];
    pc->region_count = theirs.region_count;
    memcpy(pc->regions, theirs.regions, sizeof pc->regions);
    for (uint32_t l = 0; l < GVM_LANE_COUNT; l++) {
        lane_conn *lc = &pc->lanes[l];
        if (connect_lane(t, lc, &theirs.lanes[l]) != 0) {
            logf_(t, GVM_LOG_ERROR, "rdma: cannot connect queue pair to node %u lane %u: %s", peer, l, strerror(errno));
            return -1;
        }
        for (uint32_t s = 0; s < SLOTS; s++)
            if (post_recv(lc, peer, l, s) != 0) return -1;
    }
    atomic_store(&pc->up, 1);
    t->th->peer_state(t->th->host, peer, 1, "connected (rdma)");
    return (int)peer;
}

static void *listener_main(void *arg) {
    rdma_transport *t = arg;
    uint32_t expected = 0;
    for (uint32_t p = 0; p < t->cluster->node_count; p++)
        if (p > t->cluster->self_id) expected++;
    while (!atomic_load(&t->stopping) && expected > 0) {
        int fd = accept(t->listen_fd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            break; /* stop() shut the listening socket down */
        }
        if (handshake(t, fd, -1) >= 0) expected--;
        close(fd);
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * sending: slots and the overflow queue (rdma_lane.c)
 * ------------------------------------------------------------------------------------------- */

/* Posts the SEND of `len` bytes already copied into `slot`. Lane lock held. */
static int post_slot(lane_conn *lc, uint32_t peer, uint32_t lane, uint32_t slot, size_t len) {
    uint8_t *buf = lc->send_buf + (size_t)slot * SLOT_BYTES;
    struct ibv_sge sge = {.addr = (uintptr_t)buf, .length = (uint32_t)len, .lkey = lc->send_mr->lkey};
    struct ibv_send_wr wr = {.wr_id = wr_id(WR_SEND, peer, lane, slot), .sg_list = &sge, .num_sge = 1,
                             .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED},
                       *bad;
    return ibv_post_send(lc->qp, &wr, &bad);
}

static void peer_lost(rdma_transport *t, uint32_t peer, const char *why) {
    if (atomic_exchange(&t->peers[peer].up, 0)) t->th->peer_state(t->th->host, peer, 0, why);
}

/* A SEND completed (ok = 1) or failed: frees its slot or hands it to the next queued frame.
 * Poller thread. */
static void send_completed(rdma_transport *t, uint32_t peer, uint32_t lane, uint32_t slot, int ok) {
    lane_conn *lc = &t->peers[peer].lanes[lane];
    pthread_mutex_lock(&lc->lock);
    if (!ok) gvm_rdma_lane_drop_queued(&lc->sendq);
    gvm_rdma_pending *next = NULL;
    int stray = gvm_rdma_lane_complete(&lc->sendq, slot, &next) != 0;
    int failed = 0;
    if (next) {
        memcpy(lc->send_buf + (size_t)slot * SLOT_BYTES, next->bytes, next->len);
        failed = post_slot(lc, peer, lane, slot, next->len) != 0;
        free(next);
        if (failed) {
            gvm_rdma_lane_drop_queued(&lc->sendq);
            gvm_rdma_lane_complete(&lc->sendq, slot, &next);
        }
    }
    pthread_mutex_unlock(&lc->lock);
    if (stray) logf_(t, GVM_LOG_WARNING, "rdma: completion for send slot %u of node %u lane %u, which is not in flight",
                     slot, peer, lane);
    if (failed) peer_lost(t, peer, "cannot post a queued send");
}

static int rdma_send(void *inst, uint32_t dst, uint32_t lane, const gvm_iovec *iov, uint32_t iov_count) {
    rdma_transport *t = inst;
    if (dst >= t->cluster->node_count || lane >= GVM_LANE_COUNT || dst == t->cluster->self_id) return GVM_ERR_INVALID;
    peer_conn *pc = &t->peers[dst];
    if (!atomic_load(&pc->up) || atomic_load(&t->stopping)) return GVM_ERR_CLOSED;
    size_t total = 0;
    for (uint32_t i = 0; i < iov_count; i++) {
        if (iov[i].len > GVM_MAX_FRAME || total + iov[i].len > GVM_MAX_FRAME) return GVM_ERR_INVALID;
        total += iov[i].len;
    }
    lane_conn *lc = &pc->lanes[lane];
    pthread_mutex_lock(&lc->lock);
    uint32_t slot = 0;
    gvm_rdma_submit what = gvm_rdma_lane_submit(&lc->sendq, iov, iov_count, total, &slot);
    if (what != GVM_RDMA_POST) {
        pthread_mutex_unlock(&lc->lock);
        /* Never waits: queued frames are posted by the completion that frees a slot. */
        return what == GVM_RDMA_QUEUED ? GVM_OK : GVM_ERR_NOMEM;
    }
    uint8_t *buf = lc->send_buf + (size_t)slot * SLOT_BYTES;
    size_t off = 0;
    for (uint32_t i = 0; i < iov_count; i++) {
        if (iov[i].len) memcpy(buf + off, iov[i].base, iov[i].len);
        off += iov[i].len;
    }
    int rc = post_slot(lc, dst, lane, slot, total);
    if (rc != 0) {
        gvm_rdma_pending *next = NULL;
        gvm_rdma_lane_complete(&lc->sendq, slot, &next); /* nothing is queued: the slot was free */
        free(next);
    }
    pthread_mutex_unlock(&lc->lock);
    return rc != 0 ? GVM_ERR_IO : GVM_OK;
}

/* ---------------------------------------------------------------------------------------------
 * completion poller
 * ------------------------------------------------------------------------------------------- */

static void *poller_main(void *arg) {
    rdma_transport *t = arg;
    struct ibv_wc wc[32];
    while (!atomic_load(&t->stopping)) {
        int n = ibv_poll_cq(t->cq, 32, wc);
        if (n < 0) {
            t->svc->fatal(t->svc->host, "rdma: ibv_poll_cq failed");
            break;
        }
        if (n == 0) {
            sched_yield();
            continue;
        }
        for (int i = 0; i < n; i++) {
            uint32_t kind = (uint32_t)(wc[i].wr_id >> 56), peer = (uint32_t)(wc[i].wr_id >> 40) & 0xffff;
            uint32_t lane = (uint32_t)(wc[i].wr_id >> 32) & 0xff, slot = (uint32_t)wc[i].wr_id;
            if (peer >= t->cluster->node_count || lane >= GVM_LANE_COUNT) continue;
            lane_conn *lc = &t->peers[peer].lanes[lane];
            if (wc[i].status != IBV_WC_SUCCESS) {
                if (kind == WR_READ && slot < MAX_READS && t->reads[slot].done) {
                    t->reads[slot].done(t->reads[slot].ctx, GVM_ERR_IO);
                    atomic_store(&t->reads[slot].used, 0);
                }
                if (kind == WR_SEND && slot < SLOTS) send_completed(t, peer, lane, slot, 0);
                peer_lost(t, peer, ibv_wc_status_str(wc[i].status));
                continue;
            }
            if (kind == WR_RECV && slot < SLOTS) {
                const uint8_t *buf = lc->recv_buf + (size_t)slot * SLOT_BYTES;
                /* The host may send (even to this peer and lane) from inside deliver: send never
                 * waits for this thread. */
                if (wc[i].byte_len <= GVM_MAX_FRAME) t->th->deliver(t->th->host, peer, lane, buf, wc[i].byte_len);
                else logf_(t, GVM_LOG_ERROR, "rdma: oversized frame from node %u dropped", peer);
                if (post_recv(lc, peer, lane, slot) != 0) peer_lost(t, peer, "cannot repost receive buffer");
            } else if (kind == WR_SEND && slot < SLOTS) {
                send_completed(t, peer, lane, slot, 1);
            } else if (kind == WR_READ && slot < MAX_READS) {
                gvm_read_done_fn done = t->reads[slot].done;
                void *ctx = t->reads[slot].ctx;
                atomic_store(&t->reads[slot].used, 0);
                if (done) done(ctx, GVM_OK);
            }
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * ops
 * ------------------------------------------------------------------------------------------- */

/* Connects to every lower-numbered node in turn, retrying while it starts, until
 * connect_timeout; reports a node it cannot meet through peer_state. */
static void *connector_main(void *arg) {
    rdma_transport *t = arg;
    for (uint32_t p = 0; p < t->cluster->self_id && !atomic_load(&t->stopping); p++) {
        const gvm_node_info *n = &t->cluster->nodes[p];
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        char why[256];
        snprintf(why, sizeof why, "not tried");
        for (;;) {
            if (atomic_load(&t->stopping)) return NULL;
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            struct sockaddr_in pa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(n->port + t->cm_port_offset))};
            if (fd < 0 || inet_pton(AF_INET, n->address, &pa.sin_addr) != 1) {
                snprintf(why, sizeof why, "rdma side channel: cannot use address %s (IPv4 literals only): %s", n->address,
                         fd < 0 ? strerror(errno) : "not an IPv4 address");
                if (fd >= 0) close(fd);
                t->th->peer_state(t->th->host, p, 0, why);
                break;
            }
            set_handshake_timeout(t, fd); /* also bounds connect() */
            if (connect(fd, (struct sockaddr *)&pa, sizeof pa) == 0) {
                atomic_store(&t->connecting_fd, fd);
                int rc = atomic_load(&t->stopping) ? -1 : handshake(t, fd, (int)p);
                /* If stop() took the socket (to shut it down), stop() closes it after the join. */
                if (atomic_exchange(&t->connecting_fd, -1) == fd) close(fd);
                if (rc >= 0) break;
                if (atomic_load(&t->stopping)) return NULL;
                snprintf(why, sizeof why, "rdma: handshake with node %u (%s:%d) failed (refused, wrong key or timed out)",
                         p, n->address, n->port + t->cm_port_offset);
                t->th->peer_state(t->th->host, p, 0, why);
                break;
            }
            snprintf(why, sizeof why, "%s", strerror(errno));
            close(fd);
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            if (ms > t->connect_timeout_ms) {
                char msg[400];
                snprintf(msg, sizeof msg, "rdma: node %u (%s:%d) unreachable after %d ms: %s", p, n->address,
                         n->port + t->cm_port_offset, t->connect_timeout_ms, why);
                t->th->peer_state(t->th->host, p, 0, msg);
                break;
            }
            usleep(100000);
        }
    }
    return NULL;
}

static int rdma_start(void *inst, gvm_error *err) {
    rdma_transport *t = inst;
    const gvm_node_info *self = &t->cluster->nodes[t->cluster->self_id];
    for (uint32_t p = 0; p < t->cluster->node_count; p++) {
        if (p == t->cluster->self_id) continue;
        for (uint32_t l = 0; l < GVM_LANE_COUNT; l++) {
            if (setup_lane(t, &t->peers[p].lanes[l]) != 0) {
                snprintf(err->message, GVM_ERROR_MAX, "rdma: cannot create queue pair for node %u: %s", p, strerror(errno));
                return GVM_ERR_IO;
            }
        }
    }
    t->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (t->listen_fd < 0) {
        snprintf(err->message, GVM_ERROR_MAX, "rdma side channel: socket: %s", strerror(errno));
        return GVM_ERR_IO;
    }
    int one = 1;
    setsockopt(t->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)(self->port + t->cm_port_offset))};
    if (inet_pton(AF_INET, self->address, &sa.sin_addr) != 1 || bind(t->listen_fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        listen(t->listen_fd, 16) != 0) {
        snprintf(err->message, GVM_ERROR_MAX, "rdma side channel: cannot listen on %s:%d: %s", self->address,
                 self->port + t->cm_port_offset, errno ? strerror(errno) : "not an IPv4 address");
        return GVM_ERR_IO;
    }
    if (pthread_create(&t->poller, NULL, poller_main, t) != 0) {
        snprintf(err->message, GVM_ERROR_MAX, "rdma: cannot start the completion poller thread");
        return GVM_ERR_IO;
    }
    t->poller_started = 1;
    if (pthread_create(&t->listener, NULL, listener_main, t) != 0) {
        snprintf(err->message, GVM_ERROR_MAX, "rdma: cannot start the listener thread");
        return GVM_ERR_IO;
    }
    t->listener_started = 1;
    /* Returns at once (as the ABI asks): peers are met on the connector thread. */
    if (pthread_create(&t->connector, NULL, connector_main, t) != 0) {
        snprintf(err->message, GVM_ERROR_MAX, "rdma: cannot start the connector thread");
        return GVM_ERR_IO;
    }
    t->connector_started = 1;
    return GVM_OK;
}

static int rdma_register_region(void *inst, void *addr, size_t len, uint64_t *key_out) {
    rdma_transport *t = inst;
    if (t->region_count >= MAX_REGIONS) return GVM_ERR_NOMEM;
    struct ibv_mr *mr = ibv_reg_mr(t->pd, addr, len, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ);
    if (!mr) {
        logf_(t, GVM_LOG_ERROR, "rdma: ibv_reg_mr of %zu bytes failed: %s", len, strerror(errno));
        return GVM_ERR_IO;
    }
    t->regions[t->region_count] = (local_region){.addr = addr, .len = len, .mr = mr};
    *key_out = t->region_count; /* the index into the region table exchanged at connect time */
    t->region_count++;
    return GVM_OK;
}

static int rdma_read_remote(void *inst, uint32_t dst, uint64_t key, uint64_t offset, void *local, size_t len,
                            gvm_read_done_fn done, void *ctx) {
    rdma_transport *t = inst;
    if (dst >= t->cluster->node_count || dst == t->cluster->self_id) return GVM_ERR_INVALID;
    peer_conn *pc = &t->peers[dst];
    if (!atomic_load(&pc->up)) return GVM_ERR_CLOSED;
    if (key >= pc->region_count || offset + len > pc->regions[key].len) return GVM_ERR_INVALID;
    local_region *lr = NULL;
    for (uint32_t i = 0; i < t->region_count; i++) {
        uint8_t *a = t->regions[i].addr;
        if ((uint8_t *)local >= a && (uint8_t *)local + len <= a + t->regions[i].len) lr = &t->regions[i];
    }
    if (!lr) return GVM_ERR_INVALID; /* the destination must be registered here */
    uint32_t slot = MAX_READS;
    for (uint32_t i = 0; i < MAX_READS; i++) {
        int expected = 0;
        if (atomic_compare_exchange_strong(&t->reads[i].used, &expected, 1)) {
            slot = i;
            break;
        }
    }
    if (slot == MAX_READS) return GVM_ERR_NOMEM;
    t->reads[slot].done = done;
    t->reads[slot].ctx = ctx;
    struct ibv_sge sge = {.addr = (uintptr_t)local, .length = (uint32_t)len, .lkey = lr->mr->lkey};
    struct ibv_send_wr wr = {.wr_id = wr_id(WR_READ, dst, GVM_LANE_BULK, slot), .sg_list = &sge, .num_sge = 1,
                             .opcode = IBV_WR_RDMA_READ, .send_flags = IBV_SEND_SIGNALED,
                             .wr.rdma = {.remote_addr = pc->regions[key].addr + offset, .rkey = pc->regions[key].rkey}},
                       *bad;
    lane_conn *lc = &pc->lanes[GVM_LANE_BULK];
    pthread_mutex_lock(&lc->lock);
    int rc = ibv_post_send(lc->qp, &wr, &bad);
    pthread_mutex_unlock(&lc->lock);
    if (rc != 0) {
        atomic_store(&t->reads[slot].used, 0);
        return GVM_ERR_IO;
    }
    return GVM_OK;
}

static void rdma_stop(void *inst) {
    rdma_transport *t = inst;
    atomic_store(&t->stopping, 1);
    /* Wake the threads blocked on the side channel; close only after they are joined. */
    if (t->listen_fd >= 0) shutdown(t->listen_fd, SHUT_RDWR);
    int cfd = atomic_exchange(&t->connecting_fd, -1);
    if (cfd >= 0) shutdown(cfd, SHUT_RDWR);
    if (t->connector_started) pthread_join(t->connector, NULL);
    if (cfd >= 0) close(cfd);
    if (t->listener_started) pthread_join(t->listener, NULL);
    if (t->poller_started) pthread_join(t->poller, NULL);
    t->listener_started = t->poller_started = t->connector_started = 0;
    if (t->listen_fd >= 0) {
        close(t->listen_fd);
        t->listen_fd = -1;
    }
}

static void rdma_destroy(void *inst) { release(inst); }

static const gvm_transport_ops ops = {
    .size = sizeof(gvm_transport_ops),
    .create = rdma_create,
    .start = rdma_start,
    .send = rdma_send,
    .register_region = rdma_register_region,
    .read_remote = rdma_read_remote,
    .stop = rdma_stop,
    .destroy = rdma_destroy,
};

/* Every setting rdma_create accepts (ABI 3 self-description, `giantvm plugins describe`). */
static const gvm_setting_info setting_info[] = {
    {"device", NULL, "RDMA device name (default: the first device found)", NULL},
    {"ib_port", "1", "port number on the device (1 to 255)", NULL},
    {"gid_index", "0", "GID table index used for RoCE addressing (0 to 255)", NULL},
    {"cm_port_offset", "1000", "TCP side channel port = node port + this offset (-60000 to 60000)", NULL},
    {"connect_timeout", "10s", "how long to retry meeting a peer on the side channel (1ms to 1h)", NULL},
    {"handshake_timeout", "5s", "how long a side-channel handshake may take (1ms to 10min)", NULL},
    {"send_queue_limit", "64MiB", "bytes queued per lane while every send slot is in flight (one slot to 16GiB)", NULL},
};

static const gvm_plugin_descriptor descriptor = {
    .abi_version = GVM_ABI_VERSION,
    .kind = GVM_PLUGIN_TRANSPORT,
    .name = "transport-rdma",
    .version = "0.1.0",
    .summary = "RDMA verbs (RC queue pairs, one-sided page reads); needs an RDMA device",
    .ops = &ops,
    .description = "one RC queue pair per lane per peer (SLOTS send slots and posted receive buffers each); "
                   "peers meet and authenticate over a TCP side channel (hello with nonce, QP numbers, "
                   "regions, then proofs over both hellos); register_region/read_remote give one-sided "
                   "page reads",
    .setting_count = sizeof setting_info / sizeof setting_info[0],
    .settings = setting_info,
};

GVM_EXPORT const gvm_plugin_descriptor *giantvm_plugin_entry(void) { return &descriptor; }
