/* SPDX-License-Identifier: MIT */
/*
 * The vhost layer's data path (vhost/): the guest memory door, the device
 * side of split virtqueues, and virtio-vsock headers.  A small driver here
 * plays the guest's kernel: it lays out a ring in a buffer that stands for
 * guest memory, adds chains and reads what the device gave back, and, for
 * the hostile cases, writes what no honest driver would.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "vhost/gmem.h"
#include "vhost/virtq.h"
#include "vhost/vsock-pkt.h"

#define MEM_SIZE (256u * 1024u)
#define GPA 0x100000ull      /* where the test's guest memory starts */
#define UADDR 0x7f0000000ull /* and where the "frontend" maps it */
#define NUM 8u
#define DESC_OFF 0x0u
#define AVAIL_OFF 0x1000u
#define USED_OFF 0x2000u
#define DATA_OFF 0x4000u

static uint8_t *mem;
static struct vmq_gmem gm;
static struct vmq_virtq q;
static uint16_t drv_avail; /* the driver's avail index */
static uint16_t drv_free;  /* next free descriptor */

static void setup(void) {
        mem = calloc(1, MEM_SIZE);
        cr_assert_not_null(mem);
        vmq_gmem_init(&gm);
        cr_assert_eq(vmq_gmem_add(&gm, GPA, MEM_SIZE, UADDR, mem), 0);
        drv_avail = drv_free = 0;
}

static void teardown(void) {
        free(mem);
}

TestSuite(virtq, .init = setup, .fini = teardown, .timeout = 10);

static void setup_ring(bool event_idx) {
        cr_assert_eq(vmq_virtq_setup(&q, &gm, NUM, UADDR + DESC_OFF, UADDR + AVAIL_OFF,
                                     UADDR + USED_OFF, 0, event_idx),
                     0);
}

static void put16(uint32_t off, uint16_t v) {
        v = htole16(v);
        memcpy(mem + off, &v, 2);
}

static uint16_t get16(uint32_t off) {
        uint16_t v;
        memcpy(&v, mem + off, 2);
        return le16toh(v);
}

static uint32_t get32(uint32_t off) {
        uint32_t v;
        memcpy(&v, mem + off, 4);
        return le32toh(v);
}

/* Writes descriptor i. */
static void desc(uint16_t i, uint64_t gpa, uint32_t len, uint16_t flags, uint16_t next) {
        uint8_t *d = mem + DESC_OFF + 16u * i;
        uint64_t a = htole64(gpa);
        uint32_t l = htole32(len);
        memcpy(d, &a, 8);
        memcpy(d + 8, &l, 4);
        put16(DESC_OFF + 16u * i + 12, flags);
        put16(DESC_OFF + 16u * i + 14, next);
}

/* Makes `head` available. */
static void offer(uint16_t head) {
        put16(AVAIL_OFF + 4 + 2u * (drv_avail % NUM), head);
        drv_avail++;
        put16(AVAIL_OFF + 2, drv_avail);
}

/* A chain of `nr` readable buffers then `nw` writable ones, each of len
 * bytes in the data area; returns its head. */
static uint16_t chain(unsigned nr, unsigned nw, uint32_t len) {
        uint16_t head = drv_free;
        for (unsigned k = 0; k < nr + nw; k++) {
                uint16_t i = (uint16_t)(drv_free++ % NUM);
                bool last = k + 1 == nr + nw;
                desc(i, GPA + DATA_OFF + (uint64_t)i * 0x1000, len,
                     (uint16_t)((k >= nr ? 2 : 0) | (last ? 0 : 1)), (uint16_t)(drv_free % NUM));
        }
        return head;
}

