/* SPDX-License-Identifier: MIT */
/*
 * The request path: checking a guest's request and delivering it.
 *
 * A request (the vCPU's mailbox for an immediate send, or an entry of the
 * post ring for a deferred one) is copied out of guest memory once and then
 * checked, in this order, each failure answered with its own error code:
 * ABI version, forged source, op/flags/reserved, channel membership, inline
 * length, then for pages the sender's transport checks the run (range,
 * frame alignment, run length, ownership: only pages the sender owns, never
 * a read-only share it received), then the receiver's window, and finally
 * room at the receiver.  Only after every check has passed and room has
 * been found (under the receiver's queue lock) does the receiver's
 * transport place the pages, so a refused request changes nothing: "retry
 * later" (VMQ_E_AGAIN) loses nothing.  Which transport either end uses is
 * the transports' business (vm->ops); nothing here asks.
 *
 * Deferred requests that meet a full receiver stay at the head of the
 * sender's post ring.  The sender records which receiver it waits for
 * (stalled_on), the receiver that someone waits (has_stalled, set under its
 * queue lock at the moment room was found lacking, so no wake-up is lost);
 * when the receiver frees room (RELEASE, WAIT, the host taking a message)
 * it drains every VM stalled on it.  Any number of senders can wait.
 *
 * Identity is never taken from the guest: the source VM id in every
 * descriptor, and the identity in HELLO descriptors, come from the monitor's
 * own records.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "core/util.h"
#include "core/vm.h"

int vmq_monitor_queue_count(struct vmq_vm *vm) {
        int space;
        pthread_mutex_lock(&vm->rxq_lock);
        space = vmq_queue_space(&vm->rxq);
        pthread_mutex_unlock(&vm->rxq_lock);
        if (space < 0)
                return -1;
        return (int)vm->rxq.capacity - space;
}

void vmq_monitor_count_error(struct vmq_vm *vm, int code) {
        atomic_fetch_add(&vm->st_errors, 1);
        if (code > 0 && code < VMQ_E_MAX)
                atomic_fetch_add(&vm->st_error[code], 1);
}

/* Caller holds to->rxq_lock and checked the room.  The guest may still
 * have rewritten its consumer index since: then the queue refuses, the
 * descriptor is lost to that receiver alone (what it carried stays in its
 * window, its own), and the corruption is counted against it. */
void vmq_monitor_enqueue_locked(struct vmq_vm *to, const struct vmq_desc *d) {
        if (vmq_queue_enqueue(&to->rxq, d, 1) == 1)
                atomic_fetch_add(&to->st_received, 1);
        else
                vmq_monitor_count_error(to, VMQ_E_PROTO);
}

int vmq_monitor_room_locked(struct vmq_vm *to) {
        int space = vmq_queue_space(&to->rxq);
        if (space < 0) {
                vmq_monitor_count_error(to, VMQ_E_PROTO);
                return -VMQ_E_PROTO;
        }
        return space;
}

/* A deferred request of `from` found no room at `to`; caller holds
 * to->rxq_lock (see the top). */
static void stall_locked(struct vmq_vm *from, struct vmq_vm *to, bool deferred) {
        if (!deferred || !from)
                return;
        atomic_store(&from->stalled_on, to->id);
        atomic_store(&to->has_stalled, true);
}

/* Enqueues one descriptor at `to`, from a request of `from` (NULL: from the
 * monitor itself). */
static int deliver_from(struct vmq_vm *from, bool deferred, struct vmq_vm *to,
                        const struct vmq_desc *d) {
        int r;
        pthread_mutex_lock(&to->rxq_lock);
        r = vmq_monitor_room_locked(to);
        if (r > 0) {
                vmq_monitor_enqueue_locked(to, d);
                r = 0;
        } else if (r == 0) {
                r = -VMQ_E_AGAIN;
                stall_locked(from, to, deferred);
        }
        pthread_mutex_unlock(&to->rxq_lock);
        if (r == 0)
                vmq_vm_wake(to);
        return r;
}

int vmq_monitor_deliver(struct vmq_vm *to, const struct vmq_desc *d) {
        return deliver_from(NULL, false, to, d);
}

/* Adds (sign 1) or takes back (sign -1) one sent message. */
void vmq_monitor_count_sent(struct vmq_vm *vm, struct vmq_channel *ch, int to, uint64_t len,
                            bool deferred, int sign) {
        uint64_t one = (uint64_t)(int64_t)sign, bytes = len * (uint64_t)(int64_t)sign;
        atomic_fetch_add(&vm->st_sent, one);
        atomic_fetch_add(&vm->st_bytes_sent, bytes);
        if (deferred)
                atomic_fetch_add(&vm->st_posted, one);
        atomic_fetch_add(&ch->messages[to], one);
        atomic_fetch_add(&ch->bytes[to], bytes);
}

