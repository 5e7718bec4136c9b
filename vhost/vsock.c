/* SPDX-License-Identifier: MIT */
/* The vsock switch: see vsock.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "vhost/vsock.h"

#define NO_CONN UINT32_MAX
#define BUCKETS 1024u /* a power of two */

/* A packet that waits for an rx buffer of its receiver. */
struct pending {
        struct pending *next;
        struct vmq_vsock_hdr h; /* h.len: the bytes still to deliver */
        uint32_t off;           /* of data, already delivered */
        uint8_t data[];
};

struct source;
struct vmq_vsock_ep;

/* What an endpoint is: a guest's virtio device, or a port in the host
 * process.  deliver() moves one packet to it; false when it was lost. */
struct ep_kind {
        bool (*deliver)(struct vmq_vsock_ep *dst, const struct vmq_vsock_hdr *h,
                        struct source *src);
};

struct vmq_vsock_ep {
        struct vmq_vsock_switch *sw;
        struct vmq_vsock_ep *next;
        const struct ep_kind *kind;
        uint64_t cid;
        /* a guest's device */
        const struct vmq_gmem *mem;
        struct vmq_virtq *rx, *tx;
        /* a port */
        const struct vmq_vsock_port_ops *port_ops;
        void *userdata;
        struct pending *head, *tail;
        unsigned npending;
        size_t pending_bytes;
        bool rx_used; /* buffers used since the last notify */
        struct vmq_vsock_stats st;
};

enum conn_state { CONN_REQUESTED = 1, CONN_OPEN };

/* A connection: side 0 asked for it. */
struct conn {
        uint64_t cid[2];
        uint32_t port[2];
        uint8_t state;
        uint16_t type;
        uint32_t next; /* in its bucket, or the free list */
};

/* A packet a port sent from inside a call into the switch: it goes when
 * the outermost call returns. */
struct deferred {
        struct deferred *next;
        struct vmq_vsock_ep *from;
        struct vmq_vsock_hdr h;
        uint8_t data[];
};

struct vmq_vsock_switch {
        struct vmq_vsock_switch_ops ops;
        void *userdata;
        struct vmq_vsock_ep *eps;
        unsigned depth; /* calls into the switch under way */
        struct deferred *dhead, *dtail;
        uint8_t scratch[VMQ_VSOCK_MAX_PAYLOAD]; /* a payload on its way to a port */
        struct conn conns[VMQ_VSOCK_MAX_CONNS];
        uint32_t bucket[BUCKETS];
        uint32_t free_list;
        unsigned nconns;
};

static void enter(struct vmq_vsock_switch *sw);
static void leave(struct vmq_vsock_switch *sw);

int vmq_vsock_switch_new(const struct vmq_vsock_switch_ops *ops, void *userdata,
                         struct vmq_vsock_switch **ret) {
        if (!ops || !ops->allowed || !ret)
                return -EINVAL;
        struct vmq_vsock_switch *sw = calloc(1, sizeof(*sw));
        if (!sw)
                return -ENOMEM;
        sw->ops = *ops;
        sw->userdata = userdata;
        for (unsigned i = 0; i < BUCKETS; i++)
                sw->bucket[i] = NO_CONN;
        for (uint32_t i = 0; i < VMQ_VSOCK_MAX_CONNS; i++)
                sw->conns[i].next = i + 1 < VMQ_VSOCK_MAX_CONNS ? i + 1 : NO_CONN;
        sw->free_list = 0;
        *ret = sw;
        return 0;
}

struct vmq_vsock_switch *vmq_vsock_switch_free(struct vmq_vsock_switch *sw) {
        if (!sw)
                return NULL;
        while (sw->eps)
                vmq_vsock_ep_remove(sw->eps);
        /* ep_remove dropped every deferred packet with its sender */
        free(sw);
        return NULL;
}

/* ---- connections ------------------------------------------------------- */

