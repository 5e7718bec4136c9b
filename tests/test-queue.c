/* SPDX-License-Identifier: MIT */
/* The SPSC ring: bounds, wrap-around, batching, hostile indices, and a
 * two-thread stress run that checks order and loss. */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/queue.h"
#include "core/util.h"

/* A ring in a static buffer laid out like a VMCS ring, so that tests can
 * play the part of a hostile peer by writing the shared indices. */
#define CAP 8u
struct ring_mem {
        struct vmq_ring_idx idx;
        uint64_t slots[CAP];
};

static void attach_pair(struct ring_mem *m, struct vmq_queue *p, struct vmq_queue *c) {
        cr_assert_eq(vmq_queue_attach(p, &m->idx, m->slots, CAP, sizeof(uint64_t),
                                      VMQ_QUEUE_PRODUCER, true),
                     0);
        cr_assert_eq(vmq_queue_attach(c, &m->idx, m->slots, CAP, sizeof(uint64_t),
                                      VMQ_QUEUE_CONSUMER, false),
                     0);
}

/* Puts both indices at `start` and attaches both ends there, as if the ring
 * had already carried that many items. */
static void attach_pair_at(struct ring_mem *m, uint32_t start, struct vmq_queue *p,
                           struct vmq_queue *c) {
        memset(m, 0, sizeof(*m));
        m->idx.prod = start;
        m->idx.cons = start;
        cr_assert_eq(vmq_queue_attach(p, &m->idx, m->slots, CAP, sizeof(uint64_t),
                                      VMQ_QUEUE_PRODUCER, false),
                     0);
        cr_assert_eq(vmq_queue_attach(c, &m->idx, m->slots, CAP, sizeof(uint64_t),
                                      VMQ_QUEUE_CONSUMER, false),
                     0);
        cr_assert_eq(p->local, start);
        cr_assert_eq(c->local, start);
}

Test(queue, attach_validates_arguments) {
        struct ring_mem m = {0};
        struct vmq_queue q, before;

        memset(&q, 0xa5, sizeof(q));
        memcpy(&before, &q, sizeof(q));
        cr_assert_eq(vmq_queue_attach(&q, &m.idx, m.slots, 0, 8, VMQ_QUEUE_PRODUCER, true),
                     -EINVAL);
        cr_assert_eq(vmq_queue_attach(&q, &m.idx, m.slots, 6, 8, VMQ_QUEUE_PRODUCER, true),
                     -EINVAL);
        cr_assert_eq(vmq_queue_attach(&q, &m.idx, m.slots, 3, 8, VMQ_QUEUE_CONSUMER, true),
                     -EINVAL);
        cr_assert_eq(
                vmq_queue_attach(&q, &m.idx, m.slots, 0x80000000u, 8, VMQ_QUEUE_PRODUCER, true),
                -EINVAL);
        cr_assert_eq(vmq_queue_attach(&q, &m.idx, m.slots, 8, 0, VMQ_QUEUE_PRODUCER, true),
                     -EINVAL);
        cr_assert_eq(vmq_queue_attach(&q, NULL, m.slots, 8, 8, VMQ_QUEUE_PRODUCER, true), -EINVAL);
        cr_assert_eq(vmq_queue_attach(&q, &m.idx, NULL, 8, 8, VMQ_QUEUE_PRODUCER, true), -EINVAL);
        /* a failed attach leaves the end untouched */
        cr_assert_eq(memcmp(&q, &before, sizeof(q)), 0);

        /* capacity 1 is a power of two and legal */
        cr_assert_eq(vmq_queue_attach(&q, &m.idx, m.slots, 1, 8, VMQ_QUEUE_PRODUCER, true), 0);
        cr_assert_eq(q.mask, 0);
        cr_assert_eq(vmq_queue_space(&q), 1);

        /* reset zeroes both shared indices */
        m.idx.prod = 77;
        m.idx.cons = 70;
        cr_assert_eq(vmq_queue_attach(&q, &m.idx, m.slots, 8, 8, VMQ_QUEUE_PRODUCER, true), 0);
        cr_assert_eq(m.idx.prod, 0);
        cr_assert_eq(m.idx.cons, 0);

        /* joining a ring with impossible indices is refused */
        m.idx.prod = 100;
        m.idx.cons = 50;
        cr_assert_eq(vmq_queue_attach(&q, &m.idx, m.slots, 8, 8, VMQ_QUEUE_CONSUMER, false),
                     -EPROTO);
        m.idx.prod = 50;
        m.idx.cons = 51;
        cr_assert_eq(vmq_queue_attach(&q, &m.idx, m.slots, 8, 8, VMQ_QUEUE_PRODUCER, false),
                     -EPROTO);
        /* ...and a full one is accepted */
        m.idx.prod = 58;
        m.idx.cons = 50;
        cr_assert_eq(vmq_queue_attach(&q, &m.idx, m.slots, 8, 8, VMQ_QUEUE_CONSUMER, false), 0);
        cr_assert_eq(vmq_queue_count(&q), 8);
}

