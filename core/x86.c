/* SPDX-License-Identifier: MIT */
/*
 * x86-64 bootstrap: identity page tables, GDT and TSS in the system area,
 * and the register state for a direct 64-bit CPL 3 entry.
 *
 * The system area [VMQ_SYSTEM_GPA, VMQ_SYSTEM_END) is 15 pages:
 *
 *   page 0       PML4
 *   page 1       PDPT (one is enough: nothing is mapped above 4 GiB)
 *   pages 2..13  page directories and page tables, allocated on demand
 *   page 14      GDT at offset 0, TSS at VMQ_X86_TSS_OFF
 *
 * 2 MiB entries are used wherever one map covers a whole aligned 2 MiB, 4 KiB
 * entries elsewhere (typically only the first 2 MiB, where page 0 is absent,
 * the system area is supervisor-only and the VMCS is user).  Accessed and
 * dirty bits are preset so that the CPU never has to write back into the
 * tables: a page walk that writes is one more thing the nested
 * hypervisor of the development machines has to emulate.
 */
#include <errno.h>
#include <string.h>

#include "core/util.h"
#include "core/vmq-abi.h"
#include "core/x86.h"

#define PTE_P (1ull << 0)
#define PTE_W (1ull << 1)
#define PTE_U (1ull << 2)
#define PTE_A (1ull << 5)
#define PTE_D (1ull << 6)
#define PTE_PS (1ull << 7)
#define PTE_ADDR_MASK 0x000ffffffffff000ull

/* Non-leaf entries grant everything; the leaf decides. */
#define PTE_TABLE (PTE_P | PTE_W | PTE_U | PTE_A)

#define SYSTEM_PAGES ((VMQ_SYSTEM_END - VMQ_SYSTEM_GPA) / VMQ_PAGE_SIZE)
#define PML4_PAGE 0u
#define PDPT_PAGE 1u
#define FIRST_POOL_PAGE 2u
#define GDT_PAGE (SYSTEM_PAGES - 1u)

#define CR0_PE (1ull << 0)
#define CR0_MP (1ull << 1)
#define CR0_ET (1ull << 4)
#define CR0_NE (1ull << 5)
#define CR0_WP (1ull << 16)
#define CR4_PAE (1ull << 5)
#define CR4_OSFXSR (1ull << 9)
#define CR4_OSXMMEXCPT (1ull << 10)
#define EFER_LME (1ull << 8)
#define EFER_LMA (1ull << 10)

/* 64-bit TSS (Intel SDM vol. 3, figure 8-11). */
struct tss64 {
        uint32_t reserved0;
        uint64_t rsp[3];
        uint64_t reserved1;
        uint64_t ist[7];
        uint64_t reserved2;
        uint16_t reserved3;
        uint16_t iomap_base;
        /* One bit per port from 0, set = denied, then the 0xff byte the CPU
         * needs because it always reads two bytes of the bitmap. */
        uint8_t iomap[VMQ_X86_IO_PORT_END / 8 + 1];
} __attribute__((packed));
_Static_assert(__builtin_offsetof(struct tss64, iomap) == 104, "tss64 header");
_Static_assert(VMQ_X86_IO_PORT_FIRST % 8 == 0 && VMQ_X86_IO_PORT_END % 8 == 0, "ports");
_Static_assert(VMQ_X86_IO_PORT_FIRST <= VMQ_HC_PORT_BASE && VMQ_DOORBELL_PORT < VMQ_X86_IO_PORT_END,
               "hypercall ports are open");
_Static_assert(VMQ_X86_TSS_OFF + sizeof(struct tss64) <= VMQ_PAGE_SIZE, "TSS fits");
_Static_assert(VMQ_X86_TSS_OFF >= VMQ_X86_GDT_ENTRIES * 8, "TSS after the GDT");

struct builder {
        uint64_t *system; /* the system area as 4 KiB pages of 512 entries */
        unsigned next_page;
};

static uint64_t *page_ptr(struct builder *b, unsigned page) {
        return b->system + (size_t)page * 512u;
}

static uint64_t page_gpa(unsigned page) {
        return VMQ_SYSTEM_GPA + (uint64_t)page * VMQ_PAGE_SIZE;
}

/* Returns the table the entry points to, allocating it when absent.
 * NULL: out of room, or the entry is a large page (overlapping maps). */
