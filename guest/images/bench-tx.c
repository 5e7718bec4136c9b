/* SPDX-License-Identifier: MIT */
/*
 * bench-tx: the sending half of the benchmark pair (protocol in bench.h).
 * Times are taken with the TSC in the guest and converted with the rate the
 * monitor publishes (vmq_tsc_khz()).  Results are console lines
 * "BENCHDATA <key> <value>", values in ns or GB/s (1e9 bytes/s, three
 * decimals).
 *
 * test=latency (default): ping-pong with bench-rx, one message in flight.
 *   path=inline|page_copy|page_flip|link
 *                                     inline ping of `size` bytes (default 8,
 *                                     at most 96) answered by an inline pong,
 *                                     through the monitor or on the
 *                                     channel's link (bench-rx needs link=1);
 *                                     or a page run of `size` bytes (default
 *                                     4096) sent with COPY or FLIP and
 *                                     answered by an inline ACK
 *   post=0|1        immediate sends, or posted requests
 *   doorbell=1|0    with post=1: ring the doorbell when the monitor asks
 *                   for one (default: exitless while the monitor polls), or
 *                   never, so that the next exit (the WAIT for the reply)
 *                   drains them (the "natural exit" mode)
 *   iters=N         timed round trips (default 10000), after warmup=W
 *                   untimed ones (default min(iters / 10, 1000))
 *   spin_us=N       spin on the queue before blocking (default 200)
 *   Each round trip is timed from just before the request to the dequeue of
 *   the reply; one-way latency is half of it.
 *   BENCHDATA oneway_p50_ns <v>
 *   BENCHDATA oneway_p99_ns <v>
 *   BENCHDATA rtt_p50_ns <v>
 *   BENCHDATA samples <n>
 *
 * test=msgrate: a stream of inline messages, none answered but the last.
 *   mode=link           written in batches on the channel's link (bench-rx
 *                       needs link=1), kicking the receiver only when it
 *                       sleeps
 *   mode=exit|exitless  one VMQ_HC_SEND exit per message, or posted in
 *                   batches (vmq_post_room/slot/commit), without exits
 *                   while the monitor polls
 *   size=S          bytes per message (default 64, at most 96)
 *   count=N         messages per rep (default 200000); the last is tagged
 *                   BENCH_TAG_LAST and bench-rx answers it with an ACK
 *   reps=R          timed reps (default 5) after warmup=W (default 1)
 *   A rep runs from the first request to the ACK.
 *   BENCHDATA msgrate_mps_p50 <median over reps of messages per second>
 *   BENCHDATA msgrate_messages <messages in all reps, warm-up included>
 *
 * test=exit: the raw exit round trip (VMQ_HC_NOP), no peer needed.
 *   iters=N (default 100000) in batches of batch=B (default 100) NOPs; the
 *   per-exit time of each batch is a sample.
 *   BENCHDATA exit_roundtrip_ns <median>
 *   BENCHDATA exit_roundtrip_p99_ns <v>
 *
 * test=memcpy: guest memcpy bandwidth (the limit of any copying design), no
 *   peer needed.  size=S (default 2M) between two heap buffers, reps=R
 *   (default 50) timed copies after one untimed.
 *   BENCHDATA memcpy_gbps_p50 <v>
 *
 * test=throughput: back-to-back page messages.
 *   method=copy|flip4k|flip2m|auto  copy: RAM pages with COPY; flip4k: RAM
 *                   pages with FLIP; flip2m: own 2 MiB frames with FLIP;
 *                   auto: flags 0 (channel policy) on a buffer from
 *                   vmq_alloc_buffer() (2 MiB frames from
 *                   VMQ_AUTO_HUGE_MIN up, else RAM pages)
 *   size=S          bytes per message (default 64K)
 *   total=T         bytes per rep (default 64M): ceil(T / S) messages, at
 *                   least one, the last tagged BENCH_TAG_LAST
 *   reps=R          timed reps (default 5) after warmup=W untimed (default 1)
 *   post=0|1        immediate sends (a full receiver is retried at once),
 *                   or posted + doorbell, one message at a time
 *   batch=N         N > 1: post the messages in bursts of up to N
 *                   (vmq_post_room/slot/commit; post= does not matter),
 *                   each followed by one VMQ_HC_FLUSH unless the monitor's
 *                   poller is polling this VM (then no exit at all); a full
 *                   ring waits for the receiver.  Default 1: one request
 *                   per message as post= says
 *   A rep runs from the first request to the ACK of the last message, which
 *   bench-rx sends after reading one byte of every page of every message.
 *   BENCHDATA throughput_gbps_p50 <median over reps of bytes / time>
 *   BENCHDATA throughput_bytes <bytes per rep>
 *   BENCHDATA throughput_messages <messages per rep>
 *
 * Every test except exit and memcpy first waits for the HELLO of its
 * channel, and at the end sends VMQ_TAG_DONE so that bench-rx exits too.
 *
 * Console:
 *   bench-tx: start vm=<id> name=<name> test=<t>
 *   bench-tx: hello channel=<id> peer=<vm_id> name=<name> uuid=<uuid>
 *   BENCHDATA <key> <value>
 *   bench-tx: done test=<t>
 *   bench-tx: failed ... (exit code 1; bad arguments: 2)
 */
