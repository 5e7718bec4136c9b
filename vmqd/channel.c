/* SPDX-License-Identifier: MIT */
/*
 * Channels and the host end.
 *
 * Receive never blocks the loop: a call that finds nothing is queued on its
 * channel (FIFO) with a timer for its deadline, and is answered from
 * manager_process_monitor() when the monitor's event fd says a message came,
 * or from its timer with TimedOut.  Only the head of a channel's queue takes
 * messages, so callers are served in the order they asked.  A caller that
 * leaves the bus has its calls dropped (NameOwnerChanged), so a vanished
 * client cannot hold the head forever.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bus/vmq-bus.h"
#include "core/util.h"
#include "vmqd/bus-error.h"
#include "vmqd/channel.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"
#include "vmqd/vsock.h"

struct receive_request {
        struct channel *channel;
        struct receive_request *next;
        sd_bus_message *call;
        sd_event_source *timer;
};

static enum vmq_transfer transfer_from_string(const char *s) {
        if (strcmp(s, "copy") == 0)
                return VMQ_TRANSFER_COPY;
        if (strcmp(s, "flip") == 0)
                return VMQ_TRANSFER_FLIP;
        return VMQ_TRANSFER_AUTO;
}

bool channel_has_end(const struct channel *c, const char *name) {
        return strcmp(c->end_a, name) == 0 || strcmp(c->end_b, name) == 0;
}

static bool channel_has_host(const struct channel *c) {
        return channel_has_end(c, VMQ_BUS_HOST_END);
}

bool channel_is_done(const struct channel *c) {
        return !c->open && (c->drained || !channel_has_host(c));
}

/* Resolves an end name to a VM id and identity. */
static int resolve_end(struct manager *m, const char *name, uint32_t *ret_id,
                       struct vmq_identity *ret_ident, sd_bus_error *error) {
        struct machine *mc;

        if (strcmp(name, VMQ_BUS_HOST_END) == 0) {
                vmq_monitor_host_identity(m->monitor, ret_ident);
                *ret_id = VMQ_HOST_ID;
                return 0;
        }
        mc = manager_find_machine(m, name);
        if (!mc)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_SUCH_MACHINE, "No machine '%s'",
                                         name);
        if (machine_current_state(mc) != MACHINE_RUNNING)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NOT_RUNNING,
                                         "Machine '%s' is not running", name);
        vmq_vm_identity(mc->vm, ret_ident);
        *ret_id = vmq_vm_id(mc->vm);
        return 0;
}

int channel_open(struct manager *m, const char *end_a, const char *end_b,
                 const struct channel_params *p, sd_bus_error *error, struct channel **ret) {
        struct vmq_channel_config cfg;
        struct vmq_identity ia, ib;
        uint32_t a, b, id;
        struct channel *c;
        int r;

        if (strcmp(end_a, end_b) == 0)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "A channel needs two different ends, not '%s' twice",
                                         end_a);
        if (!VMQ_IS_POW2(p->depth) || p->depth > 65536)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Invalid depth '%u' (a power of two, at most 65536)",
                                         p->depth);
        if (!vmqd_mode_is_valid(p->mode))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Invalid mode '%s' (immediate or deferred)", p->mode);
        if (!vmqd_transfer_is_valid(p->transfer))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Invalid transfer '%s' (copy, flip or auto)", p->transfer);
        r = resolve_end(m, end_a, &a, &ia, error);
        if (r < 0)
                return r;
        r = resolve_end(m, end_b, &b, &ib, error);
        if (r < 0)
                return r;

        c = calloc(1, sizeof(*c));
        if (!c)
                return sd_bus_error_set_errno(error, ENOMEM);
        c->manager = m;
        c->end_a = strdup(end_a);
        c->end_b = strdup(end_b);
        c->mode = strdup(p->mode);
        c->transfer = strdup(p->transfer);
        if (!c->end_a || !c->end_b || !c->mode || !c->transfer) {
                r = sd_bus_error_set_errno(error, ENOMEM);
                goto fail;
        }
        c->ident_a = ia;
        c->ident_b = ib;
        c->depth = p->depth;
        c->persistent = p->persistent;

        vmq_channel_config_init(&cfg);
        cfg.host_depth = p->depth;
        cfg.transfer = transfer_from_string(p->transfer);
        r = vmq_channel_open(m->monitor, a, b, &cfg, &id);
        if (r < 0) {
                switch (r) {
                case -EAGAIN:
                        r = sd_bus_error_setf(error, VMQ_BUS_ERROR_QUEUE_FULL,
                                              "No room for the HELLO at '%s' or '%s'", end_a,
                                              end_b);
                        break;
                case -ENOENT:
                        r = sd_bus_error_setf(error, VMQ_BUS_ERROR_NOT_RUNNING,
                                              "Machine '%s' or '%s' is gone", end_a, end_b);
                        break;
                default:
                        r = sd_bus_error_set_errnof(error, -r,
                                                    "Cannot open a channel from '%s' to '%s': %s",
                                                    end_a, end_b, strerror(-r));
                }
                goto fail;
        }
        c->id = id;
        c->open = true;
        if (asprintf(&c->path, "%s/%u", VMQ_BUS_CHANNEL_PREFIX, id) < 0) {
                c->path = NULL;
                (void)vmq_channel_close(m->monitor, id);
                r = sd_bus_error_set_errno(error, ENOMEM);
                goto fail;
        }

        if (!m->channels) {
                m->channels = c;
        } else {
                struct channel *last = m->channels;
                while (last->next)
                        last = last->next;
                last->next = c;
                c->prev = last;
        }
        m->n_channels++;
        log_info("Channel %u opened: '%s' <-> '%s'%s", id, end_a, end_b,
                 c->persistent ? " (persistent)" : "");
        vsock_channel_opened(m, end_a, end_b);
        *ret = c;
        return 0;
