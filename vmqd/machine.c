/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-id128.h>

#include "bus/vmq-bus.h"
#include "core/util.h"
#include "vmqd/channel.h"
#include "vmqd/libvirt.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"

struct stop_request {
        struct machine *machine;
        struct stop_request *next;
        sd_bus_message *call;
        sd_event_source *timer;
};

static const char *const state_names[MACHINE_STATE_MAX] = {
        [MACHINE_DEFINED] = "defined", [MACHINE_RUNNING] = "running", [MACHINE_EXITED] = "exited",
        [MACHINE_STOPPED] = "stopped", [MACHINE_CRASHED] = "crashed",
};

const char *machine_state_to_string(enum machine_state s) {
        if ((unsigned)s >= MACHINE_STATE_MAX)
                return "unknown";
        return state_names[s];
}

const char *machine_backend_to_string(enum machine_backend b) {
        return b == MACHINE_BACKEND_LIBVIRT ? "libvirt" : "kvm";
}

int machine_new(struct manager *m, const struct vmqd_machine_def *def, bool persistent,
                struct machine **ret) {
        struct machine *mc;
        int r;

        if (manager_find_machine(m, def->name))
                return -EEXIST;

        mc = calloc(1, sizeof(*mc));
        if (!mc)
                return -ENOMEM;
        mc->manager = m;
        mc->name = strdup(def->name);
        mc->image = strdup(def->image ? def->image : "");
        mc->domain = strdup(def->domain ? def->domain : "");
        mc->args = def->args && def->args[0] ? strdup(def->args) : NULL;
        if (!mc->name || !mc->image || !mc->domain || (def->args && def->args[0] && !mc->args)) {
                r = -ENOMEM;
                goto fail;
        }
        snprintf(mc->uuid, sizeof(mc->uuid), "%s", def->uuid);
        mc->memory = def->memory;
        mc->vcpus = def->vcpus;
        mc->queue_depth = def->queue_depth;
        mc->huge_memory = def->huge_memory;
        mc->backend = def->domain ? MACHINE_BACKEND_LIBVIRT : MACHINE_BACKEND_KVM;
        mc->rx_size = def->rx_size;
        mc->autostart = def->autostart;
        mc->persistent = persistent || def->autostart;
        mc->state = MACHINE_DEFINED;
        mc->crash_reason = "";
        r = sd_bus_path_encode(VMQ_BUS_MACHINE_PREFIX, mc->name, &mc->path);
        if (r < 0)
                goto fail;

        /* Append, so listings keep creation order. */
        if (!m->machines) {
                m->machines = mc;
        } else {
                struct machine *last = m->machines;
                while (last->next)
                        last = last->next;
                last->next = mc;
                mc->prev = last;
        }
        m->n_machines++;
        *ret = mc;
        return 0;
fail:
        free(mc->name);
        free(mc->image);
        free(mc->domain);
        free(mc->args);
        free(mc->path);
        free(mc);
        return r;
}

static void stop_request_free(struct stop_request *s) {
        sd_event_source_disable_unref(s->timer);
        sd_bus_message_unref(s->call);
        free(s);
}

struct machine *machine_free(struct machine *mc) {
        struct manager *m;

        if (!mc)
                return NULL;
        m = mc->manager;
        libvirt_machine_detach(mc);
        if (mc->vm) {
                vmq_vm_destroy(mc->vm);
                mc->vm = NULL;
        }
        /* Whoever waits for a Stop gets it: the machine is gone. */
        while (mc->stops) {
                struct stop_request *s = mc->stops;
                mc->stops = s->next;
                (void)sd_bus_reply_method_return(s->call, NULL);
                stop_request_free(s);
        }
        if (mc->prev)
                mc->prev->next = mc->next;
        else if (m->machines == mc)
                m->machines = mc->next;
        if (mc->next)
                mc->next->prev = mc->prev;
        m->n_machines--;
        free(mc->name);
        free(mc->image);
        free(mc->domain);
        free(mc->args);
        free(mc->path);
        free(mc);
        return NULL;
}

void machine_to_def(const struct machine *mc, struct vmqd_machine_def *ret) {
        memset(ret, 0, sizeof(*ret));
        ret->name = mc->name;
        ret->image = mc->backend == MACHINE_BACKEND_LIBVIRT ? NULL : mc->image;
        ret->domain = mc->backend == MACHINE_BACKEND_LIBVIRT ? mc->domain : NULL;
        ret->rx_size = mc->rx_size;
        snprintf(ret->uuid, sizeof(ret->uuid), "%s", mc->uuid);
        ret->memory = mc->memory;
        ret->vcpus = mc->vcpus;
        ret->queue_depth = mc->queue_depth;
        ret->huge_memory = mc->huge_memory;
        ret->args = mc->args;
        ret->autostart = mc->autostart;
}

