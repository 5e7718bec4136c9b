/* SPDX-License-Identifier: MIT */
/*
 * vmqd's vhost-user-vsock backend (vmqd/vsock.c), end to end through the
 * daemon: domains of libvirt's test driver are adopted with a vsock CID,
 * and the test plays QEMU and the guests' drivers on their device sockets
 * (tests/vhost-frontend.h).  Supervision as vmqd does it: a connection
 * between two domains only while a channel between them is open, forged
 * source CIDs dropped, resets when the channel closes or a peer's QEMU
 * goes away, one frontend per device, CIDs kept in the state.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/daemon-util.h"
#include "tests/test-util.h"
#include "libvmq-client/vmq-guest-ivshmem.h"
#include "tests/vhost-frontend.h"
#include "vhost/vsock-msg.h"
#include "vmqd/vsock-identity.h"

static struct vmq_testbus tb;

static const char *const domains[] = {"lv1", "lv2", "lv3"};

/* vmqd on libvirt's test driver with three domains, lv1..lv3. */
static void up(void) {
        vmq_testbus_start(&tb);
        vmq_testbus_start_vmqd_on_domains(&tb, domains, 3);
}

static void down(void) {
        vmq_testbus_stop(&tb);
}

TestSuite(vmqd_vsock, .init = up, .fini = down, .timeout = 120);

static void failed_with(int r, sd_bus_error *e, const char *name, const char *what) {
        cr_assert_lt(r, 0, "%s succeeded", what);
        cr_assert_str_eq(e->name, name, "%s: %s: %s", what, e->name, e->message);
        sd_bus_error_free(e);
}

static void succeeded(int r, sd_bus_error *e, const char *what) {
        cr_assert_geq(r, 0, "%s: %s: %s", what, e->name, e->message);
        sd_bus_error_free(e);
}

static char *property(const char *machine, const char *name) {
        return vmq_testbus_ok(
                &tb, 0, "$BUSCTL get-property org.vmq1 /org/vmq1/machine/%s org.vmq1.Machine %s",
                machine, name);
}

static void adopt_both(void) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        int r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv1", 1, "vsock", "b", 1);
        succeeded(r, &e, "AdoptDomain lv1 vsock");
        r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv2", 1, "vsock_cid", "u", 9);
        succeeded(r, &e, "AdoptDomain lv2 vsock_cid 9");
        vmq_testbus_wait_running(&tb, "lv1");
        vmq_testbus_wait_running(&tb, "lv2");
}

static void socket_of(const char *machine, char *buf, size_t size) {
        snprintf(buf, size, "%s/run/vsock-%s.sock", tb.dir, machine);
}

static uint32_t open_channel(const char *a, const char *b) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        uint32_t id = 0;
        int r = vmq_testbus_call(&tb, &e, &reply, "OpenChannel", "ssa{sv}", a, b, 0);
        succeeded(r, &e, "OpenChannel");
        cr_assert_geq(sd_bus_message_read(reply, "u", &id), 0);
        sd_bus_message_unref(reply);
        return id;
}

static void close_channel(uint32_t id) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        int r = vmq_testbus_call(&tb, &e, NULL, "CloseChannel", "u", id);
        succeeded(r, &e, "CloseChannel");
}

Test(vmqd_vsock, adopting_with_vsock_gives_a_cid_a_socket_and_clear_errors) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        char *out;

        adopt_both();
        out = property("lv1", "VsockCID");
        cr_assert(strstr(out, "u 3"), "the lowest free CID: %s", out);
        free(out);
        out = property("lv2", "VsockCID");
        cr_assert(strstr(out, "u 9"), "%s", out);
        free(out);
        out = property("lv1", "VsockSocket");
        cr_assert(strstr(out, "/run/vsock-lv1.sock"), "%s", out);
        free(out);

        int r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv3", 1, "vsock_cid", "u",
                                 2);
        failed_with(r, &e, "org.vmq1.Error.InvalidArgument", "vsock_cid 2 (the host's)");
        r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv3", 1, "vsock_cid", "u", 9);
        failed_with(r, &e, "org.vmq1.Error.MachineExists", "vsock_cid 9 (lv2's)");
        r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv3", 1, "vsock", "s", "yes");
        failed_with(r, &e, "org.vmq1.Error.InvalidArgument", "vsock of the wrong type");
        r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv3", 0);
        succeeded(r, &e, "AdoptDomain lv3 without vsock");
        out = property("lv3", "VsockCID");
        cr_assert(strstr(out, "u 0"), "no device, CID 0: %s", out);
        free(out);
        out = property("lv3", "VsockSocket");
        cr_assert(strstr(out, "s \"\""), "%s", out);
        free(out);
        vmq_testbus_expect_clean_exit(&tb);
}