Test(queue, empty_and_full) {
        struct ring_mem m;
        struct vmq_queue p, c;
        uint64_t v, out[CAP + 4];

        attach_pair(&m, &p, &c);
        cr_assert_eq(vmq_queue_space(&p), (int)CAP);
        cr_assert_eq(vmq_queue_count(&c), 0);
        cr_assert_eq(vmq_queue_dequeue(&c, out, 1), 0);
        cr_assert_null(vmq_queue_peek(&c));

        for (v = 0; v < CAP; v++)
                cr_assert_eq(vmq_queue_enqueue(&p, &v, 1), 1);
        cr_assert_eq(vmq_queue_space(&p), 0);
        cr_assert_eq(vmq_queue_count(&c), (int)CAP);
        v = 99;
        cr_assert_eq(vmq_queue_enqueue(&p, &v, 1), 0, "enqueue into a full ring");
        cr_assert_eq(m.idx.prod, CAP);

        /* asking for more than there is returns what there is */
        cr_assert_eq(vmq_queue_dequeue(&c, out, CAP + 4), (int)CAP);
        for (v = 0; v < CAP; v++)
                cr_assert_eq(out[v], v);
        cr_assert_eq(vmq_queue_count(&c), 0);
        cr_assert_eq(vmq_queue_space(&p), (int)CAP);
        cr_assert_eq(m.idx.cons, CAP);
}

Test(queue, wrong_role_is_refused) {
        struct ring_mem m;
        struct vmq_queue p, c;
        uint64_t v = 1;

        attach_pair(&m, &p, &c);
        cr_assert_eq(vmq_queue_enqueue(&c, &v, 1), -EINVAL);
        cr_assert_eq(vmq_queue_enqueue_all(&c, &v, 1), -EINVAL);
        cr_assert_eq(vmq_queue_space(&c), -EINVAL);
        cr_assert_eq(vmq_queue_dequeue(&p, &v, 1), -EINVAL);
        cr_assert_eq(vmq_queue_count(&p), -EINVAL);
        cr_assert_null(vmq_queue_peek(&p));
        cr_assert_eq(m.idx.prod, 0);
        cr_assert_eq(m.idx.cons, 0);
}

/* Every batch size at every start offset, so that each split of a run at
 * the end of the slot array is exercised, with indices crossing 2^32. */
static void check_wrap_from(uint32_t start) {
        struct ring_mem m;
        struct vmq_queue p, c;
        uint64_t in[CAP], out[CAP], seq = 1000, expect = 1000;

        attach_pair_at(&m, start, &p, &c);
        for (uint32_t off = 0; off < CAP; off++) {
                for (uint32_t n = 1; n <= CAP; n++) {
                        for (uint32_t i = 0; i < n; i++)
                                in[i] = seq++;
                        cr_assert_eq(vmq_queue_enqueue(&p, in, n), (int)n);
                        cr_assert_eq(vmq_queue_count(&c), (int)n);
                        memset(out, 0, sizeof(out));
                        cr_assert_eq(vmq_queue_dequeue(&c, out, n), (int)n);
                        for (uint32_t i = 0; i < n; i++)
                                cr_assert_eq(out[i], expect++, "start %u off %u n %u i %u", start,
                                             off, n, i);
                }
                /* advance the slot offset by one for the next round */
                cr_assert_eq(vmq_queue_enqueue(&p, &seq, 1), 1);
                seq++;
                cr_assert_eq(vmq_queue_dequeue(&c, out, 1), 1);
                cr_assert_eq(out[0], expect++);
        }
        cr_assert_eq(m.idx.prod, m.idx.cons);
        cr_assert_eq(m.idx.prod, (uint32_t)(start + CAP * (CAP * (CAP + 1) / 2 + 1)));
}

