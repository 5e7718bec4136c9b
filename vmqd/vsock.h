/* SPDX-License-Identifier: MIT */
/*
 * vmqd's vhost-user-vsock backend: the glue between the event loop and the
 * vhost/ layer.
 *
 * A machine adopted with a vsock CID has a device: a listening UNIX socket,
 * <runtime dir>/vsock-<name>.sock, that QEMU's vhost-user-vsock-pci
 * device connects to (its chardev is a client).  One frontend at a time:
 * a second connection is closed at once.  The device runs the vhost-user
 * control plane on the connection (vhost/vhost-user.c), watches the kick
 * eventfds of its two queues, and while both queues run it is an endpoint
 * of the service's vsock switch (vhost/vsock.c) with the machine's CID.
 * A frontend that goes away, or stops a queue, takes the endpoint out of
 * the switch (its peers' connections are reset) and the device listens
 * again: a restarted QEMU, or a re-plugged device, connects anew.
 *
 * The switch's access list is the channel table: two domains may open a
 * connection while a vmq channel is open between their machines; when the
 * last such channel closes, their connections are reset.  The host (CID 2)
 * is vsock-host.c's, through a second socket per device,
 * <runtime dir>/vsock-<name>.host; a connection to any other CID is
 * refused with a reset.
 *
 * A frontend is hostile like a guest: each message is checked by
 * vhost-user.c, and one that stalls in the middle of a message for more
 * than a second, or breaks the stream, is disconnected; vmqd's loop never
 * waits on it longer.
 *
 * Everything runs on the event loop's thread.
 */
#ifndef VMQD_VSOCK_H
#define VMQD_VSOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vhost/vsock.h"

struct manager;
struct machine;
struct vsock_device;

/*
 * Gives mc (mc->vsock_cid set) its device, listening at once; the socket is
 * handed to uid:gid (QEMU's user; uid 0 keeps it root's), mode 0660.
 * -EEXIST when another device has the CID, -errno.
 */
int vsock_device_new(struct manager *m, struct machine *mc, uid_t uid, gid_t gid);
/* Closes mc's device, if any: its connections are reset, its socket removed. */
void vsock_device_free(struct machine *mc);

/* The socket's path ("" without a device), and whether a frontend is
 * connected and both queues run. */
const char *vsock_device_socket(const struct machine *mc);
bool vsock_device_running(const struct machine *mc);
/* Is a frontend (QEMU) connected, running or not? */
bool vsock_device_connected(const struct machine *mc);
/* Where host programs connect to the guest's ports (vsock-host.h), or "". */
const char *vsock_device_host_socket(const struct machine *mc);
/* The device's switch counters (zeros when it is not running). */
void vsock_device_stats(const struct machine *mc, struct vmq_vsock_stats *ret);

/*
 * QEMU talks vhost-user with the device while it starts, and waits for
 * answers: while vmqd's loop is blocked in a libvirt call that starts the
 * domain, a thread serves mc's socket in its place.  Begin before the call
 * (NULL: nothing to serve, or no thread), end after it.
 */
struct vsock_assist;
struct vsock_assist *vsock_assist_begin(struct machine *mc);
void vsock_assist_end(struct vsock_assist *a);

/* A channel between machines a and b closed: unless another channel
 * between them is still open, their connections are reset. */
void vsock_channel_closed(struct manager *m, const char *a, const char *b);

/* A channel between machines a and b opened: a machine without a device
 * whose peer has one becomes a vsock peer too (vsock-bridge.h). */
void vsock_channel_opened(struct manager *m, const char *a, const char *b);

/* The switch, made (with the host's port) on first use; NULL: no memory. */
struct vmq_vsock_switch *vsock_get_switch(struct manager *m);
/* The CID a machine is reached at: its device's, or its bridge's (0: none). */
uint32_t vsock_cid_of(const struct machine *mc);
/* The machine whose device (or bridge) has this CID, or NULL. */
struct machine *vsock_machine_by_cid(struct manager *m, uint64_t cid);
/* Is a channel between machines a and b open now (the switch's access
 * list)? */
bool vsock_channel_open(struct manager *m, const char *a, const char *b);
/* The lowest CID from 3 up that no machine has (0: none left). */
uint32_t vsock_free_cid(struct manager *m);

/* Frees the service (after every device): called by manager_free(). */
void vsock_service_free(struct manager *m);

#endif /* VMQD_VSOCK_H */
