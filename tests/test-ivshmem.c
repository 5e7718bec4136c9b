/* SPDX-License-Identifier: MIT */
/*
 * The ivshmem-doorbell server: the exact message sequence each client gets
 * (checked by a test client speaking the client side of QEMU's protocol),
 * joins and departures, doorbells both ways, the shared region, limits,
 * misbehaving and slow clients, fd hygiene, and a real QEMU driven through
 * its qtest protocol (BARs and MSI-X programmed by hand, no guest code).
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/ivshmem-server.h"
#include "core/util.h"
#include "core/vmq-abi.h"
#include "tests/test-util.h"

#define SHM_SIZE (64u << 10)
#define MAX_IDS (VMQ_IVSHMEM_MAX_PEERS + 1)

/* What the callbacks saw. */
struct events {
        unsigned n_joined, n_left;
        uint16_t joined[2048], left[2048];
        unsigned doorbells[VMQ_IVSHMEM_MAX_VECTORS];
};

static struct events ev;
static char tmpdir[64];
static char sock_path[128];
static int shm_fd = -1;

static void on_joined(void *userdata, struct vmq_ivshmem_server *srv, uint16_t id) {
        struct events *e = userdata;
        (void)srv;
        if (e->n_joined < VMQ_ARRAY_SIZE(e->joined))
                e->joined[e->n_joined++] = id;
}

static void on_left(void *userdata, struct vmq_ivshmem_server *srv, uint16_t id) {
        struct events *e = userdata;
        (void)srv;
        if (e->n_left < VMQ_ARRAY_SIZE(e->left))
                e->left[e->n_left++] = id;
}

static void on_doorbell(void *userdata, struct vmq_ivshmem_server *srv, unsigned vector) {
        struct events *e = userdata;
        (void)srv;
        cr_assert_lt(vector, VMQ_IVSHMEM_MAX_VECTORS);
        e->doorbells[vector]++;
}

static const struct vmq_ivshmem_server_ops ops = {
        .peer_joined = on_joined,
        .peer_left = on_left,
        .doorbell = on_doorbell,
};

static void setup(void) {
        memset(&ev, 0, sizeof(ev));
        strcpy(tmpdir, "/tmp/vmq-ivshmem-XXXXXX");
        cr_assert_not_null(mkdtemp(tmpdir));
        snprintf(sock_path, sizeof(sock_path), "%s/sock", tmpdir);
        shm_fd = memfd_create("vmq-ivshmem-test", MFD_CLOEXEC);
        cr_assert_geq(shm_fd, 0);
        cr_assert_eq(ftruncate(shm_fd, SHM_SIZE), 0);
}

static void teardown(void) {
        shm_fd = vmq_close(shm_fd);
        (void)unlink(sock_path);
        (void)rmdir(tmpdir);
}

TestSuite(ivshmem, .init = setup, .fini = teardown, .timeout = 30);

static struct vmq_ivshmem_server *server(unsigned n_vectors) {
        struct vmq_ivshmem_server *srv = NULL;
        cr_assert_eq(vmq_ivshmem_server_new(sock_path, shm_fd, n_vectors, &ops, &ev, &srv), 0);
        cr_assert_not_null(srv);
        return srv;
}

/* Processes whatever the server has pending, waiting up to `ms` for it. */
static void pump_wait(struct vmq_ivshmem_server *srv, int ms) {
        struct pollfd p = {.fd = vmq_ivshmem_server_get_fd(srv), .events = POLLIN};

        while (poll(&p, 1, ms) > 0) {
                cr_assert_eq(vmq_ivshmem_server_process(srv), 0);
                ms = 0;
        }
}

static void pump(struct vmq_ivshmem_server *srv) {
        pump_wait(srv, 50);
}

/* The client side of the protocol. */
struct client {
        int sock;
        int64_t id;
        int shm;
        int fds[MAX_IDS][VMQ_IVSHMEM_MAX_VECTORS]; /* [peer][vector] */
        unsigned n_fds[MAX_IDS];
};

static void client_init(struct client *c) {
        memset(c, 0, sizeof(*c));
        c->sock = c->shm = -1;
        c->id = -1;
        for (unsigned i = 0; i < MAX_IDS; i++)
                for (unsigned v = 0; v < VMQ_IVSHMEM_MAX_VECTORS; v++)
                        c->fds[i][v] = -1;
}

