/* SPDX-License-Identifier: MIT */
/* A test frontend for vmqd's vsock devices: see vhost-frontend.h. */
#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tests/vhost-frontend.h"
#include "vhost/gmem.h"
#include "vhost/vhost-user.h"
#include "vhost/virtq.h"

#define MEM (1u << 20)
#define UA 0x7f3400000000ull /* where "QEMU" has guest memory */
#define NUM 16u
#define RX_RING 0x0u
#define TX_RING 0x2000u
#define RX_BUF 0x10000u /* 16 x 4 KiB */
#define TX_BUF 0x40000u /* 16 x 16 KiB */
#define RX_SIZE 4096u
#define TX_SIZE 16384u
#define AVAIL 0x800u
#define USED 0x1000u

static void put16(struct vfe *f, uint32_t off, uint16_t v) {
        v = htole16(v);
        memcpy(f->mem + off, &v, 2);
}

/* Publishes an avail index: the entries before it are written first. */
static void publish16(struct vfe *f, uint32_t off, uint16_t v) {
        __atomic_store_n((uint16_t *)(void *)(f->mem + off), htole16(v), __ATOMIC_RELEASE);
}

static uint16_t get16(const struct vfe *f, uint32_t off) {
        uint16_t v;
        __atomic_load((const uint16_t *)(const void *)(f->mem + off), &v, __ATOMIC_ACQUIRE);
        return le16toh(v);
}

static void desc(struct vfe *f, uint32_t ring, uint16_t i, uint32_t off, uint32_t len,
                 uint16_t flags) {
        uint8_t *d = f->mem + ring + 16u * i;
        uint64_t a = htole64(off); /* guest-physical address == offset */
        uint32_t l = htole32(len);
        memcpy(d, &a, 8);
        memcpy(d + 8, &l, 4);
        put16(f, ring + 16u * i + 12, flags);
        put16(f, ring + 16u * i + 14, 0);
}

static void send_msg(struct vfe *f, uint32_t request, const void *payload, uint32_t size,
                     const int *fds, unsigned nfds) {
        struct vmq_vhost_msg m = {.request = request, .flags = VMQ_VHOST_VERSION, .size = size};
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
        cr_assert_eq(sendmsg(f->sock, &mh, MSG_NOSIGNAL), (ssize_t)(12 + size),
                     "the device takes %s", vmq_vhost_request_to_string(request));
}

/* A GET_ message and its answer's payload (size bytes). */
static void get(struct vfe *f, uint32_t request, const void *payload, uint32_t size, void *ret,
                uint32_t ret_size) {
        struct vmq_vhost_msg r;
        send_msg(f, request, payload, size, NULL, 0);
        cr_assert_eq(recv(f->sock, &r, 12, MSG_WAITALL), 12, "%s is answered",
                     vmq_vhost_request_to_string(request));
        cr_assert_eq(r.request, request);
        cr_assert_eq(r.size, ret_size, "%s: %u bytes, not %u", vmq_vhost_request_to_string(request),
                     r.size, ret_size);
        cr_assert_eq(recv(f->sock, ret, ret_size, MSG_WAITALL), (ssize_t)ret_size);
}

static void set_u64(struct vfe *f, uint32_t request, uint64_t v, int fd) {
        send_msg(f, request, &v, 8, &fd, fd < 0 ? 0 : 1);
}

static void set_state(struct vfe *f, uint32_t request, uint32_t index, uint32_t num) {
        uint32_t s[2] = {index, num};
        send_msg(f, request, s, 8, NULL, 0);
}

