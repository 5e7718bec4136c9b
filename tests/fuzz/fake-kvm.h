/* SPDX-License-Identifier: MIT */
/*
 * A stand-in for /dev/kvm, for fuzz-request on machines that have none.
 *
 * The request path the harness drives (hypercalls, the post ring, the host
 * end, the remap engine) never calls into KVM: KVM is needed only to create
 * and destroy the micro-VMs (the VM, its memslots, vCPUs and registers).
 * Where /dev/kvm cannot be opened, the harness points VMQ_KVM_DEVICE at a
 * memfd and links with -Wl,--wrap=ioctl: the KVM ioctls on that memfd and
 * on the VM and vCPU memfds it hands out succeed without doing anything
 * (KVM_RUN fails: no vCPU runs here anyway); every other ioctl goes to the
 * real one.  The core's code is the same either way.
 */
#ifndef VMQ_FUZZ_FAKE_KVM_H
#define VMQ_FUZZ_FAKE_KVM_H

#include <stdbool.h>

/* Uses /dev/kvm when it can be opened read/write and VMQ_FUZZ_FAKE_KVM is
 * not 1; otherwise sets VMQ_KVM_DEVICE to the stand-in.  Returns whether
 * the stand-in is in use, or exits when it cannot be set up. */
bool fake_kvm_setup(void);
/* Closes the stand-in's device memfd (after the monitor is freed). */
void fake_kvm_teardown(void);

#endif /* VMQ_FUZZ_FAKE_KVM_H */
