/* SPDX-License-Identifier: MIT */
/*
 * org.vmq1.Machine: one object per machine under VMQ_BUS_MACHINE_PREFIX,
 * found through a fallback vtable (the last path element is the machine
 * name, escaped with sd_bus_path_encode()) and listed by an enumerator.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus/vmq-bus.h"
#include "core/util.h"
#include "vmqd/bus-error.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"
#include "vmqd/vsock.h"

#define CONSOLE_CHUNK (64u * 1024u)

int bus_machine_start(sd_bus_message *message, struct machine *mc, sd_bus_error *error) {
        int r;

        r = manager_start_machine(mc->manager, mc, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, NULL);
}

int bus_machine_stop(sd_bus_message *message, struct machine *mc, sd_bus_error *error) {
        struct manager *m = mc->manager;
        uint32_t timeout_sec;
        int r;

        r = sd_bus_message_read(message, "u", &timeout_sec);
        if (r < 0)
                return r;
        if (!machine_is_active(mc))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NOT_RUNNING,
                                         "Machine '%s' is not running", mc->name);
        if (timeout_sec == 0)
                timeout_sec = m->config.stop_timeout_sec;

        /* The guest is asked; after the timeout it is stopped by force. */
        r = machine_stop(mc, error);
        if (r < 0)
                return r;
        r = machine_add_stop_request(mc, message, (uint64_t)timeout_sec * 1000000u);
        if (r < 0)
                return r;
        /* It may be over already. */
        manager_process_monitor(m);
        return 1;
}

int bus_machine_destroy(sd_bus_message *message, struct machine *mc, sd_bus_error *error) {
        int r;

        if (!machine_is_active(mc))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NOT_RUNNING,
                                         "Machine '%s' is not running", mc->name);
        r = machine_kill(mc, error);
        if (r < 0)
                return r;
        manager_process_monitor(mc->manager);
        return sd_bus_reply_method_return(message, NULL);
}

int bus_machine_undefine(sd_bus_message *message, struct machine *mc, sd_bus_error *error) {
        int r;

        r = manager_undefine_machine(mc->manager, mc, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(message, NULL);
}

static int method_start(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        int r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        return bus_machine_start(message, userdata, error);
}

static int method_stop(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        int r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        return bus_machine_stop(message, userdata, error);
}

static int method_destroy(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        int r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        return bus_machine_destroy(message, userdata, error);
}

static int method_undefine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        int r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        return bus_machine_undefine(message, userdata, error);
}

