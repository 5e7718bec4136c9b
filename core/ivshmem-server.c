/* SPDX-License-Identifier: MIT */
/*
 * The ivshmem-doorbell server.
 *
 * How it works
 * ------------
 * QEMU's ivshmem protocol is one-way: the server talks, clients only
 * listen.  Every message is a little-endian int64, sent as one sendmsg(),
 * optionally carrying one fd by SCM_RIGHTS.  A new client is sent, in this
 * order: the protocol version; its own id; -1 with the region's fd; for each
 * other peer (the server first, then the clients by id) that peer's id with
 * each of its eventfds in vector order; finally its own id with each of its
 * own eventfds.  Every other client is then sent the new id with each of its
 * eventfds, and when a client goes, the others are sent its id alone ("peer
 * gone").  QEMU reads the first three messages synchronously while it
 * realizes the device (so it is in the listen backlog, blocked, until we
 * accept) and the rest from its main loop, which runs even while the VM is
 * paused.
 *
 * The server is peer 0 (VMQ_IVSHMEM_MONITOR_PEER): it is simply peers[0]
 * with no socket, so every loop that announces peers treats it like the
 * others, and the doorbells guests ring at it are its own eventfds, which
 * sit in the epoll set.  peers[] is indexed by id; clients take the lowest
 * free id, so ids stay small (QEMU sizes its peer table by the highest id).
 *
 * Never blocking: every socket is non-blocking and every send is
 * MSG_DONTWAIT.  There is no output queue: a send that would block (or
 * fails in any way) dooms that client, whose stream would otherwise be
 * missing a message.  That is sound because the bursts are bounded (see
 * VMQ_IVSHMEM_MAX_VECTORS), and a client that lets a whole socket buffer of
 * announcements pile up is not reading at all.  The send buffer is raised
 * with SO_SNDBUFFORCE when we are allowed to, for slack.
 *
 * Dooming, not dropping: a send fails in the middle of a loop over peers,
 * and dropping a peer sends "gone" to the others, which can doom more.  So
 * a failing send only marks its peer doomed (doomed peers are skipped by
 * every later send), and reap() drops doomed peers one at a time once the
 * operation is complete, until none is left.  Callbacks run only between
 * such steps, when the peer table is consistent, so they may re-enter
 * _notify() and _kick().
 *
 * Epoll tags carry a kind and, for client sockets, a connection serial
 * number rather than a pointer or an id: an event still pending for a
 * client dropped earlier in the same batch finds no peer with that serial
 * and is ignored, even if its id was handed out again meanwhile.
 *
 * Clients never send.  Readability on a client socket is therefore either
 * EOF or a misbehaving client, and both end the connection; the server never
 * reads from a client, so it never receives fds it would have to close.
 */
#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/ivshmem-server.h"
#include "core/util.h"
#include "core/vmq-abi.h"

#define SNDBUF_WANTED (1 << 20)
#define EVENTS_PER_PROCESS 32
#define ACCEPTS_PER_PROCESS 16

enum tag_kind { TAG_LISTEN = 1, TAG_DOORBELL = 2, TAG_CLIENT = 3 };

#define TAG(kind, value) (((uint64_t)(kind) << 32) | (uint32_t)(value))
#define TAG_KIND(t) ((unsigned)((t) >> 32))
#define TAG_VALUE(t) ((uint32_t)(t))

struct peer {
        uint16_t id;
        bool doomed;
        uint32_t serial; /* clients only */
        int sock_fd;     /* -1 for the server itself */
        pid_t pid;
        uid_t uid;
        int eventfds[VMQ_IVSHMEM_MAX_VECTORS];
};

struct vmq_ivshmem_server {
        int epoll_fd;
        int listen_fd;
        int shm_fd;
        char *socket_path; /* set once bound: free() unlinks it */
        unsigned n_vectors;
        unsigned n_clients;
        uint32_t next_serial;
        struct vmq_ivshmem_server_ops ops;
        void *userdata;
        struct peer *peers[VMQ_IVSHMEM_MAX_PEERS + 1]; /* [0]: the server */
};

static struct peer *peer_free(struct peer *p) {
        if (!p)
                return NULL;
        vmq_close(p->sock_fd);
        for (unsigned i = 0; i < VMQ_IVSHMEM_MAX_VECTORS; i++)
                vmq_close(p->eventfds[i]);
        free(p);
        return NULL;
}

