/* SPDX-License-Identifier: MIT */
/*
 * Micro-VM lifecycle: memory from the frame pool, VMCS, page tables and ELF
 * image, one thread per vCPU running KVM_RUN, and the exit loop.
 *
 * Stopping a vCPU thread.  A thread may be inside KVM_RUN, about to enter
 * it, or blocked in a WAIT hypercall.  The stopper sets vm->stopping, sets
 * run->immediate_exit (so a KVM_RUN that has not started yet returns -EINTR
 * at once), sends the kick signal (to interrupt a KVM_RUN in progress) and
 * broadcasts state_cond (to end a WAIT).  The handler of the kick signal
 * does nothing; what matters is that it is installed without SA_RESTART.
 *
 * Locks: mon->rw (read) is held while an exit is handled, never while a vCPU
 * sleeps or runs guest code, so that adding or removing VMs and channels
 * (write) only waits for exits in progress.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <time.h>

#include "core/elf.h"
#include "core/util.h"
#include "core/vm.h"
#include "core/x86.h"

#define VMQ_MIB (1024ull * 1024ull)
/* Stack of a vCPU thread (see vmq_kvm_vm_start). */
#define VCPU_STACK_SIZE (256u * 1024u)

void vmq_vm_config_init(struct vmq_vm_config *cfg) {
        memset(cfg, 0, sizeof(*cfg));
        cfg->ram_size = 16 * VMQ_MIB;
        cfg->vcpus = 1;
        cfg->queue_depth = 64;
        cfg->post_depth = 64;
        cfg->rx_size = 16 * VMQ_MIB;
        cfg->huge_size = 0;
        cfg->huge_rx_size = 0;
}

const char *vmq_vm_state_to_string(enum vmq_vm_state s) {
        static const char *const names[VMQ_VM_STATE_MAX] = {
                [VMQ_VM_CREATED] = "created", [VMQ_VM_RUNNING] = "running",
                [VMQ_VM_EXITED] = "exited",   [VMQ_VM_STOPPED] = "stopped",
                [VMQ_VM_CRASHED] = "crashed",
        };
        if ((unsigned)s >= VMQ_VM_STATE_MAX)
                return "unknown";
        return names[s];
}

bool vmq_vm_name_is_valid(const char *name) {
        size_t n;
        if (!name)
                return false;
        n = strlen(name);
        if (n == 0 || n >= VMQ_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-' || c == '.'))
                        return false;
        }
        return name[0] != '.' && name[0] != '-';
}

static int check_config(const struct vmq_vm_config *c) {
        if (!vmq_vm_name_is_valid(c->name))
                return -EINVAL;
        if (c->ram_size < 4 * VMQ_MIB || c->ram_size > 1024 * VMQ_MIB ||
            !VMQ_IS_ALIGNED(c->ram_size, (uint64_t)VMQ_HUGE_PAGE_SIZE))
                return -EINVAL;
        if (c->vcpus < 1 || c->vcpus > VMQ_MAX_VCPUS)
                return -EINVAL;
        if (!VMQ_IS_POW2(c->queue_depth) || c->queue_depth < 4 || !VMQ_IS_POW2(c->post_depth) ||
            c->post_depth < 4)
                return -EINVAL;
        if ((uint64_t)VMQ_VMCS_SIZE((uint64_t)c->queue_depth, (uint64_t)c->post_depth) >
            VMQ_VMCS_MAX_SIZE)
                return -EINVAL;
        if (c->rx_size == 0 || c->rx_size > VMQ_HUGE_GPA - VMQ_RX_GPA ||
            !VMQ_IS_ALIGNED(c->rx_size, (uint64_t)VMQ_PAGE_SIZE))
                return -EINVAL;
        if (c->huge_size > VMQ_HUGE_RX_GPA - VMQ_HUGE_GPA ||
            !VMQ_IS_ALIGNED(c->huge_size, (uint64_t)VMQ_HUGE_PAGE_SIZE))
                return -EINVAL;
        if (c->huge_rx_size > VMQ_GPA_LIMIT - VMQ_HUGE_RX_GPA ||
            !VMQ_IS_ALIGNED(c->huge_rx_size, (uint64_t)VMQ_HUGE_PAGE_SIZE))
                return -EINVAL;
        if (c->args && strlen(c->args) >= VMQ_ARGS_MAX)
                return -E2BIG;
        return 0;
}

static void *translate_cb(void *ctx, uint64_t gpa, uint64_t len) {
        return vmq_space_translate(ctx, gpa, len, true);
}

static void random_uuid(uint8_t uuid[16]) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        bool ok = false;
        if (fd >= 0) {
                ok = read(fd, uuid, 16) == 16;
                close(fd);
        }
        if (!ok) {
                /* Only reachable without /dev/urandom: unique, not secret. */
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                uint64_t a = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uintptr_t)uuid;
                for (int i = 0; i < 16; i++) {
                        a = a * 6364136223846793005ull + 1442695040888963407ull;
                        uuid[i] = (uint8_t)(a >> 56);
                }
        }
        uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40); /* version 4 */
        uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80); /* RFC 4122 variant */
}

