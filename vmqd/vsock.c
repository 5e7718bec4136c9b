/* SPDX-License-Identifier: MIT */
/*
 * vmqd's vhost-user-vsock backend (see vsock.h): one listening socket per
 * machine that has a CID, the vhost-user connection QEMU makes to it, the
 * kick eventfds on the event loop, and one vsock switch for all of them.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/eventfd.h>
#include <sys/un.h>
#include <unistd.h>
#include <systemd/sd-event.h>

#include "core/monitor.h"
#include "core/util.h"
#include "vhost/vhost-user.h"
#include "vmqd/channel.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"
#include "vmqd/vsock-bridge.h"
#include "vmqd/vsock-host.h"
#include "vmqd/vsock.h"

/* How long a frontend may take to finish a message it began, or to take
 * our answer, before it is disconnected. */
#define FRONTEND_STALL_USEC (1000 * 1000)

struct vsock_device {
        struct manager *manager;
        struct machine *machine;
        char *path;
        int listen_fd;
        sd_event_source *listen_source;

        int conn_fd; /* the frontend, or -1 */
        sd_event_source *conn_source;
        struct vmq_vhost_dev dev;
        sd_event_source *kick_source[VMQ_VHOST_QUEUES];
        int kick_watched[VMQ_VHOST_QUEUES]; /* the fd each source watches, or -1 */
        struct vmq_vsock_ep *ep;            /* in the switch while both queues run */

        char *host_path; /* where host programs connect (vsock-host.h) */
        int host_fd;
        sd_event_source *host_source;
};

/* ---- the switch, one per vmqd ---- */

struct machine *vsock_machine_by_cid(struct manager *m, uint64_t cid) {
        if (cid < 3 || cid > VMQD_VSOCK_CID_MAX)
                return NULL;
        for (struct machine *mc = m->machines; mc; mc = mc->next)
                if (mc->vsock_cid == cid || mc->vsock_peer_cid == cid)
                        return mc;
        return NULL;
}

uint32_t vsock_cid_of(const struct machine *mc) {
        return mc->vsock_cid ? mc->vsock_cid : mc->vsock_peer_cid;
}

/* Is a channel between machines a and b open in the monitor now? */
static bool channel_open_between(struct manager *m, const char *a, const char *b,
                                 const struct channel *except) {
        for (struct channel *c = m->channels; c; c = c->next) {
                struct vmq_channel_info info;
                if (c == except || !channel_has_end(c, a) || !channel_has_end(c, b))
                        continue;
                if (vmq_channel_get_info(m->monitor, c->id, &info) >= 0 && info.open)
                        return true;
        }
        return false;
}

bool vsock_channel_open(struct manager *m, const char *a, const char *b) {
        return channel_open_between(m, a, b, NULL);
}

static bool switch_allowed(void *userdata, uint64_t from_cid, uint64_t to_cid) {
        struct manager *m = userdata;
        struct machine *from = vsock_machine_by_cid(m, from_cid),
                       *to = vsock_machine_by_cid(m, to_cid);

        /* The host and a guest: the host's side is the UNIX sockets, and
         * their file modes say who may use them. */
        if (from_cid == VMQ_VSOCK_CID_HOST || to_cid == VMQ_VSOCK_CID_HOST)
                return from || to;
        if (!from || !to || from == to)
                return false;
        return channel_open_between(m, from->name, to->name, NULL);
}

static void switch_notify(void *userdata, struct vmq_vsock_ep *ep, unsigned queue) {
        struct vsock_device *d = vmq_vsock_ep_userdata(ep);
        struct vmq_vhost_vring *v = &d->dev.vring[queue];
        (void)userdata;

        if (v->call < 0 || !vmq_virtq_need_call(&v->q))
                return;
        uint64_t one = 1;
        /* A full counter (EAGAIN) has a notification pending already. */
        (void)!write(v->call, &one, sizeof(one));
}

static const struct vmq_vsock_switch_ops switch_ops = {
        .allowed = switch_allowed,
        .notify = switch_notify,
};

struct vmq_vsock_switch *vsock_get_switch(struct manager *m) {
        if (m->vsock_switch)
                return m->vsock_switch;
        if (vmq_vsock_switch_new(&switch_ops, m, &m->vsock_switch) < 0)
                return NULL;
        if (vsock_host_new(m, m->vsock_switch) < 0) {
                m->vsock_switch = vmq_vsock_switch_free(m->vsock_switch);
                return NULL;
        }
        return m->vsock_switch;
}

void vsock_service_free(struct manager *m) {
        vsock_host_free(m);
        m->vsock_switch = vmq_vsock_switch_free(m->vsock_switch);
}

