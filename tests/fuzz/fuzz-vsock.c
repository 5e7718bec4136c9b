/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the vsock switch (vhost/vsock.c): two guests, both
 * hostile, joined by it, and a port as vmqd's host end (CID 2) is one.
 *
 * Each guest's memory is a heap block of exactly its size (so
 * AddressSanitizer sees any access outside it) with its rx and tx rings at
 * fixed places; their queue sizes and whether connections are allowed come
 * from the input.  Then a sequence of operations: a guest writes any bytes
 * anywhere in its memory (descriptors, rings, packet headers, payloads), a
 * guest kicks its tx queue or its rx queue, the channel between them opens
 * or closes (the allowed() answer; a close resets their connections), a
 * guest goes away and comes back, the port sends any header with up to 300
 * bytes of payload (from inside its receive callback too, as an echo), or
 * starts or stops taking what it gets.
 *
 * Checked besides memory safety: the switch never tracks more connections
 * than it may, every counter only grows, and once both guests are gone no
 * connection is left; the port's packets with a source other than CID 2
 * are refused, and what it receives is for CID 2 with its whole payload.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "tests/fuzz/fuzz-guest.h"
#include "tests/fuzz/fuzz-util.h"
#include "vhost/vsock.h"

static bool allow;

static bool allowed(void *u, uint64_t from, uint64_t to) {
        (void)u;
        (void)from;
        (void)to;
        return allow;
}

static struct vmq_vsock_ep *port;
static bool port_takes, port_echoes;

/* The host end: reads every byte it is given, and may answer at once. */
static bool port_receive(void *u, struct vmq_vsock_ep *ep, const struct vmq_vsock_hdr *h,
                         const uint8_t *data) {
        static uint8_t copy[VMQ_VSOCK_MAX_PAYLOAD];
        (void)u;
        FUZZ_CHECK(ep == port && h->dst_cid == VMQ_VSOCK_CID_HOST);
        FUZZ_CHECK(h->len <= sizeof(copy));
        if (h->len)
                memcpy(copy, data, h->len); /* all of it is there */
        if (port_echoes && h->op != VMQ_VSOCK_OP_RST) {
                struct vmq_vsock_hdr r = *h;
                r.src_cid = h->dst_cid;
                r.dst_cid = h->src_cid;
                r.src_port = h->dst_port;
                r.dst_port = h->src_port;
                r.op = h->op == VMQ_VSOCK_OP_REQUEST ? VMQ_VSOCK_OP_RESPONSE : h->op;
                (void)vmq_vsock_port_send(ep, &r, r.len ? data : NULL);
        }
        return port_takes;
}

/* The port sends a header of the input's, with its payload. */
static void port_sends(struct fuzz_input *in) {
        static uint8_t payload[300];
        struct vmq_vsock_hdr h;
        uint8_t how = fuzz_u8(in);
        h.src_cid = how & 1 ? fuzz_u64(in) : VMQ_VSOCK_CID_HOST;
        h.dst_cid = how & 2 ? fuzz_u64(in) : 3 + (how >> 2 & 1);
        h.src_port = fuzz_u32(in);
        h.dst_port = fuzz_u32(in);
        h.len = how & 8 ? fuzz_u32(in) : fuzz_u16(in) % sizeof(payload);
        h.type = fuzz_u8(in) % 4;
        h.op = fuzz_u8(in) % 9;
        h.flags = fuzz_u32(in);
        h.buf_alloc = fuzz_u32(in);
        h.fwd_cnt = fuzz_u32(in);
        fuzz_bytes(in, payload, sizeof(payload));
        /* a length past the buffer is for the header check to refuse */
        const void *data = h.len <= sizeof(payload) ? payload : NULL;
        int r = vmq_vsock_port_send(port, &h, data);
        if (h.src_cid != VMQ_VSOCK_CID_HOST)
                FUZZ_CHECK(r == -EPERM || r == -EPROTO);
        if (h.len > VMQ_VSOCK_MAX_PAYLOAD)
                FUZZ_CHECK(r == -EPROTO);
}

