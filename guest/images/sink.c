/* SPDX-License-Identifier: MIT */
/*
 * sink: counts what arrives and checksums it.
 *
 * Over every message received on any channel, in arrival order, it keeps
 * the message count, the byte count and FNV-1a 64 over the payload bytes
 * (inline data, or bytes [0, len) of a PAGE run, which is then released).
 *
 * Control messages (INLINE, not counted):
 *   tag VMQ_TAG_REPORT  reply on that channel, tag VMQ_TAG_REPORT, payload
 *                       struct { uint64_t count, bytes, checksum } (the
 *                       totals so far; little-endian)
 *   tag VMQ_TAG_DONE    end of a stream (sent by `source`, payload its own
 *                       {count, bytes, checksum}): print the totals
 *
 * Arguments:
 *   expect=N   also print the totals when the count reaches N (0: never)
 *   exit=1     exit 0 right after printing the totals (default 0: go on)
 *
 * Console:
 *   sink: start vm=<id> name=<name> expect=<N> exit=<0|1>
 *   sink: hello channel=<id> peer=<vm_id> name=<name> uuid=<uuid>
 *   sink: close channel=<id>
 *   sink: channel=<id> count=<n> bytes=<b> checksum=<hex16>
 *   sink: mismatch channel=<id> source-count=<n> source-bytes=<b> source-checksum=<hex16>
 *         (after a DONE whose payload differs from the totals)
 */
#include "guest/images/image.h"

struct report {
        uint64_t count, bytes, checksum;
};

static struct report total = {.checksum = VMQ_FNV_INIT};

static void print_totals(uint32_t ch) {
        vmq_printf("sink: channel=%u count=%lu bytes=%lu checksum=%016lx\n", ch, total.count,
                   total.bytes, total.checksum);
}

int vmq_main(void) {
        uint64_t expect = vmq_arg_u64("expect", 0), exit_after = vmq_arg_u64("exit", 0);
        struct image_pending pending = {0};
        struct vmq_desc d;
        int r;

        vmq_printf("sink: start vm=%u name=%s expect=%lu exit=%lu\n", vmq_self()->vm_id,
                   vmq_self()->name, expect, exit_after);
        for (;;) {
                r = vmq_recv(&d, pending.n ? 1000000 : UINT64_MAX);
                if (pending.n)
                        image_release_pending(&pending);
                if (r == -VMQ_E_TIMEDOUT)
                        continue;
                if (r < 0) {
                        vmq_printf("sink: recv failed error=%s\n", vmq_strerror(r));
                        return 1;
                }
                switch (d.kind) {
                case VMQ_DESC_HELLO:
                        image_print_hello("sink", &d);
                        continue;
                case VMQ_DESC_INLINE:
                        if (d.tag == VMQ_TAG_REPORT) {
                                r = image_send_inline(d.channel, &total, sizeof(total),
                                                      VMQ_TAG_REPORT);
                                if (r < 0)
                                        vmq_printf("sink: report failed channel=%u error=%s\n",
                                                   d.channel, vmq_strerror(r));
                                continue;
                        }
                        if (d.tag == VMQ_TAG_DONE) {
                                struct report src;

                                print_totals(d.channel);
                                if (d.len >= sizeof(src)) {
                                        memcpy(&src, d.data, sizeof(src));
                                        if (memcmp(&src, &total, sizeof(src)))
                                                vmq_printf("sink: mismatch channel=%u "
                                                           "source-count=%lu source-bytes=%lu "
                                                           "source-checksum=%016lx\n",
                                                           d.channel, src.count, src.bytes,
                                                           src.checksum);
                                }
                                if (exit_after)
                                        return 0;
                                continue;
                        }
                        total.checksum = vmq_fnv1a(total.checksum, d.data, d.len);
                        break;
                case VMQ_DESC_PAGE:
                        total.checksum = vmq_fnv1a(total.checksum, vmq_desc_pages(&d), d.len);
                        r = image_release(&pending, &d);
                        if (r < 0)
                                vmq_printf("sink: release failed gpa=0x%lx len=%u error=%s\n",
                                           d.gpa, d.len, vmq_strerror(r));
                        break;
                default:
                        image_print_other("sink", &d);
                        continue;
                }
                total.count++;
                total.bytes += d.len;
                if (expect && total.count == expect) {
                        print_totals(d.channel);
                        if (exit_after)
                                return 0;
                }
        }
}