uint32_t vsock_free_cid(struct manager *m) {
        for (uint32_t cid = 3; cid <= VMQD_VSOCK_CID_MAX; cid++)
                if (!vsock_machine_by_cid(m, cid) &&
                    !vmqd_state_find_machine_by_vsock_cid(&m->state, cid))
                        return cid;
        return 0;
}

void vsock_channel_closed(struct manager *m, const char *a, const char *b) {
        struct machine *ma = manager_find_machine(m, a), *mb = manager_find_machine(m, b);

        if (!m->vsock_switch || !ma || !mb || !vsock_cid_of(ma) || !vsock_cid_of(mb))
                return;
        if (channel_open_between(m, a, b, NULL))
                return;
        unsigned n =
                vmq_vsock_switch_reset_between(m->vsock_switch, vsock_cid_of(ma), vsock_cid_of(mb));
        if (n)
                log_info("vsock: %u connection(s) between '%s' and '%s' reset: their channel "
                         "closed",
                         n, a, b);
}

void vsock_channel_opened(struct manager *m, const char *a, const char *b) {
        struct machine *ma = manager_find_machine(m, a), *mb = manager_find_machine(m, b);

        if (!ma || !mb || !ma->vsock_cid == !mb->vsock_cid)
                return; /* the host, or both with a device, or neither */
        struct machine *peer = ma->vsock_cid ? mb : ma;
        int r = vsock_bridge_attach(m, peer);
        if (r < 0)
                log_warning_errno(r, "Machine '%s' gets no vsock CID: %m", peer->name);
}

/* ---- one device ---- */

static void device_leave_switch(struct vsock_device *d) {
        if (!d->ep)
                return;
        vmq_vsock_ep_remove(d->ep);
        d->ep = NULL;
        log_info("Machine '%s': vsock CID %" PRIu32 " stopped", d->machine->name,
                 d->machine->vsock_cid);
}

/*
 * Serves queue i.  tx: until the driver has nothing more there and has been
 * asked to kick for its next packet.  rx: a kick means new buffers, and
 * buffers waiting there are the normal state, so the driver is asked to
 * kick for the next ones first, and then the backlog takes what it can.
 */
static void device_serve(struct vsock_device *d, unsigned i) {
        struct vmq_virtq *q = &d->dev.vring[i].q;
        if (i == 0) {
                (void)vmq_virtq_arm(q);
                vmq_vsock_ep_rx(d->ep);
                return;
        }
        do
                vmq_vsock_ep_tx(d->ep);
        while (vmq_virtq_arm(q) && !q->broken);
}

static int on_kick(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct vsock_device *d = userdata;
        uint64_t n;
        (void)revents;

        (void)!read(fd, &n, sizeof(n)); /* non-blocking: EAGAIN is fine */
        if (!d->ep)
                return 0;
        for (unsigned i = 0; i < VMQ_VHOST_QUEUES; i++)
                if (s == d->kick_source[i])
                        device_serve(d, i);
        return 0;
}

/* After each message: the kick sources follow the kick fds, and the device
 * is in the switch exactly while both queues run. */
static void device_sync(struct vsock_device *d) {
        struct manager *m = d->manager;

        for (unsigned i = 0; i < VMQ_VHOST_QUEUES; i++) {
                int fd = d->dev.vring[i].kick;
                if (fd == d->kick_watched[i])
                        continue;
                d->kick_source[i] = sd_event_source_disable_unref(d->kick_source[i]);
                d->kick_watched[i] = -1;
                if (fd < 0)
                        continue;
                if (sd_event_add_io(m->event, &d->kick_source[i], fd, EPOLLIN, on_kick, d) < 0) {
                        log_warning("Machine '%s': vsock: cannot watch queue %u's kick fd",
                                    d->machine->name, i);
                        continue;
                }
                d->kick_watched[i] = fd;
        }
        bool ready = vmq_vhost_vring_ready(&d->dev, 0) && vmq_vhost_vring_ready(&d->dev, 1) &&
                     d->kick_watched[0] >= 0 && d->kick_watched[1] >= 0;
        if (!ready) {
                device_leave_switch(d);
                return;
        }
        if (d->ep)
                return;
        struct vmq_vsock_switch *sw = vsock_get_switch(m);
        int r = sw ? vmq_vsock_ep_add(sw, d->machine->vsock_cid, &d->dev.mem, &d->dev.vring[0].q,
                                      &d->dev.vring[1].q, d, &d->ep)
                   : -ENOMEM;
        if (r < 0) {
                log_warning("Machine '%s': vsock: cannot join the switch as CID %" PRIu32 ": %s",
                            d->machine->name, d->machine->vsock_cid, strerror(-r));
                return;
        }
        d->machine->vsock_restart_needed = false;
        log_info("Machine '%s': vsock CID %" PRIu32 " running", d->machine->name,
                 d->machine->vsock_cid);
        /* Buffers the driver put there before we watched. */
        device_serve(d, 0);
        device_serve(d, 1);
}