static void client_connect(struct client *c) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct timeval tv = {.tv_sec = 2};

        client_init(c);
        c->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(c->sock, 0);
        cr_assert_eq(setsockopt(c->sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
        strcpy(sa.sun_path, sock_path);
        cr_assert_eq(connect(c->sock, (struct sockaddr *)&sa, sizeof(sa)), 0, "connect: %m");
}

static void client_close(struct client *c) {
        c->sock = vmq_close(c->sock);
        c->shm = vmq_close(c->shm);
        for (unsigned i = 0; i < MAX_IDS; i++)
                for (unsigned v = 0; v < VMQ_IVSHMEM_MAX_VECTORS; v++)
                        c->fds[i][v] = vmq_close(c->fds[i][v]);
}

/*
 * One message: 0 and its value and fd (-1 if none), -EAGAIN if nothing is
 * pending (flags MSG_DONTWAIT), -EPIPE on EOF.
 */
static int client_recv(struct client *c, int flags, int64_t *value, int *fd) {
        uint64_t le;
        struct iovec iov = {.iov_base = &le, .iov_len = sizeof(le)};
        union {
                char buf[CMSG_SPACE(sizeof(int) * 4)];
                struct cmsghdr align;
        } control;
        struct msghdr msg = {.msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = control.buf,
                             .msg_controllen = sizeof(control.buf)};
        ssize_t n = recvmsg(c->sock, &msg, flags | MSG_CMSG_CLOEXEC);

        if (n < 0)
                return -errno;
        if (n == 0)
                return -EPIPE;
        cr_assert_eq(n, (ssize_t)sizeof(le), "short message");
        cr_assert_eq(msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC), 0);
        *value = (int64_t)le64toh(le);
        *fd = -1;
        for (struct cmsghdr *h = CMSG_FIRSTHDR(&msg); h; h = CMSG_NXTHDR(&msg, h)) {
                cr_assert_eq(h->cmsg_level, SOL_SOCKET);
                cr_assert_eq(h->cmsg_type, SCM_RIGHTS);
                cr_assert_eq(h->cmsg_len, CMSG_LEN(sizeof(int)), "one fd per message");
                cr_assert_eq(*fd, -1);
                memcpy(fd, CMSG_DATA(h), sizeof(int));
        }
        return 0;
}

static void expect_msg(struct client *c, int64_t value, bool with_fd, int *ret_fd) {
        int64_t v;
        int fd, r = client_recv(c, 0, &v, &fd);

        cr_assert_eq(r, 0, "expected %lld: %s", (long long)value, strerror(-r));
        cr_assert_eq(v, value, "got %lld, expected %lld", (long long)v, (long long)value);
        cr_assert_eq(fd >= 0, with_fd, "message %lld: fd %d", (long long)value, fd);
        if (ret_fd)
                *ret_fd = fd;
        else
                vmq_close(fd);
}

static void expect_nothing(struct client *c) {
        int64_t v;
        int fd;
        cr_assert_eq(client_recv(c, MSG_DONTWAIT, &v, &fd), -EAGAIN);
}

static bool is_eventfd(int fd) {
        char proc[64], target[64] = "";
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
        return readlink(proc, target, sizeof(target) - 1) > 0 &&
               strcmp(target, "anon_inode:[eventfd]") == 0;
}

static void expect_peer(struct client *c, uint16_t id, unsigned n_vectors) {
        for (unsigned v = 0; v < n_vectors; v++) {
                int fd;
                expect_msg(c, id, true, &fd);
                cr_assert(is_eventfd(fd), "peer %u vector %u: not an eventfd", id, v);
                cr_assert_eq(c->fds[id][v], -1);
                c->fds[id][v] = fd;
        }
        c->n_fds[id] = n_vectors;
}

/*
 * The exact greeting: version, own id, the region, each peer in `others`
 * (in that order) with each of its vectors, then itself.
 */
static void expect_greeting(struct client *c, uint16_t id, const uint16_t *others,
                            unsigned n_others, unsigned n_vectors) {
        struct stat a, b;

        expect_msg(c, VMQ_IVSHMEM_PROTOCOL_VERSION, false, NULL);
        expect_msg(c, id, false, NULL);
        c->id = id;
        expect_msg(c, -1, true, &c->shm);
        cr_assert_eq(fstat(c->shm, &a), 0);
        cr_assert_eq(fstat(shm_fd, &b), 0);
        cr_assert(a.st_dev == b.st_dev && a.st_ino == b.st_ino, "not the region's file");
        cr_assert_eq(fcntl(c->shm, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
        for (unsigned i = 0; i < n_others; i++)
                expect_peer(c, others[i], n_vectors);
        expect_peer(c, id, n_vectors);
        expect_nothing(c);
}

static uint64_t eventfd_take(int fd) {
        uint64_t n = 0;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 1000) != 1)
                return 0;
        cr_assert_eq(read(fd, &n, sizeof(n)), (ssize_t)sizeof(n));
        return n;
}

