/* u_main.c - ring-3 entry of every vCPU: command line, TSC frequency,
 * workload dispatch, summary and exit. */
#include "u_lib.h"
#include "u_work.h"
#include "litmus.h"

u8 u_stacks[MAX_VCPUS][USTACK_SIZE] PAGE_ALIGNED;

struct config g_cfg;

static const struct workload {
    const char *name;
    int (*run)(u32 id);
} workloads[] = {
    {"hello", w_hello}, {"ipi", w_ipi}, {"counter", w_counter}, {"litmus", w_litmus},
    {"memory", w_memory}, {"mutex", w_mutex}, {"cpu", w_cpu},
    {"fault", w_fault}, {"triplefault", w_triplefault},
    {"wordcount", w_wordcount}, {"invindex", w_invindex}, {"seqread", w_seqread}, {"modwrite", w_modwrite},   /* u_data.c */
    {"pc", w_pc}, {"pcreset", w_pcreset}, {"pcoff", w_pcoff},
    {"cpuid", w_cpuid}, {"msrgp", w_msrgp},
    {"readfile", w_readfile}, {"disk-verify", w_disk_verify}, {"net-echo", w_net_echo}, {"virtio-hostile", w_virtio_hostile},
    {"apic", w_apic}, {"ioapic", w_ioapic}, {"extint", w_extint}, {"partial", w_partial},
    {"falseshare", w_falseshare}, {"rmutex", w_rmutex}, {"rlitmus", w_rlitmus}, {"rlitmus-fence", w_rlitmus_fence},
    {"ticks", w_ticks}, {"kvmclock", w_kvmclock}, {"pingpong", w_pingpong},
};
#define NWORKLOADS (sizeof(workloads) / sizeof(workloads[0]))

static const struct option {
    const char *key;
    u64 *dst;
    u64 def;
} options[] = {
    {"iters", &g_cfg.iters, 100000},     /* counter: increments per vCPU */
    {"ipis", &g_cfg.ipis, 100},          /* ipi: IPIs per ordered vCPU pair */
    {"trials", &g_cfg.trials, 1000},     /* litmus: trials per test and group */
    {"total", &g_cfg.total_mib, 64},     /* memory: MiB per vCPU per case */
    {"ops", &g_cfg.ops, 20000},          /* mutex: lock/unlock pairs per vCPU per case */
    {"events", &g_cfg.events, 20},       /* cpu: events per vCPU */
    {"prime", &g_cfg.prime, 10000},      /* cpu: primes up to this per event */
    {"timeout", &g_cfg.timeout_s, 20},   /* seconds any wait may take before failing */
    {"table", &g_cfg.table_bits, 16},    /* wordcount, invindex: log2 of hash table slots */
    {"status", &g_cfg.status, 5},        /* partial: the isa-debug-exit value */
    {"seconds", &g_ticks_seconds, 3},    /* ticks: seconds each vCPU spins (u_migrate.c) */
    {"ms", &g_falseshare_ms, 0},         /* falseshare: ms each vCPU increments (0: iters each) */
    {"bound", &g_kvmclock_bound_us, 1000}, /* kvmclock: largest disagreement between vCPUs (us) */
    {"gap", &g_litmus_gap_us, 0},        /* litmus, rlitmus: µs between trials on a shared clock (0: barrier per trial; u_litmus.c) */
};
#define NOPTIONS (sizeof(options) / sizeof(options[0]))

static int streq(const char *a, const char *b)
{
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

/* Parse "<workload> [key=value ...]". Every vCPU parses the same text;
 * only vCPU 0 reports errors (the others are still before the first
 * barrier when it ends the VM). Returns the workload, or 0 on error. */
static const struct workload *parse(u32 id)
{
    for (u32 i = 0; i < NOPTIONS; i++) *options[i].dst = options[i].def;
    virtio_defaults();
    const char *p = g_info.cmdline;
    char tok[64];
    const struct workload *w = 0;
    int first = 1;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (!*p) break;
        u32 n = 0;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            if (n + 1 < sizeof(tok)) tok[n++] = *p;
            p++;
        }
        tok[n] = 0;
        if (first) {
            first = 0;
            u32 k = 0;
            for (; k + 1 < sizeof(g_cfg.workload) && tok[k]; k++) g_cfg.workload[k] = tok[k];
            g_cfg.workload[k] = 0;
            for (u32 i = 0; i < NWORKLOADS; i++)
                if (streq(tok, workloads[i].name)) w = &workloads[i];
            if (!w) {
                if (id) return 0;
                char m[160];
                struct buf b = BUF_INIT(m);
                buf_str(&b, "unknown workload '");
                buf_str(&b, tok);
                buf_str(&b, "' (expected hello, ipi, counter, litmus, memory, mutex, cpu, wordcount, invindex, seqread or modwrite)");
                buf_term(&b);
                fail(m);
            }
            continue;
        }
        char *eq = tok;
        while (*eq && *eq != '=') eq++;
        u64 *dst = 0;
        int has_eq = *eq == '=';
        if (has_eq) {
            *eq = 0;
            for (u32 i = 0; i < NOPTIONS; i++)
                if (streq(tok, options[i].key)) dst = options[i].dst;
            if (!dst) dst = virtio_option(tok);
        }
        u64 v = 0;
        int good = dst && has_eq && eq[1];
        const char *q = has_eq ? eq + 1 : eq;
        int hex = good && q[0] == '0' && (q[1] == 'x' || q[1] == 'X') && q[2];
        for (q += hex ? 2 : 0; good && *q; q++) {
            u64 d = *q >= '0' && *q <= '9' ? (u64)(*q - '0') : hex && (*q | 32) >= 'a' && (*q | 32) <= 'f' ? (u64)((*q | 32) - 'a' + 10) : 99;
            if (d >= (hex ? 16u : 10u) || v > 100000000000UL) good = 0;
            else v = v * (hex ? 16 : 10) + d;
        }
        if (!good) {
            if (id) return 0;
            char m[200];
            struct buf b = BUF_INIT(m);
            buf_str(&b, "bad option '");
            buf_str(&b, tok);
            if (has_eq) { buf_char(&b, '='); buf_str(&b, eq + 1); }
            buf_str(&b, "' (expected key=<decimal or 0xhex> with key one of iters, ipis, trials, total, ops, events, prime, timeout, table, seconds, ms, or a virtio option of docs/virtio.md)");
            buf_term(&b);
            fail(m);
        }
        *dst = v;
    }
    if (!w && !id) fail("empty command line: expected '<workload> [key=value ...]' with workload hello, ipi, counter, litmus, memory, mutex or cpu");
    if (!g_cfg.timeout_s) g_cfg.timeout_s = 1;
    return w;
}

