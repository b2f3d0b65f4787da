/* u_apic.c - interrupt-controller workloads (ring 3, through the ring-0
 * primitives of k_apic.c):
 *   apic     IA32_APIC_BASE (disable, re-enable, relocate) and x2APIC (MSR
 *            interface, self IPI, 64-bit ICR, mode transitions, an x2APIC
 *            IPI to the next vCPU, possibly on another node), vCPU by vCPU;
 *   ioapic   IOAPIC edge (vCPU 0) and level (last vCPU) semantics through the
 *            irq-lines device at 0x2100: remote IRR, re-trigger after EOI,
 *            the EOI register, masking while pending, an edge lost while masked;
 *   extint   the 8259's INTR through LINT0 in ExtINT mode on vCPU 0;
 *   partial  vCPU 0 prints a line without a newline and exits with `status`.
 * Each check that fails is printed and named in the RESULT line. */
#include "u_lib.h"
#include "u_work.h"
#include "kcall.h"

#define IRQ_LINES_BASE  0x2100
#define IOAPIC_BASE     0xFEC00000UL
#define MOVED_APIC_BASE 0xFEF00000UL

struct irqtest g_irqtest[MAX_VCPUS];

static u32 nv(void) { return g_info.vcpus; }

static u32 mmio_r(u64 a) { return (u32)kcall(KC_MMIO_R32, a, 0); }
static void mmio_w(u64 a, u32 v) { kcall(KC_MMIO_W32, a, v); }
static void line(u32 l, u32 level) { kcall(KC_OUTB, IRQ_LINES_BASE + l, level); }
static u32 ioapic_r(u32 reg) { mmio_w(IOAPIC_BASE, reg); return mmio_r(IOAPIC_BASE + 0x10); }
static void ioapic_w(u32 reg, u32 v) { mmio_w(IOAPIC_BASE, reg); mmio_w(IOAPIC_BASE + 0x10, v); }
static void lapic_eoi(void) { mmio_w(LAPIC_BASE + 0xB0, 0); }

/* ---- checks: shared by the vCPUs, which take turns ---- */
static struct {
    u32 count, failed, len;
    char names[600];
} PAGE_ALIGNED ck;

static void check(u32 id, int ok, const char *name, u64 got)
{
    ck.count++;
    if (ok) return;
    ck.failed++;
    char l[200];
    struct buf b = BUF_INIT(l);
    buf_str(&b, "check failed on vCPU ");
    buf_u64(&b, id);
    buf_str(&b, ": ");
    buf_str(&b, name);
    buf_str(&b, " (got ");
    buf_hex(&b, got);
    buf_char(&b, ')');
    print_line(&b);
    for (const char *p = name; *p && ck.len + 2 < sizeof(ck.names); p++)
        ck.names[ck.len++] = *p == '"' ? '\'' : *p;
    if (ck.len + 2 < sizeof(ck.names)) ck.names[ck.len++] = ';';
    ck.names[ck.len] = 0;
}

static void report(const char *workload)
{
    char r[800];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", workload);
    buf_kv_u64(&j, "vcpus", nv());
    buf_kv_u64(&j, "checks", ck.count);
    buf_kv_u64(&j, "failed", ck.failed);
    buf_kv_str(&j, "failures", ck.names);
    buf_kv_bool(&j, "ok", ck.failed == 0 && ck.count > 0);
    buf_char(&j, '}');
    emit_result(&j);
}

/* Spin (interrupts on) until *p reaches want or `ms` pass; returns *p. */
static u32 wait_for(volatile u32 *p, u32 want, u64 ms)
{
    u64 end = rdtsc() + g_info.tsc_hz / 1000 * ms;
    while (*p < want && rdtsc() < end) cpu_relax();
    return *p;
}

static void pause_ms(u64 ms)
{
    u64 end = rdtsc() + g_info.tsc_hz / 1000 * ms;
    while (rdtsc() < end) cpu_relax();
}

