/* SPDX-License-Identifier: MIT */
/* The host's end of vsock: see vsock-host.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <systemd/sd-event.h>

#include "core/util.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"
#include "vmqd/vsock-host.h"
#include "vmqd/vsock-identity.h"
#include "vmqd/vsock.h"

/* "CONNECT 4294967295\n" and a little slack. */
#define LINE_MAX_LEN 32u
/* The most bytes read from a socket for one packet. */
#define READ_CHUNK (32u * 1024u)
/* Ephemeral host ports for host-initiated connections. */
#define PORT_FIRST 49152u

enum hc_state {
        HC_LINE,      /* a host program is writing its CONNECT line */
        HC_REQUESTED, /* the guest was asked */
        HC_OPEN,
};

struct host_conn {
        struct vsock_host *h;
        struct host_conn *next;
        enum hc_state state;
        uint32_t guest_cid, guest_port, host_port;
        int fd;
        sd_event_source *source;
        struct vsock_identity *ident; /* the other end of fd, when it is vmqd's */
        char line[LINE_MAX_LEN];
        size_t line_len;

        /* guest -> socket: bytes not yet written, at most VSOCK_HOST_BUF_ALLOC */
        uint8_t *out;
        size_t out_len;
        uint32_t fwd_cnt;       /* the guest's bytes the socket took */
        uint32_t fwd_announced; /* the fwd_cnt the guest was last told */

        /* socket -> guest */
        uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
        bool asked_credit; /* a CREDIT_REQUEST is out */
        bool eof;          /* the program will send no more */
        bool peer_done;    /* the guest will send no more: close once out is written */
};

struct vsock_host {
        struct manager *manager;
        struct vmq_vsock_ep *ep;
        struct host_conn *conns;
        unsigned nconns;
        uint32_t next_port;
        uint8_t buf[READ_CHUNK];
};

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata);

/* ---- connections ---- */

static struct host_conn *conn_find(struct vsock_host *h, uint32_t guest_cid, uint32_t guest_port,
                                   uint32_t host_port) {
        for (struct host_conn *c = h->conns; c; c = c->next)
                if (c->state != HC_LINE && c->guest_cid == guest_cid &&
                    c->guest_port == guest_port && c->host_port == host_port)
                        return c;
        return NULL;
}

static void conn_free(struct host_conn *c) {
        struct vsock_host *h = c->h;
        for (struct host_conn **p = &h->conns; *p; p = &(*p)->next)
                if (*p == c) {
                        *p = c->next;
                        break;
                }
        h->nconns--;
        c->source = sd_event_source_disable_unref(c->source);
        vmq_close(c->fd);
        c->ident = vsock_identity_free(c->ident);
        free(c->out);
        free(c);
}

static struct host_conn *conn_new(struct vsock_host *h, int fd) {
        if (h->nconns >= VSOCK_HOST_MAX_CONNS)
                return NULL;
        struct host_conn *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->out = malloc(VSOCK_HOST_BUF_ALLOC);
        if (!c->out || sd_event_add_io(h->manager->event, &c->source, fd, EPOLLIN, on_io, c) < 0) {
                free(c->out);
                free(c);
                return NULL;
        }
        c->h = h;
        c->fd = fd;
        c->next = h->conns;
        h->conns = c;
        h->nconns++;
        return c;
}

/* Sends a packet of this connection to its guest. */
static void send_pkt(struct host_conn *c, uint16_t op, uint32_t flags, const void *data,
                     uint32_t len) {
        struct vmq_vsock_hdr p = {.src_cid = VMQ_VSOCK_CID_HOST,
                                  .dst_cid = c->guest_cid,
                                  .src_port = c->host_port,
                                  .dst_port = c->guest_port,
                                  .len = len,
                                  .type = VMQ_VSOCK_TYPE_STREAM,
                                  .op = op,
                                  .flags = flags,
                                  .buf_alloc = VSOCK_HOST_BUF_ALLOC,
                                  .fwd_cnt = c->fwd_cnt};
        if (vmq_vsock_port_send(c->h->ep, &p, data) == 0)
                c->fwd_announced = c->fwd_cnt;
}

/* Ends a connection: the guest is sent a reset (unless it sent one). */
static void conn_reset(struct host_conn *c, bool tell_guest) {
        if (tell_guest && c->state != HC_LINE)
                send_pkt(c, VMQ_VSOCK_OP_RST, 0, NULL, 0);
        conn_free(c);
}

