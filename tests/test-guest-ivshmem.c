/* SPDX-License-Identifier: MIT */
/*
 * The guest transport (libvmq-client/vmq-guest-ivshmem.h) against the real
 * monitor: the region VM's shared memory is a memfd (or a plain file posing
 * as a PCI device's resource2) in this process, and the transport opened on
 * it plays the Linux guest.  Its doorbell calls vmq_vm_region_doorbell()
 * directly, or a server thread watches the region (for vmqctl-static, whose
 * doorbell lands in a file).  Peers: the host end and a real `echo`
 * micro-VM on /dev/kvm.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/monitor.h"
#include "libvmq-client/vmq-guest-ivshmem.h"
#include "tests/test-util.h"

#define REGION_SIZE (4u << 20)
#define RX_SIZE (1u << 20)

static struct vmq_monitor *mon;
static uint8_t *region;
static struct vmq_vm *rvm; /* the region VM */
static struct vmq_ivshmem *ivs;
static atomic_int notified;

static void notify(void *userdata, struct vmq_vm *vm) {
        (void)userdata;
        (void)vm;
        atomic_fetch_add(&notified, 1);
}

static const struct vmq_region_ops ops = {.notify = notify};

/* The doorbell: straight into the monitor. */
static void ring(void *userdata, uint32_t peer, uint32_t vector) {
        cr_assert_eq(peer, VMQ_IVSHMEM_MONITOR_PEER);
        cr_assert_eq(vector, 0);
        vmq_vm_region_doorbell(userdata);
}

static void setup(void) {
        struct vmq_monitor_config mc;
        vmq_monitor_config_init(&mc);
        mc.calibrate = false; /* "auto" as vmq_transfer_plan_default() says */
        cr_assert_eq(vmq_monitor_new(&mc, &mon), 0);
        int fd = memfd_create("region", MFD_CLOEXEC);
        cr_assert_geq(fd, 0);
        cr_assert_eq(ftruncate(fd, REGION_SIZE), 0);
        region = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        cr_assert_neq(region, MAP_FAILED);
        close(fd);
}

static void teardown(void) {
        ivs = vmq_ivshmem_free(ivs);
        mon = vmq_monitor_free(mon);
        munmap(region, REGION_SIZE);
}

static void make_region_vm(const char *name) {
        struct vmq_vm_config vc;
        vmq_vm_config_init(&vc);
        vc.name = name;
        vc.rx_size = RX_SIZE;
        int r = vmq_vm_create_region(mon, &vc, region, REGION_SIZE, &ops, NULL, &rvm);
        cr_assert_eq(r, 0, "vmq_vm_create_region: %s", strerror(-r));
}

static void open_transport(void) {
        int r = vmq_ivshmem_open_region(NULL, region, REGION_SIZE, ring, rvm, &ivs);
        cr_assert_eq(r, 0, "vmq_ivshmem_open_region: %s", strerror(-r));
}

static uint32_t open_channel(uint32_t a, uint32_t b) {
        uint32_t id;
        int r = vmq_channel_open(mon, a, b, NULL, &id);
        cr_assert_eq(r, 0, "channel open: %s", strerror(-r));
        return id;
}

static struct vmq_ivshmem_msg *recv_msg(uint32_t ch, enum vmq_ivshmem_kind kind) {
        struct vmq_ivshmem_msg *m = NULL;
        int r = vmq_ivshmem_recv(ivs, ch, 5000000, &m);
        cr_assert_eq(r, 0, "recv on channel %u: %s", ch, strerror(-r));
        cr_assert_eq(m->kind, kind, "got a '%s' message, wanted '%s'",
                     vmq_ivshmem_kind_to_string(m->kind), vmq_ivshmem_kind_to_string(kind));
        return m;
}

static uint8_t *pattern(uint64_t i, size_t len) {
        uint8_t *p = malloc(len);
        cr_assert_not_null(p);
        vmq_test_source_pattern(i, p, len);
        return p;
}

