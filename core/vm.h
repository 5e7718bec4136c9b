/* SPDX-License-Identifier: MIT */
/*
 * Internal: the monitor's objects, shared by the files of core/ that make up
 * the monitor; everything else uses core/monitor.h.
 *
 * Transports.  A VM is reached through one of two transports, each a table
 * of operations in a file of its own: core/vm-kvm.c for micro-VMs (guest
 * memory is a vmq_space of the remap engine, pages move by remapping) and
 * core/vm-region.c for VMs another VMM runs (a shared region; pages are
 * copied).  The request path never asks which one it has: it calls
 * vm->ops.  Guest memory is read only through ops->read and
 * ops->read_console (and, for regions, ops->peek), each of which checks the
 * range and holds the pages in place while it copies.
 *
 * Lock order (outer first); a thread never takes an earlier lock while it
 * holds a later one:
 *   1. mon->rw          VM list and channel table; read-held by every
 *                       request, write-held to add or remove a VM or channel
 *   2. vm->post_lock    a VM's post ring (the consumer side)
 *   3. vm->rxq_lock     a VM's queue (the producer side) and its receive
 *                       window's bookkeeping; at most one VM's at a time
 *   4. mon->host_lock   host inboxes and the host memory budget
 *   5. vm->state_lock, vm->console_lock   (leaves: nothing taken inside)
 *   6. the pool lock    (core/remap.c; innermost: nothing taken inside)
 */
#ifndef VMQ_VM_H
#define VMQ_VM_H

#include <pthread.h>
#include <stdatomic.h>

#include "core/kvm.h"
#include "core/monitor.h"
#include "core/queue.h"
#include "core/remap.h"

#define VMQ_CONSOLE_RING (64u * 1024u)
#define VMQ_CONSOLE_MAX 4096u /* bytes per console hypercall */
#define VMQ_NO_VM UINT32_MAX  /* stalled_on: not stalled */

enum vmq_how { VMQ_HOW_COPY, VMQ_HOW_FLIP, VMQ_HOW_SHARE, VMQ_HOW_MAX };

/* A page request's source run, checked by the sender's transport. */
struct vmq_source {
        struct vmq_vm *vm;
        uint64_t gpa;
        uint32_t len;
        enum vmq_frame_kind kind;
};

/*
 * A transport.  Every operation returns 0 or -VMQ_E_*.  `place` and
 * `place_host` run with the receiver's rxq_lock held and room in its queue.
 */
struct vmq_vm_ops {
        /* Checks [gpa, gpa + len) as a page run the VM may send: inside its
         * memory, aligned to its frames, owned (a read-only share is not). */
        int32_t (*check_source)(struct vmq_vm *vm, uint64_t gpa, uint32_t len,
                                enum vmq_frame_kind *ret_kind);
        /* Copies len bytes of a checked source run into buf, with the pages
         * held in place; fails if the guest released them meanwhile. */
        int32_t (*read)(struct vmq_vm *vm, uint64_t gpa, void *buf, uint64_t len);
        /* A host pointer to a checked source run that stays valid while the
         * VM exists, or NULL where pages can move (then use read). */
        const void *(*peek)(struct vmq_vm *vm, uint64_t gpa, uint64_t len);
        /* Console hypercall: copies len bytes the guest itself can read at
         * gpa (never the system area) into buf. */
        int32_t (*read_console)(struct vmq_vm *vm, uint64_t gpa, void *buf, uint32_t len);
        /* Largest page message the VM can receive, bytes. */
        uint64_t (*window)(struct vmq_vm *vm, enum vmq_how how, enum vmq_frame_kind kind);
        /* Places a page message from src in the VM's receive window, moving,
         * sharing or copying as `how` asks where the transport can (else
         * copying); fills d->gpa and d->flags.  -VMQ_E_AGAIN: window full. */
        int32_t (*place)(struct vmq_vm *vm, const struct vmq_source *src, enum vmq_how how,
                         struct vmq_desc *d);
        /* Places n page messages (2 to VMQ_COPY_BATCH_MAX) by copy, one
         * after another in the window, with one remap: all or nothing.
         * Fills d[i].gpa and d[i].flags.  -VMQ_E_AGAIN: no room for all of
         * them.  NULL where the transport places one message at a time;
         * any failure sends the caller there, which also gives each
         * message its own error. */
        int32_t (*place_copies)(struct vmq_vm *vm, const struct vmq_source *src, size_t n,
                                struct vmq_desc *d);
        /* Places len bytes of host memory as a page message. */
        int32_t (*place_host)(struct vmq_vm *vm, const void *data, uint64_t len,
                              struct vmq_desc *d);
        /* VMQ_HC_RELEASE: gives back received pages. */
        int32_t (*release)(struct vmq_vm *vm, uint64_t gpa, uint64_t len);
        /* Something was enqueued for the VM. */
        void (*wake)(struct vmq_vm *vm);
        /* vmq_vm_start / vmq_vm_stop. */
        int (*start)(struct vmq_vm *vm);
        int (*stop)(struct vmq_vm *vm);
        /* The VM can have channel links (core/link.c): the monitor can map
         * memory into its guest-physical space. */
        bool links;
};

