/* SPDX-License-Identifier: MIT */
/*
 * The connection to libvirtd (see libvirt.h): connecting, reconnecting
 * every second while libvirtd is away, and following domain lifecycle
 * events.  What vmqd does with an adopted domain is the libvirt backend's
 * (backend-libvirt.c); this file only tells it when to look again.
 *
 * Everything here runs on the event loop's thread.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include "bus/vmq-bus.h"
#include "vmqd/backend-libvirt.h"
#include "vmqd/libvirt.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"

#define RETRY_USEC 1000000u

struct vmqd_libvirt {
        struct manager *manager;
        virConnectPtr conn;
        int lifecycle_id; /* -1: not registered */
        bool lost;        /* the close callback ran: drop conn, then reconnect */
        bool said_down;   /* "cannot connect" was logged (once per outage) */
        bool was_up;      /* connected at least once */
        sd_event_source *retry;
};

static void lv_quiet_errors(void *userdata, virErrorPtr error) {
        /* libvirt prints every error on stderr by default; vmqd logs the
         * ones it cares about, once, with virGetLastErrorMessage(). */
        (void)userdata;
        (void)error;
}

const char *libvirt_error_message(void) {
        const char *s = virGetLastErrorMessage();
        return s ? s : "unknown libvirt error";
}

bool libvirt_is_connected(const struct manager *m) {
        return m->libvirt && m->libvirt->conn && !m->libvirt->lost;
}

virConnectPtr libvirt_connection(const struct manager *m) {
        return libvirt_is_connected(m) ? m->libvirt->conn : NULL;
}

int libvirt_unavailable(const struct manager *m, sd_bus_error *error) {
        if (m->no_libvirt)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BACKEND_UNAVAILABLE,
                                         "The libvirt backend is disabled (--no-libvirt)");
        return sd_bus_error_setf(error, VMQ_BUS_ERROR_BACKEND_UNAVAILABLE,
                                 "vmqd is not connected to libvirt at '%s' (retrying every second)",
                                 m->config.libvirt_uri);
}

/* Brings every adopted domain's machine in line with its domain. */
static void resync_all(struct manager *m) {
        for (struct machine *mc = m->machines; mc; mc = mc->next)
                libvirt_machine_resync(mc);
}

/* ---- the connection --------------------------------------------------------- */

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque) {
        struct vmqd_libvirt *lv = opaque;
        char uuid[VIR_UUID_STRING_BUFLEN];
        struct machine *mc;

        (void)conn;
        if (virDomainGetUUIDString(dom, uuid) < 0)
                return 0;
        /* A domain's machine has the domain's UUID, which no other machine
         * has (manager_check_new_machine()). */
        mc = manager_find_machine_by_uuid(lv->manager, uuid);
        if (mc) {
                log_debug("Machine '%s': domain event %d/%d", mc->name, event, detail);
                libvirt_machine_resync(mc);
        }
        return 0;
}

static int arm_retry(struct vmqd_libvirt *lv, uint64_t usec);

static void on_close(virConnectPtr conn, int reason, void *opaque) {
        struct vmqd_libvirt *lv = opaque;

        (void)conn;
        if (lv->lost)
                return;
        lv->lost = true;
        log_warning("Lost the connection to libvirt at '%s' (%s); reconnecting",
                    lv->manager->config.libvirt_uri,
                    reason == VIR_CONNECT_CLOSE_REASON_EOF         ? "libvirtd went away"
                    : reason == VIR_CONNECT_CLOSE_REASON_KEEPALIVE ? "keepalive timed out"
                    : reason == VIR_CONNECT_CLOSE_REASON_ERROR     ? "I/O error"
                                                                   : "closed");
        /* Not from inside libvirt's callback: on the next loop iteration. */
        (void)arm_retry(lv, 0);
}