void vmq_vm_free_resources(struct vmq_vm *vm) {
        for (unsigned i = 0; i < vm->nvcpus; i++) {
                struct vmq_vcpu *c = &vm->vcpus[i];
                if (c->run)
                        munmap(c->run, c->run_size);
                c->fd = vmq_close(c->fd);
        }
        vmq_poller_remove(vm);
        if (vm->doorbell_fd >= 0 && vm->vm_fd >= 0)
                (void)vmq_kvm_ioeventfd(vm->vm_fd, VMQ_DOORBELL_PORT, 0, vm->doorbell_fd, false);
        vm->doorbell_fd = vmq_close(vm->doorbell_fd);
        vm->vm_fd = vmq_close(vm->vm_fd);
        vmq_vm_link_fini(vm);
        vm->space = vmq_space_free(vm->space);
        free(vm->rx_used);
        pthread_mutex_destroy(&vm->rxq_lock);
        pthread_mutex_destroy(&vm->post_lock);
        pthread_mutex_destroy(&vm->state_lock);
        pthread_cond_destroy(&vm->state_cond);
        pthread_mutex_destroy(&vm->console_lock);
        free(vm->args);
        free(vm->console);
        free(vm);
}

int vmq_vm_make_vcpu(struct vmq_monitor *m, int vm_fd, unsigned index, struct kvm_run **ret_run,
                     size_t *ret_run_size) {
        struct kvm_run *run;
        size_t run_size;
        int fd = vmq_kvm_create_vcpu(m->kvm_fd, vm_fd, index, &run, &run_size);
        if (fd < 0)
                return fd;
        if (m->cpuid && ioctl(fd, KVM_SET_CPUID2, m->cpuid) < 0) {
                int r = -errno;
                munmap(run, run_size);
                vmq_close(fd);
                return r;
        }
        *ret_run = run;
        *ret_run_size = run_size;
        return fd;
}

static int setup_vcpu(struct vmq_vm *vm, unsigned index, const struct vmq_x86_boot *boot,
                      uint64_t entry) {
        struct vmq_vcpu *c = &vm->vcpus[index];
        struct kvm_sregs sregs;
        struct kvm_regs regs;
        int fd;

        c->vm = vm;
        c->index = index;
        if (c->fd < 0) { /* else made ahead (core/spare.c) */
                fd = vmq_vm_make_vcpu(vm->mon, vm->vm_fd, index, &c->run, &c->run_size);
                if (fd < 0)
                        return fd;
                c->fd = fd;
        }
        fd = c->fd;
        if (ioctl(fd, KVM_GET_SREGS, &sregs) < 0)
                return -errno;
        vmq_x86_setup_sregs(boot, &sregs);
        if (ioctl(fd, KVM_SET_SREGS, &sregs) < 0)
                return -errno;
        vmq_x86_setup_regs(entry, vm->cfg.ram_size - (uint64_t)index * VMQ_STACK_SIZE, index,
                           VMQ_VMCS_GPA, &regs);
        if (ioctl(fd, KVM_SET_REGS, &regs) < 0)
                return -errno;
        return 0;
}

static int add_region(struct vmq_vm *vm, uint32_t slot, uint64_t gpa, uint64_t size,
                      enum vmq_frame_kind kind, unsigned flags) {
        void *hva;
        int r;
        if (size == 0)
                return 0;
        r = vmq_space_add_region(vm->space, gpa, size, kind, flags, &hva);
        if (r < 0)
                return r;
        if (vm->vm_fd < 0)
                return 0; /* host-driven: no KVM VM */
        return vmq_kvm_set_memslot(vm->vm_fd, slot, gpa, size, hva, 0);
}

void vmq_vm_init_vmcs(struct vmq_vm *vm, uint64_t image_end) {
        struct vmq_vmcs *v = vm->vmcs;
        const struct vmq_vm_config *c = &vm->cfg;
        uint32_t q = c->queue_depth, p = c->post_depth;

        memset(v, 0, vm->vmcs_size);
        v->magic = VMQ_ABI_MAGIC;
        v->abi_version = VMQ_ABI_VERSION;
        v->vmcs_size = vm->vmcs_size;
        v->header_size = sizeof(*v);
        v->self = vm->ident;
        v->layout.ram_size = c->ram_size;
        v->layout.image_end = image_end;
        v->layout.rx_gpa = VMQ_RX_GPA;
        v->layout.rx_size = c->rx_size;
        v->layout.huge_gpa = VMQ_HUGE_GPA;
        v->layout.huge_size = c->huge_size;
        v->layout.huge_rx_gpa = VMQ_HUGE_RX_GPA;
        v->layout.huge_rx_size = c->huge_rx_size;
        v->layout.queue_off = VMQ_VMCS_QUEUE_OFF;
        v->layout.queue_cap = q;
        v->layout.queue_slots_off = VMQ_VMCS_QUEUE_SLOTS_OFF;
        v->layout.post_off = VMQ_VMCS_POST_OFF(q);
        v->layout.post_cap = p;
        v->layout.post_slots_off = VMQ_VMCS_POST_SLOTS_OFF(q);
        v->layout.vcpus = c->vcpus;
        v->tsc_khz = vm->mon->tsc_khz;
        v->post_doorbell = 1; /* until the poller polls it */
        if (vm->args)
                memcpy(v->args, vm->args, strlen(vm->args) + 1);
}

/* What every VM needs before anything can fail: vmq_vm_free_resources()
 * can then take it apart from any point. */
