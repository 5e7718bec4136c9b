/* SPDX-License-Identifier: MIT */
/*
 * The KVM transport: micro-VMs whose guest-physical memory is a space of the
 * remap engine (core/remap.h).  Pages move between two such VMs by
 * remapping (flip, share) or by a copy the engine makes under its lock; to
 * or from any other kind of VM or the host they are copied through
 * vmq_space_read() / vmq_remap_copy_in(), also under the engine's lock.  No
 * pointer into a micro-VM's memory ever leaves this file except for pages
 * the guest cannot move (its VMCS).
 *
 * The vCPU threads and the exit loop that feed requests to the monitor are
 * in core/vm.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "core/vm.h"

static int32_t remap_error(int r) {
        switch (r) {
        case 0:
                return 0;
        case -EPERM:
                return -VMQ_E_NOTOWNED;
        case -EBUSY:
                return -VMQ_E_BUSY;
        case -ENOMEM:
                return -VMQ_E_NOMEM;
        case -ERANGE:
                return -VMQ_E_RANGE;
        case -EINVAL:
                return -VMQ_E_ALIGN;
        case -ENOSPC:
                return -VMQ_E_AGAIN;
        default:
                return -VMQ_E_INVAL;
        }
}

/* The region of the space that holds gpa. */
static int find_region(struct vmq_space *s, uint64_t gpa, uint64_t *ret_base, uint64_t *ret_size,
                       enum vmq_frame_kind *ret_kind) {
        size_t n = vmq_space_region_count(s);
        for (size_t i = 0; i < n; i++) {
                uint64_t base, size;
                enum vmq_frame_kind kind;
                if (vmq_space_region(s, i, &base, &size, &kind, NULL) < 0)
                        continue;
                if (gpa >= base && gpa - base < size) {
                        *ret_base = base;
                        *ret_size = size;
                        *ret_kind = kind;
                        return 0;
                }
        }
        return -ERANGE;
}

static int32_t kvm_check_source(struct vmq_vm *vm, uint64_t gpa, uint32_t len,
                                enum vmq_frame_kind *ret_kind) {
        uint64_t base, size, fs;
        if (len == 0)
                return -VMQ_E_LEN;
        if (find_region(vm->space, gpa, &base, &size, ret_kind) < 0)
                return -VMQ_E_RANGE;
        fs = vmq_frame_size(*ret_kind);
        if (!VMQ_IS_ALIGNED(gpa, fs))
                return -VMQ_E_ALIGN;
        if (!vmq_range_within(gpa, VMQ_ALIGN_UP((uint64_t)len, fs), base, size))
                return -VMQ_E_LEN;
        /* The system area, the VMCS and everything below the image are the
         * monitor's, even though they sit in the guest's RAM region. */
        if (gpa < VMQ_IMAGE_GPA)
                return -VMQ_E_NOTOWNED;
        /* Only pages it owns: a read-only share it received is not its to
         * pass on, by any method.  The page operation checks again under
         * the engine's lock: this is the early, precise answer. */
        if (!vmq_space_translate(vm->space, gpa, len, true))
                return -VMQ_E_NOTOWNED;
        return 0;
}

static int32_t kvm_read(struct vmq_vm *vm, uint64_t gpa, void *buf, uint64_t len) {
        return remap_error(vmq_space_read(vm->space, gpa, buf, len, true));
}

static const void *kvm_peek(struct vmq_vm *vm, uint64_t gpa, uint64_t len) {
        (void)vm;
        (void)gpa;
        (void)len;
        return NULL; /* its pages move */
}

static int32_t kvm_read_console(struct vmq_vm *vm, uint64_t gpa, void *buf, uint32_t len) {
        /* What the guest can read at CPL 3: not the null page, not the
         * supervisor-only system area (page tables, GDT, TSS). */
        if (gpa < VMQ_SYSTEM_END)
                return -VMQ_E_RANGE;
        return vmq_space_read(vm->space, gpa, buf, len, false) < 0 ? -VMQ_E_RANGE : 0;
}

