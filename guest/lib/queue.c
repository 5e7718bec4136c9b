/* SPDX-License-Identifier: MIT */
/*
 * Sending, posting and receiving.
 *
 * The VM queue: the monitor produces descriptors, we consume.  We load the
 * producer index with acquire (so the slot we read is the one the monitor
 * finished writing), copy the descriptor out, then publish our index with a
 * release store (so the monitor reuses the slot only after we are done).
 *
 * The post ring: we produce requests, the monitor consumes.  We load the
 * consumer index with acquire (the slot we are about to overwrite has been
 * read), write the slot, then publish with a release store.  Then comes the
 * notification rule of core/vmq-abi.h: a full barrier, and a doorbell only
 * when the monitor's word post_doorbell asks for one (it is not polling).
 *
 * Both rings' geometry is read from the VMCS once at start-up and checked;
 * our own indices are read back from the VMCS (we are their only writer).
 */
#include "guest/lib/internal.h"

struct ring {
        struct vmq_ring_idx *idx;
        uint8_t *slots;
        uint32_t cap; /* power of two, 0: absent */
};

static struct ring queue, post;

struct peer {
        bool used;
        uint32_t channel;
        struct vmq_identity id;
};

static struct peer peers[VMQ_PEERS_MAX];

/* How long vmq_recv() spins before it blocks. */
static uint64_t spin_ns = 30000;

/* Doorbells rung, mod 2^32 (vmcs.post_doorbells_seen is the monitor's
 * count of those it has taken). */
static uint32_t rings;

/* Whether posting rings the doorbell when the monitor asks for one. */
static bool post_notify = true;

static bool is_pow2(uint32_t v) {
        return v && !(v & (v - 1));
}

static int ring_init(struct ring *r, uint32_t off, uint32_t slots_off, uint32_t cap,
                     uint32_t slot_size, uint32_t size) {
        if (!cap) {
                r->cap = 0;
                return 0;
        }
        if (!is_pow2(cap) || off % 64 || (uint64_t)off + sizeof(struct vmq_ring_idx) > size ||
            (uint64_t)slots_off + (uint64_t)cap * slot_size > size)
                return -1;
        r->idx = (struct vmq_ring_idx *)((uint8_t *)vmq__vmcs + off);
        r->slots = (uint8_t *)vmq__vmcs + slots_off;
        r->cap = cap;
        return 0;
}

int vmq__queue_init(void) {
        const struct vmq_vmcs_layout *l = &vmq__vmcs->layout;
        uint32_t size = vmq__vmcs->vmcs_size;

        if (size < VMQ_PAGE_SIZE || size > VMQ_VMCS_MAX_SIZE)
                return -1;
        if (ring_init(&queue, l->queue_off, l->queue_slots_off, l->queue_cap,
                      sizeof(struct vmq_desc), size) < 0 ||
            !queue.cap)
                return -1;
        if (ring_init(&post, l->post_off, l->post_slots_off, l->post_cap,
                      sizeof(struct vmq_request), size) < 0)
                return -1;
        return 0;
}

/* ---- sending ---- */

struct vmq_request *vmq__mbox_send(uint16_t op, uint32_t ch, uint32_t flags, uint64_t tag) {
        struct vmq_request *m = vmq_mbox();

        m->abi = VMQ_ABI_VERSION;
        m->op = op;
        m->flags = flags;
        m->channel = ch;
        m->src_vm = 0;
        m->gpa = 0;
        m->len = 0;
        m->reserved = 0;
        m->tag = tag;
        m->arg = 0;
        return m;
}

int vmq_send_inline(uint32_t ch, const void *data, size_t len, uint64_t tag) {
        struct vmq_request *m;

        if (len > VMQ_INLINE_MAX)
                return -VMQ_E_LEN;
        m = vmq__mbox_send(VMQ_OP_INLINE, ch, 0, tag);
        m->len = (uint32_t)len;
        memcpy(m->data, data, len);
        return vmq_hypercall(VMQ_HC_SEND);
}

int vmq_send_pages(uint32_t ch, const void *pages, size_t len, uint32_t flags, uint64_t tag) {
        struct vmq_request *m;

        if (len == 0 || len > UINT32_MAX)
                return -VMQ_E_LEN;
        m = vmq__mbox_send(VMQ_OP_PAGE, ch, flags, tag);
        m->gpa = (uint64_t)(uintptr_t)pages;
        m->len = (uint32_t)len;
        return vmq_hypercall(VMQ_HC_SEND);
}

