/* SPDX-License-Identifier: MIT */
/*
 * The vmq monitor: micro-VMs on KVM, the channels between them, and the
 * host as a channel end.  This is the core API the daemon and the example
 * programs build on.  It does no logging: console output and state changes
 * are handed to callbacks, errors are negative errno values.
 *
 * Threads: the monitor runs one thread per vCPU, and one post-ring poller
 * thread for all VMs (core/poller.c).  All functions here are thread-safe.
 * Callbacks run on those threads and must not call back into the monitor
 * for the same VM's lifecycle (start, stop, destroy); doing I/O or
 * signalling another thread is fine.
 */
#ifndef VMQ_MONITOR_H
#define VMQ_MONITOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vmq-abi.h"

struct vmq_monitor;
struct vmq_vm;

enum vmq_vm_state {
        VMQ_VM_CREATED, /* loaded, not yet started */
        VMQ_VM_RUNNING,
        VMQ_VM_EXITED,  /* the guest called exit; exit_code is valid */
        VMQ_VM_STOPPED, /* stopped by the host */
        VMQ_VM_CRASHED, /* guest fault, shutdown or forbidden access */
        VMQ_VM_STATE_MAX
};

enum vmq_transfer {
        VMQ_TRANSFER_AUTO, /* as measured on this machine (vmq_transfer_plan) */
        VMQ_TRANSFER_COPY,
        VMQ_TRANSFER_FLIP,
        VMQ_TRANSFER_MAX
};

struct vmq_monitor_config {
        size_t pool_4k_frames; /* 4 KiB frames in the pool (sparse memfd) */
        size_t pool_2m_frames; /* 2 MiB hugetlb frames; 0 for none */
        bool require_huge;     /* fail if the hugetlb frames can't be had */
        int kick_signal;       /* signal used to interrupt KVM_RUN (0: SIGUSR1) */
        uint32_t spin_ns;      /* WAIT polls this long before sleeping */
        /* The post-ring poller (one thread per monitor) keeps polling a
         * micro-VM's post ring this long after the last request it found
         * there, so that a guest posting steadily makes no exit; then it
         * asks the guest for doorbells again.  0: it never polls, every
         * post rings the doorbell.  Default VMQ_POLL_NS_DEFAULT. */
        uint32_t poll_ns;
        /* Measure, when the monitor starts, whether copying or flipping
         * moves a page message faster on this machine, and from which run
         * length on (core/calibrate.c, some 20 ms; more under
         * emulation).  Channels whose transfer is "auto" follow what was
         * measured.  Off: the fixed defaults of vmq_transfer_plan_default().
         * Default on. */
        bool calibrate;
        /* Keep one KVM VM, with its first vCPU, made ahead of need, so that
         * creating a micro-VM does not wait for KVM_CREATE_VM and
         * KVM_CREATE_VCPU (core/spare.c): two fds and an empty VM's kernel
         * memory for as long as the monitor runs.  Default on. */
        bool spare_vm;
        /* Host memory budget: bytes that all guests' messages together may
         * hold in host inboxes (0: VMQ_HOST_BUDGET_DEFAULT).  Each VM has its
         * own as well (vmq_vm_config.host_budget).  A send past either is
         * refused with VMQ_E_AGAIN (retry once the host has read), or
         * VMQ_E_NOMEM when the message could never fit. */
        uint64_t host_budget;
        /* Mapping budgets (see core/remap.h): host mappings all VMs may hold
         * (0: half of vm.max_map_count), and one VM (0: VMQ_MAPS_PER_SPACE).
         * Past either, a page request gets VMQ_E_NOMEM. */
        size_t max_maps;
        size_t max_maps_per_vm;
        /* Channel links all VMs may have together (0: VMQ_MAX_LINKS_DEFAULT).
         * Each costs up to three host mappings at each end and 16 KiB of
         * shared memory. */
        uint32_t max_links;
        /* Micro-VMs get their memory, VMCS and image but no KVM VM and no
         * vCPU thread: they never start, and the caller plays their vCPUs
         * with vmq_vm_hypercall() and vmq_vm_doorbell().  For tests and
         * fuzzers that drive the monitor directly; needs no /dev/kvm. */
        bool host_driven;
        /* The identity of the host end, stamped on what guests learn of it
         * (all zero: a random one for this monitor).  vmqd passes an id
         * derived from the machine id, as machine-id(5) asks. */
        uint8_t host_uuid[16];
        /* called with console bytes written by a guest (may be NULL) */
        void (*console)(void *userdata, struct vmq_vm *vm, const char *buf, size_t len);
        /* called when a VM changes state (may be NULL) */
        void (*state_changed)(void *userdata, struct vmq_vm *vm, enum vmq_vm_state state);
        void *userdata;
};