static bool eventfd_pending(int fd) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        return poll(&p, 1, 0) == 1;
}

static void ring(int fd) {
        uint64_t one = 1;
        cr_assert_eq(write(fd, &one, sizeof(one)), (ssize_t)sizeof(one));
}

Test(ivshmem, one_client_exact_sequence) {
        struct vmq_ivshmem_server *srv = server(2);
        struct client c;
        const uint16_t monitor[] = {VMQ_IVSHMEM_MONITOR_PEER};

        client_connect(&c);
        pump(srv);
        expect_greeting(&c, 1, monitor, 1, 2);
        cr_assert_eq(ev.n_joined, 1);
        cr_assert_eq(ev.joined[0], 1);
        cr_assert_eq(ev.n_left, 0);
        cr_assert_eq(vmq_ivshmem_server_n_peers(srv), 1);

        pid_t pid = 0;
        uid_t uid = 1;
        cr_assert_eq(vmq_ivshmem_server_peer_cred(srv, 1, &pid, &uid), 0);
        cr_assert_eq(pid, getpid());
        cr_assert_eq(uid, getuid());
        cr_assert_eq(vmq_ivshmem_server_peer_cred(srv, 2, &pid, &uid), -ENOENT);
        cr_assert_eq(vmq_ivshmem_server_peer_cred(srv, 0, NULL, NULL), -ENOENT);

        client_close(&c);
        pump(srv);
        cr_assert_eq(ev.n_left, 1);
        cr_assert_eq(ev.left[0], 1);
        cr_assert_eq(vmq_ivshmem_server_n_peers(srv), 0);
        vmq_ivshmem_server_free(srv);
}

Test(ivshmem, three_clients_join_and_leave) {
        struct vmq_ivshmem_server *srv = server(2);
        struct client c1, c2, c3, c4;
        const uint16_t before2[] = {0, 1}, before3[] = {0, 1, 2}, before4[] = {0, 1, 3};

        client_connect(&c1);
        pump(srv);
        expect_greeting(&c1, 1, before2, 1, 2);

        client_connect(&c2);
        pump(srv);
        expect_greeting(&c2, 2, before2, 2, 2);
        expect_peer(&c1, 2, 2);
        expect_nothing(&c1);

        client_connect(&c3);
        pump(srv);
        expect_greeting(&c3, 3, before3, 3, 2);
        expect_peer(&c1, 3, 2);
        expect_peer(&c2, 3, 2);
        expect_nothing(&c1);
        expect_nothing(&c2);
        cr_assert_eq(ev.n_joined, 3);
        cr_assert(ev.joined[0] == 1 && ev.joined[1] == 2 && ev.joined[2] == 3);

        /* Everyone holds the same eventfds: 1 rings 3's vector 1, 3 sees it
         * on its own; 3 rings 2's vector 0. */
        ring(c1.fds[3][1]);
        cr_assert_eq(eventfd_take(c3.fds[3][1]), 1);
        cr_assert(!eventfd_pending(c3.fds[3][0]));
        ring(c3.fds[2][0]);
        cr_assert_eq(eventfd_take(c2.fds[2][0]), 1);

        /* 2 leaves: the others get its id alone, the id is free again. */
        client_close(&c2);
        pump(srv);
        cr_assert_eq(ev.n_left, 1);
        cr_assert_eq(ev.left[0], 2);
        expect_msg(&c1, 2, false, NULL);
        expect_msg(&c3, 2, false, NULL);
        expect_nothing(&c1);
        expect_nothing(&c3);
        cr_assert_eq(vmq_ivshmem_server_notify(srv, 2, 0), -ENOENT);

        client_connect(&c4);
        pump(srv);
        expect_greeting(&c4, 2, before4, 3, 2);
        cr_assert_eq(ev.joined[3], 2);

        client_close(&c1);
        client_close(&c3);
        client_close(&c4);
        pump(srv);
        cr_assert_eq(ev.n_left, 4);
        cr_assert_eq(vmq_ivshmem_server_n_peers(srv), 0);
        vmq_ivshmem_server_free(srv);
}

