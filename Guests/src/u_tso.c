/* u_tso.c - workloads for relaxed (multiple-writer) memory, the guest side of
 * dsm-tso's contract: data lives in a range the guest declares relaxed through
 * the coherence-hint device (port 0x580: base, length, command), locks and
 * flags stay in ordinary (sequentially consistent) memory, and a write of the
 * fence command is the mfence of relaxed memory. Under a protocol that takes
 * no hints (dsm-ivy) the declaration reads back "unsupported" and the same
 * workload runs on sequentially consistent memory: the baseline.
 *
 *   falseshare     every vCPU increments its own counter `iters` times (or,
 *                  with ms=N, for N ms of its own clock), all counters in
 *                  one relaxed page: exact counts, ops_per_s
 *   rmutex         `ops` lock/update/unlock per vCPU: 4 spinlocks in sc
 *                  memory, each protecting a record in relaxed memory
 *   rlitmus        MP, SB, LB, 2+2W, IRIW on relaxed x, y; observed
 *                  relaxations counted (TSO-forbidden outcomes), not failed
 *   rlitmus-fence  the same with a fence where x86 needs mfence (and between
 *                  every store and a later access): MP, SB, LB, 2+2W must show
 *                  no forbidden outcome; IRIW is reported (relaxed memory is
 *                  not multi-copy atomic) */
#include "u_lib.h"
#include "u_work.h"
#include "litmus.h"

#define HINT_PORT 0x580
#define HINT_FENCE 1
#define HINT_RELAXED 2
/* The relaxed range: the first RELAXED_BYTES of the heap; litmus results and
 * other sc data follow it. */
#define RELAXED_BYTES (1UL << 20)

static u32 nv(void) { return g_info.vcpus; }

static void hint_fence(void) { outb(HINT_PORT + 16, HINT_FENCE); }

/* Declares [heap_start, +RELAXED_BYTES) relaxed; returns the device status:
 * 0 declared, -6 the protocol takes no hints (the range stays sc). */
static i64 declare_relaxed(void)
{
    u64 base = g_info.heap_start;
    outl(HINT_PORT, (u32)base);
    outl(HINT_PORT + 4, (u32)(base >> 32));
    outl(HINT_PORT + 8, (u32)RELAXED_BYTES);
    outl(HINT_PORT + 12, 0);
    outb(HINT_PORT + 16, HINT_RELAXED);
    return (i64)(signed char)inb(HINT_PORT + 16);
}

static void mark_start(u32 id) { g_ucpu[id].t0 = rdtsc(); }
static void mark_end(u32 id) { g_ucpu[id].t1 = rdtsc(); }
static u64 span_cycles(void)
{
    u64 lo = ~0UL, hi = 0;
    for (u32 i = 0; i < nv(); i++) {
        if (g_ucpu[i].t0 < lo) lo = g_ucpu[i].t0;
        if (g_ucpu[i].t1 > hi) hi = g_ucpu[i].t1;
    }
    return hi > lo ? hi - lo : 1;
}

static struct { volatile i64 status; } PAGE_ALIGNED tso_state;

/* vCPU 0 declares the range before anyone touches it; every vCPU waits. */
static int setup(u32 id)
{
    if (heap_size() < 2 * RELAXED_BYTES) fail("relaxed workloads: guest memory too small for the relaxed range");
    if (id == 0) tso_state.status = declare_relaxed();
    barrier_all(id);
    i64 s = tso_state.status;
    if (s != 0 && s != -6) {
        if (id == 0) {
            char m[120];
            struct buf b = BUF_INIT(m);
            buf_str(&b, "coherence-hint: declaring the relaxed range failed with status ");
            buf_i64(&b, s);
            buf_term(&b);
            fail(m);
        }
        return 0;
    }
    return 1;
}

static void start_result(struct buf *b, const char *name)
{
    buf_char(b, '{');
    buf_kv_str(b, "workload", name);
    buf_kv_u64(b, "vcpus", nv());
    buf_kv_bool(b, "relaxed", tso_state.status == 0);
}

/* ------------------------------------------------------------------ */
u64 g_falseshare_ms;   /* falseshare ms=N: every vCPU increments for N ms (0: iters each) */

/* Timed falseshare: after the start barrier every vCPU increments its own
 * counter until its own clock has run `ms` milliseconds (checking the clock
 * every FS_BATCH increments), so all vCPUs write the page during the same
 * interval whatever the protocol does to one of them. Each vCPU also counts
 * in a register; the counter in (relaxed) memory must equal that count.
 * rate = all increments / the longest vCPU's own interval (each interval is
 * one vCPU's own TSC, never compared across nodes). `min_share` is the
 * smallest vCPU's share of the total in thousandths (1000/vcpus when every
 * vCPU progressed equally): a protocol that stalls a node shows it there. */