static void device_disconnect(struct vsock_device *d, const char *why) {
        if (d->conn_fd < 0)
                return;
        device_leave_switch(d);
        for (unsigned i = 0; i < VMQ_VHOST_QUEUES; i++) {
                d->kick_source[i] = sd_event_source_disable_unref(d->kick_source[i]);
                d->kick_watched[i] = -1;
        }
        d->conn_source = sd_event_source_disable_unref(d->conn_source);
        d->conn_fd = vmq_close(d->conn_fd);
        vmq_vhost_dev_reset(&d->dev);
        log_info("Machine '%s': vsock frontend disconnected: %s", d->machine->name, why);
}

static int on_frontend(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct vsock_device *d = userdata;
        struct vmq_vhost_msg msg, reply;
        int fds[VMQ_VHOST_MAX_FDS];
        unsigned nfds = 0;
        int result = 0;
        (void)s;
        (void)revents;

        int r = vmq_vhost_recv(fd, &msg, fds, &nfds);
        if (r == -ECONNRESET) {
                device_disconnect(d, "it closed the connection");
                return 0;
        }
        if (r < 0) {
                char why[96];
                snprintf(why, sizeof(why), "a broken message (%s)",
                         r == -EAGAIN ? "cut short" : strerror(-r));
                device_disconnect(d, why);
                return 0;
        }
        bool answer = vmq_vhost_handle(&d->dev, &msg, fds, nfds, &reply, &result);
        if (result < 0)
                log_notice("Machine '%s': vsock: %s refused: %s", d->machine->name,
                           vmq_vhost_request_to_string(msg.request), strerror(-result));
        if (answer && vmq_vhost_send(fd, &reply) < 0) {
                device_disconnect(d, "it does not take its answers");
                return 0;
        }
        device_sync(d);
        return 0;
}

static int on_connect(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct vsock_device *d = userdata;
        (void)s;
        (void)revents;

        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
                return 0; /* EAGAIN, or the client gave up */
        if (d->conn_fd >= 0) {
                log_notice("Machine '%s': vsock: a second frontend refused", d->machine->name);
                (void)close(c);
                return 0;
        }
        struct timeval tv = {.tv_sec = FRONTEND_STALL_USEC / 1000000,
                             .tv_usec = FRONTEND_STALL_USEC % 1000000};
        if (setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
            setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
            sd_event_add_io(d->manager->event, &d->conn_source, c, EPOLLIN, on_frontend, d) < 0) {
                log_warning("Machine '%s': vsock: cannot serve a frontend", d->machine->name);
                (void)close(c);
                return 0;
        }
        d->conn_fd = c;
        log_info("Machine '%s': vsock frontend connected", d->machine->name);
        return 0;
}

static struct vsock_device *device_free(struct vsock_device *d) {
        if (!d)
                return NULL;
        device_disconnect(d, "the device is removed");
        d->listen_source = sd_event_source_disable_unref(d->listen_source);
        if (d->listen_fd >= 0) {
                (void)close(d->listen_fd);
                (void)unlink(d->path);
        }
        d->host_source = sd_event_source_disable_unref(d->host_source);
        if (d->host_fd >= 0) {
                (void)close(d->host_fd);
                (void)unlink(d->host_path);
        }
        vsock_host_drop(d->manager, d->machine->vsock_cid);
        free(d->host_path);
        vmq_vhost_dev_reset(&d->dev);
        free(d->path);
        free(d);
        return NULL;
}

/* A listening UNIX socket at path (a stale one there is replaced): its fd,
 * or -errno. */
static int listen_at(const char *path, int backlog) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        memcpy(sa.sun_path, path, strlen(path) + 1);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        (void)unlink(path); /* a socket a vmqd before us left */
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, backlog) < 0) {
                int r = -errno;
                (void)close(fd);
                return r;
        }
        return fd;
}

static int on_host_connect(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct vsock_device *d = userdata;
        (void)s;
        (void)revents;

        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (c >= 0)
                vsock_host_accept(d->manager, d->machine->vsock_cid, c);
        return 0;
}

