/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for request decoding and checking, against a real
 * monitor.
 *
 * LLVMFuzzerInitialize() creates one host-driven monitor
 * (vmq_monitor_config.host_driven: no /dev/kvm needed) and three micro-VMs
 * from a guest image: no vCPU thread ever runs, so the harness plays every
 * guest itself, writing their VMCS as a hostile
 * guest may, and drives the monitor through the entry points vm.c's exit
 * loop uses (vmq_monitor_hypercall, vmq_monitor_drain_posts, under mon->rw
 * held for reading) and through the host end (vmq_host_send, vmq_host_recv).
 * Channels join the VMs with each other and with the host, one of them
 * closed.
 *
 * Each input is a sequence of operations:
 *   HYPERCALL   a mailbox (well-formed-ish or raw) and a hypercall number
 *               (never WAIT, PARK or EXIT: they block or end the VM), then,
 *               like an exit, optionally a drain of the post ring; a KICK
 *               must wake exactly the other end of a linked channel of the
 *               caller's and be refused otherwise;
 *   POST        entries written into the post ring, a producer index (the
 *               right one or any), then a drain;
 *   DRAIN       a drain alone;
 *   VMCS_WRITE  any bytes anywhere in the VMCS header or rings, indices
 *               included, both the guest's and the monitor's own;
 *   GUEST_RECV  the guest consumes descriptors from its queue (checking
 *               each) and may release the pages they carry;
 *   HOST_SEND / HOST_RECV   the host end sends or polls (timeout 0).
 *
 * Around every call into the monitor the harness checks what a hostile
 * guest must not be able to change, and what the monitor promises:
 *   - the monitor writes no guest-owned byte of any VMCS (post ring
 *     entries and producer index, queue consumer index, mailbox inputs,
 *     identity, layout);
 *   - it publishes its queue producer index as the count of descriptors it
 *     enqueued, never fills a queue beyond its capacity and enqueues
 *     nothing while the guest's consumer index is impossible;
 *   - it consumes posts only up to the guest's producer index, and none
 *     while that index is impossible;
 *   - descriptors and host messages carry the identity the monitor
 *     stamped: a source that is the other end of their channel, HELLO with
 *     the peer's identity, pages inside the receive window.
 * After each input vmq_pool_check() must pass.  Every VMQ_FUZZ_RESET_EVERY
 * inputs (default 1, so that a crashing input reproduces on its own) the
 * state is reset: post rings emptied, host inboxes drained, queues consumed,
 * the VMCS headers restored, every received page released; then the free
 * frame count must be what it was after set-up.  At exit the VMs are
 * destroyed and every frame of the pool must be free.
 */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/elf.h"
#include "core/monitor.h"
#include "core/remap.h"
#include "core/util.h"
#include "core/vm.h"
#include "tests/fuzz/fuzz-util.h"

#ifndef VMQ_FUZZ_GUEST_IMAGE
#define VMQ_FUZZ_GUEST_IMAGE "guest/images/echo.elf"
#endif

#define NVM 3
#define NCHAN 7
#define HOST (-1)
#define RAM_SIZE (4ull * 1024 * 1024)
#define RAM_PAGES (RAM_SIZE / VMQ_PAGE_SIZE)
#define IMAGE_PAGE0 (VMQ_IMAGE_GPA / VMQ_PAGE_SIZE)
/* Spare frames beyond the VMs' RAM: fewer than their receive windows hold,
 * so that "host out of frames" happens too. */
#define SPARE_FRAMES 24u
#define HOST_DATA_MAX (80u * 1024u)
#define MAX_QCAP 16u

struct fvm {
        struct vmq_vm *vm;
        uint32_t id;
        unsigned nvcpus;
        uint32_t qcap, pcap;
        uint64_t rx_size;
        struct vmq_identity ident;
        uint8_t *base; /* the VMCS */
        struct vmq_ring_idx *rxq_idx;
        struct vmq_desc *rxq_slots;
        struct vmq_ring_idx *post_idx;
        struct vmq_request *post_slots;
        uint8_t header0[VMQ_PAGE_SIZE]; /* header page as created */
        uint32_t snap_doorbell;         /* vmcs.post_doorbell before a call */

        /* The monitor's own indices, when the guest scribbled over them.
         * The queue producer index is the number of descriptors enqueued
         * (vmq_vm_get_stats), so it can always be restored; the post ring
         * consumer index is known to be post_cons_true until the monitor
         * stores a different value than the scribbled one. */
        bool rxq_prod_scribbled;
        bool post_cons_scribbled;
        uint32_t post_cons_true, post_cons_seen;
        /* Which descriptor each queue slot holds: the queue index the
         * monitor last wrote into it, unless the guest wrote over it since.
         * Only those are checked: a guest that rewinds its consumer index,
         * or scribbles its slots, reads back whatever it finds. */
        uint32_t slot_index[MAX_QCAP];
        bool slot_fresh[MAX_QCAP];

        /* Snapshot of the guest-owned bytes taken before a monitor call. */
        uint8_t snap_header[VMQ_PAGE_SIZE];
        uint8_t *snap_post; /* the post ring's slots */
        uint32_t snap_post_prod, snap_rxq_cons;
        uint32_t snap_post_cons, snap_rxq_prod;
};

struct fchan {
        uint32_t id;
        int end[2]; /* index into vms[], or HOST */
        bool open;
};

static struct vmq_monitor *mon;
static struct fvm vms[NVM];
static struct fchan chans[NCHAN];
static size_t frames_baseline;
static unsigned long reset_every = 1, inputs;
static bool trace; /* VMQ_FUZZ_TRACE=1: print each operation */
static uint8_t host_data[HOST_DATA_MAX];

