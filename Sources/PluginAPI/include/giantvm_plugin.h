/*
 * giantvm_plugin.h — the GiantVM plugin ABI.
 *
 * This header is the whole contract between the `giantvm` host and its plugins. A plugin is a
 * shared object (.so) that exports ONE symbol, `giantvm_plugin_entry` (GVM_PLUGIN_ENTRY_SYMBOL),
 * returning a descriptor: the ABI version it was built against, its kind, its name and version,
 * and a kind-specific table of function pointers ("ops"). The host hands each plugin instance
 * tables of host services. Nothing but C types crosses this boundary: a plugin may be written in
 * C, in Swift (see the PluginKit helper target) or in anything that can export a C symbol, and
 * can be built out of tree against this header alone.
 *
 * Kinds:
 *   GVM_PLUGIN_TRANSPORT  moves opaque frames between nodes (TCP, RDMA, ...)
 *   GVM_PLUGIN_COHERENCE  the distributed-shared-memory protocol (Ivy, TSO, ...)
 *   GVM_PLUGIN_DEVICE     one or more device models (UART, exit device, ...)
 *   GVM_PLUGIN_PLACEMENT  a vCPU placement policy (co-locate, follow-memory, ...)
 *
 * Versioning. GVM_ABI_VERSION is the version this header describes. The host refuses a plugin
 * whose descriptor says abi_version < GVM_ABI_MIN_VERSION ("too old: rebuild it against this
 * header") or > GVM_ABI_VERSION ("too new: it needs a newer giantvm"). The ABI is pre-1.0 (the
 * version is a plain integer and any bump may break plugins) until a VM runs across nodes.
 * Every ops and services table begins with a `size` field holding sizeof() of the table as the
 * side that filled it was compiled: hooks past the end of a shorter table are treated as absent.
 * The host refuses (and unloads) a plugin whose ops table declares a size smaller than the end
 * of the last hook this header makes REQUIRED in that table; a larger size is accepted and only
 * the part this header describes is read. A plugin should likewise check the `size` of each
 * host table it is given before using a hook this header added late.
 *
 * History: ABI 1 — the first version. ABI 2 — standard coherence statistics (GVM_STAT_*: every
 * coherence plugin reports them, see "Standard statistics" below); the loader checks ops sizes;
 * gvm_transport_host ends with frame authentication (auth_session, auth_mac, auth_session_free:
 * per-frame MACs with a cluster key); giantvm_units.h gives plugins the config's duration and
 * size grammar.
 * ABI 3 — the descriptor ends with the plugin's self-description (description, setting_count,
 * settings: gvm_setting_info), read by `giantvm plugins describe` without creating an instance.
 * Also ABI 3 — gvm_coherence_host ends with page_install_batch (OPTIONAL: contiguous pages installed
 * with one copy, for batched replies such as dsm-ivy's read-ahead).
 * Also ABI 3 — coherence hints from the guest: gvm_device_host ends with coherence_hint (a device
 * passes a range's class or a fence to the host), gvm_coherence_ops ends with the OPTIONAL hint
 * hook (the host passes it to the protocol); GVM_HINT_* kinds.
 * Also ABI 3 — placement policies: GVM_PLUGIN_PLACEMENT (4), gvm_placement_ops (observe per-vCPU
 * fault and page-sharing figures every interval) and gvm_placement_host (request a live vCPU
 * migration; the result comes back through migration_done).
 * ABI 4 — node evacuation: gvm_coherence_ops ends with the OPTIONAL drain hook (hand every page a
 * leaving node owns or holds, and the manager role of the pages it manages, to another node;
 * gvm_drain_report says what moved); a protocol without it cannot let a node leave. Also for
 * evacuation, gvm_device_ops ends with the OPTIONAL save_state and load_state hooks (a device
 * instance's state, at most GVM_DEVICE_STATE_MAX bytes, moves to a fresh instance on another
 * node); a device whose model lacks them keeps its node from leaving.
 * Also ABI 4 — GVM_HINT_REPLICATED: the host tells the protocol, at start-up before any vCPU runs, that
 * every node holds identical read-only content for a range (a module every node loaded from its own
 * file): the pages start SHARED everywhere, a write invalidates as usual (gvm_coherence_ops.hint).
 * ABI 5 — gvm_coherence_host ends with page_downgrade_batch (OPTIONAL: contiguous modified pages
 * write-protected with one call, one TLB flush for the run, for batched read copies such as
 * dsm-ivy's read-ahead replies) and page_install_zeros (OPTIONAL: never-written pages made
 * present as zeros, a 2 MiB-aligned run of 512 as one huge page, for dsm-ivy's zero-fill ahead).
 * Additive: ABI 4 plugins load unchanged (GVM_ABI_MIN_VERSION 4).
 *
 * Conventions used by every hook below:
 *   - REQUIRED hooks must be non-NULL; OPTIONAL hooks may be NULL.
 *   - "Thread:" names the thread a hook is called on; "May block:" says what it may wait for.
 *   - Strings passed to a plugin are NUL-terminated UTF-8 and borrowed: valid only for the call
 *     unless stated otherwise. Strings a plugin returns in its descriptor must live as long as
 *     the .so is loaded (string literals).
 *   - Buffers passed in are borrowed for the duration of the call; copy what you keep.
 *   - Status codes are gvm_status values: GVM_OK (0) or a negative error.
 *   - Node ids are dense: 0 .. node_count-1. Guest frame numbers (gfn) are guest-physical
 *     address / GVM_PAGE_SIZE.
 *   - A plugin never unregisters or closes the host's userfaultfd, never calls exit(), and reports
 *     unrecoverable errors through gvm_host_services.fatal so that every node stops cleanly.
 */
#ifndef GIANTVM_PLUGIN_H
#define GIANTVM_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#include "giantvm_units.h" /* durations and sizes in settings: one grammar, host and plugins */

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------------------------
 * Versions, kinds, status codes
 * ------------------------------------------------------------------------------------------- */

/** The ABI version this header describes. Bumped on every incompatible change while pre-1.0. */
#define GVM_ABI_VERSION 5u
/** The oldest plugin ABI version a host built from this header still loads. (ABI 1 coherence
 *  plugins do not report the standard statistics, so summaries would show them as zeros.) */
#define GVM_ABI_MIN_VERSION 4u

/** Name of the one symbol every plugin exports (type: gvm_plugin_entry_fn). */
#define GVM_PLUGIN_ENTRY_SYMBOL "giantvm_plugin_entry"

/** Guest page size: the unit of coherence. */
#define GVM_PAGE_SIZE 4096u

/** Mark the entry symbol of a C plugin: default visibility even under -fvisibility=hidden. */
#define GVM_EXPORT __attribute__((visibility("default")))

typedef enum gvm_plugin_kind {
    GVM_PLUGIN_TRANSPORT = 1,
    GVM_PLUGIN_COHERENCE = 2,
    GVM_PLUGIN_DEVICE = 3,
    GVM_PLUGIN_PLACEMENT = 4, /* ABI 3 */
} gvm_plugin_kind;