static uint64_t fnv(const void *p, size_t n) {
        return vmq_test_fnv1a(VMQ_TEST_FNV_INIT, p, n);
}

static uint64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

TestSuite(guest_ivshmem, .init = setup, .fini = teardown, .timeout = 120);

Test(guest_ivshmem, identities_and_hellos) {
        make_region_vm("lx");
        open_transport();

        struct vmq_ivshmem_identity self, peer;
        cr_assert_eq(vmq_ivshmem_self(ivs, &self), 0);
        cr_assert_str_eq(self.name, "lx");
        cr_assert_eq(self.vm_id, vmq_vm_id(rvm));
        struct vmq_identity want;
        vmq_vm_identity(rvm, &want);
        cr_assert_arr_eq(self.uuid, want.uuid, 16);
        cr_assert_eq(vmq_ivshmem_position(ivs), -ENODEV, "no registers here");
        cr_assert_not(vmq_ivshmem_uses_interrupts(ivs));
        cr_assert_geq(vmq_ivshmem_max_send(ivs), REGION_SIZE - RX_SIZE - 256 * 1024);

        int before = atomic_load(&notified);
        uint32_t ch = open_channel(VMQ_HOST_ID, vmq_vm_id(rvm));
        cr_assert_gt(atomic_load(&notified), before, "the guest's vector 0 was not raised");
        cr_assert_eq(vmq_ivshmem_peer(ivs, ch, &peer), -ENXIO, "no hello seen yet");
        cr_assert_eq(vmq_ivshmem_wait(ivs, 0), 1);
        enum vmq_ivshmem_kind kind;
        uint32_t pch;
        cr_assert_eq(vmq_ivshmem_peek(ivs, &kind, &pch), 1);
        cr_assert_eq(kind, VMQ_IVSHMEM_HELLO);
        cr_assert_eq(pch, ch);

        struct vmq_ivshmem_msg *m = recv_msg(ch, VMQ_IVSHMEM_HELLO);
        cr_assert_eq(m->channel, ch);
        cr_assert_eq(m->peer.vm_id, VMQ_HOST_ID);
        cr_assert_str_eq(m->peer.name, "host");
        free(m);
        cr_assert_eq(vmq_ivshmem_peer(ivs, ch, &peer), 0);
        cr_assert_str_eq(peer.name, "host");
        cr_assert_eq(vmq_ivshmem_peek(ivs, NULL, NULL), 0);

        /* The host's HELLO carries the region VM's identity, stamped by the
         * monitor. */
        struct vmq_host_msg *hm;
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &hm), 0);
        cr_assert_eq(hm->kind, VMQ_DESC_HELLO);
        struct vmq_identity id;
        memcpy(&id, hm->data, sizeof(id));
        cr_assert_eq(id.vm_id, vmq_vm_id(rvm));
        cr_assert_str_eq(id.name, "lx");
        free(hm);

        /* CLOSE forgets the peer. */
        cr_assert_eq(vmq_channel_close(mon, ch), 0);
        m = recv_msg(ch, VMQ_IVSHMEM_CLOSE);
        free(m);
        cr_assert_eq(vmq_ivshmem_peer(ivs, ch, &peer), -ENXIO);
        cr_assert_eq(vmq_ivshmem_send(ivs, ch, "x", 1, 0), -EPIPE);
        cr_assert_eq(vmq_ivshmem_send(ivs, 4242, "x", 1, 0), -ENXIO);
}