int vmq_send_request(const struct vmq_request *req) {
        return vmq_hypercall_req(VMQ_HC_SEND, req);
}

int vmq_flush(void) {
        struct vmq_request *m = vmq__mbox_send(VMQ_OP_NONE, 0, 0, 0);

        (void)m;
        return vmq_hypercall(VMQ_HC_FLUSH);
}

void vmq_doorbell(void) {
        rings++;
        __asm__ volatile("outb %%al, %%dx" ::"a"((uint8_t)1), "d"((uint16_t)VMQ_DOORBELL_PORT)
                         : "memory");
}

bool vmq_post_notify(void) {
        /* The producer index is published; the barrier orders that store
         * before the load of the monitor's word (it does the mirror image:
         * stores the word, barrier, looks at our index). */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&vmq__vmcs->post_doorbell, __ATOMIC_RELAXED))
                return false;
        /* A doorbell of ours is still waiting for the monitor: the drain
         * that follows it will see this request.  (A monitor slow to wake
         * would otherwise get a doorbell for every request posted
         * meanwhile.) */
        if (__atomic_load_n(&vmq__vmcs->post_doorbells_seen, __ATOMIC_RELAXED) != rings)
                return false;
        vmq_doorbell();
        return true;
}

void vmq_set_post_doorbell(bool on) {
        post_notify = on;
}

/* Returns the slot to fill, or NULL when the ring stays full. */
static struct vmq_request *post_slot(uint32_t *ret_prod) {
        uint32_t prod, cons;
        int tries;

        if (!post.cap)
                return NULL;
        prod = __atomic_load_n(&post.idx->prod, __ATOMIC_RELAXED);
        for (tries = 0; tries < 4; tries++) {
                cons = __atomic_load_n(&post.idx->cons, __ATOMIC_ACQUIRE);
                if ((uint32_t)(prod - cons) < post.cap) {
                        *ret_prod = prod;
                        return (struct vmq_request *)(post.slots +
                                                      (size_t)(prod & (post.cap - 1)) *
                                                              sizeof(struct vmq_request));
                }
                vmq_flush();
        }
        return NULL;
}

static void post_publish(uint32_t prod) {
        __atomic_store_n(&post.idx->prod, prod + 1, __ATOMIC_RELEASE);
        if (post_notify)
                (void)vmq_post_notify();
}

static int post_common(uint16_t op, uint32_t ch, const void *data, uint64_t gpa, size_t len,
                       uint32_t flags, uint64_t tag) {
        struct vmq_request *s;
        uint32_t prod;

        if (!post.cap)
                return -VMQ_E_NOSYS;
        s = post_slot(&prod);
        if (!s)
                return -VMQ_E_AGAIN;
        s->abi = VMQ_ABI_VERSION;
        s->op = op;
        s->flags = flags;
        s->channel = ch;
        s->src_vm = 0;
        s->gpa = gpa;
        s->len = (uint32_t)len;
        s->reserved = 0;
        s->tag = tag;
        s->arg = 0;
        s->status = 0;
        s->hc = 0;
        s->result = 0;
        if (data)
                memcpy(s->data, data, len);
        post_publish(prod);
        return 0;
}

int vmq_post_inline(uint32_t ch, const void *data, size_t len, uint64_t tag) {
        if (len > VMQ_INLINE_MAX)
                return -VMQ_E_LEN;
        return post_common(VMQ_OP_INLINE, ch, len ? data : NULL, 0, len, 0, tag);
}

int vmq_post_pages(uint32_t ch, const void *pages, size_t len, uint32_t flags, uint64_t tag) {
        if (len == 0 || len > UINT32_MAX)
                return -VMQ_E_LEN;
        return post_common(VMQ_OP_PAGE, ch, NULL, (uint64_t)(uintptr_t)pages, len, flags, tag);
}

int vmq_post_request(const struct vmq_request *req) {
        struct vmq_request *s;
        uint32_t prod;

        if (!post.cap)
                return -VMQ_E_NOSYS;
        s = post_slot(&prod);
        if (!s)
                return -VMQ_E_AGAIN;
        memcpy(s, req, sizeof(*req));
        post_publish(prod);
        return 0;
}

uint32_t vmq_post_pending(void) {
        uint32_t prod, cons;

        if (!post.cap)
                return 0;
        prod = __atomic_load_n(&post.idx->prod, __ATOMIC_RELAXED);
        cons = __atomic_load_n(&post.idx->cons, __ATOMIC_ACQUIRE);
        return prod - cons;
}

