/* SPDX-License-Identifier: MIT */
/*
 * org.vmq1.Manager on VMQ_BUS_PATH: the Manager's methods, properties and
 * signals, and the registration of every object vmqd serves.  The methods
 * read and check their arguments here; what they change (machines,
 * channels, the saved state) is manager.c's.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <systemd/sd-id128.h>

#include "bus/vmq-bus.h"
#include "core/elf.h"
#include "core/util.h"
#include "core/vmq-abi.h"
#include "vmqd/backend-libvirt.h"
#include "vmqd/channel.h"
#include "vmqd/bus-error.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"

#define MIB (1024ull * 1024ull)

int bus_property_get_bool(sd_bus *bus, const char *path, const char *interface,
                          const char *property, sd_bus_message *reply, void *userdata,
                          sd_bus_error *error) {
        (void)bus;
        (void)path;
        (void)interface;
        (void)property;
        (void)error;
        return sd_bus_message_append(reply, "b", (int)*(bool *)userdata);
}

static int on_name_owner_changed(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct manager *m = userdata;
        const char *name, *old_owner, *new_owner;
        int r;

        (void)error;
        r = sd_bus_message_read(message, "sss", &name, &old_owner, &new_owner);
        if (r < 0)
                return 0;
        if (name[0] != ':' || new_owner[0] != 0)
                return 0;
        for (struct channel *c = m->channels; c; c = c->next) {
                channel_drop_receives_of(c, name);
                channel_dispatch_receives(c);
        }
        return 0;
}

/* ---- org.vmq1.Manager ------------------------------------------------------ */

/* Why an image file was refused, as the caller would want to read it. */
/*
 * The directory of path that vmqd.service's sandbox hides from vmqd, or
 * NULL.  ProtectHome=yes puts inaccessible mounts on /home, /root and
 * /run/user; PrivateTmp=yes gives the service /tmp and /var/tmp of its own.
 * A file there that the caller sees is then missing or unreadable for
 * vmqd.  Only said under systemd (INVOCATION_ID) and when that directory is
 * a mount point in vmqd's own view.
 */
static const char *sandbox_hides(const char *path) {
        static const char *const hidden[] = {"/home", "/root", "/run/user", "/tmp", "/var/tmp"};
        const char *dir = NULL;
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(hidden) && !dir; i++) {
                size_t n = strlen(hidden[i]);
                if (strncmp(path, hidden[i], n) == 0 && path[n] == '/')
                        dir = hidden[i];
        }
        if (!dir || !getenv("INVOCATION_ID"))
                return NULL;
        FILE *f = fopen("/proc/self/mountinfo", "re");
        if (!f)
                return NULL;
        char line[1024];
        bool mounted = false;
        while (!mounted && fgets(line, sizeof(line), f)) {
                /* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ...": the fifth field */
                char point[512];
                if (sscanf(line, "%*s %*s %*s %*s %511s", point) == 1 && strcmp(point, dir) == 0)
                        mounted = true;
        }
        fclose(f);
        return mounted ? dir : NULL;
}

static int image_error(sd_bus_error *error, const char *path, int r) {
        const char *hidden = NULL;
        if (r == -ENOENT || r == -ENOTDIR || r == -EACCES || r == -EPERM)
                hidden = sandbox_hides(path);
        if (hidden)
                /* BadImage, not NoSuchImage: the file may well be there for the
                 * caller (vmqctl checks), just not for vmqd. */
                return sd_bus_error_setf(
                        error, VMQ_BUS_ERROR_BAD_IMAGE,
                        "Image '%s' cannot be seen by vmqd: the sandbox of vmqd.service hides %s "
                        "(ProtectHome=yes hides /home, /root and /run/user; PrivateTmp=yes gives "
                        "vmqd its own /tmp and /var/tmp); put the image elsewhere, e.g. under /srv "
                        "or /var/lib/vmq",
                        path, hidden);
        switch (r) {
        case -ENOENT:
        case -ENOTDIR:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_SUCH_IMAGE, "Image '%s' not found",
                                         path);
        case -EISDIR:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                         "Image '%s' is a directory, not a guest image", path);
        case -EINVAL:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                         "Image '%s' is not a regular file (a device, FIFO or "
                                         "socket)",
                                         path);
        case -EFBIG:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                         "Image '%s' is larger than %u MiB; guest images are "
                                         "small",
                                         path, VMQ_IMAGE_MAX >> 20);
        case -EACCES:
        case -EPERM:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                         "Image '%s' cannot be read by vmqd: %s", path,
                                         strerror(-r));
        default:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                         "Cannot read image '%s': %s", path, strerror(-r));
        }
}

