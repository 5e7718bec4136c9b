/* SPDX-License-Identifier: MIT */
/*
 * chaos.elf, mode=witness: a well-behaved guest whose data can be checked.
 *
 * It sends witness payloads (guest/images/chaos.h) on every channel it
 * knows, inline and as pages (copy, flip, auto, share), and checks what
 * arrives from other witnesses and from the host: header, sender id, body,
 * tag sequence, zeroed tails of copies and of inline data.  Pages from chaos
 * peers are read (every page) and released, unchecked.  It exits 0 on
 * SHUTDOWN.  The peer kind comes from the HELLO: VM id 0 is the host, a
 * name that starts with 'w' a witness, anything else chaos.  vCPUs other
 * than 0 only make harmless exits (clock, nop, short waits).
 *
 * Arguments (beside mode= and seed=, see chaos.c): shared=skip.
 * Console:
 *   witness: start vm=<id> seed=<seed>
 *   witness: FAIL <what> ...            (a check failed; it goes on)
 *   witness: done vm=<id> sent=<n> received=<n> verified=<n> failed=<n> unknown=<n>
 */
#include "guest/images/chaos-internal.h"

enum peer_kind { PEER_CHAOS, PEER_WITNESS, PEER_HOST };

#define WCHANS 32u
#define WBUFS 4u
#define WBUF_PAGES 4u
#define SBUFS 4u
#define FAIL_PRINT_MAX 32u

struct wchan {
        bool used;
        uint32_t id, peer;
        enum peer_kind kind;
        uint64_t tx, rx, last;
};

static struct wchan wchans[WCHANS];
static uint64_t wclock;
static uint8_t *wbufs[WBUFS], *sbufs[SBUFS];
static uint32_t slen[SBUFS];
static uint64_t w_sent, w_received, w_verified, w_failed, w_unknown;

static void wfail(const char *what, const struct vmq_desc *d, long detail) {
        w_failed++;
        if (w_failed <= FAIL_PRINT_MAX)
                vmq_printf("witness: FAIL %s vm=%u channel=%u src=%u kind=%u flags=0x%x len=%u "
                           "tag=%lu detail=%ld\n",
                           what, chaos_self_id, d ? d->channel : 0, d ? d->src_vm : 0,
                           d ? d->kind : 0, d ? d->flags : 0, d ? d->len : 0, d ? d->tag : 0,
                           detail);
}

static struct wchan *wfind(uint32_t id) {
        for (unsigned i = 0; i < WCHANS; i++)
                if (wchans[i].used && wchans[i].id == id)
                        return &wchans[i];
        return NULL;
}

static void wnote(const struct vmq_desc *d) {
        struct vmq_identity id;
        struct wchan *c = wfind(d->channel);

        if (d->kind == VMQ_DESC_CLOSE) {
                if (c)
                        c->used = false;
                return;
        }
        if (c) {
                wfail("second-hello", d, 0);
                return;
        }
        /* a free slot, or the one idle the longest */
        c = &wchans[0];
        for (unsigned i = 0; i < WCHANS; i++) {
                if (!wchans[i].used) {
                        c = &wchans[i];
                        break;
                }
                if (wchans[i].last < c->last)
                        c = &wchans[i];
        }
        memcpy(&id, d->data, sizeof(id));
        id.name[VMQ_NAME_MAX - 1] = '\0';
        memset(c, 0, sizeof(*c));
        c->used = true;
        c->id = d->channel;
        c->peer = id.vm_id;
        c->kind = id.vm_id == VMQ_HOST_ID ? PEER_HOST
                  : id.name[0] == 'w'     ? PEER_WITNESS
                                          : PEER_CHAOS;
        c->last = ++wclock;
        if (d->src_vm != id.vm_id)
                wfail("hello-src", d, id.vm_id);
}

