/* SPDX-License-Identifier: MIT */
/*
 * The vhost-user control plane (vhost/vhost-user.c).  The test plays QEMU:
 * it talks to the device over a socket pair, passes a memfd as guest
 * memory and eventfds as kicks and calls, as QEMU 7.2 does for a
 * vhost-user-vsock-pci device, then drives a ring in that memory as the
 * guest's driver would.  And it sends what QEMU never should.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/util.h"
#include "tests/test-util.h"
#include "vhost/vhost-user.h"

#define MEM (1u << 20)
#define GPA 0x40000000ull
#define UA 0x7f1200000000ull /* where "QEMU" has guest memory */
#define CID 42u

static int sv[2] = {-1, -1}; /* 0: the frontend (the test), 1: the device */
static struct vmq_vhost_dev dev;
static int memfd = -1;
static uint8_t *guest; /* the test's own view of guest memory */
static int fds_before;

static void setup(void) {
        fds_before = vmq_test_count_fds();
        cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        vmq_vhost_dev_init(&dev, CID);
        memfd = memfd_create("guest", MFD_CLOEXEC);
        cr_assert_geq(memfd, 0);
        cr_assert_eq(ftruncate(memfd, MEM), 0);
        guest = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
        cr_assert_neq(guest, MAP_FAILED);
}

static void teardown(void) {
        vmq_vhost_dev_reset(&dev);
        munmap(guest, MEM);
        close(memfd);
        close(sv[0]);
        close(sv[1]);
        cr_expect_eq(vmq_test_count_fds(), fds_before, "no fd left behind");
}

TestSuite(vhost_user, .init = setup, .fini = teardown, .timeout = 30);

/* Sends a message with fds, as the frontend. */
static void fe_send(uint32_t request, uint32_t flags, const void *payload, uint32_t size,
                    const int *fds, unsigned nfds) {
        struct vmq_vhost_msg m = {
                .request = request, .flags = VMQ_VHOST_VERSION | flags, .size = size};
        if (size)
                memcpy(m.payload, payload, size);
        struct iovec iov = {.iov_base = &m, .iov_len = 12 + size};
        union {
                char buf[CMSG_SPACE(sizeof(int) * VMQ_VHOST_MAX_FDS)];
                struct cmsghdr align;
        } control;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        if (nfds) {
                mh.msg_control = control.buf;
                mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
                memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
        }
        cr_assert_eq(sendmsg(sv[0], &mh, 0), (ssize_t)(12 + size));
}

/* The device takes one message and answers it if it should; returns what
 * handling said, and the reply in *ret (size UINT32_MAX: none). */
static int device_step(struct vmq_vhost_msg *ret) {
        struct vmq_vhost_msg m, reply;
        int fds[VMQ_VHOST_MAX_FDS];
        unsigned nfds;
        int result;
        cr_assert_eq(vmq_vhost_recv(sv[1], &m, fds, &nfds), 0);
        ret->size = UINT32_MAX;
        if (vmq_vhost_handle(&dev, &m, fds, nfds, &reply, &result)) {
                cr_assert_eq(vmq_vhost_send(sv[1], &reply), 0);
                cr_assert_eq(recv(sv[0], ret, 12, MSG_WAITALL), 12);
                cr_assert_eq(ret->flags, VMQ_VHOST_VERSION | VMQ_VHOST_FLAG_REPLY);
                cr_assert_eq(ret->request, m.request);
                if (ret->size)
                        cr_assert_eq(recv(sv[0], ret->payload, ret->size, MSG_WAITALL),
                                     (ssize_t)ret->size);
        }
        return result;
}

static uint64_t u64_of(const struct vmq_vhost_msg *r) {
        uint64_t v;
        cr_assert_eq(r->size, 8);
        memcpy(&v, r->payload, 8);
        return v;
}

/* A message and the device's handling of it; with NEED_REPLY the ack is
 * checked against `result`. */
static int call(uint32_t request, const void *payload, uint32_t size, const int *fds, unsigned nfds,
                struct vmq_vhost_msg *reply) {
        struct vmq_vhost_msg r;
        fe_send(request, VMQ_VHOST_FLAG_NEED_REPLY, payload, size, fds, nfds);
        int result = device_step(reply ? reply : &r);
        return result;
}

static int call_u64(uint32_t request, uint64_t v) {
        struct vmq_vhost_msg r;
        int result = call(request, &v, 8, NULL, 0, &r);
        if (r.size != UINT32_MAX && request != VMQ_VHOST_GET_FEATURES)
                cr_assert_eq(u64_of(&r), result < 0 ? 1u : 0u, "REPLY_ACK says what happened");
        return result;
}

