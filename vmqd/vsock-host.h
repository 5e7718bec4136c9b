/* SPDX-License-Identifier: MIT */
/*
 * The host's end of vsock (CID 2): connections between a domain's guest
 * and programs on the host, through UNIX sockets, as Firecracker and
 * vhost-device-vsock users know them.
 *
 *   - A host program connects to <runtime dir>/vsock-<name>.host and
 *     writes "CONNECT <port>\n"; when the guest accepts, vmqd answers
 *     "OK <host port>\n" and the socket carries the stream.  A guest that
 *     refuses (or no device running) closes the socket at once.
 *   - A guest that connects to CID 2, port P, reaches the program that
 *     listens on <runtime dir>/vsock-<name>.host_<P>; nobody there, the
 *     guest gets a reset.
 *
 * vmqd is the host side of the virtio-vsock transport for each such
 * connection: it keeps the credit both ways (a receive buffer of
 * VSOCK_HOST_BUF_ALLOC bytes per connection, and no more bytes to the guest
 * than the guest has room for), stops reading a socket whose guest has no
 * room, and turns EOF and shutdowns into their virtio-vsock counterparts.
 * SOCK_STREAM only: a SEQPACKET request to the host is reset.
 *
 * Everything runs on the event loop's thread.
 */
#ifndef VMQD_VSOCK_HOST_H
#define VMQD_VSOCK_HOST_H

#include <stdint.h>

#include "vhost/vsock.h"

struct manager;

/* A connection's receive buffer in vmqd, as the guest is told. */
#define VSOCK_HOST_BUF_ALLOC (256u * 1024u)
/* Host connections in all, both directions. */
#define VSOCK_HOST_MAX_CONNS 1024u

/* Joins the switch as CID 2 (m->vsock_host).  -errno. */
int vsock_host_new(struct manager *m, struct vmq_vsock_switch *sw);
/* Closes every host connection and leaves the switch. */
void vsock_host_free(struct manager *m);

/* A host program connected to the .host socket of the machine with this
 * CID: fd (non-blocking, close-on-exec) is the host's from now on. */
void vsock_host_accept(struct manager *m, uint32_t cid, int fd);
/* Closes the host connections of this CID (its device goes away). */
void vsock_host_drop(struct manager *m, uint32_t cid);
/* Open host connections of this CID. */
unsigned vsock_host_conns(const struct manager *m, uint32_t cid);

#endif /* VMQD_VSOCK_HOST_H */