void vfe_connect(struct vfe *f, const char *path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};

        memset(f, 0, sizeof(*f));
        f->kick[0] = f->kick[1] = f->call[0] = f->call[1] = -1;
        cr_assert_lt(strlen(path), sizeof(sa.sun_path));
        strcpy(sa.sun_path, path);
        f->sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        cr_assert_geq(f->sock, 0);
        int r = -1;
        for (int i = 0; i < 500 && r < 0; i++) {
                r = connect(f->sock, (struct sockaddr *)&sa, sizeof(sa));
                if (r < 0)
                        usleep(10000);
        }
        cr_assert_eq(r, 0, "connect to %s: %s", path, strerror(errno));

        f->memfd = memfd_create("vfe-guest", MFD_CLOEXEC);
        cr_assert_geq(f->memfd, 0);
        cr_assert_eq(ftruncate(f->memfd, MEM), 0);
        f->mem = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
        cr_assert_neq(f->mem, MAP_FAILED);

        uint64_t features, pf, nq;
        get(f, VMQ_VHOST_GET_FEATURES, NULL, 0, &features, 8);
        get(f, VMQ_VHOST_GET_PROTOCOL_FEATURES, NULL, 0, &pf, 8);
        cr_assert(pf >> VMQ_VHOST_PROTOCOL_F_CONFIG & 1);
        /* No REPLY_ACK: QEMU does without it, and nothing is answered that
         * was not asked for. */
        set_u64(f, VMQ_VHOST_SET_PROTOCOL_FEATURES, pf & ~(1ull << VMQ_VHOST_PROTOCOL_F_REPLY_ACK),
                -1);
        get(f, VMQ_VHOST_GET_QUEUE_NUM, NULL, 0, &nq, 8);
        cr_assert_eq(nq, 2);
        send_msg(f, VMQ_VHOST_SET_OWNER, NULL, 0, NULL, 0);
        uint32_t cfg[5] = {0, 8, 0};
        uint8_t got[20];
        get(f, VMQ_VHOST_GET_CONFIG, cfg, 20, got, 20);
        memcpy(&f->cid, got + 12, 8);
        f->cid = le64toh(f->cid);
        /* Without event indices: a call after every used buffer. */
        set_u64(f, VMQ_VHOST_SET_FEATURES, features & ~(1ull << VMQ_VIRTIO_F_EVENT_IDX), -1);

        uint8_t mt[8 + 2 * 32] = {0};
        uint32_t n = 2;
        const uint64_t reg[2][4] = {{0, MEM / 2, UA, 0}, {MEM / 2, MEM / 2, UA + MEM / 2, MEM / 2}};
        memcpy(mt, &n, 4);
        memcpy(mt + 8, reg, sizeof(reg));
        int fds[2] = {f->memfd, f->memfd};
        send_msg(f, VMQ_VHOST_SET_MEM_TABLE, mt, sizeof(mt), fds, 2);

        for (unsigned q = 0; q < 2; q++) {
                uint32_t ring = q == 0 ? RX_RING : TX_RING;
                uint8_t a[40] = {0};
                uint64_t d = UA + ring, av = UA + ring + AVAIL, u = UA + ring + USED;
                set_state(f, VMQ_VHOST_SET_VRING_NUM, q, NUM);
                set_state(f, VMQ_VHOST_SET_VRING_BASE, q, 0);
                memcpy(a, &q, 4);
                memcpy(a + 8, &d, 8);
                memcpy(a + 16, &u, 8);
                memcpy(a + 24, &av, 8);
                send_msg(f, VMQ_VHOST_SET_VRING_ADDR, a, 40, NULL, 0);
                f->kick[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                f->call[q] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                cr_assert(f->kick[q] >= 0 && f->call[q] >= 0);
                set_u64(f, VMQ_VHOST_SET_VRING_CALL, q, f->call[q]);
                set_u64(f, VMQ_VHOST_SET_VRING_KICK, q, f->kick[q]);
                set_state(f, VMQ_VHOST_SET_VRING_ENABLE, q, 1);
        }
        /* A GET_ answered means every message before it was handled. */
        get(f, VMQ_VHOST_GET_FEATURES, NULL, 0, &features, 8);
}

void vfe_close(struct vfe *f) {
        for (unsigned q = 0; q < 2; q++) {
                if (f->kick[q] >= 0)
                        close(f->kick[q]);
                if (f->call[q] >= 0)
                        close(f->call[q]);
        }
        if (f->mem)
                munmap(f->mem, MEM);
        if (f->memfd > 0)
                close(f->memfd);
        if (f->sock > 0)
                close(f->sock);
        memset(f, 0, sizeof(*f));
        f->sock = f->memfd = -1;
}

static void kick(struct vfe *f, unsigned q) {
        uint64_t one = 1;
        cr_assert_eq(write(f->kick[q], &one, 8), 8);
}

void vfe_post_rx(struct vfe *f, unsigned n) {
        for (unsigned k = 0; k < n; k++) {
                uint16_t i = f->rx_avail % NUM;
                desc(f, RX_RING, i, RX_BUF + RX_SIZE * i, RX_SIZE, 2 /* WRITE */);
                put16(f, RX_RING + AVAIL + 4 + 2 * i, i);
                f->rx_avail++;
                publish16(f, RX_RING + AVAIL + 2, f->rx_avail);
        }
        kick(f, 0);
}

