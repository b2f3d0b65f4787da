/* u_pc.c - PC platform devices, checked from ring 3 on vCPU 0 (the other
 * vCPUs only take part in the barriers):
 *   pc       port 0x92 (A20 read back), QEMU's pc-testdev (scratch ports at
 *            PCT_BASE, IRQ-line ports at 0x2000, scratch MMIO at 0xFF000000),
 *            the RTC's IRQ 8 (periodic interrupts, register C), the HPET
 *            (GCAP_ID, counter, one-shot timer routed to an IOAPIC pin) and
 *            QEMU's pci-testdev (config space, BAR tests). Every interrupt
 *            goes through the IOAPIC (pin p -> vector VEC_DEV_BASE + p).
 *   pcreset  port 0x92 bit 0: the VM must stop as reset (never returns)
 *   pcoff    ACPI S5 through the acpi-pm device's PM1a_CNT (never returns)
 *   cpuid    reports the CPUID feature words the VMM's probe may hide, as
 *            ring 0 sees them, from the last vCPU
 *   msrgp    reads IA32_TSC (must work), then MSR_KVM_ASYNC_PF_EN (0x4B564D02),
 *            which the VMM's MSR filter must make #GP (the kernel's exception
 *            report ends the VM); a read that succeeds fails the workload
 * MMIO above the user mapping and ports above the I/O bitmap go through
 * the SYS_IO syscall. The config places pc-testdev at PCT_BASE (0x1E0)
 * because the results port is QEMU's pc-testdev port 0xE0. */
#include "u_lib.h"
#include "u_work.h"

#define PCT_BASE    0x1E0
#define PCT_IRQ     0x2000
#define PCT_MMIO    0xFF000000UL
#define IOAPIC      0xFEC00000UL
#define HPET        0xFED00000UL
#define PM_BASE     0x600

volatile u32 g_dev_irqs[DEV_LINES];        /* counted by isr_dev (k_boot.S) */

static u64 sys_io(u64 op, u64 addr, u64 val)
{
    u64 r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"((u64)SYS_IO), "D"(op), "S"(addr), "d"(val) : "memory");
    return r;
}
static inline u32 inl(u16 port) { u32 v; __asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port)); return v; }

static char pc_err[160];
static int pc_bad(const char *what, u64 got)
{
    struct buf b = BUF_INIT(pc_err);
    buf_str(&b, what);
    buf_str(&b, " (got ");
    buf_hex(&b, got);
    buf_str(&b, ")");
    buf_term(&b);
    return 0;
}

/* IOAPIC pin -> VEC_DEV_BASE + pin, edge, active high, to APIC id 0. */
static void ioapic_route(u32 pin, int masked)
{
    sys_io(IO_WR32, IOAPIC, 0x11 + 2 * pin);
    sys_io(IO_WR32, IOAPIC + 0x10, 0);
    sys_io(IO_WR32, IOAPIC, 0x10 + 2 * pin);
    sys_io(IO_WR32, IOAPIC + 0x10, (VEC_DEV_BASE + pin) | (masked ? 0x10000u : 0));
}

/* Wait until g_dev_irqs[pin] > seen or the timeout passed. */
static int wait_irq(u32 pin, u32 seen)
{
    u64 end = tsc_deadline(g_cfg.timeout_s);
    while (g_dev_irqs[pin] <= seen && rdtsc() < end) cpu_relax();
    return g_dev_irqs[pin] > seen;
}

/* A20 stays on (a PC that honours the gate, e.g. QEMU, would mask bit 20 of
 * every address with it off, and this image runs above 1 MiB). */
static int check_port92(void)
{
    u8 v = inb(0x92);
    if ((v & 3) != 2) return pc_bad("port 0x92: expected A20 on, reset bit 0", v);
    outb(0x92, (u8)(v | 2));
    return (inb(0x92) & 3) == 2 ? 1 : pc_bad("port 0x92: A20 bit does not read back 1", inb(0x92));
}

