/* u_litmus.c - how a litmus trial runs, shared by `litmus` (u_work.c, sequentially consistent
 * memory) and `rlitmus` / `rlitmus-fence` (u_tso.c, relaxed memory).
 *
 * A trial needs its group's members to start at about the same moment. Two ways:
 *
 *   gap=0 (default)  a group barrier before every trial (struct gbarrier: one page). Across nodes
 *                    that page moves between the nodes several times per trial (every arrival is a
 *                    write, every spinning reader re-fetches it after each write), and on dsm-tso
 *                    every move of an sc page away from a node is a release point, so no relaxed
 *                    write stays buffered from one trial to the next.
 *   gap=N            a shared clock: trial t starts at T0 + t*N microseconds of the TSC (one clock
 *                    for every vCPU of the VM: the nodes' guest TSCs are synchronised), each member
 *                    adding a pseudo-random stagger of up to N/4 so that the members' accesses
 *                    interleave differently from trial to trial. No memory is shared to start a
 *                    trial, so a trial costs only the accesses of the test itself, and nothing but
 *                    the test's own accesses (and dsm-tso's flush interval) moves between the
 *                    nodes: a relaxed store can still be buffered when the other node loads.
 *                    A member whose accesses take longer than the gap falls behind and starts its
 *                    next trials at once until it catches up; such trials still count (every trial
 *                    uses fresh locations, so an outcome is valid whatever the timing) and are
 *                    reported as `late` (started more than a whole gap after their slot). */
#include "u_lib.h"
#include "litmus.h"

u64 g_litmus_gap_us;

static struct {
    volatile u64 t0;             /* TSC of the current test's first slot */
    volatile u32 late[NTESTS];   /* trials started more than a gap late, all members */
} PAGE_ALIGNED lclock;

/* Start-up margin: the barrier after litmus_arm crosses nodes; its members leave it within a few
 * milliseconds of each other. */
#define ARM_MARGIN_MS 100

void litmus_arm(u32 test)
{
    if (g_litmus_gap_us > 1000000) fail("litmus: gap=N is in microseconds and at most 1000000");
    lclock.late[test] = 0;
    lclock.t0 = rdtsc() + muldiv(ARM_MARGIN_MS, g_info.tsc_hz, 1000);
}

u64 litmus_late(u32 test) { return lclock.late[test]; }

/* the start of member `role`'s trial t: its slot plus a stagger of up to a quarter gap */
static u64 slot(u64 t0, u64 gap, u64 t, u32 role)
{
    u64 h = (t + 1) * 0x9E3779B97F4A7C15UL ^ (u64)(role + 1) * 0xC2B2AE3D27D4EB4FUL;
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9UL;
    h ^= h >> 32;
    return t0 + t * gap + (gap >= 4 ? h % (gap / 4) : 0);
}

void litmus_trials(u32 test, u32 role, u32 id, struct lgroup *L, u64 trials, struct gbarrier *gb, void (*fence)(void))
{
    u32 th = litmus_threads[test];
    u32 *sense = &g_ucpu[id].gsense;
    u64 gap = muldiv(g_litmus_gap_us, g_info.tsc_hz, 1000000), t0 = lclock.t0;
    u32 late = 0;
#define F() do { if (fence) fence(); } while (0)
    for (u64 t = 0; t < trials; t++) {
        volatile u64 *x = &L->x[t], *y = &L->y[t];
        u64 a, c;
        if (gap) {
            u64 s = slot(t0, gap, t, role), now;
            while ((now = rdtsc()) < s) cpu_relax();
            if (now - s > gap) late++;
        } else {
            barrier_wait(gb, th, sense);
        }
        switch (test) {
        case T_MP:
            if (role == 0) { *x = 1; F(); *y = 1; }
            else { a = *y; F(); c = *x; L->res[1][t] = (u8)(a << 1 | c); }
            break;
        case T_SB:
            if (role == 0) { *x = 1; F(); a = *y; L->res[0][t] = (u8)a; }
            else { *y = 1; F(); c = *x; L->res[1][t] = (u8)c; }
            break;
        case T_LB:
            if (role == 0) { a = *x; F(); *y = 1; L->res[0][t] = (u8)a; }
            else { c = *y; F(); *x = 1; L->res[1][t] = (u8)c; }
            break;
        case T_22W:
            if (role == 0) { *x = 1; F(); *y = 2; }
            else { *y = 1; F(); *x = 2; }
            break;
        default:
            if (role == 0) { *x = 1; F(); }
            else if (role == 1) { *y = 1; F(); }
            else if (role == 2) { a = *x; F(); c = *y; L->res[2][t] = (u8)(a << 1 | c); }
            else { a = *y; F(); c = *x; L->res[3][t] = (u8)(a << 1 | c); }
            break;
        }
    }
#undef F
    if (late) fetch_add32(&lclock.late[test], late);
}

void litmus_progress(const char *workload, u32 test, u64 trials, u64 *counts, int fenced)
{
    char l[160];
    struct buf b = BUF_INIT(l);
    u64 f = 0;
    for (u32 o = 0; o < 16; o++)
        if (litmus_forbidden(test, o, fenced)) f += counts[o];
    buf_str(&b, workload);
    buf_str(&b, ": ");
    buf_str(&b, litmus_names[test]);
    buf_str(&b, " done: ");
    buf_u64(&b, trials);
    buf_str(&b, " trials, ");
    buf_u64(&b, f);
    buf_str(&b, " forbidden, ");
    buf_u64(&b, lclock.late[test]);
    buf_str(&b, " late (gap=");
    buf_u64(&b, g_litmus_gap_us);
    buf_str(&b, "us)");
    print_line(&b);
}
