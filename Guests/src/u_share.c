/* u_share.c - the `pingpong` workload (vCPU placement, docs/migration.md): heavy true sharing
 * between pairs of vCPUs. vCPUs 2k and 2k+1 hand one counter back and forth on a page of their
 * own: each waits for its turn (the counter's parity), then increments it, `iters` times. Every
 * hand-off needs the other vCPU's write, so on two nodes every hand-off moves the page twice,
 * while on one node it is a cache line; an odd last vCPU only waits at the barriers. Reports
 * the hand-offs per second over the timed section (all pairs) and checks every count exactly. */
#include "u_lib.h"
#include "u_work.h"

static struct { volatile u64 count; } PAGE_ALIGNED pp[MAX_VCPUS / 2];

static void pp_fail(u32 id, u64 got, u64 want)
{
    char m[160];
    struct buf b = BUF_INIT(m);
    buf_str(&b, "pingpong: vCPU ");
    buf_u64(&b, id);
    buf_str(&b, " waited past the timeout for its turn at count ");
    buf_u64(&b, want);
    buf_str(&b, " (count ");
    buf_u64(&b, got);
    buf_char(&b, ')');
    buf_term(&b);
    fail(m);
}

int w_pingpong(u32 id)
{
    u32 n = g_info.vcpus, pairs = n / 2;
    u64 k = g_cfg.iters;
    if (id == 0)
        for (u32 p = 0; p < pairs; p++) pp[p].count = 0;
    barrier_all(id);
    u64 end = tsc_deadline(g_cfg.timeout_s);
    g_ucpu[id].t0 = rdtsc();
    if (id / 2 < pairs) {
        volatile u64 *c = &pp[id / 2].count;
        u64 role = id & 1;
        for (u64 i = 0; i < k; i++) {
            u64 want = 2 * i + role;   /* this vCPU's i-th turn */
            u64 v;
            while ((v = *c) != want) {
                if (v > want || rdtsc() > end) pp_fail(id, v, want);
                cpu_relax();
            }
            *c = want + 1;
        }
    }
    g_ucpu[id].t1 = rdtsc();
    barrier_all(id);
    if (id) return 1;
    u64 lo = ~0UL, hi = 0, total = 0;
    for (u32 i = 0; i < 2 * pairs; i++) {
        if (g_ucpu[i].t0 < lo) lo = g_ucpu[i].t0;
        if (g_ucpu[i].t1 > hi) hi = g_ucpu[i].t1;
    }
    int ok = 1;
    for (u32 p = 0; p < pairs; p++) {
        total += pp[p].count;
        if (pp[p].count != 2 * k) ok = 0;
    }
    char r[256];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", "pingpong");
    buf_kv_u64(&j, "vcpus", n);
    buf_kv_u64(&j, "pairs", pairs);
    buf_kv_u64(&j, "expected", 2 * k * pairs);
    buf_kv_u64(&j, "total", total);
    if (pairs) buf_kv_fix2(&j, "handoffs_per_s", rate_x100(total, hi > lo ? hi - lo : 1));
    buf_kv_bool(&j, "ok", ok && pairs > 0);
    buf_char(&j, '}');
    emit_result(&j);
    return ok && pairs > 0;
}
