/* kcall.h - the ring-0 primitives and probes ring 3 reaches through
 * `int $0x80` with rax = SYS_KCALL, rdi = op, rsi/rdx = arguments (k_apic.c).
 * Ring 0 runs them with interrupts off; a #GP they provoke on purpose
 * (RDMSR/WRMSR of a refused MSR) is caught and reported, never fatal. */
#ifndef KCALL_H
#define KCALL_H

#define KC_RDMSR        0   /* a = MSR, b = u64 *value; rax = 0, or 1 on #GP */
#define KC_WRMSR        1   /* a = MSR, b = value; rax = 0, or 1 on #GP */
#define KC_MMIO_R32     2   /* a = address; rax = the 32-bit value */
#define KC_MMIO_W32     3   /* a = address, b = value */
#define KC_OUTB         4   /* a = port, b = value */
#define KC_INB          5   /* a = port; rax = value */
#define KC_APIC_DISABLE 6   /* a = APIC id a stray IPI goes to, b = u64 r[APIC_R]: see k_apic.c */
#define KC_APIC_MOVE    7   /* a = new xAPIC base, b = u64 r[APIC_R] */
#define KC_X2APIC       8   /* a = peer APIC id (~0: none), b = u64 r[APIC_R] */
#define APIC_R          24  /* results per probe */

#define MSR_APIC_BASE   0x1B
#define APIC_BASE_BSP   (1UL << 8)
#define APIC_BASE_EXTD  (1UL << 10)
#define APIC_BASE_EN    (1UL << 11)

/* Test vectors (k_apic_isr.S): 0x60-0x7F count into g_irqtest[vcpu].c[v - 0x60];
 * 0x60-0x67 also EOI the local APIC, 0x68-0x7F leave the EOI to the test
 * (level-triggered IOAPIC tests; 0x70-0x7F are the 8259's ExtINT vectors,
 * which have no local-APIC EOI). */
#define VEC_TEST_BASE   0x60
#define VEC_TEST_COUNT  32

#ifndef __ASSEMBLY__
struct irqtest { volatile unsigned int c[VEC_TEST_COUNT]; } __attribute__((aligned(4096)));
extern struct irqtest g_irqtest[];

#ifdef U_LIB_H
/* Ring 3's side: one ring-0 primitive through the SYS_KCALL system call. */
static inline u64 kcall(u64 op, u64 a, u64 b)
{
    u64 r;
    __asm__ volatile("int $0x80"
                     : "=a"(r), "+D"(op), "+S"(a), "+d"(b)
                     : "a"((u64)SYS_KCALL)
                     : "rcx", "r8", "r9", "r10", "r11", "memory");
    return r;
}
#endif
#endif

#endif