#define TRACE(...)                                                                                 \
        do {                                                                                       \
                if (trace)                                                                         \
                        fprintf(stderr, "fuzz-request: " __VA_ARGS__);                             \
        } while (0)

/* ---- the monitor's indices ------------------------------------------- */

static uint32_t rxq_prod_true(const struct fvm *f) {
        struct vmq_vm_stats st;
        vmq_vm_get_stats(f->vm, &st);
        return (uint32_t)st.received;
}

static uint32_t post_cons_true(const struct fvm *f) {
        return f->post_cons_scribbled ? f->post_cons_true : f->post_idx->cons;
}

/* The guest wrote bytes [off, off + len) of the VMCS: note what it did to
 * the monitor's indices. */
static void guest_wrote(struct fvm *f, size_t off, size_t len, uint32_t post_cons_before) {
        size_t rxq_prod = (uint8_t *)&f->rxq_idx->prod - f->base;
        size_t post_cons = (uint8_t *)&f->post_idx->cons - f->base;
        size_t rxq_slots = (uint8_t *)f->rxq_slots - f->base;

        if (off < rxq_prod + 4 && rxq_prod < off + len)
                f->rxq_prod_scribbled = true;
        for (uint32_t j = 0; j < f->qcap; j++) {
                size_t lo = rxq_slots + j * sizeof(struct vmq_desc);
                if (off < lo + sizeof(struct vmq_desc) && lo < off + len)
                        f->slot_fresh[j] = false;
        }
        if (off < post_cons + 4 && post_cons < off + len) {
                if (!f->post_cons_scribbled) {
                        f->post_cons_scribbled = true;
                        f->post_cons_true = post_cons_before;
                }
                /* A value the monitor could store itself within one call
                 * (it consumes at most a ring's worth) would be ambiguous:
                 * make it an impossible one. */
                uint32_t t = f->post_cons_true;
                if (f->post_idx->cons - t - 1 < f->pcap)
                        f->post_idx->cons = t ^ 0x80000000u;
                f->post_cons_seen = f->post_idx->cons;
        }
}

/* ---- checks around each call into the monitor ------------------------ */

/* Bytes of the header the monitor may write after creation: the counters
 * it mirrors and each mailbox's status and result. */
static void mask_out_fields(uint8_t *h) {
        memset(h + offsetof(struct vmq_vmcs, stats), 0, sizeof(struct vmq_vmcs_stats));
        /* the monitor's (OUT): a drain that finds the ring empty sets it to
         * 1 again, whatever the guest wrote there (checked on its own) */
        memset(h + offsetof(struct vmq_vmcs, post_doorbell), 0, sizeof(uint32_t));
        for (unsigned i = 0; i < VMQ_MAX_VCPUS; i++) {
                uint8_t *mb = h + offsetof(struct vmq_vmcs, mbox) + i * sizeof(struct vmq_request);
                memset(mb + offsetof(struct vmq_request, status), 0, sizeof(int32_t));
                memset(mb + offsetof(struct vmq_request, result), 0, sizeof(uint64_t));
        }
}

static void before_monitor(void) {
        for (unsigned i = 0; i < NVM; i++) {
                struct fvm *f = &vms[i];
                memcpy(f->snap_header, f->base, VMQ_PAGE_SIZE);
                f->snap_doorbell = ((const struct vmq_vmcs *)f->base)->post_doorbell;
                mask_out_fields(f->snap_header);
                memcpy(f->snap_post, f->post_slots, (size_t)f->pcap * sizeof(struct vmq_request));
                f->snap_post_prod = f->post_idx->prod;
                f->snap_rxq_cons = f->rxq_idx->cons;
                f->snap_post_cons = post_cons_true(f);
                f->snap_rxq_prod = rxq_prod_true(f);
        }
}

static void after_monitor(void) {
        static uint8_t header[VMQ_PAGE_SIZE];
        for (unsigned i = 0; i < NVM; i++) {
                struct fvm *f = &vms[i];

                /* Guest-owned bytes are the guest's. */
                memcpy(header, f->base, VMQ_PAGE_SIZE);
                mask_out_fields(header);
                FUZZ_CHECK(memcmp(header, f->snap_header, VMQ_PAGE_SIZE) == 0);
                /* the only value the monitor writes there without a poller */
                uint32_t word = ((const struct vmq_vmcs *)f->base)->post_doorbell;
                FUZZ_CHECK(word == f->snap_doorbell || word == 1);
                FUZZ_CHECK(memcmp(f->snap_post, f->post_slots,
                                  (size_t)f->pcap * sizeof(struct vmq_request)) == 0);
                FUZZ_CHECK(f->post_idx->prod == f->snap_post_prod);
                FUZZ_CHECK(f->rxq_idx->cons == f->snap_rxq_cons);

                /* The post ring: consumed only up to the producer index,
                 * and nothing while the ring is impossible. */
                if (f->post_cons_scribbled && f->post_idx->cons != f->post_cons_seen)
                        f->post_cons_scribbled = false; /* the monitor stored */
                uint32_t c0 = f->snap_post_cons, c1 = post_cons_true(f);
                uint32_t filled = f->snap_post_prod - c0;
                if (filled > f->pcap)
                        FUZZ_CHECK(c1 == c0);
                else
                        FUZZ_CHECK(c1 - c0 <= filled);

                /* The queue: its producer index is published as is, never
                 * past the guest's consumer by more than the capacity. */
                uint32_t p0 = f->snap_rxq_prod, p1 = rxq_prod_true(f);
                if (f->rxq_prod_scribbled && f->rxq_idx->prod == p1)
                        f->rxq_prod_scribbled = false;
                if (!f->rxq_prod_scribbled)
                        FUZZ_CHECK(f->rxq_idx->prod == p1);
                uint32_t cons = f->rxq_idx->cons;
                if (p0 - cons > f->qcap)
                        FUZZ_CHECK(p1 == p0);
                else
                        FUZZ_CHECK(p1 - cons <= f->qcap);
                for (uint32_t k = p0; k != p1; k++) {
                        f->slot_index[k & (f->qcap - 1)] = k;
                        f->slot_fresh[k & (f->qcap - 1)] = true;
                }
        }
}