/* pc-testdev's scratch ports: PCT_BASE in GiantVM's test configs, QEMU's
 * fixed 0xE0 otherwise (there the results port shares it: harmless, vCPU 0
 * writes results only after these checks). */
static u16 pct_base(void)
{
    outl(PCT_BASE, 0xA55A5AA5u);
    return inl(PCT_BASE) == 0xA55A5AA5u ? PCT_BASE : 0xE0;
}

static int check_pctestdev(void)
{
    u16 base = pct_base();
    outl(base, 0x12345678);
    u32 v = inl(base);
    if (v != 0x12345678) return pc_bad("pc-testdev: scratch register", v);
    if (inb(base + 8 + 2) != 0x34) return pc_bad("pc-testdev: byte port 2", inb(base + 10));
    sys_io(IO_WR32, PCT_MMIO + 0x100, 0xCAFEF00D);
    sys_io(IO_WR8, PCT_MMIO + 0xFFFF, 0x5A);
    if ((v = (u32)sys_io(IO_RD32, PCT_MMIO + 0x100, 0)) != 0xCAFEF00D) return pc_bad("pc-testdev: scratch MMIO", v);
    if ((v = (u32)sys_io(IO_RD8, PCT_MMIO + 0xFFFF, 0)) != 0x5A) return pc_bad("pc-testdev: last MMIO byte", v);
    /* line 10 through the IOAPIC: one edge, one interrupt */
    ioapic_route(10, 0);
    u32 seen = g_dev_irqs[10];
    sys_io(IO_OUTB, PCT_IRQ + 10, 1);
    sys_io(IO_OUTB, PCT_IRQ + 10, 0);
    if (!wait_irq(10, seen)) return pc_bad("pc-testdev: IRQ line 10 raised, no interrupt on its IOAPIC pin", g_dev_irqs[10]);
    ioapic_route(10, 1);
    return 1;
}

static u8 cmos(u8 reg) { outb(0x70, reg); return inb(0x71); }
static void cmos_w(u8 reg, u8 v) { outb(0x70, reg); outb(0x71, v); }

static u32 rtc_irqs;
static int check_rtc(void)
{
    ioapic_route(8, 0);
    cmos(0x0C);
    cmos_w(0x0A, 0x26);                       /* 32.768 kHz, 1024 Hz */
    u32 seen = g_dev_irqs[8];                 /* before PIE: the first may come at once */
    cmos_w(0x0B, (u8)(cmos(0x0B) | 0x40));    /* PIE */
    for (u32 i = 0; i < 5; i++) {
        if (!wait_irq(8, seen)) return pc_bad("rtc: periodic interrupt on IRQ 8 did not arrive", i);
        seen = g_dev_irqs[8];
        u8 c = cmos(0x0C);                    /* acknowledges: the next one may come */
        if ((c & 0xC0) != 0xC0) return pc_bad("rtc: register C lacks IRQF|PF after an interrupt", c);
    }
    cmos_w(0x0B, (u8)(cmos(0x0B) & ~0x40));
    cmos(0x0C);
    ioapic_route(8, 1);
    rtc_irqs = g_dev_irqs[8];
    return 1;
}