static void count_method(struct vmq_vm *vm, uint16_t flags) {
        if (flags & VMQ_DESC_F_FLIPPED)
                atomic_fetch_add(&vm->st_flips, 1);
        else if (flags & VMQ_DESC_F_SHARED)
                atomic_fetch_add(&vm->st_shares, 1);
        else
                atomic_fetch_add(&vm->st_copies, 1);
}

static enum vmq_how choose_how(const struct vmq_monitor *m, uint32_t flags,
                               const struct vmq_channel *ch, const struct vmq_source *src) {
        if (flags & VMQ_REQ_F_COPY)
                return VMQ_HOW_COPY;
        if (flags & VMQ_REQ_F_FLIP)
                return VMQ_HOW_FLIP;
        if (flags & VMQ_REQ_F_SHARE)
                return VMQ_HOW_SHARE;
        if (ch->cfg.transfer == VMQ_TRANSFER_COPY)
                return VMQ_HOW_COPY;
        if (ch->cfg.transfer == VMQ_TRANSFER_FLIP)
                return VMQ_HOW_FLIP;
        /* auto: what this machine measured (calibrate.c) */
        if (src->kind == VMQ_FRAME_2M)
                return m->plan.flip_2m ? VMQ_HOW_FLIP : VMQ_HOW_COPY;
        uint64_t pages = VMQ_ALIGN_UP((uint64_t)src->len, VMQ_PAGE_SIZE) / VMQ_PAGE_SIZE;
        return m->plan.flip_min_4k && pages >= m->plan.flip_min_4k ? VMQ_HOW_FLIP : VMQ_HOW_COPY;
}

/* A page run to a VM: room in its queue, then its transport places it. */
static int32_t send_pages(struct vmq_vm *vm, struct vmq_channel *ch, int to, struct vmq_vm *peer,
                          const struct vmq_source *src, enum vmq_how how, bool deferred,
                          struct vmq_desc *d) {
        int32_t r;
        if (src->len > peer->ops->window(peer, how, src->kind))
                return -VMQ_E_LEN; /* could never fit the receiver's window */
        pthread_mutex_lock(&peer->rxq_lock);
        r = vmq_monitor_room_locked(peer);
        if (r == 0)
                r = -VMQ_E_AGAIN;
        if (r > 0)
                r = peer->ops->place(peer, src, how, d);
        if (r == 0) {
                d->kind = VMQ_DESC_PAGE;
                vmq_monitor_enqueue_locked(peer, d);
        } else if (r == -VMQ_E_AGAIN) {
                stall_locked(vm, peer, deferred);
        }
        pthread_mutex_unlock(&peer->rxq_lock);
        if (r == 0) {
                vmq_vm_wake(peer);
                count_method(vm, d->flags);
                vmq_monitor_count_sent(vm, ch, to, src->len, deferred, 1);
        }
        return r;
}

static int32_t send_inline(struct vmq_vm *vm, struct vmq_channel *ch, int to, struct vmq_vm *peer,
                           bool deferred, struct vmq_desc *d) {
        int32_t r;
        d->kind = VMQ_DESC_INLINE;
        /* Counted before delivery so that whoever receives it sees the
         * counters include it; undone if delivery fails. */
        vmq_monitor_count_sent(vm, ch, to, d->len, deferred, 1);
        if (!peer)
                return vmq_host_deliver_from(vm, ch, to, NULL, deferred, d);
        r = deliver_from(vm, deferred, peer, d);
        if (r < 0)
                vmq_monitor_count_sent(vm, ch, to, d->len, deferred, -1);
        return r;
}

/* A request checked up to the point where its receiver takes it. */
struct checked {
        struct vmq_channel *ch;
        int to;
        struct vmq_vm *peer;   /* NULL: the host end */
        struct vmq_source src; /* VMQ_OP_PAGE */
        struct vmq_desc d;     /* channel, src_vm, tag, len; inline data */
};

