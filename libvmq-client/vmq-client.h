/* SPDX-License-Identifier: MIT */
/*
 * libvmq-client — the public C library for vmq's daemon, vmqd.
 *
 * vmqd runs micro-VMs ("machines") on /dev/kvm and connects them with
 * message channels.  This library talks to it over D-Bus (the org.vmq1 API,
 * see vmqd/DBUS-API.md); a program never needs to speak D-Bus itself.
 *
 * Conventions, for every function below:
 *
 *  - Functions that can fail return an int: 0 (or a documented positive
 *    value) on success, a negative errno on failure.  Output parameters,
 *    named ret*, are written only on success.
 *  - The daemon's errors come back as these errnos:
 *      -ENOENT     no such machine, or no such image
 *      -ENXIO      no such channel
 *      -EEXIST     a machine of that name exists already
 *      -EINVAL     a bad name, option, size, mode, ...
 *      -EBUSY      wrong state for the call (undefining a running machine)
 *      -ESRCH      the machine is not running
 *      -EAGAIN     the receiver's queue is full; nothing was sent
 *      -ETIMEDOUT  nothing arrived in time, or the daemon did not answer
 *      -EPIPE      the channel is closed
 *      -EPERM      the host is not an end of that channel
 *      -EMSGSIZE   the payload is over the daemon's limit
 *      -ENOEXEC    the guest image was refused
 *      -EUSERS     the daemon's limit of machines or channels is reached
 *      -ENOMEM     out of memory (here, or guest frames in the daemon)
 *      -EBADF      a file descriptor that is not a sealed memfd
 *      -EACCES     not allowed: changing calls need root or the vmq group
 *      -EADDRINUSE the UUID is another machine's already
 *      -EHOSTUNREACH the daemon has no backend for the call (no /dev/kvm for
 *                  micro-VMs, or no libvirt connection for adopted domains)
 *      -EROFS      the daemon could not save its state; nothing changed
 *      -EIO        the daemon failed for another reason
 *                  (org.vmq1.Error.Failed; vmq_client_get_error_message() says
 *                  why)
 *      -EHOSTDOWN  vmqd is not running on the bus
 *      -ENOTCONN   vmq_client_connect() was not called (or failed)
 *    vmq_client_get_error_message() gives the daemon's own wording of the
 *    last error, for a user.
 *  - Objects are reference counted (_ref/_unref) or owned by the caller
 *    (_free).  Every destructor accepts NULL and returns NULL.
 *  - Strings returned as const char * belong to the object they come from
 *    and live as long as it does.
 *  - A struct vmq_client is not thread-safe: use it from one thread at a
 *    time, and not across fork().
 *  - File descriptors the library opens are O_CLOEXEC.
 *
 * A minimal program:
 *
 *      struct vmq_client *c = NULL;
 *      int r = vmq_client_new(&c);
 *      if (r >= 0)
 *              r = vmq_client_connect(c, "system");
 *      if (r >= 0)
 *              r = vmq_client_start_machine(c, "web");
 *      if (r < 0)
 *              fprintf(stderr, "start: %s\n", strerror(-r));
 *      vmq_client_unref(c);
 */
#ifndef VMQ_CLIENT_H
#define VMQ_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------
 * The client: a connection to the bus vmqd is on.
 */

/* Opaque handle.  Created by vmq_client_new(), then connected. */
struct vmq_client;

/*
 * vmq_client_new:
 * @ret: where the new client is stored (with one reference)
 *
 * Creates a client that is not connected yet.
 *
 * Returns: 0, or -ENOMEM.
 */
int vmq_client_new(struct vmq_client **ret);

/*
 * vmq_client_ref:
 * @c: a client, or NULL
 *
 * Takes a reference.  Returns: @c.
 */
struct vmq_client *vmq_client_ref(struct vmq_client *c);

/*
 * vmq_client_unref:
 * @c: a client, or NULL
 *
 * Drops a reference; the last one closes the connection and frees the
 * client.  Returns: NULL.
 */
struct vmq_client *vmq_client_unref(struct vmq_client *c);

/*
 * vmq_client_connect:
 * @c: a client that is not connected yet
 * @bus: "system" (also when NULL), "user", or a D-Bus address such as
 *       "unix:path=/run/vmq-test/bus"
 *
 * Connects to a bus.  It does not check that vmqd is there: when it is not,
 * the first call that needs it fails with -EHOSTDOWN (on the system bus,
 * bus activation may start vmqd instead).
 *
 * Returns: 0; -EISCONN when @c is connected already; -EINVAL for a
 * malformed address; -ENOENT or -ECONNREFUSED when there is no bus at that
 * address; -ENOMEDIUM when "user" is asked and no user bus is known;
 * another negative errno from the connection.
 */