static int call_state(uint32_t request, uint32_t index, uint32_t num) {
        uint32_t s[2] = {index, num};
        struct vmq_vhost_msg r;
        int result = call(request, s, 8, NULL, 0, &r);
        return result;
}

static int set_addr(uint32_t index, uint64_t desc, uint64_t used, uint64_t avail) {
        uint8_t p[40] = {0};
        memcpy(p, &index, 4);
        memcpy(p + 8, &desc, 8);
        memcpy(p + 16, &used, 8);
        memcpy(p + 24, &avail, 8);
        struct vmq_vhost_msg r;
        return call(VMQ_VHOST_SET_VRING_ADDR, p, 40, NULL, 0, &r);
}

/* SET_MEM_TABLE with regions {gpa, size, uaddr, offset} of the memfd. */
static int set_mem(unsigned n, const uint64_t (*reg)[4]) {
        uint8_t p[8 + 32 * VMQ_GMEM_MAX_REGIONS] = {0};
        int fds[VMQ_GMEM_MAX_REGIONS];
        memcpy(p, &n, 4);
        for (unsigned i = 0; i < n; i++) {
                memcpy(p + 8 + 32 * i, reg[i], 32);
                fds[i] = dup(memfd); /* QEMU passes one fd per region */
        }
        struct vmq_vhost_msg r;
        int result = call(VMQ_VHOST_SET_MEM_TABLE, p, 8 + 32 * n, fds, n, &r);
        for (unsigned i = 0; i < n; i++)
                close(fds[i]); /* ours; the device got copies */
        return result;
}

static int set_fd(uint32_t request, unsigned index, int fd) {
        uint64_t v = index | (fd < 0 ? VMQ_VHOST_VRING_NOFD : 0);
        struct vmq_vhost_msg r;
        return call(request, &v, 8, &fd, fd < 0 ? 0 : 1, &r);
}

/* What QEMU 7.2 sends a vhost-user-vsock device, up to running rings. */
static void negotiate(void) {
        struct vmq_vhost_msg r;
        call(VMQ_VHOST_GET_FEATURES, NULL, 0, NULL, 0, &r);
        uint64_t features = u64_of(&r);
        cr_assert(features >> VMQ_VHOST_F_PROTOCOL_FEATURES & 1);
        call(VMQ_VHOST_GET_PROTOCOL_FEATURES, NULL, 0, NULL, 0, &r);
        uint64_t pf = u64_of(&r);
        cr_assert(pf >> VMQ_VHOST_PROTOCOL_F_CONFIG & 1, "QEMU 7.2 needs CONFIG");
        cr_assert_eq(call_u64(VMQ_VHOST_SET_PROTOCOL_FEATURES, pf), 0);
        call(VMQ_VHOST_GET_QUEUE_NUM, NULL, 0, NULL, 0, &r);
        cr_assert_eq(u64_of(&r), 2);
        cr_assert_eq(call(VMQ_VHOST_SET_OWNER, NULL, 0, NULL, 0, &r), 0);
        cr_assert_eq(u64_of(&r), 0);

        uint32_t cfg[3 + 2] = {0, 8, 0};
        cr_assert_eq(call(VMQ_VHOST_GET_CONFIG, cfg, 12 + 8, NULL, 0, &r), 0);
        uint64_t cid;
        cr_assert_eq(r.size, 12 + 8);
        memcpy(&cid, r.payload + 12, 8);
        cr_assert_eq(le64toh(cid), CID, "the guest learns its CID from the config space");

        cr_assert_eq(call_u64(VMQ_VHOST_SET_FEATURES, features), 0);
        /* guest memory in two regions of one memfd, with offsets */
        const uint64_t reg[2][4] = {{GPA, MEM / 2, UA, 0},
                                    {GPA + MEM / 2, MEM / 2, UA + MEM / 2, MEM / 2}};
        cr_assert_eq(set_mem(2, reg), 0);
        cr_assert_eq(dev.mem.n, 2);
        for (unsigned q = 0; q < 2; q++) {
                uint64_t base = UA + 0x10000 * (q + 1);
                cr_assert_eq(call_state(VMQ_VHOST_SET_VRING_NUM, q, 128), 0);
                cr_assert_eq(call_state(VMQ_VHOST_SET_VRING_BASE, q, 0), 0);
                cr_assert_eq(set_addr(q, base, base + 0x1000, base + 0x800), 0);
                int kick = eventfd(0, EFD_CLOEXEC), callfd = eventfd(0, EFD_CLOEXEC);
                cr_assert_eq(set_fd(VMQ_VHOST_SET_VRING_CALL, q, callfd), 0);
                cr_assert_eq(set_fd(VMQ_VHOST_SET_VRING_KICK, q, kick), 0);
                close(kick);
                close(callfd);
                cr_assert_not(vmq_vhost_vring_ready(&dev, q), "disabled until enabled");
                cr_assert_eq(call_state(VMQ_VHOST_SET_VRING_ENABLE, q, 1), 0);
                cr_assert(vmq_vhost_vring_ready(&dev, q));
        }
}

