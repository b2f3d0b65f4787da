/*
 * migratory.c — a complete GiantVM coherence protocol in one C file: the migratory protocol.
 *
 * Every guest page has exactly one copy in the cluster. A node that faults on a page, to read or
 * to write, gets that copy wholesale and writable (MODIFIED); the node that had it drops it. With
 * one copy there are no sharers to invalidate, and every access sees the latest write: sequential
 * consistency by construction. Reads cost as much as writes; that is the price of simplicity.
 *
 * Who has a page? Each page has a fixed manager, node gfn % node_count, which remembers the
 * page's owner and moves the page one request at a time (later requests wait in a FIFO):
 *
 *   requester R               manager M                      owner O
 *   fault ---- REQ ------->   busy? queue R : busy, FWD ---> drop the page
 *         <----------------------------------------- PAGE -- its bytes (none: zeros)
 *   install MODIFIED, wake
 *         ---- DONE ------>   owner = R, next request
 *
 * At start every page belongs to its manager, untouched: the first move sends "zeros". R, M and O
 * may be one node: a message to oneself is a direct call. A page stays at least HOLD_NS where it
 * arrived before it moves on (a timer finishes the move), so the thread that faulted for it gets
 * its access in; without it, a page with a queue of requesters could leave before that thread runs.
 *
 * State table (this node; the host holds the page state):
 *   INVALID  + read or write fault  -> REQ to the manager (a second fault while one is out joins it)
 *   MODIFIED + any fault            -> stale: wake
 *   owner    + FWD                  -> drop, send PAGE (held: after HOLD_NS; pinned: page_unpinned)
 *   waiting  + PAGE                 -> install MODIFIED, wake, DONE to the manager
 *
 * Threading: fault(), receive(), page_unpinned() and the hold timer run on different host threads
 * at once: one mutex per instance serialises them. Build: see the Makefile (pkg-config). */
#include <giantvm_plugin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
enum { MSG_REQ = 1, MSG_FWD = 2, MSG_PAGE = 3, MSG_DONE = 4 };
#define WIRE_VERSION 1
#define FLAG_ZERO 1u /* PAGE: no bytes follow, the page is all zeros */
#define NOBODY 0xFFFFFFFFu
#define HOLD_NS 50000u /* 50 us */

/* Every message starts with this header (little endian, the only byte order GiantVM runs on). */
typedef struct wire {
    uint8_t type, version;
    uint16_t flags;
    uint32_t node; /* FWD: the requester the page goes to */
    uint64_t gfn;
} wire;

typedef struct waiting { uint64_t gfn; uint32_t node; } waiting;
typedef struct hold { struct mig *m; uint64_t gfn; } hold; /* a hold timer's context */

typedef struct mig {
    const gvm_host_services *svc;
    const gvm_coherence_host *mem;
    uint32_t self, nodes;
    uint64_t pages;
    pthread_mutex_t lock;
    /* manager side (pages gfn % nodes == self) */
    uint32_t *owner;      /* per page: the node holding the copy */
    uint8_t *busy;        /* per page: a move is under way */
    waiting *queue;       /* requests waiting for their page's move to finish, FIFO */
    size_t queued, queue_cap;
    /* requester side */
    uint64_t *asked_at;   /* per page: now_ns when our request started, 0 = none outstanding */
    uint8_t *asked_write; /* per page: the request was for a write */
    /* owner side */
    uint32_t *deferred;   /* per page: requester waiting for the hold or an unpin, or NOBODY */
    uint64_t *arrived;    /* per page: now_ns when it was installed here */
    uint64_t *timer;      /* per page: the pending hold timer, 0 = none */
    hold *holds;          /* per page: that timer's context */
    uint8_t page[GVM_PAGE_SIZE];
    uint32_t c[GVM_STAT_COUNTER_COUNT], h[GVM_STAT_HISTOGRAM_COUNT]; /* statistics handles */
} mig;

/* Standard statistics, indexed as gvm_stat_counter_name() lists them. */
enum { S_READ_MISS, S_WRITE_MISS, S_UPGRADE, S_COALESCED, S_STALE, S_PIN_DEFERRED, S_MSG_SENT,
       S_BYTES_SENT, S_MSG_RECEIVED, S_BYTES_RECEIVED, S_SENT_DATA, S_SENT_NODATA };
