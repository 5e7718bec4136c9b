/* SPDX-License-Identifier: MIT */
/*
 * Bounded single-producer / single-consumer ring over shared memory.
 *
 * Memory ordering
 * ---------------
 * The ring has two free-running 32-bit indices in a struct vmq_ring_idx:
 * `prod`, stored only by the producer, and `cons`, stored only by the
 * consumer.  Slot i lives at index i & mask.  Items in the ring are
 * [cons, prod), so prod - cons (mod 2^32) is the fill level; because the
 * capacity is at most 2^30, unsigned subtraction gives the right answer
 * across the 2^32 wrap with no special case.
 *
 * Two happens-before edges make the ring correct, and each is one
 * release/acquire pair on one index:
 *
 *   1. producer: write slots [p, p+k)      consumer: acquire-load prod (= p+k)
 *               release-store prod = p+k  ---->       read slots [p, p+k)
 *      The consumer never reads a slot before the bytes in it are visible.
 *
 *   2. consumer: read slots [c, c+k)       producer: acquire-load cons (= c+k)
 *               release-store cons = c+k  ---->       overwrite slots [c, c+k)
 *      The producer never overwrites a slot the consumer is still reading
 *      (with a relaxed load, the producer's stores could be ordered before
 *      the consumer's loads of the old contents on a weakly-ordered CPU).
 *
 * On x86-64 both edges cost nothing at run time (plain MOVs); the __atomic
 * builtins are there to stop the *compiler* from reordering slot accesses
 * around the index accesses, from tearing the 32-bit index, and from loading
 * a shared index twice.  That last point is what makes the validation below
 * sound: each call loads the peer's index exactly once, checks the loaded
 * value, and then uses only that value.  No seq_cst fence is needed because
 * an SPSC ring never has to order a store before a later load of a different
 * location (there is no "Dekker" pattern; waiting is the caller's business,
 * see vmq_queue_prod_ptr()).
 *
 * Hostile peers
 * -------------
 * The other end may be a guest that writes anything into its index at any
 * time.  Each end therefore keeps its own index privately (q->local) and
 * never reads its own shared index back after attaching: a guest scribbling
 * over the monitor's index cannot move the monitor.  The peer's index is
 * accepted only if the ring it describes is possible, i.e. holds between 0
 * and capacity items: (prod - cons) <= capacity.  A consumer index past the
 * producer's, or a producer index more than a ring ahead, fails that test;
 * the call then returns -EPROTO before touching a slot or an index, so the
 * ring stays exactly as it was.  A peer that moves its index backwards, but
 * within the bounds, only hurts itself (it re-reads or loses its own items)
 * and is not detected.  Slot *contents* written by a hostile producer are
 * the caller's to check: dequeue copies them out in one go so the caller
 * validates a private copy; peek hands out a pointer into shared memory.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/queue.h"
#include "core/util.h"

/* Cache line size: the ring indices are 64-byte apart in the ABI already,
 * and a host-only ring starts on a line so that the indices do not share
 * one with unrelated heap data. */
#define QUEUE_CACHELINE 64u

