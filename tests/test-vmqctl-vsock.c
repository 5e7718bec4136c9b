/* SPDX-License-Identifier: MIT */
/*
 * The host's end of vsock from outside vmqd: libvmq-client's
 * vmq_client_vsock_connect(), vmq_client_vsock_listen() and
 * vmq_machine_get_vsock_cid(), and vmqctl's adopt --vsock/--vsock-cid,
 * info, vsock-connect and vsock-listen, run as a program.  vmqd runs on
 * libvirt's test driver; the test plays the guest's QEMU and virtio driver
 * on the device's socket (tests/vhost-frontend.h).
 *
 * A library call or a vmqctl that waits for the guest runs in a child
 * process or a thread of its own while the test answers as the guest.
 * Those make no assertions: they record, and the test checks after
 * joining them.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libvmq-client/vmq-client.h"
#include "tests/daemon-util.h"
#include "tests/vhost-frontend.h"

static struct vmq_testbus tb;
static struct vmq_client *client;

static const char *const domains[] = {"lv1", "lv2", "lv3"};

static void up(void) {
        vmq_testbus_start(&tb);
        vmq_testbus_start_vmqd_on_domains(&tb, domains, 3);
        cr_assert_eq(vmq_client_new(&client), 0);
        cr_assert_eq(vmq_client_connect(client, tb.address), 0);
}

static void down(void) {
        client = vmq_client_unref(client);
        vmq_testbus_stop(&tb);
}

TestSuite(vmqctl_vsock, .init = up, .fini = down, .timeout = 120);

/* lv1 with the lowest free CID (3), lv2 with CID 9, lv3 without a device,
 * through the library; lv1 runs and its "QEMU" is connected. */
static void adopt_three(struct vfe *a) {
        struct vmq_adopt_options o = VMQ_ADOPT_OPTIONS_INIT;
        char path[600];

        o.vsock = true;
        cr_assert_eq(vmq_client_adopt_domain(client, "lv1", &o, NULL), 0, "%s",
                     vmq_client_get_error_message(client));
        o.vsock = false;
        o.vsock_cid = 9;
        cr_assert_eq(vmq_client_adopt_domain(client, "lv2", &o, NULL), 0, "%s",
                     vmq_client_get_error_message(client));
        o.vsock_cid = 0;
        cr_assert_eq(vmq_client_adopt_domain(client, "lv3", &o, NULL), 0, "%s",
                     vmq_client_get_error_message(client));
        vmq_testbus_wait_running(&tb, "lv1");
        snprintf(path, sizeof(path), "%s/run/vsock-lv1.sock", tb.dir);
        vfe_connect(a, path);
        cr_assert_eq(a->cid, 3);
        vfe_post_rx(a, 8);
}

static void assert_cloexec_blocking(int fd, const char *what) {
        cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC, "%s: not close-on-exec", what);
        cr_assert_not(fcntl(fd, F_GETFL) & O_NONBLOCK, "%s: not blocking", what);
}

/* The guest's next packet: a REQUEST from the host to @port.  Returns the
 * host's port. */
static uint32_t guest_is_asked(struct vfe *a, uint32_t port) {
        struct vmq_vsock_hdr h;

        cr_assert(vfe_recv(a, &h, NULL, 5000), "the guest is never asked for port %u", port);
        vfe_post_rx(a, 1);
        cr_assert(h.op == VMQ_VSOCK_OP_REQUEST && h.src_cid == 2 && h.dst_port == port,
                  "a request from 2 to port %u, not %s to %u", port, vmq_vsock_op_to_string(h.op),
                  h.dst_port);
        return h.src_port;
}

/* The guest sends @op (with @len bytes of @data) on connection 2:@hp <->
 * @port. */
static void guest_sends(struct vfe *a, uint32_t port, uint32_t hp, uint16_t op, const char *data,
                        uint32_t flags) {
        struct vmq_vsock_hdr h = vfe_hdr(a, 2, port, hp, op, data ? (uint32_t)strlen(data) : 0);
        h.buf_alloc = 65536;
        h.flags = flags;
        vfe_send(a, &h, data);
}

