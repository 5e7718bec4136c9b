/* SPDX-License-Identifier: MIT */
/*
 * The daemon's context: machines, channels and the saved state, from
 * start-up to shutdown.  The Manager's bus object is manager-bus.c.
 *
 * Persistent definitions live in m->state, and on disk as the state file
 * (vmqd_state_save() writes atomically).  A change is never made to
 * m->state in place: it is made to a copy, the copy is saved, and only
 * when the save succeeded are the live objects changed and the copy swapped
 * in (manager_state_copy/save/swap).  A failed save thus changes nothing,
 * in memory or on disk, and needs no undo: the caller gets
 * org.vmq1.Error.StateSaveFailed.  When a live change fails after its save
 * (a machine that does not start, a domain that cannot be configured), the
 * untouched m->state is written back (manager_state_revert()), so that the
 * file never keeps what the bus does not show.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <systemd/sd-daemon.h>

#include "bus/vmq-bus.h"
#include "core/util.h"
#include "vmqd/backend.h"
#include "vmqd/channel.h"
#include "vmqd/libvirt.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"
#include "vmqd/vsock-bridge.h"
#include "vmqd/vsock.h"

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
        vsock_service_free(m);
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

struct machine *manager_find_machine_by_uuid(struct manager *m, const char *uuid) {
        for (struct machine *mc = m->machines; mc; mc = mc->next)
                if (vmqd_uuid_equal(mc->uuid, uuid))
                        return mc;
        return NULL;
}

/* The machines whose guests end with vmqd (micro-VMs): its shutdown waits
 * for these, never for a domain. */
static size_t count_running_ending_with_vmqd(struct manager *m) {
        size_t n = 0;
        for (struct machine *mc = m->machines; mc; mc = mc->next)
                n += mc->backend->ends_with_vmqd && machine_current_state(mc) == MACHINE_RUNNING;
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

/* ---- changing the saved state ------------------------------------------------ */

int manager_state_copy(struct manager *m, struct vmqd_state *ret, sd_bus_error *error) {
        int r = vmqd_state_copy(&m->state, ret);
        if (r < 0)
                return sd_bus_error_set_errno(error, -r);
        return 0;
}

int manager_state_save(struct manager *m, const struct vmqd_state *next, sd_bus_error *error) {
        int r = vmqd_state_save(m->config.state_dir, next);
        if (r < 0) {
                log_error_errno(r, "Cannot save the state in '%s': %m", m->config.state_dir);
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_STATE_SAVE_FAILED,
                                         "could not save the state: %s", strerror(-r));
        }
        return 0;
}

void manager_state_swap(struct manager *m, struct vmqd_state *next) {
        vmqd_state_done(&m->state);
        m->state = *next;
        *next = (struct vmqd_state){0};
}

void manager_state_revert(struct manager *m) {
        int r = vmqd_state_save(m->config.state_dir, &m->state);
        if (r < 0)
                log_error_errno(r,
                                "Cannot write back the state in '%s' after a failed change: %m; "
                                "it names what vmqd does not have until the next save",
                                m->config.state_dir);
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
        vsock_bridges_process(m);
        /* Closed channels stay listed while a host end may still read what
         * is left; then they go, and the core frees them. */
        for (struct channel *c = m->channels, *next; c; c = next) {
                next = c->next;
                if (channel_is_done(c)) {
                        log_info("Channel %u removed: closed, nothing left to read", c->id);
                        channel_send_removed(c);
                        channel_free(c);
                }
        }

        if (m->stopping && count_running_ending_with_vmqd(m) == 0)
                (void)sd_event_exit(m->event, 0);
}

