/* SPDX-License-Identifier: MIT */
/*
 * Region VMs (the ivshmem transport) in the monitor: the test plays the
 * guest directly on the shared region, as a Linux guest would through
 * BAR2, and rings the doorbell by calling vmq_vm_region_doorbell().
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/monitor.h"
#include "tests/test-util.h"

#define REGION_SIZE (1u << 20)

static struct vmq_monitor *mon;
static uint8_t *region;
static atomic_int notified;

static void notify(void *userdata, struct vmq_vm *vm) {
        (void)userdata;
        (void)vm;
        atomic_fetch_add(&notified, 1);
}

static const struct vmq_region_ops ops = {.notify = notify};

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
        mon = vmq_monitor_free(mon);
        munmap(region, REGION_SIZE);
}

static struct vmq_vm *make_region_vm(const char *name) {
        struct vmq_vm_config vc;
        struct vmq_vm *vm;
        vmq_vm_config_init(&vc);
        vc.name = name;
        vc.rx_size = 256 * 1024;
        cr_assert_eq(vmq_vm_create_region(mon, &vc, region, REGION_SIZE, &ops, NULL, &vm), 0);
        return vm;
}

static struct vmq_vmcs *vmcs(void) {
        return (struct vmq_vmcs *)region;
}

/* The guest side: take one descriptor off the queue, if any. */
static bool guest_dequeue(struct vmq_desc *d) {
        struct vmq_vmcs *v = vmcs();
        struct vmq_ring_idx *idx = (struct vmq_ring_idx *)(region + v->layout.queue_off);
        uint32_t prod = __atomic_load_n(&idx->prod, __ATOMIC_ACQUIRE);
        uint32_t cons = idx->cons;
        if (prod == cons)
                return false;
        memcpy(d,
               region + v->layout.queue_slots_off +
                       (size_t)(cons & (v->layout.queue_cap - 1)) * sizeof(*d),
               sizeof(*d));
        __atomic_store_n(&idx->cons, cons + 1, __ATOMIC_RELEASE);
        return true;
}

/* The guest side of a hypercall over ivshmem. */
static int32_t guest_hypercall(struct vmq_vm *vm, unsigned nr, struct vmq_request *req) {
        struct vmq_request *mb = &vmcs()->mbox[0];
        if (req)
                memcpy(mb, req, sizeof(*mb));
        mb->hc = nr;
        __atomic_store_n(&mb->status, VMQ_STATUS_PENDING, __ATOMIC_RELEASE);
        vmq_vm_region_doorbell(vm);
        int32_t r = __atomic_load_n(&mb->status, __ATOMIC_ACQUIRE);
        cr_assert_neq(r, VMQ_STATUS_PENDING, "the monitor did not answer");
        return r;
}

static struct vmq_request request(uint32_t ch, uint16_t op) {
        struct vmq_request r;
        memset(&r, 0, sizeof(r));
        r.abi = VMQ_ABI_VERSION;
        r.op = op;
        r.channel = ch;
        return r;
}

TestSuite(region, .init = setup, .fini = teardown, .timeout = 60);

