/* SPDX-License-Identifier: MIT */
/*
 * The libvirt backend's entry points outside its vtable (libvirt_backend in
 * backend.h): what the connection code and the Manager's bus object call.
 * See libvirt.h for what adopting a domain does.
 */
#ifndef VMQD_BACKEND_LIBVIRT_H
#define VMQD_BACKEND_LIBVIRT_H

#include <systemd/sd-bus.h>

struct machine;

/*
 * Looks at the machine's domain (virDomainGetState) and brings the machine
 * in line with it: its region VM is made anew when the domain starts and
 * stopped when it stops; the change is published.  Called for every machine
 * on a lifecycle event of its domain and after (re)connecting; a machine of
 * another backend is left alone.
 */
void libvirt_machine_resync(struct machine *mc);

/* org.vmq1.Manager.AdoptDomain(s domain, a{sv} options) -> o machine */
int libvirt_method_adopt_domain(sd_bus_message *message, void *userdata, sd_bus_error *error);

#endif /* VMQD_BACKEND_LIBVIRT_H */
