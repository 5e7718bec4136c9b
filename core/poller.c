/* SPDX-License-Identifier: MIT */
/*
 * The post-ring poller: one thread per monitor that carries out what
 * micro-VMs post to their post rings, so that a guest streaming requests
 * makes no exit at all.
 *
 * How long a VM is polled after its last request adapts to it, from
 * cfg.poll_ns up to POLL_WINDOW_MAX times that: a VM that rings again soon
 * after the poller stopped (within four windows) had its window too short,
 * which doubles; one that rings after a long quiet spell halves it.  So a
 * ping-pong whose round trip is longer than poll_ns still runs without
 * exits once the window has grown past it, while an idle VM costs the
 * poller at most one window of polling.
 *
 * Every running micro-VM's doorbell (its ioeventfd) is in one epoll set.
 * A VM whose doorbell rings becomes *polled*: the poller sets its VMCS word
 * post_doorbell to 0 (posting is enough, no doorbell needed) and drains its
 * post ring on every pass.  A polled VM that has posted nothing for its
 * window (below) goes back to doorbells: any drain that finds the ring of a
 * VM that is not polled empty stores 1 into post_doorbell, issues a full
 * barrier, and looks once more; the guest publishes its producer index,
 * issues a full barrier, and reads the word.
 * So a request posted around that moment is either seen by the last drain
 * or announced by a doorbell (the ordering of virtio's event index and of
 * io_uring's NEED_WAKEUP).  With no VM polled, the thread sleeps in
 * epoll_wait: idle VMs cost no CPU and no thread of their own.
 *
 * The word is advice to the guest and nothing more: the poller's own state
 * is vm->polled, and a guest that scribbles on the word only loses its own
 * doorbells (its posts then wait for its next exit).  A VM that floods its
 * ring gets at most POLL_BUDGET requests per pass, so it cannot starve the
 * others.  A request stalled at the head of a ring (its receiver is full)
 * is work only while the receiver makes room: polled, it goes through as
 * soon as there is room.  A head stalled for a whole window is left to the
 * receiver's WAIT or RELEASE (vmq_monitor_retry_stalled), and its word
 * stays 0 meanwhile, for a doorbell would not help it.
 *
 * Lock order: the poller takes mon->rw for reading for one pass at a time
 * and the post ring's lock with trylock only (a vCPU draining its own ring
 * is doing the poller's work).  It leaves the lock alone while a writer
 * waits for it (mon->writers), so that a thread creating or destroying a
 * VM is not starved by a poller that retakes it at once.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "core/vm.h"

#define POLL_STOP UINT64_MAX        /* epoll data of the stop eventfd */
#define POLL_SPARE (UINT64_MAX - 1) /* and of the spare VM's */
#define POLL_BUDGET 64              /* requests per VM per pass */
#define POLL_EVENTS 64
#define POLL_EPOLL_EVERY 16 /* passes between looks at the doorbells while polling */
#define POLL_WINDOW_MAX 32  /* the window grows up to this many times poll_ns */

int vmq_poller_init(struct vmq_monitor *m) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = POLL_STOP};

        m->poll_epfd = epoll_create1(EPOLL_CLOEXEC);
        if (m->poll_epfd < 0)
                return -errno;
        m->poll_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (m->poll_stop_fd < 0)
                return -errno;
        if (epoll_ctl(m->poll_epfd, EPOLL_CTL_ADD, m->poll_stop_fd, &ev) < 0)
                return -errno;
        m->poll_spare_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (m->poll_spare_fd < 0)
                return -errno;
        ev.data.u64 = POLL_SPARE;
        if (epoll_ctl(m->poll_epfd, EPOLL_CTL_ADD, m->poll_spare_fd, &ev) < 0)
                return -errno;
        return 0;
}

void vmq_poller_want_spare(struct vmq_monitor *m) {
        uint64_t one = 1;
        (void)!write(m->poll_spare_fd, &one, sizeof(one));
}