enum { H_ALL, H_READ_MISS, H_WRITE_MISS };

static void count(mig *m, int i, uint64_t d) { m->svc->counter_add(m->svc->host, m->c[i], d); }
static void dispatch(mig *m, uint32_t src, const wire *w, const void *data);

/* Sends header + optional page to dst, or handles it here when dst is this node. */
static void post(mig *m, uint32_t dst, uint8_t type, uint32_t node, uint64_t gfn, uint16_t flags,
                 const void *data) {
    wire w = { type, WIRE_VERSION, flags, node, gfn };
    if (dst == m->self) { dispatch(m, dst, &w, data); return; }
    gvm_iovec iov[2] = { { &w, sizeof w }, { data, data ? GVM_PAGE_SIZE : 0 } };
    uint32_t n = data ? 2 : 1;
    count(m, S_MSG_SENT, 1);
    count(m, S_BYTES_SENT, sizeof w + (data ? GVM_PAGE_SIZE : 0));
    int rc = m->mem->send(m->mem->host, dst, iov, n);
    if (rc != GVM_OK && rc != GVM_ERR_CLOSED) { /* CLOSED: the node is stopping anyway */
        char why[96];
        snprintf(why, sizeof why, "migratory: send to node %u failed: %s", dst, gvm_status_name(rc));
        m->svc->fatal(m->svc->host, why);
    }
}

static void move_out(mig *m, uint64_t gfn, uint32_t to);

static void hold_over(void *ctx) { /* Thread: the host timer thread */
    hold *h = ctx;
    pthread_mutex_lock(&h->m->lock);
    h->m->timer[h->gfn] = 0;
    if (h->m->deferred[h->gfn] != NOBODY) move_out(h->m, h->gfn, h->m->deferred[h->gfn]);
    pthread_mutex_unlock(&h->m->lock);
}

/* Owner: hand the page to node `to` (drop it here first). */
static void move_out(mig *m, uint64_t gfn, uint32_t to) {
    uint64_t held = m->svc->now_ns(m->svc->host) - m->arrived[gfn];
    if (m->arrived[gfn] && held < HOLD_NS) { /* just arrived: move it when the hold is over */
        m->deferred[gfn] = to;
        if (!m->timer[gfn]) m->timer[gfn] = m->svc->timer_start(m->svc->host, HOLD_NS - held, 0, hold_over, &m->holds[gfn]);
        if (m->timer[gfn]) return; /* no timer: move it now */
    }
    int rc = m->mem->page_drop(m->mem->host, gfn, m->page);
    if (rc == GVM_ERR_PINNED) { /* host code holds it: finish from page_unpinned */
        m->deferred[gfn] = to;
        count(m, S_PIN_DEFERRED, 1);
        return;
    }
    m->deferred[gfn] = NOBODY;
    int zero = rc == GVM_ERR_NOT_PRESENT; /* never touched: its first owner gets zeros */
    count(m, zero ? S_SENT_NODATA : S_SENT_DATA, 1);
    post(m, to, MSG_PAGE, to, gfn, zero ? FLAG_ZERO : 0, zero ? NULL : m->page);
}

/* Manager: start the move of gfn to `to`. */
static void start_move(mig *m, uint64_t gfn, uint32_t to) {
    m->busy[gfn] = 1;
    post(m, m->owner[gfn], MSG_FWD, to, gfn, 0, NULL);
}

