/* SPDX-License-Identifier: MIT */
/*
 * vmq guest ABI, version 1.
 *
 * This header is the contract between the vmq monitor (host) and the code
 * running inside a vmq micro-VM (guest).  It compiles both freestanding (the
 * guest SDK builds it with -ffreestanding) and hosted (the monitor), so it
 * uses only <stdint.h> and <stddef.h>-level facilities and no pointers: every
 * guest address is a plain uint64_t guest-physical address (GPA).  Guests run
 * identity mapped, so for the guest a GPA is also a usable pointer value.
 *
 * Rules for evolving it:
 *   - Everything is little-endian, naturally aligned and fixed size.
 *   - Fields are only ever appended; VMQ_ABI_VERSION is bumped when they are.
 *     A guest built for version N runs on a monitor of any version >= N (it
 *     checks abi_version >= its own), and the monitor takes requests of
 *     every version from 1 up to its own (the request layout is the same).
 *   - Version 2 appended the notification words (vmcs.post_doorbell,
 *     vmcs.post_doorbells_seen).
 *   - Version 3 added channel links (the link window above 4 GiB,
 *     VMQ_HC_KICK, VMQ_DESC_F_LINK, struct vmq_link_hdr and vmq_link_msg).
 *   - Every size and offset is pinned by a _Static_assert below.
 *
 * Direction markers on every field:
 *   IN   written by the guest, read by the monitor (hostile: checked on use)
 *   OUT  written by the monitor, read by the guest (the guest may scribble over
 *        it; the monitor never reads it back as truth)
 *
 * Guest-physical memory layout (fixed by this ABI version)
 * --------------------------------------------------------
 *   [0, 4 KiB)                 unmapped: null pointer guard
 *   [4 KiB, 64 KiB)            system area: page tables, GDT, TSS.  Mapped
 *                              supervisor-only, the CPL 3 guest cannot touch it
 *   [64 KiB, +vmcs_size)       the VMCS (VMQ_VMCS_GPA), user read/write
 *   [1 MiB, ram_size)          the image (ELF segments must lie here), then
 *                              heap and stack, which the SDK lays out from the
 *                              layout fields of the VMCS
 *   [VMQ_RX_GPA, ...)          receive window: 4 KiB slots into which the
 *                              monitor places incoming pages
 *   [VMQ_HUGE_GPA, ...)        the guest's own 2 MiB pages (when the host has
 *                              hugetlb frames), for large zero-copy sends
 *   [VMQ_HUGE_RX_GPA, ...)     receive window for 2 MiB pages
 *   [VMQ_LINK_GPA, +VMQ_LINK_WINDOW)  channel links (version 3), one
 *                              VMQ_LINK_SIZE slot per linked channel
 *
 * Each region's actual size is published in struct vmq_vmcs_layout.
 *
 * Entry
 * -----
 * Every vCPU starts at the image's ELF entry point at CPL 3 with IOPL 3,
 * interrupts off, 64-bit mode, identity-mapped paging, and:
 *   %rdi = vCPU index, %rsi = VMQ_VMCS_GPA,
 *   %rsp = ram_size - index * VMQ_STACK_SIZE (16-byte aligned).
 * There is no IDT: any exception stops the VM ("crashed").  The guest may not
 * execute privileged instructions (there is nothing for it to do at CPL 0).
 *
 * Hypercalls
 * ----------
 * A hypercall is a 32-bit port read: `inl %dx, %eax` with
 * %dx = VMQ_HC_PORT_BASE + VMQ_HC_*.  Its arguments are in the calling vCPU's
 * mailbox (vmcs->mbox[vcpu]) and must be written *before* the port access.
 * The monitor answers in %eax (0 or a negative VMQ_E_* code, or a
 * non-negative result where a call says so) and also in the mailbox's OUT
 * fields.  A write of any value to VMQ_DOORBELL_PORT asks the monitor to drain
 * the post ring without waiting for the answer (an ioeventfd doorbell).
 *
 * Notifications (version 2)
 * -------------------------
 * Requests posted to the post ring need no exit while the monitor polls it.
 * The monitor says which in vmcs.post_doorbell: 0 while it polls this VM's
 * post ring, 1 once it has stopped (it set the word, then looked at the ring
 * once more).  A guest that posts publishes its producer index, issues a
 * full barrier (mfence or a locked instruction), then reads post_doorbell
 * and rings the doorbell only when it reads 1.  Between the two barriers no
 * request is left unseen: either the monitor's last look found it, or the
 * guest saw 1 and rang.  The monitor counts the doorbells it has taken in
 * vmcs.post_doorbells_seen (it stores the count, issues a full barrier,
 * then drains); a guest that counts its own rings may skip the doorbell
 * while its count is ahead of that one: a doorbell is still waiting, and
 * the drain that follows it sees the new request.  The word is only advice: the monitor keeps
 * its own state, and a guest that writes it only loses its own doorbells
 * (its posts then wait for its next exit).  A request stalled at the head
 * of the ring (the receiver is full) leaves the word at 0: the monitor
 * carries it out when the receiver makes room, and asks for doorbells
 * again once the ring is empty.
 * The other direction needs no word: a guest waits for its queue with
 * VMQ_HC_WAIT, and the monitor wakes only a vCPU that sleeps there.
 *
 * Channel links (version 3)
 * -------------------------
 * When a channel opens between two micro-VMs, the monitor maps one link of
 * shared memory into both of them and says where in each end's HELLO
 * (VMQ_DESC_F_LINK, desc.gpa).  A link is two single-producer rings of
 * inline messages, one per direction, that the two guests use without the
 * monitor: no exit, no poller, just memory.  At gpa each end sees
 *   [gpa,          +4 KiB)   its transmit ring's header (struct vmq_link_hdr)
 *   [gpa +  4 KiB, +4 KiB)   its transmit ring's VMQ_LINK_CAP messages
 *   [gpa +  8 KiB, +4 KiB)   its receive ring's header
 *   [gpa + 12 KiB, +4 KiB)   its receive ring's messages
 * (the other end sees the same memory with the two halves swapped).
 * Supervision keeps its meaning: a link exists only while its channel is
 * open and only between its two ends, its peer is the one the HELLO named,
 * and pages still travel through the monitor (a link carries inline
 * messages of at most VMQ_LINK_MSG_MAX bytes; messages on the link and on
 * the queue are not ordered with each other).  The monitor never reads a
 * link: the peer can write anything into it, so every index and length in
 * it is hostile to the reader, who keeps its own copies of its indices and
 * treats an impossible value as a broken link (VMQ_E_PROTO).
 *
 * Notification: a consumer that wants to sleep sets its `cons_wait` word to
 * an odd value (a new one each time), issues a full barrier, looks at the
 * ring once more, and only then waits (VMQ_HC_WAIT with VMQ_WAIT_F_LINKS);
 * a producer publishes `prod`, issues a full barrier, and makes one
 * VMQ_HC_KICK (mbox.channel) when it reads an odd `cons_wait` it has not
 * kicked for yet.  A producer that finds the ring full does the same with
 * `prod_wait`, and the consumer kicks after it made room.  A kick wakes the
 * channel's other end out of VMQ_HC_WAIT, or makes its next WAIT return at
 * once.
 *
 * When the channel closes, the monitor replaces the link in both ends with
 * private zeroed pages whose headers say VMQ_LINK_CLOSED (what was in the
 * rings is dropped), and kicks both; the slot may then carry another
 * channel's link, whose headers name that channel.
  *
 * The port rule, exactly: the VM may access the ports
 * [VMQ_PORT_FIRST, VMQ_PORT_END) (0x500-0x5ff) with any width (8, 16 or 32
 * bits), in or out, single or string (rep ins/outs), including a 32-bit
 * access at 0x5fd-0x5ff whose last bytes fall past 0x5ff.  Of those, a
 * 32-bit single `in` at VMQ_HC_PORT_BASE + nr is hypercall nr, and any `out`
 * to VMQ_DOORBELL_PORT rings the doorbell.  Every other access in the range
 * is refused: counted as VMQ_E_NOSYS, an `in` reads -VMQ_E_NOSYS (all ones
 * past its width), an `out` is dropped; the VM runs on.  An access to any
 * port outside the range is a fault and stops the VM (crashed).
 */