static int on_monitor_event(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        (void)s;
        (void)fd;
        (void)revents;
        manager_process_monitor(userdata);
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

int manager_check_new_machine(struct manager *m, const char *name, const char *uuid,
                              sd_bus_error *error) {
        struct machine *other;
        struct vmqd_machine_def *def;

        if (manager_find_machine(m, name) || vmqd_state_find_machine(&m->state, name))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_MACHINE_EXISTS,
                                         "Machine '%s' exists already", name);
        if (!vmqd_uuid_is_valid(uuid))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT, "Invalid UUID '%s'",
                                         uuid);
        if (vmqd_uuid_is_nil(uuid))
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "The nil UUID is not a machine identity");
        other = manager_find_machine_by_uuid(m, uuid);
        if (other)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_UUID_IN_USE,
                                         "UUID %s is in use by machine '%s'", uuid, other->name);
        def = vmqd_state_find_machine_by_uuid(&m->state, uuid);
        if (def)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_UUID_IN_USE,
                                         "UUID %s is in use by the saved machine '%s'", uuid,
                                         def->name);
        return 0;
}

int manager_add_machine(struct manager *m, struct machine *mc,
                        int (*activate)(struct machine *mc, void *userdata, sd_bus_error *error),
                        void *userdata, sd_bus_error *error) {
        _cleanup_(vmqd_state_done) struct vmqd_state next = {0};
        int r;

        assert(!mc->listed);
        if (mc->persistent) {
                struct vmqd_machine_def def;

                r = manager_state_copy(m, &next, error);
                if (r < 0)
                        return r;
                machine_to_def(mc, &def);
                r = vmqd_state_add_machine(&next, &def);
                if (r == -EEXIST) /* the callers checked: only a bug gets here */
                        return sd_bus_error_setf(error, VMQ_BUS_ERROR_MACHINE_EXISTS,
                                                 "Machine '%s' or its UUID is saved already",
                                                 mc->name);
                if (r < 0)
                        return sd_bus_error_set_errnof(error, -r, "Cannot define machine '%s': %s",
                                                       mc->name, strerror(-r));
                r = manager_state_save(m, &next, error);
                if (r < 0)
                        return r;
        }
        if (activate) {
                r = activate(mc, userdata, error);
                if (r < 0) {
                        if (mc->persistent)
                                manager_state_revert(m);
                        return r;
                }
        }
        if (mc->persistent)
                manager_state_swap(m, &next);
        machine_link(mc);
        log_info("Machine '%s' created (%s %s)", mc->name, mc->image[0] ? "image" : "domain",
                 mc->image[0] ? mc->image : mc->domain);
        machine_send_new(mc);
        return 0;
}

/* Whether the saved state names the machine, as a machine or a channel end. */
static bool state_names_machine(struct vmqd_state *s, const char *name) {
        if (vmqd_state_find_machine(s, name))
                return true;
        for (size_t i = 0; i < s->n_channels; i++)
                if (strcmp(s->channels[i].end_a, name) == 0 ||
                    strcmp(s->channels[i].end_b, name) == 0)
                        return true;
        return false;
}

int manager_undefine_machine(struct manager *m, struct machine *mc, sd_bus_error *error) {
        _cleanup_(vmqd_state_done) struct vmqd_state next = {0};
        bool saved;
        int r;

        if (machine_current_state(mc) == MACHINE_RUNNING)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY,
                                         "Machine '%s' is running; stop it first", mc->name);

        /* The state without the machine and the saved channels that name
         * it, saved before anything else changes. */
        saved = state_names_machine(&m->state, mc->name);
        if (saved) {
                r = manager_state_copy(m, &next, error);
                if (r < 0)
                        return r;
                /* With the machine go the channels that name it; a machine
                 * that is not saved may still be an end of saved channels. */
                if (vmqd_state_remove_machine(&next, mc->name) == -ENOENT)
                        for (size_t i = 0; i < next.n_channels;) {
                                const struct vmqd_channel_def *d = &next.channels[i];
                                /* The first channel with these ends is this
                                 * one: earlier ones with them went already. */
                                if (strcmp(d->end_a, mc->name) == 0 ||
                                    strcmp(d->end_b, mc->name) == 0)
                                        (void)vmqd_state_remove_channel(&next, d->end_a, d->end_b);
                                else
                                        i++;
                        }
                r = manager_state_save(m, &next, error);
                if (r < 0)
                        return r;
        }
        /* What vmqd wrote outside itself goes next: a domain stays, without
         * vmq's device (whose socket goes away with vmqd's server: QEMU
         * would refuse to start) and metadata. */
        r = machine_forget(mc, error);
        if (r < 0) {
                if (saved)
                        manager_state_revert(m);
                return r;
        }
        if (saved)
                manager_state_swap(m, &next);

        for (struct channel *c = m->channels; c; c = c->next)
                if (channel_has_end(c, mc->name))
                        channel_close(c);
        manager_remove_closed_channels(m, mc->name);
        log_info("Machine '%s' undefined", mc->name);
        machine_send_removed(mc);
        machine_free(mc);
        return 0;
}

