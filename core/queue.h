/* SPDX-License-Identifier: MIT */
/*
 * Bounded single-producer / single-consumer ring.
 *
 * The ring's memory (a struct vmq_ring_idx and an array of fixed-size slots)
 * may live in memory shared with an untrusted party — a guest's VMCS — so a
 * struct vmq_queue is one *end* of a ring: either the producer or the
 * consumer.  Each end keeps its own index privately and treats the index it
 * loads from the other end as hostile: a value that would make the ring hold
 * more than `capacity` items is reported as -EPROTO and changes nothing.
 *
 * Memory ordering: the producer writes slots, then publishes its index with a
 * release store; the consumer loads that index with an acquire load, reads
 * the slots, then publishes its own index with a release store, which the
 * producer acquires before reusing the slots.
 */
#ifndef VMQ_QUEUE_H
#define VMQ_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vmq-abi.h"

/* Largest capacity: keeps every count representable in an int and makes
 * (prod - cons) mod 2^32 unambiguous. */
#define VMQ_QUEUE_CAPACITY_MAX (1u << 30)

enum vmq_queue_role {
        VMQ_QUEUE_PRODUCER,
        VMQ_QUEUE_CONSUMER,
};

struct vmq_queue {
        struct vmq_ring_idx *idx; /* shared indices */
        uint8_t *slots;           /* shared slot array */
        uint32_t capacity;        /* power of two */
        uint32_t mask;
        uint32_t slot_size;
        enum vmq_queue_role role;
        uint32_t local;      /* this end's index (authoritative) */
        uint32_t peer_cache; /* last validated index of the other end */
};

/*
 * Attaches one end to ring memory.  capacity must be a power of two and
 * >= 1; slot_size > 0.  With reset, both shared indices are set to 0 (only
 * the party creating the ring does that); otherwise this end's index is
 * taken from the shared memory and validated against the other.
 * Returns 0 or -EINVAL / -EPROTO.  capacity above VMQ_QUEUE_CAPACITY_MAX
 * is -EINVAL.  q is written only on success.
 *
 * Every operation below that looks at the other end's index loads it once
 * and checks it: -EPROTO means the shared indices describe an impossible
 * ring, and the call changed nothing.  Calling a producer operation on a
 * consumer end (or the reverse) returns -EINVAL.
 */
int vmq_queue_attach(struct vmq_queue *q, struct vmq_ring_idx *idx, void *slots, uint32_t capacity,
                     uint32_t slot_size, enum vmq_queue_role role, bool reset);

/* Allocates ring memory on the heap for a host-only ring and attaches both
 * ends to it.  The indices and the slots start on cache lines.  Returns 0,
 * -EINVAL (bad capacity / slot_size) or -ENOMEM; the ends are written only
 * on success.  Free with vmq_queue_free_pair(), which accepts NULL ends and
 * zeroes the ones it is given. */
int vmq_queue_new_pair(uint32_t capacity, uint32_t slot_size, struct vmq_queue *ret_producer,
                       struct vmq_queue *ret_consumer);
void vmq_queue_free_pair(struct vmq_queue *producer, struct vmq_queue *consumer);

/* Producer: number of free slots (>= 0), or -EPROTO if the consumer's index
 * is impossible. */
int vmq_queue_space(struct vmq_queue *q);
/* Consumer: number of items ready (>= 0), or -EPROTO. */
int vmq_queue_count(struct vmq_queue *q);

/* Enqueue up to n items (each slot_size bytes, contiguous in items).
 * Returns how many were enqueued (0 when full), or -EPROTO. */
int vmq_queue_enqueue(struct vmq_queue *q, const void *items, uint32_t n);
/* All-or-nothing: enqueue exactly n items or none; -EAGAIN when there is no
 * room for all of them, -EINVAL when n > capacity (it never could fit).
 * Returns n on success. */
int vmq_queue_enqueue_all(struct vmq_queue *q, const void *items, uint32_t n);
/* Dequeue up to n items into items.  Returns the count, or -EPROTO. */
int vmq_queue_dequeue(struct vmq_queue *q, void *items, uint32_t n);

/* Consumer: pointer to the next ready slot without consuming it, or NULL
 * when the ring is empty or its indices are corrupt (vmq_queue_count() tells
 * which).  The pointer is into shared memory: if the producer is untrusted,
 * copy what you need out of the slot once and check the copy.  Slots up to
 * the count validated by this call (or by vmq_queue_count()) stay valid
 * until they are consumed. */
const void *vmq_queue_peek(struct vmq_queue *q);
/* Slot i (0: the head) of those the last peek/count validated, without
 * loading the other end's index again; NULL past them.  The same rules as
 * for vmq_queue_peek() hold for what it points at. */
const void *vmq_queue_peek_at(const struct vmq_queue *q, uint32_t i);
/* Consumer: consume n slots previously peeked.  n must not exceed the count
 * the last peek/count/dequeue validated (larger values are clamped). */
void vmq_queue_consume(struct vmq_queue *q, uint32_t n);

/* Address of the ring's shared producer index, for futex-style waiting. */
static inline uint32_t *vmq_queue_prod_ptr(struct vmq_queue *q) {
        return &q->idx->prod;
}

#endif /* VMQ_QUEUE_H */
