/* SPDX-License-Identifier: MIT */
/*
 * The monitor: channels, the request path, hypercalls and the host end.
 *
 * A request (the vCPU's mailbox for an immediate send, or an entry of the
 * post ring for a deferred one) is copied out of guest memory once and then
 * checked, in this order, each failure answered with its own error code:
 * ABI version, forged source, op/flags/reserved, channel membership, inline
 * length, then for pages: region (range), frame alignment, run length,
 * ownership, and finally room at the receiver.  Only after every check has
 * passed and room has been found (under the receiver's queue lock) does the
 * remap engine move, share or copy the frames, so a refused request changes
 * nothing: "retry later" (VMQ_E_AGAIN) loses nothing.
 *
 * Deferred requests that meet a full receiver stay at the head of the
 * sender's post ring; the sender is remembered by the receiver and drained
 * again when the receiver next frees room (RELEASE, WAIT, or the host
 * taking a message).
 *
 * Identity is never taken from the guest: the source VM id in every
 * descriptor, and the identity in HELLO descriptors, come from the monitor's
 * own records.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>

#include "core/util.h"
#include "core/vm.h"

#define VMQ_HOST_MSG_MAX (64ull * 1024 * 1024)

static void kick_handler(int sig) {
        (void)sig;
}

void vmq_monitor_config_init(struct vmq_monitor_config *cfg) {
        memset(cfg, 0, sizeof(*cfg));
        cfg->pool_4k_frames = 256 * 1024; /* 1 GiB, sparse */
        cfg->pool_2m_frames = 0;
        cfg->kick_signal = SIGUSR1;
        cfg->spin_ns = 50000;
}

void vmq_channel_config_init(struct vmq_channel_config *cfg) {
        memset(cfg, 0, sizeof(*cfg));
        cfg->host_depth = 256;
        cfg->transfer = VMQ_TRANSFER_AUTO;
}

