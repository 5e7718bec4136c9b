/* SPDX-License-Identifier: MIT */
/*
 * hostile: sends one malformed request of every class and checks that the
 * monitor refuses each with exactly the right error code, then that it still
 * accepts a good one.
 *
 * The monitor checks a request in this order: ABI version, forged source,
 * op / flags / reserved, channel, inline length, then for pages region
 * (range), alignment, run length, ownership, and finally room at the
 * receiver.  Each check below is malformed in exactly one way, page runs use
 * VMQ_REQ_F_COPY (so a monitor that wrongly accepted one would move nothing
 * of ours).
 *
 * Arguments:
 *   peer=<ch>     a channel this VM is an end of, whose other end is well
 *                 behaved (required)
 *   foreign=<ch>  a channel between two other VMs (optional)
 *   full=<ch>     a channel of this VM whose other end never dequeues
 *                 (optional)
 * It first waits (up to 5 s each) for the HELLOs of peer and full.
 *
 * Console, one line per check, then the summary; the exit code is <m>:
 *   hostile: start vm=<id> name=<name> peer=<ch> foreign=<ch> full=<ch>
 *   hostile: <check> ok
 *   hostile: <check> FAIL got=<n> want=<n>
 *   hostile: <check> skipped (<why>)
 *   hostile: full accepted=<n>
 *   hostile: checks=<n> failed=<m>
 */
#include "guest/images/image.h"

#define HOSTILE_TAG 0x686f7374696c65ull /* "hostile" */
#define WAIT_NS 5000000000ull

static unsigned checks, failed;

static void check(const char *name, int64_t got, int64_t want) {
        checks++;
        if (got == want) {
                vmq_printf("hostile: %s ok\n", name);
        } else {
                failed++;
                vmq_printf("hostile: %s FAIL got=%ld want=%ld\n", name, got, want);
        }
}

static void skipped(const char *name, const char *why) {
        vmq_printf("hostile: %s skipped (%s)\n", name, why);
}

static struct vmq_request inline_req(uint32_t ch) {
        struct vmq_request q;

        vmq_request_init(&q);
        q.op = VMQ_OP_INLINE;
        q.channel = ch;
        q.len = 7;
        memcpy(q.data, "hostile", 7);
        q.tag = HOSTILE_TAG;
        return q;
}

static struct vmq_request page_req(uint32_t ch, uint64_t gpa, uint32_t len) {
        struct vmq_request q;

        vmq_request_init(&q);
        q.op = VMQ_OP_PAGE;
        q.flags = VMQ_REQ_F_COPY;
        q.channel = ch;
        q.gpa = gpa;
        q.len = len;
        q.tag = HOSTILE_TAG;
        return q;
}

/* Waits for the HELLO of channel ch. */
static bool wait_hello(uint32_t ch) {
        struct vmq_identity id;
        struct vmq_desc d;
        uint64_t start = vmq_clock_ns();

        while (vmq_peer(ch, &id) < 0) {
                if (vmq_clock_ns() - start > WAIT_NS)
                        return false;
                (void)vmq_recv(&d, WAIT_NS / 10);
        }
        return true;
}