/* Receives stream bytes on the guest's side until @want bytes came, the
 * credit updates and requests vmqd sends aside; returns the flags of a
 * SHUTDOWN that came instead, or ~0u when the bytes came. */
static uint32_t guest_reads(struct vfe *a, char *buf, size_t want) {
        size_t n = 0;
        struct vmq_vsock_hdr h;
        uint8_t chunk[4096];

        while (n < want) {
                cr_assert(vfe_recv(a, &h, chunk, 5000), "the guest got %zu of %zu bytes", n, want);
                vfe_post_rx(a, 1);
                if (h.op == VMQ_VSOCK_OP_SHUTDOWN)
                        return h.flags;
                if (h.op != VMQ_VSOCK_OP_RW)
                        continue;
                cr_assert_leq(n + h.len, want, "more than %zu bytes", want);
                memcpy(buf + n, chunk, h.len);
                n += h.len;
        }
        return ~0u;
}

/* The guest connects from @src_port to the host's @port, and a program
 * listens there: vmqd answers for it. */
static void guest_connects(struct vfe *a, uint32_t src_port, uint32_t port, const char *why) {
        struct vmq_vsock_hdr h = vfe_hdr(a, 2, src_port, port, VMQ_VSOCK_OP_REQUEST, 0);
        vfe_send(a, &h, NULL);
        vfe_expect(a, VMQ_VSOCK_OP_RESPONSE, 2, why);
        vfe_post_rx(a, 1);
}

/* ---- the library ---- */

/*
 * vmq_client_vsock_connect() in a child process, with a client of its own:
 * a process, unlike a thread, can be stopped while it waits for vmqd's
 * answer, so that the test decides what is in the socket when it reads.
 * The child passes back the result, the connection (SCM_RIGHTS) and the
 * connection's fd flags as it had them.
 */
struct bg_connect {
        pid_t pid;
        int sock;
        /* from the child */
        int r, fd_flags, fl_flags;
        uint32_t host_port;
        /* in the test's process */
        int fd;
};

static void bg_connect_child(int sock, const char *machine, uint32_t port) {
        struct vmq_client *c = NULL;
        struct bg_connect res = {.fd = -1};
        char cbuf[CMSG_SPACE(sizeof(int))] = {0};
        struct iovec iov = {&res, sizeof(res)};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

        res.r = vmq_client_new(&c);
        if (res.r == 0)
                res.r = vmq_client_connect(c, tb.address);
        if (res.r == 0)
                res.r = vmq_client_vsock_connect(c, machine, port, &res.fd, &res.host_port);
        if (res.r == 0) {
                res.fd_flags = fcntl(res.fd, F_GETFD);
                res.fl_flags = fcntl(res.fd, F_GETFL);
                mh.msg_control = cbuf;
                mh.msg_controllen = sizeof(cbuf);
                struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
                cm->cmsg_level = SOL_SOCKET;
                cm->cmsg_type = SCM_RIGHTS;
                cm->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(cm), &res.fd, sizeof(int));
        }
        _exit(sendmsg(sock, &mh, MSG_NOSIGNAL) == (ssize_t)sizeof(res) ? 0 : 1);
}

static void bg_connect_start(struct bg_connect *b, const char *machine, uint32_t port) {
        int sp[2];

        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
        *b = (struct bg_connect){.fd = -1, .sock = sp[0]};
        b->pid = fork();
        cr_assert_geq(b->pid, 0);
        if (b->pid == 0) {
                close(sp[0]);
                bg_connect_child(sp[1], machine, port);
        }
        close(sp[1]);
}

static void bg_connect_join(struct bg_connect *b) {
        struct bg_connect res;
        char cbuf[CMSG_SPACE(sizeof(int))];
        struct iovec iov = {&res, sizeof(res)};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = cbuf,
                            .msg_controllen = sizeof(cbuf)};
        int st;

        cr_assert_eq(recvmsg(b->sock, &mh, MSG_CMSG_CLOEXEC), (ssize_t)sizeof(res),
                     "the child's result");
        cr_assert_eq(waitpid(b->pid, &st, 0), b->pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        close(b->sock);
        b->r = res.r;
        b->fd_flags = res.fd_flags;
        b->fl_flags = res.fl_flags;
        b->host_port = res.host_port;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        if (cm && cm->cmsg_type == SCM_RIGHTS)
                memcpy(&b->fd, CMSG_DATA(cm), sizeof(int));
}