Test(queue, wrap_around_slots_and_indices) {
        check_wrap_from(0);
        check_wrap_from(3);
        check_wrap_from(UINT32_MAX - 2);
        check_wrap_from(UINT32_MAX - (CAP * CAP));
        check_wrap_from(UINT32_MAX);
}

Test(queue, full_ring_across_index_wrap) {
        struct ring_mem m;
        struct vmq_queue p, c;
        uint64_t in[CAP], out[CAP];

        /* prod crosses 2^32 while cons has not: (prod - cons) must still read
         * as "full", not as a huge or negative count */
        attach_pair_at(&m, UINT32_MAX - 3, &p, &c);
        for (uint32_t i = 0; i < CAP; i++)
                in[i] = 0xabc0 + i;
        cr_assert_eq(vmq_queue_enqueue(&p, in, CAP), (int)CAP);
        cr_assert_eq(m.idx.prod, CAP - 4);
        cr_assert_eq(vmq_queue_space(&p), 0);
        cr_assert_eq(vmq_queue_count(&c), (int)CAP);
        cr_assert_eq(vmq_queue_enqueue(&p, in, 1), 0);
        cr_assert_eq(vmq_queue_dequeue(&c, out, CAP), (int)CAP);
        cr_assert_eq(memcmp(in, out, sizeof(in)), 0);
}

Test(queue, batch_enqueue_is_partial) {
        struct ring_mem m;
        struct vmq_queue p, c;
        uint64_t in[CAP * 2], out[CAP * 2];

        attach_pair(&m, &p, &c);
        for (uint32_t i = 0; i < CAP * 2; i++)
                in[i] = i + 1;
        cr_assert_eq(vmq_queue_enqueue(&p, in, 3), 3);
        /* only CAP - 3 fit out of 2 * CAP */
        cr_assert_eq(vmq_queue_enqueue(&p, in + 3, CAP * 2), (int)CAP - 3);
        cr_assert_eq(vmq_queue_enqueue(&p, in, 1), 0);
        cr_assert_eq(vmq_queue_dequeue(&c, out, 5), 5);
        /* the next partial batch wraps around the end of the slot array */
        cr_assert_eq(vmq_queue_enqueue(&p, in + CAP, CAP), 5);
        cr_assert_eq(vmq_queue_dequeue(&c, out + 5, CAP * 2), (int)CAP);
        for (uint32_t i = 0; i < CAP + 5; i++)
                cr_assert_eq(out[i], i + 1);
        cr_assert_eq(vmq_queue_enqueue(&p, in, 0), 0);
}

Test(queue, enqueue_all_is_all_or_nothing) {
        struct ring_mem m;
        struct vmq_queue p, c;
        uint64_t in[CAP + 1], out[CAP];

        attach_pair(&m, &p, &c);
        for (uint32_t i = 0; i <= CAP; i++)
                in[i] = 0x100 + i;
        cr_assert_eq(vmq_queue_enqueue_all(&p, in, 5), 5);
        memset(m.slots + 5, 0xee, sizeof(uint64_t) * (CAP - 5));
        cr_assert_eq(vmq_queue_enqueue_all(&p, in, 4), -EAGAIN);
        /* nothing was written: index and free slots unchanged */
        cr_assert_eq(m.idx.prod, 5);
        cr_assert_eq(p.local, 5);
        for (uint32_t i = 5; i < CAP; i++)
                cr_assert_eq(m.slots[i], 0xeeeeeeeeeeeeeeeeull);
        cr_assert_eq(vmq_queue_enqueue_all(&p, in + 5, 3), 3);
        cr_assert_eq(vmq_queue_enqueue_all(&p, in, 1), -EAGAIN);
        cr_assert_eq(vmq_queue_dequeue(&c, out, CAP), (int)CAP);
        for (uint32_t i = 0; i < CAP; i++)
                cr_assert_eq(out[i], 0x100 + i);
        /* more than the capacity can never fit */
        cr_assert_eq(vmq_queue_enqueue_all(&p, in, CAP + 1), -EINVAL);
        cr_assert_eq(vmq_queue_enqueue_all(&p, in, CAP), (int)CAP);
}

