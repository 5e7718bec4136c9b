/* SPDX-License-Identifier: MIT */
/*
 * libvmq-client: channels — open and close, and snapshots of a channel's
 * properties and counters.
 */
#include <stddef.h>
#include <string.h>

#include "bus/vmq-bus.h"
#include "libvmq-client/client-internal.h"

struct vmq_channel_identity {
        uint32_t id;
        char *name;
        char *uuid;
};

struct vmq_channel {
        unsigned refcount;
        bool complete;
        uint32_t id;
        char *end[_VMQ_CHANNEL_END_MAX];
        struct vmq_channel_identity identity[_VMQ_CHANNEL_END_MAX];
        char *mode;
        char *transfer;
        uint32_t depth;
        bool persistent;
        bool linked;
        bool open;
        uint64_t messages[_VMQ_CHANNEL_END_MAX];
        uint64_t bytes[_VMQ_CHANNEL_END_MAX];
};

#define HAS_FIELD(type, size, field) (offsetof(type, field) + sizeof(((type *)0)->field) <= (size))

VMQ_EXPORT int vmq_client_open_channel(struct vmq_client *c, const char *end_a, const char *end_b,
                                       const struct vmq_channel_options *o, uint32_t *ret_id) {
        _cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL;
        const char *path;
        uint32_t id;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!end_a || !end_b)
                return -EINVAL;
        if (o && o->size < sizeof(o->size))
                return -EINVAL;
        r = vmqc_new_manager_call(c, &m, "OpenChannel");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "ss", end_a, end_b);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        if (o) {
#define COPT(field) HAS_FIELD(struct vmq_channel_options, o->size, field)
                if (COPT(depth) && o->depth)
                        r = sd_bus_message_append(m, "{sv}", "depth", "u", o->depth);
                if (r >= 0 && COPT(mode) && o->mode)
                        r = sd_bus_message_append(m, "{sv}", "mode", "s", o->mode);
                if (r >= 0 && COPT(transfer) && o->transfer)
                        r = sd_bus_message_append(m, "{sv}", "transfer", "s", o->transfer);
                if (r >= 0 && COPT(persistent) && o->persistent)
                        r = sd_bus_message_append(m, "{sv}", "persistent", "b", 1);
                if (r < 0)
                        return r;
#undef COPT
        }
        r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;
        r = vmqc_call(c, m, 0, -EHOSTDOWN, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "uo", &id, &path);
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = id;
        return 0;
}

VMQ_EXPORT int vmq_client_close_channel(struct vmq_client *c, uint32_t id) {
        _cleanup_msg_ sd_bus_message *m = NULL;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        r = vmqc_new_manager_call(c, &m, "CloseChannel");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "u", id);
        if (r < 0)
                return r;
        return vmqc_call(c, m, 0, -EHOSTDOWN, NULL);
}

/* ------------------------------------------------------------------------
 * Snapshots.
 */

static struct vmq_channel *channel_new(void) {
        struct vmq_channel *ch = calloc(1, sizeof(*ch));

        if (ch)
                ch->refcount = 1;
        return ch;
}

VMQ_EXPORT struct vmq_channel *vmq_channel_ref(struct vmq_channel *ch) {
        if (ch)
                ch->refcount++;
        return ch;
}

VMQ_EXPORT struct vmq_channel *vmq_channel_unref(struct vmq_channel *ch) {
        if (!ch || --ch->refcount > 0)
                return NULL;
        for (unsigned e = 0; e < _VMQ_CHANNEL_END_MAX; e++) {
                free(ch->end[e]);
                free(ch->identity[e].name);
                free(ch->identity[e].uuid);
        }
        free(ch->mode);
        free(ch->transfer);
        free(ch);
        return NULL;
}

VMQ_EXPORT struct vmq_channel **vmq_channel_unref_list(struct vmq_channel **list) {
        if (!list)
                return NULL;
        for (struct vmq_channel **p = list; *p; p++)
                vmq_channel_unref(*p);
        free(list);
        return NULL;
}