/* ------------------------------------------------------------------ */
/* apic                                                                 */
/* ------------------------------------------------------------------ */
static void apic_probes(u32 id, int x2)
{
    u32 n = nv(), peer = n > 1 ? (id + 1) % n : id;
    u64 r[APIC_R];
    volatile u32 *at_peer = &g_ucpu[peer].ipi_recv[id];

    /* disable / re-enable */
    u32 before = *at_peer;
    kcall(KC_APIC_DISABLE, peer, (u64)r);
    check(id, (r[0] & ~0xFFFUL) == LAPIC_BASE, "IA32_APIC_BASE holds 0xFEE00000", r[0]);
    check(id, (r[0] & APIC_BASE_EN) && !(r[0] & APIC_BASE_EXTD), "IA32_APIC_BASE: xAPIC enabled at start", r[0]);
    check(id, (r[0] & APIC_BASE_BSP) == (id == 0 ? APIC_BASE_BSP : 0), "IA32_APIC_BASE: BSP bit on vCPU 0 only", r[0]);
    check(id, r[1] == 0 && r[4] == 0, "disable and re-enable raise no #GP", r[1] << 1 | r[4]);
    check(id, r[2] == 0xFFFFFFFF, "the disabled APIC's page reads as unassigned", r[2]);
    check(id, !(r[3] & APIC_BASE_EN), "IA32_APIC_BASE reads back disabled", r[3]);
    check(id, r[5] == 0xFF, "re-enabled APIC is in its reset state (SVR 0xFF)", r[5]);
    check(id, r[6] == (u64)id << 24, "re-enabled APIC keeps its ID", r[6]);
    check(id, r[7] & 0x10000, "re-enabled APIC has LINT0 masked", r[7]);
    pause_ms(50);
    check(id, *at_peer == before, "an ICR write to the disabled page sends no IPI", *at_peer - before);

    /* relocation */
    kcall(KC_APIC_MOVE, MOVED_APIC_BASE, (u64)r);
    check(id, r[0] == 0 && r[6] == 0, "moving the APIC base raises no #GP", r[0] << 1 | r[6]);
    check(id, (r[1] & ~0xFFFUL) == MOVED_APIC_BASE, "IA32_APIC_BASE reads back the new base", r[1]);
    check(id, (r[2] & 0xFF) == 0x14, "the moved page answers (version 0x14)", r[2]);
    check(id, r[3] == (u64)id << 24, "the moved page is this vCPU's APIC (ID)", r[3]);
    check(id, r[4] == 0xFFFFFFFF, "the old page is unassigned while moved", r[4]);
    check(id, r[5] == 0x20 && r[7] == 0x20, "TPR written at the moved page reads back at the old one", r[5] << 8 | r[7]);

    /* x2APIC */
    check(id, x2, "x2APIC offered (CPUID.1:ECX[21])", 0);
    if (!x2) return;
    before = *at_peer;
    kcall(KC_X2APIC, n > 1 ? peer : ~0u, (u64)r);
    u64 ldr = ((u64)(id >> 4) << 16) | (1UL << (id & 15));
    check(id, r[0] == 1, "x2APIC MSR in xAPIC mode: #GP", r[0]);
    check(id, r[1] == 0 && (r[2] & APIC_BASE_EXTD), "xAPIC -> x2APIC", r[2]);
    check(id, r[3] == id, "x2APIC ID MSR 0x802", r[3]);
    check(id, r[4] == ldr, "x2APIC LDR derived from the ID", r[4]);
    check(id, (r[5] & 0xFF) == 0x14, "x2APIC version MSR 0x803", r[5]);
    check(id, r[6] == 0xFFFFFFFF, "no xAPIC page in x2APIC mode", r[6]);
    check(id, r[7] == 1, "x2APIC ID is read-only: #GP", r[7]);
    check(id, r[8] == 1 && r[9] == 1, "x2APIC EOI and SELF IPI are write-only: #GP", r[8] << 1 | r[9]);
    check(id, r[10] == 1, "x2APIC has no DFR: #GP", r[10]);
    check(id, r[11] == 1, "x2APIC non-zero EOI write: #GP", r[11]);
    check(id, r[12] & (1UL << 5), "SELF IPI 0x65 lands in IRR", r[12]);
    check(id, r[13] & (1UL << 6), "64-bit ICR IPI 0x66 to our x2APIC ID lands in IRR", r[13]);
    check(id, r[14] >> 32 == id && (r[14] & 0xFF) == 0x66, "ICR MSR reads back as one 64-bit register", r[14]);
    check(id, r[15] == 0, "ICR write to the peer: no #GP", r[15]);
    check(id, r[16] & (1UL << 7), "logical x2APIC IPI 0x67 to our LDR lands in IRR", r[16]);
    check(id, r[17] == 1, "x2APIC -> xAPIC: #GP", r[17]);
    check(id, r[18] == 0, "x2APIC -> disabled", r[18]);
    check(id, r[19] == 1, "disabled -> x2APIC: #GP", r[19]);
    check(id, r[20] == 0, "disabled -> xAPIC", r[20]);
    check(id, r[21] == 0, "leaving x2APIC through disabled resets IRR", r[21]);
    check(id, (r[22] & 0xFF) == 0x14, "the xAPIC page is back", r[22]);
    if (n > 1)
        check(id, wait_for(at_peer, before + 1, 2000) == before + 1, "an x2APIC ICR IPI reaches the next vCPU once", *at_peer - before);
}

