/* k_boot.S - entry points, AP trampoline, static page tables and GDT, and
 * the hot interrupt handlers of the test guest (ring 0).
 *
 * Ring 0 is emulated instruction by instruction under GiantVM's KVM (PVM),
 * so everything that can be static is static (page tables, GDT) and the
 * handlers that run often (timer, IPI, syscall) are a dozen instructions. */
#include "layout.h"

#define MB_MAGIC        0x1BADB002
#define MB_FLAGS        0x00010002      /* bit 1: memory info, bit 16: a.out kludge */
#define MSR_EFER        0xC0000080
#define PAGE_SIZE       4096

/* ------------------------------------------------------------------ */
/* Multiboot v1 header + 32-bit entry: used only when QEMU loads us.    */
/* Must be within the first 8 KiB of the file: it starts the image.     */
/* ------------------------------------------------------------------ */
        .section .multiboot, "ax"
        .code32
        .balign 4
mb_header:
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)
        .long mb_header                 /* header_addr */
        .long __image_start             /* load_addr */
        .long __load_end                /* load_end_addr */
        .long __image_end               /* bss_end_addr */
        .long mb_entry                  /* entry_addr */

/* EAX = 0x2BADB002, EBX = multiboot info, 32-bit flat protected mode, no
 * paging. Synthesise the GiantVM boot info at 0x2000 (vCPU count from
 * fw_cfg, memory size and command line from the multiboot info), then enter
 * long mode on the guest's own GDT and page tables and join the common
 * 64-bit entry exactly as the VMM would (RDI = 0x2000). */
mb_entry:
        cli
        cld
        mov     %ebx, %esi
        /* mask the 8259 PICs (the BIOS left the PIT on IRQ 0): only the
         * local APIC interrupts this guest. GiantVM has no 8259. */
        mov     $0xff, %al
        outb    %al, $0x21
        outb    %al, $0xa1
        /* zero 0x2000..0x3fff (boot info + command line page) */
        mov     $BOOTINFO_ADDR, %edi
        xor     %eax, %eax
        mov     $(0x2000 / 4), %ecx
        rep stosl
        movl    $BOOTINFO_MAGIC, BOOTINFO_ADDR
        movl    $1, BOOTINFO_ADDR + 4           /* version */
        movl    $1, BOOTINFO_ADDR + 12          /* node_count (vcpu_node[] = 0) */
        movl    $CMDLINE_ADDR, BOOTINFO_ADDR + 24
        /* vCPU count: fw_cfg key 0x05 (FW_CFG_NB_CPUS), 16-bit little endian */
        mov     $FWCFG_SEL, %dx
        mov     $0x05, %ax
        outw    %ax, %dx
        mov     $FWCFG_DATA, %dx
        inb     %dx, %al
        movzbl  %al, %ecx
        inb     %dx, %al
        movzbl  %al, %eax
        shl     $8, %eax
        or      %ecx, %eax
        cmp     $0xffff, %eax                   /* no fw_cfg: reads float high */
        jne     1f
        xor     %eax, %eax
1:      test    %eax, %eax
        jnz     1f
        mov     $1, %eax
1:      mov     %eax, BOOTINFO_ADDR + 8
        /* memory: (mem_upper + 1024) KiB when flags bit 0 is set */
        testl   $1, (%esi)
        jz      2f
        mov     8(%esi), %eax
        add     $1024, %eax
        xor     %edx, %edx
        shld    $10, %eax, %edx
        shl     $10, %eax
        mov     %eax, BOOTINFO_ADDR + 16
        mov     %edx, BOOTINFO_ADDR + 20
2:      /* modules (flags bit 3): boot info version 2 with the module table,
         * {u64 start, u64 length} from the multiboot {start, end, string, 0} */
        testl   $8, (%esi)
        jz      6f
        mov     20(%esi), %ecx                  /* mods_count */
        test    %ecx, %ecx
        jz      6f
        cmp     $MAX_MODULES, %ecx
        jbe     7f
        mov     $MAX_MODULES, %ecx
7:      movl    $2, BOOTINFO_ADDR + 4           /* version 2 */
        mov     %ecx, BOOTINFO_ADDR + BOOTINFO_MODS
        mov     24(%esi), %ebx                  /* mods_addr */
        mov     $(BOOTINFO_ADDR + BOOTINFO_MODS + 8), %edi