#define VMQ_MAX_LINKS_DEFAULT 2048u
#define VMQ_POLL_NS_DEFAULT 100000u /* 100 us, as vhost-net's poll-us=100 */

/* Runs of 1, 2, 4, ... 1 << (VMQ_PLAN_STEPS - 1) pages of 4 KiB are timed. */
#define VMQ_PLAN_STEPS 7

/* How a channel whose transfer is "auto" moves a page message, and the
 * figures it was decided on. */
struct vmq_transfer_plan {
        /* Runs of 4 KiB pages this long or longer are flipped, shorter ones
         * copied; 0: always copied. */
        uint32_t flip_min_4k;
        bool flip_2m; /* 2 MiB pages are flipped (else copied) */
        /* false: the defaults (calibration off, or it could not run) */
        bool measured;
        /* What was measured, in ns per message, the best of a few rounds:
         * index i is a run of 1 << i pages, for i < steps_4k (fewer than
         * VMQ_PLAN_STEPS when the pool was too small for the longer runs);
         * the 2 MiB figures are 0 without huge frames. */
        unsigned steps_4k;
        uint32_t copy_ns_4k[VMQ_PLAN_STEPS];
        uint32_t flip_ns_4k[VMQ_PLAN_STEPS];
        uint32_t copy_ns_2m, flip_ns_2m;
};

/* Copy 4 KiB pages, flip 2 MiB ones. */
void vmq_transfer_plan_default(struct vmq_transfer_plan *plan);

/* Fills a config with the defaults. */
void vmq_monitor_config_init(struct vmq_monitor_config *cfg);

/* Opens /dev/kvm and creates the frame pool.  -ENOMEM: pool (or required
 * hugetlb frames) unavailable.  A host without a usable /dev/kvm still gets
 * a monitor: region VMs work, and vmq_vm_create() fails with the reason
 * (see vmq_monitor_kvm_error()). */
int vmq_monitor_new(const struct vmq_monitor_config *cfg, struct vmq_monitor **ret);
/* 0 when micro-VMs can run (or the monitor is host-driven), else why not:
 * -ENODEV (no /dev/kvm), -EACCES (no permission), ... */
int vmq_monitor_kvm_error(const struct vmq_monitor *m);
/* Destroys every VM and channel, then the monitor.  Accepts NULL. */
struct vmq_monitor *vmq_monitor_free(struct vmq_monitor *m);

bool vmq_monitor_has_huge(const struct vmq_monitor *m);

/* Whether a spare VM is ready for the next micro-VM created (see
 * vmq_monitor_config.spare_vm; the poller thread makes the next one after
 * each creation that took it). */
bool vmq_monitor_spare_ready(struct vmq_monitor *m);

/* What "auto" does on this monitor (measured, or the defaults). */
void vmq_monitor_transfer_plan(const struct vmq_monitor *m, struct vmq_transfer_plan *ret);
/* Replaces it, for every later message (for tests, and for an
 * administrator who pins a choice); -EINVAL when flip_min_4k is neither 0
 * nor a run length of at most 1 << 20 pages. */
int vmq_monitor_set_transfer_plan(struct vmq_monitor *m, const struct vmq_transfer_plan *plan);

/* Frames of the pool (4 KiB, or 2 MiB when huge) that are free, and in all.
 * With no VM left, free == total: nothing leaked. */
size_t vmq_monitor_frames_free(const struct vmq_monitor *m, bool huge);
size_t vmq_monitor_frames_total(const struct vmq_monitor *m, bool huge);