#ifndef VMQ_ABI_H
#define VMQ_ABI_H

#include <stdint.h>

#define VMQ_ABI_MAGIC 0x31514d56u /* "VMQ1" little-endian */
#define VMQ_ABI_VERSION 3u

#define VMQ_PAGE_SIZE 4096u
#define VMQ_PAGE_SHIFT 12u
#define VMQ_HUGE_PAGE_SIZE (2u * 1024u * 1024u)
#define VMQ_HUGE_PAGE_SHIFT 21u

/* Fixed guest-physical layout (see the comment at the top). */
#define VMQ_SYSTEM_GPA 0x1000ull
#define VMQ_SYSTEM_END 0x10000ull
#define VMQ_VMCS_GPA 0x10000ull
#define VMQ_VMCS_MAX_SIZE (256ull * 1024u)
#define VMQ_IMAGE_GPA 0x100000ull
#define VMQ_RX_GPA 0x40000000ull      /* 1 GiB */
#define VMQ_HUGE_GPA 0x80000000ull    /* 2 GiB */
#define VMQ_HUGE_RX_GPA 0xC0000000ull /* 3 GiB */
#define VMQ_GPA_LIMIT 0x100000000ull  /* 4 GiB: the regions end here */
#define VMQ_LINK_GPA 0x100000000ull   /* 4 GiB: the link window */
#define VMQ_LINK_SLOTS 256u           /* links a VM can have at once */
#define VMQ_LINK_SIZE (4u * 4096u)    /* one link, as one end sees it */
#define VMQ_LINK_WINDOW ((uint64_t)VMQ_LINK_SLOTS * VMQ_LINK_SIZE)