Test(vmqd_vsock, connections_need_a_channel_and_forged_sources_go_nowhere) {
        struct vfe a, b;
        char path[600];

        adopt_both();
        socket_of("lv1", path, sizeof(path));
        vfe_connect(&a, path);
        socket_of("lv2", path, sizeof(path));
        vfe_connect(&b, path);
        cr_assert_eq(a.cid, 3, "GET_CONFIG gives the guest its CID");
        cr_assert_eq(b.cid, 9);
        vfe_post_rx(&a, 8);
        vfe_post_rx(&b, 8);

        /* No channel: refused. */
        struct vmq_vsock_hdr h = vfe_hdr(&a, 9, 40000, 1234, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        vfe_expect(&a, VMQ_VSOCK_OP_RST, 9, "no channel between lv1 and lv2");
        vfe_expect_nothing(&b, "a refused request is not passed on");

        /* To the host or an unknown CID: refused. */
        h = vfe_hdr(&a, 2, 40001, 1234, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        vfe_expect(&a, VMQ_VSOCK_OP_RST, 2, "the host end is not served yet");

        uint32_t ch = open_channel("lv1", "lv2");

        /* A forged source: dropped, whoever it names. */
        h = vfe_hdr(&a, 9, 40002, 1234, VMQ_VSOCK_OP_REQUEST, 0);
        h.src_cid = 9;
        vfe_send(&a, &h, NULL);
        cr_assert(vfe_tx_done(&a, 5000), "the forged packet's buffer comes back");
        vfe_expect_nothing(&b, "a forged source");
        vfe_expect_nothing(&a, "a forged source is dropped, not answered");
        char *st = vmq_testbus_ok(&tb, 0, "$VMQCTL stats lv1");
        cr_assert(strstr(st, "vsock_forged:"), "vmqctl stats shows the device's counters: %s", st);
        cr_assert(strstr(st, "vsock_forged:      1\n"), "one forged packet counted: %s", st);
        free(st);

        /* With the channel: a connection, data both ways. */
        h = vfe_hdr(&a, 9, 40003, 1234, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        vfe_expect(&b, VMQ_VSOCK_OP_REQUEST, 3, "the channel lets the request through");
        h = vfe_hdr(&b, 3, 1234, 40003, VMQ_VSOCK_OP_RESPONSE, 0);
        vfe_send(&b, &h, NULL);
        vfe_expect(&a, VMQ_VSOCK_OP_RESPONSE, 9, "the response comes back");
        h = vfe_hdr(&a, 9, 40003, 1234, VMQ_VSOCK_OP_RW, 11);
        vfe_send(&a, &h, "hello, lv2!");
        char got[32] = {0};
        cr_assert(vfe_recv(&b, &h, got, 5000));
        cr_assert_eq(h.op, VMQ_VSOCK_OP_RW);
        cr_assert_str_eq(got, "hello, lv2!");
        vfe_post_rx(&b, 3);

        /* The channel closes: both ends are reset. */
        close_channel(ch);
        vfe_expect(&a, VMQ_VSOCK_OP_RST, 9, "the channel closed");
        vfe_expect(&b, VMQ_VSOCK_OP_RST, 3, "the channel closed");
        h = vfe_hdr(&a, 9, 40003, 1234, VMQ_VSOCK_OP_RW, 3);
        vfe_send(&a, &h, "late");
        vfe_expect(&a, VMQ_VSOCK_OP_RST, 9, "no connection any more");
        vfe_expect_nothing(&b, "data after the close");

        vfe_close(&a);
        vfe_close(&b);
        vmq_testbus_expect_clean_exit(&tb);
}

Test(vmqd_vsock, a_frontend_that_goes_resets_its_peers_and_may_come_back) {
        struct vfe a, b;
        char pa[600], pb[600];

        adopt_both();
        socket_of("lv1", pa, sizeof(pa));
        socket_of("lv2", pb, sizeof(pb));
        vfe_connect(&a, pa);
        vfe_connect(&b, pb);
        vfe_post_rx(&a, 8);
        vfe_post_rx(&b, 8);
        int fds_connected = vmq_testbus_vmqd_fds(&tb);

        /* One frontend per device: a second is closed at once. */
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, pa);
        cr_assert_eq(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
        struct pollfd p = {.fd = s, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 5000), 1, "the second frontend is not left hanging");
        char c;
        cr_assert_eq(recv(s, &c, 1, 0), 0, "it sees end of file");
        close(s);

        open_channel("lv1", "lv2");
        struct vmq_vsock_hdr h = vfe_hdr(&a, 9, 40010, 77, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        vfe_expect(&b, VMQ_VSOCK_OP_REQUEST, 3, "request");
        h = vfe_hdr(&b, 3, 77, 40010, VMQ_VSOCK_OP_RESPONSE, 0);
        vfe_send(&b, &h, NULL);
        vfe_expect(&a, VMQ_VSOCK_OP_RESPONSE, 9, "response");

        /* lv2's QEMU goes away mid-connection. */
        vfe_close(&b);
        vfe_expect(&a, VMQ_VSOCK_OP_RST, 9, "the peer's QEMU went away");

        /* A new QEMU connects: same CID, and connections work again. */
        vfe_connect(&b, pb);
        cr_assert_eq(b.cid, 9);
        vfe_post_rx(&b, 8);
        h = vfe_hdr(&a, 9, 40011, 77, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        vfe_expect(&b, VMQ_VSOCK_OP_REQUEST, 3, "after the re-connect");

        /* A frontend that breaks the stream is cut off, and no fd stays. */
        vfe_close(&b);
        vfe_expect(&a, VMQ_VSOCK_OP_RST, 9, "the half-open connection, when lv2's QEMU went");
        int bad = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        strcpy(sa.sun_path, pb);
        cr_assert_eq(connect(bad, (struct sockaddr *)&sa, sizeof(sa)), 0);
        uint32_t junk[3] = {1, 0x7 /* version 3 */, 0};
        cr_assert_eq(send(bad, junk, sizeof(junk), MSG_NOSIGNAL), (ssize_t)sizeof(junk));
        p.fd = bad;
        cr_assert_eq(poll(&p, 1, 5000), 1);
        cr_assert_leq(recv(bad, &c, 1, 0), 0, "a wrong version ends the connection");
        close(bad);
        /* and one that stops in the middle of a message */
        bad = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_eq(connect(bad, (struct sockaddr *)&sa, sizeof(sa)), 0);
        cr_assert_eq(send(bad, junk, 6, MSG_NOSIGNAL), 6);
        p.fd = bad;
        cr_assert_eq(poll(&p, 1, 5000), 1, "a stalled frontend is cut off within a second or so");
        cr_assert_leq(recv(bad, &c, 1, 0), 0);
        close(bad);
        /* vmqd still answers, and holds no more fds than with lv2 connected */
        free(vmq_testbus_ok(&tb, 0, "$VMQCTL list"));
        vfe_connect(&b, pb);
        cr_assert_leq(vmq_testbus_vmqd_fds(&tb), fds_connected, "no fd leaked");
        vfe_close(&a);
        vfe_close(&b);
        vmq_testbus_expect_clean_exit(&tb);
}

Test(vmqd_vsock, a_persistent_adoption_keeps_its_cid_across_a_restart) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        int r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv2", 2, "vsock_cid", "u",
                                 12, "persistent", "b", 1);
        succeeded(r, &e, "AdoptDomain lv2 persistent, CID 12");
        r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv1", 2, "vsock", "b", 1,
                             "persistent", "b", 1);
        succeeded(r, &e, "AdoptDomain lv1 persistent");
        char *file = vmq_testbus_ok(&tb, 0, "cat %s/state.json", tb.state_dir);
        cr_assert(strstr(file, "\"vsock_cid\": 12"), "%s", file);
        cr_assert(strstr(file, "\"vsock_cid\": 3"), "%s", file);
        free(file);

        cr_assert_eq(vmq_testbus_stop_vmqd(&tb, SIGTERM), 0);
        vmq_testbus_start_vmqd(&tb, "");
        char *out = property("lv2", "VsockCID");
        cr_assert(strstr(out, "u 12"), "%s", out);
        free(out);
        out = property("lv1", "VsockCID");
        cr_assert(strstr(out, "u 3"), "%s", out);
        free(out);
        vmq_testbus_wait_running(&tb, "lv2");
        struct vfe b;
        char path[600];
        socket_of("lv2", path, sizeof(path));
        vfe_connect(&b, path);
        cr_assert_eq(b.cid, 12, "the restored device serves the saved CID");
        vfe_close(&b);
        vmq_testbus_expect_clean_exit(&tb);
}

/* ---- the host's end: CID 2 through UNIX sockets (vmqd/vsock-host.c) ---- */

static int unix_connect(const char *path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        cr_assert_lt(strlen(path), sizeof(sa.sun_path));
        strcpy(sa.sun_path, path);
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(s, 0);
        cr_assert_eq(connect(s, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect %s: %s", path,
                     strerror(errno));
        struct timeval tv = {.tv_sec = 5};
        cr_assert_eq(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
        return s;
}

/* The host program's side sees end of file (or a reset) within 5 s. */
static void expect_closed(int s, const char *why) {
        char c;
        ssize_t n = recv(s, &c, 1, 0);
        cr_assert(n == 0 || (n < 0 && errno == ECONNRESET), "%s: recv gave %zd (%s)", why, n,
                  n < 0 ? strerror(errno) : "data");
        close(s);
}

/* Reads one line, up to and with its \n. */
static void read_line(int s, char *buf, size_t size) {
        size_t n = 0;
        while (n + 1 < size) {
                cr_assert_eq(recv(s, buf + n, 1, 0), 1, "a line from vmqd");
                if (buf[n++] == '\n')
                        break;
        }
        buf[n] = '\0';
}

Test(vmqd_vsock, host_programs_reach_guest_ports_with_connect_and_credit) {
        struct vfe a;
        char pa[600], host[600];

        adopt_both();
        char *prop = property("lv1", "VsockHostSocket");
        snprintf(host, sizeof(host), "%s/run/vsock-lv1.host", tb.dir);
        cr_assert(strstr(prop, host), "VsockHostSocket: %s", prop);
        free(prop);
        socket_of("lv1", pa, sizeof(pa));
        vfe_connect(&a, pa);
        vfe_post_rx(&a, 8);
        int fds_before = vmq_testbus_vmqd_fds(&tb);

        /* CONNECT, the guest accepts, OK with the host's port. */
        int s = unix_connect(host);
        cr_assert_eq(send(s, "CONNECT 5000\n", 13, MSG_NOSIGNAL), 13);
        struct vmq_vsock_hdr h;
        cr_assert(vfe_recv(&a, &h, NULL, 5000), "the guest is asked");
        cr_assert(h.op == VMQ_VSOCK_OP_REQUEST && h.src_cid == 2 && h.dst_port == 5000 &&
                          h.src_port >= 49152 && h.buf_alloc == 256 * 1024,
                  "a request from 2:%u to port %u, op %s", h.src_port, h.dst_port,
                  vmq_vsock_op_to_string(h.op));
        uint32_t hp = h.src_port;
        struct vmq_vsock_hdr r = vfe_hdr(&a, 2, 5000, hp, VMQ_VSOCK_OP_RESPONSE, 0);
        r.buf_alloc = 65536; /* the guest's buffer: vmqd sends no more than that unread */
        vfe_send(&a, &r, NULL);
        char line[64], want[64];
        read_line(s, line, sizeof(line));
        snprintf(want, sizeof(want), "OK %u\n", hp);
        cr_assert_str_eq(line, want);

        /* 150000 bytes from the host: no more in flight than the guest's
         * credit, and all of it, in order, once the guest gives credit. */
        static uint8_t out[150000], got[150000];
        for (size_t i = 0; i < sizeof(out); i++)
                out[i] = (uint8_t)(i * 31 + i / 4093);
        cr_assert_eq(send(s, out, sizeof(out), MSG_NOSIGNAL), (ssize_t)sizeof(out));
        size_t n = 0;
        uint32_t fwd = 0;
        bool asked = false;
        while (n < sizeof(out)) {
                cr_assert(vfe_recv(&a, &h, got + n, 5000), "data stops at %zu bytes", n);
                vfe_post_rx(&a, 1);
                if (h.op == VMQ_VSOCK_OP_CREDIT_REQUEST) {
                        asked = true;
                } else {
                        cr_assert_eq(h.op, VMQ_VSOCK_OP_RW, "got %s", vmq_vsock_op_to_string(h.op));
                        n += h.len;
                }
                cr_assert_leq(n - fwd, 65536, "%zu bytes sent with credit for %u", n, fwd + 65536);
                if (n - fwd == 65536 || n == sizeof(out)) {
                        /* the application read it all: tell vmqd */
                        fwd = (uint32_t)n;
                        r = vfe_hdr(&a, 2, 5000, hp, VMQ_VSOCK_OP_CREDIT_UPDATE, 0);
                        r.buf_alloc = 65536;
                        r.fwd_cnt = fwd;
                        vfe_send(&a, &r, NULL);
                }
        }
        cr_assert_eq(memcmp(out, got, sizeof(out)), 0, "the stream, whole and in order");
        cr_assert(asked, "vmqd asked for credit when it had none");

        /* The guest answers, the host reads. */
        r = vfe_hdr(&a, 2, 5000, hp, VMQ_VSOCK_OP_RW, 4);
        vfe_send(&a, &r, "pong");
        char buf[8];
        cr_assert_eq(recv(s, buf, 4, MSG_WAITALL), 4);
        cr_assert_eq(memcmp(buf, "pong", 4), 0);

        /* The host stops sending; then the guest closes: the socket ends. */
        cr_assert_eq(shutdown(s, SHUT_WR), 0);
        cr_assert(vfe_recv(&a, &h, NULL, 5000));
        cr_assert(h.op == VMQ_VSOCK_OP_SHUTDOWN && h.flags == VMQ_VSOCK_SHUTDOWN_SEND,
                  "EOF is a shutdown of the host's sending (%s, flags %u)",
                  vmq_vsock_op_to_string(h.op), h.flags);
        r = vfe_hdr(&a, 2, 5000, hp, VMQ_VSOCK_OP_SHUTDOWN, 0);
        r.flags = VMQ_VSOCK_SHUTDOWN_SEND | VMQ_VSOCK_SHUTDOWN_RCV;
        vfe_send(&a, &r, NULL);
        vfe_expect(&a, VMQ_VSOCK_OP_RST, 2, "both sides done: the host side resets");
        expect_closed(s, "the guest closed");

        /* A guest that refuses: the program's socket closes. */
        s = unix_connect(host);
        cr_assert_eq(send(s, "CONNECT 22\n", 11, MSG_NOSIGNAL), 11);
        cr_assert(vfe_recv(&a, &h, NULL, 5000));
        cr_assert_eq(h.op, VMQ_VSOCK_OP_REQUEST);
        r = vfe_hdr(&a, 2, 22, h.src_port, VMQ_VSOCK_OP_RST, 0);
        vfe_send(&a, &r, NULL);
        expect_closed(s, "the guest refused");

        /* Bad lines are closed, and so is a port on a domain whose QEMU is
         * not there (lv2 has a device, but no frontend). */
        static const char *const bad[] = {"HELLO\n",       "CONNECT\n",
                                          "CONNECT -1\n",  "CONNECT 4294967296\n",
                                          "CONNECT 5 6\n", "CONNECT 5000\nearly bytes"};
        for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                s = unix_connect(host);
                cr_assert_eq(send(s, bad[i], strlen(bad[i]), MSG_NOSIGNAL),
                             (ssize_t)strlen(bad[i]));
                expect_closed(s, bad[i]);
        }
        s = unix_connect(host);
        cr_assert_eq(send(s, "0123456789012345678901234567890123456789", 40, MSG_NOSIGNAL), 40);
        expect_closed(s, "a line that never ends");
        vfe_expect_nothing(&a, "no bad line reached the guest");
        snprintf(host, sizeof(host), "%s/run/vsock-lv2.host", tb.dir);
        s = unix_connect(host);
        cr_assert_eq(send(s, "CONNECT 5000\n", 13, MSG_NOSIGNAL), 13);
        expect_closed(s, "lv2's QEMU is not connected");

        cr_assert_leq(vmq_testbus_vmqd_fds(&tb), fds_before, "no fd leaked");
        vfe_close(&a);
        vmq_testbus_expect_clean_exit(&tb);
}

static int unix_listen(const char *path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        cr_assert_lt(strlen(path), sizeof(sa.sun_path));
        strcpy(sa.sun_path, path);
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(s, 0);
        cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
        cr_assert_eq(listen(s, 4), 0);
        return s;
}

Test(vmqd_vsock, guests_reach_host_listeners_and_a_guest_that_overruns_is_reset) {
        struct vfe a;
        char pa[600], path[600];

        adopt_both();
        socket_of("lv1", pa, sizeof(pa));
        vfe_connect(&a, pa);
        vfe_post_rx(&a, 8);
        int fds_before = vmq_testbus_vmqd_fds(&tb);
        snprintf(path, sizeof(path), "%s/run/vsock-lv1.host_6000", tb.dir);
        int l = unix_listen(path);

        /* Nobody on 6001; no SEQPACKET to the host; CID 1 is nobody's. */
        struct vmq_vsock_hdr h = vfe_hdr(&a, 2, 40000, 6001, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        vfe_expect(&a, VMQ_VSOCK_OP_RST, 2, "no listener on port 6001");
        h = vfe_hdr(&a, 2, 40000, 6000, VMQ_VSOCK_OP_REQUEST, 0);
        h.type = VMQ_VSOCK_TYPE_SEQPACKET;
        vfe_send(&a, &h, NULL);
        h.type = VMQ_VSOCK_TYPE_STREAM;
        vfe_expect(&a, VMQ_VSOCK_OP_RST, 2, "SEQPACKET to the host");

        /* A connection to 6000: both ways. */
        h = vfe_hdr(&a, 2, 40000, 6000, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        vfe_expect(&a, VMQ_VSOCK_OP_RESPONSE, 2, "the listener is there");
        int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        cr_assert_geq(s, 0);
        struct timeval tv = {.tv_sec = 5};
        cr_assert_eq(setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
        h = vfe_hdr(&a, 2, 40000, 6000, VMQ_VSOCK_OP_RW, 5);
        vfe_send(&a, &h, "hello");
        char buf[8];
        cr_assert_eq(recv(s, buf, 5, MSG_WAITALL), 5);
        cr_assert_eq(memcmp(buf, "hello", 5), 0);
        cr_assert_eq(send(s, "world", 5, MSG_NOSIGNAL), 5);
        uint8_t got[4096];
        cr_assert(vfe_recv(&a, &h, got, 5000));
        cr_assert(h.op == VMQ_VSOCK_OP_RW && h.len == 5 && memcmp(got, "world", 5) == 0);
        cr_assert(h.src_port == 6000 && h.dst_port == 40000);

        /* The guest ignores its credit while the program does not read:
         * once vmqd's buffer for it is full, the connection is reset. */
        static uint8_t chunk[16000];
        bool reset = false;
        for (unsigned i = 0; i < 100 && !reset; i++) {
                h = vfe_hdr(&a, 2, 40000, 6000, VMQ_VSOCK_OP_RW, sizeof(chunk));
                vfe_send(&a, &h, chunk);
                cr_assert(vfe_tx_done(&a, 5000));
                while (vfe_recv(&a, &h, NULL, 0)) {
                        vfe_post_rx(&a, 1);
                        if (h.op == VMQ_VSOCK_OP_RST)
                                reset = true;
                }
        }
        cr_assert(reset, "1.6 MB past a 256 KiB credit and no reset");
        close(s);

        /* The program closes: the guest is told, and its next bytes earn a
         * reset. */
        h = vfe_hdr(&a, 2, 40001, 6000, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        vfe_expect(&a, VMQ_VSOCK_OP_RESPONSE, 2, "a second connection");
        s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        cr_assert_geq(s, 0);
        close(s);
        cr_assert(vfe_recv(&a, &h, NULL, 5000));
        cr_assert(h.op == VMQ_VSOCK_OP_SHUTDOWN && (h.flags & VMQ_VSOCK_SHUTDOWN_SEND));
        h = vfe_hdr(&a, 2, 40001, 6000, VMQ_VSOCK_OP_RW, 3);
        vfe_send(&a, &h, "bye");
        vfe_expect(&a, VMQ_VSOCK_OP_RST, 2, "nobody reads any more");

        close(l);
        unlink(path);
        cr_assert_leq(vmq_testbus_vmqd_fds(&tb), fds_before, "no fd leaked");
        vfe_close(&a);
        vmq_testbus_expect_clean_exit(&tb);
}

/* Asks vmqd's identity service one question on connection @port; the
 * answer's line (without its \n) goes to @buf. */
static void ask(struct vfe *a, uint32_t port, const char *q, char *buf, size_t size) {
        struct vmq_vsock_hdr h =
                vfe_hdr(a, 2, port, VSOCK_IDENTITY_PORT, VMQ_VSOCK_OP_RW, (uint32_t)strlen(q));
        static uint8_t got[4096];
        size_t n = 0;

        vfe_send(a, &h, q);
        while (!memchr(buf, '\n', n)) {
                cr_assert(vfe_recv(a, &h, got, 5000), "an answer to '%s'", q);
                vfe_post_rx(a, 1);
                if (h.op == VMQ_VSOCK_OP_CREDIT_UPDATE)
                        continue;
                cr_assert_eq(h.op, VMQ_VSOCK_OP_RW, "'%s' got %s", q, vmq_vsock_op_to_string(h.op));
                cr_assert_lt(n + h.len, size);
                memcpy(buf + n, got, h.len);
                n += h.len;
        }
        cr_assert_eq(buf[n - 1], '\n', "one answer at a time");
        buf[n - 1] = '\0';
}

/* Connects guest a's port @port to the identity service. */
static void connect_identity(struct vfe *a, uint32_t port) {
        struct vmq_vsock_hdr h = vfe_hdr(a, 2, port, VSOCK_IDENTITY_PORT, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(a, &h, NULL);
        vfe_expect(a, VMQ_VSOCK_OP_RESPONSE, 2, "vmqd serves the identity port itself");
}

Test(vmqd_vsock, the_identity_port_names_peers_only_through_a_channel) {
        struct vfe a;
        char pa[600], ans[256], uuid2[64];

        adopt_both();
        socket_of("lv1", pa, sizeof(pa));
        vfe_connect(&a, pa);
        vfe_post_rx(&a, 8);
        int fds_before = vmq_testbus_vmqd_fds(&tb);
        struct vmq_vsock_hdr h;
        connect_identity(&a, 41000);

        ask(&a, 41000, "WHO 9\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "NONE 9", "no channel yet: lv2 is not lv1's peer");
        ask(&a, 41000, "WHO 3\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "OK 3 lv1 6695eb01-f6a4-8304-79aa-97f2502e1901", "itself");
        ask(&a, 41000, "WHO 2\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "OK 2 host -");
        uint32_t ch = open_channel("lv1", "lv2");
        ask(&a, 41000, "WHO 9\r\n", ans, sizeof(ans));
        snprintf(uuid2, sizeof(uuid2), "OK 9 lv2 6695eb01-f6a4-8304-79aa-97f2502e1902");
        cr_assert_str_eq(ans, uuid2, "a channel makes lv2 lv1's peer");
        ask(&a, 41000, "WHO 7\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "NONE 7", "nobody's CID");
        ask(&a, 41000, "WHO 4294967296\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "ERR bad CID");
        ask(&a, 41000, "HELLO\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "ERR expected WHO <cid> or NAME <name>");
        close_channel(ch);
        ask(&a, 41000, "WHO 9\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "NONE 9", "the channel closed");

        /* A line without end: an error, then the end of the stream. */
        static char junk[200];
        memset(junk, 'x', sizeof(junk));
        h = vfe_hdr(&a, 2, 41000, VSOCK_IDENTITY_PORT, VMQ_VSOCK_OP_RW, sizeof(junk));
        vfe_send(&a, &h, junk);
        bool err = false, shut = false;
        static uint8_t got[4096];
        while (!shut && vfe_recv(&a, &h, got, 5000)) {
                vfe_post_rx(&a, 1);
                if (h.op == VMQ_VSOCK_OP_RW)
                        err |= h.len >= 18 && memcmp(got, "ERR line too long\n", 18) == 0;
                shut |= h.op == VMQ_VSOCK_OP_SHUTDOWN;
        }
        cr_assert(err && shut, "a line too long: ERR, then a shutdown");
        h = vfe_hdr(&a, 2, 41000, VSOCK_IDENTITY_PORT, VMQ_VSOCK_OP_RST, 0);
        vfe_send(&a, &h, NULL);
        cr_assert(vfe_tx_done(&a, 5000));
        usleep(100 * 1000);
        cr_assert_leq(vmq_testbus_vmqd_fds(&tb), fds_before, "no fd leaked");
        vfe_close(&a);
}

/*
 * The guest of a domain adopted without vsock, as QEMU's ivshmem-doorbell
 * and vmq's guest transport make it: the test joins the domain's ivshmem
 * server, maps the region it is given and rings the monitor's eventfd.
 */
struct ivs_guest {
        int sock, shm, doorbell;
        void *region;
        size_t size;
        struct vmq_ivshmem *v;
};

static void ivs_ring(void *userdata, uint32_t peer, uint32_t vector) {
        struct ivs_guest *g = userdata;
        uint64_t one = 1;
        (void)peer;
        (void)vector;
        cr_assert_eq(write(g->doorbell, &one, sizeof(one)), (ssize_t)sizeof(one));
}

static void ivs_join(struct ivs_guest *g, const char *machine) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct timeval tv = {.tv_sec = 5};
        struct stat st;

        char path[600];
        g->shm = g->doorbell = -1;
        snprintf(path, sizeof(path), "%s/run/ivshmem-%s.sock", tb.dir, machine);
        cr_assert_lt(strlen(path), sizeof(sa.sun_path));
        memcpy(sa.sun_path, path, strlen(path) + 1);
        g->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(g->sock, 0);
        cr_assert_eq(setsockopt(g->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
        cr_assert_eq(connect(g->sock, (struct sockaddr *)&sa, sizeof(sa)), 0, "%s: %m",
                     sa.sun_path);
        /* version, own id, the region (-1 with its fd), then each peer's
         * eventfds: the first of the monitor's is its doorbell */
        for (unsigned n = 0; g->shm < 0 || g->doorbell < 0; n++) {
                int64_t value;
                int fd = -1;
                char cbuf[CMSG_SPACE(sizeof(int))];
                struct iovec iov = {.iov_base = &value, .iov_len = sizeof(value)};
                struct msghdr mh = {.msg_iov = &iov,
                                    .msg_iovlen = 1,
                                    .msg_control = cbuf,
                                    .msg_controllen = sizeof(cbuf)};
                cr_assert_lt(n, 16, "the server's greeting lacks the region or the doorbell");
                cr_assert_eq(recvmsg(g->sock, &mh, MSG_CMSG_CLOEXEC), (ssize_t)sizeof(value),
                             "the ivshmem server's greeting: %m");
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                if (c && c->cmsg_type == SCM_RIGHTS)
                        memcpy(&fd, CMSG_DATA(c), sizeof(fd));
                if (fd >= 0 && value == -1 && g->shm < 0)
                        g->shm = fd;
                else if (fd >= 0 && value == 0 && g->doorbell < 0)
                        g->doorbell = fd;
                else if (fd >= 0)
                        close(fd);
        }
        cr_assert_eq(fstat(g->shm, &st), 0);
        g->size = (size_t)st.st_size;
        g->region = mmap(NULL, g->size, PROT_READ | PROT_WRITE, MAP_SHARED, g->shm, 0);
        cr_assert_neq(g->region, MAP_FAILED);
        int r = vmq_ivshmem_open_region(NULL, g->region, g->size, ivs_ring, g, &g->v);
        cr_assert_eq(r, 0, "vmq_ivshmem_open_region: %s", strerror(-r));
}

static void ivs_leave(struct ivs_guest *g) {
        g->v = vmq_ivshmem_free(g->v);
        munmap(g->region, g->size);
        close(g->shm);
        close(g->doorbell);
        close(g->sock);
}

/* The next message for the guest, which must be of @kind. */
static struct vmq_ivshmem_msg *ivs_expect(struct ivs_guest *g, enum vmq_ivshmem_kind kind,
                                          const char *why) {
        struct vmq_ivshmem_msg *msg = NULL;
        int r = vmq_ivshmem_recv(g->v, VMQ_IVSHMEM_ANY_CHANNEL, 5000 * 1000, &msg);
        cr_assert_eq(r, 0, "%s: %s", why, strerror(-r));
        cr_assert_eq(msg->kind, kind, "%s: a %s", why, vmq_ivshmem_kind_to_string(msg->kind));
        return msg;
}

/* A SEQPACKET header from f's own CID. */
static struct vmq_vsock_hdr seq_hdr(const struct vfe *f, uint64_t dst_cid, uint32_t src_port,
                                    uint32_t dst_port, uint16_t op, uint32_t len) {
        struct vmq_vsock_hdr h = vfe_hdr(f, dst_cid, src_port, dst_port, op, len);
        h.type = VMQ_VSOCK_TYPE_SEQPACKET;
        return h;
}

/* vfe_expect(), and the receive buffer it used given back. */
static void expect_and_refill(struct vfe *f, uint16_t op, uint64_t src_cid, const char *why) {
        vfe_expect(f, op, src_cid, why);
        vfe_post_rx(f, 1);
}

/* lv1 adopted with vsock (the test its driver, a), lv3 without (the test
 * its guest over ivshmem, g), both running. */
static void lv1_and_lv3(struct vfe *a, struct ivs_guest *g) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        char pa[600];
        int r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv1", 1, "vsock", "b", 1);
        succeeded(r, &e, "AdoptDomain lv1 vsock");
        r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv3", 0);
        succeeded(r, &e, "AdoptDomain lv3 without vsock");
        vmq_testbus_wait_running(&tb, "lv1");
        vmq_testbus_wait_running(&tb, "lv3");
        socket_of("lv1", pa, sizeof(pa));
        vfe_connect(a, pa);
        vfe_post_rx(a, 8);
        ivs_join(g, "lv3");
}

/* lv1 connects to lv3 (CID 4) from @port to @to: the response, and lv3's
 * HELLO for it, whose channel is returned. */
static uint32_t lv1_connects(struct vfe *a, struct ivs_guest *g, uint16_t type, uint32_t port,
                             uint32_t to) {
        struct vmq_vsock_hdr h = vfe_hdr(a, 4, port, to, VMQ_VSOCK_OP_REQUEST, 0);
        h.type = type;
        vfe_send(a, &h, NULL);
        expect_and_refill(a, VMQ_VSOCK_OP_RESPONSE, 4, "lv3's port answers at once");
        struct vmq_ivshmem_msg *msg = ivs_expect(g, VMQ_IVSHMEM_HELLO, "the connection's HELLO");
        uint32_t ch = msg->channel;
        cr_assert_eq(msg->tag, (uint64_t)port << 32 | to, "the ports, in the HELLO's tag");
        cr_assert_str_eq(msg->peer.name, "lv1", "stamped: the guest that connected");
        free(msg);
        return ch;
}

Test(vmqd_vsock, a_machine_without_a_device_is_a_peer_whose_messages_carry_the_data) {
        struct ivs_guest g;
        struct vfe a;
        char ans[256];
        int r;
        static uint8_t big[10000], got[VMQ_VSOCK_MSG_CHUNK + 64];

        lv1_and_lv3(&a, &g);
        int fds_before = vmq_testbus_vmqd_fds(&tb);

        struct vmq_vsock_hdr h;
        connect_identity(&a, 41000);
        vfe_post_rx(&a, 1);
        ask(&a, 41000, "NAME lv3\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "NONE lv3", "no channel, no CID");
        ask(&a, 41000, "NAME lv3;rm\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "ERR bad name");

        uint32_t ch = open_channel("lv1", "lv3");
        free(ivs_expect(&g, VMQ_IVSHMEM_HELLO, "the channel's HELLO"));
        ask(&a, 41000, "NAME lv3\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "OK 4 lv3 6695eb01-f6a4-8304-79aa-97f2502e1903",
                         "the channel gives lv3 the next free CID");
        ask(&a, 41000, "WHO 4\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "OK 4 lv3 6695eb01-f6a4-8304-79aa-97f2502e1903");
        ask(&a, 41000, "NAME lv1\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "OK 3 lv1 6695eb01-f6a4-8304-79aa-97f2502e1901", "itself");

        /* SEQPACKET: the connection is a channel whose HELLO names lv1 and
         * carries the ports; a record is one message each way. */
        h = seq_hdr(&a, 4, 42000, 5000, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        expect_and_refill(&a, VMQ_VSOCK_OP_RESPONSE, 4, "lv3's port answers at once");
        struct vmq_ivshmem_msg *msg = ivs_expect(&g, VMQ_IVSHMEM_HELLO, "the connection's HELLO");
        uint32_t conn = msg->channel;
        cr_assert_neq(conn, ch, "a channel of its own");
        cr_assert_str_eq(msg->peer.name, "lv1", "stamped: the guest that connected");
        cr_assert_eq(msg->tag, (uint64_t)42000 << 32 | 5000, "the ports, in the HELLO's tag");
        free(msg);
        h = seq_hdr(&a, 4, 42000, 5000, VMQ_VSOCK_OP_RW, 3);
        vfe_send(&a, &h, "rec");
        h = seq_hdr(&a, 4, 42000, 5000, VMQ_VSOCK_OP_RW, 5);
        h.flags = VMQ_VSOCK_SEQ_EOM;
        vfe_send(&a, &h, "ord-1");
        msg = ivs_expect(&g, VMQ_IVSHMEM_DATA, "a record");
        cr_assert_eq(msg->channel, conn);
        cr_assert_eq(msg->len, 8, "the two pieces of one record are one message");
        cr_assert_arr_eq(msg->data, "record-1", 8);
        free(msg);
        vmq_test_source_pattern(7, big, 3000);
        r = vmq_ivshmem_send(g.v, conn, big, 3000, 0);
        cr_assert_eq(r, 0, "%s", strerror(-r));
        cr_assert(vfe_recv(&a, &h, got, 5000), "lv3's record");
        cr_assert_eq(h.op, VMQ_VSOCK_OP_RW);
        cr_assert_eq(h.type, VMQ_VSOCK_TYPE_SEQPACKET);
        cr_assert_eq(h.len, 3000);
        cr_assert_eq(h.flags & VMQ_VSOCK_SEQ_EOM, VMQ_VSOCK_SEQ_EOM, "the record ends there");
        cr_assert_arr_eq(got, big, 3000);
        vfe_post_rx(&a, 1);

        /* STREAM: cut into messages of at most VMQ_VSOCK_MSG_CHUNK bytes;
         * a shutdown is an empty VMQ_TAG_DONE message each way. */
        h = vfe_hdr(&a, 4, 42001, 5001, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        expect_and_refill(&a, VMQ_VSOCK_OP_RESPONSE, 4, "a stream");
        msg = ivs_expect(&g, VMQ_IVSHMEM_HELLO, "the stream's HELLO");
        uint32_t sconn = msg->channel;
        cr_assert_eq(msg->tag, (uint64_t)42001 << 32 | 5001);
        free(msg);
        vmq_test_source_pattern(8, big, sizeof(big));
        h = vfe_hdr(&a, 4, 42001, 5001, VMQ_VSOCK_OP_RW, sizeof(big));
        vfe_send(&a, &h, big);
        size_t have = 0;
        while (have < sizeof(big)) {
                msg = ivs_expect(&g, VMQ_IVSHMEM_PAGE, "a piece of the stream");
                cr_assert_eq(msg->channel, sconn);
                cr_assert_leq(msg->len, VMQ_VSOCK_MSG_CHUNK);
                cr_assert_arr_eq(msg->data, big + have, msg->len);
                have += msg->len;
                free(msg);
        }
        cr_assert_eq(have, sizeof(big), "every byte, in order");
        cr_assert_eq(vmq_ivshmem_send(g.v, sconn, "answer", 6, 0), 0);
        cr_assert_eq(vmq_ivshmem_send(g.v, sconn, NULL, 0, 0x656e6f64ull), 0);
        cr_assert(vfe_recv(&a, &h, got, 5000));
        cr_assert_eq(h.op, VMQ_VSOCK_OP_RW);
        cr_assert_eq(h.len, 6);
        cr_assert_arr_eq(got, "answer", 6);
        vfe_post_rx(&a, 1);
        expect_and_refill(&a, VMQ_VSOCK_OP_SHUTDOWN, 4, "lv3 sends no more");
        h = vfe_hdr(&a, 4, 42001, 5001, VMQ_VSOCK_OP_SHUTDOWN, 0);
        h.flags = VMQ_VSOCK_SHUTDOWN_SEND | VMQ_VSOCK_SHUTDOWN_RCV;
        vfe_send(&a, &h, NULL);
        msg = ivs_expect(&g, VMQ_IVSHMEM_DATA, "lv1's shutdown");
        cr_assert_eq(msg->len, 0);
        cr_assert_eq(msg->tag, 0x656e6f64ull, "VMQ_TAG_DONE");
        free(msg);
        msg = ivs_expect(&g, VMQ_IVSHMEM_CLOSE, "both ways done: the channel closes");
        cr_assert_eq(msg->channel, sconn);
        free(msg);
        expect_and_refill(&a, VMQ_VSOCK_OP_RST, 4, "both ways done");

        /* The guest resets a connection: its channel closes. */
        h = seq_hdr(&a, 4, 42002, 5002, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        expect_and_refill(&a, VMQ_VSOCK_OP_RESPONSE, 4, "one more");
        msg = ivs_expect(&g, VMQ_IVSHMEM_HELLO, "its HELLO");
        uint32_t third = msg->channel;
        free(msg);
        h = seq_hdr(&a, 4, 42002, 5002, VMQ_VSOCK_OP_RST, 0);
        vfe_send(&a, &h, NULL);
        msg = ivs_expect(&g, VMQ_IVSHMEM_CLOSE, "a reset closes the channel");
        cr_assert_eq(msg->channel, third);
        free(msg);
        r = vmq_ivshmem_send(g.v, third, "late", 4, 0);
        cr_assert(r == -EPIPE || r == -ENXIO, "sending on it: %s", strerror(-r));

        /* The channel between the machines closes: their connections are
         * reset, and no new one opens. */
        close_channel(ch);
        free(ivs_expect(&g, VMQ_IVSHMEM_CLOSE, "the channel's CLOSE"));
        expect_and_refill(&a, VMQ_VSOCK_OP_RST, 4, "the channel closed");
        msg = ivs_expect(&g, VMQ_IVSHMEM_CLOSE, "the connection's channel closes too");
        cr_assert_eq(msg->channel, conn);
        free(msg);
        h = seq_hdr(&a, 4, 42003, 5000, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        expect_and_refill(&a, VMQ_VSOCK_OP_RST, 4, "no channel, no connection");
        ask(&a, 41000, "NAME lv3\n", ans, sizeof(ans));
        cr_assert_str_eq(ans, "NONE lv3", "no channel: not lv1's peer");

        h = vfe_hdr(&a, 2, 41000, VSOCK_IDENTITY_PORT, VMQ_VSOCK_OP_RST, 0);
        vfe_send(&a, &h, NULL);
        cr_assert(vfe_tx_done(&a, 5000));
        usleep(100 * 1000);
        cr_assert_leq(vmq_testbus_vmqd_fds(&tb), fds_before, "no fd leaked");
        ivs_leave(&g);
        vfe_close(&a);
        vmq_testbus_expect_clean_exit(&tb);
}

/* Reads packets of connection (from @cid) until @len bytes came, into @buf;
 * with @eom, the last must end the record. */
static void read_reflection(struct vfe *a, uint64_t cid, uint8_t *buf, size_t len, bool eom) {
        static uint8_t piece[4096];
        struct vmq_vsock_hdr h;
        size_t have = 0;

        while (have < len) {
                cr_assert(vfe_recv(a, &h, piece, 10000), "%zu of %zu bytes came back", have, len);
                vfe_post_rx(a, 1);
                cr_assert_eq(h.src_cid, cid);
                if (h.op == VMQ_VSOCK_OP_CREDIT_UPDATE || h.op == VMQ_VSOCK_OP_CREDIT_REQUEST)
                        continue;
                cr_assert_eq(h.op, VMQ_VSOCK_OP_RW, "got %s", vmq_vsock_op_to_string(h.op));
                cr_assert_leq(have + h.len, len, "more than was sent");
                memcpy(buf + have, piece, h.len);
                have += h.len;
                if (eom)
                        cr_assert_eq(!!(h.flags & VMQ_VSOCK_SEQ_EOM), have == len,
                                     "the record ends with its last byte, not before");
        }
}

/* A real micro-VM (the `echo` image, on /dev/kvm) as a vsock peer: it
 * reflects every message, so records come back whole and the stream in
 * order. */
Test(vmqd_vsock, a_micro_vm_echoes_records_and_streams) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        struct vfe a;
        char pa[600], ans[256];
        static uint8_t sent[10000], back[10000];
        unsigned cid = 0;

        /* a skipped test's .fini does not run: nothing may be left */
        if (!vmq_test_have_kvm())
                down();
        vmq_test_need_kvm();
        int r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv1", 1, "vsock", "b", 1);
        succeeded(r, &e, "AdoptDomain lv1 vsock");
        vmq_testbus_wait_running(&tb, "lv1");
        free(vmq_testbus_ok(&tb, 0, "$VMQCTL create echo0 --image echo --start"));
        socket_of("lv1", pa, sizeof(pa));
        vfe_connect(&a, pa);
        vfe_post_rx(&a, 8);
        uint32_t ch = open_channel("lv1", "echo0");
        connect_identity(&a, 41000);
        vfe_post_rx(&a, 1);
        ask(&a, 41000, "NAME echo0\n", ans, sizeof(ans));
        cr_assert_eq(sscanf(ans, "OK %u echo0 ", &cid), 1, "the micro-VM's CID: %s", ans);
        cr_assert_geq(cid, 4);

        struct vmq_vsock_hdr h = seq_hdr(&a, cid, 43000, 7, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        expect_and_refill(&a, VMQ_VSOCK_OP_RESPONSE, cid, "the micro-VM's port");
        for (unsigned i = 0; i < 20; i++) {
                uint32_t len = (i * 733u) % 5000u + 1u;
                vmq_test_source_pattern(i, sent, len);
                h = seq_hdr(&a, cid, 43000, 7, VMQ_VSOCK_OP_RW, len);
                h.flags = VMQ_VSOCK_SEQ_EOM;
                vfe_send(&a, &h, sent);
                read_reflection(&a, cid, back, len, true);
                cr_assert_arr_eq(back, sent, len, "record %u (%u bytes) came back changed", i, len);
        }

        h = vfe_hdr(&a, cid, 43001, 8, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        expect_and_refill(&a, VMQ_VSOCK_OP_RESPONSE, cid, "a stream");
        vmq_test_source_pattern(99, sent, sizeof(sent));
        h = vfe_hdr(&a, cid, 43001, 8, VMQ_VSOCK_OP_RW, sizeof(sent));
        vfe_send(&a, &h, sent);
        read_reflection(&a, cid, back, sizeof(sent), false);
        cr_assert_arr_eq(back, sent, sizeof(sent), "the stream came back changed");

        /* their channel closes: both connections are reset */
        close_channel(ch);
        expect_and_refill(&a, VMQ_VSOCK_OP_RST, cid, "the channel closed");
        expect_and_refill(&a, VMQ_VSOCK_OP_RST, cid, "the channel closed");
        char *st = vmq_testbus_ok(&tb, 0, "$VMQCTL info echo0");
        vmq_assert_has(st, "running");
        free(st);
        vfe_close(&a);
        vmq_testbus_expect_clean_exit(&tb);
}

/* Sends one packet and waits until vmqd has taken it (the test's tx ring
 * has 16 buffers). */
static void send_taken(struct vfe *a, const struct vmq_vsock_hdr *h, const void *payload) {
        vfe_send(a, h, payload);
        cr_assert(vfe_tx_done(a, 5000), "vmqd takes the packet");
}

/* Whether a reset from @cid came among the packets waiting now (others
 * are dropped). */
static bool reset_came(struct vfe *a, uint64_t cid) {
        struct vmq_vsock_hdr h;
        bool reset = false;
        while (vfe_recv(a, &h, NULL, 0)) {
                vfe_post_rx(a, 1);
                reset |= h.op == VMQ_VSOCK_OP_RST && h.src_cid == cid;
        }
        return reset;
}

/* Reads lv3's queue on channel @ch until its CLOSE, or until nothing more
 * comes (a CLOSE that found the queue full is lost: the core's rule), and
 * checks that the channel is closed; returns the payload bytes that came
 * on it. */
static size_t drain_until_close(struct ivs_guest *g, uint32_t ch) {
        size_t bytes = 0;
        for (;;) {
                struct vmq_ivshmem_msg *msg = NULL;
                int r = vmq_ivshmem_recv(g->v, ch, 500 * 1000, &msg);
                if (r == -ETIMEDOUT)
                        break;
                cr_assert_eq(r, 0, "channel %u: %s", ch, strerror(-r));
                bool closed = msg->kind == VMQ_IVSHMEM_CLOSE;
                bytes += msg->len;
                free(msg);
                if (closed)
                        return bytes;
        }
        int r = vmq_ivshmem_send(g->v, ch, "?", 1, 0);
        cr_assert(r == -EPIPE || r == -ENXIO, "channel %u is closed, sending on it: %s", ch,
                  strerror(-r));
        return bytes;
}

/* A guest that breaks a bridge's rules (a record past 64 KiB, more than its
 * credit, more small messages than the queue holds) and a machine that
 * sends a record the guest cannot take: each such connection is reset and
 * its channel closed, and the next connection works. */
Test(vmqd_vsock, a_bridge_resets_connections_that_break_its_rules) {
        struct ivs_guest g;
        struct vfe a;
        static uint8_t piece[16000], big[300000];
        struct vmq_vsock_hdr h;
        struct vmq_ivshmem_msg *msg;

        lv1_and_lv3(&a, &g);
        int fds_before = vmq_testbus_vmqd_fds(&tb);
        (void)open_channel("lv1", "lv3");
        free(ivs_expect(&g, VMQ_IVSHMEM_HELLO, "the channel's HELLO"));

        /* A record that grows past 64 KiB. */
        uint32_t c1 = lv1_connects(&a, &g, VMQ_VSOCK_TYPE_SEQPACKET, 44000, 6000);
        for (int i = 0; i < 5; i++) {
                h = seq_hdr(&a, 4, 44000, 6000, VMQ_VSOCK_OP_RW, sizeof(piece));
                send_taken(&a, &h, piece);
        }
        expect_and_refill(&a, VMQ_VSOCK_OP_RST, 4, "80,000 bytes without an end of record");
        cr_assert_eq(drain_until_close(&g, c1), 0, "no piece of the record reached lv3");

        /* More than its credit, while lv3 reads nothing. */
        uint32_t c2 = lv1_connects(&a, &g, VMQ_VSOCK_TYPE_STREAM, 44001, 6001);
        size_t sent = 0;
        bool reset = false;
        while (!reset && sent < 8u << 20) {
                h = vfe_hdr(&a, 4, 44001, 6001, VMQ_VSOCK_OP_RW, sizeof(piece));
                send_taken(&a, &h, piece);
                sent += sizeof(piece);
                reset = reset_came(&a, 4);
        }
        cr_assert(reset, "%zu bytes and no reset", sent);
        size_t got = drain_until_close(&g, c2);
        cr_assert_lt(got, sent, "what lv3 had no room for stayed in vmqd, and went");
        cr_assert_geq(sent - got, VMQ_VSOCK_MSG_BUF_ALLOC, "the reset came past the credit");

        /* Small pieces, more than a connection's queue holds. */
        uint32_t c3 = lv1_connects(&a, &g, VMQ_VSOCK_TYPE_STREAM, 44002, 6002);
        unsigned n = 0;
        for (reset = false; !reset && n < 20000; n++) {
                h = vfe_hdr(&a, 4, 44002, 6002, VMQ_VSOCK_OP_RW, 1);
                send_taken(&a, &h, "x");
                reset = reset_came(&a, 4);
        }
        cr_assert(reset, "%u one-byte packets and no reset", n);
        cr_assert_gt(n, VMQ_VSOCK_MSG_QUEUE_MAX, "not before the queue was full");
        (void)drain_until_close(&g, c3);

        /* lv3 sends a record larger than the guest's buffer (256 KiB). */
        uint32_t c4 = lv1_connects(&a, &g, VMQ_VSOCK_TYPE_SEQPACKET, 44003, 6003);
        cr_assert_geq(vmq_ivshmem_max_send(g.v), sizeof(big));
        cr_assert_eq(vmq_ivshmem_send(g.v, c4, big, sizeof(big), 0), 0);
        expect_and_refill(&a, VMQ_VSOCK_OP_RST, 4, "a record the guest cannot take");
        (void)drain_until_close(&g, c4);

        /* vmqd goes on: the next connection works. */
        uint32_t c5 = lv1_connects(&a, &g, VMQ_VSOCK_TYPE_SEQPACKET, 44004, 6004);
        h = seq_hdr(&a, 4, 44004, 6004, VMQ_VSOCK_OP_RW, 2);
        h.flags = VMQ_VSOCK_SEQ_EOM;
        vfe_send(&a, &h, "ok");
        msg = ivs_expect(&g, VMQ_IVSHMEM_DATA, "the record");
        cr_assert_eq(msg->channel, c5);
        cr_assert_eq(msg->len, 2);
        free(msg);

        usleep(100 * 1000);
        cr_assert_leq(vmq_testbus_vmqd_fds(&tb), fds_before, "no fd leaked");
        ivs_leave(&g);
        vfe_close(&a);
        vmq_testbus_expect_clean_exit(&tb);
}