/* One PIT channel-2 one-shot (mode 0) of `count` input clocks; returns TSC
 * cycles per second, or 0 when the PIT does not answer. */
static u64 pit_once(u32 count)
{
    u8 v = inb(0x61);
    outb(0x61, (u8)((v & ~0x02) | 0x01));    /* gate on, speaker off */
    outb(0x43, 0xB0);                        /* ch 2, lo/hi, mode 0, binary */
    outb(0x42, count & 0xFF);
    outb(0x42, (u8)(count >> 8));
    u64 t0 = rdtsc(), loops = 0;
    while (!(inb(0x61) & 0x20) && ++loops < 100000000) cpu_relax();
    u64 t1 = rdtsc();
    if (loops <= 10 || loops >= 100000000) return 0;
    return muldiv(t1 - t0, 1193182, count);
}

/* TSC frequency when CPUID did not give one (QEMU TCG): median of three 30 ms
 * PIT measurements (a vCPU descheduled mid-measurement skews one of them);
 * if the PIT does not answer, count APIC timer ticks. */
static void calibrate_tsc(void)
{
    u64 m[3];
    for (int i = 0; i < 3; i++) {
        m[i] = pit_once(35796);              /* 30 ms at 1.193182 MHz */
        for (int k = i; k > 0 && m[k] < m[k - 1]; k--) { u64 t = m[k]; m[k] = m[k - 1]; m[k - 1] = t; }
    }
    if (m[1] > 10000000) {
        g_info.tsc_hz = m[1];
        g_info.tsc_src = 4;
        return;
    }
    /* APIC timer ticks at TIMER_HZ if the bus frequency guess was right */
    u64 k0 = sys_ticks();
    while (sys_ticks() == k0) cpu_relax();
    u64 a = rdtsc();
    k0 = sys_ticks();
    while (sys_ticks() < k0 + 10) cpu_relax();
    g_info.tsc_hz = (rdtsc() - a) * TIMER_HZ / 10;
    g_info.tsc_src = 5;
}

void user_main(u64 id64)
{
    u32 id = (u32)id64;
    g_ucpu[id].id = id;
    const struct workload *w = parse(id);
    if (!w) sys_idle();                      /* vCPU 0 reports the error */
    if (id == 0) {
        if (!g_info.tsc_hz) calibrate_tsc();
        char l[200];
        struct buf b = BUF_INIT(l);
        buf_str(&b, "guest: workload=");
        buf_str(&b, w->name);
        buf_str(&b, " vcpus=");
        buf_u64(&b, g_info.vcpus);
        buf_str(&b, " nodes=");
        buf_u64(&b, g_info.nodes);
        buf_str(&b, " mem_mib=");
        buf_u64(&b, g_info.memory_bytes >> 20);
        buf_str(&b, " tsc_mhz=");
        buf_u64(&b, g_info.tsc_hz / 1000000);
        buf_str(&b, " tsc_src=");
        buf_u64(&b, g_info.tsc_src);
        buf_str(&b, " apic_bus_mhz=");
        buf_u64(&b, g_info.apic_bus_hz / 1000000);
        print_line(&b);
        g_ucpu[0].t0 = rdtsc();
    }
    barrier_all(id);
    int ok = w->run(id);
    barrier_all(id);
    if (id == 0) {
        char l[160];
        struct buf b = BUF_INIT(l);
        buf_str(&b, "SUMMARY workload=");
        buf_str(&b, w->name);
        buf_str(&b, " vcpus=");
        buf_u64(&b, g_info.vcpus);
        buf_str(&b, ok ? " ok=true" : " ok=false");
        buf_str(&b, " elapsed_ms=");
        buf_u64(&b, cycles_to_us(rdtsc() - g_ucpu[0].t0) / 1000);
        print_line(&b);
        guest_exit(ok ? 0 : 1);
    }
    sys_idle();
}
