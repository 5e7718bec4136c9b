/* SPDX-License-Identifier: MIT */
/*
 * libvmq-client: the client object, the connection, errors, and events.
 *
 * Every public call is one or two D-Bus method calls on vmqd (see
 * vmqd/DBUS-API.md), made synchronously with sd_bus_call().  Replies that
 * carry errors are turned back into negative errnos through the shared map
 * in bus/bus-errors.c; the bus's own "nobody owns org.vmq1" errors become
 * -EHOSTDOWN, so that a caller can tell "vmqd is not running" from "no such
 * machine".
 *
 * Events use sd-bus matches on the same connection; the caller drives them
 * through vmq_client_get_fd()/_get_events()/_get_timeout()/_process(),
 * which are thin wrappers of sd-bus's own loop integration.  Signals that
 * arrive while a synchronous call waits are queued by sd-bus and delivered
 * by the next vmq_client_process(); vmq_client_get_timeout() then says
 * "now", which is why a caller must honour it.
 */
#include <string.h>

#include "bus/vmq-bus.h"
#include "libvmq-client/client-internal.h"

VMQ_EXPORT int vmq_client_new(struct vmq_client **ret) {
        struct vmq_client *c;

        if (!ret)
                return -EINVAL;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->refcount = 1;
        c->call_timeout_usec = VMQC_CALL_TIMEOUT_USEC;
        /* So that sd_bus_error_get_errno() knows org.vmq1.Error.*. */
        vmq_bus_errors_init();
        *ret = c;
        return 0;
}

VMQ_EXPORT struct vmq_client *vmq_client_ref(struct vmq_client *c) {
        if (c)
                c->refcount++;
        return c;
}

VMQ_EXPORT struct vmq_client *vmq_client_unref(struct vmq_client *c) {
        if (!c || --c->refcount > 0)
                return NULL;
        sd_bus_slot_unref(c->match_manager);
        sd_bus_slot_unref(c->match_owner);
        /* flush_close_unref: queued messages (a Send, say) are not lost. */
        sd_bus_flush_close_unref(c->bus);
        free(c->error_message);
        free(c);
        return NULL;
}

VMQ_EXPORT int vmq_client_connect(struct vmq_client *c, const char *bus) {
        sd_bus *b = NULL;
        int r;

        if (!c)
                return -EINVAL;
        if (c->bus)
                return -EISCONN;
        vmqc_clear_error(c);

        if (!bus || strcmp(bus, "system") == 0)
                r = sd_bus_open_system(&b);
        else if (strcmp(bus, "user") == 0)
                r = sd_bus_open_user(&b);
        else {
                r = sd_bus_new(&b);
                if (r < 0)
                        return r;
                r = sd_bus_set_address(b, bus);
                if (r >= 0)
                        r = sd_bus_set_bus_client(b, 1);
                if (r >= 0)
                        r = sd_bus_negotiate_fds(b, 1);
                if (r >= 0)
                        r = sd_bus_start(b);
        }
        if (r < 0) {
                sd_bus_unref(b);
                return r;
        }
        (void)sd_bus_set_description(b, "vmq-client");
        c->bus = b;
        return 0;
}

VMQ_EXPORT int vmq_client_set_call_timeout(struct vmq_client *c, uint64_t usec) {
        if (!c)
                return -EINVAL;
        c->call_timeout_usec = usec ? usec : VMQC_CALL_TIMEOUT_USEC;
        return 0;
}

VMQ_EXPORT const char *vmq_client_get_error_message(struct vmq_client *c) {
        return c ? c->error_message : NULL;
}

VMQ_EXPORT const char *vmq_client_get_library_version(void) {
        return PACKAGE_VERSION;
}

int vmqc_check(struct vmq_client *c) {
        if (!c)
                return -EINVAL;
        vmqc_clear_error(c);
        if (!c->bus)
                return -ENOTCONN;
        return 0;
}