typedef enum gvm_status {
    GVM_OK = 0,
    GVM_ERR_INVALID = -1,      /* bad argument (gfn out of range, unknown node, bad length) */
    GVM_ERR_PINNED = -2,       /* page is pinned: retry from page_unpinned() */
    GVM_ERR_NOT_PRESENT = -3,  /* page is not present (e.g. upgrade after a crossing drop) */
    GVM_ERR_STATE = -4,        /* operation does not fit the page's current state */
    GVM_ERR_IO = -5,           /* an OS call failed; the host has logged errno */
    GVM_ERR_UNSUPPORTED = -6,  /* optional feature not offered by this side */
    GVM_ERR_CLOSED = -7,       /* the peer, link or node is gone or stopping */
    GVM_ERR_NOMEM = -8,        /* out of memory or buffer space */
} gvm_status;

typedef enum gvm_log_level {
    GVM_LOG_TRACE = 0,
    GVM_LOG_DEBUG = 1,
    GVM_LOG_INFO = 2,
    GVM_LOG_NOTICE = 3,
    GVM_LOG_WARNING = 4,
    GVM_LOG_ERROR = 5,
} gvm_log_level;

/** Returns a short English name for a status code. */
static inline const char *gvm_status_name(int status) {
    switch (status) {
    case GVM_OK: return "ok";
    case GVM_ERR_INVALID: return "invalid argument";
    case GVM_ERR_PINNED: return "page pinned";
    case GVM_ERR_NOT_PRESENT: return "page not present";
    case GVM_ERR_STATE: return "wrong page state";
    case GVM_ERR_IO: return "I/O error";
    case GVM_ERR_UNSUPPORTED: return "unsupported";
    case GVM_ERR_CLOSED: return "closed";
    case GVM_ERR_NOMEM: return "out of memory";
    default: return "unknown status";
    }
}

/* ---------------------------------------------------------------------------------------------
 * Plain data shared by every kind
 * ------------------------------------------------------------------------------------------- */

/** Opaque handle identifying one plugin instance to the host. Pass it back unchanged. */
typedef struct gvm_host gvm_host;

/** Where a plugin writes a human-readable reason when create() or start() fails. */
#define GVM_ERROR_MAX 512
typedef struct gvm_error {
    char message[GVM_ERROR_MAX]; /* NUL-terminated; the host prefixes file/plugin/node itself */
} gvm_error;

/** One `key: value` pair from the plugin's `settings:` map in the YAML config. */
typedef struct gvm_setting {
    const char *key;
    const char *value; /* scalars are passed as their YAML text; the plugin parses/validates */
} gvm_setting;

/** A gather/scatter element. */
typedef struct gvm_iovec {
    const void *base;
    size_t len;
} gvm_iovec;

/** One node of the cluster, from the YAML `nodes:` list. */
typedef struct gvm_node_info {
    uint32_t id;           /* dense: equals its index in gvm_cluster_info.nodes */
    uint16_t port;
    uint16_t reserved;
    const char *address;   /* host name or IP literal */
    uint32_t vcpu_count;   /* vCPUs that run on this node */
    uint32_t first_vcpu;   /* global index of its first vCPU (vCPUs are numbered node by node) */
} gvm_node_info;

/** The cluster as one node sees it. Valid from create() until destroy() returns. */
typedef struct gvm_cluster_info {
    const char *cluster_name;
    uint32_t self_id;            /* this node's id */
    uint32_t node_count;
    const gvm_node_info *nodes;  /* node_count entries, indexed by id */
    uint64_t guest_memory_bytes; /* a multiple of GVM_PAGE_SIZE */
    uint32_t page_size;          /* GVM_PAGE_SIZE */
    uint32_t total_vcpus;
} gvm_cluster_info;

/* ---------------------------------------------------------------------------------------------
 * Host services common to every plugin kind
 * ------------------------------------------------------------------------------------------- */

/** A timer callback. Thread: the host's timer thread. May block: no (keep it short). */
typedef void (*gvm_timer_fn)(void *ctx);

typedef struct gvm_host_services {
    uint32_t size;        /* sizeof(gvm_host_services) as the host was built */
    uint32_t abi_version; /* GVM_ABI_VERSION of the host */
    gvm_host *host;       /* pass to every service below */

    /** Log a message under the plugin's name. Any thread. Never blocks for long. */
    void (*log)(gvm_host *host, gvm_log_level level, const char *message);

    /** Monotonic clock in nanoseconds (CLOCK_MONOTONIC). Any thread. */
    uint64_t (*now_ns)(gvm_host *host);

    /** Look up or create a named counter (e.g. "dsm.fault.read_miss", or `ivy.held` for a
     *  plugin's own); returns a handle. Any thread. Counters are printed in the node's stop
     *  summary and written by --stats-out. Names: lower-case dotted words; the "dsm." prefix is
     *  reserved for the standard statistics below. */
    uint32_t (*counter)(gvm_host *host, const char *name);
    /** Add to a counter. Any thread, lock-free. */
    void (*counter_add)(gvm_host *host, uint32_t counter, uint64_t delta);

    /** Look up or create a named latency histogram (values in nanoseconds). Any thread. */
    uint32_t (*histogram)(gvm_host *host, const char *name);
    /** Record one value. Any thread; may take a short internal lock. */
    void (*histogram_record)(gvm_host *host, uint32_t histogram, uint64_t value_ns);

    /** Start a timer firing after delay_ns, then every period_ns (0 = once). Returns an id > 0,
     *  or 0 on failure. Any thread. fn runs on the host timer thread. */
    uint64_t (*timer_start)(gvm_host *host, uint64_t delay_ns, uint64_t period_ns,
                            gvm_timer_fn fn, void *ctx);
    /** Cancel a timer. After return, fn is not running and will not run again for it. Must not
     *  be called from that timer's own callback (return is then immediate, without waiting). */
    void (*timer_cancel)(gvm_host *host, uint64_t timer);

    /** Report an unrecoverable error: the host logs it, stops this node and every other node
     *  with it, and returns; the plugin should stop its own work. Any thread. */
    void (*fatal)(gvm_host *host, const char *message);
} gvm_host_services;

/* ---------------------------------------------------------------------------------------------
 * Transport plugins
 *
 * A transport moves opaque frames between nodes. It knows nothing of messages: the host
 * multiplexes its channels (control, coherence, CPU/interrupt, I/O, heartbeat) on top.
 * Frames travel on one of GVM_LANE_COUNT lanes; frames on one lane between one pair of nodes are
 * delivered in order, exactly once, or the peer is reported down. Lanes are independent: a
 * transport must not let bulk traffic on GVM_LANE_BULK delay GVM_LANE_URGENT (heartbeats and
 * control), e.g. by giving each lane its own connection or queue.
 * ------------------------------------------------------------------------------------------- */

#define GVM_LANE_URGENT 0u
#define GVM_LANE_BULK 1u
#define GVM_LANE_COUNT 2u

/** The largest frame any transport must carry (a page plus generous headers). */
#define GVM_MAX_FRAME (64u * 1024u)

