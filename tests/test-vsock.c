/* SPDX-License-Identifier: MIT */
/*
 * The vsock switch (vhost/vsock.c): guests' virtio-vsock devices joined,
 * supervised.  Each "guest" here is a buffer of guest memory with an rx and
 * a tx ring in it and a small driver that does what Linux's virtio-vsock
 * driver does with them: it offers 4 KiB receive buffers, and sends a
 * packet as one buffer, header then payload.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "vhost/vsock.h"

#define MEM (1u << 20)
#define NUM 16u
#define RX_RING 0x0u
#define TX_RING 0x2000u
#define RX_BUF 0x10000u /* 16 x 4 KiB */
#define TX_BUF 0x40000u /* 16 x 16 KiB */
#define RX_SIZE 4096u
#define TX_SIZE 16384u

struct guest {
        uint64_t cid;
        uint8_t *mem;
        struct vmq_gmem gm;
        struct vmq_virtq rx, tx;
        uint16_t rx_avail, tx_avail, rx_seen;
        struct vmq_vsock_ep *ep;
        unsigned notified[2];
};

static struct vmq_vsock_switch *sw;
static struct guest ga, gb;
static bool allow = true;

static bool allowed(void *u, uint64_t from, uint64_t to) {
        (void)u;
        (void)from;
        (void)to;
        return allow;
}

static void notify(void *u, struct vmq_vsock_ep *ep, unsigned queue) {
        (void)u;
        ((struct guest *)vmq_vsock_ep_userdata(ep))->notified[queue]++;
}

static void put16(struct guest *g, uint32_t off, uint16_t v) {
        v = htole16(v);
        memcpy(g->mem + off, &v, 2);
}

static void desc(struct guest *g, uint32_t ring, uint16_t i, uint32_t off, uint32_t len,
                 uint16_t flags) {
        uint8_t *d = g->mem + ring + 16u * i;
        uint64_t a = htole64(off); /* gpa == offset */
        uint32_t l = htole32(len);
        memcpy(d, &a, 8);
        memcpy(d + 8, &l, 4);
        put16(g, ring + 16u * i + 12, flags);
        put16(g, ring + 16u * i + 14, 0);
}

static void guest_init(struct guest *g, uint64_t cid) {
        memset(g, 0, sizeof(*g));
        g->cid = cid;
        g->mem = calloc(1, MEM);
        vmq_gmem_init(&g->gm);
        cr_assert_eq(vmq_gmem_add(&g->gm, 0, MEM, 0, g->mem), 0);
        cr_assert_eq(vmq_virtq_setup(&g->rx, &g->gm, NUM, RX_RING, RX_RING + 0x800,
                                     RX_RING + 0x1000, 0, true),
                     0);
        cr_assert_eq(vmq_virtq_setup(&g->tx, &g->gm, NUM, TX_RING, TX_RING + 0x800,
                                     TX_RING + 0x1000, 0, true),
                     0);
        cr_assert_eq(vmq_vsock_ep_add(sw, cid, &g->gm, &g->rx, &g->tx, g, &g->ep), 0);
}

/* Offers n receive buffers (the rx ring's slots are reused in turn), and
 * kicks as Linux's driver does with VIRTIO_F_EVENT_IDX: only when the new
 * avail index passes the avail_event the device left in the used ring. */
static void post_rx(struct guest *g, unsigned n) {
        uint16_t old = g->rx_avail, event;
        for (unsigned k = 0; k < n; k++) {
                uint16_t i = g->rx_avail % NUM;
                desc(g, RX_RING, i, RX_BUF + RX_SIZE * i, RX_SIZE, 2);
                put16(g, RX_RING + 0x800 + 4 + 2 * i, i);
                g->rx_avail++;
                put16(g, RX_RING + 0x800 + 2, g->rx_avail);
        }
        memcpy(&event, g->mem + RX_RING + 0x1000 + 4 + 8 * NUM, 2);
        event = le16toh(event);
        if ((uint16_t)(g->rx_avail - event - 1) < (uint16_t)(g->rx_avail - old))
                vmq_vsock_ep_rx(g->ep);
}

