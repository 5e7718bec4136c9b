/* SPDX-License-Identifier: MIT */
/*
 * libvmq-client: machines — lifecycle calls on the manager, snapshots of a
 * machine's properties, and its console.
 */
#include <stddef.h>
#include <string.h>

#include "bus/vmq-bus.h"
#include "libvmq-client/client-internal.h"

struct vmq_machine {
        unsigned refcount;
        bool complete;
        char *name;
        char *uuid;
        char *image;
        char *state_string;
        char *crash_reason;
        char *backend;
        char *domain;
        enum vmq_machine_state state;
        uint32_t id;
        uint32_t vcpus;
        uint32_t queue_depth;
        uint32_t vsock_cid;
        char *vsock_state;
        uint64_t memory;
        bool persistent;
        bool autostart;
        int32_t exit_code;
        struct vmq_stats *stats;
};

static const char *const state_names[_VMQ_MACHINE_STATE_MAX] = {
        [VMQ_MACHINE_UNKNOWN] = "unknown", [VMQ_MACHINE_DEFINED] = "defined",
        [VMQ_MACHINE_RUNNING] = "running", [VMQ_MACHINE_EXITED] = "exited",
        [VMQ_MACHINE_STOPPED] = "stopped", [VMQ_MACHINE_CRASHED] = "crashed",
};

VMQ_EXPORT const char *vmq_machine_state_to_string(enum vmq_machine_state state) {
        if ((unsigned)state >= _VMQ_MACHINE_STATE_MAX)
                return "unknown";
        return state_names[state];
}

VMQ_EXPORT enum vmq_machine_state vmq_machine_state_from_string(const char *s) {
        if (!s)
                return VMQ_MACHINE_UNKNOWN;
        for (unsigned i = 0; i < _VMQ_MACHINE_STATE_MAX; i++)
                if (strcmp(state_names[i], s) == 0)
                        return (enum vmq_machine_state)i;
        return VMQ_MACHINE_UNKNOWN;
}

/* Does a caller's options struct of @size bytes hold @field? */
#define HAS_FIELD(type, size, field) (offsetof(type, field) + sizeof(((type *)0)->field) <= (size))

static int append_machine_options(sd_bus_message *m, const struct vmq_machine_options *o) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        if (o) {
#define MOPT(field) HAS_FIELD(struct vmq_machine_options, o->size, field)
                if (o->size < sizeof(o->size))
                        return -EINVAL;
                if (MOPT(memory) && o->memory)
                        r = sd_bus_message_append(m, "{sv}", "memory", "t", o->memory);
                if (r >= 0 && MOPT(vcpus) && o->vcpus)
                        r = sd_bus_message_append(m, "{sv}", "vcpus", "u", o->vcpus);
                if (r >= 0 && MOPT(queue_depth) && o->queue_depth)
                        r = sd_bus_message_append(m, "{sv}", "queue_depth", "u", o->queue_depth);
                if (r >= 0 && MOPT(huge_memory) && o->huge_memory)
                        r = sd_bus_message_append(m, "{sv}", "huge_memory", "t", o->huge_memory);
                if (r >= 0 && MOPT(args) && o->args)
                        r = sd_bus_message_append(m, "{sv}", "args", "s", o->args);
                if (r >= 0 && MOPT(uuid) && o->uuid)
                        r = sd_bus_message_append(m, "{sv}", "uuid", "s", o->uuid);
                if (r >= 0 && MOPT(persistent) && o->persistent)
                        r = sd_bus_message_append(m, "{sv}", "persistent", "b", 1);
                if (r >= 0 && MOPT(autostart) && o->autostart)
                        r = sd_bus_message_append(m, "{sv}", "autostart", "b", 1);
                if (r >= 0 && MOPT(start) && o->start)
                        r = sd_bus_message_append(m, "{sv}", "start", "b", 1);
                if (r < 0)
                        return r;
#undef MOPT
        }
        return sd_bus_message_close_container(m);
}