int vsock_device_new(struct manager *m, struct machine *mc, uid_t uid, gid_t gid) {
        struct vsock_device *d;
        int r;

        if (mc->vsock_cid < 3 || mc->vsock_cid > VMQD_VSOCK_CID_MAX)
                return -EINVAL;
        for (struct machine *o = m->machines; o; o = o->next)
                if (o != mc && o->vsock && o->vsock_cid == mc->vsock_cid)
                        return -EEXIST;
        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->manager = m;
        d->machine = mc;
        d->listen_fd = d->conn_fd = d->host_fd = -1;
        d->kick_watched[0] = d->kick_watched[1] = -1;
        vmq_vhost_dev_init(&d->dev, mc->vsock_cid);
        if (asprintf(&d->path, "%s/vsock-%s.sock", m->runtime_dir, mc->name) < 0) {
                d->path = NULL;
                r = -ENOMEM;
                goto fail;
        }
        if (asprintf(&d->host_path, "%s/vsock-%s.host", m->runtime_dir, mc->name) < 0) {
                d->host_path = NULL;
                r = -ENOMEM;
                goto fail;
        }
        if (!vsock_get_switch(m)) {
                r = -ENOMEM;
                goto fail;
        }
        r = listen_at(d->path, 2);
        if (r < 0)
                goto fail;
        d->listen_fd = r;
        if (uid != 0 && chown(d->path, uid, gid) < 0)
                log_warning_errno(errno, "Machine '%s': cannot hand socket '%s' to QEMU's user: %m",
                                  mc->name, d->path);
        (void)chmod(d->path, 0660);
        r = sd_event_add_io(m->event, &d->listen_source, d->listen_fd, EPOLLIN, on_connect, d);
        if (r < 0)
                goto fail;
        /* The host side stays vmqd's user's: who may reach the guest's
         * ports is the administrator's to widen. */
        r = listen_at(d->host_path, 64);
        if (r < 0)
                goto fail;
        d->host_fd = r;
        (void)chmod(d->host_path, 0600);
        r = sd_event_add_io(m->event, &d->host_source, d->host_fd, EPOLLIN, on_host_connect, d);
        if (r < 0)
                goto fail;
        mc->vsock = d;
        log_info("Machine '%s': vsock CID %" PRIu32 ", socket %s, host socket %s", mc->name,
                 mc->vsock_cid, d->path, d->host_path);
        return 0;
fail:
        device_free(d);
        return r;
}

/* ---- serving the socket while the loop is blocked ---- */

struct vsock_assist {
        struct vsock_device *d;
        pthread_t thread;
        int stop_fd;
};

/*
 * The loop's own callbacks, called from this thread: the loop is blocked
 * in libvirt until vsock_assist_end() joins us, so nothing else touches the
 * device, the switch or the event loop meanwhile, and the join orders our
 * writes before its next reads.  Kicks wait: QEMU keeps the guest's CPUs
 * stopped until its start is done.
 */
static void *assist_thread(void *arg) {
        struct vsock_assist *a = arg;
        struct vsock_device *d = a->d;

        for (;;) {
                struct pollfd p[3] = {{.fd = a->stop_fd, .events = POLLIN},
                                      {.fd = d->listen_fd, .events = POLLIN},
                                      {.fd = d->conn_fd, .events = POLLIN}};
                if (poll(p, 3, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[0].revents)
                        break;
                if (p[1].revents)
                        (void)on_connect(NULL, d->listen_fd, 0, d);
                if (p[2].revents && d->conn_fd >= 0 && d->conn_fd == p[2].fd)
                        (void)on_frontend(NULL, d->conn_fd, 0, d);
        }
        return NULL;
}

struct vsock_assist *vsock_assist_begin(struct machine *mc) {
        struct vsock_device *d = mc->vsock;
        struct vsock_assist *a;

        if (!d || d->listen_fd < 0)
                return NULL;
        a = calloc(1, sizeof(*a));
        if (!a)
                return NULL;
        a->d = d;
        a->stop_fd = eventfd(0, EFD_CLOEXEC);
        if (a->stop_fd < 0 || pthread_create(&a->thread, NULL, assist_thread, a) != 0) {
                log_warning("Machine '%s': vsock: no thread to serve QEMU while it starts: its "
                            "start may time out",
                            mc->name);
                vmq_close(a->stop_fd);
                free(a);
                return NULL;
        }
        return a;
}

void vsock_assist_end(struct vsock_assist *a) {
        if (!a)
                return;
        uint64_t one = 1;
        (void)!write(a->stop_fd, &one, sizeof(one));
        (void)pthread_join(a->thread, NULL);
        vmq_close(a->stop_fd);
        free(a);
}

void vsock_device_free(struct machine *mc) {
        mc->vsock = device_free(mc->vsock);
}

const char *vsock_device_socket(const struct machine *mc) {
        return mc->vsock ? mc->vsock->path : "";
}

const char *vsock_device_host_socket(const struct machine *mc) {
        return mc->vsock ? mc->vsock->host_path : "";
}

bool vsock_device_connected(const struct machine *mc) {
        return mc->vsock && mc->vsock->conn_fd >= 0;
}

bool vsock_device_running(const struct machine *mc) {
        return mc->vsock && mc->vsock->ep;
}

void vsock_device_stats(const struct machine *mc, struct vmq_vsock_stats *ret) {
        memset(ret, 0, sizeof(*ret));
        if (mc->vsock && mc->vsock->ep)
                vmq_vsock_ep_stats(mc->vsock->ep, ret);
}
