/* kvm-smoke.c - a deliberately minimal KVM runner that exercises the test
 * guest's GiantVM 64-bit entry path, AP trampoline and ring-3 workloads on
 * this machine's /dev/kvm before the real VMM exists. NOT the VMM (that is
 * giantvm): one process, one memory slot, and a stub local APIC that only
 * does what this guest needs:
 *   - reads: ID (0x20) = vCPU index << 24, everything else 0 (ICR idle);
 *   - ICR writes: fixed IPIs set a pending vector on the target; INIT is
 *     noted; SIPI starts the target AP in real mode at vector << 12;
 *   - vector 0x30 (the guest's timer vector) becomes pending on every vCPU
 *     every 10 ms; other writes (EOI, LVT, SVR...) are ignored.
 * Pending vectors are injected with KVM_INTERRUPT when the vCPU can take
 * them (highest first, one per entry), else an interrupt window is
 * requested. Kicks: SIGUSR1 to the vCPU thread, whose handler sets
 * immediate_exit so a kick just before KVM_RUN is not lost. HLT sleeps
 * until something is pending.
 *
 * Threads: one per vCPU (owns its fd and kvm_run), one ticker. Shared state:
 * the pending bitmaps and SIPI fields (atomics), the console mutex.
 *
 * usage: kvm-smoke ELF "cmdline" [vcpus (1)] [memory_mib (64)] [nodes (1)]
 * (nodes only fills the boot info's node_count and vcpu_node[], consecutive
 * vCPUs per node: everything still runs in this one process)
 * exit status: the guest's port-0xF4 value (0 = pass), 100+ on runner errors. */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAXV 64

struct vcpu {
    int id, fd;
    struct kvm_run *run;
    pthread_t thread;
    _Atomic uint64_t pending[4];   /* 256-bit "IRR" */
    atomic_int sipi;               /* 0 = waiting; else vector + 1 */
    uint32_t icr_high;
    uint64_t injected;
};

static int kvm, vm, nvcpu;
static uint8_t *mem;
static uint64_t mem_size, entry;
static struct vcpu vcpus[MAXV];
static __thread struct vcpu *self;
static pthread_mutex_t console = PTHREAD_MUTEX_INITIALIZER;
static uint64_t t_start;
static atomic_int first_byte;

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

static void on_kick(int sig)
{
    (void)sig;
    if (self) self->run->immediate_exit = 1;
}

static void post(struct vcpu *v, int vec)
{
    atomic_fetch_or(&v->pending[vec >> 6], 1ULL << (vec & 63));
    pthread_kill(v->thread, SIGUSR1);
}

static int highest_pending(struct vcpu *v)
{
    for (int w = 3; w >= 0; w--) {
        uint64_t m = atomic_load(&v->pending[w]);
        if (m) return w * 64 + 63 - __builtin_clzll(m);
    }
    return -1;
}

static void guest_exit(struct vcpu *v, uint32_t code)
{
    uint64_t inj = 0;
    for (int i = 0; i < nvcpu; i++) inj += vcpus[i].injected;
    fprintf(stderr, "kvm-smoke: guest exit %u from vCPU %d after %.1f ms (%llu interrupts injected)\n", code,
            v->id, (now_ns() - t_start) / 1e6, (unsigned long long)inj);
    exit((int)code);
}

static void lapic_access(struct vcpu *v, struct kvm_run *run)
{
    uint32_t reg = (uint32_t)(run->mmio.phys_addr & 0xFFF), val = 0;
    if (!run->mmio.is_write) {
        if (reg == 0x20) val = (uint32_t)v->id << 24;
        memcpy(run->mmio.data, &val, run->mmio.len < 4 ? run->mmio.len : 4);
        return;
    }
    memcpy(&val, run->mmio.data, run->mmio.len < 4 ? run->mmio.len : 4);
    if (reg == 0x310) v->icr_high = val;
    if (reg != 0x300) return;
    uint32_t dest = v->icr_high >> 24, mode = (val >> 8) & 7;
    if (dest >= (uint32_t)nvcpu) return;
    struct vcpu *t = &vcpus[dest];
    if (mode == 0) post(t, val & 0xFF);
    else if (mode == 6) {
        int expected = 0;
        atomic_compare_exchange_strong(&t->sipi, &expected, (int)(val & 0xFF) + 1);  /* later SIPIs ignored */
    }
}

