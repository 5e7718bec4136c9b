/* SPDX-License-Identifier: MIT */
/*
 * KVM wrappers and x86 bootstrap, on real micro-VMs.
 *
 * Each test boots a guest made of a few hand-assembled x86-64 instructions
 * placed at VMQ_IMAGE_GPA, in plain anonymous memory (no remap engine), with
 * the page tables, GDT and TSS of vmq_x86_build() and the CPL 3 entry state
 * of vmq_x86_setup_sregs()/vmq_x86_setup_regs().  The guests talk back by
 * port I/O, exactly as real vmq guests make hypercalls.
 *
 * The encodings in the comments were checked with GNU as.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include "core/kvm.h"
#include "core/util.h"
#include "core/vmq-abi.h"
#include "core/x86.h"
#include "tests/test-util.h"

/* Newer than the Debian 12 kernel headers; the running kernel may use it. */
#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT 39
#endif

#define TVM_MEM_SIZE (4ull << 20)
#define TVM_STACK_TOP TVM_MEM_SIZE
#define NOP_PORT (VMQ_HC_PORT_BASE + VMQ_HC_NOP)
/* Mapped by the guest page tables, backed by no memslot. */
#define UNBACKED_GPA 0x30000000ull
/* A page of RAM the probes poke at, in the 2 MiB page above the image. */
#define PROBE_GPA 0x200000ull

struct tvm {
        int kvm_fd;
        int vm_fd;
        int vcpu_fd;
        struct kvm_run *run;
        size_t run_size;
        uint8_t *mem;
};

static bool is_cloexec(int fd) {
        int flags = fcntl(fd, F_GETFD);
        return flags >= 0 && (flags & FD_CLOEXEC);
}

/* The guest's view unless a test says otherwise: [VMQ_VMCS_GPA, 4 MiB) user
 * read/write, plus page tables (but no memory) for [0x30000000, +2 MiB). */
static const struct vmq_x86_map default_maps[] = {
        {.gpa = VMQ_VMCS_GPA, .size = TVM_MEM_SIZE - VMQ_VMCS_GPA, .user = true, .writable = true},
        {.gpa = UNBACKED_GPA, .size = VMQ_HUGE_PAGE_SIZE, .user = true, .writable = true},
};

/* Boots `code` at VMQ_IMAGE_GPA with RAM [0, 4 MiB) in one memslot (unless
 * `no_memslot`), %rdi = arg0.  maps NULL: default_maps. */
static void tvm_boot_ext(struct tvm *t, const uint8_t *code, size_t len, uint64_t arg0,
                         const struct vmq_x86_map *maps, size_t nmaps, bool no_memslot) {
        vmq_test_need_kvm();
        t->kvm_fd = vmq_kvm_open();
        cr_assert_geq(t->kvm_fd, 0, "vmq_kvm_open: %s (these tests need /dev/kvm)",
                      strerror(-t->kvm_fd));
        t->vm_fd = vmq_kvm_create_vm(t->kvm_fd);
        cr_assert_geq(t->vm_fd, 0, "create_vm: %s", strerror(-t->vm_fd));

        t->mem = mmap(NULL, TVM_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
                      0);
        cr_assert_neq(t->mem, MAP_FAILED);
        cr_assert_leq(len, TVM_MEM_SIZE - VMQ_IMAGE_GPA);
        memcpy(t->mem + VMQ_IMAGE_GPA, code, len);

        if (!maps) {
                maps = default_maps;
                nmaps = VMQ_ARRAY_SIZE(default_maps);
        }
        struct vmq_x86_boot boot;
        int r = vmq_x86_build(t->mem + VMQ_SYSTEM_GPA, maps, nmaps, &boot);
        cr_assert_eq(r, 0, "vmq_x86_build: %s", strerror(-r));

        if (!no_memslot) {
                r = vmq_kvm_set_memslot(t->vm_fd, 0, 0, TVM_MEM_SIZE, t->mem, 0);
                cr_assert_eq(r, 0, "set_memslot: %s", strerror(-r));
        }

        t->vcpu_fd = vmq_kvm_create_vcpu(t->kvm_fd, t->vm_fd, 0, &t->run, &t->run_size);
        cr_assert_geq(t->vcpu_fd, 0, "create_vcpu: %s", strerror(-t->vcpu_fd));

        struct kvm_sregs sregs;
        cr_assert_eq(ioctl(t->vcpu_fd, KVM_GET_SREGS, &sregs), 0);
        vmq_x86_setup_sregs(&boot, &sregs);
        cr_assert_eq(ioctl(t->vcpu_fd, KVM_SET_SREGS, &sregs), 0, "KVM_SET_SREGS: %m");

        struct kvm_regs regs;
        vmq_x86_setup_regs(VMQ_IMAGE_GPA, TVM_STACK_TOP, arg0, VMQ_VMCS_GPA, &regs);
        cr_assert_eq(ioctl(t->vcpu_fd, KVM_SET_REGS, &regs), 0, "KVM_SET_REGS: %m");
}

static void tvm_boot(struct tvm *t, const uint8_t *code, size_t len, uint64_t arg0) {
        tvm_boot_ext(t, code, len, arg0, NULL, 0, false);
}

static void tvm_destroy(struct tvm *t) {
        if (t->run)
                munmap(t->run, t->run_size);
        if (t->mem)
                munmap(t->mem, TVM_MEM_SIZE);
        vmq_close(t->vcpu_fd);
        vmq_close(t->vm_fd);
        vmq_close(t->kvm_fd);
        *t = (struct tvm){.kvm_fd = -1, .vm_fd = -1, .vcpu_fd = -1};
}

/* KVM_RUN once; returns 0 or -errno. */
static int tvm_run(struct tvm *t) {
        if (ioctl(t->vcpu_fd, KVM_RUN, 0) < 0)
                return -errno;
        return 0;
}

static const char *exit_name(uint32_t reason) {
        switch (reason) {
        case KVM_EXIT_IO:
                return "IO";
        case KVM_EXIT_MMIO:
                return "MMIO";
        case KVM_EXIT_SHUTDOWN:
                return "SHUTDOWN";
        case KVM_EXIT_HLT:
                return "HLT";
        case KVM_EXIT_FAIL_ENTRY:
                return "FAIL_ENTRY";
        case KVM_EXIT_INTERNAL_ERROR:
                return "INTERNAL_ERROR";
        case KVM_EXIT_EXCEPTION:
                return "EXCEPTION";
        case KVM_EXIT_MEMORY_FAULT:
                return "MEMORY_FAULT";
        default:
                return "other";
        }
}