static int hex_nibble(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

/* The host's UUID is its machine id when it has one. */
static void host_uuid(uint8_t uuid[16]) {
        char buf[64] = "";
        int fd = open("/etc/machine-id", O_RDONLY | O_CLOEXEC);
        ssize_t n = -1;
        if (fd >= 0) {
                n = read(fd, buf, sizeof(buf) - 1);
                close(fd);
        }
        if (n >= 32) {
                bool ok = true;
                for (int i = 0; i < 16 && ok; i++) {
                        int hi = hex_nibble(buf[2 * i]), lo = hex_nibble(buf[2 * i + 1]);
                        ok = hi >= 0 && lo >= 0;
                        uuid[i] = (uint8_t)(hi << 4 | lo);
                }
                if (ok)
                        return;
        }
        memset(uuid, 0, 16);
}

int vmq_monitor_new(const struct vmq_monitor_config *cfg, struct vmq_monitor **ret) {
        struct vmq_monitor *m;
        struct vmq_pool_config pc = {0};
        struct sigaction sa = {0};
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->cfg = *cfg;
        if (m->cfg.kick_signal <= 0)
                m->cfg.kick_signal = SIGUSR1;
        m->kvm_fd = -1;
        m->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (m->event_fd < 0) {
                free(m);
                return -errno;
        }
        pthread_rwlock_init(&m->rw, NULL);
        pthread_mutex_init(&m->host_lock, NULL);
        {
                pthread_condattr_t ca;
                pthread_condattr_init(&ca);
                pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
                pthread_cond_init(&m->host_cond, &ca);
                pthread_condattr_destroy(&ca);
        }
        m->next_vm_id = 1;
        m->next_channel_id = 1;
        m->host_ident.vm_id = VMQ_HOST_ID;
        snprintf(m->host_ident.name, sizeof(m->host_ident.name), "host");
        host_uuid(m->host_ident.uuid);

        /* No SA_RESTART: the signal must interrupt KVM_RUN. */
        sa.sa_handler = kick_handler;
        sigemptyset(&sa.sa_mask);
        if (sigaction(m->cfg.kick_signal, &sa, NULL) < 0) {
                r = -errno;
                goto fail;
        }

        r = vmq_kvm_open();
        if (r < 0)
                goto fail;
        m->kvm_fd = r;

        pc.frames_4k = cfg->pool_4k_frames;
        pc.frames_2m = cfg->pool_2m_frames;
        pc.require_huge = cfg->require_huge;
        r = vmq_pool_new(&pc, &m->pool);
        if (r < 0)
                goto fail;
        *ret = m;
        return 0;
fail:
        vmq_monitor_free(m);
        return r;
}

static void free_inbox(struct vmq_channel *ch) {
        while (ch->inbox_head) {
                struct vmq_host_entry *e = ch->inbox_head;
                ch->inbox_head = e->next;
                free(e->msg);
                free(e);
        }
        ch->inbox_tail = NULL;
        ch->inbox_len = 0;
}

struct vmq_monitor *vmq_monitor_free(struct vmq_monitor *m) {
        if (!m)
                return NULL;
        for (;;) {
                pthread_rwlock_rdlock(&m->rw);
                struct vmq_vm *vm = m->vms;
                pthread_rwlock_unlock(&m->rw);
                if (!vm)
                        break;
                vmq_vm_destroy(vm);
        }
        for (uint32_t i = 0; i < m->nchannels; i++) {
                if (m->channels[i]) {
                        free_inbox(m->channels[i]);
                        free(m->channels[i]);
                }
        }
        free(m->channels);
        m->pool = vmq_pool_free(m->pool);
        m->kvm_fd = vmq_close(m->kvm_fd);
        m->event_fd = vmq_close(m->event_fd);
        pthread_rwlock_destroy(&m->rw);
        pthread_mutex_destroy(&m->host_lock);
        pthread_cond_destroy(&m->host_cond);
        free(m);
        return NULL;
}

bool vmq_monitor_has_huge(const struct vmq_monitor *m) {
        return vmq_pool_has_huge(m->pool);
}

int vmq_monitor_event_fd(const struct vmq_monitor *m) {
        return m->event_fd;
}

void vmq_monitor_notify(struct vmq_monitor *m) {
        uint64_t one = 1;
        /* Non-blocking: a counter at its maximum is still readable. */
        (void)!write(m->event_fd, &one, sizeof(one));
}

size_t vmq_monitor_frames_free(const struct vmq_monitor *m, bool huge) {
        return vmq_pool_frames_free(m->pool, huge ? VMQ_FRAME_2M : VMQ_FRAME_4K);
}

size_t vmq_monitor_frames_total(const struct vmq_monitor *m, bool huge) {
        return vmq_pool_frames_total(m->pool, huge ? VMQ_FRAME_2M : VMQ_FRAME_4K);
}

void vmq_monitor_host_identity(const struct vmq_monitor *m, struct vmq_identity *ret) {
        *ret = m->host_ident;
}

struct vmq_vm *vmq_monitor_find_vm_locked(struct vmq_monitor *m, const char *name) {
        for (struct vmq_vm *vm = m->vms; vm; vm = vm->next)
                if (strcmp(vm->ident.name, name) == 0)
                        return vm;
        return NULL;
}

static struct vmq_vm *find_vm_id_locked(struct vmq_monitor *m, uint32_t id) {
        for (struct vmq_vm *vm = m->vms; vm; vm = vm->next)
                if (vm->id == id)
                        return vm;
        return NULL;
}

struct vmq_vm *vmq_monitor_find_vm(struct vmq_monitor *m, const char *name) {
        pthread_rwlock_rdlock(&m->rw);
        struct vmq_vm *vm = vmq_monitor_find_vm_locked(m, name);
        pthread_rwlock_unlock(&m->rw);
        return vm;
}

struct vmq_vm *vmq_monitor_find_vm_id(struct vmq_monitor *m, uint32_t id) {
        pthread_rwlock_rdlock(&m->rw);
        struct vmq_vm *vm = find_vm_id_locked(m, id);
        pthread_rwlock_unlock(&m->rw);
        return vm;
}

static struct vmq_channel *channel_locked(struct vmq_monitor *m, uint32_t id) {
        if (id == 0 || id >= m->nchannels)
                return NULL;
        return m->channels[id];
}

/* ---- delivery ------------------------------------------------------------- */

int vmq_monitor_queue_count(struct vmq_vm *vm) {
        int space;
        pthread_mutex_lock(&vm->rxq_lock);
        space = vmq_queue_space(&vm->rxq);
        pthread_mutex_unlock(&vm->rxq_lock);
        if (space < 0)
                return -1;
        return (int)vm->rxq.capacity - space;
}

static void count_error(struct vmq_vm *vm, int code) {
        atomic_fetch_add(&vm->st_errors, 1);
        if (code > 0 && code < VMQ_E_MAX)
                atomic_fetch_add(&vm->st_error[code], 1);
}

/* Caller holds to->rxq_lock and checked the room. */
static void enqueue_locked(struct vmq_vm *to, const struct vmq_desc *d) {
        int r = vmq_queue_enqueue(&to->rxq, d, 1);
        (void)r;
        atomic_fetch_add(&to->st_received, 1);
}

/* Room in a VM's queue: > 0, 0 (full), or -VMQ_E_PROTO. */
static int room_locked(struct vmq_vm *to) {
        int space = vmq_queue_space(&to->rxq);
        if (space < 0) {
                count_error(to, VMQ_E_PROTO);
                return -VMQ_E_PROTO;
        }
        return space;
}

static int deliver_vm(struct vmq_vm *to, const struct vmq_desc *d) {
        int r;
        pthread_mutex_lock(&to->rxq_lock);
        r = room_locked(to);
        if (r > 0) {
                enqueue_locked(to, d);
                r = 0;
        } else if (r == 0) {
                r = -VMQ_E_AGAIN;
        }
        pthread_mutex_unlock(&to->rxq_lock);
        if (r == 0)
                vmq_vm_wake(to);
        return r;
}

static struct vmq_host_msg *host_msg_new(const struct vmq_desc *d, const void *data, size_t len) {
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
        if (len)
                memcpy(msg->data, data, len);
        return msg;
}

/* Appends to the host inbox of a channel; takes ownership of msg.  force
 * ignores the depth limit (HELLO and CLOSE must not be lost). */
static int deliver_host(struct vmq_monitor *m, struct vmq_channel *ch, struct vmq_host_msg *msg,
                        bool force) {
        struct vmq_host_entry *e;
        pthread_mutex_lock(&m->host_lock);
        if (!force && ch->inbox_len >= ch->cfg.host_depth) {
                pthread_mutex_unlock(&m->host_lock);
                free(msg);
                return -VMQ_E_AGAIN;
        }
        e = malloc(sizeof(*e));
        if (!e) {
                pthread_mutex_unlock(&m->host_lock);
                free(msg);
                return -VMQ_E_NOMEM;
        }
        e->next = NULL;
        e->msg = msg;
        if (ch->inbox_tail)
                ch->inbox_tail->next = e;
        else
                ch->inbox_head = e;
        ch->inbox_tail = e;
        ch->inbox_len++;
        pthread_cond_broadcast(&m->host_cond);
        pthread_mutex_unlock(&m->host_lock);
        vmq_monitor_notify(m);
        return 0;
}

static bool host_inbox_full(struct vmq_monitor *m, struct vmq_channel *ch) {
        pthread_mutex_lock(&m->host_lock);
        bool full = ch->inbox_len >= ch->cfg.host_depth;
        pthread_mutex_unlock(&m->host_lock);
        return full;
}

/* ---- requests ------------------------------------------------------------- */

static int32_t map_remap_error(int r) {
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

/* The region of the sender's space that holds gpa. */
static int find_region(struct vmq_space *s, uint64_t gpa, uint64_t *ret_base, uint64_t *ret_size,
                       enum vmq_frame_kind *ret_kind) {
        size_t n = vmq_space_region_count(s);
        for (size_t i = 0; i < n; i++) {
                uint64_t base, size;
                enum vmq_frame_kind kind;
                void *hva;
                if (vmq_space_region(s, i, &base, &size, &kind, &hva) < 0)
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

/* Adds (sign 1) or takes back (sign -1) one sent message. */
static void count_sent(struct vmq_vm *vm, struct vmq_channel *ch, int to, uint64_t len,
                       bool deferred, int sign) {
        uint64_t one = (uint64_t)(int64_t)sign, bytes = len * (uint64_t)(int64_t)sign;
        atomic_fetch_add(&vm->st_sent, one);
        atomic_fetch_add(&vm->st_bytes_sent, bytes);
        if (deferred)
                atomic_fetch_add(&vm->st_posted, one);
        atomic_fetch_add(&ch->messages[to], one);
        atomic_fetch_add(&ch->bytes[to], bytes);
}

/* Remembers that `sender`'s deferred requests wait for room at `to`. */
static void note_blocked(struct vmq_vm *to, uint32_t sender) {
        pthread_mutex_lock(&to->rxq_lock);
        bool have = false;
        for (unsigned i = 0; i < to->nblocked_senders; i++)
                have |= to->blocked_senders[i] == sender;
        if (!have && to->nblocked_senders < VMQ_MAX_BLOCKED)
                to->blocked_senders[to->nblocked_senders++] = sender;
        pthread_mutex_unlock(&to->rxq_lock);
}

/* ---- region VMs: the receive window's slots ------------------------------ */

/* Finds and marks `count` free consecutive slots; caller holds rxq_lock. */
static int region_rx_alloc(struct vmq_vm *vm, size_t count, uint64_t *ret_off) {
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

/* Copies len bytes into fresh slots of a region VM's receive window and
 * returns their offset; caller holds rxq_lock. */
static int region_rx_copy(struct vmq_vm *vm, const void *src, uint64_t len, uint64_t *ret_off) {
        size_t count = (size_t)(VMQ_ALIGN_UP(len, (uint64_t)VMQ_PAGE_SIZE) / VMQ_PAGE_SIZE);
        uint64_t off;
        int r = region_rx_alloc(vm, count, &off);
        if (r < 0)
                return r;
        memcpy(vm->region + off, src, len);
        /* no stale bytes of an earlier message after the payload */
        memset(vm->region + off + len, 0, (uint64_t)count * VMQ_PAGE_SIZE - len);
        *ret_off = off;
        return 0;
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
        size_t count = (size_t)(VMQ_ALIGN_UP(len, (uint64_t)VMQ_PAGE_SIZE) / VMQ_PAGE_SIZE);
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

/*
 * The source of a page request from a region VM: a run of 4 KiB pages of
 * its send area, or of receive slots it holds (to forward them).  Returns
 * a pointer into the region, or NULL with *ret_err.
 */
static const void *region_source(struct vmq_vm *vm, const struct vmq_request *req,
                                 int32_t *ret_err) {
        uint64_t run;
        if (req->len == 0) {
                *ret_err = -VMQ_E_LEN;
                return NULL;
        }
        if (req->gpa >= vm->region_size) {
                *ret_err = -VMQ_E_RANGE;
                return NULL;
        }
        if (!VMQ_IS_ALIGNED(req->gpa, (uint64_t)VMQ_PAGE_SIZE)) {
                *ret_err = -VMQ_E_ALIGN;
                return NULL;
        }
        run = VMQ_ALIGN_UP((uint64_t)req->len, (uint64_t)VMQ_PAGE_SIZE);
        if (req->gpa >= vm->send_lo && req->gpa < vm->send_hi) {
                if (!vmq_range_within(req->gpa, run, vm->send_lo, vm->send_hi - vm->send_lo)) {
                        *ret_err = -VMQ_E_LEN;
                        return NULL;
                }
                return vm->region + req->gpa;
        }
        if (req->gpa >= vm->send_hi) {
                uint64_t rx_size = (uint64_t)vm->rx_slots * VMQ_PAGE_SIZE;
                if (!vmq_range_within(req->gpa, run, vm->send_hi, rx_size)) {
                        *ret_err = -VMQ_E_LEN;
                        return NULL;
                }
                size_t first = (size_t)((req->gpa - vm->send_hi) / VMQ_PAGE_SIZE);
                for (size_t i = 0; i < run / VMQ_PAGE_SIZE; i++)
                        if (!vm->rx_used[first + i]) {
                                *ret_err = -VMQ_E_NOTOWNED;
                                return NULL;
                        }
                return vm->region + req->gpa;
        }
        /* the VMCS */
        *ret_err = -VMQ_E_NOTOWNED;
        return NULL;
}

/*
 * Delivers a page request as a copy when one end is a region VM (the
 * monitor is not the region VM's VMM and cannot remap its memory): `src` is
 * the checked source, copied into the receiver's window.
 */
static int32_t copy_to_peer(struct vmq_vm *vm, const struct vmq_request *req, bool deferred,
                            struct vmq_channel *ch, int to, struct vmq_vm *peer, const void *src,
                            struct vmq_desc *d, struct vmq_vm **ret_peer) {
        int32_t r;

        d->kind = VMQ_DESC_PAGE;
        d->flags = VMQ_DESC_F_COPIED;
        uint64_t window = peer->transport == VMQ_TRANSPORT_IVSHMEM
                                  ? (uint64_t)peer->rx_slots * VMQ_PAGE_SIZE
                                  : peer->cfg.rx_size;
        if (VMQ_ALIGN_UP((uint64_t)req->len, (uint64_t)VMQ_PAGE_SIZE) > window)
                return -VMQ_E_LEN;
        uint64_t dst = 0;
        pthread_mutex_lock(&peer->rxq_lock);
        r = room_locked(peer);
        if (r == 0)
                r = -VMQ_E_AGAIN;
        if (r > 0) {
                if (peer->transport == VMQ_TRANSPORT_IVSHMEM) {
                        r = region_rx_copy(peer, src, req->len, &dst) < 0 ? -VMQ_E_AGAIN : 0;
                } else {
                        size_t count =
                                (size_t)(VMQ_ALIGN_UP((uint64_t)req->len, (uint64_t)VMQ_PAGE_SIZE) /
                                         VMQ_PAGE_SIZE);
                        r = vmq_space_find_empty(peer->space, VMQ_RX_GPA, count, &dst) < 0
                                    ? -VMQ_E_AGAIN
                                    : 0;
                        if (r == 0)
                                r = map_remap_error(
                                        vmq_remap_copy_in(peer->space, dst, src, req->len));
                }
        }
        if (r == 0) {
                d->gpa = dst;
                enqueue_locked(peer, d);
        }
        pthread_mutex_unlock(&peer->rxq_lock);
        if (r == 0) {
                vmq_vm_wake(peer);
                atomic_fetch_add(&vm->st_copies, 1);
                count_sent(vm, ch, to, req->len, deferred, 1);
        } else if (r == -VMQ_E_AGAIN) {
                *ret_peer = peer;
        }
        return r;
}

/*
 * Handles one request of `vm`, already copied out of guest memory.
 * Returns 0 or -VMQ_E_*; *ret_peer gets the receiving VM (NULL for the host)
 * when the answer is VMQ_E_AGAIN.
 */
static int32_t handle_request(struct vmq_vm *vm, const struct vmq_request *req, bool deferred,
                              struct vmq_vm **ret_peer, struct vmq_channel **ret_ch) {
        struct vmq_monitor *m = vm->mon;
        struct vmq_channel *ch;
        struct vmq_vm *peer = NULL;
        struct vmq_desc d;
        uint32_t flags = req->flags;
        int side, to;
        int32_t r;

        *ret_peer = NULL;
        *ret_ch = NULL;
        if (req->abi != VMQ_ABI_VERSION)
                return -VMQ_E_VERSION;
        if (req->src_vm != 0 && req->src_vm != vm->id)
                return -VMQ_E_FORGED;
        if (req->op != VMQ_OP_INLINE && req->op != VMQ_OP_PAGE)
                return -VMQ_E_INVAL;
        if ((flags & ~VMQ_REQ_F_ALL) || __builtin_popcount(flags & VMQ_REQ_F_ALL) > 1 ||
            req->reserved != 0)
                return -VMQ_E_INVAL;

        ch = channel_locked(m, req->channel);
        if (!ch)
                return -VMQ_E_NOCHAN;
        if (ch->end[0] == vm->id)
                side = 0;
        else if (ch->end[1] == vm->id)
                side = 1;
        else
                return -VMQ_E_NOCHAN;
        if (!ch->open)
                return -VMQ_E_CLOSED;
        to = 1 - side;
        *ret_ch = ch;
        if (ch->end[to] != VMQ_HOST_ID) {
                peer = find_vm_id_locked(m, ch->end[to]);
                if (!peer)
                        return -VMQ_E_CLOSED;
        }

        memset(&d, 0, sizeof(d));
        d.channel = ch->id;
        d.src_vm = vm->id; /* stamped here, never taken from the guest */
        d.tag = req->tag;
        d.len = req->len;

        if (req->op == VMQ_OP_INLINE) {
                if (req->len > VMQ_INLINE_MAX)
                        return -VMQ_E_LEN;
                d.kind = VMQ_DESC_INLINE;
                memcpy(d.data, req->data, req->len);
                /* Counted before delivery so that whoever receives it sees
                 * the counters include it; undone if delivery fails. */
                count_sent(vm, ch, to, req->len, deferred, 1);
                if (peer) {
                        r = deliver_vm(peer, &d);
                } else {
                        struct vmq_host_msg *msg = host_msg_new(&d, d.data, d.len);
                        r = msg ? deliver_host(m, ch, msg, false) : -VMQ_E_NOMEM;
                }
                if (r == -VMQ_E_AGAIN)
                        *ret_peer = peer;
                if (r < 0)
                        count_sent(vm, ch, to, req->len, deferred, -1);
                return r;
        }

        /* Page run.  Pages to, from or between region VMs are copied. */
        bool region_path = vm->transport == VMQ_TRANSPORT_IVSHMEM ||
                           (peer && peer->transport == VMQ_TRANSPORT_IVSHMEM);
        enum vmq_frame_kind kind = VMQ_FRAME_4K;
        enum { COPY, FLIP, SHARE } how = COPY;
        const void *src;
        if (vm->transport == VMQ_TRANSPORT_IVSHMEM) {
                int32_t err = -VMQ_E_INVAL; /* region_source() sets it on failure */
                src = region_source(vm, req, &err);
                if (!src)
                        return err;
        } else {
                uint64_t base, size, fs, run_bytes;
                if (req->len == 0)
                        return -VMQ_E_LEN;
                if (find_region(vm->space, req->gpa, &base, &size, &kind) < 0)
                        return -VMQ_E_RANGE;
                fs = vmq_frame_size(kind);
                if (!VMQ_IS_ALIGNED(req->gpa, fs))
                        return -VMQ_E_ALIGN;
                run_bytes = VMQ_ALIGN_UP((uint64_t)req->len, fs);
                if (!vmq_range_within(req->gpa, run_bytes, base, size))
                        return -VMQ_E_LEN;
                /* The system area, the VMCS and everything below the image
                 * are the monitor's, even though they sit in the guest's RAM
                 * region. */
                if (req->gpa < VMQ_IMAGE_GPA)
                        return -VMQ_E_NOTOWNED;

                if (region_path)
                        how = COPY;
                else if (flags & VMQ_REQ_F_COPY)
                        how = COPY;
                else if (flags & VMQ_REQ_F_FLIP)
                        how = FLIP;
                else if (flags & VMQ_REQ_F_SHARE)
                        how = SHARE;
                else if (ch->cfg.transfer == VMQ_TRANSFER_COPY)
                        how = COPY;
                else if (ch->cfg.transfer == VMQ_TRANSFER_FLIP)
                        how = FLIP;
                else
                        /* Remapping a 4 KiB frame costs more than copying it
                         * on the machines we measured; a 2 MiB frame is far
                         * cheaper to move. */
                        how = kind == VMQ_FRAME_2M ? FLIP : COPY;

                src = vmq_space_translate(vm->space, req->gpa, req->len, how != COPY);
                if (!src)
                        return -VMQ_E_NOTOWNED;
        }

        if (!peer) {
                /* The host cannot map frames: it always gets a copy. */
                if (req->len > VMQ_HOST_MSG_MAX)
                        return -VMQ_E_LEN;
                if (host_inbox_full(m, ch))
                        return -VMQ_E_AGAIN;
                d.kind = VMQ_DESC_PAGE;
                d.flags = VMQ_DESC_F_COPIED;
                struct vmq_host_msg *msg = host_msg_new(&d, src, req->len);
                count_sent(vm, ch, to, req->len, deferred, 1);
                r = msg ? deliver_host(m, ch, msg, false) : -VMQ_E_NOMEM;
                if (r == 0)
                        atomic_fetch_add(&vm->st_copies, 1);
                else
                        count_sent(vm, ch, to, req->len, deferred, -1);
                return r;
        }

        if (region_path)
                return copy_to_peer(vm, req, deferred, ch, to, peer, src, &d, ret_peer);

        uint64_t window = VMQ_RX_GPA, wsize = peer->cfg.rx_size, dfs = VMQ_PAGE_SIZE;
        if (how != COPY && kind == VMQ_FRAME_2M) {
                window = VMQ_HUGE_RX_GPA;
                wsize = peer->cfg.huge_rx_size;
                dfs = VMQ_HUGE_PAGE_SIZE;
        }
        size_t count = (size_t)(VMQ_ALIGN_UP((uint64_t)req->len, dfs) / dfs);
        if ((uint64_t)count * dfs > wsize)
                return -VMQ_E_LEN; /* could never fit the receiver's window */

        uint64_t dst = 0;
        pthread_mutex_lock(&peer->rxq_lock);
        r = room_locked(peer);
        if (r == 0)
                r = -VMQ_E_AGAIN;
        if (r > 0) {
                int e = vmq_space_find_empty(peer->space, window, count, &dst);
                r = e < 0 ? -VMQ_E_AGAIN : 0;
        }
        if (r == 0) {
                int e;
                switch (how) {
                case COPY:
                        e = vmq_remap_copy(vm->space, req->gpa, peer->space, dst, req->len);
                        d.flags = VMQ_DESC_F_COPIED;
                        break;
                case FLIP:
                        e = vmq_remap_flip(vm->space, req->gpa, peer->space, dst, count);
                        d.flags = VMQ_DESC_F_FLIPPED;
                        break;
                default:
                        e = vmq_remap_share(vm->space, req->gpa, peer->space, dst, count);
                        d.flags = VMQ_DESC_F_SHARED;
                        break;
                }
                r = map_remap_error(e);
                if (r == 0) {
                        if (dfs == VMQ_HUGE_PAGE_SIZE)
                                d.flags |= VMQ_DESC_F_HUGE;
                        d.kind = VMQ_DESC_PAGE;
                        d.gpa = dst;
                        enqueue_locked(peer, &d);
                }
        }
        pthread_mutex_unlock(&peer->rxq_lock);
        if (r == 0) {
                vmq_vm_wake(peer);
                if (how == COPY)
                        atomic_fetch_add(&vm->st_copies, 1);
                else if (how == FLIP)
                        atomic_fetch_add(&vm->st_flips, 1);
                else
                        atomic_fetch_add(&vm->st_shares, 1);
                count_sent(vm, ch, to, req->len, deferred, 1);
        } else if (r == -VMQ_E_AGAIN) {
                *ret_peer = peer;
        }
        return r;
}

/* Drains the post ring; returns the number of requests taken. */
static int drain_posts(struct vmq_vm *vm) {
        int taken = 0;
        pthread_mutex_lock(&vm->post_lock);
        for (;;) {
                struct vmq_request req;
                struct vmq_vm *peer;
                struct vmq_channel *ch;
                int n = vmq_queue_count(&vm->postq);
                if (n < 0) {
                        count_error(vm, VMQ_E_PROTO);
                        break;
                }
                if (n == 0)
                        break;
                const void *slot = vmq_queue_peek(&vm->postq);
                if (!slot)
                        break;
                /* One copy out of guest memory, then only the copy is used. */
                memcpy(&req, slot, sizeof(req));
                int32_t r = handle_request(vm, &req, true, &peer, &ch);
                if (r == -VMQ_E_AGAIN) {
                        /* Leave it at the head; retried when room appears. */
                        vm->post_stalled = true;
                        if (peer)
                                note_blocked(peer, vm->id);
                        break;
                }
                vmq_queue_consume(&vm->postq, 1);
                vm->post_stalled = false;
                taken++;
                if (r < 0) {
                        struct vmq_desc d = {0};
                        count_error(vm, -r);
                        d.kind = VMQ_DESC_ERROR;
                        d.channel = req.channel;
                        d.src_vm = vm->id;
                        d.tag = req.tag;
                        d.error = -r;
                        (void)deliver_vm(vm, &d); /* if our queue is full, only counted */
                }
        }
        pthread_mutex_unlock(&vm->post_lock);
        return taken;
}

void vmq_monitor_drain_posts(struct vmq_vm *vm) {
        /* Cheap test first: most exits find an empty post ring. */
        uint32_t prod = __atomic_load_n(&vm->postq.idx->prod, __ATOMIC_ACQUIRE);
        if (prod == vm->postq.local && !vm->post_stalled)
                return;
        (void)drain_posts(vm);
}

/* Drains the senders whose deferred requests were waiting for room at vm. */
static void retry_blocked(struct vmq_monitor *m, struct vmq_vm *vm) {
        uint32_t ids[VMQ_MAX_BLOCKED];
        unsigned n;
        pthread_mutex_lock(&vm->rxq_lock);
        n = vm->nblocked_senders;
        memcpy(ids, vm->blocked_senders, n * sizeof(ids[0]));
        vm->nblocked_senders = 0;
        pthread_mutex_unlock(&vm->rxq_lock);
        for (unsigned i = 0; i < n; i++) {
                struct vmq_vm *s = find_vm_id_locked(m, ids[i]);
                if (s && s != vm)
                        (void)drain_posts(s);
        }
}

static int32_t do_release(struct vmq_vm *vm, uint64_t gpa, uint64_t len) {
        uint64_t fs;
        if (vm->transport == VMQ_TRANSPORT_IVSHMEM)
                return region_release(vm, gpa, len);
        if (gpa - VMQ_RX_GPA < vm->cfg.rx_size && gpa >= VMQ_RX_GPA)
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
        if (r == -ERANGE)
                return -VMQ_E_LEN;
        return map_remap_error(r);
}

static void mirror_stats(struct vmq_vm *vm) {
        struct vmq_vmcs_stats *s = &vm->vmcs->stats;
        __atomic_store_n(&s->sent, atomic_load(&vm->st_sent), __ATOMIC_RELAXED);
        __atomic_store_n(&s->received, atomic_load(&vm->st_received), __ATOMIC_RELAXED);
        __atomic_store_n(&s->errors, atomic_load(&vm->st_errors), __ATOMIC_RELAXED);
        __atomic_store_n(&s->exits, atomic_load(&vm->st_exits), __ATOMIC_RELAXED);
}

int32_t vmq_monitor_hypercall(struct vmq_vcpu *c, unsigned nr) {
        struct vmq_vm *vm = c->vm;
        struct vmq_monitor *m = vm->mon;
        struct vmq_request *mb = &vm->vmcs->mbox[c->index];
        int32_t r;

        switch (nr) {
        case VMQ_HC_SEND: {
                struct vmq_request req;
                struct vmq_vm *peer;
                struct vmq_channel *ch;
                memcpy(&req, mb, sizeof(req));
                r = handle_request(vm, &req, false, &peer, &ch);
                break;
        }
        case VMQ_HC_FLUSH:
                r = drain_posts(vm);
                break;
        case VMQ_HC_WAIT:
                retry_blocked(m, vm);
                r = 0;
                break;
        case VMQ_HC_RELEASE: {
                uint64_t gpa = __atomic_load_n(&mb->gpa, __ATOMIC_RELAXED);
                uint32_t len = __atomic_load_n(&mb->len, __ATOMIC_RELAXED);
                r = do_release(vm, gpa, len);
                if (r == 0)
                        retry_blocked(m, vm);
                break;
        }
        case VMQ_HC_CONSOLE: {
                uint64_t gpa = __atomic_load_n(&mb->gpa, __ATOMIC_RELAXED);
                uint32_t len = __atomic_load_n(&mb->len, __ATOMIC_RELAXED);
                char buf[VMQ_CONSOLE_MAX];
                const void *p;
                if (len > VMQ_CONSOLE_MAX) {
                        r = -VMQ_E_LEN;
                        break;
                }
                if (vm->transport == VMQ_TRANSPORT_IVSHMEM)
                        p = gpa <= vm->region_size && len <= vm->region_size - gpa
                                    ? vm->region + gpa
                                    : NULL;
                else
                        p = vmq_space_translate(vm->space, gpa, len, false);
                if (!p) {
                        r = -VMQ_E_RANGE;
                        break;
                }
                /* Copy first: the guest may rewrite the buffer meanwhile. */
                memcpy(buf, p, len);
                vmq_vm_console_append(vm, buf, len);
                r = 0;
                break;
        }
        case VMQ_HC_CLOCK:
                __atomic_store_n(&mb->result, vmq_now_ns(), __ATOMIC_RELAXED);
                r = 0;
                break;
        case VMQ_HC_EXIT:
                r = (int32_t)__atomic_load_n(&mb->arg, __ATOMIC_RELAXED);
                mirror_stats(vm);
                return r; /* the exit code, not a status */
        case VMQ_HC_NOP:
                r = 0;
                break;
        default:
                r = -VMQ_E_NOSYS;
                break;
        }
        if (r < 0)
                count_error(vm, -r);
        __atomic_store_n(&mb->status, r, __ATOMIC_RELAXED);
        mirror_stats(vm);
        return r;
}

/* ---- channels ------------------------------------------------------------- */

static int hello_for(struct vmq_monitor *m, uint32_t id, struct vmq_identity *ret) {
        if (id == VMQ_HOST_ID) {
                *ret = m->host_ident;
                return 0;
        }
        struct vmq_vm *vm = find_vm_id_locked(m, id);
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

        pthread_rwlock_wrlock(&m->rw);
        r = hello_for(m, end_a, &ida);
        if (r == 0)
                r = hello_for(m, end_b, &idb);
        if (r < 0)
                goto out;
        va = end_a == VMQ_HOST_ID ? NULL : find_vm_id_locked(m, end_a);
        vb = end_b == VMQ_HOST_ID ? NULL : find_vm_id_locked(m, end_b);

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
                int room = room_locked(ends[i]);
                pthread_mutex_unlock(&ends[i]->rxq_lock);
                if (room <= 0) {
                        free(ch);
                        r = room < 0 ? -EPROTO : -EAGAIN;
                        goto out;
                }
        }
        struct vmq_identity *peer_of[2] = {&idb, &ida};
        for (int i = 0; i < 2; i++) {
                struct vmq_desc d = {0};
                d.kind = VMQ_DESC_HELLO;
                d.channel = ch->id;
                d.src_vm = ch->end[1 - i];
                d.len = sizeof(struct vmq_identity);
                memcpy(d.data, peer_of[i], sizeof(struct vmq_identity));
                if (ends[i]) {
                        pthread_mutex_lock(&ends[i]->rxq_lock);
                        enqueue_locked(ends[i], &d);
                        pthread_mutex_unlock(&ends[i]->rxq_lock);
                        vmq_vm_wake(ends[i]);
                } else {
                        struct vmq_host_msg *msg = host_msg_new(&d, d.data, d.len);
                        if (msg)
                                (void)deliver_host(m, ch, msg, true);
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
        ch->open = false;
        for (int i = 0; i < 2; i++) {
                struct vmq_desc d = {0};
                if (ch->end[i] == gone)
                        continue;
                d.kind = VMQ_DESC_CLOSE;
                d.channel = ch->id;
                d.src_vm = ch->end[1 - i];
                if (ch->end[i] == VMQ_HOST_ID) {
                        struct vmq_host_msg *msg = host_msg_new(&d, NULL, 0);
                        if (msg)
                                (void)deliver_host(m, ch, msg, true);
                } else {
                        struct vmq_vm *vm = find_vm_id_locked(m, ch->end[i]);
                        /* A full queue loses the CLOSE; sends then fail with
                         * VMQ_E_CLOSED, which says the same. */
                        if (vm)
                                (void)deliver_vm(vm, &d);
                }
        }
        pthread_cond_broadcast(&m->host_cond);
        vmq_monitor_notify(m);
}

int vmq_channel_close(struct vmq_monitor *m, uint32_t id) {
        int r = 0;
        pthread_rwlock_wrlock(&m->rw);
        struct vmq_channel *ch = channel_locked(m, id);
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
        struct vmq_channel *ch = channel_locked(m, id);
        if (!ch) {
                r = -ENOENT;
        } else {
                ret->id = ch->id;
                ret->end[0] = ch->end[0];
                ret->end[1] = ch->end[1];
                ret->open = ch->open;
                ret->transfer = ch->cfg.transfer;
                for (int i = 0; i < 2; i++) {
                        ret->messages[i] = atomic_load(&ch->messages[i]);
                        ret->bytes[i] = atomic_load(&ch->bytes[i]);
                }
        }
        pthread_rwlock_unlock(&m->rw);
        return r;
}

/* ---- host end --------------------------------------------------------------- */

static int host_side_locked(struct vmq_monitor *m, uint32_t id, struct vmq_channel **ret_ch) {
        struct vmq_channel *ch = channel_locked(m, id);
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
        peer = find_vm_id_locked(m, ch->end[1 - side]);
        if (!peer) {
                r = -EPIPE;
                goto out;
        }
        d.channel = ch->id;
        d.src_vm = VMQ_HOST_ID;
        d.tag = tag;
        d.len = (uint32_t)len;
        if (len > UINT32_MAX || len > peer->cfg.rx_size) {
                r = -EMSGSIZE;
                goto out;
        }
        if (len <= VMQ_INLINE_MAX) {
                d.kind = VMQ_DESC_INLINE;
                if (len)
                        memcpy(d.data, data, len);
                r = deliver_vm(peer, &d) == 0 ? 0 : -EAGAIN;
        } else {
                size_t count = (len + VMQ_PAGE_SIZE - 1) / VMQ_PAGE_SIZE;
                uint64_t dst;
                pthread_mutex_lock(&peer->rxq_lock);
                r = room_locked(peer) > 0 ? 0 : -EAGAIN;
                if (peer->transport == VMQ_TRANSPORT_IVSHMEM) {
                        if (r == 0 && region_rx_copy(peer, data, len, &dst) < 0)
                                r = -EAGAIN;
                } else {
                        if (r == 0 &&
                            vmq_space_find_empty(peer->space, VMQ_RX_GPA, count, &dst) < 0)
                                r = -EAGAIN;
                        if (r == 0)
                                r = vmq_remap_copy_in(peer->space, dst, data, len);
                }
                if (r == 0) {
                        d.kind = VMQ_DESC_PAGE;
                        d.flags = VMQ_DESC_F_COPIED;
                        d.gpa = dst;
                        enqueue_locked(peer, &d);
                }
                pthread_mutex_unlock(&peer->rxq_lock);
                if (r == 0)
                        vmq_vm_wake(peer);
        }
        if (r == 0) {
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
        /* The channel table only grows and channels are freed with the
         * monitor, so ch stays valid after the read lock is dropped. */
        pthread_rwlock_rdlock(&m->rw);
        r = host_side_locked(m, channel, &ch);
        pthread_rwlock_unlock(&m->rw);
        if (r < 0)
                return r;

        pthread_mutex_lock(&m->host_lock);
        for (;;) {
                if (ch->inbox_head) {
                        struct vmq_host_entry *e = ch->inbox_head;
                        ch->inbox_head = e->next;
                        if (!ch->inbox_head)
                                ch->inbox_tail = NULL;
                        ch->inbox_len--;
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
        pthread_mutex_unlock(&m->host_lock);

        if (r == 0) {
                /* Room appeared: senders whose posts wait for it go on. */
                pthread_rwlock_rdlock(&m->rw);
                uint32_t other = ch->end[0] == VMQ_HOST_ID ? ch->end[1] : ch->end[0];
                struct vmq_vm *s = find_vm_id_locked(m, other);
                if (s && s->post_stalled)
                        (void)drain_posts(s);
                pthread_rwlock_unlock(&m->rw);
        }
        return r;
}

void vmq_monitor_region_serve(struct vmq_vm *vm) {
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
                if (nr == VMQ_HC_PARK || nr == VMQ_HC_WAIT) {
                        /* Nothing blocks here: the guest polls or sleeps on
                         * its interrupt.  WAIT still lets blocked senders in. */
                        r = nr == VMQ_HC_WAIT ? vmq_monitor_hypercall(&vm->vcpus[i], nr) : 0;
                } else {
                        /* vmq_monitor_hypercall stores mb->status itself,
                         * relaxed: store it again with release below. */
                        r = vmq_monitor_hypercall(&vm->vcpus[i], nr);
                }
                __atomic_store_n(&mb->status, r, __ATOMIC_RELEASE);
        }
}

void vmq_monitor_close_channels_of(struct vmq_monitor *m, struct vmq_vm *vm) {
        vmq_monitor_vm_gone(m, vm);
}