static void set_long_mode(struct vcpu *v)
{
    struct kvm_sregs s;
    if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
    s.cs = (struct kvm_segment){.limit = 0xFFFFFFFF, .selector = 0x08, .type = 11, .present = 1, .s = 1, .l = 1, .g = 1};
    s.ds = s.es = s.ss = s.fs = s.gs =
        (struct kvm_segment){.limit = 0xFFFFFFFF, .selector = 0x10, .type = 3, .present = 1, .db = 1, .s = 1, .g = 1};
    s.tr = (struct kvm_segment){.limit = 0x67, .type = 11, .present = 1};
    s.gdt.base = 0x1000; s.gdt.limit = 23;
    s.idt.base = 0; s.idt.limit = 0;
    s.cr0 = 0x80000031; s.cr3 = 0x9000; s.cr4 = 0x20; s.efer = 0x500;
    if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS (long mode)");
    struct kvm_regs r = {.rip = entry, .rdi = 0x2000, .rsp = 0, .rflags = 2};
    if (ioctl(v->fd, KVM_SET_REGS, &r) < 0) die("KVM_SET_REGS");
}

/* state after INIT + SIPI: real mode at CS = vec << 8, IP = 0 */
static void set_sipi_state(struct vcpu *v, int vec)
{
    struct kvm_sregs s;
    if (ioctl(v->fd, KVM_GET_SREGS, &s) < 0) die("KVM_GET_SREGS");
    s.cs = (struct kvm_segment){.base = (uint64_t)vec << 12, .limit = 0xFFFF, .selector = (uint16_t)(vec << 8),
                                .type = 11, .present = 1, .s = 1};
    s.ds = s.es = s.ss = s.fs = s.gs = (struct kvm_segment){.limit = 0xFFFF, .type = 3, .present = 1, .s = 1};
    s.tr = (struct kvm_segment){.limit = 0xFFFF, .type = 11, .present = 1};
    s.ldt = (struct kvm_segment){.limit = 0xFFFF, .type = 2, .present = 1};
    s.gdt.base = 0; s.gdt.limit = 0xFFFF;
    s.idt.base = 0; s.idt.limit = 0xFFFF;
    s.cr0 = 0x60000010; s.cr2 = 0; s.cr3 = 0; s.cr4 = 0; s.efer = 0;
    if (ioctl(v->fd, KVM_SET_SREGS, &s) < 0) die("KVM_SET_SREGS (real mode)");
    struct kvm_regs r = {.rip = 0, .rflags = 2};
    if (ioctl(v->fd, KVM_SET_REGS, &r) < 0) die("KVM_SET_REGS");
}