static u64 hpet_period_fs, hpet_ticks;
static int check_hpet(void)
{
    u64 cap = sys_io(IO_RD64, HPET, 0);
    if (((cap >> 16) & 0xFFFF) != 0x8086) return pc_bad("hpet: GCAP_ID vendor", cap);
    hpet_period_fs = cap >> 32;
    if (!hpet_period_fs || hpet_period_fs > 100000000) return pc_bad("hpet: COUNTER_CLK_PERIOD out of range", cap);
    u64 tcap = sys_io(IO_RD64, HPET + 0x140, 0) >> 32;   /* timer 2's route capability */
    u32 pin = DEV_LINES;                                  /* the highest allowed: no ISA device there */
    while (pin > 0 && !(tcap & (1UL << (pin - 1)))) pin--;
    if (pin-- == 0) return pc_bad("hpet: timer 2 can reach no IOAPIC pin", tcap);
    sys_io(IO_WR32, HPET + 0x10, 1);                      /* ENABLE_CNF */
    u64 c0 = sys_io(IO_RD64, HPET + 0xF0, 0);
    u64 t = rdtsc() + g_info.tsc_hz / 1000;
    while (rdtsc() < t) cpu_relax();
    u64 c1 = sys_io(IO_RD64, HPET + 0xF0, 0);
    if (c1 <= c0) return pc_bad("hpet: main counter does not run", c1);
    hpet_ticks = c1 - c0;
    ioapic_route(pin, 0);
    u32 seen = g_dev_irqs[pin];
    sys_io(IO_WR32, HPET + 0x140, 0x4 | (pin << 9));      /* edge, INT_ENB, one-shot */
    u64 ms = 1000000000000UL / hpet_period_fs;            /* ticks in 1 ms */
    sys_io(IO_WR64, HPET + 0x148, sys_io(IO_RD64, HPET + 0xF0, 0) + ms);
    if (!wait_irq(pin, seen)) return pc_bad("hpet: timer 2's one-shot interrupt did not arrive; pin", pin);
    sys_io(IO_WR32, HPET + 0x140, 0);
    ioapic_route(pin, 1);
    return 1;
}

static u32 pci_cfg(u32 dev, u32 reg)
{
    sys_io(IO_OUTL, 0xCF8, 0x80000000u | dev << 11 | reg);   /* above the I/O bitmap */
    return (u32)sys_io(IO_INL, 0xCFC, 0);
}

static int check_pcitestdev(void)
{
    u32 dev = 0;
    while (dev < 32 && pci_cfg(dev, 0) != 0x00051B36) dev++;  /* GiantVM: 00:01.0; QEMU: wherever */
    if (dev == 32) return pc_bad("pci-testdev: no 1b36:0005 on bus 0", 0);
    pci_cfg(dev, 0);
    sys_io(IO_OUTL, 0xCF8, 0x80000000u | dev << 11 | 0x04);
    sys_io(IO_OUTL, 0xCFC, pci_cfg(dev, 0x04) | 3);           /* I/O and memory decoding on */
    u32 bar0 = pci_cfg(dev, 0x10), bar1 = pci_cfg(dev, 0x14);
    if ((bar0 & 1) || !(bar1 & 1)) return pc_bad("pci-testdev: BAR0 must be memory, BAR1 ports", bar0);
    u64 mem = bar0 & ~0xFUL;
    u16 io = (u16)(bar1 & ~3u);
    /* memory test 0 (mmio-no-eventfd): each write of its data byte at its offset counts */
    sys_io(IO_WR8, mem, 0);
    u32 off = (u32)sys_io(IO_RD8, mem + 4, 0) | (u32)sys_io(IO_RD8, mem + 5, 0) << 8;
    if (off != 2048) return pc_bad("pci-testdev: mmio test 0 offset", off);
    u8 data = (u8)sys_io(IO_RD8, mem + 8, 0);
    for (int i = 0; i < 3; i++) sys_io(IO_WR8, mem + off, data);
    sys_io(IO_WR8, mem + off, (u8)~data);                     /* other data: not counted */
    u32 n = (u32)sys_io(IO_RD32, mem + 12, 0);
    if (n != 3) return pc_bad("pci-testdev: mmio-no-eventfd count", n);
    /* memory test 2 (mmio-datamatch-eventfd): only 0xFA at its offset counts;
     * QEMU hands matching writes to an eventfd instead (count 0): kvm-unit-tests
     * accept 0 or the exact count, so do we */
    sys_io(IO_WR8, mem, 2);
    off = (u32)sys_io(IO_RD8, mem + 4, 0) | (u32)sys_io(IO_RD8, mem + 5, 0) << 8;
    if (off != 2048 + 2) return pc_bad("pci-testdev: mmio test 2 offset", off);
    for (int i = 0; i < 3; i++) sys_io(IO_WR8, mem + off, 0xFA);
    sys_io(IO_WR8, mem + off, 0x11);
    n = (u32)sys_io(IO_RD32, mem + 12, 0);
    if (n != 3 && n != 0) return pc_bad("pci-testdev: mmio-datamatch count", n);
    /* port test 0 (portio-no-eventfd, test 3) at offset 128 + 3 */
    sys_io(IO_OUTB, io, 0);
    for (int i = 0; i < 4; i++) sys_io(IO_OUTB, io + 131, 0xFA);
    n = (u32)sys_io(IO_INB, io + 12, 0);
    if (n != 4) return pc_bad("pci-testdev: portio-no-eventfd count", n);
    return 1;
}