static int read_identity(sd_bus_message *m, struct vmq_channel_identity *ident) {
        const char *sig, *name, *uuid;
        uint32_t id;
        char *n, *u;
        int r;

        r = vmqc_variant_sig(m, &sig);
        if (r < 0)
                return r;
        if (strcmp(sig, "(uss)") != 0)
                return vmqc_skip_variant(m);
        r = sd_bus_message_read(m, "v", "(uss)", &id, &name, &uuid);
        if (r < 0)
                return r;
        n = strdup(name);
        u = strdup(uuid);
        if (!n || !u) {
                free(n);
                free(u);
                return -ENOMEM;
        }
        free(ident->name);
        free(ident->uuid);
        ident->id = id;
        ident->name = n;
        ident->uuid = u;
        return 1;
}

static int read_pair(sd_bus_message *m, uint64_t pair[static 2]) {
        const char *sig;
        uint64_t a, b;
        int r;

        r = vmqc_variant_sig(m, &sig);
        if (r < 0)
                return r;
        if (strcmp(sig, "(tt)") != 0)
                return vmqc_skip_variant(m);
        r = sd_bus_message_read(m, "v", "(tt)", &a, &b);
        if (r < 0)
                return r;
        pair[0] = a;
        pair[1] = b;
        return 1;
}

static int channel_property(sd_bus_message *reply, const char *key, void *userdata) {
        struct vmq_channel *ch = userdata;

        if (strcmp(key, "EndA") == 0)
                return vmqc_read_string(reply, &ch->end[VMQ_CHANNEL_END_A]);
        if (strcmp(key, "EndB") == 0)
                return vmqc_read_string(reply, &ch->end[VMQ_CHANNEL_END_B]);
        if (strcmp(key, "IdentityA") == 0)
                return read_identity(reply, &ch->identity[VMQ_CHANNEL_END_A]);
        if (strcmp(key, "IdentityB") == 0)
                return read_identity(reply, &ch->identity[VMQ_CHANNEL_END_B]);
        if (strcmp(key, "Mode") == 0)
                return vmqc_read_string(reply, &ch->mode);
        if (strcmp(key, "Transfer") == 0)
                return vmqc_read_string(reply, &ch->transfer);
        if (strcmp(key, "Messages") == 0)
                return read_pair(reply, ch->messages);
        if (strcmp(key, "Bytes") == 0)
                return read_pair(reply, ch->bytes);
        if (strcmp(key, "Id") == 0)
                return vmqc_read_u32(reply, &ch->id);
        if (strcmp(key, "Depth") == 0)
                return vmqc_read_u32(reply, &ch->depth);
        if (strcmp(key, "Persistent") == 0)
                return vmqc_read_bool(reply, &ch->persistent);
        if (strcmp(key, "Open") == 0)
                return vmqc_read_bool(reply, &ch->open);
        if (strcmp(key, "Linked") == 0)
                return vmqc_read_bool(reply, &ch->linked);
        return vmqc_skip_variant(reply);
}

static int read_channel_properties(struct vmq_channel *ch, sd_bus_message *reply) {
        return vmqc_read_dict(reply, channel_property, ch);
}

VMQ_EXPORT int vmq_client_get_channel(struct vmq_client *c, uint32_t id, struct vmq_channel **ret) {
        _cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL, *props = NULL;
        struct vmq_channel *ch;
        const char *path;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!ret)
                return -EINVAL;
        r = vmqc_new_manager_call(c, &m, "GetChannel");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "u", id);
        if (r < 0)
                return r;
        r = vmqc_call(c, m, 0, -EHOSTDOWN, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return r;
        r = vmqc_get_all(c, path, VMQ_BUS_CHANNEL_IFACE, -ENXIO, &props);
        if (r < 0)
                return r;

        ch = channel_new();
        if (!ch)
                return -ENOMEM;
        ch->complete = true;
        ch->id = id;
        r = read_channel_properties(ch, props);
        /* Never hand out NULL strings from a complete snapshot. */
        for (unsigned e = 0; r >= 0 && e < _VMQ_CHANNEL_END_MAX; e++) {
                if (!ch->end[e])
                        r = vmqc_strdup("", &ch->end[e]);
                if (r >= 0 && !ch->identity[e].name)
                        r = vmqc_strdup("", &ch->identity[e].name);
                if (r >= 0 && !ch->identity[e].uuid)
                        r = vmqc_strdup("", &ch->identity[e].uuid);
        }
        if (r >= 0 && !ch->mode)
                r = vmqc_strdup("", &ch->mode);
        if (r >= 0 && !ch->transfer)
                r = vmqc_strdup("", &ch->transfer);
        if (r < 0) {
                vmq_channel_unref(ch);
                return r;
        }
        *ret = ch;
        return 0;
}

