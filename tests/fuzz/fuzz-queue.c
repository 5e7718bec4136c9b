/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the ring's index checks (core/queue.c): the hostile
 * peer.
 *
 * The input picks a ring geometry, then a sequence of operations on one end
 * of the ring (attach as producer or consumer, space, count, enqueue,
 * enqueue_all, dequeue, peek, consume) interleaved with what the other end
 * may do at any time: write any value into its own index, into the index it
 * does not own, or into any slot.  The ring's memory is two heap blocks of
 * exactly its size (indices, slots), so AddressSanitizer sees any access
 * outside them.
 *
 * A model of the end, written from the documentation in core/queue.h, says
 * what each call must return and what it may change; after every call the
 * end's fields, the index block and the slots are compared with it.  In
 * particular a call that finds impossible indices returns -EPROTO and
 * changes nothing, the end never writes the peer's index, and a slot is
 * written only by an enqueue that owns it.
 */
#include <errno.h>
#include <stdbool.h>

#include "core/queue.h"
#include "core/util.h"
#include "tests/fuzz/fuzz-util.h"

#define MAX_CAP_SHIFT 6 /* capacities 1 .. 64 */
#define MAX_SLOT 40u

struct ring {
        struct vmq_ring_idx *idx;
        uint8_t *slots;
        uint8_t *shadow; /* what the slots must hold */
        uint32_t cap, ss;
};

/* The end under test and what it must look like. */
struct end {
        struct vmq_queue q;
        bool attached;
        enum vmq_queue_role role;
        uint32_t local, peer_cache;
};

enum op {
        OP_ATTACH,
        OP_PEER_INDEX,
        OP_OWN_INDEX,
        OP_SLOTS,
        OP_SPACE,
        OP_COUNT,
        OP_ENQUEUE,
        OP_ENQUEUE_ALL,
        OP_DEQUEUE,
        OP_PEEK,
        OP_CONSUME,
        OP_PAIR,
        OP_MAX
};

static uint32_t *own_index(struct vmq_ring_idx *idx, enum vmq_queue_role role) {
        return role == VMQ_QUEUE_PRODUCER ? &idx->prod : &idx->cons;
}

static uint32_t *peer_index(struct vmq_ring_idx *idx, enum vmq_queue_role role) {
        return role == VMQ_QUEUE_PRODUCER ? &idx->cons : &idx->prod;
}

/* Fill level seen from this end for a peer index, and whether the ring it
 * describes is possible. */
static bool model_used(const struct ring *r, const struct end *e, uint32_t peer, uint32_t *used) {
        *used = e->role == VMQ_QUEUE_PRODUCER ? e->local - peer : peer - e->local;
        return *used <= r->cap;
}

/* The end, its index block and the slots agree with the model. */
static void check_end(struct ring *r, const struct end *e) {
        if (!e->attached)
                return;
        FUZZ_CHECK(e->q.idx == r->idx && e->q.slots == r->slots);
        FUZZ_CHECK(e->q.capacity == r->cap && e->q.mask == r->cap - 1);
        FUZZ_CHECK(e->q.slot_size == r->ss && e->q.role == e->role);
        FUZZ_CHECK(e->q.local == e->local && e->q.peer_cache == e->peer_cache);
}

static void check_memory(struct ring *r, const struct vmq_ring_idx *want_idx) {
        FUZZ_CHECK(memcmp(r->idx, want_idx, sizeof(*want_idx)) == 0);
        FUZZ_CHECK(memcmp(r->slots, r->shadow, (size_t)r->cap * r->ss) == 0);
}

static void op_attach(struct fuzz_input *in, struct ring *r, struct end *e,
                      struct vmq_ring_idx *want_idx) {
        uint8_t how = fuzz_u8(in);
        enum vmq_queue_role role = how & 1 ? VMQ_QUEUE_CONSUMER : VMQ_QUEUE_PRODUCER;
        bool reset = how & 2;
        uint32_t cap = r->cap, ss = r->ss;
        struct vmq_ring_idx *idx = r->idx;
        void *slots = r->slots;
        bool bad = true;
        int want;

        /* Arguments that must be refused without looking at the memory. */
        switch ((how >> 2) % 8) {
        case 0:
                cap = 0;
                break;
        case 1:
                cap = r->cap * 3; /* never a power of two */
                break;
        case 2:
                cap = 1u << 31; /* above VMQ_QUEUE_CAPACITY_MAX */
                break;
        case 3:
                ss = 0;
                break;
        case 4:
                role = (enum vmq_queue_role)2;
                break;
        case 5:
                idx = NULL;
                break;
        default:
                bad = false;
                break;
        }

        struct vmq_queue before = e->q;
        int ret = vmq_queue_attach(&e->q, idx, slots, cap, ss, role, reset);
        if (bad) {
                want = -EINVAL;
        } else if (reset) {
                want = 0;
                want_idx->prod = want_idx->cons = 0;
        } else {
                uint32_t own = *own_index(r->idx, role), peer = *peer_index(r->idx, role);
                uint32_t used = role == VMQ_QUEUE_PRODUCER ? own - peer : peer - own;
                want = used <= r->cap ? 0 : -EPROTO;
        }
        FUZZ_CHECK(ret == want);
        if (ret < 0) {
                /* q is written only on success */
                FUZZ_CHECK(memcmp(&before, &e->q, sizeof(before)) == 0);
                return;
        }
        e->attached = true;
        e->role = role;
        e->local = reset ? 0 : *own_index(r->idx, role);
        e->peer_cache = reset ? 0 : *peer_index(r->idx, role);
}