#include "guest/images/bench.h"

static uint32_t channel;
static bool post, doorbell = true;
/* The channel's link (use_link: the test runs over it, see path=link). */
static struct vmq_link link;
static bool use_link;

VMQ_NORETURN static void fail(const char *what, int r) {
        vmq_printf("bench-tx: failed %s error=%s\n", what, vmq_strerror(r));
        vmq_exit(1);
}

static void wait_hello(void) {
        struct vmq_desc d;
        int r;

        do {
                r = vmq_recv(&d, UINT64_MAX);
                if (r < 0)
                        fail("recv", r);
        } while (d.kind != VMQ_DESC_HELLO);
        image_print_hello("bench-tx", &d);
        channel = d.channel;
        if (use_link) {
                r = vmq_link_open(&link, &d);
                if (r < 0)
                        fail("link", r);
        }
}

static void link_send(const void *data, size_t len, uint64_t tag) {
        int r = vmq_link_send(&link, data, len, tag, UINT64_MAX);
        if (r < 0)
                fail("link send", r);
}

/* Waits for a message with the given tag on the link. */
static void link_wait_reply(uint64_t tag) {
        struct vmq_link_msg m;
        do {
                int r = vmq_link_recv(&link, &m, UINT64_MAX);
                if (r < 0)
                        fail("link recv", r);
        } while (m.tag != tag);
}

/* A descriptor nobody waits for: stray pages are released, a failed posted
 * request or a closed channel ends the test. */
static void take_stray(const struct vmq_desc *d) {
        if (d->kind == VMQ_DESC_PAGE)
                vmq_release(vmq_desc_pages(d), d->len);
        else if (d->kind == VMQ_DESC_ERROR || d->kind == VMQ_DESC_CLOSE)
                fail(d->kind == VMQ_DESC_ERROR ? "posted request" : "channel closed", -d->error);
}

/* Waits for an INLINE reply with the given tag. */
static void wait_reply(uint64_t tag) {
        struct vmq_desc d;
        int r;

        for (;;) {
                r = vmq_recv(&d, UINT64_MAX);
                if (r < 0)
                        fail("recv", r);
                if (d.kind == VMQ_DESC_INLINE && d.tag == tag)
                        return;
                take_stray(&d);
        }
}

static void send_inline(const void *data, size_t len, uint64_t tag) {
        int r;

        while ((r = post ? vmq_post_inline(channel, data, len, tag)
                         : vmq_send_inline(channel, data, len, tag)) == -VMQ_E_AGAIN)
                vmq_cpu_relax();
        if (r < 0)
                fail("send", r);
}

static void send_pages(const void *p, size_t len, uint32_t flags, uint64_t tag) {
        int r;

        while ((r = post ? vmq_post_pages(channel, p, len, flags, tag)
                         : vmq_send_pages(channel, p, len, flags, tag)) == -VMQ_E_AGAIN)
                vmq_cpu_relax();
        if (r < 0)
                fail("send", r);
}

static uint64_t *alloc_samples(uint64_t n) {
        uint64_t *s = vmq_alloc_pages((n * sizeof(uint64_t) + VMQ_PAGE_SIZE - 1) / VMQ_PAGE_SIZE);

        if (!s) {
                vmq_printf("bench-tx: failed no memory for %lu samples\n", n);
                vmq_exit(1);
        }
        return s;
}