static uint64_t *next_table(struct builder *b, uint64_t *entry, int *err) {
        if (*entry & PTE_P) {
                if (*entry & PTE_PS) {
                        *err = -EINVAL;
                        return NULL;
                }
                uint64_t gpa = *entry & PTE_ADDR_MASK;
                return page_ptr(b, (unsigned)((gpa - VMQ_SYSTEM_GPA) / VMQ_PAGE_SIZE));
        }
        if (b->next_page >= GDT_PAGE) {
                *err = -ENOSPC;
                return NULL;
        }
        unsigned page = b->next_page++;
        /* already zeroed by vmq_x86_build() */
        *entry = page_gpa(page) | PTE_TABLE;
        return page_ptr(b, page);
}

static int map_range(struct builder *b, uint64_t gpa, uint64_t size, uint64_t leaf_flags) {
        uint64_t *pml4 = page_ptr(b, PML4_PAGE);
        uint64_t end = gpa + size;
        int err = 0;

        while (gpa < end) {
                uint64_t *pdpt = next_table(b, &pml4[(gpa >> 39) & 511], &err);
                if (!pdpt)
                        return err;
                uint64_t *pd = next_table(b, &pdpt[(gpa >> 30) & 511], &err);
                if (!pd)
                        return err;
                uint64_t *pde = &pd[(gpa >> 21) & 511];

                if (VMQ_IS_ALIGNED(gpa, VMQ_HUGE_PAGE_SIZE) && end - gpa >= VMQ_HUGE_PAGE_SIZE &&
                    !(*pde & PTE_P)) {
                        *pde = gpa | leaf_flags | PTE_PS;
                        gpa += VMQ_HUGE_PAGE_SIZE;
                        continue;
                }

                uint64_t *pt = next_table(b, pde, &err);
                if (!pt)
                        return err;
                uint64_t *pte = &pt[(gpa >> 12) & 511];
                if (*pte & PTE_P)
                        return -EINVAL; /* two maps claim this page */
                *pte = gpa | leaf_flags;
                gpa += VMQ_PAGE_SIZE;
        }
        return 0;
}

static uint64_t segment_descriptor(uint64_t access, uint64_t flags) {
        /* base 0, limit 0xfffff (flat; ignored for 64-bit code) */
        return 0xffffull | (access << 40) | (0xfull << 48) | (flags << 52);
}

int vmq_x86_build(void *system, const struct vmq_x86_map *maps, size_t nmaps,
                  struct vmq_x86_boot *ret) {
        if (!system || (nmaps > 0 && !maps) || !ret)
                return -EINVAL;

        for (size_t i = 0; i < nmaps; i++) {
                const struct vmq_x86_map *m = &maps[i];
                if (!VMQ_IS_ALIGNED(m->gpa, VMQ_PAGE_SIZE) ||
                    !VMQ_IS_ALIGNED(m->size, VMQ_PAGE_SIZE))
                        return -EINVAL;
                if (m->size == 0)
                        continue;
                if (!vmq_range_within(m->gpa, m->size, 0, VMQ_LINK_GPA + VMQ_LINK_WINDOW))
                        return -EINVAL;
                /* The guest must never reach its own page tables. */
                if (vmq_ranges_overlap(m->gpa, m->size, VMQ_SYSTEM_GPA,
                                       VMQ_SYSTEM_END - VMQ_SYSTEM_GPA))
                        return -EINVAL;
        }

        struct builder b = {.system = system, .next_page = FIRST_POOL_PAGE};
        memset(system, 0, VMQ_SYSTEM_END - VMQ_SYSTEM_GPA);

        /* The PML4 -> PDPT link is fixed so the PDPT sits at page 1. */
        page_ptr(&b, PML4_PAGE)[0] = page_gpa(PDPT_PAGE) | PTE_TABLE;

        /* Supervisor-only, so that a CPL 3 access faults; writable so that
         * the CPU could set the TSS busy bit should it ever need to. */
        int r = map_range(&b, VMQ_SYSTEM_GPA, VMQ_SYSTEM_END - VMQ_SYSTEM_GPA,
                          PTE_P | PTE_W | PTE_A | PTE_D);
        if (r < 0)
                return r;

        for (size_t i = 0; i < nmaps; i++) {
                const struct vmq_x86_map *m = &maps[i];
                uint64_t flags = PTE_P | PTE_A | PTE_D;
                if (m->user)
                        flags |= PTE_U;
                if (m->writable)
                        flags |= PTE_W;
                r = map_range(&b, m->gpa, m->size, flags);
                if (r < 0)
                        return r;
        }

        /* GDT, then the TSS in the same page. */
        uint8_t *gdt_page = (uint8_t *)page_ptr(&b, GDT_PAGE);
        uint64_t *gdt = (uint64_t *)gdt_page;
        uint64_t tss_gpa = page_gpa(GDT_PAGE) + VMQ_X86_TSS_OFF;
        struct tss64 *tss = (struct tss64 *)(gdt_page + VMQ_X86_TSS_OFF);

        /* access byte: P | DPL | S | type (accessed preset); flags: G | L or D/B */
        gdt[VMQ_X86_KERNEL_CS >> 3] = segment_descriptor(0x9b, 0xa);
        gdt[VMQ_X86_KERNEL_DS >> 3] = segment_descriptor(0x93, 0xc);
        gdt[VMQ_X86_USER_DS >> 3] = segment_descriptor(0xf3, 0xc);
        gdt[VMQ_X86_USER_CS >> 3] = segment_descriptor(0xfb, 0xa);
        /* 16-byte system descriptor: busy 64-bit TSS */
        uint64_t tss_limit = sizeof(struct tss64) - 1;
        gdt[VMQ_X86_TSS_SEL >> 3] = tss_limit | ((tss_gpa & 0xffffff) << 16) | (0x8bull << 40) |
                                    (((tss_gpa >> 24) & 0xff) << 56);
        gdt[(VMQ_X86_TSS_SEL >> 3) + 1] = tss_gpa >> 32;

        /* Only the vmq ports are open; IOPL 3 makes the bitmap moot on
         * bare-metal KVM, but under PVM it is what the emulator checks. */
        tss->iomap_base = __builtin_offsetof(struct tss64, iomap);
        memset(tss->iomap, 0xff, sizeof(tss->iomap));
        memset(tss->iomap + VMQ_X86_IO_PORT_FIRST / 8, 0,
               (VMQ_X86_IO_PORT_END - VMQ_X86_IO_PORT_FIRST) / 8);

        ret->cr3 = page_gpa(PML4_PAGE);
        ret->gdt_base = page_gpa(GDT_PAGE);
        ret->gdt_limit = VMQ_X86_GDT_ENTRIES * 8 - 1;
        ret->tss_base = tss_gpa;
        return 0;
}

