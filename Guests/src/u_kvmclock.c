/* u_kvmclock.c - the `kvmclock` workload: KVM's paravirtual clock as a guest
 * kernel uses it, on every vCPU (docs/vmm.md, "kvmclock").
 *
 *   1. CPUID (ring 0): a KVM signature leaf "KVMKVMKVM\0\0\0" at a hypervisor
 *      base 0x40000000 + 0x100 n (Linux's search) whose next leaf has
 *      KVM_FEATURE_CLOCKSOURCE2 (EAX bit 3); without it the workload fails.
 *   2. WRMSR MSR_KVM_SYSTEM_TIME_NEW := the vCPU's pvclock structure | 1. The
 *      structures of all vCPUs share one page (as Linux's array does), so on
 *      a multi-node VM each node's KVM writes into a page the DSM moves.
 *   3. `iters` reads per vCPU (default 100000) under the version protocol (odd: being written; a
 *      changed version: retry): time = system_time + ((tsc - tsc_timestamp)
 *      << tsc_shift) * tsc_to_system_mul >> 32. Each vCPU's readings must
 *      never go back.
 *   4. Ordering across vCPUs: a token goes round the vCPUs `ops` times; its
 *      holder reads the clock and compares with the previous holder's
 *      reading. Passing the token orders the two readings in real time, so a
 *      reading below the previous one is a disagreement between the two
 *      vCPUs' clocks; the largest, between vCPUs of one node and of different
 *      nodes (CPUID 0x40000001 ECX), must stay within `bound` microseconds
 *      (default 1000). Across nodes a pass to a higher node takes latency +
 *      skew, a pass down latency - skew: half the difference of the least
 *      gap each way estimates the skew between the nodes' clocks (skew_ns,
 *      the higher node's minus the lower's), also within the bound.
 *   5. MSR_KVM_WALL_CLOCK_NEW on vCPU 0 and on the last vCPU: KVM writes the
 *      wall-clock time at kvmclock 0; it must be after 2020 and the same on
 *      both within 10 ms + bound.
 * vCPU 0 emits one RESULT line with the figures. */
#include "u_lib.h"
#include "u_work.h"
#include "kcall.h"

u64 g_kvmclock_bound_us;

#define MSR_KVM_WALL_CLOCK_NEW  0x4B564D00
#define MSR_KVM_SYSTEM_TIME_NEW 0x4B564D01
#define KVM_FEATURE_CLOCKSOURCE2 (1u << 3)
#define KVM_FEATURE_CLOCKSOURCE_STABLE (1u << 24)

struct pvclock {                      /* pvclock_vcpu_time_info */
    volatile u32 version;
    u32 pad0;
    volatile u64 tsc_timestamp;
    volatile u64 system_time;
    volatile u32 tsc_to_system_mul;
    volatile signed char tsc_shift;
    volatile u8 flags;
    u8 pad[2];
} __attribute__((packed));

struct wallclock { volatile u32 version, sec, nsec; };

static struct { struct pvclock c[MAX_VCPUS]; } g_pvclock PAGE_ALIGNED;
static struct { struct wallclock w[2]; } g_wall PAGE_ALIGNED;
static struct {
    volatile u64 turn;                /* vCPU turn % n holds the token */
    volatile u32 last_vcpu;           /* MAX_VCPUS: none yet */
    volatile u64 last_time;
    volatile u64 handoffs, cross_handoffs;
    volatile u64 max_back_same, max_back_cross;
    volatile i64 min_up, min_down;    /* least gap of a token pass to a higher / lower node */
} g_order PAGE_ALIGNED;
static struct { volatile u32 bad; char why[120]; volatile u64 retries, reads, base, features; u32 node[MAX_VCPUS]; } g_kc PAGE_ALIGNED;

/* CPUID as ring 0 sees it (ring 3 CPUID may run natively on this KVM). */
static u32 kcpuid(u32 leaf, u32 reg)
{
    u64 r, op = IO_CPUID, a = leaf, b = reg;
    __asm__ volatile("int $0x80"
                     : "=a"(r), "+D"(op), "+S"(a), "+d"(b)
                     : "a"((u64)SYS_IO)
                     : "rcx", "r8", "r9", "r10", "r11", "memory");
    return (u32)r;
}

static void kc_fail(const char *what, u64 v)
{
    if (xchg32(&g_kc.bad, 1)) return;
    struct buf b = BUF_INIT(g_kc.why);
    buf_str(&b, what);
    buf_str(&b, " (");
    buf_hex(&b, v);
    buf_str(&b, ")");
    buf_term(&b);
}