static int method_read_console(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        _cleanup_free_ char *buf = NULL;
        struct machine *mc = userdata;
        uint64_t offset;
        size_t n = 0;
        int r;

        (void)error;
        r = sd_bus_message_read(message, "t", &offset);
        if (r < 0)
                return r;
        if (mc->vm) {
                buf = malloc(CONSOLE_CHUNK);
                if (!buf)
                        return -ENOMEM;
                n = vmq_vm_console_read_from(mc->vm, &offset, buf, CONSOLE_CHUNK);
        }
        r = sd_bus_message_new_method_return(message, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_append_array(reply, 'y', buf ? buf : "", n);
        if (r < 0)
                return r;
        r = sd_bus_message_append(reply, "t", offset);
        if (r < 0)
                return r;
        return sd_bus_send(NULL, reply, NULL);
}

static int property_get_state(sd_bus *bus, const char *path, const char *interface,
                              const char *property, sd_bus_message *reply, void *userdata,
                              sd_bus_error *error) {
        struct machine *mc = userdata;

        (void)bus;
        (void)path;
        (void)interface;
        (void)property;
        (void)error;
        return sd_bus_message_append(reply, "s", machine_state_to_string(mc->state));
}

static int property_get_vsock_socket(sd_bus *bus, const char *path, const char *interface,
                                     const char *property, sd_bus_message *reply, void *userdata,
                                     sd_bus_error *error) {
        (void)bus;
        (void)path;
        (void)interface;
        (void)error;
        const struct machine *mc = userdata;
        return sd_bus_message_append(reply, "s",
                                     strcmp(property, "VsockHostSocket") == 0
                                             ? vsock_device_host_socket(mc)
                                             : vsock_device_socket(mc));
}

/* VsockCID: where guests reach the machine, by device or as a peer. */
static int property_get_vsock_cid(sd_bus *bus, const char *path, const char *interface,
                                  const char *property, sd_bus_message *reply, void *userdata,
                                  sd_bus_error *error) {
        (void)bus;
        (void)path;
        (void)interface;
        (void)property;
        (void)error;
        return sd_bus_message_append(reply, "u", vsock_cid_of(userdata));
}

/* VsockState: "none" (no CID), "peer" (a CID without a device: vsock-
 * bridge.h), "running" (QEMU runs the device), "restart-needed" (the
 * domain runs without it), "waiting" (for QEMU: the domain is off, or
 * starting). */
static int property_get_vsock_state(sd_bus *bus, const char *path, const char *interface,
                                    const char *property, sd_bus_message *reply, void *userdata,
                                    sd_bus_error *error) {
        const struct machine *mc = userdata;
        const char *s = "waiting";
        (void)bus;
        (void)path;
        (void)interface;
        (void)property;
        (void)error;
        if (!vsock_cid_of(mc))
                s = "none";
        else if (!mc->vsock_cid)
                s = "peer";
        else if (vsock_device_running(mc))
                s = "running";
        else if (mc->vsock_restart_needed && machine_current_state(mc) == MACHINE_RUNNING)
                s = "restart-needed";
        return sd_bus_message_append(reply, "s", s);
}

static int property_get_crash_reason(sd_bus *bus, const char *path, const char *interface,
                                     const char *property, sd_bus_message *reply, void *userdata,
                                     sd_bus_error *error) {
        struct machine *mc = userdata;

        (void)bus;
        (void)path;
        (void)interface;
        (void)property;
        (void)error;
        return sd_bus_message_append(reply, "s", mc->crash_reason ? mc->crash_reason : "");
}

static int property_get_uuid(sd_bus *bus, const char *path, const char *interface,
                             const char *property, sd_bus_message *reply, void *userdata,
                             sd_bus_error *error) {
        struct machine *mc = userdata;

        (void)bus;
        (void)path;
        (void)interface;
        (void)property;
        (void)error;
        return sd_bus_message_append(reply, "s", mc->uuid);
}

static int property_get_backend(sd_bus *bus, const char *path, const char *interface,
                                const char *property, sd_bus_message *reply, void *userdata,
                                sd_bus_error *error) {
        struct machine *mc = userdata;

        (void)bus;
        (void)path;
        (void)interface;
        (void)property;
        (void)error;
        return sd_bus_message_append(reply, "s", machine_backend_name(mc));
}

static int property_get_statistics(sd_bus *bus, const char *path, const char *interface,
                                   const char *property, sd_bus_message *reply, void *userdata,
                                   sd_bus_error *error) {
        struct machine *mc = userdata;
        struct vmq_vm_stats st = {0};
        int r;

        (void)bus;
        (void)path;
        (void)interface;
        (void)property;
        (void)error;
        if (mc->vm)
                vmq_vm_get_stats(mc->vm, &st);
        r = sd_bus_message_open_container(reply, 'a', "{st}");
        if (r < 0)
                return r;
        const struct {
                const char *key;
                uint64_t value;
        } items[] = {
                {"exits", st.exits},           {"sent", st.sent},
                {"posted", st.posted},         {"received", st.received},
                {"bytes_sent", st.bytes_sent}, {"copies", st.copies},
                {"flips", st.flips},           {"shares", st.shares},
                {"kicks", st.kicks},           {"errors", st.errors},
        };
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(items); i++) {
                r = sd_bus_message_append(reply, "{st}", items[i].key, items[i].value);
                if (r < 0)
                        return r;
        }
        if (mc->vsock_cid) {
                /* the vsock device's, since the device last joined the
                 * switch (zeros while no QEMU runs it) */
                struct vmq_vsock_stats vs;
                vsock_device_stats(mc, &vs);
                const struct {
                        const char *key;
                        uint64_t value;
                } vitems[] = {
                        {"vsock_packets", vs.packets},     {"vsock_forged", vs.forged},
                        {"vsock_malformed", vs.malformed}, {"vsock_refused", vs.refused},
                        {"vsock_resets", vs.resets},       {"vsock_backlogged", vs.backlogged},
                        {"vsock_dropped", vs.dropped},     {"vsock_bad_buffers", vs.bad_buffers},
                };
                for (size_t i = 0; i < VMQ_ARRAY_SIZE(vitems); i++) {
                        r = sd_bus_message_append(reply, "{st}", vitems[i].key, vitems[i].value);
                        if (r < 0)
                                return r;
                }
        }
        return sd_bus_message_close_container(reply);
}