Test(guest_ivshmem, host_inline_and_pages_both_ways) {
        make_region_vm("lx");
        open_transport();
        uint32_t ch = open_channel(VMQ_HOST_ID, vmq_vm_id(rvm));
        free(recv_msg(ch, VMQ_IVSHMEM_HELLO));
        struct vmq_host_msg *hm;
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &hm), 0);
        free(hm);

        /* guest -> host: inline, then 100 000 bytes as pages, many times
         * (the send area is reused: pages are freed after each answer) */
        cr_assert_eq(vmq_ivshmem_send(ivs, ch, "hello host", 10, 7), 0);
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &hm), 0);
        cr_assert_eq(hm->kind, VMQ_DESC_INLINE);
        cr_assert_eq(hm->tag, 7);
        cr_assert_eq(hm->src_vm, vmq_vm_id(rvm));
        cr_assert_eq(hm->len, 10);
        cr_assert_arr_eq(hm->data, "hello host", 10);
        free(hm);
        for (uint64_t i = 0; i < 40; i++) {
                size_t len = 100000 + i * 1000;
                uint8_t *p = pattern(i, len);
                int r = vmq_ivshmem_send(ivs, ch, p, len, 100 + i);
                cr_assert_eq(r, 0, "send %" PRIu64 ": %s", i, strerror(-r));
                cr_assert_eq(vmq_host_recv(mon, ch, 1000, &hm), 0);
                cr_assert_eq(hm->len, len);
                cr_assert_eq(hm->tag, 100 + i);
                cr_assert_eq(fnv(hm->data, hm->len), fnv(p, len), "checksum of message %" PRIu64,
                             i);
                free(hm);
                free(p);
        }
        size_t too_big = vmq_ivshmem_max_send(ivs) + 1;
        uint8_t *big = calloc(1, too_big);
        cr_assert_eq(vmq_ivshmem_send(ivs, ch, big, too_big, 0), -EMSGSIZE);
        free(big);

        /* host -> guest: 20 x 300 000 bytes through a 1 MiB window: only
         * works if every run is released after the copy. */
        for (uint64_t i = 0; i < 20; i++) {
                size_t len = 300000;
                uint8_t *p = pattern(i + 7, len);
                cr_assert_eq(vmq_host_send(mon, ch, p, len, 9000 + i), 0, "host send %" PRIu64, i);
                struct vmq_ivshmem_msg *m = recv_msg(ch, VMQ_IVSHMEM_PAGE);
                cr_assert_eq(m->len, len);
                cr_assert_eq(m->tag, 9000 + i);
                cr_assert_eq(m->src_vm, VMQ_HOST_ID);
                cr_assert_eq(fnv(m->data, m->len), fnv(p, len));
                free(m);
                free(p);
        }
        cr_assert_eq(vmq_host_send(mon, ch, "tiny", 4, 3), 0);
        struct vmq_ivshmem_msg *m = recv_msg(ch, VMQ_IVSHMEM_DATA);
        cr_assert_eq(m->len, 4);
        cr_assert_arr_eq(m->data, "tiny", 4);
        free(m);

        /* deferred: inline and pages through the post ring */
        for (uint64_t i = 0; i < 8; i++) {
                size_t len = i % 2 ? 50000 : 60;
                uint8_t *p = pattern(i + 50, len);
                cr_assert_eq(vmq_ivshmem_post(ivs, ch, p, len, 500 + i), 0);
                free(p);
        }
        cr_assert_eq(vmq_ivshmem_post_pending(ivs), 0, "the doorbell drains the ring");
        for (uint64_t i = 0; i < 8; i++) {
                size_t len = i % 2 ? 50000 : 60;
                uint8_t *p = pattern(i + 50, len);
                cr_assert_eq(vmq_host_recv(mon, ch, 1000, &hm), 0);
                cr_assert_eq(hm->tag, 500 + i);
                cr_assert_eq(hm->len, len);
                cr_assert_arr_eq(hm->data, p, len);
                free(hm);
                free(p);
        }
        cr_assert_geq(vmq_ivshmem_flush(ivs), 0);

        /* a posted request that fails comes back as an ERROR */
        cr_assert_eq(vmq_ivshmem_post(ivs, 4242, "x", 1, 77), 0);
        m = recv_msg(VMQ_IVSHMEM_ANY_CHANNEL, VMQ_IVSHMEM_ERROR);
        cr_assert_eq(m->tag, 77);
        cr_assert_eq(m->error, -ENXIO);
        free(m);
        cr_assert_eq(vmq_ivshmem_dropped(ivs), 0);
        cr_assert_eq(vmq_vm_state(rvm), VMQ_VM_RUNNING);
}