static int no_such_machine(sd_bus_error *error, const char *name) {
        return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_SUCH_MACHINE, "No machine '%s'", name);
}

static int no_such_channel(sd_bus_error *error, uint32_t id) {
        return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_SUCH_CHANNEL, "No channel '%u'", id);
}

/* Reads the name argument and finds the machine. */
static int read_machine(sd_bus_message *message, struct manager *m, struct machine **ret,
                        sd_bus_error *error) {
        const char *name;
        int r;

        r = sd_bus_message_read(message, "s", &name);
        if (r < 0)
                return r;
        *ret = manager_find_machine(m, name);
        if (!*ret)
                return no_such_machine(error, name);
        return 0;
}

static int read_channel(sd_bus_message *message, struct manager *m, struct channel **ret,
                        sd_bus_error *error) {
        uint32_t id;
        int r;

        r = sd_bus_message_read(message, "u", &id);
        if (r < 0)
                return r;
        *ret = manager_find_channel(m, id);
        if (!*ret)
                return no_such_channel(error, id);
        return 0;
}

int bus_read_options(sd_bus_message *message, const struct bus_option *options, size_t n,
                     sd_bus_error *error) {
        int r;

        r = sd_bus_message_enter_container(message, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(message, 'e', "sv")) > 0) {
                const struct bus_option *o = NULL;
                const char *key, *contents;
                char t;

                r = sd_bus_message_read(message, "s", &key);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < n && !o; i++)
                        if (strcmp(key, options[i].key) == 0)
                                o = &options[i];
                if (!o)
                        return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                                 "Unknown option '%s'", key);
                r = sd_bus_message_peek_type(message, &t, &contents);
                if (r < 0)
                        return r;
                if (t != 'v' || !contents || strcmp(contents, o->type) != 0)
                        return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                                 "Option '%s' must be of type '%s', not '%s'", key,
                                                 o->type, contents ? contents : "?");
                r = sd_bus_message_enter_container(message, 'v', o->type);
                if (r >= 0)
                        r = sd_bus_message_read_basic(message, o->type[0], o->dest);
                if (r >= 0)
                        r = sd_bus_message_exit_container(message);
                if (r >= 0)
                        r = sd_bus_message_exit_container(message);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(message);
}

struct machine_options {
        uint64_t memory;
        uint32_t vcpus;
        uint32_t queue_depth;
        uint64_t huge_memory;
        const char *args;
        const char *uuid;
        int persistent, autostart, start;
};

static int read_machine_options(sd_bus_message *message, struct machine_options *o,
                                sd_bus_error *error) {
        const struct bus_option options[] = {
                {"memory", "t", &o->memory},
                {"vcpus", "u", &o->vcpus},
                {"queue_depth", "u", &o->queue_depth},
                {"huge_memory", "t", &o->huge_memory},
                {"args", "s", &o->args},
                {"uuid", "s", &o->uuid},
                {"persistent", "b", &o->persistent},
                {"autostart", "b", &o->autostart},
                {"start", "b", &o->start},
        };
        return bus_read_options(message, options, VMQ_ARRAY_SIZE(options), error);
}

static bool image_name_is_valid(const char *image) {
        if (image[0] == '/')
                return true;
        if (!image[0] || image[0] == '.' || strchr(image, '/'))
                return false;
        return strlen(image) < 256;
}

/* manager_add_machine()'s activation step for CreateMachine's "start". */
static int start_new_machine(struct machine *mc, void *userdata, sd_bus_error *error) {
        (void)userdata;
        return machine_start(mc, error);
}

