/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the vhost layer's data path (vhost/virtq.c,
 * vhost/gmem.c, vhost/vsock-pkt.c): the guest's kernel as a hostile virtio
 * driver.
 *
 * Guest memory is two regions back to back, each a heap block of exactly
 * its size, so AddressSanitizer sees any access outside them; the ring sits
 * in the first.  The input picks the queue size, the starting index and
 * whether event indices are on, then a sequence of operations: the device
 * takes a chain and serves it as the vsock backend will (reads the header
 * of its readable part and, when that is good, its payload; writes a
 * header and bytes into its writable part; gives it back), asks whether to
 * notify, arms or disarms kicks; and between them the driver writes any
 * bytes anywhere in guest memory, the ring included.
 *
 * Checked besides memory safety: every piece an element gets lies inside
 * one region, the pieces add up to the lengths reported, readable pieces
 * come first, no more chains are taken than the driver made available, and
 * a broken queue stays broken.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "tests/fuzz/fuzz-util.h"
#include "vhost/gmem.h"
#include "vhost/virtq.h"
#include "vhost/vsock-pkt.h"

#define REGION 8192u
#define GPA_A 0x10000ull
#define GPA_B (GPA_A + REGION) /* back to back: buffers may cross */
#define UADDR_A 0x500000ull
#define UADDR_B 0x900000ull
#define DESC_OFF 0x0u
#define AVAIL_OFF 0x800u
#define USED_OFF 0xc00u
#define MAX_NUM_SHIFT 7 /* queues of 1 .. 128 entries fit the layout above */

enum op { OP_SERVE, OP_WRITE, OP_NEED_CALL, OP_ARM, OP_DISARM, OP_MAX };

static bool inside(const uint8_t *p, uint32_t len, const uint8_t *base) {
        return p >= base && (size_t)(p - base) <= REGION && len <= REGION - (size_t)(p - base);
}

static void serve(struct vmq_virtq *q, const struct vmq_gmem *m, uint8_t *a, uint8_t *b,
                  struct fuzz_input *in) {
        static struct vmq_virtq_elem e;
        static uint8_t payload[VMQ_VSOCK_MAX_PAYLOAD];
        bool was_broken = q->broken;
        unsigned pending = vmq_virtq_pending(q);
        int r = vmq_virtq_pop(q, m, &e);
        if (was_broken) {
                FUZZ_CHECK(r == -EPROTO);
                return;
        }
        if (r <= 0) {
                FUZZ_CHECK(r == 0 || (r == -EPROTO && q->broken));
                FUZZ_CHECK(r != 0 || pending == 0);
                return;
        }
        FUZZ_CHECK(pending > 0);
        FUZZ_CHECK(e.head < q->num);
        FUZZ_CHECK(e.nout + e.nin <= VMQ_VIRTQ_MAX_SEGS);
        uint64_t out = 0, inb = 0;
        for (unsigned i = 0; i < e.nout + e.nin; i++) {
                FUZZ_CHECK(inside(e.iov[i].base, e.iov[i].len, a) ||
                           inside(e.iov[i].base, e.iov[i].len, b));
                *(i < e.nout ? &out : &inb) += e.iov[i].len;
        }
        FUZZ_CHECK(out == e.out_len && inb == e.in_len);

        /* What the backend will do with a tx buffer... */
        struct vmq_vsock_hdr h;
        if (e.nout > 0 && vmq_vsock_hdr_read(e.iov, e.nout, &h) == 0) {
                FUZZ_CHECK(h.len <= VMQ_VSOCK_MAX_PAYLOAD);
                FUZZ_CHECK(h.op == VMQ_VSOCK_OP_RW || h.len == 0);
                size_t got = vmq_iov_to_buf(e.iov, e.nout, VMQ_VSOCK_HDR_SIZE, payload, h.len);
                FUZZ_CHECK(got == h.len);
        }
        /* ... and with an rx buffer. */
        uint32_t written = 0;
        if (e.nin > 0) {
                struct vmq_vsock_hdr reply = {.src_cid = VMQ_VSOCK_CID_HOST,
                                              .dst_cid = 3,
                                              .type = VMQ_VSOCK_TYPE_STREAM,
                                              .op = VMQ_VSOCK_OP_RW,
                                              .len = fuzz_u16(in)};
                if (vmq_vsock_hdr_write(e.iov + e.nout, e.nin, &reply) == 0) {
                        memset(payload, 0x5a, reply.len);
                        written =
                                VMQ_VSOCK_HDR_SIZE +
                                (uint32_t)vmq_iov_from_buf(e.iov + e.nout, e.nin,
                                                           VMQ_VSOCK_HDR_SIZE, payload, reply.len);
                        FUZZ_CHECK(written <= e.in_len);
                }
        }
        vmq_virtq_push(q, e.head, written);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct fuzz_input in = {data, size};
        uint8_t *a = calloc(1, REGION), *b = calloc(1, REGION);
        struct vmq_gmem m;
        struct vmq_virtq q;
        FUZZ_CHECK(a && b);
        vmq_gmem_init(&m);
        FUZZ_CHECK(vmq_gmem_add(&m, GPA_A, REGION, UADDR_A, a) == 0);
        FUZZ_CHECK(vmq_gmem_add(&m, GPA_B, REGION, UADDR_B, b) == 0);

        uint8_t g = fuzz_u8(&in);
        unsigned num = 1u << (g % (MAX_NUM_SHIFT + 1));
        bool event_idx = g & 0x80;
        uint16_t base = fuzz_u16(&in);
        /* the ring's first state, as the driver left it */
        fuzz_bytes(&in, a, VMQ_MIN(fuzz_left(&in) / 2, (size_t)REGION));
        int r = vmq_virtq_setup(&q, &m, num, UADDR_A + DESC_OFF, UADDR_A + AVAIL_OFF,
                                UADDR_A + USED_OFF, base, event_idx);
        FUZZ_CHECK(r == 0);

        for (unsigned steps = 0; fuzz_left(&in) > 0 && steps < 256; steps++) {
                switch ((enum op)(fuzz_u8(&in) % OP_MAX)) {
                case OP_SERVE:
                        serve(&q, &m, a, b, &in);
                        break;
                case OP_WRITE: {
                        /* the driver writes anywhere in guest memory */
                        uint16_t off = fuzz_u16(&in);
                        uint8_t len = fuzz_u8(&in);
                        uint8_t *reg = off & 0x8000 ? b : a;
                        off &= 0x7fff;
                        if (off < REGION)
                                fuzz_bytes(&in, reg + off, VMQ_MIN((size_t)len, REGION - off));
                        break;
                }
                case OP_NEED_CALL:
                        (void)vmq_virtq_need_call(&q);
                        break;
                case OP_ARM: {
                        bool broken = q.broken;
                        bool more = vmq_virtq_arm(&q);
                        FUZZ_CHECK(!broken || !more);
                        break;
                }
                default:
                        vmq_virtq_disarm(&q);
                        break;
                }
        }
        free(a);
        free(b);
        return 0;
}
