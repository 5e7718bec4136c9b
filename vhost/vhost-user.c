/* SPDX-License-Identifier: MIT */
/* The vhost-user control plane of a vsock device: see vhost-user.h. */
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/util.h"
#include "vhost/vhost-user.h"
#include "vhost/vsock-pkt.h"

#define HDR_SIZE 12u
#define REGION_SIZE 32u /* guest_phys_addr, memory_size, userspace_addr, mmap_offset */
#define CONFIG_HDR 12u  /* offset, size, flags */
#define CONFIG_MAX 256u
#define VSOCK_CONFIG_SIZE 8u /* le64 guest_cid */
#define VRING_F_LOG 1u

uint64_t vmq_vhost_features(void) {
        /* The switch keeps a SEQPACKET record's end (vsock.c), so the
         * device offers SEQPACKET. */
        return 1ull << VMQ_VIRTIO_F_VERSION_1 | 1ull << VMQ_VIRTIO_F_EVENT_IDX |
               1ull << VMQ_VIRTIO_VSOCK_F_SEQPACKET | 1ull << VMQ_VHOST_F_PROTOCOL_FEATURES;
}

uint64_t vmq_vhost_protocol_features(void) {
        return 1ull << VMQ_VHOST_PROTOCOL_F_REPLY_ACK | 1ull << VMQ_VHOST_PROTOCOL_F_CONFIG;
}

static void close_fd(int *fd) {
        if (*fd >= 0)
                (void)close(*fd);
        *fd = -1;
}

static void vring_init(struct vmq_vhost_vring *v) {
        memset(v, 0, sizeof(*v));
        v->kick = v->call = v->err = -1;
}

void vmq_vhost_dev_init(struct vmq_vhost_dev *d, uint64_t guest_cid) {
        memset(d, 0, sizeof(*d));
        d->guest_cid = guest_cid;
        vmq_gmem_init(&d->mem);
        for (unsigned i = 0; i < VMQ_VHOST_QUEUES; i++)
                vring_init(&d->vring[i]);
}

static void unmap_all(void **base, uint64_t *len, unsigned n) {
        for (unsigned i = 0; i < n; i++)
                if (base[i])
                        (void)munmap(base[i], len[i]);
}

void vmq_vhost_dev_reset(struct vmq_vhost_dev *d) {
        for (unsigned i = 0; i < VMQ_VHOST_QUEUES; i++) {
                close_fd(&d->vring[i].kick);
                close_fd(&d->vring[i].call);
                close_fd(&d->vring[i].err);
        }
        unmap_all(d->map_base, d->map_len, d->mem.n);
        vmq_vhost_dev_init(d, d->guest_cid);
}

