/* SPDX-License-Identifier: MIT */
/*
 * The monitor object: configuration, /dev/kvm, the frame pool, the VM list
 * and lookups.  The monitor's other parts have files of their own:
 * core/request.c (checking and delivering requests), core/hypercall.c (the
 * hypercall table), core/channel.c, core/host.c (the host as a channel
 * end), and the transports core/vm-kvm.c and core/vm-region.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <time.h>

#include "core/util.h"
#include "core/vm.h"

static void kick_handler(int sig) {
        (void)sig;
}

void vmq_monitor_config_init(struct vmq_monitor_config *cfg) {
        memset(cfg, 0, sizeof(*cfg));
        cfg->pool_4k_frames = 256 * 1024; /* 1 GiB, sparse */
        cfg->pool_2m_frames = 0;
        cfg->kick_signal = SIGUSR1;
        cfg->spin_ns = 50000;
        cfg->poll_ns = VMQ_POLL_NS_DEFAULT;
        cfg->host_budget = VMQ_HOST_BUDGET_DEFAULT;
        cfg->calibrate = true;
        cfg->spare_vm = true;
}

void vmq_channel_config_init(struct vmq_channel_config *cfg) {
        memset(cfg, 0, sizeof(*cfg));
        cfg->host_depth = 256;
        cfg->transfer = VMQ_TRANSFER_AUTO;
        cfg->link = true;
}

/* The host end's identity: the configured one, else random (RFC 9562
 * version 4). */
static void host_uuid(const uint8_t configured[16], uint8_t uuid[16]) {
        static const uint8_t zero[16];
        if (memcmp(configured, zero, 16) != 0) {
                memcpy(uuid, configured, 16);
                return;
        }
        if (getrandom(uuid, 16, 0) != 16) {
                /* Only before the entropy pool is up: not secret, just unique. */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                uint64_t a = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30);
                uint64_t b = (uint64_t)getpid() << 32 | (uint64_t)(uintptr_t)uuid;
                memcpy(uuid, &a, 8);
                memcpy(uuid + 8, &b, 8);
        }
        uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40);
        uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);
}

/* KVM_GET_SUPPORTED_CPUID, asked once per monitor: every vCPU gets it. */
static struct kvm_cpuid2 *supported_cpuid(int kvm_fd) {
        unsigned n = 128;
        for (int tries = 0; tries < 4; tries++, n *= 2) {
                struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(struct kvm_cpuid_entry2));
                if (!c)
                        return NULL;
                c->nent = n;
                if (ioctl(kvm_fd, KVM_GET_SUPPORTED_CPUID, c) == 0)
                        return c;
                free(c);
                if (errno != E2BIG)
                        return NULL;
        }
        return NULL;
}

int vmq_monitor_new(const struct vmq_monitor_config *cfg, struct vmq_monitor **ret) {
        struct vmq_monitor *m;
        struct vmq_pool_config pc = {0};
        struct sigaction sa = {0};
        int r;

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->cfg = *cfg;
        if (m->cfg.kick_signal <= 0)
                m->cfg.kick_signal = SIGUSR1;
        m->kvm_fd = -1;
        m->poll_epfd = m->poll_stop_fd = m->poll_spare_fd = -1;
        vmq_spare_init(m);
        m->event_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (m->event_fd < 0) {
                free(m);
                return -errno;
        }
        pthread_rwlock_init(&m->rw, NULL);
        pthread_mutex_init(&m->host_lock, NULL);
        pthread_mutex_init(&m->poll_lock, NULL);
        {
                pthread_condattr_t ca;
                pthread_condattr_init(&ca);
                pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
                pthread_cond_init(&m->host_cond, &ca);
                pthread_condattr_destroy(&ca);
        }
        m->next_vm_id = 1;
        m->next_channel_id = 1;
        m->host_ident.vm_id = VMQ_HOST_ID;
        snprintf(m->host_ident.name, sizeof(m->host_ident.name), "host");
        host_uuid(cfg->host_uuid, m->host_ident.uuid);

        /* No SA_RESTART: the signal must interrupt KVM_RUN. */
        sa.sa_handler = kick_handler;
        sigemptyset(&sa.sa_mask);
        if (sigaction(m->cfg.kick_signal, &sa, NULL) < 0) {
                r = -errno;
                goto fail;
        }

        r = vmq_poller_init(m);
        if (r < 0)
                goto fail;

        if (m->cfg.host_budget == 0)
                m->cfg.host_budget = VMQ_HOST_BUDGET_DEFAULT;
        if (m->cfg.max_links == 0)
                m->cfg.max_links = VMQ_MAX_LINKS_DEFAULT;
        /* Without /dev/kvm the monitor still serves region VMs (another
         * VMM runs them) and host-driven ones; creating a micro-VM then
         * fails with the reason. */
        m->kvm_error = -ENODEV;
        if (!m->cfg.host_driven) {
                r = vmq_kvm_open();
                if (r >= 0) {
                        m->kvm_fd = r;
                        m->cpuid = supported_cpuid(m->kvm_fd); /* NULL: KVM's default */
                } else
                        m->kvm_error = r == -ENOENT ? -ENODEV : r;
        }

        pc.frames_4k = cfg->pool_4k_frames;
        pc.frames_2m = cfg->pool_2m_frames;
        pc.require_huge = cfg->require_huge;
        pc.max_maps = cfg->max_maps;
        pc.max_maps_space = cfg->max_maps_per_vm;
        r = vmq_pool_new(&pc, &m->pool);
        if (r < 0)
                goto fail;
        vmq_spare_first(m);
        /* A calibration that cannot run (a pool too small to time even one
         * page) leaves the defaults: the monitor works either way. */
        if (m->cfg.calibrate)
                (void)vmq_pool_calibrate(m->pool, &m->plan);
        else
                vmq_transfer_plan_default(&m->plan);
        *ret = m;
        return 0;
fail:
        vmq_monitor_free(m);
        return r;
}