Test(region, layout_hello_and_host_exchange) {
        struct vmq_vm *vm = make_region_vm("rg");
        struct vmq_vmcs *v = vmcs();
        cr_assert_eq(v->magic, VMQ_ABI_MAGIC);
        cr_assert_eq(v->layout.transport, VMQ_TRANSPORT_IVSHMEM);
        cr_assert_eq(v->layout.ram_size, REGION_SIZE);
        cr_assert_eq(v->layout.rx_gpa + v->layout.rx_size, REGION_SIZE);
        cr_assert_geq(v->layout.image_end, v->vmcs_size);
        cr_assert_str_eq(v->self.name, "rg");
        cr_assert_eq(vmq_vm_state(vm), VMQ_VM_RUNNING);

        uint32_t ch;
        int before = atomic_load(&notified);
        cr_assert_eq(vmq_channel_open(mon, VMQ_HOST_ID, vmq_vm_id(vm), NULL, &ch), 0);
        cr_assert_gt(atomic_load(&notified), before, "the guest was not interrupted");
        struct vmq_desc d;
        cr_assert(guest_dequeue(&d));
        cr_assert_eq(d.kind, VMQ_DESC_HELLO);
        cr_assert_str_eq(((struct vmq_identity *)d.data)->name, "host");

        /* guest -> host, inline and pages from the send area */
        struct vmq_request r = request(ch, VMQ_OP_INLINE);
        r.len = 5;
        memcpy(r.data, "hello", 5);
        r.tag = 1;
        cr_assert_eq(guest_hypercall(vm, VMQ_HC_SEND, &r), 0);
        uint8_t page[6000];
        vmq_test_source_pattern(3, page, sizeof(page));
        memcpy(region + v->layout.image_end, page, sizeof(page));
        r = request(ch, VMQ_OP_PAGE);
        r.gpa = v->layout.image_end;
        r.len = sizeof(page);
        r.tag = 2;
        cr_assert_eq(guest_hypercall(vm, VMQ_HC_SEND, &r), 0);
        struct vmq_host_msg *msg;
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &msg), 0);
        cr_assert_eq(msg->kind, VMQ_DESC_HELLO);
        free(msg);
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &msg), 0);
        cr_assert_eq(msg->len, 5);
        cr_assert_arr_eq(msg->data, "hello", 5);
        free(msg);
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &msg), 0);
        cr_assert_eq(msg->len, sizeof(page));
        cr_assert_arr_eq(msg->data, page, sizeof(page));
        free(msg);

        /* host -> guest: a page message lands in the receive window */
        cr_assert_eq(vmq_host_send(mon, ch, page, sizeof(page), 9), 0);
        cr_assert(guest_dequeue(&d));
        cr_assert_eq(d.kind, VMQ_DESC_PAGE);
        cr_assert_geq(d.gpa, v->layout.rx_gpa);
        cr_assert_arr_eq(region + d.gpa, page, sizeof(page));
        r = request(0, 0);
        r.gpa = d.gpa;
        r.len = d.len;
        cr_assert_eq(guest_hypercall(vm, VMQ_HC_RELEASE, &r), 0);
        cr_assert_eq(guest_hypercall(vm, VMQ_HC_RELEASE, &r), -VMQ_E_NOTOWNED);

        /* hostile offsets */
        r = request(ch, VMQ_OP_PAGE);
        r.gpa = 0; /* the VMCS */
        r.len = 100;
        cr_assert_eq(guest_hypercall(vm, VMQ_HC_SEND, &r), -VMQ_E_NOTOWNED);
        r.gpa = REGION_SIZE;
        cr_assert_eq(guest_hypercall(vm, VMQ_HC_SEND, &r), -VMQ_E_RANGE);
        r.gpa = v->layout.image_end + 1;
        cr_assert_eq(guest_hypercall(vm, VMQ_HC_SEND, &r), -VMQ_E_ALIGN);
        r.gpa = v->layout.rx_gpa - 4096;
        r.len = 8192; /* past the send area */
        cr_assert_eq(guest_hypercall(vm, VMQ_HC_SEND, &r), -VMQ_E_LEN);
        r.gpa = v->layout.rx_gpa; /* a slot it does not hold */
        r.len = 10;
        cr_assert_eq(guest_hypercall(vm, VMQ_HC_SEND, &r), -VMQ_E_NOTOWNED);
        cr_assert_eq(guest_hypercall(vm, 0x33, NULL), -VMQ_E_NOSYS);
        cr_assert_eq(vmq_vm_state(vm), VMQ_VM_RUNNING);
}