static bool huge_run(enum vmq_how how, enum vmq_frame_kind kind) {
        return how != VMQ_HOW_COPY && kind == VMQ_FRAME_2M;
}

static uint64_t kvm_window(struct vmq_vm *vm, enum vmq_how how, enum vmq_frame_kind kind) {
        return huge_run(how, kind) ? vm->cfg.huge_rx_size : vm->cfg.rx_size;
}

/* Pages of another transport, or of a read that must bounce: copied in. */
static int32_t copy_from_other(struct vmq_vm *vm, const struct vmq_source *src, uint64_t dst) {
        const void *p = src->vm->ops->peek(src->vm, src->gpa, src->len);
        _cleanup_free_ void *bounce = NULL;
        if (!p) {
                bounce = malloc(VMQ_MAX(src->len, 1u));
                if (!bounce)
                        return -VMQ_E_NOMEM;
                int32_t r = src->vm->ops->read(src->vm, src->gpa, bounce, src->len);
                if (r < 0)
                        return r;
                p = bounce;
        }
        return remap_error(vmq_remap_copy_in(vm->space, dst, p, src->len));
}

/* A failed rollback in the engine (vmq_space_broken) ends the VMs whose
 * mappings it left wrong, before they run another instruction. */
static void check_broken(struct vmq_vm *a, struct vmq_vm *b) {
        struct vmq_vm *vms[2] = {a, b};
        for (int i = 0; i < 2; i++)
                if (vms[i] && vms[i]->space && vmq_space_broken(vms[i]->space))
                        vmq_vm_fault(vms[i], "host could not restore a guest mapping");
}

static int32_t kvm_place(struct vmq_vm *vm, const struct vmq_source *src, enum vmq_how how,
                         struct vmq_desc *d) {
        struct vmq_space *from = src->vm->space; /* NULL: not remappable */
        if (!from)
                how = VMQ_HOW_COPY;
        uint64_t dfs = huge_run(how, src->kind) ? VMQ_HUGE_PAGE_SIZE : VMQ_PAGE_SIZE;
        uint64_t window = dfs == VMQ_HUGE_PAGE_SIZE ? VMQ_HUGE_RX_GPA : VMQ_RX_GPA;
        size_t count = (size_t)(VMQ_ALIGN_UP((uint64_t)src->len, dfs) / dfs);
        uint64_t dst;
        int32_t r;

        if ((uint64_t)count * dfs > kvm_window(vm, how, src->kind))
                return -VMQ_E_LEN;
        if (vmq_space_find_empty(vm->space, window, count, &dst) < 0)
                return -VMQ_E_AGAIN;
        switch (how) {
        case VMQ_HOW_FLIP:
                r = remap_error(vmq_remap_flip(from, src->gpa, vm->space, dst, count));
                d->flags = VMQ_DESC_F_FLIPPED;
                break;
        case VMQ_HOW_SHARE:
                r = remap_error(vmq_remap_share(from, src->gpa, vm->space, dst, count));
                d->flags = VMQ_DESC_F_SHARED;
                break;
        default:
                r = from ? remap_error(vmq_remap_copy(from, src->gpa, vm->space, dst, src->len))
                         : copy_from_other(vm, src, dst);
                d->flags = VMQ_DESC_F_COPIED;
                break;
        }
        check_broken(vm, src->vm);
        if (r < 0)
                return r;
        if (dfs == VMQ_HUGE_PAGE_SIZE)
                d->flags |= VMQ_DESC_F_HUGE;
        d->gpa = dst;
        return 0;
}