VMQ_EXPORT int vmq_client_create_machine(struct vmq_client *c, const char *name, const char *image,
                                         const struct vmq_machine_options *opts) {
        _cleanup_msg_ sd_bus_message *m = NULL;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!name || !image)
                return -EINVAL;
        r = vmqc_new_manager_call(c, &m, "CreateMachine");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "ss", name, image);
        if (r < 0)
                return r;
        r = append_machine_options(m, opts);
        if (r < 0)
                return r;
        return vmqc_call(c, m, 0, -EHOSTDOWN, NULL);
}

/* A manager call that takes a machine name and returns nothing. */
static int machine_call(struct vmq_client *c, const char *member, const char *name,
                        uint64_t timeout_usec) {
        _cleanup_msg_ sd_bus_message *m = NULL;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!name)
                return -EINVAL;
        r = vmqc_new_manager_call(c, &m, member);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", name);
        if (r < 0)
                return r;
        return vmqc_call(c, m, timeout_usec, -EHOSTDOWN, NULL);
}

VMQ_EXPORT int vmq_client_start_machine(struct vmq_client *c, const char *name) {
        return machine_call(c, "StartMachine", name, 0);
}

VMQ_EXPORT int vmq_client_destroy_machine(struct vmq_client *c, const char *name) {
        return machine_call(c, "DestroyMachine", name, 0);
}

VMQ_EXPORT int vmq_client_undefine_machine(struct vmq_client *c, const char *name) {
        return machine_call(c, "UndefineMachine", name, 0);
}

/* How long "0: the daemon's default" may take, for the call's timeout. */
#define STOP_DEFAULT_USEC (300ULL * 1000000ULL)

VMQ_EXPORT int vmq_client_stop_machine(struct vmq_client *c, const char *name,
                                       uint32_t timeout_sec) {
        _cleanup_msg_ sd_bus_message *m = NULL;
        uint64_t wait;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!name)
                return -EINVAL;
        r = vmqc_new_manager_call(c, &m, "StopMachine");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "su", name, timeout_sec);
        if (r < 0)
                return r;
        /* The reply comes when the machine has stopped: up to the grace
         * period, then the forced stop. */
        wait = timeout_sec ? (uint64_t)timeout_sec * 1000000ULL : STOP_DEFAULT_USEC;
        return vmqc_call(c, m, vmqc_add_timeout(wait, c->call_timeout_usec), -EHOSTDOWN, NULL);
}

/* ------------------------------------------------------------------------
 * Snapshots.
 */

static struct vmq_machine *machine_new(void) {
        struct vmq_machine *m = calloc(1, sizeof(*m));

        if (m)
                m->refcount = 1;
        return m;
}

VMQ_EXPORT struct vmq_machine *vmq_machine_ref(struct vmq_machine *m) {
        if (m)
                m->refcount++;
        return m;
}

VMQ_EXPORT struct vmq_machine *vmq_machine_unref(struct vmq_machine *m) {
        if (!m || --m->refcount > 0)
                return NULL;
        free(m->name);
        free(m->uuid);
        free(m->image);
        free(m->state_string);
        free(m->crash_reason);
        free(m->backend);
        free(m->domain);
        free(m->vsock_state);
        vmq_stats_free(m->stats);
        free(m);
        return NULL;
}

VMQ_EXPORT struct vmq_machine **vmq_machine_unref_list(struct vmq_machine **list) {
        if (!list)
                return NULL;
        for (struct vmq_machine **p = list; *p; p++)
                vmq_machine_unref(*p);
        free(list);
        return NULL;
}

static int set_state(struct vmq_machine *m, const char *state) {
        int r = vmqc_strdup(state, &m->state_string);

        if (r < 0)
                return r;
        m->state = vmq_machine_state_from_string(state);
        return 0;
}

