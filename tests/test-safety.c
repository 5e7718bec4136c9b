/* SPDX-License-Identifier: MIT */
/*
 * Monitor safety: what a hostile guest can do to the monitor and to other
 * VMs, one test per class of defect found by hostile guests (issue 7).
 *
 * The guests here are host-driven (vmq_monitor_config.host_driven): real
 * micro-VMs of the monitor, memory, VMCS, image and all, whose vCPUs are
 * this process's threads calling vmq_vm_hypercall() with what they wrote
 * into the mailbox, exactly as the exit loop would.  So the races a guest
 * with several vCPUs can run against the monitor run here too, on any host,
 * /dev/kvm or not; the suites that boot the images on KVM (e2e, kvm) add
 * what only KVM_RUN can show.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/util.h"
#include "core/vm.h"
#include "core/x86.h"
#include "tests/test-util.h"

#define PG 4096u
#define RUN_NS (700ull * 1000 * 1000) /* each race runs this long */

static struct vmq_monitor *mon;

static void setup_with(const struct vmq_monitor_config *mc) {
        cr_assert_eq(vmq_monitor_new(mc, &mon), 0);
}

static void setup(void) {
        struct vmq_monitor_config mc;
        vmq_monitor_config_init(&mc);
        mc.calibrate = false; /* "auto" as vmq_transfer_plan_default() says */
        mc.host_driven = true;
        mc.pool_4k_frames = 64 * 1024;
        setup_with(&mc);
}

static void teardown(void) {
        if (!mon)
                return;
        /* Every VM gone: every frame is back, the invariant holds. */
        for (;;) {
                pthread_rwlock_rdlock(&mon->rw);
                struct vmq_vm *vm = mon->vms;
                pthread_rwlock_unlock(&mon->rw);
                if (!vm)
                        break;
                vmq_vm_destroy(vm);
        }
        cr_expect_eq(vmq_pool_check(mon->pool), 0);
        cr_expect_eq(vmq_monitor_frames_free(mon, false), vmq_monitor_frames_total(mon, false),
                     "frames conserved");
        mon = vmq_monitor_free(mon);
}

static struct vmq_vm *new_vm_cfg(const char *name, struct vmq_vm_config *vc) {
        struct vmq_vm *vm = NULL;
        vc->name = name;
        int r = vmq_vm_create_from_file(mon, vc, vmq_test_guest("echo"), &vm);
        cr_assert_eq(r, 0, "create %s: %d", name, r);
        return vm;
}

static struct vmq_vm *new_vm(const char *name, unsigned vcpus) {
        struct vmq_vm_config vc;
        vmq_vm_config_init(&vc);
        vc.vcpus = vcpus;
        return new_vm_cfg(name, &vc);
}

static uint8_t *gmem(struct vmq_vm *vm, uint64_t gpa, uint64_t len) {
        uint8_t *p = vmq_space_translate(vm->space, gpa, len, false);
        cr_assert_not_null(p, "guest memory at %#lx", (unsigned long)gpa);
        return p;
}

static struct vmq_request *mbox(struct vmq_vm *vm, unsigned vcpu) {
        return &vm->vmcs->mbox[vcpu];
}

/* What the SDK's request helpers write. */
static void put_req(struct vmq_request *q, uint16_t op, uint32_t ch, uint64_t gpa, uint32_t len,
                    uint32_t flags) {
        struct vmq_request r = {0};
        r.abi = VMQ_ABI_VERSION;
        r.op = op;
        r.channel = ch;
        r.gpa = gpa;
        r.len = len;
        r.flags = flags;
        r.tag = 0x7e57;
        memcpy(q, &r, sizeof(r));
}

static int32_t send_page(struct vmq_vm *vm, unsigned vcpu, uint32_t ch, uint64_t gpa, uint32_t len,
                         uint32_t flags) {
        put_req(mbox(vm, vcpu), VMQ_OP_PAGE, ch, gpa, len, flags);
        return vmq_vm_hypercall(vm, vcpu, VMQ_HC_SEND);
}

static int32_t release(struct vmq_vm *vm, unsigned vcpu, uint64_t gpa, uint32_t len) {
        mbox(vm, vcpu)->gpa = gpa;
        mbox(vm, vcpu)->len = len;
        return vmq_vm_hypercall(vm, vcpu, VMQ_HC_RELEASE);
}

/* The guest's side of its queue: takes one descriptor. */
static bool take(struct vmq_vm *vm, struct vmq_desc *ret) {
        uint8_t *base = (uint8_t *)vm->vmcs;
        struct vmq_ring_idx *idx = (struct vmq_ring_idx *)(base + VMQ_VMCS_QUEUE_OFF);
        uint32_t cons = __atomic_load_n(&idx->cons, __ATOMIC_RELAXED);
        if (cons == __atomic_load_n(&idx->prod, __ATOMIC_ACQUIRE))
                return false;
        struct vmq_desc *slots = (struct vmq_desc *)(base + VMQ_VMCS_QUEUE_SLOTS_OFF);
        memcpy(ret, &slots[cons & (vm->cfg.queue_depth - 1)], sizeof(*ret));
        __atomic_store_n(&idx->cons, cons + 1, __ATOMIC_RELEASE);
        return true;
}

/* Takes descriptors until one of `kind` comes (others are dropped). */
static void take_kind(struct vmq_vm *vm, uint16_t kind, struct vmq_desc *ret) {
        for (int i = 0; i < 1000; i++)
                if (take(vm, ret) && ret->kind == kind)
                        return;
        cr_assert_fail("no descriptor of kind %u for %s", kind, vmq_vm_name(vm));
}

/* The guest's side of its post ring: appends one request. */
static void post(struct vmq_vm *vm, const struct vmq_request *req) {
        uint8_t *base = (uint8_t *)vm->vmcs;
        uint32_t q = vm->cfg.queue_depth;
        struct vmq_ring_idx *idx = (struct vmq_ring_idx *)(base + VMQ_VMCS_POST_OFF(q));
        struct vmq_request *slots = (struct vmq_request *)(base + VMQ_VMCS_POST_SLOTS_OFF(q));
        uint32_t prod = __atomic_load_n(&idx->prod, __ATOMIC_RELAXED);
        memcpy(&slots[prod & (vm->cfg.post_depth - 1)], req, sizeof(*req));
        __atomic_store_n(&idx->prod, prod + 1, __ATOMIC_RELEASE);
}

static uint32_t open_ch(uint32_t a, uint32_t b) {
        uint32_t id;
        cr_assert_eq(vmq_channel_open(mon, a, b, NULL, &id), 0);
        return id;
}