Test(ivshmem, doorbells_both_ways) {
        struct vmq_ivshmem_server *srv = server(3);
        struct client c1, c2;
        const uint16_t before[] = {0, 1};

        client_connect(&c1);
        pump(srv);
        expect_greeting(&c1, 1, before, 1, 3);
        client_connect(&c2);
        pump(srv);
        expect_greeting(&c2, 2, before, 2, 3);
        expect_peer(&c1, 2, 3);

        /* A guest rings the monitor (peer 0) on vector 2, then 0. */
        ring(c1.fds[VMQ_IVSHMEM_MONITOR_PEER][2]);
        pump(srv);
        cr_assert_eq(ev.doorbells[2], 1);
        cr_assert_eq(ev.doorbells[0] + ev.doorbells[1], 0);
        ring(c2.fds[VMQ_IVSHMEM_MONITOR_PEER][0]);
        ring(c2.fds[VMQ_IVSHMEM_MONITOR_PEER][0]);
        pump(srv);
        cr_assert_eq(ev.doorbells[0], 1, "rings coalesce");
        pump(srv);
        cr_assert_eq(ev.doorbells[0], 1);

        /* The monitor rings a guest. */
        cr_assert_eq(vmq_ivshmem_server_notify(srv, 2, 1), 0);
        cr_assert_eq(eventfd_take(c2.fds[2][1]), 1);
        cr_assert(!eventfd_pending(c2.fds[2][0]));
        cr_assert(!eventfd_pending(c1.fds[1][1]));
        cr_assert_eq(vmq_ivshmem_server_notify(srv, 1, 0), 0);
        cr_assert_eq(eventfd_take(c1.fds[1][0]), 1);

        cr_assert_eq(vmq_ivshmem_server_notify(srv, 1, 3), -EINVAL);
        cr_assert_eq(vmq_ivshmem_server_notify(srv, 3, 0), -ENOENT);
        cr_assert_eq(vmq_ivshmem_server_notify(srv, VMQ_IVSHMEM_MONITOR_PEER, 0), -ENOENT);
        cr_assert_eq(vmq_ivshmem_server_notify(srv, 0xffff, 0), -ENOENT);

        client_close(&c1);
        client_close(&c2);
        vmq_ivshmem_server_free(srv);
}

Test(ivshmem, region_is_shared) {
        struct vmq_ivshmem_server *srv = server(1);
        struct client c;
        const uint16_t before[] = {0};
        struct stat st;

        client_connect(&c);
        pump(srv);
        expect_greeting(&c, 1, before, 1, 1);
        cr_assert_eq(fstat(c.shm, &st), 0);
        cr_assert_eq(st.st_size, SHM_SIZE);

        volatile uint8_t *mine =
                mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd, 0);
        volatile uint8_t *theirs =
                mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, c.shm, 0);
        cr_assert_neq(mine, MAP_FAILED);
        cr_assert_neq(theirs, MAP_FAILED);
        mine[0] = 0x5a;
        mine[SHM_SIZE - 1] = 0xa5;
        cr_assert_eq(theirs[0], 0x5a);
        cr_assert_eq(theirs[SHM_SIZE - 1], 0xa5);
        theirs[4096] = 0x42;
        cr_assert_eq(mine[4096], 0x42);
        munmap((void *)mine, SHM_SIZE);
        munmap((void *)theirs, SHM_SIZE);

        client_close(&c);
        vmq_ivshmem_server_free(srv);
}

Test(ivshmem, no_fd_leaks) {
        int before = vmq_test_count_fds();
        struct vmq_ivshmem_server *srv = server(VMQ_IVSHMEM_MAX_VECTORS);
        /* epoll, listening socket, region dup, the monitor's eventfds */
        int with_server = vmq_test_count_fds();
        cr_assert_eq(with_server, before + 3 + (int)VMQ_IVSHMEM_MAX_VECTORS);

        for (int round = 0; round < 3; round++) {
                struct client c[3];
                for (unsigned i = 0; i < 3; i++) {
                        client_connect(&c[i]);
                        pump(srv);
                }
                for (unsigned i = 0; i < 3; i++) {
                        int64_t v;
                        int fd;
                        while (client_recv(&c[i], MSG_DONTWAIT, &v, &fd) == 0)
                                vmq_close(fd);
                        client_close(&c[i]);
                }
                pump(srv);
                cr_assert_eq(vmq_ivshmem_server_n_peers(srv), 0);
                /* the departed peers' sockets and eventfds are gone */
                cr_assert_eq(vmq_test_count_fds(), with_server, "round %d", round);
        }
        /* ... and so is everything else, socket file included */
        struct client live;
        client_connect(&live);
        pump(srv);
        vmq_ivshmem_server_free(srv);
        client_close(&live);
        cr_assert_eq(vmq_test_count_fds(), before);
        cr_assert_eq(access(sock_path, F_OK), -1);
}