typedef struct gvm_transport_host {
    uint32_t size;
    gvm_host *host;

    /** A whole frame arrived from an authenticated peer. Thread: a transport receive thread.
     *  May block: no — the host never blocks in deliver (it queues what must wait).
     *  frame is borrowed for the call. len <= GVM_MAX_FRAME. */
    void (*deliver)(gvm_host *host, uint32_t src, uint32_t lane, const void *frame, size_t len);

    /** A peer became reachable on every lane (up = 1) or was lost (up = 0, reason says why,
     *  e.g. "connection reset by peer"). Thread: any transport thread. May block: no.
     *  A peer reported down is never reported up again in this run. */
    void (*peer_state)(gvm_host *host, uint32_t node, int up, const char *reason);

    /** Authentication, done by the transport's handshake with these two services so every
     *  transport authenticates the same way. auth_sign writes this node's proof for a challenge
     *  the peer chose (HMAC-SHA256 under the cluster key, or empty when no key is configured)
     *  and returns its length (<= out_cap; 0 = no key). Any thread. */
    size_t (*auth_sign)(gvm_host *host, const uint8_t *challenge, size_t challenge_len,
                        uint8_t *out, size_t out_cap);
    /** Checks a peer's proof over a challenge this node chose, and that the peer's claimed id
     *  and cluster name are acceptable. Returns GVM_OK, or an error after logging why. */
    int (*auth_verify)(gvm_host *host, uint32_t peer, const char *peer_cluster,
                       const uint8_t *challenge, size_t challenge_len,
                       const uint8_t *proof, size_t proof_len);

    /* --- Per-frame authentication (appended after auth_verify: a plugin checks `size` covers
     * them before use). With a cluster key, a transport authenticates every frame after the
     * handshake, so a party on the path can neither inject, modify, drop, reorder nor replay a
     * frame of an authenticated stream; the key itself never leaves the host. */

    /** Derives the session key of ONE direction of ONE connection and returns an opaque session,
     *  or NULL when the cluster has no key (frames then carry no MAC). `context` is the transport's
     *  transcript of the handshake: at least both random nonces, both node ids, the direction
     *  (sender, receiver) and the lane, so every connection and direction gets its own key
     *  (HKDF-SHA256, the cluster key as input keying material). Any thread. Free it with
     *  auth_session_free once no thread uses it. */
    void *(*auth_session)(gvm_host *host, const uint8_t *context, size_t context_len);
    /** Writes GVM_FRAME_MAC_SIZE bytes to out: the MAC under `session` of the concatenation of
     *  iov, numbered `seq` (AES-256-GCM's tag over no plaintext with the bytes as associated data,
     *  i.e. GMAC, with a nonce holding `seq`: a session must never MAC two frames with one seq).
     *  The transport numbers the frames of each direction 0, 1, 2, ... and checks a received
     *  frame's MAC against the number it expects next, in constant time: a replayed, dropped or
     *  reordered frame then fails like a forged one, and the connection is closed. Any thread;
     *  one session may be used by several threads at once. */
    void (*auth_mac)(gvm_host *host, void *session, uint64_t seq, const gvm_iovec *iov,
                     uint32_t iov_count, uint8_t *out);
    /** Frees a session from auth_session (NULL is ignored). Any thread. */
    void (*auth_session_free)(gvm_host *host, void *session);
} gvm_transport_host;

/** Bytes of the per-frame MAC written by gvm_transport_host.auth_mac. */
#define GVM_FRAME_MAC_SIZE 16u

/** Completion of an RDMA-style one-sided read. Thread: a transport thread. */
typedef void (*gvm_read_done_fn)(void *ctx, int status);

typedef struct gvm_transport_ops {
    uint32_t size;

    /** REQUIRED. Validate settings and allocate; do not open sockets yet. Thread: main.
     *  Returns an instance, or NULL with err filled in. svc/th/cluster stay valid until
     *  destroy(). */
    void *(*create)(const gvm_host_services *svc, const gvm_transport_host *th,
                    const gvm_cluster_info *cluster, const gvm_setting *settings,
                    uint32_t setting_count, gvm_error *err);

    /** REQUIRED. Start listening and connecting to every peer, retrying while peers start.
     *  Returns at once; each peer is reported through peer_state. Thread: main. */
    int (*start)(void *transport, gvm_error *err);

    /** REQUIRED. Queue one frame (the concatenation of iov) to node dst on a lane. Any thread,
     *  concurrently. The transport copies the bytes before returning; it never waits for the
     *  peer to read (so a receive thread may call send without risk of deadlock), but may
     *  block briefly on a local queue. Returns GVM_ERR_CLOSED if the peer is down,
     *  GVM_ERR_INVALID if the frame exceeds GVM_MAX_FRAME. */
    int (*send)(void *transport, uint32_t dst, uint32_t lane, const gvm_iovec *iov,
                uint32_t iov_count);

    /** OPTIONAL (RDMA). Register [addr, addr+len) for one-sided remote reads; writes a key the
     *  peer needs. The region stays registered until stop(). Thread: main, before start(). */
    int (*register_region)(void *transport, void *addr, size_t len, uint64_t *key_out);

    /** OPTIONAL (RDMA). One-sided read of len bytes at offset within a region node dst
     *  registered under key, into local (which must lie in a region registered here). done
     *  runs once on completion. Any thread. */
    int (*read_remote)(void *transport, uint32_t dst, uint64_t key, uint64_t offset,
                       void *local, size_t len, gvm_read_done_fn done, void *ctx);

    /** REQUIRED. Close every connection and join every thread: after return, deliver and
     *  peer_state are never called again. Thread: main. */
    void (*stop)(void *transport);

    /** REQUIRED. Free the instance (after stop). Thread: main. */
    void (*destroy)(void *transport);
} gvm_transport_ops;

/* ---------------------------------------------------------------------------------------------
 * Coherence plugins
 *
 * The host owns the mechanics of guest memory (one userfaultfd-registered mapping per node, the
 * fault-handler threads, waking waiters, pin/unpin); the coherence plugin owns the protocol: what
 * to request when a page faults, what to do with a message from a peer. The host keeps one state
 * per page, held exactly as the kernel holds it:
 *
 *   GVM_PAGE_INVALID   not present: any access faults
 *   GVM_PAGE_SHARED    present, write-protected: reads proceed, writes fault
 *   GVM_PAGE_MODIFIED  present, writable: nothing faults
 *
 * A faulting thread (a vCPU inside KVM_RUN, or a host thread) sleeps until the plugin calls
 * page_wake for that page; it then retries, and faults again if the state still does not allow
 * its access. Pins: host code that touches guest RAM directly (image loading, device DMA) pins
 * pages first; a page pinned for reading cannot be dropped, a page pinned for writing cannot be
 * downgraded or dropped: those page operations return GVM_ERR_PINNED and the plugin must defer
 * the request that needed them (never block a receive thread) until page_unpinned() says the
 * last pin is gone.
 *
 * Invalidation protocols (Ivy) use install / upgrade / downgrade / drop. Multiple-writer
 * protocols (twins and diffs) additionally use page_read to make a twin, page_patch to apply a
 * diff, and the fence hook, which the host calls at synchronisation points.
 * ------------------------------------------------------------------------------------------- */

#define GVM_PAGE_INVALID 0u
#define GVM_PAGE_SHARED 1u
#define GVM_PAGE_MODIFIED 2u

#define GVM_ACCESS_READ 1u
#define GVM_ACCESS_WRITE 2u

/** fault() flags. */
#define GVM_FAULT_FROM_PIN 1u   /* raised by the host's pin(), not by a thread's access */

