/* SPDX-License-Identifier: MIT */
/*
 * The libvirt backend: machines that are libvirt domains (QEMU guests)
 * rather than micro-VMs of vmqd's own.
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

/*
 * Gives a libvirt machine (mc->backend MACHINE_BACKEND_LIBVIRT) its region,
 * its ivshmem server and the server's thread.  Used when adopting and
 * when restoring a saved adoption.  Needs m->runtime_dir.
 */
int libvirt_machine_attach(struct machine *mc);
/* Stops the server thread, destroys the region VM (its channels close),
 * frees the server and the region.  Accepts a machine without a link. */
void libvirt_machine_detach(struct machine *mc);

/* The machine's state: the domain's, or crashed if the guest broke its
 * region. */
enum machine_state libvirt_machine_state(const struct machine *mc);
const char *libvirt_machine_crash_reason(const struct machine *mc);
/* Does the domain run (even if its region crashed)?  Stop and Destroy
 * act on such a domain. */
bool libvirt_machine_domain_active(const struct machine *mc);
/* The socket path of the machine's ivshmem server ("" if none). */
const char *libvirt_machine_socket(const struct machine *mc);

/* Start (virDomainCreate), ask to shut down (virDomainShutdown), stop by
 * force (virDomainDestroy).  Set a D-Bus error on failure (may be NULL). */
int libvirt_machine_start(struct machine *mc, sd_bus_error *error);
int libvirt_machine_shutdown(struct machine *mc, sd_bus_error *error);
int libvirt_machine_destroy(struct machine *mc, sd_bus_error *error);
/*
 * Undoes an adoption in the domain's persistent definition: detaches the
 * <shmem> device and removes vmq's metadata.  A domain that no longer
 * exists is fine; libvirt being unreachable gives BackendUnavailable.
 */
int libvirt_machine_forget(struct machine *mc, sd_bus_error *error);

/* org.vmq1.Manager.AdoptDomain(s domain, a{sv} options) -> o machine */
int libvirt_method_adopt_domain(sd_bus_message *message, void *userdata, sd_bus_error *error);

#endif /* VMQD_LIBVIRT_H */