int w_apic(u32 id)
{
    u32 a, b, c, d;
    cpuid(1, 0, &a, &b, &c, &d);
    int x2 = (c >> 21) & 1;
    for (u32 k = 0; k < nv(); k++) {
        barrier_all(id);
        if (k != id) continue;
        apic_probes(id, x2);
        u64 t = g_ucpu[id].ticks;   /* the APIC timer runs again after the probes */
        u64 end = rdtsc() + g_info.tsc_hz;
        while (g_ucpu[id].ticks < t + 2 && rdtsc() < end) cpu_relax();
        check(id, g_ucpu[id].ticks >= t + 2, "APIC timer ticks after the probes", g_ucpu[id].ticks - t);
    }
    barrier_all(id);
    if (id) return 1;
    report("apic");
    return ck.failed == 0;
}

/* ------------------------------------------------------------------ */
/* ioapic                                                               */
/* ------------------------------------------------------------------ */
#define PIN_LEVEL 20
#define PIN_EDGE  21
#define RTE(pin)  (0x10 + 2 * (pin))

static void rte(u32 pin, u32 low, u32 dest)
{
    ioapic_w(RTE(pin) + 1, dest << 24);
    ioapic_w(RTE(pin), low);
}

static void ioapic_edge(u32 id)
{
    const u32 vec = VEC_TEST_BASE + 1;   /* the stub EOIs it */
    volatile u32 *c = &g_irqtest[id].c[vec - VEC_TEST_BASE];
    check(id, (ioapic_r(1) & 0xFF) == 0x20, "IOAPIC version 0x20", ioapic_r(1));
    rte(PIN_EDGE, vec, id);
    line(PIN_EDGE, 1);
    check(id, wait_for(c, 1, 2000) == 1, "edge: a rising edge delivers", *c);
    line(PIN_EDGE, 0);
    pause_ms(20);
    check(id, *c == 1, "edge: a falling edge does not", *c);
    line(PIN_EDGE, 1);
    check(id, wait_for(c, 2, 2000) == 2, "edge: the next rising edge delivers", *c);
    line(PIN_EDGE, 0);
    rte(PIN_EDGE, vec | 0x10000, id);
    line(PIN_EDGE, 1);
    rte(PIN_EDGE, vec, id);
    pause_ms(30);
    check(id, *c == 2, "edge: an edge while masked is lost", *c);
    line(PIN_EDGE, 0);
    line(PIN_EDGE, 1);
    check(id, wait_for(c, 3, 2000) == 3, "edge: delivers again once unmasked", *c);
    line(PIN_EDGE, 0);
    rte(PIN_EDGE, 0x10000, 0);
}

