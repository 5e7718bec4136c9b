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
 * Instead of an id, peer=guest names the first channel whose HELLO shows a
 * guest at the other end, and full=host the first whose HELLO shows the host
 * (for callers that must create the VM before its channels exist, and so
 * cannot know the ids).  It first waits (up to 5 s each) for the HELLOs of
 * peer and full.
 *
 * Console, one line per check, then the summary; the exit code is <m>:
 *   hostile: start vm=<id> name=<name> args=<args>
 *   hostile: channels peer=<ch> foreign=<ch> full=<ch>
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

/* HELLOs seen: channel and the VM id at its other end. */
static struct { uint32_t channel, vm_id; } hellos[VMQ_PEERS_MAX];
static unsigned nhellos;

static void note(const struct vmq_desc *d) {
        struct vmq_identity id;

        if (d->kind == VMQ_DESC_HELLO && nhellos < VMQ_PEERS_MAX) {
                memcpy(&id, d->data, sizeof(id));
                hellos[nhellos].channel = d->channel;
                hellos[nhellos].vm_id = id.vm_id;
                nhellos++;
        } else if (d->kind == VMQ_DESC_PAGE) {
                vmq_release(vmq_desc_pages(d), d->len);
        }
}

/* Finds a seen HELLO: of channel ch (want_host < 0), or of a channel other
 * than `not` with the host (want_host 1) or a guest (0) at the other end. */
static uint32_t find_hello(uint32_t ch, int want_host, uint32_t not ) {
        for (unsigned i = 0; i < nhellos; i++) {
                if (want_host < 0 ? hellos[i].channel == ch
                                  : hellos[i].channel != not &&(hellos[i].vm_id == VMQ_HOST_ID) ==
                                            (want_host == 1))
                        return hellos[i].channel;
        }
        return 0;
}

/* Resolves the channel argument `key` ("<id>", or "guest" / "host", see
 * above) and waits for its HELLO.  Returns the channel id, 0 when the
 * argument is absent or no fitting HELLO came. */
static uint32_t resolve(const char *key, uint32_t not ) {
        char v[32];
        uint64_t id = 0, start;
        int want_host = -1;
        struct vmq_desc d;
        uint32_t ch;

        if (vmq_arg_str(key, v, sizeof(v)) < 0)
                return 0;
        if (!strcmp(v, "host"))
                want_host = 1;
        else if (!strcmp(v, "guest"))
                want_host = 0;
        else if (vmq_parse_u64(v, &id) < 0 || !id || id > UINT32_MAX) {
                vmq_printf("hostile: bad %s=%s\n", key, v);
                return 0;
        }
        start = vmq_clock_ns();
        while (!(ch = find_hello((uint32_t)id, want_host, not ))) {
                if (vmq_clock_ns() - start > WAIT_NS) {
                        vmq_printf("hostile: no HELLO for %s=%s\n", key, v);
                        return want_host < 0 ? (uint32_t)id : 0;
                }
                if (vmq_recv(&d, WAIT_NS / 10) == 0)
                        note(&d);
        }
        return ch;
}

int vmq_main(void) {
        uint32_t peer, full, foreign = (uint32_t)vmq_arg_u64("foreign", 0);
        const struct vmq_vmcs_layout *l = &vmq_vmcs()->layout;
        uint64_t ram = l->ram_size, rx_slot = l->rx_gpa + l->rx_size - VMQ_PAGE_SIZE, hole;
        uint8_t *heap = vmq_alloc_pages(2);
        struct vmq_request q;
        struct vmq_desc d;
        int r;

        vmq_printf("hostile: start vm=%u name=%s args=%.*s\n", vmq_self()->vm_id, vmq_self()->name,
                   (int)VMQ_ARGS_MAX, vmq_vmcs()->args);
        peer = resolve("peer", 0);
        full = resolve("full", peer);
        vmq_printf("hostile: channels peer=%u foreign=%u full=%u\n", peer, foreign, full);
        if (!peer || !heap || !l->rx_size) {
                vmq_printf("hostile: cannot run: %s\n", !peer   ? "no peer= argument"
                                                        : !heap ? "no heap"
                                                                : "no receive window");
                vmq_printf("hostile: checks=0 failed=1\n");
                return 1;
        }
        memset(heap, 0x5a, 2 * VMQ_PAGE_SIZE);

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

                /* The poller may have taken it already (the SDK rang
                 * the doorbell): either way nothing is pending after. */
                r = vmq_flush();
                check("posted-flush", r >= 0 && vmq_post_pending() == 0, 1);
                start = vmq_clock_ns();
                while (vmq_clock_ns() - start < WAIT_NS) {
                        if (vmq_recv(&d, WAIT_NS / 10) < 0)
                                continue;
                        if (d.kind == VMQ_DESC_ERROR && d.tag == HOSTILE_TAG + 1) {
                                got = d.error;
                                break;
                        }
                        note(&d);
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
