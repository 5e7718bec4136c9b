/* SPDX-License-Identifier: MIT */
/*
 * vmqd's libvirt event loop on sd-event (vmqd/libvirt-event.c): fd watches
 * and timers through libvirt's public virEvent* calls, removal from inside
 * a callback with the free function deferred, and domain lifecycle events
 * of libvirt's in-process test driver (test:///default, which queues its
 * events on a timer of the registered loop) arriving in order.  Needs no
 * libvirtd.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "vmqd/libvirt.h"

static sd_event *loop;

static void quiet(void *userdata, virErrorPtr error) {
        (void)userdata;
        (void)error;
}

static void setup(void) {
        cr_assert_eq(sd_event_new(&loop), 0);
        cr_assert_eq(libvirt_event_register(loop), 0);
        virSetErrorFunc(NULL, quiet);
}

static void teardown(void) {
        libvirt_event_unregister();
        loop = sd_event_unref(loop);
}

TestSuite(libvirt, .init = setup, .fini = teardown, .timeout = 30);

/* Runs the loop until *done or about 5 s. */
static void run_until(const bool *done) {
        for (int i = 0; i < 500 && !*done; i++)
                cr_assert_geq(sd_event_run(loop, 10000), 0);
}

struct handle_state {
        int fd;
        int calls;
        int last_events;
        bool freed;
        bool freed_inside_remove;
        bool in_remove;
        bool done;
};

static void handle_free(void *opaque) {
        struct handle_state *h = opaque;
        h->freed = true;
        h->freed_inside_remove = h->in_remove;
}

static void on_handle(int watch, int fd, int events, void *opaque) {
        struct handle_state *h = opaque;
        char c;

        cr_assert_eq(fd, h->fd);
        h->calls++;
        h->last_events = events;
        cr_assert_eq(read(fd, &c, 1), 1);
        /* libvirt removes watches from inside their callbacks */
        h->in_remove = true;
        cr_assert_eq(virEventRemoveHandle(watch), 0);
        h->in_remove = false;
        h->done = true;
}

Test(libvirt, handles) {
        struct handle_state h = {0};
        int p[2];

        cr_assert_eq(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
        h.fd = p[0];
        int w = virEventAddHandle(p[0], VIR_EVENT_HANDLE_READABLE, on_handle, &h, handle_free);
        cr_assert_gt(w, 0);
        /* no events wanted: nothing fires */
        virEventUpdateHandle(w, 0);
        cr_assert_eq(write(p[1], "x", 1), 1);
        for (int i = 0; i < 5; i++)
                cr_assert_geq(sd_event_run(loop, 1000), 0);
        cr_assert_eq(h.calls, 0);
        virEventUpdateHandle(w, VIR_EVENT_HANDLE_READABLE);
        run_until(&h.done);
        cr_assert_eq(h.calls, 1);
        cr_assert(h.last_events & VIR_EVENT_HANDLE_READABLE);
        /* the free function runs later, on the loop, not inside remove */
        cr_assert_not(h.freed_inside_remove);
        for (int i = 0; i < 5 && !h.freed; i++)
                cr_assert_geq(sd_event_run(loop, 1000), 0);
        cr_assert(h.freed);
        cr_assert_eq(virEventRemoveHandle(w), -1, "removed twice");
        close(p[0]);
        close(p[1]);
}

struct timer_state {
        int calls;
        bool done;
};

static void on_timer(int timer, void *opaque) {
        struct timer_state *t = opaque;

        if (++t->calls == 3) {
                virEventUpdateTimeout(timer, -1); /* off */
                t->done = true;
        }
}

Test(libvirt, timeouts) {
        struct timer_state t = {0}, z = {0};
        uint64_t start, now;

        cr_assert_geq(sd_event_now(loop, CLOCK_MONOTONIC, &start), 0);
        int id = virEventAddTimeout(20, on_timer, &t, NULL);
        cr_assert_gt(id, 0);
        run_until(&t.done);
        cr_assert_eq(t.calls, 3);
        cr_assert_geq(sd_event_now(loop, CLOCK_MONOTONIC, &now), 0);
        cr_assert_geq(now - start, 3 * 20000 - 1000, "fired too early: %llu us",
                      (unsigned long long)(now - start));
        for (int i = 0; i < 5; i++)
                cr_assert_geq(sd_event_run(loop, 30000), 0);
        cr_assert_eq(t.calls, 3, "a disabled timer fired");
        cr_assert_eq(virEventRemoveTimeout(id), 0);

        /* 0 ms: on every iteration (sd_event_run() dispatches one source
         * per iteration), without waiting */
        id = virEventAddTimeout(0, on_timer, &z, NULL);
        cr_assert_gt(id, 0);
        for (int i = 0; i < 10 && !z.done; i++)
                cr_assert_gt(sd_event_run(loop, 0), 0, "nothing was ready");
        cr_assert_eq(z.calls, 3);
        cr_assert_eq(virEventRemoveTimeout(id), 0);
}

struct lifecycle_state {
        int events[8];
        int n;
        bool done;
};

static int on_lifecycle(virConnectPtr conn, virDomainPtr dom, int event, int detail, void *opaque) {
        struct lifecycle_state *s = opaque;

        (void)conn;
        (void)dom;
        (void)detail;
        if (s->n < 8)
                s->events[s->n++] = event;
        s->done = s->n >= 2;
        return 0;
}

Test(libvirt, domain_events) {
        struct lifecycle_state s = {0};
        virConnectPtr c = virConnectOpen("test:///default");
        cr_assert_not_null(c, "test:///default: %s", virGetLastErrorMessage());
        int id =
                virConnectDomainEventRegisterAny(c, NULL, VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                 VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), &s, NULL);
        cr_assert_geq(id, 0, "%s", virGetLastErrorMessage());
        virDomainPtr d = virDomainLookupByName(c, "test");
        cr_assert_not_null(d);
        cr_assert_eq(virDomainDestroy(d), 0);
        cr_assert_eq(virDomainCreate(d), 0);
        run_until(&s.done);
        cr_assert_eq(s.n, 2);
        cr_assert_eq(s.events[0], VIR_DOMAIN_EVENT_STOPPED);
        cr_assert_eq(s.events[1], VIR_DOMAIN_EVENT_STARTED);
        virDomainFree(d);
        cr_assert_eq(virConnectDomainEventDeregisterAny(c, id), 0);
        cr_assert_geq(virConnectClose(c), 0);
}
