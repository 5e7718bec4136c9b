/* SPDX-License-Identifier: MIT */
/*
 * A machine: a definition (name, image, sizes, arguments) and, once it has
 * been started, the core VM that runs it.  A machine that is not running
 * keeps its definition and its last core VM (so its console and exit code
 * stay readable) until it is started again or undefined.
 */
#ifndef VMQD_MACHINE_H
#define VMQD_MACHINE_H

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "core/monitor.h"
#include "vmqd/state.h"

struct manager;
struct stop_request;
struct libvirt_link;
struct machine_backend;

enum machine_state {
        MACHINE_DEFINED,
        MACHINE_RUNNING,
        MACHINE_EXITED,
        MACHINE_STOPPED,
        MACHINE_CRASHED,
        MACHINE_STATE_MAX
};

struct machine {
        struct manager *manager;
        struct machine *prev, *next;

        /* The definition. */
        char *name;
        char *image; /* as given: a path or an installed image's name */
        char uuid[37];
        uint64_t memory;
        uint32_t vcpus;
        uint32_t queue_depth;
        uint64_t huge_memory;
        char *args; /* NULL: none */
        bool persistent;
        bool autostart;
        char *domain;       /* libvirt: the domain's name when adopted; "" for kvm */
        uint64_t rx_size;   /* libvirt: the receive window in the region */
        uint32_t vsock_cid; /* libvirt: its vhost-user-vsock device's CID; 0: none */
        /* libvirt: the device is in the definition, but the running domain
         * has none (its memory is not shared): it comes with a restart.
         * Cleared when QEMU connects to the device. */
        bool vsock_restart_needed;

        /* What runs the guest (vmqd/backend.h), chosen by machine_new(). */
        const struct machine_backend *backend;
        char *path;                 /* object path */
        bool listed;                /* in the manager's list (machine_link()) */
        struct libvirt_link *link;  /* the libvirt backend's: region, server, domain state */
        struct vmq_vm *vm;          /* the guest's core VM, if any (see backend.h) */
        struct vsock_device *vsock; /* its vhost-user-vsock backend (vmqd/vsock.h), or NULL */
        /* No device, but a channel with a machine that has one: the CID
         * guests reach it at, while vmqd runs (vmqd/vsock-bridge.h). */
        struct vsock_bridge *vsock_bridge;
        uint32_t vsock_peer_cid;

        /* What the bus saw last. */
        enum machine_state state;
        uint32_t id;
        int exit_code;
        const char *crash_reason; /* static, from the core */

        struct stop_request *stops; /* pending Stop calls */
        sd_event_source *stop_timer;
};

const char *machine_state_to_string(enum machine_state s);

/*
 * Creates a machine object from a definition (copied), with the backend
 * the definition calls for (a domain: libvirt; else kvm), not yet listed
 * in the manager nor announced: freeing it then leaves no trace.  -EEXIST
 * if a listed machine has its name or UUID, -ENOMEM.
 */
int machine_new(struct manager *m, const struct vmqd_machine_def *def, bool persistent,
                struct machine **ret);
/* Appends a new machine to the manager's list (creation order). */
void machine_link(struct machine *mc);
/* Frees what its backend holds (a micro-VM is stopped, its channels
 * close), fails pending Stop calls, unlinks it if listed and frees it.
 * Accepts NULL; returns NULL. */
struct machine *machine_free(struct machine *mc);
static inline void machine_freep(struct machine **mc) {
        if (*mc)
                machine_free(*mc);
}

/* Fills a definition that points into mc (not to be freed). */
void machine_to_def(const struct machine *mc, struct vmqd_machine_def *ret);

/* The path of the image file: the image itself if absolute, else
 * <image_dir>/<image>.elf.  malloc()ed. */
char *machine_image_path(const struct machine *mc);

/* The backend's name for the bus ("kvm", "libvirt"). */
const char *machine_backend_name(const struct machine *mc);

/* The state the backend reports now, and the id, exit code and crash
 * reason that go with it (0, 0 and "" when the state is another). */
enum machine_state machine_current_state(const struct machine *mc);
uint32_t machine_current_id(const struct machine *mc);
int machine_current_exit_code(const struct machine *mc);
const char *machine_current_crash_reason(const struct machine *mc);
/* Whether there is a guest for Stop and Destroy to act on (see backend.h). */
bool machine_is_active(const struct machine *mc);

/* Sets up what the backend needs before the machine is listed. */
int machine_attach(struct machine *mc);

/*
 * Starts a machine that is not running (a micro-VM is rebuilt from its
 * definition).  Busy if running or if vmqd is shutting down.  Sets a D-Bus
 * error with a message on error (which may be NULL).
 */
int machine_start(struct machine *mc, sd_bus_error *error);
/* Asks the guest to shut down, without waiting (see backend.h). */
int machine_stop(struct machine *mc, sd_bus_error *error);
/* Stops the guest by force (a domain is destroyed).  error may be NULL. */
int machine_kill(struct machine *mc, sd_bus_error *error);
/* Undoes what vmqd wrote outside itself for this machine, before it is
 * undefined (a domain's device and metadata). */
int machine_forget(struct machine *mc, sd_bus_error *error);

/* Emits the changes since the last call: state, id, exit code, crash
 * reason.  Returns true if the state changed. */
bool machine_publish(struct machine *mc);

/* Announces a new machine (MachineNew + ObjectManager), and its removal. */
void machine_send_new(struct machine *mc);
void machine_send_removed(struct machine *mc);

/* Queues a Stop call that is answered once the machine is not running;
 * after timeout_usec the machine is stopped by force. */
int machine_add_stop_request(struct machine *mc, sd_bus_message *call, uint64_t timeout_usec);

/* Answers the pending Stop calls if the machine is no longer running. */
void machine_complete_stops(struct machine *mc);

/* machine-bus.c */
extern const sd_bus_vtable machine_vtable[];
int machine_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                        void **found, sd_bus_error *error);
int machine_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
                            sd_bus_error *error);
/* Method bodies shared with the Manager, for a caller that has checked
 * access already: the message's read pointer is past the name argument. */
int bus_machine_start(sd_bus_message *message, struct machine *mc, sd_bus_error *error);
int bus_machine_stop(sd_bus_message *message, struct machine *mc, sd_bus_error *error);
int bus_machine_destroy(sd_bus_message *message, struct machine *mc, sd_bus_error *error);
int bus_machine_undefine(sd_bus_message *message, struct machine *mc, sd_bus_error *error);

#endif /* VMQD_MACHINE_H */
