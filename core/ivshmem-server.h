/* SPDX-License-Identifier: MIT */
/*
 * An ivshmem-doorbell server: the host side of QEMU's ivshmem server
 * protocol (QEMU docs/specs/ivshmem-spec.rst), serving one shared memory
 * region to the QEMU guests (and any other ivshmem clients) that connect to
 * one UNIX socket.
 *
 * The server is itself a peer of the region, with the fixed id
 * VMQ_IVSHMEM_MONITOR_PEER (0) and its own n_vectors eventfds: every client
 * learns them like any other peer's, so a guest rings the monitor by writing
 * (VMQ_IVSHMEM_MONITOR_PEER << 16 | vector) to its doorbell register.
 * Clients get ids 1..VMQ_IVSHMEM_MAX_PEERS, the lowest free one first; an id
 * is free again as soon as its client has gone.
 *
 * Threads and events: the server is single-threaded and never blocks.  It
 * exposes one file descriptor (an epoll fd) to put in the caller's event
 * loop (sd-event: sd_event_add_io(..., EPOLLIN, ...)); whenever it is
 * readable, call vmq_ivshmem_server_process().  Events are reported through
 * the ops callbacks, from inside vmq_ivshmem_server_process() only.
 *
 * Nothing here logs: errors are negative errno values.
 */
#ifndef VMQ_IVSHMEM_SERVER_H
#define VMQ_IVSHMEM_SERVER_H

#include <stdint.h>
#include <sys/types.h>

/* The only protocol version QEMU speaks (the first message to a client). */
#define VMQ_IVSHMEM_PROTOCOL_VERSION 0
/* Connected clients at most; the server (peer 0) does not count. */
#define VMQ_IVSHMEM_MAX_PEERS 64u
/*
 * Vectors (eventfds) per peer at most.  A new client receives
 * 3 + (peers + 1) * n_vectors messages at once, each carrying an fd; with
 * this bound the whole burst fits in a default-sized socket send buffer
 * (about 270 such messages with net.core.wmem_max = 212992), so no client
 * is ever waited for.
 */
#define VMQ_IVSHMEM_MAX_VECTORS 4u

struct vmq_ivshmem_server;

/*
 * Event callbacks, all optional (NULL is fine), all called from inside
 * vmq_ivshmem_server_process() with the userdata given at creation.  They
 * may call vmq_ivshmem_server_notify(), _kick() and the peer queries; they
 * must not call vmq_ivshmem_server_free() (defer it to the event loop).
 */
struct vmq_ivshmem_server_ops {
        /*
         * A client connected and was given peer_id.  It has already been
         * sent the region, every peer's eventfds and its own, and every
         * other client has been told about it.
         */
        void (*peer_joined)(void *userdata, struct vmq_ivshmem_server *srv, uint16_t peer_id);
        /*
         * A client went away: it closed its socket, sent something (clients
         * never send in this protocol), or could not keep up (its socket
         * buffer was full).  Its id is free again; the remaining clients
         * have been told.  Not called for vmq_ivshmem_server_kick().
         */
        void (*peer_left)(void *userdata, struct vmq_ivshmem_server *srv, uint16_t peer_id);
        /*
         * Someone rang the server's vector `vector` (a guest wrote
         * VMQ_IVSHMEM_MONITOR_PEER << 16 | vector to its doorbell).  Rings
         * that arrive before the server gets to read the eventfd coalesce
         * into one call.  The protocol cannot say which client rang: all
         * clients hold the same eventfds.
         */
        void (*doorbell)(void *userdata, struct vmq_ivshmem_server *srv, unsigned vector);
};

/*
 * Creates a server for the region `shm_fd` (a memfd, /dev/shm or hugetlbfs
 * file; it is dup()ed, the caller keeps its own fd) and listens on the UNIX
 * socket `socket_path`.  A stale socket at that path is unlinked first; any
 * other kind of file there is left alone and the call fails with -EEXIST.
 * The socket is created with mode 0660; chown()/chmod() it afterwards if
 * the clients (qemu under libvirt) run as another user.
 *
 * QEMU maps the whole file as its BAR 2, so the region's size (the file's
 * size) must be a power of two and at least a page (QEMU 7.2 aborts on an
 * assertion otherwise, or fails to realize the device): anything else fails
 * with -EINVAL.
 *
 * n_vectors: eventfds per peer, 1..VMQ_IVSHMEM_MAX_VECTORS.  It should not
 * exceed the `vectors` property of the guests' ivshmem-doorbell devices:
 * QEMU refuses eventfds beyond it.
 *
 * ops may be NULL; it is copied.  On success *ret is set and 0 returned;
 * on failure nothing is left behind and a negative errno is returned
 * (-EINVAL, -ENAMETOOLONG, -EEXIST, -EADDRINUSE, -ENOMEM, ...).
 */
int vmq_ivshmem_server_new(const char *socket_path, int shm_fd, unsigned n_vectors,
                           const struct vmq_ivshmem_server_ops *ops, void *userdata,
                           struct vmq_ivshmem_server **ret);

/*
 * Disconnects every client (they see the socket close; no callbacks run),
 * closes every fd and unlinks the socket.  Accepts NULL; returns NULL.
 */
struct vmq_ivshmem_server *vmq_ivshmem_server_free(struct vmq_ivshmem_server *srv);

/*
 * The one fd to poll for EPOLLIN (it is an epoll fd covering the listening
 * socket, the client sockets and the server's own eventfds, all
 * level-triggered).  Owned by the server; valid until _free().
 */
int vmq_ivshmem_server_get_fd(struct vmq_ivshmem_server *srv);

/*
 * Handles whatever is pending, without blocking: accepts and sets up new
 * clients, drops departed or misbehaving ones, reads the server's eventfds,
 * and calls the ops callbacks.  Call it whenever the fd is readable (calling
 * it when nothing is pending is harmless).  Returns 0, or a negative errno
 * for a failure of the server itself (epoll_wait(), or accept() with
 * -EMFILE/-ENFILE/-ENOBUFS/-ENOMEM, in which case the connection stays
 * queued and the fd stays readable: the caller may want to back off).
 * Trouble with one client is not an error: that client is dropped.
 */
int vmq_ivshmem_server_process(struct vmq_ivshmem_server *srv);

/*
 * Rings vector `vector` of client `peer_id` (writes 1 to its eventfd; the
 * guest gets an MSI-X interrupt on that vector).  Returns 0, -ENOENT if no
 * such client is connected (peer 0, the server itself, is not a client),
 * -EINVAL if vector >= n_vectors.
 */
int vmq_ivshmem_server_notify(struct vmq_ivshmem_server *srv, uint16_t peer_id, unsigned vector);

/*
 * Disconnects client `peer_id` at the caller's request (e.g. an unknown
 * process).  The other clients are told it has gone; peer_left is not
 * called for it.  Returns 0 or -ENOENT.
 */
int vmq_ivshmem_server_kick(struct vmq_ivshmem_server *srv, uint16_t peer_id);

/*
 * The credentials of the process that connected as `peer_id` (SO_PEERCRED,
 * taken at connect time), so the caller can tell which QEMU it is.  Either
 * output may be NULL.  Returns 0 or -ENOENT.
 */
int vmq_ivshmem_server_peer_cred(struct vmq_ivshmem_server *srv, uint16_t peer_id, pid_t *ret_pid,
                                 uid_t *ret_uid);

/* Number of connected clients. */
unsigned vmq_ivshmem_server_n_peers(struct vmq_ivshmem_server *srv);

#endif /* VMQ_IVSHMEM_SERVER_H */