int vmq_client_connect(struct vmq_client *c, const char *bus);

/*
 * vmq_client_set_call_timeout:
 * @c: a client
 * @usec: how long a method call waits for vmqd's reply, in microseconds;
 *        0 restores the default (25 s)
 *
 * vmq_client_receive() waits for its own timeout plus this one.
 *
 * Returns: 0.
 */
int vmq_client_set_call_timeout(struct vmq_client *c, uint64_t usec);

/*
 * vmq_client_get_error_message:
 * @c: a client
 *
 * Returns: the text of the error that made the last failing call on @c
 * fail, as the daemon or the bus wrote it (for example "memory must be a
 * multiple of 2 MiB"), or NULL when there is none.  Valid until the next
 * call on @c.
 */
const char *vmq_client_get_error_message(struct vmq_client *c);

/*
 * vmq_client_get_daemon_version:
 * @c: a connected client
 * @ret: where a newly allocated copy of vmqd's version string is stored;
 *       free() it
 *
 * Returns: 0 or a negative errno (-EHOSTDOWN: vmqd is not running).
 */
int vmq_client_get_daemon_version(struct vmq_client *c, char **ret);

/*
 * vmq_client_get_library_version:
 *
 * Returns: the version of this library, a static string such as "0.1.0".
 */
const char *vmq_client_get_library_version(void);

/* ------------------------------------------------------------------------
 * Statistics: a list of named counters.
 */

/* Opaque, owned by the caller: free with vmq_stats_free(). */
struct vmq_stats;

/*
 * vmq_client_get_statistics:
 * @c: a connected client
 * @ret: where the daemon's statistics are stored (machines, running,
 *       channels, messages, bytes, errors, frames_free, frames_total,
 *       huge_frames_free, huge_frames_total, and any key a newer vmqd adds)
 *
 * Returns: 0 or a negative errno.
 */
int vmq_client_get_statistics(struct vmq_client *c, struct vmq_stats **ret);

/*
 * vmq_stats_get_count:
 * Returns: the number of counters in @s (0 for NULL).
 */
size_t vmq_stats_get_count(const struct vmq_stats *s);

/*
 * vmq_stats_get_name:
 * @s: statistics
 * @i: an index below vmq_stats_get_count()
 *
 * Returns: the name of counter @i, or NULL when @i is out of range.
 */
const char *vmq_stats_get_name(const struct vmq_stats *s, size_t i);

/*
 * vmq_stats_get_value:
 * Returns: the value of counter @i, or 0 when @i is out of range.
 */
uint64_t vmq_stats_get_value(const struct vmq_stats *s, size_t i);

/*
 * vmq_stats_lookup:
 * @s: statistics
 * @name: a counter's name
 * @ret: where its value is stored
 *
 * Returns: 0, or -ENOENT when @s has no counter @name.
 */
int vmq_stats_lookup(const struct vmq_stats *s, const char *name, uint64_t *ret);

/*
 * vmq_stats_free:
 * Frees @s (NULL is fine).  Returns: NULL.
 */
struct vmq_stats *vmq_stats_free(struct vmq_stats *s);

/* ------------------------------------------------------------------------
 * Machines.
 */

enum vmq_machine_state {
        VMQ_MACHINE_UNKNOWN = 0, /* a state this library does not know */
        VMQ_MACHINE_DEFINED,     /* known, never started */
        VMQ_MACHINE_RUNNING,
        VMQ_MACHINE_EXITED,  /* the guest called exit: see the exit code */
        VMQ_MACHINE_STOPPED, /* stopped by StopMachine or DestroyMachine */
        VMQ_MACHINE_CRASHED, /* see the crash reason */
        _VMQ_MACHINE_STATE_MAX,
};

/*
 * vmq_machine_state_to_string:
 * Returns: "defined", "running", "exited", "stopped", "crashed", or
 * "unknown" (also for values out of range).
 */
const char *vmq_machine_state_to_string(enum vmq_machine_state state);

/*
 * vmq_machine_state_from_string:
 * Returns: the state named @s, or VMQ_MACHINE_UNKNOWN.
 */
enum vmq_machine_state vmq_machine_state_from_string(const char *s);

/*
 * Options for vmq_client_create_machine().  The structure grows at its end
 * in later versions: set @size to sizeof(struct vmq_machine_options) (or
 * start from VMQ_MACHINE_OPTIONS_INIT), so that the library reads only the
 * fields the caller knows about.  A zero field means "the daemon's
 * default".
 */
