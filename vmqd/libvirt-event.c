/* SPDX-License-Identifier: MIT */
/*
 * libvirt's event loop on sd-event.
 *
 * libvirt's client library needs an event loop to read events and
 * keepalives from libvirtd, and lets an application supply its own through
 * virEventRegisterImpl(): six callbacks that add, update and remove fd
 * watches ("handles") and timers ("timeouts"), each known by a positive
 * int.  Here a handle is an sd-event io source and a timeout an sd-event
 * monotonic time source, so libvirt runs on vmqd's one loop and thread.
 *
 * The rules libvirt sets, and how they are met:
 *  - A watch or timer may be removed from inside its own callback: the
 *    record is unlinked at once (so a later lookup misses it) and its
 *    source is disabled; sd-event allows unref'ing a source that is being
 *    dispatched.
 *  - The free function libvirt passes for a watch's or timer's opaque data
 *    must not run inside the remove call (libvirt may hold a lock there):
 *    removed records wait on a list that a defer source empties on the next
 *    loop iteration.
 *  - A timeout of 0 ms fires on every loop iteration; -1 disables; N > 0
 *    fires every N ms.
 *  - events 0 on a handle means "watch nothing" (the source is turned
 *    off, so that a hang-up does not spin the loop).
 *
 * libvirt calls these from whichever thread makes a libvirt call; vmqd
 * makes all its libvirt calls on the loop's thread, so no locking.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <libvirt/libvirt.h>
#include <systemd/sd-event.h>

#include "vmqd/libvirt.h"
#include "vmqd/log.h"

struct lv_watch {
        struct lv_watch *next;
        int id;
        bool timer;
        int fd;
        sd_event_source *source;
        int interval_ms; /* timers: -1 off, 0 every iteration, > 0 period */
        virEventHandleCallback handle_cb;
        virEventTimeoutCallback timeout_cb;
        void *opaque;
        virFreeCallback ff;
};

static sd_event *lv_event;
static struct lv_watch *lv_watches; /* live ones */
static struct lv_watch *lv_removed; /* waiting for their free function */
static sd_event_source *lv_reaper;
static int lv_next_id = 1;

static struct lv_watch *find_watch(int id, bool timer) {
        for (struct lv_watch *w = lv_watches; w; w = w->next)
                if (w->id == id && w->timer == timer)
                        return w;
        return NULL;
}

static int reap(sd_event_source *s, void *userdata) {
        (void)userdata;
        while (lv_removed) {
                struct lv_watch *w = lv_removed;
                lv_removed = w->next;
                if (w->ff)
                        w->ff(w->opaque);
                free(w);
        }
        (void)sd_event_source_set_enabled(s, SD_EVENT_OFF);
        return 0;
}

static int unlink_watch(int id, bool timer) {
        struct lv_watch **p = &lv_watches;

        while (*p && !((*p)->id == id && (*p)->timer == timer))
                p = &(*p)->next;
        if (!*p)
                return -1;
        struct lv_watch *w = *p;
        *p = w->next;
        w->source = sd_event_source_disable_unref(w->source);
        w->next = lv_removed;
        lv_removed = w;
        if (lv_reaper)
                (void)sd_event_source_set_enabled(lv_reaper, SD_EVENT_ONESHOT);
        return 0;
}

/* ---- handles ---------------------------------------------------------------- */

static uint32_t to_epoll(int events) {
        uint32_t e = 0;

        if (events & VIR_EVENT_HANDLE_READABLE)
                e |= EPOLLIN;
        if (events & VIR_EVENT_HANDLE_WRITABLE)
                e |= EPOLLOUT;
        return e;
}

static int from_epoll(uint32_t e) {
        int events = 0;

        if (e & EPOLLIN)
                events |= VIR_EVENT_HANDLE_READABLE;
        if (e & EPOLLOUT)
                events |= VIR_EVENT_HANDLE_WRITABLE;
        if (e & EPOLLERR)
                events |= VIR_EVENT_HANDLE_ERROR;
        if (e & EPOLLHUP)
                events |= VIR_EVENT_HANDLE_HANGUP;
        return events;
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct lv_watch *w = userdata;

        (void)s;
        w->handle_cb(w->id, fd, from_epoll(revents), w->opaque);
        return 0;
}

static int set_handle_events(struct lv_watch *w, int events) {
        uint32_t e = to_epoll(events);
        int r;

        if (e == 0)
                return sd_event_source_set_enabled(w->source, SD_EVENT_OFF);
        r = sd_event_source_set_io_events(w->source, e);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(w->source, SD_EVENT_ON);
}