static void drain_posts(struct fvm *f) {
        before_monitor();
        pthread_rwlock_rdlock(&mon->rw);
        vmq_monitor_drain_posts(f->vm);
        pthread_rwlock_unlock(&mon->rw);
        after_monitor();
}

static const struct fchan *chan_by_id(uint32_t id);

/* VMQ_HC_KICK on channel ch answered r: it wakes the other end of a linked
 * channel of f's, and is refused for anything else. */
static void check_kick(const struct fvm *f, uint32_t ch, int32_t r) {
        const struct fchan *c = chan_by_id(ch);
        int self = (int)(f - vms);
        if (!c || (c->end[0] != self && c->end[1] != self)) {
                FUZZ_CHECK(r == -VMQ_E_NOCHAN);
                return;
        }
        int peer = c->end[0] == self ? c->end[1] : c->end[0];
        if (!c->open)
                FUZZ_CHECK(r == -VMQ_E_CLOSED);
        else if (peer == HOST)
                FUZZ_CHECK(r == -VMQ_E_INVAL); /* no link to the host */
        else {
                FUZZ_CHECK(r == 0);
                /* the peer's next WAIT returns; take it, as that WAIT would */
                FUZZ_CHECK(atomic_exchange(&vms[peer].vm->kicked, false));
        }
}

/* One exit: the hypercall, then (as vm.c does after every exit but WAIT)
 * optionally a drain of the post ring. */
static int32_t hypercall(struct fvm *f, unsigned vcpu, unsigned nr, bool drain) {
        int32_t r;
        FUZZ_CHECK(nr != VMQ_HC_WAIT && nr != VMQ_HC_PARK && nr != VMQ_HC_EXIT);
        before_monitor();
        pthread_rwlock_rdlock(&mon->rw);
        r = vmq_monitor_hypercall(&f->vm->vcpus[vcpu], nr);
        if (drain)
                vmq_monitor_drain_posts(f->vm);
        pthread_rwlock_unlock(&mon->rw);
        after_monitor();

        FUZZ_CHECK(f->vm->vmcs->mbox[vcpu].status == r);
        switch (nr) {
        case VMQ_HC_KICK:
                check_kick(f, f->vm->vmcs->mbox[vcpu].channel, r);
                break;
        case VMQ_HC_FLUSH:
                FUZZ_CHECK(r >= 0 || r == -VMQ_E_PROTO);
                break;
        case VMQ_HC_CLOCK:
        case VMQ_HC_NOP:
                FUZZ_CHECK(r == 0);
                break;
        case VMQ_HC_SEND:
        case VMQ_HC_RELEASE:
        case VMQ_HC_CONSOLE:
                FUZZ_CHECK(r <= 0 && r > -VMQ_E_MAX);
                break;
        default:
                FUZZ_CHECK(r == -VMQ_E_NOSYS);
                break;
        }
        return r;
}

/* ---- what the guests and the host receive ---------------------------- */

static const struct fchan *chan_by_id(uint32_t id) {
        for (unsigned i = 0; i < NCHAN; i++)
                if (chans[i].id == id)
                        return &chans[i];
        return NULL;
}

static uint32_t end_id(int end) {
        return end == HOST ? VMQ_HOST_ID : vms[end].id;
}

static void check_desc(const struct fvm *f, const struct vmq_desc *d) {
        int self = (int)(f - vms);

        FUZZ_CHECK(d->reserved == 0);
        if (d->kind == VMQ_DESC_ERROR) {
                /* about the VM's own posted request */
                FUZZ_CHECK(d->src_vm == f->id);
                FUZZ_CHECK(d->error > 0 && d->error < VMQ_E_MAX);
                return;
        }
        /* Everything else comes over one of the VM's channels, from the
         * other end, as the monitor knows it. */
        const struct fchan *ch = chan_by_id(d->channel);
        FUZZ_CHECK(ch);
        FUZZ_CHECK(ch->end[0] == self || ch->end[1] == self);
        uint32_t peer = end_id(ch->end[ch->end[0] == self ? 1 : 0]);
        FUZZ_CHECK(d->src_vm == peer);
        switch (d->kind) {
        case VMQ_DESC_INLINE:
                FUZZ_CHECK(d->len <= VMQ_INLINE_MAX && d->gpa == 0);
                FUZZ_CHECK(ch->open);
                break;
        case VMQ_DESC_PAGE: {
                uint16_t how =
                        d->flags & (VMQ_DESC_F_COPIED | VMQ_DESC_F_FLIPPED | VMQ_DESC_F_SHARED);
                FUZZ_CHECK(ch->open);
                FUZZ_CHECK(how == VMQ_DESC_F_COPIED || how == VMQ_DESC_F_FLIPPED ||
                           how == VMQ_DESC_F_SHARED);
                FUZZ_CHECK(!(d->flags & VMQ_DESC_F_HUGE)); /* the pool has no 2 MiB frames */
                FUZZ_CHECK(d->len > 0 && VMQ_IS_ALIGNED(d->gpa, (uint64_t)VMQ_PAGE_SIZE));
                FUZZ_CHECK(vmq_range_within(d->gpa,
                                            VMQ_ALIGN_UP((uint64_t)d->len, (uint64_t)VMQ_PAGE_SIZE),
                                            VMQ_RX_GPA, f->rx_size));
                break;
        }
        case VMQ_DESC_HELLO: {
                struct vmq_identity id;
                if (peer == VMQ_HOST_ID)
                        vmq_monitor_host_identity(mon, &id);
                else
                        id = vms[ch->end[ch->end[0] == self ? 1 : 0]].ident;
                FUZZ_CHECK(d->len == sizeof(id) && memcmp(d->data, &id, sizeof(id)) == 0);
                break;
        }
        case VMQ_DESC_CLOSE:
                FUZZ_CHECK(!ch->open);
                break;
        default:
                FUZZ_CHECK(!"descriptor of an unknown kind");
        }
}