/* Index of the p-th percentile in n sorted samples. */
static uint64_t pct(uint64_t n, unsigned p) {
        uint64_t i = (n * p + 99) / 100;

        return i ? i - 1 : 0;
}

static void print_gbps(const char *key, uint64_t bytes, uint64_t ns) {
        uint64_t milli = ns ? bytes * 1000 / ns : 0; /* bytes/ns = GB/s */

        vmq_printf("BENCHDATA %s %lu.%03lu\n", key, milli / 1000, milli % 1000);
}

static int latency(void) {
        char path[16] = "inline";
        uint64_t iters = vmq_arg_u64("iters", 10000), warmup, size, n;
        bool page;
        uint32_t flags = 0;
        uint64_t *s;
        uint8_t *buf = NULL, data[VMQ_INLINE_MAX] = {0};

        warmup = iters / 10 < 1000 ? iters / 10 : 1000;
        warmup = vmq_arg_u64("warmup", warmup);
        vmq_arg_str("path", path, sizeof(path));
        doorbell = vmq_arg_u64("doorbell", 1) != 0;
        vmq_set_post_doorbell(doorbell);
        if (!strcmp(path, "inline"))
                page = false;
        else if (!strcmp(path, "page_copy"))
                page = true, flags = VMQ_REQ_F_COPY;
        else if (!strcmp(path, "page_flip"))
                page = true, flags = VMQ_REQ_F_FLIP;
        else if (!strcmp(path, "link"))
                page = false, use_link = true;
        else {
                vmq_printf("bench-tx: failed bad path=%s\n", path);
                return 2;
        }
        size = vmq_arg_u64("size", page ? VMQ_PAGE_SIZE : 8);
        if (!iters || (!page && size > VMQ_INLINE_MAX) || (page && (!size || size > 1u << 30))) {
                vmq_printf("bench-tx: failed bad iters=%lu or size=%lu\n", iters, size);
                return 2;
        }
        if (post && !doorbell)
                vmq_set_spin_ns(0); /* nothing comes until our WAIT exit drains */
        s = alloc_samples(iters);
        if (page) {
                buf = vmq_alloc_pages((size + VMQ_PAGE_SIZE - 1) / VMQ_PAGE_SIZE);
                if (!buf) {
                        vmq_printf("bench-tx: failed no memory for size=%lu\n", size);
                        return 1;
                }
                memset(buf, 1, size);
        }
        wait_hello();
        for (uint64_t i = 0; i < warmup + iters; i++) {
                uint64_t t0, t1, tag = page ? BENCH_TAG_LAST | i : BENCH_TAG_PING;

                if (page)
                        buf[0] = (uint8_t)i;
                else
                        memcpy(data, &i, sizeof(i));
                t0 = vmq_rdtsc();
                if (use_link) {
                        link_send(data, size, tag);
                        link_wait_reply(tag);
                } else {
                        if (page)
                                send_pages(buf, size, flags, tag);
                        else
                                send_inline(data, size, tag);
                        wait_reply(page ? BENCH_TAG_ACK : BENCH_TAG_PING);
                }
                t1 = vmq_rdtsc();
                if (i >= warmup)
                        s[i - warmup] = t1 - t0;
        }
        n = iters;
        vmq_sort_u64(s, n);
        vmq_printf("BENCHDATA oneway_p50_ns %lu\n", vmq_tsc_to_ns(s[pct(n, 50)]) / 2);
        vmq_printf("BENCHDATA oneway_p99_ns %lu\n", vmq_tsc_to_ns(s[pct(n, 99)]) / 2);
        vmq_printf("BENCHDATA rtt_p50_ns %lu\n", vmq_tsc_to_ns(s[pct(n, 50)]));
        vmq_printf("BENCHDATA samples %lu\n", n);
        return 0;
}

/* The tag of message m of a stream of count: the last one asks for an ACK. */
static uint64_t stream_tag(uint64_t m, uint64_t count) {
        return m + 1 == count ? BENCH_TAG_LAST | m : m;
}

/* Posts `left` (at most) messages of the stream, from message `first` of
 * `count`, in one batch; returns how many went.  op VMQ_OP_INLINE: each
 * carries the size bytes at data; VMQ_OP_PAGE: each is the page run at
 * data of size bytes, sent with flags. */