Test(guest_ivshmem, echo_micro_vm_and_backlog) {
        vmq_test_need_kvm();
        make_region_vm("lx");
        open_transport();
        struct vmq_vm_config vc;
        struct vmq_vm *echo;
        vmq_vm_config_init(&vc);
        vc.name = "echo0";
        int r = vmq_vm_create_from_file(mon, &vc, vmq_test_guest("echo"), &echo);
        cr_assert_eq(r, 0, "create echo: %s", strerror(-r));
        cr_assert_eq(vmq_vm_start(echo), 0);

        uint32_t ch = open_channel(vmq_vm_id(rvm), vmq_vm_id(echo));
        uint32_t hch = open_channel(VMQ_HOST_ID, vmq_vm_id(rvm));
        /* Waiting on the echo channel first keeps the host's hello aside. */
        struct vmq_ivshmem_msg *m = recv_msg(ch, VMQ_IVSHMEM_HELLO);
        cr_assert_eq(m->peer.vm_id, vmq_vm_id(echo));
        cr_assert_str_eq(m->peer.name, "echo0");
        free(m);

        /* Inline and page messages come back from the micro-VM. */
        for (uint64_t i = 0; i < 30; i++) {
                size_t len = i % 3 == 0 ? 1 + i : 4096 * (i % 5) + 1000 + i;
                uint8_t *p = pattern(i, len);
                if (i % 2)
                        r = vmq_ivshmem_post(ivs, ch, p, len, i);
                else
                        r = vmq_ivshmem_send(ivs, ch, p, len, i);
                cr_assert_eq(r, 0, "send %" PRIu64 ": %s", i, strerror(-r));
                m = recv_msg(ch,
                             len <= VMQ_IVSHMEM_INLINE_MAX ? VMQ_IVSHMEM_DATA : VMQ_IVSHMEM_PAGE);
                cr_assert_eq(m->src_vm, vmq_vm_id(echo));
                cr_assert_eq(m->tag, i);
                cr_assert_eq(m->len, len);
                cr_assert_eq(fnv(m->data, m->len), fnv(p, len), "checksum of echo %" PRIu64, i);
                free(m);
                free(p);
        }
        const char *text;
        char buf[8192];
        size_t n = vmq_vm_console_read(echo, buf, sizeof(buf) - 1);
        buf[n] = 0;
        text = strstr(buf, "echo: hello");
        cr_assert_not_null(text, "echo console: %s", buf);
        cr_assert_not_null(strstr(text, "name=lx"), "echo saw another peer: %s", text);

        /* The host's hello waited in the backlog. */
        m = recv_msg(hch, VMQ_IVSHMEM_HELLO);
        cr_assert_str_eq(m->peer.name, "host");
        free(m);
        struct vmq_ivshmem_identity peer;
        cr_assert_eq(vmq_ivshmem_peer(ivs, ch, &peer), 0);
        cr_assert_str_eq(peer.name, "echo0");
        cr_assert_eq(vmq_ivshmem_peer(ivs, hch, &peer), 0);
        cr_assert_str_eq(peer.name, "host");
        struct vmq_vm_stats st;
        vmq_vm_get_stats(rvm, &st);
        cr_assert_eq(st.errors, 0);
}

/* Acting as a hostile monitor: puts a descriptor on the region VM's queue
 * directly. */
static void forge(const struct vmq_desc *d) {
        struct vmq_vmcs *v = (struct vmq_vmcs *)region;
        struct vmq_ring_idx *idx = (struct vmq_ring_idx *)(region + v->layout.queue_off);
        uint32_t prod = idx->prod;
        memcpy(region + v->layout.queue_slots_off +
                       (size_t)(prod & (v->layout.queue_cap - 1)) * sizeof(*d),
               d, sizeof(*d));
        __atomic_store_n(&idx->prod, prod + 1, __ATOMIC_RELEASE);
}

