/* SPDX-License-Identifier: MIT */
/*
 * echo: reflects every message to its sender.
 *
 * INLINE messages go back on the same channel with the same data, length and
 * tag, except INLINE tag VMQ_TAG_DONE: that ends a stream (`source` sends it
 * last and exits), so echo prints "end" and does not reflect it.  Reflecting
 * it would race the sender's exit and be refused with VMQ_E_CLOSED, which
 * the monitor counts as an error of this VM.  PAGE messages: the received run is sent back (same length and tag)
 * with the flags of transfer=, then its receive slots are released (after a
 * flip they hold fresh zeroed frames, still ours).  A run received as a
 * read-only share is copied into heap pages and those are sent.
 *
 * Arguments:
 *   count=N                 exit 0 after N reflected messages (0: never; a
 *                           DONE is not reflected and not counted)
 *   transfer=copy|flip|auto flags for reflected pages (auto: channel policy)
 *
 * Console:
 *   echo: start vm=<id> name=<name> count=<N> transfer=<t>
 *   echo: hello channel=<id> peer=<vm_id> name=<name> uuid=<uuid>
 *   echo: close channel=<id>
 *   echo: end channel=<id>          (a DONE arrived)
 *   echo: reflect failed channel=<id> kind=<inline|page> error=<NAME>
 *   echo: done count=<N>
 */
#include "guest/images/image.h"

int vmq_main(void) {
        uint64_t count = vmq_arg_u64("count", 0), done = 0;
        struct image_pending pending = {0};
        char transfer[16] = "auto";
        struct vmq_desc d;
        int flags, r;

        vmq_arg_str("transfer", transfer, sizeof(transfer));
        flags = image_transfer_flags(transfer, false);
        if (flags < 0) {
                vmq_printf("echo: bad transfer=%s (copy, flip or auto)\n", transfer);
                return 2;
        }
        vmq_printf("echo: start vm=%u name=%s count=%lu transfer=%s\n", vmq_self()->vm_id,
                   vmq_self()->name, count, transfer);

        while (!count || done < count) {
                r = vmq_recv(&d, pending.n ? 1000000 : UINT64_MAX);
                if (pending.n)
                        image_release_pending(&pending);
                if (r == -VMQ_E_TIMEDOUT)
                        continue;
                if (r < 0) {
                        vmq_printf("echo: recv failed error=%s\n", vmq_strerror(r));
                        return 1;
                }
                switch (d.kind) {
                case VMQ_DESC_HELLO:
                        image_print_hello("echo", &d);
                        break;
                case VMQ_DESC_INLINE:
                        if (d.tag == VMQ_TAG_DONE) {
                                vmq_printf("echo: end channel=%u\n", d.channel);
                                break;
                        }
                        r = image_send_inline(d.channel, d.data, d.len, d.tag);
                        if (r < 0)
                                vmq_printf("echo: reflect failed channel=%u kind=inline error=%s\n",
                                           d.channel, vmq_strerror(r));
                        done++;
                        break;
                case VMQ_DESC_PAGE:
                        r = image_forward_pages(&pending, d.channel, &d, (uint32_t)flags);
                        if (r < 0)
                                vmq_printf("echo: reflect failed channel=%u kind=page error=%s\n",
                                           d.channel, vmq_strerror(r));
                        done++;
                        break;
                default:
                        image_print_other("echo", &d);
                        break;
                }
        }
        vmq_printf("echo: done count=%lu\n", done);
        return 0;
}