char *machine_image_path(const struct machine *mc) {
        char *p = NULL;

        if (mc->image[0] == '/')
                return strdup(mc->image);
        if (asprintf(&p, "%s/%s.elf", mc->manager->config.image_dir, mc->image) < 0)
                return NULL;
        return p;
}

enum machine_state machine_current_state(const struct machine *mc) {
        if (mc->backend == MACHINE_BACKEND_LIBVIRT)
                return libvirt_machine_state(mc);
        if (!mc->vm)
                return MACHINE_DEFINED;
        switch (vmq_vm_state(mc->vm)) {
        case VMQ_VM_RUNNING:
                return MACHINE_RUNNING;
        case VMQ_VM_EXITED:
                return MACHINE_EXITED;
        case VMQ_VM_STOPPED:
                return MACHINE_STOPPED;
        case VMQ_VM_CRASHED:
                return MACHINE_CRASHED;
        default:
                return MACHINE_DEFINED;
        }
}

uint32_t machine_current_id(const struct machine *mc) {
        if (machine_current_state(mc) != MACHINE_RUNNING)
                return 0;
        return vmq_vm_id(mc->vm);
}

const char *machine_current_crash_reason(const struct machine *mc) {
        const char *reason = NULL;

        if (machine_current_state(mc) != MACHINE_CRASHED)
                return "";
        if (mc->backend == MACHINE_BACKEND_LIBVIRT)
                reason = libvirt_machine_crash_reason(mc);
        else if (mc->vm)
                reason = vmq_vm_crash_reason(mc->vm);
        return reason ? reason : "";
}

void machine_drop_vm(struct machine *mc) {
        /* A libvirt machine's region VM belongs to its link. */
        if (!mc->vm || mc->backend == MACHINE_BACKEND_LIBVIRT)
                return;
        vmq_vm_destroy(mc->vm);
        mc->vm = NULL;
}

static int start_error(struct machine *mc, const char *path, int r, sd_bus_error *error) {
        switch (r) {
        case -ENOENT:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_SUCH_IMAGE,
                                         "Image '%s' of machine '%s' not found", path, mc->name);
        case -ENOEXEC:
        case -ERANGE:
        case -EOVERFLOW:
        case -EFBIG:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                         "Image '%s' of machine '%s' refused: %s", path, mc->name,
                                         strerror(-r));
        case -EINVAL:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Invalid configuration for machine '%s'", mc->name);
        case -ENOMEM:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_MEMORY,
                                         "Not enough memory to start machine '%s'", mc->name);
        case -EEXIST:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY,
                                         "Machine '%s' still exists in the monitor", mc->name);
        default:
                return sd_bus_error_set_errnof(error, -r, "Cannot start machine '%s': %s", mc->name,
                                               strerror(-r));
        }
}

int machine_start(struct machine *mc, sd_bus_error *error) {
        struct manager *m = mc->manager;
        _cleanup_free_ char *path = NULL;
        struct vmq_vm_config cfg;
        struct vmq_vm *vm = NULL;
        sd_id128_t uuid;
        int r;

        if (machine_current_state(mc) == MACHINE_RUNNING)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY,
                                         "Machine '%s' is already running", mc->name);
        if (m->stopping)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY, "vmqd is shutting down");
        if (mc->backend == MACHINE_BACKEND_LIBVIRT)
                return libvirt_machine_start(mc, error);

        path = machine_image_path(mc);
        if (!path)
                return sd_bus_error_set_errno(error, ENOMEM);

        /* The old VM goes first: the core wants unique names. */
        machine_drop_vm(mc);

        vmq_vm_config_init(&cfg);
        cfg.name = mc->name;
        if (mc->uuid[0] && sd_id128_from_string(mc->uuid, &uuid) >= 0)
                memcpy(cfg.uuid, uuid.bytes, sizeof(cfg.uuid));
        cfg.ram_size = mc->memory;
        cfg.vcpus = mc->vcpus;
        cfg.queue_depth = mc->queue_depth;
        cfg.huge_size = mc->huge_memory;
        cfg.huge_rx_size = mc->huge_memory;
        cfg.args = mc->args;

        r = vmq_vm_create_from_file(m->monitor, &cfg, path, &vm);
        if (r < 0) {
                log_debug_errno(r, "Cannot create machine '%s' from '%s': %m", mc->name, path);
                return start_error(mc, path, r, error);
        }
        r = vmq_vm_start(vm);
        if (r < 0) {
                vmq_vm_destroy(vm);
                log_debug_errno(r, "Cannot start machine '%s': %m", mc->name);
                return start_error(mc, path, r, error);
        }
        mc->vm = vm;
        log_info("Machine '%s' started (vm %u, image '%s')", mc->name, vmq_vm_id(vm), path);
        return 0;
}

