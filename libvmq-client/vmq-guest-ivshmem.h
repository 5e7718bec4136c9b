/* SPDX-License-Identifier: MIT */
/*
 * libvmq-client's guest transport: the vmq API inside a Linux guest that a
 * VMM other than vmq runs (QEMU under libvirt), over an ivshmem-doorbell PCI
 * device.
 *
 * The device's shared region (BAR2) holds the guest's VMCS, its queue and
 * post ring, a send area and a receive window (VMQ_TRANSPORT_IVSHMEM in
 * core/vmq-abi.h: every address there is an offset into the region).  A
 * request is a "hypercall" over shared memory: the guest fills mailbox 0,
 * marks it pending and rings the monitor's doorbell (BAR0); the monitor
 * answers in the mailbox.  The monitor raises the guest's interrupt (vector
 * 0) when it enqueues; this transport sleeps on it through UIO
 * (uio_pci_generic) when the device is bound to it, or polls with short
 * sleeps.  Pages always travel as copies: large payloads are copied into
 * the send area, and received pages are copied out of the receive window and
 * released at once.
 *
 * It needs no D-Bus and no daemon, only sysfs: it links into static
 * binaries (vmqctl-static, for a minimal initramfs).
 *
 * Conventions: as in vmq-client.h.  Functions return 0 (or a documented
 * non-negative value) or a negative errno; ret* parameters are written only
 * on success; destructors accept NULL and return NULL; file descriptors are
 * O_CLOEXEC.  A struct vmq_ivshmem is not thread-safe (it owns the VM's
 * single mailbox, queue consumer and post-ring producer): use it from one
 * thread at a time, and open a device from one process at a time.
 *
 * The monitor's answers map to errnos:
 *   -EAGAIN     the receiver's queue or window is full (nothing was sent)
 *   -ENXIO      no such channel, or this VM is not an end of it
 *   -EPIPE      the channel is closed
 *   -EMSGSIZE   the payload is larger than the send area or than the
 *               receiver's window
 *   -EINVAL     a malformed request
 *   -EFAULT     an offset outside this VM's areas
 *   -ENOMEM     the host is out of memory
 *   -EPROTO     the region is corrupt (impossible indices or offsets)
 *   -EPROTONOSUPPORT  the monitor speaks another ABI version
 *   -ENOSYS     the monitor does not know the request
 *   -ETIMEDOUT  the monitor did not answer in time (see
 *               vmq_ivshmem_set_timeout()), or nothing arrived in time
 */
#ifndef VMQ_GUEST_IVSHMEM_H
#define VMQ_GUEST_IVSHMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ivshmem PCI ids (QEMU's ivshmem-plain and ivshmem-doorbell). */
#define VMQ_IVSHMEM_PCI_VENDOR 0x1af4u
#define VMQ_IVSHMEM_PCI_DEVICE 0x1110u

/* vmq_ivshmem_recv(): any channel. */
#define VMQ_IVSHMEM_ANY_CHANNEL UINT32_MAX

/* Largest payload that travels inside a descriptor (VMQ_INLINE_MAX). */
#define VMQ_IVSHMEM_INLINE_MAX 96u

/* Opaque handle on one ivshmem region. */
struct vmq_ivshmem;

/* A VM's identity, as stamped by the monitor. */
struct vmq_ivshmem_identity {
        uint32_t vm_id; /* 0: the host */
        uint8_t uuid[16];
        char name[64]; /* NUL-terminated */
};

/* What a received message is (the values of the ABI's VMQ_DESC_*). */
enum vmq_ivshmem_kind {
        VMQ_IVSHMEM_DATA = 1,     /* a payload that travelled inline */
        VMQ_IVSHMEM_PAGE = 2,     /* a payload that travelled as pages */
        VMQ_IVSHMEM_HELLO = 3,    /* a channel opened: peer holds the other end */
        VMQ_IVSHMEM_CLOSE = 4,    /* a channel closed */
        VMQ_IVSHMEM_ERROR = 5,    /* a posted request failed: error, tag */
        VMQ_IVSHMEM_SHUTDOWN = 6, /* the host asks this VM to stop */
        VMQ_IVSHMEM_KIND_MAX
};

/* A received message; free() it. */
struct vmq_ivshmem_msg {
        enum vmq_ivshmem_kind kind;
        uint32_t channel;
        uint32_t src_vm;                  /* the sender, stamped by the monitor */
        uint64_t tag;                     /* the sender's tag (ERROR: the failed request's) */
        int error;                        /* ERROR: the failure as a negative errno, else 0 */
        struct vmq_ivshmem_identity peer; /* HELLO: the other end */
        size_t len;
        uint8_t data[]; /* len bytes of payload (DATA, PAGE) */
};

