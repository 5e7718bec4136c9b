/* SPDX-License-Identifier: MIT */
/*
 * Channel links, the part that is only memory (guest/vmq-link.h): attach,
 * send, receive and the wake-up words.  Nothing here makes an exit, so the
 * host's tests build this file too and drive links of host-driven VMs with
 * it.
 *
 * Every value read from the link is the peer's to forge: indices are kept
 * here and the shared ones only published; an index or length that cannot
 * be is a broken link (sticky VMQ_E_PROTO).  A header that no longer says
 * "open, channel ch" means the monitor took the link away (the channel
 * closed; the pages are now private zeroes): VMQ_E_CLOSED.
 */
#include "guest/vmq-link.h"

#define LINK_HALF (VMQ_LINK_SIZE / 2u)

/* A full barrier (mfence).  ThreadSanitizer, for the host's tests, does not
 * model fences: a locked read-modify-write of one shared word, which x86
 * orders the same way, stands in (as core/util.h does). */
#ifdef __SANITIZE_THREAD__
static void full_barrier(void) {
        static int word;
        (void)__atomic_fetch_add(&word, 0, __ATOMIC_SEQ_CST);
}
#else
static void full_barrier(void) {
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
#endif

static uint32_t load_acquire(const uint32_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static uint32_t load_relaxed(const uint32_t *p) {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static bool header_open(const struct vmq_link_hdr *h, uint32_t ch) {
        return load_acquire(&h->state) == VMQ_LINK_OPEN &&
               load_relaxed(&h->magic) == VMQ_LINK_MAGIC && load_relaxed(&h->channel) == ch;
}

/* 0 while both headers say open for our channel. */
static int link_state(const struct vmq_link *l) {
        if (l->error)
                return l->error;
        if (!header_open(l->tx_hdr, l->channel) || !header_open(l->rx_hdr, l->channel))
                return -VMQ_E_CLOSED;
        return 0;
}

static int broken(struct vmq_link *l) {
        l->error = -VMQ_E_PROTO;
        return l->error;
}

int vmq_link_attach(struct vmq_link *l, void *base, uint32_t ch) {
        uint8_t *b = base;

        if (!base)
                return -VMQ_E_NOCHAN;
        l->tx_hdr = (struct vmq_link_hdr *)b;
        l->tx = (struct vmq_link_msg *)(b + VMQ_PAGE_SIZE);
        l->rx_hdr = (struct vmq_link_hdr *)(b + LINK_HALF);
        l->rx = (struct vmq_link_msg *)(b + LINK_HALF + VMQ_PAGE_SIZE);
        l->channel = ch;
        l->error = 0;
        l->wait_seq = 0;
        if (link_state(l) < 0)
                return -VMQ_E_NOCHAN;
        /* Start from what the rings say: a link is attached once, right
         * after the HELLO, when both are still at 0 (or the peer has
         * already sent; its messages are then ours to read). */
        l->prod = load_acquire(&l->tx_hdr->prod);
        l->cons = load_acquire(&l->rx_hdr->cons);
        l->kicked_for_cons = load_relaxed(&l->tx_hdr->cons_wait);
        l->kicked_for_prod = load_relaxed(&l->rx_hdr->prod_wait);
        if (l->kicked_for_cons & 1)
                l->kicked_for_cons--; /* a waiter that waits already still gets its kick */
        if (l->kicked_for_prod & 1)
                l->kicked_for_prod--;
        if ((uint32_t)(l->prod - load_acquire(&l->tx_hdr->cons)) > VMQ_LINK_CAP ||
            (uint32_t)(load_acquire(&l->rx_hdr->prod) - l->cons) > VMQ_LINK_CAP)
                return broken(l);
        return 0;
}

/* Room in the transmit ring, or an error. */
static int tx_room(struct vmq_link *l) {
        int r = link_state(l);
        if (r < 0)
                return r;
        uint32_t used = l->prod - load_acquire(&l->tx_hdr->cons);
        if (used > VMQ_LINK_CAP)
                return broken(l); /* the peer took messages we never wrote */
        return (int)(VMQ_LINK_CAP - used);
}

static void put(struct vmq_link *l, const void *data, uint32_t len, uint64_t tag) {
        struct vmq_link_msg *m = &l->tx[l->prod % VMQ_LINK_CAP];
        m->len = len;
        m->flags = 0;
        m->tag = tag;
        if (len) /* an empty message may come with no buffer at all */
                __builtin_memcpy(m->data, data, len);
        l->prod++;
}

int vmq_link_try_send(struct vmq_link *l, const void *data, size_t len, uint64_t tag) {
        if (len > VMQ_LINK_MSG_MAX)
                return -VMQ_E_LEN;
        int room = tx_room(l);
        if (room <= 0)
                return room < 0 ? room : -VMQ_E_AGAIN;
        put(l, data, (uint32_t)len, tag);
        __atomic_store_n(&l->tx_hdr->prod, l->prod, __ATOMIC_RELEASE);
        return 0;
}

int vmq_link_try_send_batch(struct vmq_link *l, const struct vmq_link_msg *msgs, size_t n) {
        int room = tx_room(l);
        size_t i;
        if (room < 0)
                return room;
        for (i = 0; i < n && i < (size_t)room; i++)
                if (msgs[i].len > VMQ_LINK_MSG_MAX)
                        break;
        if (i < n && i < (size_t)room && i == 0)
                return -VMQ_E_LEN;
        n = i;
        for (i = 0; i < n; i++)
                put(l, msgs[i].data, msgs[i].len, msgs[i].tag);
        if (n)
                __atomic_store_n(&l->tx_hdr->prod, l->prod, __ATOMIC_RELEASE);
        return (int)n;
}

/* Messages waiting in the receive ring, or an error. */
static int rx_ready(struct vmq_link *l) {
        int r = link_state(l);
        if (r < 0)
                return r;
        uint32_t n = load_acquire(&l->rx_hdr->prod) - l->cons;
        if (n > VMQ_LINK_CAP)
                return broken(l);
        return (int)n;
}

/* Copies the message at index i out; the length is read once. */
static int take(struct vmq_link *l, uint32_t i, struct vmq_link_msg *ret) {
        const struct vmq_link_msg *m = &l->rx[i % VMQ_LINK_CAP];
        uint32_t len = load_relaxed(&m->len);
        if (len > VMQ_LINK_MSG_MAX)
                return broken(l);
        ret->len = len;
        ret->flags = 0;
        ret->tag = __atomic_load_n(&m->tag, __ATOMIC_RELAXED);
        __builtin_memcpy(ret->data, m->data, len);
        return 0;
}

int vmq_link_try_recv_batch(struct vmq_link *l, struct vmq_link_msg *ret, size_t n) {
        int ready = rx_ready(l);
        size_t i;
        if (ready < 0)
                return ready;
        if ((size_t)ready < n)
                n = (size_t)ready;
        for (i = 0; i < n; i++) {
                int r = take(l, l->cons + (uint32_t)i, &ret[i]);
                if (r < 0)
                        return r;
        }
        /* The monitor may have swapped the pages for closed ones while we
         * copied: what we read then is zeroes, not messages. */
        int r = link_state(l);
        if (r < 0)
                return r;
        if (n) {
                l->cons += (uint32_t)n;
                __atomic_store_n(&l->rx_hdr->cons, l->cons, __ATOMIC_RELEASE);
        }
        return (int)n;
}

int vmq_link_try_recv(struct vmq_link *l, struct vmq_link_msg *ret) {
        int r = vmq_link_try_recv_batch(l, ret, 1);
        return r == 1 ? 0 : r == 0 ? -VMQ_E_AGAIN : r;
}

/* After our index moved: does the peer wait, on a word we have not kicked
 * for?  The full barrier orders our index store before the load, and the
 * waiter stores its word before it looks at our index again: one of the
 * two sees the other. */
static bool waits(const uint32_t *word, uint32_t *kicked_for) {
        full_barrier();
        uint32_t w = load_relaxed(word);
        if (!(w & 1) || w == *kicked_for)
                return false;
        *kicked_for = w;
        return true;
}

bool vmq_link_peer_waits_for_data(struct vmq_link *l) {
        return waits(&l->tx_hdr->cons_wait, &l->kicked_for_cons);
}

bool vmq_link_peer_waits_for_room(struct vmq_link *l) {
        return waits(&l->rx_hdr->prod_wait, &l->kicked_for_prod);
}
