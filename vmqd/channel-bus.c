/* SPDX-License-Identifier: MIT */
/*
 * org.vmq1.Channel: one object per channel under VMQ_BUS_CHANNEL_PREFIX,
 * the last path element being the decimal channel id.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/vmq-bus.h"
#include "core/util.h"
#include "vmqd/channel.h"
#include "vmqd/bus-error.h"
#include "vmqd/log.h"
#include "vmqd/manager.h"

int bus_channel_close(sd_bus_message *message, struct channel *c, sd_bus_error *error) {
        int r = manager_close_channel(c->manager, c, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, NULL);
}

static int method_close(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        int r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        return bus_channel_close(message, userdata, error);
}

static int append_identity(sd_bus_message *reply, const struct vmq_identity *ident) {
        const uint8_t *u = ident->uuid;
        char name[VMQ_NAME_MAX], uuid[37];

        memcpy(name, ident->name, sizeof(name));
        name[sizeof(name) - 1] = 0;
        snprintf(uuid, sizeof(uuid),
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1],
                 u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
                 u[15]);
        return sd_bus_message_append(reply, "(uss)", ident->vm_id, name, uuid);
}

static int property_get_identity(sd_bus *bus, const char *path, const char *interface,
                                 const char *property, sd_bus_message *reply, void *userdata,
                                 sd_bus_error *error) {
        struct channel *c = userdata;

        (void)bus;
        (void)path;
        (void)interface;
        (void)error;
        return append_identity(reply,
                               strcmp(property, "IdentityA") == 0 ? &c->ident_a : &c->ident_b);
}

static int property_get_live(sd_bus *bus, const char *path, const char *interface,
                             const char *property, sd_bus_message *reply, void *userdata,
                             sd_bus_error *error) {
        struct channel *c = userdata;
        struct vmq_channel_info info = {0};

        (void)bus;
        (void)path;
        (void)interface;
        (void)error;
        (void)vmq_channel_get_info(c->manager->monitor, c->id, &info);
        if (strcmp(property, "Linked") == 0)
                return sd_bus_message_append(reply, "b", (int)info.linked);
        if (strcmp(property, "Messages") == 0)
                return sd_bus_message_append(reply, "(tt)", info.messages[0], info.messages[1]);
        return sd_bus_message_append(reply, "(tt)", info.bytes[0], info.bytes[1]);
}

/* Every method answers with a documented error (vmqd/bus-error.h). */
VMQD_BUS_CHECKED(method_close)

const sd_bus_vtable channel_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Id", "u", NULL, offsetof(struct channel, id),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("EndA", "s", NULL, offsetof(struct channel, end_a),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("EndB", "s", NULL, offsetof(struct channel, end_b),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("IdentityA", "(uss)", property_get_identity, 0,
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("IdentityB", "(uss)", property_get_identity, 0,
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Mode", "s", NULL, offsetof(struct channel, mode),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Transfer", "s", NULL, offsetof(struct channel, transfer),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Depth", "u", NULL, offsetof(struct channel, depth),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Persistent", "b", bus_property_get_bool,
                        offsetof(struct channel, persistent), SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Open", "b", bus_property_get_bool, offsetof(struct channel, open),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Linked", "b", property_get_live, 0, 0),
        SD_BUS_PROPERTY("Messages", "(tt)", property_get_live, 0, 0),
        SD_BUS_PROPERTY("Bytes", "(tt)", property_get_live, 0, 0),
        SD_BUS_METHOD_WITH_ARGS("Close", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_close_checked,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

/* The channel id at the end of path, or 0. */
static uint32_t path_to_id(const char *path) {
        const char *p;
        char *end;
        unsigned long v;
        size_t n = strlen(VMQ_BUS_CHANNEL_PREFIX);

        if (strncmp(path, VMQ_BUS_CHANNEL_PREFIX, n) != 0 || path[n] != '/')
                return 0;
        p = path + n + 1;
        if (*p < '1' || *p > '9')
                return 0;
        errno = 0;
        v = strtoul(p, &end, 10);
        if (errno != 0 || *end != 0 || v > UINT32_MAX)
                return 0;
        return (uint32_t)v;
}

int channel_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                        void **found, sd_bus_error *error) {
        struct manager *m = userdata;
        struct channel *c;
        uint32_t id;

        (void)bus;
        (void)interface;
        (void)error;
        id = path_to_id(path);
        if (id == 0)
                return 0;
        c = manager_find_channel(m, id);
        if (!c)
                return 0;
        *found = c;
        return 1;
}

int channel_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
                            sd_bus_error *error) {
        struct manager *m = userdata;
        char **l;
        size_t i = 0;

        (void)bus;
        (void)path;
        (void)error;
        l = calloc(m->n_channels + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (struct channel *c = m->channels; c; c = c->next) {
                l[i] = strdup(c->path);
                if (!l[i]) {
                        for (size_t j = 0; j < i; j++)
                                free(l[j]);
                        free(l);
                        return -ENOMEM;
                }
                i++;
        }
        *nodes = l;
        return 1;
}