static struct vmq_vsock_hdr hdr(struct guest *from, uint64_t to, uint32_t sport, uint32_t dport,
                                uint16_t op, uint32_t len) {
        return (struct vmq_vsock_hdr){.src_cid = from->cid,
                                      .dst_cid = to,
                                      .src_port = sport,
                                      .dst_port = dport,
                                      .len = len,
                                      .type = VMQ_VSOCK_TYPE_STREAM,
                                      .op = op,
                                      .buf_alloc = 262144};
}

/* Sends one packet as the driver does, and lets the switch take it. */
static void send_pkt(struct guest *g, struct vmq_vsock_hdr h, const void *payload) {
        uint16_t i = g->tx_avail % NUM;
        uint32_t off = TX_BUF + TX_SIZE * i;
        struct vmq_iov v = {g->mem + off, TX_SIZE};
        cr_assert_eq(vmq_vsock_hdr_write(&v, 1, &h), 0);
        if (h.len)
                memcpy(g->mem + off + VMQ_VSOCK_HDR_SIZE, payload, h.len);
        desc(g, TX_RING, i, off, VMQ_VSOCK_HDR_SIZE + h.len, 0);
        put16(g, TX_RING + 0x800 + 4 + 2 * i, i);
        g->tx_avail++;
        put16(g, TX_RING + 0x800 + 2, g->tx_avail);
        vmq_vsock_ep_tx(g->ep);
}

/* Takes the next packet the switch put in g's receive buffers. */
static bool recv_pkt(struct guest *g, struct vmq_vsock_hdr *h, uint8_t *payload) {
        uint16_t used;
        memcpy(&used, g->mem + RX_RING + 0x1000 + 2, 2);
        if (le16toh(used) == g->rx_seen)
                return false;
        uint32_t id, len;
        uint32_t at = RX_RING + 0x1000 + 4 + 8 * (g->rx_seen % NUM);
        memcpy(&id, g->mem + at, 4);
        memcpy(&len, g->mem + at + 4, 4);
        g->rx_seen++;
        struct vmq_iov v = {g->mem + RX_BUF + RX_SIZE * id, len};
        cr_assert_eq(vmq_vsock_hdr_read(&v, 1, h), 0, "a good header in every rx buffer");
        cr_assert_eq(len, VMQ_VSOCK_HDR_SIZE + h->len);
        if (payload)
                memcpy(payload, v.base + VMQ_VSOCK_HDR_SIZE, h->len);
        return true;
}

static void expect(struct guest *g, uint16_t op, uint64_t src_cid) {
        struct vmq_vsock_hdr h;
        cr_assert(recv_pkt(g, &h, NULL), "cid %lu expects %s", (unsigned long)g->cid,
                  vmq_vsock_op_to_string(op));
        cr_assert_eq(h.op, op, "got %s, not %s", vmq_vsock_op_to_string(h.op),
                     vmq_vsock_op_to_string(op));
        cr_assert_eq(h.src_cid, src_cid);
}

static void setup(void) {
        static const struct vmq_vsock_switch_ops ops = {.allowed = allowed, .notify = notify};
        allow = true;
        cr_assert_eq(vmq_vsock_switch_new(&ops, NULL, &sw), 0);
        guest_init(&ga, 3);
        guest_init(&gb, 4);
}

static void teardown(void) {
        sw = vmq_vsock_switch_free(sw);
        free(ga.mem);
        free(gb.mem);
}

TestSuite(vsock, .init = setup, .fini = teardown, .timeout = 30);

/* A connects from port 1000 to B's port 5000. */
static void connect_ab(void) {
        post_rx(&ga, 8);
        post_rx(&gb, 8);
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_REQUEST, 0), NULL);
        expect(&gb, VMQ_VSOCK_OP_REQUEST, 3);
        send_pkt(&gb, hdr(&gb, 3, 5000, 1000, VMQ_VSOCK_OP_RESPONSE, 0), NULL);
        expect(&ga, VMQ_VSOCK_OP_RESPONSE, 4);
        cr_assert_eq(vmq_vsock_switch_conns(sw), 1);
}