static int peer_new(uint16_t id, unsigned n_vectors, struct peer **ret) {
        struct peer *p = calloc(1, sizeof(*p));

        if (!p)
                return -ENOMEM;
        p->id = id;
        p->sock_fd = -1;
        for (unsigned i = 0; i < VMQ_IVSHMEM_MAX_VECTORS; i++)
                p->eventfds[i] = -1;
        for (unsigned i = 0; i < n_vectors; i++) {
                p->eventfds[i] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (p->eventfds[i] < 0) {
                        int r = -errno;
                        peer_free(p);
                        return r;
                }
        }
        *ret = p;
        return 0;
}

/* One protocol message: a little-endian int64, with `fd` attached if >= 0. */
static int send_msg(int sock_fd, int64_t value, int fd) {
        uint64_t le = htole64((uint64_t)value);
        struct iovec iov = {.iov_base = &le, .iov_len = sizeof(le)};
        union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } control;
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
        ssize_t n;

        if (fd >= 0) {
                struct cmsghdr *c;

                memset(&control, 0, sizeof(control));
                msg.msg_control = control.buf;
                msg.msg_controllen = sizeof(control.buf);
                c = CMSG_FIRSTHDR(&msg);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        do
                n = sendmsg(sock_fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        /* A partial message would desynchronise the stream for good. */
        if ((size_t)n != sizeof(le))
                return -EAGAIN;
        return 0;
}

/* Sends to client `to`, dooming it on failure. */
static void send_or_doom(struct peer *to, int64_t value, int fd) {
        if (to->doomed)
                return;
        if (send_msg(to->sock_fd, value, fd) < 0)
                to->doomed = true;
}

/* Tells client `to` about every vector of peer `about`. */
static void announce(struct vmq_ivshmem_server *srv, struct peer *to, const struct peer *about) {
        for (unsigned v = 0; v < srv->n_vectors; v++)
                send_or_doom(to, about->id, about->eventfds[v]);
}

static struct peer *find_client(struct vmq_ivshmem_server *srv, uint16_t id) {
        if (id == VMQ_IVSHMEM_MONITOR_PEER || id > VMQ_IVSHMEM_MAX_PEERS)
                return NULL;
        return srv->peers[id];
}

/* Takes a client out of the table and tells the others; no callback. */
static void remove_client(struct vmq_ivshmem_server *srv, struct peer *p) {
        assert(p->sock_fd >= 0 && srv->peers[p->id] == p);

        (void)epoll_ctl(srv->epoll_fd, EPOLL_CTL_DEL, p->sock_fd, NULL);
        srv->peers[p->id] = NULL;
        srv->n_clients--;
        for (unsigned i = 1; i <= VMQ_IVSHMEM_MAX_PEERS; i++)
                if (srv->peers[i])
                        send_or_doom(srv->peers[i], p->id, -1);
        peer_free(p);
}

/*
 * Drops doomed clients, one at a time, until none is left (telling the
 * others that one has gone can doom another), reporting each.  Callbacks
 * may kick or doom further clients: the loop picks those up too.
 */
static void reap(struct vmq_ivshmem_server *srv) {
        for (;;) {
                struct peer *victim = NULL;
                uint16_t id;

                for (unsigned i = 1; i <= VMQ_IVSHMEM_MAX_PEERS && !victim; i++)
                        if (srv->peers[i] && srv->peers[i]->doomed)
                                victim = srv->peers[i];
                if (!victim)
                        return;
                id = victim->id;
                remove_client(srv, victim);
                if (srv->ops.peer_left)
                        srv->ops.peer_left(srv->userdata, srv, id);
        }
}

/* Sets up one accepted connection; takes ownership of sock_fd. */
static int add_client(struct vmq_ivshmem_server *srv, int sock_fd) {
        _cleanup_close_ int fd = sock_fd;
        struct peer *p = NULL;
        struct ucred cred = {.pid = 0};
        socklen_t len = sizeof(cred);
        unsigned id;
        int r, size = SNDBUF_WANTED;

        if (srv->n_clients >= VMQ_IVSHMEM_MAX_PEERS)
                return -EBUSY; /* refused: the client sees its socket close */
        for (id = 1; id <= VMQ_IVSHMEM_MAX_PEERS; id++)
                if (!srv->peers[id])
                        break;
        assert(id <= VMQ_IVSHMEM_MAX_PEERS);

        r = peer_new((uint16_t)id, srv->n_vectors, &p);
        if (r < 0)
                return r;
        p->sock_fd = VMQ_TAKE_FD(fd);
        p->serial = srv->next_serial++;
        if (getsockopt(p->sock_fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
                p->pid = cred.pid;
                p->uid = cred.uid;
        }
        /* More room for the burst when privileged; the default suffices. */
        if (setsockopt(p->sock_fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0)
                (void)setsockopt(p->sock_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));

        /* Its own view first: version, id, region, the others, itself. */
        send_or_doom(p, VMQ_IVSHMEM_PROTOCOL_VERSION, -1);
        send_or_doom(p, p->id, -1);
        send_or_doom(p, -1, srv->shm_fd);
        for (unsigned i = 0; i <= VMQ_IVSHMEM_MAX_PEERS; i++)
                if (srv->peers[i])
                        announce(srv, p, srv->peers[i]);
        announce(srv, p, p);
        if (p->doomed) {
                peer_free(p);
                return -EAGAIN;
        }

        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = TAG(TAG_CLIENT, p->serial)};
        if (epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, p->sock_fd, &ev) < 0) {
                r = -errno;
                peer_free(p);
                return r;
        }
        srv->peers[id] = p;
        srv->n_clients++;

        for (unsigned i = 1; i <= VMQ_IVSHMEM_MAX_PEERS; i++)
                if (i != id && srv->peers[i])
                        announce(srv, srv->peers[i], p);

        if (srv->ops.peer_joined)
                srv->ops.peer_joined(srv->userdata, srv, (uint16_t)id);
        return 0;
}

