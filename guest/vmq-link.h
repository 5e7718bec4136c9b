/* SPDX-License-Identifier: MIT */
/*
 * vmq guest SDK: channel links ("Channel links" in core/vmq-abi.h).
 *
 * A channel between two micro-VMs comes with a link: two rings of inline
 * messages in memory both guests see, one each way.  Sending and receiving
 * on a link is a few memory accesses: no exit, no monitor.  A receiver that
 * finds nothing spins a while (vmq_set_spin_ns), then sleeps in the monitor
 * until the sender kicks it; a sender kicks only a receiver that said it is
 * going to sleep, so a busy stream makes no exits at all.
 *
 *     struct vmq_desc d;
 *     struct vmq_link l;
 *     vmq_recv(&d, UINT64_MAX);                 // the channel's HELLO
 *     if (vmq_link_open(&l, &d) == 0)
 *             vmq_link_send(&l, "ping", 4, 0, UINT64_MAX);
 *
 * What a link carries: inline messages of at most VMQ_LINK_MSG_MAX bytes
 * with a tag.  Pages still go through the VM queue (vmq_send_pages), and
 * messages on the link and on the queue are not ordered with each other.
 *
 * The peer can write anything into the link.  These calls keep their own
 * indices and check every value they read from it: a peer that breaks the
 * link makes them return VMQ_E_PROTO from then on, and nothing worse.
 *
 * Errors (negated): VMQ_E_AGAIN (ring empty / full), VMQ_E_LEN (message too
 * long), VMQ_E_CLOSED (the channel closed: what the rings held is gone),
 * VMQ_E_PROTO (the peer broke the link), VMQ_E_TIMEDOUT, VMQ_E_NOCHAN
 * (vmq_link_open: the HELLO carries no link, or another channel has its
 * slot by now).
 *
 * One vCPU at a time per link and direction: the calls take no lock.
 *
 * This header is freestanding and also compiles hosted (the host's tests
 * drive links through the functions marked "no exit").
 */
#ifndef VMQ_LINK_H
#define VMQ_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vmq-abi.h"

struct vmq_link {
        struct vmq_link_hdr *tx_hdr, *rx_hdr; /* shared with the peer */
        struct vmq_link_msg *tx, *rx;
        uint32_t channel;
        uint32_t prod, cons;      /* ours: the shared copies are only published */
        uint32_t kicked_for_cons; /* the peer's cons_wait we last kicked for */
        uint32_t kicked_for_prod; /* the peer's prod_wait we last kicked for */
        uint32_t wait_seq;        /* generation of our own wait words */
        int32_t error;            /* sticky -VMQ_E_PROTO once broken */
};

/* Opens the link a HELLO descriptor announces (VMQ_DESC_F_LINK).  No exit. */
int vmq_link_open(struct vmq_link *l, const struct vmq_desc *hello);

/* Sets l up over a link mapped at base for channel ch (what vmq_link_open
 * does with the HELLO's gpa); -VMQ_E_NOCHAN when the headers there do not
 * name an open link of ch.  No exit. */
int vmq_link_attach(struct vmq_link *l, void *base, uint32_t ch);

/* Writes one message; 0, -VMQ_E_AGAIN when the ring is full.  Does not
 * notify: call vmq_link_notify() (or use vmq_link_send).  No exit. */
int vmq_link_try_send(struct vmq_link *l, const void *data, size_t len, uint64_t tag);

/* Writes up to n messages of msgs[] (len, tag, data) and publishes them at
 * once; returns how many (0 when full) or an error.  No exit. */
int vmq_link_try_send_batch(struct vmq_link *l, const struct vmq_link_msg *msgs, size_t n);

/* Takes one message into *ret; 0, -VMQ_E_AGAIN when the ring is empty.
 * No exit. */
int vmq_link_try_recv(struct vmq_link *l, struct vmq_link_msg *ret);

/* Takes up to n messages; returns how many (0 when empty) or an error.  No
 * exit. */
int vmq_link_try_recv_batch(struct vmq_link *l, struct vmq_link_msg *ret, size_t n);

/* Whether the peer asked to be kicked since we last kicked it: for
 * messages we sent (after a send) or for room we made (after a receive).
 * A true answer is given once per request of the peer.  No exit. */
bool vmq_link_peer_waits_for_data(struct vmq_link *l);
bool vmq_link_peer_waits_for_room(struct vmq_link *l);

/* Kicks the peer when it waits for what we did (one VMQ_HC_KICK, only
 * then); returns whether it kicked. */
bool vmq_link_notify(struct vmq_link *l);

/* VMQ_HC_KICK on channel ch: wakes the other end of its link. */
int vmq_link_kick(uint32_t ch);

/* Blocking forms: spin, then sleep until the peer kicks, up to timeout_ns
 * (UINT64_MAX: no limit; 0: try once).  Each notifies the peer as needed.
 * A SHUTDOWN from the host (waiting in the VM queue) wakes a sleeping call,
 * which runs the shutdown handler (vmq_set_shutdown_handler; by default the
 * VM exits) once and, if that returns, goes on waiting. */
int vmq_link_send(struct vmq_link *l, const void *data, size_t len, uint64_t tag,
                  uint64_t timeout_ns);
int vmq_link_recv(struct vmq_link *l, struct vmq_link_msg *ret, uint64_t timeout_ns);
/* Waits for the first message as vmq_link_recv, then takes what else is
 * there, up to n; returns how many or an error. */
int vmq_link_recv_batch(struct vmq_link *l, struct vmq_link_msg *ret, size_t n,
                        uint64_t timeout_ns);

#endif /* VMQ_LINK_H */