struct vmq_machine_options {
        size_t size;          /* sizeof(struct vmq_machine_options) */
        uint64_t memory;      /* guest memory in bytes, a multiple of 2 MiB */
        uint32_t vcpus;       /* number of vCPUs */
        uint32_t queue_depth; /* the machine's queue depth, a power of two */
        uint64_t huge_memory; /* bytes of the machine's own 2 MiB frames */
        const char *args;     /* the guest's argument string, or NULL */
        const char *uuid;     /* RFC 4122 text, or NULL for a random one */
        bool persistent;      /* save the definition, so it survives restarts */
        bool autostart;       /* start when vmqd starts (implies persistent) */
        bool start;           /* start it now */
};

/* Every field in order, not designated: C++ before C++20 has no designated
 * initializers, and g++ -Wextra warns about each member a braced list leaves
 * out (-Wmissing-field-initializers); tests/cxx-header.cc checks both.  A
 * field added to the structure is added here too. */
#define VMQ_MACHINE_OPTIONS_INIT                                                                   \
        { sizeof(struct vmq_machine_options), 0, 0, 0, 0, NULL, NULL, false, false, false }

/*
 * vmq_client_create_machine:
 * @c: a connected client
 * @name: 1–63 characters from [A-Za-z0-9_.-], not starting with '.' or
 *        '-', and not "host"
 * @image: an absolute path to a guest image (an ELF file), or the name of an
 *         image installed with vmq ("echo", "sink", ...)
 * @opts: options, or NULL for the defaults
 *
 * Defines a machine, and starts it when @opts->start is set.
 *
 * Returns: 0; -EEXIST when the name is taken; -ENOENT when there is no such
 * image; -ENOEXEC when the image is refused; -EINVAL for a bad name or
 * option (also when @opts->size is too small to hold @size itself);
 * -EACCES; another negative errno.
 */
int vmq_client_create_machine(struct vmq_client *c, const char *name, const char *image,
                              const struct vmq_machine_options *opts);

/*
 * vmq_client_start_machine:
 * Starts machine @name (rebuilt from its definition if it ran before).
 * Returns: 0, -ENOENT (no such machine), -EBUSY (running already), -EACCES,
 * or another negative errno.
 */
int vmq_client_start_machine(struct vmq_client *c, const char *name);

/*
 * vmq_client_stop_machine:
 * @timeout_sec: how long the guest gets to exit after being asked to shut
 *               down, before it is stopped by force; 0: the daemon's default
 *
 * Returns once the machine no longer runs.  The call waits for the daemon
 * up to @timeout_sec plus the call timeout.
 * Returns: 0, -ENOENT, -ESRCH (not running), -EACCES, or another negative
 * errno.
 */
int vmq_client_stop_machine(struct vmq_client *c, const char *name, uint32_t timeout_sec);

/*
 * vmq_client_destroy_machine:
 * Stops machine @name by force, at once.
 * Returns: 0, -ENOENT, -ESRCH, -EACCES, or another negative errno.
 */
int vmq_client_destroy_machine(struct vmq_client *c, const char *name);

/*
 * vmq_client_undefine_machine:
 * Forgets machine @name, which must not be running, and its saved
 * definition.
 * Returns: 0, -ENOENT, -EBUSY (running), -EACCES, or another negative errno.
 */
int vmq_client_undefine_machine(struct vmq_client *c, const char *name);

/* Opaque, reference counted: a snapshot of a machine's properties. */
struct vmq_machine;

/*
 * vmq_client_get_machine:
 * @c: a connected client
 * @name: a machine name
 * @ret: where a snapshot of every property of the machine is stored
 *
 * Returns: 0, -ENOENT when there is no such machine, or another negative
 * errno.
 */
int vmq_client_get_machine(struct vmq_client *c, const char *name, struct vmq_machine **ret);

/*
 * vmq_client_list_machines:
 * @c: a connected client
 * @ret: where a NULL-terminated array of machine snapshots is stored; free
 *       it with vmq_machine_unref_list()
 * @ret_n: where the number of machines is stored, or NULL
 *
 * The snapshots hold what the list carries: name, state, id and image.
 * Their other getters return 0, false or NULL; use vmq_client_get_machine()
 * for the rest.  vmq_machine_is_complete() tells the two kinds apart.
 *
 * Returns: 0 or a negative errno.
 */
int vmq_client_list_machines(struct vmq_client *c, struct vmq_machine ***ret, size_t *ret_n);

/*
 * vmq_machine_unref_list:
 * Drops one reference to each machine of @list, then frees @list.
 * Returns: NULL.
 */
struct vmq_machine **vmq_machine_unref_list(struct vmq_machine **list);

struct vmq_machine *vmq_machine_ref(struct vmq_machine *m);   /* returns @m */
struct vmq_machine *vmq_machine_unref(struct vmq_machine *m); /* returns NULL */

/* Getters of a machine snapshot.  @m must not be NULL. */