static void check_host_msg(const struct fchan *ch, const struct vmq_host_msg *msg) {
        int vm_end = ch->end[0] == HOST ? ch->end[1] : ch->end[0];
        FUZZ_CHECK(msg->channel == ch->id);
        FUZZ_CHECK(msg->src_vm == vms[vm_end].id);
        FUZZ_CHECK(msg->error == 0);
        switch (msg->kind) {
        case VMQ_DESC_INLINE:
                FUZZ_CHECK(ch->open && msg->len <= VMQ_INLINE_MAX);
                break;
        case VMQ_DESC_PAGE:
                FUZZ_CHECK(ch->open && msg->flags == VMQ_DESC_F_COPIED && msg->len > 0);
                break;
        case VMQ_DESC_HELLO:
                FUZZ_CHECK(msg->len == sizeof(struct vmq_identity));
                FUZZ_CHECK(memcmp(msg->data, &vms[vm_end].ident, msg->len) == 0);
                break;
        case VMQ_DESC_CLOSE:
                FUZZ_CHECK(!ch->open && msg->len == 0);
                break;
        default:
                FUZZ_CHECK(!"host message of an unknown kind");
        }
}

/* The guest takes up to n descriptors from its queue.  Returns the PAGE
 * descriptors' ranges through pages[] (up to max). */
static unsigned guest_recv(struct fvm *f, uint32_t n, struct vmq_desc *pages, unsigned max) {
        uint32_t prod = rxq_prod_true(f), cons = f->rxq_idx->cons;
        unsigned npages = 0;
        TRACE("guest-recv vm %u: up to %u, cons %u, prod %u\n", f->id, n, cons, prod);
        if (prod - cons > f->qcap) {
                /* The guest broke its own index: it starts over. */
                f->rxq_idx->cons = prod;
                return 0;
        }
        n = VMQ_MIN(n, prod - cons);
        for (uint32_t i = 0; i < n; i++) {
                uint32_t j = (cons + i) & (f->qcap - 1);
                struct vmq_desc d = f->rxq_slots[j];
                if (!f->slot_fresh[j] || f->slot_index[j] != cons + i)
                        continue; /* not what the monitor enqueued there */
                check_desc(f, &d);
                if (d.kind == VMQ_DESC_PAGE && npages < max)
                        pages[npages++] = d;
        }
        f->rxq_idx->cons = cons + n;
        return npages;
}

static int32_t release(struct fvm *f, uint64_t gpa, uint64_t len) {
        struct vmq_request *mb = &f->vm->vmcs->mbox[0];
        memset(mb, 0, sizeof(*mb));
        mb->abi = VMQ_ABI_VERSION;
        mb->gpa = gpa;
        mb->len = (uint32_t)len;
        return hypercall(f, 0, VMQ_HC_RELEASE, false);
}

static void host_drain(const struct fchan *ch) {
        for (;;) {
                struct vmq_host_msg *msg = NULL;
                before_monitor();
                int r = vmq_host_recv(mon, ch->id, 0, &msg);
                after_monitor();
                if (r < 0) {
                        FUZZ_CHECK(r == (ch->open ? -ETIMEDOUT : -EPIPE));
                        return;
                }
                check_host_msg(ch, msg);
                free(msg);
        }
}

/* ---- building requests from the input -------------------------------- */

static uint32_t pick_channel(struct fuzz_input *in) {
        uint8_t s = fuzz_u8(in);
        if (s < 0xf0)
                return chans[s % NCHAN].id;
        return s == 0xf0 ? 0 : fuzz_u32(in);
}

static uint64_t pick_gpa(struct fuzz_input *in) {
        uint8_t s = fuzz_u8(in);
        switch (s % 8) {
        case 0: /* a page of the image, heap or stack */
                return (IMAGE_PAGE0 + fuzz_u16(in) % (RAM_PAGES - IMAGE_PAGE0)) * VMQ_PAGE_SIZE;
        case 1: /* the receive window, and a little past it */
                return VMQ_RX_GPA + (uint64_t)(fuzz_u8(in) % 20) * VMQ_PAGE_SIZE;
        case 2: /* the monitor's pages: system area, VMCS, below the image */
                return (fuzz_u8(in) % IMAGE_PAGE0) * VMQ_PAGE_SIZE;
        case 3:
                return fuzz_u64(in);
        case 4: /* unaligned, in the image or in the receive window */
                return (s & 0x80 ? VMQ_RX_GPA : VMQ_IMAGE_GPA) + 1 +
                       fuzz_u16(in) % (VMQ_PAGE_SIZE - 1);
        case 5: /* no region there (the pool has no 2 MiB frames) */
                return VMQ_HUGE_GPA + (uint64_t)fuzz_u8(in) * VMQ_PAGE_SIZE;
        case 6: /* the last pages of RAM */
                return RAM_SIZE - (uint64_t)(1 + fuzz_u8(in) % 16) * VMQ_PAGE_SIZE;
        default: /* sums that wrap */
                return UINT64_MAX - (uint64_t)fuzz_u8(in) * VMQ_PAGE_SIZE;
        }
}