#define VMQ_MAX_VCPUS 8u
#define VMQ_STACK_SIZE (64u * 1024u) /* per vCPU, at the top of RAM */
#define VMQ_NAME_MAX 64u             /* including the terminating NUL */
#define VMQ_INLINE_MAX 96u           /* bytes of payload carried in a descriptor */
#define VMQ_ARGS_MAX 512u            /* the VM's argument string, including NUL */

/* VM id 0 is the host; guests get ids from 1. */
#define VMQ_HOST_ID 0u

/* Hypercall ports */
#define VMQ_HC_PORT_BASE 0x0500u
#define VMQ_DOORBELL_PORT 0x05f0u
#define VMQ_PORT_FIRST 0x0500u /* the ports a VM may access: see the top */
#define VMQ_PORT_END 0x0600u

enum vmq_hypercall {
        VMQ_HC_SEND = 0,    /* immediate send of mbox request; returns 0 / -E */
        VMQ_HC_FLUSH = 1,   /* drain the post ring now; returns drained count */
        VMQ_HC_WAIT = 2,    /* block until the queue is non-empty or mbox.arg ns
                             * elapse (0: do not block, UINT64_MAX: forever);
                             * returns 0, or -VMQ_E_TIMEDOUT */
        VMQ_HC_RELEASE = 3, /* give back received pages: mbox.gpa, mbox.len */
        VMQ_HC_CONSOLE = 4, /* write mbox.len bytes at mbox.gpa to the console */
        VMQ_HC_CLOCK = 5,   /* mbox.result = monotonic ns; returns 0 */
        VMQ_HC_EXIT = 6,    /* stop this VM with exit code mbox.arg */
        VMQ_HC_NOP = 7,     /* does nothing: the raw exit round trip */
        VMQ_HC_PARK = 8,    /* stop this vCPU (not the VM) until the VM stops */
        VMQ_HC_KICK = 9,    /* wake the other end of link mbox.channel (v3) */
        VMQ_HC_MAX
};