/* true when the snapshot comes from vmq_client_get_machine(). */
bool vmq_machine_is_complete(const struct vmq_machine *m);
const char *vmq_machine_get_name(const struct vmq_machine *m);
/* the text form (NULL in a list snapshot) */
const char *vmq_machine_get_uuid(const struct vmq_machine *m);
/* what the machine was created from: a path or an installed image name */
const char *vmq_machine_get_image(const struct vmq_machine *m);
enum vmq_machine_state vmq_machine_get_state(const struct vmq_machine *m);
/* the state as the daemon wrote it (also for states this library does not know) */
const char *vmq_machine_get_state_string(const struct vmq_machine *m);
/* the VM id while it runs, 0 otherwise */
uint32_t vmq_machine_get_id(const struct vmq_machine *m);
/* guest memory in bytes */
uint64_t vmq_machine_get_memory(const struct vmq_machine *m);
uint32_t vmq_machine_get_vcpus(const struct vmq_machine *m);
uint32_t vmq_machine_get_queue_depth(const struct vmq_machine *m);
bool vmq_machine_is_persistent(const struct vmq_machine *m);
bool vmq_machine_is_autostart(const struct vmq_machine *m);
/* the guest's exit code, meaningful in state "exited" */
int32_t vmq_machine_get_exit_code(const struct vmq_machine *m);
/* why it crashed: "" unless in state "crashed" (NULL in a list snapshot) */
const char *vmq_machine_get_crash_reason(const struct vmq_machine *m);
/*
 * The machine's counters (exits, sent, posted, received, bytes_sent,
 * copies, flips, shares, errors), read when the snapshot was taken; NULL
 * for a list snapshot.  Belongs to @m.
 */
const struct vmq_stats *vmq_machine_get_statistics(const struct vmq_machine *m);

/*
 * vmq_client_read_console:
 * @c: a connected client
 * @name: a machine name
 * @offset: the console byte offset to read from: 0 first, then the
 *          @ret_next of the previous call
 * @ret_data: where a newly allocated buffer with the output is stored
 *            (free() it; NULL when @ret_size is 0)
 * @ret_size: where its size is stored
 * @ret_next: where the offset to read from next is stored
 *
 * Reads a guest's console output.  The daemon keeps the last 64 KiB: an
 * @offset older than that skips ahead.  Follow a console by calling this
 * again with @ret_next, from time to time.
 *
 * Returns: 0, -ENOENT, or another negative errno.
 */
int vmq_client_read_console(struct vmq_client *c, const char *name, uint64_t offset,
                            void **ret_data, size_t *ret_size, uint64_t *ret_next);

/* ------------------------------------------------------------------------
 * libvirt domains (since LIBVMQ_CLIENT_2).
 */

/*
 * Options for vmq_client_adopt_domain(); versioned by @size like struct
 * vmq_machine_options.  Zero or NULL fields mean "the daemon's default".
 */
struct vmq_adopt_options {
        size_t size;          /* sizeof(struct vmq_adopt_options) */
        const char *name;     /* the machine's name; NULL: the domain's name */
        bool persistent;      /* save the adoption, so it survives vmqd restarts */
        uint64_t region_size; /* bytes of the shared region, a power of two (default 4 MiB) */
        uint64_t rx_size;     /* bytes of its receive window (default: half the region) */
        /* Since LIBVMQ_CLIENT_4: a vhost-user-vsock device for the domain
         * (see vmq_client_vsock_connect()).  With @vsock_cid 0, the lowest
         * free CID from 3 up; else this CID (3..4294967294), which implies
         * @vsock. */
        bool vsock;
        uint32_t vsock_cid;
};

/* Every member in order, for the reason given at VMQ_MACHINE_OPTIONS_INIT. */
#define VMQ_ADOPT_OPTIONS_INIT                                                                     \
        { sizeof(struct vmq_adopt_options), NULL, false, 0, 0, false, 0 }

/*
 * vmq_client_adopt_domain:
 * @c: a connected client
 * @domain: the name or UUID of a libvirt domain, at the daemon's libvirt URI
 * @opts: options, or NULL for the defaults
 * @ret_name: where the new machine's name is stored (free() it), or NULL
 *
 * Makes a libvirt domain a vmq machine: the daemon writes vmq's identity
 * into the domain's <metadata>, and attaches an ivshmem-doorbell device
 * whose server it runs (to the persistent definition, and live if the
 * domain runs).  The machine then follows the domain's lifecycle, and
 * vmq_client_start_machine() and friends act on the domain.  Undefining
 * the machine removes the device and the metadata but keeps the domain.
 *
 * Returns: 0; -ENOENT when there is no such domain; -EEXIST when the name
 * is taken, the domain is adopted already, or @opts->vsock_cid is another
 * machine's; -EINVAL for a bad name or option (a CID out of range);
 * -EUSERS when no CID is free; -EHOSTUNREACH when the daemon cannot reach
 * libvirt; -EACCES; another negative errno.
 */
