/* SPDX-License-Identifier: MIT */
/*
 * The host as a channel end: its inboxes, and the host memory budget.
 *
 * A guest's message to the host is copied into host memory and waits in the
 * channel's inbox until the host reads it.  Everything a guest can make the
 * host hold this way is charged, before it is allocated, against two
 * budgets: the sending VM's (vmq_vm_config.host_budget) and all guests'
 * together (vmq_monitor_config.host_budget); also against the channel's
 * depth (host_depth messages).  A message that does not fit now is refused
 * with VMQ_E_AGAIN (a posted one waits at the head of the post ring until
 * the host reads); one that could never fit with VMQ_E_NOMEM.  The charge is
 * given back when the host takes the message.  HELLO and CLOSE, which the
 * monitor itself sends, are charged to no VM: at most two per channel.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "core/vm.h"

static struct vmq_host_msg *msg_new(const struct vmq_desc *d, size_t len) {
        struct vmq_host_msg *msg = malloc(sizeof(*msg) + len);
        if (!msg)
                return NULL;
        msg->kind = d->kind;
        msg->flags = d->flags;
        msg->channel = d->channel;
        msg->src_vm = d->src_vm;
        msg->error = d->error;
        msg->tag = d->tag;
        msg->len = len;
        return msg;
}

static uint64_t cost_of(size_t len) {
        return sizeof(struct vmq_host_msg) + sizeof(struct vmq_host_entry) + len;
}

/* Appends; caller holds host_lock. */
static void append_locked(struct vmq_channel *ch, struct vmq_host_entry *e) {
        e->next = NULL;
        if (ch->inbox_tail)
                ch->inbox_tail->next = e;
        else
                ch->inbox_head = e;
        ch->inbox_tail = e;
        ch->inbox_len++;
}

void vmq_host_deliver_forced(struct vmq_monitor *m, struct vmq_channel *ch,
                             const struct vmq_desc *d, const void *data, size_t len) {
        struct vmq_host_entry *e = malloc(sizeof(*e));
        struct vmq_host_msg *msg = msg_new(d, len);
        if (!e || !msg) {
                /* Lost to a host out of memory; a CLOSE also shows as EPIPE. */
                free(e);
                free(msg);
                return;
        }
        if (len)
                memcpy(msg->data, data, len);
        e->msg = msg;
        e->charged_vm = VMQ_NO_VM;
        e->charged = 0;
        pthread_mutex_lock(&m->host_lock);
        append_locked(ch, e);
        pthread_cond_broadcast(&m->host_cond);
        pthread_mutex_unlock(&m->host_lock);
        vmq_monitor_notify(m);
}

int32_t vmq_host_deliver_from(struct vmq_vm *vm, struct vmq_channel *ch, int to,
                              const struct vmq_source *src, bool deferred, struct vmq_desc *d) {
        struct vmq_monitor *m = vm->mon;
        size_t len = src ? src->len : d->len;
        uint64_t cost = cost_of(len);
        int32_t r = 0;

        if (src && len > VMQ_HOST_MSG_MAX)
                r = -VMQ_E_LEN;
        else if (cost > vm->cfg.host_budget || cost > m->cfg.host_budget)
                r = -VMQ_E_NOMEM; /* could never fit */
        if (r < 0) {
                if (!src)
                        vmq_monitor_count_sent(vm, ch, to, d->len, deferred, -1);
                return r;
        }
        if (src)
                vmq_monitor_count_sent(vm, ch, to, len, deferred, 1);

        /* Reserve first: nothing is allocated past the budgets. */
        pthread_mutex_lock(&m->host_lock);
        if (ch->inbox_len >= ch->cfg.host_depth || vm->host_bytes + cost > vm->cfg.host_budget ||
            m->host_bytes + cost > m->cfg.host_budget) {
                r = -VMQ_E_AGAIN;
                if (deferred) {
                        atomic_store(&vm->stalled_on, VMQ_HOST_ID);
                        atomic_store(&m->host_stalled, true);
                }
        } else {
                vm->host_bytes += cost;
                m->host_bytes += cost;
        }
        pthread_mutex_unlock(&m->host_lock);

        struct vmq_host_entry *e = NULL;
        struct vmq_host_msg *msg = NULL;
        if (r == 0) {
                e = malloc(sizeof(*e));
                if (src) {
                        d->kind = VMQ_DESC_PAGE;
                        d->flags = VMQ_DESC_F_COPIED;
                }
                msg = msg_new(d, len);
                if (!e || !msg)
                        r = -VMQ_E_NOMEM;
        }
        if (r == 0) {
                if (src)
                        /* The sender's transport copies, with its pages held
                         * in place. */
                        r = vm->ops->read(vm, src->gpa, msg->data, len);
                else if (len)
                        memcpy(msg->data, d->data, len);
        }
        pthread_mutex_lock(&m->host_lock);
        if (r == 0) {
                e->msg = msg;
                e->charged_vm = vm->id;
                e->charged = cost;
                append_locked(ch, e);
                pthread_cond_broadcast(&m->host_cond);
        } else if (r != -VMQ_E_AGAIN) {
                vm->host_bytes -= cost;
                m->host_bytes -= cost;
        }
        pthread_mutex_unlock(&m->host_lock);
        if (r < 0) {
                free(e);
                free(msg);
                vmq_monitor_count_sent(vm, ch, to, len, deferred, -1);
                return r;
        }
        vmq_monitor_notify(m);
        if (src)
                atomic_fetch_add(&vm->st_copies, 1);
        return 0;
}