uint32_t vmq_post_capacity(void) {
        return post.cap;
}

uint32_t vmq_post_room(void) {
        uint32_t prod, cons, used;

        if (!post.cap)
                return 0;
        prod = __atomic_load_n(&post.idx->prod, __ATOMIC_RELAXED);
        cons = __atomic_load_n(&post.idx->cons, __ATOMIC_ACQUIRE);
        used = prod - cons;
        return used < post.cap ? post.cap - used : 0;
}

struct vmq_request *vmq_post_slot(uint32_t i) {
        uint32_t prod;

        if (!post.cap || i >= post.cap)
                return NULL;
        prod = __atomic_load_n(&post.idx->prod, __ATOMIC_RELAXED) + i;
        return (struct vmq_request *)(post.slots +
                                      (size_t)(prod & (post.cap - 1)) * sizeof(struct vmq_request));
}

void vmq_post_commit(uint32_t n) {
        uint32_t prod;

        if (!post.cap || n == 0)
                return;
        prod = __atomic_load_n(&post.idx->prod, __ATOMIC_RELAXED);
        post_publish(prod + n - 1);
}

/* ---- receiving ---- */

static struct peer *peer_find(uint32_t ch) {
        for (unsigned i = 0; i < VMQ_PEERS_MAX; i++)
                if (peers[i].used && peers[i].channel == ch)
                        return &peers[i];
        return NULL;
}

static void peer_note(const struct vmq_desc *d) {
        struct peer *p = peer_find(d->channel);

        if (d->kind == VMQ_DESC_CLOSE) {
                if (p)
                        p->used = false;
                return;
        }
        for (unsigned i = 0; !p && i < VMQ_PEERS_MAX; i++)
                if (!peers[i].used)
                        p = &peers[i];
        if (!p)
                return; /* table full: vmq_peer() will not know this one */
        p->used = true;
        p->channel = d->channel;
        memcpy(&p->id, d->data, sizeof(p->id));
        p->id.name[VMQ_NAME_MAX - 1] = '\0';
}

int vmq_peer(uint32_t ch, struct vmq_identity *ret) {
        struct peer *p = peer_find(ch);

        if (!p)
                return -VMQ_E_NOCHAN;
        memcpy(ret, &p->id, sizeof(*ret));
        return 0;
}

static void (*shutdown_handler)(void);

/* Copies the descriptor at consumer index cons out of the queue and notes
 * what HELLO and CLOSE say of peers; the caller publishes the index. */
static void take_slot(uint32_t cons, struct vmq_desc *ret) {
        memcpy(ret, queue.slots + (size_t)(cons & (queue.cap - 1)) * sizeof(struct vmq_desc),
               sizeof(*ret));
        if (ret->kind == VMQ_DESC_HELLO || ret->kind == VMQ_DESC_CLOSE)
                peer_note(ret);
}

int vmq_try_recv(struct vmq_desc *ret) {
        uint32_t prod, cons;

        prod = __atomic_load_n(&queue.idx->prod, __ATOMIC_ACQUIRE);
        cons = __atomic_load_n(&queue.idx->cons, __ATOMIC_RELAXED);
        if (prod == cons)
                return -VMQ_E_AGAIN;
        if ((uint32_t)(prod - cons) > queue.cap)
                return -VMQ_E_PROTO;
        take_slot(cons, ret);
        __atomic_store_n(&queue.idx->cons, cons + 1, __ATOMIC_RELEASE);
        if (ret->kind == VMQ_DESC_SHUTDOWN && shutdown_handler)
                shutdown_handler();
        return 0;
}

/* The default answer to a SHUTDOWN descriptor: exit cleanly. */
static void default_shutdown(void) {
        vmq_printf("vmq: shutdown requested by the host\n");
        vmq_exit(0);
}

static void (*shutdown_handler)(void) = default_shutdown;

void vmq_set_shutdown_handler(void (*handler)(void)) {
        shutdown_handler = handler;
}

bool vmq__shutdown_pending(void) {
        uint32_t prod = __atomic_load_n(&queue.idx->prod, __ATOMIC_ACQUIRE);
        uint32_t cons = __atomic_load_n(&queue.idx->cons, __ATOMIC_RELAXED);

        if ((uint32_t)(prod - cons) > queue.cap)
                return false; /* corrupt: vmq_try_recv says so */
        for (; cons != prod; cons++) {
                const struct vmq_desc *d =
                        (const struct vmq_desc *)(queue.slots + (size_t)(cons & (queue.cap - 1)) *
                                                                        sizeof(struct vmq_desc));
                if (__atomic_load_n(&d->kind, __ATOMIC_RELAXED) == VMQ_DESC_SHUTDOWN)
                        return true;
        }
        return false;
}