8:      mov     (%ebx), %eax                    /* mod_start */
        mov     %eax, (%edi)                    /* (high halves stay 0: zeroed above) */
        mov     4(%ebx), %edx                   /* mod_end */
        sub     %eax, %edx
        mov     %edx, 8(%edi)
        add     $16, %ebx
        add     $16, %edi
        dec     %ecx
        jnz     8b
6:      /* command line (flags bit 2). Multiboot loaders (QEMU, GRUB) put the
         * kernel path first: skip that word and the blanks after it. */
        testl   $4, (%esi)
        jz      5f
        mov     16(%esi), %esi
3:      movb    (%esi), %al                     /* skip the first word */
        test    %al, %al
        jz      4f
        cmp     $' ', %al
        je      4f
        inc     %esi
        jmp     3b
4:      movb    (%esi), %al                     /* skip blanks */
        cmp     $' ', %al
        jne     4f
        inc     %esi
        jmp     4b
4:      mov     $CMDLINE_ADDR, %edi
        xor     %ecx, %ecx
4:      movb    (%esi,%ecx), %al
        test    %al, %al
        jz      4f
        cmp     $CMDLINE_MAX, %ecx
        jae     4f
        movb    %al, (%edi,%ecx)
        inc     %ecx
        jmp     4b
4:      mov     %ecx, BOOTINFO_ADDR + 32        /* cmdline_len */
5:      /* long mode */
        lgdt    mb_gdtr
        mov     %cr4, %eax
        or      $0x20, %eax                     /* PAE */
        mov     %eax, %cr4
        mov     $k_pml4, %eax
        mov     %eax, %cr3
        mov     $MSR_EFER, %ecx
        rdmsr
        or      $0x100, %eax                    /* LME */
        wrmsr
        mov     %cr0, %eax
        or      $0x80000001, %eax               /* PG | PE */
        mov     %eax, %cr0
        ljmp    $SEL_KCODE, $mb_long

        .code64
mb_long:
        mov     $SEL_KDATA, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     $BOOTINFO_ADDR, %edi
        xor     %esp, %esp
        jmp     _start64

        .balign 8
mb_gdtr:
        .word   GDT_ENTRIES * 8 - 1
        .long   k_gdt

/* ------------------------------------------------------------------ */
/* AP trampoline: copied to TRAMPOLINE (< 1 MiB) by the BSP; an AP      */
/* starts here in real mode at CS = SIPI_VECTOR << 8, IP = 0.           */
/* ------------------------------------------------------------------ */
        .code16
        .globl tramp_start, tramp_end
tramp_start:
        cli
        mov     %cs, %ax
        mov     %ax, %ds
        lgdtl   tramp_gdtr - tramp_start
        mov     %cr0, %eax
        or      $1, %eax                        /* PE */
        mov     %eax, %cr0
        ljmpl   $SEL_KCODE32, $(TRAMPOLINE + tramp32 - tramp_start)
        .code32
tramp32:
        mov     $SEL_KDATA, %ax
        mov     %ax, %ds
        mov     %ax, %es
        mov     %ax, %ss
        mov     %cr4, %eax
        or      $0x20, %eax                     /* PAE */
        mov     %eax, %cr4
        mov     $k_pml4, %eax
        mov     %eax, %cr3
        mov     $MSR_EFER, %ecx
        rdmsr
        or      $0x100, %eax                    /* LME */
        wrmsr
        mov     %cr0, %eax
        and     $0x9fffffff, %eax               /* clear CD, NW (set by INIT) */
        or      $0x80000000, %eax               /* PG */
        mov     %eax, %cr0
        ljmp    $SEL_KCODE, $ap_entry64
        .balign 8
tramp_gdtr:
        .word   GDT_ENTRIES * 8 - 1
        .long   k_gdt
tramp_end:

/* ------------------------------------------------------------------ */
/* 64-bit entries                                                       */
/* ------------------------------------------------------------------ */
        .text
        .code64
/* e_entry. BSP from the VMM (or mb_long): CS=0x08, DS/ES/SS=0x10,
 * RDI=boot info, RSP=0. The BSP is vCPU 0 and uses stack page 0. */
        .globl _start64
_start64:
        cli
        mov     $(k_stacks + PAGE_SIZE - 16), %rsp
        movq    $0, k_stacks + PAGE_SIZE - 8    /* vCPU id for the handlers */
        call    kmain
        ud2

