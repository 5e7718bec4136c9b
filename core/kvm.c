/* SPDX-License-Identifier: MIT */
/*
 * Thin wrappers over the KVM ioctl API.  They exist so that the engine never
 * sees an ioctl's -1/errno convention, and so that every fd we create is
 * checked to be close-on-exec: the kernel creates VM and vCPU fds with
 * O_CLOEXEC, but an fd that leaked into a child would keep a whole guest's
 * memory alive, so we verify it rather than trust it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/kvm.h"
#include "core/util.h"

/* Makes sure fd is close-on-exec; returns 0 or a negative errno. */
static int ensure_cloexec(int fd) {
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0)
                return -errno;
        if (flags & FD_CLOEXEC)
                return 0;
        if (fcntl(fd, F_SETFD, flags | FD_CLOEXEC) < 0)
                return -errno;
        return 0;
}

int vmq_kvm_open(void) {
        const char *path = getenv("VMQ_KVM_DEVICE");
        if (!path || !*path)
                path = "/dev/kvm";

        _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return -errno;

        int version = ioctl(fd, KVM_GET_API_VERSION, 0);
        if (version < 0)
                return -errno;
        /* Version 12 is the only stable API there has ever been; anything
         * else is not a KVM we know how to drive. */
        if (version != KVM_API_VERSION)
                return -EPROTO;
        return VMQ_TAKE_FD(fd);
}

int vmq_kvm_check_extension(int kvm_fd, long ext) {
        int r = ioctl(kvm_fd, KVM_CHECK_EXTENSION, ext);
        if (r < 0)
                return -errno;
        return r;
}

int vmq_kvm_create_vm(int kvm_fd) {
        _cleanup_close_ int fd = -1;

        /* KVM_CREATE_VM can fail transiently with EINTR while the kernel
         * sets up the MMU notifier; retrying is what every VMM does. */
        do
                fd = ioctl(kvm_fd, KVM_CREATE_VM, 0UL);
        while (fd < 0 && errno == EINTR);
        if (fd < 0)
                return -errno;

        int r = ensure_cloexec(fd);
        if (r < 0)
                return r;
        return VMQ_TAKE_FD(fd);
}

int vmq_kvm_set_memslot(int vm_fd, uint32_t slot, uint64_t gpa, uint64_t size, void *hva,
                        uint32_t flags) {
        if (!VMQ_IS_ALIGNED(gpa, 4096) || !VMQ_IS_ALIGNED(size, 4096) ||
            !VMQ_IS_ALIGNED((uintptr_t)hva, 4096))
                return -EINVAL;
        if (size > 0 && gpa + size < gpa)
                return -EINVAL;

        struct kvm_userspace_memory_region region = {
                .slot = slot,
                .flags = flags,
                .guest_phys_addr = gpa,
                .memory_size = size,
                .userspace_addr = (uint64_t)(uintptr_t)hva,
        };
        if (ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &region) < 0)
                return -errno;
        return 0;
}

int vmq_kvm_create_vcpu(int kvm_fd, int vm_fd, unsigned id, struct kvm_run **ret_run,
                        size_t *ret_run_size) {
        int mmap_size = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
        if (mmap_size < 0)
                return -errno;
        if ((size_t)mmap_size < sizeof(struct kvm_run))
                return -EPROTO;

        _cleanup_close_ int fd = ioctl(vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
        if (fd < 0)
                return -errno;
        int r = ensure_cloexec(fd);
        if (r < 0)
                return r;

        void *run = mmap(NULL, (size_t)mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (run == MAP_FAILED)
                return -errno;

        *ret_run = run;
        *ret_run_size = (size_t)mmap_size;
        return VMQ_TAKE_FD(fd);
}

int vmq_kvm_ioeventfd(int vm_fd, uint16_t port, unsigned len, int event_fd, bool assign) {
        if (len != 0 && len != 1 && len != 2 && len != 4 && len != 8)
                return -EINVAL;

        struct kvm_ioeventfd ioev = {
                .addr = port,
                .len = len,
                .fd = event_fd,
                .flags = KVM_IOEVENTFD_FLAG_PIO | (assign ? 0 : KVM_IOEVENTFD_FLAG_DEASSIGN),
        };
        if (ioctl(vm_fd, KVM_IOEVENTFD, &ioev) < 0)
                return -errno;
        return 0;
}

uint64_t vmq_kvm_tsc_khz(int vcpu_fd) {
        int r = ioctl(vcpu_fd, KVM_GET_TSC_KHZ, 0);
        if (r <= 0)
                return 0;
        return (uint64_t)r;
}
