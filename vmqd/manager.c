/* SPDX-License-Identifier: MIT */
/*
 * The daemon's context and org.vmq1.Manager.
 *
 * Persistent definitions live in m->state, which is written to disk after
 * every change (vmqd_state_save() writes atomically).  A failed save undoes
 * the change in memory and is returned to the caller, so what the bus shows
 * and what a restart restores stay the same.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-id128.h>

#include "bus/vmq-bus.h"
#include "core/elf.h"
#include "core/util.h"
#include "core/vmq-abi.h"
#include "vmqd/channel.h"
#include "vmqd/libvirt.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"

#define MIB (1024ull * 1024ull)

int manager_new(struct manager **ret) {
        struct manager *m;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        vmqd_config_init(&m->config);
        m->corrupt_state_file = strdup("");
        m->runtime_dir = strdup("/run/vmq");
        if (!m->corrupt_state_file || !m->runtime_dir) {
                vmqd_config_done(&m->config);
                free(m->corrupt_state_file);
                free(m->runtime_dir);
                free(m);
                return -ENOMEM;
        }
        *ret = m;
        return 0;
}

struct manager *manager_free(struct manager *m) {
        if (!m)
                return NULL;
        m->owner_slot = sd_bus_slot_unref(m->owner_slot);
        m->stop_timer = sd_event_source_disable_unref(m->stop_timer);
        while (m->channels)
                channel_free(m->channels);
        while (m->machines)
                machine_free(m->machines);
        libvirt_teardown(m);
        if (m->bus) {
                (void)sd_bus_flush(m->bus);
                m->bus = sd_bus_close_unref(m->bus);
        }
        m->monitor_source = sd_event_source_disable_unref(m->monitor_source);
        m->monitor = vmq_monitor_free(m->monitor);
        vmqd_state_done(&m->state);
        vmqd_config_done(&m->config);
        free(m->corrupt_state_file);
        free(m->runtime_dir);
        m->event = sd_event_unref(m->event);
        free(m);
        return NULL;
}

struct machine *manager_find_machine(struct manager *m, const char *name) {
        for (struct machine *mc = m->machines; mc; mc = mc->next)
                if (strcmp(mc->name, name) == 0)
                        return mc;
        return NULL;
}

struct channel *manager_find_channel(struct manager *m, uint32_t id) {
        for (struct channel *c = m->channels; c; c = c->next)
                if (c->id == id)
                        return c;
        return NULL;
}

size_t manager_count_running(struct manager *m) {
        size_t n = 0;
        for (struct machine *mc = m->machines; mc; mc = mc->next)
                n += machine_current_state(mc) == MACHINE_RUNNING;
        return n;
}

/* Micro-VMs only: vmqd's shutdown waits for these, never for a domain. */
static size_t count_running_kvm(struct manager *m) {
        size_t n = 0;
        for (struct machine *mc = m->machines; mc; mc = mc->next)
                n += mc->backend == MACHINE_BACKEND_KVM &&
                     machine_current_state(mc) == MACHINE_RUNNING;
        return n;
}

size_t manager_count_open_channels(struct manager *m) {
        size_t n = 0;
        for (struct channel *c = m->channels; c; c = c->next)
                n += c->open;
        return n;
}

int manager_save_state(struct manager *m) {
        int r = vmqd_state_save(m->config.state_dir, &m->state);
        if (r < 0)
                return log_error_errno(r, "Cannot save the state in '%s': %m", m->config.state_dir);
        return 0;
}

static int save_error(struct manager *m, int r, sd_bus_error *error) {
        return sd_bus_error_set_errnof(error, -r, "Cannot save the state in '%s': %s",
                                       m->config.state_dir, strerror(-r));
}

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

/* ---- keeping the bus in step with the core ---------------------------------- */

void manager_process_monitor(struct manager *m) {
        uint64_t v;

        /* Reset the event fd first: whatever happens after this wakes us
         * again. */
        if (m->monitor)
                (void)!read(vmq_monitor_event_fd(m->monitor), &v, sizeof(v));

        for (struct machine *mc = m->machines; mc; mc = mc->next) {
                if (machine_publish(mc) && mc->state != MACHINE_RUNNING) {
                        /* A channel needs running ends: its peers get CLOSE. */
                        for (struct channel *c = m->channels; c; c = c->next)
                                if (channel_has_end(c, mc->name))
                                        channel_close(c);
                }
                machine_complete_stops(mc);
        }
        for (struct channel *c = m->channels; c; c = c->next)
                (void)channel_publish(c);
        for (struct channel *c = m->channels; c; c = c->next)
                channel_dispatch_receives(c);

        if (m->stopping && count_running_kvm(m) == 0)
                (void)sd_event_exit(m->event, 0);
}