/* Runs until the next exit, which must be a 4-byte port access. */
static void tvm_expect_io(struct tvm *t, uint8_t direction, uint16_t port) {
        int r = tvm_run(t);
        cr_assert_eq(r, 0, "KVM_RUN: %s", strerror(-r));
        cr_assert_eq(t->run->exit_reason, KVM_EXIT_IO, "exit %u (%s), expected IO",
                     t->run->exit_reason, exit_name(t->run->exit_reason));
        cr_assert_eq(t->run->io.direction, direction);
        cr_assert_eq(t->run->io.port, port);
        cr_assert_eq(t->run->io.size, 4);
        cr_assert_eq(t->run->io.count, 1);
}

static uint32_t *io_data(struct tvm *t) {
        return (uint32_t *)((uint8_t *)t->run + t->run->io.data_offset);
}

/* Runs until an `out` of 4 bytes to `port` and returns the value. */
static uint32_t tvm_expect_out(struct tvm *t, uint16_t port) {
        tvm_expect_io(t, KVM_EXIT_IO_OUT, port);
        return *io_data(t);
}

Test(kvm, open_and_caps) {
        vmq_test_need_kvm();
        int before = vmq_test_count_fds();
        int kvm_fd = vmq_kvm_open();
        cr_assert_geq(kvm_fd, 0, "vmq_kvm_open: %s", strerror(-kvm_fd));
        cr_assert(is_cloexec(kvm_fd));
        cr_assert_gt(vmq_kvm_check_extension(kvm_fd, KVM_CAP_USER_MEMORY), 0);
        cr_assert_gt(vmq_kvm_check_extension(kvm_fd, KVM_CAP_IOEVENTFD), 0);
        cr_assert_eq(vmq_kvm_check_extension(-1, KVM_CAP_USER_MEMORY), -EBADF);
        vmq_close(kvm_fd);
        cr_assert_eq(vmq_test_count_fds(), before);
}

Test(kvm, open_override_env) {
        setenv("VMQ_KVM_DEVICE", "/nonexistent/kvm", 1);
        int r = vmq_kvm_open();
        unsetenv("VMQ_KVM_DEVICE");
        cr_assert_eq(r, -ENOENT);

        /* a device that is not KVM: the API version ioctl fails */
        setenv("VMQ_KVM_DEVICE", "/dev/null", 1);
        r = vmq_kvm_open();
        unsetenv("VMQ_KVM_DEVICE");
        cr_assert_lt(r, 0);
}

/*
 * in from the NOP port, add 1, out the result:
 *   66 ba 07 05   mov $0x507,%dx
 *   ed            in  (%dx),%eax
 *   83 c0 01      add $1,%eax
 *   ef            out %eax,(%dx)
 *   eb fe         jmp .
 */
Test(kvm, cpl3_port_io_roundtrip, .timeout = 30) {
        static const uint8_t code[] = {0x66, 0xba, 0x07, 0x05, 0xed, 0x83,
                                       0xc0, 0x01, 0xef, 0xeb, 0xfe};
        struct tvm t;
        tvm_boot(&t, code, sizeof(code), 0);

        tvm_expect_io(&t, KVM_EXIT_IO_IN, NOP_PORT);
        *io_data(&t) = 41;
        cr_assert_eq(tvm_expect_out(&t, NOP_PORT), 42);

        tvm_destroy(&t);
}

static void tvm_expect_shutdown(struct tvm *t) {
        int r = tvm_run(t);
        cr_assert_eq(r, 0, "KVM_RUN: %s", strerror(-r));
        cr_assert_eq(t->run->exit_reason, KVM_EXIT_SHUTDOWN, "exit %u (%s), expected SHUTDOWN",
                     t->run->exit_reason, exit_name(t->run->exit_reason));
}

static uint64_t tvm_rip(struct tvm *t) {
        struct kvm_regs regs;
        cr_assert_eq(ioctl(t->vcpu_fd, KVM_GET_REGS, &regs), 0);
        return regs.rip;
}

/*
 * After a KVM_EXIT_SHUTDOWN (triple fault): the vCPU stopped on the
 * faulting instruction, `rip`.  That holds on Intel, where KVM keeps the
 * guest state of a triple-fault exit.  On AMD the VMCB is undefined after
 * a SHUTDOWN intercept, so KVM INITs the vCPU there (arch/x86/kvm/svm/
 * svm.c, shutdown_interception()): RIP 0xfff0, CS 0xf000 at base
 * 0xffff0000, on bare metal as under nested SVM.  Then no RIP is left to
 * check; the callers' checks that the instruction had no effect remain.
 */
static void tvm_expect_shutdown_rip(struct tvm *t, uint64_t rip) {
        struct kvm_sregs sregs;
        cr_assert_eq(ioctl(t->vcpu_fd, KVM_GET_SREGS, &sregs), 0);
        uint64_t now = tvm_rip(t);
        if (now == 0xfff0 && sregs.cs.selector == 0xf000 && sregs.cs.base == 0xffff0000) {
                cr_log_info("the shutdown INITed the vCPU (KVM on AMD SVM): no RIP to check");
                return;
        }
        cr_assert_eq(now, rip, "rip %#llx after the triple fault, expected %#llx",
                     (unsigned long long)now, (unsigned long long)rip);
}

/*
 * Memory probe on the address in %rdi: report, read, report the value,
 * write 7, report.
 *   66 ba 07 05          mov  $0x507,%dx
 *   ef                   out  %eax,(%dx)        (marker: about to read)
 *   8b 07                mov  (%rdi),%eax
 *   ef                   out  %eax,(%dx)        (the value read)
 *   c7 07 07 00 00 00    movl $7,(%rdi)
 *   ef                   out  %eax,(%dx)        (marker: written)
 *   eb fe                jmp  .
 */
