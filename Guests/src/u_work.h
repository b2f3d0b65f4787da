/* u_work.h - the workloads. Every vCPU calls run(id); the return value of
 * vCPU 0 decides the exit status, and vCPU 0 emits the one RESULT line. */
#ifndef U_WORK_H
#define U_WORK_H
#include "guest.h"
int w_hello(u32 id);
int w_ticks(u32 id);             /* u_migrate.c */
extern u64 g_ticks_seconds;
int w_pingpong(u32 id);          /* u_share.c */
extern u64 g_falseshare_ms;
int w_ipi(u32 id);
int w_counter(u32 id);
int w_litmus(u32 id);
int w_memory(u32 id);
int w_mutex(u32 id);
int w_cpu(u32 id);
int w_fault(u32 id);
int w_triplefault(u32 id);
int w_wordcount(u32 id);    /* u_data.c */
int w_invindex(u32 id);
int w_seqread(u32 id);
int w_modwrite(u32 id);
int w_pc(u32 id);        /* u_pc.c */
int w_pcreset(u32 id);
int w_pcoff(u32 id);
int w_cpuid(u32 id);
int w_msrgp(u32 id);
/* u_virtio.c: virtio-mmio devices, and their command-line options */
int w_readfile(u32 id);
int w_disk_verify(u32 id);
int w_net_echo(u32 id);
int w_virtio_hostile(u32 id);
u64 *virtio_option(const char *key);
void virtio_defaults(void);
int w_apic(u32 id);      /* u_apic.c */
int w_ioapic(u32 id);
int w_extint(u32 id);
int w_partial(u32 id);
/* u_tso.c: relaxed (multiple-writer) memory */
int w_falseshare(u32 id);
int w_rmutex(u32 id);
int w_rlitmus(u32 id);
int w_rlitmus_fence(u32 id);
int w_kvmclock(u32 id);     /* u_kvmclock.c */
extern u64 g_kvmclock_bound_us;
#endif