int vmq_main(void) {
        uint32_t peer = (uint32_t)vmq_arg_u64("peer", 0);
        uint32_t foreign = (uint32_t)vmq_arg_u64("foreign", 0);
        uint32_t full = (uint32_t)vmq_arg_u64("full", 0);
        const struct vmq_vmcs_layout *l = &vmq_vmcs()->layout;
        uint64_t ram = l->ram_size, rx_slot = l->rx_gpa + l->rx_size - VMQ_PAGE_SIZE, hole;
        uint8_t *heap = vmq_alloc_pages(2);
        struct vmq_request q;
        struct vmq_desc d;
        int r;

        vmq_printf("hostile: start vm=%u name=%s peer=%u foreign=%u full=%u\n", vmq_self()->vm_id,
                   vmq_self()->name, peer, foreign, full);
        if (!peer || !heap || !l->rx_size) {
                vmq_printf("hostile: cannot run: %s\n", !peer   ? "no peer= argument"
                                                        : !heap ? "no heap"
                                                                : "no receive window");
                vmq_printf("hostile: checks=0 failed=1\n");
                return 1;
        }
        memset(heap, 0x5a, 2 * VMQ_PAGE_SIZE);
        if (!wait_hello(peer))
                vmq_printf("hostile: no HELLO on peer=%u (going on)\n", peer);
        if (full && !wait_hello(full))
                vmq_printf("hostile: no HELLO on full=%u (going on)\n", full);

        /* An unknown hypercall number. */
        check("unknown-hypercall", vmq_hypercall(0x40), -VMQ_E_NOSYS);

        q = inline_req(peer);
        q.abi = 99;
        check("abi-version", vmq_send_request(&q), -VMQ_E_VERSION);

        q = inline_req(peer);
        q.src_vm = vmq_self()->vm_id + 1000;
        check("forged-source", vmq_send_request(&q), -VMQ_E_FORGED);

        q = inline_req(peer);
        q.src_vm = vmq_self()->vm_id;
        check("own-source", vmq_send_request(&q), 0);

        q = inline_req(peer);
        q.op = 77;
        check("bad-op", vmq_send_request(&q), -VMQ_E_INVAL);

        q = page_req(peer, (uintptr_t)heap, VMQ_PAGE_SIZE);
        q.flags = 0x80;
        check("unknown-flag", vmq_send_request(&q), -VMQ_E_INVAL);

        q = page_req(peer, (uintptr_t)heap, VMQ_PAGE_SIZE);
        q.flags = VMQ_REQ_F_COPY | VMQ_REQ_F_FLIP;
        check("copy-and-flip", vmq_send_request(&q), -VMQ_E_INVAL);

        q = page_req(peer, (uintptr_t)heap, VMQ_PAGE_SIZE);
        q.flags = VMQ_REQ_F_SHARE | VMQ_REQ_F_FLIP;
        check("share-and-flip", vmq_send_request(&q), -VMQ_E_INVAL);

        q = inline_req(peer);
        q.reserved = 1;
        check("reserved", vmq_send_request(&q), -VMQ_E_INVAL);

        q = inline_req(0x7fffffff);
        check("no-channel", vmq_send_request(&q), -VMQ_E_NOCHAN);

        if (foreign) {
                q = inline_req(foreign);
                check("foreign-channel", vmq_send_request(&q), -VMQ_E_NOCHAN);
        } else {
                skipped("foreign-channel", "no foreign= argument");
        }

        q = inline_req(peer);
        q.len = 200;
        check("inline-len", vmq_send_request(&q), -VMQ_E_LEN);

        q = page_req(peer, (uintptr_t)heap, 0);
        check("page-len-zero", vmq_send_request(&q), -VMQ_E_LEN);

        q = page_req(peer, (uintptr_t)heap + 8, VMQ_PAGE_SIZE);
        check("page-misaligned", vmq_send_request(&q), -VMQ_E_ALIGN);

        /* A hole in the address space: between RAM and the receive window. */
        hole = ram <= 0x30000000 ? 0x30000000 : (ram + VMQ_HUGE_PAGE_SIZE - 1) & ~0x1fffffull;
        if (hole < VMQ_RX_GPA) {
                q = page_req(peer, hole, VMQ_PAGE_SIZE);
                check("page-range", vmq_send_request(&q), -VMQ_E_RANGE);
        } else {
                skipped("page-range", "RAM fills the space below the receive window");
        }

        q = page_req(peer, VMQ_VMCS_GPA, VMQ_PAGE_SIZE);
        check("page-vmcs", vmq_send_request(&q), -VMQ_E_NOTOWNED);

        q = page_req(peer, rx_slot, VMQ_PAGE_SIZE);
        check("page-rx-empty", vmq_send_request(&q), -VMQ_E_NOTOWNED);

        q = page_req(peer, ram - VMQ_PAGE_SIZE, 2 * VMQ_PAGE_SIZE);
        check("page-run-beyond", vmq_send_request(&q), -VMQ_E_LEN);

        check("release-heap", vmq_release(heap, VMQ_PAGE_SIZE), -VMQ_E_RANGE);
        check("release-rx-empty", vmq_release((void *)(uintptr_t)rx_slot, VMQ_PAGE_SIZE),
              -VMQ_E_NOTOWNED);
        check("release-misaligned", vmq_release((void *)(uintptr_t)(rx_slot + 8), VMQ_PAGE_SIZE),
              -VMQ_E_ALIGN);
        check("release-len-zero", vmq_release((void *)(uintptr_t)rx_slot, 0), -VMQ_E_LEN);

        /* A console buffer outside guest memory. */
        {
                struct vmq_request c;

                vmq_request_init(&c);
                c.gpa = hole;
                c.len = 16;
                check("console-range", vmq_hypercall_req(VMQ_HC_CONSOLE, &c), -VMQ_E_RANGE);
        }

        /* A posted request with a bad version: an ERROR descriptor. */
        q = inline_req(peer);
        q.abi = 99;
        q.tag = HOSTILE_TAG + 1;
        r = vmq_post_request(&q);
        if (r < 0) {
                check("posted-version", r, 0);
        } else {
                int64_t got = -1000;
                uint64_t start;

                check("posted-flush", vmq_flush(), 1);
                start = vmq_clock_ns();
                while (vmq_clock_ns() - start < WAIT_NS) {
                        if (vmq_recv(&d, WAIT_NS / 10) < 0)
                                continue;
                        if (d.kind == VMQ_DESC_ERROR && d.tag == HOSTILE_TAG + 1) {
                                got = d.error;
                                break;
                        }
                        if (d.kind == VMQ_DESC_PAGE)
                                vmq_release(vmq_desc_pages(&d), d.len);
                }
                check("posted-version", got, VMQ_E_VERSION);
        }

        /* Fill a receiver that never dequeues: AGAIN must come, and nothing
         * accepted may be lost (the host counts what arrives). */
        if (full) {
                uint64_t accepted = 0;

                r = 0;
                for (unsigned tries = 0; tries < 100000; tries++) {
                        r = vmq_send_inline(full, "full", 4, accepted);
                        if (r != 0)
                                break;
                        accepted++;
                }
                vmq_printf("hostile: full accepted=%lu\n", accepted);
                check("full", r, -VMQ_E_AGAIN);
        } else {
                skipped("full", "no full= argument");
        }

        q = inline_req(peer);
        check("still-works", vmq_send_request(&q), 0);

        vmq_printf("hostile: checks=%u failed=%u\n", checks, failed);
        return (int)failed;
}