int vmq_vhost_recv(int sock, struct vmq_vhost_msg *msg, int *fds, unsigned *nfds) {
        union {
                char buf[CMSG_SPACE(sizeof(int) * VMQ_VHOST_MAX_FDS)];
                struct cmsghdr align;
        } control;
        struct iovec iov = {.iov_base = msg, .iov_len = HDR_SIZE};
        struct msghdr mh = {.msg_iov = &iov,
                            .msg_iovlen = 1,
                            .msg_control = control.buf,
                            .msg_controllen = sizeof(control.buf)};
        *nfds = 0;
        ssize_t n;
        do
                n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        /* The fds first, so that every way out below closes them. */
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
                if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                        continue;
                unsigned k = (unsigned)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                for (unsigned i = 0; i < k && *nfds < VMQ_VHOST_MAX_FDS; i++)
                        memcpy(&fds[(*nfds)++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
        int r = 0;
        if (n == 0)
                r = -ECONNRESET;
        else if ((size_t)n < HDR_SIZE || (mh.msg_flags & MSG_CTRUNC))
                r = -EBADMSG;
        else if ((msg->flags & 3u) != VMQ_VHOST_VERSION || msg->size > VMQ_VHOST_MAX_PAYLOAD)
                r = -EBADMSG;
        else if (msg->size > 0) {
                do
                        n = recv(sock, msg->payload, msg->size, MSG_WAITALL);
                while (n < 0 && errno == EINTR);
                r = n < 0 ? -errno : (uint32_t)n != msg->size ? -ECONNRESET : 0;
        }
        if (r < 0) {
                for (unsigned i = 0; i < *nfds; i++)
                        (void)close(fds[i]);
                *nfds = 0;
        }
        return r;
}

int vmq_vhost_send(int sock, const struct vmq_vhost_msg *reply) {
        size_t len = HDR_SIZE + reply->size, done = 0;
        const uint8_t *p = (const uint8_t *)reply;
        while (done < len) {
                ssize_t n = send(sock, p + done, len - done, MSG_NOSIGNAL);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                done += (size_t)n;
        }
        return 0;
}

static uint64_t get_u64(const struct vmq_vhost_msg *m, size_t off) {
        uint64_t v;
        memcpy(&v, m->payload + off, sizeof(v));
        return v;
}

static uint32_t get_u32(const struct vmq_vhost_msg *m, size_t off) {
        uint32_t v;
        memcpy(&v, m->payload + off, sizeof(v));
        return v;
}

static void reply_u64(struct vmq_vhost_msg *r, uint64_t v) {
        r->size = sizeof(v);
        memcpy(r->payload, &v, sizeof(v));
}

static void reply_state(struct vmq_vhost_msg *r, uint32_t index, uint32_t num) {
        r->size = 8;
        memcpy(r->payload, &index, 4);
        memcpy(r->payload + 4, &num, 4);
}

bool vmq_vhost_vring_ready(const struct vmq_vhost_dev *d, unsigned i) {
        return i < VMQ_VHOST_QUEUES && d->vring[i].started && d->vring[i].enabled;
}

/* (Re)points vring v's queue at its addresses in the current memory. */
static int vring_setup(struct vmq_vhost_dev *d, struct vmq_vhost_vring *v, uint16_t base) {
        if (!v->addr_set || v->num == 0)
                return -EINVAL;
        int r = vmq_virtq_setup(&v->q, &d->mem, v->num, v->desc, v->avail, v->used, base,
                                d->features >> VMQ_VIRTIO_F_EVENT_IDX & 1);
        return r == -EINVAL ? -EINVAL : r < 0 ? -EFAULT : 0;
}

/* SET_MEM_TABLE: maps every region first, and only then replaces the old
 * table; a failure unmaps what it mapped and leaves the old one. */
static int set_mem_table(struct vmq_vhost_dev *d, const struct vmq_vhost_msg *m, int *fds,
                         unsigned nfds) {
        if (m->size < 8)
                return -EBADMSG;
        uint32_t n = get_u32(m, 0);
        if (n == 0 || n > VMQ_GMEM_MAX_REGIONS || m->size != 8 + REGION_SIZE * n || nfds != n)
                return -EBADMSG;
        struct vmq_gmem mem;
        void *base[VMQ_GMEM_MAX_REGIONS] = {0};
        uint64_t len[VMQ_GMEM_MAX_REGIONS] = {0};
        int r = 0;
        vmq_gmem_init(&mem);
        for (uint32_t i = 0; i < n && r == 0; i++) {
                size_t off = 8 + (size_t)REGION_SIZE * i;
                uint64_t gpa = get_u64(m, off), size = get_u64(m, off + 8);
                uint64_t uaddr = get_u64(m, off + 16), moff = get_u64(m, off + 24);
                struct stat st;
                if (size == 0 || moff > UINT64_MAX - size || moff + size > (uint64_t)SIZE_MAX) {
                        r = -EINVAL;
                        break;
                }
                /* A mapping past the file's end would fault on first touch
                 * (SIGBUS), in the middle of serving a queue. */
                if (fstat(fds[i], &st) < 0 || st.st_size < 0 ||
                    (uint64_t)st.st_size < moff + size) {
                        r = -EINVAL;
                        break;
                }
                /* The whole prefix is mapped, so the offset need not be
                 * page aligned. */
                void *p = mmap(NULL, (size_t)(moff + size), PROT_READ | PROT_WRITE, MAP_SHARED,
                               fds[i], 0);
                if (p == MAP_FAILED) {
                        r = -ENOMEM;
                        break;
                }
                base[i] = p;
                len[i] = moff + size;
                r = vmq_gmem_add(&mem, gpa, size, uaddr, (uint8_t *)p + moff);
        }
        if (r < 0) {
                unmap_all(base, len, n);
                return r;
        }
        unmap_all(d->map_base, d->map_len, d->mem.n);
        d->mem = mem;
        memcpy(d->map_base, base, sizeof(base));
        memcpy(d->map_len, len, sizeof(len));
        /* Running rings pointed into the old mappings. */
        for (unsigned i = 0; i < VMQ_VHOST_QUEUES; i++) {
                struct vmq_vhost_vring *v = &d->vring[i];
                if (v->started && vring_setup(d, v, v->q.last_avail) < 0)
                        v->started = false; /* its ring is no longer in guest memory */
        }
        return 0;
}

/* SET_VRING_KICK, _CALL, _ERR: the queue index and the fd (or none). */
static int set_vring_fd(struct vmq_vhost_dev *d, const struct vmq_vhost_msg *m, int *fds,
                        unsigned nfds) {
        if (m->size != 8)
                return -EBADMSG;
        uint64_t v = get_u64(m, 0);
        unsigned index = (unsigned)(v & 0xff);
        bool nofd = v & VMQ_VHOST_VRING_NOFD;
        if ((v & ~(uint64_t)0x1ff) || index >= VMQ_VHOST_QUEUES || nfds != (nofd ? 0u : 1u))
                return -EBADMSG;
        struct vmq_vhost_vring *vr = &d->vring[index];
        if (m->request == VMQ_VHOST_SET_VRING_KICK) {
                /* No polling mode: a ring is kicked or not started. */
                if (nofd)
                        return -ENOTSUP;
                int r = vring_setup(d, vr, vr->base);
                if (r < 0)
                        return r;
                close_fd(&vr->kick);
                vr->kick = fds[0];
                fds[0] = -1;
                vr->started = true;
                /* Without protocol features a ring starts enabled. */
                if (!(d->features >> VMQ_VHOST_F_PROTOCOL_FEATURES & 1))
                        vr->enabled = true;
                return 0;
        }
        int *slot = m->request == VMQ_VHOST_SET_VRING_CALL ? &vr->call : &vr->err;
        close_fd(slot);
        if (!nofd) {
                *slot = fds[0];
                fds[0] = -1;
        }
        return 0;
}

static int get_config(const struct vmq_vhost_dev *d, const struct vmq_vhost_msg *m,
                      struct vmq_vhost_msg *reply) {
        if (m->size < CONFIG_HDR)
                return -EBADMSG;
        uint32_t off = get_u32(m, 0), size = get_u32(m, 4);
        if (size > CONFIG_MAX || m->size != CONFIG_HDR + size)
                return -EBADMSG;
        if (off > VSOCK_CONFIG_SIZE || size > VSOCK_CONFIG_SIZE - off)
                return -EINVAL;
        uint8_t cfg[VSOCK_CONFIG_SIZE];
        uint64_t cid = htole64(d->guest_cid);
        memcpy(cfg, &cid, sizeof(cid));
        memcpy(reply->payload, m->payload, CONFIG_HDR);
        memcpy(reply->payload + CONFIG_HDR, cfg + off, size);
        reply->size = CONFIG_HDR + size;
        return 0;
}

/* Payload sizes of the messages with a fixed one. */
static uint32_t fixed_size(uint32_t request) {
        switch (request) {
        case VMQ_VHOST_GET_FEATURES:
        case VMQ_VHOST_SET_OWNER:
        case VMQ_VHOST_GET_PROTOCOL_FEATURES:
        case VMQ_VHOST_GET_QUEUE_NUM:
                return 0;
        case VMQ_VHOST_SET_FEATURES:
        case VMQ_VHOST_SET_PROTOCOL_FEATURES:
        case VMQ_VHOST_SET_VRING_NUM:
        case VMQ_VHOST_SET_VRING_BASE:
        case VMQ_VHOST_GET_VRING_BASE:
        case VMQ_VHOST_SET_VRING_ENABLE:
                return 8;
        case VMQ_VHOST_SET_VRING_ADDR:
                return 40;
        default:
                return UINT32_MAX; /* variable, or checked where handled */
        }
}

static bool is_get(uint32_t request) {
        return request == VMQ_VHOST_GET_FEATURES || request == VMQ_VHOST_GET_PROTOCOL_FEATURES ||
               request == VMQ_VHOST_GET_VRING_BASE || request == VMQ_VHOST_GET_QUEUE_NUM ||
               request == VMQ_VHOST_GET_CONFIG;
}

static bool takes_fds(uint32_t request) {
        return request == VMQ_VHOST_SET_MEM_TABLE || request == VMQ_VHOST_SET_VRING_KICK ||
               request == VMQ_VHOST_SET_VRING_CALL || request == VMQ_VHOST_SET_VRING_ERR;
}

/* Everything but the reply; returns 0 or why the message was refused. */
static int act(struct vmq_vhost_dev *d, const struct vmq_vhost_msg *m, int *fds, unsigned nfds,
               struct vmq_vhost_msg *reply) {
        uint32_t want = fixed_size(m->request);
        if (want != UINT32_MAX && m->size != want)
                return -EBADMSG;
        if (nfds > 0 && !takes_fds(m->request))
                return -EBADMSG;
        uint32_t index = m->size >= 4 ? get_u32(m, 0) : 0, num = m->size >= 8 ? get_u32(m, 4) : 0;
        struct vmq_vhost_vring *v = index < VMQ_VHOST_QUEUES ? &d->vring[index] : NULL;
        switch (m->request) {
        case VMQ_VHOST_GET_FEATURES:
                reply_u64(reply, vmq_vhost_features());
                return 0;
        case VMQ_VHOST_SET_FEATURES: {
                uint64_t f = get_u64(m, 0);
                if (f & ~vmq_vhost_features())
                        return -EINVAL;
                d->features = f;
                return 0;
        }
        case VMQ_VHOST_SET_OWNER:
                d->owned = true;
                return 0;
        case VMQ_VHOST_GET_PROTOCOL_FEATURES:
                reply_u64(reply, vmq_vhost_protocol_features());
                return 0;
        case VMQ_VHOST_SET_PROTOCOL_FEATURES: {
                uint64_t f = get_u64(m, 0);
                if (f & ~vmq_vhost_protocol_features())
                        return -EINVAL;
                d->protocol_features = f;
                return 0;
        }
        case VMQ_VHOST_GET_QUEUE_NUM:
                reply_u64(reply, VMQ_VHOST_QUEUES);
                return 0;
        case VMQ_VHOST_SET_MEM_TABLE:
                return set_mem_table(d, m, fds, nfds);
        case VMQ_VHOST_SET_VRING_NUM:
                if (!v || v->started)
                        return -EINVAL;
                if (!VMQ_IS_POW2(num) || num > VMQ_VHOST_MAX_QUEUE_SIZE)
                        return -EINVAL;
                v->num = num;
                return 0;
        case VMQ_VHOST_SET_VRING_ADDR: {
                if (!v)
                        return -EINVAL;
                if (get_u32(m, 4) & VRING_F_LOG)
                        return -ENOTSUP; /* no dirty logging: no live migration */
                struct vmq_vhost_vring saved = *v;
                v->desc = get_u64(m, 8);
                v->used = get_u64(m, 16);
                v->avail = get_u64(m, 24);
                v->addr_set = true;
                if (v->started) {
                        int r = vring_setup(d, v, v->q.last_avail);
                        if (r < 0) {
                                *v = saved;
                                return r;
                        }
                }
                return 0;
        }
        case VMQ_VHOST_SET_VRING_BASE:
                if (!v || v->started || num > UINT16_MAX)
                        return -EINVAL;
                v->base = (uint16_t)num;
                return 0;
        case VMQ_VHOST_GET_VRING_BASE:
                if (!v)
                        return -EINVAL;
                /* Stops the ring; the next start begins where it left. */
                if (v->started)
                        v->base = v->q.last_avail;
                v->started = false;
                close_fd(&v->kick);
                reply_state(reply, index, v->base);
                return 0;
        case VMQ_VHOST_SET_VRING_KICK:
        case VMQ_VHOST_SET_VRING_CALL:
        case VMQ_VHOST_SET_VRING_ERR:
                return set_vring_fd(d, m, fds, nfds);
        case VMQ_VHOST_SET_VRING_ENABLE:
                if (!v || num > 1)
                        return -EINVAL;
                v->enabled = num;
                return 0;
        case VMQ_VHOST_GET_CONFIG:
                return get_config(d, m, reply);
        case VMQ_VHOST_SET_CONFIG:
                return -ENOTSUP; /* the guest's CID is vmqd's to choose */
        default:
                return -ENOTSUP;
        }
}

bool vmq_vhost_handle(struct vmq_vhost_dev *d, const struct vmq_vhost_msg *msg, int *fds,
                      unsigned nfds, struct vmq_vhost_msg *reply, int *result) {
        memset(reply, 0, offsetof(struct vmq_vhost_msg, payload));
        reply->request = msg->request;
        reply->flags = VMQ_VHOST_VERSION | VMQ_VHOST_FLAG_REPLY;
        int r = act(d, msg, fds, nfds, reply);
        /* whatever was not kept */
        for (unsigned i = 0; i < nfds; i++)
                close_fd(&fds[i]);
        *result = r;
        if (is_get(msg->request)) {
                if (r < 0) {
                        /* an answer of the right kind that says nothing: an
                         * empty config, a zero */
                        if (msg->request == VMQ_VHOST_GET_CONFIG)
                                reply->size = 0;
                        else if (msg->request == VMQ_VHOST_GET_VRING_BASE)
                                reply_state(reply, 0, 0);
                        else
                                reply_u64(reply, 0);
                }
                return true;
        }
        if ((msg->flags & VMQ_VHOST_FLAG_NEED_REPLY) &&
            (d->protocol_features >> VMQ_VHOST_PROTOCOL_F_REPLY_ACK & 1)) {
                reply_u64(reply, r < 0 ? 1 : 0);
                return true;
        }
        return false;
}

const char *vmq_vhost_request_to_string(uint32_t request) {
        switch (request) {
        case VMQ_VHOST_GET_FEATURES:
                return "GET_FEATURES";
        case VMQ_VHOST_SET_FEATURES:
                return "SET_FEATURES";
        case VMQ_VHOST_SET_OWNER:
                return "SET_OWNER";
        case VMQ_VHOST_RESET_OWNER:
                return "RESET_OWNER";
        case VMQ_VHOST_SET_MEM_TABLE:
                return "SET_MEM_TABLE";
        case VMQ_VHOST_SET_VRING_NUM:
                return "SET_VRING_NUM";
        case VMQ_VHOST_SET_VRING_ADDR:
                return "SET_VRING_ADDR";
        case VMQ_VHOST_SET_VRING_BASE:
                return "SET_VRING_BASE";
        case VMQ_VHOST_GET_VRING_BASE:
                return "GET_VRING_BASE";
        case VMQ_VHOST_SET_VRING_KICK:
                return "SET_VRING_KICK";
        case VMQ_VHOST_SET_VRING_CALL:
                return "SET_VRING_CALL";
        case VMQ_VHOST_SET_VRING_ERR:
                return "SET_VRING_ERR";
        case VMQ_VHOST_GET_PROTOCOL_FEATURES:
                return "GET_PROTOCOL_FEATURES";
        case VMQ_VHOST_SET_PROTOCOL_FEATURES:
                return "SET_PROTOCOL_FEATURES";
        case VMQ_VHOST_GET_QUEUE_NUM:
                return "GET_QUEUE_NUM";
        case VMQ_VHOST_SET_VRING_ENABLE:
                return "SET_VRING_ENABLE";
        case VMQ_VHOST_GET_CONFIG:
                return "GET_CONFIG";
        case VMQ_VHOST_SET_CONFIG:
                return "SET_CONFIG";
        default:
                return "unknown";
        }
}
