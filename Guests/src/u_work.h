/* u_work.h - the workloads. Every vCPU calls run(id); the return value of
 * vCPU 0 decides the exit status, and vCPU 0 emits the one RESULT line. */
#ifndef U_WORK_H
#define U_WORK_H
#include "guest.h"
int w_hello(u32 id);
int w_ticks(u32 id);             /* u_migrate.c */
extern u64 g_ticks_seconds;
int w_ipi(u32 id);
int w_counter(u32 id);
int w_litmus(u32 id);
int w_memory(u32 id);
int w_mutex(u32 id);
int w_cpu(u32 id);
int w_fault(u32 id);
int w_triplefault(u32 id);
#endif