int machine_kill(struct machine *mc) {
        if (mc->backend == MACHINE_BACKEND_LIBVIRT)
                return libvirt_machine_destroy(mc, NULL);
        if (!mc->vm)
                return -ESRCH;
        return vmq_vm_stop(mc->vm);
}

bool machine_publish(struct machine *mc) {
        struct manager *m = mc->manager;
        enum machine_state s = machine_current_state(mc);
        uint32_t id = machine_current_id(mc);
        int exit_code = mc->vm && s == MACHINE_EXITED ? vmq_vm_exit_code(mc->vm) : 0;
        const char *reason = machine_current_crash_reason(mc);
        char *changed[5];
        size_t n = 0;
        bool state_changed = s != mc->state;

        if (!reason)
                reason = "";
        if (state_changed)
                changed[n++] = (char *)"State";
        if (id != mc->id)
                changed[n++] = (char *)"Id";
        if (exit_code != mc->exit_code)
                changed[n++] = (char *)"ExitCode";
        if (strcmp(reason, mc->crash_reason) != 0)
                changed[n++] = (char *)"CrashReason";
        changed[n] = NULL;
        if (n == 0)
                return false;

        mc->state = s;
        mc->id = id;
        mc->exit_code = exit_code;
        mc->crash_reason = reason;

        if (state_changed) {
                if (s == MACHINE_CRASHED)
                        log_warning("Machine '%s' crashed: %s", mc->name, reason);
                else if (s == MACHINE_EXITED)
                        log_info("Machine '%s' exited with code %d", mc->name, exit_code);
                else
                        log_info("Machine '%s' is %s", mc->name, machine_state_to_string(s));
        }

        if (m->bus) {
                (void)sd_bus_emit_properties_changed_strv(m->bus, mc->path, VMQ_BUS_MACHINE_IFACE,
                                                          changed);
                if (state_changed)
                        (void)sd_bus_emit_signal(m->bus, VMQ_BUS_PATH, VMQ_BUS_MANAGER_IFACE,
                                                 "MachineStateChanged", "ss", mc->name,
                                                 machine_state_to_string(s));
        }
        return state_changed;
}

void machine_send_new(struct machine *mc) {
        sd_bus *bus = mc->manager->bus;

        if (!bus)
                return;
        (void)sd_bus_emit_signal(bus, VMQ_BUS_PATH, VMQ_BUS_MANAGER_IFACE, "MachineNew", "so",
                                 mc->name, mc->path);
        (void)sd_bus_emit_object_added(bus, mc->path);
}

void machine_send_removed(struct machine *mc) {
        sd_bus *bus = mc->manager->bus;

        if (!bus)
                return;
        (void)sd_bus_emit_object_removed(bus, mc->path);
        (void)sd_bus_emit_signal(bus, VMQ_BUS_PATH, VMQ_BUS_MANAGER_IFACE, "MachineRemoved", "so",
                                 mc->name, mc->path);
}

void machine_complete_stops(struct machine *mc) {
        if (machine_current_state(mc) == MACHINE_RUNNING || libvirt_machine_domain_active(mc))
                return;
        while (mc->stops) {
                struct stop_request *s = mc->stops;
                mc->stops = s->next;
                (void)sd_bus_reply_method_return(s->call, NULL);
                stop_request_free(s);
        }
}

static int on_stop_timeout(sd_event_source *source, uint64_t usec, void *userdata) {
        struct stop_request *s = userdata;
        struct machine *mc = s->machine;

        (void)source;
        (void)usec;
        if (machine_current_state(mc) == MACHINE_RUNNING || libvirt_machine_domain_active(mc)) {
                log_notice("Machine '%s' did not shut down in time, stopping it", mc->name);
                (void)machine_kill(mc);
        }
        manager_process_monitor(mc->manager);
        return 0;
}

int machine_add_stop_request(struct machine *mc, sd_bus_message *call, uint64_t timeout_usec) {
        struct stop_request *s;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->machine = mc;
        r = sd_event_add_time_relative(mc->manager->event, &s->timer, CLOCK_MONOTONIC, timeout_usec,
                                       0, on_stop_timeout, s);
        if (r < 0) {
                free(s);
                return r;
        }
        s->call = sd_bus_message_ref(call);
        s->next = mc->stops;
        mc->stops = s;
        return 0;
}