static int machine_property(sd_bus_message *reply, const char *key, void *userdata) {
        struct vmq_machine *m = userdata;
        int r;

        if (strcmp(key, "Name") == 0)
                return vmqc_read_string(reply, &m->name);
        if (strcmp(key, "UUID") == 0)
                return vmqc_read_string(reply, &m->uuid);
        if (strcmp(key, "Image") == 0)
                return vmqc_read_string(reply, &m->image);
        if (strcmp(key, "CrashReason") == 0)
                return vmqc_read_string(reply, &m->crash_reason);
        if (strcmp(key, "Backend") == 0)
                return vmqc_read_string(reply, &m->backend);
        if (strcmp(key, "Domain") == 0)
                return vmqc_read_string(reply, &m->domain);
        if (strcmp(key, "State") == 0) {
                r = vmqc_read_string(reply, &m->state_string);
                if (r > 0)
                        m->state = vmq_machine_state_from_string(m->state_string);
                return r;
        }
        if (strcmp(key, "ExitCode") == 0)
                return vmqc_read_int32(reply, &m->exit_code);
        if (strcmp(key, "Statistics") == 0) {
                const char *sig;

                r = vmqc_variant_sig(reply, &sig);
                if (r < 0)
                        return r;
                if (strcmp(sig, "a{st}") != 0)
                        return vmqc_skip_variant(reply);
                r = sd_bus_message_enter_container(reply, 'v', sig);
                if (r >= 0)
                        r = vmqc_stats_read_dict(m->stats, reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                return r;
        }
        if (strcmp(key, "Memory") == 0)
                return vmqc_read_uint(reply, &m->memory);
        if (strcmp(key, "VCPUs") == 0)
                return vmqc_read_u32(reply, &m->vcpus);
        if (strcmp(key, "QueueDepth") == 0)
                return vmqc_read_u32(reply, &m->queue_depth);
        if (strcmp(key, "Id") == 0)
                return vmqc_read_u32(reply, &m->id);
        if (strcmp(key, "VsockCID") == 0)
                return vmqc_read_u32(reply, &m->vsock_cid);
        if (strcmp(key, "VsockState") == 0)
                return vmqc_read_string(reply, &m->vsock_state);
        if (strcmp(key, "Persistent") == 0)
                return vmqc_read_bool(reply, &m->persistent);
        if (strcmp(key, "Autostart") == 0)
                return vmqc_read_bool(reply, &m->autostart);
        return vmqc_skip_variant(reply);
}

/* Reads the a{sv} of Properties.GetAll into @m. */
static int read_machine_properties(struct vmq_machine *m, sd_bus_message *reply) {
        return vmqc_read_dict(reply, machine_property, m);
}

VMQ_EXPORT int vmq_client_get_machine(struct vmq_client *c, const char *name,
                                      struct vmq_machine **ret) {
        _cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL, *props = NULL;
        struct vmq_machine *machine;
        const char *path;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!name || !ret)
                return -EINVAL;
        r = vmqc_new_manager_call(c, &m, "GetMachine");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", name);
        if (r < 0)
                return r;
        r = vmqc_call(c, m, 0, -EHOSTDOWN, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return r;
        r = vmqc_get_all(c, path, VMQ_BUS_MACHINE_IFACE, -ENOENT, &props);
        if (r < 0)
                return r;

        machine = machine_new();
        if (!machine)
                return -ENOMEM;
        machine->complete = true;
        r = vmqc_stats_new(&machine->stats);
        if (r >= 0)
                r = read_machine_properties(machine, props);
        /* Never hand out NULL strings from a complete snapshot. */
        if (r >= 0 && !machine->name)
                r = vmqc_strdup(name, &machine->name);
        if (r >= 0 && !machine->uuid)
                r = vmqc_strdup("", &machine->uuid);
        if (r >= 0 && !machine->image)
                r = vmqc_strdup("", &machine->image);
        if (r >= 0 && !machine->crash_reason)
                r = vmqc_strdup("", &machine->crash_reason);
        /* A daemon from before the libvirt backend runs micro-VMs only. */
        if (r >= 0 && !machine->backend)
                r = vmqc_strdup("kvm", &machine->backend);
        if (r >= 0 && !machine->domain)
                r = vmqc_strdup("", &machine->domain);
        if (r >= 0 && !machine->state_string)
                r = set_state(machine, "unknown");
        if (r < 0) {
                vmq_machine_unref(machine);
                return r;
        }
        *ret = machine;
        return 0;
}

VMQ_EXPORT int vmq_client_list_machines(struct vmq_client *c, struct vmq_machine ***ret,
                                        size_t *ret_n) {
        _cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL;
        struct vmq_machine **list = NULL;
        size_t n = 0;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!ret)
                return -EINVAL;
        r = vmqc_new_manager_call(c, &m, "ListMachines");
        if (r < 0)
                return r;
        r = vmqc_call(c, m, 0, -EHOSTDOWN, &reply);
        if (r < 0)
                return r;

        list = calloc(1, sizeof(*list));
        if (!list)
                return -ENOMEM;
        r = sd_bus_message_enter_container(reply, 'a', "(ssuso)");
        while (r >= 0) {
                const char *name, *state, *image, *path;
                struct vmq_machine **l, *machine;
                uint32_t id;

                r = sd_bus_message_read(reply, "(ssuso)", &name, &state, &id, &image, &path);
                if (r <= 0)
                        break;
                l = reallocarray(list, n + 2, sizeof(*list));
                if (!l) {
                        r = -ENOMEM;
                        break;
                }
                list = l;
                machine = machine_new();
                if (!machine) {
                        r = -ENOMEM;
                        break;
                }
                list[n++] = machine;
                list[n] = NULL;
                machine->id = id;
                r = vmqc_strdup(name, &machine->name);
                if (r >= 0)
                        r = vmqc_strdup(image, &machine->image);
                if (r >= 0)
                        r = set_state(machine, state);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r < 0) {
                vmq_machine_unref_list(list);
                return r;
        }
        *ret = list;
        if (ret_n)
                *ret_n = n;
        return 0;
}

