/* k_apic.c - ring-0 primitives and local-APIC probes for the apic, ioapic
 * and extint workloads (u_apic.c), reached through SYS_KCALL (kcall.h).
 *
 * Every probe that changes IA32_APIC_BASE runs whole inside one call, with
 * interrupts off, and leaves the APIC as cpu_init programmed it: between two
 * calls ring 3 takes timer ticks whose handler EOIs at 0xFEE00000, so the
 * APIC must be back there in xAPIC mode by then. A #GP provoked on purpose
 * (rdmsr_safe/wrmsr_safe) is caught by k_fixup (called from k_exception). */
#include "guest.h"
#include "kcall.h"

void k_lapic_init(void);                 /* k_main.c: SVR, LVTs, timer as at boot */
extern char isr_test[];
void k_set_gate(u32 vec, void *handler);  /* k_main.c */

/* Where a #GP in ring 0 resumes, per vCPU (0: a #GP is fatal). */
static u64 k_fixup_rip[MAX_VCPUS];

static u64 my_id(void)
{
    u64 rsp;
    __asm__ volatile("mov %%rsp, %0" : "=r"(rsp));
    return *(u64 *)((rsp & ~0xfffUL) + 0xff8);
}

int k_fixup(u64 vec, u64 cs, u64 *rip);
int k_fixup(u64 vec, u64 cs, u64 *rip)
{
    if (vec != 13 || (cs & 3)) return 0;
    u64 id = my_id();
    if (id >= MAX_VCPUS || !k_fixup_rip[id]) return 0;
    *rip = k_fixup_rip[id];
    k_fixup_rip[id] = 0;
    return 1;
}

/* RDMSR/WRMSR that report a #GP (returns 1) instead of dying. */
static int rdmsr_safe(u32 msr, u64 *val)
{
    u32 lo = 0, hi = 0, gp;
    __asm__ volatile("movq $1f, (%[fx])\n\t"
                     "rdmsr\n\t"
                     "movl $0, %[gp]\n\t"
                     "jmp 2f\n"
                     "1:\tmovl $1, %[gp]\n"
                     "2:\tmovq $0, (%[fx])"
                     : [gp] "=&r"(gp), "+a"(lo), "+d"(hi)
                     : "c"(msr), [fx] "r"(&k_fixup_rip[my_id()])
                     : "memory");
    *val = ((u64)hi << 32) | lo;
    return (int)gp;
}

static int wrmsr_safe(u32 msr, u64 v)
{
    u32 gp;
    __asm__ volatile("movq $1f, (%[fx])\n\t"
                     "wrmsr\n\t"
                     "movl $0, %[gp]\n\t"
                     "jmp 2f\n"
                     "1:\tmovl $1, %[gp]\n"
                     "2:\tmovq $0, (%[fx])"
                     : [gp] "=&r"(gp)
                     : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)), [fx] "r"(&k_fixup_rip[my_id()])
                     : "memory");
    return (int)gp;
}

static u64 rdmsr_v(u32 msr)
{
    u64 v;
    return rdmsr_safe(msr, &v) ? ~0UL : v;
}

static u32 mmio_r(u64 a) { return *(volatile u32 *)a; }
static void mmio_w(u64 a, u32 v) { *(volatile u32 *)a = v; }

/* Disable the APIC (IA32_APIC_BASE[11] = 0), probe its page, try a stray IPI
 * through it, re-enable: r[0] base before, r[1] #GP of the disable, r[2] the
 * version register read while disabled (no APIC: all ones), r[3] base while
 * disabled, r[4] #GP of the re-enable, r[5] SVR after (power-on 0xFF),
 * r[6] ID after, r[7] LVT LINT0 after (masked). */
static void probe_disable(u32 dest, u64 *r)
{
    u64 id = my_id(), base = rdmsr_v(MSR_APIC_BASE);
    r[0] = base;
    r[1] = (u64)wrmsr_safe(MSR_APIC_BASE, base & ~APIC_BASE_EN);
    r[2] = mmio_r(LAPIC_BASE + 0x30);
    mmio_w(LAPIC_BASE + 0x310, dest << 24);
    mmio_w(LAPIC_BASE + 0x300, 0x4000 | (VEC_IPI_BASE + (u32)id));
    r[3] = rdmsr_v(MSR_APIC_BASE);
    r[4] = (u64)wrmsr_safe(MSR_APIC_BASE, base);
    r[5] = mmio_r(LAPIC_BASE + 0xF0);
    r[6] = mmio_r(LAPIC_BASE + 0x20);
    r[7] = mmio_r(LAPIC_BASE + 0x350);
    k_lapic_init();
}

/* Move the xAPIC page to `to` and back: r[0] #GP of the move, r[1] base
 * after it, r[2] version at the new page, r[3] ID there, r[4] version at the
 * old page (nothing there: all ones), r[5] TPR written and read back at the
 * new page, r[6] #GP of the move back, r[7] TPR at the old page again. */