static int handle_listen(struct vmq_ivshmem_server *srv) {
        for (unsigned n = 0; n < ACCEPTS_PER_PROCESS; n++) {
                int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

                if (fd < 0) {
                        switch (errno) {
                        case EAGAIN:
                                return 0;
                        case EINTR:
                        case ECONNABORTED:
                        case EPROTO:
                        case EPERM:
                                continue;
                        default:
                                return -errno;
                        }
                }
                /* Per-client failures (full, out of eventfds) only refuse
                 * that client, whose socket add_client() closes. */
                (void)add_client(srv, fd);
                reap(srv);
        }
        return 0;
}

static void handle_doorbell(struct vmq_ivshmem_server *srv, unsigned vector) {
        uint64_t count;

        if (vector >= srv->n_vectors)
                return;
        if (read(srv->peers[0]->eventfds[vector], &count, sizeof(count)) != sizeof(count))
                return; /* EAGAIN: nothing after all */
        if (srv->ops.doorbell)
                srv->ops.doorbell(srv->userdata, srv, vector);
}

static void handle_client(struct vmq_ivshmem_server *srv, uint32_t serial) {
        for (unsigned i = 1; i <= VMQ_IVSHMEM_MAX_PEERS; i++) {
                struct peer *p = srv->peers[i];

                if (p && p->serial == serial) {
                        /* EOF, error, or a client talking: all end it. */
                        p->doomed = true;
                        reap(srv);
                        return;
                }
        }
        /* A client dropped earlier in this batch: nothing to do. */
}

int vmq_ivshmem_server_process(struct vmq_ivshmem_server *srv) {
        struct epoll_event events[EVENTS_PER_PROCESS];
        int n, r = 0;

        if (!srv)
                return -EINVAL;
        n = epoll_wait(srv->epoll_fd, events, EVENTS_PER_PROCESS, 0);
        if (n < 0)
                return errno == EINTR ? 0 : -errno;
        for (int i = 0; i < n; i++) {
                uint64_t tag = events[i].data.u64;

                switch (TAG_KIND(tag)) {
                case TAG_LISTEN: {
                        int k = handle_listen(srv);
                        if (k < 0 && r == 0)
                                r = k;
                        break;
                }
                case TAG_DOORBELL:
                        handle_doorbell(srv, TAG_VALUE(tag));
                        break;
                case TAG_CLIENT:
                        handle_client(srv, TAG_VALUE(tag));
                        break;
                default:
                        assert(!"unknown epoll tag");
                }
        }
        return r;
}

int vmq_ivshmem_server_notify(struct vmq_ivshmem_server *srv, uint16_t peer_id, unsigned vector) {
        struct peer *p;
        uint64_t one = 1;

        if (!srv)
                return -EINVAL;
        p = find_client(srv, peer_id);
        if (!p)
                return -ENOENT;
        if (vector >= srv->n_vectors)
                return -EINVAL;
        if (write(p->eventfds[vector], &one, sizeof(one)) != sizeof(one)) {
                /* EAGAIN: the counter is saturated, the ring is pending. */
                if (errno == EAGAIN)
                        return 0;
                return -errno;
        }
        return 0;
}

int vmq_ivshmem_server_kick(struct vmq_ivshmem_server *srv, uint16_t peer_id) {
        struct peer *p;

        if (!srv)
                return -EINVAL;
        p = find_client(srv, peer_id);
        if (!p)
                return -ENOENT;
        remove_client(srv, p);
        /* Telling the others may have doomed some of them. */
        reap(srv);
        return 0;
}