/* RDTSC after every earlier load (as Linux's rdtsc_ordered): a reading taken
 * after seeing the token is not a TSC value from before it. */
static inline u64 rdtsc_ordered(void)
{
    __asm__ volatile("lfence" ::: "memory");
    return rdtsc();
}

/* One reading under the version protocol; counts retries. */
static u64 kvmclock_read(const struct pvclock *p)
{
    for (;;) {
        u32 v = p->version;
        barrier();
        u64 ts = p->tsc_timestamp, st = p->system_time;
        u32 mul = p->tsc_to_system_mul;
        signed char shift = p->tsc_shift;
        u64 tsc = rdtsc_ordered();
        barrier();
        if ((v & 1) || v != p->version) { fetch_add64(&g_kc.retries, 1); cpu_relax(); continue; }
        u64 d = tsc > ts ? tsc - ts : 0;
        if (shift < 0) d >>= -shift; else d <<= shift;
        return st + (u64)(((unsigned __int128)d * mul) >> 32);
    }
}

static int find_kvm(void)
{
    for (u32 base = 0x40000000; base < 0x40010000; base += 0x100) {
        if (kcpuid(base, 1) == 0x4B4D564B && kcpuid(base, 2) == 0x564B4D56 && kcpuid(base, 3) == 0x4D &&
            kcpuid(base, 0) >= base + 1) {
            g_kc.base = base;
            g_kc.features = kcpuid(base + 1, 0);
            return 1;
        }
    }
    return 0;
}

