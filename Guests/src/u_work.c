/* u_work.c - the workloads (ring 3, all vCPUs participate). Shared state
 * lives on its own pages so that the DSM moves only what the workload
 * really shares. Results: vCPU 0 emits exactly one RESULT line per run. */
#include "u_lib.h"
#include "u_work.h"
#include "litmus.h"

static u32 nv(void) { return g_info.vcpus; }

/* Timed section of a benchmark: every vCPU records its own start and end;
 * the run's time is from the earliest start to the latest end (the TSC is
 * shared by all vCPUs), so vCPUs that did not really run at the same time
 * (more vCPUs than host cores) cannot inflate the aggregate rate. */
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

static void start_result(struct buf *b, const char *name)
{
    buf_char(b, '{');
    buf_kv_str(b, "workload", name);
    buf_kv_u64(b, "vcpus", nv());
}

/* ------------------------------------------------------------------ */
/* hello: every vCPU greets; each must also have taken timer ticks.     */
/* ------------------------------------------------------------------ */
static struct { volatile u32 greeted; } PAGE_ALIGNED hello_state;

int w_hello(u32 id)
{
    char l[64];
    struct buf b = BUF_INIT(l);
    buf_str(&b, "hello from vCPU ");
    buf_u64(&b, id);
    print_line(&b);
    fetch_add32(&hello_state.greeted, 1);
    /* the APIC timer must tick on every vCPU: wait for 2 ticks */
    u64 end = tsc_deadline(g_cfg.timeout_s);
    while (g_ucpu[id].ticks < 2 && rdtsc() < end) cpu_relax();
    g_ucpu[id].val[0] = sys_ticks();          /* through the syscall gate */
    barrier_all(id);
    if (id) return 1;
    u64 tmin = ~0UL;
    for (u32 i = 0; i < nv(); i++)
        if (g_ucpu[i].val[0] < tmin) tmin = g_ucpu[i].val[0];
    int ok = hello_state.greeted == nv() && tmin >= 2;
    char r[256];
    struct buf j = BUF_INIT(r);
    start_result(&j, "hello");
    buf_kv_u64(&j, "greeted", hello_state.greeted);
    buf_kv_u64(&j, "ticks_min", tmin);
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

/* ------------------------------------------------------------------ */
/* ipi: every vCPU sends `ipis` IPIs to every other on vector 0x40+self; */
/* the receiver's handler counts per sender. A sender waits for the     */
/* previous IPI to a receiver to be counted before sending the next, so */
/* no two IPIs can merge in the IRR: the counts must match exactly.     */
/* ------------------------------------------------------------------ */
static void ipi_fail(u32 s, u32 d, u64 want, u64 got)
{
    char m[200];
    struct buf b = BUF_INIT(m);
    buf_str(&b, got > want ? "duplicate IPI: vCPU " : "IPI not delivered: vCPU ");
    buf_u64(&b, d);
    buf_str(&b, " counted ");
    buf_u64(&b, got);
    buf_str(&b, " IPIs from vCPU ");
    buf_u64(&b, s);
    buf_str(&b, ", expected ");
    buf_u64(&b, want);
    buf_term(&b);
    fail(m);
}

static void ipi_wait(u32 s, u32 d, u64 want, u64 end)
{
    for (;;) {
        u64 got = g_ucpu[d].ipi_recv[s];
        if (got == want) return;
        if (got > want || rdtsc() > end) ipi_fail(s, d, want, got);
        cpu_relax();
    }
}

int w_ipi(u32 id)
{
    u32 n = nv();
    u64 k = g_cfg.ipis;
    barrier_all(id);
    u64 end = tsc_deadline(g_cfg.timeout_s);
    mark_start(id);
    for (u64 r = 0; r < k; r++)
        for (u32 d = 0; d < n; d++) {
            if (d == id) continue;
            ipi_wait(id, d, r, end);
            sys_send_ipi(d, VEC_IPI_BASE + id);
        }
    for (u32 d = 0; d < n; d++)
        if (d != id) ipi_wait(id, d, k, end);
    mark_end(id);
    barrier_all(id);
    if (id) return 1;
    u64 total = 0;
    int exact = 1;
    for (u32 d = 0; d < n; d++)
        for (u32 s = 0; s < n; s++) {
            u64 c = g_ucpu[d].ipi_recv[s];
            total += c;
            if (c != (s == d ? 0 : k)) exact = 0;
        }
    u64 expected = (u64)n * (n - 1) * k;
    int ok = exact && total == expected;
    char r[320];
    struct buf j = BUF_INIT(r);
    start_result(&j, "ipi");
    buf_kv_u64(&j, "per_pair", k);
    buf_kv_u64(&j, "expected", expected);
    buf_kv_u64(&j, "total", total);
    if (expected) buf_kv_fix2(&j, "ipis_per_s", rate_x100(expected, span_cycles()));
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

/* ------------------------------------------------------------------ */
/* counter: iters increments per vCPU of one counter under a spinlock.  */
/* ------------------------------------------------------------------ */
static struct { volatile u32 lock; u32 pad; volatile u64 value; } PAGE_ALIGNED counter_state;

int w_counter(u32 id)
{
    u64 iters = g_cfg.iters;
    barrier_all(id);
    mark_start(id);
    for (u64 i = 0; i < iters; i++) {
        spin_lock(&counter_state.lock);
        counter_state.value = counter_state.value + 1;
        spin_unlock(&counter_state.lock);
    }
    mark_end(id);
    barrier_all(id);
    if (id) return 1;
    u64 expected = iters * nv(), total = counter_state.value;
    int ok = total == expected;
    char r[256];
    struct buf j = BUF_INIT(r);
    start_result(&j, "counter");
    buf_kv_u64(&j, "expected", expected);
    buf_kv_u64(&j, "total", total);
    buf_kv_fix2(&j, "ops_per_s", rate_x100(expected, span_cycles()));
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

/* ------------------------------------------------------------------ */
/* litmus: x86-TSO litmus tests. vCPUs form groups (2 threads for MP,   */
/* SB, LB, 2+2W; 4 for IRIW): member k of group g is vCPU g + k*G, so   */
/* with nodes holding consecutive vCPUs the members sit on different    */
/* nodes. Each trial: group barrier, then the test body on fresh        */
/* locations x[t], y[t] (x and y on different pages). Outcomes are      */
/* tallied by vCPU 0 afterwards.                                         */
/* ------------------------------------------------------------------ */

static struct gbarrier litmus_bar[MAX_VCPUS / 2];


static struct lgroup group_mem(u32 g, u64 trials)
{
    u64 xs = pages_for(trials * 8), rs = pages_for(trials);
    u64 base = g_info.heap_start + (u64)g * (2 * xs + 4 * rs);
    struct lgroup L;
    L.x = (volatile u64 *)base;
    L.y = (volatile u64 *)(base + xs);
    for (int k = 0; k < 4; k++) L.res[k] = (volatile u8 *)(base + 2 * xs + (u64)k * rs);
    return L;
}

int w_litmus(u32 id)
{
    u32 n = nv();
    u64 trials = g_cfg.trials;
    if (n > 1) {
        u64 need = (u64)(n / 2) * (2 * pages_for(trials * 8) + 4 * pages_for(trials));
        if (!trials || need > heap_size()) fail("litmus: trials=0 or trials too large for guest memory");
    }
    u64 counts[NTESTS][16];
    u64 groups_of[NTESTS];
    memset(counts, 0, sizeof(counts));
    for (u32 test = 0; test < NTESTS; test++) {
        u32 th = litmus_threads[test];
        u32 G = n / th;
        groups_of[test] = G;
        /* fresh group barriers and senses, and clear this test's locations
         * (each group's role 0 zeroes its own) */
        g_ucpu[id].gsense = 0;
        if (id == 0)
            for (u32 g = 0; g < MAX_VCPUS / 2; g++) litmus_bar[g].count = litmus_bar[g].sense = 0;
        if (id < G) {
            struct lgroup L = group_mem(id, trials);
            for (u64 t = 0; t < trials; t++) L.x[t] = L.y[t] = 0;
        }
        if (id == 0) litmus_arm(test);
        barrier_all(id);
        if (id < G * th) {
            struct lgroup L = group_mem(id % G, trials);
            litmus_trials(test, id / G, id, &L, trials, &litmus_bar[id % G], 0);
        }
        barrier_all(id);
        if (id == 0) {
            for (u32 g = 0; g < G; g++) {
                struct lgroup L = group_mem(g, trials);
                for (u64 t = 0; t < trials; t++) counts[test][litmus_outcome(test, &L, t)]++;
            }
            if (G) litmus_progress("litmus", test, G * trials, counts[test], 0);
        }
        barrier_all(id);
    }
    if (id) return 1;
    u64 forb = 0;
    char r[2048];
    struct buf j = BUF_INIT(r);
    start_result(&j, "litmus");
    buf_kv_u64(&j, "trials", trials);
    buf_kv_u64(&j, "gap_us", g_litmus_gap_us);
    buf_str(&j, ",\"tests\":{");
    for (u32 test = 0; test < NTESTS; test++) {
        u64 f = 0;
        if (test) buf_char(&j, ',');
        buf_char(&j, '"');
        buf_str(&j, litmus_names[test]);
        buf_str(&j, "\":{");
        buf_kv_u64(&j, "groups", groups_of[test]);
        /* groups whose members are not all on one node (boot info vcpu_node) */
        u64 cross = 0;
        for (u32 g = 0; g < groups_of[test]; g++)
            for (u32 k = 1; k < litmus_threads[test]; k++)
                if (g_info.vcpu_node[g + k * groups_of[test]] != g_info.vcpu_node[g]) { cross++; break; }
        buf_kv_u64(&j, "cross_node", cross);
        buf_str(&j, ",\"outcomes\":{");
        int first = 1;
        for (u32 o = 0; o < 16; o++) {
            if (!counts[test][o]) continue;
            if (litmus_forbidden(test, o, 0)) f += counts[test][o];
            if (!first) buf_char(&j, ',');
            first = 0;
            buf_char(&j, '"');
            litmus_outcome_name(&j, test, o);
            buf_str(&j, "\":");
            buf_u64(&j, counts[test][o]);
        }
        buf_char(&j, '}');
        buf_kv_u64(&j, "forbidden", f);
        if (g_litmus_gap_us) buf_kv_u64(&j, "late", litmus_late(test));
        buf_char(&j, '}');
        forb += f;
    }
    buf_char(&j, '}');
    buf_kv_u64(&j, "sb_relaxed", counts[T_SB][0]);
    buf_kv_u64(&j, "forbidden", forb);
    if (n < 2) buf_kv_str(&j, "note", "needs 2 vCPUs (4 for IRIW): nothing run");
    int ok = forb == 0;
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

/* ------------------------------------------------------------------ */
/* memory: sysbench-style. Cases: block 4 KiB / 4 MiB, scope local (own */
/* block per vCPU) / global (one block shared by all), op read / write. */
/* Each vCPU moves `total` MiB per case after one untimed warm-up pass. */
/* ------------------------------------------------------------------ */
#define MIB (1UL << 20)
#define BIG_BLOCK (4 * MIB)

static u64 mem_pass(volatile u64 *p, u64 words, int write, u64 v)
{
    u64 sum = 0;
    if (write) {
        for (u64 i = 0; i < words; i += 8) {
            p[i] = v; p[i + 1] = v; p[i + 2] = v; p[i + 3] = v;
            p[i + 4] = v; p[i + 5] = v; p[i + 6] = v; p[i + 7] = v;
        }
    } else {
        for (u64 i = 0; i < words; i += 8)
            sum += p[i] + p[i + 1] + p[i + 2] + p[i + 3] + p[i + 4] + p[i + 5] + p[i + 6] + p[i + 7];
    }
    return sum;
}

int w_memory(u32 id)
{
    u32 n = nv();
    if ((u64)(n + 1) * BIG_BLOCK > heap_size())
        fail("memory: guest RAM too small: needs 4 MiB per vCPU plus 4 MiB above the image");
    u64 total = g_cfg.total_mib * MIB;
    if (!total) fail("memory: total must be at least 1 (MiB)");
    u64 global = g_info.heap_start, local = global + BIG_BLOCK * (1 + id);
    static const u64 blocks[2] = {4096, BIG_BLOCK};
    static const char *const scopes[2] = {"local", "global"};
    static const char *const ops[2] = {"read", "write"};
    char r[1536];
    struct buf j = BUF_INIT(r);
    if (id == 0) {
        start_result(&j, "memory");
        buf_kv_u64(&j, "total_mib_per_vcpu", g_cfg.total_mib);
        buf_str(&j, ",\"cases\":[");
    }
    for (u32 bi = 0; bi < 2; bi++)
        for (u32 sc = 0; sc < 2; sc++)
            for (u32 op = 0; op < 2; op++) {
                u64 bs = blocks[bi];
                volatile u64 *p = (volatile u64 *)(sc ? global : local);
                u64 words = bs / 8, passes = total / bs ? total / bs : 1;
                u64 sink = mem_pass(p, words, op, id);      /* warm-up: fault pages in */
                barrier_all(id);
                mark_start(id);
                for (u64 k = 0; k < passes; k++) sink += mem_pass(p, words, op, k);
                mark_end(id);
                g_ucpu[id].val[1] = sink;
                barrier_all(id);
                if (id == 0) {
                    u64 kib = passes * bs / 1024 * n;
                    if (bi || sc || op) buf_char(&j, ',');
                    buf_char(&j, '{');
                    buf_kv_u64(&j, "block", bs);
                    buf_kv_str(&j, "scope", scopes[sc]);
                    buf_kv_str(&j, "op", ops[op]);
                    buf_kv_fix2(&j, "mib_s", rate_x100(kib, span_cycles()) / 1024);
                    buf_char(&j, '}');
                }
            }
    if (id) return 1;
    buf_char(&j, ']');
    buf_kv_bool(&j, "ok", 1);
    buf_char(&j, '}');
    emit_result(&j);
    return 1;
}

/* ------------------------------------------------------------------ */
/* mutex: 1 and 16 locks (each with its counter on its own page); every */
/* vCPU does `ops` lock/increment/unlock on a pseudo-random lock. The   */
/* counters must sum to exactly vcpus * ops.                            */
/* ------------------------------------------------------------------ */
static struct { volatile u32 lock; u32 pad; volatile u64 count; } PAGE_ALIGNED mutexes[16];

int w_mutex(u32 id)
{
    u32 n = nv();
    static const u32 nlocks[2] = {1, 16};
    u64 ops = g_cfg.ops;
    int ok = 1;
    char r[512];
    struct buf j = BUF_INIT(r);
    if (id == 0) {
        start_result(&j, "mutex");
        buf_kv_u64(&j, "ops_per_vcpu", ops);
        buf_str(&j, ",\"cases\":[");
    }
    for (u32 c = 0; c < 2; c++) {
        u32 m = nlocks[c];
        if (id == 0)
            for (u32 i = 0; i < 16; i++) mutexes[i].count = 0;
        barrier_all(id);
        u64 seed = 0x9E3779B97F4A7C15UL * (id + 1);
        mark_start(id);
        for (u64 i = 0; i < ops; i++) {
            seed = seed * 6364136223846793005UL + 1442695040888963407UL;
            u32 k = (u32)(seed >> 33) % m;
            spin_lock(&mutexes[k].lock);
            mutexes[k].count = mutexes[k].count + 1;
            spin_unlock(&mutexes[k].lock);
        }
        mark_end(id);
        barrier_all(id);
        if (id == 0) {
            u64 sum = 0;
            for (u32 i = 0; i < 16; i++) sum += mutexes[i].count;
            if (sum != ops * n) ok = 0;
            if (c) buf_char(&j, ',');
            buf_char(&j, '{');
            buf_kv_u64(&j, "locks", m);
            buf_kv_u64(&j, "total", sum);
            buf_kv_fix2(&j, "ops_per_s", rate_x100(ops * n, span_cycles()));
            buf_char(&j, '}');
        }
    }
    if (id) return 1;
    buf_char(&j, ']');
    buf_kv_u64(&j, "expected", ops * n);
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

/* ------------------------------------------------------------------ */
/* cpu: sysbench-style prime search by trial division; an event counts  */
/* the primes up to `prime`. vCPU 0 checks the count against a sieve.   */
/* ------------------------------------------------------------------ */
static u64 primes_trial(u64 max)
{
    u64 count = max >= 2 ? 1 : 0;
    for (u64 c = 3; c <= max; c += 2) {
        u64 l = 3;
        for (; l * l <= c; l += 2)
            if (c % l == 0) break;
        if (l * l > c) count++;
    }
    return count;
}

static u64 primes_sieve(u64 max)
{
    volatile u8 *s = (volatile u8 *)g_info.heap_start;
    for (u64 i = 0; i <= max; i++) s[i] = 1;
    u64 count = 0;
    for (u64 i = 2; i <= max; i++) {
        if (!s[i]) continue;
        count++;
        for (u64 k = i * i; k <= max; k += i) s[k] = 0;
    }
    return count;
}

static struct { volatile u32 bad; } PAGE_ALIGNED cpu_state;

int w_cpu(u32 id)
{
    u64 ev = g_cfg.events, max = g_cfg.prime, expect = 0;
    if (max + 1 > heap_size()) fail("cpu: prime too large for guest memory");
    if (id == 0) g_ucpu[0].val[2] = primes_sieve(max);
    barrier_all(id);
    expect = g_ucpu[0].val[2];
    mark_start(id);
    for (u64 e = 0; e < ev; e++)
        if (primes_trial(max) != expect) fetch_add32(&cpu_state.bad, 1);
    mark_end(id);
    barrier_all(id);
    if (id) return 1;
    int ok = cpu_state.bad == 0;
    char r[256];
    struct buf j = BUF_INIT(r);
    start_result(&j, "cpu");
    buf_kv_u64(&j, "events", ev * nv());
    buf_kv_u64(&j, "prime", max);
    buf_kv_u64(&j, "primes", expect);
    buf_kv_u64(&j, "bad_events", cpu_state.bad);
    buf_kv_fix2(&j, "events_per_s", rate_x100(ev * nv(), span_cycles()));
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Failure hooks for testing the VMM (not benchmarks):                  */
/*  fault:       vCPU 0 reads a supervisor page from ring 3 -> #PF ->   */
/*               the guest reports FATAL ... vCPU 0 ... and exits 3;     */
/*  triplefault: vCPU 0 loads an empty IDT and raises #UD -> shutdown   */
/*               (no RESULT line: the VMM must report the triple fault). */
/* ------------------------------------------------------------------ */
int w_fault(u32 id)
{
    if (id == 0) {
        volatile u64 *kernel = (volatile u64 *)0x100000;
        g_ucpu[0].val[0] = *kernel;
    }
    sys_idle();
}

int w_triplefault(u32 id)
{
    if (id == 0) sys_triple_fault();
    sys_idle();
}