Test(guest_ivshmem, hostile_region) {
        make_region_vm("lx");
        open_transport();
        struct vmq_vmcs *v = (struct vmq_vmcs *)region;
        uint32_t ch = open_channel(VMQ_HOST_ID, vmq_vm_id(rvm));
        free(recv_msg(ch, VMQ_IVSHMEM_HELLO));

        /* Impossible queue indices. */
        struct vmq_ivshmem_msg *m;
        struct vmq_ring_idx *idx = (struct vmq_ring_idx *)(region + v->layout.queue_off);
        uint32_t prod = idx->prod;
        idx->prod = prod + v->layout.queue_cap + 5;
        cr_assert_eq(vmq_ivshmem_recv(ivs, ch, 0, &m), -EPROTO);
        cr_assert_eq(vmq_ivshmem_peek(ivs, NULL, NULL), -EPROTO);
        idx->prod = prod;

        /* A post ring whose consumer index runs ahead of our producer. */
        struct vmq_ring_idx *pidx = (struct vmq_ring_idx *)(region + v->layout.post_off);
        uint32_t pcons = pidx->cons;
        pidx->cons = pcons + 3;
        cr_assert_eq(vmq_ivshmem_post(ivs, ch, "x", 1, 0), -EPROTO);
        pidx->cons = pcons;

        /* Layouts refused at open. */
        struct vmq_ivshmem *other;
        uint64_t rx = v->layout.rx_gpa;
        v->layout.rx_gpa = REGION_SIZE; /* window past the end */
        cr_assert_eq(vmq_ivshmem_open_region(NULL, region, REGION_SIZE, ring, rvm, &other),
                     -EPROTO);
        v->layout.rx_gpa = rx;
        cr_assert_eq(vmq_ivshmem_open_region(NULL, region, REGION_SIZE / 2, ring, rvm, &other),
                     -EPROTO, "a region smaller than its layout");
        uint32_t qoff = v->layout.queue_off;
        v->layout.queue_off = v->vmcs_size; /* outside the VMCS */
        cr_assert_eq(vmq_ivshmem_open_region(NULL, region, REGION_SIZE, ring, rvm, &other),
                     -EPROTO);
        v->layout.queue_off = qoff;
        v->layout.transport = VMQ_TRANSPORT_KVM;
        cr_assert_eq(vmq_ivshmem_open_region(NULL, region, REGION_SIZE, ring, rvm, &other),
                     -EPROTONOSUPPORT);
        v->layout.transport = VMQ_TRANSPORT_IVSHMEM;
        v->magic = 0;
        cr_assert_eq(vmq_ivshmem_open_region(NULL, region, REGION_SIZE, ring, rvm, &other),
                     -EAGAIN);
        v->magic = VMQ_ABI_MAGIC;
        cr_assert_eq(vmq_ivshmem_open_region(NULL, region + 1, REGION_SIZE, ring, rvm, &other),
                     -EINVAL);
        cr_assert_eq(vmq_ivshmem_open_region(NULL, region, REGION_SIZE, NULL, NULL, &other),
                     -EINVAL);

        /* Working before and after all that. */
        cr_assert_eq(vmq_ivshmem_send(ivs, ch, "still", 5, 2), 0);
        struct vmq_host_msg *hm;
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &hm), 0);
        free(hm);
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &hm), 0);
        cr_assert_eq(hm->len, 5);
        free(hm);
        cr_assert_eq(vmq_vm_state(rvm), VMQ_VM_RUNNING);

        /* Descriptors with bad offsets, lengths and kinds are skipped.  (Last:
         * the monitor's own producer index no longer matches the queue's
         * after this.) */
        cr_assert_eq(vmq_host_send(mon, ch, "ok", 2, 1), 0);
        struct vmq_desc d = {.kind = VMQ_DESC_PAGE, .channel = ch, .len = 4096};
        d.gpa = 0; /* the VMCS */
        forge(&d);
        d.gpa = v->layout.image_end; /* the send area */
        forge(&d);
        d.gpa = v->layout.rx_gpa + v->layout.rx_size - 4096;
        d.len = 8192; /* past the window */
        forge(&d);
        d.gpa = UINT64_MAX - 4095; /* wraps */
        forge(&d);
        d.gpa = v->layout.rx_gpa + 1; /* misaligned */
        d.len = 10;
        forge(&d);
        d.gpa = v->layout.rx_gpa;
        d.len = 0;
        forge(&d);
        d = (struct vmq_desc){.kind = VMQ_DESC_INLINE, .channel = ch, .len = 97};
        forge(&d);
        d = (struct vmq_desc){.kind = 99, .channel = ch, .len = 1};
        forge(&d);
        m = recv_msg(ch, VMQ_IVSHMEM_DATA);
        cr_assert_arr_eq(m->data, "ok", 2);
        free(m);
        cr_assert_eq(vmq_ivshmem_dropped(ivs), 0);
        cr_assert_eq(vmq_ivshmem_recv(ivs, ch, 0, &m), -ETIMEDOUT);
        cr_assert_eq(vmq_ivshmem_dropped(ivs), 8);
}