static uint64_t post_batch(uint16_t op, const uint8_t *data, uint64_t size, uint32_t flags,
                           uint64_t first, uint64_t left, uint64_t count) {
        uint32_t room = vmq_post_room();

        if (room > left)
                room = (uint32_t)left;
        for (uint32_t i = 0; i < room; i++) {
                struct vmq_request *s = vmq_post_slot(i);

                vmq_request_init(s);
                s->op = op;
                s->flags = flags;
                s->channel = channel;
                s->len = (uint32_t)size;
                s->tag = stream_tag(first + i, count);
                if (op == VMQ_OP_PAGE)
                        s->gpa = (uint64_t)(uintptr_t)data;
                else
                        memcpy(s->data, data, size);
        }
        vmq_post_commit(room);
        return room;
}

/* Writes `left` (at most) messages of the stream on the link in one batch
 * and kicks the receiver if it sleeps; returns how many went. */
static uint64_t link_batch(const uint8_t *data, uint64_t size, uint64_t first, uint64_t left,
                           uint64_t count) {
        static struct vmq_link_msg out[VMQ_LINK_CAP];
        uint64_t n = left < VMQ_LINK_CAP ? left : VMQ_LINK_CAP;

        for (uint64_t i = 0; i < n; i++) {
                out[i].len = (uint32_t)size;
                out[i].tag = stream_tag(first + i, count);
                memcpy(out[i].data, data, size);
        }
        int r = vmq_link_try_send_batch(&link, out, n);
        if (r < 0)
                fail("link send", r);
        vmq_link_notify(&link);
        return (uint64_t)r;
}

static int msgrate(void) {
        char mode[16] = "exitless";
        uint64_t size = vmq_arg_u64("size", 64), count = vmq_arg_u64("count", 200000);
        uint64_t reps = vmq_arg_u64("reps", 5), warmup = vmq_arg_u64("warmup", 1), *s;
        uint8_t data[VMQ_INLINE_MAX];
        bool exitless;

        vmq_arg_str("mode", mode, sizeof(mode));
        if (!strcmp(mode, "exit"))
                exitless = false;
        else if (!strcmp(mode, "exitless"))
                exitless = true;
        else if (!strcmp(mode, "link"))
                exitless = false, use_link = true;
        else {
                vmq_printf("bench-tx: failed bad mode=%s\n", mode);
                return 2;
        }
        if (size > VMQ_INLINE_MAX || !count || !reps) {
                vmq_printf("bench-tx: failed bad size=%lu count=%lu reps=%lu\n", size, count, reps);
                return 2;
        }
        if (exitless && !vmq_post_capacity()) {
                vmq_printf("bench-tx: failed no post ring\n");
                return 1;
        }
        memset(data, 0x5a, sizeof(data));
        s = alloc_samples(reps);
        wait_hello();
        for (uint64_t r = 0; r < warmup + reps; r++) {
                uint64_t t0 = vmq_rdtsc();

                for (uint64_t m = 0; m < count;) {
                        if (use_link) {
                                uint64_t k = link_batch(data, size, m, count - m, count);

                                if (!k)
                                        vmq_cpu_relax(); /* ring full: the receiver is behind */
                                m += k;
                        } else if (exitless) {
                                uint64_t k = post_batch(VMQ_OP_INLINE, data, size, 0, m, count - m,
                                                        count);

                                if (!k)
                                        vmq_cpu_relax(); /* ring full: the poller is behind */
                                m += k;
                        } else {
                                int e = vmq_send_inline(channel, data, size, stream_tag(m, count));

                                if (e == -VMQ_E_AGAIN) {
                                        vmq_cpu_relax();
                                        continue;
                                }
                                if (e < 0)
                                        fail("send", e);
                                m++;
                        }
                }
                if (use_link)
                        link_wait_reply(BENCH_TAG_ACK);
                else
                        wait_reply(BENCH_TAG_ACK);
                if (r >= warmup)
                        s[r - warmup] = vmq_tsc_to_ns(vmq_rdtsc() - t0);
        }
        vmq_sort_u64(s, reps);
        {
                uint64_t ns = s[pct(reps, 50)];
                uint64_t mps = ns ? count * 1000000000ull / ns : 0;

                vmq_printf("BENCHDATA msgrate_mps_p50 %lu\n", mps);
                vmq_printf("BENCHDATA msgrate_messages %lu\n", count * (warmup + reps));
        }
        return 0;
}