/* APs from the trampoline: CS=0x08 in long mode, own GDT and page tables. */
ap_entry64:
        mov     $(LAPIC_BASE + 0x20), %eax      /* APIC ID register */
        mov     (%rax), %eax
        shr     $24, %eax
        mov     %eax, %edi
        lea     1(%rdi), %rsp
        shl     $12, %rsp
        add     $k_stacks, %rsp
        mov     %rdi, -8(%rsp)                  /* vCPU id for the handlers */
        sub     $16, %rsp
        call    ap_main
        ud2

/* enter_user(id = rdi, rip = rsi, rsp = rdx): drop to ring 3, IF=1, IOPL=3. */
        .globl enter_user
enter_user:
        mov     $(SEL_UDATA | 3), %eax
        mov     %ax, %ds
        mov     %ax, %es
        pushq   $(SEL_UDATA | 3)
        pushq   %rdx
        pushq   $0x3202                         /* IOPL=3, IF=1 */
        pushq   $(SEL_UCODE | 3)
        pushq   %rsi
        iretq

/* ------------------------------------------------------------------ */
/* Interrupt handlers. Interrupts only arrive in ring 3 or in the idle  */
/* loop, so RSP is always within this vCPU's 4 KiB kernel stack page,   */
/* whose last quadword holds the vCPU id.                               */
/* ------------------------------------------------------------------ */
#define CPU_ID_TO(reg)  mov %rsp, reg; and $~0xfff, reg; mov 0xff8(reg), reg

        .globl isr_timer
        .balign 16
isr_timer:
        push    %rax
        CPU_ID_TO(%rax)
        shl     $12, %rax
        incq    g_ucpu + UCPU_TICKS(%rax)
        mov     $(LAPIC_BASE + 0xB0), %eax      /* EOI */
        movl    $0, (%rax)
        pop     %rax
        iretq

/* IPI from vCPU s arrives on vector VEC_IPI_BASE + s: 16-byte stubs. */
        .globl isr_ipi
        .balign 16
isr_ipi:
        .set    s, 0
        .rept   MAX_VCPUS
        .balign 16
        push    %rax
        mov     $s, %eax
        jmp     ipi_common
        .set    s, s + 1
        .endr
ipi_common:
        push    %rdx
        CPU_ID_TO(%rdx)
        shl     $12, %rdx
        incl    g_ucpu + UCPU_IPI(%rdx, %rax, 4)
        mov     $(LAPIC_BASE + 0xB0), %eax      /* EOI */
        movl    $0, (%rax)
        pop     %rdx
        pop     %rax
        iretq

        .globl isr_spurious
        .balign 16
isr_spurious:
        iretq

/* Syscall gate: `int $0x80` from ring 3 (DPL 3 interrupt gate, so IF is
 * off); rax = number, rdi/rsi = arguments, rax = result. On PVM an `int n`
 * from ring 3 raises #UD instead of taking the gate (measured), so isr_ud
 * recognises the two bytes CD 80 at the faulting user rip, steps over them
 * and comes here with the same frame. Exceptions from ring 3 are delivered
 * normally there. (SYSCALL is no alternative: PVM jumps to LSTAR without
 * leaving CPL 3.) */
        .globl isr_syscall
        .balign 16
isr_syscall:
        cmp     $SYS_SEND_IPI, %rax
        je      sys_send_ipi
        cmp     $SYS_TICKS, %rax
        je      sys_ticks
        cmp     $SYS_IDLE, %rax
        je      sys_idle
        cmp     $SYS_TRIPLE_FAULT, %rax
        je      sys_triple_fault
        cmp     $SYS_IO, %rax
        je      sys_io
        cmp     $SYS_KCALL, %rax
        je      sys_kcall
        mov     $-1, %rax
        iretq
/* rdi = op, rsi/rdx = arguments: k_call (k_apic.c); rax = its result. */
sys_kcall:
        push    %rcx
        push    %rsi
        push    %rdi
        push    %r8
        push    %r9
        push    %r10
        push    %r11
        push    %rdx
        sub     $8, %rsp                        /* 16-byte alignment for the call */
        call    k_call
        add     $8, %rsp
        pop     %rdx
        pop     %r11
        pop     %r10
        pop     %r9
        pop     %r8
        pop     %rdi
        pop     %rsi
        pop     %rcx
        iretq