fail:
        free(c->end_a);
        free(c->end_b);
        free(c->mode);
        free(c->transfer);
        free(c);
        return r;
}

static void receive_request_free(struct receive_request *req) {
        sd_event_source_disable_unref(req->timer);
        sd_bus_message_unref(req->call);
        free(req);
}

/* Takes req out of its channel's queue. */
static void receive_unlink(struct receive_request *req) {
        struct channel *c = req->channel;
        struct receive_request *prev = NULL;

        for (struct receive_request *i = c->receives; i; prev = i, i = i->next) {
                if (i != req)
                        continue;
                if (prev)
                        prev->next = i->next;
                else
                        c->receives = i->next;
                if (c->receives_tail == i)
                        c->receives_tail = prev;
                i->next = NULL;
                return;
        }
}

static void reply_closed(struct channel *c, sd_bus_message *call) {
        (void)vmqd_bus_reply_errorf(call, VMQ_BUS_ERROR_CHANNEL_CLOSED, "Channel '%u' is closed",
                                    c->id);
}

struct channel *channel_free(struct channel *c) {
        struct manager *m;

        if (!c)
                return NULL;
        m = c->manager;
        while (c->receives) {
                struct receive_request *req = c->receives;
                receive_unlink(req);
                reply_closed(c, req->call);
                receive_request_free(req);
        }
        if (c->prev)
                c->prev->next = c->next;
        else if (m->channels == c)
                m->channels = c->next;
        if (c->next)
                c->next->prev = c->prev;
        m->n_channels--;
        /* The core lets go of it too, with whatever was left unread. */
        if (m->monitor) {
                (void)vmq_channel_close(m->monitor, c->id);
                (void)vmq_channel_forget(m->monitor, c->id);
        }
        free(c->end_a);
        free(c->end_b);
        free(c->mode);
        free(c->transfer);
        free(c->path);
        free(c);
        return NULL;
}

void channel_close(struct channel *c) {
        struct vmq_channel_info info;

        if (vmq_channel_get_info(c->manager->monitor, c->id, &info) < 0 || !info.open)
                return;
        (void)vmq_channel_close(c->manager->monitor, c->id);
}

bool channel_publish(struct channel *c) {
        struct manager *m = c->manager;
        struct vmq_channel_info info;
        bool open = false;

        if (vmq_channel_get_info(m->monitor, c->id, &info) >= 0)
                open = info.open;
        if (open == c->open)
                return false;
        c->open = open;
        log_info("Channel %u ('%s' <-> '%s') is %s", c->id, c->end_a, c->end_b,
                 open ? "open" : "closed");
        if (!open)
                vsock_channel_closed(m, c->end_a, c->end_b);
        if (m->bus) {
                (void)sd_bus_emit_properties_changed(m->bus, c->path, VMQ_BUS_CHANNEL_IFACE, "Open",
                                                     NULL);
                (void)sd_bus_emit_signal(m->bus, VMQ_BUS_PATH, VMQ_BUS_MANAGER_IFACE,
                                         "ChannelStateChanged", "ub", c->id, (int)open);
        }
        return true;
}

void channel_send_new(struct channel *c) {
        sd_bus *bus = c->manager->bus;

        if (!bus)
                return;
        (void)sd_bus_emit_signal(bus, VMQ_BUS_PATH, VMQ_BUS_MANAGER_IFACE, "ChannelNew", "uo",
                                 c->id, c->path);
        (void)sd_bus_emit_object_added(bus, c->path);
}

