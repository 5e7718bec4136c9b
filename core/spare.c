/* SPDX-License-Identifier: MIT */
/*
 * The spare VM: one KVM VM made ahead of need, with its first vCPU (fd,
 * kvm_run mapping, the monitor's CPUID), so that creating a micro-VM does
 * not wait for KVM_CREATE_VM and KVM_CREATE_VCPU, the dearest steps of a
 * start after the guest's own work.  The monitor makes the first one when
 * it starts; each micro-VM created takes it, and asks the poller thread
 * (core/poller.c, already there for the post rings) to make the next, off
 * the path of the call that created the VM.  A creation that finds no spare
 * (two in a row faster than the poller) makes its VM itself, as before.
 *
 * Nothing else about a micro-VM is made ahead: its memory, page tables and
 * registers depend on its configuration and image, and cost little.
 *
 * The spare holds two fds and the kernel's memory for an empty VM; it is
 * the monitor's, and closed with it.
 */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/kvm.h"
#include "core/util.h"
#include "core/vm.h"

/* No spare: what an empty one holds (the fds and mapping now belong to
 * someone else, or to nobody). */
static void spare_empty(struct vmq_spare *s) {
        s->vm_fd = s->vcpu_fd = -1;
        s->run = NULL;
}

static void spare_close(struct vmq_spare *s) {
        if (s->run)
                munmap(s->run, s->run_size);
        vmq_close(s->vcpu_fd);
        vmq_close(s->vm_fd);
        spare_empty(s);
}

static int spare_make(struct vmq_monitor *m, struct vmq_spare *s) {
        spare_empty(s);
        int r = vmq_kvm_create_vm(m->kvm_fd);
        if (r < 0)
                return r;
        s->vm_fd = r;
        r = vmq_vm_make_vcpu(m, s->vm_fd, 0, &s->run, &s->run_size);
        if (r < 0) {
                spare_close(s);
                return r;
        }
        s->vcpu_fd = r;
        return 0;
}

void vmq_spare_init(struct vmq_monitor *m) {
        spare_empty(&m->spare);
        pthread_mutex_init(&m->spare_lock, NULL);
}

void vmq_spare_first(struct vmq_monitor *m) {
        /* No spare now is no error: creations make their VMs themselves. */
        if (m->kvm_fd >= 0 && m->cfg.spare_vm)
                (void)spare_make(m, &m->spare);
}

void vmq_spare_fini(struct vmq_monitor *m) {
        spare_close(&m->spare);
        pthread_mutex_destroy(&m->spare_lock);
}

int vmq_spare_take(struct vmq_monitor *m, struct vmq_spare *ret) {
        pthread_mutex_lock(&m->spare_lock);
        *ret = m->spare;
        spare_empty(&m->spare);
        pthread_mutex_unlock(&m->spare_lock);
        if (m->cfg.spare_vm)
                vmq_poller_want_spare(m);
        if (ret->vm_fd >= 0)
                return 0;
        /* None ready: an ordinary creation, vCPU 0 included. */
        return spare_make(m, ret);
}

void vmq_spare_refill(struct vmq_monitor *m) {
        pthread_mutex_lock(&m->spare_lock);
        bool have = m->spare.vm_fd >= 0;
        pthread_mutex_unlock(&m->spare_lock);
        if (have || m->kvm_fd < 0)
                return;
        struct vmq_spare s;
        if (spare_make(m, &s) < 0)
                return; /* the next creation makes its own */
        pthread_mutex_lock(&m->spare_lock);
        if (m->spare.vm_fd < 0) {
                m->spare = s;
                spare_empty(&s);
        }
        pthread_mutex_unlock(&m->spare_lock);
        if (s.vm_fd >= 0)
                spare_close(&s);
}

bool vmq_monitor_spare_ready(struct vmq_monitor *m) {
        pthread_mutex_lock(&m->spare_lock);
        bool ready = m->spare.vm_fd >= 0;
        pthread_mutex_unlock(&m->spare_lock);
        return ready;
}