static void vm_init_common(struct vmq_monitor *m, struct vmq_vm *vm) {
        vm->mon = m;
        atomic_init(&vm->stalled_on, VMQ_NO_VM);
        vm->vm_fd = vm->doorbell_fd = -1;
        for (unsigned i = 0; i < VMQ_MAX_VCPUS; i++)
                vm->vcpus[i].fd = -1;
        pthread_mutex_init(&vm->rxq_lock, NULL);
        pthread_mutex_init(&vm->post_lock, NULL);
        pthread_mutex_init(&vm->state_lock, NULL);
        pthread_mutex_init(&vm->console_lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&vm->state_cond, &ca);
        pthread_condattr_destroy(&ca);
}

int vmq_vm_alloc(struct vmq_monitor *m, const struct vmq_vm_config *cfg,
                 const struct vmq_vm_ops *ops, struct vmq_vm **ret) {
        struct vmq_vm *vm = calloc(1, sizeof(*vm));
        if (!vm)
                return -ENOMEM;
        vm_init_common(m, vm);
        vm->ops = ops;
        atomic_init(&vm->state, VMQ_VM_CREATED);
        vm->cfg = *cfg;
        vm->cfg.name = NULL;
        vm->cfg.args = NULL;
        if (vm->cfg.host_budget == 0)
                vm->cfg.host_budget = VMQ_VM_HOST_BUDGET_DEFAULT;
        vm->nvcpus = cfg->vcpus;
        if (cfg->args) {
                vm->args = strdup(cfg->args);
                if (!vm->args) {
                        vmq_vm_free_resources(vm);
                        return -ENOMEM;
                }
        }
        snprintf(vm->ident.name, sizeof(vm->ident.name), "%s", cfg->name);
        memcpy(vm->ident.uuid, cfg->uuid, 16);
        if (memcmp(vm->ident.uuid, (uint8_t[16]){0}, 16) == 0)
                random_uuid(vm->ident.uuid);
        *ret = vm;
        return 0;
}

int vmq_vm_attach_rings(struct vmq_vm *vm) {
        uint8_t *base = (uint8_t *)vm->vmcs;
        uint32_t q = vm->cfg.queue_depth, p = vm->cfg.post_depth;
        int r = vmq_queue_attach(&vm->rxq, (struct vmq_ring_idx *)(base + VMQ_VMCS_QUEUE_OFF),
                                 base + VMQ_VMCS_QUEUE_SLOTS_OFF, q, sizeof(struct vmq_desc),
                                 VMQ_QUEUE_PRODUCER, true);
        if (r == 0)
                r = vmq_queue_attach(&vm->postq,
                                     (struct vmq_ring_idx *)(base + VMQ_VMCS_POST_OFF(q)),
                                     base + VMQ_VMCS_POST_SLOTS_OFF(q), p,
                                     sizeof(struct vmq_request), VMQ_QUEUE_CONSUMER, true);
        return r;
}

static int setup_kvm(struct vmq_vm *vm, const struct vmq_x86_boot *boot, uint64_t entry);