/* vmq_ivshmem_open() flags. */
enum {
        /* Bind the device to uio_pci_generic (driver_override) when it has
         * no driver and the module is loaded, to sleep on its interrupt. */
        VMQ_IVSHMEM_OPEN_BIND_UIO = 1u << 0,
        /* Never use UIO: poll the queue with short sleeps. */
        VMQ_IVSHMEM_OPEN_POLL = 1u << 1,
};

/*
 * vmq_ivshmem_open:
 * @pci_device: the device's PCI address as in /sys/bus/pci/devices
 *              ("0000:00:04.0"), or NULL for the first ivshmem device
 *              (VMQ_IVSHMEM_PCI_VENDOR:VMQ_IVSHMEM_PCI_DEVICE) whose region
 *              holds a vmq VMCS (or, when none does yet, the first one)
 * @flags: VMQ_IVSHMEM_OPEN_*
 * @ret: the new handle
 *
 * Enables the device (sysfs "enable"), maps its registers (resource0) and
 * its shared region (resource2), reads its ivshmem peer id (IVPosition),
 * then waits up to 5 s for the monitor to initialise the region and checks
 * it (magic, ABI version, transport, layout).  Uses /dev/uioN when the
 * device is bound to uio_pci_generic.  Needs root (sysfs resources).  The
 * environment variable VMQ_IVSHMEM_SYSFS names another directory to look
 * in instead of /sys/bus/pci/devices (tests fake a device with plain files
 * there); it is ignored in set-user-id programs.
 *
 * Returns: 0; -ENODEV (no ivshmem device, or @pci_device is not one);
 * -EACCES; -ETIMEDOUT (the region stayed uninitialised); -EPROTONOSUPPORT
 * (another ABI version or transport); -EPROTO (an impossible layout);
 * -ENOMEM; or another negative errno from sysfs.
 */
int vmq_ivshmem_open(const char *pci_device, unsigned flags, struct vmq_ivshmem **ret);

/*
 * vmq_ivshmem_open_region:
 * @regs: the device's register BAR (at least 16 bytes), or NULL
 * @shm: the shared region, page aligned, mapped read/write
 * @size: its size in bytes
 * @ring: called instead of writing the doorbell register when not NULL,
 *        with @userdata, the peer id and the vector (always
 *        VMQ_IVSHMEM_MONITOR_PEER and 0 today)
 * @userdata: for @ring
 * @ret: the new handle
 *
 * The same over a region the caller mapped itself (tests, or another way to
 * reach the device).  At least one of @regs and @ring is needed.  Does not
 * wait: the region must be initialised already.  Waiting is by polling.
 * The caller keeps @shm (and @regs) mapped until vmq_ivshmem_free().
 *
 * Returns: 0; -EINVAL; -EAGAIN (the region is not initialised yet);
 * -EPROTONOSUPPORT; -EPROTO; -ENOMEM.
 */
int vmq_ivshmem_open_region(void *regs, void *shm, size_t size,
                            void (*ring)(void *userdata, uint32_t peer, uint32_t vector),
                            void *userdata, struct vmq_ivshmem **ret);

/* Unmaps and closes everything (NULL is fine).  Pages of requests still
 * posted are not reclaimed.  Returns: NULL. */
struct vmq_ivshmem *vmq_ivshmem_free(struct vmq_ivshmem *v);

/*
 * vmq_ivshmem_set_timeout:
 *
 * How long a request waits for the monitor's answer (default 5 s).  A
 * request that times out returns -ETIMEDOUT; the pages of its payload stay
 * reserved for good, since the monitor may still read them.
 *
 * Returns: 0.
 */
int vmq_ivshmem_set_timeout(struct vmq_ivshmem *v, uint64_t usec);

/* This VM's identity, as the monitor published it in the VMCS.
 * Returns: 0. */
int vmq_ivshmem_self(struct vmq_ivshmem *v, struct vmq_ivshmem_identity *ret);

/* This device's ivshmem peer id (IVPosition), or -ENODEV without
 * registers. */
int vmq_ivshmem_position(struct vmq_ivshmem *v);

/* Whether waits sleep on the device's interrupt (UIO) rather than poll. */
bool vmq_ivshmem_uses_interrupts(struct vmq_ivshmem *v);

/* The most bytes vmq_ivshmem_send() can carry: the send area's size
 * (at least VMQ_IVSHMEM_INLINE_MAX). */
size_t vmq_ivshmem_max_send(struct vmq_ivshmem *v);

/*
 * vmq_ivshmem_send:
 * @channel: a channel this VM is an end of
 * @data: @len bytes (may be NULL when @len is 0)
 * @tag: a value the receiver sees with the message
 *
 * Sends one message and waits for the monitor's answer.  Up to
 * VMQ_IVSHMEM_INLINE_MAX bytes travel inline; more are copied into a run of
 * pages of the send area, which the monitor copies into the receiver before
 * it answers, and which are free again on return.
 *
 * Returns: 0 when the message is on the receiver's queue; -EMSGSIZE when
 * @len exceeds vmq_ivshmem_max_send(); -EAGAIN when posted requests still
 * hold the pages it needs (or the receiver is full); or another mapped
 * error of the monitor (see the top).
 */