Test(vsock, a_stream_goes_both_ways_in_order_and_closes) {
        connect_ab();
        static uint8_t out[10000], got[10000];
        for (size_t i = 0; i < sizeof(out); i++)
                out[i] = (uint8_t)(i * 7 + i / 251);
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_RW, sizeof(out)), out);
        /* 10000 bytes in 4 KiB buffers: 4052 + 4052 + 1896 */
        size_t n = 0;
        struct vmq_vsock_hdr h;
        while (recv_pkt(&gb, &h, got + n)) {
                cr_assert_eq(h.op, VMQ_VSOCK_OP_RW);
                cr_assert_leq(h.len, RX_SIZE - VMQ_VSOCK_HDR_SIZE);
                n += h.len;
        }
        cr_assert_eq(n, sizeof(out));
        cr_assert_eq(memcmp(out, got, n), 0, "one copy, whole and in order");
        cr_assert_gt(gb.notified[0], 0, "B was notified");
        cr_assert_gt(ga.notified[1], 0, "A's tx buffers came back");

        post_rx(&ga, 3);
        send_pkt(&gb, hdr(&gb, 3, 5000, 1000, VMQ_VSOCK_OP_RW, 5), "hello");
        cr_assert(recv_pkt(&ga, &h, got));
        cr_assert(h.op == VMQ_VSOCK_OP_RW && h.len == 5 && memcmp(got, "hello", 5) == 0);
        cr_assert_eq(h.buf_alloc, 262144, "credit passes from guest to guest");

        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_SHUTDOWN, 0), NULL);
        expect(&gb, VMQ_VSOCK_OP_SHUTDOWN, 3);
        send_pkt(&gb, hdr(&gb, 3, 5000, 1000, VMQ_VSOCK_OP_RST, 0), NULL);
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
        cr_assert_eq(vmq_vsock_switch_conns(sw), 0);
}

Test(vsock, a_connection_without_leave_is_reset) {
        allow = false;
        post_rx(&ga, 4);
        post_rx(&gb, 4);
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_REQUEST, 0), NULL);
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
        struct vmq_vsock_hdr h;
        cr_assert_not(recv_pkt(&gb, &h, NULL), "B never hears of it");
        struct vmq_vsock_stats st;
        vmq_vsock_ep_stats(ga.ep, &st);
        cr_assert_eq(st.refused, 1);
        cr_assert_eq(vmq_vsock_switch_conns(sw), 0);
        /* to a CID nobody has, and to itself */
        allow = true;
        send_pkt(&ga, hdr(&ga, 99, 1001, 5000, VMQ_VSOCK_OP_REQUEST, 0), NULL);
        expect(&ga, VMQ_VSOCK_OP_RST, 99);
        send_pkt(&ga, hdr(&ga, 3, 1002, 5000, VMQ_VSOCK_OP_REQUEST, 0), NULL);
        expect(&ga, VMQ_VSOCK_OP_RST, 3);
}

Test(vsock, a_forged_source_is_dropped) {
        post_rx(&gb, 4);
        post_rx(&ga, 4);
        struct vmq_vsock_hdr h = hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_REQUEST, 0);
        h.src_cid = 5; /* A says it is someone else */
        send_pkt(&ga, h, NULL);
        cr_assert_not(recv_pkt(&gb, &h, NULL));
        cr_assert_not(recv_pkt(&ga, &h, NULL), "not even a reset: dropped");
        struct vmq_vsock_stats st;
        vmq_vsock_ep_stats(ga.ep, &st);
        cr_assert(st.forged == 1 && st.packets == 1);
        cr_assert_eq(vmq_vsock_switch_conns(sw), 0);
}