/** Fence kinds passed to the fence hook. */
#define GVM_FENCE_RELEASE 1u    /* before an I/O exit, an IPI send, HLT: make writes visible */
#define GVM_FENCE_ACQUIRE 2u    /* after an interrupt is taken: see others' released writes */
#define GVM_FENCE_FULL 3u

typedef struct gvm_coherence_host {
    uint32_t size;
    gvm_host *host;
    uint64_t page_count; /* guest RAM pages: valid gfns are 0 .. page_count-1 */

    /** Send one message to node dst on the coherence channel (bulk lane). Any thread; never
     *  waits for the peer. Returns GVM_ERR_CLOSED when dst is gone. */
    int (*send)(gvm_host *host, uint32_t dst, const gvm_iovec *iov, uint32_t iov_count);

    /** Like send but on the urgent lane (small control messages that must not queue behind
     *  page data, e.g. invalidation acks). */
    int (*send_urgent)(gvm_host *host, uint32_t dst, const gvm_iovec *iov, uint32_t iov_count);

    /** Make the page present with bytes (GVM_PAGE_SIZE of them; NULL = zeros) in state
     *  GVM_PAGE_SHARED or GVM_PAGE_MODIFIED. A present page is dropped first (drop, then copy).
     *  Does not wake waiters: call page_wake. Any thread. */
    int (*page_install)(gvm_host *host, uint64_t gfn, const void *bytes, uint32_t state);

    /** SHARED -> MODIFIED in place (clears write protection). Returns GVM_ERR_NOT_PRESENT if the
     *  page is INVALID (an invalidation crossed the upgrade: fetch it instead). MODIFIED: no-op. */
    int (*page_upgrade)(gvm_host *host, uint64_t gfn);

    /** MODIFIED -> SHARED: write-protect first, then copy the bytes to out (if out != NULL), so
     *  no store is lost. SHARED: copies only. INVALID: GVM_ERR_NOT_PRESENT. Pinned for write:
     *  GVM_ERR_PINNED. */
    int (*page_downgrade)(gvm_host *host, uint64_t gfn, void *out);

    /** Any state -> INVALID: write-protect, copy the bytes to out (if out != NULL and the page
     *  is present), then drop. Already INVALID: GVM_ERR_NOT_PRESENT (out untouched). Pinned:
     *  GVM_ERR_PINNED. */
    int (*page_drop)(gvm_host *host, uint64_t gfn, void *out);

    /** Copy the bytes of a present page to out. INVALID: GVM_ERR_NOT_PRESENT. */
    int (*page_read)(gvm_host *host, uint64_t gfn, void *out);

    /** Write len bytes at offset into a present page whatever its protection (applying a diff).
     *  INVALID: GVM_ERR_NOT_PRESENT. */
    int (*page_patch)(gvm_host *host, uint64_t gfn, uint32_t offset, const void *bytes,
                      uint32_t len);

    /** The page's current state (GVM_PAGE_*). Any thread. */
    uint32_t (*page_state)(gvm_host *host, uint64_t gfn);

    /** 0 if not pinned, else GVM_ACCESS_READ or GVM_ACCESS_WRITE: the strongest pin held. */
    uint32_t (*page_pinned)(gvm_host *host, uint64_t gfn);

    /** Wake every thread (and pin) waiting on gfn: each retries its access. Any thread. */
    void (*page_wake)(gvm_host *host, uint64_t gfn);

    /* ---- ABI 3 ---- */

    /** OPTIONAL (NULL, or past the end of a shorter table: install page by page). Makes the
     *  `count` pages gfn .. gfn+count-1 (1 .. 64) present with `bytes` (count * GVM_PAGE_SIZE
     *  contiguous bytes, not NULL) in state GVM_PAGE_SHARED or GVM_PAGE_MODIFIED, with one copy
     *  into guest memory (one UFFDIO_COPY). All or nothing: every page must be INVALID and
     *  unpinned, else nothing is installed and it returns GVM_ERR_STATE (a present page) or
     *  GVM_ERR_PINNED; GVM_ERR_INVALID for a bad range, count or state. Does not wake waiters:
     *  call page_wake for each page. Thread: any. May block: on the pages' locks only. */
    int (*page_install_batch)(gvm_host *host, uint64_t gfn, uint32_t count, const void *bytes,
                              uint32_t state);

    /* ---- ABI 5 ---- */

    /** OPTIONAL (NULL, or past the end of a shorter table: downgrade page by page). Makes the
     *  `count` pages gfn .. gfn+count-1 (1 .. 64), every one GVM_PAGE_MODIFIED, GVM_PAGE_SHARED
     *  with one write-protection of the run (one UFFDIO_WRITEPROTECT: one TLB flush and one KVM
     *  invalidation for the run, where page_downgrade pays one per page). The bytes stay as they
     *  are; read them with page_read, as after page_downgrade(..., NULL). All or nothing: every
     *  page must be MODIFIED and not pinned for write, else nothing changes and it returns
     *  GVM_ERR_STATE or GVM_ERR_PINNED; GVM_ERR_INVALID for a bad range or count.
     *  Thread: any. May block: on the pages' locks only. */
    int (*page_downgrade_batch)(gvm_host *host, uint64_t gfn, uint32_t count);

    /** OPTIONAL (NULL, or past the end of a shorter table: install zero pages one by one or with
     *  page_install_batch). Makes the `count` pages gfn .. gfn+count-1 (1 .. GVM_ZERO_RUN_MAX)
     *  present as zeros in state GVM_PAGE_MODIFIED, for pages the protocol knows were never
     *  written anywhere. All or nothing: every page must be INVALID and unpinned, else nothing is
     *  installed and it returns GVM_ERR_STATE or GVM_ERR_PINNED; GVM_ERR_INVALID for a bad range
     *  or count. Where the run is exactly one 2 MiB-aligned huge page (512 pages) the host may
     *  back it with a transparent huge page, so KVM maps it with one fault. Does not wake waiters.
     *  Thread: any. May block: on the pages' locks only. */
    int (*page_install_zeros)(gvm_host *host, uint64_t gfn, uint32_t count);
} gvm_coherence_host;

/** The most pages one page_install_zeros call takes: one 2 MiB huge page of 4 KiB pages. */
#define GVM_ZERO_RUN_MAX 512u

/** ABI 4. What a drain moved (gvm_coherence_ops.drain), counted on the leaving node. */
typedef struct gvm_drain_report {
    uint32_t size;                /* sizeof(gvm_drain_report) as the host was built (set by it) */
    uint32_t to;                  /* the node the manager role went to */
    uint64_t pages_moved;         /* pages this node owned or held a copy of, handed to others */
    uint64_t managed_pages_moved; /* pages whose manager (directory) role moved off this node */
    uint64_t bytes_sent;          /* coherence bytes this node sent during the drain (headers,
                                     page data, directory state) */
    uint64_t duration_ns;         /* from the call to the return */
} gvm_drain_report;

