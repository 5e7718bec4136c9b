/* SPDX-License-Identifier: MIT */
/*
 * The vsock switch: connections between guests' virtio-vsock devices,
 * supervised.
 *
 * Each guest is an endpoint with the CID vmqd gave it and the rx and tx
 * queues of its device.  The switch takes the packets a guest puts on its tx
 * queue and moves them into the rx queue of the guest they are for, copying
 * the payload once, straight from the sender's buffers into the receiver's.
 * A port is an endpoint in the host process instead (the host's CID 2, or a
 * micro-VM's): it sends packets with vmq_vsock_port_send() and receives
 * them through its receive callback, and keeps its own credit.
 * Credit is the two guests' business (their headers pass unchanged), so the
 * switch holds nothing back but what finds the receiver without an rx
 * buffer: a bounded backlog, delivered when the receiver adds buffers.
 *
 * Supervision:
 *   - the source CID of every packet must be the sender's own; a forged one
 *     is dropped and counted;
 *   - a connection opens only when the switch's `allowed` callback says so
 *     (vmqd: while a vmq channel is open between the two), else the sender
 *     gets a reset;
 *   - a packet for a connection that was never opened gets a reset, as does
 *     one for a CID with no endpoint;
 *   - an endpoint that goes away resets every connection it had, and its
 *     peers are told.
 * A header that breaks the virtio-vsock rules (vsock-pkt.h) is dropped and
 * counted; the guest's queue goes on.
 *
 * One thread at a time (vmqd's event loop).  The switch's callbacks must
 * not call back into it; a port's receive callback may send (the packet
 * goes when the switch returns), but not add or remove endpoints.
 */
#ifndef VMQ_VHOST_VSOCK_H
#define VMQ_VHOST_VSOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "vhost/gmem.h"
#include "vhost/virtq.h"
#include "vhost/vsock-pkt.h"

/* Packets one endpoint may have waiting for rx buffers, and their bytes. */
#define VMQ_VSOCK_BACKLOG_PACKETS 256u
#define VMQ_VSOCK_BACKLOG_BYTES (1u << 20)
/* Connections the switch tracks in all. */
#define VMQ_VSOCK_MAX_CONNS 4096u

struct vmq_vsock_stats {
        uint64_t packets;     /* taken from the tx queue */
        uint64_t forged;      /* dropped: source CID not the sender's */
        uint64_t malformed;   /* dropped: a header that breaks the rules */
        uint64_t refused;     /* connection requests answered with a reset */
        uint64_t resets;      /* resets sent to this endpoint by the switch */
        uint64_t backlogged;  /* packets that waited for an rx buffer */
        uint64_t dropped;     /* lost: the backlog was full */
        uint64_t bad_buffers; /* rx buffers too small for a packet: given back empty */
};

struct vmq_vsock_switch;
struct vmq_vsock_ep;

struct vmq_vsock_switch_ops {
        /* May `from` open a connection to `to`? */
        bool (*allowed)(void *userdata, uint64_t from_cid, uint64_t to_cid);
        /* Buffers were used on ep's queue `queue` (0 rx, 1 tx): notify its
         * guest if the queue asks for it (vmq_virtq_need_call). */
        void (*notify)(void *userdata, struct vmq_vsock_ep *ep, unsigned queue);
};

int vmq_vsock_switch_new(const struct vmq_vsock_switch_ops *ops, void *userdata,
                         struct vmq_vsock_switch **ret);
/* Resets every endpoint's connections and frees the switch (and
 * endpoints still attached). */
struct vmq_vsock_switch *vmq_vsock_switch_free(struct vmq_vsock_switch *sw);

/*
 * Attaches a guest: its CID (3 or more, not in use), its guest memory and
 * its rx and tx queues (owned by the caller, who keeps them alive and set
 * up while attached).  -EINVAL, -EEXIST, -ENOMEM.
 */
int vmq_vsock_ep_add(struct vmq_vsock_switch *sw, uint64_t cid, const struct vmq_gmem *mem,
                     struct vmq_virtq *rx, struct vmq_virtq *tx, void *userdata,
                     struct vmq_vsock_ep **ret);
struct vmq_vsock_port_ops {
        /* A packet for the port, its payload (h->len bytes) at data.  False
         * when the port cannot take it: the switch resets the connection. */
        bool (*receive)(void *userdata, struct vmq_vsock_ep *ep, const struct vmq_vsock_hdr *h,
                        const uint8_t *data);
};

/* Attaches a port with this CID (2 or more, not in use).  -EINVAL,
 * -EEXIST, -ENOMEM. */
int vmq_vsock_port_add(struct vmq_vsock_switch *sw, uint64_t cid,
                       const struct vmq_vsock_port_ops *ops, void *userdata,
                       struct vmq_vsock_ep **ret);
/*
 * Sends a packet from port ep, checked and routed like a guest's: its
 * source must be the port's CID (-EPERM), its header must keep the rules
 * of vsock-pkt.h (-EPROTO).  From inside a callback it is queued (-ENOMEM)
 * and goes when the switch returns.  A packet the switch refuses earns the
 * port a reset, like a guest.
 */
int vmq_vsock_port_send(struct vmq_vsock_ep *ep, const struct vmq_vsock_hdr *h, const void *data);

/*
 * Between hold and release, what ports send is queued; release routes it
 * (and the callbacks it causes run then).  A port that keeps state per
 * connection holds the switch while it works on it, so that no answer
 * arrives in the middle.  Pairs nest.
 */
void vmq_vsock_switch_hold(struct vmq_vsock_switch *sw);
void vmq_vsock_switch_release(struct vmq_vsock_switch *sw);

/* Detaches an endpoint (a guest's or a port): resets its connections (its peers get a reset) and drops
 * its backlog.  NULL does nothing. */
void vmq_vsock_ep_remove(struct vmq_vsock_ep *ep);

/* The guest kicked its tx queue: takes every packet there and moves it.
 * (On a port, this and vmq_vsock_ep_rx do nothing.) */
void vmq_vsock_ep_tx(struct vmq_vsock_ep *ep);
/* The guest kicked its rx queue (new buffers): delivers the backlog. */
void vmq_vsock_ep_rx(struct vmq_vsock_ep *ep);

void vmq_vsock_ep_stats(const struct vmq_vsock_ep *ep, struct vmq_vsock_stats *ret);
void *vmq_vsock_ep_userdata(const struct vmq_vsock_ep *ep);
uint64_t vmq_vsock_ep_cid(const struct vmq_vsock_ep *ep);
/*
 * The leave between two CIDs was withdrawn (vmqd: their channel closed):
 * resets every connection between them, both ends told.  Returns how many.
 */
unsigned vmq_vsock_switch_reset_between(struct vmq_vsock_switch *sw, uint64_t cid_a,
                                        uint64_t cid_b);

/* Connections open or opening now, in all. */
unsigned vmq_vsock_switch_conns(const struct vmq_vsock_switch *sw);

#endif /* VMQ_VHOST_VSOCK_H */