void channel_send_removed(struct channel *c) {
        sd_bus *bus = c->manager->bus;

        if (!bus)
                return;
        (void)sd_bus_emit_object_removed(bus, c->path);
        (void)sd_bus_emit_signal(bus, VMQ_BUS_PATH, VMQ_BUS_MANAGER_IFACE, "ChannelRemoved", "uo",
                                 c->id, c->path);
}

static const char *kind_to_string(uint16_t kind) {
        switch (kind) {
        case VMQ_DESC_INLINE:
                return "data";
        case VMQ_DESC_PAGE:
                return "page";
        case VMQ_DESC_HELLO:
                return "hello";
        case VMQ_DESC_CLOSE:
                return "close";
        case VMQ_DESC_ERROR:
                return "error";
        default:
                return "unknown";
        }
}

/* A sealed memfd holding len bytes of data, its file offset at 0 so that
 * the receiver can read() it from the start. */
static int sealed_memfd(const void *data, size_t len) {
        _cleanup_close_ int fd = -1;
        size_t done = 0;

        fd = memfd_create("vmq-message", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        while (done < len) {
                ssize_t n = pwrite(fd, (const uint8_t *)data + done, len - done, (off_t)done);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                done += (size_t)n;
        }
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0)
                return -errno;
        return VMQ_TAKE_FD(fd);
}

static int append_entry(sd_bus_message *reply, const char *key, const char *type, ...) {
        va_list ap;
        int r;

        r = sd_bus_message_open_container(reply, 'e', "sv");
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "s", key);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'v', type);
        if (r < 0)
                return r;
        va_start(ap, type);
        r = sd_bus_message_appendv(reply, type, ap);
        va_end(ap);
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_message_close_container(reply);
}

static void format_uuid(const uint8_t u[16], char buf[37]) {
        snprintf(buf, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
                 u[13], u[14], u[15]);
}