VMQ_EXPORT bool vmq_machine_is_complete(const struct vmq_machine *m) {
        return m->complete;
}

VMQ_EXPORT const char *vmq_machine_get_name(const struct vmq_machine *m) {
        return m->name;
}

VMQ_EXPORT const char *vmq_machine_get_uuid(const struct vmq_machine *m) {
        return m->uuid;
}

VMQ_EXPORT const char *vmq_machine_get_image(const struct vmq_machine *m) {
        return m->image;
}

VMQ_EXPORT enum vmq_machine_state vmq_machine_get_state(const struct vmq_machine *m) {
        return m->state;
}

VMQ_EXPORT const char *vmq_machine_get_state_string(const struct vmq_machine *m) {
        return m->state_string;
}

VMQ_EXPORT uint32_t vmq_machine_get_id(const struct vmq_machine *m) {
        return m->id;
}

VMQ_EXPORT uint64_t vmq_machine_get_memory(const struct vmq_machine *m) {
        return m->memory;
}

VMQ_EXPORT uint32_t vmq_machine_get_vcpus(const struct vmq_machine *m) {
        return m->vcpus;
}

VMQ_EXPORT uint32_t vmq_machine_get_queue_depth(const struct vmq_machine *m) {
        return m->queue_depth;
}

VMQ_EXPORT bool vmq_machine_is_persistent(const struct vmq_machine *m) {
        return m->persistent;
}

VMQ_EXPORT bool vmq_machine_is_autostart(const struct vmq_machine *m) {
        return m->autostart;
}

VMQ_EXPORT int32_t vmq_machine_get_exit_code(const struct vmq_machine *m) {
        return m->exit_code;
}

VMQ_EXPORT const char *vmq_machine_get_crash_reason(const struct vmq_machine *m) {
        return m->crash_reason;
}

VMQ_EXPORT const struct vmq_stats *vmq_machine_get_statistics(const struct vmq_machine *m) {
        return m->stats;
}

VMQ_EXPORT const char *vmq_machine_get_backend(const struct vmq_machine *m) {
        return m->backend;
}

VMQ_EXPORT const char *vmq_machine_get_domain(const struct vmq_machine *m) {
        return m->domain;
}

VMQ_EXPORT uint32_t vmq_machine_get_vsock_cid(const struct vmq_machine *m) {
        return m->vsock_cid;
}