static void dispatch(mig *m, uint32_t src, const wire *w, const void *data) {
    uint64_t g = w->gfn;
    switch (w->type) {
    case MSG_REQ: /* manager */
        if (!m->busy[g]) { start_move(m, g, src); break; }
        if (m->queued == m->queue_cap) {
            size_t cap = m->queue_cap ? 2 * m->queue_cap : 64;
            waiting *q = realloc(m->queue, cap * sizeof *q);
            if (!q) { m->svc->fatal(m->svc->host, "migratory: out of memory"); return; }
            m->queue = q;
            m->queue_cap = cap;
        }
        m->queue[m->queued++] = (waiting){ g, src };
        break;
    case MSG_FWD: /* owner */
        move_out(m, g, w->node);
        break;
    case MSG_PAGE: { /* requester */
        if (!m->asked_at[g]) { m->svc->fatal(m->svc->host, "migratory: a page arrived that nobody asked for"); return; }
        int rc = m->mem->page_install(m->mem->host, g, (w->flags & FLAG_ZERO) ? NULL : data, GVM_PAGE_MODIFIED);
        if (rc != GVM_OK) { m->svc->fatal(m->svc->host, "migratory: page_install failed"); return; }
        uint64_t ns = m->svc->now_ns(m->svc->host) - m->asked_at[g];
        m->svc->histogram_record(m->svc->host, m->h[H_ALL], ns);
        m->svc->histogram_record(m->svc->host, m->h[m->asked_write[g] ? H_WRITE_MISS : H_READ_MISS], ns);
        m->asked_at[g] = 0;
        m->arrived[g] = m->svc->now_ns(m->svc->host);
        m->mem->page_wake(m->mem->host, g);
        post(m, (uint32_t)(g % m->nodes), MSG_DONE, m->self, g, 0, NULL);
        break;
    }
    case MSG_DONE: /* manager: src holds the page now; serve the next request for it */
        if (!m->busy[g]) { m->svc->fatal(m->svc->host, "migratory: DONE for a page not moving"); return; }
        m->owner[g] = src;
        m->busy[g] = 0;
        for (size_t i = 0; i < m->queued; i++) {
            if (m->queue[i].gfn != g) continue;
            uint32_t next = m->queue[i].node;
            memmove(&m->queue[i], &m->queue[i + 1], (m->queued - i - 1) * sizeof *m->queue);
            m->queued--;
            start_move(m, g, next);
            break;
        }
        break;
    }
}

static void mig_fault(void *p, uint64_t gfn, uint32_t access, uint32_t flags) {
    mig *m = p; (void)flags;
    if (gfn >= m->pages) return;
    pthread_mutex_lock(&m->lock);
    if (m->mem->page_state(m->mem->host, gfn) != GVM_PAGE_INVALID) { /* already here: stale */
        count(m, S_STALE, 1);
        m->mem->page_wake(m->mem->host, gfn);
    } else if (m->asked_at[gfn]) {
        count(m, S_COALESCED, 1);
    } else {
        int write = access == GVM_ACCESS_WRITE;
        count(m, write ? S_WRITE_MISS : S_READ_MISS, 1);
        m->asked_at[gfn] = m->svc->now_ns(m->svc->host) | 1; /* never 0 */
        m->asked_write[gfn] = (uint8_t)write;
        post(m, (uint32_t)(gfn % m->nodes), MSG_REQ, m->self, gfn, 0, NULL);
    }
    pthread_mutex_unlock(&m->lock);
}

static void mig_receive(void *p, uint32_t src, const void *msg, size_t len) {
    mig *m = p;
    wire w;
    pthread_mutex_lock(&m->lock);
    count(m, S_MSG_RECEIVED, 1);
    count(m, S_BYTES_RECEIVED, len);
    if (len < sizeof w) { m->svc->fatal(m->svc->host, "migratory: message too short"); goto out; }
    memcpy(&w, msg, sizeof w);
    int has_data = w.type == MSG_PAGE && !(w.flags & FLAG_ZERO);
    if (w.version != WIRE_VERSION || w.type < MSG_REQ || w.type > MSG_DONE || w.gfn >= m->pages ||
        w.node >= m->nodes || src >= m->nodes || len != sizeof w + (has_data ? GVM_PAGE_SIZE : 0) ||
        ((w.type == MSG_REQ || w.type == MSG_DONE) && w.gfn % m->nodes != m->self)) {
        m->svc->fatal(m->svc->host, "migratory: malformed message");
        goto out;
    }
    dispatch(m, src, &w, (const uint8_t *)msg + sizeof w);
out:
    pthread_mutex_unlock(&m->lock);
}

static void mig_unpinned(void *p, uint64_t gfn) {
    mig *m = p;
    if (gfn >= m->pages) return;
    pthread_mutex_lock(&m->lock);
    if (m->deferred[gfn] != NOBODY) move_out(m, gfn, m->deferred[gfn]);
    pthread_mutex_unlock(&m->lock);
}

