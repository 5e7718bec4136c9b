/* SPDX-License-Identifier: MIT */
/*
 * virtio-vsock packets (virtio 1.x, 5.10): the 44-byte little-endian header
 * that starts every buffer on the rx and tx queues, read out of a guest's
 * buffers once and checked, and written into them.
 */
#ifndef VMQ_VHOST_VSOCK_PKT_H
#define VMQ_VHOST_VSOCK_PKT_H

#include <stdint.h>

#include "vhost/gmem.h"

#define VMQ_VSOCK_HDR_SIZE 44u
/* The most payload one packet carries: what Linux's virtio transport
 * sends at most (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
#define VMQ_VSOCK_MAX_PAYLOAD (64u * 1024u)

/* The device's feature bit for SEQPACKET sockets (virtio 1.2, 5.10.3):
 * without it a guest's driver refuses SOCK_SEQPACKET itself. */
#define VMQ_VIRTIO_VSOCK_F_SEQPACKET 1

/* Well-known CIDs. */
#define VMQ_VSOCK_CID_HOST 2u

enum vmq_vsock_type { VMQ_VSOCK_TYPE_STREAM = 1, VMQ_VSOCK_TYPE_SEQPACKET = 2, VMQ_VSOCK_TYPE_MAX };

enum vmq_vsock_op {
        VMQ_VSOCK_OP_INVALID = 0,
        VMQ_VSOCK_OP_REQUEST = 1,
        VMQ_VSOCK_OP_RESPONSE = 2,
        VMQ_VSOCK_OP_RST = 3,
        VMQ_VSOCK_OP_SHUTDOWN = 4,
        VMQ_VSOCK_OP_RW = 5,
        VMQ_VSOCK_OP_CREDIT_UPDATE = 6,
        VMQ_VSOCK_OP_CREDIT_REQUEST = 7,
        VMQ_VSOCK_OP_MAX
};

/* flags of OP_SHUTDOWN */
#define VMQ_VSOCK_SHUTDOWN_RCV 1u
#define VMQ_VSOCK_SHUTDOWN_SEND 2u
/* flags of OP_RW on a SEQPACKET connection */
#define VMQ_VSOCK_SEQ_EOM 1u
#define VMQ_VSOCK_SEQ_EOR 2u

/* The header, in host byte order. */
struct vmq_vsock_hdr {
        uint64_t src_cid, dst_cid;
        uint32_t src_port, dst_port;
        uint32_t len; /* payload bytes after the header */
        uint16_t type, op;
        uint32_t flags;
        uint32_t buf_alloc; /* the sender's receive buffer for this connection */
        uint32_t fwd_cnt;   /* bytes the sender has consumed of it */
};

/*
 * Reads the header at the start of a driver's buffer (pieces iov[0, n),
 * which may split it anywhere) and checks it: a known type and op, a
 * payload only with OP_RW and never above VMQ_VSOCK_MAX_PAYLOAD, and all of
 * it present in the buffer.  Returns 0; -EBADMSG for a buffer shorter than
 * a header; -EPROTO for a header that breaks a rule.  The payload is then
 * the bytes from VMQ_VSOCK_HDR_SIZE to VMQ_VSOCK_HDR_SIZE + h->len.
 */
int vmq_vsock_hdr_read(const struct vmq_iov *iov, unsigned n, struct vmq_vsock_hdr *h);

/* The rules of vmq_vsock_hdr_read() for a header already in hand: 0 or
 * -EPROTO. */
int vmq_vsock_hdr_check(const struct vmq_vsock_hdr *h);

/* Writes h at the start of the pieces iov[0, n); -ENOBUFS when they hold
 * fewer than VMQ_VSOCK_HDR_SIZE bytes (nothing is written then). */
int vmq_vsock_hdr_write(const struct vmq_iov *iov, unsigned n, const struct vmq_vsock_hdr *h);

const char *vmq_vsock_op_to_string(unsigned op);

#endif /* VMQ_VHOST_VSOCK_PKT_H */