static void ioapic_level(u32 id)
{
    const u32 vec = VEC_TEST_BASE + 9;   /* the stub leaves the EOI to us */
    volatile u32 *c = &g_irqtest[id].c[vec - VEC_TEST_BASE];
    rte(PIN_LEVEL, vec | 0x8000, id);
    line(PIN_LEVEL, 1);
    check(id, wait_for(c, 1, 2000) == 1, "level: an asserted line delivers", *c);
    check(id, ioapic_r(RTE(PIN_LEVEL)) & 0x4000, "level: remote IRR set on delivery", ioapic_r(RTE(PIN_LEVEL)));
    check(id, mmio_r(LAPIC_BASE + 0x180 + (vec / 32) * 0x10) & (1u << (vec & 31)), "level: the local APIC's TMR bit is set", 0);
    line(PIN_LEVEL, 0);
    line(PIN_LEVEL, 1);
    pause_ms(20);
    check(id, *c == 1, "level: no second delivery while remote IRR is set", *c);
    lapic_eoi();   /* broadcast EOI: remote IRR clears, the line is still high */
    check(id, wait_for(c, 2, 2000) == 2, "level: a still-asserted line re-triggers after the EOI", *c);
    check(id, ioapic_r(RTE(PIN_LEVEL)) & 0x4000, "level: remote IRR set again", ioapic_r(RTE(PIN_LEVEL)));
    line(PIN_LEVEL, 0);
    mmio_w(IOAPIC_BASE + 0x40, vec);   /* the IOAPIC's EOI register (version 0x20) */
    check(id, !(ioapic_r(RTE(PIN_LEVEL)) & 0x4000), "level: the IOAPIC EOI register clears remote IRR", ioapic_r(RTE(PIN_LEVEL)));
    lapic_eoi();
    pause_ms(20);
    check(id, *c == 2, "level: no re-trigger once the line is low", *c);
    rte(PIN_LEVEL, vec | 0x8000 | 0x10000, id);
    line(PIN_LEVEL, 1);
    pause_ms(20);
    check(id, *c == 2, "level: a masked entry does not deliver", *c);
    check(id, !(ioapic_r(RTE(PIN_LEVEL)) & 0x4000), "level: masked and pending: remote IRR clear", ioapic_r(RTE(PIN_LEVEL)));
    rte(PIN_LEVEL, vec | 0x8000, id);
    check(id, wait_for(c, 3, 2000) == 3, "level: unmasking an asserted line delivers", *c);
    line(PIN_LEVEL, 0);
    lapic_eoi();
    check(id, !(ioapic_r(RTE(PIN_LEVEL)) & 0x4000), "level: remote IRR clear after the last EOI", ioapic_r(RTE(PIN_LEVEL)));
    rte(PIN_LEVEL, 0x10000, 0);
}

int w_ioapic(u32 id)
{
    u32 last = nv() - 1;
    barrier_all(id);
    if (id == 0) ioapic_edge(id);
    barrier_all(id);
    if (id == last) ioapic_level(id);
    barrier_all(id);
    if (id) return 1;
    report("ioapic");
    return ck.failed == 0;
}

/* ------------------------------------------------------------------ */
/* extint                                                               */
/* ------------------------------------------------------------------ */
#define PIC_IRQ 3
#define PIC_VEC 0x70

int w_extint(u32 id)
{
    barrier_all(id);
    if (id) { barrier_all(id); return 1; }
    const u32 vec = PIC_VEC + PIC_IRQ;
    volatile u32 *c = &g_irqtest[0].c[vec - VEC_TEST_BASE];
    outb(0x20, 0x11); outb(0x21, PIC_VEC); outb(0x21, 0x04); outb(0x21, 0x01);       /* master */
    outb(0xA0, 0x11); outb(0xA1, PIC_VEC + 8); outb(0xA1, 0x02); outb(0xA1, 0x01);   /* slave */
    outb(0x21, (u8)~(1u << PIC_IRQ));
    outb(0xA1, 0xFF);
    mmio_w(LAPIC_BASE + 0x350, 0x700);   /* LINT0: ExtINT, unmasked */
    line(PIC_IRQ, 1);
    check(0, wait_for(c, 1, 2000) == 1, "ExtINT: IRQ 3 of the 8259 arrives through LINT0 on vector 0x73", *c);
    outb(0x20, 0x0B);
    u8 isr = inb(0x20);
    check(0, isr & (1u << PIC_IRQ), "ExtINT: the interrupt acknowledge put IRQ 3 in service in the 8259", isr);
    check(0, !(mmio_r(LAPIC_BASE + 0x100 + (vec / 32) * 0x10) & (1u << (vec & 31))), "ExtINT: the local APIC's ISR is untouched", 0);
    line(PIC_IRQ, 0);
    outb(0x20, 0x20);
    line(PIC_IRQ, 1);
    check(0, wait_for(c, 2, 2000) == 2, "ExtINT: again after the 8259's EOI", *c);
    line(PIC_IRQ, 0);
    outb(0x20, 0x20);
    mmio_w(LAPIC_BASE + 0x350, 0x10700); /* LINT0 masked */
    line(PIC_IRQ, 1);
    pause_ms(30);
    check(0, *c == 2, "ExtINT: a masked LINT0 keeps the 8259's INTR out", *c);
    mmio_w(LAPIC_BASE + 0x350, 0x10000);
    line(PIC_IRQ, 0);
    outb(0x21, 0xFF);
    barrier_all(id);
    report("extint");
    return ck.failed == 0;
}

/* ------------------------------------------------------------------ */
/* partial: the VMM's closing line after an unterminated guest line     */
/* ------------------------------------------------------------------ */
int w_partial(u32 id)
{
    if (id) sys_idle();
    uart_puts("partial line without newline");
    guest_exit((u32)g_cfg.status);
}
