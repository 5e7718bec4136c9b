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
 * is mapped supervisor-only.  Returns 0, -EINVAL (bad range) or -ENOSPC
 * (tables do not fit the system area).
 */
int vmq_x86_build(void *system, const struct vmq_x86_map *maps, size_t nmaps,
                  struct vmq_x86_boot *ret);

/* Special registers for 64-bit CPL 3 entry (long mode, paging, flat
 * segments of DPL 3, TSS loaded). Starts from the vCPU's current sregs. */
void vmq_x86_setup_sregs(const struct vmq_x86_boot *boot, struct kvm_sregs *sregs);

/* General registers: rip, rsp, rdi, rsi; RFLAGS = IOPL 3, IF clear. */
void vmq_x86_setup_regs(uint64_t entry, uint64_t stack, uint64_t arg0, uint64_t arg1,
                        struct kvm_regs *regs);

#endif /* VMQ_X86_H */