/* The same for both directions of a connection. */
static uint32_t conn_hash(uint64_t ca, uint32_t pa, uint64_t cb, uint32_t pb) {
        uint64_t x = (ca ^ cb) * 0x9e3779b97f4a7c15ull ^ ((uint64_t)(pa ^ pb) << 17) ^
                     (uint64_t)(pa + pb);
        x ^= x >> 29;
        return (uint32_t)(x * 0xbf58476d1ce4e5b9ull >> 40) & (BUCKETS - 1);
}

/* The connection between (ca, pa) and (cb, pb), either way; *side: which
 * side (ca, pa) is. */
static struct conn *conn_find(struct vmq_vsock_switch *sw, uint64_t ca, uint32_t pa, uint64_t cb,
                              uint32_t pb, int *side) {
        for (uint32_t i = sw->bucket[conn_hash(ca, pa, cb, pb)]; i != NO_CONN;
             i = sw->conns[i].next) {
                struct conn *c = &sw->conns[i];
                for (int s = 0; s < 2; s++)
                        if (c->cid[s] == ca && c->port[s] == pa && c->cid[1 - s] == cb &&
                            c->port[1 - s] == pb) {
                                *side = s;
                                return c;
                        }
        }
        return NULL;
}

static struct conn *conn_add(struct vmq_vsock_switch *sw, uint64_t ca, uint32_t pa, uint64_t cb,
                             uint32_t pb, uint16_t type) {
        uint32_t i = sw->free_list;
        if (i == NO_CONN)
                return NULL;
        struct conn *c = &sw->conns[i];
        sw->free_list = c->next;
        uint32_t b = conn_hash(ca, pa, cb, pb);
        *c = (struct conn){.cid = {ca, cb},
                           .port = {pa, pb},
                           .state = CONN_REQUESTED,
                           .type = type,
                           .next = sw->bucket[b]};
        sw->bucket[b] = i;
        sw->nconns++;
        return c;
}

static void conn_remove(struct vmq_vsock_switch *sw, struct conn *c) {
        uint32_t i = (uint32_t)(c - sw->conns);
        uint32_t *p = &sw->bucket[conn_hash(c->cid[0], c->port[0], c->cid[1], c->port[1])];
        while (*p != i)
                p = &sw->conns[*p].next;
        *p = c->next;
        c->state = 0;
        c->next = sw->free_list;
        sw->free_list = i;
        sw->nconns--;
}

unsigned vmq_vsock_switch_conns(const struct vmq_vsock_switch *sw) {
        return sw->nconns;
}

/* ---- endpoints --------------------------------------------------------- */

static struct vmq_vsock_ep *ep_find(struct vmq_vsock_switch *sw, uint64_t cid) {
        for (struct vmq_vsock_ep *e = sw->eps; e; e = e->next)
                if (e->cid == cid)
                        return e;
        return NULL;
}

static const struct ep_kind virtio_kind, port_kind;

int vmq_vsock_ep_add(struct vmq_vsock_switch *sw, uint64_t cid, const struct vmq_gmem *mem,
                     struct vmq_virtq *rx, struct vmq_virtq *tx, void *userdata,
                     struct vmq_vsock_ep **ret) {
        /* 0, 1 and 2 are the hypervisor's, the local and the host's; the
         * all-ones CID is "any" */
        if (!sw || cid <= VMQ_VSOCK_CID_HOST || cid >= UINT32_MAX || !mem || !rx || !tx || !ret)
                return -EINVAL;
        if (ep_find(sw, cid))
                return -EEXIST;
        struct vmq_vsock_ep *e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        *e = (struct vmq_vsock_ep){.sw = sw,
                                   .next = sw->eps,
                                   .kind = &virtio_kind,
                                   .cid = cid,
                                   .mem = mem,
                                   .rx = rx,
                                   .tx = tx,
                                   .userdata = userdata};
        sw->eps = e;
        *ret = e;
        return 0;
}