Test(ivshmem, max_peers) {
        struct vmq_ivshmem_server *srv = server(1);
        struct client *c = calloc(VMQ_IVSHMEM_MAX_PEERS + 1, sizeof(*c));
        int64_t v;
        int fd;

        cr_assert_not_null(c);
        for (unsigned i = 0; i < VMQ_IVSHMEM_MAX_PEERS; i++) {
                client_connect(&c[i]);
                pump(srv);
                expect_msg(&c[i], 0, false, NULL);
                expect_msg(&c[i], i + 1, false, NULL);
        }
        cr_assert_eq(vmq_ivshmem_server_n_peers(srv), VMQ_IVSHMEM_MAX_PEERS);
        cr_assert_eq(ev.n_joined, VMQ_IVSHMEM_MAX_PEERS);
        /* The first client heard about every other one. */
        unsigned heard = 0;
        expect_msg(&c[0], -1, true, NULL);
        while (client_recv(&c[0], MSG_DONTWAIT, &v, &fd) == 0) {
                cr_assert_geq(fd, 0);
                vmq_close(fd);
                heard++;
        }
        cr_assert_eq(heard, 2 + VMQ_IVSHMEM_MAX_PEERS - 1); /* monitor, itself, others */

        /* One too many: closed at once, nothing sent, no callback. */
        struct client extra;
        client_connect(&extra);
        pump(srv);
        cr_assert_eq(client_recv(&extra, 0, &v, &fd), -EPIPE);
        client_close(&extra);
        cr_assert_eq(ev.n_joined, VMQ_IVSHMEM_MAX_PEERS);
        cr_assert_eq(vmq_ivshmem_server_n_peers(srv), VMQ_IVSHMEM_MAX_PEERS);

        /* Room again once one leaves; it gets the freed id. */
        client_close(&c[9]);
        pump(srv);
        client_connect(&c[9]);
        pump(srv);
        expect_msg(&c[9], 0, false, NULL);
        expect_msg(&c[9], 10, false, NULL);

        for (unsigned i = 0; i < VMQ_IVSHMEM_MAX_PEERS; i++)
                client_close(&c[i]);
        free(c);
        vmq_ivshmem_server_free(srv);
}

Test(ivshmem, client_that_talks_is_dropped) {
        struct vmq_ivshmem_server *srv = server(1);
        struct client c1, c2;
        const uint16_t before[] = {0, 1};

        client_connect(&c1);
        pump(srv);
        expect_greeting(&c1, 1, before, 1, 1);
        client_connect(&c2);
        pump(srv);
        expect_greeting(&c2, 2, before, 2, 1);
        expect_peer(&c1, 2, 1);

        cr_assert_eq(write(c2.sock, "hello", 5), 5);
        pump(srv);
        cr_assert_eq(ev.n_left, 1);
        cr_assert_eq(ev.left[0], 2);
        expect_msg(&c1, 2, false, NULL);
        int64_t v;
        int fd, r = client_recv(&c2, 0, &v, &fd);
        /* closed with its words unread: a reset rather than a clean EOF */
        cr_assert(r == -EPIPE || r == -ECONNRESET, "%s", strerror(-r));

        client_close(&c1);
        client_close(&c2);
        vmq_ivshmem_server_free(srv);
}

Test(ivshmem, kick) {
        struct vmq_ivshmem_server *srv = server(1);
        struct client c1, c2;
        const uint16_t before[] = {0, 1};

        client_connect(&c1);
        pump(srv);
        expect_greeting(&c1, 1, before, 1, 1);
        client_connect(&c2);
        pump(srv);
        expect_greeting(&c2, 2, before, 2, 1);
        expect_peer(&c1, 2, 1);

        cr_assert_eq(vmq_ivshmem_server_kick(srv, 1), 0);
        cr_assert_eq(vmq_ivshmem_server_kick(srv, 1), -ENOENT);
        cr_assert_eq(vmq_ivshmem_server_kick(srv, 0), -ENOENT);
        pump(srv);
        cr_assert_eq(ev.n_left, 0, "no callback for a kick");
        expect_msg(&c2, 1, false, NULL);
        int64_t v;
        int fd;
        cr_assert_eq(client_recv(&c1, 0, &v, &fd), -EPIPE);

        client_close(&c1);
        client_close(&c2);
        vmq_ivshmem_server_free(srv);
}

