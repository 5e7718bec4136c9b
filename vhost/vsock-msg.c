/* SPDX-License-Identifier: MIT */
/* vsock connections carried as messages: see vsock-msg.h. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/util.h"
#include "vhost/vsock-msg.h"

/* The most payload put into one packet for a guest (the switch cuts it
 * to the guest's rx buffers). */
#define PACKET_MAX (32u * 1024u)

/* A message for the machine, waiting for room. */
struct qmsg {
        struct qmsg *next;
        uint32_t len;
        bool done;
        uint8_t data[];
};

struct conn {
        struct vmq_vsock_msgport *mp;
        struct conn *next;
        uint64_t guest_cid;
        uint32_t guest_port, port;
        uint16_t type;
        uint32_t channel;

        /* guest -> machine */
        struct qmsg *in_head, *in_tail;
        unsigned in_count;
        uint32_t in_bytes;
        uint8_t *rec; /* SEQPACKET: the record being put together */
        uint32_t rec_len;
        uint32_t fwd_cnt, fwd_announced;
        bool guest_done;    /* the guest sends no more (its end mark is queued) */
        bool guest_closing; /* ... and the connection ends once the queue is out */

        /* machine -> guest */
        void *out_buf; /* a message taken from the machine, not yet all sent */
        const uint8_t *out_data;
        size_t out_len, out_off;
        uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
        bool asked_credit;
        bool machine_done;
};

struct vmq_vsock_msgport {
        struct vmq_vsock_switch *sw;
        uint64_t cid;
        const struct vmq_vsock_msgport_ops *ops;
        void *userdata;
        struct vmq_vsock_ep *ep;
        struct conn *conns;
        unsigned nconns;
};

const char *vmq_vsock_msg_end_to_string(enum vmq_vsock_msg_end why) {
        switch (why) {
        case VMQ_VSOCK_MSG_END_DONE:
                return "both sides are done";
        case VMQ_VSOCK_MSG_END_GUEST_RESET:
                return "the guest reset it";
        case VMQ_VSOCK_MSG_END_CLOSED:
                return "the channel closed";
        case VMQ_VSOCK_MSG_END_OVERRUN:
                return "the guest sent more than its credit or its queue allows";
        case VMQ_VSOCK_MSG_END_RECORD:
                return "the guest sent a record larger than 64 KiB";
        case VMQ_VSOCK_MSG_END_GUEST_FULL:
                return "the machine sent a record larger than the guest's buffer";
        case VMQ_VSOCK_MSG_END_UNDELIVERABLE:
                return "a message could not be delivered";
        case VMQ_VSOCK_MSG_END_GONE:
                return "the machine went away";
        }
        return "?";
}

static struct conn *conn_find(struct vmq_vsock_msgport *mp, uint64_t guest_cid, uint32_t guest_port,
                              uint32_t port) {
        for (struct conn *c = mp->conns; c; c = c->next)
                if (c->guest_cid == guest_cid && c->guest_port == guest_port && c->port == port)
                        return c;
        return NULL;
}

static void send_pkt(struct vmq_vsock_msgport *mp, const struct conn *c, uint64_t guest_cid,
                     uint32_t guest_port, uint32_t port, uint16_t type, uint16_t op, uint32_t flags,
                     const void *data, uint32_t len) {
        struct vmq_vsock_hdr p = {.src_cid = mp->cid,
                                  .dst_cid = guest_cid,
                                  .src_port = port,
                                  .dst_port = guest_port,
                                  .len = len,
                                  .type = type,
                                  .op = op,
                                  .flags = flags,
                                  .buf_alloc = VMQ_VSOCK_MSG_BUF_ALLOC,
                                  .fwd_cnt = c ? c->fwd_cnt : 0};
        (void)vmq_vsock_port_send(mp->ep, &p, data);
}

static void conn_send(struct conn *c, uint16_t op, uint32_t flags, const void *data, uint32_t len) {
        send_pkt(c->mp, c, c->guest_cid, c->guest_port, c->port, c->type, op, flags, data, len);
        c->fwd_announced = c->fwd_cnt;
}

/* Ends a connection: the guest gets a reset unless it sent one, the
 * channel is closed. */