/* Takes the head of the inbox; caller holds host_lock. */
static struct vmq_host_entry *pop_locked(struct vmq_monitor *m, struct vmq_channel *ch) {
        struct vmq_host_entry *e = ch->inbox_head;
        if (!e)
                return NULL;
        ch->inbox_head = e->next;
        if (!ch->inbox_head)
                ch->inbox_tail = NULL;
        ch->inbox_len--;
        m->host_bytes -= e->charged;
        return e;
}

void vmq_host_free_inbox(struct vmq_monitor *m, struct vmq_channel *ch) {
        struct vmq_host_entry *e;
        pthread_mutex_lock(&m->host_lock);
        while ((e = pop_locked(m, ch))) {
                free(e->msg);
                free(e);
        }
        pthread_mutex_unlock(&m->host_lock);
}

/* Room appeared at the host: the senders whose posts wait for it go on.
 * Caller holds m->rw (either way). */
static void host_room_locked(struct vmq_monitor *m) {
        if (atomic_exchange(&m->host_stalled, false))
                for (struct vmq_vm *s = m->vms; s; s = s->next)
                        if (atomic_load(&s->stalled_on) == VMQ_HOST_ID)
                                (void)vmq_monitor_drain_posts_now(s);
}

int vmq_channel_forget(struct vmq_monitor *m, uint32_t id) {
        struct vmq_host_entry *e;
        int r = 0;

        vmq_monitor_wrlock(m);
        struct vmq_channel *ch = vmq_monitor_channel_locked(m, id);
        if (!ch) {
                r = -ENOENT;
                goto out;
        }
        if (ch->open) {
                r = -EBUSY;
                goto out;
        }
        m->channels[id] = NULL;
        pthread_mutex_lock(&m->host_lock);
        while ((e = pop_locked(m, ch))) {
                /* The sender's own budget gets its share back too. */
                if (e->charged_vm != VMQ_NO_VM) {
                        struct vmq_vm *c = vmq_monitor_find_vm_id_locked(m, e->charged_vm);
                        if (c && c->host_bytes >= e->charged)
                                c->host_bytes -= e->charged;
                }
                free(e->msg);
                free(e);
        }
        ch->forgotten = true;
        bool now = ch->waiters == 0;
        pthread_cond_broadcast(&m->host_cond);
        pthread_mutex_unlock(&m->host_lock);
        if (now)
                free(ch);
        host_room_locked(m);
out:
        pthread_rwlock_unlock(&m->rw);
        return r;
}

void vmq_host_vm_gone(struct vmq_monitor *m, struct vmq_vm *vm) {
        /* Its messages stay readable; their charge is only the monitor's
         * now, so reading them later needs no VM. */
        pthread_mutex_lock(&m->host_lock);
        for (uint32_t i = 1; i < m->nchannels; i++) {
                struct vmq_channel *ch = m->channels[i];
                if (!ch)
                        continue;
                for (struct vmq_host_entry *e = ch->inbox_head; e; e = e->next)
                        if (e->charged_vm == vm->id)
                                e->charged_vm = VMQ_NO_VM;
        }
        vm->host_bytes = 0;
        pthread_mutex_unlock(&m->host_lock);
}

static int host_side_locked(struct vmq_monitor *m, uint32_t id, struct vmq_channel **ret_ch) {
        struct vmq_channel *ch = vmq_monitor_channel_locked(m, id);
        if (!ch)
                return -ENOENT;
        if (ch->end[0] != VMQ_HOST_ID && ch->end[1] != VMQ_HOST_ID)
                return -EPERM;
        *ret_ch = ch;
        return ch->end[0] == VMQ_HOST_ID ? 0 : 1;
}