extern const struct vmq_vm_ops vmq_kvm_ops;
extern const struct vmq_vm_ops vmq_region_ops;

struct vmq_vcpu {
        struct vmq_vm *vm;
        unsigned index;
        int fd;
        struct kvm_run *run;
        size_t run_size;
        pthread_t thread;
        bool thread_started;
        _Atomic bool parked;
        /* This vCPU's crash reason with its registers (vm->crash_reason
         * may point here: written once, before the state changes). */
        char crash_text[160];
};

struct vmq_vm {
        struct vmq_monitor *mon;
        struct vmq_vm *next; /* monitor's list, under mon->rw */
        uint32_t id;
        struct vmq_identity ident;
        struct vmq_vm_config cfg; /* name/args pointers cleared */
        char *args;

        const struct vmq_vm_ops *ops;
        int vm_fd;
        struct vmq_space *space; /* KVM transport only */

        /* Region transport (ivshmem): the shared region and its receive
         * window, whose 4 KiB slots this bitmap tracks (under rxq_lock). */
        uint8_t *region;
        size_t region_size;
        uint64_t send_lo, send_hi; /* the guest's send area */
        uint8_t *rx_used;
        size_t rx_slots, rx_hint;
        const struct vmq_region_ops *rops;
        void *ruserdata;
        _Atomic bool region_broken;
        struct vmq_vmcs *vmcs; /* host view of the VMCS */
        uint32_t vmcs_size;

        /* The VM queue: the monitor is the (only) producer; producers on
         * different threads serialise on rxq_lock. */
        pthread_mutex_t rxq_lock;
        struct vmq_queue rxq;
        /* A sender whose post ring head waits for room at a receiver
         * records the receiver (VMQ_NO_VM: none); the receiver only notes
         * that someone waits (under its rxq_lock), and when room appears
         * drains every VM stalled on it.  No list, so no limit on how many
         * senders can wait on one receiver. */
        _Atomic uint32_t stalled_on;
        _Atomic bool has_stalled; /* someone is stalled on this VM */

        /* Host memory this VM's messages hold in host inboxes (bytes),
         * against cfg.host_budget; under mon->host_lock. */
        uint64_t host_bytes;

        /* The post ring: the monitor is the consumer. */
        pthread_mutex_t post_lock;
        struct vmq_queue postq;

        unsigned nvcpus;
        struct vmq_vcpu vcpus[VMQ_MAX_VCPUS];
        _Atomic unsigned running_vcpus;

        /* The doorbell: the ioeventfd on VMQ_DOORBELL_PORT (a host-driven
         * VM: an eventfd vmq_vm_ring_doorbell() writes), in the poller's
         * epoll set while the VM runs (core/poller.c). */
        int doorbell_fd;
        bool poll_registered; /* under mon->poll_lock */
        _Atomic bool polled;  /* the poller polls the post ring (vmcs
                               * post_doorbell is 0) */
        uint64_t poll_last;   /* poller thread: when it last found work */
        uint64_t poll_until;  /* poller thread: when it stopped polling */
        uint32_t poll_window; /* poller thread: how long it polls after the
                               * last request (adapts, see core/poller.c) */

        /* State and waiting, under state_lock. */
        pthread_mutex_t state_lock;
        pthread_cond_t state_cond; /* state changes, queue non-empty */
        _Atomic int state;         /* enum vmq_vm_state */
        _Atomic bool stopping;
        _Atomic int waiters; /* vCPUs sleeping in WAIT */
        int exit_code;
        const char *crash_reason;
        bool joined;

        /* Console ring (VMQ_CONSOLE_RING bytes), under console_lock: made
         * by the first output, so that a VM costs no 64 KiB of zeroed
         * memory for it (NULL: nothing written yet, or no memory for it). */
        pthread_mutex_t console_lock;
        char *console;
        size_t console_head; /* total bytes ever written */