Test(vmqctl_vsock, client_connects_to_guest_ports_and_maps_refusals) {
        struct vmq_machine *m = NULL;
        struct bg_connect b;
        struct vfe a;
        char buf[64] = {0};
        int fd = -1;

        adopt_three(&a);
        static const struct {
                const char *name;
                uint32_t cid;
        } cids[] = {{"lv1", 3}, {"lv2", 9}, {"lv3", 0}};
        for (unsigned i = 0; i < 3; i++) {
                cr_assert_eq(vmq_client_get_machine(client, cids[i].name, &m), 0);
                cr_assert_eq(vmq_machine_get_vsock_cid(m), cids[i].cid, "%s: CID %u", cids[i].name,
                             vmq_machine_get_vsock_cid(m));
                m = vmq_machine_unref(m);
        }

        /* The guest accepts and sends at once: its first bytes are in the
         * socket right behind vmqd's OK line when the caller (stopped
         * meanwhile) reads, and must reach the stream, not be lost in the
         * library's reading of that line. */
        bg_connect_start(&b, "lv1", 5000);
        uint32_t hp = guest_is_asked(&a, 5000);
        cr_assert_eq(kill(b.pid, SIGSTOP), 0);
        guest_sends(&a, 5000, hp, VMQ_VSOCK_OP_RESPONSE, NULL, 0);
        guest_sends(&a, 5000, hp, VMQ_VSOCK_OP_RW, "early", 0);
        cr_assert(vfe_tx_done(&a, 5000));
        usleep(200 * 1000); /* for vmqd to write both to the socket */
        cr_assert_eq(kill(b.pid, SIGCONT), 0);
        bg_connect_join(&b);
        cr_assert_eq(b.r, 0, "connect: %s", strerror(-b.r));
        cr_assert_eq(b.host_port, hp, "the host port the guest saw, %u, not %u", hp, b.host_port);
        cr_assert(b.fd_flags & FD_CLOEXEC, "the connection is not close-on-exec");
        cr_assert_not(b.fl_flags & O_NONBLOCK, "the connection is not blocking");
        struct timeval tv = {.tv_sec = 5};
        cr_assert_eq(setsockopt(b.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
        cr_assert_eq(recv(b.fd, buf, 5, MSG_WAITALL), 5);
        cr_assert_eq(memcmp(buf, "early", 5), 0, "got '%.5s'", buf);
        cr_assert_eq(send(b.fd, "ping", 4, MSG_NOSIGNAL), 4);
        cr_assert_eq(guest_reads(&a, buf, 4), ~0u);
        cr_assert_eq(memcmp(buf, "ping", 4), 0);
        close(b.fd);
        vfe_expect(&a, VMQ_VSOCK_OP_SHUTDOWN, 2, "the host closed the connection");
        vfe_post_rx(&a, 1);

        /* The guest refuses: -ECONNREFUSED, and no fd. */
        bg_connect_start(&b, "lv1", 22);
        hp = guest_is_asked(&a, 22);
        guest_sends(&a, 22, hp, VMQ_VSOCK_OP_RST, NULL, 0);
        bg_connect_join(&b);
        cr_assert_eq(b.r, -ECONNREFUSED, "refused: %d", b.r);
        cr_assert_eq(b.fd, -1, "an fd after a refusal");

        /* lv2 has a device but its QEMU is not connected: refused too. */
        cr_assert_eq(vmq_client_vsock_connect(client, "lv2", 5000, &fd, NULL), -ECONNREFUSED);
        cr_assert_eq(vmq_client_vsock_connect(client, "lv3", 5000, &fd, NULL), -ENODEV);
        cr_assert_eq(vmq_client_vsock_connect(client, "nosuch", 5000, &fd, NULL), -ENOENT);
        cr_assert_eq(fd, -1);

        /* A guest that never answers: the call timeout ends the wait. */
        cr_assert_eq(vmq_client_set_call_timeout(client, 300 * 1000), 0);
        cr_assert_eq(vmq_client_vsock_connect(client, "lv1", 7000, &fd, NULL), -ETIMEDOUT);
        guest_is_asked(&a, 7000);
        vfe_close(&a);
        vmq_testbus_expect_clean_exit(&tb);
}

Test(vmqctl_vsock, client_listens_for_the_guest_and_guards_its_port) {
        struct vfe a;
        char want[600], buf[8];
        char *path = NULL, *again = NULL;
        int l = -1, l2 = -1;

        adopt_three(&a);
        cr_assert_eq(vmq_client_vsock_listen(client, "lv1", 6000, &l, &path), 0);
        snprintf(want, sizeof(want), "%s/run/vsock-lv1.host_6000", tb.dir);
        cr_assert_str_eq(path, want);
        assert_cloexec_blocking(l, "the listener");

        /* The guest connects to 2:6000: accept() has it, data both ways. */
        guest_connects(&a, 40000, 6000, "the listener is there");
        int s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        cr_assert_geq(s, 0);
        struct vmq_vsock_hdr h = vfe_hdr(&a, 2, 40000, 6000, VMQ_VSOCK_OP_RW, 5);
        vfe_send(&a, &h, "hello");
        cr_assert_eq(recv(s, buf, 5, MSG_WAITALL), 5);
        cr_assert_eq(memcmp(buf, "hello", 5), 0);
        close(s);

        /* A second listener on the port: -EADDRINUSE, and the first one
         * finds no connection that is not the guest's in its queue. */
        cr_assert_eq(vmq_client_vsock_listen(client, "lv1", 6000, &l2, &again), -EADDRINUSE);
        cr_assert_eq(l2, -1);
        cr_assert_null(again);
        struct pollfd p = {.fd = l, .events = POLLIN};
        cr_assert_eq(poll(&p, 1, 200), 0, "the check for a listener connected to it");

        /* The first goes without unlinking: its socket file is replaced. */
        close(l);
        cr_assert_eq(access(path, F_OK), 0);
        cr_assert_eq(vmq_client_vsock_listen(client, "lv1", 6000, &l, &again), 0);
        cr_assert_str_eq(again, path);
        free(again);
        vfe_expect(&a, VMQ_VSOCK_OP_SHUTDOWN, 2, "the first connection's program closed");
        vfe_post_rx(&a, 1);
        guest_connects(&a, 40001, 6000, "the new listener gets the guest");
        s = accept4(l, NULL, NULL, SOCK_CLOEXEC);
        cr_assert_geq(s, 0);
        close(s);
        close(l);

        /* Something that is not a socket is not replaced. */
        cr_assert_eq(unlink(path), 0);
        FILE *f = fopen(path, "we");
        cr_assert_not_null(f);
        cr_assert_eq(fclose(f), 0);
        l2 = -1;
        cr_assert_eq(vmq_client_vsock_listen(client, "lv1", 6000, &l2, &again), -EADDRINUSE);
        struct stat st;
        cr_assert_eq(stat(path, &st), 0);
        cr_assert(S_ISREG(st.st_mode), "the file was replaced");
        unlink(path);

        cr_assert_eq(vmq_client_vsock_listen(client, "lv3", 6000, &l2, &again), -ENODEV);
        cr_assert_eq(vmq_client_vsock_listen(client, "nosuch", 6000, &l2, &again), -ENOENT);
        cr_assert_eq(l2, -1);
        free(path);
        vfe_close(&a);
        vmq_testbus_expect_clean_exit(&tb);
}

/* ---- vmqctl ---- */

Test(vmqctl_vsock, vmqctl_adopts_with_a_cid_and_shows_it) {
        char *out, *err;

        free(vmq_testbus_ok(&tb, 2, "$VMQCTL adopt lv1 --vsock-cid 0"));
        err = vmq_testbus_last_err(&tb);
        vmq_assert_has(err, "invalid CID '0'");
        free(err);
        free(vmq_testbus_ok(&tb, 2, "$VMQCTL adopt lv1 --vsock-cid 2"));
        err = vmq_testbus_last_err(&tb);
        vmq_assert_has(err, "--vsock-cid 2: out of range");
        free(err);
        free(vmq_testbus_ok(&tb, 0, "$VMQCTL adopt lv2 --vsock-cid 9"));
        /* the test driver's domains run, their memory not shared: the
         * user hears that the device needs a restart */
        err = vmq_testbus_last_err(&tb);
        vmq_assert_has(err, "vmqctl: domain 'lv2' runs without its vsock device (CID 9): its "
                            "memory was not shared; the device and shared memory come with its "
                            "next start (virsh shutdown lv2; virsh start lv2)");
        free(err);
        free(vmq_testbus_ok(&tb, 0, "$VMQCTL adopt lv1 --vsock"));
        free(vmq_testbus_ok(&tb, 0, "$VMQCTL adopt lv3"));
        err = vmq_testbus_last_err(&tb);
        vmq_assert_hasnt(err, "vsock");
        free(err);

        static const struct {
                const char *args, *want;
        } shows[] = {
                {"info lv2", "Vsock CID:    9 (restart-needed)\n"},
                {"info lv1", "Vsock CID:    3 (restart-needed)\n"},
                {"--json info lv2", "\"vsock_cid\":9,\"vsock_state\":\"restart-needed\""},
                {"--json info lv3", "\"vsock_cid\":null,\"vsock_state\":\"none\""},
        };
        for (unsigned i = 0; i < sizeof(shows) / sizeof(shows[0]); i++) {
                out = vmq_testbus_ok(&tb, 0, "$VMQCTL %s", shows[i].args);
                vmq_assert_has(out, shows[i].want);
                free(out);
        }
        out = vmq_testbus_ok(&tb, 0, "$VMQCTL info lv3");
        vmq_assert_hasnt(out, "Vsock");
        free(out);
        vmq_testbus_expect_clean_exit(&tb);
}

/* A vmqctl command line run in a thread: its stdout, stderr and exit. */
struct bg_ctl {
        pthread_t thread;
        char cmd[512];
        char *out, *err;
        int status;
};

static void *bg_ctl_run(void *arg) {
        struct bg_ctl *b = arg;
        b->status = vmq_testbus_run(&tb, &b->out, false, "%s", b->cmd);
        return NULL;
}

/* @n names the stderr file, so that two may run at once. */
static void bg_ctl_start(struct bg_ctl *b, unsigned n, const char *line) {
        *b = (struct bg_ctl){0};
        snprintf(b->cmd, sizeof(b->cmd), "%s 2>%s/bg%u.err", line, tb.dir, n);
        cr_assert_eq(pthread_create(&b->thread, NULL, bg_ctl_run, b), 0);
}

static void bg_ctl_join(struct bg_ctl *b, unsigned n) {
        cr_assert_eq(pthread_join(b->thread, NULL), 0);
        vmq_testbus_run(&tb, &b->err, false, "cat %s/bg%u.err", tb.dir, n);
}

static void bg_ctl_free(struct bg_ctl *b) {
        free(b->out);
        free(b->err);
}

Test(vmqctl_vsock, vmqctl_vsock_connect_relays_both_ways_and_exits_as_documented) {
        struct bg_ctl b;
        struct vfe a;
        char buf[64] = {0};

        adopt_three(&a);

        /* stdin to the guest, then its end; the guest's bytes to stdout. */
        bg_ctl_start(&b, 0, "printf 'to the guest' | $VMQCTL vsock-connect lv1 5000");
        uint32_t hp = guest_is_asked(&a, 5000);
        guest_sends(&a, 5000, hp, VMQ_VSOCK_OP_RESPONSE, NULL, 0);
        cr_assert_eq(guest_reads(&a, buf, 12), ~0u, "stdin ended before it was sent");
        cr_assert_eq(memcmp(buf, "to the guest", 12), 0, "got '%.12s'", buf);
        cr_assert_eq(guest_reads(&a, buf, sizeof(buf)), VMQ_VSOCK_SHUTDOWN_SEND,
                     "the end of stdin reaches the guest as a shutdown of the host's sending");
        guest_sends(&a, 5000, hp, VMQ_VSOCK_OP_RW, "from the guest", 0);
        guest_sends(&a, 5000, hp, VMQ_VSOCK_OP_SHUTDOWN, NULL,
                    VMQ_VSOCK_SHUTDOWN_SEND | VMQ_VSOCK_SHUTDOWN_RCV);
        bg_ctl_join(&b, 0);
        cr_assert_eq(b.status, 0, "vsock-connect exited %d: %s", b.status, b.err);
        cr_assert_str_eq(b.out, "from the guest");
        bg_ctl_free(&b);
        vfe_expect(&a, VMQ_VSOCK_OP_RST, 2, "the connection is over");
        vfe_post_rx(&a, 1);

        /* Refused: exit 1. */
        bg_ctl_start(&b, 0, "$VMQCTL vsock-connect lv1 22 </dev/null");
        hp = guest_is_asked(&a, 22);
        guest_sends(&a, 22, hp, VMQ_VSOCK_OP_RST, NULL, 0);
        bg_ctl_join(&b, 0);
        cr_assert_eq(b.status, 1, "refused: exit %d: %s", b.status, b.err);
        vmq_assert_has(b.err, "the guest refused port 22");
        bg_ctl_free(&b);

        /* No device, no machine: exit 3; a bad port: exit 2. */
        free(vmq_testbus_ok(&tb, 3, "$VMQCTL vsock-connect lv3 5000 </dev/null"));
        char *err = vmq_testbus_last_err(&tb);
        vmq_assert_has(err, "machine 'lv3' has no vsock device");
        free(err);
        free(vmq_testbus_ok(&tb, 3, "$VMQCTL vsock-connect nosuch 5000 </dev/null"));
        err = vmq_testbus_last_err(&tb);
        vmq_assert_has(err, "no such machine");
        free(err);
        free(vmq_testbus_ok(&tb, 2, "$VMQCTL vsock-connect lv1 port5000 </dev/null"));
        vfe_expect_nothing(&a, "no bad command reached the guest");
        vfe_close(&a);
        vmq_testbus_expect_clean_exit(&tb);
}

Test(vmqctl_vsock, vmqctl_vsock_listen_takes_one_guest_connection) {
        struct bg_ctl b, other;
        struct vfe a;
        char path[600], buf[64] = {0};

        adopt_three(&a);
        snprintf(path, sizeof(path), "%s/run/vsock-lv1.host_6000", tb.dir);
        bg_ctl_start(&b, 0, "printf 'to the guest' | $VMQCTL vsock-listen lv1 6000");
        cr_assert(vmq_wait_for_path(path, 5000), "vsock-listen does not listen at %s", path);

        /* A second vsock-listen on the port: exit 7, and the first still
         * waits for the guest. */
        bg_ctl_start(&other, 1, "$VMQCTL vsock-listen lv1 6000 </dev/null");
        bg_ctl_join(&other, 1);
        cr_assert_eq(other.status, 7, "exit %d: %s", other.status, other.err);
        vmq_assert_has(other.err, "another program listens there");
        bg_ctl_free(&other);

        guest_connects(&a, 40000, 6000, "vsock-listen is there");
        cr_assert_eq(guest_reads(&a, buf, 12), ~0u);
        cr_assert_eq(memcmp(buf, "to the guest", 12), 0, "got '%.12s'", buf);
        cr_assert_eq(guest_reads(&a, buf, sizeof(buf)), VMQ_VSOCK_SHUTDOWN_SEND);
        struct vmq_vsock_hdr h = vfe_hdr(&a, 2, 40000, 6000, VMQ_VSOCK_OP_RW, 9);
        vfe_send(&a, &h, "to stdout");
        h = vfe_hdr(&a, 2, 40000, 6000, VMQ_VSOCK_OP_SHUTDOWN, 0);
        h.flags = VMQ_VSOCK_SHUTDOWN_SEND | VMQ_VSOCK_SHUTDOWN_RCV;
        vfe_send(&a, &h, NULL);
        bg_ctl_join(&b, 0);
        cr_assert_eq(b.status, 0, "vsock-listen exited %d: %s", b.status, b.err);
        cr_assert_str_eq(b.out, "to stdout");
        bg_ctl_free(&b);
        cr_assert_neq(access(path, F_OK), 0, "the socket file stays");
        vfe_close(&a);
        vmq_testbus_expect_clean_exit(&tb);
}