Test(vhost_user, qemus_sequence_brings_up_both_rings_over_guest_memory) {
        negotiate();
        /* The "guest" puts one buffer on the tx ring (queue 1), in the
         * second region, through its own mapping of the memfd. */
        uint32_t ring = 0x20000, data = MEM / 2 + 0x100;
        uint64_t addr = GPA + data;
        uint32_t len = 6;
        memcpy(guest + ring, &addr, 8);
        memcpy(guest + ring + 8, &len, 4);
        memcpy(guest + data, "hello!", 6);
        uint16_t head = 0, idx = 1;
        memcpy(guest + ring + 0x800 + 4, &head, 2);
        memcpy(guest + ring + 0x800 + 2, &idx, 2);
        struct vmq_virtq_elem e;
        cr_assert_eq(vmq_virtq_pop(&dev.vring[1].q, &dev.mem, &e), 1);
        cr_assert(e.nout == 1 && e.out_len == 6);
        cr_assert_eq(memcmp(e.iov[0].base, "hello!", 6), 0, "the device reads guest memory");
        vmq_virtq_push(&dev.vring[1].q, e.head, 0);

        /* Stopping the ring gives where it stands. */
        struct vmq_vhost_msg r;
        uint32_t s[2] = {1, 0};
        cr_assert_eq(call(VMQ_VHOST_GET_VRING_BASE, s, 8, NULL, 0, &r), 0);
        uint32_t got[2];
        memcpy(got, r.payload, 8);
        cr_assert(got[0] == 1 && got[1] == 1, "stopped at 1");
        cr_assert_not(vmq_vhost_vring_ready(&dev, 1));
        cr_assert_eq(dev.vring[1].kick, -1);

        /* A new memory table keeps the running ring (queue 0) on guest
         * memory: it is pointed at the new mapping. */
        const uint64_t one[1][4] = {{GPA, MEM, UA, 0}};
        cr_assert_eq(set_mem(1, one), 0);
        cr_assert(vmq_vhost_vring_ready(&dev, 0));
}

