/* SPDX-License-Identifier: MIT */
/* Machines without a vsock device as vsock peers: see vsock-bridge.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-event.h>

#include "core/monitor.h"
#include "core/util.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"
#include "vmqd/vsock-bridge.h"
#include "vmqd/vsock.h"

/* The most payload put into one packet for a guest (the switch cuts it
 * to the guest's rx buffers). */
#define PACKET_MAX (32u * 1024u)
/* A machine's queue was full: try again after this long, twice as long
 * each time nothing moved, up to RETRY_MAX_USEC (a machine that reads
 * nothing costs vmqd a wake-up a tenth of a second). */
#define RETRY_USEC 1000u
#define RETRY_MAX_USEC (100u * 1000u)

/* A message for the machine, waiting for room in its queue. */
struct bridge_msg {
        struct bridge_msg *next;
        uint32_t len;
        bool done; /* the empty VMQ_TAG_DONE */
        uint8_t data[];
};

struct bridge_conn {
        struct vsock_bridge *b;
        struct bridge_conn *next;
        uint32_t guest_cid, guest_port, port;
        uint16_t type;
        uint32_t channel;

        /* guest -> machine */
        struct bridge_msg *in_head, *in_tail;
        unsigned in_count;
        uint32_t in_bytes;
        uint8_t *rec; /* SEQPACKET: the record being put together */
        uint32_t rec_len;
        uint32_t fwd_cnt, fwd_announced;
        bool guest_done;    /* the guest sends no more (a DONE is queued) */
        bool guest_closing; /* ... and reads no more: end once the queue is out */

        /* machine -> guest */
        struct vmq_host_msg *out; /* taken from the channel, not yet all sent */
        uint32_t out_off;
        uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
        bool asked_credit;
        bool machine_done;
};

struct vsock_bridge {
        struct manager *manager;
        struct machine *machine;
        uint32_t cid;
        struct vmq_vsock_ep *ep;
        struct bridge_conn *conns;
        unsigned nconns;
        sd_event_source *retry;
        uint64_t retry_usec; /* the next wait; 0: RETRY_USEC */
        uint64_t pushed;     /* messages handed to the machine, ever */
};

/* ---- connections ---- */

static struct bridge_conn *conn_find(struct vsock_bridge *b, uint64_t guest_cid,
                                     uint32_t guest_port, uint32_t port) {
        for (struct bridge_conn *c = b->conns; c; c = c->next)
                if (c->guest_cid == guest_cid && c->guest_port == guest_port && c->port == port)
                        return c;
        return NULL;
}

static void send_pkt(struct vsock_bridge *b, const struct bridge_conn *c, uint32_t guest_cid,
                     uint32_t guest_port, uint32_t port, uint16_t type, uint16_t op, uint32_t flags,
                     const void *data, uint32_t len) {
        struct vmq_vsock_hdr p = {.src_cid = b->cid,
                                  .dst_cid = guest_cid,
                                  .src_port = port,
                                  .dst_port = guest_port,
                                  .len = len,
                                  .type = type,
                                  .op = op,
                                  .flags = flags,
                                  .buf_alloc = VSOCK_BRIDGE_BUF_ALLOC,
                                  .fwd_cnt = c ? c->fwd_cnt : 0};
        (void)vmq_vsock_port_send(b->ep, &p, data);
}

static void conn_send(struct bridge_conn *c, uint16_t op, uint32_t flags, const void *data,
                      uint32_t len) {
        send_pkt(c->b, c, c->guest_cid, c->guest_port, c->port, c->type, op, flags, data, len);
        c->fwd_announced = c->fwd_cnt;
}

/* Ends a connection: its channel is closed and forgotten, and the guest
 * gets a reset unless it sent one. */