/* Checks a payload from a witness or the host. */
static void wverify(struct wchan *c, const struct vmq_desc *d, const uint8_t *p) {
        uint64_t stamp = 0;
        long bad;

        if (d->src_vm != c->peer) {
                wfail("src-vm", d, c->peer);
                return;
        }
        bad = witness_check(p, d->len, c->peer, &stamp);
        if (bad >= 0) {
                wfail("payload", d, bad);
                return;
        }
        if (d->tag != c->rx)
                wfail("sequence", d, (long)c->rx);
        if (!(stamp & WITNESS_STAMP_SHARED) &&
            stamp != ((uint64_t)d->channel << 32 | (d->tag & 0xffffffffu)))
                wfail("stamp", d, (long)stamp);
        c->rx = d->tag + 1;
        w_verified++;
}

static void whandle(const struct vmq_desc *d) {
        struct wchan *c;
        const uint8_t *p;
        long bad;
        int r;

        switch (d->kind) {
        case VMQ_DESC_HELLO:
        case VMQ_DESC_CLOSE:
                wnote(d);
                return;
        case VMQ_DESC_INLINE:
                w_received++;
                if (d->len > VMQ_INLINE_MAX) {
                        wfail("inline-len", d, 0);
                        return;
                }
                bad = chaos_nonzero(d->data, d->len, VMQ_INLINE_MAX);
                if (bad >= 0)
                        wfail("inline-tail", d, bad);
                c = wfind(d->channel);
                if (c) {
                        c->last = ++wclock;
                        if (c->kind != PEER_CHAOS)
                                wverify(c, d, d->data);
                }
                return;
        case VMQ_DESC_PAGE:
                w_received++;
                p = vmq_desc_pages(d);
                if (chaos_skip_shared && (d->flags & VMQ_DESC_F_SHARED)) {
                        c = wfind(d->channel);
                        if (c)
                                c->rx = d->tag + 1; /* unread, but counted */
                        /* may fail: the sharer may be gone already */
                        (void)vmq_release(p, d->len);
                        return;
                }
                /* read every page, whoever sent it */
                for (uint32_t off = 0; off < d->len; off += VMQ_PAGE_SIZE)
                        (void)*(volatile const uint8_t *)(p + off);
                if (d->flags & VMQ_DESC_F_COPIED) {
                        uint64_t fs =
                                d->flags & VMQ_DESC_F_HUGE ? VMQ_HUGE_PAGE_SIZE : VMQ_PAGE_SIZE;
                        uint64_t end = (d->len + fs - 1) / fs * fs;

                        bad = chaos_nonzero(p, d->len, end);
                        if (bad >= 0)
                                wfail("copy-tail", d, bad);
                }
                c = wfind(d->channel);
                if (c) {
                        c->last = ++wclock;
                        if (c->kind != PEER_CHAOS)
                                wverify(c, d, p);
                }
                r = vmq_release(p, d->len);
                if (r < 0)
                        wfail(d->flags & VMQ_DESC_F_SHARED ? "release-shared" : "release", d, r);
                return;
        case VMQ_DESC_ERROR:
                wfail("error-descriptor", d, d->error);
                return;
        default:
                /* a kind newer than this image (say, news of a revoked
                 * share): not ours to judge */
                w_unknown++;
                return;
        }
}