Test(virtq, the_gmem_door_checks_every_range) {
        struct vmq_iov iov[4];
        unsigned n = 0;
        cr_assert_eq(vmq_gmem_map(&gm, GPA, MEM_SIZE, iov, 4, &n), 0);
        cr_assert_eq(n, 1);
        cr_assert_eq(iov[0].base, mem);
        n = 0;
        cr_assert_eq(vmq_gmem_map(&gm, GPA + MEM_SIZE - 1, 2, iov, 4, &n), -EFAULT);
        cr_assert_eq(vmq_gmem_map(&gm, GPA - 1, 1, iov, 4, &n), -EFAULT);
        cr_assert_eq(vmq_gmem_map(&gm, UINT64_MAX - 3, 8, iov, 4, &n), -EFAULT, "wraps");
        cr_assert_eq(n, 0, "a refused range adds nothing");
        cr_assert_eq(vmq_gmem_map(&gm, GPA, 0, iov, 4, &n), 0);
        cr_assert_eq(n, 0);

        /* Back to back regions: a range across both comes in two pieces. */
        uint8_t *more = calloc(1, 4096);
        cr_assert_eq(vmq_gmem_add(&gm, GPA + MEM_SIZE, 4096, UADDR + 0x100000, more), 0);
        cr_assert_eq(vmq_gmem_map(&gm, GPA + MEM_SIZE - 16, 32, iov, 4, &n), 0);
        cr_assert_eq(n, 2);
        cr_assert(iov[0].base == mem + MEM_SIZE - 16 && iov[0].len == 16);
        cr_assert(iov[1].base == more && iov[1].len == 16);
        n = 0;
        cr_assert_eq(vmq_gmem_map(&gm, GPA + MEM_SIZE - 16, 32, iov, 1, &n), -E2BIG);
        cr_assert_eq(n, 0);

        /* The table refuses overlaps in either space, and zero sizes. */
        cr_assert_eq(vmq_gmem_add(&gm, GPA + 4096, 4096, 0x1000, more), -EINVAL);
        cr_assert_eq(vmq_gmem_add(&gm, 0, 4096, UADDR + 8, more), -EINVAL);
        cr_assert_eq(vmq_gmem_add(&gm, 0, 0, 0, more), -EINVAL);
        cr_assert_eq(vmq_gmem_add(&gm, UINT64_MAX - 10, 4096, 0, more), -EINVAL);

        cr_assert_eq(vmq_gmem_uaddr(&gm, UADDR + 8, 8), mem + 8);
        cr_assert_null(vmq_gmem_uaddr(&gm, UADDR + MEM_SIZE - 4, 8), "across the end");
        cr_assert_null(vmq_gmem_uaddr(&gm, UADDR, 0));
        free(more);
}

Test(virtq, setup_checks_the_ring_lies_in_guest_memory) {
        cr_assert_eq(
                vmq_virtq_setup(&q, &gm, 6, UADDR, UADDR + AVAIL_OFF, UADDR + USED_OFF, 0, false),
                -EINVAL, "not a power of two");
        cr_assert_eq(vmq_virtq_setup(&q, &gm, 65536, UADDR, UADDR + AVAIL_OFF, UADDR + USED_OFF, 0,
                                     false),
                     -EINVAL);
        cr_assert_eq(vmq_virtq_setup(&q, &gm, NUM, UADDR + 8, UADDR + AVAIL_OFF, UADDR + USED_OFF,
                                     0, false),
                     -EFAULT, "misaligned descriptors");
        cr_assert_eq(vmq_virtq_setup(&q, &gm, NUM, UADDR, UADDR + MEM_SIZE - 4, UADDR + USED_OFF, 0,
                                     false),
                     -EFAULT, "the available ring runs off the end");
        cr_assert_eq(vmq_virtq_setup(&q, &gm, 32768, UADDR, UADDR + AVAIL_OFF, UADDR + USED_OFF, 0,
                                     false),
                     -EFAULT, "32768 descriptors do not fit before the available ring");
        setup_ring(false);
        cr_assert_eq(q.num, NUM);
}