struct vmq_vm_config {
        const char *name;      /* unique, [A-Za-z0-9_.-], < VMQ_NAME_MAX */
        uint8_t uuid[16];      /* all zero: generate a random one */
        uint64_t ram_size;     /* bytes, multiple of 2 MiB; default 16 MiB */
        unsigned vcpus;        /* 1..VMQ_MAX_VCPUS */
        uint32_t queue_depth;  /* VM queue capacity, power of two */
        uint32_t post_depth;   /* post ring capacity, power of two */
        uint64_t rx_size;      /* 4 KiB receive window, bytes */
        uint64_t huge_size;    /* own 2 MiB region, bytes (0: none) */
        uint64_t huge_rx_size; /* 2 MiB receive window, bytes */
        const char *args;      /* argument string for the guest, or NULL */
        uint64_t host_budget;  /* bytes its messages may hold in host inboxes
                                * (0: VMQ_VM_HOST_BUDGET_DEFAULT) */
};

#define VMQ_HOST_BUDGET_DEFAULT (256ull * 1024 * 1024)
#define VMQ_VM_HOST_BUDGET_DEFAULT (64ull * 1024 * 1024)
/* The largest guest-to-host message. */
#define VMQ_HOST_MSG_MAX (64ull * 1024 * 1024)

void vmq_vm_config_init(struct vmq_vm_config *cfg);

/*
 * Creates a VM from an ELF image held in memory: allocates its memory from
 * the pool, builds the VMCS and page tables, loads the image.  The VM is
 * CREATED; start it with vmq_vm_start().
 * Errors: -EINVAL (bad config), -EEXIST (name in use), -ENOEXEC/-ERANGE/
 * -EOVERFLOW (bad image, see core/elf.h), -ENOMEM, -ENODEV/-EACCES (no
 * usable /dev/kvm: vmq_monitor_kvm_error()).
 */
int vmq_vm_create(struct vmq_monitor *m, const struct vmq_vm_config *cfg, const void *image,
                  size_t image_size, struct vmq_vm **ret);
/* Same, reading the image from a file. */
int vmq_vm_create_from_file(struct vmq_monitor *m, const struct vmq_vm_config *cfg,
                            const char *path, struct vmq_vm **ret);

/*
 * A VM that another VMM runs (QEMU under libvirt), reached through a shared
 * region (ivshmem): the region holds its VMCS and page areas
 * (VMQ_TRANSPORT_IVSHMEM in core/vmq-abi.h), and the VM talks to the monitor
 * by ringing a doorbell instead of exiting.
 */
struct vmq_region_ops {
        /* Raise the guest's interrupt (its vector 0): something was enqueued
         * for it.  Called from any thread; must not block. */
        void (*notify)(void *userdata, struct vmq_vm *vm);
};

/*
 * Creates a region VM over `region` (size bytes, page aligned, mapped
 * read/write; the caller keeps it mapped until vmq_vm_destroy).  Uses from
 * cfg: name, uuid, queue_depth, post_depth and rx_size (the receive window
 * at the end of the region); the rest of the region after the VMCS is the
 * guest's send area.  The region is initialised (VMCS, rings, layout).  The
 * VM is RUNNING at once: it has no vCPUs of ours.
 * Errors: -EINVAL (bad config, region too small), -EEXIST (name in use).
 */
int vmq_vm_create_region(struct vmq_monitor *m, const struct vmq_vm_config *cfg, void *region,
                         size_t size, const struct vmq_region_ops *ops, void *userdata,
                         struct vmq_vm **ret);

/*
 * The region VM rang the monitor: serve every mailbox whose status is
 * VMQ_STATUS_PENDING, then drain its post ring.  A region whose VMCS was
 * scribbled over (magic, indices) marks the VM crashed and closes its
 * channels, whose other ends receive CLOSE.  Safe from any thread.
 */
void vmq_vm_region_doorbell(struct vmq_vm *vm);

/* Starts the vCPU threads.  -EBUSY unless CREATED (a region VM is running
 * from its creation); -ENODEV for a host-driven VM. */
int vmq_vm_start(struct vmq_vm *vm);

/*
 * Host-driven VMs (vmq_monitor_config.host_driven): the caller's thread
 * acts as vCPU `vcpu` making hypercall nr, with the arguments the caller
 * wrote into that vCPU's mailbox, exactly as the exit loop would (posted
 * requests are drained after it, as on an exit).  Several threads may play
 * several vCPUs at once.  VMQ_HC_WAIT does not block: 0 when the queue
 * holds something, else -VMQ_E_TIMEDOUT.  PARK is refused (-VMQ_E_INVAL).
 * Returns what the guest would find in %eax.
 */
