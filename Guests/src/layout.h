/* layout.h - constants shared by assembly, C and the linker script (keep it
 * free of C syntax). The memory map is documented in Guests/README.md. */
#ifndef LAYOUT_H
#define LAYOUT_H

#define MAX_VCPUS       64

/* Fixed by the entry contract (written by the VMM before entry). */
#define BOOT_GDT        0x1000
#define BOOTINFO_ADDR   0x2000
#define CMDLINE_ADDR    0x3000
#define BOOTINFO_MAGIC  0x47564D42          /* 'GVMB' little endian */
#define CMDLINE_MAX     1023
/* Boot info version 2 (guest.modules): u32 count, u32 reserved, then
 * {u64 start, u64 length}[MAX_MODULES] at this offset. */
#define BOOTINFO_MODS   296
#define MAX_MODULES     16

/* AP trampoline: copied here by the BSP; SIPI vector = TRAMPOLINE >> 12. */
#define TRAMPOLINE      0x10000
#define SIPI_VECTOR     (TRAMPOLINE >> 12)

#define IMAGE_BASE      0x100000            /* kernel (supervisor) part: 1..2 MiB */
#define USER_BASE       0x200000            /* user part: 2 MiB and up */

/* Selectors of the guest's own GDT. */
#define SEL_KCODE       0x08
#define SEL_KDATA       0x10
#define SEL_KCODE32     0x18
#define SEL_UDATA       0x20                /* used as 0x23 */
#define SEL_UCODE       0x28                /* used as 0x2B */
#define SEL_TSS0        0x30                /* TSS of vCPU i at 0x30 + 16*i */
#define GDT_ENTRIES     (6 + 2 * MAX_VCPUS)

/* Interrupt vectors. */
#define VEC_TIMER       0x30
#define VEC_IPI_BASE    0x40                /* IPI from vCPU s arrives on 0x40 + s */
#define VEC_SYSCALL     0x80
#define VEC_DEV_BASE    0xA0                /* IOAPIC pin p -> VEC_DEV_BASE + p (u_pc.c) */
#define DEV_LINES       24
#define VEC_SPURIOUS    0xFF

/* Syscall numbers (int $0x80; rax = number, rdi/rsi = arguments). */
#define SYS_SEND_IPI    0   /* rdi = destination APIC id, rsi = vector; rax = 0 */
#define SYS_TICKS       1   /* rax = APIC timer ticks taken by the calling vCPU */
#define SYS_IDLE        2   /* halt with interrupts on until the VM ends (never returns) */
#define SYS_TRIPLE_FAULT 3  /* test hook: make this vCPU triple-fault (never returns) */
#define SYS_IO          4   /* rdi = IO_* op, rsi = address or port, rdx = value; rax = value read */

/* SYS_IO operations: MMIO outside the user mapping and ports above the I/O bitmap. */
#define IO_RD32         0
#define IO_WR32         1
#define IO_RD64         2
#define IO_WR64         3
#define IO_RD8          4
#define IO_WR8          5
#define IO_INB          6
#define IO_OUTB         7
#define IO_INL          8
#define IO_OUTL         9
#define IO_RDMSR        10                  /* rsi = MSR index; rax = edx:eax */
#define IO_CPUID        11                  /* rsi = leaf | subleaf << 32, rdx = 0-3 (eax-edx) */
#define SYS_KCALL       5   /* rdi = op, rsi/rdx = arguments: ring-0 primitives (kcall.h) */

/* User stacks: 16 KiB per vCPU (u_stacks in u_main.c). */
#define USTACK_SHIFT    14
#define USTACK_SIZE     (1 << USTACK_SHIFT)

/* Offsets in struct ucpu (guest.h) used by the assembly handlers. */
#define UCPU_TICKS      0
#define UCPU_IPI        8

#define LAPIC_BASE      0xFEE00000
#define TIMER_HZ        100

/* Ports. */
#define COM1            0x3F8
#define PORT_RESULTS    0xE0
#define PORT_EXIT       0xF4
#define FWCFG_SEL       0x510
#define FWCFG_DATA      0x511

#endif