static void *vcpu_thread(void *arg)
{
    struct vcpu *v = arg;
    self = v;
    struct kvm_run *run = v->run;
    if (v->id == 0) set_long_mode(v);
    else {
        while (!atomic_load(&v->sipi)) usleep(200);
        set_sipi_state(v, atomic_load(&v->sipi) - 1);
    }
    for (;;) {
        int vec = highest_pending(v);
        run->request_interrupt_window = 0;
        if (vec >= 0) {
            if (run->ready_for_interrupt_injection && run->if_flag) {
                struct kvm_interrupt irq = {.irq = (uint32_t)vec};
                if (ioctl(v->fd, KVM_INTERRUPT, &irq) < 0) die("KVM_INTERRUPT");
                atomic_fetch_and(&v->pending[vec >> 6], ~(1ULL << (vec & 63)));
                v->injected++;
                vec = highest_pending(v);
            }
            if (vec >= 0) run->request_interrupt_window = 1;
        }
        if (ioctl(v->fd, KVM_RUN, 0) < 0) {
            if (errno == EINTR) { run->immediate_exit = 0; continue; }
            die("KVM_RUN");
        }
        switch (run->exit_reason) {
        case KVM_EXIT_IO: {
            uint8_t *d = (uint8_t *)run + run->io.data_offset;
            uint16_t port = run->io.port;
            if (run->io.direction == KVM_EXIT_IO_OUT) {
                if (port == 0x3F8) {
                    if (!atomic_exchange(&first_byte, 1))
                        fprintf(stderr, "kvm-smoke: first serial byte %.1f ms after the first KVM_RUN\n",
                                (now_ns() - t_start) / 1e6);
                    pthread_mutex_lock(&console);
                    fwrite(d, 1, run->io.count * run->io.size, stdout);
                    fflush(stdout);
                    pthread_mutex_unlock(&console);
                } else if (port == 0xF4) {
                    uint32_t val = 0;
                    memcpy(&val, d, run->io.size < 4 ? run->io.size : 4);
                    guest_exit(v, val);
                }
                /* 0xE0 (results) and other ports: ignored */
            } else {
                memset(d, port == 0x3FD ? 0x60 : 0xFF, run->io.size * run->io.count);
            }
            break;
        }
        case KVM_EXIT_MMIO:
            if ((run->mmio.phys_addr & ~0xFFFULL) == 0xFEE00000) lapic_access(v, run);
            else if (!run->mmio.is_write) memset(run->mmio.data, 0xFF, run->mmio.len);
            break;
        case KVM_EXIT_HLT:
            while (highest_pending(v) < 0) usleep(100);
            break;
        case KVM_EXIT_IRQ_WINDOW_OPEN:
        case KVM_EXIT_INTR:
            break;
        default: {
            struct kvm_regs g;
            struct kvm_sregs sg;
            ioctl(v->fd, KVM_GET_REGS, &g);
            ioctl(v->fd, KVM_GET_SREGS, &sg);
            fprintf(stderr, "kvm-smoke: vCPU %d: exit reason %u at rip=0x%llx cs=0x%x cr0=0x%llx rsp=0x%llx\n", v->id,
                    run->exit_reason, (unsigned long long)g.rip, sg.cs.selector, (unsigned long long)sg.cr0,
                    (unsigned long long)g.rsp);
            exit(102);
        }
        }
    }
}

