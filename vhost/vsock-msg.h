/* SPDX-License-Identifier: MIT */
/*
 * vsock connections carried as messages: a port on the vsock switch
 * (vsock.h) whose other side speaks in whole messages on channels, not in
 * virtio packets.  vmqd puts one in front of each machine without a vsock
 * device (a micro-VM) that guests may reach: each connection a guest opens
 * to the port's CID becomes one channel, opened by the ops.
 *
 * The framing, each way:
 *   - a SOCK_SEQPACKET record is one message (at most
 *     VMQ_VSOCK_MSG_RECORD_MAX bytes from a guest);
 *   - a stream is cut into messages of at most VMQ_VSOCK_MSG_CHUNK bytes,
 *     anywhere;
 *   - an empty message marked `done` says its sender sends no more
 *     (shutdown(SHUT_WR)); once both sides have said so, or the guest
 *     resets the connection, the channel is closed;
 *   - the channel closing on the machine's side resets the connection.
 * The connection opens at once, without the machine.
 *
 * Flow control: the guest has VMQ_VSOCK_MSG_BUF_ALLOC bytes of credit per
 * connection; what the machine cannot take yet (ops->send says -EAGAIN)
 * waits here, at most that many bytes and VMQ_VSOCK_MSG_QUEUE_MAX
 * messages, until vmq_vsock_msgport_run() is called again.  A message from
 * the machine goes to the guest when the guest has credit for it (a record
 * whole).  A guest that sends past its credit, a record past the maximum
 * or more messages than the queue holds, and a machine that sends a record
 * larger than the guest's buffer, end their connection: the guest gets a
 * reset, the channel is closed (ops->close says why).
 *
 * Plain C, no logging, one thread at a time (the switch's).
 */
#ifndef VMQ_VHOST_VSOCK_MSG_H
#define VMQ_VHOST_VSOCK_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhost/vsock.h"

#define VMQ_VSOCK_MSG_CHUNK 4096u
#define VMQ_VSOCK_MSG_RECORD_MAX (64u * 1024u)
#define VMQ_VSOCK_MSG_BUF_ALLOC (256u * 1024u)
#define VMQ_VSOCK_MSG_QUEUE_MAX 1024u
#define VMQ_VSOCK_MSG_MAX_CONNS 256u

/* Why a connection ended (ops->close). */
enum vmq_vsock_msg_end {
        VMQ_VSOCK_MSG_END_DONE,          /* both sides said done */
        VMQ_VSOCK_MSG_END_GUEST_RESET,   /* the guest reset it (or the switch did) */
        VMQ_VSOCK_MSG_END_CLOSED,        /* the channel closed on the machine's side */
        VMQ_VSOCK_MSG_END_OVERRUN,       /* the guest sent past its credit or queue */
        VMQ_VSOCK_MSG_END_RECORD,        /* the guest's record passed the maximum */
        VMQ_VSOCK_MSG_END_GUEST_FULL,    /* the machine's record exceeds the guest's buffer */
        VMQ_VSOCK_MSG_END_UNDELIVERABLE, /* ops->send failed for good */
        VMQ_VSOCK_MSG_END_GONE,          /* the port went away */
};

struct vmq_vsock_msgport;

struct vmq_vsock_msgport_ops {
        /* A guest asks for a connection from guest_port to `port`: opens
         * its channel, *ret_channel.  0, or -errno (the guest gets a
         * reset). */
        int (*open)(void *userdata, uint64_t guest_cid, uint32_t guest_port, uint32_t port,
                    bool seqpacket, uint32_t *ret_channel);
        /* Hands one message to the machine (`done`: the empty end mark).
         * 0; -EAGAIN: it has no room now (the port calls ops->retry and
         * tries again at the next run); another -errno ends the
         * connection. */
        int (*send)(void *userdata, uint32_t channel, const uint8_t *data, size_t len, bool done);
        /* The machine's next message on the channel: 0, with *ret_buf
         * (malloc()ed: the port free()s it), the payload at *ret_data and
         * its *ret_len bytes, *ret_done for the end mark; -EAGAIN: none
         * now; -EPIPE: closed, nothing left. */
        int (*recv)(void *userdata, uint32_t channel, void **ret_buf, const uint8_t **ret_data,
                    size_t *ret_len, bool *ret_done);
        /* The connection ended: close the channel and forget it. */
        void (*close)(void *userdata, uint32_t channel, uint64_t guest_cid,
                      enum vmq_vsock_msg_end why);
        /* A send said -EAGAIN: call vmq_vsock_msgport_run() again soon. */
        void (*retry)(void *userdata);
};

/* Adds a port with this CID to the switch.  -EINVAL, -EEXIST, -ENOMEM. */
int vmq_vsock_msgport_new(struct vmq_vsock_switch *sw, uint64_t cid,
                          const struct vmq_vsock_msgport_ops *ops, void *userdata,
                          struct vmq_vsock_msgport **ret);
/* Ends every connection (the guests get resets, ops->close with
 * VMQ_VSOCK_MSG_END_GONE), leaves the switch, frees.  NULL: nothing. */
struct vmq_vsock_msgport *vmq_vsock_msgport_free(struct vmq_vsock_msgport *mp);

/* Moves what can move on every connection: queued messages to the
 * machine, the machine's messages to the guests.  Not from inside a switch
 * callback. */
void vmq_vsock_msgport_run(struct vmq_vsock_msgport *mp);

unsigned vmq_vsock_msgport_conns(const struct vmq_vsock_msgport *mp);
const char *vmq_vsock_msg_end_to_string(enum vmq_vsock_msg_end why);

#endif /* VMQ_VHOST_VSOCK_MSG_H */