        /* Channel links (core/link.c), under mon->rw's write lock: the
         * window (NULL until the first link) and its slots in use.  kicked:
         * a peer kicked since the last VMQ_HC_WAIT returned. */
        void *link_hva;
        uint64_t link_used[VMQ_LINK_SLOTS / 64];
        uint32_t link_hint;
        _Atomic bool kicked;

        /* Counters (atomics: read without locks). */
        _Atomic uint64_t st_kicks;
        _Atomic uint64_t st_exits, st_sent, st_posted, st_received, st_bytes_sent;
        _Atomic uint64_t st_copies, st_flips, st_shares, st_errors, st_doorbells;
        _Atomic uint64_t st_error[VMQ_E_MAX];
};

struct vmq_host_entry {
        struct vmq_host_entry *next;
        struct vmq_host_msg *msg;
        uint32_t charged_vm; /* whose budget holds it (VMQ_NO_VM: none) */
        uint64_t charged;    /* bytes charged */
};

struct vmq_channel {
        uint32_t id;
        uint32_t end[2];
        bool open;
        struct vmq_channel_config cfg;
        /* Host end's inbox (when one end is the host), under mon->host_lock. */
        struct vmq_host_entry *inbox_head, *inbox_tail;
        uint32_t inbox_len;
        /* Under mon->host_lock: vmq_host_recv() calls waiting on it, and
         * whether vmq_channel_forget() took it out of the table (then the
         * last waiter to leave frees it). */
        uint32_t waiters;
        bool forgotten;
        _Atomic uint64_t messages[2], bytes[2];
        /* Its link (core/link.c), while open: each end's VM and slot. */
        bool linked;
        struct vmq_vm *link_vm[2];
        uint32_t link_slot[2];
};

/* The id stamped on what end `side` of ch sends: its own, or for a host
 * end that speaks for a VM (vmq_channel_config.speak_for), that VM's. */
static inline uint32_t vmq_channel_stamp(const struct vmq_channel *ch, int side) {
        return ch->end[side] == VMQ_HOST_ID && ch->cfg.speak_for ? ch->cfg.speak_for
                                                                 : ch->end[side];
}

/* A KVM VM made ahead of need, with vCPU 0 (core/spare.c); fds -1: none. */
struct vmq_spare {
        int vm_fd, vcpu_fd;
        struct kvm_run *run;
        size_t run_size;
};

struct vmq_monitor {
        struct vmq_monitor_config cfg;
        int kvm_fd;               /* -1: no usable KVM (see kvm_error) */
        int kvm_error;            /* why: -ENODEV (no /dev/kvm), -EACCES, ... */
        struct kvm_cpuid2 *cpuid; /* what KVM supports, for every vCPU */
        struct vmq_pool *pool;
        /* what "auto" follows (calibrate.c); read by every page request
         * under rw's read lock, replaced under its write lock */
        struct vmq_transfer_plan plan;
        struct vmq_identity host_ident;
        uint64_t tsc_khz;

        /* VM list and channel table: read-locked by every request, write-
         * locked to add or remove a VM or channel. */
        pthread_rwlock_t rw;
        struct vmq_vm *vms;
        uint32_t next_vm_id;
        struct vmq_channel **channels; /* index = id */
        uint32_t nchannels;            /* allocated slots */
        uint32_t next_channel_id;

        /* Host inboxes, and the bytes guests' messages hold in them (against
         * cfg.host_budget). */
        pthread_mutex_t host_lock;
        pthread_cond_t host_cond;
        uint64_t host_bytes;
        _Atomic bool host_stalled; /* a sender waits for room at the host */

        int event_fd; /* see vmq_monitor_event_fd() */

        /* Threads waiting to take rw for writing (vmq_monitor_wrlock): the
         * poller stays off the lock while there are any. */
        _Atomic int writers;

        /* The post-ring poller (core/poller.c): its epoll set (doorbells
         * and the stop eventfd) and its thread, started with the first VM
         * that has a doorbell. */
        pthread_mutex_t poll_lock;
        int poll_epfd, poll_stop_fd;
        int poll_spare_fd; /* in the set: make a spare VM */
        pthread_t poll_thread;
        bool poll_started;

        /* Links made and not yet taken away, against cfg.max_links; under
         * rw's write lock. */
        uint32_t links;
        unsigned link_fail_mmap; /* see vmq_monitor_fail_link_mmap */

        /* The spare VM (spare.c), under spare_lock. */
        pthread_mutex_t spare_lock;
        struct vmq_spare spare;
};

/* calibrate.c: measures the pool's copy and flip costs into *plan (the
 * defaults, and an error, when it cannot). */
