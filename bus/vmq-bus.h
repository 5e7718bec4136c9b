/* SPDX-License-Identifier: MIT */
/*
 * The names of vmq's D-Bus API (see vmqd/DBUS-API.md), shared by vmqd and
 * libvmq-client.  Not installed: the public API is libvmq-client's.
 */
#ifndef VMQ_BUS_H
#define VMQ_BUS_H

#include <systemd/sd-bus.h>

#define VMQ_BUS_NAME "org.vmq1"
#define VMQ_BUS_PATH "/org/vmq1"
#define VMQ_BUS_MACHINE_PREFIX "/org/vmq1/machine"
#define VMQ_BUS_CHANNEL_PREFIX "/org/vmq1/channel"
#define VMQ_BUS_MANAGER_IFACE "org.vmq1.Manager"
#define VMQ_BUS_MACHINE_IFACE "org.vmq1.Machine"
#define VMQ_BUS_CHANNEL_IFACE "org.vmq1.Channel"

/* The host as a channel end, in the API's text form. */
#define VMQ_BUS_HOST_END "host"
/* The group whose members may call mutating methods. */
#define VMQ_BUS_GROUP "vmq"
/* Payloads up to this size travel in the message itself (Send, Receive). */
#define VMQ_BUS_MAX_INLINE (64u * 1024u)

#define VMQ_BUS_ERROR_NO_SUCH_MACHINE "org.vmq1.Error.NoSuchMachine"
#define VMQ_BUS_ERROR_NO_SUCH_CHANNEL "org.vmq1.Error.NoSuchChannel"
#define VMQ_BUS_ERROR_MACHINE_EXISTS "org.vmq1.Error.MachineExists"
#define VMQ_BUS_ERROR_INVALID_ARGUMENT "org.vmq1.Error.InvalidArgument"
#define VMQ_BUS_ERROR_BUSY "org.vmq1.Error.Busy"
#define VMQ_BUS_ERROR_NOT_RUNNING "org.vmq1.Error.NotRunning"
#define VMQ_BUS_ERROR_QUEUE_FULL "org.vmq1.Error.QueueFull"
#define VMQ_BUS_ERROR_TIMED_OUT "org.vmq1.Error.TimedOut"
#define VMQ_BUS_ERROR_CHANNEL_CLOSED "org.vmq1.Error.ChannelClosed"
#define VMQ_BUS_ERROR_NOT_AN_END "org.vmq1.Error.NotAnEnd"
#define VMQ_BUS_ERROR_TOO_LARGE "org.vmq1.Error.TooLarge"
#define VMQ_BUS_ERROR_BAD_IMAGE "org.vmq1.Error.BadImage"
#define VMQ_BUS_ERROR_NO_SUCH_IMAGE "org.vmq1.Error.NoSuchImage"
#define VMQ_BUS_ERROR_LIMIT_REACHED "org.vmq1.Error.LimitReached"
#define VMQ_BUS_ERROR_NO_MEMORY "org.vmq1.Error.NoMemory"
#define VMQ_BUS_ERROR_BAD_FD "org.vmq1.Error.BadFileDescriptor"
#define VMQ_BUS_ERROR_BACKEND_UNAVAILABLE "org.vmq1.Error.BackendUnavailable"
/* A change could not be saved in the state directory (full disk, read-only
 * file system, ...); nothing changed, in memory or on disk. */
#define VMQ_BUS_ERROR_STATE_SAVE_FAILED "org.vmq1.Error.StateSaveFailed"
/* Another machine has that UUID (the monitor stamps it on every message as
 * the sender's identity, so it is unique). */
#define VMQ_BUS_ERROR_UUID_IN_USE "org.vmq1.Error.UuidInUse"
/* Anything else that went wrong, with the system's reason in the message. */
#define VMQ_BUS_ERROR_FAILED "org.vmq1.Error.Failed"

/* The error map, for sd_bus_error_set_errno() on the service side and
 * sd_bus_error_get_errno() on the client side.  vmq_bus_errors_init()
 * registers it with sd-bus (idempotent, thread-safe). */
extern const sd_bus_error_map vmq_bus_errors[];
void vmq_bus_errors_init(void);

#endif /* VMQ_BUS_H */