int vmq_ivshmem_send(struct vmq_ivshmem *v, uint32_t channel, const void *data, size_t len,
                     uint64_t tag);

/*
 * vmq_ivshmem_post:
 *
 * The same, deferred: the request goes into the post ring and the doorbell
 * is rung; there is no answer.  The monitor carries requests out in order;
 * one the receiver has no room for waits at the head of the ring.  A failed
 * request comes back as a VMQ_IVSHMEM_ERROR message on this VM's queue with
 * its tag.  The payload is copied now (inline into the ring, or into pages
 * of the send area, which are reclaimed once the monitor has passed the
 * request).
 *
 * Returns: 0 once posted; -EAGAIN when the ring stays full for about
 * 100 ms; -EMSGSIZE when the send area has no room for the payload now;
 * -ENOSYS when the VMCS has no post ring; -EPROTO.
 */
int vmq_ivshmem_post(struct vmq_ivshmem *v, uint32_t channel, const void *data, size_t len,
                     uint64_t tag);

/* Posted requests the monitor has not carried out yet (>= 0), or
 * -EPROTO. */
int vmq_ivshmem_post_pending(struct vmq_ivshmem *v);

/* Asks the monitor to drain the post ring now (VMQ_HC_FLUSH) and waits for
 * the answer.  Returns: the number of requests drained (>= 0), or a
 * negative errno. */
int vmq_ivshmem_flush(struct vmq_ivshmem *v);

/*
 * vmq_ivshmem_recv:
 * @channel: the channel to receive on, or VMQ_IVSHMEM_ANY_CHANNEL
 * @timeout_usec: 0 only looks; UINT64_MAX waits without limit
 * @ret: the message, malloc()ed; free() it
 *
 * Takes the next message.  Page payloads are copied out of the receive
 * window and their slots released to the monitor at once.  HELLO messages
 * also record the peer for vmq_ivshmem_peer(), CLOSE forgets it.  The VM
 * has one queue for all its channels: messages for other channels that are
 * dequeued while waiting for @channel are kept in this handle (at most
 * 1024; past that the oldest are dropped, see vmq_ivshmem_dropped()) and
 * returned by later calls for their channel, in order.  SHUTDOWN and ERROR
 * messages are returned to any caller.
 *
 * A descriptor that fails its checks (unknown kind, an inline length above
 * the maximum, pages outside the receive window) is skipped and counted in
 * vmq_ivshmem_dropped().
 *
 * Returns: 0; -ETIMEDOUT; -EPROTO (impossible queue indices); -ENOMEM.
 */
int vmq_ivshmem_recv(struct vmq_ivshmem *v, uint32_t channel, uint64_t timeout_usec,
                     struct vmq_ivshmem_msg **ret);

/*
 * vmq_ivshmem_peek:
 *
 * Looks at the message vmq_ivshmem_recv(v, VMQ_IVSHMEM_ANY_CHANNEL, ...)
 * would take next, without taking it: the oldest one kept in this handle,
 * else the head of the queue (whose kind may then be one recv skips).
 *
 * Returns: 1 with *ret_kind and *ret_channel set (either may be NULL), 0
 * when there is nothing, or -EPROTO (impossible queue indices).
 */
int vmq_ivshmem_peek(struct vmq_ivshmem *v, enum vmq_ivshmem_kind *ret_kind, uint32_t *ret_channel);

/* Messages dropped from the backlog of vmq_ivshmem_recv(), and bad
 * descriptors skipped, since the handle was opened. */
uint64_t vmq_ivshmem_dropped(struct vmq_ivshmem *v);

/*
 * vmq_ivshmem_wait:
 *
 * Waits until the queue (or this handle's backlog) holds something, or
 * @timeout_usec elapse (UINT64_MAX: no limit).
 *
 * Returns: 1 when there is something to receive, 0 on timeout.
 */
int vmq_ivshmem_wait(struct vmq_ivshmem *v, uint64_t timeout_usec);

/*
 * vmq_ivshmem_peer:
 *
 * The identity of the other end of @channel, from the channel's HELLO seen
 * by vmq_ivshmem_recv() in this handle.
 *
 * Returns: 0, or -ENXIO when no HELLO was seen for @channel (or it closed).
 */
int vmq_ivshmem_peer(struct vmq_ivshmem *v, uint32_t channel, struct vmq_ivshmem_identity *ret);

/* Formats a UUID as 36 lowercase characters plus a NUL into @buf.
 * Returns: @buf. */
char *vmq_ivshmem_uuid_to_string(const uint8_t uuid[16], char buf[37]);

/* "data", "page", "hello", "close", "error", "shutdown" or "unknown". */
const char *vmq_ivshmem_kind_to_string(enum vmq_ivshmem_kind kind);

#ifdef __cplusplus
}
#endif

#endif /* VMQ_GUEST_IVSHMEM_H */
