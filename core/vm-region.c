/* SPDX-License-Identifier: MIT */
/*
 * The region transport: VMs that another VMM runs (QEMU under libvirt),
 * reached through one shared region (ivshmem).  The region holds the VMCS,
 * the guest's send area and the receive window; every "guest-physical
 * address" of such a VM is an offset into the region (core/vmq-abi.h).
 *
 * The monitor is not that VM's VMM, so pages always travel as copies.  The
 * region stays mapped for the VM's whole life and never changes its
 * mapping, so reading it cannot fault; but the guest writes it whenever it
 * likes, so every value read from it is copied once and then checked, and
 * payloads copied out of it are what the guest wrote at that moment, no
 * more.  The receive window's slots are tracked by a bitmap under the VM's
 * rxq_lock: a slot is the guest's from the enqueue of the message that
 * fills it until it releases it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "core/vm.h"

/* Finds and marks `count` free consecutive slots; caller holds rxq_lock. */
static int rx_alloc(struct vmq_vm *vm, size_t count, uint64_t *ret_off) {
        size_t n = vm->rx_slots;
        if (count == 0 || count > n)
                return -ENOSPC;
        for (size_t pass = 0; pass < 2; pass++) {
                size_t start = pass == 0 ? vm->rx_hint : 0;
                size_t end = pass == 0 ? n : VMQ_MIN(vm->rx_hint + count, n);
                for (size_t i = start; i + count <= end;) {
                        size_t j = 0;
                        while (j < count && !vm->rx_used[i + j])
                                j++;
                        if (j == count) {
                                memset(vm->rx_used + i, 1, count);
                                vm->rx_hint = (i + count) % n;
                                *ret_off = vm->send_hi + (uint64_t)i * VMQ_PAGE_SIZE;
                                return 0;
                        }
                        i += j + 1;
                }
        }
        return -ENOSPC;
}

static void rx_free(struct vmq_vm *vm, uint64_t off, size_t count) {
        memset(vm->rx_used + (off - vm->send_hi) / VMQ_PAGE_SIZE, 0, count);
}

static size_t pages_of(uint64_t len) {
        return (size_t)(VMQ_ALIGN_UP(len, (uint64_t)VMQ_PAGE_SIZE) / VMQ_PAGE_SIZE);
}

static int32_t region_check_source(struct vmq_vm *vm, uint64_t gpa, uint32_t len,
                                   enum vmq_frame_kind *ret_kind) {
        uint64_t run;
        if (len == 0)
                return -VMQ_E_LEN;
        if (gpa >= vm->region_size)
                return -VMQ_E_RANGE;
        if (!VMQ_IS_ALIGNED(gpa, (uint64_t)VMQ_PAGE_SIZE))
                return -VMQ_E_ALIGN;
        *ret_kind = VMQ_FRAME_4K;
        run = VMQ_ALIGN_UP((uint64_t)len, (uint64_t)VMQ_PAGE_SIZE);
        if (gpa >= vm->send_lo && gpa < vm->send_hi)
                return vmq_range_within(gpa, run, vm->send_lo, vm->send_hi - vm->send_lo)
                               ? 0
                               : -VMQ_E_LEN;
        if (gpa >= vm->send_hi) {
                /* Forwarding received slots: they must be the guest's. */
                uint64_t rx_size = (uint64_t)vm->rx_slots * VMQ_PAGE_SIZE;
                if (!vmq_range_within(gpa, run, vm->send_hi, rx_size))
                        return -VMQ_E_LEN;
                size_t first = (size_t)((gpa - vm->send_hi) / VMQ_PAGE_SIZE);
                int32_t r = 0;
                pthread_mutex_lock(&vm->rxq_lock);
                for (size_t i = 0; i < run / VMQ_PAGE_SIZE && r == 0; i++)
                        if (!vm->rx_used[first + i])
                                r = -VMQ_E_NOTOWNED;
                pthread_mutex_unlock(&vm->rxq_lock);
                return r;
        }
        return -VMQ_E_NOTOWNED; /* the VMCS */
}