/* Every counter only grows. */
static void check_stats(struct fuzz_guest *g) {
        struct vmq_vsock_stats s;
        if (!g->ep)
                return;
        vmq_vsock_ep_stats(g->ep, &s);
        FUZZ_CHECK(s.packets >= g->last.packets && s.forged >= g->last.forged &&
                   s.malformed >= g->last.malformed && s.refused >= g->last.refused &&
                   s.resets >= g->last.resets && s.backlogged >= g->last.backlogged &&
                   s.dropped >= g->last.dropped && s.bad_buffers >= g->last.bad_buffers);
        FUZZ_CHECK(s.forged + s.malformed <= s.packets);
        g->last = s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const struct vmq_vsock_switch_ops ops = {.allowed = allowed,
                                                        .notify = fuzz_guest_notify};
        struct fuzz_input in = {data, size};
        struct vmq_vsock_switch *sw = NULL;
        struct fuzz_guest g[2];
        static const struct vmq_vsock_port_ops port_ops = {.receive = port_receive};
        FUZZ_CHECK(vmq_vsock_switch_new(&ops, NULL, &sw) == 0);
        FUZZ_CHECK(vmq_vsock_port_add(sw, VMQ_VSOCK_CID_HOST, &port_ops, NULL, &port) == 0);
        uint8_t geo = fuzz_u8(&in);
        allow = geo & 0x80;
        port_takes = geo & 0x40;
        port_echoes = false;
        for (int i = 0; i < 2; i++) {
                fuzz_guest_init(&g[i], 3 + (uint64_t)i);
                fuzz_guest_attach(sw, &g[i], 1u << ((geo >> (3 * i)) % (MAX_NUM_SHIFT + 1)));
        }
        for (unsigned steps = 0; fuzz_left(&in) > 0 && steps < 512; steps++) {
                uint8_t op = fuzz_u8(&in);
                struct fuzz_guest *me = &g[op & 1];
                switch ((op >> 1) % 8) {
                case 0: /* the guest writes its memory */
                        fuzz_guest_write(&in, me);
                        break;
                case 1:
                        if (me->ep)
                                vmq_vsock_ep_tx(me->ep);
                        break;
                case 2:
                        if (me->ep)
                                vmq_vsock_ep_rx(me->ep);
                        break;
                case 3: /* the channel opens, or closes and takes its connections */
                        allow = !allow;
                        if (!allow)
                                (void)vmq_vsock_switch_reset_between(sw, 3, 4);
                        break;
                case 4: /* goes away, or comes back */
                        if (me->ep) {
                                vmq_vsock_ep_remove(me->ep);
                                me->ep = NULL;
                                memset(&me->last, 0, sizeof(me->last));
                        } else {
                                fuzz_guest_attach(sw, me, 1u << (op >> 5) % (MAX_NUM_SHIFT + 1));
                        }
                        break;
                case 6:
                        port_sends(&in);
                        break;
                case 7: /* the host end changes its mind */
                        port_takes = op & 0x10;
                        port_echoes = op & 0x20;
                        break;
                default:
                        /* both at once: the tx of one runs into the other */
                        for (int i = 0; i < 2; i++)
                                if (g[i].ep)
                                        vmq_vsock_ep_tx(g[i].ep);
                        break;
                }
                FUZZ_CHECK(vmq_vsock_switch_conns(sw) <= VMQ_VSOCK_MAX_CONNS);
                check_stats(&g[0]);
                check_stats(&g[1]);
        }
        for (int i = 0; i < 2; i++)
                if (g[i].ep) {
                        vmq_vsock_ep_remove(g[i].ep);
                        g[i].ep = NULL;
                }
        vmq_vsock_ep_remove(port);
        port = NULL;
        FUZZ_CHECK(vmq_vsock_switch_conns(sw) == 0);
        sw = vmq_vsock_switch_free(sw);
        free(g[0].mem);
        free(g[1].mem);
        return 0;
}
