/* SPDX-License-Identifier: MIT */
/*
 * Hypercalls: one handler per number, in a table.  Each reads its arguments
 * from the calling vCPU's mailbox (in the VMCS, which the guest cannot move,
 * but may rewrite at any moment: each field is loaded once) and returns 0,
 * a non-negative result, or -VMQ_E_*.  Guest memory beyond the mailbox is
 * reached only through the VM's transport (vm->ops).
 *
 * WAIT and PARK block and EXIT ends the VM: what the vCPU does around them
 * is the exit loop's (core/vm.c) or the region doorbell's business; the
 * handlers here only do their monitor part.
 */
#include <errno.h>
#include <string.h>

#include "core/util.h"
#include "core/vm.h"

struct call {
        struct vmq_vm *vm;
        struct vmq_vcpu *vcpu;
        struct vmq_request *mb; /* in guest memory: load each field once */
};

typedef int32_t (*hypercall_fn)(const struct call *c);

static int32_t hc_send(const struct call *c) {
        struct vmq_request req;
        memcpy(&req, c->mb, sizeof(req));
        return vmq_monitor_handle_request(c->vm, &req, false);
}

static int32_t hc_flush(const struct call *c) {
        return vmq_monitor_drain_posts_now(c->vm);
}

static int32_t hc_wait(const struct call *c) {
        /* The blocking part is the exit loop's; room the guest made by
         * dequeuing lets stalled senders in. */
        vmq_monitor_retry_stalled(c->vm->mon, c->vm);
        return 0;
}

static int32_t hc_release(const struct call *c) {
        uint64_t gpa = __atomic_load_n(&c->mb->gpa, __ATOMIC_RELAXED);
        uint32_t len = __atomic_load_n(&c->mb->len, __ATOMIC_RELAXED);
        int32_t r = c->vm->ops->release(c->vm, gpa, len);
        if (r == 0)
                vmq_monitor_retry_stalled(c->vm->mon, c->vm);
        return r;
}

static int32_t hc_console(const struct call *c) {
        uint64_t gpa = __atomic_load_n(&c->mb->gpa, __ATOMIC_RELAXED);
        uint32_t len = __atomic_load_n(&c->mb->len, __ATOMIC_RELAXED);
        char buf[VMQ_CONSOLE_MAX];
        if (len > VMQ_CONSOLE_MAX)
                return -VMQ_E_LEN;
        /* Copied out first, under the transport's lock: the guest may
         * rewrite or release the buffer meanwhile. */
        int32_t r = c->vm->ops->read_console(c->vm, gpa, buf, len);
        if (r == 0)
                vmq_vm_console_append(c->vm, buf, len);
        return r;
}

static int32_t hc_clock(const struct call *c) {
        __atomic_store_n(&c->mb->result, vmq_now_ns(), __ATOMIC_RELAXED);
        return 0;
}

static int32_t hc_exit(const struct call *c) {
        return (int32_t)__atomic_load_n(&c->mb->arg, __ATOMIC_RELAXED);
}

static int32_t hc_kick(const struct call *c) {
        return vmq_monitor_link_kick(c->vm, __atomic_load_n(&c->mb->channel, __ATOMIC_RELAXED));
}

static int32_t hc_nop(const struct call *c) {
        (void)c;
        return 0;
}

static const hypercall_fn hypercalls[VMQ_HC_MAX] = {
        [VMQ_HC_SEND] = hc_send,       [VMQ_HC_FLUSH] = hc_flush,     [VMQ_HC_WAIT] = hc_wait,
        [VMQ_HC_RELEASE] = hc_release, [VMQ_HC_CONSOLE] = hc_console, [VMQ_HC_CLOCK] = hc_clock,
        [VMQ_HC_EXIT] = hc_exit,       [VMQ_HC_NOP] = hc_nop,         [VMQ_HC_PARK] = hc_nop,
        [VMQ_HC_KICK] = hc_kick,
};

static void mirror_stats(struct vmq_vm *vm) {
        struct vmq_vmcs_stats *s = &vm->vmcs->stats;
        __atomic_store_n(&s->sent, atomic_load(&vm->st_sent), __ATOMIC_RELAXED);
        __atomic_store_n(&s->received, atomic_load(&vm->st_received), __ATOMIC_RELAXED);
        __atomic_store_n(&s->errors, atomic_load(&vm->st_errors), __ATOMIC_RELAXED);
        __atomic_store_n(&s->exits, atomic_load(&vm->st_exits), __ATOMIC_RELAXED);
}

int32_t vmq_monitor_hypercall(struct vmq_vcpu *vcpu, unsigned nr) {
        struct call c = {vcpu->vm, vcpu, &vcpu->vm->vmcs->mbox[vcpu->index]};
        int32_t r = nr < VMQ_HC_MAX && hypercalls[nr] ? hypercalls[nr](&c) : -VMQ_E_NOSYS;
        if (nr == VMQ_HC_EXIT) {
                mirror_stats(c.vm);
                return r; /* the exit code, not a status */
        }
        if (r < 0)
                vmq_monitor_count_error(c.vm, -r);
        __atomic_store_n(&c.mb->status, r, __ATOMIC_RELAXED);
        mirror_stats(c.vm);
        return r;
}

int32_t vmq_vm_hypercall(struct vmq_vm *vm, unsigned vcpu, unsigned nr) {
        if (vcpu >= vm->nvcpus || nr == VMQ_HC_PARK)
                return -VMQ_E_INVAL;
        struct vmq_monitor *m = vm->mon;
        int32_t r;
        atomic_fetch_add(&vm->st_exits, 1);
        pthread_rwlock_rdlock(&m->rw);
        if (nr == VMQ_HC_WAIT)
                /* What the exit loop does before it blocks; host-driven VMs
                 * never block: the answer says whether the queue has work. */
                vmq_monitor_drain_posts(vm);
        r = vmq_monitor_hypercall(&vm->vcpus[vcpu], nr);
        if (nr != VMQ_HC_WAIT)
                vmq_monitor_drain_posts(vm);
        pthread_rwlock_unlock(&m->rw);
        if (nr == VMQ_HC_WAIT && r == 0) {
                uint32_t flags = __atomic_load_n(&vm->vmcs->mbox[vcpu].flags, __ATOMIC_RELAXED);
                int n = vmq_vm_wait_count(vm, flags & VMQ_WAIT_F_LINKS);
                r = n > 0 ? 0 : n == 0 ? -VMQ_E_TIMEDOUT : -VMQ_E_PROTO;
                __atomic_store_n(&vm->vmcs->mbox[vcpu].status, r, __ATOMIC_RELAXED);
        }
        if (nr == VMQ_HC_EXIT) {
                pthread_mutex_lock(&vm->state_lock);
                vm->exit_code = (int)r;
                pthread_mutex_unlock(&vm->state_lock);
                vmq_vm_set_state(vm, VMQ_VM_EXITED, NULL);
        }
        return r;
}

void vmq_vm_doorbell(struct vmq_vm *vm) {
        pthread_rwlock_rdlock(&vm->mon->rw);
        vmq_monitor_drain_posts(vm);
        pthread_rwlock_unlock(&vm->mon->rw);
}
