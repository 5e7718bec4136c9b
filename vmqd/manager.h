/* SPDX-License-Identifier: MIT */
/*
 * vmqd's context: one struct that owns the event loop, the bus connection,
 * the configuration, the core monitor, the saved state and the machine and
 * channel objects.
 *
 * Threads: everything here runs on the event loop's thread.  The monitor's
 * vCPU and doorbell threads never call into sd-bus; they only make the
 * monitor's event fd readable, and manager_process_monitor() (an sd-event
 * io source on that fd) then compares the core's state with what was last
 * published on the bus, and serves pending Receive calls.
 */
#ifndef VMQD_MANAGER_H
#define VMQD_MANAGER_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus/vmq-bus.h"
#include "core/monitor.h"
#include "vmqd/config.h"
#include "vmqd/state.h"

/*
 * manager_startup()'s error when the saved state holds more than the
 * configuration allows (more machines than limits.max_machines): a
 * configuration error (EX_CONFIG for the exit status), logged with both
 * numbers; nothing was started or rewritten.
 */
#define MANAGER_ERROR_OVER_LIMITS (-E2BIG)

struct machine;
struct channel;
struct channel_params;
struct vmqd_libvirt;
struct vmq_vsock_switch;
struct vsock_host;

struct manager {
        sd_event *event;
        sd_bus *bus;
        struct vmqd_config config;
        struct vmq_monitor *monitor;
        struct vmqd_state state;
        char *corrupt_state_file; /* where a corrupt state file was moved, or "" */

        sd_event_source *monitor_source;
        sd_event_source *stop_timer; /* the shutdown deadline, once stopping */
        sd_bus_slot *owner_slot;     /* NameOwnerChanged: drop a gone client's calls */

        struct machine *machines; /* in creation order */
        size_t n_machines;
        struct channel *channels; /* in creation order */
        size_t n_channels;

        char *runtime_dir;                     /* sockets (ivshmem servers); default /run/vmq */
        bool no_libvirt;                       /* --no-libvirt: no libvirt backend at all */
        struct vmqd_libvirt *libvirt;          /* the connection to libvirtd, or NULL */
        struct vmq_vsock_switch *vsock_switch; /* domains' vsock devices (vsock.h), or NULL */
        struct vsock_host *vsock_host;         /* the switch's CID 2 (vsock-host.h) */

        bool stopping;
        uint8_t host_uuid[16]; /* the host end's identity (main.c) */
};

/* Creates the context with the configuration defaults; nothing runs yet. */
int manager_new(struct manager **ret);
/* Frees everything (stopping any machine still running).  Accepts NULL. */
struct manager *manager_free(struct manager *m);

/*
 * Creates the monitor, loads the state and restores the saved machines and
 * channels.  The configuration must be final.  Logs its own errors.
 * MANAGER_ERROR_OVER_LIMITS if the state holds more machines than
 * limits.max_machines (a configuration error).
 */
int manager_startup(struct manager *m);
/* Starts the machines marked autostart and opens the persistent channels
 * (once the bus name is ours: a vmqd that cannot have it never starts a
 * guest).  Failures are logged. */
void manager_autostart(struct manager *m);
/* Registers the objects on m->bus (before the name is requested);
 * manager-bus.c. */
int manager_bus_register(struct manager *m);

/*
 * Compares every machine and channel with what the bus last saw, emits
 * the signals for what changed, closes the channels of machines that left
 * the running state, reopens persistent channels, answers pending Stop and
 * Receive calls.  Safe to call at any time on the loop's thread.
 */
void manager_process_monitor(struct manager *m);

/* Begins an orderly shutdown: asks every guest to stop, stops them by force
 * after the default timeout, then leaves the event loop. */
void manager_begin_shutdown(struct manager *m);

/* Writes the persistent definitions; logs a failure and returns it. */
int manager_save_state(struct manager *m);

/*
 * Changing the saved state: copy m->state (manager_state_copy()), change
 * the copy, save it (manager_state_save()), change the live objects, and
 * swap the copy in (manager_state_swap()).  A failed save leaves m->state
 * and the file as they were and sets org.vmq1.Error.StateSaveFailed ("could
 * not save the state: <strerror>"); the caller returns it, with nothing to
 * undo.  If a live change fails after the save, manager_state_revert()
 * writes the unchanged m->state back (a failure is logged).
 */