static uint32_t pick_len(struct fuzz_input *in) {
        uint8_t s = fuzz_u8(in);
        switch (s % 8) {
        case 0:
                return 0;
        case 1:
                return fuzz_u8(in) % (VMQ_INLINE_MAX + 1);
        case 2:
                return VMQ_INLINE_MAX;
        case 3:
                return VMQ_INLINE_MAX + 1;
        case 4:
                return VMQ_PAGE_SIZE * (1u + fuzz_u8(in) % 4) - (s >> 7);
        case 5:
                return fuzz_u16(in);
        case 6:
                return fuzz_u32(in);
        default:
                return VMQ_PAGE_SIZE * (16u + fuzz_u8(in) % 2);
        }
}

/*
 * A request as a guest writes it.  Mode 0xff takes the 160 bytes raw;
 * otherwise the bits of the mode choose what to get wrong:
 *   0x03  op: INLINE, PAGE, PAGE, any 16-bit value
 *   0x0c  src_vm: 0, own id, another VM's id, any
 *   0x20  a 64-bit tag (else 8 bits)
 *   0x40  reserved: any (else 0)
 *   0x80  abi: any (else VMQ_ABI_VERSION)
 * then flags (low 3 bits, plus one stray bit when 0x08 is set), channel,
 * gpa, len, and the inline bytes.
 */
static void build_request(struct fuzz_input *in, const struct fvm *f, struct vmq_request *req) {
        uint8_t mode = fuzz_u8(in);

        memset(req, 0, sizeof(*req));
        if (mode == 0xff) {
                fuzz_bytes(in, req, sizeof(*req));
                return;
        }
        req->abi = mode & 0x80 ? fuzz_u16(in) : VMQ_ABI_VERSION;
        switch (mode & 3) {
        case 0:
                req->op = VMQ_OP_INLINE;
                break;
        case 3:
                req->op = fuzz_u16(in);
                break;
        default:
                req->op = VMQ_OP_PAGE;
                break;
        }
        uint8_t fl = fuzz_u8(in);
        req->flags = fl & VMQ_REQ_F_ALL;
        if (fl & 0x08)
                req->flags |= 1u << (fl >> 3 & 31);
        req->channel = pick_channel(in);
        switch ((mode >> 2) & 3) {
        case 0:
                req->src_vm = 0;
                break;
        case 1:
                req->src_vm = f->id;
                break;
        case 2:
                req->src_vm = vms[(f - vms + 1) % NVM].id;
                break;
        default:
                req->src_vm = fuzz_u32(in);
                break;
        }
        req->gpa = pick_gpa(in);
        req->len = pick_len(in);
        if (mode & 0x40)
                req->reserved = fuzz_u32(in);
        req->tag = mode & 0x20 ? fuzz_u64(in) : fuzz_u8(in);
        if (req->op == VMQ_OP_INLINE)
                fuzz_bytes(in, req->data, VMQ_MIN(req->len, VMQ_INLINE_MAX));
}

/* ---- operations ------------------------------------------------------- */

enum op {
        OP_HYPERCALL,
        OP_POST,
        OP_DRAIN,
        OP_VMCS_WRITE,
        OP_GUEST_RECV,
        OP_HOST_SEND,
        OP_HOST_RECV,
        OP_MAX
};

static struct fvm *pick_vm(struct fuzz_input *in) {
        return &vms[fuzz_u8(in) % NVM];
}

static void op_hypercall(struct fuzz_input *in) {
        static const unsigned calls[] = {
                VMQ_HC_SEND,    VMQ_HC_SEND,    VMQ_HC_SEND,  VMQ_HC_SEND, VMQ_HC_FLUSH,
                VMQ_HC_RELEASE, VMQ_HC_CONSOLE, VMQ_HC_CLOCK, VMQ_HC_NOP,  VMQ_HC_KICK,
        };
        struct fvm *f = pick_vm(in);
        unsigned vcpu = fuzz_u8(in) % f->nvcpus;
        uint8_t s = fuzz_u8(in);
        unsigned nr;

        if (s % 16 < VMQ_ARRAY_SIZE(calls)) {
                nr = calls[s % 16];
        } else {
                nr = fuzz_u8(in);
                if (nr == VMQ_HC_WAIT || nr == VMQ_HC_PARK || nr == VMQ_HC_EXIT)
                        nr = VMQ_HC_MAX;
        }
        build_request(in, f, &f->vm->vmcs->mbox[vcpu]);
        const struct vmq_request *mb = &f->vm->vmcs->mbox[vcpu];
        TRACE("hypercall vm %u vcpu %u nr %u: abi %u op %u flags %#x channel %u src %u gpa %#llx "
              "len %u%s\n",
              f->id, vcpu, nr, mb->abi, mb->op, mb->flags, mb->channel, mb->src_vm,
              (unsigned long long)mb->gpa, mb->len, s & 0x80 ? ", then drain" : "");
        int32_t r = hypercall(f, vcpu, nr, s & 0x80);
        TRACE("  -> %d\n", r);
}

