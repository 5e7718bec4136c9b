/* SPDX-License-Identifier: MIT */
/*
 * Thin, checked wrappers over the KVM ioctl API.  Every fd is O_CLOEXEC.
 * All functions return a non-negative value (fd or 0) or a negative errno.
 */
#ifndef VMQ_KVM_H
#define VMQ_KVM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <linux/kvm.h>

/* Opens /dev/kvm (or $VMQ_KVM_DEVICE) and checks KVM_GET_API_VERSION == 12.
 * -ENOENT / -EACCES tell the caller why KVM is unusable. */
int vmq_kvm_open(void);

/* KVM_CHECK_EXTENSION; returns the value (>= 0) or a negative errno. */
int vmq_kvm_check_extension(int kvm_fd, long ext);

/* KVM_CREATE_VM; returns the VM fd. */
int vmq_kvm_create_vm(int kvm_fd);

/* KVM_SET_USER_MEMORY_REGION.  size 0 deletes the slot. */
int vmq_kvm_set_memslot(int vm_fd, uint32_t slot, uint64_t gpa, uint64_t size, void *hva,
                        uint32_t flags);

/* KVM_CREATE_VCPU and mmap of its struct kvm_run.  Returns the vCPU fd; the
 * mapping (size *ret_run_size) is the caller's to munmap. */
int vmq_kvm_create_vcpu(int kvm_fd, int vm_fd, unsigned id, struct kvm_run **ret_run,
                        size_t *ret_run_size);

/* KVM_IOEVENTFD on a PIO port: any write of `len` bytes (1, 2, 4 or 8; 0
 * matches any length), no datamatch.  assign false removes it. */
int vmq_kvm_ioeventfd(int vm_fd, uint16_t port, unsigned len, int event_fd, bool assign);

/* KVM_GET_TSC_KHZ on a vCPU; 0 when unknown. */
uint64_t vmq_kvm_tsc_khz(int vcpu_fd);

#endif /* VMQ_KVM_H */
