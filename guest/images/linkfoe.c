/* SPDX-License-Identifier: MIT */
/*
 * linkfoe: a hostile end of a channel link (core/vmq-abi.h "Channel
 * links"), for the tests that check that a link's other end and the monitor
 * survive it.  It takes the first HELLO that carries a link and then, by
 * mode=:
 *
 *   scribble  writes impossible indices and lengths into both rings of the
 *             link (its own producer index far ahead, the peer's consumer
 *             index, a slot length past VMQ_LINK_MSG_MAX), kicks the peer
 *             kicks= times (default 1000), then exits 0
 *   sleeper   says once that it sleeps waiting for messages (an odd
 *             cons_wait) and never takes one nor says it again: it sleeps
 *             in the monitor for good
 *
 * Console:
 *   linkfoe: start vm=<id> name=<name> mode=<mode>
 *   linkfoe: hello channel=<id> peer=<vm_id> name=<name> uuid=<uuid>
 *   linkfoe: scribbled kicks=<n> refused=<n>
 *   linkfoe: sleeping
 *   linkfoe: failed <what>           (exit 1)
 */
#include "guest/images/image.h"

int vmq_main(void) {
        char mode[16] = "scribble";
        struct vmq_desc d;
        struct vmq_link l;
        int r;

        vmq_arg_str("mode", mode, sizeof(mode));
        vmq_printf("linkfoe: start vm=%u name=%s mode=%s\n", vmq_self()->vm_id, vmq_self()->name,
                   mode);
        do {
                r = vmq_recv(&d, UINT64_MAX);
                if (r < 0) {
                        vmq_printf("linkfoe: failed recv error=%s\n", vmq_strerror(r));
                        return 1;
                }
        } while (d.kind != VMQ_DESC_HELLO || !(d.flags & VMQ_DESC_F_LINK));
        image_print_hello("linkfoe", &d);
        if (vmq_link_open(&l, &d) < 0) {
                vmq_printf("linkfoe: failed link\n");
                return 1;
        }

        if (!strcmp(mode, "sleeper")) {
                __atomic_store_n(&l.rx_hdr->cons_wait, 1u, __ATOMIC_SEQ_CST);
                vmq_printf("linkfoe: sleeping\n");
                for (;;) {
                        struct vmq_request *m = vmq_mbox();
                        vmq_request_init(m);
                        m->flags = VMQ_WAIT_F_LINKS;
                        m->arg = UINT64_MAX;
                        (void)vmq_hypercall(VMQ_HC_WAIT);
                }
        }
        if (strcmp(mode, "scribble")) {
                vmq_printf("linkfoe: failed bad mode=%s\n", mode);
                return 2;
        }
        uint64_t kicks = vmq_arg_u64("kicks", 1000), refused = 0;
        /* a few good messages first, so that the peer is reading */
        for (int i = 0; i < 4; i++)
                (void)vmq_link_try_send(&l, "ok", 2, 0);
        vmq_link_notify(&l);
        __atomic_store_n(&l.tx[0].len, 0xfffffff0u, __ATOMIC_RELEASE);
        __atomic_store_n(&l.tx_hdr->prod, l.prod + 1000000u, __ATOMIC_RELEASE);
        __atomic_store_n(&l.rx_hdr->cons, 0x80000000u, __ATOMIC_RELEASE);
        __atomic_store_n(&l.rx_hdr->prod_wait, 0xffffffffu, __ATOMIC_RELEASE);
        for (uint64_t i = 0; i < kicks; i++)
                if (vmq_link_kick(d.channel) < 0)
                        refused++;
        vmq_printf("linkfoe: scribbled kicks=%lu refused=%lu\n", kicks, refused);
        return 0;
}