static int add_handle(int fd, int events, virEventHandleCallback cb, void *opaque,
                      virFreeCallback ff) {
        struct lv_watch *w;
        int r;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -1;
        w->id = lv_next_id++;
        w->fd = fd;
        w->handle_cb = cb;
        w->opaque = opaque;
        w->ff = ff;
        r = sd_event_add_io(lv_event, &w->source, fd, EPOLLIN, on_io, w);
        if (r >= 0)
                r = set_handle_events(w, events);
        if (r < 0) {
                log_debug_errno(r, "Cannot watch fd %d for libvirt: %m", fd);
                sd_event_source_disable_unref(w->source);
                free(w);
                return -1;
        }
        (void)sd_event_source_set_description(w->source, "libvirt-handle");
        w->next = lv_watches;
        lv_watches = w;
        return w->id;
}

static void update_handle(int id, int events) {
        struct lv_watch *w = find_watch(id, false);

        if (w)
                (void)set_handle_events(w, events);
}

static int remove_handle(int id) {
        return unlink_watch(id, false);
}

/* ---- timeouts --------------------------------------------------------------- */

static int arm_timer(struct lv_watch *w) {
        uint64_t now;
        int r;

        if (w->interval_ms < 0)
                return sd_event_source_set_enabled(w->source, SD_EVENT_OFF);
        r = sd_event_now(lv_event, CLOCK_MONOTONIC, &now);
        if (r < 0)
                return r;
        r = sd_event_source_set_time(w->source, now + (uint64_t)w->interval_ms * 1000u);
        if (r < 0)
                return r;
        return sd_event_source_set_enabled(w->source, SD_EVENT_ONESHOT);
}

static int on_time(sd_event_source *s, uint64_t usec, void *userdata) {
        struct lv_watch *w = userdata;
        int id = w->id;

        (void)s;
        (void)usec;
        /* Re-arm first: the callback may update or remove the timer. */
        (void)arm_timer(w);
        w->timeout_cb(id, w->opaque);
        return 0;
}

static int add_timeout(int interval_ms, virEventTimeoutCallback cb, void *opaque,
                       virFreeCallback ff) {
        struct lv_watch *w;
        int r;

        w = calloc(1, sizeof(*w));
        if (!w)
                return -1;
        w->id = lv_next_id++;
        w->timer = true;
        w->fd = -1;
        w->interval_ms = interval_ms;
        w->timeout_cb = cb;
        w->opaque = opaque;
        w->ff = ff;
        r = sd_event_add_time(lv_event, &w->source, CLOCK_MONOTONIC, 0, 0, on_time, w);
        if (r >= 0)
                r = arm_timer(w);
        if (r < 0) {
                log_debug_errno(r, "Cannot add a timer for libvirt: %m");
                sd_event_source_disable_unref(w->source);
                free(w);
                return -1;
        }
        (void)sd_event_source_set_description(w->source, "libvirt-timeout");
        w->next = lv_watches;
        lv_watches = w;
        return w->id;
}

static void update_timeout(int id, int interval_ms) {
        struct lv_watch *w = find_watch(id, true);

        if (!w)
                return;
        w->interval_ms = interval_ms;
        (void)arm_timer(w);
}

static int remove_timeout(int id) {
        return unlink_watch(id, true);
}

int libvirt_event_register(sd_event *event) {
        int r;

        if (lv_event)
                return 0; /* libvirt takes one implementation per process */
        r = sd_event_add_defer(event, &lv_reaper, reap, NULL);
        if (r < 0)
                return r;
        (void)sd_event_source_set_enabled(lv_reaper, SD_EVENT_OFF);
        (void)sd_event_source_set_description(lv_reaper, "libvirt-reaper");
        lv_event = sd_event_ref(event);
        virEventRegisterImpl(add_handle, update_handle, remove_handle, add_timeout, update_timeout,
                             remove_timeout);
        return 0;
}

void libvirt_event_unregister(void) {
        /* libvirt cannot forget an implementation: whatever it still holds
         * (nothing once every connection is closed) is dropped here. */
        while (lv_watches)
                (void)unlink_watch(lv_watches->id, lv_watches->timer);
        if (lv_reaper)
                (void)reap(lv_reaper, NULL);
        lv_reaper = sd_event_source_disable_unref(lv_reaper);
        lv_event = sd_event_unref(lv_event);
}