void vmq_poller_fini(struct vmq_monitor *m) {
        pthread_mutex_lock(&m->poll_lock);
        bool started = m->poll_started;
        m->poll_started = false;
        pthread_mutex_unlock(&m->poll_lock);
        if (started) {
                uint64_t one = 1;
                (void)!write(m->poll_stop_fd, &one, sizeof(one));
                pthread_join(m->poll_thread, NULL);
        }
        m->poll_epfd = vmq_close(m->poll_epfd);
        m->poll_stop_fd = vmq_close(m->poll_stop_fd);
        m->poll_spare_fd = vmq_close(m->poll_spare_fd);
}

static void set_word(struct vmq_vm *vm, uint32_t v) {
        __atomic_store_n(&vm->vmcs->post_doorbell, v, __ATOMIC_RELAXED);
}

/* Drains up to POLL_BUDGET requests unless a vCPU is draining right now;
 * returns the number taken, or 1 when the ring was busy (work going on). */
static int poll_drain(struct vmq_vm *vm) {
        if (pthread_mutex_trylock(&vm->post_lock) != 0)
                return 1;
        int taken = vmq_monitor_drain_posts_locked(vm, POLL_BUDGET);
        pthread_mutex_unlock(&vm->post_lock);
        return taken;
}

/* A doorbell rang for the VM with this id: poll it from now on. */
static void rang(struct vmq_monitor *m, uint32_t id, uint64_t now) {
        struct vmq_vm *vm = vmq_monitor_find_vm_id_locked(m, id);
        uint64_t count;

        if (!vm || vm->doorbell_fd < 0)
                return; /* destroyed since the event was read */
        if (read(vm->doorbell_fd, &count, sizeof(count)) == sizeof(count))
                vmq_vm_doorbells_taken(vm, count); /* then drained: the pass below */
        vm->poll_last = now;
        if (m->cfg.poll_ns == 0 || atomic_load(&vm->stopping)) {
                /* Not polling: the doorbell is all there is. */
                (void)poll_drain(vm);
                return;
        }
        if (!atomic_load(&vm->polled)) {
                uint64_t base = m->cfg.poll_ns, w = vm->poll_window ? vm->poll_window : base;
                if (now - vm->poll_until < 4 * w)
                        w = VMQ_MIN(w * 2, base * POLL_WINDOW_MAX);
                else
                        w = w / 2 > base ? w / 2 : base;
                vm->poll_window = (uint32_t)VMQ_MIN(w, (uint64_t)UINT32_MAX);
                atomic_store(&vm->polled, true);
                set_word(vm, 0);
        }
}

/* One pass over the polled VMs; returns how many are still polled and sets
 * *busy when one of them had work. */
static unsigned pass(struct vmq_monitor *m, uint64_t now, bool *busy) {
        unsigned active = 0;

        for (struct vmq_vm *vm = m->vms; vm; vm = vm->next) {
                if (!atomic_load(&vm->polled))
                        continue;
                if (atomic_load(&vm->stopping)) {
                        atomic_store(&vm->polled, false);
                        set_word(vm, 1);
                        continue;
                }
                if (poll_drain(vm) > 0) {
                        vm->poll_last = now;
                        *busy = true;
                        active++;
                        continue;
                }
                if (now - vm->poll_last < vm->poll_window) {
                        active++;
                        continue;
                }
                /* Quiet for its window: stop polling.  The drain then finds
                 * the ring empty and, the VM being no longer polled, asks
                 * for doorbells and looks once more after the barrier
                 * (vmq_monitor_drain_posts_locked).  A ring whose head is
                 * stalled keeps its word at 0: a doorbell would not help
                 * it, and the drain that lets the head through (its
                 * receiver made room) empties the ring and asks then. */
                atomic_store(&vm->polled, false);
                vm->poll_until = now;
                if (poll_drain(vm) > 0) {
                        atomic_store(&vm->polled, true);
                        set_word(vm, 0);
                        vm->poll_last = now;
                        *busy = true;
                        active++;
                }
        }
        return active;
}