Test(vhost_user, bad_messages_are_refused_and_change_nothing) {
        negotiate();
        struct vmq_vhost_msg r;
        const uint64_t past[1][4] = {{GPA, MEM * 2, UA, 0}};
        cr_assert_eq(set_mem(1, past), -EINVAL, "a region past the end of its file");
        const uint64_t wrap[1][4] = {{GPA, 4096, UA, UINT64_MAX - 100}};
        cr_assert_eq(set_mem(1, wrap), -EINVAL);
        const uint64_t overlap[2][4] = {{GPA, MEM / 2, UA, 0}, {GPA + 4096, 4096, UA + MEM, 0}};
        cr_assert_eq(set_mem(2, overlap), -EINVAL, "overlapping regions");
        cr_assert_eq(dev.mem.n, 2, "the old table stays");
        cr_assert(vmq_vhost_vring_ready(&dev, 0));

        uint8_t few[8] = {0};
        cr_assert_eq(call(VMQ_VHOST_SET_MEM_TABLE, few, 8, NULL, 0, &r), -EBADMSG, "0 regions");
        cr_assert_eq(call(VMQ_VHOST_SET_FEATURES, few, 4, NULL, 0, &r), -EBADMSG, "short");
        cr_assert_eq(call_u64(VMQ_VHOST_SET_FEATURES, 1ull << 40), -EINVAL, "not offered");
        cr_assert_eq(call_u64(VMQ_VHOST_SET_PROTOCOL_FEATURES, 1ull << 0), -EINVAL, "no MQ");
        cr_assert_eq(call_state(VMQ_VHOST_SET_VRING_NUM, 2, 128), -EINVAL, "queue 2");
        cr_assert_eq(call_state(VMQ_VHOST_SET_VRING_NUM, 0, 64), -EINVAL, "ring 0 runs");
        cr_assert_eq(call_state(VMQ_VHOST_SET_VRING_BASE, 0, 5), -EINVAL, "ring 0 runs");
        cr_assert_eq(call_state(VMQ_VHOST_SET_VRING_ENABLE, 0, 2), -EINVAL);
        cr_assert_eq(set_addr(0, UA + MEM, UA + MEM + 0x1000, UA + MEM + 0x800), -EFAULT,
                     "a running ring moved outside guest memory");
        cr_assert(vmq_vhost_vring_ready(&dev, 0), "and it keeps its old place");

        /* ring 1, stopped: a kick before its ring fits is refused */
        uint32_t s[2] = {1, 0};
        cr_assert_eq(call(VMQ_VHOST_GET_VRING_BASE, s, 8, NULL, 0, &r), 0);
        cr_assert_eq(call_state(VMQ_VHOST_SET_VRING_NUM, 1, 3), -EINVAL, "not a power of two");
        cr_assert_eq(call_state(VMQ_VHOST_SET_VRING_NUM, 1, 2048), -EINVAL, "above 1024");
        cr_assert_eq(set_addr(1, UA - 0x10000, UA, UA + 0x800), 0, "stored, not yet used");
        int kick = eventfd(0, EFD_CLOEXEC);
        cr_assert_eq(set_fd(VMQ_VHOST_SET_VRING_KICK, 1, kick), -EFAULT);
        cr_assert_eq(set_fd(VMQ_VHOST_SET_VRING_KICK, 1, -1), -ENOTSUP, "no polling mode");
        cr_assert_not(vmq_vhost_vring_ready(&dev, 1));
        /* fds where none belong are closed, and refused */
        cr_assert_eq(call(VMQ_VHOST_SET_OWNER, NULL, 0, &kick, 1, &r), -EBADMSG);
        uint64_t v = 5;
        cr_assert_eq(call(VMQ_VHOST_SET_VRING_CALL, &v, 8, &kick, 1, &r), -EBADMSG, "queue 5");
        v = 0;
        cr_assert_eq(call(VMQ_VHOST_SET_VRING_CALL, &v, 8, NULL, 0, &r), -EBADMSG, "fd missing");
        close(kick);

        uint32_t cfg[3] = {4, 8, 0};
        uint8_t cbuf[20] = {0};
        memcpy(cbuf, cfg, 12);
        cr_assert_eq(call(VMQ_VHOST_GET_CONFIG, cbuf, 20, NULL, 0, &r), -EINVAL, "past 8 bytes");
        cr_assert_eq(r.size, 0, "an empty config answer");
        cr_assert_eq(call(VMQ_VHOST_SET_CONFIG, cbuf, 20, NULL, 0, &r), -ENOTSUP);
        cr_assert_eq(call(99, NULL, 0, NULL, 0, &r), -ENOTSUP);
        cr_assert_eq(u64_of(&r), 1);
        cr_assert_str_eq(vmq_vhost_request_to_string(99), "unknown");
        cr_assert_str_eq(vmq_vhost_request_to_string(VMQ_VHOST_GET_CONFIG), "GET_CONFIG");
}

Test(vhost_user, a_broken_stream_is_refused_without_leaking_fds) {
        struct vmq_vhost_msg m;
        int fds[VMQ_VHOST_MAX_FDS];
        unsigned nfds;
        int e = eventfd(0, EFD_CLOEXEC);
        /* a payload larger than any message: out of step */
        struct {
                uint32_t request, flags, size;
        } h = {VMQ_VHOST_SET_MEM_TABLE, VMQ_VHOST_VERSION, 4096};
        struct iovec iov = {&h, 12};
        union {
                char buf[CMSG_SPACE(sizeof(int))];
                struct cmsghdr align;
        } control;
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = control.buf,
                            .msg_controllen = sizeof(control.buf)};
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &e, sizeof(int));
        cr_assert_eq(sendmsg(sv[0], &mh, 0), 12);
        cr_assert_eq(vmq_vhost_recv(sv[1], &m, fds, &nfds), -EBADMSG);
        cr_assert_eq(nfds, 0);
        /* another version */
        h.size = 0;
        h.flags = 2;
        cr_assert_eq(send(sv[0], &h, 12, 0), 12);
        cr_assert_eq(vmq_vhost_recv(sv[1], &m, fds, &nfds), -EBADMSG);
        /* a payload cut short by the frontend going away */
        h.flags = VMQ_VHOST_VERSION;
        h.size = 8;
        cr_assert_eq(send(sv[0], &h, 12, 0), 12);
        cr_assert_eq(send(sv[0], "abc", 3, 0), 3);
        shutdown(sv[0], SHUT_WR);
        cr_assert_eq(vmq_vhost_recv(sv[1], &m, fds, &nfds), -ECONNRESET);
        cr_assert_eq(vmq_vhost_recv(sv[1], &m, fds, &nfds), -ECONNRESET, "end of file");
        close(e);
}