static int method_create_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct manager *m = userdata;
        struct machine_options o = {
                .memory = m->config.default_memory,
                .vcpus = m->config.default_vcpus,
                .queue_depth = m->config.default_queue_depth,
        };
        struct vmqd_machine_def def = {0};
        _cleanup_free_ char *path = NULL;
        _cleanup_(machine_freep) struct machine *mc = NULL;
        struct machine *added;
        const char *name, *image;
        sd_id128_t uuid;
        int r;

        r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(message, "ss", &name, &image);
        if (r < 0)
                return r;
        r = read_machine_options(message, &o, error);
        if (r < 0)
                return r;

        if (!vmqd_name_is_valid(name) || strcmp(name, VMQ_BUS_HOST_END) == 0)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Invalid machine name '%s'", name);
        if (manager_find_machine(m, name) || vmqd_state_find_machine(&m->state, name))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_MACHINE_EXISTS,
                                         "Machine '%s' exists already", name);
        if (m->n_machines >= m->config.max_machines)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_LIMIT_REACHED,
                                         "Cannot create machine '%s': the limit of %u machines "
                                         "is reached",
                                         name, m->config.max_machines);
        if (!image_name_is_valid(image))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Invalid image '%s' (an absolute path or the name of an "
                                         "installed image)",
                                         image);
        if (o.memory == 0 || o.memory % (2 * MIB) != 0 || o.memory > m->config.max_memory)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Invalid memory size '%" PRIu64 "'"
                                         " (a multiple of 2 MiB, at most %" PRIu64 ")",
                                         o.memory, m->config.max_memory);
        if (o.vcpus == 0 || o.vcpus > VMQ_MAX_VCPUS)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Invalid vcpus '%u' (1..%u)", o.vcpus, VMQ_MAX_VCPUS);
        if (!VMQ_IS_POW2(o.queue_depth) || o.queue_depth > m->config.max_queue_depth)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Invalid queue_depth '%u' (a power of two, at most %u)",
                                         o.queue_depth, m->config.max_queue_depth);
        if (o.huge_memory % (2 * MIB) != 0 || o.huge_memory > m->config.max_memory)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Invalid huge_memory '%" PRIu64 "'"
                                         " (a multiple of 2 MiB, at most %" PRIu64 ")",
                                         o.huge_memory, m->config.max_memory);
        if (o.huge_memory > 0 && !vmq_monitor_has_huge(m->monitor))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "huge_memory needs 2 MiB hugetlb frames, which vmqd "
                                         "does not have");
        if (o.args && strlen(o.args) >= VMQ_ARGS_MAX)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "The argument string is longer than %u bytes",
                                         VMQ_ARGS_MAX - 1);
        if (o.uuid) {
                r = sd_id128_from_string(o.uuid, &uuid);
                if (r < 0)
                        return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                                 "Invalid UUID '%s'", o.uuid);
        } else {
                r = sd_id128_randomize(&uuid);
                if (r < 0)
                        return r;
        }

        def.name = (char *)name;
        def.image = (char *)image;
        snprintf(def.uuid, sizeof(def.uuid),
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 uuid.bytes[0], uuid.bytes[1], uuid.bytes[2], uuid.bytes[3], uuid.bytes[4],
                 uuid.bytes[5], uuid.bytes[6], uuid.bytes[7], uuid.bytes[8], uuid.bytes[9],
                 uuid.bytes[10], uuid.bytes[11], uuid.bytes[12], uuid.bytes[13], uuid.bytes[14],
                 uuid.bytes[15]);
        /* An explicit UUID must be no other machine's, nor nil. */
        r = manager_check_new_machine(m, name, def.uuid, error);
        if (r < 0)
                return r;
        def.memory = o.memory;
        def.vcpus = o.vcpus;
        def.queue_depth = o.queue_depth;
        def.huge_memory = o.huge_memory;
        def.args = (char *)o.args;
        def.autostart = o.autostart;
        {
                _cleanup_free_ char *why = NULL;
                if (vmqd_machine_def_validate(&def, &why) < 0)
                        return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                                 "Invalid machine '%s': %s", name,
                                                 why ? why : "bad definition");
        }

        r = machine_new(m, &def, o.persistent || o.autostart, &mc);
        if (r < 0)
                return r;

        /* Refuse a missing image now rather than at the first start. */
        path = machine_image_path(mc);
        if (!path)
                return -ENOMEM;
        /* ... and one that is not a guest image vmq can load: the same
         * checks as at start, so that `create` fails where the mistake is. */
        {
                void *data = NULL;
                size_t size = 0;
                struct vmq_elf_info info;
                r = vmq_read_file(path, VMQ_IMAGE_MAX, &data, &size);
                if (r == 0) {
                        r = vmq_elf_parse(data, size, VMQ_IMAGE_GPA,
                                          def.memory - (uint64_t)def.vcpus * VMQ_STACK_SIZE, &info);
                        free(data);
                        if (r < 0)
                                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                                         "Image '%s' is not a vmq guest image: %s",
                                                         path, strerror(-r));
                }
        }
        if (r < 0)
                return image_error(error, path, r);

        /* Saved first (if persistent), started next (if asked), listed
         * last: a failure at any step leaves no machine and no definition. */
        r = manager_add_machine(m, mc, o.start ? start_new_machine : NULL, NULL, error);
        if (r < 0)
                return r;
        added = VMQ_TAKE_PTR(mc); /* the manager's now */
        manager_process_monitor(m);
        if (o.start)
                manager_open_persistent_channels(m);
        return sd_bus_reply_method_return(message, "o", added->path);
}

