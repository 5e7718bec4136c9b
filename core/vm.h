/* SPDX-License-Identifier: MIT */
/*
 * Internal: the monitor's objects.  Only core/vm.c and core/monitor.c
 * include this; everything else uses core/monitor.h.
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
#define VMQ_MAX_BLOCKED 16u   /* senders remembered per receiver */

struct vmq_vcpu {
        struct vmq_vm *vm;
        unsigned index;
        int fd;
        struct kvm_run *run;
        size_t run_size;
        pthread_t thread;
        bool thread_started;
        _Atomic bool parked;
};

struct vmq_vm {
        struct vmq_monitor *mon;
        struct vmq_vm *next; /* monitor's list, under mon->rw */
        uint32_t id;
        struct vmq_identity ident;
        struct vmq_vm_config cfg; /* name/args pointers cleared */
        char *args;

        enum vmq_transport transport;
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
        /* Receivers this VM's deferred requests are waiting on. */
        uint32_t blocked_on[VMQ_MAX_BLOCKED];
        unsigned nblocked;
        /* Senders whose deferred requests wait for room here. */
        uint32_t blocked_senders[VMQ_MAX_BLOCKED];
        unsigned nblocked_senders;

        /* The post ring: the monitor is the consumer. */
        pthread_mutex_t post_lock;
        struct vmq_queue postq;
        bool post_stalled; /* head request waits for room at its receiver */

        unsigned nvcpus;
        struct vmq_vcpu vcpus[VMQ_MAX_VCPUS];
        _Atomic unsigned running_vcpus;

        int doorbell_fd; /* ioeventfd on VMQ_DOORBELL_PORT */
        int stop_fd;     /* eventfd that stops the doorbell thread */
        pthread_t doorbell_thread;
        bool doorbell_started;

        /* State and waiting, under state_lock. */
        pthread_mutex_t state_lock;
        pthread_cond_t state_cond; /* state changes, queue non-empty */
        _Atomic int state;         /* enum vmq_vm_state */
        _Atomic bool stopping;
        _Atomic int waiters; /* vCPUs sleeping in WAIT */
        int exit_code;
        const char *crash_reason;
        bool joined;

        /* Console ring, under console_lock. */
        pthread_mutex_t console_lock;
        char console[VMQ_CONSOLE_RING];
        size_t console_head; /* total bytes ever written */

        /* Counters (atomics: read without locks). */
        _Atomic uint64_t st_exits, st_sent, st_posted, st_received, st_bytes_sent;
        _Atomic uint64_t st_copies, st_flips, st_shares, st_errors;
        _Atomic uint64_t st_error[VMQ_E_MAX];
};

struct vmq_host_entry {
        struct vmq_host_entry *next;
        struct vmq_host_msg *msg;
};

struct vmq_channel {
        uint32_t id;
        uint32_t end[2];
        bool open;
        struct vmq_channel_config cfg;
        /* Host end's inbox (when one end is the host), under mon->host_lock. */
        struct vmq_host_entry *inbox_head, *inbox_tail;
        uint32_t inbox_len;
        _Atomic uint64_t messages[2], bytes[2];
};

struct vmq_monitor {
        struct vmq_monitor_config cfg;
        int kvm_fd;
        struct vmq_pool *pool;
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

        /* Host inboxes. */
        pthread_mutex_t host_lock;
        pthread_cond_t host_cond;

        int event_fd; /* see vmq_monitor_event_fd() */
};

/* monitor.c */
void vmq_monitor_notify(struct vmq_monitor *m);
/* Serves the region VM's pending mailboxes; caller holds mon->rw (read). */
void vmq_monitor_region_serve(struct vmq_vm *vm);
/* Closes the VM's channels (peers get CLOSE); caller holds mon->rw (write). */
void vmq_monitor_close_channels_of(struct vmq_monitor *m, struct vmq_vm *vm);

/* vm.c */
void vmq_vm_wake(struct vmq_vm *vm);
void vmq_vm_set_state(struct vmq_vm *vm, enum vmq_vm_state state, const char *reason);
void vmq_vm_console_append(struct vmq_vm *vm, const char *buf, size_t len);

/* monitor.c: hypercall and request handling for vm.c's exit loop.  The
 * caller holds mon->rw for reading. */
int32_t vmq_monitor_hypercall(struct vmq_vcpu *vcpu, unsigned nr);
void vmq_monitor_drain_posts(struct vmq_vm *vm);
void vmq_monitor_vm_gone(struct vmq_monitor *m, struct vmq_vm *vm);
int vmq_monitor_queue_count(struct vmq_vm *vm);
/* Caller holds mon->rw. */
struct vmq_vm *vmq_monitor_find_vm_locked(struct vmq_monitor *m, const char *name);

#endif /* VMQ_VM_H */