static void conn_end(struct conn *c, enum vmq_vsock_msg_end why) {
        struct vmq_vsock_msgport *mp = c->mp;

        if (why != VMQ_VSOCK_MSG_END_GUEST_RESET)
                conn_send(c, VMQ_VSOCK_OP_RST, 0, NULL, 0);
        mp->ops->close(mp->userdata, c->channel, c->guest_cid, why);
        for (struct conn **p = &mp->conns; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        mp->nconns--;
        while (c->in_head) {
                struct qmsg *m = c->in_head;
                c->in_head = m->next;
                free(m);
        }
        free(c->rec);
        free(c->out_buf);
        free(c);
}

/* Queues a message for the machine; false when the queue is full. */
static bool conn_queue(struct conn *c, const uint8_t *data, uint32_t len, bool done) {
        if (c->in_count >= VMQ_VSOCK_MSG_QUEUE_MAX)
                return false;
        struct qmsg *m = malloc(sizeof(*m) + len);
        if (!m)
                return false;
        m->next = NULL;
        m->len = len;
        m->done = done;
        if (len)
                memcpy(m->data, data, len);
        if (c->in_tail)
                c->in_tail->next = m;
        else
                c->in_head = m;
        c->in_tail = m;
        c->in_count++;
        c->in_bytes += len;
        return true;
}

/* Hands queued messages to the machine while it has room; false when the
 * connection ended. */
static bool conn_push(struct conn *c) {
        struct vmq_vsock_msgport *mp = c->mp;

        while (c->in_head) {
                struct qmsg *m = c->in_head;
                int r = mp->ops->send(mp->userdata, c->channel, m->data, m->len, m->done);
                if (r == -EAGAIN) {
                        mp->ops->retry(mp->userdata);
                        break;
                }
                if (r < 0) {
                        conn_end(c, r == -EPIPE ? VMQ_VSOCK_MSG_END_CLOSED
                                                : VMQ_VSOCK_MSG_END_UNDELIVERABLE);
                        return false;
                }
                c->in_head = m->next;
                if (!c->in_head)
                        c->in_tail = NULL;
                c->in_count--;
                c->in_bytes -= m->len;
                c->fwd_cnt += m->len;
                free(m);
        }
        if (!c->in_head && c->guest_closing) {
                conn_end(c, VMQ_VSOCK_MSG_END_DONE);
                return false;
        }
        /* the guest hears of its room once a quarter of the buffer is free */
        if (c->fwd_cnt - c->fwd_announced >= VMQ_VSOCK_MSG_BUF_ALLOC / 4)
                conn_send(c, VMQ_VSOCK_OP_CREDIT_UPDATE, 0, NULL, 0);
        return true;
}

static uint32_t peer_credit(const struct conn *c) {
        uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
        return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

static void want_credit(struct conn *c) {
        if (!c->asked_credit) {
                conn_send(c, VMQ_VSOCK_OP_CREDIT_REQUEST, 0, NULL, 0);
                c->asked_credit = true;
        }
}

static void drop_out(struct conn *c) {
        free(c->out_buf);
        c->out_buf = NULL;
        c->out_data = NULL;
        c->out_len = c->out_off = 0;
}

/* Sends one whole record of the machine's, in pieces, the last marked. */
static void send_record(struct conn *c, const uint8_t *data, size_t len) {
        size_t off = 0;
        do {
                uint32_t n = (uint32_t)VMQ_MIN(len - off, (size_t)PACKET_MAX);
                bool last = off + n == len;
                conn_send(c, VMQ_VSOCK_OP_RW, last ? VMQ_VSOCK_SEQ_EOM | VMQ_VSOCK_SEQ_EOR : 0,
                          data + off, n);
                off += n;
        } while (off < len);
        c->tx_cnt += (uint32_t)len;
}

/* Sends what the machine sent while the guest has credit for it; false
 * when the connection ended. */
static bool conn_pull(struct conn *c) {
        struct vmq_vsock_msgport *mp = c->mp;

        for (unsigned round = 0; round < 64; round++) {
                if (!c->out_buf) {
                        bool done = false;
                        int r = mp->ops->recv(mp->userdata, c->channel, &c->out_buf, &c->out_data,
                                              &c->out_len, &done);
                        if (r == -EAGAIN)
                                return true;
                        if (r < 0) {
                                c->out_buf = NULL;
                                conn_end(c, VMQ_VSOCK_MSG_END_CLOSED);
                                return false;
                        }
                        c->out_off = 0;
                        if (c->machine_done) {
                                drop_out(c); /* more after its end mark */
                                continue;
                        }
                        if (done) {
                                drop_out(c);
                                c->machine_done = true;
                                if (c->guest_done) {
                                        /* both ways done, once the machine
                                         * has what the guest sent */
                                        c->guest_closing = true;
                                        if (!c->in_head) {
                                                conn_end(c, VMQ_VSOCK_MSG_END_DONE);
                                                return false;
                                        }
                                        return true;
                                }
                                conn_send(c, VMQ_VSOCK_OP_SHUTDOWN, VMQ_VSOCK_SHUTDOWN_SEND, NULL,
                                          0);
                                continue;
                        }
                }
                uint32_t room = peer_credit(c);
                if (c->type == VMQ_VSOCK_TYPE_SEQPACKET) {
                        /* a record goes whole: the guest drops what exceeds
                         * its buffer */
                        if (c->out_len > c->peer_buf_alloc) {
                                conn_end(c, VMQ_VSOCK_MSG_END_GUEST_FULL);
                                return false;
                        }
                        if (room < c->out_len) {
                                want_credit(c);
                                return true;
                        }
                        send_record(c, c->out_data, c->out_len);
                        drop_out(c);
                        continue;
                }
                while (c->out_off < c->out_len) {
                        if (!room) {
                                want_credit(c);
                                return true;
                        }
                        uint32_t n = (uint32_t)VMQ_MIN(
                                VMQ_MIN(c->out_len - c->out_off, (size_t)room), (size_t)PACKET_MAX);
                        conn_send(c, VMQ_VSOCK_OP_RW, 0, c->out_data + c->out_off, n);
                        c->out_off += n;
                        c->tx_cnt += n;
                        room -= n;
                }
                drop_out(c);
        }
        return true;
}

/* A guest asks for a connection to port p->dst_port. */
static void guest_connects(struct vmq_vsock_msgport *mp, const struct vmq_vsock_hdr *p) {
        struct conn *c = NULL;
        uint32_t channel;

        if (mp->nconns >= VMQ_VSOCK_MSG_MAX_CONNS ||
            (p->type != VMQ_VSOCK_TYPE_STREAM && p->type != VMQ_VSOCK_TYPE_SEQPACKET))
                goto refuse;
        c = calloc(1, sizeof(*c));
        if (!c ||
            (p->type == VMQ_VSOCK_TYPE_SEQPACKET && !(c->rec = malloc(VMQ_VSOCK_MSG_RECORD_MAX))))
                goto refuse;
        if (mp->ops->open(mp->userdata, p->src_cid, p->src_port, p->dst_port,
                          p->type == VMQ_VSOCK_TYPE_SEQPACKET, &channel) < 0)
                goto refuse;
        c->mp = mp;
        c->guest_cid = p->src_cid;
        c->guest_port = p->src_port;
        c->port = p->dst_port;
        c->type = p->type;
        c->channel = channel;
        c->peer_buf_alloc = p->buf_alloc;
        c->peer_fwd_cnt = p->fwd_cnt;
        c->next = mp->conns;
        mp->conns = c;
        mp->nconns++;
        conn_send(c, VMQ_VSOCK_OP_RESPONSE, 0, NULL, 0);
        return;
refuse:
        if (c)
                free(c->rec);
        free(c);
        send_pkt(mp, NULL, p->src_cid, p->src_port, p->dst_port, p->type, VMQ_VSOCK_OP_RST, 0, NULL,
                 0);
}

/* Payload from the guest; how the connection ends if it broke a rule. */
static bool guest_data(struct conn *c, const struct vmq_vsock_hdr *p, const uint8_t *data,
                       enum vmq_vsock_msg_end *why) {
        *why = VMQ_VSOCK_MSG_END_OVERRUN;
        if (c->guest_done || p->len > VMQ_VSOCK_MSG_BUF_ALLOC - c->in_bytes - c->rec_len)
                return false; /* after its shutdown, or past its credit */
        if (c->type == VMQ_VSOCK_TYPE_SEQPACKET) {
                if (p->len > VMQ_VSOCK_MSG_RECORD_MAX - c->rec_len) {
                        *why = VMQ_VSOCK_MSG_END_RECORD;
                        return false;
                }
                if (p->len)
                        memcpy(c->rec + c->rec_len, data, p->len);
                c->rec_len += p->len;
                if (!(p->flags & VMQ_VSOCK_SEQ_EOM))
                        return true;
                bool ok = conn_queue(c, c->rec, c->rec_len, false);
                c->rec_len = 0;
                return ok;
        }
        for (uint32_t off = 0; off < p->len;) {
                uint32_t n = VMQ_MIN(p->len - off, VMQ_VSOCK_MSG_CHUNK);
                if (!conn_queue(c, data + off, n, false))
                        return false;
                off += n;
        }
        return true;
}

static bool port_receive(void *userdata, struct vmq_vsock_ep *ep, const struct vmq_vsock_hdr *p,
                         const uint8_t *data) {
        struct vmq_vsock_msgport *mp = userdata;
        enum vmq_vsock_msg_end why;
        (void)ep;

        struct conn *c = conn_find(mp, p->src_cid, p->src_port, p->dst_port);
        if (!c) {
                if (p->op == VMQ_VSOCK_OP_REQUEST)
                        guest_connects(mp, p);
                return true; /* anything else: the switch knows no such connection either */
        }
        c->peer_buf_alloc = p->buf_alloc;
        c->peer_fwd_cnt = p->fwd_cnt;
        switch (p->op) {
        case VMQ_VSOCK_OP_RST:
                conn_end(c, VMQ_VSOCK_MSG_END_GUEST_RESET);
                return true;
        case VMQ_VSOCK_OP_SHUTDOWN:
                if ((p->flags & VMQ_VSOCK_SHUTDOWN_SEND) && !c->guest_done) {
                        if (!conn_queue(c, NULL, 0, true)) {
                                conn_end(c, VMQ_VSOCK_MSG_END_OVERRUN);
                                return true;
                        }
                        c->guest_done = true;
                }
                /* reading no more either, or nothing more to read: done
                 * once the machine has what the guest sent */
                if (c->guest_done && ((p->flags & VMQ_VSOCK_SHUTDOWN_RCV) || c->machine_done))
                        c->guest_closing = true;
                break;
        case VMQ_VSOCK_OP_RW:
                if (!guest_data(c, p, data, &why)) {
                        conn_end(c, why);
                        return true;
                }
                break;
        case VMQ_VSOCK_OP_CREDIT_REQUEST:
                conn_send(c, VMQ_VSOCK_OP_CREDIT_UPDATE, 0, NULL, 0);
                break;
        default:
                break;
        }
        if (peer_credit(c) > 0)
                c->asked_credit = false;
        if (conn_push(c))
                (void)conn_pull(c);
        return true;
}

static const struct vmq_vsock_port_ops port_ops = {.receive = port_receive};

int vmq_vsock_msgport_new(struct vmq_vsock_switch *sw, uint64_t cid,
                          const struct vmq_vsock_msgport_ops *ops, void *userdata,
                          struct vmq_vsock_msgport **ret) {
        struct vmq_vsock_msgport *mp = calloc(1, sizeof(*mp));
        if (!mp)
                return -ENOMEM;
        mp->sw = sw;
        mp->cid = cid;
        mp->ops = ops;
        mp->userdata = userdata;
        int r = vmq_vsock_port_add(sw, cid, &port_ops, mp, &mp->ep);
        if (r < 0) {
                free(mp);
                return r;
        }
        *ret = mp;
        return 0;
}

struct vmq_vsock_msgport *vmq_vsock_msgport_free(struct vmq_vsock_msgport *mp) {
        if (!mp)
                return NULL;
        vmq_vsock_switch_hold(mp->sw);
        while (mp->conns)
                conn_end(mp->conns, VMQ_VSOCK_MSG_END_GONE);
        vmq_vsock_switch_release(mp->sw);
        vmq_vsock_ep_remove(mp->ep);
        free(mp);
        return NULL;
}

void vmq_vsock_msgport_run(struct vmq_vsock_msgport *mp) {
        vmq_vsock_switch_hold(mp->sw);
        for (struct conn *c = mp->conns, *next; c; c = next) {
                next = c->next;
                if (conn_push(c))
                        (void)conn_pull(c);
        }
        vmq_vsock_switch_release(mp->sw);
}

unsigned vmq_vsock_msgport_conns(const struct vmq_vsock_msgport *mp) {
        return mp ? mp->nconns : 0;
}