#define FS_BATCH 1024
static int falseshare_timed(u32 id, volatile u64 *counters)
{
    u64 len = muldiv(g_falseshare_ms, g_info.tsc_hz, 1000), n = 0;
    barrier_all(id);
    u64 t0 = rdtsc(), end = t0 + len, t;
    do {
        for (u32 k = 0; k < FS_BATCH; k++) counters[id] = counters[id] + 1;
        n += FS_BATCH;
    } while ((t = rdtsc()) < end);
    g_ucpu[id].val[0] = n;
    g_ucpu[id].val[1] = t - t0;
    barrier_all(id);
    if (id) return 1;
    int ok = 1;
    u64 total = 0, counted = 0, longest = 1, least = ~0UL;
    for (u32 i = 0; i < nv(); i++) {
        total += counters[i];
        counted += g_ucpu[i].val[0];
        if (counters[i] != g_ucpu[i].val[0]) ok = 0;
        if (g_ucpu[i].val[1] > longest) longest = g_ucpu[i].val[1];
        if (g_ucpu[i].val[0] < least) least = g_ucpu[i].val[0];
    }
    char r[320];
    struct buf j = BUF_INIT(r);
    start_result(&j, "falseshare");
    buf_kv_u64(&j, "expected", counted);
    buf_kv_u64(&j, "total", total);
    buf_kv_u64(&j, "ms", g_falseshare_ms);
    buf_kv_fix2(&j, "ops_per_s", rate_x100(total, longest));
    buf_kv_u64(&j, "longest_us", cycles_to_us(longest));
    buf_kv_u64(&j, "min_share", counted ? muldiv(least, 1000, counted) : 0);
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

int w_falseshare(u32 id)
{
    if (!setup(id)) return 0;
    volatile u64 *counters = (volatile u64 *)g_info.heap_start;   /* one page, 8 bytes per vCPU */
    if (g_falseshare_ms) return falseshare_timed(id, counters);
    u64 iters = g_cfg.iters;
    barrier_all(id);
    u64 w0 = rdtsc();
    mark_start(id);
    for (u64 i = 0; i < iters; i++) counters[id] = counters[id] + 1;
    mark_end(id);
    barrier_all(id);
    if (id) return 1;
    /* wall: vCPU 0's own clock from the start barrier to the end barrier
     * (one TSC: comparable across protocols whatever the nodes' offsets) */
    u64 wall = rdtsc() - w0;
    int ok = 1;
    u64 total = 0;
    for (u32 i = 0; i < nv(); i++) {
        total += counters[i];
        if (counters[i] != iters) ok = 0;
    }
    char r[256];
    struct buf j = BUF_INIT(r);
    start_result(&j, "falseshare");
    buf_kv_u64(&j, "expected", iters * nv());
    buf_kv_u64(&j, "total", total);
    buf_kv_fix2(&j, "ops_per_s", rate_x100(iters * nv(), span_cycles()));
    buf_kv_u64(&j, "wall_us", cycles_to_us(wall));
    buf_kv_fix2(&j, "wall_ops_per_s", rate_x100(iters * nv(), wall ? wall : 1));
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

/* ------------------------------------------------------------------ */
#define RM_LOCKS 4
static struct { volatile u32 lock; } PAGE_ALIGNED rm_locks[RM_LOCKS];
struct rm_record { u64 count, a, b; };

int w_rmutex(u32 id)
{
    if (!setup(id)) return 0;
    /* one record per lock, each on its own relaxed page */
    volatile struct rm_record *rec = (volatile struct rm_record *)g_info.heap_start;
    u32 stride = PAGE / sizeof(struct rm_record);
    u64 ops = g_cfg.ops;
    barrier_all(id);
    u64 seed = 0x9E3779B97F4A7C15UL * (id + 1);
    u64 torn = 0;
    mark_start(id);
    for (u64 i = 0; i < ops; i++) {
        seed = seed * 6364136223846793005UL + 1442695040888963407UL;
        u32 k = (u32)(seed >> 33) % RM_LOCKS;
        volatile struct rm_record *r = &rec[k * stride];
        spin_lock(&rm_locks[k].lock);
        if (r->a != r->b) torn++;
        r->count = r->count + 1;
        r->a = r->a + id + 1;
        r->b = r->b + id + 1;
        spin_unlock(&rm_locks[k].lock);
    }
    mark_end(id);
    g_ucpu[id].val[0] = torn;
    barrier_all(id);
    if (id) return 1;
    u64 sum = 0, bad = 0;
    for (u32 k = 0; k < RM_LOCKS; k++) {
        sum += rec[k * stride].count;
        if (rec[k * stride].a != rec[k * stride].b) bad++;
    }
    for (u32 i = 0; i < nv(); i++) bad += g_ucpu[i].val[0];
    int ok = sum == ops * nv() && bad == 0;
    char r[256];
    struct buf j = BUF_INIT(r);
    start_result(&j, "rmutex");
    buf_kv_u64(&j, "expected", ops * nv());
    buf_kv_u64(&j, "total", sum);
    buf_kv_u64(&j, "torn", bad);
    buf_kv_fix2(&j, "ops_per_s", rate_x100(ops * nv(), span_cycles()));
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

/* ------------------------------------------------------------------ */
/* litmus on relaxed memory: groups as in u_work.c's litmus (member k of  */
/* group g is vCPU g + k*G); x, y in the relaxed range, results after it. */
static struct gbarrier rl_bar[MAX_VCPUS / 2];


static struct lgroup rgroup_mem(u32 g, u64 trials)
{
    u64 xs = pages_for(trials * 8), rs = pages_for(trials);
    struct lgroup L;
    u64 rel = g_info.heap_start + (u64)g * 2 * xs;
    L.x = (volatile u64 *)rel;
    L.y = (volatile u64 *)(rel + xs);
    u64 sc = g_info.heap_start + RELAXED_BYTES + (u64)g * 4 * rs;
    for (int k = 0; k < 4; k++) L.res[k] = (volatile u8 *)(sc + (u64)k * rs);
    return L;
}

static int rlitmus(u32 id, int f)
{
    if (!setup(id)) return 0;
    u32 n = nv();
    u64 trials = g_cfg.trials;
    if (n > 1) {
        u64 G = n / 2;
        if (!trials || G * 2 * pages_for(trials * 8) > RELAXED_BYTES || G * 4 * pages_for(trials) > RELAXED_BYTES)
            fail("rlitmus: trials=0 or trials too large for the relaxed range");
    }
    u64 counts[NTESTS][16];
    u64 groups_of[NTESTS];
    memset(counts, 0, sizeof(counts));
    for (u32 test = 0; test < NTESTS; test++) {
        u32 th = litmus_threads[test], G = n / th;
        groups_of[test] = G;
        g_ucpu[id].gsense = 0;
        if (id == 0)
            for (u32 g = 0; g < MAX_VCPUS / 2; g++) rl_bar[g].count = rl_bar[g].sense = 0;
        if (id < G) {
            struct lgroup L = rgroup_mem(id, trials);
            for (u64 t = 0; t < trials; t++) L.x[t] = L.y[t] = 0;
        }
        if (id == 0) litmus_arm(test);
        barrier_all(id);
        if (id < G * th) {
            struct lgroup L = rgroup_mem(id % G, trials);
            litmus_trials(test, id / G, id, &L, trials, &rl_bar[id % G], f ? hint_fence : 0);
        }
        barrier_all(id);
        if (id == 0) {
            for (u32 g = 0; g < G; g++) {
                struct lgroup L = rgroup_mem(g, trials);
                for (u64 t = 0; t < trials; t++) counts[test][litmus_outcome(test, &L, t)]++;
            }
            if (G) litmus_progress(f ? "rlitmus-fence" : "rlitmus", test, G * trials, counts[test], f);
        }
        barrier_all(id);
    }
    if (id) return 1;
    u64 forb = 0, iriw = 0;
    char r[2048];
    struct buf j = BUF_INIT(r);
    start_result(&j, f ? "rlitmus-fence" : "rlitmus");
    buf_kv_u64(&j, "trials", trials);
    buf_kv_u64(&j, "gap_us", g_litmus_gap_us);
    buf_str(&j, ",\"tests\":{");
    for (u32 test = 0; test < NTESTS; test++) {
        u64 fc = 0;
        if (test) buf_char(&j, ',');
        buf_char(&j, '"');
        buf_str(&j, litmus_names[test]);
        buf_str(&j, "\":{");
        buf_kv_u64(&j, "groups", groups_of[test]);
        buf_str(&j, ",\"outcomes\":{");
        int first = 1;
        for (u32 o = 0; o < 16; o++) {
            if (!counts[test][o]) continue;
            if (litmus_forbidden(test, o, f)) fc += counts[test][o];
            if (!first) buf_char(&j, ',');
            first = 0;
            buf_char(&j, '"');
            litmus_outcome_name(&j, test, o);
            buf_str(&j, "\":");
            buf_u64(&j, counts[test][o]);
        }
        buf_char(&j, '}');
        buf_kv_u64(&j, "forbidden", fc);
        if (g_litmus_gap_us) buf_kv_u64(&j, "late", litmus_late(test));
        buf_char(&j, '}');
        if (test == T_IRIW) iriw = fc; else forb += fc;
    }
    buf_char(&j, '}');
    buf_kv_u64(&j, "forbidden", forb);
    buf_kv_u64(&j, "iriw_forbidden", iriw);
    /* without fences relaxations are what this workload measures; with
     * them, every test but IRIW must show none */
    int ok = f ? forb == 0 : 1;
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

int w_rlitmus(u32 id) { return rlitmus(id, 0); }
int w_rlitmus_fence(u32 id) { return rlitmus(id, 1); }