int vmq_vsock_port_add(struct vmq_vsock_switch *sw, uint64_t cid,
                       const struct vmq_vsock_port_ops *ops, void *userdata,
                       struct vmq_vsock_ep **ret) {
        /* the host's CID is a port's to take; 0, 1 and "any" are nobody's */
        if (!sw || cid < VMQ_VSOCK_CID_HOST || cid >= UINT32_MAX || !ops || !ops->receive || !ret)
                return -EINVAL;
        if (ep_find(sw, cid))
                return -EEXIST;
        struct vmq_vsock_ep *e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        *e = (struct vmq_vsock_ep){.sw = sw,
                                   .next = sw->eps,
                                   .kind = &port_kind,
                                   .cid = cid,
                                   .port_ops = ops,
                                   .userdata = userdata};
        sw->eps = e;
        *ret = e;
        return 0;
}

void *vmq_vsock_ep_userdata(const struct vmq_vsock_ep *ep) {
        return ep->userdata;
}

uint64_t vmq_vsock_ep_cid(const struct vmq_vsock_ep *ep) {
        return ep->cid;
}

void vmq_vsock_ep_stats(const struct vmq_vsock_ep *ep, struct vmq_vsock_stats *ret) {
        *ret = ep->st;
}

/* ---- delivery ---------------------------------------------------------- */

/* Where a packet's payload comes from: the sender's tx buffers (from byte
 * VMQ_VSOCK_HDR_SIZE on), or a buffer of the backlog. */
struct source {
        const struct vmq_iov *iov;
        unsigned n;
        const uint8_t *buf;
        size_t off; /* of the payload already delivered */
};

/*
 * Puts as much of packet h (h->len payload bytes from src) into dst's rx
 * buffers as they take, a chunk per buffer; a SEQPACKET record's end marks
 * go on its last chunk only.  Returns the payload bytes delivered; a packet
 * with no payload counts as delivered when its header went.
 */
static uint32_t put_rx(struct vmq_vsock_ep *dst, const struct vmq_vsock_hdr *h, struct source *src,
                       bool *all) {
        struct vmq_virtq_elem e;
        uint32_t done = 0;
        *all = false;
        for (;;) {
                int r = vmq_virtq_pop(dst->rx, dst->mem, &e);
                /* Out of buffers: the driver is asked to kick for its next
                 * ones (with event indices, the avail_event of its last
                 * kick is long passed and asks for nothing), and those it
                 * added meanwhile are taken now. */
                if (r == 0 && vmq_virtq_arm(dst->rx))
                        continue;
                if (r <= 0)
                        return done;
                const struct vmq_iov *in = e.iov + e.nout;
                if (e.in_len < VMQ_VSOCK_HDR_SIZE + (h->len > done)) {
                        /* a buffer this packet does not fit at all: the
                         * guest's loss */
                        vmq_virtq_push(dst->rx, e.head, 0);
                        dst->rx_used = true;
                        dst->st.bad_buffers++;
                        continue;
                }
                uint32_t room = (uint32_t)VMQ_MIN(e.in_len - VMQ_VSOCK_HDR_SIZE,
                                                  (uint64_t)VMQ_VSOCK_MAX_PAYLOAD);
                uint32_t chunk = VMQ_MIN(room, h->len - done);
                struct vmq_vsock_hdr c = *h;
                c.len = chunk;
                if (h->type == VMQ_VSOCK_TYPE_SEQPACKET && done + chunk < h->len)
                        c.flags &= ~(VMQ_VSOCK_SEQ_EOM | VMQ_VSOCK_SEQ_EOR);
                (void)vmq_vsock_hdr_write(in, e.nin, &c);
                size_t got;
                if (src->buf) {
                        got = vmq_iov_from_buf(in, e.nin, VMQ_VSOCK_HDR_SIZE, src->buf + src->off,
                                               chunk);
                } else {
                        got = vmq_iov_copy(in, e.nin, VMQ_VSOCK_HDR_SIZE, src->iov, src->n,
                                           VMQ_VSOCK_HDR_SIZE + src->off, chunk);
                }
                (void)got; /* both sides were measured: got == chunk */
                src->off += chunk;
                done += chunk;
                vmq_virtq_push(dst->rx, e.head, VMQ_VSOCK_HDR_SIZE + chunk);
                dst->rx_used = true;
                if (done == h->len) {
                        *all = true;
                        return done;
                }
        }
}