int vmq_vm_create(struct vmq_monitor *m, const struct vmq_vm_config *cfg, const void *image,
                  size_t image_size, struct vmq_vm **ret) {
        struct vmq_vm *vm;
        struct vmq_elf_info elf;
        struct vmq_x86_boot boot;
        void *system;
        int r;

        r = check_config(cfg);
        if (r < 0)
                return r;
        if (!image || image_size == 0)
                return -ENOEXEC;
        /* Host-driven VMs need no KVM; the others need it now. */
        bool kvm = !m->cfg.host_driven;
        if (kvm && m->kvm_fd < 0)
                return m->kvm_error;

        r = vmq_vm_alloc(m, cfg, &vmq_kvm_ops, &vm);
        if (r < 0)
                return r;
        if (!vmq_monitor_has_huge(m)) {
                /* The guest learns this from its layout (huge_size == 0). */
                vm->cfg.huge_size = 0;
                vm->cfg.huge_rx_size = 0;
        }

        /* Parse before allocating anything big: bad images fail fast. */
        r = vmq_elf_parse(image, image_size, VMQ_IMAGE_GPA,
                          vm->cfg.ram_size - (uint64_t)vm->nvcpus * VMQ_STACK_SIZE, &elf);
        if (r < 0)
                goto fail;

        r = vmq_space_new(m->pool, &vm->space);
        if (r < 0)
                goto fail;
        if (kvm) {
                struct vmq_spare sp;
                r = vmq_spare_take(m, &sp);
                if (r < 0)
                        goto fail;
                vm->vm_fd = sp.vm_fd;
                /* its vCPU 0, made and given the CPUID (setup_vcpu) */
                vm->vcpus[0].fd = sp.vcpu_fd;
                vm->vcpus[0].run = sp.run;
                vm->vcpus[0].run_size = sp.run_size;
        }

        r = add_region(vm, 0, 0, vm->cfg.ram_size, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        if (r < 0)
                goto fail;
        r = add_region(vm, 1, VMQ_RX_GPA, vm->cfg.rx_size, VMQ_FRAME_4K, 0);
        if (r < 0)
                goto fail;
        r = add_region(vm, 2, VMQ_HUGE_GPA, vm->cfg.huge_size, VMQ_FRAME_2M, VMQ_REGION_POPULATE);
        if (r < 0)
                goto fail;
        r = add_region(vm, 3, VMQ_HUGE_RX_GPA, vm->cfg.huge_rx_size, VMQ_FRAME_2M, 0);
        if (r < 0)
                goto fail;

        vm->vmcs_size = VMQ_VMCS_SIZE((uint64_t)cfg->queue_depth, (uint64_t)cfg->post_depth);
        vm->vmcs = vmq_space_translate(vm->space, VMQ_VMCS_GPA, vm->vmcs_size, true);
        system = vmq_space_translate(vm->space, VMQ_SYSTEM_GPA, VMQ_SYSTEM_END - VMQ_SYSTEM_GPA,
                                     true);
        if (!vm->vmcs || !system) {
                r = -EFAULT;
                goto fail;
        }

        {
                struct vmq_x86_map maps[] = {
                        {VMQ_VMCS_GPA, vm->cfg.ram_size - VMQ_VMCS_GPA, true, true},
                        {VMQ_RX_GPA, vm->cfg.rx_size, true, true},
                        {VMQ_HUGE_GPA, vm->cfg.huge_size, true, true},
                        {VMQ_HUGE_RX_GPA, vm->cfg.huge_rx_size, true, true},
                        /* backed once the VM has a link (core/link.c) */
                        {VMQ_LINK_GPA, VMQ_LINK_WINDOW, true, true},
                };
                size_t n = 0;
                struct vmq_x86_map used[VMQ_ARRAY_SIZE(maps)];
                for (size_t i = 0; i < VMQ_ARRAY_SIZE(maps); i++)
                        if (maps[i].size)
                                used[n++] = maps[i];
                r = vmq_x86_build(system, used, n, &boot);
                if (r < 0)
                        goto fail;
        }

        r = vmq_elf_load(image, image_size, &elf, translate_cb, vm->space);
        if (r < 0)
                goto fail;

        for (unsigned i = 0; i < vm->nvcpus; i++) {
                vm->vcpus[i].vm = vm;
                vm->vcpus[i].index = i;
        }
        if (kvm) {
                r = setup_kvm(vm, &boot, elf.entry);
                if (r < 0)
                        goto fail;
        } else {
                /* The caller rings it (vmq_vm_ring_doorbell). */
                vm->doorbell_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                if (vm->doorbell_fd < 0) {
                        r = -errno;
                        goto fail;
                }
        }

        vmq_monitor_wrlock(m);
        if (vmq_monitor_find_vm_locked(m, cfg->name)) {
                pthread_rwlock_unlock(&m->rw);
                r = -EEXIST;
                goto fail;
        }
        vm->id = m->next_vm_id++;
        vm->ident.vm_id = vm->id;
        vmq_vm_init_vmcs(vm, VMQ_ALIGN_UP(elf.high, (uint64_t)VMQ_PAGE_SIZE));
        r = vmq_vm_attach_rings(vm);
        if (r < 0) {
                pthread_rwlock_unlock(&m->rw);
                goto fail;
        }
        vm->next = m->vms;
        m->vms = vm;
        pthread_rwlock_unlock(&m->rw);

        *ret = vm;
        return 0;
fail:
        vmq_vm_free_resources(vm);
        return r;
}

/* The KVM side of a micro-VM: vCPUs, their registers, the doorbell. */
static int setup_kvm(struct vmq_vm *vm, const struct vmq_x86_boot *boot, uint64_t entry) {
        struct vmq_monitor *m = vm->mon;
        int r = 0;
        for (unsigned i = 0; i < vm->nvcpus && r == 0; i++)
                r = setup_vcpu(vm, i, boot, entry);
        if (r < 0)
                return r;
        if (m->tsc_khz == 0)
                m->tsc_khz = vmq_kvm_tsc_khz(vm->vcpus[0].fd);

        r = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (r < 0)
                return -errno;
        vm->doorbell_fd = r;
        r = vmq_kvm_ioeventfd(vm->vm_fd, VMQ_DOORBELL_PORT, 0, vm->doorbell_fd, true);
        if (r < 0) {
                /* Without ioeventfd the doorbell still works, as an exit. */
                vm->doorbell_fd = vmq_close(vm->doorbell_fd);
        }
        return 0;
}

int vmq_vm_create_from_file(struct vmq_monitor *m, const struct vmq_vm_config *cfg,
                            const char *path, struct vmq_vm **ret) {
        _cleanup_free_ void *data = NULL;
        size_t size;
        int r = vmq_read_file(path, VMQ_IMAGE_MAX, &data, &size);
        if (r < 0)
                return r;
        return vmq_vm_create(m, cfg, data, size, ret);
}

/* ---- state ---------------------------------------------------------------- */

void vmq_vm_set_state(struct vmq_vm *vm, enum vmq_vm_state state, const char *reason) {
        bool changed = false;
        pthread_mutex_lock(&vm->state_lock);
        /* The first terminal state wins: a crash after exit is not news. */
        int cur = atomic_load(&vm->state);
        if (cur == VMQ_VM_CREATED || cur == VMQ_VM_RUNNING) {
                if ((int)state != cur) {
                        atomic_store(&vm->state, (int)state);
                        if (state == VMQ_VM_CRASHED)
                                vm->crash_reason = reason;
                        changed = true;
                }
        }
        /* Before the broadcast: whoever wakes up sees the event too. */
        if (changed)
                vmq_monitor_notify(vm->mon);
        pthread_cond_broadcast(&vm->state_cond);
        pthread_mutex_unlock(&vm->state_lock);
        if (changed && vm->mon->cfg.state_changed)
                vm->mon->cfg.state_changed(vm->mon->cfg.userdata, vm, state);
}

int vmq_vm_shutdown(struct vmq_vm *vm) {
        struct vmq_desc d = {0};
        int r;

        if (atomic_load(&vm->state) != VMQ_VM_RUNNING)
                return -ESRCH;
        d.kind = VMQ_DESC_SHUTDOWN;
        d.src_vm = VMQ_HOST_ID;
        pthread_mutex_lock(&vm->rxq_lock);
        r = vmq_queue_space(&vm->rxq);
        if (r > 0)
                r = vmq_queue_enqueue(&vm->rxq, &d, 1) == 1 ? 0 : -EAGAIN;
        else
                r = r == 0 ? -EAGAIN : -EPROTO;
        pthread_mutex_unlock(&vm->rxq_lock);
        if (r == 0) {
                /* a guest asleep on a link only (VMQ_WAIT_F_LINKS) must
                 * hear it too */
                atomic_store(&vm->kicked, true);
                vmq_vm_wake(vm);
        }
        return r;
}

void vmq_vm_wake(struct vmq_vm *vm) {
        vm->ops->wake(vm);
}

int vmq_vm_wait_count(struct vmq_vm *vm, bool links_only) {
        if (atomic_exchange(&vm->kicked, false))
                return 1;
        return links_only ? 0 : vmq_monitor_queue_count(vm);
}

/* VMQ_HC_WAIT: returns 0 when the queue holds something or a peer kicked
 * one of the VM's links, -VMQ_E_TIMEDOUT, or -VMQ_E_PROTO when the guest
 * broke its queue indices. */
static int32_t wait_queue(struct vmq_vcpu *c, uint64_t timeout_ns, bool links_only) {
        struct vmq_vm *vm = c->vm;
        uint64_t start = vmq_now_ns(), spin_end, deadline;
        int n;

        deadline = timeout_ns == UINT64_MAX || timeout_ns > UINT64_MAX - start ? UINT64_MAX
                                                                               : start + timeout_ns;
        spin_end = start + vm->mon->cfg.spin_ns;
        if (spin_end > deadline)
                spin_end = deadline;

        for (;;) {
                n = vmq_vm_wait_count(vm, links_only);
                if (n != 0)
                        return n > 0 ? 0 : -VMQ_E_PROTO;
                if (atomic_load(&vm->stopping))
                        return -VMQ_E_TIMEDOUT;
                uint64_t t = vmq_now_ns();
                if (t >= deadline)
                        return -VMQ_E_TIMEDOUT;
                if (t < spin_end) {
                        __builtin_ia32_pause();
                        continue;
                }
                pthread_mutex_lock(&vm->state_lock);
                atomic_fetch_add(&vm->waiters, 1);
                n = vmq_vm_wait_count(vm, links_only);
                if (n == 0 && !atomic_load(&vm->stopping)) {
                        if (deadline == UINT64_MAX) {
                                pthread_cond_wait(&vm->state_cond, &vm->state_lock);
                        } else {
                                struct timespec ts = {
                                        .tv_sec = (time_t)(deadline / 1000000000ull),
                                        .tv_nsec = (long)(deadline % 1000000000ull),
                                };
                                pthread_cond_timedwait(&vm->state_cond, &vm->state_lock, &ts);
                        }
                }
                atomic_fetch_sub(&vm->waiters, 1);
                pthread_mutex_unlock(&vm->state_lock);
                if (n != 0)
                        return n > 0 ? 0 : -VMQ_E_PROTO;
        }
}

static void park(struct vmq_vcpu *c) {
        struct vmq_vm *vm = c->vm;
        atomic_store(&c->parked, true);
        pthread_mutex_lock(&vm->state_lock);
        while (!atomic_load(&vm->stopping))
                pthread_cond_wait(&vm->state_cond, &vm->state_lock);
        pthread_mutex_unlock(&vm->state_lock);
}

static void crash(struct vmq_vm *vm, const char *reason) {
        vmq_vm_set_state(vm, VMQ_VM_CRASHED, reason);
}

enum vmq_port_kind vmq_port_classify(uint16_t port, uint8_t size, uint32_t count, bool out) {
        /* The TSS bitmap opens a few ports past the range only so that wide
         * accesses at its end arrive here: one that starts there faults. */
        if (port < VMQ_PORT_FIRST || port >= VMQ_PORT_END)
                return VMQ_PORT_FAULT;
        if (out)
                return port == VMQ_DOORBELL_PORT ? VMQ_PORT_DOORBELL : VMQ_PORT_NOSYS;
        return size == 4 && count == 1 ? VMQ_PORT_HYPERCALL : VMQ_PORT_NOSYS;
}

/* Returns false when the vCPU must stop. */
static bool handle_io(struct vmq_vcpu *c) {
        struct vmq_vm *vm = c->vm;
        struct kvm_run *run = c->run;
        uint16_t port = run->io.port;
        uint8_t *data = (uint8_t *)run + run->io.data_offset;

        /* data_offset comes from the kernel, but check it anyway. */
        if (run->io.data_offset > c->run_size ||
            (uint64_t)run->io.size * run->io.count > c->run_size - run->io.data_offset) {
                crash(vm, "malformed I/O exit");
                return false;
        }

        int32_t result;
        switch (vmq_port_classify(port, run->io.size, run->io.count,
                                  run->io.direction == KVM_EXIT_IO_OUT)) {
        case VMQ_PORT_FAULT:
                crash(vm, "guest accessed a closed I/O port");
                return false;
        case VMQ_PORT_DOORBELL:
                /* ioeventfd unavailable: the doorbell is an exit. */
                atomic_fetch_add(&vm->st_exits, 1);
                vmq_vm_doorbells_taken(vm, 1);
                vmq_vm_doorbell(vm);
                return true;
        case VMQ_PORT_NOSYS:
                /* Counted; an out is dropped, every element of an in reads
                 * -VMQ_E_NOSYS cut to its width (all ones for inb). */
                atomic_fetch_add(&vm->st_errors, 1);
                atomic_fetch_add(&vm->st_error[VMQ_E_NOSYS], 1);
                result = -VMQ_E_NOSYS;
                if (run->io.direction != KVM_EXIT_IO_OUT)
                        for (uint32_t i = 0; i < run->io.count; i++)
                                memcpy(data + (size_t)i * run->io.size, &result,
                                       VMQ_MIN((size_t)run->io.size, sizeof(result)));
                return true;
        case VMQ_PORT_HYPERCALL:
        default: {
                unsigned nr = port - VMQ_HC_PORT_BASE;
                atomic_fetch_add(&vm->st_exits, 1);
                if (nr == VMQ_HC_WAIT) {
                        struct vmq_request *mb = &vm->vmcs->mbox[c->index];
                        uint64_t timeout = __atomic_load_n(&mb->arg, __ATOMIC_RELAXED);
                        bool links_only =
                                __atomic_load_n(&mb->flags, __ATOMIC_RELAXED) & VMQ_WAIT_F_LINKS;
                        pthread_rwlock_rdlock(&vm->mon->rw);
                        vmq_monitor_drain_posts(vm);
                        result = vmq_monitor_hypercall(c, nr); /* retries blocked senders */
                        pthread_rwlock_unlock(&vm->mon->rw);
                        if (result == 0)
                                result = wait_queue(c, timeout, links_only);
                        __atomic_store_n(&mb->status, result, __ATOMIC_RELAXED);
                } else if (nr == VMQ_HC_PARK) {
                        vmq_vm_doorbell(vm);
                        park(c);
                        return false;
                } else {
                        pthread_rwlock_rdlock(&vm->mon->rw);
                        result = vmq_monitor_hypercall(c, nr);
                        vmq_monitor_drain_posts(vm);
                        pthread_rwlock_unlock(&vm->mon->rw);
                        if (nr == VMQ_HC_EXIT) {
                                pthread_mutex_lock(&vm->state_lock);
                                vm->exit_code = (int)result;
                                pthread_mutex_unlock(&vm->state_lock);
                                vmq_vm_set_state(vm, VMQ_VM_EXITED, NULL);
                                return false;
                        }
                }
        }
        }
        memcpy(data, &result, sizeof(result));
        return true;
}

static void kick_others(struct vmq_vm *vm, const struct vmq_vcpu *self);

/* No IDT: every guest exception ends here.  On Intel KVM leaves the
 * registers as they were when the exception could not be delivered, so the
 * reason says where the guest was and, for a page fault, which address it
 * touched; on AMD KVM has already reset the vCPU (paging off), and there is
 * nothing to say. */
static const char *triple_fault_reason(struct vmq_vcpu *c) {
        struct kvm_regs regs;
        struct kvm_sregs sregs;
        if (ioctl(c->fd, KVM_GET_REGS, &regs) < 0 || ioctl(c->fd, KVM_GET_SREGS, &sregs) < 0 ||
            !(sregs.cr0 & VMQ_X86_CR0_PG))
                return "guest exception (triple fault)";
        snprintf(c->crash_text, sizeof(c->crash_text),
                 "guest exception (triple fault) on vCPU %u at rip=%#llx rsp=%#llx cr2=%#llx",
                 c->index, (unsigned long long)regs.rip, (unsigned long long)regs.rsp,
                 (unsigned long long)sregs.cr2);
        return c->crash_text;
}

static void *vcpu_thread(void *arg) {
        struct vmq_vcpu *c = arg;
        struct vmq_vm *vm = c->vm;
        bool go = true;

        while (go && !atomic_load(&vm->stopping)) {
                int r = ioctl(c->fd, KVM_RUN, 0);
                if (r < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        if (errno == EFAULT)
                                crash(vm, "guest accessed memory it may not touch");
                        else
                                crash(vm, "KVM_RUN failed");
                        break;
                }
                switch (c->run->exit_reason) {
                case KVM_EXIT_IO:
                        go = handle_io(c);
                        break;
                case KVM_EXIT_SHUTDOWN:
                        crash(vm, triple_fault_reason(c));
                        go = false;
                        break;
                case KVM_EXIT_MMIO:
                        crash(vm, "guest accessed unbacked guest-physical memory");
                        go = false;
                        break;
                case KVM_EXIT_HLT:
                        crash(vm, "guest halted");
                        go = false;
                        break;
                case KVM_EXIT_INTR:
                        break;
                case KVM_EXIT_FAIL_ENTRY:
                        crash(vm, "VM entry failed");
                        go = false;
                        break;
                case KVM_EXIT_INTERNAL_ERROR:
                        crash(vm, "KVM internal error (emulation failure)");
                        go = false;
                        break;
                default:
                        crash(vm, "unexpected VM exit");
                        go = false;
                        break;
                }
                /* Natural exits drain the post ring too (deferred mode). */
                if (go && c->run->exit_reason != KVM_EXIT_IO) {
                        vmq_vm_doorbell(vm);
                }
        }
        /* When one vCPU ends the VM (exit, crash), the others stop too. */
        if (!atomic_exchange(&vm->stopping, true))
                kick_others(vm, c);
        atomic_fetch_sub(&vm->running_vcpus, 1);
        return NULL;
}

static void kick_others(struct vmq_vm *vm, const struct vmq_vcpu *self) {
        int sig = vm->mon->cfg.kick_signal;
        /* Under state_lock: vmq_vm_stop() sets `joined` under it before it
         * joins, so no thread signalled here has been joined. */
        pthread_mutex_lock(&vm->state_lock);
        for (unsigned i = 0; i < vm->nvcpus && !vm->joined; i++) {
                struct vmq_vcpu *c = &vm->vcpus[i];
                if (c == self || !c->thread_started)
                        continue;
                __atomic_store_n(&c->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
                pthread_kill(c->thread, sig);
        }
        pthread_cond_broadcast(&vm->state_cond);
        pthread_mutex_unlock(&vm->state_lock);
}

int vmq_vm_start(struct vmq_vm *vm) {
        return vm->ops->start(vm);
}

int vmq_vm_stop(struct vmq_vm *vm) {
        return vm->ops->stop(vm);
}

void vmq_vm_fault(struct vmq_vm *vm, const char *reason) {
        vmq_vm_set_state(vm, VMQ_VM_CRASHED, reason);
        if (!atomic_exchange(&vm->stopping, true) && vm->vm_fd >= 0)
                kick_others(vm, NULL);
}

int vmq_kvm_vm_start(struct vmq_vm *vm) {
        sigset_t all, old;
        int r = 0;

        if (vm->vm_fd < 0)
                return -ENODEV; /* host-driven: the caller plays its vCPUs */
        pthread_mutex_lock(&vm->state_lock);
        if (atomic_load(&vm->state) != VMQ_VM_CREATED) {
                pthread_mutex_unlock(&vm->state_lock);
                return -EBUSY;
        }
        atomic_store(&vm->state, VMQ_VM_RUNNING);
        /* The threads are made under state_lock: a vCPU that ends the VM at
         * once kicks the others (kick_others(), under the same lock) only
         * once every thread handle is written. */

        /* Threads start with every signal blocked but the kick signal. */
        sigfillset(&all);
        sigdelset(&all, vm->mon->cfg.kick_signal);
        sigdelset(&all, SIGSEGV);
        sigdelset(&all, SIGBUS);
        sigdelset(&all, SIGFPE);
        sigdelset(&all, SIGILL);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = vmq_poller_add(vm);
        /* A small stack: a vCPU thread's deepest path (a request with its
         * remap) needs a few KiB, and an idle machine should cost as little
         * host memory as it can; the default (RLIMIT_STACK, 8 MiB) may be
         * backed by a transparent huge page once touched. */
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        (void)pthread_attr_setstacksize(&attr, VCPU_STACK_SIZE);
        for (unsigned i = 0; r == 0 && i < vm->nvcpus; i++) {
                atomic_fetch_add(&vm->running_vcpus, 1);
                r = -pthread_create(&vm->vcpus[i].thread, &attr, vcpu_thread, &vm->vcpus[i]);
                if (r == 0)
                        vm->vcpus[i].thread_started = true;
                else
                        atomic_fetch_sub(&vm->running_vcpus, 1);
        }
        pthread_attr_destroy(&attr);
        pthread_mutex_unlock(&vm->state_lock);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (vm->mon->cfg.state_changed)
                vm->mon->cfg.state_changed(vm->mon->cfg.userdata, vm, VMQ_VM_RUNNING);
        vmq_monitor_notify(vm->mon);
        if (r < 0) {
                crash(vm, "could not start vCPU threads");
                vmq_vm_stop(vm);
        }
        return r;
}

int vmq_kvm_vm_stop(struct vmq_vm *vm) {
        if (atomic_load(&vm->state) == VMQ_VM_CREATED) {
                vmq_vm_set_state(vm, VMQ_VM_STOPPED, NULL);
                return 0;
        }
        atomic_store(&vm->stopping, true);
        kick_others(vm, NULL);
        pthread_mutex_lock(&vm->state_lock);
        bool join = !vm->joined;
        vm->joined = true;
        pthread_mutex_unlock(&vm->state_lock);
        if (join) {
                for (unsigned i = 0; i < vm->nvcpus; i++)
                        if (vm->vcpus[i].thread_started)
                                pthread_join(vm->vcpus[i].thread, NULL);
                vmq_poller_remove(vm);
        }
        vmq_vm_set_state(vm, VMQ_VM_STOPPED, NULL);
        return 0;
}

int vmq_vm_wait(struct vmq_vm *vm, int timeout_ms) {
        struct timespec ts;
        int r = 0;
        ts = vmq_deadline_ms(timeout_ms);
        pthread_mutex_lock(&vm->state_lock);
        while (atomic_load(&vm->state) == VMQ_VM_RUNNING ||
               atomic_load(&vm->state) == VMQ_VM_CREATED) {
                if (timeout_ms < 0)
                        pthread_cond_wait(&vm->state_cond, &vm->state_lock);
                else if (pthread_cond_timedwait(&vm->state_cond, &vm->state_lock, &ts) ==
                         ETIMEDOUT) {
                        r = -ETIMEDOUT;
                        break;
                }
        }
        pthread_mutex_unlock(&vm->state_lock);
        return r < 0 ? r : atomic_load(&vm->state);
}

void vmq_vm_destroy(struct vmq_vm *vm) {
        struct vmq_monitor *m;
        if (!vm)
                return;
        m = vm->mon;
        vmq_vm_stop(vm);
        vmq_monitor_wrlock(m);
        vmq_monitor_vm_gone(m, vm);
        vmq_monitor_revoke_shares(m, vm);
        vmq_host_vm_gone(m, vm);
        for (struct vmq_vm **p = &m->vms; *p; p = &(*p)->next)
                if (*p == vm) {
                        *p = vm->next;
                        break;
                }
        pthread_rwlock_unlock(&m->rw);
        vmq_vm_free_resources(vm);
}

/* ---- accessors ------------------------------------------------------------ */

uint32_t vmq_vm_id(const struct vmq_vm *vm) {
        return vm->id;
}

const char *vmq_vm_name(const struct vmq_vm *vm) {
        return vm->ident.name;
}

void vmq_vm_identity(const struct vmq_vm *vm, struct vmq_identity *ret) {
        *ret = vm->ident;
}

enum vmq_vm_state vmq_vm_state(const struct vmq_vm *vm) {
        return (enum vmq_vm_state)atomic_load(&vm->state);
}

int vmq_vm_exit_code(const struct vmq_vm *vm) {
        return vm->exit_code;
}

const char *vmq_vm_crash_reason(const struct vmq_vm *vm) {
        /* Written with the state, under state_lock. */
        pthread_mutex_lock((pthread_mutex_t *)&vm->state_lock);
        const char *r = vm->crash_reason;
        pthread_mutex_unlock((pthread_mutex_t *)&vm->state_lock);
        return r ? r : "";
}

void vmq_vm_get_stats(const struct vmq_vm *vm, struct vmq_vm_stats *ret) {
        memset(ret, 0, sizeof(*ret));
        ret->exits = atomic_load(&vm->st_exits);
        ret->doorbells = atomic_load(&vm->st_doorbells);
        ret->sent = atomic_load(&vm->st_sent);
        ret->posted = atomic_load(&vm->st_posted);
        ret->received = atomic_load(&vm->st_received);
        ret->bytes_sent = atomic_load(&vm->st_bytes_sent);
        ret->copies = atomic_load(&vm->st_copies);
        ret->flips = atomic_load(&vm->st_flips);
        ret->shares = atomic_load(&vm->st_shares);
        ret->kicks = atomic_load(&vm->st_kicks);
        ret->errors = atomic_load(&vm->st_errors);
        for (unsigned i = 0; i < VMQ_E_MAX; i++)
                ret->error[i] = atomic_load(&vm->st_error[i]);
}

void vmq_vm_console_append(struct vmq_vm *vm, const char *buf, size_t len) {
        pthread_mutex_lock(&vm->console_lock);
        if (!vm->console)
                vm->console = malloc(VMQ_CONSOLE_RING); /* bytes read are bytes written */
        if (vm->console) { /* else the output only reaches cfg.console */
                for (size_t i = 0; i < len; i++)
                        vm->console[(vm->console_head + i) % VMQ_CONSOLE_RING] = buf[i];
                vm->console_head += len;
        }
        pthread_mutex_unlock(&vm->console_lock);
        if (vm->mon->cfg.console)
                vm->mon->cfg.console(vm->mon->cfg.userdata, vm, buf, len);
}

size_t vmq_vm_console_read(struct vmq_vm *vm, char *buf, size_t size) {
        size_t have, start, n;
        pthread_mutex_lock(&vm->console_lock);
        have = VMQ_MIN(vm->console_head, (size_t)VMQ_CONSOLE_RING);
        n = VMQ_MIN(have, size);
        start = vm->console_head - n;
        for (size_t i = 0; i < n; i++)
                buf[i] = vm->console[(start + i) % VMQ_CONSOLE_RING];
        pthread_mutex_unlock(&vm->console_lock);
        return n;
}

size_t vmq_vm_console_read_from(struct vmq_vm *vm, uint64_t *offset, char *buf, size_t size) {
        size_t n = 0;
        pthread_mutex_lock(&vm->console_lock);
        uint64_t head = vm->console_head;
        uint64_t oldest = head > VMQ_CONSOLE_RING ? head - VMQ_CONSOLE_RING : 0;
        uint64_t from = *offset < oldest ? oldest : *offset;
        if (from > head)
                from = head;
        n = (size_t)VMQ_MIN((uint64_t)size, head - from);
        for (size_t i = 0; i < n; i++)
                buf[i] = vm->console[(from + i) % VMQ_CONSOLE_RING];
        *offset = from + n;
        pthread_mutex_unlock(&vm->console_lock);
        return n;
}
