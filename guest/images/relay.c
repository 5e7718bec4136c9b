/* SPDX-License-Identifier: MIT */
/*
 * relay: forwards between two channels.
 *
 * The first two HELLOs name channels A and B.  Every INLINE or PAGE message
 * that arrives on A is sent on B, and the other way round, with the same
 * data, length and tag.  Pages are moved on with the flags of transfer=
 * (default flip: the frames themselves travel on) and the receive slots are
 * then released; a run received as a read-only share is copied into heap
 * pages first.  Messages that arrive before both channels are known are
 * held back (up to 64) and forwarded once they are.
 *
 * Arguments:
 *   count=N                  exit 0 after forwarding N messages (0: never)
 *   transfer=flip|copy|auto  flags for forwarded pages (default flip)
 *
 * Console:
 *   relay: start vm=<id> name=<name> count=<N> transfer=<t>
 *   relay: hello channel=<id> peer=<vm_id> name=<name> uuid=<uuid>
 *   relay: channels a=<id> b=<id>
 *   relay: close channel=<id>
 *   relay: forward failed from=<id> to=<id> error=<NAME>
 *   relay: done count=<N>
 */
#include "guest/images/image.h"

#define HELD_MAX 64u

static struct vmq_desc held[HELD_MAX];
static unsigned nheld;

int vmq_main(void) {
        uint64_t count = vmq_arg_u64("count", 0), done = 0;
        struct image_pending pending = {0};
        char transfer[16] = "flip";
        uint32_t ch[2] = {0, 0};
        unsigned nch = 0, replay = 0;
        struct vmq_desc d;
        int flags, r;

        vmq_arg_str("transfer", transfer, sizeof(transfer));
        flags = image_transfer_flags(transfer, false);
        vmq_printf("relay: start vm=%u name=%s count=%lu transfer=%s\n", vmq_self()->vm_id,
                   vmq_self()->name, count, transfer);
        if (flags < 0) {
                vmq_printf("relay: bad transfer=%s (flip, copy or auto)\n", transfer);
                return 2;
        }

        while (!count || done < count) {
                uint32_t to;

                if (nch == 2 && replay < nheld) {
                        d = held[replay++];
                        if (replay == nheld)
                                replay = nheld = 0;
                } else {
                        r = vmq_recv(&d, pending.n ? 1000000 : UINT64_MAX);
                        if (pending.n)
                                image_release_pending(&pending);
                        if (r == -VMQ_E_TIMEDOUT)
                                continue;
                        if (r < 0) {
                                vmq_printf("relay: recv failed error=%s\n", vmq_strerror(r));
                                return 1;
                        }
                }
                if (d.kind == VMQ_DESC_HELLO) {
                        image_print_hello("relay", &d);
                        if (nch < 2 && (nch == 0 || ch[0] != d.channel)) {
                                ch[nch++] = d.channel;
                                if (nch == 2)
                                        vmq_printf("relay: channels a=%u b=%u\n", ch[0], ch[1]);
                        }
                        continue;
                }
                if (d.kind != VMQ_DESC_INLINE && d.kind != VMQ_DESC_PAGE) {
                        image_print_other("relay", &d);
                        continue;
                }
                if (nch < 2) {
                        if (nheld < HELD_MAX) {
                                held[nheld++] = d;
                                continue;
                        }
                        vmq_printf("relay: dropped channel=%u tag=0x%lx: no second channel\n",
                                   d.channel, d.tag);
                        if (d.kind == VMQ_DESC_PAGE)
                                image_release(&pending, &d);
                        continue;
                }
                if (d.channel == ch[0])
                        to = ch[1];
                else if (d.channel == ch[1])
                        to = ch[0];
                else
                        to = 0;
                if (!to) {
                        r = -VMQ_E_NOCHAN;
                        if (d.kind == VMQ_DESC_PAGE)
                                image_release(&pending, &d);
                } else if (d.kind == VMQ_DESC_INLINE) {
                        r = image_send_inline(to, d.data, d.len, d.tag);
                } else {
                        r = image_forward_pages(&pending, to, &d, (uint32_t)flags);
                }
                if (r < 0)
                        vmq_printf("relay: forward failed from=%u to=%u error=%s\n", d.channel, to,
                                   vmq_strerror(r));
                done++;
        }
        vmq_printf("relay: done count=%lu\n", done);
        return 0;
}