Test(region, micro_vm_bridged_both_ways) {
        vmq_test_need_kvm();
        struct vmq_vm *vm = make_region_vm("rg");
        struct vmq_vm_config vc;
        struct vmq_vm *echo;
        vmq_vm_config_init(&vc);
        vc.name = "echo0";
        cr_assert_eq(vmq_vm_create_from_file(mon, &vc, vmq_test_guest("echo"), &echo), 0);
        cr_assert_eq(vmq_vm_start(echo), 0);
        uint32_t ch;
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(vm), vmq_vm_id(echo), NULL, &ch), 0);
        struct vmq_desc d;
        cr_assert(guest_dequeue(&d));
        cr_assert_eq(d.kind, VMQ_DESC_HELLO);
        cr_assert_str_eq(((struct vmq_identity *)d.data)->name, "echo0");

        struct vmq_vmcs *v = vmcs();
        uint8_t page[9000];
        for (int i = 0; i < 50; i++) {
                vmq_test_source_pattern((uint64_t)i, page, sizeof(page));
                memcpy(region + v->layout.image_end, page, sizeof(page));
                struct vmq_request r = request(ch, VMQ_OP_PAGE);
                r.gpa = v->layout.image_end;
                r.len = sizeof(page);
                r.tag = (uint64_t)i;
                cr_assert_eq(guest_hypercall(vm, VMQ_HC_SEND, &r), 0);
                /* the echo guest copies it back into our receive window */
                int waited = 0;
                while (!guest_dequeue(&d)) {
                        cr_assert_lt(waited++, 5000, "no reflection of message %d", i);
                        usleep(1000);
                }
                cr_assert_eq(d.kind, VMQ_DESC_PAGE);
                cr_assert_eq(d.tag, (uint64_t)i);
                cr_assert_eq(d.src_vm, vmq_vm_id(echo));
                cr_assert_arr_eq(region + d.gpa, page, sizeof(page));
                r = request(0, 0);
                r.gpa = d.gpa;
                r.len = d.len;
                cr_assert_eq(guest_hypercall(vm, VMQ_HC_RELEASE, &r), 0);
        }
}

Test(region, scribbling_crashes_only_that_vm_and_closes_its_channels) {
        vmq_test_need_kvm();
        struct vmq_vm *vm = make_region_vm("rg");
        uint32_t ch;
        cr_assert_eq(vmq_channel_open(mon, VMQ_HOST_ID, vmq_vm_id(vm), NULL, &ch), 0);
        struct vmq_host_msg *msg;
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &msg), 0);
        free(msg);
        /* garbage over the queue indices */
        struct vmq_ring_idx *idx = (struct vmq_ring_idx *)(region + vmcs()->layout.queue_off);
        idx->cons = 0xdeadbeef;
        vmq_vm_region_doorbell(vm);
        cr_assert_eq(vmq_vm_state(vm), VMQ_VM_CRASHED);
        cr_assert_neq(vmq_vm_crash_reason(vm)[0], 0);
        /* the host end hears the channel close */
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &msg), 0);
        cr_assert_eq(msg->kind, VMQ_DESC_CLOSE);
        free(msg);
        cr_assert_eq(vmq_host_send(mon, ch, "x", 1, 0), -EPIPE);
        /* the monitor keeps serving others */
        memset(region, 0xff, 4096);
        vmq_vm_region_doorbell(vm);
        struct vmq_vm_config vc;
        struct vmq_vm *echo;
        vmq_vm_config_init(&vc);
        vc.name = "echo0";
        cr_assert_eq(vmq_vm_create_from_file(mon, &vc, vmq_test_guest("echo"), &echo), 0);
        cr_assert_eq(vmq_vm_start(echo), 0);
        cr_assert_eq(vmq_channel_open(mon, VMQ_HOST_ID, vmq_vm_id(echo), NULL, &ch), 0);
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &msg), 0);
        free(msg);
        cr_assert_eq(vmq_host_send(mon, ch, "ping", 4, 1), 0);
        cr_assert_eq(vmq_host_recv(mon, ch, 5000, &msg), 0);
        cr_assert_eq(msg->len, 4);
        free(msg);
}

/* A host end that speaks for a VM (vmqd relaying a vsock connection of a
 * guest without a vmq driver): the other end's HELLO names that VM and
 * carries the vsock flags and ports, and what the host sends, and the
 * CLOSE, carry that VM's id. */
