/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the message port (vhost/vsock-msg.c), vmqd's vsock
 * peer for micro-VMs: a hostile guest (CID 3) connected through the switch
 * to the port (CID 5), behind which a hostile machine speaks in messages.
 *
 * The guest is fuzz-vsock's: a heap block of exactly its memory, rx ring
 * at 0 and tx ring at 0x800, writing any bytes anywhere.  The machine is
 * the port's ops, played by the input: it sends messages of any length
 * (up to 300,000 bytes) or its end mark on any channel, stops taking
 * messages (send says -EAGAIN) or takes them again, closes a channel (send
 * and recv then say -EPIPE), refuses to open channels.  The harness also
 * runs the port, opens and closes the access (a close resets the
 * connections), takes the guest away and back, and the port.
 *
 * Checked besides memory safety: ops->close comes once for each channel
 * opened and nothing is sent or received on a channel after it; what the
 * port hands the machine keeps the framing (a stream's messages at most
 * VMQ_VSOCK_MSG_CHUNK bytes, a record at most VMQ_VSOCK_MSG_RECORD_MAX, the
 * end mark empty and last); the port never holds more connections than
 * allowed; when it goes, every channel is closed.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "tests/fuzz/fuzz-guest.h"
#include "tests/fuzz/fuzz-util.h"
#include "vhost/vsock-msg.h"

#define MAX_CHANNELS (VMQ_VSOCK_MSG_MAX_CONNS * 4)
#define BIG 300000u

struct pending {
        struct pending *next;
        size_t len;
        bool done;
        uint8_t data[];
};

/* A channel as the machine sees it. */
struct channel {
        bool opened, closed_by_port, closed_by_machine, seqpacket, got_done;
        struct pending *head, *tail;
};

static struct channel channels[MAX_CHANNELS];
static uint32_t nchannels;
static bool refuse_opens, full, allow;
static uint8_t big[BIG];

static int m_open(void *u, uint64_t guest_cid, uint32_t guest_port, uint32_t port, bool seqpacket,
                  uint32_t *ret) {
        (void)u;
        (void)guest_port;
        (void)port;
        FUZZ_CHECK(guest_cid == 3);
        if (refuse_opens || nchannels == MAX_CHANNELS)
                return -EAGAIN;
        channels[nchannels] = (struct channel){.opened = true, .seqpacket = seqpacket};
        *ret = nchannels++;
        return 0;
}

static struct channel *live(uint32_t ch) {
        FUZZ_CHECK(ch < nchannels && channels[ch].opened);
        FUZZ_CHECK(!channels[ch].closed_by_port); /* never used after its close */
        return &channels[ch];
}

static int m_send(void *u, uint32_t ch, const uint8_t *data, size_t len, bool done) {
        struct channel *c = live(ch);
        (void)u;
        if (c->closed_by_machine)
                return -EPIPE;
        if (full)
                return -EAGAIN;
        FUZZ_CHECK(!c->got_done); /* nothing after the end mark */
        if (done)
                FUZZ_CHECK(len == 0);
        FUZZ_CHECK(len <= (c->seqpacket ? VMQ_VSOCK_MSG_RECORD_MAX : VMQ_VSOCK_MSG_CHUNK));
        if (len) { /* all of it readable */
                volatile uint8_t ends = data[0] ^ data[len - 1];
                (void)ends;
        }
        c->got_done = done;
        return 0;
}

static int m_recv(void *u, uint32_t ch, void **ret_buf, const uint8_t **ret_data, size_t *ret_len,
                  bool *ret_done) {
        struct channel *c = live(ch);
        (void)u;
        struct pending *p = c->head;
        if (!p)
                return c->closed_by_machine ? -EPIPE : -EAGAIN;
        c->head = p->next;
        if (!c->head)
                c->tail = NULL;
        *ret_buf = p;
        *ret_data = p->data;
        *ret_len = p->len;
        *ret_done = p->done;
        return 0;
}

static void drop_pending(struct channel *c) {
        while (c->head) {
                struct pending *p = c->head;
                c->head = p->next;
                free(p);
        }
        c->tail = NULL;
}

static void m_close(void *u, uint32_t ch, uint64_t guest_cid, enum vmq_vsock_msg_end why) {
        struct channel *c = live(ch);
        (void)u;
        FUZZ_CHECK(guest_cid == 3);
        FUZZ_CHECK(vmq_vsock_msg_end_to_string(why)[0] != '?');
        c->closed_by_port = true;
        drop_pending(c);
}

static void m_retry(void *u) {
        (void)u;
}

static const struct vmq_vsock_msgport_ops mops = {
        .open = m_open, .send = m_send, .recv = m_recv, .close = m_close, .retry = m_retry};

/* An open channel picked by the input, or NULL. */
static struct channel *pick(struct fuzz_input *in) {
        uint32_t open[MAX_CHANNELS], n = 0;
        for (uint32_t i = 0; i < nchannels; i++)
                if (!channels[i].closed_by_port && !channels[i].closed_by_machine)
                        open[n++] = i;
        uint8_t k = fuzz_u8(in);
        return n ? &channels[open[k % n]] : NULL;
}