static const uint8_t probe_rw[] = {0x66, 0xba, 0x07, 0x05, 0xef, 0x8b, 0x07, 0xef, 0xc7,
                                   0x07, 0x07, 0x00, 0x00, 0x00, 0xef, 0xeb, 0xfe};
#define PROBE_RW_READ_RIP (VMQ_IMAGE_GPA + 5)
#define PROBE_RW_WRITE_RIP (VMQ_IMAGE_GPA + 8)

/* Write-only probe: report, write 7 to (%rdi), report. */
static const uint8_t probe_w[] = {0x66, 0xba, 0x07, 0x05, 0xef, 0xc7, 0x07,
                                  0x07, 0x00, 0x00, 0x00, 0xef, 0xeb, 0xfe};

#define PROBE_PATTERN 0x11111111u

static uint32_t *probe_word(struct tvm *t) {
        return (uint32_t *)(t->mem + PROBE_GPA);
}

/*
 * The guest reads its own segment selectors:
 *   66 ba 07 05   mov $0x507,%dx
 *   8c c8         mov %cs,%eax
 *   ef            out %eax,(%dx)
 *   8c d0         mov %ss,%eax
 *   ef            out %eax,(%dx)
 *   8c d8         mov %ds,%eax
 *   ef            out %eax,(%dx)
 *   eb fe         jmp .
 */
Test(kvm, guest_runs_at_cpl3, .timeout = 30) {
        static const uint8_t code[] = {0x66, 0xba, 0x07, 0x05, 0x8c, 0xc8, 0xef, 0x8c,
                                       0xd0, 0xef, 0x8c, 0xd8, 0xef, 0xeb, 0xfe};
        struct tvm t;
        tvm_boot(&t, code, sizeof(code), 0);

        uint32_t cs = tvm_expect_out(&t, NOP_PORT) & 0xffff;
        uint32_t ss = tvm_expect_out(&t, NOP_PORT) & 0xffff;
        uint32_t ds = tvm_expect_out(&t, NOP_PORT) & 0xffff;
        cr_log_info("guest reads cs=%#x ss=%#x ds=%#x", cs, ss, ds);
        cr_assert_eq(cs & 3, 3, "CPL %u", cs & 3);
        cr_assert_eq(ss & 3, 3);
        cr_assert_eq(cs, VMQ_X86_USER_CS);
        cr_assert_eq(ss, VMQ_X86_USER_DS);
        /* %ds is not checked: 64-bit mode ignores it, and under PVM the
         * guest reads 0 there whatever the sregs say. */

        tvm_destroy(&t);
}

/* A CPL 3 write into the supervisor-only system area (its own page tables)
 * is a page fault, and with no IDT a triple fault. */
Test(kvm, system_area_write_shuts_down, .timeout = 30) {
        struct tvm t;
        tvm_boot(&t, probe_w, sizeof(probe_w), VMQ_SYSTEM_GPA);
        uint8_t before[64];
        memcpy(before, t.mem + VMQ_SYSTEM_GPA, sizeof(before));

        tvm_expect_out(&t, NOP_PORT);
        tvm_expect_shutdown(&t);
        /* stopped on the faulting instruction, which had no effect */
        tvm_expect_shutdown_rip(&t, VMQ_IMAGE_GPA + 5);
        cr_assert_arr_eq(t.mem + VMQ_SYSTEM_GPA, before, sizeof(before));

        tvm_destroy(&t);
}

Test(kvm, null_page_read_shuts_down, .timeout = 30) {
        struct tvm t;
        tvm_boot(&t, probe_rw, sizeof(probe_rw), 0);
        tvm_expect_out(&t, NOP_PORT);
        tvm_expect_shutdown(&t);
        tvm_expect_shutdown_rip(&t, PROBE_RW_READ_RIP);
        tvm_destroy(&t);
}

/* Addresses the page tables do not map at all (here: non-canonical). */
Test(kvm, unmapped_address_shuts_down, .timeout = 30) {
        struct tvm t;
        tvm_boot(&t, probe_rw, sizeof(probe_rw), 0x50000000);
        tvm_expect_out(&t, NOP_PORT);
        tvm_expect_shutdown(&t);
        tvm_destroy(&t);
}

/*
 *   66 ba 07 05   mov $0x507,%dx
 *   ef            out %eax,(%dx)
 *   0f 0b         ud2
 */
Test(kvm, ud2_shuts_down, .timeout = 30) {
        static const uint8_t code[] = {0x66, 0xba, 0x07, 0x05, 0xef, 0x0f, 0x0b};
        struct tvm t;
        tvm_boot(&t, code, sizeof(code), 0);
        tvm_expect_out(&t, NOP_PORT);
        tvm_expect_shutdown(&t);
        tvm_destroy(&t);
}

/* A privileged instruction at CPL 3 (hlt) is a #GP: crashed, not halted. */
Test(kvm, hlt_at_cpl3_shuts_down, .timeout = 30) {
        static const uint8_t code[] = {0x66, 0xba, 0x07, 0x05, 0xef, 0xf4, 0xeb, 0xfe};
        struct tvm t;
        tvm_boot(&t, code, sizeof(code), 0);
        tvm_expect_out(&t, NOP_PORT);
        tvm_expect_shutdown(&t);
        tvm_destroy(&t);
}

/* A port outside the TSS bitmap (0x80) is refused at CPL 3 on PVM; on
 * bare-metal KVM IOPL 3 lets it through to userspace.  Both are safe: what
 * matters is that the vmq ports work, and that nothing else stops the host. */
Test(kvm, port_outside_vmq_range, .timeout = 30) {
        /* 66 ba 80 00  mov $0x80,%dx ; ef  out ; 66 ba 07 05 ; ef ; eb fe */
        static const uint8_t code[] = {0x66, 0xba, 0x80, 0x00, 0xef, 0x66,
                                       0xba, 0x07, 0x05, 0xef, 0xeb, 0xfe};
        struct tvm t;
        tvm_boot(&t, code, sizeof(code), 0);
        int r = tvm_run(&t);
        cr_assert_eq(r, 0);
        cr_log_info("out to port 0x80 at CPL 3: exit %u (%s)", t.run->exit_reason,
                    exit_name(t.run->exit_reason));
        if (t.run->exit_reason == KVM_EXIT_IO) {
                cr_assert_eq(t.run->io.port, 0x80);
                tvm_expect_out(&t, NOP_PORT);
        } else {
                cr_assert_eq(t.run->exit_reason, KVM_EXIT_SHUTDOWN);
        }
        tvm_destroy(&t);
}