int vmq_client_adopt_domain(struct vmq_client *c, const char *domain,
                            const struct vmq_adopt_options *opts, char **ret_name);

/*
 * vmq_machine_get_backend:
 * Returns: "kvm" (a micro-VM of vmqd's own) or "libvirt" (an adopted
 * domain); NULL in a list snapshot (see vmq_client_list_machines()).
 */
const char *vmq_machine_get_backend(const struct vmq_machine *m);

/*
 * vmq_machine_get_domain:
 * Returns: the libvirt domain's name for an adopted domain, "" for a
 * micro-VM; NULL in a list snapshot.
 */
const char *vmq_machine_get_domain(const struct vmq_machine *m);

/* ------------------------------------------------------------------------
 * vsock (since LIBVMQ_CLIENT_4): the host's end (CID 2) of an adopted
 * domain's vhost-user-vsock device, which vmqd serves through UNIX sockets.
 */

/*
 * vmq_machine_get_vsock_cid:
 * Returns: the CID guests reach the machine at: its vsock device's, or for
 * a machine without one that vmqd made a vsock peer (state "peer"), the
 * CID it gave it; 0 when it has none (also in a list snapshot, and from a
 * vmqd without vsock).
 */
uint32_t vmq_machine_get_vsock_cid(const struct vmq_machine *m);

/*
 * vmq_machine_get_vsock_state:
 * Returns: "none" (no CID), "peer", "running" (QEMU runs the device),
 * "restart-needed" (the device is in the domain's definition, but the
 * running domain has none: its memory was not shared; restart it) or
 * "waiting" (for QEMU: the domain is shut off or starting).  Owned by @m.
 */
const char *vmq_machine_get_vsock_state(const struct vmq_machine *m);

/*
 * vmq_client_vsock_connect:
 * @c: a connected client
 * @machine: a machine with a vsock device (adopted with @vsock)
 * @port: the guest's port
 * @ret_fd: where the connected stream socket is stored (blocking,
 *          close-on-exec); close() it when done
 * @ret_host_port: where the host's port of the connection (as the guest
 *                 sees it) is stored, or NULL
 *
 * Connects to @port in the machine's guest, as a program on the host
 * (CID 2): asks vmqd for the machine's host socket, writes "CONNECT
 * <port>" to it and waits for "OK <host port>" (up to the call timeout,
 * vmq_client_set_call_timeout()).  The socket then carries the stream;
 * shutdown(SHUT_WR) tells the guest the host sends no more.
 *
 * Returns: 0; -ENOENT: no such machine; -ENODEV: it has no vsock device;
 * -ECONNREFUSED: the guest refused (nothing listens on @port, or the
 * domain's QEMU is not connected to the device); -EACCES: not allowed on
 * the host socket (vmqd's user only); -ETIMEDOUT: no answer in time;
 * -EBADMSG: vmqd's answer is malformed; -EHOSTDOWN; another negative errno.
 */
int vmq_client_vsock_connect(struct vmq_client *c, const char *machine, uint32_t port, int *ret_fd,
                             uint32_t *ret_host_port);

/*
 * vmq_client_vsock_listen:
 * @c: a connected client
 * @machine: a machine with a vsock device
 * @port: the host port (CID 2) the guest connects to
 * @ret_fd: where the listening socket is stored (blocking, close-on-exec);
 *          accept() the guest's connections on it
 * @ret_path: where a newly allocated copy of the socket's path is stored
 *            (free() it): the machine's host socket followed by "_<port>"
 *
 * Listens where vmqd sends the guest's connections to CID 2, @port: a UNIX
 * stream socket at @ret_path.  A socket file left there by a program that
 * is gone is replaced.  The caller unlinks @ret_path when it stops
 * listening; while it is there and nobody listens, the guest's
 * connections are reset.
 *
 * Returns: 0; -ENOENT; -ENODEV; -EADDRINUSE: a program holds a socket
 * there already (which gets no connection from the check), or the path is
 * taken by something that is not a socket;
 * -EACCES: not allowed to create it (the runtime directory is vmqd's);
 * -ENAMETOOLONG: the path does not fit a UNIX socket address; -EHOSTDOWN;
 * another negative errno.
 */
int vmq_client_vsock_listen(struct vmq_client *c, const char *machine, uint32_t port, int *ret_fd,
                            char **ret_path);

/* ------------------------------------------------------------------------
 * Channels.
 */

/* The host, as a channel end. */
#define VMQ_CLIENT_HOST_END "host"

/*
 * Options for vmq_client_open_channel(); versioned by @size like struct
 * vmq_machine_options.  Zero or NULL fields mean "the daemon's default".
 */