static void conn_end(struct bridge_conn *c, bool tell_guest) {
        struct vsock_bridge *b = c->b;
        struct vmq_monitor *mon = b->manager->monitor;

        if (tell_guest)
                conn_send(c, VMQ_VSOCK_OP_RST, 0, NULL, 0);
        (void)vmq_channel_close(mon, c->channel);
        (void)vmq_channel_forget(mon, c->channel);
        for (struct bridge_conn **p = &b->conns; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        b->nconns--;
        while (c->in_head) {
                struct bridge_msg *msg = c->in_head;
                c->in_head = msg->next;
                free(msg);
        }
        free(c->rec);
        free(c->out);
        free(c);
}

/* Queues a message for the machine; false when the guest sent more than
 * its credit or its queue allows. */
static bool conn_queue(struct bridge_conn *c, const uint8_t *data, uint32_t len, bool done) {
        if (c->in_count >= VSOCK_BRIDGE_QUEUE_MAX)
                return false;
        struct bridge_msg *msg = malloc(sizeof(*msg) + len);
        if (!msg)
                return false;
        msg->next = NULL;
        msg->len = len;
        msg->done = done;
        if (len)
                memcpy(msg->data, data, len);
        if (c->in_tail)
                c->in_tail->next = msg;
        else
                c->in_head = msg;
        c->in_tail = msg;
        c->in_count++;
        c->in_bytes += len;
        return true;
}

static void arm_retry(struct vsock_bridge *b) {
        uint64_t now;
        int enabled = SD_EVENT_OFF;
        (void)sd_event_source_get_enabled(b->retry, &enabled);
        if (enabled != SD_EVENT_OFF)
                return; /* armed already */
        (void)sd_event_now(b->manager->event, CLOCK_MONOTONIC, &now);
        (void)sd_event_source_set_time(b->retry,
                                       now + (b->retry_usec ? b->retry_usec : RETRY_USEC));
        (void)sd_event_source_set_enabled(b->retry, SD_EVENT_ONESHOT);
}

/* Hands queued messages to the machine while its queue has room; false
 * when the connection ended. */
static bool conn_push(struct bridge_conn *c) {
        struct vmq_monitor *mon = c->b->manager->monitor;

        while (c->in_head) {
                struct bridge_msg *msg = c->in_head;
                int r = vmq_host_send(mon, c->channel, msg->data, msg->len,
                                      msg->done ? VMQ_TAG_DONE : 0);
                if (r == -EAGAIN) {
                        arm_retry(c->b);
                        break;
                }
                if (r < 0) {
                        /* closed (its CLOSE is on the way), or more than its
                         * window takes */
                        if (r != -EPIPE)
                                log_notice("vsock: a message from CID %" PRIu32 " to '%s' "
                                           "cannot be delivered: %s; connection reset",
                                           c->guest_cid, c->b->machine->name, strerror(-r));
                        conn_end(c, true);
                        return false;
                }
                c->in_head = msg->next;
                if (!c->in_head)
                        c->in_tail = NULL;
                c->in_count--;
                c->in_bytes -= msg->len;
                c->fwd_cnt += msg->len;
                c->b->pushed++;
                free(msg);
        }
        if (!c->in_head && c->guest_closing) {
                conn_end(c, true);
                return false;
        }
        /* the guest hears of its room once a quarter of the buffer is free */
        if (c->fwd_cnt - c->fwd_announced >= VSOCK_BRIDGE_BUF_ALLOC / 4)
                conn_send(c, VMQ_VSOCK_OP_CREDIT_UPDATE, 0, NULL, 0);
        return true;
}

static uint32_t peer_credit(const struct bridge_conn *c) {
        uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
        return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* Wants more credit than the guest gives now. */
static void want_credit(struct bridge_conn *c) {
        if (!c->asked_credit) {
                conn_send(c, VMQ_VSOCK_OP_CREDIT_REQUEST, 0, NULL, 0);
                c->asked_credit = true;
        }
}

/* Sends what the machine sent while the guest has credit for it; false
 * when the connection ended. */
static bool conn_pull(struct bridge_conn *c) {
        struct vmq_monitor *mon = c->b->manager->monitor;

        for (unsigned round = 0; round < 64; round++) {
                if (!c->out) {
                        int r = vmq_host_recv(mon, c->channel, 0, &c->out);
                        if (r == -ETIMEDOUT)
                                return true;
                        if (r < 0) {
                                /* closed and nothing left: the machine ended it */
                                c->out = NULL;
                                conn_end(c, true);
                                return false;
                        }
                        c->out_off = 0;
                }
                struct vmq_host_msg *msg = c->out;
                bool data = msg->kind == VMQ_DESC_INLINE || msg->kind == VMQ_DESC_PAGE;
                if (!data || c->machine_done) {
                        /* its HELLO, CLOSE, an error; or more after its DONE */
                        c->out = NULL;
                        free(msg);
                        continue;
                }
                if (msg->len == 0 && msg->tag == VMQ_TAG_DONE) {
                        c->out = NULL;
                        free(msg);
                        c->machine_done = true;
                        if (c->guest_done) {
                                /* both ways done, once the machine has
                                 * what the guest sent */
                                c->guest_closing = true;
                                if (!c->in_head) {
                                        conn_end(c, true);
                                        return false;
                                }
                                return true;
                        }
                        conn_send(c, VMQ_VSOCK_OP_SHUTDOWN, VMQ_VSOCK_SHUTDOWN_SEND, NULL, 0);
                        continue;
                }
                uint32_t room = peer_credit(c);
                if (c->type == VMQ_VSOCK_TYPE_SEQPACKET) {
                        /* a record goes whole: the guest drops what exceeds
                         * its buffer */
                        if (msg->len > c->peer_buf_alloc) {
                                log_notice("vsock: '%s' sent a record of %zu bytes, more than "
                                           "CID %" PRIu32 " can take (%" PRIu32 "): reset",
                                           c->b->machine->name, msg->len, c->guest_cid,
                                           c->peer_buf_alloc);
                                conn_end(c, true);
                                return false;
                        }
                        if (room < msg->len) {
                                want_credit(c);
                                return true;
                        }
                        for (uint32_t off = 0; off < msg->len || off == 0;) {
                                uint32_t n = (uint32_t)VMQ_MIN(msg->len - off, PACKET_MAX);
                                bool last = off + n == msg->len;
                                conn_send(c, VMQ_VSOCK_OP_RW,
                                          last ? VMQ_VSOCK_SEQ_EOM | VMQ_VSOCK_SEQ_EOR : 0,
                                          msg->data + off, n);
                                off += n;
                                if (last)
                                        break;
                        }
                        c->tx_cnt += (uint32_t)msg->len;
                        c->out = NULL;
                        free(msg);
                        continue;
                }
                while (c->out_off < msg->len) {
                        if (!room) {
                                want_credit(c);
                                return true;
                        }
                        uint32_t n =
                                (uint32_t)VMQ_MIN(VMQ_MIN(msg->len - c->out_off, room), PACKET_MAX);
                        conn_send(c, VMQ_VSOCK_OP_RW, 0, msg->data + c->out_off, n);
                        c->out_off += n;
                        c->tx_cnt += n;
                        room -= n;
                }
                c->out = NULL;
                free(msg);
        }
        return true;
}

/* A guest asks for a connection to port p->dst_port of the machine. */
static void guest_connects(struct vsock_bridge *b, const struct vmq_vsock_hdr *p) {
        struct manager *m = b->manager;
        struct machine *guest = vsock_machine_by_cid(m, p->src_cid);
        struct vmq_channel_config cfg;
        struct bridge_conn *c = NULL;
        uint32_t channel;
        int r;

        if (!guest || !guest->vm || !b->machine->vm || b->nconns >= VSOCK_BRIDGE_MAX_CONNS ||
            (p->type != VMQ_VSOCK_TYPE_STREAM && p->type != VMQ_VSOCK_TYPE_SEQPACKET))
                goto refuse;
        c = calloc(1, sizeof(*c));
        if (!c ||
            (p->type == VMQ_VSOCK_TYPE_SEQPACKET && !(c->rec = malloc(VSOCK_BRIDGE_RECORD_MAX))))
                goto refuse;
        vmq_channel_config_init(&cfg);
        cfg.host_depth = VSOCK_BRIDGE_DEPTH;
        cfg.speak_for = vmq_vm_id(guest->vm);
        cfg.hello_flags =
                VMQ_DESC_F_VSOCK | (p->type == VMQ_VSOCK_TYPE_SEQPACKET ? VMQ_DESC_F_SEQPACKET : 0);
        cfg.hello_tag = (uint64_t)p->src_port << 32 | p->dst_port;
        r = vmq_channel_open(m->monitor, VMQ_HOST_ID, vmq_vm_id(b->machine->vm), &cfg, &channel);
        if (r < 0) {
                log_notice("vsock: CID %" PRIu64 " cannot reach '%s' port %" PRIu32 ": %s",
                           p->src_cid, b->machine->name, p->dst_port,
                           r == -EAGAIN ? "its queue is full" : strerror(-r));
                goto refuse;
        }
        c->b = b;
        c->guest_cid = (uint32_t)p->src_cid;
        c->guest_port = p->src_port;
        c->port = p->dst_port;
        c->type = p->type;
        c->channel = channel;
        c->peer_buf_alloc = p->buf_alloc;
        c->peer_fwd_cnt = p->fwd_cnt;
        c->next = b->conns;
        b->conns = c;
        b->nconns++;
        conn_send(c, VMQ_VSOCK_OP_RESPONSE, 0, NULL, 0);
        return;
refuse:
        if (c)
                free(c->rec);
        free(c);
        send_pkt(b, NULL, (uint32_t)p->src_cid, p->src_port, p->dst_port, p->type, VMQ_VSOCK_OP_RST,
                 0, NULL, 0);
}

/* Payload from the guest; false when it broke the rules (reset). */
static bool guest_data(struct bridge_conn *c, const struct vmq_vsock_hdr *p, const uint8_t *data) {
        if (c->guest_done || p->len > VSOCK_BRIDGE_BUF_ALLOC - c->in_bytes - c->rec_len)
                return false; /* after its shutdown, or past its credit */
        if (c->type == VMQ_VSOCK_TYPE_SEQPACKET) {
                if (p->len > VSOCK_BRIDGE_RECORD_MAX - c->rec_len) {
                        log_notice("vsock: CID %" PRIu32 " sent '%s' a record of more than %u "
                                   "bytes: reset",
                                   c->guest_cid, c->b->machine->name, VSOCK_BRIDGE_RECORD_MAX);
                        return false;
                }
                memcpy(c->rec + c->rec_len, data, p->len);
                c->rec_len += p->len;
                if (!(p->flags & VMQ_VSOCK_SEQ_EOM))
                        return true;
                bool ok = conn_queue(c, c->rec, c->rec_len, false);
                c->rec_len = 0;
                return ok;
        }
        for (uint32_t off = 0; off < p->len;) {
                uint32_t n = VMQ_MIN(p->len - off, VSOCK_BRIDGE_CHUNK);
                if (!conn_queue(c, data + off, n, false))
                        return false;
                off += n;
        }
        return true;
}

static bool bridge_receive(void *userdata, struct vmq_vsock_ep *ep, const struct vmq_vsock_hdr *p,
                           const uint8_t *data) {
        struct vsock_bridge *b = userdata;
        (void)ep;

        if (p->src_cid > UINT32_MAX)
                return true;
        struct bridge_conn *c = conn_find(b, p->src_cid, p->src_port, p->dst_port);
        if (!c) {
                if (p->op == VMQ_VSOCK_OP_REQUEST)
                        guest_connects(b, p);
                return true; /* anything else: the switch knows no such connection either */
        }
        c->peer_buf_alloc = p->buf_alloc;
        c->peer_fwd_cnt = p->fwd_cnt;
        switch (p->op) {
        case VMQ_VSOCK_OP_RST:
                conn_end(c, false);
                return true;
        case VMQ_VSOCK_OP_SHUTDOWN:
                if ((p->flags & VMQ_VSOCK_SHUTDOWN_SEND) && !c->guest_done) {
                        if (!conn_queue(c, NULL, 0, true)) {
                                conn_end(c, true);
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
                if (!guest_data(c, p, data)) {
                        conn_end(c, true);
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

static const struct vmq_vsock_port_ops bridge_ops = {.receive = bridge_receive};

/* Moves what can move on every connection of b. */
static void bridge_run(struct vsock_bridge *b) {
        struct vmq_vsock_switch *sw = b->manager->vsock_switch;

        vmq_vsock_switch_hold(sw);
        for (struct bridge_conn *c = b->conns, *next; c; c = next) {
                next = c->next;
                if (conn_push(c))
                        (void)conn_pull(c);
        }
        vmq_vsock_switch_release(sw);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        struct vsock_bridge *b = userdata;
        uint64_t before = b->pushed;
        (void)s;
        (void)usec;
        /* nothing moved since the last try: wait longer next time */
        b->retry_usec = VMQ_MIN(b->retry_usec ? b->retry_usec * 2 : 2 * RETRY_USEC,
                                (uint64_t)RETRY_MAX_USEC);
        bridge_run(b);
        if (b->pushed != before) {
                b->retry_usec = 0;
                /* armed again by a push that found the queue full: sooner */
                int enabled = SD_EVENT_OFF;
                (void)sd_event_source_get_enabled(b->retry, &enabled);
                if (enabled != SD_EVENT_OFF) {
                        (void)sd_event_source_set_enabled(b->retry, SD_EVENT_OFF);
                        arm_retry(b);
                }
        }
        return 0;
}

/* ---- the service ---- */

int vsock_bridge_attach(struct manager *m, struct machine *mc) {
        if (mc->vsock_bridge || mc->vsock_cid)
                return 0;
        struct vmq_vsock_switch *sw = vsock_get_switch(m);
        if (!sw)
                return -ENOMEM;
        uint32_t cid = vsock_free_cid(m);
        if (!cid)
                return -ENOSPC;
        struct vsock_bridge *b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->manager = m;
        b->machine = mc;
        b->cid = cid;
        int r = sd_event_add_time(m->event, &b->retry, CLOCK_MONOTONIC, 0, 0, on_retry, b);
        if (r >= 0)
                r = sd_event_source_set_enabled(b->retry, SD_EVENT_OFF);
        if (r >= 0)
                r = vmq_vsock_port_add(sw, cid, &bridge_ops, b, &b->ep);
        if (r < 0) {
                sd_event_source_disable_unref(b->retry);
                free(b);
                return r;
        }
        mc->vsock_bridge = b;
        mc->vsock_peer_cid = cid;
        log_info("Machine '%s': reached over vsock at CID %" PRIu32 " (its messages are the "
                 "connections' data)",
                 mc->name, cid);
        return 0;
}

void vsock_bridge_free(struct machine *mc) {
        struct vsock_bridge *b = mc->vsock_bridge;
        if (!b)
                return;
        struct vmq_vsock_switch *sw = b->manager->vsock_switch;
        vmq_vsock_switch_hold(sw);
        while (b->conns)
                conn_end(b->conns, true);
        vmq_vsock_switch_release(sw);
        vmq_vsock_ep_remove(b->ep);
        sd_event_source_disable_unref(b->retry);
        free(b);
        mc->vsock_bridge = NULL;
        mc->vsock_peer_cid = 0;
}

void vsock_bridges_process(struct manager *m) {
        for (struct machine *mc = m->machines; mc; mc = mc->next)
                if (mc->vsock_bridge && mc->vsock_bridge->conns)
                        bridge_run(mc->vsock_bridge);
}

unsigned vsock_bridge_conns(const struct machine *mc) {
        return mc->vsock_bridge ? mc->vsock_bridge->nconns : 0;
}