/* Answers a Receive call with a message. */
static int reply_message(sd_bus_message *call, const struct vmq_host_msg *msg) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_close_ int fd = -1;
        int r;

        r = sd_bus_message_new_method_return(call, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        r = append_entry(reply, "kind", "s", kind_to_string(msg->kind));
        if (r >= 0)
                r = append_entry(reply, "source", "u", msg->src_vm);
        if (r >= 0)
                r = append_entry(reply, "tag", "t", msg->tag);
        if (r >= 0)
                r = append_entry(reply, "length", "t", (uint64_t)msg->len);
        if (r >= 0 && msg->kind == VMQ_DESC_ERROR)
                r = append_entry(reply, "error", "i", msg->error);
        if (r >= 0 && msg->kind == VMQ_DESC_HELLO && msg->len >= sizeof(struct vmq_identity)) {
                struct vmq_identity ident;
                char uuid[37];

                memcpy(&ident, msg->data, sizeof(ident));
                ident.name[sizeof(ident.name) - 1] = 0;
                format_uuid(ident.uuid, uuid);
                r = append_entry(reply, "peer_name", "s", ident.name);
                if (r >= 0)
                        r = append_entry(reply, "peer_uuid", "s", uuid);
                if (r >= 0)
                        r = append_entry(reply, "peer_id", "u", ident.vm_id);
        }
        if (r < 0)
                return r;

        if (msg->len <= VMQ_BUS_MAX_INLINE) {
                r = sd_bus_message_open_container(reply, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append(reply, "s", "data");
                if (r >= 0)
                        r = sd_bus_message_open_container(reply, 'v', "ay");
                if (r >= 0)
                        r = sd_bus_message_append_array(reply, 'y', msg->data, msg->len);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
                if (r >= 0)
                        r = sd_bus_message_close_container(reply);
        } else {
                fd = sealed_memfd(msg->data, msg->len);
                if (fd < 0)
                        return fd;
                r = append_entry(reply, "fd", "h", fd);
        }
        if (r < 0)
                return r;
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

/* Answers a Receive call with the outcome of vmq_host_recv() (r, msg). */
static void reply_receive(struct channel *c, sd_bus_message *call, int r,
                          struct vmq_host_msg *msg) {
        if (r == 0) {
                r = reply_message(call, msg);
                if (r < 0) {
                        log_warning_errno(r, "Cannot pass a message of channel '%u' to %s: %m",
                                          c->id, sd_bus_message_get_sender(call) ?: "n/a");
                        (void)vmqd_bus_reply_errorf(
                                call, r == -ENOMEM ? VMQ_BUS_ERROR_NO_MEMORY : VMQ_BUS_ERROR_FAILED,
                                "Cannot pass the message on: %s", strerror(-r));
                }
                return;
        }
        switch (r) {
        case -EPIPE:
                reply_closed(c, call);
                c->drained = true;
                break;
        case -ETIMEDOUT:
                (void)vmqd_bus_reply_errorf(call, VMQ_BUS_ERROR_TIMED_OUT,
                                            "Nothing arrived on channel '%u' in time", c->id);
                break;
        default:
                (void)vmqd_bus_reply_errorf(call, VMQ_BUS_ERROR_FAILED,
                                            "Cannot receive on channel '%u': %s", c->id,
                                            strerror(-r));
        }
}

void channel_dispatch_receives(struct channel *c) {
        while (c->receives) {
                struct receive_request *req = c->receives;
                struct vmq_host_msg *msg = NULL;
                int r;

                r = vmq_host_recv(c->manager->monitor, c->id, 0, &msg);
                if (r == -ETIMEDOUT)
                        return;
                receive_unlink(req);
                reply_receive(c, req->call, r, msg);
                free(msg);
                receive_request_free(req);
        }
}

void channel_drop_receives_of(struct channel *c, const char *sender) {
        struct receive_request *req = c->receives;

        while (req) {
                struct receive_request *next = req->next;
                const char *s = sd_bus_message_get_sender(req->call);
                if (!sender || (s && strcmp(s, sender) == 0)) {
                        log_debug("Dropping a Receive on channel '%u': %s left the bus", c->id,
                                  sender ?: "the caller");
                        receive_unlink(req);
                        receive_request_free(req);
                }
                req = next;
        }
}

static int on_receive_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        struct receive_request *req = userdata;
        struct channel *c = req->channel;

        (void)source;
        (void)usec;
        receive_unlink(req);
        reply_receive(c, req->call, -ETIMEDOUT, NULL);
        receive_request_free(req);
        /* The next in line may have something waiting for it. */
        channel_dispatch_receives(c);
        return 0;
}

int channel_receive(struct channel *c, sd_bus_message *message, uint64_t timeout_usec,
                    sd_bus_error *error) {
        struct receive_request *req;
        int r;

        if (!channel_has_host(c))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NOT_AN_END,
                                         "The host is not an end of channel '%u'", c->id);

        if (!c->receives) {
                struct vmq_host_msg *msg = NULL;

                r = vmq_host_recv(c->manager->monitor, c->id, 0, &msg);
                if (r == 0 || r == -EPIPE || (r == -ETIMEDOUT && timeout_usec == 0)) {
                        reply_receive(c, message, r, msg);
                        free(msg);
                        return 1;
                }
                if (r != -ETIMEDOUT)
                        return sd_bus_error_set_errnof(error, -r,
                                                       "Cannot receive on channel '%u': %s", c->id,
                                                       strerror(-r));
        } else if (timeout_usec == 0) {
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_TIMED_OUT,
                                         "Nothing arrived on channel '%u' in time", c->id);
        }

        req = calloc(1, sizeof(*req));
        if (!req)
                return -ENOMEM;
        req->channel = c;
        if (timeout_usec != UINT64_MAX) {
                r = sd_event_add_time_relative(c->manager->event, &req->timer, CLOCK_MONOTONIC,
                                               timeout_usec, 0, on_receive_timeout, req);
                /* A deadline past the end of time is no deadline. */
                if (r < 0 && r != -EOVERFLOW) {
                        free(req);
                        return r;
                }
        }
        req->call = sd_bus_message_ref(message);
        if (c->receives_tail)
                c->receives_tail->next = req;
        else
                c->receives = req;
        c->receives_tail = req;
        return 1;
}

int channel_send(struct channel *c, const void *data, size_t len, uint64_t tag,
                 sd_bus_error *error) {
        int r;

        if (!channel_has_host(c))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NOT_AN_END,
                                         "The host is not an end of channel '%u'", c->id);
        r = vmq_host_send(c->manager->monitor, c->id, data, len, tag);
        switch (r) {
        case 0:
                return 0;
        case -EAGAIN:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_QUEUE_FULL,
                                         "The receiver on channel '%u' has no room", c->id);
        case -EPIPE:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_CHANNEL_CLOSED,
                                         "Channel '%u' is closed", c->id);
        case -EMSGSIZE:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_TOO_LARGE,
                                         "%zu bytes are more than the receiver on channel '%u' "
                                         "can take",
                                         len, c->id);
        case -ENOENT:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_SUCH_CHANNEL, "No channel '%u'",
                                         c->id);
        default:
                return sd_bus_error_set_errnof(error, -r, "Cannot send on channel '%u': %s", c->id,
                                               strerror(-r));
        }
}