struct vmq_monitor *vmq_monitor_free(struct vmq_monitor *m) {
        if (!m)
                return NULL;
        for (;;) {
                pthread_rwlock_rdlock(&m->rw);
                struct vmq_vm *vm = m->vms;
                pthread_rwlock_unlock(&m->rw);
                if (!vm)
                        break;
                vmq_vm_destroy(vm);
        }
        for (uint32_t i = 0; i < m->nchannels; i++) {
                if (m->channels[i]) {
                        vmq_host_free_inbox(m, m->channels[i]);
                        free(m->channels[i]);
                }
        }
        free(m->channels);
        vmq_poller_fini(m);
        vmq_spare_fini(m);
        m->pool = vmq_pool_free(m->pool);
        m->kvm_fd = vmq_close(m->kvm_fd);
        free(m->cpuid);
        m->event_fd = vmq_close(m->event_fd);
        pthread_rwlock_destroy(&m->rw);
        pthread_mutex_destroy(&m->host_lock);
        pthread_mutex_destroy(&m->poll_lock);
        pthread_cond_destroy(&m->host_cond);
        free(m);
        return NULL;
}

void vmq_monitor_transfer_plan(const struct vmq_monitor *m, struct vmq_transfer_plan *ret) {
        pthread_rwlock_rdlock((pthread_rwlock_t *)&m->rw);
        *ret = m->plan;
        pthread_rwlock_unlock((pthread_rwlock_t *)&m->rw);
}

int vmq_monitor_set_transfer_plan(struct vmq_monitor *m, const struct vmq_transfer_plan *plan) {
        if (plan->flip_min_4k > (1u << 20) || plan->steps_4k > VMQ_PLAN_STEPS)
                return -EINVAL;
        vmq_monitor_wrlock(m);
        m->plan = *plan;
        pthread_rwlock_unlock(&m->rw);
        return 0;
}

bool vmq_monitor_has_huge(const struct vmq_monitor *m) {
        return vmq_pool_has_huge(m->pool);
}

int vmq_monitor_event_fd(const struct vmq_monitor *m) {
        return m->event_fd;
}

void vmq_monitor_wrlock(struct vmq_monitor *m) {
        atomic_fetch_add(&m->writers, 1);
        pthread_rwlock_wrlock(&m->rw);
        atomic_fetch_sub(&m->writers, 1);
}

void vmq_monitor_notify(struct vmq_monitor *m) {
        uint64_t one = 1;
        /* Non-blocking: a counter at its maximum is still readable. */
        (void)!write(m->event_fd, &one, sizeof(one));
}

size_t vmq_monitor_frames_free(const struct vmq_monitor *m, bool huge) {
        return vmq_pool_frames_free(m->pool, huge ? VMQ_FRAME_2M : VMQ_FRAME_4K);
}

size_t vmq_monitor_frames_total(const struct vmq_monitor *m, bool huge) {
        return vmq_pool_frames_total(m->pool, huge ? VMQ_FRAME_2M : VMQ_FRAME_4K);
}

void vmq_monitor_host_identity(const struct vmq_monitor *m, struct vmq_identity *ret) {
        *ret = m->host_ident;
}

struct vmq_vm *vmq_monitor_find_vm_locked(struct vmq_monitor *m, const char *name) {
        for (struct vmq_vm *vm = m->vms; vm; vm = vm->next)
                if (strcmp(vm->ident.name, name) == 0)
                        return vm;
        return NULL;
}

struct vmq_vm *vmq_monitor_find_vm_id_locked(struct vmq_monitor *m, uint32_t id) {
        for (struct vmq_vm *vm = m->vms; vm; vm = vm->next)
                if (vm->id == id)
                        return vm;
        return NULL;
}

struct vmq_vm *vmq_monitor_find_vm(struct vmq_monitor *m, const char *name) {
        pthread_rwlock_rdlock(&m->rw);
        struct vmq_vm *vm = vmq_monitor_find_vm_locked(m, name);
        pthread_rwlock_unlock(&m->rw);
        return vm;
}

struct vmq_vm *vmq_monitor_find_vm_id(struct vmq_monitor *m, uint32_t id) {
        pthread_rwlock_rdlock(&m->rw);
        struct vmq_vm *vm = vmq_monitor_find_vm_id_locked(m, id);
        pthread_rwlock_unlock(&m->rw);
        return vm;
}

struct vmq_channel *vmq_monitor_channel_locked(struct vmq_monitor *m, uint32_t id) {
        if (id == 0 || id >= m->nchannels)
                return NULL;
        return m->channels[id];
}

int vmq_monitor_open_end_locked(struct vmq_monitor *m, uint32_t id, uint32_t vm_id,
                                struct vmq_channel **ret) {
        struct vmq_channel *ch = vmq_monitor_channel_locked(m, id);
        int side;
        if (!ch)
                return -VMQ_E_NOCHAN;
        if (ch->end[0] == vm_id)
                side = 0;
        else if (ch->end[1] == vm_id)
                side = 1;
        else
                return -VMQ_E_NOCHAN;
        if (!ch->open)
                return -VMQ_E_CLOSED;
        *ret = ch;
        return side;
}

int vmq_monitor_kvm_error(const struct vmq_monitor *m) {
        return m->kvm_fd >= 0 || m->cfg.host_driven ? 0 : m->kvm_error;
}