/*
 * Transports.  A micro-VM (VMQ_TRANSPORT_KVM) reaches the monitor by port
 * I/O as described above.  A VM run by another VMM (QEMU under libvirt)
 * shares one region with the monitor through an ivshmem-doorbell device
 * (VMQ_TRANSPORT_IVSHMEM): the region starts with this same VMCS, and every
 * "guest-physical address" in it (layout, descriptors, requests) is an
 * offset into the region.  layout.ram_size is the region's size, the guest
 * builds page messages in [layout.image_end, layout.rx_gpa), and pages
 * arrive in the receive window [rx_gpa, rx_gpa + rx_size).  There are no
 * huge regions, and pages always travel as copies: the monitor is not that
 * guest's VMM and cannot remap its memory.
 *
 * A hypercall over ivshmem: write the mailbox (mbox[0]), set mbox.hc to the
 * hypercall number, store VMQ_STATUS_PENDING into mbox.status with release
 * ordering, and ring the monitor's doorbell (vector 0 of the monitor's
 * ivshmem peer id, VMQ_IVSHMEM_MONITOR_PEER).  The monitor answers by
 * storing the final status with release ordering; the guest polls
 * mbox.status.  VMQ_HC_WAIT does not block over ivshmem: the guest polls its
 * queue and may sleep on its interrupt (its vector 0), which the monitor
 * raises whenever it enqueues to that VM.
 */
enum vmq_transport { VMQ_TRANSPORT_KVM = 0, VMQ_TRANSPORT_IVSHMEM = 1, VMQ_TRANSPORT_MAX };

#define VMQ_STATUS_PENDING 0x7fffffff
/* The ivshmem peer id the monitor uses for itself on every region. */
#define VMQ_IVSHMEM_MONITOR_PEER 0u

/* Request operations (mbox.op and post ring entries) */
enum vmq_op {
        VMQ_OP_NONE = 0,
        VMQ_OP_INLINE = 1, /* payload: mbox.data[0..len) */
        VMQ_OP_PAGE = 2,   /* payload: pages at mbox.gpa, len bytes */
        VMQ_OP_MAX
};

/* Request flags (mbox.flags) */
#define VMQ_REQ_F_COPY 0x1u  /* page op: copy the pages into the receiver */
#define VMQ_REQ_F_FLIP 0x2u  /* page op: move the frames (zero copy) */
#define VMQ_REQ_F_SHARE 0x4u /* page op: map read-only in the receiver too */
#define VMQ_REQ_F_ALL (VMQ_REQ_F_COPY | VMQ_REQ_F_FLIP | VMQ_REQ_F_SHARE)
/* neither COPY, FLIP nor SHARE: the channel's transfer policy decides */

/* Error codes: hypercalls return their negation. */
enum vmq_error {
        VMQ_OK = 0,
        VMQ_E_INVAL = 1,     /* malformed request field (op, flags, length) */
        VMQ_E_NOTOWNED = 2,  /* page is not owned by the sender */
        VMQ_E_RANGE = 3,     /* address outside every region of the sender */
        VMQ_E_ALIGN = 4,     /* page address not aligned to its frame size */
        VMQ_E_LEN = 5,       /* length beyond the page run or inline maximum */
        VMQ_E_NOCHAN = 6,    /* no such channel, or sender is not an end of it */
        VMQ_E_AGAIN = 7,     /* receiver queue or window full: retry later */
        VMQ_E_FORGED = 8,    /* request claims another VM as its source */
        VMQ_E_VERSION = 9,   /* request carries an ABI version we do not speak */
        VMQ_E_NOSYS = 10,    /* unknown hypercall */
        VMQ_E_CLOSED = 11,   /* channel is closed */
        VMQ_E_TIMEDOUT = 12, /* wait elapsed with an empty queue */
        VMQ_E_NOMEM = 13,    /* host is out of frames */
        VMQ_E_BUSY = 14,     /* page is shared out and cannot move */
        VMQ_E_PROTO = 15,    /* corrupt queue indices in the VMCS */
        VMQ_E_MAX
};