struct vmq_vsock_hdr vfe_hdr(const struct vfe *f, uint64_t dst_cid, uint32_t src_port,
                             uint32_t dst_port, uint16_t op, uint32_t len) {
        return (struct vmq_vsock_hdr){.src_cid = f->cid,
                                      .dst_cid = dst_cid,
                                      .src_port = src_port,
                                      .dst_port = dst_port,
                                      .len = len,
                                      .type = VMQ_VSOCK_TYPE_STREAM,
                                      .op = op,
                                      .buf_alloc = 262144};
}

void vfe_send(struct vfe *f, const struct vmq_vsock_hdr *h, const void *payload) {
        uint16_t i = f->tx_avail % NUM;
        uint32_t off = TX_BUF + TX_SIZE * i;
        struct vmq_iov v = {f->mem + off, TX_SIZE};
        cr_assert_leq(h->len, TX_SIZE - VMQ_VSOCK_HDR_SIZE);
        cr_assert_eq(vmq_vsock_hdr_write(&v, 1, h), 0);
        if (h->len)
                memcpy(f->mem + off + VMQ_VSOCK_HDR_SIZE, payload, h->len);
        desc(f, TX_RING, i, off, VMQ_VSOCK_HDR_SIZE + h->len, 0);
        put16(f, TX_RING + AVAIL + 4 + 2 * i, i);
        f->tx_avail++;
        publish16(f, TX_RING + AVAIL + 2, f->tx_avail);
        kick(f, 1);
}

/* Waits for a call on queue q, or timeout_ms. */
static void wait_call(struct vfe *f, unsigned q, int timeout_ms) {
        struct pollfd p = {.fd = f->call[q], .events = POLLIN};
        uint64_t n;
        if (poll(&p, 1, timeout_ms) > 0)
                (void)!read(f->call[q], &n, 8);
}

static long long now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

bool vfe_recv(struct vfe *f, struct vmq_vsock_hdr *h, void *payload, int timeout_ms) {
        long long end = now_ms() + timeout_ms;
        while (get16(f, RX_RING + USED + 2) == f->rx_seen) {
                long long left = end - now_ms();
                if (left <= 0)
                        return false;
                wait_call(f, 0, (int)(left < 50 ? left : 50));
        }
        uint32_t id, len;
        uint32_t at = RX_RING + USED + 4 + 8 * (f->rx_seen % NUM);
        memcpy(&id, f->mem + at, 4);
        memcpy(&len, f->mem + at + 4, 4);
        id = le32toh(id);
        len = le32toh(len);
        f->rx_seen++;
        cr_assert_lt(id, NUM);
        struct vmq_iov v = {f->mem + RX_BUF + RX_SIZE * id, len};
        cr_assert_eq(vmq_vsock_hdr_read(&v, 1, h), 0, "a good header in every rx buffer");
        cr_assert_eq(len, VMQ_VSOCK_HDR_SIZE + h->len);
        if (payload)
                memcpy(payload, v.base + VMQ_VSOCK_HDR_SIZE, h->len);
        return true;
}

bool vfe_tx_done(struct vfe *f, int timeout_ms) {
        long long end = now_ms() + timeout_ms;
        while (get16(f, TX_RING + USED + 2) != f->tx_avail) {
                long long left = end - now_ms();
                if (left <= 0)
                        return false;
                wait_call(f, 1, (int)(left < 50 ? left : 50));
        }
        return true;
}

void vfe_expect(struct vfe *f, uint16_t op, uint64_t src_cid, const char *why) {
        struct vmq_vsock_hdr h;
        cr_assert(vfe_recv(f, &h, NULL, 5000), "CID %lu got nothing: %s", (unsigned long)f->cid,
                  why);
        cr_assert_eq(h.op, op, "CID %lu got %s, not %s: %s", (unsigned long)f->cid,
                     vmq_vsock_op_to_string(h.op), vmq_vsock_op_to_string(op), why);
        cr_assert_eq(h.src_cid, src_cid, "%s", why);
}

void vfe_expect_nothing(struct vfe *f, const char *why) {
        struct vmq_vsock_hdr h;
        cr_assert_not(vfe_recv(f, &h, NULL, 300), "CID %lu got %s: %s", (unsigned long)f->cid,
                      vmq_vsock_op_to_string(h.op), why);
}