/* How many more bytes the guest has room for. */
static uint32_t peer_credit(const struct host_conn *c) {
        uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
        return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/* The events the socket is watched for, from the connection's state. */
static void conn_watch(struct host_conn *c) {
        uint32_t ev = 0;
        if (c->state == HC_LINE || (c->state == HC_OPEN && !c->eof && peer_credit(c) > 0))
                ev |= EPOLLIN;
        if (c->out_len)
                ev |= EPOLLOUT;
        if (ev) {
                (void)sd_event_source_set_io_events(c->source, ev);
                (void)sd_event_source_set_enabled(c->source, SD_EVENT_ON);
        } else {
                (void)sd_event_source_set_enabled(c->source, SD_EVENT_OFF);
        }
}

/* Writes what the guest sent into the socket; false when the connection
 * ended (the program went away). */
static bool conn_flush(struct host_conn *c) {
        size_t done = 0;
        while (done < c->out_len) {
                ssize_t n = send(c->fd, c->out + done, c->out_len - done, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        break;
                if (n <= 0) {
                        conn_reset(c, true);
                        return false;
                }
                done += (size_t)n;
        }
        memmove(c->out, c->out + done, c->out_len - done);
        c->out_len -= done;
        c->fwd_cnt += (uint32_t)done;
        if (c->peer_done && !c->out_len) {
                conn_reset(c, true); /* both ways done: the host side closes */
                return false;
        }
        /* tell the guest of its room once a quarter of the buffer is free again */
        if (c->fwd_cnt - c->fwd_announced >= VSOCK_HOST_BUF_ALLOC / 4)
                send_pkt(c, VMQ_VSOCK_OP_CREDIT_UPDATE, 0, NULL, 0);
        return true;
}

/* Reads from the socket for the guest while it has room. */
static void conn_read(struct host_conn *c) {
        struct vsock_host *h = c->h;
        for (unsigned round = 0; round < 8; round++) {
                uint32_t room = peer_credit(c);
                if (!room) {
                        if (!c->asked_credit) {
                                send_pkt(c, VMQ_VSOCK_OP_CREDIT_REQUEST, 0, NULL, 0);
                                c->asked_credit = true;
                        }
                        break;
                }
                ssize_t n = recv(c->fd, h->buf, VMQ_MIN(room, READ_CHUNK), 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        break;
                if (n < 0) {
                        conn_reset(c, true);
                        return;
                }
                if (n == 0) {
                        /* the program sends no more; it may still read */
                        c->eof = true;
                        send_pkt(c, VMQ_VSOCK_OP_SHUTDOWN, VMQ_VSOCK_SHUTDOWN_SEND, NULL, 0);
                        break;
                }
                send_pkt(c, VMQ_VSOCK_OP_RW, 0, h->buf, (uint32_t)n);
                c->tx_cnt += (uint32_t)n;
        }
        conn_watch(c);
}

/* A free host port for a connection to this guest. */
static uint32_t pick_port(struct vsock_host *h, uint32_t guest_cid, uint32_t guest_port) {
        for (unsigned tries = 0; tries < 65536; tries++) {
                uint32_t p = h->next_port++;
                if (h->next_port < PORT_FIRST)
                        h->next_port = PORT_FIRST;
                if (!conn_find(h, guest_cid, guest_port, p))
                        return p;
        }
        return 0;
}

/* The CONNECT line of a host program. */
static void conn_line(struct host_conn *c) {
        struct vsock_host *h = c->h;
        ssize_t n = recv(c->fd, c->line + c->line_len, sizeof(c->line) - 1 - c->line_len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0) {
                conn_free(c);
                return;
        }
        c->line_len += (size_t)n;
        c->line[c->line_len] = '\0';
        char *nl = strchr(c->line, '\n');
        if (!nl) {
                if (c->line_len == sizeof(c->line) - 1) {
                        log_notice("vsock: a host program's CONNECT line is too long: closed");
                        conn_free(c);
                }
                return;
        }
        /* Bytes after the line would be the stream's first: a program must
         * wait for OK before it sends. */
        unsigned long port;
        char *end;
        if (nl[1] != '\0' || strncmp(c->line, "CONNECT ", 8) != 0 || c->line[8] < '0' ||
            c->line[8] > '9' || (errno = 0, port = strtoul(c->line + 8, &end, 10), errno) ||
            port > UINT32_MAX || (*end != '\n' && !(*end == '\r' && end[1] == '\n'))) {
                log_notice("vsock: a host program sent no valid CONNECT line: closed");
                conn_free(c);
                return;
        }
        c->guest_port = (uint32_t)port;
        c->host_port = pick_port(h, c->guest_cid, c->guest_port);
        if (!c->host_port) {
                conn_free(c);
                return;
        }
        c->state = HC_REQUESTED;
        conn_watch(c);
        /* the guest's answer, or the switch's refusal, comes back through
         * host_receive() */
        send_pkt(c, VMQ_VSOCK_OP_REQUEST, 0, NULL, 0);
}

static void conn_event(struct host_conn *c, uint32_t revents) {
        if (c->state == HC_LINE) {
                conn_line(c);
                return;
        }
        if ((revents & EPOLLOUT) && !conn_flush(c))
                return;
        if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                if (c->state == HC_OPEN && !c->eof) {
                        conn_read(c);
                        return;
                }
                if (revents & (EPOLLHUP | EPOLLERR)) {
                        conn_reset(c, true); /* gone before the guest answered */
                        return;
                }
        }
        conn_watch(c);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct host_conn *c = userdata;
        struct vmq_vsock_switch *sw = c->h->manager->vsock_switch;
        (void)s;
        (void)fd;

        /* Answers to what we send (a refusal, a reset) come at the release,
         * when c is no longer looked at: they may free it. */
        vmq_vsock_switch_hold(sw);
        conn_event(c, revents);
        vmq_vsock_switch_release(sw);
        return 0;
}

/* ---- packets from guests ---- */

/* A guest asks for a connection to host port P: the program listening on
 * <runtime>/vsock-<name>.host_<P> gets it. */
static void guest_connects(struct vsock_host *h, const struct vmq_vsock_hdr *p) {
        struct manager *m = h->manager;
        struct machine *mc = vsock_machine_by_cid(m, p->src_cid);
        struct host_conn tmp = {.h = h,
                                .guest_cid = (uint32_t)p->src_cid,
                                .guest_port = p->src_port,
                                .host_port = p->dst_port};
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct vsock_identity *ident = NULL;
        int fd = -1;

        if (!mc || p->type != VMQ_VSOCK_TYPE_STREAM)
                goto refuse;
        if (p->dst_port == VSOCK_IDENTITY_PORT) {
                /* vmqd answers: the service's socketpair stands in for a
                 * host program's socket */
                if (vsock_identity_new(m, (uint32_t)p->src_cid, &ident, &fd) < 0)
                        goto refuse;
        } else {
                int len = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/vsock-%s.host_%" PRIu32,
                                   m->runtime_dir, mc->name, p->dst_port);
                if (len < 0 || (size_t)len >= sizeof(sa.sun_path))
                        goto refuse;
                fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                        goto refuse; /* nobody listens, or its backlog is full */
        }
        struct host_conn *c = conn_new(h, fd);
        if (!c)
                goto refuse;
        c->ident = ident;
        c->state = HC_OPEN;
        c->guest_cid = tmp.guest_cid;
        c->guest_port = tmp.guest_port;
        c->host_port = tmp.host_port;
        c->peer_buf_alloc = p->buf_alloc;
        c->peer_fwd_cnt = p->fwd_cnt;
        send_pkt(c, VMQ_VSOCK_OP_RESPONSE, 0, NULL, 0);
        conn_watch(c);
        return;
refuse:
        vmq_close(fd);
        (void)vsock_identity_free(ident);
        tmp.h = h;
        send_pkt(&tmp, VMQ_VSOCK_OP_RST, 0, NULL, 0);
}

static bool host_receive(void *userdata, struct vmq_vsock_ep *ep, const struct vmq_vsock_hdr *p,
                         const uint8_t *data) {
        struct vsock_host *h = userdata;
        (void)ep;

        if (p->src_cid > UINT32_MAX)
                return true; /* no guest has it: the switch let it through as a reset */
        struct host_conn *c = conn_find(h, (uint32_t)p->src_cid, p->src_port, p->dst_port);
        if (!c) {
                if (p->op == VMQ_VSOCK_OP_REQUEST)
                        guest_connects(h, p);
                return true; /* anything else: the switch knows no such connection either */
        }
        c->peer_buf_alloc = p->buf_alloc;
        c->peer_fwd_cnt = p->fwd_cnt;
        switch (p->op) {
        case VMQ_VSOCK_OP_RESPONSE: {
                if (c->state != HC_REQUESTED)
                        break;
                char ok[24];
                int n = snprintf(ok, sizeof(ok), "OK %" PRIu32 "\n", c->host_port);
                /* a fresh socket has room for a line */
                if (send(c->fd, ok, (size_t)n, MSG_NOSIGNAL) != n) {
                        conn_reset(c, true);
                        return true;
                }
                c->state = HC_OPEN;
                break;
        }
        case VMQ_VSOCK_OP_RST:
                conn_free(c);
                return true;
        case VMQ_VSOCK_OP_SHUTDOWN:
                if (p->flags & VMQ_VSOCK_SHUTDOWN_SEND) {
                        /* the program reads EOF once the rest is written */
                        c->peer_done = true;
                        if (!c->out_len) {
                                conn_reset(c, true);
                                return true;
                        }
                }
                break;
        case VMQ_VSOCK_OP_RW:
                if (c->state != HC_OPEN || c->peer_done ||
                    p->len > VSOCK_HOST_BUF_ALLOC - c->out_len) {
                        /* more than the credit it was given: the guest broke the rules */
                        log_notice("vsock: CID %" PRIu32 " overran a host connection's buffer: "
                                   "reset",
                                   c->guest_cid);
                        conn_reset(c, true);
                        return true;
                }
                memcpy(c->out + c->out_len, data, p->len);
                c->out_len += p->len;
                if (!conn_flush(c))
                        return true;
                break;
        case VMQ_VSOCK_OP_CREDIT_REQUEST:
                send_pkt(c, VMQ_VSOCK_OP_CREDIT_UPDATE, 0, NULL, 0);
                break;
        case VMQ_VSOCK_OP_CREDIT_UPDATE:
        default:
                break;
        }
        if (peer_credit(c) > 0)
                c->asked_credit = false;
        conn_watch(c);
        return true;
}

static const struct vmq_vsock_port_ops host_ops = {.receive = host_receive};

/* ---- the service ---- */

int vsock_host_new(struct manager *m, struct vmq_vsock_switch *sw) {
        struct vsock_host *h = calloc(1, sizeof(*h));
        if (!h)
                return -ENOMEM;
        h->manager = m;
        h->next_port = PORT_FIRST;
        int r = vmq_vsock_port_add(sw, VMQ_VSOCK_CID_HOST, &host_ops, h, &h->ep);
        if (r < 0) {
                free(h);
                return r;
        }
        m->vsock_host = h;
        return 0;
}

void vsock_host_free(struct manager *m) {
        struct vsock_host *h = m->vsock_host;
        if (!h)
                return;
        while (h->conns)
                conn_free(h->conns);
        vmq_vsock_ep_remove(h->ep);
        free(h);
        m->vsock_host = NULL;
}

void vsock_host_accept(struct manager *m, uint32_t cid, int fd) {
        struct vsock_host *h = m->vsock_host;
        struct host_conn *c = h ? conn_new(h, fd) : NULL;
        if (!c) {
                log_notice("vsock: a host connection to CID %" PRIu32 " refused: %s", cid,
                           h ? "too many" : "no switch");
                vmq_close(fd);
                return;
        }
        c->state = HC_LINE;
        c->guest_cid = cid;
}

void vsock_host_drop(struct manager *m, uint32_t cid) {
        struct vsock_host *h = m->vsock_host;
        if (!h)
                return;
        vmq_vsock_switch_hold(h->manager->vsock_switch);
        for (struct host_conn *c = h->conns, *next; c; c = next) {
                next = c->next;
                if (c->guest_cid == cid)
                        conn_reset(c, true);
        }
        vmq_vsock_switch_release(h->manager->vsock_switch);
}

unsigned vsock_host_conns(const struct manager *m, uint32_t cid) {
        unsigned n = 0;
        if (m->vsock_host)
                for (const struct host_conn *c = m->vsock_host->conns; c; c = c->next)
                        n += c->guest_cid == cid;
        return n;
}
