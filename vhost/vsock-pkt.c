/* SPDX-License-Identifier: MIT */
/* virtio-vsock packet headers: see vsock-pkt.h. */
#include <endian.h>
#include <errno.h>
#include <string.h>

#include "core/util.h"
#include "vhost/vsock-pkt.h"

/* Offsets in the wire header. */
#define OFF_SRC_CID 0
#define OFF_DST_CID 8
#define OFF_SRC_PORT 16
#define OFF_DST_PORT 20
#define OFF_LEN 24
#define OFF_TYPE 28
#define OFF_OP 30
#define OFF_FLAGS 32
#define OFF_BUF_ALLOC 36
#define OFF_FWD_CNT 40

static uint64_t get64(const uint8_t *p) {
        uint64_t v;
        memcpy(&v, p, sizeof(v));
        return le64toh(v);
}

static uint32_t get32(const uint8_t *p) {
        uint32_t v;
        memcpy(&v, p, sizeof(v));
        return le32toh(v);
}

static uint16_t get16(const uint8_t *p) {
        uint16_t v;
        memcpy(&v, p, sizeof(v));
        return le16toh(v);
}

static void put64(uint8_t *p, uint64_t v) {
        v = htole64(v);
        memcpy(p, &v, sizeof(v));
}

static void put32(uint8_t *p, uint32_t v) {
        v = htole32(v);
        memcpy(p, &v, sizeof(v));
}

static void put16(uint8_t *p, uint16_t v) {
        v = htole16(v);
        memcpy(p, &v, sizeof(v));
}

int vmq_vsock_hdr_check(const struct vmq_vsock_hdr *h) {
        if (h->type != VMQ_VSOCK_TYPE_STREAM && h->type != VMQ_VSOCK_TYPE_SEQPACKET)
                return -EPROTO;
        if (h->op == VMQ_VSOCK_OP_INVALID || h->op >= VMQ_VSOCK_OP_MAX)
                return -EPROTO;
        if (h->op != VMQ_VSOCK_OP_RW ? h->len != 0 : h->len > VMQ_VSOCK_MAX_PAYLOAD)
                return -EPROTO;
        return 0;
}

int vmq_vsock_hdr_read(const struct vmq_iov *iov, unsigned n, struct vmq_vsock_hdr *h) {
        uint8_t w[VMQ_VSOCK_HDR_SIZE];
        /* One copy out of guest memory; only the copy is looked at. */
        if (vmq_iov_to_buf(iov, n, 0, w, sizeof(w)) < sizeof(w))
                return -EBADMSG;
        h->src_cid = get64(w + OFF_SRC_CID);
        h->dst_cid = get64(w + OFF_DST_CID);
        h->src_port = get32(w + OFF_SRC_PORT);
        h->dst_port = get32(w + OFF_DST_PORT);
        h->len = get32(w + OFF_LEN);
        h->type = get16(w + OFF_TYPE);
        h->op = get16(w + OFF_OP);
        h->flags = get32(w + OFF_FLAGS);
        h->buf_alloc = get32(w + OFF_BUF_ALLOC);
        h->fwd_cnt = get32(w + OFF_FWD_CNT);
        if (vmq_vsock_hdr_check(h) < 0)
                return -EPROTO;
        if (vmq_iov_size(iov, n) - VMQ_VSOCK_HDR_SIZE < h->len)
                return -EPROTO; /* the payload is not all there */
        return 0;
}

int vmq_vsock_hdr_write(const struct vmq_iov *iov, unsigned n, const struct vmq_vsock_hdr *h) {
        uint8_t w[VMQ_VSOCK_HDR_SIZE];
        if (vmq_iov_size(iov, n) < sizeof(w))
                return -ENOBUFS;
        put64(w + OFF_SRC_CID, h->src_cid);
        put64(w + OFF_DST_CID, h->dst_cid);
        put32(w + OFF_SRC_PORT, h->src_port);
        put32(w + OFF_DST_PORT, h->dst_port);
        put32(w + OFF_LEN, h->len);
        put16(w + OFF_TYPE, h->type);
        put16(w + OFF_OP, h->op);
        put32(w + OFF_FLAGS, h->flags);
        put32(w + OFF_BUF_ALLOC, h->buf_alloc);
        put32(w + OFF_FWD_CNT, h->fwd_cnt);
        (void)vmq_iov_from_buf(iov, n, 0, w, sizeof(w));
        return 0;
}

const char *vmq_vsock_op_to_string(unsigned op) {
        static const char *const names[VMQ_VSOCK_OP_MAX] = {
                [VMQ_VSOCK_OP_INVALID] = "invalid",
                [VMQ_VSOCK_OP_REQUEST] = "request",
                [VMQ_VSOCK_OP_RESPONSE] = "response",
                [VMQ_VSOCK_OP_RST] = "rst",
                [VMQ_VSOCK_OP_SHUTDOWN] = "shutdown",
                [VMQ_VSOCK_OP_RW] = "rw",
                [VMQ_VSOCK_OP_CREDIT_UPDATE] = "credit_update",
                [VMQ_VSOCK_OP_CREDIT_REQUEST] = "credit_request",
        };
        return op < VMQ_VSOCK_OP_MAX ? names[op] : "unknown";
}