/* Page-table write protection is enforced at CPL 3 (CR0.WP is moot there,
 * but the PTE's R/W bit is not). */
Test(kvm, readonly_pte_write_shuts_down, .timeout = 30) {
        static const struct vmq_x86_map maps[] = {
                {.gpa = VMQ_VMCS_GPA,
                 .size = PROBE_GPA - VMQ_VMCS_GPA,
                 .user = true,
                 .writable = true},
                {.gpa = PROBE_GPA, .size = VMQ_HUGE_PAGE_SIZE, .user = true, .writable = false},
        };
        struct tvm t;
        tvm_boot_ext(&t, probe_rw, sizeof(probe_rw), PROBE_GPA, maps, VMQ_ARRAY_SIZE(maps), false);
        *probe_word(&t) = PROBE_PATTERN;

        tvm_expect_out(&t, NOP_PORT);
        cr_assert_eq(tvm_expect_out(&t, NOP_PORT), PROBE_PATTERN);
        tvm_expect_shutdown(&t);
        tvm_expect_shutdown_rip(&t, PROBE_RW_WRITE_RIP);
        cr_assert_eq(*probe_word(&t), PROBE_PATTERN);
        tvm_destroy(&t);
}

/* A GPA the guest page tables map but no memslot backs is MMIO: each
 * access exits to userspace, which answers reads. */
Test(kvm, unbacked_gpa_is_mmio, .timeout = 30) {
        struct tvm t;
        tvm_boot(&t, probe_rw, sizeof(probe_rw), UNBACKED_GPA);

        tvm_expect_out(&t, NOP_PORT);
        cr_assert_eq(tvm_run(&t), 0);
        cr_assert_eq(t.run->exit_reason, KVM_EXIT_MMIO, "exit %u (%s)", t.run->exit_reason,
                     exit_name(t.run->exit_reason));
        cr_assert_eq(t.run->mmio.phys_addr, UNBACKED_GPA);
        cr_assert_eq(t.run->mmio.len, 4);
        cr_assert_eq(t.run->mmio.is_write, 0);
        uint32_t answer = 0xabcdef;
        memcpy(t.run->mmio.data, &answer, sizeof(answer));
        cr_assert_eq(tvm_expect_out(&t, NOP_PORT), answer);

        cr_assert_eq(tvm_run(&t), 0);
        cr_assert_eq(t.run->exit_reason, KVM_EXIT_MMIO);
        cr_assert_eq(t.run->mmio.phys_addr, UNBACKED_GPA);
        cr_assert_eq(t.run->mmio.is_write, 1);
        uint32_t written;
        memcpy(&written, t.run->mmio.data, sizeof(written));
        cr_assert_eq(written, 7);
        tvm_expect_out(&t, NOP_PORT);
        tvm_destroy(&t);
}

/* KVM_MEM_READONLY: reads hit memory, writes exit as MMIO and change
 * nothing.  (A way to share a page read-only with a guest.) */
Test(kvm, readonly_memslot_write_is_mmio, .timeout = 30) {
        struct tvm t;
        tvm_boot_ext(&t, probe_rw, sizeof(probe_rw), PROBE_GPA, NULL, 0, true);
        cr_assert_gt(vmq_kvm_check_extension(t.kvm_fd, KVM_CAP_READONLY_MEM), 0);
        cr_assert_eq(vmq_kvm_set_memslot(t.vm_fd, 0, 0, PROBE_GPA, t.mem, 0), 0);
        cr_assert_eq(vmq_kvm_set_memslot(t.vm_fd, 1, PROBE_GPA, TVM_MEM_SIZE - PROBE_GPA,
                                         t.mem + PROBE_GPA, KVM_MEM_READONLY),
                     0);
        *probe_word(&t) = PROBE_PATTERN;

        tvm_expect_out(&t, NOP_PORT);
        cr_assert_eq(tvm_expect_out(&t, NOP_PORT), PROBE_PATTERN);
        cr_assert_eq(tvm_run(&t), 0);
        cr_assert_eq(t.run->exit_reason, KVM_EXIT_MMIO, "exit %u (%s)", t.run->exit_reason,
                     exit_name(t.run->exit_reason));
        cr_assert_eq(t.run->mmio.phys_addr, PROBE_GPA);
        cr_assert_eq(t.run->mmio.is_write, 1);
        tvm_expect_out(&t, NOP_PORT);
        cr_assert_eq(*probe_word(&t), PROBE_PATTERN);
        tvm_destroy(&t);
}

/* A guest write to a page the host mapped PROT_READ: KVM_RUN fails with
 * EFAULT (no exit reason), the guest stays on the instruction, and once the
 * host makes the page writable again the same KVM_RUN resumes it. */
Test(kvm, host_prot_read_write_efaults, .timeout = 30) {
        struct tvm t;
        tvm_boot(&t, probe_rw, sizeof(probe_rw), PROBE_GPA);
        *probe_word(&t) = PROBE_PATTERN;
        cr_assert_eq(mprotect(t.mem + PROBE_GPA, VMQ_PAGE_SIZE, PROT_READ), 0);

        tvm_expect_out(&t, NOP_PORT);
        cr_assert_eq(tvm_expect_out(&t, NOP_PORT), PROBE_PATTERN);
        int r = tvm_run(&t);
        cr_log_info("guest write to PROT_READ page: KVM_RUN %d (%s), exit %u", r, strerror(-r),
                    t.run->exit_reason);
        cr_assert_eq(r, -EFAULT);
        cr_assert_eq(tvm_rip(&t), PROBE_RW_WRITE_RIP);
        cr_assert_eq(*probe_word(&t), PROBE_PATTERN);

        cr_assert_eq(mprotect(t.mem + PROBE_GPA, VMQ_PAGE_SIZE, PROT_READ | PROT_WRITE), 0);
        tvm_expect_out(&t, NOP_PORT);
        cr_assert_eq(*probe_word(&t), 7);
        tvm_destroy(&t);
}

