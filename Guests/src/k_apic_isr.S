/* k_apic_isr.S - handlers of the test vectors 0x60-0x7F (kcall.h): count
 * per vCPU and vector; EOI the local APIC for 0x60-0x67 only. */
#include "layout.h"
#include "kcall.h"
#define CPU_ID_TO(reg)  mov %rsp, reg; and $~0xfff, reg; mov 0xff8(reg), reg

        .text
        .globl isr_test
        .balign 16
isr_test:
        .set    t, 0
        .rept   VEC_TEST_COUNT
        .balign 16
        push    %rax
        mov     $t, %eax
        jmp     test_common
        .set    t, t + 1
        .endr
test_common:
        push    %rdx
        CPU_ID_TO(%rdx)
        shl     $12, %rdx
        incl    g_irqtest(%rdx, %rax, 4)
        cmp     $8, %eax
        jae     1f
        mov     $(LAPIC_BASE + 0xB0), %edx      /* EOI */
        movl    $0, (%rdx)
1:      pop     %rdx
        pop     %rax
        iretq

        .section .note.GNU-stack, "", @progbits