/* The Manager's by-name forms of the Machine methods: access first, then
 * the lookup, then what the Machine object does. */
typedef int (*machine_call)(sd_bus_message *message, struct machine *mc, sd_bus_error *error);

static int by_name(sd_bus_message *message, struct manager *m, machine_call call,
                   sd_bus_error *error) {
        struct machine *mc;
        int r = vmqd_check_access(message, error);
        if (r >= 0)
                r = read_machine(message, m, &mc, error);
        if (r < 0)
                return r;
        return call(message, mc, error);
}

static int method_start_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return by_name(message, userdata, bus_machine_start, error);
}

static int method_stop_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return by_name(message, userdata, bus_machine_stop, error);
}

static int method_destroy_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return by_name(message, userdata, bus_machine_destroy, error);
}

static int method_undefine_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        return by_name(message, userdata, bus_machine_undefine, error);
}

static int method_list_machines(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        struct manager *m = userdata;
        int r;

        (void)error;
        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ssuso)");
        if (r < 0)
                return r;
        for (struct machine *mc = m->machines; mc; mc = mc->next) {
                r = sd_bus_message_append(reply, "(ssuso)", mc->name,
                                          machine_state_to_string(mc->state), mc->id, mc->image,
                                          mc->path);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct machine *mc;
        int r = read_machine(message, userdata, &mc, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, "o", mc->path);
}

static int read_channel_options(sd_bus_message *message, struct channel_params *p,
                                sd_bus_error *error) {
        int persistent = p->persistent;
        const struct bus_option options[] = {
                {"depth", "u", &p->depth},
                {"mode", "s", &p->mode},
                {"transfer", "s", &p->transfer},
                {"persistent", "b", &persistent},
        };
        int r = bus_read_options(message, options, VMQ_ARRAY_SIZE(options), error);
        if (r >= 0)
                p->persistent = persistent;
        return r;
}

static int check_end(struct manager *m, const char *name, sd_bus_error *error) {
        if (strcmp(name, VMQ_BUS_HOST_END) == 0 || manager_find_machine(m, name))
                return 0;
        return no_such_machine(error, name);
}

static int method_open_channel(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct manager *m = userdata;
        struct channel_params p = {
                .depth = m->config.default_host_depth,
                .mode = m->config.default_mode,
                .transfer = m->config.default_transfer,
        };
        const char *end_a, *end_b;
        struct channel *c;
        int r;

        r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(message, "ss", &end_a, &end_b);
        if (r < 0)
                return r;
        r = read_channel_options(message, &p, error);
        if (r < 0)
                return r;

        if (strcmp(end_a, VMQ_BUS_HOST_END) == 0 && strcmp(end_b, VMQ_BUS_HOST_END) == 0)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "At most one end of a channel can be the host");
        r = check_end(m, end_a, error);
        if (r < 0)
                return r;
        r = check_end(m, end_b, error);
        if (r < 0)
                return r;
        if (manager_count_open_channels(m) >= m->config.max_channels)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_LIMIT_REACHED,
                                         "Cannot open a channel: the limit of %u channels is "
                                         "reached",
                                         m->config.max_channels);
        r = manager_open_channel(m, end_a, end_b, &p, error, &c);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, "uo", c->id, c->path);
}