Test(kvm, host_prot_none_read_efaults, .timeout = 30) {
        struct tvm t;
        tvm_boot(&t, probe_rw, sizeof(probe_rw), PROBE_GPA);
        cr_assert_eq(mprotect(t.mem + PROBE_GPA, VMQ_PAGE_SIZE, PROT_NONE), 0);

        tvm_expect_out(&t, NOP_PORT);
        cr_assert_eq(tvm_run(&t), -EFAULT);
        cr_assert_eq(tvm_rip(&t), PROBE_RW_READ_RIP);
        tvm_destroy(&t);
}

/*
 * The remap mechanism the engine relies on: a page of guest RAM replaced
 * under the running guest by mmap(MAP_FIXED) of another frame (a memfd page)
 * is what the guest sees on its next access, for reads and for writes.
 *   66 ba 07 05   mov $0x507,%dx
 *   8b 07         1: mov (%rdi),%eax
 *   ef            out %eax,(%dx)          (report the word)
 *   ed            in  (%dx),%eax
 *   01 07         add %eax,(%rdi)         (add what the host answered)
 *   eb f8         jmp 1b
 */
Test(kvm, remap_under_running_guest, .timeout = 30) {
        static const uint8_t code[] = {0x66, 0xba, 0x07, 0x05, 0x8b, 0x07,
                                       0xef, 0xed, 0x01, 0x07, 0xeb, 0xf8};
        struct tvm t;
        tvm_boot(&t, code, sizeof(code), PROBE_GPA);
        *probe_word(&t) = PROBE_PATTERN;

        cr_assert_eq(tvm_expect_out(&t, NOP_PORT), PROBE_PATTERN);
        tvm_expect_io(&t, KVM_EXIT_IO_IN, NOP_PORT);
        *io_data(&t) = 1;
        cr_assert_eq(tvm_expect_out(&t, NOP_PORT), PROBE_PATTERN + 1);
        cr_assert_eq(*probe_word(&t), PROBE_PATTERN + 1);

        /* The guest is about to `in`: swap its page now. */
        _cleanup_close_ int mfd = memfd_create("vmq-test-frame", MFD_CLOEXEC);
        cr_assert_geq(mfd, 0);
        cr_assert_eq(ftruncate(mfd, VMQ_PAGE_SIZE), 0);
        uint32_t fresh = 0x22222222;
        cr_assert_eq(pwrite(mfd, &fresh, sizeof(fresh), 0), (ssize_t)sizeof(fresh));
        void *p = mmap(t.mem + PROBE_GPA, VMQ_PAGE_SIZE, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_FIXED, mfd, 0);
        cr_assert_eq(p, t.mem + PROBE_GPA);

        tvm_expect_io(&t, KVM_EXIT_IO_IN, NOP_PORT);
        *io_data(&t) = 0;
        cr_assert_eq(tvm_expect_out(&t, NOP_PORT), fresh, "guest still sees the old frame");

        tvm_expect_io(&t, KVM_EXIT_IO_IN, NOP_PORT);
        *io_data(&t) = 5;
        cr_assert_eq(tvm_expect_out(&t, NOP_PORT), fresh + 5);
        uint32_t in_frame = 0;
        cr_assert_eq(pread(mfd, &in_frame, sizeof(in_frame), 0), (ssize_t)sizeof(in_frame));
        cr_assert_eq(in_frame, fresh + 5, "guest write did not land in the new frame");

        tvm_destroy(&t);
}

static double now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/*
 * The raw exit round trip: N `in` hypercalls, answered at once.
 *   66 ba 07 05      mov $0x507,%dx
 *   b9 xx xx xx xx   mov $N,%ecx
 *   ed               1: in (%dx),%eax
 *   ff c9            dec %ecx
 *   75 fb            jnz 1b
 *   66 ba 08 05      mov $0x508,%dx
 *   ef               out %eax,(%dx)
 *   eb fe            jmp .
 * Reported, not asserted: timing depends on the machine.
 */
Test(kvm, exit_roundtrip_cost, .timeout = 120) {
        enum { N = 2000 };
        uint8_t code[] = {0x66, 0xba, 0x07, 0x05, 0xb9, N & 0xff, (N >> 8) & 0xff,
                          0,    0,    0xed, 0xff, 0xc9, 0x75,     0xfb,
                          0x66, 0xba, 0x08, 0x05, 0xef, 0xeb,     0xfe};
        struct tvm t;
        tvm_boot(&t, code, sizeof(code), 0);

        unsigned exits = 0;
        double start = now_ns();
        for (;;) {
                cr_assert_eq(tvm_run(&t), 0);
                cr_assert_eq(t.run->exit_reason, KVM_EXIT_IO);
                if (t.run->io.port != NOP_PORT)
                        break;
                cr_assert_eq(t.run->io.direction, KVM_EXIT_IO_IN);
                *io_data(&t) = 0;
                exits++;
        }
        double per_exit = (now_ns() - start) / exits;
        cr_assert_eq(exits, N);
        cr_assert_eq(t.run->io.port, NOP_PORT + 1);
        fprintf(stderr, "kvm: port-I/O exit round trip: %.2f us (mean of %u)\n", per_exit / 1000,
                exits);
        tvm_destroy(&t);
}

/* An ioeventfd on the doorbell port completes the `out` in the kernel:
 * userspace sees only the next exit, and the eventfd counts the write. */
Test(kvm, ioeventfd_doorbell, .timeout = 30) {
        /* 66 ba f0 05  mov $0x5f0,%dx ; ef ; ef ; 66 ba 07 05 ; ef ; eb fe */
        static const uint8_t code[] = {0x66, 0xba, 0xf0, 0x05, 0xef, 0xef, 0x66,
                                       0xba, 0x07, 0x05, 0xef, 0xeb, 0xfe};
        struct tvm t;
        tvm_boot(&t, code, sizeof(code), 0);
        _cleanup_close_ int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        cr_assert_geq(efd, 0);
        cr_assert_eq(vmq_kvm_ioeventfd(t.vm_fd, VMQ_DOORBELL_PORT, 4, efd, true), 0);
        cr_assert_eq(vmq_kvm_ioeventfd(t.vm_fd, VMQ_DOORBELL_PORT, 3, efd, true), -EINVAL);

        tvm_expect_out(&t, NOP_PORT);
        uint64_t count = 0;
        cr_assert_eq(read(efd, &count, sizeof(count)), (ssize_t)sizeof(count));
        cr_assert_eq(count, 2);

        cr_assert_eq(vmq_kvm_ioeventfd(t.vm_fd, VMQ_DOORBELL_PORT, 4, efd, false), 0);
        /* already gone */
        cr_assert_lt(vmq_kvm_ioeventfd(t.vm_fd, VMQ_DOORBELL_PORT, 4, efd, false), 0);
        tvm_destroy(&t);
}