int vmq_pool_calibrate(struct vmq_pool *p, struct vmq_transfer_plan *plan);

/* vm.c: KVM_CREATE_VCPU, its kvm_run mapping and the monitor's CPUID; the
 * fd, or an error with nothing left open. */
int vmq_vm_make_vcpu(struct vmq_monitor *m, int vm_fd, unsigned index, struct kvm_run **ret_run,
                     size_t *ret_run_size);

/* spare.c */
/* Sets up an empty spare; vmq_spare_first() makes the first one (when the
 * monitor has KVM and cfg.spare_vm); vmq_spare_fini() closes it. */
void vmq_spare_init(struct vmq_monitor *m);
void vmq_spare_first(struct vmq_monitor *m);
void vmq_spare_fini(struct vmq_monitor *m);
/* Takes the spare, or makes a VM and its vCPU 0 now when there is none;
 * the caller owns what *ret holds.  Asks the poller for the next spare. */
int vmq_spare_take(struct vmq_monitor *m, struct vmq_spare *ret);
/* Makes a spare if there is none (on the poller thread). */
void vmq_spare_refill(struct vmq_monitor *m);

/* monitor.c */
void vmq_monitor_notify(struct vmq_monitor *m);
/* pthread_rwlock_wrlock(&m->rw), counted in m->writers while it waits. */
void vmq_monitor_wrlock(struct vmq_monitor *m);

/* poller.c */
int vmq_poller_init(struct vmq_monitor *m);
void vmq_poller_fini(struct vmq_monitor *m);
/* Puts a VM's doorbell in the poller's set (starting the thread the first
 * time); 0 also when the VM has no doorbell eventfd. */
int vmq_poller_add(struct vmq_vm *vm);
void vmq_poller_remove(struct vmq_vm *vm);
/* Asks the poller thread to make a spare VM (vmq_spare_refill). */
void vmq_poller_want_spare(struct vmq_monitor *m);
/* The VM's doorbell rang n times and the caller took the rings: counts
 * them and publishes the count (vmcs.post_doorbells_seen) before the
 * caller drains the post ring. */
void vmq_vm_doorbells_taken(struct vmq_vm *vm, uint64_t n);
/* Lookups; caller holds mon->rw. */
struct vmq_vm *vmq_monitor_find_vm_locked(struct vmq_monitor *m, const char *name);
struct vmq_vm *vmq_monitor_find_vm_id_locked(struct vmq_monitor *m, uint32_t id);
struct vmq_channel *vmq_monitor_channel_locked(struct vmq_monitor *m, uint32_t id);
/* The open channel id of which VM vm_id is an end: *ret and which end (0 or
 * 1), or -VMQ_E_NOCHAN (none, or not an end), -VMQ_E_CLOSED. */
int vmq_monitor_open_end_locked(struct vmq_monitor *m, uint32_t id, uint32_t vm_id,
                                struct vmq_channel **ret);

/* vm.c */
bool vmq_vm_name_is_valid(const char *name);
/* The port rule (core/vmq-abi.h) for one port access of the exit loop. */
enum vmq_port_kind {
        VMQ_PORT_HYPERCALL, /* 32-bit single in at VMQ_HC_PORT_BASE + nr */
        VMQ_PORT_DOORBELL,  /* any out to VMQ_DOORBELL_PORT */
        VMQ_PORT_NOSYS,     /* anything else in the range: refused, runs on */
        VMQ_PORT_FAULT,     /* outside the range: the VM crashes */
};
enum vmq_port_kind vmq_port_classify(uint16_t port, uint8_t size, uint32_t count, bool out);
/* A VM's common part, not yet listed: vmq_vm_free_resources() undoes it. */
int vmq_vm_alloc(struct vmq_monitor *m, const struct vmq_vm_config *cfg,
                 const struct vmq_vm_ops *ops, struct vmq_vm **ret);
void vmq_vm_free_resources(struct vmq_vm *vm);
void vmq_vm_init_vmcs(struct vmq_vm *vm, uint64_t image_end);
int vmq_vm_attach_rings(struct vmq_vm *vm);
int vmq_kvm_vm_start(struct vmq_vm *vm);
int vmq_kvm_vm_stop(struct vmq_vm *vm);
void vmq_vm_wake(struct vmq_vm *vm);
/* What VMQ_HC_WAIT waits for: a kick (taken: 1), else, unless links_only,
 * what the queue holds (> 0, 0, or -VMQ_E_PROTO). */