static const void *region_peek(struct vmq_vm *vm, uint64_t gpa, uint64_t len) {
        if (!vmq_range_within(gpa, len, 0, vm->region_size))
                return NULL;
        return vm->region + gpa;
}

static int32_t region_read(struct vmq_vm *vm, uint64_t gpa, void *buf, uint64_t len) {
        const void *p = region_peek(vm, gpa, len);
        if (!p)
                return -VMQ_E_RANGE;
        memcpy(buf, p, len);
        return 0;
}

static int32_t region_read_console(struct vmq_vm *vm, uint64_t gpa, void *buf, uint32_t len) {
        /* The whole region is the guest's to read. */
        return region_read(vm, gpa, buf, len);
}

static uint64_t region_window(struct vmq_vm *vm, enum vmq_how how, enum vmq_frame_kind kind) {
        (void)how;
        (void)kind;
        return (uint64_t)vm->rx_slots * VMQ_PAGE_SIZE;
}

/* Fills fresh slots; no stale bytes of an earlier message after the
 * payload.  src is a checked run of another VM, or NULL with data. */
static int32_t place_bytes(struct vmq_vm *vm, const struct vmq_source *src, const void *data,
                           uint64_t len, struct vmq_desc *d) {
        size_t count = pages_of(len);
        uint64_t off;
        if (rx_alloc(vm, count, &off) < 0)
                return -VMQ_E_AGAIN;
        if (src) {
                int32_t r = src->vm->ops->read(src->vm, src->gpa, vm->region + off, len);
                if (r < 0) {
                        rx_free(vm, off, count);
                        return r;
                }
        } else {
                memcpy(vm->region + off, data, len);
        }
        memset(vm->region + off + len, 0, (uint64_t)count * VMQ_PAGE_SIZE - len);
        d->gpa = off;
        d->flags = VMQ_DESC_F_COPIED;
        return 0;
}

static int32_t region_place(struct vmq_vm *vm, const struct vmq_source *src, enum vmq_how how,
                            struct vmq_desc *d) {
        (void)how; /* always a copy: we cannot remap another VMM's memory */
        return place_bytes(vm, src, NULL, src->len, d);
}

static int32_t region_place_host(struct vmq_vm *vm, const void *data, uint64_t len,
                                 struct vmq_desc *d) {
        return place_bytes(vm, NULL, data, len, d);
}

static int32_t region_release(struct vmq_vm *vm, uint64_t off, uint64_t len) {
        uint64_t rx_lo = vm->send_hi, rx_size = (uint64_t)vm->rx_slots * VMQ_PAGE_SIZE;
        if (off < rx_lo || off - rx_lo >= rx_size)
                return -VMQ_E_RANGE;
        if (len == 0)
                return -VMQ_E_LEN;
        if (!VMQ_IS_ALIGNED(off, (uint64_t)VMQ_PAGE_SIZE))
                return -VMQ_E_ALIGN;
        if (len > UINT64_MAX - VMQ_PAGE_SIZE ||
            !vmq_range_within(off, VMQ_ALIGN_UP(len, (uint64_t)VMQ_PAGE_SIZE), rx_lo, rx_size))
                return -VMQ_E_LEN;
        size_t first = (size_t)((off - rx_lo) / VMQ_PAGE_SIZE);
        size_t count = pages_of(len);
        int32_t r = 0;
        pthread_mutex_lock(&vm->rxq_lock);
        for (size_t i = 0; i < count && r == 0; i++)
                if (!vm->rx_used[first + i])
                        r = -VMQ_E_NOTOWNED;
        if (r == 0)
                memset(vm->rx_used + first, 0, count);
        pthread_mutex_unlock(&vm->rxq_lock);
        return r;
}

static void region_wake(struct vmq_vm *vm) {
        if (vm->rops && vm->rops->notify)
                vm->rops->notify(vm->ruserdata, vm);
}