void vmq__shutdown_requested(void) {
        static bool answered;

        if (!answered && shutdown_handler) {
                answered = true;
                shutdown_handler();
        }
}

/* Non-zero when the queue holds something (or is corrupt: let try_recv say
 * so). */
static bool queue_ready(void) {
        return __atomic_load_n(&queue.idx->prod, __ATOMIC_ACQUIRE) !=
               __atomic_load_n(&queue.idx->cons, __ATOMIC_RELAXED);
}

void vmq_set_spin_ns(uint64_t ns) {
        spin_ns = ns;
}

uint64_t vmq__spin_ns(void) {
        return spin_ns;
}

/* Spins up to ns for the queue to fill; returns whether it did. */
static bool spin(uint64_t ns) {
        uint64_t khz = vmq__tsc_khz;

        if (!ns)
                return queue_ready();
        if (khz) {
                uint64_t ticks = ns / 1000000 * khz + ns % 1000000 * khz / 1000000;
                uint64_t start = vmq_rdtsc();

                do {
                        if (queue_ready())
                                return true;
                        vmq_cpu_relax();
                } while (vmq_rdtsc() - start < ticks);
        } else {
                /* Rate unknown: about 1000 pause iterations per 30 us. */
                uint64_t iters = ns / 30 + 1;

                while (iters--) {
                        if (queue_ready())
                                return true;
                        vmq_cpu_relax();
                }
        }
        return queue_ready();
}

int vmq_wait(uint64_t timeout_ns) {
        struct vmq_request *m = vmq__mbox_send(VMQ_OP_NONE, 0, 0, 0);

        m->arg = timeout_ns;
        return vmq_hypercall(VMQ_HC_WAIT);
}

int vmq_recv(struct vmq_desc *ret, uint64_t timeout_ns) {
        uint64_t deadline = 0, left = timeout_ns, now;
        int r;

        r = vmq_try_recv(ret);
        if (r != -VMQ_E_AGAIN)
                return r;
        if (timeout_ns == 0)
                return -VMQ_E_TIMEDOUT;
        if (spin(timeout_ns < spin_ns ? timeout_ns : spin_ns)) {
                r = vmq_try_recv(ret);
                if (r != -VMQ_E_AGAIN)
                        return r;
        }
        if (timeout_ns != UINT64_MAX) {
                now = vmq_clock_ns();
                deadline = now + timeout_ns < now ? UINT64_MAX - 1 : now + timeout_ns;
        }
        for (;;) {
                /* WAIT returns at once when the queue is non-empty, so a
                 * descriptor that arrived after the spin is not missed. */
                r = vmq_wait(left);
                if (r < 0 && r != -VMQ_E_TIMEDOUT)
                        return r;
                r = vmq_try_recv(ret);
                if (r != -VMQ_E_AGAIN)
                        return r;
                if (timeout_ns != UINT64_MAX) {
                        now = vmq_clock_ns();
                        if (now >= deadline)
                                return -VMQ_E_TIMEDOUT;
                        left = deadline - now;
                }
        }
}

int vmq_recv_batch(struct vmq_desc *ret, size_t n, uint64_t timeout_ns) {
        uint32_t prod, cons;
        size_t got = 1;
        int r;

        if (n == 0)
                return -VMQ_E_INVAL;
        r = vmq_recv(&ret[0], timeout_ns);
        if (r < 0)
                return r;
        if (ret[0].kind == VMQ_DESC_SHUTDOWN)
                return 1;
        /* The rest in one go: one acquire of the producer index, one
         * release of ours. */
        prod = __atomic_load_n(&queue.idx->prod, __ATOMIC_ACQUIRE);
        cons = __atomic_load_n(&queue.idx->cons, __ATOMIC_RELAXED);
        if ((uint32_t)(prod - cons) > queue.cap)
                return (int)got; /* the next call reports it */
        while (got < n && cons != prod) {
                struct vmq_desc *d = &ret[got++];

                take_slot(cons++, d);
                if (d->kind == VMQ_DESC_SHUTDOWN)
                        break;
        }
        __atomic_store_n(&queue.idx->cons, cons, __ATOMIC_RELEASE);
        if (ret[got - 1].kind == VMQ_DESC_SHUTDOWN && got > 1 && shutdown_handler)
                shutdown_handler();
        return (int)got;
}