int32_t vmq_vm_hypercall(struct vmq_vm *vm, unsigned vcpu, unsigned nr);
/* The same for the doorbell port: drains the post ring. */
void vmq_vm_doorbell(struct vmq_vm *vm);
/* The doorbell as a guest's ioeventfd rings it: asynchronously, through
 * the post-ring poller, which then polls the VM's post ring for a while
 * (vmq_monitor_config.poll_ns) and sets vmcs->post_doorbell to 0 meanwhile.
 * For host-driven VMs playing the notification protocol of core/vmq-abi.h.
 * -EINVAL for a micro-VM that runs on KVM (its guest rings it), -ENODEV
 * for a region VM. */
int vmq_vm_ring_doorbell(struct vmq_vm *vm);
/* Asks a running VM to stop: enqueues a SHUTDOWN descriptor, which the
 * guest SDK answers by exiting.  The caller stops it by force (vmq_vm_stop)
 * if it has not exited by the caller's deadline.  -EAGAIN: queue full;
 * -ESRCH: not running. */
int vmq_vm_shutdown(struct vmq_vm *vm);
/* Stops a running VM (state STOPPED) and joins its threads.  A VM that
 * already exited or crashed is just joined.  Idempotent. */
int vmq_vm_stop(struct vmq_vm *vm);
/* Waits until the VM is no longer RUNNING, or timeout_ms elapse (-1: no
 * limit).  Returns the state, or -ETIMEDOUT. */
int vmq_vm_wait(struct vmq_vm *vm, int timeout_ms);
/* Stops the VM, closes its channels (peers get CLOSE), frees it. */
void vmq_vm_destroy(struct vmq_vm *vm);

struct vmq_vm *vmq_monitor_find_vm(struct vmq_monitor *m, const char *name);
struct vmq_vm *vmq_monitor_find_vm_id(struct vmq_monitor *m, uint32_t id);

uint32_t vmq_vm_id(const struct vmq_vm *vm);
const char *vmq_vm_name(const struct vmq_vm *vm);
void vmq_vm_identity(const struct vmq_vm *vm, struct vmq_identity *ret);
enum vmq_vm_state vmq_vm_state(const struct vmq_vm *vm);
int vmq_vm_exit_code(const struct vmq_vm *vm);
/* Why the VM crashed (static string, "" unless CRASHED). */
const char *vmq_vm_crash_reason(const struct vmq_vm *vm);
const char *vmq_vm_state_to_string(enum vmq_vm_state s);

struct vmq_vm_stats {
        uint64_t exits;     /* hypercall exits */
        uint64_t doorbells; /* doorbells rung through the ioeventfd (each
                             * is an exit the kernel handles) */
        uint64_t sent;      /* requests accepted from this VM */
        uint64_t posted;    /* of those, deferred (post ring) */
        uint64_t received;  /* descriptors enqueued to this VM */
        uint64_t bytes_sent;
        uint64_t copies, flips, shares;
        uint64_t kicks;            /* VMQ_HC_KICKs it made on its links */
        uint64_t errors;           /* requests refused, all classes */
        uint64_t error[VMQ_E_MAX]; /* per VMQ_E_* class */
};
void vmq_vm_get_stats(const struct vmq_vm *vm, struct vmq_vm_stats *ret);

/* Copies up to size bytes of the VM's most recent console output (a ring of
 * the last 64 KiB) and returns how many; the text is not NUL-terminated. */
size_t vmq_vm_console_read(struct vmq_vm *vm, char *buf, size_t size);

/* Console output from byte offset *offset (counted since the VM started);
 * bytes older than the last 64 KiB are gone, so a stale offset skips ahead.
 * Returns the number of bytes copied and advances *offset past them. */
size_t vmq_vm_console_read_from(struct vmq_vm *vm, uint64_t *offset, char *buf, size_t size);

/*
 * An eventfd (O_CLOEXEC, non-blocking) that becomes readable whenever
 * something happened that an event loop may want to look at: a message for
 * a host end, a VM state change, a channel closing.  Read it to reset it,
 * then poll the monitor (vmq_host_recv with timeout 0, vmq_vm_state, ...).
 * Owned by the monitor.
 */
int vmq_monitor_event_fd(const struct vmq_monitor *m);

/* Channels ---------------------------------------------------------------- */