/* Every check that needs no receiver's lock, in the order at the top. */
static int32_t check_request(struct vmq_vm *vm, const struct vmq_request *req, struct checked *c) {
        struct vmq_monitor *m = vm->mon;
        uint32_t flags = req->flags;
        int side;

        if (req->abi == 0 || req->abi > VMQ_ABI_VERSION)
                return -VMQ_E_VERSION;
        if (req->src_vm != 0 && req->src_vm != vm->id)
                return -VMQ_E_FORGED;
        if (req->op != VMQ_OP_INLINE && req->op != VMQ_OP_PAGE)
                return -VMQ_E_INVAL;
        if ((flags & ~VMQ_REQ_F_ALL) || __builtin_popcount(flags & VMQ_REQ_F_ALL) > 1 ||
            req->reserved != 0)
                return -VMQ_E_INVAL;

        side = vmq_monitor_open_end_locked(m, req->channel, vm->id, &c->ch);
        if (side < 0)
                return side;
        c->to = 1 - side;
        c->peer = NULL;
        if (c->ch->end[c->to] != VMQ_HOST_ID) {
                c->peer = vmq_monitor_find_vm_id_locked(m, c->ch->end[c->to]);
                if (!c->peer)
                        return -VMQ_E_CLOSED;
        }

        memset(&c->d, 0, sizeof(c->d));
        c->d.channel = c->ch->id;
        c->d.src_vm = vm->id; /* stamped here, never taken from the guest */
        c->d.tag = req->tag;
        c->d.len = req->len;

        if (req->op == VMQ_OP_INLINE) {
                if (req->len > VMQ_INLINE_MAX)
                        return -VMQ_E_LEN;
                memcpy(c->d.data, req->data, req->len);
                return 0;
        }
        c->src = (struct vmq_source){.vm = vm, .gpa = req->gpa, .len = req->len};
        return vm->ops->check_source(vm, req->gpa, req->len, &c->src.kind);
}

int32_t vmq_monitor_handle_request(struct vmq_vm *vm, const struct vmq_request *req,
                                   bool deferred) {
        struct checked c;
        int32_t r = check_request(vm, req, &c);
        if (r < 0)
                return r;
        if (req->op == VMQ_OP_INLINE)
                return send_inline(vm, c.ch, c.to, c.peer, deferred, &c.d);
        if (!c.peer)
                return vmq_host_deliver_from(vm, c.ch, c.to, &c.src, deferred, &c.d);
        return send_pages(vm, c.ch, c.to, c.peer, &c.src,
                          choose_how(vm->mon, req->flags, c.ch, &c.src), deferred, &c.d);
}

/*
 * A burst: the page requests at the head of the post ring (`avail` of them
 * validated) that all go by copy to one VM whose transport places copies
 * together.  They are placed with one remap (one mmap, when the pool's
 * frames are consecutive), enqueued under one hold of the receiver's lock,
 * and woken once.  Returns how many were taken from the head; 0 leaves the
 * head to the one-at-a-time path, which also gives a request that fails
 * its own error or stalls it.
 */
#define BURST_MAX 32u
static int drain_copy_burst(struct vmq_vm *vm, uint32_t avail) {
        struct vmq_source src[BURST_MAX];
        struct vmq_desc d[BURST_MAX];
        struct checked c;
        struct vmq_channel *ch = NULL;
        struct vmq_vm *peer = NULL;
        uint32_t n = 0;
        int to = 0;

        avail = VMQ_MIN(avail, BURST_MAX);
        while (n < avail) {
                struct vmq_request req;
                const void *slot = vmq_queue_peek_at(&vm->postq, n);
                if (!slot)
                        break;
                /* One copy out of guest memory, as for the head. */
                memcpy(&req, slot, sizeof(req));
                if (req.op != VMQ_OP_PAGE || check_request(vm, &req, &c) < 0 || !c.peer ||
                    !c.peer->ops->place_copies || (ch && c.ch != ch) ||
                    choose_how(vm->mon, req.flags, c.ch, &c.src) != VMQ_HOW_COPY)
                        break;
                ch = c.ch;
                peer = c.peer;
                to = c.to;
                src[n] = c.src;
                d[n] = c.d;
                d[n].kind = VMQ_DESC_PAGE;
                if (++n == 1) {
                        /* No more than the receiver has room for: a full
                         * receiver costs one look, not a row of checks. */
                        pthread_mutex_lock(&peer->rxq_lock);
                        int room = vmq_queue_space(&peer->rxq);
                        pthread_mutex_unlock(&peer->rxq_lock);
                        avail = room > 0 ? VMQ_MIN(avail, (uint32_t)room) : 0;
                }
        }
        if (n < 2)
                return 0;
        pthread_mutex_lock(&peer->rxq_lock);
        int room = vmq_monitor_room_locked(peer);
        n = room > 0 ? VMQ_MIN(n, (uint32_t)room) : 0;
        int32_t r = n >= 2 ? peer->ops->place_copies(peer, src, n, d) : -VMQ_E_AGAIN;
        if (r == 0)
                for (uint32_t i = 0; i < n; i++)
                        vmq_monitor_enqueue_locked(peer, &d[i]);
        pthread_mutex_unlock(&peer->rxq_lock);
        if (r < 0)
                return 0;
        vmq_vm_wake(peer);
        for (uint32_t i = 0; i < n; i++) {
                count_method(vm, d[i].flags);
                vmq_monitor_count_sent(vm, ch, to, src[i].len, true, 1);
        }
        return (int)n;
}

