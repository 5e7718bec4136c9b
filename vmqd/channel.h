/* SPDX-License-Identifier: MIT */
/*
 * A channel: the daemon's record of a core channel, by the names of its
 * ends.  A closed channel stays listed (Open false) so that a host end can
 * drain it, until it is closed through the API, or one of its machines is
 * started again or undefined.  A persistent channel is also a definition
 * in the state, reopened under a new id whenever both ends run.
 */
#ifndef VMQD_CHANNEL_H
#define VMQD_CHANNEL_H

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "core/monitor.h"

struct manager;
struct receive_request;

struct channel {
        struct manager *manager;
        struct channel *prev, *next;

        uint32_t id;
        char *end_a, *end_b; /* machine names or "host" */
        struct vmq_identity ident_a, ident_b;
        char *mode;
        char *transfer;
        uint32_t depth;
        bool persistent;

        bool open; /* what the bus saw last */
        /* Closed, and a Receive was told so (nothing left at the host
         * end): the next manager_process_monitor() removes it. */
        bool drained;
        char *path;

        struct receive_request *receives, *receives_tail; /* FIFO */
};

struct channel_params {
        uint32_t depth;
        const char *mode;
        const char *transfer;
        bool persistent;
};

/*
 * Opens a core channel between two ends (names, or "host") and creates its
 * object (not yet announced).  Sets a D-Bus error on failure, which may be
 * NULL.  Errors: -ENOENT (no such machine), -ESRCH (not running), -EINVAL,
 * -EAGAIN (an end's queue is full), -ENOMEM.
 */
int channel_open(struct manager *m, const char *end_a, const char *end_b,
                 const struct channel_params *p, sd_bus_error *error, struct channel **ret);
/* Fails pending Receive calls with ChannelClosed, unlinks and frees.
 * Accepts NULL; returns NULL.  Does not close the core channel. */
struct channel *channel_free(struct channel *c);

/* Closes the core channel if it is open (not an error if it is not). */
void channel_close(struct channel *c);

/* Does c have the end name? */
bool channel_has_end(const struct channel *c, const char *name);

/* Emits Open if it changed since the last call; returns true if so. */
bool channel_publish(struct channel *c);

/* Announces a channel (ChannelNew + ObjectManager), and its removal. */
void channel_send_new(struct channel *c);
void channel_send_removed(struct channel *c);

/* Serves the pending Receive calls in order, as far as messages allow. */
void channel_dispatch_receives(struct channel *c);
/*
 * Whether a closed channel has served its purpose and goes: nothing is left
 * for a host end to read (a Receive was answered ChannelClosed), or there
 * is no host end.  False while it is open.
 */
bool channel_is_done(const struct channel *c);

/* Drops the pending Receive calls of a bus client that went away; sender
 * NULL: all of them (the bus connection itself went away). */
void channel_drop_receives_of(struct channel *c, const char *sender);

/*
 * Starts a Receive: answers at once if a message is there (or the timeout
 * is 0), else queues the call.  The read pointer of message is past the
 * channel id.
 */
int channel_receive(struct channel *c, sd_bus_message *message, uint64_t timeout_usec,
                    sd_bus_error *error);
int channel_send(struct channel *c, const void *data, size_t len, uint64_t tag,
                 sd_bus_error *error);

/* channel-bus.c */
extern const sd_bus_vtable channel_vtable[];
int channel_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                        void **found, sd_bus_error *error);
int channel_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
                            sd_bus_error *error);
int bus_channel_close(sd_bus_message *message, struct channel *c, sd_bus_error *error);

#endif /* VMQD_CHANNEL_H */
