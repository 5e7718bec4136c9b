/* SPDX-License-Identifier: MIT */
/*
 * The device side of a split virtqueue (virtio 1.x, 2.7) in guest memory:
 * what a vhost-user backend does with a ring once the frontend has told it
 * where the ring is.
 *
 * The driver (the guest's kernel) is hostile.  Everything read from the
 * ring is read once, into a local copy, and checked before it is used:
 * the available index may not run more than a queue ahead of us, a head or
 * `next` index must be inside the table, a chain may not be longer than the
 * table (so a loop ends), device-readable buffers must come before
 * device-writable ones, and every buffer must lie inside the guest memory
 * table (vmq_gmem_map, the one door).  A driver that breaks one of these
 * rules breaks its queue: vmq_virtq_pop() says -EPROTO from then on, as a
 * virtio device that needs a reset would, and nothing else is touched.
 * Indirect descriptors are not offered, so a descriptor that claims to be
 * one breaks the queue too.
 *
 * Notifications both ways follow VIRTIO_F_EVENT_IDX when it was
 * negotiated (the driver's used_event, our avail_event), else the flags
 * words.
 */
#ifndef VMQ_VHOST_VIRTQ_H
#define VMQ_VHOST_VIRTQ_H

#include <stdbool.h>
#include <stdint.h>

#include "vhost/gmem.h"

/* The largest queue the spec allows. */
#define VMQ_VIRTQ_MAX_SIZE 32768u
/* Pieces one element may have, readable and writable together.  A virtio
 * vsock driver uses two or three; a chain that needs more breaks the
 * queue. */
#define VMQ_VIRTQ_MAX_SEGS 64u

/* Feature bits of the ring (virtio 1.x, 6). */
#define VMQ_VIRTIO_F_EVENT_IDX 29
#define VMQ_VIRTIO_F_VERSION_1 32

struct vmq_virtq_elem {
        uint16_t head;            /* give it back with vmq_virtq_push() */
        unsigned nout, nin;       /* iov[0, nout) readable, then nin writable */
        uint64_t out_len, in_len; /* their bytes */
        struct vmq_iov iov[VMQ_VIRTQ_MAX_SEGS];
};

struct vmq_virtq {
        uint16_t num; /* 0: not set up */
        volatile uint8_t *desc, *avail, *used;
        uint16_t last_avail; /* the next available entry to take */
        uint16_t used_idx;   /* ours, published in used->idx */
        uint16_t signalled;  /* used_idx when we last asked for a call */
        bool signalled_valid;
        bool event_idx;
        bool broken; /* sticky: see the top */
};

/*
 * Points q at a ring of `num` entries (a power of two, 1 to
 * VMQ_VIRTQ_MAX_SIZE) whose three parts are at the given frontend
 * addresses, each of which must lie inside one region of m and be aligned
 * as the spec says (16, 2 and 4).  `base` is the next available entry to
 * take (vhost-user SET_VRING_BASE); our used index starts at the ring's.
 * Returns 0, or -EINVAL (bad num) / -EFAULT (a part outside m, or
 * misaligned), and q is then not set up.
 */
int vmq_virtq_setup(struct vmq_virtq *q, const struct vmq_gmem *m, unsigned num,
                    uint64_t desc_uaddr, uint64_t avail_uaddr, uint64_t used_uaddr, uint16_t base,
                    bool event_idx);

/*
 * Takes the next available chain into e.  Returns 1; 0 when there is none;
 * -EPROTO when the driver broke the queue (then and for every later call).
 */
int vmq_virtq_pop(struct vmq_virtq *q, const struct vmq_gmem *m, struct vmq_virtq_elem *e);

/* Gives chain `head` back to the driver with `len` bytes written into its
 * writable part (published with release ordering). */
void vmq_virtq_push(struct vmq_virtq *q, uint16_t head, uint32_t len);

/*
 * After pushes: should the driver be notified (the call eventfd)?  With
 * event indices, only when the used index passed the driver's used_event
 * since the last notification; otherwise unless the driver set
 * VRING_AVAIL_F_NO_INTERRUPT.
 */
bool vmq_virtq_need_call(struct vmq_virtq *q);

/*
 * Before the backend sleeps on the kick eventfd: asks the driver for a kick
 * at its next buffer (avail_event, or the NO_NOTIFY flag cleared), then
 * looks once more.  Returns true when buffers are already there, which the
 * caller must take before it sleeps (no kick will come for them).
 */
bool vmq_virtq_arm(struct vmq_virtq *q);

/* While the backend polls: asks the driver not to kick. */
void vmq_virtq_disarm(struct vmq_virtq *q);

/* Available entries not yet taken (0 for a broken queue). */
unsigned vmq_virtq_pending(const struct vmq_virtq *q);

#endif /* VMQ_VHOST_VIRTQ_H */
