/* SPDX-License-Identifier: MIT */
/*
 * Channels: opening (each end gets a HELLO with the other's identity,
 * stamped by the monitor), closing (CLOSE), what happens to a VM's channels
 * and shares when it goes away.  Every function here that changes the
 * channel table holds mon->rw for writing, so no request is in flight.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "core/vm.h"

static int hello_for(struct vmq_monitor *m, uint32_t id, struct vmq_identity *ret) {
        if (id == VMQ_HOST_ID) {
                *ret = m->host_ident;
                return 0;
        }
        struct vmq_vm *vm = vmq_monitor_find_vm_id_locked(m, id);
        if (!vm)
                return -ENOENT;
        *ret = vm->ident;
        return 0;
}

int vmq_channel_open(struct vmq_monitor *m, uint32_t end_a, uint32_t end_b,
                     const struct vmq_channel_config *cfg, uint32_t *ret_id) {
        struct vmq_channel_config defaults;
        struct vmq_identity ida, idb;
        struct vmq_vm *va = NULL, *vb = NULL;
        struct vmq_channel *ch;
        int r;

        if (!cfg) {
                vmq_channel_config_init(&defaults);
                cfg = &defaults;
        }
        if (end_a == end_b || cfg->transfer >= VMQ_TRANSFER_MAX || cfg->host_depth == 0)
                return -EINVAL;
        /* Speaking for a VM: one end is the host, the VM is not the other
         * end, and only the vsock flags go into the HELLO. */
        if (cfg->speak_for &&
            ((end_a == VMQ_HOST_ID) == (end_b == VMQ_HOST_ID) || cfg->speak_for == end_a ||
             cfg->speak_for == end_b || cfg->speak_for == VMQ_HOST_ID))
                return -EINVAL;
        if ((!cfg->speak_for && (cfg->hello_flags || cfg->hello_tag)) ||
            (cfg->hello_flags & ~(VMQ_DESC_F_VSOCK | VMQ_DESC_F_SEQPACKET)))
                return -EINVAL;

        vmq_monitor_wrlock(m);
        r = hello_for(m, end_a == VMQ_HOST_ID && cfg->speak_for ? cfg->speak_for : end_a, &ida);
        if (r == 0)
                r = hello_for(m, end_b == VMQ_HOST_ID && cfg->speak_for ? cfg->speak_for : end_b,
                              &idb);
        if (r < 0)
                goto out;
        va = end_a == VMQ_HOST_ID ? NULL : vmq_monitor_find_vm_id_locked(m, end_a);
        vb = end_b == VMQ_HOST_ID ? NULL : vmq_monitor_find_vm_id_locked(m, end_b);

        if (m->next_channel_id >= m->nchannels) {
                uint32_t n = m->nchannels ? m->nchannels * 2 : 64;
                struct vmq_channel **t = realloc(m->channels, n * sizeof(*t));
                if (!t) {
                        r = -ENOMEM;
                        goto out;
                }
                memset(t + m->nchannels, 0, (n - m->nchannels) * sizeof(*t));
                m->channels = t;
                m->nchannels = n;
        }
        ch = calloc(1, sizeof(*ch));
        if (!ch) {
                r = -ENOMEM;
                goto out;
        }
        ch->id = m->next_channel_id;
        ch->end[0] = end_a;
        ch->end[1] = end_b;
        ch->cfg = *cfg;
        ch->open = true;

        /* Both HELLOs or none: check the room at both VM ends first.  No vCPU
         * is inside a request now (we hold the write lock), so the room
         * cannot shrink between the check and the enqueue. */
        struct vmq_vm *ends[2] = {va, vb};
        for (int i = 0; i < 2; i++) {
                if (!ends[i])
                        continue;
                pthread_mutex_lock(&ends[i]->rxq_lock);
                int room = vmq_monitor_room_locked(ends[i]);
                pthread_mutex_unlock(&ends[i]->rxq_lock);
                if (room <= 0) {
                        free(ch);
                        r = room < 0 ? -EPROTO : -EAGAIN;
                        goto out;
                }
        }
        /* A link is a bonus: a channel that cannot have one opens without
         * (its HELLOs say so by the missing flag). */
        if (cfg->link && va && vb)
                (void)vmq_monitor_link_make(m, ch, ends);
        struct vmq_identity *peer_of[2] = {&idb, &ida};
        for (int i = 0; i < 2; i++) {
                struct vmq_desc d = {0};
                d.kind = VMQ_DESC_HELLO;
                d.channel = ch->id;
                d.src_vm = vmq_channel_stamp(ch, 1 - i);
                d.len = sizeof(struct vmq_identity);
                if (ch->linked) {
                        d.flags = VMQ_DESC_F_LINK;
                        d.gpa = vmq_monitor_link_gpa(ch, i);
                }
                if (ends[i] && cfg->speak_for) {
                        d.flags |= cfg->hello_flags;
                        d.tag = cfg->hello_tag;
                }
                memcpy(d.data, peer_of[i], sizeof(struct vmq_identity));
                if (ends[i]) {
                        pthread_mutex_lock(&ends[i]->rxq_lock);
                        vmq_monitor_enqueue_locked(ends[i], &d);
                        pthread_mutex_unlock(&ends[i]->rxq_lock);
                        vmq_vm_wake(ends[i]);
                } else {
                        vmq_host_deliver_forced(m, ch, &d, d.data, d.len);
                }
        }
        m->channels[ch->id] = ch;
        m->next_channel_id++;
        *ret_id = ch->id;
        r = 0;