int w_kvmclock(u32 id)
{
    u32 n = g_info.vcpus, last = n - 1;
    if (!find_kvm()) { if (id == 0) fail("kvmclock not offered: no KVM signature leaf at 0x40000000 + 0x100 n (CPUID, ring 0)"); return 0; }
    if (!(g_kc.features & KVM_FEATURE_CLOCKSOURCE2)) {
        if (id == 0) fail("kvmclock not offered: the KVM leaf has no KVM_FEATURE_CLOCKSOURCE2");
        return 0;
    }
    if (id == 0) { g_order.last_vcpu = MAX_VCPUS; g_order.min_up = g_order.min_down = 0x7FFFFFFFFFFFFFFFL; }
    struct pvclock *me = &g_pvclock.c[id];
    if (kcall(KC_WRMSR, MSR_KVM_SYSTEM_TIME_NEW, (u64)me | 1)) kc_fail("wrmsr MSR_KVM_SYSTEM_TIME_NEW raised #GP on vCPU", id);
    if (id == 0 || id == last) {
        struct wallclock *w = &g_wall.w[id == 0 ? 0 : 1];
        if (kcall(KC_WRMSR, MSR_KVM_WALL_CLOCK_NEW, (u64)w)) kc_fail("wrmsr MSR_KVM_WALL_CLOCK_NEW raised #GP on vCPU", id);
    }
    u64 end = tsc_deadline(g_cfg.timeout_s);
    while ((me->version == 0 || me->tsc_to_system_mul == 0) && rdtsc() < end) cpu_relax();
    if (me->version == 0 || me->tsc_to_system_mul == 0) kc_fail("KVM never wrote this vCPU's pvclock structure: vCPU", id);
    barrier_all(id);

    /* 3. monotonic per vCPU */
    if (!g_kc.bad) {
        u64 prev = kvmclock_read(me);
        for (u64 i = 0; i < g_cfg.iters; i++) {
            u64 t = kvmclock_read(me);
            if (t < prev) { kc_fail("kvmclock went back on one vCPU by ns", prev - t); break; }
            prev = t;
        }
        fetch_add64(&g_kc.reads, g_cfg.iters + 1);
    }
    barrier_all(id);

    /* 4. ordering across vCPUs: a token passed round the vCPUs */
    g_kc.node[id] = kcpuid(0x40000001, 2);    /* this vCPU's node (GiantVM leaf) */
    barrier_all(id);
    if (!g_kc.bad && n > 1) {
        u64 until = tsc_deadline(g_cfg.timeout_s);
        for (u64 i = 0; i < g_cfg.ops; i++) {
            u64 mine = i * n + id;
            while (g_order.turn != mine && rdtsc() < until) cpu_relax();
            if (g_order.turn != mine) { kc_fail("the token did not come round within the timeout: vCPU", id); break; }
            u64 t = kvmclock_read(me);
            u32 pv = g_order.last_vcpu;
            if (pv < MAX_VCPUS && pv != id) {
                int cross = g_kc.node[pv] != g_kc.node[id];
                g_order.handoffs++;
                if (cross) {
                    g_order.cross_handoffs++;
                    i64 gap = (i64)(t - g_order.last_time);
                    if (g_kc.node[pv] < g_kc.node[id] && gap < g_order.min_up) g_order.min_up = gap;
                    if (g_kc.node[pv] > g_kc.node[id] && gap < g_order.min_down) g_order.min_down = gap;
                }
                if (t < g_order.last_time) {
                    u64 back = g_order.last_time - t;
                    if (cross && back > g_order.max_back_cross) g_order.max_back_cross = back;
                    if (!cross && back > g_order.max_back_same) g_order.max_back_same = back;
                }
            }
            g_order.last_time = t;
            g_order.last_vcpu = id;
            barrier();
            g_order.turn = mine + 1;
        }
    }
    barrier_all(id);
    if (id != 0) return 1;

    u64 bound = g_kvmclock_bound_us * 1000;
    u64 back = g_order.max_back_same > g_order.max_back_cross ? g_order.max_back_same : g_order.max_back_cross;
    if (!g_kc.bad && back > bound) kc_fail("kvmclock readings of two vCPUs disagree by more than the bound: ns", back);
    /* the skew between the nodes' clocks: a pass up takes latency + skew, a pass
     * down latency - skew; the least of each (latency at its floor) give it */
    int both = g_order.min_up != 0x7FFFFFFFFFFFFFFFL && g_order.min_down != 0x7FFFFFFFFFFFFFFFL;
    i64 skew = both ? (g_order.min_up - g_order.min_down) / 2 : 0;
    u64 skew_abs = skew < 0 ? (u64)-skew : (u64)skew;
    if (!g_kc.bad && skew_abs > bound) kc_fail("the nodes' kvmclocks are skewed by more than the bound: ns", skew_abs);
    struct wallclock *w0 = &g_wall.w[0], *w1 = &g_wall.w[1];
    u64 wall0 = (u64)w0->sec * 1000000000UL + w0->nsec;
    u64 wall1 = last ? (u64)w1->sec * 1000000000UL + w1->nsec : wall0;
    u64 wdiff = wall0 > wall1 ? wall0 - wall1 : wall1 - wall0;
    if (!g_kc.bad && ((w0->version & 1) || w0->sec < 1577836800u || w0->sec > 4102444800u))
        kc_fail("the wall clock KVM wrote is not a plausible time (seconds since 1970)", w0->sec);
    if (!g_kc.bad && wdiff > 10000000UL + bound) kc_fail("the wall clock differs between vCPU 0 and the last vCPU by ns", wdiff);
    if (!g_kc.bad && n > 1 && !g_order.handoffs) kc_fail("the token never passed between vCPUs", 0);

    char r[600];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", "kvmclock");
    buf_kv_u64(&j, "vcpus", n);
    buf_kv_u64(&j, "nodes", g_info.nodes);
    buf_kv_u64(&j, "kvm_base", g_kc.base);
    buf_kv_u64(&j, "kvm_features", g_kc.features);
    buf_kv_bool(&j, "stable_bit", (g_kc.features & KVM_FEATURE_CLOCKSOURCE_STABLE) != 0);
    buf_kv_u64(&j, "pvclock_flags", g_pvclock.c[0].flags);
    buf_kv_u64(&j, "reads", g_kc.reads);
    buf_kv_u64(&j, "retries", g_kc.retries);
    buf_kv_u64(&j, "handoffs", g_order.handoffs);
    buf_kv_u64(&j, "cross_node_handoffs", g_order.cross_handoffs);
    buf_kv_u64(&j, "max_back_same_node_ns", g_order.max_back_same);
    buf_kv_u64(&j, "max_back_cross_node_ns", g_order.max_back_cross);
    if (both) {
        buf_str(&j, ",\"min_gap_up_ns\":"); buf_i64(&j, g_order.min_up);
        buf_str(&j, ",\"min_gap_down_ns\":"); buf_i64(&j, g_order.min_down);
        buf_str(&j, ",\"skew_ns\":"); buf_i64(&j, skew);
    }
    buf_kv_u64(&j, "bound_ns", bound);
    buf_kv_u64(&j, "wall_sec", w0->sec);
    buf_kv_u64(&j, "wall_diff_ns", wdiff);
    buf_kv_u64(&j, "kvmclock_ns", kvmclock_read(me));
    if (g_kc.bad) buf_kv_str(&j, "error", g_kc.why);
    buf_kv_bool(&j, "ok", !g_kc.bad);
    buf_char(&j, '}');
    emit_result(&j);
    return !g_kc.bad;
}