static int region_start(struct vmq_vm *vm) {
        (void)vm;
        return -EBUSY; /* running from creation: its VMM runs it */
}

static int region_stop(struct vmq_vm *vm) {
        atomic_store(&vm->stopping, true);
        vmq_vm_set_state(vm, VMQ_VM_STOPPED, NULL);
        return 0;
}

const struct vmq_vm_ops vmq_region_ops = {
        .check_source = region_check_source,
        .read = region_read,
        .peek = region_peek,
        .read_console = region_read_console,
        .window = region_window,
        .place = region_place,
        .place_host = region_place_host,
        .release = region_release,
        .wake = region_wake,
        .start = region_start,
        .stop = region_stop,
};

/* ---- creation and the doorbell ------------------------------------------ */

int vmq_vm_create_region(struct vmq_monitor *m, const struct vmq_vm_config *cfg, void *region,
                         size_t size, const struct vmq_region_ops *ops, void *userdata,
                         struct vmq_vm **ret) {
        struct vmq_vm *vm;
        uint32_t vmcs_size;
        uint8_t *base = region;
        int r;

        if (!cfg || !vmq_vm_name_is_valid(cfg->name) || !region || !ops || !ops->notify)
                return -EINVAL;
        if (!VMQ_IS_POW2(cfg->queue_depth) || cfg->queue_depth < 4 ||
            !VMQ_IS_POW2(cfg->post_depth) || cfg->post_depth < 4)
                return -EINVAL;
        vmcs_size = VMQ_VMCS_SIZE((uint64_t)cfg->queue_depth, (uint64_t)cfg->post_depth);
        if (vmcs_size > VMQ_VMCS_MAX_SIZE || !VMQ_IS_ALIGNED((uintptr_t)region, VMQ_PAGE_SIZE) ||
            !VMQ_IS_ALIGNED((uint64_t)size, (uint64_t)VMQ_PAGE_SIZE) ||
            !VMQ_IS_ALIGNED(cfg->rx_size, (uint64_t)VMQ_PAGE_SIZE) || cfg->rx_size == 0 ||
            size > UINT32_MAX || (uint64_t)vmcs_size + VMQ_PAGE_SIZE + cfg->rx_size > size)
                return -EINVAL;
        if (cfg->args && strlen(cfg->args) >= VMQ_ARGS_MAX)
                return -E2BIG;

        r = vmq_vm_alloc(m, cfg, &vmq_region_ops, &vm);
        if (r < 0)
                return r;
        vm->cfg.vcpus = 1;
        vm->cfg.ram_size = size;
        vm->cfg.huge_size = vm->cfg.huge_rx_size = 0;
        vm->nvcpus = 1;
        vm->vcpus[0].vm = vm;
        vm->region = base;
        vm->region_size = size;
        vm->vmcs = region;
        vm->vmcs_size = vmcs_size;
        vm->send_lo = vmcs_size;
        vm->send_hi = size - cfg->rx_size;
        vm->rx_slots = cfg->rx_size / VMQ_PAGE_SIZE;
        vm->rops = ops;
        vm->ruserdata = userdata;
        vm->rx_used = calloc(vm->rx_slots, 1);
        if (!vm->rx_used) {
                vmq_vm_free_resources(vm);
                return -ENOMEM;
        }

        vmq_monitor_wrlock(m);
        if (vmq_monitor_find_vm_locked(m, cfg->name)) {
                pthread_rwlock_unlock(&m->rw);
                vmq_vm_free_resources(vm);
                return -EEXIST;
        }
        vm->id = m->next_vm_id++;
        vm->ident.vm_id = vm->id;
        vmq_vm_init_vmcs(vm, vm->send_lo);
        vm->vmcs->magic = 0; /* published below, once everything is in place */
        struct vmq_vmcs_layout *l = &vm->vmcs->layout;
        l->ram_size = size;
        l->rx_gpa = vm->send_hi;
        l->rx_size = cfg->rx_size;
        l->huge_gpa = l->huge_size = l->huge_rx_gpa = l->huge_rx_size = 0;
        l->transport = VMQ_TRANSPORT_IVSHMEM;
        vm->vmcs->tsc_khz = 0; /* another VMM's guest: its TSC is its own */
        r = vmq_vm_attach_rings(vm);
        if (r < 0) {
                pthread_rwlock_unlock(&m->rw);
                vmq_vm_free_resources(vm);
                return r;
        }
        /* Publish the magic last: a guest polling for it sees a whole VMCS. */
        __atomic_store_n(&vm->vmcs->magic, VMQ_ABI_MAGIC, __ATOMIC_RELEASE);
        atomic_store(&vm->state, VMQ_VM_RUNNING);
        vm->next = m->vms;
        m->vms = vm;
        pthread_rwlock_unlock(&m->rw);
        vmq_monitor_notify(m);
        *ret = vm;
        return 0;
}