/* Length 0 matches a doorbell write of any size (outb as well as outl),
 * which is what "a write of any value" in the ABI needs. */
Test(kvm, ioeventfd_any_length, .timeout = 30) {
        /* 66 ba f0 05  mov $0x5f0,%dx ; ee  outb ; ef  outl ; 66 ba 07 05 ; ef ; eb fe */
        static const uint8_t code[] = {0x66, 0xba, 0xf0, 0x05, 0xee, 0xef, 0x66,
                                       0xba, 0x07, 0x05, 0xef, 0xeb, 0xfe};
        struct tvm t;
        tvm_boot(&t, code, sizeof(code), 0);
        cr_assert_gt(vmq_kvm_check_extension(t.kvm_fd, KVM_CAP_IOEVENTFD_ANY_LENGTH), 0);
        _cleanup_close_ int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        cr_assert_geq(efd, 0);
        cr_assert_eq(vmq_kvm_ioeventfd(t.vm_fd, VMQ_DOORBELL_PORT, 0, efd, true), 0);

        tvm_expect_out(&t, NOP_PORT);
        uint64_t count = 0;
        cr_assert_eq(read(efd, &count, sizeof(count)), (ssize_t)sizeof(count));
        cr_assert_eq(count, 2);
        tvm_destroy(&t);
}

Test(kvm, tsc_khz, .timeout = 30) {
        struct tvm t;
        static const uint8_t code[] = {0xeb, 0xfe};
        tvm_boot(&t, code, sizeof(code), 0);
        uint64_t khz = vmq_kvm_tsc_khz(t.vcpu_fd);
        cr_log_info("guest TSC: %llu kHz", (unsigned long long)khz);
        cr_assert_gt(khz, 100000, "TSC %llu kHz", (unsigned long long)khz);
        cr_assert_eq(vmq_kvm_tsc_khz(-1), 0);
        tvm_destroy(&t);
}