struct vmq_channel_options {
        size_t size;          /* sizeof(struct vmq_channel_options) */
        uint32_t depth;       /* how many messages may wait at a host end */
        const char *mode;     /* "immediate" or "deferred" */
        const char *transfer; /* "copy", "flip" or "auto" */
        bool persistent;      /* saved, and reopened when both ends run */
};

/* Every member in order, for the reason given at VMQ_MACHINE_OPTIONS_INIT. */
#define VMQ_CHANNEL_OPTIONS_INIT                                                                   \
        { sizeof(struct vmq_channel_options), 0, NULL, NULL, false }

/*
 * vmq_client_open_channel:
 * @c: a connected client
 * @end_a, @end_b: each a running machine's name or "host"; not both "host"
 * @opts: options, or NULL
 * @ret_id: where the new channel's id is stored, or NULL
 *
 * Returns: 0; -ENOENT (no such machine); -ESRCH (an end is not running);
 * -EINVAL; -EUSERS; -EACCES; or another negative errno.
 */
int vmq_client_open_channel(struct vmq_client *c, const char *end_a, const char *end_b,
                            const struct vmq_channel_options *opts, uint32_t *ret_id);

/*
 * vmq_client_close_channel:
 * Returns: 0, -ENXIO (no such channel), -EACCES, or another negative errno.
 */
int vmq_client_close_channel(struct vmq_client *c, uint32_t id);

/* The two ends of a channel. */
enum vmq_channel_end {
        VMQ_CHANNEL_END_A = 0,
        VMQ_CHANNEL_END_B = 1,
        _VMQ_CHANNEL_END_MAX,
};

/* Opaque, reference counted: a snapshot of a channel's properties. */
struct vmq_channel;

/*
 * vmq_client_get_channel:
 * @ret: where a snapshot of every property of channel @id is stored
 * Returns: 0, -ENXIO when there is no such channel, or another negative
 * errno.
 */
int vmq_client_get_channel(struct vmq_client *c, uint32_t id, struct vmq_channel **ret);

/*
 * vmq_client_list_channels:
 * @ret: where a NULL-terminated array of channel snapshots is stored; free
 *       it with vmq_channel_unref_list()
 * @ret_n: where their number is stored, or NULL
 *
 * The snapshots hold id, ends and whether the channel is open; the other
 * getters return 0, false or NULL (see vmq_channel_is_complete()).
 * Returns: 0 or a negative errno.
 */
int vmq_client_list_channels(struct vmq_client *c, struct vmq_channel ***ret, size_t *ret_n);

/*
 * vmq_channel_unref_list:
 * Drops one reference to each channel of @list, then frees @list.
 * Returns: NULL.
 */
struct vmq_channel **vmq_channel_unref_list(struct vmq_channel **list);

struct vmq_channel *vmq_channel_ref(struct vmq_channel *ch);   /* returns @ch */
struct vmq_channel *vmq_channel_unref(struct vmq_channel *ch); /* returns NULL */

/* Getters of a channel snapshot.  @ch must not be NULL; an @end out of
 * range gives NULL or 0. */

/* true when the snapshot comes from vmq_client_get_channel(). */
bool vmq_channel_is_complete(const struct vmq_channel *ch);
uint32_t vmq_channel_get_id(const struct vmq_channel *ch);
/* a machine name or "host" */
const char *vmq_channel_get_end(const struct vmq_channel *ch, enum vmq_channel_end end);
/* the identity stamped into the HELLOs: VM id, name and UUID of an end */
uint32_t vmq_channel_get_identity_id(const struct vmq_channel *ch, enum vmq_channel_end end);
const char *vmq_channel_get_identity_name(const struct vmq_channel *ch, enum vmq_channel_end end);
const char *vmq_channel_get_identity_uuid(const struct vmq_channel *ch, enum vmq_channel_end end);
/* "immediate" or "deferred" */
const char *vmq_channel_get_mode(const struct vmq_channel *ch);
/* "copy", "flip" or "auto" */
const char *vmq_channel_get_transfer(const struct vmq_channel *ch);
uint32_t vmq_channel_get_depth(const struct vmq_channel *ch);
bool vmq_channel_is_persistent(const struct vmq_channel *ch);
bool vmq_channel_is_open(const struct vmq_channel *ch);
/* true while the channel has a link: a ring both micro-VM ends map, see
 * "Channel links" in vmq(7) */
bool vmq_channel_is_linked(const struct vmq_channel *ch);
/* messages and bytes delivered to @end */
uint64_t vmq_channel_get_messages(const struct vmq_channel *ch, enum vmq_channel_end end);
uint64_t vmq_channel_get_bytes(const struct vmq_channel *ch, enum vmq_channel_end end);