/* Once per call into the switch, not per packet: every endpoint whose rx
 * buffers were used since is notified, once. */
static void notify_rx_all(struct vmq_vsock_switch *sw) {
        for (struct vmq_vsock_ep *e = sw->eps; e; e = e->next) {
                if (e->rx_used && sw->ops.notify)
                        sw->ops.notify(sw->userdata, e, 0);
                e->rx_used = false;
        }
}

/* Keeps what is left of a packet for later; false when the backlog is
 * full (the packet is lost). */
static bool backlog(struct vmq_vsock_ep *dst, const struct vmq_vsock_hdr *h,
                    const struct source *src) {
        uint32_t left = h->len - (uint32_t)src->off;
        if (dst->npending >= VMQ_VSOCK_BACKLOG_PACKETS ||
            dst->pending_bytes + left > VMQ_VSOCK_BACKLOG_BYTES) {
                dst->st.dropped++;
                return false;
        }
        struct pending *p = malloc(sizeof(*p) + left);
        if (!p) {
                dst->st.dropped++;
                return false;
        }
        p->next = NULL;
        p->h = *h;
        p->h.len = left;
        p->off = 0;
        if (src->buf)
                memcpy(p->data, src->buf + src->off, left);
        else
                (void)vmq_iov_to_buf(src->iov, src->n, VMQ_VSOCK_HDR_SIZE + src->off, p->data,
                                     left);
        if (dst->tail)
                dst->tail->next = p;
        else
                dst->head = p;
        dst->tail = p;
        dst->npending++;
        dst->pending_bytes += left;
        dst->st.backlogged++;
        return true;
}

/* Delivers the backlog in order while dst has rx buffers. */
static void drain_backlog(struct vmq_vsock_ep *dst) {
        while (dst->head) {
                struct pending *p = dst->head;
                struct source src = {.buf = p->data + p->off};
                struct vmq_vsock_hdr h = p->h;
                h.len = p->h.len - p->off;
                bool all;
                uint32_t n = put_rx(dst, &h, &src, &all);
                p->off += n;
                dst->pending_bytes -= n;
                if (!all)
                        break;
                dst->head = p->next;
                if (!dst->head)
                        dst->tail = NULL;
                dst->npending--;
                free(p);
        }
}

/* Moves packet h to a guest: straight into its rx buffers unless packets
 * wait before it; what does not fit waits.  False when it was lost. */
static bool deliver_virtio(struct vmq_vsock_ep *dst, const struct vmq_vsock_hdr *h,
                           struct source *src) {
        bool ok = true;
        if (!dst->head) {
                bool all;
                (void)put_rx(dst, h, src, &all);
                if (!all)
                        ok = backlog(dst, h, src);
        } else {
                ok = backlog(dst, h, src);
        }
        return ok;
}

/* Hands packet h to a port, its payload in one piece. */
static bool deliver_port(struct vmq_vsock_ep *dst, const struct vmq_vsock_hdr *h,
                         struct source *src) {
        const uint8_t *data = dst->sw->scratch;
        if (src->buf)
                data = src->buf + src->off;
        else if (h->len)
                (void)vmq_iov_to_buf(src->iov, src->n, VMQ_VSOCK_HDR_SIZE + src->off,
                                     dst->sw->scratch, h->len);
        src->off += h->len;
        return dst->port_ops->receive(dst->userdata, dst, h, data);
}

static const struct ep_kind virtio_kind = {.deliver = deliver_virtio};
static const struct ep_kind port_kind = {.deliver = deliver_port};

static bool deliver(struct vmq_vsock_ep *dst, const struct vmq_vsock_hdr *h, struct source *src) {
        return dst->kind->deliver(dst, h, src);
}