/* A message from the host lands in the VM's receive window: its address. */
static uint64_t host_page(struct vmq_vm *vm, uint32_t ch, size_t len, uint8_t fill) {
        static uint8_t buf[64 * 1024];
        struct vmq_desc d;
        memset(buf, fill, len);
        cr_assert_eq(vmq_host_send(mon, ch, buf, len, 1), 0);
        take_kind(vm, VMQ_DESC_PAGE, &d);
        return d.gpa;
}

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

TestSuite(safety, .init = setup, .fini = teardown, .timeout = 60);

/* ---- 1. guest memory is read only with its pages held ------------------- */

struct race {
        struct vmq_vm *vm, *region_vm;
        uint32_t to_host, to_region;
        uint64_t gpa;
        atomic_bool stop, foreign;
        atomic_ulong sent, released, printed, regioned;
};

/* vCPU 1 of the attacker: releases the page vCPU 0 sends, as fast as it
 * can, and the host puts a fresh one back. */
static void *releaser(void *arg) {
        struct race *r = arg;
        while (!atomic_load(&r->stop)) {
                if (release(r->vm, 1, r->gpa, 4 * PG) == 0)
                        atomic_fetch_add(&r->released, 1);
                static uint8_t buf[4 * PG];
                memset(buf, 0xa5, sizeof(buf));
                (void)vmq_host_send(mon, r->to_host, buf, sizeof(buf), 1);
                struct vmq_desc d;
                while (take(r->vm, &d))
                        ;
        }
        return NULL;
}

/* vCPU 0: sends the page to the host, copies it to a region VM, prints it. */
static void *sender(void *arg) {
        struct race *r = arg;
        while (!atomic_load(&r->stop)) {
                if (send_page(r->vm, 0, r->to_host, r->gpa, 4 * PG, 0) == 0)
                        atomic_fetch_add(&r->sent, 1);
                if (r->region_vm && send_page(r->vm, 0, r->to_region, r->gpa, 4 * PG, 0) == 0)
                        atomic_fetch_add(&r->regioned, 1);
                mbox(r->vm, 0)->gpa = r->gpa;
                mbox(r->vm, 0)->len = 512;
                if (vmq_vm_hypercall(r->vm, 0, VMQ_HC_CONSOLE) == 0)
                        atomic_fetch_add(&r->printed, 1);
                struct vmq_host_msg *msg;
                while (vmq_host_recv(mon, r->to_host, 0, &msg) == 0) {
                        /* Only what the host itself put there, never bytes
                         * of another page. */
                        for (size_t i = 0; msg->kind == VMQ_DESC_PAGE && i < msg->len; i++)
                                if (msg->data[i] != 0xa5) {
                                        atomic_store(&r->foreign, true);
                                        atomic_store(&r->stop, true);
                                        break;
                                }
                        free(msg);
                }
        }
        return NULL;
}

static void region_notify(void *userdata, struct vmq_vm *vm) {
        (void)userdata;
        (void)vm;
}