Test(region, host_end_speaks_for_a_vm) {
        struct vmq_vm *vm = make_region_vm("rg");
        struct vmq_vm_config vc;
        struct vmq_vm *other;
        int fd = memfd_create("other", MFD_CLOEXEC);
        cr_assert_geq(fd, 0);
        cr_assert_eq(ftruncate(fd, REGION_SIZE), 0);
        uint8_t *other_region = mmap(NULL, REGION_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        cr_assert_neq(other_region, MAP_FAILED);
        close(fd);
        vmq_vm_config_init(&vc);
        vc.name = "lv-a";
        vc.rx_size = 256 * 1024;
        cr_assert_eq(vmq_vm_create_region(mon, &vc, other_region, REGION_SIZE, &ops, NULL, &other),
                     0);

        struct vmq_channel_config cc;
        uint32_t ch;
        vmq_channel_config_init(&cc);
        cc.speak_for = vmq_vm_id(other);
        cc.hello_flags = VMQ_DESC_F_VSOCK | VMQ_DESC_F_SEQPACKET;
        cc.hello_tag = (uint64_t)0xabcdef12u << 32 | 5000;
        /* refused: not a host end, the other end itself, unknown flags, no VM */
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(other), vmq_vm_id(vm), &cc, &ch), -EINVAL);
        cc.speak_for = vmq_vm_id(vm);
        cr_assert_eq(vmq_channel_open(mon, VMQ_HOST_ID, vmq_vm_id(vm), &cc, &ch), -EINVAL);
        cc.speak_for = vmq_vm_id(other);
        cc.hello_flags = VMQ_DESC_F_LINK;
        cr_assert_eq(vmq_channel_open(mon, VMQ_HOST_ID, vmq_vm_id(vm), &cc, &ch), -EINVAL);
        cc.speak_for = 0;
        cc.hello_flags = VMQ_DESC_F_VSOCK;
        cr_assert_eq(vmq_channel_open(mon, VMQ_HOST_ID, vmq_vm_id(vm), &cc, &ch), -EINVAL);
        cc.speak_for = 0x7777;
        cr_assert_eq(vmq_channel_open(mon, VMQ_HOST_ID, vmq_vm_id(vm), &cc, &ch), -ENOENT);
        struct vmq_desc d;
        cr_assert_not(guest_dequeue(&d), "a refused channel said HELLO");

        cc.speak_for = vmq_vm_id(other);
        cc.hello_flags = VMQ_DESC_F_VSOCK | VMQ_DESC_F_SEQPACKET;
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(vm), VMQ_HOST_ID, &cc, &ch), 0);
        cr_assert(guest_dequeue(&d));
        cr_assert_eq(d.kind, VMQ_DESC_HELLO);
        cr_assert_eq(d.flags, VMQ_DESC_F_VSOCK | VMQ_DESC_F_SEQPACKET);
        cr_assert_eq(d.tag, (uint64_t)0xabcdef12u << 32 | 5000);
        cr_assert_eq(d.src_vm, vmq_vm_id(other));
        cr_assert_str_eq(((struct vmq_identity *)d.data)->name, "lv-a");
        cr_assert_eq(((struct vmq_identity *)d.data)->vm_id, vmq_vm_id(other));
        /* the host end's own HELLO names the VM end, as always */
        struct vmq_host_msg *msg;
        cr_assert_eq(vmq_host_recv(mon, ch, 1000, &msg), 0);
        cr_assert_eq(msg->kind, VMQ_DESC_HELLO);
        cr_assert_eq(msg->flags, 0);
        cr_assert_str_eq(((struct vmq_identity *)msg->data)->name, "rg");
        free(msg);

        cr_assert_eq(vmq_host_send(mon, ch, "record", 6, 0), 0);
        cr_assert(guest_dequeue(&d));
        cr_assert_eq(d.kind, VMQ_DESC_INLINE);
        cr_assert_eq(d.src_vm, vmq_vm_id(other));
        cr_assert_arr_eq(d.data, "record", 6);
        cr_assert_eq(vmq_channel_close(mon, ch), 0);
        cr_assert(guest_dequeue(&d));
        cr_assert_eq(d.kind, VMQ_DESC_CLOSE);
        cr_assert_eq(d.src_vm, vmq_vm_id(other));

        /* the VM it spoke for goes: nothing of it is left behind */
        vmq_vm_destroy(other);
        munmap(other_region, REGION_SIZE);
}