int vmq_vm_wait_count(struct vmq_vm *vm, bool links_only);
void vmq_vm_set_state(struct vmq_vm *vm, enum vmq_vm_state state, const char *reason);
/* Marks the VM crashed and stops its vCPUs from running guest code again,
 * from any thread (they are joined by vmq_vm_stop). */
void vmq_vm_fault(struct vmq_vm *vm, const char *reason);
void vmq_vm_console_append(struct vmq_vm *vm, const char *buf, size_t len);

/* request.c; the callers hold mon->rw for reading. */
int32_t vmq_monitor_handle_request(struct vmq_vm *vm, const struct vmq_request *req, bool deferred);
/* Drains the post ring if it has anything (or a stalled head). */
void vmq_monitor_drain_posts(struct vmq_vm *vm);
int vmq_monitor_drain_posts_now(struct vmq_vm *vm);
/* Takes up to max requests; caller holds vm->post_lock. */
int vmq_monitor_drain_posts_locked(struct vmq_vm *vm, int max);
/* Room appeared at vm: drains the senders stalled on it. */
void vmq_monitor_retry_stalled(struct vmq_monitor *m, struct vmq_vm *vm);
int vmq_monitor_queue_count(struct vmq_vm *vm);
void vmq_monitor_count_error(struct vmq_vm *vm, int code);
void vmq_monitor_count_sent(struct vmq_vm *vm, struct vmq_channel *ch, int to, uint64_t len,
                            bool deferred, int sign);
/* Room in a VM's queue: > 0, 0 (full), or -VMQ_E_PROTO; caller holds
 * to->rxq_lock. */
int vmq_monitor_room_locked(struct vmq_vm *to);
void vmq_monitor_enqueue_locked(struct vmq_vm *to, const struct vmq_desc *d);
/* Enqueues one descriptor: 0, -VMQ_E_AGAIN (full), -VMQ_E_PROTO. */
int vmq_monitor_deliver(struct vmq_vm *to, const struct vmq_desc *d);

/* hypercall.c; caller holds mon->rw for reading. */
int32_t vmq_monitor_hypercall(struct vmq_vcpu *vcpu, unsigned nr);

/* channel.c; callers hold mon->rw for writing. */
/* Closes the VM's channels (peers get CLOSE). */
void vmq_monitor_vm_gone(struct vmq_monitor *m, struct vmq_vm *vm);
/* Tells the VMs that shared in pages of vm that they are now theirs
 * (VMQ_DESC_REVOKED). */
void vmq_monitor_revoke_shares(struct vmq_monitor *m, struct vmq_vm *vm);

/* link.c; callers hold mon->rw for writing, except vmq_monitor_link_kick (for
 * reading). */
/* Makes the channel's link between two VMs: -EOPNOTSUPP (an end cannot have
 * one), -ENOSPC (no slot, or cfg.max_links reached), -errno of the host. */
int vmq_monitor_link_make(struct vmq_monitor *m, struct vmq_channel *ch, struct vmq_vm *ends[2]);
/* Where end `side` sees the link. */
uint64_t vmq_monitor_link_gpa(const struct vmq_channel *ch, int side);
/* Takes the link away from both ends (except the VM `gone`) and kicks them. */
void vmq_monitor_link_unmake(struct vmq_monitor *m, struct vmq_channel *ch, uint32_t gone);
/* Unmaps the VM's link window (vmq_vm_free_resources). */
void vmq_vm_link_fini(struct vmq_vm *vm);
/* Fault injection for tests: the `after`-th mmap of a link half from now on
 * fails with ENOMEM (0: none). */
void vmq_monitor_fail_link_mmap(struct vmq_monitor *m, unsigned after);
/* VMQ_HC_KICK from vm on channel id: 0 or -VMQ_E_*. */
int32_t vmq_monitor_link_kick(struct vmq_vm *vm, uint32_t id);

/* host.c */
/* A guest's message to the host: inline (src NULL, payload in d) or the
 * checked page run src; charged to the budgets (see host.c). */
int32_t vmq_host_deliver_from(struct vmq_vm *vm, struct vmq_channel *ch, int to,
                              const struct vmq_source *src, bool deferred, struct vmq_desc *d);
/* HELLO and CLOSE: never refused, charged to no VM. */
void vmq_host_deliver_forced(struct vmq_monitor *m, struct vmq_channel *ch,
                             const struct vmq_desc *d, const void *data, size_t len);
void vmq_host_free_inbox(struct vmq_monitor *m, struct vmq_channel *ch);
/* The VM is being destroyed: its messages stay, charged to no VM. */
void vmq_host_vm_gone(struct vmq_monitor *m, struct vmq_vm *vm);

#endif /* VMQ_VM_H */