typedef struct gvm_coherence_ops {
    uint32_t size;

    /** REQUIRED. Validate settings, allocate per-page metadata. Thread: main. Returns an
     *  instance or NULL with err filled in. The tables and cluster stay valid until destroy().
     *  All guest pages start INVALID on every node; which node first owns a page is the
     *  plugin's choice (e.g. its manager node, which serves it zero-filled on first touch). */
    void *(*create)(const gvm_host_services *svc, const gvm_coherence_host *mem,
                    const gvm_cluster_info *cluster, const gvm_setting *settings,
                    uint32_t setting_count, gvm_error *err);

    /** OPTIONAL. Every peer is connected; faults and messages may follow. Thread: main. */
    int (*start)(void *coherence, gvm_error *err);

    /** REQUIRED. A local access needs a better state: access is GVM_ACCESS_READ on an INVALID
     *  page, or GVM_ACCESS_WRITE on an INVALID or SHARED one. Thread: a host fault-handler
     *  thread (or the pinning thread with GVM_FAULT_FROM_PIN). May block: no network waits —
     *  send a request and return; resolve later from receive() with page_install/upgrade and
     *  page_wake. The host calls fault once per fault event: several threads faulting on one
     *  page give several calls, which the plugin coalesces into one request. A call may be stale
     *  (the page already has the state): check page_state and just page_wake. */
    void (*fault)(void *coherence, uint64_t gfn, uint32_t access, uint32_t flags);

    /** REQUIRED. A coherence message from node src (an authenticated peer; the content is
     *  untrusted: validate lengths and fields, and report nonsense through fatal or by logging
     *  and dropping it). Thread: a transport receive thread. May block: no. msg is borrowed. */
    void (*receive)(void *coherence, uint32_t src, const void *msg, size_t len);

    /** OPTIONAL (required if the plugin ever gets GVM_ERR_PINNED). The last pin on gfn went
     *  away: resume requests deferred for it. Thread: the unpinning thread. May block: no. */
    void (*page_unpinned)(void *coherence, uint64_t gfn);

    /** OPTIONAL. A synchronisation point of vCPU vcpu (GVM_FENCE_*): multiple-writer protocols
     *  flush diffs here. Thread: that vCPU's thread. May block: yes, until the flush is
     *  acknowledged (the vCPU waits). Invalidation protocols leave it NULL. */
    int (*fence)(void *coherence, uint32_t vcpu, uint32_t kind);

    /** OPTIONAL. A peer was lost; the node is stopping. Fail nothing silently: the host will
     *  stop every faulting thread. Thread: any. */
    void (*peer_lost)(void *coherence, uint32_t node);

    /** OPTIONAL. Write a human-readable description of the protocol (its state table) into buf
     *  (cap bytes, NUL-terminated, truncated if needed); returns the length it needed. */
    size_t (*describe)(void *coherence, char *buf, size_t cap);

    /** OPTIONAL. No more faults or messages will arrive. Thread: main. */
    void (*stop)(void *coherence);

    /** REQUIRED. Free the instance. Thread: main, after stop. */
    void (*destroy)(void *coherence);

    /* --- ABI 3 (appended: the host checks `size` covers it before use) */

    /** OPTIONAL. A coherence hint from the guest (GVM_HINT_*), passed on by a device through
     *  gvm_device_host.coherence_hint and by the host to the protocol instance of the device's
     *  node. gpa/length: a guest-physical range (GVM_HINT_RELAXED, GVM_HINT_SC; 0/0 for
     *  GVM_HINT_FENCE). A class change concerns every node: the protocol tells its peers through
     *  its own messages before it returns. Thread: the vCPU thread that wrote the device, or the
     *  host's I/O forwarding thread when that vCPU runs on another node. May block: yes, until
     *  the hint took effect on every node (the vCPU waits). Returns GVM_OK, GVM_ERR_UNSUPPORTED
     *  (a kind this protocol does not take), GVM_ERR_INVALID (a range outside guest memory or
     *  not page aligned) or GVM_ERR_STATE (a change the protocol cannot make now, logged). NULL:
     *  every hint is GVM_ERR_UNSUPPORTED (invalidation protocols: every page is sequentially
     *  consistent, and the host's fences are enough). ABI 4: the host itself passes
     *  GVM_HINT_REPLICATED at start-up (main thread, before any vCPU runs; see its definition). */
    int (*hint)(void *coherence, uint32_t kind, uint64_t gpa, uint64_t length);

    /* --- ABI 4 (appended: the host checks `size` covers it before use) */

    /** OPTIONAL. Node evacuation: this node is about to leave the cluster while the guest runs.
     *  Called on the leaving node only, after every vCPU moved off it and no device of it is
     *  left (nothing on this node faults any more). The protocol moves, through its own
     *  messages, everything it keeps on this node to other nodes: every page this node owns
     *  (with its bytes) and every read copy it holds (dropped, so no peer's state names this
     *  node), then the role of every page this node manages or serializes (directory state:
     *  owner, copyset, queued requests) to `to` (or other nodes of its choice), with the new
     *  assignment agreed by every other node before it returns. Afterwards no peer sends this
     *  node a coherence message, and a peer's fault never waits on it: the host may then close
     *  its connections (peers are told the node left, not lost: peer_lost is not called for it).
     *  `to`: the node the host suggests (never this node; < node_count). `timeout_ns`: give up
     *  then with GVM_ERR_STATE (err says what was left); the cluster is then in an unknown
     *  state and the host stops it. Fills `report` (its `size` set by the host) with
     *  what moved. Thread: a host control thread (not main, not a receive or fault thread).
     *  May block: yes, until the drain is complete or the timeout (messages keep flowing on
     *  the receive threads meanwhile). Returns GVM_OK, GVM_ERR_INVALID (a bad
     *  `to`), GVM_ERR_STATE (this node still faults, the protocol is stopping, or the timeout
     *  passed: err says which and what was left)
     *  or GVM_ERR_UNSUPPORTED (pages of a class it cannot move: err names them). NULL: the
     *  protocol cannot let a node leave; the host refuses the evacuation's last step, naming
     *  the plugin. */
    int (*drain)(void *coherence, uint32_t to, uint64_t timeout_ns, gvm_drain_report *report,
                 gvm_error *err);
} gvm_coherence_ops;


/** Coherence hint kinds (gvm_coherence_ops.hint, gvm_device_host.coherence_hint). */
#define GVM_HINT_FENCE 1u     /* a release point: this guest's writes so far must become visible */
#define GVM_HINT_RELAXED 2u   /* [gpa, gpa+length) holds only data whose synchronisation the host
                                 sees (locks and flags elsewhere): it may use a weaker protocol */
#define GVM_HINT_SC 3u        /* [gpa, gpa+length) is sequentially consistent again */
/** ABI 4. [gpa, gpa+length) (page aligned) holds the same bytes on every node: the host loaded them
 *  into each node's guest RAM itself (a guest.modules file every node can read) and installs them
 *  SHARED (present, write-protected) on every node right after the protocol accepts. Passed by the
 *  host only — never by a device (the host refuses it from gvm_device_host.coherence_hint with
 *  GVM_ERR_INVALID) — on EVERY node with the same range, on the main thread after start() and
 *  before any vCPU runs or any peer may fault on the range (before the start-up barrier).
 *  The protocol makes each page's initial state "read-only copy on every node": e.g. its usual
 *  initial owner keeps ownership with a read-only copy and a copyset of all other nodes, every
 *  other node holds a read-only copy; a later write invalidates the other copies normally, so
 *  coherence holds. It applies the state locally, without messages (every node gets the same
 *  call). Returns GVM_OK (the host installs the bytes SHARED), GVM_ERR_STATE (a page of the
 *  range was already touched: nothing changed), GVM_ERR_INVALID (range) or GVM_ERR_UNSUPPORTED:
 *  the host then loads the range on the boot vCPU's node only, as before ABI 4, and the other
 *  nodes fault its pages in through the protocol. A plugin that accepts must accept on every
 *  node or on none (the answer may depend only on its settings and the range). */