static void set_segment(struct kvm_segment *seg, uint16_t selector, uint8_t type, uint8_t dpl,
                        bool code64) {
        *seg = (struct kvm_segment){
                .base = 0,
                .limit = 0xffffffff,
                .selector = selector,
                .type = type,
                .present = 1,
                .dpl = dpl,
                .db = code64 ? 0 : 1,
                .s = 1,
                .l = code64 ? 1 : 0,
                .g = 1,
        };
}

void vmq_x86_setup_sregs(const struct vmq_x86_boot *boot, struct kvm_sregs *sregs) {
        /* type 0xb = execute/read, accessed; 0x3 = read/write, accessed */
        set_segment(&sregs->cs, VMQ_X86_USER_CS, 0xb, 3, true);
        set_segment(&sregs->ss, VMQ_X86_USER_DS, 0x3, 3, false);
        set_segment(&sregs->ds, VMQ_X86_USER_DS, 0x3, 3, false);
        set_segment(&sregs->es, VMQ_X86_USER_DS, 0x3, 3, false);
        set_segment(&sregs->fs, VMQ_X86_USER_DS, 0x3, 3, false);
        set_segment(&sregs->gs, VMQ_X86_USER_DS, 0x3, 3, false);

        sregs->tr = (struct kvm_segment){
                .base = boot->tss_base,
                .limit = sizeof(struct tss64) - 1,
                .selector = VMQ_X86_TSS_SEL,
                .type = 0xb, /* busy 64-bit TSS */
                .present = 1,
        };
        sregs->ldt = (struct kvm_segment){.unusable = 1, .type = 0x2};

        sregs->gdt.base = boot->gdt_base;
        sregs->gdt.limit = boot->gdt_limit;
        /* No IDT: any exception escalates to a triple fault, which KVM
         * reports as KVM_EXIT_SHUTDOWN: that is what "crashed" means. */
        sregs->idt.base = 0;
        sregs->idt.limit = 0;

        sregs->cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | VMQ_X86_CR0_PG;
        sregs->cr3 = boot->cr3;
        sregs->cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
        sregs->efer = EFER_LME | EFER_LMA;
        memset(sregs->interrupt_bitmap, 0, sizeof(sregs->interrupt_bitmap));
}

void vmq_x86_setup_regs(uint64_t entry, uint64_t stack, uint64_t arg0, uint64_t arg1,
                        struct kvm_regs *regs) {
        *regs = (struct kvm_regs){
                .rip = entry,
                .rsp = stack,
                .rdi = arg0,
                .rsi = arg1,
                .rflags = VMQ_X86_RFLAGS,
        };
}