void vmqc_clear_error(struct vmq_client *c) {
        free(c->error_message);
        c->error_message = NULL;
}

int vmqc_strdup(const char *s, char **ret) {
        char *t = strdup(s ? s : "");

        if (!t)
                return -ENOMEM;
        *ret = t;
        return 0;
}

uint64_t vmqc_add_timeout(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* Whether org.vmq1 has an owner; true when that cannot be told. */
static bool vmqc_daemon_on_bus(struct vmq_client *c) {
        sd_bus_message *reply = NULL;
        int has = 1, r;

        r = sd_bus_call_method(c->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", "NameHasOwner", NULL, &reply, "s",
                               VMQ_BUS_NAME);
        if (r >= 0 && sd_bus_message_read(reply, "b", &has) < 0)
                has = 1;
        sd_bus_message_unref(reply);
        return has != 0;
}

int vmqc_error(struct vmq_client *c, const sd_bus_error *error, int r, int unknown_object) {
        vmqc_clear_error(c);
        if (!sd_bus_error_is_set(error))
                return r < 0 ? r : -EIO;
        if (error->message)
                c->error_message = strdup(error->message);

        /* Nobody owns org.vmq1 (and the bus could not activate it). */
        if (sd_bus_error_has_names(error, SD_BUS_ERROR_SERVICE_UNKNOWN,
                                   SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                return -EHOSTDOWN;
        /* No reply: vmqd died during the call (the bus tells us so with
         * NoReply too), or it is slow.  Ask the bus which one. */
        if (sd_bus_error_has_names(error, SD_BUS_ERROR_NO_REPLY) && !vmqc_daemon_on_bus(c))
                return -EHOSTDOWN;
        /* The object went away between two calls of ours. */
        if (sd_bus_error_has_names(error, SD_BUS_ERROR_UNKNOWN_OBJECT))
                return unknown_object;
        r = sd_bus_error_get_errno(error);
        return r > 0 ? -r : -EIO;
}

int vmqc_new_manager_call(struct vmq_client *c, sd_bus_message **ret, const char *member) {
        return sd_bus_message_new_method_call(c->bus, ret, VMQ_BUS_NAME, VMQ_BUS_PATH,
                                              VMQ_BUS_MANAGER_IFACE, member);
}

int vmqc_call(struct vmq_client *c, sd_bus_message *m, uint64_t timeout_usec, int unknown_object,
              sd_bus_message **ret_reply) {
        _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        int r;

        r = sd_bus_call(c->bus, m, timeout_usec ? timeout_usec : c->call_timeout_usec, &error,
                        &reply);
        if (r < 0)
                return vmqc_error(c, &error, r, unknown_object);
        if (ret_reply)
                *ret_reply = reply;
        else
                sd_bus_message_unref(reply);
        return 0;
}

int vmqc_get_all(struct vmq_client *c, const char *path, const char *iface, int unknown_object,
                 sd_bus_message **ret_reply) {
        _cleanup_msg_ sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(c->bus, &m, VMQ_BUS_NAME, path,
                                           "org.freedesktop.DBus.Properties", "GetAll");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", iface);
        if (r < 0)
                return r;
        return vmqc_call(c, m, 0, unknown_object, ret_reply);
}

int vmqc_variant_sig(sd_bus_message *m, const char **ret_sig) {
        const char *contents = NULL;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        if (r == 0 || type != SD_BUS_TYPE_VARIANT || !contents)
                return -EBADMSG;
        *ret_sig = contents;
        return 0;
}

int vmqc_read_dict(sd_bus_message *m,
                   int (*entry)(sd_bus_message *m, const char *key, void *userdata),
                   void *userdata) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (;;) {
                const char *key;

                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                r = entry(m, key, userdata);
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_exit_container(m);
}

int vmqc_read_u32(sd_bus_message *m, uint32_t *ret) {
        uint64_t v;
        int r = vmqc_read_uint(m, &v);
        if (r > 0)
                *ret = (uint32_t)v;
        return r;
}

int vmqc_read_bool(sd_bus_message *m, bool *ret) {
        uint64_t v;
        int r = vmqc_read_uint(m, &v);
        if (r > 0)
                *ret = v != 0;
        return r;
}

int vmqc_read_uint(sd_bus_message *m, uint64_t *ret) {
        const char *sig;
        uint64_t t;
        uint32_t u;
        uint16_t q;
        uint8_t y;
        int b, r;

        r = vmqc_variant_sig(m, &sig);
        if (r < 0)
                return r;
        if (strcmp(sig, "t") == 0) {
                r = sd_bus_message_read(m, "v", "t", &t);
        } else if (strcmp(sig, "u") == 0) {
                r = sd_bus_message_read(m, "v", "u", &u);
                t = u;
        } else if (strcmp(sig, "q") == 0) {
                r = sd_bus_message_read(m, "v", "q", &q);
                t = q;
        } else if (strcmp(sig, "y") == 0) {
                r = sd_bus_message_read(m, "v", "y", &y);
                t = y;
        } else if (strcmp(sig, "b") == 0) {
                r = sd_bus_message_read(m, "v", "b", &b);
                t = !!b;
        } else {
                /* A type this version does not expect: skip rather than
                 * fail, so that a newer vmqd can change things. */
                r = sd_bus_message_skip(m, NULL);
                return r < 0 ? r : 0;
        }
        if (r < 0)
                return r;
        *ret = t;
        return 1;
}

int vmqc_read_string(sd_bus_message *m, char **ret) {
        const char *sig, *s;
        char *t;
        int r;

        r = vmqc_variant_sig(m, &sig);
        if (r < 0)
                return r;
        if (strcmp(sig, "s") != 0 && strcmp(sig, "o") != 0) {
                r = sd_bus_message_skip(m, NULL);
                return r < 0 ? r : 0;
        }
        r = sd_bus_message_read(m, "v", sig, &s);
        if (r < 0)
                return r;
        t = strdup(s);
        if (!t)
                return -ENOMEM;
        free(*ret);
        *ret = t;
        return 1;
}

int vmqc_read_int32(sd_bus_message *m, int32_t *ret) {
        const char *sig;
        int32_t i;
        int r;

        r = vmqc_variant_sig(m, &sig);
        if (r < 0)
                return r;
        if (strcmp(sig, "i") != 0) {
                r = sd_bus_message_skip(m, NULL);
                return r < 0 ? r : 0;
        }
        r = sd_bus_message_read(m, "v", "i", &i);
        if (r < 0)
                return r;
        *ret = i;
        return 1;
}

int vmqc_skip_variant(sd_bus_message *m) {
        int r = sd_bus_message_skip(m, NULL);

        return r < 0 ? r : 0;
}

VMQ_EXPORT int vmq_client_get_daemon_version(struct vmq_client *c, char **ret) {
        _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;
        char *v = NULL;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!ret)
                return -EINVAL;
        r = sd_bus_get_property_string(c->bus, VMQ_BUS_NAME, VMQ_BUS_PATH, VMQ_BUS_MANAGER_IFACE,
                                       "Version", &error, &v);
        if (r < 0)
                return vmqc_error(c, &error, r, -EHOSTDOWN);
        *ret = v;
        return 0;
}

/* ------------------------------------------------------------------------
 * Statistics of the daemon.
 */

VMQ_EXPORT int vmq_client_get_statistics(struct vmq_client *c, struct vmq_stats **ret) {
        _cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL;
        struct vmq_stats *s = NULL;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!ret)
                return -EINVAL;
        r = vmqc_new_manager_call(c, &m, "GetStatistics");
        if (r < 0)
                return r;
        r = vmqc_call(c, m, 0, -EHOSTDOWN, &reply);
        if (r < 0)
                return r;

        r = vmqc_stats_new(&s);
        if (r < 0)
                return r;
        r = vmqc_stats_read_dict(s, reply);
        if (r < 0) {
                vmq_stats_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

/* ------------------------------------------------------------------------
 * Events.
 */

struct vmq_event {
        enum vmq_event_type type;
        const char *machine_name;
        const char *machine_state;
        uint32_t channel_id;
        bool channel_open;
};

static const char *const event_type_names[_VMQ_EVENT_TYPE_MAX] = {
        [VMQ_EVENT_MACHINE_NEW] = "machine-new",
        [VMQ_EVENT_MACHINE_REMOVED] = "machine-removed",
        [VMQ_EVENT_MACHINE_STATE] = "machine-state",
        [VMQ_EVENT_CHANNEL_NEW] = "channel-new",
        [VMQ_EVENT_CHANNEL_REMOVED] = "channel-removed",
        [VMQ_EVENT_CHANNEL_STATE] = "channel-state",
        [VMQ_EVENT_DAEMON_STARTED] = "daemon-started",
        [VMQ_EVENT_DAEMON_STOPPED] = "daemon-stopped",
};

VMQ_EXPORT const char *vmq_event_type_to_string(enum vmq_event_type type) {
        if ((unsigned)type >= _VMQ_EVENT_TYPE_MAX)
                return "unknown";
        return event_type_names[type];
}

VMQ_EXPORT enum vmq_event_type vmq_event_get_type(const struct vmq_event *ev) {
        return ev->type;
}

VMQ_EXPORT const char *vmq_event_get_machine_name(const struct vmq_event *ev) {
        return ev->machine_name;
}

VMQ_EXPORT const char *vmq_event_get_machine_state(const struct vmq_event *ev) {
        return ev->machine_state;
}

VMQ_EXPORT uint32_t vmq_event_get_channel_id(const struct vmq_event *ev) {
        return ev->channel_id;
}

VMQ_EXPORT bool vmq_event_get_channel_open(const struct vmq_event *ev) {
        return ev->channel_open;
}

static int deliver(struct vmq_client *c, const struct vmq_event *ev) {
        int r;

        if (!c->callback)
                return 0;
        r = c->callback(c, ev, c->userdata);
        if (r < 0 && c->callback_error == 0)
                c->callback_error = r;
        return 0;
}

static int on_manager_signal(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct vmq_client *c = userdata;
        struct vmq_event ev = {0};
        const char *member = sd_bus_message_get_member(m);
        const char *path;
        int b, r;

        (void)ret_error;
        if (!member)
                return 0;
        if (strcmp(member, "MachineNew") == 0 || strcmp(member, "MachineRemoved") == 0) {
                ev.type = member[7] == 'N' ? VMQ_EVENT_MACHINE_NEW : VMQ_EVENT_MACHINE_REMOVED;
                r = sd_bus_message_read(m, "so", &ev.machine_name, &path);
        } else if (strcmp(member, "MachineStateChanged") == 0) {
                ev.type = VMQ_EVENT_MACHINE_STATE;
                r = sd_bus_message_read(m, "ss", &ev.machine_name, &ev.machine_state);
        } else if (strcmp(member, "ChannelNew") == 0 || strcmp(member, "ChannelRemoved") == 0) {
                ev.type = member[7] == 'N' ? VMQ_EVENT_CHANNEL_NEW : VMQ_EVENT_CHANNEL_REMOVED;
                r = sd_bus_message_read(m, "uo", &ev.channel_id, &path);
        } else if (strcmp(member, "ChannelStateChanged") == 0) {
                ev.type = VMQ_EVENT_CHANNEL_STATE;
                r = sd_bus_message_read(m, "ub", &ev.channel_id, &b);
                ev.channel_open = b;
        } else
                return 0; /* a signal a newer vmqd added */
        if (r < 0)
                return 0; /* malformed: not ours to fail on */
        return deliver(c, &ev);
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct vmq_client *c = userdata;
        struct vmq_event ev = {0};
        const char *name, *old_owner, *new_owner;
        int r;

        (void)ret_error;
        r = sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner);
        if (r < 0 || strcmp(name, VMQ_BUS_NAME) != 0)
                return 0;
        if (*new_owner) {
                /* A hand-over from one owner to the next counts as a
                 * restart: report the stop first. */
                if (*old_owner) {
                        ev.type = VMQ_EVENT_DAEMON_STOPPED;
                        (void)deliver(c, &ev);
                }
                ev.type = VMQ_EVENT_DAEMON_STARTED;
        } else
                ev.type = VMQ_EVENT_DAEMON_STOPPED;
        return deliver(c, &ev);
}

VMQ_EXPORT int vmq_client_subscribe(struct vmq_client *c,
                                    int (*callback)(struct vmq_client *c,
                                                    const struct vmq_event *ev, void *userdata),
                                    void *userdata) {
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!callback) {
                c->match_manager = sd_bus_slot_unref(c->match_manager);
                c->match_owner = sd_bus_slot_unref(c->match_owner);
                c->callback = NULL;
                c->userdata = NULL;
                return 0;
        }
        /* Synchronous matches: a caller learns here when it cannot
         * subscribe, and every event emitted after this returns arrives. */
        if (!c->match_manager) {
                r = sd_bus_match_signal(c->bus, &c->match_manager, VMQ_BUS_NAME, VMQ_BUS_PATH,
                                        VMQ_BUS_MANAGER_IFACE, NULL, on_manager_signal, c);
                if (r < 0)
                        return r;
        }
        if (!c->match_owner) {
                r = sd_bus_add_match(c->bus, &c->match_owner,
                                     "type='signal',sender='org.freedesktop.DBus',"
                                     "path='/org/freedesktop/DBus',"
                                     "interface='org.freedesktop.DBus',"
                                     "member='NameOwnerChanged',arg0='" VMQ_BUS_NAME "'",
                                     on_name_owner_changed, c);
                if (r < 0) {
                        c->match_manager = sd_bus_slot_unref(c->match_manager);
                        return r;
                }
        }
        c->callback = callback;
        c->userdata = userdata;
        return 0;
}

VMQ_EXPORT int vmq_client_get_fd(struct vmq_client *c) {
        if (!c)
                return -EINVAL;
        if (!c->bus)
                return -ENOTCONN;
        return sd_bus_get_fd(c->bus);
}

VMQ_EXPORT int vmq_client_get_events(struct vmq_client *c) {
        if (!c)
                return -EINVAL;
        if (!c->bus)
                return -ENOTCONN;
        return sd_bus_get_events(c->bus);
}

VMQ_EXPORT int vmq_client_get_timeout(struct vmq_client *c, uint64_t *ret_usec) {
        uint64_t t = UINT64_MAX;
        int r;

        if (!c || !ret_usec)
                return -EINVAL;
        if (!c->bus)
                return -ENOTCONN;
        r = sd_bus_get_timeout(c->bus, &t);
        if (r < 0)
                return r;
        *ret_usec = t;
        return t != UINT64_MAX;
}

VMQ_EXPORT int vmq_client_process(struct vmq_client *c) {
        int r;

        if (!c)
                return -EINVAL;
        if (!c->bus)
                return -ENOTCONN;
        /* A callback may drop the caller's reference. */
        vmq_client_ref(c);
        c->callback_error = 0;
        r = sd_bus_process(c->bus, NULL);
        if (r >= 0 && c->callback_error < 0)
                r = c->callback_error;
        else if (r >= 0 && !sd_bus_is_open(c->bus))
                r = -ECONNRESET;
        c->callback_error = 0;
        vmq_client_unref(c);
        return r;
}

VMQ_EXPORT int vmq_client_wait(struct vmq_client *c, uint64_t timeout_usec) {
        if (!c)
                return -EINVAL;
        if (!c->bus)
                return -ENOTCONN;
        return sd_bus_wait(c->bus, timeout_usec);
}