/* A reset from (h's destination) to h's sender, on its behalf. */
static void reset_to(struct vmq_vsock_ep *to, uint64_t from_cid, uint32_t from_port,
                     uint32_t to_port, uint16_t type) {
        struct vmq_vsock_hdr r = {.src_cid = from_cid,
                                  .dst_cid = to->cid,
                                  .src_port = from_port,
                                  .dst_port = to_port,
                                  .type = type,
                                  .op = VMQ_VSOCK_OP_RST};
        struct source none = {.buf = (const uint8_t *)""};
        to->st.resets++;
        (void)deliver(to, &r, &none);
}

static void refuse(struct vmq_vsock_ep *from, const struct vmq_vsock_hdr *h) {
        if (h->op != VMQ_VSOCK_OP_RST)
                reset_to(from, h->dst_cid, h->dst_port, h->src_port, h->type);
}

/* Resets connection c: each end that has an endpoint (other than `gone`,
 * which is going away) gets a reset from the other. */
static void conn_reset(struct vmq_vsock_switch *sw, struct conn *c,
                       const struct vmq_vsock_ep *gone) {
        for (int s = 0; s < 2; s++) {
                struct vmq_vsock_ep *end = ep_find(sw, c->cid[s]);
                if (end && end != gone)
                        reset_to(end, c->cid[1 - s], c->port[1 - s], c->port[s], c->type);
        }
        conn_remove(sw, c);
}

unsigned vmq_vsock_switch_reset_between(struct vmq_vsock_switch *sw, uint64_t cid_a,
                                        uint64_t cid_b) {
        unsigned n = 0;
        enter(sw);
        for (uint32_t i = 0; i < VMQ_VSOCK_MAX_CONNS && sw->nconns > 0; i++) {
                struct conn *c = &sw->conns[i];
                if (c->state && ((c->cid[0] == cid_a && c->cid[1] == cid_b) ||
                                 (c->cid[0] == cid_b && c->cid[1] == cid_a))) {
                        conn_reset(sw, c, NULL);
                        n++;
                }
        }
        leave(sw);
        return n;
}

void vmq_vsock_ep_remove(struct vmq_vsock_ep *ep) {
        if (!ep)
                return;
        struct vmq_vsock_switch *sw = ep->sw;
        enter(sw);
        for (uint32_t i = 0; i < VMQ_VSOCK_MAX_CONNS && sw->nconns > 0; i++) {
                struct conn *c = &sw->conns[i];
                if (c->state && (c->cid[0] == ep->cid || c->cid[1] == ep->cid))
                        conn_reset(sw, c, ep);
        }
        for (struct vmq_vsock_ep **p = &sw->eps; *p; p = &(*p)->next)
                if (*p == ep) {
                        *p = ep->next;
                        break;
                }
        /* what it sent and the switch has not routed yet goes nowhere */
        for (struct deferred **p = &sw->dhead; *p;) {
                struct deferred *d = *p;
                if (d->from == ep) {
                        *p = d->next;
                        free(d);
                } else {
                        p = &d->next;
                }
        }
        sw->dtail = NULL;
        for (struct deferred *d = sw->dhead; d; d = d->next)
                sw->dtail = d;
        leave(sw); /* its peers' resets */
        while (ep->head) {
                struct pending *p = ep->head;
                ep->head = p->next;
                free(p);
        }
        free(ep);
}

/* One packet from `from` (already checked: its header, its source). */
static void route(struct vmq_vsock_ep *from, const struct vmq_vsock_hdr *h, struct source *src) {
        struct vmq_vsock_switch *sw = from->sw;
        struct vmq_vsock_ep *dst = ep_find(sw, h->dst_cid);
        int side = 0;
        struct conn *c = conn_find(sw, h->src_cid, h->src_port, h->dst_cid, h->dst_port, &side);

        switch (h->op) {
        case VMQ_VSOCK_OP_REQUEST:
                if (c || !dst || dst == from ||
                    !sw->ops.allowed(sw->userdata, from->cid, dst->cid) ||
                    !(c = conn_add(sw, h->src_cid, h->src_port, h->dst_cid, h->dst_port,
                                   h->type))) {
                        from->st.refused++;
                        refuse(from, h);
                        return;
                }
                break;
        case VMQ_VSOCK_OP_RST:
                if (!c)
                        return; /* nothing to reset */
                conn_remove(sw, c);
                if (dst)
                        (void)deliver(dst, h, src);
                return;
        case VMQ_VSOCK_OP_RESPONSE:
                /* only the side that was asked answers, once */
                if (!c || !dst || c->state != CONN_REQUESTED || side != 1) {
                        refuse(from, h);
                        return;
                }
                c->state = CONN_OPEN;
                break;
        default:
                if (!c || !dst || c->state != CONN_OPEN) {
                        refuse(from, h);
                        return;
                }
                break;
        }
        if (!deliver(dst, h, src)) {
                /* lost to a full backlog: the connection cannot go on */
                conn_remove(sw, c);
                refuse(from, h);
        }
}