static void op_post(struct fuzz_input *in) {
        struct fvm *f = pick_vm(in);
        uint8_t s = fuzz_u8(in);
        uint32_t k = s % (f->pcap + 2), prod = f->post_idx->prod;

        for (uint32_t i = 0; i < k; i++)
                build_request(in, f, &f->post_slots[(prod + i) & (f->pcap - 1)]);
        switch (s >> 6) {
        case 0:
        case 1:
                prod += k;
                break;
        case 2: /* a ring more than full */
                prod = post_cons_true(f) + f->pcap + 1 + fuzz_u8(in);
                break;
        default:
                prod = fuzz_u32(in);
                break;
        }
        f->post_idx->prod = prod;
        uint32_t cons = post_cons_true(f);
        drain_posts(f);
        TRACE("post vm %u: %u entries, prod %u, cons %u -> %u\n", f->id, k, prod, cons,
              post_cons_true(f));
}

static void op_vmcs_write(struct fuzz_input *in) {
        struct fvm *f = pick_vm(in);
        size_t rxq = (uint8_t *)f->rxq_idx - f->base, post = (uint8_t *)f->post_idx - f->base;
        size_t lo, size;
        switch (fuzz_u8(in) % 5) {
        case 0: /* the header page: identity, layout, mailboxes, arguments */
                lo = 0;
                size = VMQ_PAGE_SIZE;
                break;
        case 1:
                lo = rxq;
                size = sizeof(struct vmq_ring_idx);
                break;
        case 2:
                lo = rxq + sizeof(struct vmq_ring_idx);
                size = (size_t)f->qcap * sizeof(struct vmq_desc);
                break;
        case 3:
                lo = post;
                size = sizeof(struct vmq_ring_idx);
                break;
        default:
                lo = post + sizeof(struct vmq_ring_idx);
                size = (size_t)f->pcap * sizeof(struct vmq_request);
                break;
        }
        size_t off = lo + fuzz_u16(in) % size;
        size_t want = (size_t)fuzz_u8(in) % 16 + 1; /* VMQ_MIN evaluates twice */
        size_t len = VMQ_MIN(want, lo + size - off);
        uint32_t post_cons = post_cons_true(f);
        fuzz_bytes(in, f->base + off, len);
        guest_wrote(f, off, len, post_cons);
        TRACE("vmcs-write vm %u: %zu bytes at %#zx\n", f->id, len, off);
}

static void op_guest_recv(struct fuzz_input *in) {
        struct fvm *f = pick_vm(in);
        uint8_t s = fuzz_u8(in);
        struct vmq_desc pages[8];
        unsigned n = guest_recv(f, s & 0x3f, pages, VMQ_ARRAY_SIZE(pages));
        if (s & 0x80)
                for (unsigned i = 0; i < n; i++)
                        (void)release(f, pages[i].gpa, pages[i].len);
}

static void op_host_send(struct fuzz_input *in) {
        uint8_t s = fuzz_u8(in);
        const struct fchan *ch = s < 0xf0 ? &chans[s % NCHAN] : NULL;
        uint32_t id = ch ? ch->id : fuzz_u32(in);
        size_t len;
        switch (fuzz_u8(in) % 4) {
        case 0:
                len = fuzz_u8(in) % (VMQ_INLINE_MAX + 1);
                break;
        case 1:
                len = fuzz_u16(in) % (3 * VMQ_PAGE_SIZE + 1);
                break;
        case 2:
                len = fuzz_u32(in) % HOST_DATA_MAX;
                break;
        default:
                len = 0;
                break;
        }
        uint64_t tag = fuzz_u8(in);

        before_monitor();
        int r = vmq_host_send(mon, id, host_data, len, tag);
        after_monitor();
        TRACE("host-send channel %u, %zu bytes -> %d\n", id, len, r);

        if (!ch) {
                FUZZ_CHECK(r == -ENOENT || r == -EPERM || r == -EPIPE || r == -EMSGSIZE ||
                           r == -EAGAIN || r == -ENOMEM || r == 0);
        } else if (ch->end[0] != HOST && ch->end[1] != HOST) {
                FUZZ_CHECK(r == -EPERM);
        } else if (!ch->open) {
                FUZZ_CHECK(r == -EPIPE);
        } else {
                int vm_end = ch->end[0] == HOST ? ch->end[1] : ch->end[0];
                if (len > vms[vm_end].rx_size)
                        FUZZ_CHECK(r == -EMSGSIZE);
                else /* -ENOMEM: the pool has no frame for the copy */
                        FUZZ_CHECK(r == 0 || r == -EAGAIN || r == -ENOMEM);
        }
}

static void op_host_recv(struct fuzz_input *in) {
        uint8_t s = fuzz_u8(in);
        const struct fchan *ch = s < 0xf0 ? &chans[s % NCHAN] : NULL;
        uint32_t id = ch ? ch->id : fuzz_u32(in);
        struct vmq_host_msg *msg = NULL;

        before_monitor();
        int r = vmq_host_recv(mon, id, 0, &msg);
        after_monitor();
        TRACE("host-recv channel %u -> %d (kind %d)\n", id, r, r == 0 ? msg->kind : -1);

        if (r == 0) {
                FUZZ_CHECK(msg);
                ch = chan_by_id(id);
                FUZZ_CHECK(ch);
                check_host_msg(ch, msg);
                free(msg);
        } else if (ch && ch->end[0] != HOST && ch->end[1] != HOST) {
                FUZZ_CHECK(r == -EPERM);
        } else if (ch) {
                FUZZ_CHECK(r == (ch->open ? -ETIMEDOUT : -EPIPE));
        } else {
                FUZZ_CHECK(r == -ENOENT || r == -EPERM || r == -EPIPE || r == -ETIMEDOUT);
        }
}