static bool has_left(uint16_t id) {
        for (unsigned i = 0; i < ev.n_left; i++)
                if (ev.left[i] == id)
                        return true;
        return false;
}

/* A client that never reads is dropped, and nobody waits for it. */
Test(ivshmem, slow_client_is_dropped) {
        struct vmq_ivshmem_server *srv = server(VMQ_IVSHMEM_MAX_VECTORS);
        struct client slow;
        unsigned rounds;

        client_connect(&slow);
        pump(srv);
        for (rounds = 0; rounds < 1500 && !has_left(1); rounds++) {
                struct client c;
                struct timespec t0, t1;

                clock_gettime(CLOCK_MONOTONIC, &t0);
                client_connect(&c);
                pump_wait(srv, 1000);
                client_close(&c);
                pump_wait(srv, 1000);
                clock_gettime(CLOCK_MONOTONIC, &t1);
                cr_assert_lt(t1.tv_sec - t0.tv_sec, 2, "the server blocked");
        }
        cr_assert(has_left(1), "the slow client was never dropped");
        /* every passing client left too, and nobody else was dropped */
        cr_assert_eq(ev.n_left, rounds + 1, "left %u in %u rounds", ev.n_left, rounds);
        cr_assert_eq(ev.n_joined, rounds + 1);
        cr_assert_gt(rounds, 10, "dropped too early");
        cr_log_info("slow client dropped after %u join/leave rounds", rounds);
        cr_assert_eq(vmq_ivshmem_server_n_peers(srv), 0);

        client_close(&slow);
        vmq_ivshmem_server_free(srv);
}