static size_t mig_describe(void *p, char *buf, size_t cap) {
    (void)p;
    static const char text[] =
        "migratory: one copy per page, moved wholesale (MODIFIED) to each faulting node\n"
        "  manager of gfn = gfn % nodes: knows the owner, moves one request at a time (FIFO)\n"
        "  INVALID + fault  -> REQ to manager; manager FWD to owner; owner drops, PAGE to requester\n"
        "  PAGE             -> install MODIFIED, wake, DONE to manager (owner := requester)\n"
        "  present + fault  -> stale: wake;  owner pinned -> defer the drop until page_unpinned\n"
        "  a page stays 50 us where it arrived before it moves on (its faulting thread's access)\n";
    if (buf && cap) snprintf(buf, cap, "%s", text);
    return sizeof text - 1;
}

static void mig_destroy(void *p) {
    mig *m = p;
    if (!m) return;
    for (uint64_t g = 0; m->timer && g < m->pages; g++)
        if (m->timer[g]) m->svc->timer_cancel(m->svc->host, m->timer[g]);
    pthread_mutex_destroy(&m->lock);
    free(m->owner); free(m->busy); free(m->queue); free(m->asked_at); free(m->asked_write); free(m->deferred);
    free(m->arrived); free(m->timer); free(m->holds); free(m);
}

static void *mig_create(const gvm_host_services *svc, const gvm_coherence_host *mem, const gvm_cluster_info *cl,
                        const gvm_setting *settings, uint32_t nsettings, gvm_error *err) {
    (void)settings;
    if (nsettings || cl->node_count == 0 || mem->page_count == 0) {
        snprintf(err->message, GVM_ERROR_MAX, nsettings ? "migratory takes no settings" : "no nodes or no memory");
        return NULL;
    }
    mig *m = calloc(1, sizeof *m);
    if (!m) { snprintf(err->message, GVM_ERROR_MAX, "out of memory"); return NULL; }
    m->svc = svc; m->mem = mem; m->self = cl->self_id; m->nodes = cl->node_count; m->pages = mem->page_count;
    pthread_mutex_init(&m->lock, NULL);
    m->owner = calloc(m->pages, sizeof *m->owner); m->busy = calloc(m->pages, 1);
    m->asked_at = calloc(m->pages, sizeof *m->asked_at); m->asked_write = calloc(m->pages, 1);
    m->deferred = malloc(m->pages * sizeof *m->deferred); m->holds = malloc(m->pages * sizeof *m->holds);
    m->arrived = calloc(m->pages, sizeof *m->arrived); m->timer = calloc(m->pages, sizeof *m->timer);
    if (!m->owner || !m->busy || !m->asked_at || !m->asked_write || !m->deferred || !m->arrived || !m->timer || !m->holds) {
        mig_destroy(m);
        snprintf(err->message, GVM_ERROR_MAX, "out of memory for %llu pages", (unsigned long long)mem->page_count);
        return NULL;
    }
    for (uint64_t g = 0; g < m->pages; g++) {
        m->owner[g] = (uint32_t)(g % m->nodes);
        m->deferred[g] = NOBODY;
        m->holds[g] = (hold){ m, g };
    }
    for (uint32_t i = 0; i < GVM_STAT_COUNTER_COUNT; i++) m->c[i] = svc->counter(svc->host, gvm_stat_counter_name(i));
    for (uint32_t i = 0; i < GVM_STAT_HISTOGRAM_COUNT; i++) m->h[i] = svc->histogram(svc->host, gvm_stat_histogram_name(i));
    return m;
}

static const gvm_coherence_ops ops = {
    .size = sizeof(gvm_coherence_ops), .create = mig_create, .fault = mig_fault, .receive = mig_receive,
    .page_unpinned = mig_unpinned, .describe = mig_describe, .destroy = mig_destroy,
};

static const gvm_plugin_descriptor descriptor = {
    .abi_version = GVM_ABI_VERSION,
    .kind = GVM_PLUGIN_COHERENCE,
    .name = "dsm-migratory-c",
    .version = "0.1.0",
    .summary = "migratory protocol in C: one copy per page, moved to each faulting node",
    .ops = &ops,
};

GVM_EXPORT const gvm_plugin_descriptor *giantvm_plugin_entry(void) { return &descriptor; }