static int32_t kvm_place_copies(struct vmq_vm *vm, const struct vmq_source *src, size_t n,
                                struct vmq_desc *d) {
        struct vmq_copy_piece pc[VMQ_COPY_BATCH_MAX];
        uint64_t pages = 0, dst;
        if (n == 0 || n > VMQ_COPY_BATCH_MAX)
                return -VMQ_E_INVAL;
        for (size_t i = 0; i < n; i++) {
                struct vmq_vm *from = src[i].vm;
                pc[i] = (struct vmq_copy_piece){
                        .src = from->space, .src_gpa = src[i].gpa, .len = src[i].len};
                /* Not remappable: its pages where they stay, else they
                 * must bounce, one message at a time. */
                if (!from->space && !(pc[i].data = from->ops->peek(from, src[i].gpa, src[i].len)))
                        return -VMQ_E_INVAL;
                pages += VMQ_ALIGN_UP((uint64_t)src[i].len, VMQ_PAGE_SIZE) / VMQ_PAGE_SIZE;
        }
        if (pages * VMQ_PAGE_SIZE > vm->cfg.rx_size)
                return -VMQ_E_LEN;
        if (vmq_space_find_empty(vm->space, VMQ_RX_GPA, (size_t)pages, &dst) < 0)
                return -VMQ_E_AGAIN;
        int32_t r = remap_error(vmq_remap_copy_batch(vm->space, dst, pc, n));
        check_broken(vm, NULL);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                d[i].gpa = dst;
                d[i].flags = VMQ_DESC_F_COPIED;
                dst += VMQ_ALIGN_UP((uint64_t)src[i].len, VMQ_PAGE_SIZE);
        }
        return 0;
}

static int32_t kvm_place_host(struct vmq_vm *vm, const void *data, uint64_t len,
                              struct vmq_desc *d) {
        size_t count = (size_t)(VMQ_ALIGN_UP(len, (uint64_t)VMQ_PAGE_SIZE) / VMQ_PAGE_SIZE);
        uint64_t dst;
        if (vmq_space_find_empty(vm->space, VMQ_RX_GPA, count, &dst) < 0)
                return -VMQ_E_AGAIN;
        int32_t r = remap_error(vmq_remap_copy_in(vm->space, dst, data, len));
        check_broken(vm, NULL);
        if (r < 0)
                return r;
        d->gpa = dst;
        d->flags = VMQ_DESC_F_COPIED;
        return 0;
}

static int32_t kvm_release(struct vmq_vm *vm, uint64_t gpa, uint64_t len) {
        uint64_t fs;
        if (gpa >= VMQ_RX_GPA && gpa - VMQ_RX_GPA < vm->cfg.rx_size)
                fs = VMQ_PAGE_SIZE;
        else if (gpa >= VMQ_HUGE_RX_GPA && gpa - VMQ_HUGE_RX_GPA < vm->cfg.huge_rx_size)
                fs = VMQ_HUGE_PAGE_SIZE;
        else
                return -VMQ_E_RANGE;
        if (len == 0)
                return -VMQ_E_LEN;
        if (!VMQ_IS_ALIGNED(gpa, fs))
                return -VMQ_E_ALIGN;
        if (len > UINT64_MAX - fs)
                return -VMQ_E_LEN;
        int r = vmq_remap_release(vm->space, gpa, (size_t)(VMQ_ALIGN_UP(len, fs) / fs));
        check_broken(vm, NULL);
        if (r == -ERANGE)
                return -VMQ_E_LEN;
        return remap_error(r);
}

static void kvm_wake(struct vmq_vm *vm) {
        /* Pairs with the seq_cst increment of waiters in the WAIT
         * hypercall (core/vm.c). */
        VMQ_FULL_BARRIER();
        if (atomic_load(&vm->waiters) > 0) {
                pthread_mutex_lock(&vm->state_lock);
                pthread_cond_broadcast(&vm->state_cond);
                pthread_mutex_unlock(&vm->state_lock);
        }
}

const struct vmq_vm_ops vmq_kvm_ops = {
        .check_source = kvm_check_source,
        .read = kvm_read,
        .peek = kvm_peek,
        .read_console = kvm_read_console,
        .window = kvm_window,
        .place = kvm_place,
        .place_copies = kvm_place_copies,
        .place_host = kvm_place_host,
        .release = kvm_release,
        .wake = kvm_wake,
        .start = vmq_kvm_vm_start,
        .stop = vmq_kvm_vm_stop,
        .links = true,
};
