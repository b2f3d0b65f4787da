/* k_main.c - ring 0 of the test guest: boot info, GDT/TSS/IDT, local APIC
 * and its timer, AP start (INIT/SIPI), exception reporting, drop to ring 3.
 *
 * Runs emulated at ~1 us per instruction under GiantVM's KVM, so it does the
 * minimum: no loops over memory except the short command-line copy, static
 * page tables (k_boot.S), interrupts off the whole time (interrupts only
 * arrive in ring 3 or in the idle syscall). */
#include "guest.h"
#include "u_lib.h"

struct tss {
    u32 reserved0;
    u64 rsp0, rsp1, rsp2;
    u64 reserved1;
    u64 ist[7];
    u64 reserved2;
    u16 reserved3;
    u16 iomap_base;
} __attribute__((packed));

/* One page per vCPU for the TSS and one for the kernel stack (DSM: no false sharing). */
/* I/O permission bitmap right after the TSS: all zero = ports 0..IOBITMAP_PORTS-1
 * allowed from ring 3 even if IOPL were 0 (PVM does not keep the guest's IOPL
 * on iretq); the 0xFF byte after it is the terminator the CPU requires. Ports
 * above are governed by IOPL alone. Static zero bytes: no ring-0 stores. */
#define IOBITMAP_PORTS 0x800
static struct ktss { struct tss t; u8 iobitmap[IOBITMAP_PORTS / 8]; u8 end; } PAGE_ALIGNED k_tss[MAX_VCPUS];
u8 k_stacks[MAX_VCPUS][PAGE] PAGE_ALIGNED;

struct idt_entry { u16 off0, sel; u8 ist, type; u16 off1; u32 off2, zero; } __attribute__((packed));
static struct idt_entry k_idt[256] PAGE_ALIGNED;

/* user stacks live in the user part of the image (u_main.c) */
extern u8 u_stacks[MAX_VCPUS][USTACK_SIZE];

extern u64 k_gdt[];
extern char isr_exc[], isr_ud[], isr_ipi[], isr_timer[], isr_syscall[], isr_spurious[], isr_dev[];
extern char tramp_start[], tramp_end[];
extern char __image_end[];
void enter_user(u64 id, void (*rip)(u64), u64 rsp) NORETURN;

_Static_assert(sizeof(struct ucpu) == PAGE, "struct ucpu must be one page");
_Static_assert(__builtin_offsetof(struct ucpu, ticks) == UCPU_TICKS, "UCPU_TICKS");
_Static_assert(__builtin_offsetof(struct ucpu, ipi_recv) == UCPU_IPI, "UCPU_IPI");
_Static_assert(sizeof(struct bootinfo) == 296, "bootinfo layout");

static u32 timer_count;               /* APIC timer initial count (set by the BSP) */
static volatile u32 k_online;         /* vCPUs that finished cpu_init */
static volatile u8 k_alive[MAX_VCPUS]; /* set by each AP first thing */

static inline void lapic_w(u32 reg, u32 v) { *(volatile u32 *)(u64)(LAPIC_BASE + reg) = v; }
static inline u32 lapic_r(u32 reg) { return *(volatile u32 *)(u64)(LAPIC_BASE + reg); }

/* ---- fatal paths (rare: they may be slow) ---- */

static void k_report_fail(const char *what) NORETURN;
static void k_report_fail(const char *what)
{
    char line[512];
    struct buf b = BUF_INIT(line);
    buf_str(&b, "{\"workload\":\"");
    /* first word of the command line, if any */
    for (u32 i = 0; i < g_info.cmdline_len && g_info.cmdline[i] && g_info.cmdline[i] != ' ' && i < 32; i++)
        buf_char(&b, g_info.cmdline[i]);
    buf_str(&b, "\",\"vcpus\":");
    buf_u64(&b, g_info.vcpus);
    buf_str(&b, ",\"ok\":false,\"error\":\"");
    buf_str(&b, what);
    buf_str(&b, "\"}");
    uart_puts("FATAL: ");
    uart_puts(what);
    uart_puts("\n");
    emit_result_raw(&b);
    outl(PORT_EXIT, 3);
    for (;;) __asm__ volatile("cli; hlt");
}

struct frame {
    u64 rax, rbx, rcx, rdx, rsi, rdi, rbp, r8, r9, r10, r11, r12, r13, r14, r15;
    u64 vec, err, rip, cs, rflags, rsp, ss;
};

