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
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/daemon-util.h"
#include "tests/test-util.h"
#include "tests/vhost-frontend.h"

static struct vmq_testbus tb;

static const char *const domains[] = {"lv1", "lv2", "lv3"};

/* vmqd on libvirt's test driver with three domains, lv1..lv3. */
static void up(void) {
        static char uri[600];
        FILE *f;
        char path[600];

        vmq_testbus_start(&tb);
        snprintf(path, sizeof(path), "%s/node.xml", tb.dir);
        f = fopen(path, "w");
        cr_assert_not_null(f);
        fprintf(f, "<node>\n");
        for (unsigned i = 0; i < 3; i++)
                fprintf(f,
                        "  <domain type='test'>\n"
                        "    <name>%s</name>\n"
                        "    <uuid>6695eb01-f6a4-8304-79aa-97f2502e19%02u</uuid>\n"
                        "    <memory>65536</memory>\n"
                        "    <vcpu>1</vcpu>\n"
                        "    <os><type arch='x86_64'>hvm</type></os>\n"
                        "    <devices>\n"
                        "      <shmem name='vmq-%s'>\n"
                        "        <model type='ivshmem-doorbell'/>\n"
                        "        <server path='%s/run/ivshmem-%s.sock'/>\n"
                        "        <msi vectors='2' ioeventfd='on'/>\n"
                        "      </shmem>\n"
                        "    </devices>\n"
                        "  </domain>\n",
                        domains[i], i + 1, domains[i], tb.dir, domains[i]);
        fprintf(f, "</node>\n");
        cr_assert_eq(fclose(f), 0);
        snprintf(uri, sizeof(uri), "test://%s/node.xml", tb.dir);
        tb.libvirt_uri = uri;
        vmq_testbus_start_vmqd(&tb, "");
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

static void wait_running(const char *name) {
        char *out = vmq_testbus_ok(
                &tb, 0,
                "for i in $(seq 100); do $BUSCTL get-property org.vmq1 "
                "/org/vmq1/machine/%s org.vmq1.Machine State | grep -q running && break; "
                "sleep 0.05; done; $BUSCTL get-property org.vmq1 /org/vmq1/machine/%s "
                "org.vmq1.Machine State",
                name, name);
        cr_assert(strstr(out, "running"), "%s: %s", name, out);
        free(out);
}

static void adopt_both(void) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        int r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv1", 1, "vsock", "b", 1);
        succeeded(r, &e, "AdoptDomain lv1 vsock");
        r = vmq_testbus_call(&tb, &e, NULL, "AdoptDomain", "sa{sv}", "lv2", 1, "vsock_cid", "u", 9);
        succeeded(r, &e, "AdoptDomain lv2 vsock_cid 9");
        wait_running("lv1");
        wait_running("lv2");
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

static void expect(struct vfe *f, uint16_t op, uint64_t src_cid, const char *why) {
        struct vmq_vsock_hdr h;
        cr_assert(vfe_recv(f, &h, NULL, 5000), "CID %lu got nothing: %s", (unsigned long)f->cid,
                  why);
        cr_assert_eq(h.op, op, "CID %lu got %s, not %s: %s", (unsigned long)f->cid,
                     vmq_vsock_op_to_string(h.op), vmq_vsock_op_to_string(op), why);
        cr_assert_eq(h.src_cid, src_cid, "%s", why);
}

static void expect_nothing(struct vfe *f, const char *why) {
        struct vmq_vsock_hdr h;
        cr_assert_not(vfe_recv(f, &h, NULL, 300), "CID %lu got %s: %s", (unsigned long)f->cid,
                      vmq_vsock_op_to_string(h.op), why);
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
        expect(&a, VMQ_VSOCK_OP_RST, 9, "no channel between lv1 and lv2");
        expect_nothing(&b, "a refused request is not passed on");

        /* To the host or an unknown CID: refused. */
        h = vfe_hdr(&a, 2, 40001, 1234, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        expect(&a, VMQ_VSOCK_OP_RST, 2, "the host end is not served yet");

        uint32_t ch = open_channel("lv1", "lv2");

        /* A forged source: dropped, whoever it names. */
        h = vfe_hdr(&a, 9, 40002, 1234, VMQ_VSOCK_OP_REQUEST, 0);
        h.src_cid = 9;
        vfe_send(&a, &h, NULL);
        cr_assert(vfe_tx_done(&a, 5000), "the forged packet's buffer comes back");
        expect_nothing(&b, "a forged source");
        expect_nothing(&a, "a forged source is dropped, not answered");

        /* With the channel: a connection, data both ways. */
        h = vfe_hdr(&a, 9, 40003, 1234, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        expect(&b, VMQ_VSOCK_OP_REQUEST, 3, "the channel lets the request through");
        h = vfe_hdr(&b, 3, 1234, 40003, VMQ_VSOCK_OP_RESPONSE, 0);
        vfe_send(&b, &h, NULL);
        expect(&a, VMQ_VSOCK_OP_RESPONSE, 9, "the response comes back");
        h = vfe_hdr(&a, 9, 40003, 1234, VMQ_VSOCK_OP_RW, 11);
        vfe_send(&a, &h, "hello, lv2!");
        char got[32] = {0};
        cr_assert(vfe_recv(&b, &h, got, 5000));
        cr_assert_eq(h.op, VMQ_VSOCK_OP_RW);
        cr_assert_str_eq(got, "hello, lv2!");
        vfe_post_rx(&b, 3);

        /* The channel closes: both ends are reset. */
        close_channel(ch);
        expect(&a, VMQ_VSOCK_OP_RST, 9, "the channel closed");
        expect(&b, VMQ_VSOCK_OP_RST, 3, "the channel closed");
        h = vfe_hdr(&a, 9, 40003, 1234, VMQ_VSOCK_OP_RW, 3);
        vfe_send(&a, &h, "late");
        expect(&a, VMQ_VSOCK_OP_RST, 9, "no connection any more");
        expect_nothing(&b, "data after the close");

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
        expect(&b, VMQ_VSOCK_OP_REQUEST, 3, "request");
        h = vfe_hdr(&b, 3, 77, 40010, VMQ_VSOCK_OP_RESPONSE, 0);
        vfe_send(&b, &h, NULL);
        expect(&a, VMQ_VSOCK_OP_RESPONSE, 9, "response");

        /* lv2's QEMU goes away mid-connection. */
        vfe_close(&b);
        expect(&a, VMQ_VSOCK_OP_RST, 9, "the peer's QEMU went away");

        /* A new QEMU connects: same CID, and connections work again. */
        vfe_connect(&b, pb);
        cr_assert_eq(b.cid, 9);
        vfe_post_rx(&b, 8);
        h = vfe_hdr(&a, 9, 40011, 77, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(&a, &h, NULL);
        expect(&b, VMQ_VSOCK_OP_REQUEST, 3, "after the re-connect");

        /* A frontend that breaks the stream is cut off, and no fd stays. */
        vfe_close(&b);
        expect(&a, VMQ_VSOCK_OP_RST, 9, "the half-open connection, when lv2's QEMU went");
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
        wait_running("lv2");
        struct vfe b;
        char path[600];
        socket_of("lv2", path, sizeof(path));
        vfe_connect(&b, path);
        cr_assert_eq(b.cid, 12, "the restored device serves the saved CID");
        vfe_close(&b);
        vmq_testbus_expect_clean_exit(&tb);
}
