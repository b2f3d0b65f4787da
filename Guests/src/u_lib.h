/* u_lib.h - ring-3 support: formatting, UART and results port, locks,
 * barriers, syscalls, timing. Lives in the user part of the image; the kernel
 * also calls the formatting and UART helpers on its fatal paths. */
#ifndef U_LIB_H
#define U_LIB_H

#include "guest.h"

/* ---- text buffers ---- */
struct buf { char *p; u32 len, cap; };
#define BUF_INIT(arr) { (arr), 0, sizeof(arr) }
void buf_char(struct buf *b, char c);
void buf_str(struct buf *b, const char *s);
void buf_u64(struct buf *b, u64 v);
void buf_i64(struct buf *b, i64 v);
void buf_hex(struct buf *b, u64 v);
void buf_fix2(struct buf *b, u64 hundredths);   /* 12345 -> "123.45" */
void buf_term(struct buf *b);
/* JSON helpers: ,"key":value */
void buf_kv_u64(struct buf *b, const char *key, u64 v);
void buf_kv_str(struct buf *b, const char *key, const char *v);
void buf_kv_bool(struct buf *b, const char *key, int v);
void buf_kv_fix2(struct buf *b, const char *key, u64 hundredths);

/* ---- console ---- */
void uart_putc(char c);
void uart_puts(const char *s);
void print_line(struct buf *b);        /* whole line under the console lock */
void emit_result_raw(struct buf *b);   /* "RESULT <json>" to UART, "<json>\n" to port 0xE0; no lock */
void emit_result(struct buf *b);       /* same, under the console lock */

/* ---- synchronisation (each lock/barrier should sit on its own page) ---- */
static inline void spin_lock(volatile u32 *l)
{
    while (xchg32(l, 1)) while (*l) cpu_relax();
}
static inline void spin_unlock(volatile u32 *l) { barrier(); *l = 0; }

struct gbarrier { volatile u32 count; volatile u32 sense; } PAGE_ALIGNED;
/* Sense-reversing barrier for `n` participants; *local is the caller's sense. */
void barrier_wait(struct gbarrier *b, u32 n, u32 *local);
void barrier_all(u32 id);              /* every vCPU */

/* ---- syscalls ---- */
static inline u64 sys_send_ipi(u64 dest, u64 vec)
{
    u64 r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"((u64)SYS_SEND_IPI), "D"(dest), "S"(vec) : "memory");
    return r;
}
static inline u64 sys_ticks(void)
{
    u64 r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"((u64)SYS_TICKS) : "memory");
    return r;
}
static inline void sys_idle(void) NORETURN;
static inline void sys_idle(void)
{
    __asm__ volatile("int $0x80" ::"a"((u64)SYS_IDLE) : "memory");
    __builtin_unreachable();
}

static inline void sys_triple_fault(void) NORETURN;
static inline void sys_triple_fault(void)
{
    __asm__ volatile("int $0x80" ::"a"((u64)SYS_TRIPLE_FAULT) : "memory");
    __builtin_unreachable();
}

/* ---- time ---- */
u64 muldiv(u64 a, u64 b, u64 c);       /* a*b/c with a 128-bit intermediate */
u64 tsc_deadline(u64 seconds);         /* rdtsc() value `seconds` from now */
u64 cycles_to_us(u64 cycles);
/* units per second, in hundredths: count * tsc_hz * 100 / cycles */
u64 rate_x100(u64 count, u64 cycles);

void guest_exit(u32 code) NORETURN;    /* port 0xF4 */

/* ---- configuration from the command line (u_main.c) ---- */
struct config {
    char workload[16];
    u64 iters, ipis, trials, total_mib, ops, events, prime, timeout_s, status;
    u64 table_bits;                      /* wordcount, invindex: log2 of the hash table slots */
};
extern struct config g_cfg;

/* fail the run from any vCPU: report and exit (status 1) */
void fail(const char *what) NORETURN;

/* heap: [g_info.heap_start, g_info.heap_end) */
static inline u64 heap_size(void) { return g_info.heap_end - g_info.heap_start; }

#endif