static void wsend(uint64_t *s) {
        struct wchan *c = NULL;
        uint64_t stamp;
        uint32_t len, flags = 0;
        const char *how;
        int r;

        for (unsigned i = 0, k = (unsigned)chaos_below(s, WCHANS); i < WCHANS;
             i++, k = (k + 1) % WCHANS) {
                if (wchans[k].used) {
                        c = &wchans[k];
                        break;
                }
        }
        if (!c)
                return;
        stamp = (uint64_t)c->id << 32 | (c->tx & 0xffffffffu);
        switch (chaos_below(s, 10)) {
        case 0:
        case 1:
        case 2:
        case 3: {
                uint8_t data[VMQ_INLINE_MAX];

                how = "inline";
                len = WITNESS_HDR_SIZE + (uint32_t)chaos_below(s, VMQ_INLINE_MAX - 23);
                witness_fill(data, len, chaos_self_id, stamp);
                r = vmq_send_inline(c->id, data, len, c->tx);
                break;
        }
        case 4:
        case 5: {
                unsigned k = (unsigned)chaos_below(s, SBUFS);

                how = "share";
                flags = VMQ_REQ_F_SHARE;
                r = vmq_send_pages(c->id, sbufs[k], slen[k], flags, c->tx);
                break;
        }
        default: {
                uint8_t *b = wbufs[chaos_below(s, WBUFS)];
                static const uint32_t fl[] = {VMQ_REQ_F_COPY, VMQ_REQ_F_FLIP, 0};

                how = "pages";
                flags = fl[chaos_below(s, 3)];
                len = WITNESS_HDR_SIZE +
                      (uint32_t)chaos_below(s, WBUF_PAGES * VMQ_PAGE_SIZE - WITNESS_HDR_SIZE);
                witness_fill(b, len, chaos_self_id, stamp);
                r = vmq_send_pages(c->id, b, len, flags, c->tx);
                break;
        }
        }
        if (r == 0) {
                c->tx++;
                c->last = ++wclock;
                w_sent++;
                return;
        }
        switch (-r) {
        case VMQ_E_AGAIN:
        case VMQ_E_NOMEM:
                return;
        case VMQ_E_BUSY:
                if (flags == VMQ_REQ_F_SHARE)
                        return; /* shared out already */
                break;
        case VMQ_E_PROTO:
                if (c->kind == PEER_CHAOS)
                        return; /* the chaos peer broke its queue indices */
                break;
        case VMQ_E_CLOSED:
                c->used = false;
                return;
        default:
                break;
        }
        w_failed++;
        if (w_failed <= FAIL_PRINT_MAX)
                vmq_printf("witness: FAIL send vm=%u channel=%u peer=%u how=%s flags=0x%x "
                           "error=%s\n",
                           chaos_self_id, c->id, c->peer, how, flags, vmq_strerror(r));
}

static void witness_done(void) {
        vmq_printf("witness: done vm=%u sent=%lu received=%lu verified=%lu failed=%lu "
                   "unknown=%lu\n",
                   chaos_self_id, w_sent, w_received, w_verified, w_failed, w_unknown);
        vmq_exit(w_failed ? 1 : 0);
}

int witness_main(uint64_t *s) {
        struct vmq_desc d;
        int r;

        vmq_printf("witness: start vm=%u seed=%lu\n", chaos_self_id, chaos_seed);
        for (unsigned k = 0; k < WBUFS; k++) {
                wbufs[k] = vmq_alloc_pages(WBUF_PAGES);
                if (!wbufs[k]) {
                        vmq_printf("witness: FAIL no heap vm=%u\n", chaos_self_id);
                        return 1;
                }
        }
        for (unsigned k = 0; k < SBUFS; k++) {
                sbufs[k] = vmq_alloc_pages(1);
                if (!sbufs[k]) {
                        vmq_printf("witness: FAIL no heap vm=%u\n", chaos_self_id);
                        return 1;
                }
                /* written once, shared many times */
                slen[k] = WITNESS_HDR_SIZE + (uint32_t)chaos_below(s, VMQ_PAGE_SIZE - 23);
                witness_fill(sbufs[k], slen[k], chaos_self_id, WITNESS_STAMP_SHARED | k);
        }
        vmq_set_spin_ns(0);
        vmq_set_shutdown_handler(witness_done);
        __atomic_store_n(&chaos_ready, true, __ATOMIC_RELEASE);
        for (;;) {
                r = vmq_recv(&d, 100000 + chaos_below(s, 2000000));
                if (r == 0)
                        whandle(&d);
                else if (r != -VMQ_E_TIMEDOUT)
                        wfail("recv", NULL, r);
                while (vmq_try_recv(&d) == 0)
                        whandle(&d);
                if (chaos_chance(s, 600))
                        wsend(s);
        }
}

/* Witness vCPUs other than 0: harmless exits only. */
VMQ_NORETURN void witness_secondary(uint64_t *s, unsigned index) {
        for (;;) {
                switch (chaos_below(s, 3)) {
                case 0:
                        (void)chaos_raw_simple(index, VMQ_HC_CLOCK, 0, 0, 0);
                        break;
                case 1:
                        (void)chaos_raw_simple(index, VMQ_HC_NOP, 0, 0, 0);
                        break;
                default:
                        (void)chaos_raw_simple(index, VMQ_HC_WAIT, 0, 0, 1000000);
                        vmq_delay_ns(500000);
                        break;
                }
        }
}