/* Descriptor kinds (struct vmq_desc.kind) */
enum vmq_desc_kind {
        VMQ_DESC_NONE = 0,
        VMQ_DESC_INLINE = 1,   /* data[0..len) holds the message */
        VMQ_DESC_PAGE = 2,     /* pages at gpa..gpa+len in the receive window */
        VMQ_DESC_HELLO = 3,    /* channel opened; data holds the peer's
                              * struct vmq_identity */
        VMQ_DESC_CLOSE = 4,    /* channel closed by the monitor or the peer */
        VMQ_DESC_ERROR = 5,    /* a posted request failed: error = VMQ_E_*,
                              * tag = the request's tag */
        VMQ_DESC_SHUTDOWN = 6, /* the host asks the VM to stop: finish up and
                                * exit; after the host's deadline it is
                                * stopped by force */
        VMQ_DESC_REVOKED = 7,  /* the VM that shared the pages at gpa..gpa+len
                                * to this one (src_vm) is gone.  The pages stay
                                * mapped, read-only, with the same contents:
                                * they are now this VM's private copy, until
                                * it releases them (VMQ_HC_RELEASE) as it
                                * would have released the share.  channel is
                                * 0: the share may have come on a channel
                                * that is already closed. */
        VMQ_DESC_MAX
};

/* Well-known tags used by the stock guest images (any value is legal). */
#define VMQ_TAG_REPORT 0x7265706f7274ull /* "report": ask for / carry a report */
#define VMQ_TAG_DONE 0x656e6f64ull       /* "done": end of a stream */

/* Descriptor flags */
#define VMQ_DESC_F_COPIED 0x1u  /* pages were copied */
#define VMQ_DESC_F_FLIPPED 0x2u /* frames were moved */
#define VMQ_DESC_F_SHARED 0x4u  /* read-only share; RELEASE revokes it */
#define VMQ_DESC_F_HUGE 0x8u    /* gpa is in the 2 MiB receive window */
#define VMQ_DESC_F_LINK 0x10u   /* HELLO: the channel has a link at gpa (v3) */
/* HELLO: the channel carries one vsock connection that a Linux guest (the
 * peer the HELLO names) opened to this VM through vmqd's vhost-user-vsock
 * device; tag = the guest's port << 32 | the port it asked for here.  Each
 * message is a piece of the stream (VMQ_DESC_F_SEQPACKET: one record); an
 * empty INLINE message tagged VMQ_TAG_DONE says its sender sends no more.
 * vmq(7), "VSOCK", has the whole framing. */
#define VMQ_DESC_F_VSOCK 0x20u
#define VMQ_DESC_F_SEQPACKET 0x40u /* HELLO with VMQ_DESC_F_VSOCK: a SOCK_SEQPACKET */

/* VMQ_HC_WAIT flags (mbox.flags) */
#define VMQ_WAIT_F_LINKS 0x1u /* return on a kick only, not on the queue (v3) */

/*
 * Identity of a VM, stamped by the monitor.  Carried in HELLO descriptors and
 * published in the VMCS.
 */
struct vmq_identity {
        uint32_t vm_id;          /* OUT 0 = host */
        uint32_t flags;          /* OUT reserved, 0 */
        uint8_t uuid[16];        /* OUT RFC 4122 binary */
        char name[VMQ_NAME_MAX]; /* OUT NUL-terminated */
};