Test(safety, class1_copies_race_release_of_their_pages) {
        struct race r = {0};
        struct vmq_vm_config vc;
        vmq_vm_config_init(&vc);
        vc.vcpus = 2;
        /* A window of exactly one message: the host's next one lands where
         * the guest released the last, so the pages vCPU 0 reads come and
         * go at the same address. */
        vc.rx_size = 4 * PG;
        r.vm = new_vm_cfg("attacker", &vc);
        r.to_host = open_ch(VMQ_HOST_ID, vmq_vm_id(r.vm));
        /* a libvirt guest's region: the guest-to-region copy */
        static const struct vmq_region_ops rops = {.notify = region_notify};
        size_t rsize = 1u << 20;
        uint8_t *region =
                mmap(NULL, rsize, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(region, MAP_FAILED);
        struct vmq_vm_config rc;
        vmq_vm_config_init(&rc);
        rc.name = "region";
        rc.rx_size = 256 * 1024;
        cr_assert_eq(vmq_vm_create_region(mon, &rc, region, rsize, &rops, NULL, &r.region_vm), 0);
        r.to_region = open_ch(vmq_vm_id(r.vm), vmq_vm_id(r.region_vm));
        r.gpa = host_page(r.vm, r.to_host, 4 * PG, 0xa5);

        pthread_t t0, t1;
        pthread_create(&t0, NULL, sender, &r);
        pthread_create(&t1, NULL, releaser, &r);
        uint64_t end = now_ns() + RUN_NS;
        while (now_ns() < end && !atomic_load(&r.stop)) {
                /* the region guest frees its window as it reads */
                struct vmq_desc d;
                while (take(r.region_vm, &d))
                        if (d.kind == VMQ_DESC_PAGE) {
                                mbox(r.region_vm, 0)->gpa = d.gpa;
                                mbox(r.region_vm, 0)->len = d.len;
                                mbox(r.region_vm, 0)->hc = VMQ_HC_RELEASE;
                                __atomic_store_n(&mbox(r.region_vm, 0)->status, VMQ_STATUS_PENDING,
                                                 __ATOMIC_RELEASE);
                                vmq_vm_region_doorbell(r.region_vm);
                        }
                usleep(1000);
        }
        atomic_store(&r.stop, true);
        pthread_join(t0, NULL);
        pthread_join(t1, NULL);
        cr_log_info("sent %lu, to the region %lu, printed %lu, released %lu", atomic_load(&r.sent),
                    atomic_load(&r.regioned), atomic_load(&r.printed), atomic_load(&r.released));
        cr_assert_not(atomic_load(&r.foreign), "a message carried bytes the host never sent");
        cr_assert_gt(r.released, 10, "the race ran");
        cr_assert_gt(r.sent + r.regioned + r.printed, 10, "the race ran");
        cr_assert_eq(vmq_vm_state(r.vm), VMQ_VM_CREATED, "nobody crashed");
        cr_assert_eq(vmq_vm_state(r.region_vm), VMQ_VM_RUNNING);
        cr_assert_eq(vmq_pool_check(mon->pool), 0);
        vmq_vm_destroy(r.region_vm);
        munmap(region, rsize);
}

/* ---- 2. a dying sharer never takes its receiver down ---------------------- */

Test(safety, class2_dying_sharer_leaves_the_receiver_its_pages) {
        struct vmq_vm *a = new_vm("sharer", 1), *b = new_vm("receiver", 1);
        uint32_t ch = open_ch(vmq_vm_id(a), vmq_vm_id(b));
        uint64_t src = 0x800000; /* a's heap: owned */
        memset(gmem(a, src, 2 * PG), 0x5c, 2 * PG);
        cr_assert_eq(send_page(a, 0, ch, src, 2 * PG, VMQ_REQ_F_SHARE), 0);
        struct vmq_desc d;
        take_kind(b, VMQ_DESC_PAGE, &d);
        cr_assert(d.flags & VMQ_DESC_F_SHARED);
        uint64_t dst = d.gpa;
        size_t free_before = vmq_monitor_frames_free(mon, false);

        vmq_vm_destroy(a);

        /* b was told, through its queue... */
        take_kind(b, VMQ_DESC_REVOKED, &d);
        cr_assert_eq(d.gpa, dst);
        cr_assert_eq(d.len, 2 * PG);
        cr_assert_eq(d.channel, 0);
        /* ...and its pages are as they were: readable, read-only, same bytes */
        uint8_t buf[2 * PG];
        cr_assert_eq(vmq_space_read(b->space, dst, buf, sizeof(buf), false), 0);
        for (size_t i = 0; i < sizeof(buf); i++)
                cr_assert_eq(buf[i], 0x5c);
        enum vmq_page_state st;
        cr_assert_eq(vmq_space_page_state(b->space, dst, &st, NULL), 0);
        cr_assert_eq(st, VMQ_PAGE_SHARED_IN);
        cr_assert_neq(vmq_vm_state(b), VMQ_VM_CRASHED);
        cr_assert_eq(vmq_pool_check(mon->pool), 0);
        /* the two frames are held for b; its release gives them back */
        cr_assert_lt(vmq_monitor_frames_free(mon, false), free_before + 4096);
        size_t held = vmq_monitor_frames_free(mon, false);
        cr_assert_eq(release(b, 0, dst, 2 * PG), 0);
        cr_assert_eq(vmq_monitor_frames_free(mon, false), held + 2);
        cr_assert_eq(vmq_pool_check(mon->pool), 0);
}

/* ---- 3. a read-only share is not the receiver's to pass on ---------------- */

Test(safety, class3_shared_in_page_cannot_be_forwarded) {
        struct vmq_vm *a = new_vm("owner", 1), *b = new_vm("holder", 1), *c = new_vm("third", 1);
        uint32_t ab = open_ch(vmq_vm_id(a), vmq_vm_id(b));
        uint32_t bc = open_ch(vmq_vm_id(b), vmq_vm_id(c));
        uint32_t bh = open_ch(vmq_vm_id(b), VMQ_HOST_ID);
        memset(gmem(a, 0x800000, PG), 0x11, PG);
        cr_assert_eq(send_page(a, 0, ab, 0x800000, PG, VMQ_REQ_F_SHARE), 0);
        struct vmq_desc d;
        take_kind(b, VMQ_DESC_PAGE, &d);
        uint32_t methods[] = {0, VMQ_REQ_F_COPY, VMQ_REQ_F_FLIP, VMQ_REQ_F_SHARE};
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(methods); i++) {
                cr_assert_eq(send_page(b, 0, bc, d.gpa, PG, methods[i]), -VMQ_E_NOTOWNED,
                             "to a VM, flags %#x", methods[i]);
                cr_assert_eq(send_page(b, 0, bh, d.gpa, PG, methods[i]), -VMQ_E_NOTOWNED,
                             "to the host, flags %#x", methods[i]);
        }
        /* posted, the same answer comes back as an ERROR descriptor */
        struct vmq_request q;
        put_req(&q, VMQ_OP_PAGE, bc, d.gpa, PG, 0);
        post(b, &q);
        vmq_vm_doorbell(b);
        take_kind(b, VMQ_DESC_ERROR, &d);
        cr_assert_eq(d.error, VMQ_E_NOTOWNED);
        /* nothing arrived anywhere */
        struct vmq_host_msg *msg;
        cr_assert_eq(vmq_host_recv(mon, bh, 0, &msg), 0); /* the HELLO */
        cr_assert_eq(msg->kind, VMQ_DESC_HELLO);
        free(msg);
        cr_assert_eq(vmq_host_recv(mon, bh, 0, &msg), -ETIMEDOUT);
        struct vmq_desc e;
        while (take(c, &e))
                cr_assert_neq(e.kind, VMQ_DESC_PAGE);
}

/* ---- 4. any number of senders can wait on one receiver ------------------- */

#define NSENDERS 24

Test(safety, class4_every_stalled_sender_is_woken) {
        struct vmq_vm_config vc;
        vmq_vm_config_init(&vc);
        vc.queue_depth = 4;
        vc.ram_size = 4 << 20;
        vc.rx_size = 64 * 1024;
        struct vmq_vm *rx = new_vm_cfg("receiver", &vc);
        struct vmq_vm *tx[NSENDERS];
        uint32_t ch[NSENDERS];
        char name[16];
        for (int i = 0; i < NSENDERS; i++) {
                snprintf(name, sizeof(name), "sender%d", i);
                tx[i] = new_vm_cfg(name, &vc);
                ch[i] = open_ch(vmq_vm_id(tx[i]), vmq_vm_id(rx));
                struct vmq_desc d;
                take_kind(tx[i], VMQ_DESC_HELLO, &d);
                /* the receiver reads HELLOs as they come: its queue is
                 * small */
                while (take(rx, &d))
                        ;
        }
        /* fill the receiver's queue, then every sender posts one */
        for (int i = 0; i < 4; i++) {
                put_req(mbox(tx[0], 0), VMQ_OP_INLINE, ch[0], 0, 1, 0);
                cr_assert_eq(vmq_vm_hypercall(tx[0], 0, VMQ_HC_SEND), 0);
        }
        put_req(mbox(tx[0], 0), VMQ_OP_INLINE, ch[0], 0, 1, 0);
        cr_assert_eq(vmq_vm_hypercall(tx[0], 0, VMQ_HC_SEND), -VMQ_E_AGAIN);
        for (int i = 0; i < NSENDERS; i++) {
                struct vmq_request q;
                put_req(&q, VMQ_OP_INLINE, ch[i], 0, 4, 0);
                memcpy(q.data, &i, 4);
                post(tx[i], &q);
                vmq_vm_doorbell(tx[i]);
                cr_assert_eq(atomic_load(&tx[i]->stalled_on), vmq_vm_id(rx));
        }
        /* The receiver only reads and waits; nobody else does anything. */
        bool got[NSENDERS] = {0};
        int ngot = 0;
        for (int round = 0; round < 100 && ngot < NSENDERS; round++) {
                struct vmq_desc d;
                while (take(rx, &d))
                        if (d.kind == VMQ_DESC_INLINE && d.len == 4) {
                                int who;
                                memcpy(&who, d.data, 4);
                                cr_assert(who >= 0 && who < NSENDERS && !got[who]);
                                got[who] = true;
                                ngot++;
                        }
                mbox(rx, 0)->arg = 0;
                (void)vmq_vm_hypercall(rx, 0, VMQ_HC_WAIT);
        }
        cr_assert_eq(ngot, NSENDERS, "only %d of %d stalled senders got through", ngot, NSENDERS);
        for (int i = 0; i < NSENDERS; i++)
                cr_assert_eq(atomic_load(&tx[i]->stalled_on), VMQ_NO_VM);
}

