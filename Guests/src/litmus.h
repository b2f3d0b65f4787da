/* litmus.h — the x86-TSO litmus tests shared by `litmus` (u_work.c, SC memory) and `rlitmus`
 * (u_tso.c, relaxed memory): the tests, their thread counts, a group's locations, how a trial's
 * outcome is read and named, and which outcomes x86-TSO forbids. */
#ifndef LITMUS_H
#define LITMUS_H
#include "u_lib.h"

enum { T_MP, T_SB, T_LB, T_22W, T_IRIW, NTESTS };
static const char *const litmus_names[NTESTS] = {"MP", "SB", "LB", "2+2W", "IRIW"};
static const u32 litmus_threads[NTESTS] = {2, 2, 2, 2, 4};

/* one group's locations: x[t], y[t] per trial, res[k][t] what role k read */
struct lgroup { volatile u64 *x, *y; volatile u8 *res[4]; };

static inline u64 pages_for(u64 bytes) { return (bytes + PAGE - 1) & ~(u64)(PAGE - 1); }

/* outcome index of trial t */
static inline u32 litmus_outcome(u32 test, struct lgroup *L, u64 t)
{
    switch (test) {
    case T_MP: return L->res[1][t];                              /* r(y) r(x) */
    case T_SB: return (u32)L->res[0][t] << 1 | L->res[1][t];     /* r0(y) r1(x) */
    case T_LB: return (u32)L->res[0][t] << 1 | L->res[1][t];     /* r0(x) r1(y) */
    case T_22W: return (u32)(L->x[t] - 1) << 1 | (u32)(L->y[t] - 1); /* final x, y */
    default: return (u32)L->res[2][t] << 2 | L->res[3][t];       /* (x y) (y x) */
    }
}

/* whether x86-TSO forbids outcome o; `fenced`: an mfence between each store and load, which
 * forbids SB's 00 too */
static inline int litmus_forbidden(u32 test, u32 o, int fenced)
{
    switch (test) {
    case T_MP: return o == 2;          /* saw y=1 but x=0 */
    case T_SB: return fenced && o == 0; /* r0=r1=0: the store buffer, unless fenced */
    case T_LB: return o == 3;          /* both loads saw the other's later store */
    case T_22W: return o == 0;         /* final x=1, y=1 */
    default: return o == 10;           /* readers disagree on the order: 10 10 */
    }
}

/* u_litmus.c: running the trials (see there for gap=). vCPU 0 arms a test before the barrier that
 * starts it; every member then runs its role's trials on its group's locations (`fence`, when not
 * 0, is called where x86 would need mfence); vCPU 0 prints a progress line per test. */
extern u64 g_litmus_gap_us;   /* gap=N (µs): trials on a shared clock; 0: a group barrier per trial */
void litmus_arm(u32 test);
void litmus_trials(u32 test, u32 role, u32 id, struct lgroup *L, u64 trials, struct gbarrier *gb, void (*fence)(void));
u64 litmus_late(u32 test);    /* trials started more than a whole gap after their slot */
void litmus_progress(const char *workload, u32 test, u64 trials, u64 *counts, int fenced);

static inline void litmus_outcome_name(struct buf *b, u32 test, u32 o)
{
    u32 bits = test == T_IRIW ? 4 : 2;
    for (int i = (int)bits - 1; i >= 0; i--)
        buf_char(b, (char)('0' + ((o >> i) & 1) + (test == T_22W ? 1 : 0)));
}
#endif