/* ------------------------------------------------------------------------
 * Messages: the host as a channel end.
 */

/*
 * vmq_client_send:
 * @c: a connected client
 * @channel: a channel with the host as one end
 * @data: the payload (may be NULL when @size is 0)
 * @size: its size; up to 64 KiB travels in the D-Bus message, more in a
 *        sealed memfd (up to the daemon's max_message, 16 MiB by default)
 * @tag: a value the receiver sees with the message
 *
 * Sends a message from the host.  Nothing is sent when it fails.
 *
 * Returns: 0; -ENXIO; -EPERM (the host is not an end); -EAGAIN (the
 * receiver is full; try again later); -EPIPE (closed); -EMSGSIZE;
 * -EACCES; or another negative errno.
 */
int vmq_client_send(struct vmq_client *c, uint32_t channel, const void *data, size_t size,
                    uint64_t tag);

/*
 * vmq_client_send_fd:
 * @fd: a memfd sealed with F_SEAL_WRITE, F_SEAL_SHRINK and F_SEAL_GROW;
 *      its whole content is the message.  It stays the caller's.
 *
 * Like vmq_client_send(), for a caller that holds the payload in a memfd.
 * Returns: as vmq_client_send(), and -EBADF when @fd is not a sealed memfd.
 */
int vmq_client_send_fd(struct vmq_client *c, uint32_t channel, int fd, uint64_t tag);

/* What a received message is. */
enum vmq_message_kind {
        VMQ_MESSAGE_UNKNOWN = 0, /* a kind this library does not know */
        VMQ_MESSAGE_DATA,        /* a payload */
        VMQ_MESSAGE_PAGE,        /* a payload that travelled as whole pages */
        VMQ_MESSAGE_HELLO,       /* the peer's identity, when the channel opens */
        VMQ_MESSAGE_CLOSE,       /* the channel closed */
        VMQ_MESSAGE_ERROR,       /* the daemon reports an error on the channel */
        _VMQ_MESSAGE_KIND_MAX,
};

/* Returns: "data", "page", "hello", "close", "error" or "unknown". */
const char *vmq_message_kind_to_string(enum vmq_message_kind kind);

/* Opaque, owned by the caller: free with vmq_message_free(). */
struct vmq_message;

/*
 * vmq_client_receive:
 * @c: a connected client
 * @channel: a channel with the host as one end
 * @timeout_usec: how long to wait for a message: 0 only looks,
 *                UINT64_MAX waits without limit
 * @ret: where the message is stored
 *
 * Takes the next message for the host end of @channel.  Large payloads
 * come as a memfd, which this function reads; the caller always gets the
 * bytes.
 *
 * Returns: 0; -ETIMEDOUT when nothing arrived in time; -EPIPE when the
 * channel is closed and empty; -ENXIO; -EPERM; -EACCES; or another negative
 * errno.
 */
int vmq_client_receive(struct vmq_client *c, uint32_t channel, uint64_t timeout_usec,
                       struct vmq_message **ret);

/* Getters of a message.  @m must not be NULL. */
enum vmq_message_kind vmq_message_get_kind(const struct vmq_message *m);
/* the kind as the daemon wrote it (also for kinds this library does not know) */
const char *vmq_message_get_kind_string(const struct vmq_message *m);
/* the VM id of the sender (0: the host) */
uint32_t vmq_message_get_source(const struct vmq_message *m);
uint64_t vmq_message_get_tag(const struct vmq_message *m);
/* the payload and its size; the payload belongs to @m (NULL when empty) */
const void *vmq_message_get_data(const struct vmq_message *m, size_t *ret_size);
/* for a hello: the peer's name, UUID and VM id; NULL or 0 otherwise */
const char *vmq_message_get_peer_name(const struct vmq_message *m);
const char *vmq_message_get_peer_uuid(const struct vmq_message *m);
uint32_t vmq_message_get_peer_id(const struct vmq_message *m);

/* Frees @m (NULL is fine).  Returns: NULL. */
struct vmq_message *vmq_message_free(struct vmq_message *m);

/* ------------------------------------------------------------------------
 * Events, in the caller's event loop.
 *
 * After vmq_client_subscribe(), poll vmq_client_get_fd() for
 * vmq_client_get_events(), wake up by vmq_client_get_timeout(), and call
 * vmq_client_process() until it returns 0.  For example:
 *
 *      for (;;) {
 *              while ((r = vmq_client_process(c)) > 0)
 *                      ;
 *              if (r < 0)
 *                      break;
 *              uint64_t until;
 *              int ms = -1;
 *              struct pollfd p = {.fd = vmq_client_get_fd(c),
 *                                 .events = vmq_client_get_events(c)};
 *              if (vmq_client_get_timeout(c, &until) > 0) {
 *                      struct timespec ts;
 *                      clock_gettime(CLOCK_MONOTONIC, &ts);
 *                      uint64_t now = ts.tv_sec * 1000000ULL + ts.tv_nsec / 1000;
 *                      ms = until > now ? (int)((until - now + 999) / 1000) : 0;
 *              }
 *              poll(&p, 1, ms);
 *      }
 *
 * Or, without a loop of one's own, vmq_client_wait() then
 * vmq_client_process().
 */