int k_fixup(u64 vec, u64 cs, u64 *rip);   /* k_apic.c: a #GP provoked on purpose */
void k_apic_gates(void);                  /* k_apic.c */
void k_set_gate(u32 vec, void *handler);
void k_lapic_init(void);

/* Reports the exception and ends the VM; returns only when k_fixup redirected it. */
void k_exception(struct frame *f);
void k_exception(struct frame *f)
{
    if (k_fixup(f->vec, f->cs, &f->rip)) return;
    static const char *names[32] = {
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "?", "#TS", "#NP", "#SS", "#GP", "#PF", "?",
        "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "?", "?", "?", "?", "?", "?", "?", "#VC", "#SX", "?"};
    u64 rsp, cr2;
    __asm__ volatile("mov %%rsp, %0; mov %%cr2, %1" : "=r"(rsp), "=r"(cr2));
    u64 id = *(u64 *)((rsp & ~0xfffUL) + 0xff8);
    char msg[320];
    struct buf b = BUF_INIT(msg);
    buf_str(&b, "exception ");
    buf_u64(&b, f->vec);
    buf_str(&b, " ");
    buf_str(&b, names[f->vec & 31]);
    buf_str(&b, " on vCPU ");
    buf_u64(&b, id);
    buf_str(&b, " at rip=");
    buf_hex(&b, f->rip);
    buf_str(&b, " cs=");
    buf_hex(&b, f->cs);
    buf_str(&b, " err=");
    buf_hex(&b, f->err);
    buf_str(&b, " cr2=");
    buf_hex(&b, cr2);
    buf_str(&b, " rsp=");
    buf_hex(&b, f->rsp);
    buf_str(&b, " rflags=");
    buf_hex(&b, f->rflags);
    buf_str(&b, " rax=");
    buf_hex(&b, f->rax);
    buf_str(&b, " rdi=");
    buf_hex(&b, f->rdi);
    buf_term(&b);
    k_report_fail(msg);
}

/* ---- per-vCPU setup ---- */

static void set_gate(u32 vec, void *handler, u8 dpl)
{
    u64 a = (u64)handler;
    struct idt_entry *e = &k_idt[vec];
    e->off0 = (u16)a;
    e->sel = SEL_KCODE;
    e->ist = 0;
    e->type = 0x8E | (u8)(dpl << 5);   /* present, 64-bit interrupt gate */
    e->off1 = (u16)(a >> 16);
    e->off2 = (u32)(a >> 32);
}

void k_set_gate(u32 vec, void *handler) { set_gate(vec, handler, 0); }

static void load_idt(void)
{
    struct { u16 limit; u64 base; } __attribute__((packed)) d = {sizeof(k_idt) - 1, (u64)k_idt};
    __asm__ volatile("lidt %0" ::"m"(d));
}

static void cpu_init(u32 id)
{
    struct tss *t = &k_tss[id].t;
    t->rsp0 = (u64)&k_stacks[id][PAGE - 16];
    t->iomap_base = sizeof(struct tss);           /* bitmap follows (IOPL is 3 too) */
    k_tss[id].end = 0xFF;
    u64 base = (u64)t, limit = sizeof(struct tss) + IOBITMAP_PORTS / 8;
    k_gdt[6 + 2 * id] = (limit & 0xFFFF) | ((base & 0xFFFFFF) << 16) | (0x89UL << 40) |
                        (((base >> 24) & 0xFF) << 56);
    k_gdt[6 + 2 * id + 1] = base >> 32;
    __asm__ volatile("ltr %w0" ::"r"(SEL_TSS0 + 16 * id));
    k_lapic_init();
    fetch_add32(&k_online, 1);
}

/* The local APIC as every vCPU runs with it (also after a probe reset it). */
void k_lapic_init(void)
{
    lapic_w(0x80, 0);                             /* TPR: accept everything */
    lapic_w(0xF0, 0x100 | VEC_SPURIOUS);          /* SVR: software enable */
    lapic_w(0x350, 0x10000);                      /* LINT0 masked: no 8259 ExtINT */
    lapic_w(0x370, 0x10000);                      /* LVT error masked */
    lapic_w(0x3E0, 0x3);                          /* timer divide by 16 */
    lapic_w(0x320, VEC_TIMER | 0x20000);          /* timer: periodic */
    lapic_w(0x380, timer_count);                  /* start */
}

static void go_user(u32 id) NORETURN;
static void go_user(u32 id)
{
    enter_user(id, user_main, (u64)&u_stacks[id][USTACK_SIZE - 8]);
}

void ap_main(u64 id) NORETURN;
void ap_main(u64 id)
{
    k_alive[id] = 1;
    load_idt();
    cpu_init((u32)id);
    go_user((u32)id);
}

/* ---- BSP ---- */

/* TSC and APIC-bus frequencies from CPUID: hypervisor timing leaf
 * 0x40000010 (EAX = TSC kHz, EBX = APIC bus kHz), then 0x15 (TSC = crystal
 * * EBX/EAX; the APIC timer runs on the crystal), then 0x16 (base MHz). */
static void clocks(void)
{
    u32 a, b, c, d, max, hmax = 0;
    cpuid(0, 0, &max, &b, &c, &d);
    cpuid(1, 0, &a, &b, &c, &d);
    if (c & (1u << 31)) cpuid(0x40000000, 0, &hmax, &b, &c, &d);
    if (hmax >= 0x40000010 && hmax < 0x40010000) {
        cpuid(0x40000010, 0, &a, &b, &c, &d);
        if (a) { g_info.tsc_hz = (u64)a * 1000; g_info.tsc_src = 1; }
        if (b) { g_info.apic_bus_hz = (u64)b * 1000; g_info.apic_bus_src = 1; }
    }
    if (max >= 0x15 && (!g_info.tsc_hz || !g_info.apic_bus_hz)) {
        cpuid(0x15, 0, &a, &b, &c, &d);
        if (a && b && c && !g_info.tsc_hz) { g_info.tsc_hz = (u64)c * b / a; g_info.tsc_src = 2; }
        if (c && !g_info.apic_bus_hz) { g_info.apic_bus_hz = c; g_info.apic_bus_src = 2; }
    }
    if (max >= 0x16 && !g_info.tsc_hz) {
        cpuid(0x16, 0, &a, &b, &c, &d);
        if (a & 0xFFFF) { g_info.tsc_hz = (u64)(a & 0xFFFF) * 1000000; g_info.tsc_src = 3; }
    }
    if (!g_info.apic_bus_hz) g_info.apic_bus_hz = 1000000000;   /* QEMU's APIC bus: 1 GHz */
    u64 cnt = g_info.apic_bus_hz / 16 / TIMER_HZ;
    timer_count = cnt ? (u32)(cnt > 0xFFFFFFFFu ? 0xFFFFFFFFu : cnt) : 1;
}

static void send_icr(u32 dest, u32 low)
{
    while (lapic_r(0x300) & 0x1000) cpu_relax();
    lapic_w(0x310, dest << 24);
    lapic_w(0x300, low);
}

/* Wait until k_online == n or about `ms` milliseconds passed. */
static int wait_online(u32 n, u64 ms)
{
    u64 hz = g_info.tsc_hz ? g_info.tsc_hz : 3000000000UL;   /* unknown: assume fast, wait longer */
    u64 end = rdtsc() + hz / 1000 * ms;
    while (k_online < n) {
        if (rdtsc() > end) return 0;
        cpu_relax();
    }
    return 1;
}

/* quadword copy: every ring-0 instruction is emulated, so avoid byte loops */
static void kcopy(void *dst, const void *src, u64 bytes)
{
    u64 *d = dst;
    const u64 *s = src;
    for (u64 i = 0; i < (bytes + 7) / 8; i++) d[i] = s[i];
}

static void start_aps(u32 n)
{
    kcopy((void *)TRAMPOLINE, tramp_start, (u64)(tramp_end - tramp_start));
    for (u32 i = 1; i < n; i++) send_icr(i, 0x4500);                 /* INIT */
    for (u32 i = 1; i < n; i++) send_icr(i, 0x4600 | SIPI_VECTOR);   /* SIPI */
    if (wait_online(n, 500)) return;
    /* Second SIPI only to the APs that did not check in: a SIPI to a
     * running CPU is ignored by hardware, but no need to rely on that. */
    for (u32 i = 1; i < n; i++)
        if (!k_alive[i]) send_icr(i, 0x4600 | SIPI_VECTOR);
    if (wait_online(n, 10000)) return;
    char msg[96];
    struct buf b = BUF_INIT(msg);
    buf_str(&b, "only ");
    buf_u64(&b, k_online);
    buf_str(&b, " of ");
    buf_u64(&b, n);
    buf_str(&b, " vCPUs started after INIT/SIPI/SIPI");
    buf_term(&b);
    k_report_fail(msg);
}

void kmain(struct bootinfo *bi) NORETURN;
void kmain(struct bootinfo *bi)
{
    if (bi->magic != BOOTINFO_MAGIC || (bi->version != 1 && bi->version != 2)) {
        uart_puts("FATAL: boot info at 0x2000 has a bad magic or version\n");
        outl(PORT_EXIT, 2);
        for (;;) __asm__ volatile("cli; hlt");
    }
    u32 n = bi->total_vcpus;
    g_info.vcpus = n;
    g_info.nodes = bi->node_count;
    g_info.memory_bytes = bi->memory_bytes;
    u32 len = bi->cmdline_len > CMDLINE_MAX ? CMDLINE_MAX : bi->cmdline_len;
    kcopy(g_info.cmdline, (void *)bi->cmdline_gpa, len);   /* may copy up to 7 extra bytes */
    g_info.cmdline[len] = 0;
    g_info.cmdline_len = len;

    /* own GDT (k_boot.S) and page tables; reload CS with a far return */
    struct { u16 limit; u64 base; } __attribute__((packed)) g = {GDT_ENTRIES * 8 - 1, (u64)k_gdt};
    __asm__ volatile("lgdt %0\n\t"
                     "mov %1, %%ds\n\tmov %1, %%es\n\tmov %1, %%ss\n\t"
                     "pushq %2\n\tlea 1f(%%rip), %%rax\n\tpushq %%rax\n\tlretq\n1:"
                     :: "m"(g), "r"((u64)SEL_KDATA), "i"(SEL_KCODE) : "rax", "memory");
    extern u64 k_pml4[];
    __asm__ volatile("mov %0, %%cr3" ::"r"((u64)k_pml4) : "memory");

    if (n == 0 || n > MAX_VCPUS) {
        char msg[96];
        struct buf b = BUF_INIT(msg);
        buf_str(&b, "boot info total_vcpus=");
        buf_u64(&b, n);
        buf_str(&b, " is outside 1..64");
        buf_term(&b);
        k_report_fail(msg);
    }
    for (u32 i = 0; i < n; i++) g_info.vcpu_node[i] = bi->vcpu_node[i];

    for (u32 v = 0; v < 32; v++) set_gate(v, v == 6 ? isr_ud : isr_exc + 16 * v, 0);
    set_gate(VEC_SYSCALL, isr_syscall, 3);
    for (u32 s = 0; s < n; s++) set_gate(VEC_IPI_BASE + s, isr_ipi + 16 * s, 0);
    set_gate(VEC_TIMER, isr_timer, 0);
    for (u32 p = 0; p < DEV_LINES; p++) set_gate(VEC_DEV_BASE + p, isr_dev + 16 * p, 0);   /* u_pc.c */
    set_gate(VEC_SPURIOUS, isr_spurious, 0);
    k_apic_gates();
    load_idt();

    clocks();
    u64 mem = g_info.memory_bytes, cap = 0xC0000000UL;   /* stay below the MMIO hole */
    u64 top = (u64)__image_end;
    if (bi->version == 2) {                               /* modules: above the image, below the heap */
        struct bootmods *bm = (struct bootmods *)(BOOTINFO_ADDR + BOOTINFO_MODS);
        u32 k = bm->count > MAX_MODULES ? MAX_MODULES : bm->count;
        for (u32 i = 0; i < k; i++) {
            g_info.mod_start[i] = bm->mod[i].start;
            g_info.mod_len[i] = bm->mod[i].length;
            if (bm->mod[i].start + bm->mod[i].length > top) top = bm->mod[i].start + bm->mod[i].length;
        }
        g_info.nmods = k;
    }
    g_info.heap_start = (top + 0x1FFFFF) & ~0x1FFFFFUL;
    g_info.heap_end = (mem < cap ? mem : cap) & ~0xFFFUL;
    if (g_info.heap_end < g_info.heap_start) g_info.heap_end = g_info.heap_start;

    cpu_init(0);
    if (n > 1) start_aps(n);
    g_info.started = n;
    go_user(0);
}
