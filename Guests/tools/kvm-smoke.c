/* kvm-smoke.c - a deliberately minimal KVM runner that exercises the
 * GiantVM 64-bit entry path of the test guest on this machine's /dev/kvm
 * before the real VMM exists. ONE vCPU; the local APIC is a stub (reads of
 * ID return 0, writes are ignored) except that vector 0x30 (the guest's
 * timer vector) is injected every 10 ms with KVM_INTERRUPT when the guest
 * can take it, and HLT waits for the next tick.
 * It proves the entry contract (GDT at 0x1000, boot info at 0x2000, command
 * line at 0x3000, page tables at 0x9000, 64-bit entry state) and the ring-0
 * path up to ring 3 on PVM, and runs the workloads that need no interrupts
 * (all workloads with one vCPU, error paths).
 *
 * usage: kvm-smoke ELF "cmdline" [memory_mib]
 * exit status: the guest's port-0xF4 value (0 = pass), 100+ on runner errors.
 * Not a VMM: the real one is giantvm. */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static void on_alarm(int sig) { (void)sig; }

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "kvm-smoke: %s: %s\n", what, strerror(errno));
    exit(100);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: kvm-smoke ELF \"cmdline\" [memory_mib]\n");
        return 100;
    }
    uint64_t mem_size = (argc > 3 ? strtoull(argv[3], 0, 10) : 64) << 20;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("open /dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    uint8_t *mem = mmap(0, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) die("mmap guest RAM");
    struct kvm_userspace_memory_region region = {.slot = 0, .guest_phys_addr = 0,
                                                 .memory_size = mem_size, .userspace_addr = (uint64_t)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");

    /* ELF64: copy each PT_LOAD to p_paddr (RAM is zero, so the bss tail is too) */
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) die(argv[1]);
    struct stat st;
    fstat(fd, &st);
    uint8_t *img = mmap(0, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (img == MAP_FAILED) die("mmap image");
    Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64) {
        fprintf(stderr, "kvm-smoke: %s is not ELF64\n", argv[1]);
        return 100;
    }
    for (int i = 0; i < eh->e_phnum; i++) {
        Elf64_Phdr *ph = (Elf64_Phdr *)(img + eh->e_phoff + (uint64_t)i * eh->e_phentsize);
        if (ph->p_type != PT_LOAD) continue;
        if (ph->p_paddr + ph->p_memsz > mem_size) { fprintf(stderr, "kvm-smoke: segment beyond RAM\n"); return 100; }
        memcpy(mem + ph->p_paddr, img + ph->p_offset, ph->p_filesz);
    }

    /* the contract: GDT, boot info, command line, page tables */
    uint64_t *gdt = (uint64_t *)(mem + 0x1000);
    gdt[1] = 0x00AF9B000000FFFFULL;
    gdt[2] = 0x00CF93000000FFFFULL;
    uint8_t *bi = mem + 0x2000;
    const char *cmd = argv[2];
    uint32_t u32v;
    uint64_t u64v;
    u32v = 0x47564D42; memcpy(bi + 0, &u32v, 4);
    u32v = 1; memcpy(bi + 4, &u32v, 4);
    u32v = 1; memcpy(bi + 8, &u32v, 4);           /* total_vcpus */
    u32v = 1; memcpy(bi + 12, &u32v, 4);          /* node_count */
    memcpy(bi + 16, &mem_size, 8);
    u64v = 0x3000; memcpy(bi + 24, &u64v, 8);
    u32v = (uint32_t)strlen(cmd); memcpy(bi + 32, &u32v, 4);
    memcpy(mem + 0x3000, cmd, strlen(cmd));
    uint64_t *pml4 = (uint64_t *)(mem + 0x9000), *pdpt = (uint64_t *)(mem + 0xA000), *pd = (uint64_t *)(mem + 0xB000);
    pml4[0] = 0xA000 | 3;
    for (int i = 0; i < 4; i++) pdpt[i] = (0xB000 + 0x1000 * (uint64_t)i) | 3;
    for (uint64_t i = 0; i < 2048; i++) pd[i] = (i << 21) | 0x83;

    int cpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (cpu < 0) die("KVM_CREATE_VCPU");
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, cpu, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");

    /* CPUID: supported set, no x2APIC, plus timing leaf 0x40000010 */
    struct { struct kvm_cpuid2 c; struct kvm_cpuid_entry2 e[256]; } cp = {.c.nent = 250};
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cp) < 0) die("KVM_GET_SUPPORTED_CPUID");
    int tsc_khz = ioctl(cpu, KVM_GET_TSC_KHZ, 0);
    int have_hv = 0;
    for (uint32_t i = 0; i < cp.c.nent; i++) {
        struct kvm_cpuid_entry2 *e = &cp.e[i];
        if (e->function == 1) e->ecx &= ~(1u << 21);
        if (e->function == 0x40000000) { e->eax = 0x40000010; have_hv = 1; }
    }
    if (!have_hv) cp.e[cp.c.nent++] = (struct kvm_cpuid_entry2){.function = 0x40000000, .eax = 0x40000010};
    if (tsc_khz > 0) cp.e[cp.c.nent++] = (struct kvm_cpuid_entry2){.function = 0x40000010, .eax = (uint32_t)tsc_khz, .ebx = 1000000};
    if (ioctl(cpu, KVM_SET_CPUID2, &cp) < 0) die("KVM_SET_CPUID2");

    struct kvm_sregs s;
    if (ioctl(cpu, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
    struct kvm_segment code = {.base = 0, .limit = 0xFFFFFFFF, .selector = 0x08, .type = 11, .present = 1,
                               .dpl = 0, .db = 0, .s = 1, .l = 1, .g = 1};
    struct kvm_segment data = {.base = 0, .limit = 0xFFFFFFFF, .selector = 0x10, .type = 3, .present = 1,
                               .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1};
    s.cs = code;
    s.ds = s.es = s.ss = s.fs = s.gs = data;
    s.tr = (struct kvm_segment){.base = 0, .limit = 0x67, .selector = 0, .type = 11, .present = 1};
    s.gdt.base = 0x1000; s.gdt.limit = 23;
    s.idt.base = 0; s.idt.limit = 0;
    s.cr0 = 0x80000031; s.cr3 = 0x9000; s.cr4 = 0x20; s.efer = 0x500;
    if (ioctl(cpu, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS");
    struct kvm_regs r = {.rip = eh->e_entry, .rdi = 0x2000, .rsp = 0, .rflags = 2};
    if (ioctl(cpu, KVM_SET_REGS, &r) < 0) die("KVM_SET_REGS");

    /* a 10 ms SIGALRM kicks KVM_RUN out (EINTR) so ticks can be injected */
    struct sigaction sa = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &sa, 0);
    struct itimerval it = {{0, 10000}, {0, 10000}};
    setitimer(ITIMER_REAL, &it, 0);
    uint64_t next_tick = now_ns() + 10000000, ticks = 0;
    int pending = 0;
    for (;;) {
        if (now_ns() >= next_tick) { pending = 1; next_tick += 10000000; }
        run->request_interrupt_window = 0;
        if (pending) {
            if (run->ready_for_interrupt_injection && run->if_flag) {
                struct kvm_interrupt irq = {.irq = 0x30};
                if (ioctl(cpu, KVM_INTERRUPT, &irq) < 0) die("KVM_INTERRUPT");
                pending = 0;
                ticks++;
            } else {
                run->request_interrupt_window = 1;
            }
        }
        if (ioctl(cpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR) continue;
            die("KVM_RUN");
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            uint8_t *d = (uint8_t *)run + run->io.data_offset;
            uint16_t port = run->io.port;
            if (run->io.direction == KVM_EXIT_IO_OUT) {
                if (port == 0x3F8) fwrite(d, 1, run->io.count * run->io.size, stdout), fflush(stdout);
                else if (port == 0xF4) {
                    uint32_t v = 0;
                    memcpy(&v, d, run->io.size < 4 ? run->io.size : 4);
                    fprintf(stderr, "kvm-smoke: guest exit %u (%llu timer interrupts injected)\n", v,
                            (unsigned long long)ticks);
                    return (int)v;
                }
                /* 0xE0 (results) and anything else: ignored */
            } else {
                memset(d, port == 0x3FD ? 0x60 : 0xFF, run->io.size * run->io.count);
            }
            break;
        }
        case KVM_EXIT_MMIO:
            if (!run->mmio.is_write) memset(run->mmio.data, 0, run->mmio.len);  /* APIC ID 0, ICR idle */
            break;
        case KVM_EXIT_HLT: {
            uint64_t t = now_ns();
            if (!pending && next_tick > t) {
                struct timespec d = {0, (long)(next_tick - t)};
                nanosleep(&d, 0);
            }
            break;
        }
        case KVM_EXIT_IRQ_WINDOW_OPEN:
            break;
        default: {
            struct kvm_regs g;
            ioctl(cpu, KVM_GET_REGS, &g);
            fprintf(stderr, "kvm-smoke: exit reason %u at rip=0x%llx rsp=0x%llx\n", run->exit_reason,
                    (unsigned long long)g.rip, (unsigned long long)g.rsp);
            return 102;
        }
        }
    }
}