out:
        pthread_rwlock_unlock(&m->rw);
        return r;
}

/* Caller holds m->rw for writing. */
static void close_locked(struct vmq_monitor *m, struct vmq_channel *ch, uint32_t gone) {
        if (!ch->open)
                return;
        /* host_lock too: vmq_host_recv() reads it under that alone. */
        pthread_mutex_lock(&m->host_lock);
        ch->open = false;
        pthread_mutex_unlock(&m->host_lock);
        /* Before the CLOSEs: a guest that reads one finds its link closed. */
        vmq_monitor_link_unmake(m, ch, gone);
        for (int i = 0; i < 2; i++) {
                struct vmq_desc d = {0};
                if (ch->end[i] == gone)
                        continue;
                d.kind = VMQ_DESC_CLOSE;
                d.channel = ch->id;
                d.src_vm = vmq_channel_stamp(ch, 1 - i);
                if (ch->end[i] == VMQ_HOST_ID) {
                        vmq_host_deliver_forced(m, ch, &d, NULL, 0);
                } else {
                        struct vmq_vm *vm = vmq_monitor_find_vm_id_locked(m, ch->end[i]);
                        /* A full queue loses the CLOSE; sends then fail with
                         * VMQ_E_CLOSED, which says the same. */
                        if (vm)
                                (void)vmq_monitor_deliver(vm, &d);
                }
        }
        pthread_cond_broadcast(&m->host_cond);
        vmq_monitor_notify(m);
}

int vmq_channel_close(struct vmq_monitor *m, uint32_t id) {
        int r = 0;
        vmq_monitor_wrlock(m);
        struct vmq_channel *ch = vmq_monitor_channel_locked(m, id);
        if (!ch)
                r = -ENOENT;
        else if (!ch->open)
                r = -EPIPE;
        else
                close_locked(m, ch, UINT32_MAX);
        pthread_rwlock_unlock(&m->rw);
        return r;
}

void vmq_monitor_vm_gone(struct vmq_monitor *m, struct vmq_vm *vm) {
        for (uint32_t i = 1; i < m->nchannels; i++) {
                struct vmq_channel *ch = m->channels[i];
                if (ch && ch->open && (ch->end[0] == vm->id || ch->end[1] == vm->id))
                        close_locked(m, ch, vm->id);
        }
}

int vmq_channel_get_info(struct vmq_monitor *m, uint32_t id, struct vmq_channel_info *ret) {
        int r = 0;
        pthread_rwlock_rdlock(&m->rw);
        struct vmq_channel *ch = vmq_monitor_channel_locked(m, id);
        if (!ch) {
                r = -ENOENT;
        } else {
                ret->id = ch->id;
                ret->end[0] = ch->end[0];
                ret->end[1] = ch->end[1];
                ret->open = ch->open;
                ret->linked = ch->linked;
                ret->transfer = ch->cfg.transfer;
                for (int i = 0; i < 2; i++) {
                        ret->messages[i] = atomic_load(&ch->messages[i]);
                        ret->bytes[i] = atomic_load(&ch->bytes[i]);
                }
        }
        pthread_rwlock_unlock(&m->rw);
        return r;
}

void vmq_monitor_revoke_shares(struct vmq_monitor *m, struct vmq_vm *vm) {
        struct vmq_share_run *runs = NULL;
        size_t n = 0;
        if (!vm->space || vmq_space_shares_out(vm->space, &runs, &n) < 0)
                return; /* the receivers still keep their pages */
        for (size_t i = 0; i < n; i++) {
                for (struct vmq_vm *to = m->vms; to; to = to->next) {
                        if (to->space != runs[i].space)
                                continue;
                        struct vmq_desc d = {0};
                        d.kind = VMQ_DESC_REVOKED;
                        d.src_vm = vm->id;
                        d.gpa = runs[i].gpa;
                        d.len = (uint32_t)VMQ_MIN(runs[i].len, (uint64_t)UINT32_MAX);
                        d.flags = VMQ_DESC_F_SHARED;
                        /* A full queue loses the notice, never the pages. */
                        (void)vmq_monitor_deliver(to, &d);
                        break;
                }
        }
        free(runs);
}