struct vmq_channel_config {
        uint32_t host_depth;        /* messages queued for a host end */
        enum vmq_transfer transfer; /* policy for page requests without flags */
        /* Give a channel between two micro-VMs a link: shared rings the
         * guests use without exits (VMQ_DESC_F_LINK in their HELLOs; see
         * "Channel links" in core/vmq-abi.h).  Default on.  A channel that
         * cannot have one (an end is the host or a region VM, a VM has
         * VMQ_LINK_SLOTS links, the monitor has max_links) opens without. */
        bool link;
        /* A channel with the host as one end: the VM id the host end speaks
         * for (0: the host itself).  The other end's HELLO then carries
         * that VM's identity, and everything the host end sends it (and
         * its CLOSE) carries that id in src_vm: vmqd relays for a guest
         * that has no vmq driver (a vsock connection).  That VM must exist
         * and not be the other end. */
        uint32_t speak_for;
        /* Only with speak_for: flags (VMQ_DESC_F_VSOCK, VMQ_DESC_F_SEQPACKET)
         * and tag for the other end's HELLO. */
        uint16_t hello_flags;
        uint64_t hello_tag;
};
void vmq_channel_config_init(struct vmq_channel_config *cfg);

/*
 * Opens a channel between two ends, each a VM id or VMQ_HOST_ID (not both
 * the host, not twice the same VM).  Each end receives a HELLO descriptor
 * carrying the other's identity, stamped by the monitor.  Returns the new
 * channel id in *ret_id.  Errors: -ENOENT (no such VM), -EINVAL, -EAGAIN (an
 * end's queue has no room for the HELLO; nothing was opened).
 */
int vmq_channel_open(struct vmq_monitor *m, uint32_t end_a, uint32_t end_b,
                     const struct vmq_channel_config *cfg, uint32_t *ret_id);
/* Closes a channel; each VM end receives a CLOSE descriptor.  -ENOENT. */
int vmq_channel_close(struct vmq_monitor *m, uint32_t id);
/*
 * Forgets a closed channel: the messages still waiting at its host end are
 * freed (their budget goes back to the senders) and its id names nothing
 * from then on (-ENOENT; ids are not reused).  A vmq_host_recv() waiting
 * on it returns -ENOENT.  -EBUSY while it is open, -ENOENT if there is no
 * such channel.
 */
int vmq_channel_forget(struct vmq_monitor *m, uint32_t id);

struct vmq_channel_info {
        uint32_t id;
        uint32_t end[2]; /* VM ids, VMQ_HOST_ID for the host */
        bool open;
        bool linked; /* has a link (open channels only) */
        enum vmq_transfer transfer;
        uint64_t messages[2]; /* delivered to end[i] */
        uint64_t bytes[2];
};
int vmq_channel_get_info(struct vmq_monitor *m, uint32_t id, struct vmq_channel_info *ret);

/* The host end -------------------------------------------------------------- */

struct vmq_host_msg {
        uint16_t kind; /* enum vmq_desc_kind */
        uint16_t flags;
        uint32_t channel;
        uint32_t src_vm;
        int32_t error;
        uint64_t tag;
        size_t len;
        uint8_t data[]; /* len bytes (HELLO: struct vmq_identity) */
};

/*
 * Sends len bytes from the host on a channel the host is an end of.  Up to
 * VMQ_INLINE_MAX bytes travel inline; more are copied into pages of the
 * receiver's window.  -EAGAIN: receiver full (nothing sent); -ENOENT: no such
 * channel; -EPERM: the host is not an end; -EPIPE: closed; -EMSGSIZE: larger
 * than the receiver's window.
 */
int vmq_host_send(struct vmq_monitor *m, uint32_t channel, const void *data, size_t len,
                  uint64_t tag);
/* Receives the next message for the host on a channel, waiting up to
 * timeout_ms (-1: forever, 0: poll).  *ret is malloc()ed, the caller frees
 * it.  -ETIMEDOUT, -ENOENT, -EPERM, -EPIPE (closed and drained). */
int vmq_host_recv(struct vmq_monitor *m, uint32_t channel, int timeout_ms,
                  struct vmq_host_msg **ret);

/* The host's identity as guests see it (VM id 0, name "host"). */
void vmq_monitor_host_identity(const struct vmq_monitor *m, struct vmq_identity *ret);

#endif /* VMQ_MONITOR_H */