static void *poller_thread(void *arg) {
        struct vmq_monitor *m = arg;
        struct epoll_event ev[POLL_EVENTS];
        unsigned active = 0, passes = 0;

        for (;;) {
                int n = 0;
                bool busy = false;

                if (active == 0 || passes++ % POLL_EPOLL_EVERY == 0) {
                        n = epoll_wait(m->poll_epfd, ev, POLL_EVENTS, active ? 0 : -1);
                        if (n < 0) {
                                if (errno != EINTR)
                                        return NULL; /* the set is gone: cannot go on */
                                n = 0;
                        }
                }
                for (int i = 0; i < n; i++) {
                        if (ev[i].data.u64 == POLL_STOP)
                                return NULL;
                        if (ev[i].data.u64 == POLL_SPARE) {
                                uint64_t v;
                                (void)!read(m->poll_spare_fd, &v, sizeof(v));
                                /* off the lock: KVM_CREATE_VM takes a while */
                                vmq_spare_refill(m);
                                ev[i--] = ev[--n];
                        }
                }
                /* A writer (a VM or channel coming or going) goes first. */
                while (atomic_load(&m->writers) > 0) {
                        struct timespec ts = {0, 20000};
                        nanosleep(&ts, NULL);
                }
                pthread_rwlock_rdlock(&m->rw);
                uint64_t now = vmq_now_ns();
                for (int i = 0; i < n; i++)
                        rang(m, (uint32_t)ev[i].data.u64, now);
                active = pass(m, now, &busy);
                pthread_rwlock_unlock(&m->rw);
                if (active && !busy)
                        __builtin_ia32_pause();
        }
}

/* Starts the thread on first use; caller holds m->poll_lock. */
static int start_locked(struct vmq_monitor *m) {
        sigset_t all, old;
        int r;

        if (m->poll_started)
                return 0;
        /* Like the vCPU threads: no signal is handled on it. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = -pthread_create(&m->poll_thread, NULL, poller_thread, m);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r == 0) {
                m->poll_started = true;
                (void)pthread_setname_np(m->poll_thread, "vmq-poller");
        }
        return r;
}

int vmq_poller_add(struct vmq_vm *vm) {
        struct vmq_monitor *m = vm->mon;
        struct epoll_event ev = {.events = EPOLLIN, .data.u64 = vm->id};
        int r;

        if (vm->doorbell_fd < 0)
                return 0; /* the doorbell is an exit (no ioeventfd) */
        pthread_mutex_lock(&m->poll_lock);
        r = start_locked(m);
        if (r == 0 && !vm->poll_registered) {
                if (epoll_ctl(m->poll_epfd, EPOLL_CTL_ADD, vm->doorbell_fd, &ev) < 0)
                        r = -errno;
                else
                        vm->poll_registered = true;
        }
        pthread_mutex_unlock(&m->poll_lock);
        return r;
}

void vmq_poller_remove(struct vmq_vm *vm) {
        struct vmq_monitor *m = vm->mon;

        pthread_mutex_lock(&m->poll_lock);
        if (vm->poll_registered) {
                (void)epoll_ctl(m->poll_epfd, EPOLL_CTL_DEL, vm->doorbell_fd, NULL);
                vm->poll_registered = false;
        }
        pthread_mutex_unlock(&m->poll_lock);
        /* A pass running now may still drain it once (under mon->rw, so
         * the VM stays allocated); the next one drops it (stopping). */
}

void vmq_vm_doorbells_taken(struct vmq_vm *vm, uint64_t n) {
        uint64_t total = atomic_fetch_add(&vm->st_doorbells, n) + n;
        /* Published, then the ring is looked at (the caller drains next):
         * a guest that read the count before this store either rings
         * again or finds its request taken (core/vmq-abi.h). */
        __atomic_store_n(&vm->vmcs->post_doorbells_seen, (uint32_t)total, __ATOMIC_RELAXED);
        VMQ_FULL_BARRIER();
}

int vmq_vm_ring_doorbell(struct vmq_vm *vm) {
        uint64_t one = 1;
        int r;

        if (vm->vm_fd >= 0)
                return -EINVAL; /* a running micro-VM rings it itself */
        if (vm->doorbell_fd < 0)
                return -ENODEV; /* a region VM: vmq_vm_region_doorbell() */
        r = vmq_poller_add(vm);
        if (r < 0)
                return r;
        if (write(vm->doorbell_fd, &one, sizeof(one)) < 0)
                return -errno;
        return 0;
}
