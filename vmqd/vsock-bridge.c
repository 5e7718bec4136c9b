/* SPDX-License-Identifier: MIT */
/*
 * Machines without a vsock device as vsock peers (see vsock-bridge.h): the
 * message port of vhost/vsock-msg.c, its channels the monitor's, opened by
 * the host end speaking for the guest's machine.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-event.h>

#include "core/monitor.h"
#include "core/util.h"
#include "vhost/vsock-msg.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"
#include "vmqd/vsock-bridge.h"
#include "vmqd/vsock.h"

/* A machine's queue was full: try again after this long, twice as long
 * each time nothing moved, up to RETRY_MAX_USEC (a machine that reads
 * nothing costs vmqd a wake-up a tenth of a second). */
#define RETRY_USEC 1000u
#define RETRY_MAX_USEC (100u * 1000u)

struct vsock_bridge {
        struct manager *manager;
        struct machine *machine;
        struct vmq_vsock_msgport *port;
        sd_event_source *retry;
        uint64_t retry_usec; /* the next wait; 0: RETRY_USEC */
        uint64_t sent;       /* messages handed to the machine, ever */
};

/* ---- the port's operations, on the monitor ---- */

static int op_open(void *userdata, uint64_t guest_cid, uint32_t guest_port, uint32_t port,
                   bool seqpacket, uint32_t *ret_channel) {
        struct vsock_bridge *b = userdata;
        struct manager *m = b->manager;
        struct machine *guest = vsock_machine_by_cid(m, guest_cid);
        struct vmq_channel_config cfg;

        if (!guest || !guest->vm || !b->machine->vm)
                return -ESRCH;
        vmq_channel_config_init(&cfg);
        cfg.host_depth = VSOCK_BRIDGE_DEPTH;
        cfg.speak_for = vmq_vm_id(guest->vm);
        cfg.hello_flags = VMQ_DESC_F_VSOCK | (seqpacket ? VMQ_DESC_F_SEQPACKET : 0);
        cfg.hello_tag = (uint64_t)guest_port << 32 | port;
        int r = vmq_channel_open(m->monitor, VMQ_HOST_ID, vmq_vm_id(b->machine->vm), &cfg,
                                 ret_channel);
        if (r < 0)
                log_notice("vsock: CID %" PRIu64 " cannot reach '%s' port %" PRIu32 ": %s",
                           guest_cid, b->machine->name, port,
                           r == -EAGAIN ? "its queue is full" : strerror(-r));
        return r;
}

static int op_send(void *userdata, uint32_t channel, const uint8_t *data, size_t len, bool done) {
        struct vsock_bridge *b = userdata;
        int r = vmq_host_send(b->manager->monitor, channel, data, len, done ? VMQ_TAG_DONE : 0);
        if (r == 0)
                b->sent++;
        return r;
}

static int op_recv(void *userdata, uint32_t channel, void **ret_buf, const uint8_t **ret_data,
                   size_t *ret_len, bool *ret_done) {
        struct vsock_bridge *b = userdata;

        for (;;) {
                struct vmq_host_msg *msg = NULL;
                int r = vmq_host_recv(b->manager->monitor, channel, 0, &msg);
                if (r == -ETIMEDOUT)
                        return -EAGAIN;
                if (r < 0)
                        return -EPIPE; /* closed and drained, or gone */
                if (msg->kind != VMQ_DESC_INLINE && msg->kind != VMQ_DESC_PAGE) {
                        free(msg); /* its HELLO, CLOSE, an error */
                        continue;
                }
                *ret_buf = msg;
                *ret_data = msg->data;
                *ret_len = msg->len;
                *ret_done = msg->len == 0 && msg->tag == VMQ_TAG_DONE;
                return 0;
        }
}