/* The checks the monitor can make of a region the guest may scribble on. */
static bool region_intact(struct vmq_vm *vm) {
        const struct vmq_vmcs *v = vm->vmcs;
        if (__atomic_load_n(&v->magic, __ATOMIC_RELAXED) != VMQ_ABI_MAGIC ||
            __atomic_load_n(&v->abi_version, __ATOMIC_RELAXED) != VMQ_ABI_VERSION)
                return false;
        return vmq_monitor_queue_count(vm) >= 0;
}

/* Serves the mailbox if the guest marked it pending; caller holds mon->rw. */
static void region_serve(struct vmq_vm *vm) {
        for (unsigned i = 0; i < vm->nvcpus; i++) {
                struct vmq_request *mb = &vm->vmcs->mbox[i];
                if (__atomic_load_n(&mb->status, __ATOMIC_ACQUIRE) != VMQ_STATUS_PENDING)
                        continue;
                uint32_t nr = __atomic_load_n(&mb->hc, __ATOMIC_RELAXED);
                int32_t r;
                if (nr == VMQ_HC_EXIT) {
                        int code = (int)(int32_t)__atomic_load_n(&mb->arg, __ATOMIC_RELAXED);
                        pthread_mutex_lock(&vm->state_lock);
                        vm->exit_code = code;
                        pthread_mutex_unlock(&vm->state_lock);
                        __atomic_store_n(&mb->status, 0, __ATOMIC_RELEASE);
                        vmq_vm_set_state(vm, VMQ_VM_EXITED, NULL);
                        return;
                }
                if (nr == VMQ_HC_PARK)
                        /* Nothing blocks here: the guest polls or sleeps on
                         * its interrupt. */
                        r = 0;
                else
                        /* WAIT does not block either, but still lets
                         * stalled senders in.  vmq_monitor_hypercall stores
                         * mb->status relaxed: stored again with release. */
                        r = vmq_monitor_hypercall(&vm->vcpus[i], nr);
                __atomic_store_n(&mb->status, r, __ATOMIC_RELEASE);
        }
}

void vmq_vm_region_doorbell(struct vmq_vm *vm) {
        struct vmq_monitor *m = vm->mon;
        bool broken = false;

        if (vm->ops != &vmq_region_ops || atomic_load(&vm->state) != VMQ_VM_RUNNING)
                return;
        atomic_fetch_add(&vm->st_exits, 1);
        pthread_rwlock_rdlock(&m->rw);
        if (!region_intact(vm)) {
                broken = true;
        } else {
                region_serve(vm);
                vmq_monitor_drain_posts(vm);
                broken = !region_intact(vm);
        }
        pthread_rwlock_unlock(&m->rw);
        if (broken && !atomic_exchange(&vm->region_broken, true)) {
                vmq_vm_set_state(vm, VMQ_VM_CRASHED, "guest scribbled over its shared region");
                vmq_monitor_wrlock(m);
                vmq_monitor_vm_gone(m, vm);
                pthread_rwlock_unlock(&m->rw);
        }
}