Test(virtq, chains_come_out_in_order_and_go_back_used) {
        setup_ring(false);
        struct vmq_virtq_elem e;
        cr_assert_eq(vmq_virtq_pop(&q, &gm, &e), 0, "nothing yet");
        uint16_t a = chain(2, 0, 100), b = chain(1, 2, 4096);
        memset(mem + DATA_OFF + 0x1000u * a, 'a', 100);
        offer(a);
        offer(b);
        cr_assert_eq(vmq_virtq_pending(&q), 2);

        cr_assert_eq(vmq_virtq_pop(&q, &gm, &e), 1);
        cr_assert_eq(e.head, a);
        cr_assert(e.nout == 2 && e.nin == 0 && e.out_len == 200 && e.in_len == 0);
        cr_assert_eq(e.iov[0].base, mem + DATA_OFF + 0x1000u * a);
        cr_assert_eq(e.iov[0].base[99], 'a');
        cr_assert_eq(vmq_virtq_pop(&q, &gm, &e), 1);
        cr_assert_eq(e.head, b);
        cr_assert(e.nout == 1 && e.nin == 2 && e.out_len == 4096 && e.in_len == 8192);
        cr_assert_eq(vmq_virtq_pop(&q, &gm, &e), 0);

        vmq_virtq_push(&q, b, 17);
        vmq_virtq_push(&q, a, 0);
        cr_assert_eq(get16(USED_OFF + 2), 2, "used index published");
        cr_assert(get32(USED_OFF + 4) == b && get32(USED_OFF + 8) == 17);
        cr_assert(get32(USED_OFF + 12) == a && get32(USED_OFF + 16) == 0);
        cr_assert(vmq_virtq_need_call(&q), "no NO_INTERRUPT flag: call");
        put16(AVAIL_OFF, 1); /* VRING_AVAIL_F_NO_INTERRUPT */
        cr_assert_not(vmq_virtq_need_call(&q));
}

Test(virtq, event_indices_ask_for_one_notification_each_way) {
        setup_ring(true);
        struct vmq_virtq_elem e;
        /* Kicks: arming with nothing pending asks for one at our index. */
        cr_assert_not(vmq_virtq_arm(&q));
        cr_assert_eq(get16(USED_OFF + 4 + 8 * NUM), 0, "avail_event");
        offer(chain(1, 0, 10));
        cr_assert(vmq_virtq_arm(&q), "a buffer came: take it before sleeping");
        cr_assert_eq(vmq_virtq_pop(&q, &gm, &e), 1);
        cr_assert_not(vmq_virtq_arm(&q));
        cr_assert_eq(get16(USED_OFF + 4 + 8 * NUM), 1);

        /* Calls: the first always; then only when used passes used_event. */
        vmq_virtq_push(&q, e.head, 0);
        cr_assert(vmq_virtq_need_call(&q));
        put16(AVAIL_OFF + 4 + 2 * NUM, 3); /* used_event: call when used passes 3 */
        for (int i = 0; i < 2; i++) {
                offer(chain(1, 0, 10));
                cr_assert_eq(vmq_virtq_pop(&q, &gm, &e), 1);
                vmq_virtq_push(&q, e.head, 0);
                cr_assert_not(vmq_virtq_need_call(&q), "used %u has not passed 3", 2 + i);
        }
        offer(chain(1, 0, 10));
        cr_assert_eq(vmq_virtq_pop(&q, &gm, &e), 1);
        vmq_virtq_push(&q, e.head, 0);
        cr_assert(vmq_virtq_need_call(&q), "used 4 passed 3");
}

Test(virtq, indices_wrap_around_16_bits) {
        cr_assert_eq(vmq_virtq_setup(&q, &gm, NUM, UADDR + DESC_OFF, UADDR + AVAIL_OFF,
                                     UADDR + USED_OFF, 65534, false),
                     0);
        drv_avail = 65534;
        struct vmq_virtq_elem e;
        for (int i = 0; i < 5; i++) {
                offer(chain(1, 0, 8));
                cr_assert_eq(vmq_virtq_pop(&q, &gm, &e), 1, "entry %d", i);
                vmq_virtq_push(&q, e.head, 0);
        }
        cr_assert_eq(q.last_avail, 3);
}

/* A driver that breaks a rule breaks its queue, for good. */
static void expect_broken(const char *what) {
        struct vmq_virtq_elem e;
        cr_assert_eq(vmq_virtq_pop(&q, &gm, &e), -EPROTO, "%s", what);
        cr_assert(q.broken);
        cr_assert_eq(vmq_virtq_pop(&q, &gm, &e), -EPROTO, "%s: sticky", what);
        cr_assert_eq(vmq_virtq_pending(&q), 0);
        cr_assert_not(vmq_virtq_arm(&q));
}

