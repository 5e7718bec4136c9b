/* SPDX-License-Identifier: MIT */
/*
 * A machine's backend: what runs its guest.  Each kind of machine has one
 * const table of operations, chosen once when the machine is made
 * (machine_new()); everything else in vmqd goes through the table (or the
 * machine_*() wrappers in machine.h) and never asks which kind it has.
 * The model is systemd's UnitVTable (src/core/unit.h): one vtable per unit
 * type, one file per implementation.
 *
 *   kvm_backend      vmqd/backend-kvm.c      a micro-VM that vmqd runs on
 *                                            /dev/kvm through the core monitor
 *   libvirt_backend  vmqd/backend-libvirt.c  an adopted libvirt domain (QEMU)
 *                                            whose shared region vmqd serves;
 *                                            the connection to libvirtd is
 *                                            vmqd/libvirt.c
 *
 * Both kinds keep the core VM that stands for the guest in the monitor in
 * mc->vm while it exists (a micro-VM, or the region VM of a domain): the
 * channel code, the console and the statistics use it whatever the kind.
 *
 * Every operation runs on the event loop's thread.  The ones that take an
 * sd_bus_error set it on failure (it may be NULL) and return a negative
 * errno; none of them publishes anything on the bus: the caller runs
 * manager_process_monitor() afterwards.
 */
#ifndef VMQD_BACKEND_H
#define VMQD_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>

#include "vmqd/machine.h"

struct machine_backend {
        /* "kvm" or "libvirt": the machine's Backend property. */
        const char *name;
        /*
         * Whether the guest lives inside vmqd and so ends with it: vmqd's
         * orderly shutdown asks these machines to stop and waits for them.
         * A libvirt domain keeps running without vmqd (its channels close).
         */
        bool ends_with_vmqd;

        /*
         * Sets up what the machine needs for as long as it is defined, before
         * it is listed: the libvirt backend's shared region and the ivshmem
         * server QEMU connects to (up before the domain starts, or QEMU
         * refuses to start).  NULL: nothing to set up.
         */
        int (*attach)(struct machine *mc);
        /*
         * Frees what attach set up and the machine's core VM (its channels
         * close); called once, by machine_free().  A micro-VM still running
         * is stopped; a domain keeps running.  Must accept a machine whose
         * attach failed or never ran.
         */
        void (*detach)(struct machine *mc);

        /* Starts the guest; the caller made sure it is not running. */
        int (*start)(struct machine *mc, sd_bus_error *error);
        /*
         * Asks the guest to shut down (a SHUTDOWN message; the ACPI power
         * button) and returns at once; the caller waits and stops it by
         * force after its deadline.  A micro-VM whose queue has no room for
         * the request is stopped by force at once.
         */
        int (*stop)(struct machine *mc, sd_bus_error *error);
        /* Stops the guest by force (a domain: virDomainDestroy). */
        int (*kill)(struct machine *mc, sd_bus_error *error);
        /*
         * Undoes what vmqd wrote outside itself, before the machine is
         * undefined: a domain's <shmem> device and vmq metadata.  NULL:
         * nothing outside vmqd.
         */
        int (*forget)(struct machine *mc, sd_bus_error *error);

        /* The guest's state now. */
        enum machine_state (*state)(const struct machine *mc);
        /*
         * Whether there is a guest to stop: running, or a domain that still
         * runs although its region crashed.  Stop and Destroy act on it.
         */
        bool (*active)(const struct machine *mc);
        /* Its id in the monitor; called only while the state is running. */
        uint32_t (*id)(const struct machine *mc);
        /* Its exit code; called only when the state is exited. */
        int (*exit_code)(const struct machine *mc);
        /* Why it crashed (static or owned by mc; NULL: unknown); called only
         * when the state is crashed. */
        const char *(*crash_reason)(const struct machine *mc);
};

extern const struct machine_backend kvm_backend;     /* backend-kvm.c */
extern const struct machine_backend libvirt_backend; /* backend-libvirt.c */

#endif /* VMQD_BACKEND_H */
