/* SPDX-License-Identifier: MIT */
/*
 * source: sends a deterministic stream and checksums it.
 *
 * Waits for the first HELLO and sends on that channel `count` messages of
 * `size` bytes; message i holds the bytes (uint8_t)(i * 131 + j * 7 + 1),
 * j in [0, size).  Up to VMQ_INLINE_MAX bytes go inline, larger messages as
 * a page run (heap pages, or own 2 MiB frames when size >= 2 MiB and the VM
 * has them).  Then it sends INLINE tag VMQ_TAG_DONE with payload
 * struct { uint64_t count, bytes, checksum } and prints the same figures;
 * checksum is FNV-1a 64 over every payload byte in message order.  Nothing
 * is lost: a full receiver is waited for.
 *
 * Arguments:
 *   count=N                       messages (default 1000)
 *   size=S                        bytes per message (default 64)
 *   transfer=copy|flip|share|auto page flags (default auto: channel policy)
 *   post=0|1                      immediate sends, or posted + doorbell
 *   window=W                      immediate mode towards a guest: at most W
 *                                 messages in flight (default 32, 0: no
 *                                 limit), see below
 *   window_bytes=B                and at most B payload bytes (default 4M)
 *
 * Pacing.  An immediate send that finds the receiver full is refused with
 * VMQ_E_AGAIN, which the monitor counts as an error.  To stay clear of that,
 * towards a guest peer the source sends INLINE tag VMQ_TAG_REPORT after
 * `window` messages (or before exceeding `window_bytes`) and waits for the
 * peer's reply (sink answers reports; echo reflects them): the reply proves
 * the peer consumed everything before it.  The same round trip guards
 * buffer reuse with transfer=share (the peer must have released a shared
 * run before it is rewritten), in both modes.  The host as peer is never
 * sent reports (it always gets copies).  Posted requests that find the
 * receiver full wait in the post ring (no error), so post=1 needs no window;
 * buffers are reused only once the monitor carried their request out.
 *
 * Console:
 *   source: start vm=<id> name=<name> count=<N> size=<S> transfer=<t> post=<0|1>
 *   source: hello channel=<id> peer=<vm_id> name=<name> uuid=<uuid>
 *   source: channel=<id> count=<n> bytes=<b> checksum=<hex16>
 *   source: failed ... (exit code 1)
 */
#include "guest/images/image.h"

#define MAX_BUFS 16u
#define REPORT_TIMEOUT_NS 10000000000ull

struct report {
        uint64_t count, bytes, checksum;
};

static uint32_t channel;
static bool peer_is_host;
static uint64_t reports_seen;

static void pattern(uint64_t i, uint8_t *buf, size_t len) {
        for (size_t j = 0; j < len; j++)
                buf[j] = (uint8_t)(i * 131 + j * 7 + 1);
}

/* Handles one descriptor of our own queue; exits on fatal ones. */
static void handle(const struct vmq_desc *d) {
        switch (d->kind) {
        case VMQ_DESC_PAGE: /* e.g. an echo reflecting our pages */
                vmq_release(vmq_desc_pages(d), d->len);
                break;
        case VMQ_DESC_INLINE:
                if (d->channel == channel && d->tag == VMQ_TAG_REPORT)
                        reports_seen++;
                break;
        case VMQ_DESC_ERROR:
                vmq_printf("source: failed posted request tag=%lu error=%s\n", d->tag,
                           vmq_strerror(d->error));
                vmq_exit(1);
        case VMQ_DESC_CLOSE:
                if (d->channel == channel) {
                        vmq_printf("source: failed channel=%u closed\n", channel);
                        vmq_exit(1);
                }
                break;
        default:
                break;
        }
}

/* Drains our queue without blocking. */
static void pump(void) {
        struct vmq_desc d;

        while (vmq_try_recv(&d) == 0)
                handle(&d);
}

/* Waits until at most k posted requests are outstanding. */
static void wait_posts(uint32_t k) {
        uint64_t spins = 0;

        while (vmq_post_pending() > k) {
                pump();
                /* The monitor retries a stalled ring when the receiver makes
                 * room; an occasional flush is the safety net. */
                if (++spins % 64 == 0)
                        vmq_flush();
                else
                        vmq_delay_ns(IMAGE_RETRY_NS);
        }
}

/* Sends a REPORT request and waits for the reply.  Returns false when the
 * peer does not answer. */
static bool barrier(bool post) {
        uint64_t want = reports_seen + 1;
        struct vmq_desc d;
        int r;

        if (post) {
                while ((r = vmq_post_inline(channel, "sync", 4, VMQ_TAG_REPORT)) == -VMQ_E_AGAIN)
                        wait_posts(vmq_post_capacity() / 2);
                vmq_doorbell();
        } else {
                while ((r = vmq_send_inline(channel, "sync", 4, VMQ_TAG_REPORT)) == -VMQ_E_AGAIN) {
                        pump();
                        vmq_delay_ns(IMAGE_RETRY_NS);
                }
        }
        if (r < 0) {
                vmq_printf("source: failed report request error=%s\n", vmq_strerror(r));
                vmq_exit(1);
        }
        while (reports_seen < want) {
                r = vmq_recv(&d, REPORT_TIMEOUT_NS);
                if (r == -VMQ_E_TIMEDOUT) {
                        vmq_printf("source: peer does not answer reports; pacing off\n");
                        return false;
                }
                if (r < 0) {
                        vmq_printf("source: failed recv error=%s\n", vmq_strerror(r));
                        vmq_exit(1);
                }
                handle(&d);
        }
        return true;
}

