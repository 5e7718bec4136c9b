/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the vhost-user control plane (vhost/vhost-user.c):
 * a frontend that sends anything, with any fds.
 *
 * Each input is a sequence of operations on one device: a message (a
 * request number, mostly one the device knows, flags, a payload of any size
 * up to the largest message, and up to three fds: copies of a 64 KiB memfd
 * that stands for guest memory, or eventfds), a write by the guest into
 * that memory (it can rewrite rings the device is serving), or a turn of
 * the device serving every running ring.  The device is reset at the end.
 *
 * Checked besides memory safety: handling answers exactly the messages
 * that expect an answer (GET_ requests always, others only with
 * NEED_REPLY after REPLY_ACK was acked), a refused message changes no
 * memory table, every region the device holds lies inside its mapping of
 * the memfd, and no fd outlives the input.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/util.h"
#include "tests/fuzz/fuzz-util.h"
#include "vhost/vhost-user.h"

#define MEM (64u * 1024u)

static int memfd = -1;
static bool trace;     /* VMQ_FUZZ_TRACE=1: print each message and its result */
static uint8_t *guest; /* the harness's own view of guest memory */

static int count_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        int n = 0;
        FUZZ_CHECK(d);
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        (void)argc;
        (void)argv;
        trace = getenv("VMQ_FUZZ_TRACE") != NULL;
        memfd = memfd_create("fuzz-guest", MFD_CLOEXEC);
        FUZZ_CHECK(memfd >= 0 && ftruncate(memfd, MEM) == 0);
        guest = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
        FUZZ_CHECK(guest != MAP_FAILED);
        return 0;
}

static const uint32_t known[] = {
        VMQ_VHOST_GET_FEATURES,
        VMQ_VHOST_SET_FEATURES,
        VMQ_VHOST_SET_OWNER,
        VMQ_VHOST_SET_MEM_TABLE,
        VMQ_VHOST_SET_VRING_NUM,
        VMQ_VHOST_SET_VRING_ADDR,
        VMQ_VHOST_SET_VRING_BASE,
        VMQ_VHOST_GET_VRING_BASE,
        VMQ_VHOST_SET_VRING_KICK,
        VMQ_VHOST_SET_VRING_CALL,
        VMQ_VHOST_SET_VRING_ERR,
        VMQ_VHOST_GET_PROTOCOL_FEATURES,
        VMQ_VHOST_SET_PROTOCOL_FEATURES,
        VMQ_VHOST_GET_QUEUE_NUM,
        VMQ_VHOST_SET_VRING_ENABLE,
        VMQ_VHOST_GET_CONFIG,
        VMQ_VHOST_SET_CONFIG,
};

static bool is_get(uint32_t r) {
        return r == VMQ_VHOST_GET_FEATURES || r == VMQ_VHOST_GET_PROTOCOL_FEATURES ||
               r == VMQ_VHOST_GET_VRING_BASE || r == VMQ_VHOST_GET_QUEUE_NUM ||
               r == VMQ_VHOST_GET_CONFIG;
}

static void check_regions(const struct vmq_vhost_dev *d) {
        for (unsigned i = 0; i < d->mem.n; i++) {
                const struct vmq_gmem_region *r = &d->mem.r[i];
                const uint8_t *base = d->map_base[i];
                FUZZ_CHECK(base && r->hva >= base);
                FUZZ_CHECK((uint64_t)(r->hva - base) + r->size == d->map_len[i]);
                FUZZ_CHECK(d->map_len[i] <= MEM);
        }
}