/* One entry of the VM queue (monitor produces, guest consumes). */
struct vmq_desc {
        uint16_t kind;                /* OUT enum vmq_desc_kind */
        uint16_t flags;               /* OUT VMQ_DESC_F_* */
        uint32_t channel;             /* OUT channel id */
        uint32_t src_vm;              /* OUT sender's VM id, stamped by the monitor */
        uint32_t len;                 /* OUT payload length in bytes */
        uint64_t gpa;                 /* OUT receiver-side GPA of PAGE payload, else 0 */
        uint64_t tag;                 /* OUT sender-chosen tag, passed through */
        int32_t error;                /* OUT VMQ_E_* for ERROR descriptors */
        uint32_t reserved;            /* OUT 0 */
        uint8_t data[VMQ_INLINE_MAX]; /* OUT inline payload / identity */
};

/* A request: the per-vCPU send mailbox, and the entries of the post ring. */
struct vmq_request {
        uint16_t abi;                 /* IN  VMQ_ABI_VERSION */
        uint16_t op;                  /* IN  enum vmq_op */
        uint32_t flags;               /* IN  VMQ_REQ_F_* */
        uint32_t channel;             /* IN  channel id */
        uint32_t src_vm;              /* IN  0 or the sender's own id (anything else is
                            *     a forgery and is refused) */
        uint64_t gpa;                 /* IN  page run start / buffer address */
        uint32_t len;                 /* IN  length in bytes */
        uint32_t reserved;            /* IN  must be 0 */
        uint64_t tag;                 /* IN  opaque, returned in descriptors */
        uint64_t arg;                 /* IN  hypercall argument (timeout, exit code) */
        int32_t status;               /* OUT result of the last hypercall on this mbox
                                       *     (ivshmem: the guest sets VMQ_STATUS_PENDING
                                       *     before ringing) */
        uint32_t hc;                  /* IN  ivshmem transport: the hypercall number
                                       *     (enum vmq_hypercall); unused with port I/O */
        uint64_t result;              /* OUT value result (clock, receive gpa, ...) */
        uint8_t data[VMQ_INLINE_MAX]; /* IN inline payload */
};

/*
 * Ring indices.  Each index is free-running (wraps at 2^32); the slot is
 * index & (capacity - 1).  Producer and consumer indices sit on separate
 * cache lines.  The producer publishes with a release store after writing
 * the slot; the consumer reads the producer index with an acquire load
 * before reading the slot, and publishes its own index with a release store
 * after it is done with the slot.
 */
struct vmq_ring_idx {
        uint32_t prod; /* written by the producer only */
        uint32_t prod_pad[15];
        uint32_t cons; /* written by the consumer only */
        uint32_t cons_pad[15];
};

/* Where things are, written by the monitor at VM creation. */
struct vmq_vmcs_layout {
        uint64_t ram_size;  /* OUT RAM is [0, ram_size) */
        uint64_t image_end; /* OUT first byte past the loaded image */
        uint64_t rx_gpa;    /* OUT receive window (4 KiB slots) */
        uint64_t rx_size;
        uint64_t huge_gpa; /* OUT own 2 MiB pages (0 size: none) */
        uint64_t huge_size;
        uint64_t huge_rx_gpa; /* OUT 2 MiB receive window */
        uint64_t huge_rx_size;
        uint32_t queue_off;       /* OUT offset of the queue's vmq_ring_idx */
        uint32_t queue_cap;       /* OUT queue capacity, a power of two */
        uint32_t queue_slots_off; /* OUT offset of the queue's descriptors */
        uint32_t post_off;        /* OUT offset of the post ring's vmq_ring_idx */
        uint32_t post_cap;        /* OUT post ring capacity, a power of two */
        uint32_t post_slots_off;  /* OUT offset of the post ring's requests */
        uint32_t vcpus;           /* OUT number of vCPUs */
        uint32_t transport;       /* OUT enum vmq_transport */
};

/* Per-VM counters kept by the monitor and mirrored here for the guest. */
struct vmq_vmcs_stats {
        uint64_t sent;     /* OUT requests accepted */
        uint64_t received; /* OUT descriptors enqueued to this VM */
        uint64_t errors;   /* OUT requests refused */
        uint64_t exits;    /* OUT hypercall exits */
};