#define GVM_HINT_REPLICATED 4u

/* ---------------------------------------------------------------------------------------------
 * Standard statistics
 *
 * Every coherence plugin reports these counters and histograms through gvm_host_services
 * (counter/counter_add, histogram/histogram_record), so the host's summaries, `--stats-out`
 * JSON and benchmark reports read the same names whatever the protocol. A plugin looks up every
 * name below in create() (reporting 0 for what its protocol never does: the host then knows the
 * count is a true zero, not a missing statistic) and counts on the node where the event happens.
 * Its own extra statistics live under a prefix of its own: by convention its name without the
 * "dsm-" (dsm-ivy -> `ivy.`, dsm-local -> `local.`); "dsm." is reserved for this list.
 *
 * Faults counted here are protocol faults: calls of fault() that started a request (or, for a
 * protocol serving pages locally, a transition). A fault() call that joined a request already
 * outstanding for its page is "coalesced"; one on a page that already had the needed state is
 * "stale". So read_miss + write_miss + upgrade is the number of requests a node started, and
 * every one of them is resolved once (one sample in GVM_STAT_FAULT_LATENCY) unless the run stops.
 * ------------------------------------------------------------------------------------------- */

/** Counter, faults: a read access to an INVALID page started a request. */
#define GVM_STAT_FAULT_READ_MISS "dsm.fault.read_miss"
/** Counter, faults: a write access to an INVALID page started a request (data and ownership). */
#define GVM_STAT_FAULT_WRITE_MISS "dsm.fault.write_miss"
/** Counter, faults: a write access to a SHARED (write-protected) page started a request for
 *  ownership only (the write-protect fault; the node keeps its bytes). */
#define GVM_STAT_FAULT_UPGRADE "dsm.fault.upgrade"
/** Counter, fault() calls joined to a request already outstanding for the same page. */
#define GVM_STAT_FAULT_COALESCED "dsm.fault.coalesced"
/** Counter, fault() calls that found the page already in the needed state (just woken). */
#define GVM_STAT_FAULT_STALE "dsm.fault.stale"
/** Counter, requests deferred because a page operation returned GVM_ERR_PINNED (resumed from
 *  page_unpinned). */
#define GVM_STAT_PIN_DEFERRED "dsm.pin.deferred"

/** Counter, messages this node handed to send or send_urgent. */
#define GVM_STAT_MSG_SENT "dsm.msg.sent"
/** Counter, bytes: the total length of those messages (the iovecs passed, page data included,
 *  transport framing excluded). */
#define GVM_STAT_BYTES_SENT "dsm.bytes.sent"
/** Counter, messages this node received through receive(). */
#define GVM_STAT_MSG_RECEIVED "dsm.msg.received"
/** Counter, bytes: the total length of those messages. */
#define GVM_STAT_BYTES_RECEIVED "dsm.bytes.received"

/** Counter, pages: a page's contents (GVM_PAGE_SIZE bytes) sent to another node, as a read copy
 *  or with ownership. Counted by the sender. */
#define GVM_STAT_PAGES_SENT_DATA "dsm.page.sent_data"
/** Counter, pages: a page handed to another node without its bytes — a page known to be all
 *  zeros (the receiver installs zeros) or ownership only (the receiver already holds a valid
 *  copy). Counted by the sender. */
#define GVM_STAT_PAGES_SENT_NODATA "dsm.page.sent_nodata"
/** Counter, invalidation requests this node sent to sharers of a page. */
#define GVM_STAT_INV_SENT "dsm.inv.sent"
/** Counter, invalidation requests this node received for its copies (each is acted on once). */
#define GVM_STAT_INV_RECEIVED "dsm.inv.received"

/** Counter, diffs: multiple-writer protocols only (0 for invalidation protocols) — diffs this
 *  node computed against a twin and sent. */
#define GVM_STAT_DIFF_MADE "dsm.diff.made"
/** Counter, diffs: multiple-writer protocols only — diffs this node applied with page_patch. */
#define GVM_STAT_DIFF_APPLIED "dsm.diff.applied"

/** Histogram, nanoseconds (now_ns): from the fault() call that started a request to the
 *  page_wake that resolves it, every kind together. One sample per request. */
#define GVM_STAT_FAULT_LATENCY "dsm.fault_latency"
/** Histograms, nanoseconds: the same, one per kind of request. */
#define GVM_STAT_FAULT_LATENCY_READ_MISS "dsm.fault_latency.read_miss"
#define GVM_STAT_FAULT_LATENCY_WRITE_MISS "dsm.fault_latency.write_miss"
#define GVM_STAT_FAULT_LATENCY_UPGRADE "dsm.fault_latency.upgrade"

/** The standard counter names in the order above, for code that iterates them: returns the
 *  i-th name, or NULL when i >= GVM_STAT_COUNTER_COUNT. */
#define GVM_STAT_COUNTER_COUNT 16u
static inline const char *gvm_stat_counter_name(uint32_t i) {
    static const char *const names[GVM_STAT_COUNTER_COUNT] = {
        GVM_STAT_FAULT_READ_MISS, GVM_STAT_FAULT_WRITE_MISS, GVM_STAT_FAULT_UPGRADE,
        GVM_STAT_FAULT_COALESCED, GVM_STAT_FAULT_STALE, GVM_STAT_PIN_DEFERRED,
        GVM_STAT_MSG_SENT, GVM_STAT_BYTES_SENT, GVM_STAT_MSG_RECEIVED, GVM_STAT_BYTES_RECEIVED,
        GVM_STAT_PAGES_SENT_DATA, GVM_STAT_PAGES_SENT_NODATA, GVM_STAT_INV_SENT,
        GVM_STAT_INV_RECEIVED, GVM_STAT_DIFF_MADE, GVM_STAT_DIFF_APPLIED,
    };
    return i < GVM_STAT_COUNTER_COUNT ? names[i] : 0;
}

/** The standard histogram names, as gvm_stat_counter_name. */
#define GVM_STAT_HISTOGRAM_COUNT 4u
static inline const char *gvm_stat_histogram_name(uint32_t i) {
    static const char *const names[GVM_STAT_HISTOGRAM_COUNT] = {
        GVM_STAT_FAULT_LATENCY, GVM_STAT_FAULT_LATENCY_READ_MISS,
        GVM_STAT_FAULT_LATENCY_WRITE_MISS, GVM_STAT_FAULT_LATENCY_UPGRADE,
    };
    return i < GVM_STAT_HISTOGRAM_COUNT ? names[i] : 0;
}

/* ---------------------------------------------------------------------------------------------
 * Device plugins
 *
 * A device plugin offers one or more device models by name (e.g. "uart16550"). The YAML places
 * each device instance on a home node; only the home node creates it. Accesses from vCPUs on
 * other nodes are forwarded to the home node by the host, so a device never sees the network.
 * ------------------------------------------------------------------------------------------- */

#define GVM_SPACE_PIO 1u
#define GVM_SPACE_MMIO 2u

/** No interrupt line configured. */
#define GVM_NO_IRQ 0xFFFFFFFFu