Test(ivshmem, new_validates_and_replaces_stale_socket) {
        struct vmq_ivshmem_server *srv = NULL;
        struct stat st;
        char longpath[200];

        cr_assert_eq(vmq_ivshmem_server_new(sock_path, shm_fd, 0, &ops, &ev, &srv), -EINVAL);
        cr_assert_eq(vmq_ivshmem_server_new(sock_path, shm_fd, VMQ_IVSHMEM_MAX_VECTORS + 1, &ops,
                                            &ev, &srv),
                     -EINVAL);
        cr_assert_eq(vmq_ivshmem_server_new(sock_path, -1, 1, &ops, &ev, &srv), -EINVAL);
        memset(longpath, 'x', sizeof(longpath) - 1);
        longpath[0] = '/';
        longpath[sizeof(longpath) - 1] = 0;
        cr_assert_eq(vmq_ivshmem_server_new(longpath, shm_fd, 1, &ops, &ev, &srv), -ENAMETOOLONG);

        /* QEMU needs a power-of-two region of at least a page. */
        cr_assert_eq(ftruncate(shm_fd, 3u << 20), 0);
        cr_assert_eq(vmq_ivshmem_server_new(sock_path, shm_fd, 1, &ops, &ev, &srv), -EINVAL);
        cr_assert_eq(ftruncate(shm_fd, 2048), 0);
        cr_assert_eq(vmq_ivshmem_server_new(sock_path, shm_fd, 1, &ops, &ev, &srv), -EINVAL);
        cr_assert_eq(ftruncate(shm_fd, SHM_SIZE), 0);
        cr_assert_null(srv);
        cr_assert_eq(access(sock_path, F_OK), -1);

        /* A regular file is not ours to remove. */
        int f = open(sock_path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        cr_assert_geq(f, 0);
        close(f);
        cr_assert_eq(vmq_ivshmem_server_new(sock_path, shm_fd, 1, &ops, &ev, &srv), -EEXIST);
        cr_assert_eq(stat(sock_path, &st), 0);
        cr_assert(S_ISREG(st.st_mode));
        cr_assert_eq(unlink(sock_path), 0);

        /* A stale socket (its server died) is replaced. */
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        strcpy(sa.sun_path, sock_path);
        cr_assert_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
        close(s);
        srv = server(1);
        cr_assert_eq(stat(sock_path, &st), 0);
        cr_assert(S_ISSOCK(st.st_mode));
        cr_assert_eq(st.st_mode & 07777, 0660);
        cr_assert_eq(fcntl(vmq_ivshmem_server_get_fd(srv), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);

        struct client c;
        const uint16_t before[] = {0};
        client_connect(&c);
        pump(srv);
        expect_greeting(&c, 1, before, 1, 1);
        client_close(&c);

        cr_assert_null(vmq_ivshmem_server_free(srv));
        cr_assert_null(vmq_ivshmem_server_free(NULL));
        cr_assert_eq(access(sock_path, F_OK), -1);
}

/*
 * Real QEMU, driven through its qtest protocol on stdin/stdout: the test
 * plays the guest by programming the device's BARs and MSI-X table through
 * PCI config space, so no guest code is needed.
 */
#define QEMU "/usr/bin/qemu-system-x86_64"
#define IVSHMEM_SLOT 4u
#define BAR0 0xe0000000u /* registers */
#define BAR1 0xe0001000u /* MSI-X table */
#define BAR2 0xd0000000u /* the region */
#define MSI_ADDR 0x2000u /* guest RAM the MSI write lands in */
#define MSI_DATA 0xcafe0001u

struct qemu {
        pid_t pid;
        FILE *in, *out;
};

static void qemu_start(struct qemu *q) {
        int to[2], from[2];

        cr_assert_eq(pipe2(to, O_CLOEXEC), 0);
        cr_assert_eq(pipe2(from, O_CLOEXEC), 0);
        q->pid = fork();
        cr_assert_geq(q->pid, 0);
        if (q->pid == 0) {
                char chardev[200];
                snprintf(chardev, sizeof(chardev), "socket,path=%s,id=ivs", sock_path);
                dup2(to[0], 0);
                dup2(from[1], 1);
                execl(QEMU, QEMU, "-machine", "q35,accel=tcg", "-nodefaults", "-display", "none",
                      "-S", "-monitor", "none", "-qtest", "stdio", "-qtest-log", "/dev/null",
                      "-chardev", chardev, "-device",
                      "ivshmem-doorbell,chardev=ivs,vectors=2,addr=0x4", (char *)NULL);
                _exit(127);
        }
        close(to[0]);
        close(from[1]);
        q->in = fdopen(to[1], "w");
        q->out = fdopen(from[0], "r");
        cr_assert(q->in && q->out);
}

/* One qtest command; returns the value of an "OK <value>" answer. */
static uint64_t qtest(struct qemu *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static uint64_t qtest(struct qemu *q, const char *fmt, ...) {
        char line[256];
        va_list ap;

        va_start(ap, fmt);
        vfprintf(q->in, fmt, ap);
        va_end(ap);
        fputc('\n', q->in);
        fflush(q->in);
        for (;;) {
                cr_assert_not_null(fgets(line, sizeof(line), q->out), "qemu went away");
                if (strncmp(line, "IRQ", 3) != 0)
                        break; /* asynchronous IRQ lines are not answers */
        }
        cr_assert_eq(strncmp(line, "OK", 2), 0, "qtest answered '%s'", line);
        return strtoull(line + 2, NULL, 0);
}

static uint32_t cfg_addr(unsigned off) {
        return 0x80000000u | (IVSHMEM_SLOT << 11) | off;
}

static uint32_t cfg_read(struct qemu *q, unsigned off) {
        qtest(q, "outl 0xcf8 0x%x", cfg_addr(off & ~3u));
        return (uint32_t)qtest(q, "inl 0xcfc") >> (8 * (off & 3));
}

static void cfg_write32(struct qemu *q, unsigned off, uint32_t v) {
        qtest(q, "outl 0xcf8 0x%x", cfg_addr(off));
        qtest(q, "outl 0xcfc 0x%x", v);
}

Test(ivshmem, real_qemu, .timeout = 60) {
        /* A prerequisite, not an option: skipping here hid the test on a
         * fresh machine, where nothing said it had not run. */
        if (access(QEMU, X_OK) < 0)
                cr_assert_fail("needs QEMU: " QEMU ": %s (package qemu-system-x86; "
                               "scripts/install-deps installs it)",
                               strerror(errno));

        struct vmq_ivshmem_server *srv = server(2);
        struct qemu q;
        struct timespec t0, t1;

        clock_gettime(CLOCK_MONOTONIC, &t0);
        qemu_start(&q);
        /* QEMU connects and reads its greeting while it realizes the
         * device, before its main loop (and the qtest socket) runs. */
        for (int i = 0; i < 100 && ev.n_joined == 0; i++)
                pump_wait(srv, 100);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        cr_assert_eq(ev.n_joined, 1, "qemu did not connect");
        cr_assert_eq(ev.joined[0], 1);
        pid_t pid = 0;
        cr_assert_eq(vmq_ivshmem_server_peer_cred(srv, 1, &pid, NULL), 0);
        cr_assert_eq(pid, q.pid);
        cr_log_info("qemu joined after %ld ms",
                    (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);

        /* The device, with its BARs placed and memory + bus mastering on. */
        cr_assert_eq(cfg_read(&q, 0), 0x11101af4u, "no ivshmem at slot %u", IVSHMEM_SLOT);
        cfg_write32(&q, 0x10, BAR0);
        cfg_write32(&q, 0x14, BAR1);
        cfg_write32(&q, 0x18, BAR2); /* 64-bit BAR: low half */
        cfg_write32(&q, 0x1c, 0);
        cfg_write32(&q, 0x04, 0x6);
        cr_assert_eq(qtest(&q, "readl 0x%x", BAR0 + 8), 1, "IVPosition is our peer id");

        /* The region: the guest's BAR 2 is our memfd. */
        volatile uint32_t *mem =
                mmap(NULL, SHM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, shm_fd, 0);
        cr_assert_neq(mem, MAP_FAILED);
        qtest(&q, "writel 0x%x 0x12345678", BAR2 + 64);
        cr_assert_eq(mem[16], 0x12345678u);
        mem[100] = 0x9abcdef0u;
        cr_assert_eq(qtest(&q, "readl 0x%x", BAR2 + 400), 0x9abcdef0u);
        munmap((void *)mem, SHM_SIZE);

        /* The guest rings the monitor: doorbell = peer << 16 | vector.  QEMU
         * takes the peers' eventfds from its main loop after start-up, so
         * the first rings may find no peer 0 yet and be dropped: retry. */
        for (int i = 0; i < 40 && ev.doorbells[1] == 0; i++) {
                qtest(&q, "writel 0x%x 0x%x", BAR0 + 12, (VMQ_IVSHMEM_MONITOR_PEER << 16) | 1);
                pump_wait(srv, 50);
        }
        cr_assert_geq(ev.doorbells[1], 1, "doorbell never arrived");
        cr_assert_eq(ev.doorbells[0], 0);

        /* The monitor rings the guest: MSI-X vector 0 writes MSI_DATA at
         * MSI_ADDR in guest RAM once MSI-X is enabled and the entry is
         * unmasked. */
        unsigned cap = cfg_read(&q, 0x34) & 0xff;
        while (cap && (cfg_read(&q, cap) & 0xff) != 0x11)
                cap = (cfg_read(&q, cap) >> 8) & 0xff;
        cr_assert_neq(cap, 0, "no MSI-X capability");
        qtest(&q, "writel 0x%x 0x%x", BAR1 + 0, MSI_ADDR);
        qtest(&q, "writel 0x%x 0", BAR1 + 4);
        qtest(&q, "writel 0x%x 0x%x", BAR1 + 8, MSI_DATA);
        qtest(&q, "writel 0x%x 0", BAR1 + 12);
        cfg_write32(&q, cap, (cfg_read(&q, cap) & 0xffff) | (0x8000u << 16));
        cr_assert_eq(qtest(&q, "readl 0x%x", MSI_ADDR), 0);
        cr_assert_eq(vmq_ivshmem_server_notify(srv, 1, 0), 0);
        uint64_t got = 0;
        for (int i = 0; i < 100 && got != MSI_DATA; i++) {
                usleep(10000);
                got = qtest(&q, "readl 0x%x", MSI_ADDR);
        }
        cr_assert_eq(got, MSI_DATA, "no MSI-X message for the monitor's ring");

        /* QEMU dies: its peer is gone. */
        kill(q.pid, SIGKILL);
        cr_assert_eq(waitpid(q.pid, NULL, 0), q.pid);
        fclose(q.in);
        fclose(q.out);
        for (int i = 0; i < 50 && ev.n_left == 0; i++)
                pump_wait(srv, 100);
        cr_assert_eq(ev.n_left, 1);
        cr_assert_eq(ev.left[0], 1);
        cr_assert_eq(vmq_ivshmem_server_n_peers(srv), 0);
        vmq_ivshmem_server_free(srv);
}