Test(vsock, packets_outside_a_connection_are_reset) {
        post_rx(&ga, 8);
        post_rx(&gb, 8);
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_RW, 4), "data");
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_RESPONSE, 0), NULL);
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
        /* a RESPONSE from the side that asked, and a second REQUEST */
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_REQUEST, 0), NULL);
        expect(&gb, VMQ_VSOCK_OP_REQUEST, 3);
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_RESPONSE, 0), NULL);
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_REQUEST, 0), NULL);
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
        /* data before the answer */
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_RW, 1), "x");
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
        struct vmq_vsock_hdr h;
        cr_assert_not(recv_pkt(&gb, &h, NULL));
        /* a malformed header is dropped */
        h = hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_RW, 0);
        h.type = 9;
        send_pkt(&ga, h, NULL);
        struct vmq_vsock_stats st;
        vmq_vsock_ep_stats(ga.ep, &st);
        cr_assert_eq(st.malformed, 1);
}

Test(vsock, a_receiver_without_buffers_gets_the_backlog_later) {
        post_rx(&ga, 8);
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_REQUEST, 0), NULL);
        struct vmq_vsock_hdr h;
        cr_assert_not(recv_pkt(&gb, &h, NULL));
        struct vmq_vsock_stats st;
        vmq_vsock_ep_stats(gb.ep, &st);
        cr_assert_eq(st.backlogged, 1);
        post_rx(&gb, 2);
        expect(&gb, VMQ_VSOCK_OP_REQUEST, 3);
        send_pkt(&gb, hdr(&gb, 3, 5000, 1000, VMQ_VSOCK_OP_RESPONSE, 0), NULL);
        expect(&ga, VMQ_VSOCK_OP_RESPONSE, 4);

        /* 6000 bytes with one rx buffer: 4052 now, the rest waits, in
         * order ahead of what comes after it */
        static uint8_t out[6000], got[6000 + 2];
        memset(out, 'p', sizeof(out));
        out[5999] = 'z';
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_RW, sizeof(out)), out);
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_RW, 2), "ok");
        size_t n = 0;
        while (recv_pkt(&gb, &h, got + n))
                n += h.len;
        cr_assert_eq(n, 4052);
        post_rx(&gb, 4);
        while (recv_pkt(&gb, &h, got + n))
                n += h.len;
        cr_assert_eq(n, sizeof(out) + 2);
        cr_assert(memcmp(got, out, sizeof(out)) == 0 && memcmp(got + 6000, "ok", 2) == 0);
}

Test(vsock, a_full_backlog_resets_the_connection) {
        connect_ab();
        /* B stops taking: its 7 remaining buffers fill, then the backlog */
        static uint8_t big[12000];
        struct vmq_vsock_stats st;
        unsigned sent = 0;
        for (;;) {
                vmq_vsock_ep_stats(gb.ep, &st);
                if (st.dropped)
                        break;
                cr_assert_lt(sent, 1000, "the backlog is bounded");
                send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_RW, sizeof(big)), big);
                sent++;
        }
        cr_assert_leq(sent * sizeof(big), VMQ_VSOCK_BACKLOG_BYTES + 8 * RX_SIZE + sizeof(big));
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
        cr_assert_eq(vmq_vsock_switch_conns(sw), 0);
}

Test(vsock, a_guest_that_goes_away_resets_its_peers) {
        connect_ab();
        vmq_vsock_ep_remove(gb.ep);
        gb.ep = NULL;
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
        cr_assert_eq(vmq_vsock_switch_conns(sw), 0);
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_RW, 1), "x");
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
        /* its CID can be given again */
        cr_assert_eq(vmq_vsock_ep_add(sw, 4, &gb.gm, &gb.rx, &gb.tx, &gb, &gb.ep), 0);
        cr_assert_eq(vmq_vsock_ep_add(sw, 4, &gb.gm, &gb.rx, &gb.tx, &gb, &gb.ep), -EEXIST);
        cr_assert_eq(vmq_vsock_ep_add(sw, 2, &gb.gm, &gb.rx, &gb.tx, &gb, &gb.ep), -EINVAL,
                     "the host's CID");
}