/* ---- releasing ---- */

static int release_gpa(uint64_t gpa, uint64_t len) {
        struct vmq_request *m = vmq__mbox_send(VMQ_OP_NONE, 0, 0, 0);

        m->gpa = gpa;
        m->len = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
        return vmq_hypercall(VMQ_HC_RELEASE);
}

int vmq_release(const void *pages, size_t len) {
        return release_gpa((uint64_t)(uintptr_t)pages, len);
}

/*
 * vmq_release_batch() sorts and merges at most RELEASE_GROUP page
 * descriptors at a time: its index lives on the stack (the SDK has no
 * malloc), and a sort key carries a descriptor's place in the group in its
 * low RELEASE_SLOT_BITS bits.
 */
#define RELEASE_SLOT_BITS 6u
#define RELEASE_GROUP (1u << RELEASE_SLOT_BITS)

/* Sorts by window (huge last), then by page address; the slot breaks
 * ties.  (gpa >> 12) << 6 fits below bit 58 for any 64-bit gpa. */
static uint64_t release_key(const struct vmq_desc *d, unsigned slot) {
        return (uint64_t) !!(d->flags & VMQ_DESC_F_HUGE) << 63 |
               (d->gpa >> VMQ_PAGE_SHIFT) << RELEASE_SLOT_BITS | slot;
}

/* Whether next's run starts exactly where prev's ends (prev's len rounded
 * up to its frame size), in the same window, and a release from start
 * through next still fits the request's 32-bit length.  No sum here can
 * overflow: len is 32-bit and the end is checked against the gpa. */
static bool release_adjacent(const struct vmq_desc *prev, const struct vmq_desc *next,
                             uint64_t start) {
        uint64_t fs = prev->flags & VMQ_DESC_F_HUGE ? VMQ_HUGE_PAGE_SIZE : VMQ_PAGE_SIZE;
        uint64_t span = ((uint64_t)prev->len + fs - 1) & ~(fs - 1);

        if ((prev->flags ^ next->flags) & VMQ_DESC_F_HUGE)
                return false;
        if (prev->gpa > UINT64_MAX - span || prev->gpa + span != next->gpa)
                return false;
        return next->gpa - start + next->len <= UINT32_MAX;
}

/* Keeps the error of the earliest descriptor in d's order. */
static void release_note(int r, uint64_t i, int *err, uint64_t *err_i) {
        if (r < 0 && (!*err || i < *err_i)) {
                *err = r;
                *err_i = i;
        }
}

/* Releases the adjacent runs of d[at[0]], ..., d[at[k - 1]] (address order)
 * with one hypercall, and if the monitor refuses that, each on its own: the
 * monitor releases a run whole or not at all, so nothing is released
 * twice, and each descriptor gets its own answer. */
static void release_run(const struct vmq_desc *d, const uint64_t *at, size_t k, int *err,
                        uint64_t *err_i) {
        const struct vmq_desc *first = &d[at[0]], *last = &d[at[k - 1]];
        int r = release_gpa(first->gpa, last->gpa - first->gpa + last->len);

        if (r == 0 || k == 1) {
                release_note(r, at[0], err, err_i);
                return;
        }
        for (size_t j = 0; j < k; j++)
                release_note(release_gpa(d[at[j]].gpa, d[at[j]].len), at[j], err, err_i);
}

int vmq_release_batch(const struct vmq_desc *d, size_t n) {
        /* sort keys, then the descriptors' indices in address order */
        uint64_t order[RELEASE_GROUP], err_i = 0;
        size_t idx[RELEASE_GROUP];
        int err = 0;

        for (size_t i = 0; i < n;) {
                size_t k = 0;

                for (; i < n && k < RELEASE_GROUP; i++)
                        if (d[i].kind == VMQ_DESC_PAGE) {
                                order[k] = release_key(&d[i], (unsigned)k);
                                idx[k++] = i;
                        }
                vmq_sort_u64(order, k);
                for (size_t j = 0; j < k; j++)
                        order[j] = idx[order[j] & (RELEASE_GROUP - 1)];
                for (size_t a = 0, b; a < k; a = b) {
                        for (b = a + 1; b < k; b++)
                                if (!release_adjacent(&d[order[b - 1]], &d[order[b]],
                                                      d[order[a]].gpa))
                                        break;
                        release_run(d, order + a, b - a, &err, &err_i);
                }
        }
        return err;
}
