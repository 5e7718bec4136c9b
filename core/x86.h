/* SPDX-License-Identifier: MIT */
/*
 * x86-64 bootstrap for CPL 3 guests: identity page tables, GDT and TSS built
 * by the monitor in the guest's supervisor-only system area, and the register
 * state that enters the guest directly in 64-bit mode at CPL 3 with IOPL 3.
 *
 * Why CPL 3: on the machines vmq is developed on, KVM runs nested through a
 * module that emulates guest code at CPL 0 (about 2 us per instruction) but
 * runs CPL 3 code natively.  A guest that needs no interrupts and no
 * privileged instructions can live entirely at CPL 3; port I/O (our
 * hypercalls) is allowed by IOPL 3.  This is equally valid on bare-metal KVM.
 */
#ifndef VMQ_X86_H
#define VMQ_X86_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/kvm.h>

#include "core/vmq-abi.h"

/*
 * GDT selectors.  The layout copies the one of x86-64 Linux on purpose: under
 * the PVM nested hypervisor the guest's user code really runs on the host's
 * user segments, so a guest that reads %cs/%ss sees 0x33/0x2b whatever we
 * say; with the same numbers in our GDT, what it reads is also what we set.
 * The user selectors carry RPL 3.
 */
#define VMQ_X86_KERNEL_CS 0x10u
#define VMQ_X86_KERNEL_DS 0x18u
#define VMQ_X86_USER_DS (0x28u | 3u)
#define VMQ_X86_USER_CS (0x30u | 3u)
#define VMQ_X86_TSS_SEL 0x38u /* 16-byte descriptor: two GDT slots */
#define VMQ_X86_GDT_ENTRIES 9u
/* Offset of the TSS in the GDT page (the last page of the system area). */
#define VMQ_X86_TSS_OFF 0x80u

/*
 * Ports the TSS I/O permission bitmap opens at CPL 3: the vmq hypercall
 * range [VMQ_HC_PORT_BASE, VMQ_HC_PORT_BASE + 0x100), doorbell included.
 * IOPL 3 alone does not do: PVM runs the guest's user code with the host's
 * IOPL 0 and emulates `in`/`out` from the #GP, checking the TSS bitmap.
 */
/* The ports opened in the TSS I/O bitmap: the VM's port range (vmq-abi.h)
 * and the 3 ports after it, so that a 32-bit access at 0x5fd-0x5ff reaches
 * the monitor instead of faulting; the monitor itself refuses accesses
 * that start past the range.  Multiples of 8: whole bitmap bytes. */
#define VMQ_X86_IO_PORT_FIRST VMQ_PORT_FIRST
#define VMQ_X86_IO_PORT_END (VMQ_PORT_END + 8u)

/* Entry RFLAGS: IOPL 3 (port I/O allowed at CPL 3), reserved bit 1, IF clear. */
#define VMQ_X86_RFLAGS 0x3002ull

/* A guest-physical range to identity-map for the guest. */
struct vmq_x86_map {
        uint64_t gpa;  /* 4 KiB aligned */
        uint64_t size; /* 4 KiB multiple */
        bool user;     /* accessible at CPL 3 */
        bool writable;
};

struct vmq_x86_boot {
        uint64_t cr3;
        uint64_t gdt_base;
        uint16_t gdt_limit;
        uint64_t tss_base;
};

/*
 * Writes page tables, GDT and TSS into the system area.  `system` is the host
 * pointer of guest-physical [VMQ_SYSTEM_GPA, VMQ_SYSTEM_END).  Ranges may use
 * 2 MiB page-table entries where a whole aligned 2 MiB is mapped with the same
 * attributes; everything not listed is not present.  The system area itself
 * is mapped supervisor-only; a range overlapping it, another range, or
 * the end of the link window (VMQ_LINK_GPA + VMQ_LINK_WINDOW), or not 4 KiB aligned, is -EINVAL.  Zero-size ranges are
 * ignored.  Returns 0, -EINVAL (bad range) or -ENOSPC (tables do not fit the
 * system area: at most 12 page directories and page tables together).
 */
int vmq_x86_build(void *system, const struct vmq_x86_map *maps, size_t nmaps,
                  struct vmq_x86_boot *ret);

/* CR0.PG: paging on, as vmq_x86_setup_sregs() leaves it. */
#define VMQ_X86_CR0_PG (1ull << 31)

/* Special registers for 64-bit CPL 3 entry (long mode, paging, flat
 * segments of DPL 3, busy TSS loaded, no IDT so that any exception becomes a
 * triple fault, i.e. KVM_EXIT_SHUTDOWN).  Starts from the vCPU's current
 * sregs (KVM_GET_SREGS) so that fields KVM owns, like apic_base, are kept. */
void vmq_x86_setup_sregs(const struct vmq_x86_boot *boot, struct kvm_sregs *sregs);

/* General registers: rip, rsp, rdi, rsi; RFLAGS = VMQ_X86_RFLAGS; all
 * other registers zero. */
void vmq_x86_setup_regs(uint64_t entry, uint64_t stack, uint64_t arg0, uint64_t arg1,
                        struct kvm_regs *regs);

#endif /* VMQ_X86_H */