static void message(struct vmq_vhost_dev *d, struct fuzz_input *in) {
        struct vmq_vhost_msg m, reply;
        int fds[3];
        uint8_t s = fuzz_u8(in);
        m.request = s < 0xf0 ? known[s % VMQ_ARRAY_SIZE(known)] : fuzz_u32(in);
        m.flags = VMQ_VHOST_VERSION | (fuzz_u8(in) & 1 ? VMQ_VHOST_FLAG_NEED_REPLY : 0);
        m.size = fuzz_u16(in) % (VMQ_VHOST_MAX_PAYLOAD + 1);
        memset(m.payload, 0, sizeof(m.payload));
        fuzz_bytes(in, m.payload, m.size);
        uint8_t f = fuzz_u8(in);
        unsigned nfds = f % 4;
        for (unsigned i = 0; i < nfds; i++) {
                fds[i] = f & (0x10 << i) ? eventfd(0, EFD_CLOEXEC) : dup(memfd);
                FUZZ_CHECK(fds[i] >= 0);
        }
        struct vmq_gmem_region before[VMQ_GMEM_MAX_REGIONS];
        unsigned nbefore = d->mem.n;
        memcpy(before, d->mem.r, sizeof(before));
        bool ack = d->protocol_features >> VMQ_VHOST_PROTOCOL_F_REPLY_ACK & 1;
        int result;
        bool answered = vmq_vhost_handle(d, &m, fds, nfds, &reply, &result);
        FUZZ_CHECK(result <= 0);
        if (trace)
                fprintf(stderr, "fuzz-vhost-user: %s size %u fds %u -> %d%s\n",
                        vmq_vhost_request_to_string(m.request), m.size, nfds, result,
                        answered ? " (answered)" : "");
        if (is_get(m.request))
                FUZZ_CHECK(answered);
        else if (m.request == VMQ_VHOST_SET_PROTOCOL_FEATURES)
                FUZZ_CHECK(!answered || (m.flags & VMQ_VHOST_FLAG_NEED_REPLY));
        else
                FUZZ_CHECK(answered == (ack && (m.flags & VMQ_VHOST_FLAG_NEED_REPLY)));
        if (answered) {
                FUZZ_CHECK(reply.request == m.request);
                FUZZ_CHECK(reply.flags == (VMQ_VHOST_VERSION | VMQ_VHOST_FLAG_REPLY));
                FUZZ_CHECK(reply.size <= VMQ_VHOST_MAX_PAYLOAD);
        }
        if (result < 0)
                FUZZ_CHECK(nbefore == d->mem.n && memcmp(before, d->mem.r, sizeof(before)) == 0);
        check_regions(d);
}

static void serve(struct vmq_vhost_dev *d) {
        static struct vmq_virtq_elem e;
        for (unsigned i = 0; i < VMQ_VHOST_QUEUES; i++) {
                if (!vmq_vhost_vring_ready(d, i))
                        continue;
                for (int k = 0; k < 8 && vmq_virtq_pop(&d->vring[i].q, &d->mem, &e) == 1; k++) {
                        uint8_t sum = 0;
                        for (unsigned j = 0; j < e.nout + e.nin; j++)
                                for (uint32_t b = 0; b < e.iov[j].len; b += 512)
                                        sum ^= e.iov[j].base[b]; /* a fault if outside */
                        (void)sum;
                        vmq_virtq_push(&d->vring[i].q, e.head, 0);
                }
                (void)vmq_virtq_need_call(&d->vring[i].q);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct fuzz_input in = {data, size};
        struct vmq_vhost_dev d;
        int fds_before = count_fds();
        memset(guest, 0, MEM);
        vmq_vhost_dev_init(&d, 3);
        for (unsigned steps = 0; fuzz_left(&in) > 0 && steps < 64; steps++) {
                uint8_t op = fuzz_u8(&in);
                if (op < 0xc0) {
                        message(&d, &in);
                } else if (op < 0xe0) {
                        uint16_t off = fuzz_u16(&in) % MEM;
                        uint8_t len = fuzz_u8(&in);
                        fuzz_bytes(&in, guest + off, VMQ_MIN((size_t)len, (size_t)(MEM - off)));
                } else {
                        serve(&d);
                }
        }
        vmq_vhost_dev_reset(&d);
        FUZZ_CHECK(count_fds() == fds_before);
        return 0;
}