/* The machine sends a message (or its end mark) on a channel. */
static void machine_sends(struct fuzz_input *in, uint8_t op) {
        struct channel *c = pick(in);
        size_t len = op & 0x20 ? fuzz_u32(in) % (BIG + 1) : fuzz_u16(in) % 512;
        bool done = op & 0x40;
        if (done)
                len = 0;
        struct pending *p = malloc(sizeof(*p) + len);
        FUZZ_CHECK(p);
        p->next = NULL;
        p->len = len;
        p->done = done;
        if (len)
                memcpy(p->data, big, len);
        if (!c) {
                free(p);
                return;
        }
        if (c->tail)
                c->tail->next = p;
        else
                c->head = p;
        c->tail = p;
}

static bool allowed(void *u, uint64_t from, uint64_t to) {
        (void)u;
        (void)from;
        (void)to;
        return allow;
}

/* The port went: every channel it opened was closed once. */
static void check_all_closed(void) {
        for (uint32_t i = 0; i < nchannels; i++)
                FUZZ_CHECK(channels[i].closed_by_port);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const struct vmq_vsock_switch_ops ops = {.allowed = allowed,
                                                        .notify = fuzz_guest_notify};
        struct fuzz_input in = {data, size};
        struct vmq_vsock_switch *sw = NULL;
        struct vmq_vsock_msgport *mp = NULL;
        struct fuzz_guest g;

        static bool filled; /* the machine's payload pattern, once */
        for (size_t i = 0; !filled && i < sizeof(big); i++)
                big[i] = (uint8_t)(i * 131u);
        filled = true;
        nchannels = 0;
        refuse_opens = full = false;
        FUZZ_CHECK(vmq_vsock_switch_new(&ops, NULL, &sw) == 0);
        FUZZ_CHECK(vmq_vsock_msgport_new(sw, 5, &mops, NULL, &mp) == 0);
        uint8_t geo = fuzz_u8(&in);
        allow = geo & 0x80;
        refuse_opens = geo & 0x40;
        fuzz_guest_init(&g, 3);
        fuzz_guest_attach(sw, &g, 1u << ((geo & 7) % (MAX_NUM_SHIFT + 1)));

        for (unsigned steps = 0; fuzz_left(&in) > 0 && steps < 512; steps++) {
                uint8_t op = fuzz_u8(&in);
                /* 0x20 and 0x40 are the action's flags */
                switch ((op & 0x0f) % 10) {
                case 0: /* the guest writes its memory */
                        fuzz_guest_write(&in, &g);
                        break;
                case 1:
                        if (g.ep)
                                vmq_vsock_ep_tx(g.ep);
                        break;
                case 2:
                        if (g.ep)
                                vmq_vsock_ep_rx(g.ep);
                        break;
                case 3: /* the channel between the machines opens, or closes */
                        allow = !allow;
                        if (!allow)
                                (void)vmq_vsock_switch_reset_between(sw, 3, 5);
                        break;
                case 4: /* the guest goes away, or comes back */
                        if (g.ep) {
                                vmq_vsock_ep_remove(g.ep);
                                g.ep = NULL;
                        } else {
                                fuzz_guest_attach(sw, &g, 1u << (op >> 5) % (MAX_NUM_SHIFT + 1));
                        }
                        break;
                case 5:
                        machine_sends(&in, op);
                        break;
                case 6: /* the machine stops taking messages, or takes them again */
                        full = op & 0x20;
                        refuse_opens = op & 0x40;
                        break;
                case 7: { /* the machine's end of a channel closes */
                        struct channel *c = pick(&in);
                        if (c)
                                c->closed_by_machine = true;
                        break;
                }
                case 8:
                        if (mp)
                                vmq_vsock_msgport_run(mp);
                        break;
                default: /* the port goes away (its channels close), or comes back */
                        if (mp) {
                                mp = vmq_vsock_msgport_free(mp);
                                check_all_closed();
                        } else {
                                FUZZ_CHECK(vmq_vsock_msgport_new(sw, 5, &mops, NULL, &mp) == 0);
                        }
                        break;
                }
                FUZZ_CHECK(vmq_vsock_msgport_conns(mp) <= VMQ_VSOCK_MSG_MAX_CONNS);
                FUZZ_CHECK(vmq_vsock_switch_conns(sw) <= VMQ_VSOCK_MAX_CONNS);
        }
        mp = vmq_vsock_msgport_free(mp);
        check_all_closed();
        if (g.ep)
                vmq_vsock_ep_remove(g.ep);
        FUZZ_CHECK(vmq_vsock_switch_conns(sw) == 0);
        sw = vmq_vsock_switch_free(sw);
        for (uint32_t i = 0; i < nchannels; i++)
                drop_pending(&channels[i]);
        free(g.mem);
        return 0;
}