/* ---- reset ------------------------------------------------------------- */

static void reset_state(void) {
        TRACE("reset\n");
        /* 1. No post is pending: each post ring is empty, the monitor's
         *    consumer index as it really is. */
        for (unsigned i = 0; i < NVM; i++) {
                struct fvm *f = &vms[i];
                uint32_t c = post_cons_true(f);
                f->post_idx->cons = c;
                f->post_idx->prod = c;
                f->post_cons_scribbled = false;
        }
        /* 2. The host has taken everything. */
        for (unsigned i = 0; i < NCHAN; i++)
                if (chans[i].end[0] == HOST || chans[i].end[1] == HOST)
                        host_drain(&chans[i]);
        /* 3. Each guest has taken everything from its queue, and its header
         *    is as the monitor made it. */
        for (unsigned i = 0; i < NVM; i++) {
                struct fvm *f = &vms[i];
                uint32_t p = rxq_prod_true(f);
                f->rxq_idx->prod = p;
                f->rxq_idx->cons = p;
                f->rxq_prod_scribbled = false;
                memcpy(f->base, f->header0, VMQ_PAGE_SIZE);
        }
        /* 4. Every page received (copied, flipped or shared in) goes back.
         *    A page shared onwards cannot go until its sharer's copy has, so
         *    this takes a few rounds. */
        for (unsigned round = 0;; round++) {
                unsigned left = 0;
                for (unsigned i = 0; i < NVM; i++) {
                        struct fvm *f = &vms[i];
                        for (uint64_t gpa = VMQ_RX_GPA; gpa < VMQ_RX_GPA + f->rx_size;
                             gpa += VMQ_PAGE_SIZE) {
                                enum vmq_page_state st;
                                FUZZ_CHECK(vmq_space_page_state(f->vm->space, gpa, &st, NULL) == 0);
                                if (st == VMQ_PAGE_EMPTY)
                                        continue;
                                if (release(f, gpa, VMQ_PAGE_SIZE) < 0)
                                        left++;
                        }
                        memcpy(f->base, f->header0, VMQ_PAGE_SIZE);
                }
                if (left == 0)
                        break;
                FUZZ_CHECK(round < NVM + 1);
        }
        /* Frames are conserved: what the VMs held after set-up, no more. */
        FUZZ_CHECK(vmq_monitor_frames_free(mon, false) == frames_baseline);
}

/* ---- set-up and teardown ---------------------------------------------- */

static void teardown(void) {
        if (!mon)
                return;
        for (unsigned i = 0; i < NVM; i++)
                vmq_vm_destroy(vms[i].vm);
        FUZZ_CHECK(vmq_pool_check(mon->pool) == 0);
        size_t free_frames = vmq_monitor_frames_free(mon, false);
        size_t total = vmq_monitor_frames_total(mon, false);
        fprintf(stderr, "fuzz-request: %lu inputs; frames free %zu of %zu after teardown\n", inputs,
                free_frames, total);
        FUZZ_CHECK(free_frames == total);
        mon = vmq_monitor_free(mon);
}

static struct fvm *setup_vm(unsigned i, const char *name, unsigned vcpus, uint32_t qcap,
                            uint32_t pcap, uint64_t rx_size, const void *image, size_t size) {
        struct fvm *f = &vms[i];
        struct vmq_vm_config cfg;
        int r;

        vmq_vm_config_init(&cfg);
        cfg.name = name;
        cfg.ram_size = RAM_SIZE;
        cfg.vcpus = vcpus;
        cfg.queue_depth = qcap;
        cfg.post_depth = pcap;
        cfg.rx_size = rx_size;
        r = vmq_vm_create(mon, &cfg, image, size, &f->vm);
        if (r < 0) {
                fprintf(stderr, "fuzz-request: cannot create VM '%s': %s\n", name, strerror(-r));
                exit(EXIT_FAILURE);
        }
        f->id = vmq_vm_id(f->vm);
        vmq_vm_identity(f->vm, &f->ident);
        f->nvcpus = f->vm->nvcpus;
        FUZZ_CHECK(qcap <= MAX_QCAP);
        f->qcap = qcap;
        f->pcap = pcap;
        f->rx_size = rx_size;
        f->base = (uint8_t *)f->vm->vmcs;
        f->rxq_idx = (struct vmq_ring_idx *)(f->base + VMQ_VMCS_QUEUE_OFF);
        f->rxq_slots = (struct vmq_desc *)(f->base + VMQ_VMCS_QUEUE_SLOTS_OFF);
        f->post_idx = (struct vmq_ring_idx *)(f->base + VMQ_VMCS_POST_OFF(qcap));
        f->post_slots = (struct vmq_request *)(f->base + VMQ_VMCS_POST_SLOTS_OFF(qcap));
        f->snap_post = malloc((size_t)pcap * sizeof(struct vmq_request));
        FUZZ_CHECK(f->snap_post);
        memcpy(f->header0, f->base, VMQ_PAGE_SIZE);
        FUZZ_CHECK(vmq_vm_state(f->vm) == VMQ_VM_CREATED);
        return f;
}

