/* SPDX-License-Identifier: MIT */
/*
 * The identity service of vsock: what a guest learns about a peer CID, the
 * way the rest of vmq tells a channel's ends who the other is.
 *
 * A guest connects to the host (CID 2) on port VSOCK_IDENTITY_PORT and
 * writes lines; vmqd answers each, in order:
 *
 *   WHO <cid>\n   ->  OK <cid> <name> <uuid>\n   the machine with that CID,
 *                                                when it is the asker itself
 *                                                or a channel is open
 *                                                between the two
 *                     OK 2 host -\n              the host
 *                     NONE <cid>\n               anything else: no such
 *                                                CID, or not the asker's
 *                                                peer (which of the two is
 *                                                not said)
 *   NAME <name>\n ->  OK <cid> <name> <uuid>\n   the same, by the machine's
 *                                                name: how a guest finds
 *                                                the CID of a peer it knows
 *                                                by name (a micro-VM's is
 *                                                given when its first
 *                                                channel with a machine
 *                                                with a device opens)
 *                     NONE <name>\n              as for WHO (a name that is
 *                                                not a valid machine name:
 *                                                ERR)
 *   anything else ->  ERR <reason>\n
 *
 * A line longer than VSOCK_IDENTITY_LINE_MAX bytes is answered with ERR and
 * ends the connection.  Names and UUIDs are vmqd's, stamped by it, never
 * the guest's word.  The service is one end of a socketpair whose other end
 * vsock-host.c carries to the guest like any host program's socket, with
 * the same credit; a guest that does not read its answers stops being read.
 *
 * Everything runs on the event loop's thread.
 */
#ifndef VMQD_VSOCK_IDENTITY_H
#define VMQD_VSOCK_IDENTITY_H

#include <stdint.h>

struct manager;
struct vsock_identity;

/* The host port of the identity service. */
#define VSOCK_IDENTITY_PORT 1u
/* The longest question: "NAME " and the longest machine name, and some
 * slack. */
#define VSOCK_IDENTITY_LINE_MAX 80u

/* Serves guest @cid on one end of a new socketpair; the other end (non-
 * blocking, close-on-exec) is stored in *ret_fd.  -errno. */
int vsock_identity_new(struct manager *m, uint32_t cid, struct vsock_identity **ret, int *ret_fd);
/* Closes the service's end. */
struct vsock_identity *vsock_identity_free(struct vsock_identity *id);

#endif /* VMQD_VSOCK_IDENTITY_H */