Test(kvm, memslot_checks) {
        vmq_test_need_kvm();
        int kvm_fd = vmq_kvm_open();
        cr_assert_geq(kvm_fd, 0);
        int vm_fd = vmq_kvm_create_vm(kvm_fd);
        cr_assert_geq(vm_fd, 0);
        void *mem = mmap(NULL, 2 * VMQ_PAGE_SIZE, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(mem, MAP_FAILED);

        cr_assert_eq(vmq_kvm_set_memslot(vm_fd, 0, 0x123, VMQ_PAGE_SIZE, mem, 0), -EINVAL);
        cr_assert_eq(vmq_kvm_set_memslot(vm_fd, 0, 0, 100, mem, 0), -EINVAL);
        cr_assert_eq(vmq_kvm_set_memslot(vm_fd, 0, 0, VMQ_PAGE_SIZE, (uint8_t *)mem + 8, 0),
                     -EINVAL);
        cr_assert_eq(
                vmq_kvm_set_memslot(vm_fd, 0, UINT64_MAX & ~0xfffull, 2 * VMQ_PAGE_SIZE, mem, 0),
                -EINVAL);
        cr_assert_eq(vmq_kvm_set_memslot(vm_fd, 0, 0, 2 * VMQ_PAGE_SIZE, mem, 0), 0);
        /* overlapping another slot: the kernel refuses */
        cr_assert_eq(vmq_kvm_set_memslot(vm_fd, 1, VMQ_PAGE_SIZE, VMQ_PAGE_SIZE, mem, 0), -EEXIST);
        /* size 0 deletes, then the range is free again */
        cr_assert_eq(vmq_kvm_set_memslot(vm_fd, 0, 0, 0, mem, 0), 0);
        cr_assert_eq(vmq_kvm_set_memslot(vm_fd, 1, VMQ_PAGE_SIZE, VMQ_PAGE_SIZE, mem, 0), 0);

        munmap(mem, 2 * VMQ_PAGE_SIZE);
        vmq_close(vm_fd);
        vmq_close(kvm_fd);
}

/* Creating and destroying a VM with vCPUs leaves no fd behind, and every
 * fd it had was close-on-exec. */
Test(kvm, teardown_leaks_no_fd, .timeout = 30) {
        vmq_test_need_kvm();
        int before = vmq_test_count_fds();
        for (int round = 0; round < 3; round++) {
                int kvm_fd = vmq_kvm_open();
                cr_assert_geq(kvm_fd, 0);
                int vm_fd = vmq_kvm_create_vm(kvm_fd);
                cr_assert_geq(vm_fd, 0);
                cr_assert(is_cloexec(vm_fd));

                int vcpu_fd[2];
                struct kvm_run *run[2];
                size_t run_size[2];
                for (unsigned i = 0; i < 2; i++) {
                        vcpu_fd[i] = vmq_kvm_create_vcpu(kvm_fd, vm_fd, i, &run[i], &run_size[i]);
                        cr_assert_geq(vcpu_fd[i], 0, "%s", strerror(-vcpu_fd[i]));
                        cr_assert(is_cloexec(vcpu_fd[i]));
                        cr_assert_geq(run_size[i], sizeof(struct kvm_run));
                }
                /* the same vCPU id twice is refused, and leaks nothing */
                struct kvm_run *dup_run;
                size_t dup_size;
                cr_assert_lt(vmq_kvm_create_vcpu(kvm_fd, vm_fd, 0, &dup_run, &dup_size), 0);
                cr_assert_eq(vmq_test_count_fds(), before + 4);

                for (unsigned i = 0; i < 2; i++) {
                        munmap(run[i], run_size[i]);
                        vmq_close(vcpu_fd[i]);
                }
                vmq_close(vm_fd);
                vmq_close(kvm_fd);
                cr_assert_eq(vmq_test_count_fds(), before);
        }
}

/* ---- page tables, checked by walking them as the CPU would ---- */

#define PTE_P 0x1ull
#define PTE_W 0x2ull
#define PTE_U 0x4ull
#define PTE_PS 0x80ull
#define PTE_ADDR 0x000ffffffffff000ull

static uint64_t *table_at(uint8_t *system, uint64_t gpa) {
        cr_assert(vmq_range_within(gpa, VMQ_PAGE_SIZE, VMQ_SYSTEM_GPA,
                                   VMQ_SYSTEM_END - VMQ_SYSTEM_GPA),
                  "table at %#llx outside the system area", (unsigned long long)gpa);
        return (uint64_t *)(system + (gpa - VMQ_SYSTEM_GPA));
}

/* Returns the effective leaf (address | P/W/U of all levels ANDed), 0 if
 * not present; *page_size gets 4 KiB or 2 MiB. */
static uint64_t walk(uint8_t *system, uint64_t cr3, uint64_t va, uint64_t *page_size) {
        uint64_t *table = table_at(system, cr3);
        uint64_t rights = PTE_P | PTE_W | PTE_U;
        for (int level = 3; level >= 0; level--) {
                uint64_t e = table[(va >> (12 + 9 * level)) & 511];
                if (!(e & PTE_P))
                        return 0;
                rights &= e;
                if (level == 1 && (e & PTE_PS)) {
                        *page_size = VMQ_HUGE_PAGE_SIZE;
                        return (e & PTE_ADDR & ~(VMQ_HUGE_PAGE_SIZE - 1ull)) |
                               (va & (VMQ_HUGE_PAGE_SIZE - 1) & ~0xfffull) | rights;
                }
                cr_assert(!(e & PTE_PS) || level == 0, "large page at level %d", level);
                if (level == 0) {
                        *page_size = VMQ_PAGE_SIZE;
                        return (e & PTE_ADDR) | rights;
                }
                table = table_at(system, e & PTE_ADDR);
        }
        return 0;
}

Test(kvm, x86_page_tables) {
        static const struct vmq_x86_map maps[] = {
                {.gpa = VMQ_VMCS_GPA, .size = 0x40000, .user = true, .writable = true},
                {.gpa = VMQ_IMAGE_GPA, .size = 0x300000, .user = true, .writable = false},
                {.gpa = VMQ_RX_GPA, .size = 0x400000, .user = true, .writable = true},
                {.gpa = VMQ_HUGE_RX_GPA + 0x1000, .size = 0x1000, .user = false, .writable = true},
                {.gpa = VMQ_GPA_LIMIT - 0x200000, .size = 0x200000, .user = true, .writable = true},
                {.gpa = VMQ_LINK_GPA, .size = VMQ_LINK_WINDOW, .user = true, .writable = true},
        };
        uint8_t *system = calloc(1, VMQ_SYSTEM_END - VMQ_SYSTEM_GPA);
        cr_assert_not_null(system);
        struct vmq_x86_boot boot;
        cr_assert_eq(vmq_x86_build(system, maps, VMQ_ARRAY_SIZE(maps), &boot), 0);
        cr_assert(vmq_range_within(boot.cr3, VMQ_PAGE_SIZE, VMQ_SYSTEM_GPA,
                                   VMQ_SYSTEM_END - VMQ_SYSTEM_GPA));

        struct {
                uint64_t va;
                uint64_t rights; /* 0: not present */
                uint64_t size;
        } expect[] = {
                {0, 0, 0},
                {0xfff, 0, 0},
                {VMQ_SYSTEM_GPA, PTE_P | PTE_W, VMQ_PAGE_SIZE},
                {VMQ_SYSTEM_END - 1, PTE_P | PTE_W, VMQ_PAGE_SIZE},
                {VMQ_VMCS_GPA, PTE_P | PTE_W | PTE_U, VMQ_PAGE_SIZE},
                {VMQ_VMCS_GPA + 0x3ffff, PTE_P | PTE_W | PTE_U, VMQ_PAGE_SIZE},
                {VMQ_VMCS_GPA + 0x40000, 0, 0},
                {VMQ_IMAGE_GPA, PTE_P | PTE_U, VMQ_PAGE_SIZE},
                /* [2 MiB, 4 MiB) is one whole 2 MiB page */
                {0x200000, PTE_P | PTE_U, VMQ_HUGE_PAGE_SIZE},
                {0x3fffff, PTE_P | PTE_U, VMQ_HUGE_PAGE_SIZE},
                {0x400000, 0, 0},
                {VMQ_RX_GPA + 0x3ff000, PTE_P | PTE_W | PTE_U, VMQ_HUGE_PAGE_SIZE},
                {VMQ_RX_GPA + 0x400000, 0, 0},
                {VMQ_HUGE_RX_GPA, 0, 0},
                {VMQ_HUGE_RX_GPA + 0x1000, PTE_P | PTE_W, VMQ_PAGE_SIZE},
                {VMQ_HUGE_RX_GPA + 0x2000, 0, 0},
                {VMQ_GPA_LIMIT - 1, PTE_P | PTE_W | PTE_U, VMQ_HUGE_PAGE_SIZE},
                /* the link window, above the 4 GiB of regions */
                {VMQ_LINK_GPA, PTE_P | PTE_W | PTE_U, VMQ_HUGE_PAGE_SIZE},
                {VMQ_LINK_GPA + VMQ_LINK_WINDOW - 1, PTE_P | PTE_W | PTE_U, VMQ_HUGE_PAGE_SIZE},
                {VMQ_LINK_GPA + VMQ_LINK_WINDOW, 0, 0},
                {0x30000000, 0, 0},
        };
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(expect); i++) {
                uint64_t size = 0;
                uint64_t leaf = walk(system, boot.cr3, expect[i].va, &size);
                cr_assert_eq(leaf & (PTE_P | PTE_W | PTE_U), expect[i].rights,
                             "va %#llx: rights %#llx, expected %#llx",
                             (unsigned long long)expect[i].va, (unsigned long long)(leaf & 7),
                             (unsigned long long)expect[i].rights);
                if (!expect[i].rights)
                        continue;
                cr_assert_eq(size, expect[i].size, "va %#llx: page size",
                             (unsigned long long)expect[i].va);
                /* identity mapped */
                cr_assert_eq(leaf & PTE_ADDR, expect[i].va & ~0xfffull);
        }

        /* GDT: user code is 64-bit DPL 3, user data DPL 3, TSS busy */
        uint64_t *gdt = (uint64_t *)(system + (boot.gdt_base - VMQ_SYSTEM_GPA));
        cr_assert_eq(boot.gdt_limit, VMQ_X86_GDT_ENTRIES * 8 - 1);
        uint64_t ucs = gdt[VMQ_X86_USER_CS >> 3];
        cr_assert_eq((ucs >> 45) & 3, 3, "user CS DPL");
        cr_assert_eq((ucs >> 53) & 1, 1, "user CS L");
        cr_assert_eq((ucs >> 47) & 1, 1, "user CS P");
        cr_assert_eq((gdt[VMQ_X86_USER_DS >> 3] >> 45) & 3, 3, "user DS DPL");
        cr_assert_eq((gdt[VMQ_X86_KERNEL_CS >> 3] >> 45) & 3, 0, "kernel CS DPL");
        uint64_t tss = gdt[VMQ_X86_TSS_SEL >> 3];
        cr_assert_eq((tss >> 40) & 0xf, 0xb, "busy 64-bit TSS");
        uint64_t tss_base = ((tss >> 16) & 0xffffff) | (((tss >> 56) & 0xff) << 24) |
                            (gdt[(VMQ_X86_TSS_SEL >> 3) + 1] << 32);
        cr_assert_eq(tss_base, boot.tss_base);

        /* The TSS I/O bitmap opens the vmq ports and nothing else. */
        uint8_t *tss_mem = system + (boot.tss_base - VMQ_SYSTEM_GPA);
        uint16_t iomap;
        memcpy(&iomap, tss_mem + 102, sizeof(iomap));
        for (unsigned port = 0; port < VMQ_X86_IO_PORT_END + 8; port += 8) {
                bool open = port >= VMQ_X86_IO_PORT_FIRST && port < VMQ_X86_IO_PORT_END;
                cr_assert_eq(tss_mem[iomap + port / 8], open ? 0x00 : 0xff, "port %#x", port);
        }
        free(system);
}