static void setup_channel(unsigned i, int a, int b, enum vmq_transfer transfer, uint32_t host_depth,
                          bool closed) {
        struct vmq_channel_config cfg;
        int r;

        vmq_channel_config_init(&cfg);
        cfg.transfer = transfer;
        cfg.host_depth = host_depth;
        before_monitor();
        r = vmq_channel_open(mon, end_id(a), end_id(b), &cfg, &chans[i].id);
        after_monitor();
        if (r < 0) {
                fprintf(stderr, "fuzz-request: cannot open channel %u: %s\n", i, strerror(-r));
                exit(EXIT_FAILURE);
        }
        chans[i].end[0] = a;
        chans[i].end[1] = b;
        chans[i].open = true;
        /* The HELLOs are checked now; queues are small. */
        for (unsigned k = 0; k < 2; k++) {
                if (chans[i].end[k] == HOST)
                        host_drain(&chans[i]);
                else
                        (void)guest_recv(&vms[chans[i].end[k]], UINT32_MAX, NULL, 0);
        }
        if (closed) {
                before_monitor();
                FUZZ_CHECK(vmq_channel_close(mon, chans[i].id) == 0);
                after_monitor();
                chans[i].open = false;
                for (unsigned k = 0; k < 2; k++)
                        if (chans[i].end[k] != HOST)
                                (void)guest_recv(&vms[chans[i].end[k]], UINT32_MAX, NULL, 0);
        }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
        struct vmq_monitor_config mcfg;
        void *image = NULL;
        size_t size = 0;
        int r;

        (void)argc;
        (void)argv;
        const char *env = getenv("VMQ_FUZZ_RESET_EVERY");
        if (env && atol(env) > 0)
                reset_every = (unsigned long)atol(env);
        env = getenv("VMQ_FUZZ_TRACE");
        trace = env && strcmp(env, "1") == 0;
        const char *path = getenv("VMQ_FUZZ_GUEST");
        if (!path)
                path = VMQ_FUZZ_GUEST_IMAGE;
        r = vmq_read_file(path, 64u << 20, &image, &size);
        if (r < 0) {
                fprintf(stderr,
                        "fuzz-request: cannot read guest image '%s' (set VMQ_FUZZ_GUEST): %s\n",
                        path, strerror(-r));
                exit(EXIT_FAILURE);
        }

        vmq_monitor_config_init(&mcfg);
        mcfg.calibrate = false; /* speed: no timing per input */
        mcfg.host_driven = true;
        mcfg.pool_4k_frames = NVM * RAM_PAGES + SPARE_FRAMES;
        mcfg.pool_2m_frames = 0;
        /* libFuzzer has SIGUSR1 and SIGUSR2; no vCPU is ever kicked here. */
        mcfg.kick_signal = SIGRTMIN + 3;
        r = vmq_monitor_new(&mcfg, &mon);
        if (r < 0) {
                fprintf(stderr, "fuzz-request: cannot create a monitor: %s\n", strerror(-r));
                exit(EXIT_FAILURE);
        }
        FUZZ_CHECK(vmq_monitor_frames_free(mon, false) == vmq_monitor_frames_total(mon, false));

        /* Small queues, post rings and receive windows, so that "full" and
         * "retry later" happen within a few operations. */
        setup_vm(0, "fuzz-a", 2, 4, 4, 16 * VMQ_PAGE_SIZE, image, size);
        setup_vm(1, "fuzz-b", 1, 8, 8, 16 * VMQ_PAGE_SIZE, image, size);
        setup_vm(2, "fuzz-c", 1, 4, 4, 8 * VMQ_PAGE_SIZE, image, size);
        free(image);

        setup_channel(0, 0, 1, VMQ_TRANSFER_AUTO, 4, false);
        setup_channel(1, 0, 2, VMQ_TRANSFER_FLIP, 4, false);
        setup_channel(2, 1, 2, VMQ_TRANSFER_COPY, 4, false);
        setup_channel(3, 0, HOST, VMQ_TRANSFER_AUTO, 4, false);
        setup_channel(4, HOST, 1, VMQ_TRANSFER_AUTO, 2, false);
        setup_channel(5, 2, HOST, VMQ_TRANSFER_FLIP, 4, false);
        setup_channel(6, 2, HOST, VMQ_TRANSFER_AUTO, 4, true);

        for (size_t i = 0; i < sizeof(host_data); i++)
                host_data[i] = (uint8_t)(i * 7 + 1);
        /* Nothing has been sent yet: the VMs hold their RAM and no more. */
        frames_baseline = vmq_monitor_frames_free(mon, false);
        reset_state();
        FUZZ_CHECK(vmq_pool_check(mon->pool) == 0);
        atexit(teardown);
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct fuzz_input in = {data, size};

        while (fuzz_left(&in) > 0) {
                switch ((enum op)(fuzz_u8(&in) % OP_MAX)) {
                case OP_HYPERCALL:
                        op_hypercall(&in);
                        break;
                case OP_POST:
                        op_post(&in);
                        break;
                case OP_DRAIN: {
                        struct fvm *f = pick_vm(&in);
                        TRACE("drain vm %u\n", f->id);
                        drain_posts(f);
                        break;
                }
                case OP_VMCS_WRITE:
                        op_vmcs_write(&in);
                        break;
                case OP_GUEST_RECV:
                        op_guest_recv(&in);
                        break;
                case OP_HOST_SEND:
                        op_host_send(&in);
                        break;
                default:
                        op_host_recv(&in);
                        break;
                }
        }
        FUZZ_CHECK(vmq_pool_check(mon->pool) == 0);
        if (++inputs % reset_every == 0)
                reset_state();
        return 0;
}