sys_send_ipi:                                   /* rdi = APIC id, rsi = vector */
        push    %rdx
        push    %rcx
        mov     $(LAPIC_BASE + 0x300), %edx     /* ICR low; ICR high at +0x10 */
1:      mov     (%rdx), %ecx
        test    $0x1000, %ecx                   /* delivery status: pending */
        jz      2f
        pause
        jmp     1b
2:      mov     %edi, %ecx
        shl     $24, %ecx
        mov     %ecx, 0x10(%rdx)
        movzbl  %sil, %ecx
        or      $0x4000, %ecx                   /* fixed, physical, assert */
        mov     %ecx, (%rdx)
        xor     %eax, %eax
        pop     %rcx
        pop     %rdx
        iretq
sys_ticks:
        CPU_ID_TO(%rax)
        shl     $12, %rax
        mov     g_ucpu + UCPU_TICKS(%rax), %rax
        iretq
sys_idle:
        sti
1:      hlt
        jmp     1b
/* test hook for the VMM's triple-fault handling: no IDT, then an exception
 * (#UD -> #GP for the missing gate -> #DF -> shutdown) */
sys_triple_fault:
        lidt    empty_idtr
        ud2
        .balign 16
empty_idtr:
        .word   0
        .quad   0

/* SYS_IO: one access for ring 3 (u_pc.c): rdi = op, rsi = address/port, rdx = value. */
sys_io:
        push    %rdx
        xor     %eax, %eax
        cmp     $IO_RD32, %rdi
        jne     1f
        movl    (%rsi), %eax
        jmp     9f
1:      cmp     $IO_WR32, %rdi
        jne     1f
        movl    %edx, (%rsi)
        jmp     9f
1:      cmp     $IO_RD64, %rdi
        jne     1f
        movq    (%rsi), %rax
        jmp     9f
1:      cmp     $IO_WR64, %rdi
        jne     1f
        movq    %rdx, (%rsi)
        jmp     9f
1:      cmp     $IO_RD8, %rdi
        jne     1f
        movzbl  (%rsi), %eax
        jmp     9f
1:      cmp     $IO_WR8, %rdi
        jne     1f
        movb    %dl, (%rsi)
        jmp     9f
1:      cmp     $IO_INB, %rdi
        jne     1f
        mov     %esi, %edx
        inb     %dx, %al
        jmp     9f
1:      cmp     $IO_OUTB, %rdi
        jne     1f
        mov     %edx, %eax
        mov     %esi, %edx
        outb    %al, %dx
        jmp     9f
1:      cmp     $IO_INL, %rdi
        jne     1f
        mov     %esi, %edx
        inl     %dx, %eax
        jmp     9f
1:      cmp     $IO_OUTL, %rdi
        jne     1f
        mov     %edx, %eax
        mov     %esi, %edx
        outl    %eax, %dx
        jmp     9f
1:      cmp     $IO_RDMSR, %rdi
        jne     1f
        push    %rcx
        mov     %esi, %ecx
        rdmsr
        shl     $32, %rdx
        or      %rdx, %rax
        pop     %rcx
        jmp     9f
1:      cmp     $IO_CPUID, %rdi
        jne     1f
        push    %rbx
        push    %rcx
        push    %rdx
        mov     %esi, %eax
        mov     %rsi, %rcx
        shr     $32, %rcx
        cpuid
        pop     %rsi                            /* register index */
        cmp     $1, %rsi
        cmove   %ebx, %eax
        cmp     $2, %rsi
        cmove   %ecx, %eax
        cmp     $3, %rsi
        cmove   %edx, %eax
        mov     %eax, %eax
        pop     %rcx
        pop     %rbx
        jmp     9f
1:      mov     $-1, %rax
9:      pop     %rdx
        iretq

/* Device interrupts: IOAPIC pin p arrives on VEC_DEV_BASE + p; each stub
 * counts it in g_dev_irqs[p] (u_pc.c) and sends EOI. */
        .globl isr_dev
        .balign 16
isr_dev:
        .set    p, 0
        .rept   DEV_LINES
        .balign 16
        push    %rax
        mov     $p, %eax
        jmp     dev_common
        .set    p, p + 1
        .endr
dev_common:
        lock incl g_dev_irqs(, %rax, 4)
        mov     $(LAPIC_BASE + 0xB0), %eax      /* EOI */
        movl    $0, (%rax)
        pop     %rax
        iretq