static int exit_rt(void) {
        uint64_t iters = vmq_arg_u64("iters", 100000), batch = vmq_arg_u64("batch", 100), n;
        uint64_t *s;

        if (!batch || iters < batch) {
                vmq_printf("bench-tx: failed bad iters=%lu batch=%lu\n", iters, batch);
                return 2;
        }
        n = iters / batch;
        s = alloc_samples(n);
        for (uint64_t k = 0; k < 10; k++) /* warm up */
                vmq_nop();
        for (uint64_t b = 0; b < n; b++) {
                uint64_t t0 = vmq_rdtsc();

                for (uint64_t k = 0; k < batch; k++)
                        vmq_nop();
                s[b] = (vmq_rdtsc() - t0) / batch;
        }
        vmq_sort_u64(s, n);
        vmq_printf("BENCHDATA exit_roundtrip_ns %lu\n", vmq_tsc_to_ns(s[pct(n, 50)]));
        vmq_printf("BENCHDATA exit_roundtrip_p99_ns %lu\n", vmq_tsc_to_ns(s[pct(n, 99)]));
        return 0;
}

static int memcpy_bw(void) {
        uint64_t size = vmq_arg_u64("size", 2u << 20), reps = vmq_arg_u64("reps", 50);
        uint64_t pages = (size + VMQ_PAGE_SIZE - 1) / VMQ_PAGE_SIZE, *s;
        uint8_t *a, *b;

        if (!size || !reps) {
                vmq_printf("bench-tx: failed bad size=%lu reps=%lu\n", size, reps);
                return 2;
        }
        s = alloc_samples(reps);
        a = vmq_alloc_pages(pages);
        b = vmq_alloc_pages(pages);
        if (!a || !b) {
                vmq_printf("bench-tx: failed no memory for 2 x size=%lu\n", size);
                return 1;
        }
        memset(a, 3, size);
        memcpy(b, a, size);
        for (uint64_t r = 0; r < reps; r++) {
                uint64_t t0 = vmq_rdtsc();

                memcpy(b, a, size);
                s[r] = vmq_rdtsc() - t0;
        }
        vmq_sort_u64(s, reps);
        print_gbps("memcpy_gbps_p50", size, vmq_tsc_to_ns(s[pct(reps, 50)]));
        return 0;
}

/* Makes the monitor carry out what was posted (doorbells are off): its
 * poller does by itself while it polls this VM, which it says with
 * vmcs.post_doorbell = 0 (read after a full barrier, the notification rule
 * of core/vmq-abi.h); otherwise one VMQ_HC_FLUSH drains the ring now. */
static void drain_posted(void) {
        int r;

        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (!__atomic_load_n(&vmq_vmcs()->post_doorbell, __ATOMIC_RELAXED))
                return;
        r = vmq_flush();
        if (r < 0)
                fail("flush", r);
}

/* throughput batch=N: posts up to `left` page messages of the stream (from
 * message `first` of `count`) in one burst, all of the same run, and has
 * them drained; returns how many went.  0: the ring is full, so its head
 * waits for room at the receiver (every burst was drained, and only a
 * stall leaves requests behind); the monitor drains the ring again when
 * the receiver makes room (at its RELEASE or WAIT), and another flush
 * meanwhile would be an exit for nothing.  A request that fails comes back
 * as an ERROR descriptor, taken before the next burst (no reply can be
 * waiting: the ACK comes after the last burst). */
static uint64_t post_pages_burst(const uint8_t *buf, uint64_t size, uint32_t flags, uint64_t first,
                                 uint64_t left, uint64_t count) {
        struct vmq_desc d;
        uint64_t k;

        while (vmq_try_recv(&d) == 0)
                take_stray(&d);
        k = post_batch(VMQ_OP_PAGE, buf, size, flags, first, left, count);
        if (k)
                drain_posted();
        return k;
}