static void probe_move(u64 to, u64 *r)
{
    u64 base = rdmsr_v(MSR_APIC_BASE);
    r[0] = (u64)wrmsr_safe(MSR_APIC_BASE, to | (base & 0xFFF));
    r[1] = rdmsr_v(MSR_APIC_BASE);
    r[2] = mmio_r(to + 0x30);
    r[3] = mmio_r(to + 0x20);
    r[4] = mmio_r(LAPIC_BASE + 0x30);
    mmio_w(to + 0x80, 0x20);
    r[5] = mmio_r(to + 0x80);
    r[6] = (u64)wrmsr_safe(MSR_APIC_BASE, base);
    r[7] = mmio_r(LAPIC_BASE + 0x80);
    mmio_w(LAPIC_BASE + 0x80, 0);
}

/* x2APIC: enter, use the MSR interface, leave through disabled. Results:
 * r[0] #GP of an x2APIC MSR in xAPIC mode (1), r[1] #GP of the switch (0),
 * r[2] base after, r[3] ID MSR, r[4] LDR MSR, r[5] version MSR, r[6] xAPIC
 * page read in x2APIC mode (all ones), r[7] #GP writing the ID (1), r[8]
 * #GP reading EOI (1), r[9] #GP reading SELF IPI (1), r[10] #GP reading DFR
 * (1), r[11] #GP of a non-zero EOI (1), r[12] IRR 0x60-0x7F after SELF IPI
 * 0x65, r[13] the same after an ICR (physical self) IPI 0x66, r[14] ICR read
 * back, r[15] #GP of the ICR write to the peer, r[16] IRR after a logical
 * x2APIC IPI 0x67 to our own LDR, r[17] #GP of x2APIC -> xAPIC (1), r[18]
 * #GP of x2APIC -> disabled (0), r[19] #GP of disabled -> x2APIC (1), r[20]
 * #GP of disabled -> xAPIC (0), r[21] IRR 0x60-0x7F after (reset: 0),
 * r[22] version at the xAPIC page again. */
static void probe_x2apic(u32 peer, u64 *r)
{
    u64 id = my_id(), base = rdmsr_v(MSR_APIC_BASE), v;
    r[0] = (u64)rdmsr_safe(0x802, &v);
    r[1] = (u64)wrmsr_safe(MSR_APIC_BASE, base | APIC_BASE_EXTD);
    r[2] = rdmsr_v(MSR_APIC_BASE);
    r[3] = rdmsr_v(0x802);
    r[4] = rdmsr_v(0x80D);
    r[5] = rdmsr_v(0x803);
    r[6] = mmio_r(LAPIC_BASE + 0x30);
    r[7] = (u64)wrmsr_safe(0x802, 0);
    r[8] = (u64)rdmsr_safe(0x80B, &v);
    r[9] = (u64)rdmsr_safe(0x83F, &v);
    r[10] = (u64)rdmsr_safe(0x80E, &v);
    r[11] = (u64)wrmsr_safe(0x80B, 1);
    wrmsr_safe(0x808, 0);                              /* TPR */
    wrmsr_safe(0x83F, 0x65);                           /* SELF IPI */
    r[12] = rdmsr_v(0x823);
    wrmsr_safe(0x830, id << 32 | 0x4000 | 0x66);       /* ICR: fixed, physical, to us */
    r[13] = rdmsr_v(0x823);
    r[14] = rdmsr_v(0x830);
    r[15] = peer == ~0u ? 0 : (u64)wrmsr_safe(0x830, (u64)peer << 32 | 0x4000 | (VEC_IPI_BASE + id));
    wrmsr_safe(0x830, (r[4] & 0xFFFFFFFF) << 32 | 0x4800 | 0x67);   /* logical, our LDR */
    r[16] = rdmsr_v(0x823);
    r[17] = (u64)wrmsr_safe(MSR_APIC_BASE, base);
    r[18] = (u64)wrmsr_safe(MSR_APIC_BASE, base & ~(APIC_BASE_EN | APIC_BASE_EXTD));
    r[19] = (u64)wrmsr_safe(MSR_APIC_BASE, base | APIC_BASE_EXTD);
    r[20] = (u64)wrmsr_safe(MSR_APIC_BASE, base);
    r[21] = mmio_r(LAPIC_BASE + 0x230);
    r[22] = mmio_r(LAPIC_BASE + 0x30);
    k_lapic_init();
}

/* The test gates, once (the IDT is shared by every vCPU). */
void k_apic_gates(void);
void k_apic_gates(void)
{
    for (u32 i = 0; i < VEC_TEST_COUNT; i++) k_set_gate(VEC_TEST_BASE + i, isr_test + 16 * i);
}

u64 k_call(u64 op, u64 a, u64 b);
u64 k_call(u64 op, u64 a, u64 b)
{
    switch (op) {
    case KC_RDMSR: return (u64)rdmsr_safe((u32)a, (u64 *)b);
    case KC_WRMSR: return (u64)wrmsr_safe((u32)a, b);
    case KC_MMIO_R32: return mmio_r(a);
    case KC_MMIO_W32: mmio_w(a, (u32)b); return 0;
    case KC_OUTB: outb((u16)a, (u8)b); return 0;
    case KC_INB: return inb((u16)a);
    case KC_APIC_DISABLE: probe_disable((u32)a, (u64 *)b); return 0;
    case KC_APIC_MOVE: probe_move(a, (u64 *)b); return 0;
    case KC_X2APIC: probe_x2apic((u32)a, (u64 *)b); return 0;
    default: return ~0UL;
    }
}