Test(queue, peek_and_consume) {
        struct ring_mem m;
        struct vmq_queue p, c;
        uint64_t in[3] = {11, 22, 33};

        attach_pair(&m, &p, &c);
        cr_assert_null(vmq_queue_peek(&c));
        cr_assert_eq(vmq_queue_enqueue(&p, in, 3), 3);

        const uint64_t *s = vmq_queue_peek(&c);
        cr_assert_not_null(s);
        cr_assert_eq(*s, 11);
        /* peeking does not consume */
        cr_assert_eq(vmq_queue_peek(&c), s);
        cr_assert_eq(m.idx.cons, 0);
        cr_assert_eq(vmq_queue_space(&p), (int)CAP - 3);

        vmq_queue_consume(&c, 1);
        cr_assert_eq(m.idx.cons, 1);
        s = vmq_queue_peek(&c);
        cr_assert_not_null(s);
        cr_assert_eq(*s, 22);
        cr_assert_eq(vmq_queue_count(&c), 2);
        vmq_queue_consume(&c, 2);
        cr_assert_eq(m.idx.cons, 3);
        cr_assert_null(vmq_queue_peek(&c));
        cr_assert_eq(vmq_queue_space(&p), (int)CAP);
}

Test(queue, peek_follows_wrap) {
        struct ring_mem m;
        struct vmq_queue p, c;
        uint64_t v;

        attach_pair_at(&m, UINT32_MAX - 1, &p, &c);
        for (v = 0; v < 5; v++)
                cr_assert_eq(vmq_queue_enqueue(&p, &v, 1), 1);
        for (v = 0; v < 5; v++) {
                const uint64_t *s = vmq_queue_peek(&c);
                cr_assert_not_null(s);
                cr_assert_eq(*s, v);
                cr_assert_eq((const void *)s, &m.slots[(UINT32_MAX - 1 + v) & (CAP - 1)]);
                vmq_queue_consume(&c, 1);
        }
        cr_assert_null(vmq_queue_peek(&c));
        cr_assert_eq(m.idx.cons, 3);
}

/* A snapshot of everything a call must leave alone when it fails. */
struct snap {
        struct ring_mem m;
        struct vmq_queue p, c;
};

static void take(struct snap *s, const struct ring_mem *m, const struct vmq_queue *p,
                 const struct vmq_queue *c) {
        memcpy(&s->m, m, sizeof(*m));
        memcpy(&s->p, p, sizeof(*p));
        memcpy(&s->c, c, sizeof(*c));
}

static void assert_unchanged(const struct snap *s, const struct ring_mem *m,
                             const struct vmq_queue *p, const struct vmq_queue *c) {
        cr_assert_eq(memcmp(&s->m, m, sizeof(*m)), 0, "ring memory changed");
        cr_assert_eq(memcmp(&s->p, p, sizeof(*p)), 0, "producer end changed");
        cr_assert_eq(memcmp(&s->c, c, sizeof(*c)), 0, "consumer end changed");
}

Test(queue, hostile_consumer_index) {
        struct ring_mem m;
        struct vmq_queue p, c;
        struct snap s;
        uint64_t in[4] = {1, 2, 3, 4};

        attach_pair(&m, &p, &c);
        cr_assert_eq(vmq_queue_enqueue(&p, in, 2), 2);

        /* the consumer claims to have consumed more than was produced */
        uint32_t bad[] = {3, 100, UINT32_MAX / 2, 2u - CAP - 1, 2u + 0x80000000u};
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(bad); i++) {
                m.idx.cons = bad[i];
                take(&s, &m, &p, &c);
                cr_assert_eq(vmq_queue_space(&p), -EPROTO, "cons %u", bad[i]);
                cr_assert_eq(vmq_queue_enqueue(&p, in, 4), -EPROTO);
                cr_assert_eq(vmq_queue_enqueue(&p, in, 1), -EPROTO);
                cr_assert_eq(vmq_queue_enqueue_all(&p, in, 1), -EPROTO);
                assert_unchanged(&s, &m, &p, &c);
        }
        /* the producer recovers once the index is sane again */
        m.idx.cons = 2;
        cr_assert_eq(vmq_queue_space(&p), (int)CAP);
        cr_assert_eq(vmq_queue_enqueue(&p, in, 4), 4);
        cr_assert_eq(m.idx.prod, 6);
}