static void drop_connection(struct vmqd_libvirt *lv) {
        if (!lv->conn)
                return;
        if (lv->lifecycle_id >= 0)
                (void)virConnectDomainEventDeregisterAny(lv->conn, lv->lifecycle_id);
        lv->lifecycle_id = -1;
        (void)virConnectUnregisterCloseCallback(lv->conn, on_close);
        (void)virConnectClose(lv->conn);
        lv->conn = NULL;
        lv->lost = false;
}

static void try_connect(struct vmqd_libvirt *lv) {
        struct manager *m = lv->manager;
        const char *uri = m->config.libvirt_uri;

        drop_connection(lv);
        lv->conn = virConnectOpen(uri);
        if (!lv->conn) {
                if (!lv->said_down)
                        log_warning("Cannot connect to libvirt at '%s' (%s); retrying every "
                                    "second",
                                    uri, libvirt_error_message());
                lv->said_down = true;
                (void)arm_retry(lv, RETRY_USEC);
                return;
        }
        if (virConnectRegisterCloseCallback(lv->conn, on_close, lv, NULL) < 0 ||
            (lv->lifecycle_id = virConnectDomainEventRegisterAny(
                     lv->conn, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                     VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), lv, NULL)) < 0) {
                if (!lv->said_down)
                        log_warning("Cannot follow libvirt's domain events at '%s' (%s); "
                                    "retrying every second",
                                    uri, libvirt_error_message());
                lv->said_down = true;
                drop_connection(lv);
                (void)arm_retry(lv, RETRY_USEC);
                return;
        }
        /* A libvirtd that hangs is noticed too, not only one that exits. */
        (void)virConnectSetKeepAlive(lv->conn, 5, 3);
        log_info("%s libvirt at '%s'", lv->was_up ? "Reconnected to" : "Connected to", uri);
        lv->said_down = false;
        lv->was_up = true;
        resync_all(m);
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        (void)s;
        (void)usec;
        try_connect(userdata);
        return 0;
}

static int arm_retry(struct vmqd_libvirt *lv, uint64_t usec) {
        struct manager *m = lv->manager;
        uint64_t now;
        int r;

        if (!lv->retry) {
                r = sd_event_add_time_relative(m->event, &lv->retry, CLOCK_MONOTONIC, usec, 0,
                                               on_retry, lv);
                if (r < 0)
                        return log_error_errno(r, "Cannot arm the libvirt reconnect timer: %m");
                (void)sd_event_source_set_description(lv->retry, "libvirt-retry");
                return 0;
        }
        r = sd_event_now(m->event, CLOCK_MONOTONIC, &now);
        if (r >= 0)
                r = sd_event_source_set_time(lv->retry, now + usec);
        if (r >= 0)
                r = sd_event_source_set_enabled(lv->retry, SD_EVENT_ONESHOT);
        return r;
}

int libvirt_setup(struct manager *m) {
        struct vmqd_libvirt *lv;
        int r;

        if (m->no_libvirt) {
                log_info("The libvirt backend is disabled");
                return 0;
        }
        r = libvirt_event_register(m->event);
        if (r < 0)
                return log_error_errno(r, "Cannot run libvirt's event loop: %m");
        virSetErrorFunc(NULL, lv_quiet_errors);
        if (virInitialize() < 0)
                return log_error_errno(EIO, "Cannot initialise libvirt: %s",
                                       libvirt_error_message());
        lv = calloc(1, sizeof(*lv));
        if (!lv)
                return log_error_errno(ENOMEM, "Out of memory");
        lv->manager = m;
        lv->lifecycle_id = -1;
        m->libvirt = lv;
        try_connect(lv);
        return 0;
}

void libvirt_teardown(struct manager *m) {
        struct vmqd_libvirt *lv = m->libvirt;

        if (!lv)
                return;
        drop_connection(lv);
        lv->retry = sd_event_source_disable_unref(lv->retry);
        free(lv);
        m->libvirt = NULL;
        libvirt_event_unregister();
}