static void op_index(struct fuzz_input *in, struct ring *r, struct end *e, bool peer,
                     struct vmq_ring_idx *want_idx) {
        enum vmq_queue_role role = e->attached ? e->role : VMQ_QUEUE_PRODUCER;
        uint32_t *p = peer ? peer_index(r->idx, role) : own_index(r->idx, role);
        uint8_t how = fuzz_u8(in);
        uint32_t v;

        if (how & 1)
                v = fuzz_u32(in); /* anything */
        else
                v = *p + (uint32_t)(int32_t)(int8_t)fuzz_u8(in); /* a near miss */
        *p = v;
        *(peer ? peer_index(want_idx, role) : own_index(want_idx, role)) = v;
}

static void op_slots(struct fuzz_input *in, struct ring *r) {
        size_t total = (size_t)r->cap * r->ss;
        size_t off = fuzz_u16(in) % total;
        size_t want = (size_t)fuzz_u8(in) % 64 + 1; /* VMQ_MIN evaluates twice */
        size_t len = VMQ_MIN(want, total - off);
        fuzz_bytes(in, r->slots + off, len);
        memcpy(r->shadow + off, r->slots + off, len);
}

/* Applies a successful store of this end's index to the model. */
static void model_advance(struct end *e, uint32_t k, struct vmq_ring_idx *want_idx) {
        if (k == 0)
                return;
        e->local += k;
        *own_index(want_idx, e->role) = e->local;
}

static void op_call(struct fuzz_input *in, enum op op, struct ring *r, struct end *e,
                    struct vmq_ring_idx *want_idx) {
        uint32_t peer = *peer_index(r->idx, e->role), used;
        bool valid = model_used(r, e, peer, &used);
        bool producer = e->role == VMQ_QUEUE_PRODUCER;
        int ret;

        switch (op) {
        case OP_SPACE:
                ret = vmq_queue_space(&e->q);
                if (!producer) {
                        FUZZ_CHECK(ret == -EINVAL);
                } else if (!valid) {
                        FUZZ_CHECK(ret == -EPROTO);
                } else {
                        FUZZ_CHECK(ret == (int)(r->cap - used));
                        e->peer_cache = peer;
                }
                break;
        case OP_COUNT:
                ret = vmq_queue_count(&e->q);
                if (producer) {
                        FUZZ_CHECK(ret == -EINVAL);
                } else if (!valid) {
                        FUZZ_CHECK(ret == -EPROTO);
                } else {
                        FUZZ_CHECK(ret == (int)used);
                        e->peer_cache = peer;
                }
                break;
        case OP_ENQUEUE:
        case OP_ENQUEUE_ALL: {
                uint32_t n = fuzz_u8(in) % (r->cap + 3);
                uint8_t *items = malloc((size_t)n * r->ss + 1);
                FUZZ_CHECK(items);
                fuzz_bytes(in, items, (size_t)n * r->ss);
                if (op == OP_ENQUEUE)
                        ret = vmq_queue_enqueue(&e->q, items, n);
                else
                        ret = vmq_queue_enqueue_all(&e->q, items, n);
                if (!producer || (op == OP_ENQUEUE_ALL && n > r->cap)) {
                        FUZZ_CHECK(ret == -EINVAL);
                } else if (!valid) {
                        FUZZ_CHECK(ret == -EPROTO);
                } else {
                        uint32_t room = r->cap - used, k = VMQ_MIN(n, room);
                        e->peer_cache = peer;
                        if (op == OP_ENQUEUE_ALL && n > room) {
                                FUZZ_CHECK(ret == -EAGAIN);
                                k = 0;
                        } else {
                                FUZZ_CHECK(ret == (int)k);
                        }
                        for (uint32_t i = 0; i < k; i++)
                                memcpy(r->shadow + (size_t)((e->local + i) & (r->cap - 1)) * r->ss,
                                       items + (size_t)i * r->ss, r->ss);
                        model_advance(e, k, want_idx);
                }
                free(items);
                break;
        }
        case OP_DEQUEUE: {
                uint32_t n = fuzz_u8(in) % (r->cap + 3);
                uint8_t *items = malloc((size_t)n * r->ss + 1);
                FUZZ_CHECK(items);
                ret = vmq_queue_dequeue(&e->q, items, n);
                if (producer) {
                        FUZZ_CHECK(ret == -EINVAL);
                } else if (!valid) {
                        FUZZ_CHECK(ret == -EPROTO);
                } else {
                        uint32_t k = VMQ_MIN(n, used);
                        FUZZ_CHECK(ret == (int)k);
                        for (uint32_t i = 0; i < k; i++)
                                FUZZ_CHECK(
                                        memcmp(items + (size_t)i * r->ss,
                                               r->shadow + (size_t)((e->local + i) & (r->cap - 1)) *
                                                                   r->ss,
                                               r->ss) == 0);
                        e->peer_cache = peer;
                        model_advance(e, k, want_idx);
                }
                free(items);
                break;
        }
        case OP_PEEK: {
                const uint8_t *p = vmq_queue_peek(&e->q);
                if (producer || !valid || used == 0) {
                        FUZZ_CHECK(p == NULL);
                } else {
                        FUZZ_CHECK(p == r->slots + (size_t)(e->local & (r->cap - 1)) * r->ss);
                        /* the whole slot is inside the slot array */
                        FUZZ_CHECK(p + r->ss <= r->slots + (size_t)r->cap * r->ss);
                }
                if (!producer && valid)
                        e->peer_cache = peer;
                break;
        }
        case OP_CONSUME: {
                /* The contract: no more than the last peek/count/dequeue
                 * validated (a larger n trips an assert, a caller bug). */
                uint32_t avail = producer ? 0 : e->peer_cache - e->local;
                uint32_t n = fuzz_u8(in) % (avail + 1);
                vmq_queue_consume(&e->q, n);
                if (!producer)
                        model_advance(e, n, want_idx);
                break;
        }
        default:
                break;
        }
}