int manager_state_copy(struct manager *m, struct vmqd_state *ret, sd_bus_error *error);
int manager_state_save(struct manager *m, const struct vmqd_state *next, sd_bus_error *error);
/* Frees m->state and moves *next into it (leaving *next empty). */
void manager_state_swap(struct manager *m, struct vmqd_state *next);
void manager_state_revert(struct manager *m);

struct machine *manager_find_machine(struct manager *m, const char *name);
/* The machine with this UUID (any case), or NULL. */
struct machine *manager_find_machine_by_uuid(struct manager *m, const char *uuid);
struct channel *manager_find_channel(struct manager *m, uint32_t id);
size_t manager_count_running(struct manager *m);
size_t manager_count_open_channels(struct manager *m);

/*
 * Opens every persistent channel whose ends are all running (or the host)
 * and which is not open already.  Failures are logged.
 */
void manager_open_persistent_channels(struct manager *m);

/*
 * Starts a machine that is not running: drops the closed channels it was
 * an end of, rebuilds it, publishes the change and reopens its persistent
 * channels.  Sets error on failure.
 */
int manager_start_machine(struct manager *m, struct machine *mc, sd_bus_error *error);

/*
 * Whether a new machine may have this name and UUID: MachineExists if a
 * machine or a saved definition has the name, InvalidArgument for a UUID
 * that is not one or is nil, UuidInUse if a machine or a saved definition
 * has the UUID (compared without regard to case).  0 if it may.
 */
int manager_check_new_machine(struct manager *m, const char *name, const char *uuid,
                              sd_bus_error *error);

/*
 * Adds a machine made by machine_new() (and machine_attach()), not yet
 * listed: saves the state with its definition first if it is persistent,
 * then runs activate(mc, userdata, error) if not NULL (start it, configure
 * its domain), then swaps the state in, lists the machine and announces it.
 * On failure nothing changed (the state file is written back if activate
 * failed), error is set and the caller still owns mc; on success the
 * manager owns it.  The caller runs manager_process_monitor().
 */
int manager_add_machine(struct manager *m, struct machine *mc,
                        int (*activate)(struct machine *mc, void *userdata, sd_bus_error *error),
                        void *userdata, sd_bus_error *error);

/* Forgets a machine that is not running, its channels and its saved
 * definitions: the state without them is saved first, then the backend
 * forgets what it wrote outside vmqd, then the objects go.  Busy if
 * running, StateSaveFailed if the save failed (nothing changed then). */
int manager_undefine_machine(struct manager *m, struct machine *mc, sd_bus_error *error);

/*
 * Opens a channel (channel_open()) and announces it.  A persistent one is
 * checked (its definition, its ends running, no other persistent channel
 * between the same ends) and saved first; StateSaveFailed if the save
 * failed (nothing changed then).
 */
int manager_open_channel(struct manager *m, const char *end_a, const char *end_b,
                         const struct channel_params *p, sd_bus_error *error, struct channel **ret);

/* Closes a channel, forgets its saved definition (saved first:
 * StateSaveFailed leaves the channel as it was), removes its object. */
int manager_close_channel(struct manager *m, struct channel *c, sd_bus_error *error);

/* Removes the closed channels that have the end name (announcing it). */
void manager_remove_closed_channels(struct manager *m, const char *name);

/* ---- manager-bus.c ---- */

/* A property getter for a C bool at the property's offset. */
int bus_property_get_bool(sd_bus *bus, const char *path, const char *interface,
                          const char *property, sd_bus_message *reply, void *userdata,
                          sd_bus_error *error);

/*
 * Access rule for mutating methods: the sender's effective uid is 0, or
 * the group VMQ_BUS_GROUP is among its effective and supplementary gids.
 * Returns 0 if allowed, else sets AccessDenied on error and returns
 * -EACCES (or another negative errno if the credentials can't be read).
 */
int vmqd_check_access(sd_bus_message *message, sd_bus_error *error);

/* Manager vtable (on VMQ_BUS_PATH). */
extern const sd_bus_vtable manager_vtable[];

/* One option of an a{sv} argument: its key, its D-Bus type ("t", "u",
 * "s" or "b") and where its value goes (uint64_t, uint32_t, const char *
 * pointing into the message, or int). */
struct bus_option {
        const char *key;
        const char *type;
        void *dest;
};

/* Reads an a{sv} argument whose keys must all be among `options`: an
 * unknown key or a value of the wrong type is InvalidArgument. */
int bus_read_options(sd_bus_message *message, const struct bus_option *options, size_t n,
                     sd_bus_error *error);

#endif /* VMQD_MANAGER_H */