static int on_monitor_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void)s;
        (void)fd;
        (void)revents;
        manager_process_monitor(userdata);
        return 0;
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

/* ---- machines and channels ------------------------------------------------- */

void manager_remove_closed_channels(struct manager *m, const char *name) {
        struct channel *c = m->channels;

        while (c) {
                struct channel *next = c->next;
                (void)channel_publish(c);
                if (!c->open && channel_has_end(c, name)) {
                        channel_send_removed(c);
                        channel_free(c);
                }
                c = next;
        }
}

int manager_start_machine(struct manager *m, struct machine *mc, sd_bus_error *error) {
        int r;

        if (machine_current_state(mc) == MACHINE_RUNNING)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY,
                                         "Machine '%s' is already running", mc->name);
        manager_remove_closed_channels(m, mc->name);
        r = machine_start(mc, error);
        manager_process_monitor(m);
        if (r < 0)
                return r;
        manager_open_persistent_channels(m);
        return 0;
}

static bool end_is_up(struct manager *m, const char *name) {
        struct machine *mc;

        if (strcmp(name, VMQ_BUS_HOST_END) == 0)
                return true;
        mc = manager_find_machine(m, name);
        return mc && machine_current_state(mc) == MACHINE_RUNNING;
}

static struct channel *find_open_persistent(struct manager *m, const char *a, const char *b) {
        for (struct channel *c = m->channels; c; c = c->next)
                if (c->persistent && c->open && strcmp(c->end_a, a) == 0 &&
                    strcmp(c->end_b, b) == 0)
                        return c;
        return NULL;
}

void manager_open_persistent_channels(struct manager *m) {
        if (m->stopping)
                return;
        for (size_t i = 0; i < m->state.n_channels; i++) {
                const struct vmqd_channel_def *d = &m->state.channels[i];
                sd_bus_error error = SD_BUS_ERROR_NULL;
                struct channel_params p = {
                        .depth = d->depth ? d->depth : m->config.default_host_depth,
                        .mode = d->mode ? d->mode : m->config.default_mode,
                        .transfer = d->transfer ? d->transfer : m->config.default_transfer,
                        .persistent = true,
                };
                struct channel *c;
                int r;

                if (!end_is_up(m, d->end_a) || !end_is_up(m, d->end_b))
                        continue;
                if (find_open_persistent(m, d->end_a, d->end_b))
                        continue;
                r = channel_open(m, d->end_a, d->end_b, &p, &error, &c);
                if (r < 0) {
                        log_warning_errno(r, "Cannot reopen the channel from '%s' to '%s': %s",
                                          d->end_a, d->end_b, error.message ?: "%m");
                        sd_bus_error_free(&error);
                        continue;
                }
                channel_send_new(c);
        }
}