/* ---- 5. host memory is bounded ------------------------------------------- */

Test(safety, class5_host_memory_is_bounded_per_vm_and_in_all, .init = NULL) {
        struct vmq_monitor_config mc;
        vmq_monitor_config_init(&mc);
        mc.calibrate = false; /* "auto" as vmq_transfer_plan_default() says */
        mc.host_driven = true;
        mc.pool_4k_frames = 64 * 1024;
        mc.host_budget = 3u << 20; /* all guests */
        setup_with(&mc);
        struct vmq_vm_config vc;
        vmq_vm_config_init(&vc);
        vc.host_budget = 2u << 20; /* each */
        struct vmq_vm *a = new_vm_cfg("a", &vc), *b = new_vm_cfg("b", &vc);
        struct vmq_channel_config cc;
        vmq_channel_config_init(&cc);
        cc.host_depth = 65536; /* the depth is not what bounds it */
        uint32_t cha, chb;
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(a), VMQ_HOST_ID, &cc, &cha), 0);
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(b), VMQ_HOST_ID, &cc, &chb), 0);

        /* a message larger than a budget could never fit */
        cr_assert_eq(send_page(a, 0, cha, 0x400000, 3u << 20, 0), -VMQ_E_NOMEM);
        /* a fills its own budget, then waits for the host */
        int na = 0;
        while (send_page(a, 0, cha, 0x400000, 256 * 1024, 0) == 0)
                na++;
        cr_assert_eq(send_page(a, 0, cha, 0x400000, 256 * 1024, 0), -VMQ_E_AGAIN);
        cr_assert(na >= 6 && na < 8, "a sent %d of 256 KiB in a 2 MiB budget", na);
        cr_assert_leq(mon->host_bytes, mc.host_budget);
        /* b meets the global budget before its own */
        int nb = 0;
        while (send_page(b, 0, chb, 0x400000, 256 * 1024, 0) == 0)
                nb++;
        cr_assert(nb >= 2 && nb < na, "b sent %d", nb);
        cr_assert_leq(mon->host_bytes, mc.host_budget);
        /* a posted send waits, and goes through once the host reads */
        struct vmq_request q;
        put_req(&q, VMQ_OP_PAGE, chb, 0x400000, 256 * 1024, 0);
        post(b, &q);
        vmq_vm_doorbell(b);
        cr_assert_eq(atomic_load(&b->stalled_on), VMQ_HOST_ID);
        struct vmq_host_msg *msg;
        for (int i = 0; i < 3; i++) {
                cr_assert_eq(vmq_host_recv(mon, cha, 0, &msg), 0);
                free(msg);
        }
        cr_assert_eq(atomic_load(&b->stalled_on), VMQ_NO_VM, "woken by the host's read");
        cr_assert_leq(mon->host_bytes, mc.host_budget);
        /* reading everything gives every byte back */
        while (vmq_host_recv(mon, cha, 0, &msg) == 0)
                free(msg);
        while (vmq_host_recv(mon, chb, 0, &msg) == 0)
                free(msg);
        cr_assert_eq(mon->host_bytes, 0);
        cr_assert_eq(a->host_bytes, 0);
        cr_assert_eq(b->host_bytes, 0);
}

/* A closed channel's unread messages are freed when it is forgotten, and
 * their budget goes back: a guest that streams to the host and whose
 * channel is closed and forgotten, round after round, holds nothing. */
static void *recv_until_gone(void *arg) {
        uint32_t ch = (uint32_t)(uintptr_t)arg;
        struct vmq_host_msg *msg = NULL;
        int r;
        while ((r = vmq_host_recv(mon, ch, -1, &msg)) == 0)
                free(msg);
        return (void *)(intptr_t)r;
}

Test(safety, class5_forgetting_a_closed_channel_frees_its_messages, .init = NULL) {
        struct vmq_monitor_config mc;
        vmq_monitor_config_init(&mc);
        mc.calibrate = false; /* "auto" as vmq_transfer_plan_default() says */
        mc.host_driven = true;
        mc.pool_4k_frames = 64 * 1024;
        mc.host_budget = 3u << 20;
        setup_with(&mc);
        struct vmq_vm_config vc;
        vmq_vm_config_init(&vc);
        vc.host_budget = 2u << 20;
        struct vmq_vm *a = new_vm_cfg("a", &vc);
        struct vmq_channel_config cc;
        vmq_channel_config_init(&cc);
        cc.host_depth = 65536;

        for (int round = 0; round < 20; round++) {
                uint32_t ch;
                struct vmq_desc d;
                while (take(a, &d)) /* what the guest would read: HELLO, CLOSE */
                        ;
                int r = vmq_channel_open(mon, vmq_vm_id(a), VMQ_HOST_ID, &cc, &ch);
                cr_assert_eq(r, 0, "round %d: open: %d", round, r);
                int n = 0;
                while (send_page(a, 0, ch, 0x400000, 256 * 1024, 0) == 0)
                        n++;
                cr_assert_geq(n, 6, "round %d: only %d sent: the budget was not given back", round,
                              n);
                cr_assert_gt(a->host_bytes, 0);
                cr_assert_eq(vmq_channel_forget(mon, ch), -EBUSY, "open channels stay");
                cr_assert_eq(vmq_channel_close(mon, ch), 0);
                struct vmq_host_msg *msg;
                cr_assert_eq(vmq_host_recv(mon, ch, 0, &msg), 0, "closed: still readable");
                free(msg);
                cr_assert_eq(vmq_channel_forget(mon, ch), 0);
                cr_assert_eq(vmq_channel_forget(mon, ch), -ENOENT);
                cr_assert_eq(vmq_host_recv(mon, ch, 0, &msg), -ENOENT);
                cr_assert_eq(mon->host_bytes, 0, "round %d", round);
                cr_assert_eq(a->host_bytes, 0, "round %d", round);

                /* A reader blocked on an open channel that is closed and
                 * forgotten at once leaves without touching freed memory
                 * (the sanitizer build checks that). */
                pthread_t t;
                while (take(a, &d))
                        ;
                cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(a), VMQ_HOST_ID, &cc, &ch), 0);
                cr_assert_eq(pthread_create(&t, NULL, recv_until_gone, (void *)(uintptr_t)ch), 0);
                usleep(round * 100);
                cr_assert_eq(vmq_channel_close(mon, ch), 0);
                cr_assert_eq(vmq_channel_forget(mon, ch), 0);
                void *ret;
                pthread_join(t, &ret);
                r = (int)(intptr_t)ret;
                cr_assert(r == -ENOENT || r == -EPIPE, "reader got %d", r);
        }
}

