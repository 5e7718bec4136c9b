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

/* Boots `code` at VMQ_IMAGE_GPA with RAM [0, 4 MiB) in one memslot.  The
 * guest sees [VMQ_VMCS_GPA, 4 MiB) as user read/write, plus `extra`. */
static void tvm_boot(struct tvm *t, const uint8_t *code, size_t len,
                     const struct vmq_x86_map *extra, size_t nextra) {
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

        struct vmq_x86_map maps[8] = {
                {.gpa = VMQ_VMCS_GPA,
                 .size = TVM_MEM_SIZE - VMQ_VMCS_GPA,
                 .user = true,
                 .writable = true},
        };
        cr_assert_lt(nextra, VMQ_ARRAY_SIZE(maps));
        for (size_t i = 0; i < nextra; i++)
                maps[1 + i] = extra[i];
        struct vmq_x86_boot boot;
        int r = vmq_x86_build(t->mem + VMQ_SYSTEM_GPA, maps, 1 + nextra, &boot);
        cr_assert_eq(r, 0, "vmq_x86_build: %s", strerror(-r));

        r = vmq_kvm_set_memslot(t->vm_fd, 0, 0, TVM_MEM_SIZE, t->mem, 0);
        cr_assert_eq(r, 0, "set_memslot: %s", strerror(-r));

        t->vcpu_fd = vmq_kvm_create_vcpu(t->kvm_fd, t->vm_fd, 0, &t->run, &t->run_size);
        cr_assert_geq(t->vcpu_fd, 0, "create_vcpu: %s", strerror(-t->vcpu_fd));

        struct kvm_sregs sregs;
        cr_assert_eq(ioctl(t->vcpu_fd, KVM_GET_SREGS, &sregs), 0);
        vmq_x86_setup_sregs(&boot, &sregs);
        cr_assert_eq(ioctl(t->vcpu_fd, KVM_SET_SREGS, &sregs), 0, "KVM_SET_SREGS: %m");

        struct kvm_regs regs;
        vmq_x86_setup_regs(VMQ_IMAGE_GPA, TVM_STACK_TOP, 0, VMQ_VMCS_GPA, &regs);
        cr_assert_eq(ioctl(t->vcpu_fd, KVM_SET_REGS, &regs), 0, "KVM_SET_REGS: %m");
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
        tvm_boot(&t, code, sizeof(code), NULL, 0);

        tvm_expect_io(&t, KVM_EXIT_IO_IN, NOP_PORT);
        *io_data(&t) = 41;
        cr_assert_eq(tvm_expect_out(&t, NOP_PORT), 42);

        tvm_destroy(&t);
}