int vmq_host_send(struct vmq_monitor *m, uint32_t channel, const void *data, size_t len,
                  uint64_t tag) {
        struct vmq_channel *ch;
        struct vmq_vm *peer;
        struct vmq_desc d = {0};
        int side, r;

        if (len > 0 && !data)
                return -EINVAL;
        pthread_rwlock_rdlock(&m->rw);
        side = host_side_locked(m, channel, &ch);
        if (side < 0) {
                r = side;
                goto out;
        }
        if (!ch->open) {
                r = -EPIPE;
                goto out;
        }
        peer = vmq_monitor_find_vm_id_locked(m, ch->end[1 - side]);
        if (!peer) {
                r = -EPIPE;
                goto out;
        }
        d.channel = ch->id;
        d.src_vm = vmq_channel_stamp(ch, side);
        d.tag = tag;
        d.len = (uint32_t)len;
        if (len > UINT32_MAX || len > peer->ops->window(peer, VMQ_HOW_COPY, VMQ_FRAME_4K)) {
                r = -EMSGSIZE;
                goto out;
        }
        pthread_mutex_lock(&peer->rxq_lock);
        r = vmq_monitor_room_locked(peer) > 0 ? 0 : -EAGAIN;
        if (r == 0 && len <= VMQ_INLINE_MAX) {
                d.kind = VMQ_DESC_INLINE;
                if (len)
                        memcpy(d.data, data, len);
        } else if (r == 0) {
                d.kind = VMQ_DESC_PAGE;
                int32_t e = peer->ops->place_host(peer, data, len, &d);
                r = e == 0 ? 0 : e == -VMQ_E_NOMEM ? -ENOMEM : -EAGAIN;
        }
        if (r == 0)
                vmq_monitor_enqueue_locked(peer, &d);
        pthread_mutex_unlock(&peer->rxq_lock);
        if (r == 0) {
                vmq_vm_wake(peer);
                atomic_fetch_add(&ch->messages[1 - side], 1);
                atomic_fetch_add(&ch->bytes[1 - side], len);
        }
out:
        pthread_rwlock_unlock(&m->rw);
        return r;
}

int vmq_host_recv(struct vmq_monitor *m, uint32_t channel, int timeout_ms,
                  struct vmq_host_msg **ret) {
        struct vmq_channel *ch;
        struct timespec ts;
        int r;

        ts = vmq_deadline_ms(timeout_ms);
        /* A waiter's reference keeps ch alive after the read lock is
         * dropped, even if vmq_channel_forget() takes it out meanwhile. */
        pthread_rwlock_rdlock(&m->rw);
        r = host_side_locked(m, channel, &ch);
        if (r >= 0) {
                pthread_mutex_lock(&m->host_lock);
                ch->waiters++;
        }
        pthread_rwlock_unlock(&m->rw);
        if (r < 0)
                return r;

        uint32_t charged_vm = VMQ_NO_VM;
        uint64_t charged = 0;
        for (;;) {
                if (ch->forgotten) {
                        r = -ENOENT;
                        break;
                }
                struct vmq_host_entry *e = pop_locked(m, ch);
                if (e) {
                        charged_vm = e->charged_vm;
                        charged = e->charged;
                        *ret = e->msg;
                        free(e);
                        r = 0;
                        break;
                }
                if (!ch->open) {
                        r = -EPIPE;
                        break;
                }
                if (timeout_ms == 0) {
                        r = -ETIMEDOUT;
                        break;
                }
                if (timeout_ms < 0)
                        pthread_cond_wait(&m->host_cond, &m->host_lock);
                else if (pthread_cond_timedwait(&m->host_cond, &m->host_lock, &ts) == ETIMEDOUT) {
                        r = -ETIMEDOUT;
                        break;
                }
        }
        bool last = --ch->waiters == 0 && ch->forgotten;
        pthread_mutex_unlock(&m->host_lock);
        if (last)
                free(ch);

        if (r == 0) {
                /* Room appeared: give the charge back, and the senders whose
                 * posts wait for room at the host go on (room in this inbox
                 * or in the global budget: any of them may fit now).  The
                 * flag is set under host_lock before a sender gives up, so
                 * one that gave up before the pop above is seen here. */
                pthread_rwlock_rdlock(&m->rw);
                if (charged_vm != VMQ_NO_VM) {
                        struct vmq_vm *c = vmq_monitor_find_vm_id_locked(m, charged_vm);
                        pthread_mutex_lock(&m->host_lock);
                        /* A VM gone meanwhile had its charge dropped. */
                        if (c && c->host_bytes >= charged)
                                c->host_bytes -= charged;
                        pthread_mutex_unlock(&m->host_lock);
                }
                host_room_locked(m);
                pthread_rwlock_unlock(&m->rw);
        }
        return r;
}