/* A copy of a channel definition, to put back if a save fails. */
static int channel_def_copy(const struct vmqd_channel_def *d, struct vmqd_channel_def *ret) {
        struct vmqd_channel_def c = {
                .end_a = strdup(d->end_a),
                .end_b = strdup(d->end_b),
                .depth = d->depth,
                .mode = d->mode ? strdup(d->mode) : NULL,
                .transfer = d->transfer ? strdup(d->transfer) : NULL,
        };
        if (!c.end_a || !c.end_b || (d->mode && !c.mode) || (d->transfer && !c.transfer)) {
                free(c.end_a);
                free(c.end_b);
                free(c.mode);
                free(c.transfer);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

static void channel_defs_free(struct vmqd_channel_def *defs, size_t n) {
        for (size_t i = 0; i < n; i++) {
                free(defs[i].end_a);
                free(defs[i].end_b);
                free(defs[i].mode);
                free(defs[i].transfer);
        }
        free(defs);
}

int manager_undefine_machine(struct manager *m, struct machine *mc, sd_bus_error *error) {
        struct vmqd_channel_def *removed = NULL;
        size_t n_removed = 0;
        bool changed = false;
        int r;

        if (machine_current_state(mc) == MACHINE_RUNNING)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY,
                                         "Machine '%s' is running; stop it first", mc->name);
        /* The domain stays, without vmq's device (whose socket goes away
         * with vmqd's server: QEMU would refuse to start) and metadata. */
        if (mc->backend == MACHINE_BACKEND_LIBVIRT) {
                r = libvirt_machine_forget(mc, error);
                if (r < 0)
                        return r;
        }

        /* Saved channels that name the machine go with it. */
        removed = calloc(m->state.n_channels + 1, sizeof(*removed));
        if (!removed)
                return -ENOMEM;
        for (size_t i = 0; i < m->state.n_channels;) {
                const struct vmqd_channel_def *d = &m->state.channels[i];
                if (strcmp(d->end_a, mc->name) != 0 && strcmp(d->end_b, mc->name) != 0) {
                        i++;
                        continue;
                }
                r = channel_def_copy(d, &removed[n_removed]);
                if (r < 0)
                        goto undo;
                n_removed++;
                (void)vmqd_state_remove_channel(&m->state, d->end_a, d->end_b);
                changed = true;
        }
        if (vmqd_state_find_machine(&m->state, mc->name)) {
                (void)vmqd_state_remove_machine(&m->state, mc->name);
                changed = true;
        }
        if (changed) {
                r = manager_save_state(m);
                if (r < 0) {
                        r = save_error(m, r, error);
                        goto undo;
                }
        }
        channel_defs_free(removed, n_removed);

        for (struct channel *c = m->channels; c; c = c->next)
                if (channel_has_end(c, mc->name))
                        channel_close(c);
        manager_remove_closed_channels(m, mc->name);
        log_info("Machine '%s' undefined", mc->name);
        machine_send_removed(mc);
        machine_free(mc);
        return 0;

undo:
        if (mc->persistent && !vmqd_state_find_machine(&m->state, mc->name)) {
                struct vmqd_machine_def def;
                machine_to_def(mc, &def);
                (void)vmqd_state_add_machine(&m->state, &def);
        }
        for (size_t i = 0; i < n_removed; i++)
                (void)vmqd_state_add_channel(&m->state, &removed[i]);
        channel_defs_free(removed, n_removed);
        return r;
}

int manager_close_channel(struct manager *m, struct channel *c, sd_bus_error *error) {
        int r;

        /* The saved definition goes unless it belongs to another, open
         * channel object (this one being an old, closed one). */
        if (c->persistent && (!find_open_persistent(m, c->end_a, c->end_b) ||
                              find_open_persistent(m, c->end_a, c->end_b) == c)) {
                struct vmqd_channel_def copy;
                bool found = false;

                for (size_t i = 0; i < m->state.n_channels; i++)
                        if (strcmp(m->state.channels[i].end_a, c->end_a) == 0 &&
                            strcmp(m->state.channels[i].end_b, c->end_b) == 0) {
                                r = channel_def_copy(&m->state.channels[i], &copy);
                                if (r < 0)
                                        return r;
                                found = true;
                                break;
                        }
                if (found) {
                        (void)vmqd_state_remove_channel(&m->state, c->end_a, c->end_b);
                        r = manager_save_state(m);
                        if (r < 0)
                                (void)vmqd_state_add_channel(&m->state, &copy);
                        free(copy.end_a);
                        free(copy.end_b);
                        free(copy.mode);
                        free(copy.transfer);
                        if (r < 0)
                                return save_error(m, r, error);
                }
        }

        channel_close(c);
        (void)channel_publish(c);
        log_info("Channel %u closed and removed", c->id);
        channel_send_removed(c);
        channel_free(c);
        return 0;
}

/* ---- start-up and shutdown --------------------------------------------------- */

static int restore_state(struct manager *m) {
        _cleanup_free_ char *moved_to = NULL, *message = NULL;
        int r;

        r = vmqd_state_load(m->config.state_dir, &m->state, &moved_to, &message);
        if (r < 0)
                return log_error_errno(r, "Cannot load the state from '%s': %s",
                                       m->config.state_dir, message ? message : "%m");
        if (r > 0) {
                log_error("The state in '%s' was corrupt (%s); moved it to '%s' and started empty",
                          m->config.state_dir, message ? message : "unreadable",
                          moved_to ? moved_to : "?");
                if (moved_to) {
                        free(m->corrupt_state_file);
                        m->corrupt_state_file = VMQ_TAKE_PTR(moved_to);
                }
                (void)sd_notifyf(false, "STATUS=Corrupt state file moved to '%s'",
                                 m->corrupt_state_file);
        }

        for (size_t i = 0; i < m->state.n_machines; i++) {
                const struct vmqd_machine_def *d = &m->state.machines[i];
                struct machine *mc;

                if (!d->name || !vmqd_name_is_valid(d->name) || (!d->image && !d->domain)) {
                        log_warning("Skipping a saved machine with an invalid name '%s'",
                                    d->name ? d->name : "");
                        continue;
                }
                r = machine_new(m, d, true, &mc);
                if (r < 0) {
                        log_warning_errno(r, "Cannot restore machine '%s': %m", d->name);
                        continue;
                }
                if (mc->backend == MACHINE_BACKEND_LIBVIRT) {
                        /* The server must be up before the domain starts:
                         * QEMU refuses to start without it. */
                        r = libvirt_machine_attach(mc);
                        if (r < 0) {
                                log_warning_errno(r,
                                                  "Cannot serve the region of machine '%s' "
                                                  "(domain '%s') under '%s': %m",
                                                  mc->name, mc->domain, m->runtime_dir);
                                machine_free(mc);
                        }
                }
        }
        return 0;
}

static void restore_running(struct manager *m) {
        for (struct machine *mc = m->machines; mc; mc = mc->next) {
                sd_bus_error error = SD_BUS_ERROR_NULL;
                int r;

                if (!mc->autostart)
                        continue;
                r = manager_start_machine(m, mc, &error);
                if (r < 0)
                        log_error_errno(r, "Cannot autostart machine '%s': %s", mc->name,
                                        error.message ?: "%m");
                sd_bus_error_free(&error);
        }
        manager_open_persistent_channels(m);
}

int manager_startup(struct manager *m) {
        struct vmq_monitor_config mcfg;
        int r;

        vmq_monitor_config_init(&mcfg);
        mcfg.pool_4k_frames = m->config.pool_memory / VMQ_PAGE_SIZE;
        mcfg.pool_2m_frames = m->config.hugetlb ? m->config.hugetlb_frames : 0;
        mcfg.require_huge = false;
        memcpy(mcfg.host_uuid, m->host_uuid, sizeof(mcfg.host_uuid));
        r = vmq_monitor_new(&mcfg, &m->monitor);
        if (r < 0)
                return log_error_errno(r, "Cannot start the monitor (/dev/kvm): %m");
        if (m->config.hugetlb && m->config.hugetlb_frames > 0 && !vmq_monitor_has_huge(m->monitor))
                log_notice("Cannot have %u hugetlb frames of 2 MiB; running without them",
                           m->config.hugetlb_frames);

        r = sd_event_add_io(m->event, &m->monitor_source, vmq_monitor_event_fd(m->monitor), EPOLLIN,
                            on_monitor_event, m);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the monitor's event fd: %m");
        /* Ahead of the bus: a call that arrives after a guest changed state
         * sees the change already published. */
        r = sd_event_source_set_priority(m->monitor_source, SD_EVENT_PRIORITY_IMPORTANT);
        if (r < 0)
                return log_error_errno(r, "Cannot set the monitor's priority: %m");

        r = restore_state(m);
        if (r < 0)
                return r;
        r = manager_bus_register(m);
        if (r < 0)
                return r;
        r = libvirt_setup(m);
        if (r < 0)
                return r;
        restore_running(m);
        return 0;
}

static void force_stop_all(struct manager *m) {
        for (struct machine *mc = m->machines; mc; mc = mc->next)
                if (mc->backend == MACHINE_BACKEND_KVM &&
                    machine_current_state(mc) == MACHINE_RUNNING) {
                        log_notice("Stopping machine '%s' by force", mc->name);
                        (void)machine_kill(mc);
                }
}

static int on_shutdown_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        struct manager *m = userdata;

        (void)s;
        (void)usec;
        force_stop_all(m);
        manager_process_monitor(m);
        return 0;
}