Test(queue, hostile_producer_index) {
        struct ring_mem m;
        struct vmq_queue p, c;
        struct snap s;
        uint64_t out[CAP];

        attach_pair(&m, &p, &c);
        for (uint64_t v = 0; v < 3; v++)
                cr_assert_eq(vmq_queue_enqueue(&p, &v, 1), 1);
        cr_assert_eq(vmq_queue_dequeue(&c, out, 1), 1);
        cr_assert_eq(m.idx.cons, 1);

        /* the producer index jumps more than a ring ahead of the consumer,
         * or falls behind it */
        uint32_t bad[] = {1 + CAP + 1, 1000, UINT32_MAX, 0};
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(bad); i++) {
                m.idx.prod = bad[i];
                memset(out, 0x5a, sizeof(out));
                take(&s, &m, &p, &c);
                cr_assert_eq(vmq_queue_count(&c), -EPROTO, "prod %u", bad[i]);
                cr_assert_eq(vmq_queue_dequeue(&c, out, CAP), -EPROTO);
                cr_assert_null(vmq_queue_peek(&c));
                assert_unchanged(&s, &m, &p, &c);
                for (uint32_t j = 0; j < CAP; j++)
                        cr_assert_eq(out[j], 0x5a5a5a5a5a5a5a5aull, "output written");
        }
        /* exactly a full ring is legal */
        m.idx.prod = 1 + CAP;
        cr_assert_eq(vmq_queue_count(&c), (int)CAP);
        m.idx.prod = 3;
        cr_assert_eq(vmq_queue_dequeue(&c, out, CAP), 2);
        cr_assert_eq(out[0], 1);
        cr_assert_eq(out[1], 2);
}

Test(queue, own_index_scribbled_is_ignored) {
        struct ring_mem m;
        struct vmq_queue p, c;
        uint64_t v = 7, out;

        /* a guest overwriting the monitor's own index cannot move it */
        attach_pair(&m, &p, &c);
        cr_assert_eq(vmq_queue_enqueue(&p, &v, 1), 1);
        m.idx.prod = 5000;
        cr_assert_eq(vmq_queue_space(&p), (int)CAP - 1);
        v = 8;
        cr_assert_eq(vmq_queue_enqueue(&p, &v, 1), 1);
        cr_assert_eq(m.idx.prod, 2, "producer republishes its private index");
        cr_assert_eq(vmq_queue_dequeue(&c, &out, 1), 1);
        cr_assert_eq(out, 7);
}

Test(queue, new_pair_is_aligned_and_works) {
        struct vmq_queue p, c;
        uint8_t in[3 * 24], out[3 * 24];

        cr_assert_eq(vmq_queue_new_pair(6, 24, &p, &c), -EINVAL);
        cr_assert_eq(vmq_queue_new_pair(16, 0, &p, &c), -EINVAL);
        cr_assert_eq(vmq_queue_new_pair(16, 24, &p, &c), 0);
        cr_assert_eq((uintptr_t)p.idx % 64, 0);
        cr_assert_eq((uintptr_t)p.slots % 64, 0);
        cr_assert_eq(p.idx, c.idx);
        cr_assert_eq(p.slots, c.slots);
        cr_assert_eq(p.role, VMQ_QUEUE_PRODUCER);
        cr_assert_eq(c.role, VMQ_QUEUE_CONSUMER);
        cr_assert_eq(vmq_queue_space(&p), 16);
        for (size_t i = 0; i < sizeof(in); i++)
                in[i] = (uint8_t)(i * 7 + 1);
        for (int round = 0; round < 20; round++) {
                cr_assert_eq(vmq_queue_enqueue(&p, in, 3), 3);
                cr_assert_eq(vmq_queue_dequeue(&c, out, 3), 3);
                cr_assert_eq(memcmp(in, out, sizeof(in)), 0);
        }
        vmq_queue_free_pair(&p, &c);
        cr_assert_null(p.idx);
        cr_assert_null(c.idx);
        vmq_queue_free_pair(NULL, NULL);
}

/*
 * Stress: one producer thread and one consumer thread move STRESS_ITEMS
 * sequence numbers through a small ring in random batch sizes.  The
 * consumer checks that it sees 0, 1, 2, ... with nothing lost, repeated or
 * reordered.  Both sides yield when they cannot progress, so that neither
 * spins away a whole time slice while the other is descheduled (2 cores).
 */