/* ---- 6. the console reads only what the guest itself can read ------------ */

Test(safety, class6_console_refuses_the_system_area) {
        struct vmq_vm *vm = new_vm("printer", 1);
        char before[256];
        size_t n0 = vmq_vm_console_read(vm, before, sizeof(before));
        uint64_t bad[][2] = {
                {0, 16},                  /* null page */
                {VMQ_SYSTEM_GPA, 64},     /* page tables */
                {VMQ_SYSTEM_END - 8, 16}, /* straddles into the VMCS */
                {VMQ_RX_GPA, 16},         /* empty receive window */
                {(16u << 20) - 8, 16},    /* past the end of RAM */
                {UINT64_MAX - 4, 16},     /* wraps */
        };
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(bad); i++) {
                mbox(vm, 0)->gpa = bad[i][0];
                mbox(vm, 0)->len = (uint32_t)bad[i][1];
                cr_assert_eq(vmq_vm_hypercall(vm, 0, VMQ_HC_CONSOLE), -VMQ_E_RANGE, "case %zu", i);
        }
        cr_assert_eq(vmq_vm_console_read(vm, before, sizeof(before)), n0, "nothing printed");
        /* what the guest can read prints: its VMCS, its RAM */
        memcpy(gmem(vm, 0x900000, 6), "hello\n", 6);
        mbox(vm, 0)->gpa = 0x900000;
        mbox(vm, 0)->len = 6;
        cr_assert_eq(vmq_vm_hypercall(vm, 0, VMQ_HC_CONSOLE), 0);
        mbox(vm, 0)->gpa = VMQ_VMCS_GPA;
        mbox(vm, 0)->len = 4;
        cr_assert_eq(vmq_vm_hypercall(vm, 0, VMQ_HC_CONSOLE), 0);
        char out[16];
        cr_assert_eq(vmq_vm_console_read(vm, out, sizeof(out)), n0 + 10);
        cr_assert_eq(memcmp(out + n0, "hello\nVMQ1", 10), 0);
}

/* ---- 7. no abort(), and a mapping budget ---------------------------------- */

Test(safety, class7_mapping_budget_refuses_with_nomem, .init = NULL) {
        struct vmq_monitor_config mc;
        vmq_monitor_config_init(&mc);
        mc.calibrate = false; /* "auto" as vmq_transfer_plan_default() says */
        mc.host_driven = true;
        mc.pool_4k_frames = 64 * 1024;
        mc.max_maps_per_vm = 64;
        setup_with(&mc);
        struct vmq_vm *vm = new_vm("fragmenter", 1);
        uint32_t ch = open_ch(VMQ_HOST_ID, vmq_vm_id(vm));
        /* Pages arrive in one run; releasing every other one splits it. */
        size_t maps0 = vmq_space_maps(vm->space);
        uint64_t first = host_page(vm, ch, PG, 1);
        for (int i = 1; i < 200; i++)
                (void)host_page(vm, ch, PG, 1);
        int nomem = 0, ok = 0;
        for (int i = 0; i < 200; i += 2) {
                int32_t r = release(vm, 0, first + (uint64_t)i * PG, PG);
                cr_assert(r == 0 || r == -VMQ_E_NOMEM, "release: %d", r);
                nomem += r == -VMQ_E_NOMEM;
                ok += r == 0;
        }
        cr_assert_gt(ok, 5);
        cr_assert_gt(nomem, 0, "the budget was never reached");
        cr_assert_leq(vmq_space_maps(vm->space), 64);
        cr_assert_eq(vmq_pool_check(mon->pool), 0);
        /* The guest can always give back whole runs. */
        for (int i = 0; i < 200;) {
                enum vmq_page_state st;
                cr_assert_eq(vmq_space_page_state(vm->space, first + (uint64_t)i * PG, &st, NULL),
                             0);
                int j = i;
                while (j < 200 && st != VMQ_PAGE_EMPTY) {
                        j++;
                        if (j < 200)
                                vmq_space_page_state(vm->space, first + (uint64_t)j * PG, &st,
                                                     NULL);
                }
                if (j > i)
                        cr_assert_eq(release(vm, 0, first + (uint64_t)i * PG, (j - i) * PG), 0,
                                     "run %d..%d", i, j);
                i = j + 1;
        }
        cr_assert_eq(vmq_space_maps(vm->space), maps0, "back to where it started");
        cr_assert_eq(vmq_pool_check(mon->pool), 0);
}

Test(safety, class7_failed_mmap_and_failed_rollback_do_not_abort) {
        struct vmq_vm *a = new_vm("a", 1), *b = new_vm("b", 1), *c = new_vm("bystander", 1);
        uint32_t ab = open_ch(vmq_vm_id(a), vmq_vm_id(b));
        memset(gmem(a, 0x800000, PG), 0x77, PG);
        size_t free0 = vmq_monitor_frames_free(mon, false);

        /* The receiver's mapping fails; the rollback works: nothing changed. */
        vmq_pool_fail_mmap(mon->pool, 2, 1);
        cr_assert_eq(send_page(a, 0, ab, 0x800000, PG, VMQ_REQ_F_FLIP), -VMQ_E_NOMEM);
        cr_assert_eq(vmq_pool_check(mon->pool), 0);
        cr_assert_eq(vmq_monitor_frames_free(mon, false), free0);
        cr_assert_eq(gmem(a, 0x800000, PG)[0], 0x77);
        cr_assert_eq(vmq_vm_state(a), VMQ_VM_CREATED);
        cr_assert_eq(vmq_vm_state(b), VMQ_VM_CREATED);

        /* Every mmap fails, the rollback too: the two VMs whose mappings
         * are now wrong are stopped, the frames in play withheld; the
         * monitor and the bystander go on. */
        vmq_pool_fail_mmap(mon->pool, 2, 1000);
        cr_assert_eq(send_page(a, 0, ab, 0x800000, PG, VMQ_REQ_F_FLIP), -VMQ_E_NOMEM);
        vmq_pool_fail_mmap(mon->pool, 0, 0);
        cr_assert_eq(vmq_pool_check(mon->pool), 0);
        cr_assert_eq(vmq_vm_state(a), VMQ_VM_CRASHED);
        cr_assert_eq(vmq_vm_state(b), VMQ_VM_CRASHED);
        cr_assert_str_eq(vmq_vm_crash_reason(b), "host could not restore a guest mapping");
        cr_assert_eq(vmq_vm_state(c), VMQ_VM_CREATED);
        uint32_t ch = open_ch(VMQ_HOST_ID, vmq_vm_id(c));
        (void)host_page(c, ch, PG, 3);
        vmq_vm_destroy(a);
        vmq_vm_destroy(b);
        cr_assert_eq(vmq_pool_check(mon->pool), 0);
        /* what was lost stays out of the pool: the teardown's count would
         * fail, so check it here and leave with a clean pool */
        vmq_vm_destroy(c);
        size_t lost = vmq_monitor_frames_total(mon, false) - vmq_monitor_frames_free(mon, false);
        cr_assert(lost >= 1 && lost <= 4, "%zu frames withheld", lost);
        mon = vmq_monitor_free(mon);
}