int vmq_ivshmem_server_peer_cred(struct vmq_ivshmem_server *srv, uint16_t peer_id, pid_t *ret_pid,
                                 uid_t *ret_uid) {
        struct peer *p;

        if (!srv)
                return -EINVAL;
        p = find_client(srv, peer_id);
        if (!p)
                return -ENOENT;
        if (ret_pid)
                *ret_pid = p->pid;
        if (ret_uid)
                *ret_uid = p->uid;
        return 0;
}

unsigned vmq_ivshmem_server_n_peers(struct vmq_ivshmem_server *srv) {
        return srv ? srv->n_clients : 0;
}

int vmq_ivshmem_server_get_fd(struct vmq_ivshmem_server *srv) {
        return srv ? srv->epoll_fd : -EINVAL;
}

struct vmq_ivshmem_server *vmq_ivshmem_server_free(struct vmq_ivshmem_server *srv) {
        if (!srv)
                return NULL;
        for (unsigned i = 0; i <= VMQ_IVSHMEM_MAX_PEERS; i++)
                srv->peers[i] = peer_free(srv->peers[i]);
        if (srv->socket_path) {
                (void)unlink(srv->socket_path);
                free(srv->socket_path);
        }
        vmq_close(srv->listen_fd);
        vmq_close(srv->shm_fd);
        vmq_close(srv->epoll_fd);
        free(srv);
        return NULL;
}

/* Removes a stale socket at `path`; anything else there is an error. */
static int unlink_stale_socket(const char *path) {
        struct stat st;

        if (lstat(path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISSOCK(st.st_mode))
                return -EEXIST;
        if (unlink(path) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

static int watch(struct vmq_ivshmem_server *srv, int fd, uint64_t tag) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};

        return epoll_ctl(srv->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

int vmq_ivshmem_server_new(const char *socket_path, int shm_fd, unsigned n_vectors,
                           const struct vmq_ivshmem_server_ops *ops, void *userdata,
                           struct vmq_ivshmem_server **ret) {
        struct vmq_ivshmem_server *srv;
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct stat st;
        int r;

        if (!socket_path || !*socket_path || shm_fd < 0 || !ret)
                return -EINVAL;
        if (n_vectors == 0 || n_vectors > VMQ_IVSHMEM_MAX_VECTORS)
                return -EINVAL;
        if (strlen(socket_path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        if (fstat(shm_fd, &st) < 0)
                return -errno;
        /* QEMU asserts that BAR 2 is a power of two, and refuses a region
         * smaller than a page ("backing store size does not match"). */
        if (!S_ISREG(st.st_mode) || st.st_size < sysconf(_SC_PAGESIZE) ||
            !VMQ_IS_POW2((uint64_t)st.st_size))
                return -EINVAL;

        srv = calloc(1, sizeof(*srv));
        if (!srv)
                return -ENOMEM;
        srv->epoll_fd = srv->listen_fd = srv->shm_fd = -1;
        srv->n_vectors = n_vectors;
        srv->userdata = userdata;
        srv->next_serial = 1;
        if (ops)
                srv->ops = *ops;

        srv->shm_fd = fcntl(shm_fd, F_DUPFD_CLOEXEC, 3);
        if (srv->shm_fd < 0)
                goto fail_errno;
        srv->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (srv->epoll_fd < 0)
                goto fail_errno;

        r = peer_new(VMQ_IVSHMEM_MONITOR_PEER, n_vectors, &srv->peers[0]);
        if (r < 0)
                goto fail;
        for (unsigned v = 0; v < n_vectors; v++) {
                r = watch(srv, srv->peers[0]->eventfds[v], TAG(TAG_DOORBELL, v));
                if (r < 0)
                        goto fail;
        }

        srv->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (srv->listen_fd < 0)
                goto fail_errno;
        /* Linux creates the socket file with the socket inode's mode (less
         * the umask): this closes most of the window before the chmod. */
        (void)fchmod(srv->listen_fd, 0660);
        r = unlink_stale_socket(socket_path);
        if (r < 0)
                goto fail;
        strcpy(sa.sun_path, socket_path);
        if (bind(srv->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                goto fail_errno;
        srv->socket_path = strdup(socket_path);
        if (!srv->socket_path) {
                (void)unlink(socket_path);
                r = -ENOMEM;
                goto fail;
        }
        if (chmod(socket_path, 0660) < 0)
                goto fail_errno;
        if (listen(srv->listen_fd, SOMAXCONN) < 0)
                goto fail_errno;
        r = watch(srv, srv->listen_fd, TAG(TAG_LISTEN, 0));
        if (r < 0)
                goto fail;

        *ret = srv;
        return 0;

fail_errno:
        r = -errno;
fail:
        vmq_ivshmem_server_free(srv);
        return r;
}