int w_pc(u32 id)
{
    if (id) return 1;
    int ok = check_port92() && check_pctestdev() && check_rtc() && check_hpet() && check_pcitestdev();
    char r[400];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", "pc");
    buf_kv_u64(&j, "vcpus", g_info.vcpus);
    buf_kv_u64(&j, "rtc_irqs", rtc_irqs);
    buf_kv_u64(&j, "hpet_period_fs", hpet_period_fs);
    buf_kv_u64(&j, "hpet_ticks_1ms", hpet_ticks);
    buf_kv_bool(&j, "ok", ok);
    if (!ok) buf_kv_str(&j, "error", pc_err);
    buf_char(&j, '}');
    emit_result(&j);
    return ok;
}

int w_pcreset(u32 id)
{
    if (id == 0) outb(0x92, 0x03);
    sys_idle();
}

int w_pcoff(u32 id)
{
    /* PM1a_CNT high byte: SLP_TYP 5 (\_S5) in bits 10-12, SLP_EN bit 13 */
    if (id == 0) sys_io(IO_OUTB, PM_BASE + 5, 5 << 2 | 1 << 5);
    sys_idle();
}

/* CPUID as ring 0 sees it (ring 3 CPUID may run natively on this KVM). */
static u32 kcpuid(u32 leaf, u32 sub, u32 reg) { return (u32)sys_io(IO_CPUID, leaf | (u64)sub << 32, reg); }

int w_cpuid(u32 id)
{
    if (id != g_info.vcpus - 1) return 1;     /* the last vCPU: on the last node */
    char r[400];
    struct buf j = BUF_INIT(r);
    buf_char(&j, '{');
    buf_kv_str(&j, "workload", "cpuid");
    u32 max = kcpuid(0, 0, 0), emax = kcpuid(0x80000000, 0, 0);
    buf_kv_u64(&j, "leaf1_ecx", kcpuid(1, 0, 2));
    buf_kv_u64(&j, "leaf1_edx", kcpuid(1, 0, 3));
    if (max >= 7) {
        buf_kv_u64(&j, "leaf7_ebx", kcpuid(7, 0, 1));
        buf_kv_u64(&j, "leaf7_ecx", kcpuid(7, 0, 2));
        buf_kv_u64(&j, "leaf7_edx", kcpuid(7, 0, 3));
    }
    if (emax >= 0x80000001) { buf_kv_u64(&j, "ext1_ecx", kcpuid(0x80000001, 0, 2)); buf_kv_u64(&j, "ext1_edx", kcpuid(0x80000001, 0, 3)); }
    if (emax >= 0x80000008) buf_kv_u64(&j, "ext8_ebx", kcpuid(0x80000008, 0, 1));
    buf_kv_bool(&j, "ok", 1);
    buf_char(&j, '}');
    emit_result(&j);
    return 1;
}

int w_msrgp(u32 id)
{
    if (id != g_info.vcpus - 1) return 1;     /* the last vCPU: on the last node's filter */
    u64 t0 = sys_io(IO_RDMSR, 0x10, 0), t1 = sys_io(IO_RDMSR, 0x10, 0);
    if (t1 <= t0) fail("rdmsr IA32_TSC does not advance");
    u64 v = sys_io(IO_RDMSR, 0x4B564D02, 0);     /* #GP ends the VM here */
    char m[96];
    struct buf b = BUF_INIT(m);
    buf_str(&b, "rdmsr 0x4b564d02 (KVM async PF, hidden) did not #GP: read ");
    buf_hex(&b, v);
    buf_term(&b);
    fail(m);
}
