/* SPDX-License-Identifier: MIT */
/*
 * The backend side of the vhost-user control plane (QEMU's
 * docs/interop/vhost-user.rst) for a virtio-vsock device: two queues (rx 0,
 * tx 1; the event queue stays in QEMU), the guest's CID in the config space,
 * and the messages QEMU 7.2 sends such a device.
 *
 * vmq_vhost_recv() reads one message and the fds it carries from the
 * frontend's socket (fds arrive close-on-exec), vmq_vhost_handle() acts on
 * it and says whether to answer, vmq_vhost_send() answers.  The frontend is
 * checked like a guest: a message of the wrong size, a queue index past 1,
 * a memory table that does not fit its fds, a ring outside guest memory:
 * each is refused with an error (a reply of 1 where the frontend asked for
 * one; for a GET_ message, an empty answer of the right kind), changes
 * nothing, and leaks no fd or mapping.  A message the device does not know
 * (logging, inflight tracking, memory slots one by one: none is offered)
 * is refused with -ENOTSUP the same way.
 */
#ifndef VMQ_VHOST_USER_H
#define VMQ_VHOST_USER_H

#include <stdbool.h>
#include <stdint.h>

#include "vhost/gmem.h"
#include "vhost/virtq.h"

enum vmq_vhost_request {
        VMQ_VHOST_GET_FEATURES = 1,
        VMQ_VHOST_SET_FEATURES = 2,
        VMQ_VHOST_SET_OWNER = 3,
        VMQ_VHOST_RESET_OWNER = 4,
        VMQ_VHOST_SET_MEM_TABLE = 5,
        VMQ_VHOST_SET_VRING_NUM = 8,
        VMQ_VHOST_SET_VRING_ADDR = 9,
        VMQ_VHOST_SET_VRING_BASE = 10,
        VMQ_VHOST_GET_VRING_BASE = 11,
        VMQ_VHOST_SET_VRING_KICK = 12,
        VMQ_VHOST_SET_VRING_CALL = 13,
        VMQ_VHOST_SET_VRING_ERR = 14,
        VMQ_VHOST_GET_PROTOCOL_FEATURES = 15,
        VMQ_VHOST_SET_PROTOCOL_FEATURES = 16,
        VMQ_VHOST_GET_QUEUE_NUM = 17,
        VMQ_VHOST_SET_VRING_ENABLE = 18,
        VMQ_VHOST_GET_CONFIG = 24,
        VMQ_VHOST_SET_CONFIG = 25,
};

/* Header flags. */
#define VMQ_VHOST_VERSION 0x1u
#define VMQ_VHOST_FLAG_REPLY 0x4u
#define VMQ_VHOST_FLAG_NEED_REPLY 0x8u

/* Feature bits. */
#define VMQ_VHOST_F_PROTOCOL_FEATURES 30
#define VMQ_VHOST_PROTOCOL_F_REPLY_ACK 3
#define VMQ_VHOST_PROTOCOL_F_CONFIG 9

#define VMQ_VHOST_QUEUES 2u        /* rx, tx */
#define VMQ_VHOST_MAX_PAYLOAD 272u /* the largest message we take: a memory table */
#define VMQ_VHOST_MAX_FDS 8u
#define VMQ_VHOST_VRING_NOFD 0x100u /* in SET_VRING_KICK/CALL/ERR: no fd comes */
#define VMQ_VHOST_MAX_QUEUE_SIZE 1024u

struct vmq_vhost_msg {
        uint32_t request;
        uint32_t flags;
        uint32_t size; /* of payload */
        uint8_t payload[VMQ_VHOST_MAX_PAYLOAD];
};

struct vmq_vhost_vring {
        unsigned num;
        uint64_t desc, avail, used; /* frontend addresses */
        uint16_t base;
        bool addr_set;
        int kick, call, err; /* fds, -1 when none */
        bool enabled;
        bool started; /* kick fd received, not stopped by GET_VRING_BASE */
        struct vmq_virtq q;
};

struct vmq_vhost_dev {
        uint64_t features;          /* acked by SET_FEATURES */
        uint64_t protocol_features; /* acked by SET_PROTOCOL_FEATURES */
        bool owned;
        uint64_t guest_cid; /* the config space: le64 guest_cid */
        struct vmq_gmem mem;
        /* the mappings behind mem.r[i]: base and length to unmap */
        void *map_base[VMQ_GMEM_MAX_REGIONS];
        uint64_t map_len[VMQ_GMEM_MAX_REGIONS];
        struct vmq_vhost_vring vring[VMQ_VHOST_QUEUES];
};

/* A device with no memory, no rings and this CID. */
void vmq_vhost_dev_init(struct vmq_vhost_dev *d, uint64_t guest_cid);
/* Closes its fds and unmaps guest memory; it is then as after init. */
void vmq_vhost_dev_reset(struct vmq_vhost_dev *d);

/* The features the device offers (GET_FEATURES, GET_PROTOCOL_FEATURES). */
uint64_t vmq_vhost_features(void);
uint64_t vmq_vhost_protocol_features(void);

/*
 * Reads one message from the frontend's socket, with the fds it carries
 * (up to VMQ_VHOST_MAX_FDS, close-on-exec, the caller's to close).
 * Returns 0; -ECONNRESET at end of file; -EBADMSG for a header of the wrong
 * version or a payload larger than VMQ_VHOST_MAX_PAYLOAD (the connection
 * is then out of step: close it); -errno.  On failure no fd is left open.
 */
int vmq_vhost_recv(int sock, struct vmq_vhost_msg *msg, int *fds, unsigned *nfds);

/* Sends a reply. */
int vmq_vhost_send(int sock, const struct vmq_vhost_msg *reply);

/*
 * Acts on one message.  It owns the fds it is given (kept or closed).  When
 * the frontend expects an answer, *reply is filled and true is returned:
 * the answer to a GET_ message, or, for any other message with NEED_REPLY
 * (REPLY_ACK negotiated), a u64 that is 0 on success and 1 on failure.
 * *result is 0 or the reason a message was refused (-EINVAL, -EBADMSG,
 * -ENOTSUP, -EFAULT, -ENOMEM): the caller logs it.
 */
bool vmq_vhost_handle(struct vmq_vhost_dev *d, const struct vmq_vhost_msg *msg, int *fds,
                      unsigned nfds, struct vmq_vhost_msg *reply, int *result);

/* Is vring i running (started and enabled, its ring set up)? */
bool vmq_vhost_vring_ready(const struct vmq_vhost_dev *d, unsigned i);

const char *vmq_vhost_request_to_string(uint32_t request);

#endif /* VMQ_VHOST_USER_H */