void manager_begin_shutdown(struct manager *m) {
        size_t running;
        int r;

        if (m->stopping) {
                /* Asked twice: don't wait. */
                force_stop_all(m);
                manager_process_monitor(m);
                return;
        }
        m->stopping = true;
        running = count_running_kvm(m);
        log_info("Shutting down, stopping %zu machine%s", running, running == 1 ? "" : "s");
        (void)sd_notifyf(false, "STOPPING=1\nSTATUS=Stopping %zu machines", running);

        /* libvirt domains keep running without vmqd (their channels close). */
        for (struct machine *mc = m->machines; mc; mc = mc->next) {
                if (mc->backend != MACHINE_BACKEND_KVM ||
                    machine_current_state(mc) != MACHINE_RUNNING)
                        continue;
                if (vmq_vm_shutdown(mc->vm) < 0)
                        (void)machine_kill(mc);
        }
        r = sd_event_add_time_relative(m->event, &m->stop_timer, CLOCK_MONOTONIC,
                                       (uint64_t)m->config.stop_timeout_sec * 1000000u, 0,
                                       on_shutdown_timeout, m);
        if (r < 0) {
                log_warning_errno(r, "Cannot arm the shutdown timer, stopping at once: %m");
                force_stop_all(m);
        }
        manager_process_monitor(m);
}