/*
 * The VM control structure, at VMQ_VMCS_GPA.  vmcs_size covers the header
 * page and the two rings, whose positions the layout gives.
 */
struct vmq_vmcs {
        uint32_t magic;           /* OUT VMQ_ABI_MAGIC */
        uint32_t abi_version;     /* OUT VMQ_ABI_VERSION */
        uint32_t vmcs_size;       /* OUT bytes, multiple of VMQ_PAGE_SIZE */
        uint32_t header_size;     /* OUT sizeof(struct vmq_vmcs) */
        struct vmq_identity self; /* OUT who this VM is */
        struct vmq_vmcs_layout layout;
        struct vmq_vmcs_stats stats;
        uint8_t reserved[64];
        struct vmq_request mbox[VMQ_MAX_VCPUS]; /* IN/OUT per-vCPU mailbox */
        uint64_t tsc_khz;                       /* OUT guest TSC frequency (0: unknown) */
        char args[VMQ_ARGS_MAX];                /* OUT argument string given at creation,
                                  *     NUL-terminated ("key=value ...") */
        /* Version 2. */
        uint32_t post_doorbell;       /* OUT 1: ring the doorbell after posting;
                                 *     0: the monitor is polling the post ring
                                 *     (see "Notifications" at the top) */
        uint32_t post_doorbells_seen; /* OUT doorbells the monitor has taken
                                       *     from this VM, mod 2^32 */
        uint32_t reserved2[14];       /* OUT 0 */
};

/* Offsets of the rings inside the VMCS, for a queue of qcap descriptors and
 * a post ring of pcap requests.  The header page comes first.  Each ring's
 * indices start on a 64-byte line (guests check that): a queue of 4
 * descriptors (544 bytes) would otherwise leave the post ring 32 bytes off. */
#define VMQ_VMCS_QUEUE_OFF VMQ_PAGE_SIZE
#define VMQ_VMCS_QUEUE_SLOTS_OFF (VMQ_VMCS_QUEUE_OFF + sizeof(struct vmq_ring_idx))
#define VMQ_VMCS_POST_OFF(qcap)                                                                    \
        ((VMQ_VMCS_QUEUE_SLOTS_OFF + (uint32_t)(qcap) * sizeof(struct vmq_desc) + 63) & ~63u)
#define VMQ_VMCS_POST_SLOTS_OFF(qcap) (VMQ_VMCS_POST_OFF(qcap) + sizeof(struct vmq_ring_idx))
#define VMQ_VMCS_SIZE(qcap, pcap)                                                                  \
        ((VMQ_VMCS_POST_SLOTS_OFF(qcap) + (uint32_t)(pcap) * sizeof(struct vmq_request) +          \
          VMQ_PAGE_SIZE - 1) &                                                                     \
         ~(VMQ_PAGE_SIZE - 1))

/*
 * A link ring's header (one per direction, at the start of its page).  The
 * first line is written by the monitor when the link is made; prod and
 * prod_wait by the producer, cons and cons_wait by the consumer.  Indices
 * are free running; the message of index i is at slot i % VMQ_LINK_CAP.
 * The peer may write any of it: see "Channel links" at the top.
 */
#define VMQ_LINK_MAGIC 0x4b4e494cu /* "LINK" */
#define VMQ_LINK_OPEN 1u
#define VMQ_LINK_CLOSED 2u
#define VMQ_LINK_CAP 32u
#define VMQ_LINK_MSG_MAX 112u

struct vmq_link_hdr {
        uint32_t magic;   /* OUT VMQ_LINK_MAGIC */
        uint32_t channel; /* OUT the channel this link belongs to */
        uint32_t state;   /* OUT VMQ_LINK_OPEN / VMQ_LINK_CLOSED */
        uint32_t cap;     /* OUT VMQ_LINK_CAP */
        uint32_t pad0[12];
        uint32_t prod;      /* producer: messages written */
        uint32_t prod_wait; /* producer: odd while it waits for room */
        uint32_t pad1[14];
        uint32_t cons;      /* consumer: messages taken */
        uint32_t cons_wait; /* consumer: odd while it waits for messages */
        uint32_t pad2[14];
};

