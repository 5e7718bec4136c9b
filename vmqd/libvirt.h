/* SPDX-License-Identifier: MIT */
/*
 * libvirt: machines that are libvirt domains (QEMU guests) rather than
 * micro-VMs of vmqd's own.  This header is the connection (libvirt.c) and
 * libvirt's event loop on sd-event (libvirt-event.c); the machines
 * themselves are the libvirt backend (backend-libvirt.h, backend.h).
 *
 * vmqd keeps one connection to libvirtd (config libvirt.uri, --libvirt-uri)
 * with libvirt's event loop running on vmqd's sd-event loop
 * (libvirt-event.c).  When libvirtd is unreachable or goes away, vmqd keeps
 * running and tries again every second; after reconnecting it re-registers
 * for domain events and resynchronises the state of every adopted domain.
 *
 * Adopting a domain (AdoptDomain) makes it a vmq machine:
 *  - a memfd of region_size bytes is the shared region.  It lives as long
 *    as the adoption (QEMU receives the fd each time it connects);
 *  - an ivshmem-doorbell server (core/ivshmem-server.h) serves it on
 *    <runtime_dir>/ivshmem-<name>.sock, on a thread of its own: QEMU
 *    connects while libvirtd starts it or hot-plugs the device, and vmqd's
 *    loop may be waiting in that very libvirt call;
 *  - the domain gets vmq's <metadata> (namespace VMQD_LIBVIRT_NS_URI) and a
 *    <shmem model='ivshmem-doorbell'> device naming that socket, in its
 *    persistent definition and, if it runs, live;
 *  - while the domain runs, a region VM of the core (vmq_vm_create_region)
 *    stands for it: its doorbells are the guest's hypercalls, and the
 *    monitor rings the guest (peer vector 0) when it enqueues.  Each time
 *    the domain starts the region VM is made anew, so the guest finds a
 *    fresh VMCS; when it stops, the region VM stops and its channels close
 *    (the peers get CLOSE).
 *
 * Lifecycle events only trigger a look at the domain's real state
 * (virDomainGetState), so that stale or reordered events cannot undo what
 * a later call did.
 */
#ifndef VMQD_LIBVIRT_H
#define VMQD_LIBVIRT_H

#include <stdbool.h>
#include <libvirt/libvirt.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "vmqd/machine.h"

struct manager;

#define VMQD_LIBVIRT_NS_URI "http://vmq.org/ns/vmq/1"
#define VMQD_LIBVIRT_NS_KEY "vmq"
/* Default region size of an adopted domain, and its bounds. */
#define VMQD_LIBVIRT_REGION_DEFAULT (4ull << 20)
#define VMQD_LIBVIRT_REGION_MIN (1ull << 20)
#define VMQD_LIBVIRT_REGION_MAX (1ull << 30)

/* libvirt-event.c: libvirt's event loop on `event` (once per process). */
int libvirt_event_register(sd_event *event);
/* Drops every watch and timer libvirt still holds (at exit). */
void libvirt_event_unregister(void);

/*
 * Sets up the backend: registers the event loop and tries to connect to
 * m->config.libvirt_uri.  Failing to connect is not an error (it is logged
 * and retried every second).  Returns a negative errno only if the event
 * loop cannot be set up.
 */
int libvirt_setup(struct manager *m);
/* Closes the connection.  Call after the machines are freed. */
void libvirt_teardown(struct manager *m);
bool libvirt_is_connected(const struct manager *m);

/* The connection, or NULL while vmqd is not connected. */
virConnectPtr libvirt_connection(const struct manager *m);
/* The message of the calling thread's last libvirt error (never NULL). */
const char *libvirt_error_message(void);
/* Sets BackendUnavailable on error (disabled, or not connected) and
 * returns its negative errno. */
int libvirt_unavailable(const struct manager *m, sd_bus_error *error);

#endif /* VMQD_LIBVIRT_H */