Test(kvm, x86_build_rejects) {
        uint8_t *system = calloc(1, VMQ_SYSTEM_END - VMQ_SYSTEM_GPA);
        cr_assert_not_null(system);
        struct vmq_x86_boot boot;
        struct vmq_x86_map bad[] = {
                {.gpa = 0x10800, .size = 0x1000, .user = true},   /* misaligned */
                {.gpa = 0x10000, .size = 0x1800, .user = true},   /* size */
                {.gpa = 0x0, .size = 0x2000, .user = true},       /* system area */
                {.gpa = VMQ_SYSTEM_END - 0x1000, .size = 0x1000}, /* system area */
                /* past the link window, the end of what is mapped */
                {.gpa = VMQ_LINK_GPA + VMQ_LINK_WINDOW - 0x1000, .size = 0x2000},
                {.gpa = UINT64_MAX & ~0xfffull, .size = 0x2000},  /* wraps */
                {.gpa = 0x10000, .size = UINT64_MAX & ~0xfffull}, /* wraps */
        };
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(bad); i++)
                cr_assert_eq(vmq_x86_build(system, &bad[i], 1, &boot), -EINVAL, "case %zu", i);

        /* overlapping ranges, small and large pages */
        struct vmq_x86_map overlap4k[] = {{.gpa = 0x10000, .size = 0x3000, .user = true},
                                          {.gpa = 0x12000, .size = 0x1000, .user = false}};
        cr_assert_eq(vmq_x86_build(system, overlap4k, 2, &boot), -EINVAL);
        struct vmq_x86_map overlap2m[] = {{.gpa = 0x200000, .size = 0x200000, .user = true},
                                          {.gpa = 0x300000, .size = 0x1000, .user = true}};
        cr_assert_eq(vmq_x86_build(system, overlap2m, 2, &boot), -EINVAL);

        /* A 4 KiB page in each of many 2 MiB regions spread over the 4 GiB
         * needs more tables than the system area holds. */
        struct vmq_x86_map many[16];
        for (unsigned i = 0; i < VMQ_ARRAY_SIZE(many); i++)
                many[i] = (struct vmq_x86_map){
                        .gpa = 0xf000000ull * (i + 1), .size = 0x1000, .user = true};
        cr_assert_eq(vmq_x86_build(system, many, VMQ_ARRAY_SIZE(many), &boot), -ENOSPC);
        /* ...while a few fit, and empty ranges are ignored */
        struct vmq_x86_map few[] = {many[0], many[1], {.gpa = 0x20000, .size = 0}};
        cr_assert_eq(vmq_x86_build(system, few, VMQ_ARRAY_SIZE(few), &boot), 0);
        free(system);
}

/* The whole 4 GiB in one map is 2048 large pages in 4 page directories;
 * the link window above it one more. */
Test(kvm, x86_maps_4gib) {
        uint8_t *system = calloc(1, VMQ_SYSTEM_END - VMQ_SYSTEM_GPA);
        cr_assert_not_null(system);
        struct vmq_x86_map all[] = {
                {.gpa = VMQ_SYSTEM_END, .size = VMQ_GPA_LIMIT - VMQ_SYSTEM_END, .user = true},
                {.gpa = VMQ_LINK_GPA, .size = VMQ_LINK_WINDOW, .user = true, .writable = true},
        };
        struct vmq_x86_boot boot;
        cr_assert_eq(vmq_x86_build(system, all, VMQ_ARRAY_SIZE(all), &boot), 0);
        uint64_t size;
        cr_assert_eq(walk(system, boot.cr3, 0xfffff000ull, &size) & 7, PTE_P | PTE_U);
        cr_assert_eq(size, VMQ_HUGE_PAGE_SIZE);
        cr_assert_eq(walk(system, boot.cr3, 0x1ff000, &size) & 7, PTE_P | PTE_U);
        cr_assert_eq(size, VMQ_PAGE_SIZE);
        free(system);
}
