/* SPDX-License-Identifier: MIT */
/*
 * A vhost-user-vsock frontend and guest driver in one, for tests of vmqd's
 * vsock backend: it connects to a device's socket as QEMU 7.2 does, passes
 * a memfd as guest memory (two regions of one memfd, with an offset, as
 * QEMU does), brings up the rx and tx queues with kick and call eventfds,
 * and then drives those queues as Linux's virtio-vsock driver would: 4 KiB
 * receive buffers, one buffer per packet sent.  Errors are Criterion
 * assertions.
 */
#ifndef VMQ_TESTS_VHOST_FRONTEND_H
#define VMQ_TESTS_VHOST_FRONTEND_H

#include <stdbool.h>
#include <stdint.h>

#include "vhost/vsock-pkt.h"

struct vfe {
        int sock, memfd;
        uint8_t *mem; /* the guest's memory, as the test sees it */
        int kick[2], call[2];
        uint64_t cid; /* what GET_CONFIG said */
        uint16_t rx_avail, tx_avail, rx_seen;
};

/* Connects to path (retrying for up to 5 s while it is not there yet) and
 * brings both queues up; f->cid is the device's CID. */
void vfe_connect(struct vfe *f, const char *path);
/* Disconnects and frees everything (the device sees end of file). */
void vfe_close(struct vfe *f);

/* Offers n more receive buffers and kicks the rx queue. */
void vfe_post_rx(struct vfe *f, unsigned n);
/* Puts one packet on the tx queue (the header as given: the source CID is
 * the test's to choose) and kicks. */
void vfe_send(struct vfe *f, const struct vmq_vsock_hdr *h, const void *payload);
/* Waits up to timeout_ms for the next packet in the receive buffers;
 * false when none came.  payload (may be NULL) gets h->len bytes. */
bool vfe_recv(struct vfe *f, struct vmq_vsock_hdr *h, void *payload, int timeout_ms);
/* Waits up to timeout_ms for the tx queue to have given back every packet
 * sent so far. */
bool vfe_tx_done(struct vfe *f, int timeout_ms);

/* Asserts that the next packet comes within 5 s, is @op and comes from
 * @src_cid; @why says what the test expected it for. */
void vfe_expect(struct vfe *f, uint16_t op, uint64_t src_cid, const char *why);
/* Asserts that no packet comes within 300 ms. */
void vfe_expect_nothing(struct vfe *f, const char *why);

/* A stream header from f's own CID. */
struct vmq_vsock_hdr vfe_hdr(const struct vfe *f, uint64_t dst_cid, uint32_t src_port,
                             uint32_t dst_port, uint16_t op, uint32_t len);

#endif /* VMQ_TESTS_VHOST_FRONTEND_H */