/* #UD: `int $0x80` from ring 3 on PVM (see above), else a real #UD. */
        .globl isr_ud
        .balign 16
isr_ud:
        push    %rax
        testb   $3, 16(%rsp)                    /* frame: rax, rip, cs, ... */
        jz      1f
        mov     8(%rsp), %rax
        cmpw    $0x80CD, (%rax)                 /* int $0x80 */
        jne     1f
        add     $2, %rax
        mov     %rax, 8(%rsp)
        pop     %rax
        jmp     isr_syscall
1:      pop     %rax
        pushq   $0
        pushq   $6
        jmp     exc_common

/* Exceptions 0..31: uniform frame (dummy error code where the CPU pushes
 * none), then k_exception(frame), which reports and ends the VM. */
#define HAS_ERR(v) ((v) == 8 || (v) == 10 || (v) == 11 || (v) == 12 || (v) == 13 || (v) == 14 || (v) == 17 || (v) == 21 || (v) == 29 || (v) == 30)
        .globl isr_exc
        .balign 16
isr_exc:
        .set    v, 0
        .rept   32
        .balign 16
        .if     !HAS_ERR(v)
        pushq   $0
        .endif
        pushq   $v
        jmp     exc_common
        .set    v, v + 1
        .endr
exc_common:
        push    %r15
        push    %r14
        push    %r13
        push    %r12
        push    %r11
        push    %r10
        push    %r9
        push    %r8
        push    %rbp
        push    %rdi
        push    %rsi
        push    %rdx
        push    %rcx
        push    %rbx
        push    %rax
        mov     %rsp, %rdi
        call    k_exception                     /* returns only for a caught #GP (k_fixup) */
        pop     %rax
        pop     %rbx
        pop     %rcx
        pop     %rdx
        pop     %rsi
        pop     %rdi
        pop     %rbp
        pop     %r8
        pop     %r9
        pop     %r10
        pop     %r11
        pop     %r12
        pop     %r13
        pop     %r14
        pop     %r15
        add     $16, %rsp                       /* vector, error code */
        iretq

/* ------------------------------------------------------------------ */
/* Static data: GDT and page tables (no ring-0 instructions to build).  */
/* ------------------------------------------------------------------ */
        .data
        .balign PAGE_SIZE
        .globl k_gdt
k_gdt:
        .quad   0
        .quad   0x00AF9B000000FFFF      /* 0x08 kernel code, 64-bit (accessed preset) */
        .quad   0x00CF93000000FFFF      /* 0x10 kernel data */
        .quad   0x00CF9B000000FFFF      /* 0x18 kernel code, 32-bit (AP trampoline) */
        .quad   0x00CFF3000000FFFF      /* 0x20 user data, DPL 3 */
        .quad   0x00AFFB000000FFFF      /* 0x28 user code, 64-bit, DPL 3 */
        .fill   2 * MAX_VCPUS, 8, 0     /* 0x30 + 16*i: TSS of vCPU i (filled per vCPU) */

/* Identity map of the first 4 GiB with 2 MiB pages, accessed and dirty bits
 * preset in every entry (the CPU never writes the tables). 0..2 MiB (low
 * memory, the kernel) is supervisor-only; 2 MiB..0xFE000000 is user (the
 * workload image and heap); 0xFE000000..4 GiB (IOAPIC, LAPIC) is supervisor
 * and uncached. */
        .balign PAGE_SIZE
        .globl k_pml4
k_pml4:
        .quad   k_pdpt + 0x27           /* P RW U A */
        .fill   511, 8, 0
k_pdpt:
        .quad   k_pd + 0x0000 + 0x27
        .quad   k_pd + 0x1000 + 0x27
        .quad   k_pd + 0x2000 + 0x27
        .quad   k_pd + 0x3000 + 0x27
        .fill   508, 8, 0
k_pd:
        .set    i, 0
        .rept   2048
        .if     i == 0
        .quad   0xE3                    /* P RW A D PS */
        .elseif i < 0x7F0
        .quad   (i << 21) | 0xE7        /* P RW U A D PS */
        .else
        .quad   (i << 21) | 0xFB        /* P RW PWT PCD A D PS */
        .endif
        .set    i, i + 1
        .endr

        .section .note.GNU-stack, "", @progbits
