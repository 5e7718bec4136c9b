/* SPDX-License-Identifier: MIT */
/*
 * Guest entry point.  The monitor starts every vCPU here at CPL 3 with
 *   %rdi = vCPU index, %rsi = VMCS GPA, %rsp = top of this vCPU's stack.
 * vCPU 0 runs vmq_guest_init(vmcs) and vmq_main(), then exits the VM with
 * vmq_main's return value; the others run vmq_secondary(index) and park.
 */
        .section .text.start, "ax", @progbits
        .globl  _start
        .type   _start, @function
_start:
        xorl    %ebp, %ebp              /* end of the frame chain */
        movq    %rsi, vmq__vmcs(%rip)   /* same value on every vCPU */
        andq    $-16, %rsp              /* SysV: 16-byte aligned at each call */
        testq   %rdi, %rdi
        jnz     1f

        movq    %rsi, %rdi
        call    vmq_guest_init
        call    vmq_main
        movl    %eax, %edi
        call    vmq_exit                /* does not return */
        jmp     .

1:      /* %edi = index */
        call    vmq_secondary
        call    vmq_park                /* does not return */
        jmp     .
        .size   _start, . - _start

        .section .note.GNU-stack, "", @progbits