static uint32_t load_peer(const struct vmq_queue *q) {
        const uint32_t *p = q->role == VMQ_QUEUE_PRODUCER ? &q->idx->cons : &q->idx->prod;
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void store_local(struct vmq_queue *q, uint32_t v) {
        uint32_t *p = q->role == VMQ_QUEUE_PRODUCER ? &q->idx->prod : &q->idx->cons;
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/*
 * Loads and validates the peer's index.  Returns the fill level of the ring
 * (0..capacity) and remembers the index in peer_cache, or -EPROTO with
 * nothing changed.
 */
static int64_t refresh(struct vmq_queue *q) {
        uint32_t peer = load_peer(q);
        uint32_t used = q->role == VMQ_QUEUE_PRODUCER ? q->local - peer : peer - q->local;

        if (used > q->capacity)
                return -EPROTO;
        q->peer_cache = peer;
        return used;
}

int vmq_queue_attach(struct vmq_queue *q, struct vmq_ring_idx *idx, void *slots, uint32_t capacity,
                     uint32_t slot_size, enum vmq_queue_role role, bool reset) {
        if (!q || !idx || !slots)
                return -EINVAL;
        if (!VMQ_IS_POW2(capacity) || capacity > VMQ_QUEUE_CAPACITY_MAX)
                return -EINVAL;
        if (slot_size == 0)
                return -EINVAL;
        if (role != VMQ_QUEUE_PRODUCER && role != VMQ_QUEUE_CONSUMER)
                return -EINVAL;

        struct vmq_queue n = {
                .idx = idx,
                .slots = slots,
                .capacity = capacity,
                .mask = capacity - 1,
                .slot_size = slot_size,
                .role = role,
        };

        if (reset) {
                /* Release, so that whoever acquires either index later also
                 * sees the zeroes of the other. */
                __atomic_store_n(&idx->prod, 0, __ATOMIC_RELEASE);
                __atomic_store_n(&idx->cons, 0, __ATOMIC_RELEASE);
        } else {
                /* The only time this end trusts its own shared index: it is
                 * joining a ring that someone else set up.  Validated together
                 * with the peer's below. */
                uint32_t *own = role == VMQ_QUEUE_PRODUCER ? &idx->prod : &idx->cons;
                n.local = __atomic_load_n(own, __ATOMIC_ACQUIRE);
        }
        if (reset)
                n.peer_cache = 0;
        else if (refresh(&n) < 0)
                return -EPROTO;

        *q = n;
        return 0;
}

int vmq_queue_new_pair(uint32_t capacity, uint32_t slot_size, struct vmq_queue *ret_producer,
                       struct vmq_queue *ret_consumer) {
        struct vmq_queue p, c;
        size_t slots_bytes, total;
        int r;

        if (!ret_producer || !ret_consumer)
                return -EINVAL;
        if (!VMQ_IS_POW2(capacity) || capacity > VMQ_QUEUE_CAPACITY_MAX || slot_size == 0)
                return -EINVAL;
        if (__builtin_mul_overflow((size_t)capacity, (size_t)slot_size, &slots_bytes) ||
            __builtin_add_overflow(slots_bytes, sizeof(struct vmq_ring_idx), &total) ||
            total > SIZE_MAX - QUEUE_CACHELINE)
                return -ENOMEM;
        /* aligned_alloc wants a size that is a multiple of the alignment. */
        total = VMQ_ALIGN_UP(total, (size_t)QUEUE_CACHELINE);

        _cleanup_free_ void *mem = aligned_alloc(QUEUE_CACHELINE, total);
        if (!mem)
                return -ENOMEM;
        memset(mem, 0, total);

        /* The indices come first (128 bytes, two whole lines), so the slots
         * start on a cache line too; vmq_queue_free_pair() relies on idx
         * being the start of the allocation. */
        struct vmq_ring_idx *idx = mem;
        uint8_t *slots = (uint8_t *)mem + sizeof(struct vmq_ring_idx);

        r = vmq_queue_attach(&p, idx, slots, capacity, slot_size, VMQ_QUEUE_PRODUCER, true);
        if (r < 0)
                return r;
        r = vmq_queue_attach(&c, idx, slots, capacity, slot_size, VMQ_QUEUE_CONSUMER, false);
        if (r < 0)
                return r;

        mem = NULL;
        *ret_producer = p;
        *ret_consumer = c;
        return 0;
}

void vmq_queue_free_pair(struct vmq_queue *producer, struct vmq_queue *consumer) {
        void *mem = producer ? producer->idx : consumer ? consumer->idx : NULL;

        free(mem);
        if (producer)
                *producer = (struct vmq_queue){0};
        if (consumer)
                *consumer = (struct vmq_queue){0};
}

int vmq_queue_space(struct vmq_queue *q) {
        if (q->role != VMQ_QUEUE_PRODUCER)
                return -EINVAL;
        int64_t used = refresh(q);
        if (used < 0)
                return (int)used;
        return (int)(q->capacity - (uint32_t)used);
}

int vmq_queue_count(struct vmq_queue *q) {
        if (q->role != VMQ_QUEUE_CONSUMER)
                return -EINVAL;
        /* capacity <= 2^30, so the count fits an int */
        return (int)refresh(q);
}

/* Copies k items between a private buffer and the ring starting at ring
 * index `at`, in at most two contiguous runs (before and after the end of
 * the slot array). */
static void copy_in(struct vmq_queue *q, uint32_t at, const void *items, uint32_t k) {
        uint32_t start = at & q->mask;
        uint32_t first = VMQ_MIN(k, q->capacity - start);
        size_t ss = q->slot_size;

        memcpy(q->slots + start * ss, items, first * ss);
        if (k > first)
                memcpy(q->slots, (const uint8_t *)items + first * ss, (k - first) * ss);
}

static void copy_out(struct vmq_queue *q, uint32_t at, void *items, uint32_t k) {
        uint32_t start = at & q->mask;
        uint32_t first = VMQ_MIN(k, q->capacity - start);
        size_t ss = q->slot_size;

        memcpy(items, q->slots + start * ss, first * ss);
        if (k > first)
                memcpy((uint8_t *)items + first * ss, q->slots, (k - first) * ss);
}

int vmq_queue_enqueue(struct vmq_queue *q, const void *items, uint32_t n) {
        int r = vmq_queue_space(q);
        if (r < 0)
                return r;

        uint32_t k = VMQ_MIN(n, (uint32_t)r);
        if (k == 0)
                return 0;
        assert(items);
        copy_in(q, q->local, items, k);
        q->local += k;
        store_local(q, q->local);
        return (int)k;
}

int vmq_queue_enqueue_all(struct vmq_queue *q, const void *items, uint32_t n) {
        if (q->role != VMQ_QUEUE_PRODUCER)
                return -EINVAL;
        /* Could never succeed: say so rather than have the caller retry
         * forever on -EAGAIN. */
        if (n > q->capacity)
                return -EINVAL;

        int r = vmq_queue_space(q);
        if (r < 0)
                return r;
        if ((uint32_t)r < n)
                return -EAGAIN;
        return vmq_queue_enqueue(q, items, n);
}

int vmq_queue_dequeue(struct vmq_queue *q, void *items, uint32_t n) {
        int r = vmq_queue_count(q);
        if (r < 0)
                return r;

        uint32_t k = VMQ_MIN(n, (uint32_t)r);
        if (k == 0)
                return 0;
        assert(items);
        copy_out(q, q->local, items, k);
        q->local += k;
        store_local(q, q->local);
        return (int)k;
}

const void *vmq_queue_peek(struct vmq_queue *q) {
        if (vmq_queue_count(q) <= 0)
                return NULL;
        return q->slots + (size_t)(q->local & q->mask) * q->slot_size;
}

const void *vmq_queue_peek_at(const struct vmq_queue *q, uint32_t i) {
        if (q->role != VMQ_QUEUE_CONSUMER || i >= q->peer_cache - q->local)
                return NULL;
        return q->slots + (size_t)((q->local + i) & q->mask) * q->slot_size;
}

void vmq_queue_consume(struct vmq_queue *q, uint32_t n) {
        if (q->role != VMQ_QUEUE_CONSUMER)
                return;
        /* Only what a previous peek/count validated may be consumed.  A
         * larger n is a caller bug; clamping keeps an NDEBUG build from
         * publishing a consumer index past the producer's. */
        uint32_t avail = q->peer_cache - q->local;
        assert(n <= avail);
        n = VMQ_MIN(n, avail);
        if (n == 0)
                return;
        /* Atomic: vmq_monitor_drain_posts() peeks at it without the lock
         * that serialises the consumers. */
        __atomic_store_n(&q->local, q->local + n, __ATOMIC_RELAXED);
        store_local(q, q->local);
}