static void deaf(void *userdata, uint32_t peer, uint32_t vector) {
        (void)userdata;
        (void)peer;
        (void)vector;
}

Test(guest_ivshmem, timeouts) {
        make_region_vm("lx");
        open_transport();
        uint32_t ch = open_channel(VMQ_HOST_ID, vmq_vm_id(rvm));
        free(recv_msg(ch, VMQ_IVSHMEM_HELLO));

        struct vmq_ivshmem_msg *m = NULL;
        uint64_t t0 = now_ms();
        cr_assert_eq(vmq_ivshmem_recv(ivs, ch, 0, &m), -ETIMEDOUT);
        cr_assert_eq(vmq_ivshmem_recv(ivs, ch, 200000, &m), -ETIMEDOUT);
        uint64_t took = now_ms() - t0;
        cr_assert(took >= 200 && took < 1500, "a 200 ms wait took %" PRIu64 " ms", took);
        cr_assert_eq(vmq_ivshmem_wait(ivs, 50000), 0);

        /* A message that arrives while recv sleeps wakes it. */
        cr_assert_eq(vmq_host_send(mon, ch, "late", 4, 0), 0);
        cr_assert_eq(vmq_ivshmem_recv(ivs, ch, 1000000, &m), 0);
        free(m);

        /* A monitor that never answers: the doorbell goes nowhere. */
        struct vmq_ivshmem *d;
        ivs = vmq_ivshmem_free(ivs);
        cr_assert_eq(vmq_ivshmem_open_region(NULL, region, REGION_SIZE, deaf, NULL, &d), 0);
        cr_assert_eq(vmq_ivshmem_set_timeout(d, 100000), 0);
        t0 = now_ms();
        cr_assert_eq(vmq_ivshmem_send(d, ch, "x", 1, 0), -ETIMEDOUT);
        uint8_t *p = pattern(1, 20000);
        cr_assert_eq(vmq_ivshmem_send(d, ch, p, 20000, 0), -ETIMEDOUT);
        free(p);
        took = now_ms() - t0;
        cr_assert(took >= 200 && took < 2000, "two 100 ms timeouts took %" PRIu64 " ms", took);
        vmq_ivshmem_free(d);
        /* The monitor serves the stale pending mailbox when rung again. */
        vmq_vm_region_doorbell(rvm);
        cr_assert_eq(vmq_vm_state(rvm), VMQ_VM_RUNNING);
}

/* ---- vmqctl-static against a fake PCI device ------------------------------
 * A directory poses as sysfs: vendor, device, enable, resource0 (the
 * registers, a plain file) and resource2 (the region, mapped here too).
 * A thread plays QEMU's doorbell: it serves the region whenever a mailbox
 * is pending or the post ring is not empty.
 */