struct vmq_link_msg {
        uint32_t len;   /* bytes of data, at most VMQ_LINK_MSG_MAX */
        uint32_t flags; /* 0 */
        uint64_t tag;   /* the sender's, passed through */
        uint8_t data[VMQ_LINK_MSG_MAX];
};

_Static_assert(sizeof(struct vmq_link_hdr) == 192, "link header size");
_Static_assert(__builtin_offsetof(struct vmq_link_hdr, prod) == 64, "link prod");
_Static_assert(__builtin_offsetof(struct vmq_link_hdr, cons) == 128, "link cons");
_Static_assert(sizeof(struct vmq_link_msg) == 128, "link message size");
_Static_assert(VMQ_LINK_CAP * sizeof(struct vmq_link_msg) == 4096, "link ring fills a page");
_Static_assert(VMQ_LINK_GPA >= VMQ_GPA_LIMIT, "links above the regions");
_Static_assert(sizeof(struct vmq_identity) == 88, "identity size");
_Static_assert(sizeof(struct vmq_identity) <= VMQ_INLINE_MAX, "identity fits");
_Static_assert(sizeof(struct vmq_desc) == 136, "desc size");
_Static_assert(__builtin_offsetof(struct vmq_desc, tag) == 24, "desc.tag");
_Static_assert(__builtin_offsetof(struct vmq_desc, data) == 40, "desc.data");
_Static_assert(sizeof(struct vmq_request) == 160, "request size");
_Static_assert(__builtin_offsetof(struct vmq_request, gpa) == 16, "req.gpa");
_Static_assert(__builtin_offsetof(struct vmq_request, tag) == 32, "req.tag");
_Static_assert(__builtin_offsetof(struct vmq_request, status) == 48, "req.status");
_Static_assert(__builtin_offsetof(struct vmq_request, data) == 64, "req.data");
_Static_assert(sizeof(struct vmq_ring_idx) == 128, "ring idx size");
_Static_assert(__builtin_offsetof(struct vmq_ring_idx, cons) == 64, "ring cons");
_Static_assert(sizeof(struct vmq_vmcs_layout) == 96, "layout size");
_Static_assert(sizeof(struct vmq_vmcs_stats) == 32, "stats size");
_Static_assert(__builtin_offsetof(struct vmq_vmcs, self) == 16, "vmcs.self");
_Static_assert(__builtin_offsetof(struct vmq_vmcs, layout) == 104, "vmcs.layout");
_Static_assert(__builtin_offsetof(struct vmq_vmcs, stats) == 200, "vmcs.stats");
_Static_assert(__builtin_offsetof(struct vmq_vmcs, mbox) == 296, "vmcs.mbox");
_Static_assert(__builtin_offsetof(struct vmq_vmcs, tsc_khz) == 1576, "vmcs.tsc_khz");
_Static_assert(__builtin_offsetof(struct vmq_vmcs, args) == 1584, "vmcs.args");
_Static_assert(__builtin_offsetof(struct vmq_vmcs, post_doorbell) == 2096, "vmcs.post_doorbell");
_Static_assert(__builtin_offsetof(struct vmq_vmcs, post_doorbells_seen) == 2100,
               "vmcs.post_doorbells_seen");
_Static_assert(sizeof(struct vmq_vmcs) == 2096 + 64, "vmcs size");
_Static_assert(sizeof(struct vmq_vmcs) <= VMQ_PAGE_SIZE, "vmcs header fits a page");
_Static_assert(VMQ_VMCS_GPA + VMQ_VMCS_MAX_SIZE <= VMQ_IMAGE_GPA, "vmcs below image");

#endif /* VMQ_ABI_H */
