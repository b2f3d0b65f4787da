/* u_migrate.c - the `ticks` workload (live vCPU migration, docs/migration.md): every vCPU spins
 * for `seconds` seconds and counts the APIC timer ticks it takes meanwhile. A vCPU moved between
 * nodes during the run must keep ticking: each must take at least a quarter of seconds * TIMER_HZ
 * (a loaded host drops late ticks; a timer lost in a move stops at once). Per-vCPU counts are
 * reported so a test can compare the moved vCPU with the others. */
#include "u_lib.h"
#include "u_work.h"

u64 g_ticks_seconds;

int w_ticks(u32 id)
{
    u64 k0 = g_ucpu[id].ticks;
    u64 end = tsc_deadline(g_ticks_seconds);
    while (rdtsc() < end) cpu_relax();
    g_ucpu[id].val[0] = g_ucpu[id].ticks - k0;
    barrier_all(id);
    if (id) return 1;
    u64 want = g_ticks_seconds * TIMER_HZ / 4, tmin = ~0UL, tmax = 0;
    for (u32 i = 0; i < g_info.vcpus; i++) {
        u64 t = g_ucpu[i].val[0];
        if (t < tmin) tmin = t;
        if (t > tmax) tmax = t;
    }
    int ok = tmin >= want;
    char r[256];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", "ticks");
    buf_kv_u64(&j, "vcpus", g_info.vcpus);
    buf_kv_u64(&j, "seconds", g_ticks_seconds);
    buf_kv_u64(&j, "want_min", want);
    buf_kv_u64(&j, "ticks_min", tmin);
    buf_kv_u64(&j, "ticks_max", tmax);
    buf_str(&j, ",\"per_vcpu\":[");
    for (u32 i = 0; i < g_info.vcpus; i++) {
        if (i) buf_char(&j, ',');
        buf_u64(&j, g_ucpu[i].val[0]);
    }
    buf_char(&j, ']');
    buf_kv_bool(&j, "ok", ok);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}