Test(virtq, an_index_far_ahead_breaks_the_queue) {
        setup_ring(false);
        put16(AVAIL_OFF + 2, NUM + 1);
        expect_broken("avail idx more than a queue ahead");
}

Test(virtq, a_head_outside_the_table_breaks_the_queue) {
        setup_ring(false);
        offer(NUM);
        expect_broken("head 8 of 8");
}

Test(virtq, a_loop_breaks_the_queue) {
        setup_ring(false);
        /* empty buffers: no piece limit would ever end it */
        desc(0, GPA + DATA_OFF, 0, 1, 1);
        desc(1, GPA + DATA_OFF, 0, 1, 0);
        offer(0);
        expect_broken("0 -> 1 -> 0");
}

Test(virtq, a_next_outside_the_table_breaks_the_queue) {
        setup_ring(false);
        desc(0, GPA + DATA_OFF, 16, 1, NUM);
        offer(0);
        expect_broken("next 8");
}

Test(virtq, a_buffer_outside_guest_memory_breaks_the_queue) {
        setup_ring(false);
        desc(0, GPA + MEM_SIZE - 8, 16, 0, 0);
        offer(0);
        expect_broken("runs off guest memory");
}

Test(virtq, a_buffer_that_wraps_breaks_the_queue) {
        setup_ring(false);
        desc(0, UINT64_MAX - 7, 16, 0, 0);
        offer(0);
        expect_broken("wraps");
}

Test(virtq, readable_after_writable_breaks_the_queue) {
        setup_ring(false);
        desc(0, GPA + DATA_OFF, 0, 2 | 1, 1); /* an empty writable one counts too */
        desc(1, GPA + DATA_OFF, 16, 0, 0);
        offer(0);
        expect_broken("out after in");
}

Test(virtq, an_indirect_descriptor_breaks_the_queue) {
        setup_ring(false);
        desc(0, GPA + DATA_OFF, 16, 4, 0);
        offer(0);
        expect_broken("indirect was not offered");
}

Test(virtq, a_chain_of_too_many_pieces_breaks_the_queue) {
        /* Seven back to back regions of 16 bytes: a buffer across all of
         * them is seven pieces.  A chain of nine such buffers is 63 pieces,
         * one of ten is 70, above VMQ_VIRTQ_MAX_SEGS. */
        struct vmq_gmem split;
        vmq_gmem_init(&split);
        for (unsigned i = 0; i < 7; i++)
                cr_assert_eq(
                        vmq_gmem_add(&split, 0x10 * i, 0x10, 0x10 * i, mem + DATA_OFF + 0x10 * i),
                        0);
        cr_assert_eq(vmq_virtq_setup(&q, &gm, 32, UADDR + DESC_OFF, UADDR + AVAIL_OFF,
                                     UADDR + USED_OFF, 0, false),
                     0);
        for (uint16_t i = 0; i < 9; i++)
                desc(i, 0, 0x70, i < 8 ? 1 : 0, (uint16_t)(i + 1));
        for (uint16_t i = 9; i < 19; i++)
                desc(i, 0, 0x70, i < 18 ? 1 : 0, (uint16_t)(i + 1));
        put16(AVAIL_OFF + 4, 0);
        put16(AVAIL_OFF + 6, 9);
        put16(AVAIL_OFF + 2, 2);
        struct vmq_virtq_elem e;
        cr_assert_eq(vmq_virtq_pop(&q, &split, &e), 1);
        cr_assert(e.nout == 63 && e.out_len == 9 * 0x70);
        cr_assert_eq(vmq_virtq_pop(&q, &split, &e), -EPROTO, "70 pieces");
}

