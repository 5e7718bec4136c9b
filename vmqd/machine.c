/* SPDX-License-Identifier: MIT */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/vmq-bus.h"
#include "core/util.h"
#include "vmqd/backend.h"
#include "vmqd/channel.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"
#include "vmqd/vsock-bridge.h"

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

int machine_new(struct manager *m, const struct vmqd_machine_def *def, bool persistent,
                struct machine **ret) {
        struct machine *mc;
        int r;

        if (manager_find_machine(m, def->name) || manager_find_machine_by_uuid(m, def->uuid))
                return -EEXIST;

        mc = calloc(1, sizeof(*mc));
        if (!mc)
                return -ENOMEM;
        mc->manager = m;
        /* The one place where the kind of a machine is decided. */
        mc->backend = def->domain ? &libvirt_backend : &kvm_backend;
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
        mc->rx_size = def->rx_size;
        mc->vsock_cid = def->vsock_cid;
        mc->autostart = def->autostart;
        mc->persistent = persistent || def->autostart;
        mc->state = MACHINE_DEFINED;
        mc->crash_reason = "";
        r = sd_bus_path_encode(VMQ_BUS_MACHINE_PREFIX, mc->name, &mc->path);
        if (r < 0)
                goto fail;
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

void machine_link(struct machine *mc) {
        struct manager *m = mc->manager;

        assert(!mc->listed);
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
        mc->listed = true;
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
        vsock_bridge_free(mc);
        mc->backend->detach(mc);
        /* Whoever waits for a Stop gets it: the machine is gone. */
        while (mc->stops) {
                struct stop_request *s = mc->stops;
                mc->stops = s->next;
                (void)sd_bus_reply_method_return(s->call, NULL);
                stop_request_free(s);
        }
        if (mc->listed) {
                if (mc->prev)
                        mc->prev->next = mc->next;
                else if (m->machines == mc)
                        m->machines = mc->next;
                if (mc->next)
                        mc->next->prev = mc->prev;
                m->n_machines--;
        }
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
        /* A micro-VM has an image and no domain, an adopted domain the
         * other way round ("" stands for none in the object). */
        ret->image = mc->image[0] ? mc->image : NULL;
        ret->domain = mc->domain[0] ? mc->domain : NULL;
        ret->rx_size = mc->rx_size;
        ret->vsock_cid = mc->vsock_cid;
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

const char *machine_backend_name(const struct machine *mc) {
        return mc->backend->name;
}

enum machine_state machine_current_state(const struct machine *mc) {
        return mc->backend->state(mc);
}

uint32_t machine_current_id(const struct machine *mc) {
        if (machine_current_state(mc) != MACHINE_RUNNING)
                return 0;
        return mc->backend->id(mc);
}

int machine_current_exit_code(const struct machine *mc) {
        if (machine_current_state(mc) != MACHINE_EXITED)
                return 0;
        return mc->backend->exit_code(mc);
}

const char *machine_current_crash_reason(const struct machine *mc) {
        const char *reason;

        if (machine_current_state(mc) != MACHINE_CRASHED)
                return "";
        reason = mc->backend->crash_reason(mc);
        return reason ? reason : "";
}

bool machine_is_active(const struct machine *mc) {
        return mc->backend->active(mc);
}

int machine_attach(struct machine *mc) {
        return mc->backend->attach ? mc->backend->attach(mc) : 0;
}

int machine_start(struct machine *mc, sd_bus_error *error) {
        if (machine_current_state(mc) == MACHINE_RUNNING)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY,
                                         "Machine '%s' is already running", mc->name);
        if (mc->manager->stopping)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY, "vmqd is shutting down");
        return mc->backend->start(mc, error);
}

int machine_stop(struct machine *mc, sd_bus_error *error) {
        return mc->backend->stop(mc, error);
}

int machine_kill(struct machine *mc, sd_bus_error *error) {
        return mc->backend->kill(mc, error);
}

int machine_forget(struct machine *mc, sd_bus_error *error) {
        return mc->backend->forget ? mc->backend->forget(mc, error) : 0;
}

bool machine_publish(struct machine *mc) {
        struct manager *m = mc->manager;
        enum machine_state s = machine_current_state(mc);
        uint32_t id = machine_current_id(mc);
        int exit_code = machine_current_exit_code(mc);
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
        if (machine_is_active(mc))
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
        if (machine_is_active(mc)) {
                log_notice("Machine '%s' did not shut down in time, stopping it", mc->name);
                (void)machine_kill(mc, NULL);
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