static char tmpdir[] = "/tmp/vmq-guest-test.XXXXXX";
static atomic_bool serving;

static void *server(void *arg) {
        struct vmq_vmcs *v = (struct vmq_vmcs *)region;
        (void)arg;
        while (atomic_load(&serving)) {
                struct vmq_ring_idx *p = (struct vmq_ring_idx *)(region + v->layout.post_off);
                if (__atomic_load_n(&v->mbox[0].status, __ATOMIC_ACQUIRE) == VMQ_STATUS_PENDING ||
                    __atomic_load_n(&p->prod, __ATOMIC_ACQUIRE) != p->cons)
                        vmq_vm_region_doorbell(rvm);
                usleep(100);
        }
        return NULL;
}

static void write_text(const char *dir, const char *name, const char *text) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        FILE *f = fopen(path, "we");
        cr_assert_not_null(f, "%s", path);
        fputs(text, f);
        fclose(f);
}

/* Runs vmqctl-static with a shell command line; returns its exit code and
 * its stdout in out (static). */
static int vmqctl(const char *args, const char **out) {
        static char buf[65536];
        char cmd[2048];
        snprintf(cmd, sizeof(cmd),
                 "VMQ_IVSHMEM_SYSFS=%s/devices VMQ_GUEST_STATE_DIR=%s/state "
                 "%s/vmqctl/vmqctl-static %s >%s/out 2>%s/err",
                 tmpdir, tmpdir, VMQ_BUILDDIR, args, tmpdir, tmpdir);
        int st = system(cmd);
        cr_assert(WIFEXITED(st), "vmqctl %s: did not exit", args);
        snprintf(cmd, sizeof(cmd), "%s/out", tmpdir);
        FILE *f = fopen(cmd, "re");
        size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
        buf[n] = 0;
        if (f)
                fclose(f);
        if (out)
                *out = buf;
        return WEXITSTATUS(st);
}