Test(virtq, vsock_headers_are_read_once_and_checked) {
        uint8_t buf[VMQ_VSOCK_HDR_SIZE + 8];
        struct vmq_vsock_hdr h = {.src_cid = 3,
                                  .dst_cid = 2,
                                  .src_port = 1234,
                                  .dst_port = 5678,
                                  .len = 8,
                                  .type = VMQ_VSOCK_TYPE_STREAM,
                                  .op = VMQ_VSOCK_OP_RW,
                                  .flags = 0,
                                  .buf_alloc = 65536,
                                  .fwd_cnt = 99};
        /* written across three pieces, read back across two others */
        struct vmq_iov w[3] = {{buf, 5}, {buf + 5, 30}, {buf + 35, sizeof(buf) - 35}};
        cr_assert_eq(vmq_vsock_hdr_write(w, 3, &h), 0);
        cr_assert_eq(buf[0], 3, "little-endian on the wire");
        cr_assert_eq(buf[16], 1234 & 0xff);
        struct vmq_iov r[2] = {{buf, 40}, {buf + 40, sizeof(buf) - 40}};
        struct vmq_vsock_hdr g;
        cr_assert_eq(vmq_vsock_hdr_read(r, 2, &g), 0);
        /* field by field: the struct has padding */
        cr_assert(g.src_cid == h.src_cid && g.dst_cid == h.dst_cid && g.src_port == h.src_port &&
                  g.dst_port == h.dst_port && g.len == h.len && g.type == h.type && g.op == h.op &&
                  g.flags == h.flags && g.buf_alloc == h.buf_alloc && g.fwd_cnt == h.fwd_cnt);

        struct vmq_iov shortv = {buf, VMQ_VSOCK_HDR_SIZE - 1};
        cr_assert_eq(vmq_vsock_hdr_read(&shortv, 1, &g), -EBADMSG);
        cr_assert_eq(vmq_vsock_hdr_write(&shortv, 1, &h), -ENOBUFS);

        /* one rule broken at a time */
        struct {
                const char *what;
                struct vmq_vsock_hdr h;
        } bad[5];
        for (int i = 0; i < 5; i++)
                bad[i].h = h;
        bad[0].what = "unknown type";
        bad[0].h.type = 3;
        bad[1].what = "unknown op";
        bad[1].h.op = VMQ_VSOCK_OP_MAX;
        bad[2].what = "op 0";
        bad[2].h.op = VMQ_VSOCK_OP_INVALID;
        bad[3].what = "payload not all there";
        bad[3].h.len = 9;
        bad[4].what = "payload on a request";
        bad[4].h.op = VMQ_VSOCK_OP_REQUEST;
        for (int i = 0; i < 5; i++) {
                cr_assert_eq(vmq_vsock_hdr_write(w, 3, &bad[i].h), 0);
                cr_assert_eq(vmq_vsock_hdr_read(r, 2, &g), -EPROTO, "%s", bad[i].what);
        }
        bad[4].h.len = 0;
        cr_assert_eq(vmq_vsock_hdr_write(w, 3, &bad[4].h), 0);
        cr_assert_eq(vmq_vsock_hdr_read(r, 2, &g), 0, "a request without payload");
        cr_assert_str_eq(vmq_vsock_op_to_string(VMQ_VSOCK_OP_CREDIT_UPDATE), "credit_update");
        cr_assert_str_eq(vmq_vsock_op_to_string(99), "unknown");
}

Test(virtq, vsock_payloads_above_64k_are_refused) {
        static uint8_t big[VMQ_VSOCK_HDR_SIZE + VMQ_VSOCK_MAX_PAYLOAD + 1];
        struct vmq_vsock_hdr h = {.src_cid = 3,
                                  .dst_cid = 2,
                                  .type = VMQ_VSOCK_TYPE_SEQPACKET,
                                  .op = VMQ_VSOCK_OP_RW,
                                  .len = VMQ_VSOCK_MAX_PAYLOAD};
        struct vmq_iov v = {big, sizeof(big)};
        struct vmq_vsock_hdr g;
        cr_assert_eq(vmq_vsock_hdr_write(&v, 1, &h), 0);
        cr_assert_eq(vmq_vsock_hdr_read(&v, 1, &g), 0);
        h.len++;
        cr_assert_eq(vmq_vsock_hdr_write(&v, 1, &h), 0);
        cr_assert_eq(vmq_vsock_hdr_read(&v, 1, &g), -EPROTO);
}
