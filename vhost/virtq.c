/* SPDX-License-Identifier: MIT */
/* The device side of a split virtqueue: see virtq.h. */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "core/util.h"
#include "vhost/virtq.h"

/* The split ring's layout (virtio 1.x, 2.7). */
#define DESC_SIZE 16u
#define DESC_F_NEXT 1u
#define DESC_F_WRITE 2u
#define DESC_F_INDIRECT 4u
#define AVAIL_F_NO_INTERRUPT 1u
#define USED_F_NO_NOTIFY 1u
#define RING_OFF 4u /* of avail->ring and used->ring, after flags and idx */
#define USED_ELEM_SIZE 8u

static uint16_t ld16(volatile uint8_t *p) {
        return le16toh(__atomic_load_n((volatile uint16_t *)p, __ATOMIC_RELAXED));
}

static uint16_t ld16_acquire(volatile uint8_t *p) {
        return le16toh(__atomic_load_n((volatile uint16_t *)p, __ATOMIC_ACQUIRE));
}

static void st16(volatile uint8_t *p, uint16_t v) {
        __atomic_store_n((volatile uint16_t *)p, htole16(v), __ATOMIC_RELAXED);
}

static void st16_release(volatile uint8_t *p, uint16_t v) {
        __atomic_store_n((volatile uint16_t *)p, htole16(v), __ATOMIC_RELEASE);
}

static void st32(volatile uint8_t *p, uint32_t v) {
        __atomic_store_n((volatile uint32_t *)p, htole32(v), __ATOMIC_RELAXED);
}

int vmq_virtq_setup(struct vmq_virtq *q, const struct vmq_gmem *m, unsigned num,
                    uint64_t desc_uaddr, uint64_t avail_uaddr, uint64_t used_uaddr, uint16_t base,
                    bool event_idx) {
        if (!VMQ_IS_POW2(num) || num > VMQ_VIRTQ_MAX_SIZE)
                return -EINVAL;
        if (!VMQ_IS_ALIGNED(desc_uaddr, 16u) || !VMQ_IS_ALIGNED(avail_uaddr, 2u) ||
            !VMQ_IS_ALIGNED(used_uaddr, 4u))
                return -EFAULT;
        /* each part with its event word, which exists either way */
        uint8_t *desc = vmq_gmem_uaddr(m, desc_uaddr, (uint64_t)num * DESC_SIZE);
        uint8_t *avail = vmq_gmem_uaddr(m, avail_uaddr, RING_OFF + 2ull * num + 2);
        uint8_t *used =
                vmq_gmem_uaddr(m, used_uaddr, RING_OFF + (uint64_t)USED_ELEM_SIZE * num + 2);
        if (!desc || !avail || !used)
                return -EFAULT;
        memset(q, 0, sizeof(*q));
        q->num = (uint16_t)num;
        q->desc = desc;
        q->avail = avail;
        q->used = used;
        q->last_avail = base;
        q->used_idx = ld16(used + 2);
        q->event_idx = event_idx;
        return 0;
}

static int broken(struct vmq_virtq *q) {
        q->broken = true;
        return -EPROTO;
}

unsigned vmq_virtq_pending(const struct vmq_virtq *q) {
        if (!q->num || q->broken)
                return 0;
        uint16_t n = (uint16_t)(ld16_acquire(q->avail + 2) - q->last_avail);
        return n <= q->num ? n : 0;
}

int vmq_virtq_pop(struct vmq_virtq *q, const struct vmq_gmem *m, struct vmq_virtq_elem *e) {
        if (!q->num || q->broken)
                return -EPROTO;
        uint16_t avail_idx = ld16_acquire(q->avail + 2);
        uint16_t pending = (uint16_t)(avail_idx - q->last_avail);
        if (pending == 0)
                return 0;
        if (pending > q->num)
                return broken(q); /* more than a queue ahead of us */
        uint16_t head = ld16(q->avail + RING_OFF + 2u * (q->last_avail & (q->num - 1u)));
        if (head >= q->num)
                return broken(q);

        e->head = head;
        e->nout = e->nin = 0;
        e->out_len = e->in_len = 0;
        unsigned n = 0;
        uint16_t i = head;
        bool seen_writable = false;
        for (unsigned walked = 0;; walked++) {
                if (walked >= q->num)
                        return broken(q); /* a loop */
                /* One copy of the descriptor; only the copy is used. */
                volatile uint8_t *d = q->desc + (size_t)i * DESC_SIZE;
                uint64_t addr = le64toh(__atomic_load_n((volatile uint64_t *)d, __ATOMIC_RELAXED));
                uint32_t len =
                        le32toh(__atomic_load_n((volatile uint32_t *)(d + 8), __ATOMIC_RELAXED));
                uint16_t flags = ld16(d + 12), next = ld16(d + 14);
                if (flags & DESC_F_INDIRECT)
                        return broken(q); /* not offered */
                bool writable = flags & DESC_F_WRITE;
                if (!writable && seen_writable)
                        return broken(q); /* readable after writable, even empty */
                seen_writable |= writable;
                unsigned before = n;
                int r = vmq_gmem_map(m, addr, len, e->iov, VMQ_VIRTQ_MAX_SEGS, &n);
                if (r < 0)
                        return broken(q);
                if (writable) {
                        e->nin += n - before;
                        e->in_len += len;
                } else {
                        e->nout += n - before;
                        e->out_len += len;
                }
                if (!(flags & DESC_F_NEXT))
                        break;
                if (next >= q->num)
                        return broken(q);
                i = next;
        }
        q->last_avail++;
        return 1;
}

void vmq_virtq_push(struct vmq_virtq *q, uint16_t head, uint32_t len) {
        if (!q->num)
                return;
        volatile uint8_t *u = q->used + RING_OFF + USED_ELEM_SIZE * (q->used_idx & (q->num - 1u));
        st32(u, head);
        st32(u + 4, len);
        q->used_idx++;
        st16_release(q->used + 2, q->used_idx);
}

bool vmq_virtq_need_call(struct vmq_virtq *q) {
        if (!q->num)
                return false;
        /* Our used index is published before we read what the driver
         * asked for; it does the mirror image (write, barrier, read ours). */
        VMQ_FULL_BARRIER();
        if (!q->event_idx)
                return !(ld16(q->avail) & AVAIL_F_NO_INTERRUPT);
        uint16_t old = q->signalled, now = q->used_idx;
        bool valid = q->signalled_valid;
        q->signalled = now;
        q->signalled_valid = true;
        if (!valid)
                return true;
        uint16_t event = ld16(q->avail + RING_OFF + 2u * q->num);
        /* virtio's vring_need_event(): did [old, now) pass event? */
        return (uint16_t)(now - event - 1) < (uint16_t)(now - old);
}

bool vmq_virtq_arm(struct vmq_virtq *q) {
        if (!q->num || q->broken)
                return false;
        if (q->event_idx)
                st16(q->used + RING_OFF + USED_ELEM_SIZE * q->num, q->last_avail);
        else
                st16(q->used, (uint16_t)(ld16(q->used) & ~USED_F_NO_NOTIFY));
        /* The request is visible before we look again; a buffer the
         * driver adds after this look comes with a kick. */
        VMQ_FULL_BARRIER();
        return vmq_virtq_pending(q) > 0;
}

void vmq_virtq_disarm(struct vmq_virtq *q) {
        if (!q->num || q->event_idx)
                return; /* with event indices, an old avail_event asks for nothing new */
        st16(q->used, (uint16_t)(ld16(q->used) | USED_F_NO_NOTIFY));
}