/* Every method answers with a documented error (vmqd/bus-error.h). */
VMQD_BUS_CHECKED(method_start)
VMQD_BUS_CHECKED(method_stop)
VMQD_BUS_CHECKED(method_destroy)
VMQD_BUS_CHECKED(method_undefine)
VMQD_BUS_CHECKED(method_read_console)

const sd_bus_vtable machine_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", NULL, offsetof(struct machine, name),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("UUID", "s", property_get_uuid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Image", "s", NULL, offsetof(struct machine, image),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Backend", "s", property_get_backend, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Domain", "s", NULL, offsetof(struct machine, domain),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Memory", "t", NULL, offsetof(struct machine, memory),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("VCPUs", "u", NULL, offsetof(struct machine, vcpus),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("QueueDepth", "u", NULL, offsetof(struct machine, queue_depth),
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Persistent", "b", bus_property_get_bool,
                        offsetof(struct machine, persistent), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Autostart", "b", bus_property_get_bool,
                        offsetof(struct machine, autostart), SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Id", "u", NULL, offsetof(struct machine, id),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("State", "s", property_get_state, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ExitCode", "i", NULL, offsetof(struct machine, exit_code),
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("CrashReason", "s", property_get_crash_reason, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Statistics", "a{st}", property_get_statistics, 0, 0),
        SD_BUS_PROPERTY("VsockCID", "u", property_get_vsock_cid, 0, 0),
        SD_BUS_PROPERTY("VsockState", "s", property_get_vsock_state, 0, 0),
        SD_BUS_PROPERTY("VsockSocket", "s", property_get_vsock_socket, 0,
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("VsockHostSocket", "s", property_get_vsock_socket, 0,
                        SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_ARGS("Start", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_start_checked,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Stop", SD_BUS_ARGS("u", timeout_sec), SD_BUS_NO_RESULT,
                                method_stop_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Destroy", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT, method_destroy_checked,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Undefine", SD_BUS_NO_ARGS, SD_BUS_NO_RESULT,
                                method_undefine_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ReadConsole", SD_BUS_ARGS("t", offset),
                                SD_BUS_RESULT("ay", data, "t", next_offset),
                                method_read_console_checked, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int machine_object_find(sd_bus *bus, const char *path, const char *interface, void *userdata,
                        void **found, sd_bus_error *error) {
        _cleanup_free_ char *name = NULL;
        struct manager *m = userdata;
        struct machine *mc;
        int r;

        (void)bus;
        (void)interface;
        (void)error;
        r = sd_bus_path_decode(path, VMQ_BUS_MACHINE_PREFIX, &name);
        if (r <= 0)
                return r;
        mc = manager_find_machine(m, name);
        if (!mc)
                return 0;
        *found = mc;
        return 1;
}

int machine_node_enumerator(sd_bus *bus, const char *path, void *userdata, char ***nodes,
                            sd_bus_error *error) {
        struct manager *m = userdata;
        char **l;
        size_t i = 0;

        (void)bus;
        (void)path;
        (void)error;
        l = calloc(m->n_machines + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (struct machine *mc = m->machines; mc; mc = mc->next) {
                l[i] = strdup(mc->path);
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