static void send_one(bool post, bool page, const void *p, size_t len, uint32_t flags,
                     uint64_t tag) {
        int r;

        for (;;) {
                if (post)
                        r = page ? vmq_post_pages(channel, p, len, flags, tag)
                                 : vmq_post_inline(channel, p, len, tag);
                else
                        r = page ? vmq_send_pages(channel, p, len, flags, tag)
                                 : vmq_send_inline(channel, p, len, tag);
                if (r != -VMQ_E_AGAIN && r != -VMQ_E_BUSY)
                        break;
                pump();
                vmq_delay_ns(IMAGE_RETRY_NS);
        }
        if (r < 0) {
                vmq_printf("source: failed send tag=%lu len=%zu error=%s\n", tag, len,
                           vmq_strerror(r));
                vmq_exit(1);
        }
        if (post)
                vmq_doorbell();
}

int vmq_main(void) {
        uint64_t count = vmq_arg_u64("count", 1000), size = vmq_arg_u64("size", 64);
        uint64_t post = vmq_arg_u64("post", 0), window = vmq_arg_u64("window", 32);
        uint64_t window_bytes = vmq_arg_u64("window_bytes", 4u << 20);
        uint64_t in_flight = 0, in_flight_bytes = 0;
        struct report rep = {.checksum = VMQ_FNV_INIT};
        char transfer[16] = "auto";
        uint8_t *bufs[MAX_BUFS], small[VMQ_INLINE_MAX];
        size_t nbufs = 1, run = 0;
        bool page = size > VMQ_INLINE_MAX, huge = false, share, pace;
        struct vmq_desc d;
        int flags, r;

        vmq_arg_str("transfer", transfer, sizeof(transfer));
        flags = image_transfer_flags(transfer, true);
        vmq_printf("source: start vm=%u name=%s count=%lu size=%lu transfer=%s post=%lu\n",
                   vmq_self()->vm_id, vmq_self()->name, count, size, transfer, post);
        if (flags < 0) {
                vmq_printf("source: failed bad transfer=%s (copy, flip, share or auto)\n",
                           transfer);
                return 1;
        }
        if (size > UINT32_MAX) {
                vmq_printf("source: failed size=%lu too big\n", size);
                return 1;
        }
        share = flags == VMQ_REQ_F_SHARE;

        /* The first HELLO names our channel. */
        for (;;) {
                r = vmq_recv(&d, UINT64_MAX);
                if (r < 0) {
                        vmq_printf("source: failed recv error=%s\n", vmq_strerror(r));
                        return 1;
                }
                if (d.kind == VMQ_DESC_HELLO)
                        break;
        }
        image_print_hello("source", &d);
        channel = d.channel;
        {
                struct vmq_identity id;

                peer_is_host = vmq_peer(channel, &id) == 0 && id.vm_id == VMQ_HOST_ID;
        }
        pace = !post && !peer_is_host && (window || window_bytes);

        if (page) {
                if (size >= VMQ_HUGE_PAGE_SIZE) {
                        run = (size + VMQ_HUGE_PAGE_SIZE - 1) / VMQ_HUGE_PAGE_SIZE;
                        huge = vmq_huge_free_frames() >= run;
                }
                if (!huge)
                        run = (size + VMQ_PAGE_SIZE - 1) / VMQ_PAGE_SIZE;
                if (post || share) {
                        size_t avail = huge ? vmq_huge_free_frames() : vmq_heap_free_pages();

                        nbufs = avail / run < MAX_BUFS ? avail / run : MAX_BUFS;
                        if (nbufs == 0)
                                nbufs = 1;
                }
                for (size_t k = 0; k < nbufs; k++) {
                        bufs[k] = huge ? vmq_alloc_huge(run) : vmq_alloc_pages(run);
                        if (!bufs[k]) {
                                vmq_printf("source: failed no memory for %zu %s pages\n", run,
                                           huge ? "2M" : "4K");
                                return 1;
                        }
                }
        }

        for (uint64_t i = 0; i < count; i++) {
                uint8_t *buf = page ? bufs[i % nbufs] : small;

                if (pace && in_flight &&
                    ((window && in_flight >= window) ||
                     (window_bytes && in_flight_bytes + size > window_bytes))) {
                        if (!barrier(false))
                                pace = false;
                        in_flight = in_flight_bytes = 0;
                }
                if (page && post)
                        wait_posts((uint32_t)nbufs - 1); /* buf's last request is done */
                if (page && share && !peer_is_host && i && i % nbufs == 0) {
                        if (post)
                                wait_posts(0);
                        barrier(post); /* the peer released what we shared */
                        in_flight = in_flight_bytes = 0;
                }
                pattern(i, buf, size);
                rep.checksum = vmq_fnv1a(rep.checksum, buf, size);
                send_one(post, page, buf, size, (uint32_t)flags, i);
                rep.count++;
                rep.bytes += size;
                in_flight++;
                in_flight_bytes += size;
        }

        if (post)
                wait_posts(0);
        if ((pace || share) && !peer_is_host && rep.count)
                barrier(post); /* room for DONE; shared runs released */
        send_one(post, false, &rep, sizeof(rep), 0, VMQ_TAG_DONE);
        if (post)
                wait_posts(0);
        vmq_printf("source: channel=%u count=%lu bytes=%lu checksum=%016lx\n", channel, rep.count,
                   rep.bytes, rep.checksum);
        return 0;
}