/* vmq_queue_new_pair() / vmq_queue_free_pair(): a heap ring whose two ends
 * see each other. */
static void op_pair(struct fuzz_input *in) {
        uint8_t how = fuzz_u8(in);
        uint32_t cap = how & 0x80 ? 3 : 1u << (how % (MAX_CAP_SHIFT + 1));
        uint32_t ss = how & 0x40 ? 0 : 1 + fuzz_u8(in) % MAX_SLOT;
        struct vmq_queue p, c;
        int r = vmq_queue_new_pair(cap, ss, &p, &c);
        if (!VMQ_IS_POW2(cap) || ss == 0) {
                FUZZ_CHECK(r == -EINVAL);
                return;
        }
        FUZZ_CHECK(r == 0);
        FUZZ_CHECK(vmq_queue_space(&p) == (int)cap && vmq_queue_count(&c) == 0);
        uint8_t item[MAX_SLOT] = {0};
        fuzz_bytes(in, item, ss);
        FUZZ_CHECK(vmq_queue_enqueue(&p, item, 1) == 1);
        FUZZ_CHECK(vmq_queue_count(&c) == 1);
        const uint8_t *slot = vmq_queue_peek(&c);
        FUZZ_CHECK(slot && memcmp(slot, item, ss) == 0);
        vmq_queue_consume(&c, 1);
        FUZZ_CHECK(vmq_queue_space(&p) == (int)cap);
        vmq_queue_free_pair(&p, &c);
        FUZZ_CHECK(p.idx == NULL && c.idx == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct fuzz_input in = {data, size};
        struct ring r = {0};
        struct end e = {0};
        struct vmq_ring_idx want_idx;

        r.cap = 1u << (fuzz_u8(&in) % (MAX_CAP_SHIFT + 1));
        r.ss = 1 + fuzz_u8(&in) % MAX_SLOT;
        r.idx = malloc(sizeof(*r.idx));
        r.slots = malloc((size_t)r.cap * r.ss);
        r.shadow = malloc((size_t)r.cap * r.ss);
        FUZZ_CHECK(r.idx && r.slots && r.shadow);
        /* The ring's memory starts as whatever the peer left there. */
        fuzz_bytes(&in, r.idx, sizeof(*r.idx));
        fuzz_bytes(&in, r.slots, (size_t)r.cap * r.ss);
        memcpy(r.shadow, r.slots, (size_t)r.cap * r.ss);
        want_idx = *r.idx;

        while (fuzz_left(&in) > 0) {
                enum op op = (enum op)(fuzz_u8(&in) % OP_MAX);
                switch (op) {
                case OP_ATTACH:
                        op_attach(&in, &r, &e, &want_idx);
                        break;
                case OP_PEER_INDEX:
                case OP_OWN_INDEX:
                        op_index(&in, &r, &e, op == OP_PEER_INDEX, &want_idx);
                        break;
                case OP_SLOTS:
                        op_slots(&in, &r);
                        break;
                case OP_PAIR:
                        op_pair(&in);
                        break;
                default:
                        if (e.attached)
                                op_call(&in, op, &r, &e, &want_idx);
                        break;
                }
                check_end(&r, &e);
                check_memory(&r, &want_idx);
        }

        free(r.idx);
        free(r.slots);
        free(r.shadow);
        return 0;
}