Test(guest_ivshmem, vmqctl_static_on_a_fake_device) {
        char dev[512], path[600];
        cr_assert_not_null(mkdtemp(tmpdir));
        snprintf(dev, sizeof(dev), "%s/devices/0000:00:05.0", tmpdir);
        snprintf(path, sizeof(path), "mkdir -p %s %s/devices/0000:00:06.0", dev, tmpdir);
        cr_assert_eq(system(path), 0);
        write_text(dev, "vendor", "0x1af4\n");
        write_text(dev, "device", "0x1110\n");
        write_text(dev, "enable", "0\n");
        snprintf(path, sizeof(path), "%s/devices/0000:00:06.0", tmpdir);
        write_text(path, "vendor", "0x8086\n"); /* not ivshmem */
        write_text(path, "device", "0x100e\n");
        snprintf(path, sizeof(path), "%s/resource0", dev);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(ftruncate(fd, 4096), 0);
        close(fd);
        snprintf(path, sizeof(path), "%s/resource2", dev);
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(ftruncate(fd, REGION_SIZE), 0);
        munmap(region, REGION_SIZE);
        region = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        cr_assert_neq(region, MAP_FAILED);
        close(fd);

        const char *out;
        cr_assert_eq(vmqctl("--device 0000:00:06.0 identity", NULL), 3, "not an ivshmem device");
        cr_assert_eq(vmqctl("--device 0000:00:07.0 identity", NULL), 3, "no such device");
        cr_assert_eq(vmqctl("--guest frobnicate", NULL), 2);
        cr_assert_eq(vmqctl("recv", NULL), 2);
        cr_assert_eq(vmqctl("--help", NULL), 0);

        make_region_vm("lx");
        pthread_t th;
        atomic_store(&serving, true);
        cr_assert_eq(pthread_create(&th, NULL, server, NULL), 0);

        cr_assert_eq(vmqctl("identity", &out), 0);
        char want[128];
        snprintf(want, sizeof(want), "id=%u name=lx uuid=", vmq_vm_id(rvm));
        cr_assert_not_null(strstr(out, want), "identity printed: %s", out);

        uint32_t ch = open_channel(VMQ_HOST_ID, vmq_vm_id(rvm));
        cr_assert_eq(vmqctl("--guest wait-hello --timeout 5", &out), 0);
        snprintf(want, sizeof(want), "channel=%u peer=0 name=host uuid=", ch);
        cr_assert_not_null(strstr(out, want), "wait-hello printed: %s", out);
        cr_assert_eq(vmqctl("channels", &out), 0);
        cr_assert_not_null(strstr(out, want), "channels printed: %s", out);
        cr_assert_eq(vmqctl("wait-hello --timeout 0.2", NULL), 5);

        /* send: inline and a 200 000-byte file, binary-safe */
        struct vmq_host_msg *hm;
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &hm), 0); /* the host's hello */
        free(hm);
        snprintf(path, sizeof(path), "--device 0000:00:05.0 send %u 'hello host' --tag 5", ch);
        cr_assert_eq(vmqctl(path, NULL), 0);
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &hm), 0);
        cr_assert_eq(hm->len, 10);
        cr_assert_eq(hm->tag, 5);
        cr_assert_arr_eq(hm->data, "hello host", 10);
        free(hm);
        uint8_t *p = pattern(3, 200000);
        p[0] = 0;
        p[1] = '\n';
        snprintf(path, sizeof(path), "%s/blob", tmpdir);
        FILE *f = fopen(path, "we");
        cr_assert_eq(fwrite(p, 1, 200000, f), 200000);
        fclose(f);
        snprintf(path, sizeof(path), "send %u --file %s/blob", ch, tmpdir);
        cr_assert_eq(vmqctl(path, NULL), 0);
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &hm), 0);
        cr_assert_eq(hm->len, 200000);
        cr_assert_eq(fnv(hm->data, hm->len), fnv(p, 200000));
        free(hm);
        snprintf(path, sizeof(path), "send %u --post < %s/blob", ch, tmpdir);
        cr_assert_eq(vmqctl(path, NULL), 0);
        cr_assert_eq(vmq_host_recv(mon, ch, 2000, &hm), 0);
        cr_assert_eq(hm->len, 200000);
        free(hm);
        snprintf(path, sizeof(path), "send 4242 x");
        cr_assert_eq(vmqctl(path, NULL), 3, "no such channel");

        /* recv: two messages, one of them pages, to a file */
        cr_assert_eq(vmq_host_send(mon, ch, "abc", 3, 0), 0);
        cr_assert_eq(vmq_host_send(mon, ch, p, 200000, 0), 0);
        snprintf(path, sizeof(path), "recv %u --count 2 --timeout 5 --output %s/got", ch, tmpdir);
        cr_assert_eq(vmqctl(path, NULL), 0);
        snprintf(path, sizeof(path), "%s/got", tmpdir);
        f = fopen(path, "re");
        uint8_t *got = malloc(200010);
        size_t n = fread(got, 1, 200010, f);
        fclose(f);
        cr_assert_eq(n, 200003);
        cr_assert_arr_eq(got, "abc", 3);
        cr_assert_eq(fnv(got + 3, 200000), fnv(p, 200000));
        free(got);
        free(p);
        snprintf(path, sizeof(path), "recv %u --timeout 0.2", ch);
        cr_assert_eq(vmqctl(path, NULL), 5);

        /* close: recv says so, channels forgets it */
        cr_assert_eq(vmq_channel_close(mon, ch), 0);
        snprintf(path, sizeof(path), "recv %u --timeout 5", ch);
        cr_assert_eq(vmqctl(path, NULL), 7);
        cr_assert_eq(vmqctl("channels", &out), 0);
        cr_assert_eq(out[0], 0, "channels after close: %s", out);

        atomic_store(&serving, false);
        pthread_join(th, NULL);
        snprintf(path, sizeof(path), "rm -rf %s", tmpdir);
        cr_assert_eq(system(path), 0);
}