static void *ticker(void *arg)
{
    (void)arg;
    for (;;) {
        usleep(10000);
        for (int i = 0; i < nvcpu; i++)
            if (i == 0 || atomic_load(&vcpus[i].sipi)) post(&vcpus[i], 0x30);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: kvm-smoke ELF \"cmdline\" [vcpus] [memory_mib] [nodes]\n");
        return 100;
    }
    nvcpu = argc > 3 ? atoi(argv[3]) : 1;
    if (nvcpu < 1 || nvcpu > MAXV) { fprintf(stderr, "kvm-smoke: vcpus must be 1..%d\n", MAXV); return 100; }
    mem_size = (argc > 4 ? strtoull(argv[4], 0, 10) : 64) << 20;
    int nodes = argc > 5 ? atoi(argv[5]) : 1;
    if (nodes < 1 || nodes > nvcpu) { fprintf(stderr, "kvm-smoke: nodes must be 1..vcpus\n"); return 100; }
    kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("open /dev/kvm");
    vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    mem = mmap(0, mem_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) die("mmap guest RAM");
    struct kvm_userspace_memory_region region = {.slot = 0, .memory_size = mem_size, .userspace_addr = (uint64_t)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");

    /* ELF64: copy each PT_LOAD to p_paddr (fresh RAM is zero, so is the bss tail) */
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
    entry = eh->e_entry;

    /* the entry contract: GDT, boot info, command line, page tables */
    uint64_t *gdt = (uint64_t *)(mem + 0x1000);
    gdt[1] = 0x00AF9B000000FFFFULL;
    gdt[2] = 0x00CF93000000FFFFULL;
    uint8_t *bi = mem + 0x2000;
    const char *cmd = argv[2];
    uint32_t u32v;
    uint64_t u64v;
    u32v = 0x47564D42; memcpy(bi + 0, &u32v, 4);
    u32v = 1; memcpy(bi + 4, &u32v, 4);
    u32v = (uint32_t)nvcpu; memcpy(bi + 8, &u32v, 4);
    u32v = (uint32_t)nodes; memcpy(bi + 12, &u32v, 4);
    for (int i = 0; i < nvcpu; i++) bi[40 + i] = (uint8_t)(i * nodes / nvcpu);   /* vcpu_node[] */
    memcpy(bi + 16, &mem_size, 8);
    u64v = 0x3000; memcpy(bi + 24, &u64v, 8);
    u32v = (uint32_t)strlen(cmd); memcpy(bi + 32, &u32v, 4);
    memcpy(mem + 0x3000, cmd, strlen(cmd) < 4096 ? strlen(cmd) : 4095);
    uint64_t *pml4 = (uint64_t *)(mem + 0x9000), *pdpt = (uint64_t *)(mem + 0xA000), *pd = (uint64_t *)(mem + 0xB000);
    pml4[0] = 0xA000 | 3;
    for (int i = 0; i < 4; i++) pdpt[i] = (0xB000 + 0x1000 * (uint64_t)i) | 3;
    for (uint64_t i = 0; i < 2048; i++) pd[i] = (i << 21) | 0x83;

    /* CPUID: supported set without x2APIC, plus timing leaf 0x40000010 */
    struct { struct kvm_cpuid2 c; struct kvm_cpuid_entry2 e[256]; } cp = {.c.nent = 250};
    if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cp) < 0) die("KVM_GET_SUPPORTED_CPUID");
    int have_hv = 0;
    for (uint32_t i = 0; i < cp.c.nent; i++) {
        struct kvm_cpuid_entry2 *e = &cp.e[i];
        if (e->function == 1) e->ecx &= ~(1u << 21);
        if (e->function == 0x40000000) { e->eax = 0x40000010; have_hv = 1; }
    }
    if (!have_hv) cp.e[cp.c.nent++] = (struct kvm_cpuid_entry2){.function = 0x40000000, .eax = 0x40000010};
    int leaf10 = cp.c.nent++;

    struct sigaction sa = {.sa_handler = on_kick};
    sigaction(SIGUSR1, &sa, 0);
    int run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    for (int i = 0; i < nvcpu; i++) {
        struct vcpu *v = &vcpus[i];
        v->id = i;
        v->fd = ioctl(vm, KVM_CREATE_VCPU, i);
        if (v->fd < 0) die("KVM_CREATE_VCPU");
        v->run = mmap(0, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
        if (v->run == MAP_FAILED) die("mmap kvm_run");
        int tsc_khz = ioctl(v->fd, KVM_GET_TSC_KHZ, 0);
        cp.e[leaf10] = (struct kvm_cpuid_entry2){.function = 0x40000010, .eax = tsc_khz > 0 ? (uint32_t)tsc_khz : 0,
                                                 .ebx = 1000000};
        for (uint32_t k = 0; k < cp.c.nent; k++)
            if (cp.e[k].function == 1) cp.e[k].ebx = (cp.e[k].ebx & 0x00FFFFFF) | ((uint32_t)i << 24);
        if (ioctl(v->fd, KVM_SET_CPUID2, &cp) < 0) die("KVM_SET_CPUID2");
    }
    t_start = now_ns();
    for (int i = 0; i < nvcpu; i++)
        if (pthread_create(&vcpus[i].thread, 0, vcpu_thread, &vcpus[i])) die("pthread_create");
    pthread_t tk;
    pthread_create(&tk, 0, ticker, 0);
    pthread_join(vcpus[0].thread, 0);
    return 103;
}