Test(vsock, a_channel_that_closes_resets_its_connections) {
        connect_ab();
        send_pkt(&gb, hdr(&gb, 3, 5001, 1001, VMQ_VSOCK_OP_RW, 0), NULL);
        expect(&gb, VMQ_VSOCK_OP_RST, 3); /* no such connection */
        cr_assert_eq(vmq_vsock_switch_reset_between(sw, 3, 5), 0, "another pair");
        cr_assert_eq(vmq_vsock_switch_reset_between(sw, 4, 3), 1);
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
        expect(&gb, VMQ_VSOCK_OP_RST, 3);
        cr_assert_eq(vmq_vsock_switch_conns(sw), 0);
        allow = false; /* and the leave is gone */
        send_pkt(&ga, hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_REQUEST, 0), NULL);
        expect(&ga, VMQ_VSOCK_OP_RST, 4);
}

Test(vsock, a_seqpacket_record_split_keeps_its_end_mark_on_the_last_piece) {
        post_rx(&ga, 8);
        post_rx(&gb, 8);
        struct vmq_vsock_hdr h = hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_REQUEST, 0);
        h.type = VMQ_VSOCK_TYPE_SEQPACKET;
        send_pkt(&ga, h, NULL);
        expect(&gb, VMQ_VSOCK_OP_REQUEST, 3);
        h = hdr(&gb, 3, 5000, 1000, VMQ_VSOCK_OP_RESPONSE, 0);
        h.type = VMQ_VSOCK_TYPE_SEQPACKET;
        send_pkt(&gb, h, NULL);
        expect(&ga, VMQ_VSOCK_OP_RESPONSE, 4);
        static uint8_t rec[9000];
        h = hdr(&ga, 4, 1000, 5000, VMQ_VSOCK_OP_RW, sizeof(rec));
        h.type = VMQ_VSOCK_TYPE_SEQPACKET;
        h.flags = VMQ_VSOCK_SEQ_EOM | VMQ_VSOCK_SEQ_EOR;
        send_pkt(&ga, h, rec);
        struct vmq_vsock_hdr r;
        unsigned pieces = 0;
        size_t n = 0;
        while (recv_pkt(&gb, &r, NULL)) {
                n += r.len;
                pieces++;
                bool last = n == sizeof(rec);
                cr_assert_eq(r.flags, last ? VMQ_VSOCK_SEQ_EOM | VMQ_VSOCK_SEQ_EOR : 0u, "piece %u",
                             pieces);
        }
        cr_assert(pieces == 3 && n == sizeof(rec));
}

/* ---- a port: an endpoint in the host process ---- */

/* An echo service on the host's CID: it accepts every connection and sends
 * each payload back, answering from inside its receive callback. */
struct echo {
        struct vmq_vsock_ep *ep;
        unsigned got[VMQ_VSOCK_OP_MAX];
        int send_result;
};

static bool echo_receive(void *u, struct vmq_vsock_ep *ep, const struct vmq_vsock_hdr *h,
                         const uint8_t *data) {
        struct echo *e = u;
        e->got[h->op]++;
        struct vmq_vsock_hdr r = {.src_cid = h->dst_cid,
                                  .dst_cid = h->src_cid,
                                  .src_port = h->dst_port,
                                  .dst_port = h->src_port,
                                  .type = h->type,
                                  .buf_alloc = 65536};
        if (h->op == VMQ_VSOCK_OP_REQUEST) {
                r.op = VMQ_VSOCK_OP_RESPONSE;
        } else if (h->op == VMQ_VSOCK_OP_RW) {
                r.op = VMQ_VSOCK_OP_RW;
                r.len = h->len;
        } else {
                return true;
        }
        e->send_result = vmq_vsock_port_send(ep, &r, data);
        return true;
}

static const struct vmq_vsock_port_ops echo_ops = {.receive = echo_receive};