static void op_close(void *userdata, uint32_t channel, uint64_t guest_cid,
                     enum vmq_vsock_msg_end why) {
        struct vsock_bridge *b = userdata;
        struct vmq_monitor *mon = b->manager->monitor;

        if (why != VMQ_VSOCK_MSG_END_DONE && why != VMQ_VSOCK_MSG_END_GUEST_RESET &&
            why != VMQ_VSOCK_MSG_END_CLOSED && why != VMQ_VSOCK_MSG_END_GONE)
                log_notice("vsock: a connection from CID %" PRIu64 " to '%s' reset: %s", guest_cid,
                           b->machine->name, vmq_vsock_msg_end_to_string(why));
        (void)vmq_channel_close(mon, channel);
        (void)vmq_channel_forget(mon, channel);
}

static void op_retry(void *userdata) {
        struct vsock_bridge *b = userdata;
        int enabled = SD_EVENT_OFF;
        uint64_t now;

        (void)sd_event_source_get_enabled(b->retry, &enabled);
        if (enabled != SD_EVENT_OFF)
                return; /* armed already */
        (void)sd_event_now(b->manager->event, CLOCK_MONOTONIC, &now);
        (void)sd_event_source_set_time(b->retry,
                                       now + (b->retry_usec ? b->retry_usec : RETRY_USEC));
        (void)sd_event_source_set_enabled(b->retry, SD_EVENT_ONESHOT);
}

static const struct vmq_vsock_msgport_ops port_ops = {
        .open = op_open,
        .send = op_send,
        .recv = op_recv,
        .close = op_close,
        .retry = op_retry,
};

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        struct vsock_bridge *b = userdata;
        uint64_t before = b->sent;
        (void)s;
        (void)usec;
        /* nothing moved since the last try: wait longer next time */
        b->retry_usec = VMQ_MIN(b->retry_usec ? b->retry_usec * 2 : 2 * RETRY_USEC,
                                (uint64_t)RETRY_MAX_USEC);
        vmq_vsock_msgport_run(b->port);
        if (b->sent != before) {
                b->retry_usec = 0;
                /* armed again by a send that found the queue full: sooner */
                int enabled = SD_EVENT_OFF;
                (void)sd_event_source_get_enabled(b->retry, &enabled);
                if (enabled != SD_EVENT_OFF) {
                        (void)sd_event_source_set_enabled(b->retry, SD_EVENT_OFF);
                        op_retry(b);
                }
        }
        return 0;
}

/* ---- the service ---- */

int vsock_bridge_attach(struct manager *m, struct machine *mc) {
        if (mc->vsock_bridge || mc->vsock_cid)
                return 0;
        struct vmq_vsock_switch *sw = vsock_get_switch(m);
        if (!sw)
                return -ENOMEM;
        uint32_t cid = vsock_free_cid(m);
        if (!cid)
                return -ENOSPC;
        struct vsock_bridge *b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->manager = m;
        b->machine = mc;
        int r = sd_event_add_time(m->event, &b->retry, CLOCK_MONOTONIC, 0, 0, on_retry, b);
        if (r >= 0)
                r = sd_event_source_set_enabled(b->retry, SD_EVENT_OFF);
        if (r >= 0)
                r = vmq_vsock_msgport_new(sw, cid, &port_ops, b, &b->port);
        if (r < 0) {
                sd_event_source_disable_unref(b->retry);
                free(b);
                return r;
        }
        mc->vsock_bridge = b;
        mc->vsock_peer_cid = cid;
        log_info("Machine '%s': reached over vsock at CID %" PRIu32 " (its messages are the "
                 "connections' data)",
                 mc->name, cid);
        return 0;
}

void vsock_bridge_free(struct machine *mc) {
        struct vsock_bridge *b = mc->vsock_bridge;
        if (!b)
                return;
        b->port = vmq_vsock_msgport_free(b->port);
        sd_event_source_disable_unref(b->retry);
        free(b);
        mc->vsock_bridge = NULL;
        mc->vsock_peer_cid = 0;
}

void vsock_bridges_process(struct manager *m) {
        for (struct machine *mc = m->machines; mc; mc = mc->next)
                if (mc->vsock_bridge && vmq_vsock_msgport_conns(mc->vsock_bridge->port))
                        vmq_vsock_msgport_run(mc->vsock_bridge->port);
}
