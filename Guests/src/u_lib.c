/* u_lib.c - ring-3 support library (see u_lib.h). */
#include "u_lib.h"

struct ginfo g_info;
struct ucpu g_ucpu[MAX_VCPUS];

/* Console lock and the global barrier, each on its own page. */
static struct { volatile u32 v; } PAGE_ALIGNED console_lock;
static struct gbarrier all_barrier;

void *memset(void *d, int c, unsigned long n)
{
    u8 *p = d;
    while (n--) *p++ = (u8)c;
    return d;
}

void *memcpy(void *d, const void *s, unsigned long n)
{
    u8 *p = d;
    const u8 *q = s;
    while (n--) *p++ = *q++;
    return d;
}

void buf_char(struct buf *b, char c)
{
    if (b->len + 1 < b->cap) b->p[b->len++] = c;
}

void buf_str(struct buf *b, const char *s)
{
    while (*s) buf_char(b, *s++);
}

void buf_u64(struct buf *b, u64 v)
{
    char t[24];
    int i = 0;
    do { t[i++] = (char)('0' + v % 10); v /= 10; } while (v);
    while (i) buf_char(b, t[--i]);
}

void buf_i64(struct buf *b, i64 v)
{
    if (v < 0) { buf_char(b, '-'); buf_u64(b, (u64)-v); }
    else buf_u64(b, (u64)v);
}

void buf_hex(struct buf *b, u64 v)
{
    buf_str(b, "0x");
    int started = 0;
    for (int s = 60; s >= 0; s -= 4) {
        u32 d = (v >> s) & 0xF;
        if (d || started || s == 0) { buf_char(b, "0123456789abcdef"[d]); started = 1; }
    }
}

void buf_fix2(struct buf *b, u64 h)
{
    buf_u64(b, h / 100);
    buf_char(b, '.');
    buf_char(b, (char)('0' + (h / 10) % 10));
    buf_char(b, (char)('0' + h % 10));
}

void buf_term(struct buf *b) { b->p[b->len < b->cap ? b->len : b->cap - 1] = 0; }

static void key(struct buf *b, const char *k)
{
    if (b->len && b->p[b->len - 1] != '{') buf_char(b, ',');
    buf_char(b, '"');
    buf_str(b, k);
    buf_str(b, "\":");
}
void buf_kv_u64(struct buf *b, const char *k, u64 v) { key(b, k); buf_u64(b, v); }
void buf_kv_fix2(struct buf *b, const char *k, u64 v) { key(b, k); buf_fix2(b, v); }
void buf_kv_bool(struct buf *b, const char *k, int v) { key(b, k); buf_str(b, v ? "true" : "false"); }
void buf_kv_str(struct buf *b, const char *k, const char *v)
{
    key(b, k);
    buf_char(b, '"');
    for (; *v; v++) {
        if (*v == '"' || *v == '\\') buf_char(b, '\\');
        if ((u8)*v >= 0x20) buf_char(b, *v);
    }
    buf_char(b, '"');
}

/* 16550: poll LSR.THRE (bit 5) before each byte. */
void uart_putc(char c)
{
    while (!(inb(COM1 + 5) & 0x20)) cpu_relax();
    outb(COM1, (u8)c);
}

void uart_puts(const char *s)
{
    while (*s) uart_putc(*s++);
}

static void uart_write(const char *s, u32 n)
{
    for (u32 i = 0; i < n; i++) uart_putc(s[i]);
}

void print_line(struct buf *b)
{
    spin_lock(&console_lock.v);
    uart_write(b->p, b->len);
    uart_putc('\n');
    spin_unlock(&console_lock.v);
}

void emit_result_raw(struct buf *b)
{
    uart_puts("RESULT ");
    uart_write(b->p, b->len);
    uart_putc('\n');
    for (u32 i = 0; i < b->len; i++) outb(PORT_RESULTS, (u8)b->p[i]);
    outb(PORT_RESULTS, '\n');
}

void emit_result(struct buf *b)
{
    spin_lock(&console_lock.v);
    emit_result_raw(b);
    spin_unlock(&console_lock.v);
}

void barrier_wait(struct gbarrier *b, u32 n, u32 *local)
{
    u32 s = !*local;
    *local = s;
    if (fetch_add32(&b->count, 1) == n - 1) {
        b->count = 0;
        barrier();
        b->sense = s;
    } else {
        while (b->sense != s) cpu_relax();
    }
}

void barrier_all(u32 id)
{
    barrier_wait(&all_barrier, g_info.vcpus, &g_ucpu[id].sense);
}

u64 muldiv(u64 a, u64 b, u64 c)
{
    u64 hi, lo, q, r;
    __asm__("mulq %3" : "=a"(lo), "=d"(hi) : "a"(a), "rm"(b));
    if (c == 0) return 0;
    if (hi >= c) return ~0UL;                 /* quotient would overflow */
    __asm__("divq %4" : "=a"(q), "=d"(r) : "a"(lo), "d"(hi), "rm"(c));
    (void)r;
    return q;
}

u64 tsc_deadline(u64 seconds) { return rdtsc() + g_info.tsc_hz * seconds; }
u64 cycles_to_us(u64 cycles) { return muldiv(cycles, 1000000, g_info.tsc_hz); }
u64 rate_x100(u64 count, u64 cycles) { return cycles ? muldiv(count * 100, g_info.tsc_hz, cycles) : 0; }

void guest_exit(u32 code)
{
    outl(PORT_EXIT, code);
    /* isa-debug-exit ends the VM synchronously; if it is missing, park */
    sys_idle();
}

void fail(const char *what)
{
    char line[512];
    struct buf b = BUF_INIT(line);
    buf_char(&b, '{');
    buf_kv_str(&b, "workload", g_cfg.workload);
    buf_kv_u64(&b, "vcpus", g_info.vcpus);
    buf_kv_bool(&b, "ok", 0);
    buf_kv_str(&b, "error", what);
    buf_char(&b, '}');
    spin_lock(&console_lock.v);
    uart_puts("FAIL: ");
    uart_puts(what);
    uart_putc('\n');
    emit_result_raw(&b);
    guest_exit(1);
}