/* ---- 8. the port rule ------------------------------------------------------ */

Test(safety, class8_port_rule, .init = NULL, .fini = NULL) {
        /* every width at every port of the range reaches the monitor */
        for (unsigned p = VMQ_PORT_FIRST; p < VMQ_PORT_END; p++)
                for (unsigned size = 1; size <= 4; size *= 2) {
                        bool out = false;
                        enum vmq_port_kind k =
                                vmq_port_classify((uint16_t)p, (uint8_t)size, 1, out);
                        cr_assert_neq(k, VMQ_PORT_FAULT, "in%u at %#x", size, p);
                        k = vmq_port_classify((uint16_t)p, (uint8_t)size, 3, true);
                        cr_assert_eq(k,
                                     p == VMQ_DOORBELL_PORT ? VMQ_PORT_DOORBELL : VMQ_PORT_NOSYS);
                }
        cr_assert_eq(vmq_port_classify(VMQ_HC_PORT_BASE + VMQ_HC_NOP, 4, 1, false),
                     VMQ_PORT_HYPERCALL);
        cr_assert_eq(vmq_port_classify(0x5ff, 4, 1, false), VMQ_PORT_HYPERCALL);
        cr_assert_eq(vmq_port_classify(VMQ_HC_PORT_BASE, 2, 1, false), VMQ_PORT_NOSYS);
        cr_assert_eq(vmq_port_classify(VMQ_HC_PORT_BASE, 4, 2, false), VMQ_PORT_NOSYS);
        cr_assert_eq(vmq_port_classify(0x4ff, 1, 1, false), VMQ_PORT_FAULT);
        cr_assert_eq(vmq_port_classify(0x600, 1, 1, true), VMQ_PORT_FAULT);
        cr_assert_eq(vmq_port_classify(0x80, 1, 1, true), VMQ_PORT_FAULT);

        /* and the TSS I/O bitmap lets them through: a 32-bit access at
         * 0x5fd-0x5ff touches ports up to 0x602 */
        static uint8_t system[VMQ_SYSTEM_END - VMQ_SYSTEM_GPA] __attribute__((aligned(4096)));
        struct vmq_x86_map map = {VMQ_VMCS_GPA, (16u << 20) - VMQ_VMCS_GPA, true, true};
        struct vmq_x86_boot boot;
        cr_assert_eq(vmq_x86_build(system, &map, 1, &boot), 0);
        uint64_t tss_gpa = boot.tss_base;
        cr_assert(tss_gpa >= VMQ_SYSTEM_GPA && tss_gpa < VMQ_SYSTEM_END);
        const uint8_t *tss = system + (tss_gpa - VMQ_SYSTEM_GPA);
        uint16_t iomap_base;
        memcpy(&iomap_base, tss + 102, 2);
        const uint8_t *bitmap = tss + iomap_base;
        for (unsigned p = VMQ_PORT_FIRST; p < VMQ_PORT_END + 3; p++)
                cr_assert_eq((bitmap[p / 8] >> (p % 8)) & 1, 0, "port %#x closed", p);
        cr_assert_eq((bitmap[0x4ff / 8] >> (0x4ff % 8)) & 1, 1, "port 0x4ff open");
        cr_assert_eq((bitmap[0x80 / 8] >> (0x80 % 8)) & 1, 1, "port 0x80 open");
}

/* "auto" follows the monitor's transfer plan (calibrate.c measures it;
 * here it is set): runs of 4 KiB pages from flip_min_4k on are flipped,
 * shorter ones copied, and a sender's flag or the channel's transfer
 * still wins over it. */
Test(safety, auto_follows_the_transfer_plan) {
        struct vmq_vm *a = new_vm("a", 1), *b = new_vm("b", 1);
        uint32_t ch, copy_ch;
        struct vmq_channel_config cc;
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(a), vmq_vm_id(b), NULL, &ch), 0);
        vmq_channel_config_init(&cc);
        cc.transfer = VMQ_TRANSFER_COPY;
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(a), vmq_vm_id(b), &cc, &copy_ch), 0);

        struct vmq_transfer_plan plan;
        vmq_monitor_transfer_plan(mon, &plan);
        cr_assert_not(plan.measured, "the suite's monitor does not calibrate");
        cr_assert_eq(plan.flip_min_4k, 0);
        cr_assert(plan.flip_2m);
        plan.flip_min_4k = 8;
        cr_assert_eq(vmq_monitor_set_transfer_plan(mon, &plan), 0);

        static const struct {
                uint32_t pages, flags;
                bool copy_channel;
                uint16_t want;
        } cases[] = {
                {1, 0, false, VMQ_DESC_F_COPIED},
                {7, 0, false, VMQ_DESC_F_COPIED},
                {8, 0, false, VMQ_DESC_F_FLIPPED},
                {16, 0, false, VMQ_DESC_F_FLIPPED},
                {16, VMQ_REQ_F_COPY, false, VMQ_DESC_F_COPIED},
                {2, VMQ_REQ_F_FLIP, false, VMQ_DESC_F_FLIPPED},
                {16, 0, true, VMQ_DESC_F_COPIED},
        };
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(cases); i++) {
                uint32_t len = cases[i].pages * PG - 100; /* a partial last page counts */
                int32_t r = send_page(a, 0, cases[i].copy_channel ? copy_ch : ch, 0x400000, len,
                                      cases[i].flags);
                cr_assert_eq(r, 0, "case %zu: %d", i, r);
                struct vmq_desc d;
                take_kind(b, VMQ_DESC_PAGE, &d);
                cr_assert_eq(d.flags & (VMQ_DESC_F_COPIED | VMQ_DESC_F_FLIPPED), cases[i].want,
                             "case %zu: %u pages, flags %#x: got %#x", i, cases[i].pages,
                             cases[i].flags, d.flags);
                cr_assert_eq(release(b, 0, d.gpa, len), 0);
        }

        /* and the plan's own checks */
        plan.flip_min_4k = 1u << 21;
        cr_assert_eq(vmq_monitor_set_transfer_plan(mon, &plan), -EINVAL);
        plan.flip_min_4k = 0;
        cr_assert_eq(vmq_monitor_set_transfer_plan(mon, &plan), 0);
        cr_assert_eq(send_page(a, 0, ch, 0x400000, 16 * PG, 0), 0);
        struct vmq_desc d;
        take_kind(b, VMQ_DESC_PAGE, &d);
        cr_assert_eq(d.flags & VMQ_DESC_F_COPIED, VMQ_DESC_F_COPIED, "0: always copied");
        cr_assert_eq(release(b, 0, d.gpa, 16 * PG), 0);
}