/* Every public call that moves packets is framed by enter() and leave():
 * packets ports sent meanwhile go out at the end of the outermost call,
 * and then the guests whose rx buffers were used are notified. */
static void enter(struct vmq_vsock_switch *sw) {
        sw->depth++;
}

static void leave(struct vmq_vsock_switch *sw) {
        if (sw->depth == 1) {
                while (sw->dhead) {
                        struct deferred *d = sw->dhead;
                        sw->dhead = d->next;
                        if (!sw->dhead)
                                sw->dtail = NULL;
                        struct source src = {.buf = d->data};
                        route(d->from, &d->h, &src);
                        free(d);
                }
                notify_rx_all(sw); /* the receivers, and senders for resets */
        }
        sw->depth--;
}

void vmq_vsock_switch_hold(struct vmq_vsock_switch *sw) {
        enter(sw);
}

void vmq_vsock_switch_release(struct vmq_vsock_switch *sw) {
        leave(sw);
}

void vmq_vsock_ep_tx(struct vmq_vsock_ep *ep) {
        struct vmq_virtq_elem e;
        bool used = false;
        if (ep->kind != &virtio_kind)
                return;
        enter(ep->sw);
        while (vmq_virtq_pop(ep->tx, ep->mem, &e) == 1) {
                struct vmq_vsock_hdr h;
                ep->st.packets++;
                if (vmq_vsock_hdr_read(e.iov, e.nout, &h) < 0) {
                        ep->st.malformed++;
                } else if (h.src_cid != ep->cid) {
                        ep->st.forged++; /* the switch stamps nothing: it refuses */
                } else {
                        struct source src = {.iov = e.iov, .n = e.nout};
                        route(ep, &h, &src);
                }
                vmq_virtq_push(ep->tx, e.head, 0);
                used = true;
        }
        if (used && ep->sw->ops.notify)
                ep->sw->ops.notify(ep->sw->userdata, ep, 1);
        leave(ep->sw);
}

void vmq_vsock_ep_rx(struct vmq_vsock_ep *ep) {
        if (ep->kind != &virtio_kind)
                return;
        enter(ep->sw);
        drain_backlog(ep);
        leave(ep->sw);
}

int vmq_vsock_port_send(struct vmq_vsock_ep *ep, const struct vmq_vsock_hdr *h, const void *data) {
        struct vmq_vsock_switch *sw = ep->sw;
        if (ep->kind != &port_kind)
                return -EINVAL;
        ep->st.packets++;
        if (vmq_vsock_hdr_check(h) < 0 || (h->len && !data)) {
                ep->st.malformed++;
                return -EPROTO;
        }
        if (h->src_cid != ep->cid) {
                ep->st.forged++;
                return -EPERM;
        }
        if (sw->depth) {
                struct deferred *d = malloc(sizeof(*d) + h->len);
                if (!d)
                        return -ENOMEM;
                d->next = NULL;
                d->from = ep;
                d->h = *h;
                if (h->len)
                        memcpy(d->data, data, h->len);
                if (sw->dtail)
                        sw->dtail->next = d;
                else
                        sw->dhead = d;
                sw->dtail = d;
                return 0;
        }
        enter(sw);
        struct source src = {.buf = h->len ? data : (const uint8_t *)""};
        route(ep, h, &src);
        leave(sw);
        return 0;
}