/** Per-instance placement from the YAML. */
typedef struct gvm_device_config {
    const char *instance_name; /* the YAML `name:` of this device */
    uint64_t base;             /* YAML `base:` (port or physical address), or the model default
                                  when has_base == 0 */
    uint32_t has_base;
    uint32_t irq;              /* YAML `irq:` (IOAPIC pin), or GVM_NO_IRQ */
} gvm_device_config;

typedef struct gvm_device_host {
    uint32_t size;
    gvm_host *host;

    /** Claim [base, base+length) in a space (GVM_SPACE_*). Only during create(). Fails with
     *  GVM_ERR_INVALID on overlap with another device (the host reports both). */
    int (*map_io)(gvm_host *host, uint32_t space, uint64_t base, uint64_t length);

    /** Drive an interrupt line (IOAPIC pin): level 1 = asserted, 0 = deasserted. For an edge
     *  interrupt assert then deassert. Any thread; the host forwards it to the IOAPIC's node. */
    void (*set_irq)(gvm_host *host, uint32_t line, int level);

    /** Write bytes to this node's console (stdout, in order). Any thread. */
    void (*console_write)(gvm_host *host, const void *bytes, size_t len);

    /** End the whole VM with a guest exit status (e.g. isa-debug-exit). Any thread; returns. */
    void (*request_stop)(gvm_host *host, int32_t guest_status, const char *reason);

    /** Guest-physical DMA through pin/unpin: the range is brought coherent, pinned, copied and
     *  unpinned. While the device serves an access forwarded from another node's vCPU, the host
     *  may run a bulk copy (>= 2 KiB) on that node instead (DMA forwarding, docs/virtio.md):
     *  the same coherent result, without moving the pages. Returns GVM_ERR_INVALID for a range
     *  outside guest RAM. May block: yes, on the DSM (never call from a timer callback). */
    int (*dma_read)(gvm_host *host, uint64_t gpa, void *out, size_t len);
    int (*dma_write)(gvm_host *host, uint64_t gpa, const void *bytes, size_t len);

    /* --- ABI 3 (appended) */

    /** Pass a coherence hint (GVM_HINT_*) from the guest to this node's coherence protocol
     *  (gvm_coherence_ops.hint). Thread: the thread of io(). May block: yes, until the protocol
     *  applied it on every node. Returns the protocol's status; GVM_ERR_UNSUPPORTED when the
     *  protocol takes no hints (dsm-ivy: every page is already sequentially consistent). */
    int (*coherence_hint)(gvm_host *host, uint32_t kind, uint64_t gpa, uint64_t length);
} gvm_device_host;

typedef struct gvm_device_model {
    const char *name;    /* model name used as `model:` in the YAML */
    const char *summary; /* one line for `giantvm plugins list` */

    /** REQUIRED. Create one instance on its home node and map its I/O ranges. Thread: main;
     *  for an instance whose home moves here from a leaving node (gvm_device_ops.load_state
     *  follows), a host thread of this node before the instance is reachable. */
    void *(*create)(const gvm_host_services *svc, const gvm_device_host *dh,
                    const gvm_device_config *config, const gvm_setting *settings,
                    uint32_t setting_count, gvm_error *err);

    /** REQUIRED. A guest access of len bytes (1, 2, 4 or 8) at offset from the LOWEST base the
     *  instance mapped in that space (for a device with one range: from its base; a device with
     *  several ranges, e.g. ports 0x60 and 0x64, sees offsets 0 and 4). Writes: data holds len bytes, little endian. Reads: fill data. Thread: a
     *  vCPU thread of the home node or the host's I/O forwarding thread; calls into one instance
     *  never overlap, but timer callbacks may run concurrently with them. May block: briefly. */
    void (*io)(void *device, uint32_t space, uint64_t offset, uint8_t *data, uint32_t len,
               int is_write);

    /** OPTIONAL. Bytes typed on the host console, for devices that take input. Thread: the
     *  host's console thread. */
    void (*console_input)(void *device, const void *bytes, size_t len);

    /** OPTIONAL. Return to power-on state. Thread: main or a vCPU thread. */
    void (*reset)(void *device);

    /** REQUIRED. Free the instance; cancel its timers first. Thread: main. */
    void (*destroy)(void *device);
} gvm_device_model;

/** ABI 4. The largest device state blob (gvm_device_ops.save_state / load_state), bytes. */
#define GVM_DEVICE_STATE_MAX 65536u

typedef struct gvm_device_ops {
    uint32_t size;
    uint32_t model_count;
    const gvm_device_model *models;

    /* --- ABI 4 (appended: the host checks `size` covers them before use) */

    /** OPTIONAL (both hooks or neither). Save the state of `device` (an instance create()
     *  returned, of any model of this table) so that load_state can rebuild it in a fresh
     *  instance on another node: the device's home moves there when its node leaves the cluster
     *  (docs/migration.md, "Evacuating a node").
     *  Probe: with buf == NULL and capacity == 0, set *len to an upper bound of the blob and
     *  return GVM_OK when this instance's model can move, GVM_ERR_UNSUPPORTED when it cannot
     *  (host resources: files, sockets, backends; the host then refuses the leave naming it).
     *  Save: write at most `capacity` bytes (the host passes GVM_DEVICE_STATE_MAX) to buf, set
     *  *len, return GVM_OK; GVM_ERR_INVALID (with err) when it does not fit.
     *  The blob is opaque to the host and sent as is; the model versions it itself (a version
     *  byte first is the convention) and load_state refuses a version it does not know.
     *  After a successful save the host sends no more io() to the instance, destroys it once
     *  every node agreed on the new home, and the instance must not drive its line (set_irq)
     *  any more (the line's level moves with the state: the loading instance asserts what the
     *  saving one asserted).
     *  Thread: the host's I/O forwarding thread, while it holds every access to the device
     *  back (no io() call overlaps it; timers may: cancel them or make them harmless here).
     *  May block: no. */
    int (*save_state)(void *device, uint8_t *buf, size_t capacity, size_t *len, gvm_error *err);

    /** OPTIONAL (with save_state). Load a blob save_state produced into `device`, a fresh
     *  instance the host just created on the new home node with the same YAML entry (model,
     *  base, irq, settings) and before any io() reaches it. The blob comes from a peer: the
     *  model range-checks every field (length, version, register values, FIFO counts) and
     *  returns GVM_ERR_INVALID with err naming the field when one is out of range, leaving the
     *  instance in its power-on state (the host then stops the VM with that error). It does
     *  not drive its interrupt line here: the line's level is already asserted where the
     *  saving instance left it. len <= GVM_DEVICE_STATE_MAX.
     *  Thread: a host thread of the new home node, before the instance is reachable.
     *  May block: no. */
    int (*load_state)(void *device, const uint8_t *buf, size_t len, gvm_error *err);
} gvm_device_ops;

/* ---------------------------------------------------------------------------------------------
 * The descriptor and the entry symbol
 * ------------------------------------------------------------------------------------------- */

/** ABI 3. One setting a plugin accepts in its YAML `settings:` map, as `giantvm plugins describe`
 *  prints it. Every string is permanent (lives as long as the .so) and NUL-terminated UTF-8. */