static int throughput(void) {
        char method[16] = "auto";
        uint64_t size = vmq_arg_u64("size", 64u << 10), total = vmq_arg_u64("total", 64u << 20);
        uint64_t reps = vmq_arg_u64("reps", 5), warmup = vmq_arg_u64("warmup", 1), n, *s;
        uint64_t batch = vmq_arg_u64("batch", 1);
        uint32_t flags;
        bool huge;
        uint8_t *buf = NULL;

        vmq_arg_str("method", method, sizeof(method));
        if (!size || size > UINT32_MAX || !reps || !batch) {
                vmq_printf("bench-tx: failed bad size=%lu reps=%lu batch=%lu\n", size, reps, batch);
                return 2;
        }
        if (batch > 1 && !vmq_post_capacity()) {
                vmq_printf("bench-tx: failed no post ring\n");
                return 1;
        }
        /* batch=N: drain_posted() decides, once per burst */
        if (batch > 1)
                vmq_set_post_doorbell(false);
        if (!strcmp(method, "copy"))
                flags = VMQ_REQ_F_COPY, huge = false;
        else if (!strcmp(method, "flip4k"))
                flags = VMQ_REQ_F_FLIP, huge = false;
        else if (!strcmp(method, "flip2m"))
                flags = VMQ_REQ_F_FLIP, huge = true;
        else if (!strcmp(method, "auto"))
                flags = 0, huge = false;
        else {
                vmq_printf("bench-tx: failed bad method=%s\n", method);
                return 2;
        }
        if (!strcmp(method, "auto")) {
                /* The SDK's adaptive placement, then the channel's policy. */
                buf = vmq_alloc_buffer(size, &huge);
                if (!buf) {
                        vmq_printf("bench-tx: failed no memory for size=%lu\n", size);
                        return 1;
                }
        } else if (huge) {
                buf = vmq_alloc_huge((size + VMQ_HUGE_PAGE_SIZE - 1) / VMQ_HUGE_PAGE_SIZE);
                if (!buf) {
                        vmq_printf("bench-tx: failed no 2 MiB frames for size=%lu (have %zu)\n",
                                   size, vmq_huge_free_frames());
                        return 1;
                }
        }
        if (!huge && strcmp(method, "auto")) {
                buf = vmq_alloc_pages((size + VMQ_PAGE_SIZE - 1) / VMQ_PAGE_SIZE);
                if (!buf) {
                        vmq_printf("bench-tx: failed no memory for size=%lu\n", size);
                        return 1;
                }
        }
        memset(buf, 7, size);
        n = (total + size - 1) / size;
        if (!n)
                n = 1;
        s = alloc_samples(reps);
        wait_hello();
        for (uint64_t r = 0; r < warmup + reps; r++) {
                uint64_t t0 = vmq_rdtsc();

                for (uint64_t m = 0; m < n;) {
                        if (batch > 1) {
                                uint64_t k = post_pages_burst(buf, size, flags, m,
                                                              n - m < batch ? n - m : batch, n);

                                if (!k)
                                        vmq_cpu_relax(); /* the receiver is behind */
                                m += k;
                        } else {
                                send_pages(buf, size, flags, stream_tag(m, n));
                                m++;
                        }
                }
                wait_reply(BENCH_TAG_ACK);
                if (r >= warmup)
                        s[r - warmup] = vmq_tsc_to_ns(vmq_rdtsc() - t0);
        }
        vmq_sort_u64(s, reps);
        print_gbps("throughput_gbps_p50", n * size, s[pct(reps, 50)]);
        vmq_printf("BENCHDATA throughput_bytes %lu\n", n * size);
        vmq_printf("BENCHDATA throughput_messages %lu\n", n);
        return 0;
}

int vmq_main(void) {
        char test[16] = "latency";
        int r;

        vmq_arg_str("test", test, sizeof(test));
        post = vmq_arg_u64("post", 0) != 0;
        vmq_set_spin_ns(vmq_arg_u64("spin_us", 200) * 1000);
        vmq_printf("bench-tx: start vm=%u name=%s test=%s\n", vmq_self()->vm_id, vmq_self()->name,
                   test);
        if (!strcmp(test, "latency"))
                r = latency();
        else if (!strcmp(test, "throughput"))
                r = throughput();
        else if (!strcmp(test, "msgrate"))
                r = msgrate();
        else if (!strcmp(test, "exit"))
                r = exit_rt();
        else if (!strcmp(test, "memcpy"))
                r = memcpy_bw();
        else {
                vmq_printf("bench-tx: failed bad test=%s\n", test);
                return 2;
        }
        if (r)
                return r;
        if (channel && use_link) {
                link_send("done", 4, VMQ_TAG_DONE);
        } else if (channel) {
                post = false;
                while (vmq_post_pending() > 0) /* the stream goes first */
                        (void)vmq_flush();
                send_inline("done", 4, VMQ_TAG_DONE);
        }
        vmq_printf("bench-tx: done test=%s\n", test);
        return 0;
}
