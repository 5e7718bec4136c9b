/* SPDX-License-Identifier: MIT */
/*
 * The /dev/kvm stand-in of fake-kvm.h.  Its fds are memfds whose names say
 * what they stand for, so that the ioctl wrapper needs no table that could
 * go stale when the core closes an fd: it reads the name back from
 * /proc/self/fd.  Only VM creation and teardown issue ioctls, so the cost
 * does not matter.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tests/fuzz/fake-kvm.h"

#define FAKE_PREFIX "vmq-fuzz-kvm-"
#define FAKE_RUN_SIZE (3 * 4096) /* what KVM_GET_VCPU_MMAP_SIZE says on x86 */

enum fake_kind { FAKE_NONE, FAKE_SYSTEM, FAKE_VM, FAKE_VCPU };

static int device_fd = -1;
static bool active;

int __real_ioctl(int fd, unsigned long request, ...);
int __wrap_ioctl(int fd, unsigned long request, ...);

static enum fake_kind fake_kind(int fd) {
        char path[64], target[256];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n < 0)
                return FAKE_NONE;
        target[n] = '\0';
        const char *p = "/memfd:" FAKE_PREFIX;
        if (strncmp(target, p, strlen(p)) != 0)
                return FAKE_NONE;
        const char *kind = target + strlen(p);
        if (strncmp(kind, "system ", 7) == 0)
                return FAKE_SYSTEM;
        if (strncmp(kind, "vm ", 3) == 0)
                return FAKE_VM;
        if (strncmp(kind, "vcpu ", 5) == 0)
                return FAKE_VCPU;
        return FAKE_NONE;
}

static int new_fake(const char *what, off_t size) {
        char name[64];
        snprintf(name, sizeof(name), FAKE_PREFIX "%s", what);
        int fd = memfd_create(name, MFD_CLOEXEC);
        if (fd < 0)
                return -1;
        if (size > 0 && ftruncate(fd, size) < 0) {
                int e = errno;
                close(fd);
                errno = e;
                return -1;
        }
        return fd;
}

static int fake_ioctl(enum fake_kind kind, unsigned long request, void *arg) {
        switch (request) {
        case KVM_GET_API_VERSION:
                return kind == FAKE_SYSTEM ? KVM_API_VERSION : (errno = ENOTTY, -1);
        case KVM_CHECK_EXTENSION:
                return 0;
        case KVM_CREATE_VM:
                return new_fake("vm", 0);
        case KVM_GET_VCPU_MMAP_SIZE:
                return FAKE_RUN_SIZE;
        case KVM_CREATE_VCPU:
                return new_fake("vcpu", FAKE_RUN_SIZE);
        case KVM_GET_SUPPORTED_CPUID:
                ((struct kvm_cpuid2 *)arg)->nent = 0;
                return 0;
        case KVM_GET_SREGS:
                memset(arg, 0, sizeof(struct kvm_sregs));
                return 0;
        case KVM_SET_USER_MEMORY_REGION:
        case KVM_SET_CPUID2:
        case KVM_SET_SREGS:
        case KVM_SET_REGS:
        case KVM_IOEVENTFD:
                return 0;
        case KVM_GET_TSC_KHZ:
                return 1000000;
        default:
                /* KVM_RUN among them: nothing runs guest code here. */
                errno = ENOTTY;
                return -1;
        }
}

int __wrap_ioctl(int fd, unsigned long request, ...) {
        va_list ap;
        va_start(ap, request);
        void *arg = va_arg(ap, void *);
        va_end(ap);

        enum fake_kind kind = active ? fake_kind(fd) : FAKE_NONE;
        if (kind == FAKE_NONE)
                return __real_ioctl(fd, request, arg);
        return fake_ioctl(kind, request, arg);
}

bool fake_kvm_setup(void) {
        const char *force = getenv("VMQ_FUZZ_FAKE_KVM");
        if (!(force && strcmp(force, "1") == 0)) {
                const char *dev = getenv("VMQ_KVM_DEVICE");
                int fd = open(dev && *dev ? dev : "/dev/kvm", O_RDWR | O_CLOEXEC);
                if (fd >= 0) {
                        close(fd);
                        return false;
                }
        }

        static char path[64];
        device_fd = new_fake("system", 0);
        if (device_fd < 0) {
                perror("fake-kvm: memfd_create");
                exit(EXIT_FAILURE);
        }
        snprintf(path, sizeof(path), "/proc/self/fd/%d", device_fd);
        setenv("VMQ_KVM_DEVICE", path, 1);
        active = true;
        return true;
}

void fake_kvm_teardown(void) {
        if (device_fd >= 0)
                close(device_fd);
        device_fd = -1;
}
