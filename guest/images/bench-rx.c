/* SPDX-License-Identifier: MIT */
/*
 * bench-rx: the receiving half of the benchmark pair (protocol in bench.h).
 *
 * Waits on its queue spinning in the guest for spin_us before it blocks in
 * the monitor, so a back-to-back stream or a ping-pong never pays for a
 * wake-up.  Descriptors are taken in batches (vmq_recv_batch).  For every
 * PAGE message of a batch it reads one byte of every 4 KiB page of
 * [gpa, gpa + len) (so a flip pays its refaults, a copy its copy), then
 * gives the whole batch's pages back with one vmq_release_batch() (one exit
 * per run of adjacent messages), and only then answers: BENCH_TAG_LAST
 * messages with an ACK.  INLINE pings are answered with the same data;
 * other INLINE messages are counted, and one tagged BENCH_TAG_LAST is
 * answered with an ACK (a msgrate stream).
 *
 * Arguments:
 *   spin_us=N   spin before blocking, microseconds (default 200)
 *   post=0|1    send replies immediately (default) or posted (exitless
 *               while the monitor polls, else with a doorbell)
 *   link=0|1    serve the first channel's link instead of the queue: the
 *               same protocol for INLINE messages, answers on the link
 *
 * Console:
 *   bench-rx: start vm=<id> name=<name> spin_us=<N> post=<0|1>
 *   bench-rx: hello channel=<id> peer=<vm_id> name=<name> uuid=<uuid>
 *   bench-rx: done messages=<n> bytes=<b> pages=<p> batches=<k> releases=<e>
 *               (on VMQ_TAG_DONE, exit 0; batches: receive batches that
 *               held pages, releases: the exits their vmq_release_batch()
 *               calls made, by the monitor's count in the VMCS)
 */
#include "guest/images/bench.h"

static bool post;

static void reply(uint32_t ch, const void *data, size_t len, uint64_t tag) {
        int r;

        for (;;) {
                r = post ? vmq_post_inline(ch, data, len, tag)
                         : vmq_send_inline(ch, data, len, tag);
                if (r != -VMQ_E_AGAIN)
                        break;
                vmq_cpu_relax();
        }
        if (r < 0)
                vmq_printf("bench-rx: reply failed channel=%u error=%s\n", ch, vmq_strerror(r));
}

/* link=1: the INLINE half of the protocol on the first channel's link. */
static int serve_link(void) {
        static struct vmq_link_msg batch[VMQ_LINK_CAP];
        struct vmq_link l;
        struct vmq_desc d;
        uint64_t messages = 0, bytes = 0;
        int r;

        do {
                r = vmq_recv(&d, UINT64_MAX);
                if (r < 0) {
                        vmq_printf("bench-rx: recv failed error=%s\n", vmq_strerror(r));
                        return 1;
                }
        } while (d.kind != VMQ_DESC_HELLO);
        image_print_hello("bench-rx", &d);
        r = vmq_link_open(&l, &d);
        if (r < 0) {
                vmq_printf("bench-rx: link failed error=%s\n", vmq_strerror(r));
                return 1;
        }
        for (;;) {
                r = vmq_link_recv_batch(&l, batch, VMQ_LINK_CAP, UINT64_MAX);
                if (r < 0) {
                        vmq_printf("bench-rx: link recv failed error=%s\n", vmq_strerror(r));
                        return 1;
                }
                for (int i = 0; i < r; i++) {
                        const struct vmq_link_msg *m = &batch[i];
                        int e = 0;

                        if (m->tag == VMQ_TAG_DONE) {
                                vmq_printf("bench-rx: done messages=%lu bytes=%lu pages=0\n",
                                           messages, bytes);
                                return 0;
                        }
                        messages++;
                        bytes += m->len;
                        if (m->tag == BENCH_TAG_PING)
                                e = vmq_link_send(&l, m->data, m->len, m->tag, UINT64_MAX);
                        else if (m->tag & BENCH_TAG_LAST)
                                e = vmq_link_send(&l, &m->tag, sizeof(m->tag), BENCH_TAG_ACK,
                                                  UINT64_MAX);
                        if (e < 0)
                                vmq_printf("bench-rx: link reply failed error=%s\n",
                                           vmq_strerror(e));
                }
        }
}

int vmq_main(void) {
        uint64_t spin_us = vmq_arg_u64("spin_us", 200), messages = 0, bytes = 0, pages = 0;
        uint64_t batches = 0, releases = 0;
        volatile uint8_t sum = 0;
        static struct vmq_desc batch[32];
        int r;

        post = vmq_arg_u64("post", 0) != 0;
        vmq_set_spin_ns(spin_us * 1000);
        vmq_printf("bench-rx: start vm=%u name=%s spin_us=%lu post=%u\n", vmq_self()->vm_id,
                   vmq_self()->name, spin_us, post);
        if (vmq_arg_u64("link", 0))
                return serve_link();
        for (;;) {
                r = vmq_recv_batch(batch, sizeof(batch) / sizeof(batch[0]), UINT64_MAX);
                if (r < 0) {
                        vmq_printf("bench-rx: recv failed error=%s\n", vmq_strerror(r));
                        return 1;
                }
                /* Read every page, then give them all back, then answer: an
                 * ACK says its message's pages are released. */
                bool paged = false;
                for (int i = 0; i < r; i++) {
                        const volatile uint8_t *p = vmq_desc_pages(&batch[i]);

                        if (batch[i].kind != VMQ_DESC_PAGE)
                                continue;
                        paged = true;
                        for (uint64_t off = 0; off < batch[i].len; off += VMQ_PAGE_SIZE) {
                                sum += p[off];
                                pages++;
                        }
                }
                if (paged) {
                        /* The monitor counts our exits into the VMCS at
                         * each one: the difference is the releases'. */
                        uint64_t exits =
                                __atomic_load_n(&vmq_vmcs()->stats.exits, __ATOMIC_RELAXED);
                        int e = vmq_release_batch(batch, (size_t)r);

                        releases +=
                                __atomic_load_n(&vmq_vmcs()->stats.exits, __ATOMIC_RELAXED) - exits;
                        batches++;
                        if (e < 0)
                                vmq_printf("bench-rx: release failed error=%s\n", vmq_strerror(e));
                }
                for (int i = 0; i < r; i++) {
                        const struct vmq_desc d = batch[i];

                        switch (d.kind) {
                        case VMQ_DESC_HELLO:
                                image_print_hello("bench-rx", &d);
                                break;
                        case VMQ_DESC_INLINE:
                                if (d.tag == VMQ_TAG_DONE) {
                                        vmq_printf("bench-rx: done messages=%lu bytes=%lu "
                                                   "pages=%lu batches=%lu releases=%lu\n",
                                                   messages, bytes, pages, batches, releases);
                                        return 0;
                                }
                                messages++;
                                bytes += d.len;
                                if (d.tag == BENCH_TAG_PING)
                                        reply(d.channel, d.data, d.len, d.tag);
                                else if (d.tag & BENCH_TAG_LAST)
                                        reply(d.channel, &d.tag, sizeof(d.tag), BENCH_TAG_ACK);
                                break;
                        case VMQ_DESC_PAGE:
                                messages++;
                                bytes += d.len;
                                if (d.tag & BENCH_TAG_LAST)
                                        reply(d.channel, &d.tag, sizeof(d.tag), BENCH_TAG_ACK);
                                break;
                        default:
                                image_print_other("bench-rx", &d);
                                break;
                        }
                }
        }
}