int manager_open_channel(struct manager *m, const char *end_a, const char *end_b,
                         const struct channel_params *p, sd_bus_error *error,
                         struct channel **ret) {
        _cleanup_(vmqd_state_done) struct vmqd_state next = {0};
        struct channel *c;
        int r;

        if (p->persistent) {
                struct vmqd_channel_def def = {
                        .end_a = (char *)end_a,
                        .end_b = (char *)end_b,
                        .depth = p->depth,
                        .mode = (char *)p->mode,
                        .transfer = (char *)p->transfer,
                };
                _cleanup_free_ char *why = NULL;

                for (size_t i = 0; i < m->state.n_channels; i++) {
                        const struct vmqd_channel_def *d = &m->state.channels[i];
                        if ((strcmp(d->end_a, end_a) == 0 && strcmp(d->end_b, end_b) == 0) ||
                            (strcmp(d->end_a, end_b) == 0 && strcmp(d->end_b, end_a) == 0))
                                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY,
                                                         "A persistent channel between '%s' "
                                                         "and '%s' exists already",
                                                         end_a, end_b);
                }
                /* What channel_open() would refuse is refused before the
                 * save, with the same errors: the definition's rules, and
                 * ends that run. */
                if (vmqd_channel_def_validate(&def, &why) < 0)
                        return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                                 "Invalid channel from '%s' to '%s': %s", end_a,
                                                 end_b, why ? why : "bad definition");
                for (const char *const *e = (const char *const[]){end_a, end_b, NULL}; *e; e++)
                        if (!end_is_up(m, *e))
                                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NOT_RUNNING,
                                                         "Machine '%s' is not running", *e);

                r = manager_state_copy(m, &next, error);
                if (r < 0)
                        return r;
                r = vmqd_state_add_channel(&next, &def);
                if (r < 0)
                        return sd_bus_error_set_errnof(error, -r, "Cannot define the channel: %s",
                                                       strerror(-r));
                r = manager_state_save(m, &next, error);
                if (r < 0)
                        return r;
        }

        r = channel_open(m, end_a, end_b, p, error, &c);
        if (r < 0) {
                if (p->persistent)
                        manager_state_revert(m);
                return r;
        }
        if (p->persistent)
                manager_state_swap(m, &next);
        channel_send_new(c);
        *ret = c;
        return 0;
}