static int method_close_channel(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct channel *c;
        int r = vmqd_check_access(message, error);
        if (r >= 0)
                r = read_channel(message, userdata, &c, error);
        if (r < 0)
                return r;
        return bus_channel_close(message, c, error);
}

static int method_list_channels(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        struct manager *m = userdata;
        int r;

        (void)error;
        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "(ussbo)");
        if (r < 0)
                return r;
        for (struct channel *c = m->channels; c; c = c->next) {
                r = sd_bus_message_append(reply, "(ussbo)", c->id, c->end_a, c->end_b, (int)c->open,
                                          c->path);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int method_get_channel(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct channel *c;
        int r = read_channel(message, userdata, &c, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, "o", c->path);
}

static int method_send(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct manager *m = userdata;
        struct channel *c;
        const void *data;
        size_t len;
        uint64_t tag;
        int r;

        r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        r = read_channel(message, m, &c, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(message, 'y', &data, &len);
        if (r < 0)
                return r;
        r = sd_bus_message_read(message, "t", &tag);
        if (r < 0)
                return r;
        if (len > VMQ_BUS_MAX_INLINE)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_TOO_LARGE,
                                         "%zu bytes are more than Send takes (%u); use SendFd", len,
                                         VMQ_BUS_MAX_INLINE);
        r = channel_send(c, data, len, tag, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, NULL);
}

static int method_send_fd(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        const int need = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
        struct manager *m = userdata;
        struct channel *c;
        struct stat st;
        void *data = NULL;
        uint32_t id;
        uint64_t tag;
        int fd, seals, r;

        r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(message, "uht", &id, &fd, &tag);
        if (r < 0)
                return r;

        seals = fcntl(fd, F_GET_SEALS);
        if (seals < 0)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_FD,
                                         "The file descriptor is not a memfd");
        if ((seals & need) != need)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_FD,
                                         "The memfd is not sealed against writing, shrinking and "
                                         "growing");
        if (fstat(fd, &st) < 0)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_FD, "Cannot stat the memfd: %s",
                                         strerror(errno));
        if (!S_ISREG(st.st_mode))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_FD,
                                         "The file descriptor is not a memfd");
        /* One reopened through /proc write-only cannot be mapped for reading. */
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || (flags & O_ACCMODE) == O_WRONLY)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_FD,
                                         "The memfd is not open for reading");
        c = manager_find_channel(m, id);
        if (!c)
                return no_such_channel(error, id);
        if ((uint64_t)st.st_size > m->config.max_message)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_TOO_LARGE,
                                         "%jd bytes are more than the limit of %" PRIu64,
                                         (intmax_t)st.st_size, m->config.max_message);
        if (st.st_size > 0) {
                data = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
                if (data == MAP_FAILED)
                        return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_FD,
                                                 "Cannot map the memfd: %s", strerror(errno));
        }
        r = channel_send(c, data, (size_t)st.st_size, tag, error);
        if (data)
                (void)munmap(data, (size_t)st.st_size);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, NULL);
}