/* ---- org.vmq1.Manager ------------------------------------------------------ */

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

static int method_create_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct manager *m = userdata;
        struct machine_options o = {
                .memory = m->config.default_memory,
                .vcpus = m->config.default_vcpus,
                .queue_depth = m->config.default_queue_depth,
        };
        struct vmqd_machine_def def = {0};
        _cleanup_free_ char *path = NULL;
        const char *name, *image;
        struct machine *mc;
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
        if (manager_find_machine(m, name))
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
        if (!path) {
                machine_free(mc);
                return -ENOMEM;
        }
        /* ... and one that is not a guest image vmq can load: the same
         * checks as at start, so that `create` fails where the mistake is. */
        {
                void *data = NULL;
                size_t size = 0;
                struct vmq_elf_info info;
                r = vmq_read_file(path, 64u * 1024 * 1024, &data, &size);
                if (r == 0) {
                        r = vmq_elf_parse(data, size, VMQ_IMAGE_GPA,
                                          def.memory - (uint64_t)def.vcpus * VMQ_STACK_SIZE, &info);
                        free(data);
                        if (r < 0) {
                                machine_free(mc);
                                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                                         "Image '%s' is not a vmq guest image: %s",
                                                         path, strerror(-r));
                        }
                }
        }
        if (r < 0) {
                machine_free(mc);
                if (r == -ENOENT)
                        return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_SUCH_IMAGE,
                                                 "Image '%s' not found", path);
                return sd_bus_error_set_errnof(error, -r, "Cannot read image '%s': %s", path,
                                               strerror(-r));
        }

        if (o.start) {
                r = machine_start(mc, error);
                if (r < 0) {
                        machine_free(mc);
                        return r;
                }
        }
        if (mc->persistent) {
                r = vmqd_state_add_machine(&m->state, &def);
                if (r >= 0) {
                        r = manager_save_state(m);
                        if (r < 0)
                                (void)vmqd_state_remove_machine(&m->state, name);
                }
                if (r < 0) {
                        machine_free(mc);
                        return save_error(m, r, error);
                }
        }

        log_info("Machine '%s' created (image '%s')", mc->name, mc->image);
        machine_send_new(mc);
        manager_process_monitor(m);
        if (o.start)
                manager_open_persistent_channels(m);
        return sd_bus_reply_method_return(message, "o", mc->path);
}

static int method_start_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct machine *mc;
        int r = read_machine(message, userdata, &mc, error);
        if (r < 0)
                return r;
        return bus_machine_method_start(message, mc, error);
}

static int method_stop_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct machine *mc;
        int r = read_machine(message, userdata, &mc, error);
        if (r < 0)
                return r;
        return bus_machine_method_stop(message, mc, error);
}

static int method_destroy_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct machine *mc;
        int r = read_machine(message, userdata, &mc, error);
        if (r < 0)
                return r;
        return bus_machine_method_destroy(message, mc, error);
}