/* Drains the post ring; returns the number of requests taken. */
int vmq_monitor_drain_posts_now(struct vmq_vm *vm) {
        pthread_mutex_lock(&vm->post_lock);
        int taken = vmq_monitor_drain_posts_locked(vm, INT_MAX);
        pthread_mutex_unlock(&vm->post_lock);
        return taken;
}

int vmq_monitor_drain_posts_locked(struct vmq_vm *vm, int max) {
        uint32_t *word = &vm->vmcs->post_doorbell;
        bool armed = false;
        int taken = 0;
        while (taken < max) {
                struct vmq_request req;
                int n = vmq_queue_count(&vm->postq);
                if (n < 0) {
                        vmq_monitor_count_error(vm, VMQ_E_PROTO);
                        break;
                }
                if (n == 0) {
                        /* Empty.  Unless the poller polls it, the guest
                         * must ring after its next post; its word may
                         * still say 0 from a polled or stalled spell.  Set
                         * it, then look once more after the barrier (the
                         * rule in core/vmq-abi.h).  Once per call: the
                         * guest may write 0 again, and that is its own
                         * loss, not a loop of ours. */
                        if (armed || atomic_load(&vm->polled) ||
                            __atomic_load_n(word, __ATOMIC_RELAXED) == 1)
                                break;
                        armed = true;
                        __atomic_store_n(word, 1, __ATOMIC_RELAXED);
                        VMQ_FULL_BARRIER();
                        continue;
                }
                if (n > 1 && max - taken > 1) {
                        int k = drain_copy_burst(vm, (uint32_t)VMQ_MIN(n, max - taken));
                        if (k > 0) {
                                vmq_queue_consume(&vm->postq, (uint32_t)k);
                                atomic_store(&vm->stalled_on, VMQ_NO_VM);
                                taken += k;
                                continue;
                        }
                }
                const void *slot = vmq_queue_peek(&vm->postq);
                if (!slot)
                        break;
                /* One copy out of guest memory (the VMCS, which the guest
                 * cannot move), then only the copy is used. */
                memcpy(&req, slot, sizeof(req));
                int32_t r = vmq_monitor_handle_request(vm, &req, true);
                if (r == -VMQ_E_AGAIN)
                        /* Left at the head, stalled_on set: retried when
                         * room appears. */
                        break;
                vmq_queue_consume(&vm->postq, 1);
                atomic_store(&vm->stalled_on, VMQ_NO_VM);
                taken++;
                if (r < 0) {
                        struct vmq_desc d = {0};
                        vmq_monitor_count_error(vm, -r);
                        d.kind = VMQ_DESC_ERROR;
                        d.channel = req.channel;
                        d.src_vm = vm->id;
                        d.tag = req.tag;
                        d.error = -r;
                        (void)vmq_monitor_deliver(vm, &d); /* our queue full: only counted */
                }
        }
        return taken;
}

void vmq_monitor_drain_posts(struct vmq_vm *vm) {
        /* Cheap test first: most exits find an empty post ring.  The ring's
         * own index is written under post_lock, so read it atomically; a
         * stale value only costs a drain that finds nothing, or leaves the
         * work to the drain that is moving it right now. */
        uint32_t prod = __atomic_load_n(&vm->postq.idx->prod, __ATOMIC_ACQUIRE);
        uint32_t local = __atomic_load_n(&vm->postq.local, __ATOMIC_RELAXED);
        if (prod == local && atomic_load(&vm->stalled_on) == VMQ_NO_VM)
                return;
        (void)vmq_monitor_drain_posts_now(vm);
}

void vmq_monitor_retry_stalled(struct vmq_monitor *m, struct vmq_vm *vm) {
        pthread_mutex_lock(&vm->rxq_lock);
        bool any = atomic_exchange(&vm->has_stalled, false);
        pthread_mutex_unlock(&vm->rxq_lock);
        if (!any)
                return;
        /* A sender that stalls after the flag was cleared sets it again. */
        for (struct vmq_vm *s = m->vms; s; s = s->next)
                if (s != vm && atomic_load(&s->stalled_on) == vm->id)
                        (void)vmq_monitor_drain_posts_now(s);
}