int manager_close_channel(struct manager *m, struct channel *c, sd_bus_error *error) {
        /* The saved definition goes unless it belongs to another, open
         * channel object (this one being an old, closed one). */
        if (c->persistent && vmqd_state_find_channel(&m->state, c->end_a, c->end_b) &&
            (!find_open_persistent(m, c->end_a, c->end_b) ||
             find_open_persistent(m, c->end_a, c->end_b) == c)) {
                _cleanup_(vmqd_state_done) struct vmqd_state next = {0};
                int r;

                r = manager_state_copy(m, &next, error);
                if (r < 0)
                        return r;
                (void)vmqd_state_remove_channel(&next, c->end_a, c->end_b);
                r = manager_state_save(m, &next, error);
                if (r < 0)
                        return r;
                manager_state_swap(m, &next);
        }

        if (!c->open) {
                /* Closing it again removes it, with what was left unread. */
                log_info("Channel %u removed", c->id);
                channel_send_removed(c);
                channel_free(c);
                return 0;
        }
        channel_close(c);
        log_info("Channel %u closed", c->id);
        manager_process_monitor(m);
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

        /* A valid file that holds more than the configuration allows is not
         * corrupt, and loading part of it would drop the rest at the next
         * save: vmqd refuses to start and rewrites nothing. */
        if (m->state.n_machines > m->config.max_machines) {
                log_error("The state in '%s/%s' has %zu machines, more than limits.max_machines "
                          "(%u) allows; raise limits.max_machines in the configuration file to "
                          "at least %zu, or remove machines from the state file, then start vmqd "
                          "again.  The file is left as it is.",
                          m->config.state_dir, VMQD_STATE_FILE, m->state.n_machines,
                          m->config.max_machines, m->state.n_machines);
                (void)sd_notifyf(false, "STATUS=State has %zu machines, limits.max_machines is %u",
                                 m->state.n_machines, m->config.max_machines);
                return MANAGER_ERROR_OVER_LIMITS;
        }

        for (size_t i = 0; i < m->state.n_machines; i++) {
                const struct vmqd_machine_def *d = &m->state.machines[i];
                _cleanup_(machine_freep) struct machine *mc = NULL;

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
                /* A domain's region server must be up before the domain
                 * starts: QEMU refuses to start without it. */
                r = machine_attach(mc);
                if (r < 0) {
                        log_warning_errno(r,
                                          "Cannot serve the region of machine '%s' (domain '%s') "
                                          "under '%s': %m",
                                          mc->name, mc->domain, m->runtime_dir);
                        continue;
                }
                machine_link(VMQ_TAKE_PTR(mc));
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

/* What "auto" will do on this machine, and the figures it was decided on. */
static void log_transfer_plan(const struct vmq_monitor *mon) {
        struct vmq_transfer_plan p;
        char flip4k[48];
        vmq_monitor_transfer_plan(mon, &p);
        if (p.flip_min_4k)
                snprintf(flip4k, sizeof(flip4k), "from %u pages on", p.flip_min_4k);
        else
                snprintf(flip4k, sizeof(flip4k), "never");
        if (!p.measured) {
                log_info("Transfers: auto copies 4 KiB pages and flips 2 MiB pages (not measured)");
                return;
        }
        unsigned last = p.steps_4k - 1;
        log_info("Transfers: auto flips 4 KiB pages %s, %s 2 MiB pages (measured: 1 page copy "
                 "%.1f us, flip %.1f us; %u pages copy %.1f us, flip %.1f us%s)",
                 flip4k, p.flip_2m ? "flips" : "copies", p.copy_ns_4k[0] / 1e3,
                 p.flip_ns_4k[0] / 1e3, 1u << last, p.copy_ns_4k[last] / 1e3,
                 p.flip_ns_4k[last] / 1e3, p.copy_ns_2m ? "" : "; no 2 MiB frames to time");
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
        log_transfer_plan(m->monitor);

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
        return libvirt_setup(m);
}

void manager_autostart(struct manager *m) {
        restore_running(m);
}

static void force_stop_all(struct manager *m) {
        for (struct machine *mc = m->machines; mc; mc = mc->next)
                if (mc->backend->ends_with_vmqd && machine_current_state(mc) == MACHINE_RUNNING) {
                        log_notice("Stopping machine '%s' by force", mc->name);
                        (void)machine_kill(mc, NULL);
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
        running = count_running_ending_with_vmqd(m);
        log_info("Shutting down, stopping %zu machine%s", running, running == 1 ? "" : "s");
        (void)sd_notifyf(false, "STOPPING=1\nSTATUS=Stopping %zu machines", running);

        /* libvirt domains keep running without vmqd (their channels close). */
        for (struct machine *mc = m->machines; mc; mc = mc->next) {
                if (!mc->backend->ends_with_vmqd || machine_current_state(mc) != MACHINE_RUNNING)
                        continue;
                if (machine_stop(mc, NULL) < 0)
                        (void)machine_kill(mc, NULL);
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