static int method_undefine_machine(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct machine *mc;
        int r = read_machine(message, userdata, &mc, error);
        if (r < 0)
                return r;
        return bus_machine_method_undefine(message, mc, error);
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
        if (p.persistent) {
                for (size_t i = 0; i < m->state.n_channels; i++) {
                        const struct vmqd_channel_def *d = &m->state.channels[i];
                        if ((strcmp(d->end_a, end_a) == 0 && strcmp(d->end_b, end_b) == 0) ||
                            (strcmp(d->end_a, end_b) == 0 && strcmp(d->end_b, end_a) == 0))
                                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY,
                                                         "A persistent channel between '%s' "
                                                         "and '%s' exists already",
                                                         end_a, end_b);
                }
        }

        r = channel_open(m, end_a, end_b, &p, error, &c);
        if (r < 0)
                return r;

        if (p.persistent) {
                struct vmqd_channel_def def = {
                        .end_a = (char *)end_a,
                        .end_b = (char *)end_b,
                        .depth = p.depth,
                        .mode = (char *)p.mode,
                        .transfer = (char *)p.transfer,
                };
                r = vmqd_state_add_channel(&m->state, &def);
                if (r >= 0) {
                        r = manager_save_state(m);
                        if (r < 0)
                                (void)vmqd_state_remove_channel(&m->state, end_a, end_b);
                }
                if (r < 0) {
                        channel_close(c);
                        channel_free(c);
                        return save_error(m, r, error);
                }
        }

        channel_send_new(c);
        return sd_bus_reply_method_return(message, "uo", c->id, c->path);
}

static int method_close_channel(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct channel *c;
        int r = read_channel(message, userdata, &c, error);
        if (r < 0)
                return r;
        return bus_channel_method_close(message, c, error);
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
        uint64_t tag;
        int fd, seals, r;

        r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        r = read_channel(message, m, &c, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(message, "ht", &fd, &tag);
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
                return sd_bus_error_set_errnof(error, errno, "Cannot stat the memfd: %m");
        if (!S_ISREG(st.st_mode))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_FD,
                                         "The file descriptor is not a memfd");
        if ((uint64_t)st.st_size > m->config.max_message)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_TOO_LARGE,
                                         "%jd bytes are more than the limit of %" PRIu64,
                                         (intmax_t)st.st_size, m->config.max_message);
        if (st.st_size > 0) {
                data = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
                if (data == MAP_FAILED)
                        return sd_bus_error_set_errnof(error, errno, "Cannot map the memfd: %m");
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
        return channel_receive(c, message, timeout, error);
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

        SD_BUS_METHOD_WITH_ARGS(
                "CreateMachine", SD_BUS_ARGS("s", name, "s", image, "a{sv}", options),
                SD_BUS_RESULT("o", machine), method_create_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("AdoptDomain", SD_BUS_ARGS("s", domain, "a{sv}", options),
                                SD_BUS_RESULT("o", machine), libvirt_method_adopt_domain,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StartMachine", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
                                method_start_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("StopMachine", SD_BUS_ARGS("s", name, "u", timeout_sec),
                                SD_BUS_NO_RESULT, method_stop_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("DestroyMachine", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
                                method_destroy_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("UndefineMachine", SD_BUS_ARGS("s", name), SD_BUS_NO_RESULT,
                                method_undefine_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListMachines", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ssuso)", machines),
                                method_list_machines, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetMachine", SD_BUS_ARGS("s", name), SD_BUS_RESULT("o", machine),
                                method_get_machine, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("OpenChannel",
                                SD_BUS_ARGS("s", end_a, "s", end_b, "a{sv}", options),
                                SD_BUS_RESULT("u", id, "o", channel), method_open_channel,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("CloseChannel", SD_BUS_ARGS("u", id), SD_BUS_NO_RESULT,
                                method_close_channel, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("ListChannels", SD_BUS_NO_ARGS, SD_BUS_RESULT("a(ussbo)", channels),
                                method_list_channels, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetChannel", SD_BUS_ARGS("u", id), SD_BUS_RESULT("o", channel),
                                method_get_channel, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Send", SD_BUS_ARGS("u", channel, "ay", data, "t", tag),
                                SD_BUS_NO_RESULT, method_send, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("SendFd", SD_BUS_ARGS("u", channel, "h", fd, "t", tag),
                                SD_BUS_NO_RESULT, method_send_fd, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("Receive", SD_BUS_ARGS("u", channel, "t", timeout_usec),
                                SD_BUS_RESULT("a{sv}", message), method_receive,
                                SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_ARGS("GetStatistics", SD_BUS_NO_ARGS, SD_BUS_RESULT("a{sv}", stats),
                                method_get_statistics, SD_BUS_VTABLE_UNPRIVILEGED),

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