enum vmq_event_type {
        VMQ_EVENT_MACHINE_NEW = 0, /* name */
        VMQ_EVENT_MACHINE_REMOVED, /* name */
        VMQ_EVENT_MACHINE_STATE,   /* name, state */
        VMQ_EVENT_CHANNEL_NEW,     /* channel id */
        VMQ_EVENT_CHANNEL_REMOVED, /* channel id */
        VMQ_EVENT_CHANNEL_STATE,   /* channel id, open */
        VMQ_EVENT_DAEMON_STARTED,  /* vmqd appeared on the bus */
        VMQ_EVENT_DAEMON_STOPPED,  /* vmqd left the bus */
        _VMQ_EVENT_TYPE_MAX,
};

/* Returns: "machine-new", "machine-removed", "machine-state", "channel-new",
 * "channel-removed", "channel-state", "daemon-started", "daemon-stopped",
 * or "unknown". */
const char *vmq_event_type_to_string(enum vmq_event_type type);

/* Opaque; valid only during the callback it is passed to. */
struct vmq_event;

enum vmq_event_type vmq_event_get_type(const struct vmq_event *ev);
/* the machine's name for machine events, NULL otherwise */
const char *vmq_event_get_machine_name(const struct vmq_event *ev);
/* the new state for VMQ_EVENT_MACHINE_STATE, NULL otherwise */
const char *vmq_event_get_machine_state(const struct vmq_event *ev);
/* the channel id for channel events, 0 otherwise */
uint32_t vmq_event_get_channel_id(const struct vmq_event *ev);
/* whether the channel is open now, for VMQ_EVENT_CHANNEL_STATE */
bool vmq_event_get_channel_open(const struct vmq_event *ev);

/*
 * vmq_client_subscribe:
 * @c: a connected client
 * @callback: called from vmq_client_process() for each event; a negative
 *            return stops that vmq_client_process() call, which returns it.
 *            NULL unsubscribes.
 * @userdata: passed to @callback
 *
 * Subscribes to the daemon's machine and channel events, and to vmqd
 * coming and going on the bus.  Calling it again replaces the callback.
 * Events emitted after this returns are delivered; none from before.
 *
 * Returns: 0 or a negative errno.
 */
int vmq_client_subscribe(struct vmq_client *c,
                         int (*callback)(struct vmq_client *c, const struct vmq_event *ev,
                                         void *userdata),
                         void *userdata);

/*
 * vmq_client_get_fd:
 * Returns: the connection's file descriptor, to poll; or a negative errno
 * (-ENOTCONN).  It belongs to @c: do not read, write or close it.
 */
int vmq_client_get_fd(struct vmq_client *c);

/*
 * vmq_client_get_events:
 * Returns: the poll() events (POLLIN, POLLOUT) to wait for on the fd, or a
 * negative errno.  It changes as the connection works: ask before each
 * poll.
 */
int vmq_client_get_events(struct vmq_client *c);

/*
 * vmq_client_get_timeout:
 * @ret_usec: where the CLOCK_MONOTONIC time (absolute, in microseconds) by
 *            which vmq_client_process() must be called is stored; 0 means
 *            "now" (work is queued already)
 *
 * Returns: 1 when there is such a time, 0 when there is none (@ret_usec is
 * then set to UINT64_MAX), or a negative errno.
 */
int vmq_client_get_timeout(struct vmq_client *c, uint64_t *ret_usec);

/*
 * vmq_client_process:
 * Does pending work without blocking and calls the event callback for at
 * most one incoming event.
 *
 * Returns: 1 when something was done (call it again), 0 when there is
 * nothing more to do for now (poll next), a negative errno on failure;
 * -ECONNRESET or -ENOTCONN when the bus connection is gone, or what a
 * callback returned.
 */
int vmq_client_process(struct vmq_client *c);

/*
 * vmq_client_wait:
 * @timeout_usec: how long to wait at most; UINT64_MAX: no limit
 *
 * Blocks until vmq_client_process() has work, for programs without an
 * event loop of their own.
 * Returns: 1 when there is work, 0 on timeout, -EINTR when a signal came,
 * or another negative errno.
 */
int vmq_client_wait(struct vmq_client *c, uint64_t timeout_usec);

#ifdef __cplusplus
}
#endif

#endif /* VMQ_CLIENT_H */
