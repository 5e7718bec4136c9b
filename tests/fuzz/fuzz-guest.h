/* SPDX-License-Identifier: MIT */
/*
 * A hostile virtio-vsock guest for the vsock harnesses (fuzz-vsock,
 * fuzz-vsock-msg): its memory a heap block of exactly MEM bytes (so
 * AddressSanitizer sees any access outside it), its rx ring at RX_RING
 * and its tx ring at TX_RING, each with its available ring at +AVAIL and
 * its used ring at +USED, and a queue size of at most 1 << MAX_NUM_SHIFT.
 * The input writes anything anywhere in that memory.
 */
#ifndef VMQ_FUZZ_GUEST_H
#define VMQ_FUZZ_GUEST_H

#include <stdlib.h>

#include "core/util.h"
#include "tests/fuzz/fuzz-util.h"
#include "vhost/vsock.h"

#define MEM 0x4000u
#define RX_RING 0x0u
#define TX_RING 0x800u
#define AVAIL 0x200u /* within a ring's area: after 16 x 16 descriptors */
#define USED 0x400u
#define MAX_NUM_SHIFT 4 /* 1 .. 16 entries */

struct fuzz_guest {
        uint64_t cid;
        uint8_t *mem;
        struct vmq_gmem gm;
        struct vmq_virtq rx, tx;
        struct vmq_vsock_ep *ep;
        struct vmq_vsock_stats last; /* its counters when last looked at */
};

static inline void fuzz_guest_init(struct fuzz_guest *g, uint64_t cid) {
        memset(g, 0, sizeof(*g));
        g->cid = cid;
        g->mem = calloc(1, MEM);
        FUZZ_CHECK(g->mem);
        vmq_gmem_init(&g->gm);
        FUZZ_CHECK(vmq_gmem_add(&g->gm, 0, MEM, 0, g->mem) == 0);
}

/* Sets up its queues with `num` entries and puts it on the switch. */
static inline void fuzz_guest_attach(struct vmq_vsock_switch *sw, struct fuzz_guest *g,
                                     unsigned num) {
        FUZZ_CHECK(vmq_virtq_setup(&g->rx, &g->gm, num, RX_RING, RX_RING + AVAIL, RX_RING + USED, 0,
                                   true) == 0);
        FUZZ_CHECK(vmq_virtq_setup(&g->tx, &g->gm, num, TX_RING, TX_RING + AVAIL, TX_RING + USED, 0,
                                   true) == 0);
        FUZZ_CHECK(vmq_vsock_ep_add(sw, g->cid, &g->gm, &g->rx, &g->tx, g, &g->ep) == 0);
}

/* The input writes its memory: an offset (u16), a length (u8), bytes. */
static inline void fuzz_guest_write(struct fuzz_input *in, struct fuzz_guest *g) {
        uint16_t off = fuzz_u16(in) % MEM;
        uint8_t len = fuzz_u8(in);
        fuzz_bytes(in, g->mem + off, VMQ_MIN((size_t)len, (size_t)(MEM - off)));
}

/* The switch's notify callback: only queues 0 and 1 exist. */
static inline void fuzz_guest_notify(void *u, struct vmq_vsock_ep *ep, unsigned queue) {
        (void)u;
        (void)ep;
        FUZZ_CHECK(queue < 2);
}

#endif /* VMQ_FUZZ_GUEST_H */