/* ---- bursts: page requests of one post-ring pass copied as one remap ---- */

TestSuite(burst, .init = setup, .fini = teardown, .timeout = 60);

#define BURST_GPA 0x400000ull

/* Posts n one-page copy requests of `from` on ch, each of its own page
 * (seed + i past BURST_GPA) filled with seed + i and tagged seed + i. */
static void post_copies(struct vmq_vm *from, uint32_t ch, int n, uint8_t seed) {
        for (int i = 0; i < n; i++) {
                struct vmq_request q;
                uint64_t gpa = BURST_GPA + (uint64_t)(seed + i) * PG;
                memset(gmem(from, gpa, PG), i + seed, PG);
                put_req(&q, VMQ_OP_PAGE, ch, gpa, PG, VMQ_REQ_F_COPY);
                q.tag = seed + (uint64_t)i;
                post(from, &q);
        }
}

/* Takes n page messages at `to`, checks their order, what they carry and
 * that they sit one after another; releases them. */
static void take_copies(struct vmq_vm *to, int n, uint8_t seed) {
        uint64_t first = 0;
        for (int i = 0; i < n; i++) {
                struct vmq_desc d;
                take_kind(to, VMQ_DESC_PAGE, &d);
                cr_assert_eq(d.tag, seed + (uint64_t)i, "message %d in order", i);
                cr_assert_eq(d.flags, VMQ_DESC_F_COPIED);
                cr_assert_eq(d.len, PG);
                if (i == 0)
                        first = d.gpa;
                cr_assert_eq(d.gpa, first + (uint64_t)i * PG, "message %d next to the last", i);
                const uint8_t *p = gmem(to, d.gpa, PG);
                cr_assert(p[0] == (uint8_t)(i + seed) && p[PG - 1] == (uint8_t)(i + seed));
                cr_assert_eq(release(to, 0, d.gpa, PG), 0);
        }
}

Test(burst, a_post_ring_pass_of_copies_is_one_remap) {
        struct vmq_vm *a = new_vm("a", 1), *b = new_vm("b", 1);
        uint32_t ch = open_ch(vmq_vm_id(a), vmq_vm_id(b));
        struct vmq_desc d;
        take_kind(a, VMQ_DESC_HELLO, &d);
        take_kind(b, VMQ_DESC_HELLO, &d);

        post_copies(a, ch, 32, 1);
        uint64_t calls = vmq_pool_mmap_calls(mon->pool);
        cr_assert_eq(vmq_vm_hypercall(a, 0, VMQ_HC_FLUSH), 32);
        uint64_t used = vmq_pool_mmap_calls(mon->pool) - calls;
        cr_assert_leq(used, 2, "32 copies took %lu mmaps", (unsigned long)used);
        take_copies(b, 32, 1);
        struct vmq_vm_stats st;
        vmq_vm_get_stats(a, &st);
        cr_assert_eq(st.copies, 32);
        cr_assert_eq(st.sent, 32);
}

Test(burst, a_bad_request_in_a_burst_gets_its_own_error) {
        struct vmq_vm *a = new_vm("a", 1), *b = new_vm("b", 1), *c = new_vm("c", 1);
        uint32_t ab = open_ch(vmq_vm_id(a), vmq_vm_id(b));
        uint32_t ac = open_ch(vmq_vm_id(a), vmq_vm_id(c));
        struct vmq_desc d;
        take_kind(b, VMQ_DESC_HELLO, &d);
        take_kind(c, VMQ_DESC_HELLO, &d);
        take_kind(a, VMQ_DESC_HELLO, &d);
        take_kind(a, VMQ_DESC_HELLO, &d);

        /* 6 to b; the 7th forges its source; 5 more to b; 3 to c; 4 to b,
         * one of them a page a does not own; an inline to b. */
        post_copies(a, ab, 6, 10);
        struct vmq_request q;
        put_req(&q, VMQ_OP_PAGE, ab, BURST_GPA, PG, VMQ_REQ_F_COPY);
        q.src_vm = vmq_vm_id(b);
        q.tag = 99;
        post(a, &q);
        post_copies(a, ab, 5, 16);
        post_copies(a, ac, 3, 40);
        for (int i = 0; i < 4; i++) {
                put_req(&q, VMQ_OP_PAGE, ab, BURST_GPA + (uint64_t)i * PG, PG, VMQ_REQ_F_COPY);
                q.tag = 21 + (uint64_t)i;
                if (i == 2)
                        q.gpa = VMQ_RX_GPA; /* a's own empty window: not its page */
                post(a, &q);
        }
        put_req(&q, VMQ_OP_INLINE, ab, 0, 3, 0);
        q.tag = 77;
        post(a, &q);
        cr_assert_eq(vmq_vm_hypercall(a, 0, VMQ_HC_FLUSH), 6 + 1 + 5 + 3 + 4 + 1);

        take_copies(b, 6, 10);
        take_copies(b, 5, 16);
        take_copies(c, 3, 40);
        /* 21, 22, then 24: 23 failed alone */
        take_kind(b, VMQ_DESC_PAGE, &d);
        cr_assert_eq(d.tag, 21);
        take_kind(b, VMQ_DESC_PAGE, &d);
        cr_assert_eq(d.tag, 22);
        take_kind(b, VMQ_DESC_PAGE, &d);
        cr_assert_eq(d.tag, 24);
        take_kind(b, VMQ_DESC_INLINE, &d);
        cr_assert_eq(d.tag, 77);
        cr_assert_not(take(b, &d));

        take_kind(a, VMQ_DESC_ERROR, &d);
        cr_assert_eq(d.tag, 99);
        cr_assert_eq(d.error, VMQ_E_FORGED);
        take_kind(a, VMQ_DESC_ERROR, &d);
        cr_assert_eq(d.tag, 23);
        cr_assert_eq(d.error, VMQ_E_NOTOWNED);
        cr_assert_not(take(a, &d));
}