VMQ_EXPORT int vmq_client_list_channels(struct vmq_client *c, struct vmq_channel ***ret,
                                        size_t *ret_n) {
        _cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL;
        struct vmq_channel **list;
        size_t n = 0;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!ret)
                return -EINVAL;
        r = vmqc_new_manager_call(c, &m, "ListChannels");
        if (r < 0)
                return r;
        r = vmqc_call(c, m, 0, -EHOSTDOWN, &reply);
        if (r < 0)
                return r;

        list = calloc(1, sizeof(*list));
        if (!list)
                return -ENOMEM;
        r = sd_bus_message_enter_container(reply, 'a', "(ussbo)");
        while (r >= 0) {
                const char *a, *b, *path;
                struct vmq_channel **l, *ch;
                uint32_t id;
                int open;

                r = sd_bus_message_read(reply, "(ussbo)", &id, &a, &b, &open, &path);
                if (r <= 0)
                        break;
                l = reallocarray(list, n + 2, sizeof(*list));
                if (!l) {
                        r = -ENOMEM;
                        break;
                }
                list = l;
                ch = channel_new();
                if (!ch) {
                        r = -ENOMEM;
                        break;
                }
                list[n++] = ch;
                list[n] = NULL;
                ch->id = id;
                ch->open = open;
                r = vmqc_strdup(a, &ch->end[VMQ_CHANNEL_END_A]);
                if (r >= 0)
                        r = vmqc_strdup(b, &ch->end[VMQ_CHANNEL_END_B]);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r < 0) {
                vmq_channel_unref_list(list);
                return r;
        }
        *ret = list;
        if (ret_n)
                *ret_n = n;
        return 0;
}

#define END_OK(end) ((unsigned)(end) < _VMQ_CHANNEL_END_MAX)

VMQ_EXPORT bool vmq_channel_is_complete(const struct vmq_channel *ch) {
        return ch->complete;
}

VMQ_EXPORT uint32_t vmq_channel_get_id(const struct vmq_channel *ch) {
        return ch->id;
}

VMQ_EXPORT const char *vmq_channel_get_end(const struct vmq_channel *ch, enum vmq_channel_end end) {
        return END_OK(end) ? ch->end[end] : NULL;
}

VMQ_EXPORT uint32_t vmq_channel_get_identity_id(const struct vmq_channel *ch,
                                                enum vmq_channel_end end) {
        return END_OK(end) ? ch->identity[end].id : 0;
}

VMQ_EXPORT const char *vmq_channel_get_identity_name(const struct vmq_channel *ch,
                                                     enum vmq_channel_end end) {
        return END_OK(end) ? ch->identity[end].name : NULL;
}

VMQ_EXPORT const char *vmq_channel_get_identity_uuid(const struct vmq_channel *ch,
                                                     enum vmq_channel_end end) {
        return END_OK(end) ? ch->identity[end].uuid : NULL;
}

VMQ_EXPORT const char *vmq_channel_get_mode(const struct vmq_channel *ch) {
        return ch->mode;
}

VMQ_EXPORT const char *vmq_channel_get_transfer(const struct vmq_channel *ch) {
        return ch->transfer;
}

VMQ_EXPORT uint32_t vmq_channel_get_depth(const struct vmq_channel *ch) {
        return ch->depth;
}

VMQ_EXPORT bool vmq_channel_is_persistent(const struct vmq_channel *ch) {
        return ch->persistent;
}

VMQ_EXPORT bool vmq_channel_is_linked(const struct vmq_channel *ch) {
        return ch->linked;
}

VMQ_EXPORT bool vmq_channel_is_open(const struct vmq_channel *ch) {
        return ch->open;
}

VMQ_EXPORT uint64_t vmq_channel_get_messages(const struct vmq_channel *ch,
                                             enum vmq_channel_end end) {
        return END_OK(end) ? ch->messages[end] : 0;
}

VMQ_EXPORT uint64_t vmq_channel_get_bytes(const struct vmq_channel *ch, enum vmq_channel_end end) {
        return END_OK(end) ? ch->bytes[end] : 0;
}