#define STRESS_ITEMS (4u * 1024 * 1024)
#define STRESS_CAP 256u
#define STRESS_BATCH 48u

struct stress {
        struct vmq_queue p, c;
        uint64_t mismatch_at; /* first wrong position, or UINT64_MAX */
        uint64_t mismatch_val;
        uint64_t received;
        int error; /* first error of either side; both stop on it */
};

static int stress_error(struct stress *st) {
        return __atomic_load_n(&st->error, __ATOMIC_RELAXED);
}

static void stress_fail(struct stress *st, int r) {
        int zero = 0;
        __atomic_compare_exchange_n(&st->error, &zero, r, false, __ATOMIC_RELAXED,
                                    __ATOMIC_RELAXED);
}

static uint32_t xorshift(uint32_t *s) {
        uint32_t x = *s;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        return *s = x;
}

static void *stress_producer(void *arg) {
        struct stress *st = arg;
        uint64_t buf[STRESS_BATCH];
        uint64_t next = 0;
        uint32_t rng = 0x12345678;

        while (next < STRESS_ITEMS && stress_error(st) == 0) {
                uint32_t n = xorshift(&rng) % STRESS_BATCH + 1;
                if (n > STRESS_ITEMS - next)
                        n = (uint32_t)(STRESS_ITEMS - next);
                for (uint32_t i = 0; i < n; i++)
                        buf[i] = next + i;
                /* every few batches, exercise the all-or-nothing path */
                int r = (n & 3) == 0 ? vmq_queue_enqueue_all(&st->p, buf, n)
                                     : vmq_queue_enqueue(&st->p, buf, n);
                if (r == -EAGAIN || r == 0) {
                        sched_yield();
                        continue;
                }
                if (r < 0) {
                        stress_fail(st, r);
                        break;
                }
                next += (uint32_t)r;
        }
        return NULL;
}

static void *stress_consumer(void *arg) {
        struct stress *st = arg;
        uint64_t buf[STRESS_BATCH];
        uint64_t expect = 0;
        uint32_t rng = 0x9e3779b9;

        while (expect < STRESS_ITEMS && stress_error(st) == 0) {
                uint32_t n = xorshift(&rng) % STRESS_BATCH + 1;
                int r;

                if ((n & 7) == 0) {
                        /* peek/consume path, one item */
                        const uint64_t *s = vmq_queue_peek(&st->c);
                        if (s) {
                                buf[0] = *s;
                                vmq_queue_consume(&st->c, 1);
                                r = 1;
                        } else {
                                r = 0;
                        }
                } else {
                        r = vmq_queue_dequeue(&st->c, buf, n);
                }
                if (r == 0) {
                        sched_yield();
                        continue;
                }
                if (r < 0) {
                        stress_fail(st, r);
                        break;
                }
                for (int i = 0; i < r; i++, expect++)
                        if (buf[i] != expect && st->mismatch_at == UINT64_MAX) {
                                st->mismatch_at = expect;
                                st->mismatch_val = buf[i];
                        }
        }
        st->received = expect;
        return NULL;
}

Test(queue, two_thread_stress_order_and_no_loss, .timeout = 120) {
        struct stress st = {.mismatch_at = UINT64_MAX};
        pthread_t tp, tc;

        cr_assert_eq(vmq_queue_new_pair(STRESS_CAP, sizeof(uint64_t), &st.p, &st.c), 0);
        cr_assert_eq(pthread_create(&tc, NULL, stress_consumer, &st), 0);
        cr_assert_eq(pthread_create(&tp, NULL, stress_producer, &st), 0);
        cr_assert_eq(pthread_join(tp, NULL), 0);
        cr_assert_eq(pthread_join(tc, NULL), 0);

        cr_assert_eq(st.error, 0, "queue error %d", st.error);
        cr_assert_eq(st.mismatch_at, UINT64_MAX, "item %llu arrived as %llu",
                     (unsigned long long)st.mismatch_at, (unsigned long long)st.mismatch_val);
        cr_assert_eq(st.received, STRESS_ITEMS);
        cr_assert_eq(vmq_queue_count(&st.c), 0);
        cr_assert_eq(st.p.idx->prod, STRESS_ITEMS);
        cr_assert_eq(st.p.idx->cons, STRESS_ITEMS);
        vmq_queue_free_pair(&st.p, &st.c);
}