Test(burst, a_burst_fills_the_room_there_is_and_the_rest_waits) {
        struct vmq_vm_config vc;
        vmq_vm_config_init(&vc);
        vc.queue_depth = 8;
        struct vmq_vm *b = new_vm_cfg("b", &vc);
        struct vmq_vm *a = new_vm("a", 1);
        uint32_t ch = open_ch(vmq_vm_id(a), vmq_vm_id(b));
        struct vmq_desc d;
        take_kind(a, VMQ_DESC_HELLO, &d);
        take_kind(b, VMQ_DESC_HELLO, &d);

        post_copies(a, ch, 20, 1);
        cr_assert_eq(vmq_vm_hypercall(a, 0, VMQ_HC_FLUSH), 8);
        cr_assert_eq(atomic_load(&a->stalled_on), vmq_vm_id(b));
        /* Taking them frees room: the RELEASE drains the sender again. */
        take_copies(b, 8, 1);
        take_copies(b, 8, 9);
        take_copies(b, 4, 17);
        cr_assert_eq(atomic_load(&a->stalled_on), VMQ_NO_VM);
}

/* Two senders stream copies to one receiver from threads of their own,
 * flushing every few posts, while the receiver takes, checks and releases
 * on a third: bursts race the receiver's releases and each other for its
 * queue and window.  Every message arrives once, whole, in its sender's
 * order.  (In the TSan stage too.) */
struct burst_sender {
        struct vmq_vm *vm;
        uint32_t ch;
        int n;
        atomic_bool *stop;
};

static void *burst_send(void *arg) {
        struct burst_sender *s = arg;
        uint8_t *base = (uint8_t *)s->vm->vmcs;
        uint32_t depth = s->vm->cfg.post_depth, q = s->vm->cfg.queue_depth;
        struct vmq_ring_idx *idx = (struct vmq_ring_idx *)(base + VMQ_VMCS_POST_OFF(q));
        struct vmq_request *slots = (struct vmq_request *)(base + VMQ_VMCS_POST_SLOTS_OFF(q));
        uint32_t prod = 0;
        for (int m = 0; m < s->n && !atomic_load(s->stop);) {
                /* Rows of up to 8, published at once as the SDK's
                 * vmq_post_commit() does.  Page m % depth is written again
                 * only after request m - depth was taken: room in the ring
                 * says it was. */
                uint32_t room = depth - (prod - __atomic_load_n(&idx->cons, __ATOMIC_ACQUIRE));
                uint32_t row = VMQ_MIN(VMQ_MIN(room, 8u), (uint32_t)(s->n - m));
                if (row == 0) {
                        (void)vmq_vm_hypercall(s->vm, 0, VMQ_HC_FLUSH);
                        sched_yield();
                        continue;
                }
                for (uint32_t k = 0; k < row; k++, m++) {
                        uint64_t gpa = BURST_GPA + (uint64_t)(m % (int)depth) * PG;
                        memset(vmq_space_translate(s->vm->space, gpa, PG, true), (uint8_t)m, PG);
                        put_req(&slots[(prod + k) & (depth - 1)], VMQ_OP_PAGE, s->ch, gpa, PG,
                                VMQ_REQ_F_COPY);
                        slots[(prod + k) & (depth - 1)].tag = (uint64_t)m;
                }
                prod += row;
                __atomic_store_n(&idx->prod, prod, __ATOMIC_RELEASE);
                (void)vmq_vm_hypercall(s->vm, 0, VMQ_HC_FLUSH);
        }
        while (!atomic_load(s->stop) && __atomic_load_n(&idx->cons, __ATOMIC_ACQUIRE) != prod) {
                (void)vmq_vm_hypercall(s->vm, 0, VMQ_HC_FLUSH);
                sched_yield();
        }
        return NULL;
}

Test(burst, senders_stream_copies_while_the_receiver_releases) {
        struct vmq_vm *b = new_vm("b", 1);
        struct burst_sender s[2];
        pthread_t t[2];
        atomic_bool stop = false;
        const int n = vmq_test_scale(1500);
        for (int i = 0; i < 2; i++) {
                s[i] = (struct burst_sender){
                        .vm = new_vm(i ? "a2" : "a1", 1), .n = n, .stop = &stop};
                s[i].ch = open_ch(vmq_vm_id(s[i].vm), vmq_vm_id(b));
                struct vmq_desc d;
                take_kind(s[i].vm, VMQ_DESC_HELLO, &d);
                take_kind(b, VMQ_DESC_HELLO, &d);
        }
        uint64_t calls = vmq_pool_mmap_calls(mon->pool);
        for (int i = 0; i < 2; i++)
                cr_assert_eq(pthread_create(&t[i], NULL, burst_send, &s[i]), 0);

        uint64_t next[2] = {0, 0}, deadline = now_ns() + 60ull * 1000 * 1000 * 1000;
        int got = 0;
        const char *fault = NULL;
        while (got < 2 * n && !fault && now_ns() < deadline) {
                /* Takes a batch, as vmq_recv_batch() does, then gives the
                 * pages back. */
                struct vmq_desc batch[16];
                int k = 0;
                while (k < 16 && take(b, &batch[k]))
                        k++;
                if (k == 0) {
                        mbox(b, 0)->arg = 1000000; /* 1 ms */
                        (void)vmq_vm_hypercall(b, 0, VMQ_HC_WAIT);
                        continue;
                }
                for (int j = 0; j < k && !fault; j++) {
                        const struct vmq_desc *d = &batch[j];
                        if (d->kind != VMQ_DESC_PAGE) {
                                fault = "a descriptor that is no page";
                                break;
                        }
                        int i = d->src_vm == vmq_vm_id(s[1].vm);
                        const uint8_t *p = vmq_space_translate(b->space, d->gpa, PG, false);
                        if (d->tag != next[i])
                                fault = "out of order";
                        else if (!p || p[0] != (uint8_t)d->tag || p[PG - 1] != (uint8_t)d->tag)
                                fault = "wrong content";
                        else if (release(b, 0, d->gpa, PG) != 0)
                                fault = "release refused";
                        next[i]++;
                        got++;
                }
        }
        atomic_store(&stop, true);
        for (int i = 0; i < 2; i++)
                pthread_join(t[i], NULL);
        cr_assert_null(fault, "%s after %d messages (a1 %lu, a2 %lu)", fault, got,
                       (unsigned long)next[0], (unsigned long)next[1]);
        cr_assert_eq(got, 2 * n, "%d of %d messages arrived", got, 2 * n);
        struct vmq_vm_stats st;
        vmq_vm_get_stats(b, &st);
        cr_assert_eq(st.errors, 0);
        /* One mmap per release; the placements took far fewer than one
         * each (rows of 8 are published at once), or no burst ever
         * formed. */
        calls = vmq_pool_mmap_calls(mon->pool) - calls;
        cr_log_info("%d messages: %lu mmaps", 2 * n, (unsigned long)calls);
        cr_assert_lt(calls, 3 * (uint64_t)n, "%lu mmaps for %d messages", (unsigned long)calls,
                     2 * n);
}