static int method_receive(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct manager *m = userdata;
        struct channel *c;
        uint64_t timeout;
        int r;

        r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        r = read_channel(message, m, &c, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(message, "t", &timeout);
        if (r < 0)
                return r;
        r = channel_receive(c, message, timeout, error);
        /* A closed channel whose last Receive this was goes now. */
        if (r >= 0 && channel_is_done(c))
                manager_process_monitor(m);
        return r;
}

static int append_stat(sd_bus_message *reply, const char *key, char type, uint64_t v) {
        if (type == 'u')
                return sd_bus_message_append(reply, "{sv}", key, "u", (uint32_t)v);
        return sd_bus_message_append(reply, "{sv}", key, "t", v);
}

static int method_get_statistics(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        struct manager *m = userdata;
        uint64_t messages = 0, bytes = 0, errors = 0;
        int r;

        (void)error;
        for (struct channel *c = m->channels; c; c = c->next) {
                struct vmq_channel_info info;
                if (vmq_channel_get_info(m->monitor, c->id, &info) < 0)
                        continue;
                messages += info.messages[0] + info.messages[1];
                bytes += info.bytes[0] + info.bytes[1];
        }
        for (struct machine *mc = m->machines; mc; mc = mc->next) {
                struct vmq_vm_stats st;
                if (!mc->vm)
                        continue;
                vmq_vm_get_stats(mc->vm, &st);
                errors += st.errors;
        }

        const struct {
                const char *key;
                char type;
                uint64_t value;
        } items[] = {
                {"machines", 'u', m->n_machines},
                {"running", 'u', manager_count_running(m)},
                {"channels", 'u', m->n_channels},
                {"messages", 't', messages},
                {"bytes", 't', bytes},
                {"errors", 't', errors},
                {"frames_free", 't', vmq_monitor_frames_free(m->monitor, false)},
                {"frames_total", 't', vmq_monitor_frames_total(m->monitor, false)},
                {"huge_frames_free", 't', vmq_monitor_frames_free(m->monitor, true)},
                {"huge_frames_total", 't', vmq_monitor_frames_total(m->monitor, true)},
        };

        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(items); i++) {
                r = append_stat(reply, items[i].key, items[i].type, items[i].value);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(reply);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int property_get_version(sd_bus *bus, const char *path, const char *interface,
                                const char *property, sd_bus_message *reply, void *userdata,
                                sd_bus_error *error) {
        (void)bus;
        (void)path;
        (void)interface;
        (void)property;
        (void)userdata;
        (void)error;
        return sd_bus_message_append(reply, "s", PACKAGE_VERSION);
}

static int property_get_huge_pages(sd_bus *bus, const char *path, const char *interface,
                                   const char *property, sd_bus_message *reply, void *userdata,
                                   sd_bus_error *error) {
        struct manager *m = userdata;

        (void)bus;
        (void)path;
        (void)interface;
        (void)property;
        (void)error;
        return sd_bus_message_append(reply, "b", (int)vmq_monitor_has_huge(m->monitor));
}

static int property_get_max_inline(sd_bus *bus, const char *path, const char *interface,
                                   const char *property, sd_bus_message *reply, void *userdata,
                                   sd_bus_error *error) {
        (void)bus;
        (void)path;
        (void)interface;
        (void)property;
        (void)userdata;
        (void)error;
        return sd_bus_message_append(reply, "u", (uint32_t)VMQ_BUS_MAX_INLINE);
}

/* Every method answers with a documented error (vmqd/bus-error.h). */
VMQD_BUS_CHECKED(method_create_machine)
VMQD_BUS_CHECKED(libvirt_method_adopt_domain)
VMQD_BUS_CHECKED(method_start_machine)
VMQD_BUS_CHECKED(method_stop_machine)
VMQD_BUS_CHECKED(method_destroy_machine)
VMQD_BUS_CHECKED(method_undefine_machine)
VMQD_BUS_CHECKED(method_list_machines)
VMQD_BUS_CHECKED(method_get_machine)
VMQD_BUS_CHECKED(method_open_channel)
VMQD_BUS_CHECKED(method_close_channel)
VMQD_BUS_CHECKED(method_list_channels)
VMQD_BUS_CHECKED(method_get_channel)
VMQD_BUS_CHECKED(method_send)
VMQD_BUS_CHECKED(method_send_fd)
VMQD_BUS_CHECKED(method_receive)
VMQD_BUS_CHECKED(method_get_statistics)

const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_get_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("StateDirectory", "s", NULL, offsetof(struct manager, config.state_dir),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("ImageDirectory", "s", NULL, offsetof(struct manager, config.image_dir),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("CorruptStateFile", "s", NULL, offsetof(struct manager, corrupt_state_file),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("HugePages", "b", property_get_huge_pages, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("MaxInlineSend", "u", property_get_max_inline, 0,
                        SD_BUS_VTABLE_PROPERTY_CONST),

        SD_BUS_METHOD_WITH_ARGS("CreateMachine",
                                SD_BUS_ARGS("s", name, "s", image, "a{sv}", options),
                                SD_BUS_RESULT("o", machine), method_create_machine_checked,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("AdoptDomain", SD_BUS_ARGS("s", domain, "a{sv}", options),
                                SD_BUS_RESULT("o", machine), libvirt_method_adopt_domain_checked,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StartMachine", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
                                method_start_machine_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StopMachine", SD_BUS_ARGS("s", name, "u", timeout_sec),
                                SD_BUS_NO_RESULT, method_stop_machine_checked,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DestroyMachine", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
                                method_destroy_machine_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("UndefineMachine", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
                                method_undefine_machine_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListMachines", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ssuso)", machines),
                                method_list_machines_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetMachine", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", machine),
                                method_get_machine_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("OpenChannel",
                                SD_BUS_ARGS("s", end_a, "s", end_b, "a{sv}", options),
                                SD_BUS_RESULT("u", id, "o", channel), method_open_channel_checked,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CloseChannel", SD_BUS_ARGS("u", id), SD_BUS_NO_RESULT,
                                method_close_channel_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListChannels", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ussbo)", channels),
                                method_list_channels_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetChannel", SD_BUS_ARGS("u", id), SD_BUS_RESULT("o", channel),
                                method_get_channel_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Send", SD_BUS_ARGS("u", channel, "ay", data, "t", tag),
                                SD_BUS_NO_RESULT, method_send_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SendFd", SD_BUS_ARGS("u", channel, "h", fd, "t", tag),
                                SD_BUS_NO_RESULT, method_send_fd_checked,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Receive", SD_BUS_ARGS("u", channel, "t", timeout_usec),
                                SD_BUS_RESULT("a{sv}", message), method_receive_checked,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetStatistics", SD_BUS_NO_ARGS, SD_BUS_RESULT("a{sv}", stats),
                                method_get_statistics_checked, SD_BUS_VTABLE_UNPRIVILEGED),

        SD_BUS_SIGNAL_WITH_ARGS("MachineNew", SD_BUS_ARGS("s", name, "o", machine), 0),
        SD_BUS_SIGNAL_WITH_ARGS("MachineRemoved", SD_BUS_ARGS("s", name, "o", machine), 0),
        SD_BUS_SIGNAL_WITH_ARGS("MachineStateChanged", SD_BUS_ARGS("s", name, "s", state), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ChannelNew", SD_BUS_ARGS("u", id, "o", channel), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ChannelRemoved", SD_BUS_ARGS("u", id, "o", channel), 0),
        SD_BUS_SIGNAL_WITH_ARGS("ChannelStateChanged", SD_BUS_ARGS("u", id, "b", open), 0),
        SD_BUS_VTABLE_END,
};

int manager_bus_register(struct manager *m) {
        int r;

        r = sd_bus_add_object_vtable(m->bus, NULL, VMQ_BUS_PATH, VMQ_BUS_MANAGER_IFACE,
                                     manager_vtable, m);
        if (r < 0)
                return log_error_errno(r, "Cannot add the Manager object: %m");
        r = sd_bus_add_fallback_vtable(m->bus, NULL, VMQ_BUS_MACHINE_PREFIX, VMQ_BUS_MACHINE_IFACE,
                                       machine_vtable, machine_object_find, m);
        if (r < 0)
                return log_error_errno(r, "Cannot add the Machine objects: %m");
        r = sd_bus_add_node_enumerator(m->bus, NULL, VMQ_BUS_MACHINE_PREFIX,
                                       machine_node_enumerator, m);
        if (r < 0)
                return log_error_errno(r, "Cannot add the Machine enumerator: %m");
        r = sd_bus_add_fallback_vtable(m->bus, NULL, VMQ_BUS_CHANNEL_PREFIX, VMQ_BUS_CHANNEL_IFACE,
                                       channel_vtable, channel_object_find, m);
        if (r < 0)
                return log_error_errno(r, "Cannot add the Channel objects: %m");
        r = sd_bus_add_node_enumerator(m->bus, NULL, VMQ_BUS_CHANNEL_PREFIX,
                                       channel_node_enumerator, m);
        if (r < 0)
                return log_error_errno(r, "Cannot add the Channel enumerator: %m");
        r = sd_bus_add_object_manager(m->bus, NULL, VMQ_BUS_PATH);
        if (r < 0)
                return log_error_errno(r, "Cannot add the object manager: %m");
        r = sd_bus_match_signal(m->bus, &m->owner_slot, "org.freedesktop.DBus",
                                "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameOwnerChanged",
                                on_name_owner_changed, m);
        if (r < 0)
                return log_error_errno(r, "Cannot watch bus clients: %m");
        return 0;
}
