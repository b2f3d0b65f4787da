/* guest.h - definitions shared by the ring-0 kernel (k_*.c, k_boot.S) and the
 * ring-3 workloads (u_*.c) of the GiantVM SMP test guest.
 *
 * Everything here is compiled with -mgeneral-regs-only: CR4 carries PAE only
 * (no OSFXSR/OSXSAVE), so SSE/x87 would fault in both rings. See README.md for
 * the entry contract and the memory map. */
#ifndef GUEST_H
#define GUEST_H

#include "layout.h"

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;
typedef int i32;

#define PAGE 4096
#define PAGE_ALIGNED __attribute__((aligned(PAGE)))
#define NORETURN __attribute__((noreturn))

/* Boot info at 0x2000, written by the VMM (or by the multiboot entry under QEMU). */
struct bootinfo {
    u32 magic;          /* BOOTINFO_MAGIC 'GVMB' */
    u32 version;        /* 1 */
    u32 total_vcpus;
    u32 node_count;
    u64 memory_bytes;
    u64 cmdline_gpa;    /* 0x3000 */
    u32 cmdline_len;
    u32 reserved;
    u8 vcpu_node[256];  /* node of each vCPU, indexed by APIC id */
} __attribute__((packed));

/* Version 2 only: the modules (guest.modules), at BOOTINFO_ADDR + BOOTINFO_MODS. */
struct bootmods {
    u32 count;
    u32 reserved;
    struct { u64 start, length; } mod[MAX_MODULES];
} __attribute__((packed));

/* Guest-wide information the kernel hands to ring 3 (user-readable page). */
struct ginfo {
    u32 vcpus;
    u32 nodes;
    u64 memory_bytes;
    u64 tsc_hz;          /* 0 when CPUID gave nothing (ring 3 then calibrates) */
    u64 apic_bus_hz;     /* value used to program the timer */
    u32 apic_bus_src;    /* 0 = assumed 1 GHz, 1 = CPUID 0x40000010, 2 = CPUID 0x15 */
    u32 tsc_src;         /* 0 = none, 1 = CPUID 0x40000010, 2 = 0x15, 3 = 0x16, 4 = PIT (ring 3) */
    u32 started;         /* vCPUs that reached ring 3 setup (kernel count) */
    u32 cmdline_len;
    u64 heap_start;      /* first free user byte (2 MiB aligned) */
    u64 heap_end;        /* end of usable RAM for workloads */
    u32 nmods;           /* modules the VMM loaded (boot info v2), above the image, below heap_start */
    u32 pad;
    u64 mod_start[MAX_MODULES], mod_len[MAX_MODULES];
    u8 vcpu_node[MAX_VCPUS];
    char cmdline[CMDLINE_MAX + 1];
};

/* Per-vCPU user-visible page: the kernel's interrupt handlers update ticks and
 * ipi_recv; the workloads keep their per-vCPU state here. One page per vCPU so
 * that the DSM never false-shares two vCPUs' counters. */
struct ucpu {
    volatile u64 ticks;                    /* +0: written by the timer handler */
    volatile u32 ipi_recv[MAX_VCPUS];      /* +8: [sender] written by the IPI handler */
    u32 id;
    u32 sense;                             /* global barrier sense */
    u32 gsense;                            /* group barrier sense */
    u32 pad;
    u64 t0, t1;                            /* benchmark timestamps */
    u64 val[8];                            /* benchmark results */
} PAGE_ALIGNED;

extern struct ginfo g_info;
extern struct ucpu g_ucpu[MAX_VCPUS];

/* ring-3 entry point (u_main.c) */
void user_main(u64 id) NORETURN;

void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" ::"a"(v), "Nd"(port)); }
static inline void outl(u16 port, u32 v) { __asm__ volatile("outl %0, %1" ::"a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 v; __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port)); return v; }
static inline u64 rdtsc(void) {
    u32 lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}
static inline void cpu_relax(void) { __asm__ volatile("pause" ::: "memory"); }
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }
static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d) {
    __asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}
static inline u32 xchg32(volatile u32 *p, u32 v) {
    __asm__ volatile("xchgl %0, %1" : "+r"(v), "+m"(*p) : : "memory");
    return v;
}
static inline u32 fetch_add32(volatile u32 *p, u32 v) {
    __asm__ volatile("lock xaddl %0, %1" : "+r"(v), "+m"(*p) : : "memory");
    return v;
}
static inline u64 fetch_add64(volatile u64 *p, u64 v) {
    __asm__ volatile("lock xaddq %0, %1" : "+r"(v), "+m"(*p) : : "memory");
    return v;
}

#endif