Test(vsock, a_port_answers_from_its_callback_and_its_packets_are_checked) {
        struct echo e = {0};
        cr_assert_eq(vmq_vsock_port_add(sw, 1, &echo_ops, &e, &e.ep), -EINVAL);
        cr_assert_eq(vmq_vsock_port_add(sw, 2, &echo_ops, &e, &e.ep), 0);
        cr_assert_eq(vmq_vsock_port_add(sw, 3, &echo_ops, &e, &e.ep), -EEXIST, "A's CID");
        post_rx(&ga, 8);
        send_pkt(&ga, hdr(&ga, 2, 1000, 7, VMQ_VSOCK_OP_REQUEST, 0), NULL);
        cr_assert_eq(e.got[VMQ_VSOCK_OP_REQUEST], 1);
        expect(&ga, VMQ_VSOCK_OP_RESPONSE, 2);
        uint8_t out[6000], got[6000];
        for (size_t i = 0; i < sizeof(out); i++)
                out[i] = (uint8_t)(i * 13);
        send_pkt(&ga, hdr(&ga, 2, 1000, 7, VMQ_VSOCK_OP_RW, sizeof(out)), out);
        cr_assert_eq(e.send_result, 0);
        size_t n = 0;
        struct vmq_vsock_hdr h;
        while (recv_pkt(&ga, &h, got + n))
                n += h.len;
        cr_assert(n == sizeof(out) && memcmp(out, got, n) == 0, "the echo, whole");

        /* the port's own packets are held to the rules */
        struct vmq_vsock_hdr bad = hdr(&ga, 3, 7, 1000, VMQ_VSOCK_OP_RW, 1);
        cr_assert_eq(vmq_vsock_port_send(e.ep, &bad, "x"), -EPERM, "source CID 3 from CID 2");
        bad.src_cid = 2;
        bad.op = 99;
        cr_assert_eq(vmq_vsock_port_send(e.ep, &bad, "x"), -EPROTO);
        bad.op = VMQ_VSOCK_OP_RW;
        bad.len = 0;
        bad.dst_port = 4444; /* no such connection: the port is told */
        e.got[VMQ_VSOCK_OP_RST] = 0;
        cr_assert_eq(vmq_vsock_port_send(e.ep, &bad, NULL), 0);
        cr_assert_eq(e.got[VMQ_VSOCK_OP_RST], 1);
        struct vmq_vsock_stats st;
        vmq_vsock_ep_stats(e.ep, &st);
        cr_assert(st.forged == 1 && st.malformed == 1);

        /* a port that goes resets its peers */
        vmq_vsock_ep_remove(e.ep);
        expect(&ga, VMQ_VSOCK_OP_RST, 2);
        cr_assert_eq(vmq_vsock_switch_conns(sw), 0);
}

Test(vsock, a_port_connects_to_a_guest_only_with_leave) {
        struct echo e = {0};
        cr_assert_eq(vmq_vsock_port_add(sw, 2, &echo_ops, &e, &e.ep), 0);
        post_rx(&ga, 8);
        allow = false;
        struct vmq_vsock_hdr h = hdr(&ga, 3, 5, 22, VMQ_VSOCK_OP_REQUEST, 0);
        h.src_cid = 2;
        cr_assert_eq(vmq_vsock_port_send(e.ep, &h, NULL), 0);
        cr_assert_eq(e.got[VMQ_VSOCK_OP_RST], 1, "refused");
        struct vmq_vsock_hdr r;
        cr_assert_not(recv_pkt(&ga, &r, NULL), "A heard nothing");
        allow = true;
        cr_assert_eq(vmq_vsock_port_send(e.ep, &h, NULL), 0);
        expect(&ga, VMQ_VSOCK_OP_REQUEST, 2);
        send_pkt(&ga, hdr(&ga, 2, 22, 5, VMQ_VSOCK_OP_RESPONSE, 0), NULL);
        cr_assert_eq(e.got[VMQ_VSOCK_OP_RESPONSE], 1);
        cr_assert_eq(vmq_vsock_switch_conns(sw), 1);
        cr_assert_eq(vmq_vsock_switch_reset_between(sw, 2, 3), 1);
        cr_assert_eq(e.got[VMQ_VSOCK_OP_RST], 2);
        expect(&ga, VMQ_VSOCK_OP_RST, 2);
}
