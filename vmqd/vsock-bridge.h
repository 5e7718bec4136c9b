/* SPDX-License-Identifier: MIT */
/*
 * Machines without a vsock device as vsock peers.
 *
 * A micro-VM (or a domain that speaks vmq only through ivshmem) that has a
 * channel with a machine that has a vsock device gets a CID too, for as
 * long as vmqd runs, and a port on the switch with it.  A guest that
 * connects to that CID (the switch lets it while their channel is open)
 * gets a vmq channel of its own for the connection: vmqd opens it between
 * the host end, speaking for the guest's machine, and the machine, so the
 * machine's HELLO names the guest, with VMQ_DESC_F_VSOCK, the two ports in
 * its tag (guest port << 32 | the port asked for) and VMQ_DESC_F_SEQPACKET
 * for a SOCK_SEQPACKET.  The connection opens at once; a machine that does
 * not serve the port says it is done at once: the guest reads end of
 * file.
 *
 * The framing and the flow control are vhost/vsock-msg.h's: a SEQPACKET
 * record is one message, a stream comes in messages of at most 4 KiB, an
 * empty message tagged VMQ_TAG_DONE ends a direction.
 */
#ifndef VMQD_VSOCK_BRIDGE_H
#define VMQD_VSOCK_BRIDGE_H

#include <stdint.h>

/* The depth of a connection's channel at the host end. */
#define VSOCK_BRIDGE_DEPTH 64u

struct manager;
struct machine;
struct vsock_bridge;

/*
 * Gives mc (no device of its own) a CID and a port on the switch, if it has
 * none yet.  0, or -errno (no CID left, no memory).
 */
int vsock_bridge_attach(struct manager *m, struct machine *mc);
/* Takes mc's port out: its connections are reset and their channels
 * closed.  Nothing without one. */
void vsock_bridge_free(struct machine *mc);
/* The monitor said something happened: moves what the machines sent on
 * connections' channels to their guests, and notices closed channels. */
void vsock_bridges_process(struct manager *m);

#endif /* VMQD_VSOCK_BRIDGE_H */