typedef struct gvm_setting_info {
    const char *key;           /* REQUIRED: the YAML key, e.g. "hold_time" */
    const char *default_value; /* its value when absent, as YAML text ("20us", "auto");
                                  NULL = no default (required, or filled in by the host) */
    const char *meaning;       /* REQUIRED: one line: what it does, its grammar and range */
    const char *model;         /* device plugins: the model the key belongs to (its `model:`
                                  name); NULL = every model / not a device plugin */
} gvm_setting_info;

/** The most settings one descriptor may declare (a bound the loader checks). */
#define GVM_MAX_SETTING_INFO 1024u

typedef struct gvm_plugin_descriptor {
    uint32_t abi_version; /* GVM_ABI_VERSION the plugin was built with; the first field, forever */
    uint32_t kind;        /* gvm_plugin_kind: selects the type of ops */
    const char *name;     /* unique among loaded plugins, e.g. "transport-tcp" */
    const char *version;  /* the plugin's own version, e.g. "0.1.0" */
    const char *summary;  /* one line */
    const void *ops;      /* gvm_transport_ops*, gvm_coherence_ops*, gvm_device_ops* or
                             gvm_placement_ops* */

    /* --- ABI 3: the plugin's self-description. Read by `giantvm plugins describe` (and `plugins
     * list`) straight from the descriptor, on the main thread, without creating an instance:
     * plain data, no hook to call. The descriptor has no size field; these fields are present in
     * every plugin whose abi_version >= 3 (GVM_ABI_MIN_VERSION is 3, so in every plugin loaded). */

    /** OPTIONAL (NULL = none). Multi-line UTF-8 text describing the plugin beyond its summary: a
     *  coherence plugin's state table (states, events, transitions), a transport's wire design.
     *  Must live as long as the .so (a string literal). Device models are listed from the ops. */
    const char *description;
    /** Entries in `settings` (0..GVM_MAX_SETTING_INFO). */
    uint32_t setting_count;
    /** REQUIRED when setting_count > 0: every key the plugin accepts in its YAML `settings:` map
     *  (a key not listed here should be refused by create()). Permanent, like the strings. */
    const gvm_setting_info *settings;
} gvm_plugin_descriptor;

/** The type of GVM_PLUGIN_ENTRY_SYMBOL. Called once, on the main thread, right after dlopen;
 *  must not call back into the host. The descriptor must stay valid while the .so is loaded. */
typedef const gvm_plugin_descriptor *(*gvm_plugin_entry_fn)(void);

/* ---------------------------------------------------------------------------------------------
 * Placement policies (ABI 3)
 *
 * A placement plugin decides which node each vCPU runs on while the VM runs. One instance exists
 * per VM, on node 0 only (YAML `placement: {plugin: NAME, interval: 1s, settings: {...}}`). Every
 * `interval` (default 1s) the host gathers each node's per-vCPU DSM figures for the interval
 * just ended and calls observe(); the policy may then ask for moves with
 * gvm_placement_host.migrate. A move is a live vCPU migration (docs/migration.md): asynchronous,
 * at most one in flight per vCPU; its outcome comes back through migration_done.
 *
 * Fault attribution: the host counts a DSM fault against the vCPU whose thread took it (the
 * userfaultfd message carries the faulting thread id). Faults of other threads (device DMA, I/O
 * forwarding) are not attributed to a vCPU and appear in no figure.
 * ------------------------------------------------------------------------------------------- */

/** The most vCPUs and nodes the placement figures describe (bounds the loader and host keep). */
#define GVM_PLACEMENT_MAX_VCPUS 256u
#define GVM_PLACEMENT_MAX_NODES 64u

/** The figures of one interval, borrowed for the duration of observe(). Arrays are dense and
 *  row-major; every count covers the interval only (it is reset after each observe()). */
typedef struct gvm_placement_stats {
    uint32_t size;          /* sizeof(gvm_placement_stats) as the host filled it */
    uint32_t vcpu_count;    /* V: 1 .. GVM_PLACEMENT_MAX_VCPUS */
    uint32_t node_count;    /* N: 1 .. GVM_PLACEMENT_MAX_NODES */
    uint32_t sample_pages;  /* the per-vCPU page-set bound used for `sharing` (e.g. 4096) */
    uint64_t interval_ns;   /* the length of the interval these figures cover */
    /** [V]: the node each vCPU runs on at the end of the interval (UINT32_MAX: migrating). */
    const uint32_t *vcpu_node;
    /** [V*N]: faults[v*N + n] = DSM faults vCPU v took in the interval that node n served (n is
     *  the page's owner the fault was resolved from; n == the vCPU's node counts local faults,
     *  e.g. a first touch or an upgrade served without a transfer). */
    const uint64_t *faults;
    /** [V*V]: sharing[i*V + j] = distinct pages both vCPU i and vCPU j faulted on in the interval,
     *  counted over each vCPU's first `sample_pages` distinct faulting pages (so capped by it).
     *  Symmetric; the diagonal holds each vCPU's distinct faulting pages (also capped). */
    const uint64_t *sharing;
} gvm_placement_stats;

typedef struct gvm_placement_host {
    uint32_t size;
    gvm_host *host;

    /** REQUIRED. Ask the host to move `vcpu` to `node` (live migration, docs/migration.md).
     *  Returns at once: GVM_OK when the request was accepted (the outcome comes later through
     *  migration_done), GVM_ERR_INVALID for a vcpu or node out of range or the node it is
     *  already on, GVM_ERR_STATE while that vCPU has a migration in flight, GVM_ERR_CLOSED while
     *  the VM stops. Thread: the thread of observe() or migration_done(). May block: no. */
    int (*migrate)(gvm_host *host, uint32_t vcpu, uint32_t node);
} gvm_placement_host;

typedef struct gvm_placement_ops {
    uint32_t size;

    /** REQUIRED. Create the policy (on node 0 only). `node_count` and `vcpu_count` are the VM's;
     *  `initial_node` [vcpu_count] gives each vCPU's node from the YAML. Thread: main.
     *  May block: no. */
    void *(*create)(const gvm_host_services *svc, const gvm_placement_host *ph, uint32_t node_count,
                    uint32_t vcpu_count, const uint32_t *initial_node, const gvm_setting *settings,
                    uint32_t setting_count, gvm_error *err);

    /** REQUIRED. The figures of one interval (see gvm_placement_stats); the policy may call
     *  ph->migrate from here. Calls never overlap each other or migration_done. Thread: the
     *  host's placement thread. May block: briefly (no network, no DSM). */
    void (*observe)(void *policy, const gvm_placement_stats *stats);

    /** OPTIONAL. The outcome of a migrate() the policy asked for: status GVM_OK when `vcpu` now
     *  runs on `node`, otherwise why not (the vCPU stayed where it was). `elapsed_ns` is the
     *  time the move took. Thread: the host's placement thread. May block: briefly.
     *  A policy keeps its statistics in host counters (svc->counter, "placement.*" names):
     *  they are printed in node 0's stop summary. */
    void (*migration_done)(void *policy, uint32_t vcpu, uint32_t node, int status,
                           uint64_t elapsed_ns);

    /** REQUIRED. Free the policy. No call follows. Thread: main. */
    void (*destroy)(void *policy);
} gvm_placement_ops;

#ifdef __cplusplus
}
#endif

#endif /* GIANTVM_PLUGIN_H */