VMQ_EXPORT const char *vmq_machine_get_vsock_state(const struct vmq_machine *m) {
        return m->vsock_state ? m->vsock_state : (m->vsock_cid ? "waiting" : "none");
}

/* ------------------------------------------------------------------------
 * libvirt domains.
 */

static int append_adopt_options(sd_bus_message *m, const struct vmq_adopt_options *o) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        if (o) {
#define AOPT(field) HAS_FIELD(struct vmq_adopt_options, o->size, field)
                if (o->size < sizeof(o->size))
                        return -EINVAL;
                if (AOPT(name) && o->name)
                        r = sd_bus_message_append(m, "{sv}", "name", "s", o->name);
                if (r >= 0 && AOPT(persistent) && o->persistent)
                        r = sd_bus_message_append(m, "{sv}", "persistent", "b", 1);
                if (r >= 0 && AOPT(region_size) && o->region_size)
                        r = sd_bus_message_append(m, "{sv}", "region_size", "t", o->region_size);
                if (r >= 0 && AOPT(rx_size) && o->rx_size)
                        r = sd_bus_message_append(m, "{sv}", "rx_size", "t", o->rx_size);
                /* A CID implies the device: vmqd reads vsock_cid alone. */
                if (r >= 0 && AOPT(vsock_cid) && o->vsock_cid)
                        r = sd_bus_message_append(m, "{sv}", "vsock_cid", "u", o->vsock_cid);
                else if (r >= 0 && AOPT(vsock) && o->vsock)
                        r = sd_bus_message_append(m, "{sv}", "vsock", "b", 1);
                if (r < 0)
                        return r;
#undef AOPT
        }
        return sd_bus_message_close_container(m);
}

VMQ_EXPORT int vmq_client_adopt_domain(struct vmq_client *c, const char *domain,
                                       const struct vmq_adopt_options *opts, char **ret_name) {
        _cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL;
        char *name = NULL;
        const char *path;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!domain)
                return -EINVAL;
        r = vmqc_new_manager_call(c, &m, "AdoptDomain");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", domain);
        if (r < 0)
                return r;
        r = append_adopt_options(m, opts);
        if (r < 0)
                return r;
        /* Hot-plugging the device into a running domain takes a while. */
        r = vmqc_call(c, m, vmqc_add_timeout(60ULL * 1000000ULL, c->call_timeout_usec), -EHOSTDOWN,
                      &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &path);
        if (r < 0)
                return r;
        if (ret_name) {
                r = sd_bus_path_decode(path, VMQ_BUS_MACHINE_PREFIX, &name);
                if (r < 0)
                        return r;
                if (r == 0)
                        return -EBADMSG;
                *ret_name = name;
        }
        return 0;
}

/* ------------------------------------------------------------------------
 * Console.
 */

VMQ_EXPORT int vmq_client_read_console(struct vmq_client *c, const char *name, uint64_t offset,
                                       void **ret_data, size_t *ret_size, uint64_t *ret_next) {
        _cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *path = NULL;
        const void *data;
        size_t size;
        uint64_t next;
        void *copy = NULL;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!name || !ret_data || !ret_size || !ret_next)
                return -EINVAL;
        /* One round trip: the machine's path is known from its name, and an
         * unknown object means an unknown machine. */
        r = sd_bus_path_encode(VMQ_BUS_MACHINE_PREFIX, name, &path);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(c->bus, &m, VMQ_BUS_NAME, path, VMQ_BUS_MACHINE_IFACE,
                                           "ReadConsole");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "t", offset);
        if (r < 0)
                return r;
        r = vmqc_call(c, m, 0, -ENOENT, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(reply, 'y', &data, &size);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "t", &next);
        if (r < 0)
                return r;
        if (size > 0) {
                copy = malloc(size);
                if (!copy)
                        return -ENOMEM;
                memcpy(copy, data, size);
        }
        *ret_data = copy;
        *ret_size = size;
        *ret_next = next;
        return 0;
}
