/* SPDX-License-Identifier: MIT */
/*
 * Channel links (core/link.c, guest/lib/link-ring.c) between host-driven
 * VMs: the test plays both guests with the SDK's own ring code over the
 * memory the monitor mapped, and the vCPUs' hypercalls with
 * vmq_vm_hypercall().  What a guest on KVM sees is the same memory at
 * VMQ_LINK_GPA (the e2e suite runs that).
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/util.h"
#include "core/vm.h"
#include "guest/vmq-link.h"
#include "tests/test-util.h"

static struct vmq_monitor *mon;

static void setup_links(uint32_t max_links) {
        struct vmq_monitor_config mc;
        vmq_monitor_config_init(&mc);
        mc.calibrate = false;
        mc.host_driven = true;
        mc.spin_ns = 0;
        mc.pool_4k_frames = 64 * 1024;
        mc.max_links = max_links;
        cr_assert_eq(vmq_monitor_new(&mc, &mon), 0);
}

static void setup(void) {
        setup_links(0);
}

static void teardown(void) {
        mon = vmq_monitor_free(mon);
}

TestSuite(link, .init = setup, .fini = teardown, .timeout = 120);

static struct vmq_vm *new_vm(const char *name) {
        struct vmq_vm_config vc;
        struct vmq_vm *vm = NULL;
        vmq_vm_config_init(&vc);
        vc.name = name;
        vc.ram_size = 4ull << 20;
        int r = vmq_vm_create_from_file(mon, &vc, vmq_test_guest("echo"), &vm);
        cr_assert_eq(r, 0, "create %s: %d", name, r);
        return vm;
}

static bool take(struct vmq_vm *vm, struct vmq_desc *ret) {
        return vmq_test_take(vm, ret);
}

/* The next HELLO in the VM's queue (CLOSEs of earlier channels skipped). */
static bool take_hello(struct vmq_vm *vm, struct vmq_desc *ret) {
        while (take(vm, ret))
                if (ret->kind != VMQ_DESC_CLOSE)
                        return true;
        return false;
}

/* The guest's view of gpa in its link window, as a host pointer. */
static void *link_at(struct vmq_vm *vm, uint64_t gpa) {
        cr_assert_not_null(vm->link_hva);
        cr_assert(gpa >= VMQ_LINK_GPA && gpa - VMQ_LINK_GPA < VMQ_LINK_WINDOW);
        return (uint8_t *)vm->link_hva + (gpa - VMQ_LINK_GPA);
}

/* Opens a channel, takes each end's HELLO and attaches its link (when it
 * has one; returns whether it did). */
static bool open_linked(struct vmq_vm *a, struct vmq_vm *b, uint32_t *ret_ch, struct vmq_link *la,
                        struct vmq_link *lb) {
        struct vmq_desc da, db;
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(a), vmq_vm_id(b), NULL, ret_ch), 0);
        cr_assert(take_hello(a, &da) && take_hello(b, &db), "HELLOs");
        cr_assert_eq(da.kind, VMQ_DESC_HELLO);
        cr_assert_eq(db.kind, VMQ_DESC_HELLO);
        bool linked = da.flags & VMQ_DESC_F_LINK;
        cr_assert_eq(!!(db.flags & VMQ_DESC_F_LINK), linked, "both ends or neither");
        if (!linked) {
                cr_assert_eq(da.gpa, 0);
                return false;
        }
        cr_assert_eq(vmq_link_attach(la, link_at(a, da.gpa), *ret_ch), 0);
        cr_assert_eq(vmq_link_attach(lb, link_at(b, db.gpa), *ret_ch), 0);
        return true;
}

static int32_t kick(struct vmq_vm *vm, uint32_t ch) {
        struct vmq_request *mb = &vm->vmcs->mbox[0];
        memset(mb, 0, sizeof(*mb));
        mb->abi = VMQ_ABI_VERSION;
        mb->channel = ch;
        return vmq_vm_hypercall(vm, 0, VMQ_HC_KICK);
}

static int32_t wait_links(struct vmq_vm *vm, bool links_only) {
        struct vmq_request *mb = &vm->vmcs->mbox[0];
        memset(mb, 0, sizeof(*mb));
        mb->abi = VMQ_ABI_VERSION;
        mb->flags = links_only ? VMQ_WAIT_F_LINKS : 0;
        return vmq_vm_hypercall(vm, 0, VMQ_HC_WAIT);
}

Test(link, both_ends_talk_through_it) {
        struct vmq_vm *a = new_vm("a"), *b = new_vm("b");
        struct vmq_link la, lb;
        struct vmq_link_msg m;
        uint32_t ch;
        cr_assert(open_linked(a, b, &ch, &la, &lb));

        struct vmq_channel_info info;
        cr_assert_eq(vmq_channel_get_info(mon, ch, &info), 0);
        cr_assert(info.linked);

        /* a -> b fills the ring, b -> a in the other */
        for (uint32_t i = 0; i < VMQ_LINK_CAP; i++) {
                char text[32];
                int n = snprintf(text, sizeof(text), "a to b %u", i);
                cr_assert_eq(vmq_link_try_send(&la, text, (size_t)n, i), 0, "send %u", i);
        }
        cr_assert_eq(vmq_link_try_send(&la, "x", 1, 0), -VMQ_E_AGAIN, "full");
        cr_assert_eq(vmq_link_try_send(&lb, "back", 4, 77), 0);
        for (uint32_t i = 0; i < VMQ_LINK_CAP; i++) {
                char text[32];
                int n = snprintf(text, sizeof(text), "a to b %u", i);
                cr_assert_eq(vmq_link_try_recv(&lb, &m), 0, "recv %u", i);
                cr_assert_eq(m.len, (uint32_t)n);
                cr_assert_eq(m.tag, i);
                cr_assert_eq(memcmp(m.data, text, (size_t)n), 0);
        }
        cr_assert_eq(vmq_link_try_recv(&lb, &m), -VMQ_E_AGAIN, "empty");
        cr_assert_eq(vmq_link_try_recv(&la, &m), 0);
        cr_assert_eq(m.tag, 77);
        cr_assert_eq(memcmp(m.data, "back", 4), 0);
        cr_assert_eq(vmq_link_try_send(&la, NULL, 0, 0), 0, "empty message");
        char big[VMQ_LINK_MSG_MAX + 1] = {0};
        cr_assert_eq(vmq_link_try_send(&la, big, sizeof(big), 0), -VMQ_E_LEN);

        /* batches, wrapping the ring a few times */
        struct vmq_link_msg out[20], in[20];
        uint64_t next = 0, want = 0;
        cr_assert_eq(vmq_link_try_recv(&lb, &m), 0); /* the empty one */
        cr_assert_eq(m.len, 0);
        for (int round = 0; round < 10; round++) {
                for (int i = 0; i < 20; i++) {
                        out[i].len = 8;
                        out[i].tag = next++;
                        memcpy(out[i].data, &out[i].tag, 8);
                }
                cr_assert_eq(vmq_link_try_send_batch(&la, out, 20), 20);
                int got = vmq_link_try_recv_batch(&lb, in, 20);
                cr_assert_eq(got, 20);
                for (int i = 0; i < got; i++, want++) {
                        uint64_t v;
                        memcpy(&v, in[i].data, 8);
                        cr_assert_eq(in[i].tag, want);
                        cr_assert_eq(v, want);
                }
        }
        /* nothing went through the monitor */
        struct vmq_vm_stats st;
        vmq_vm_get_stats(a, &st);
        cr_assert_eq(st.sent, 0);
        cr_assert_eq(st.exits, 0);
}

/* The wait words: a kick is asked for once per sleep, and a KICK wakes the
 * other end only. */
Test(link, a_waiter_is_kicked_once_per_sleep) {
        struct vmq_vm *a = new_vm("a"), *b = new_vm("b"), *c = new_vm("c");
        struct vmq_link la, lb;
        uint32_t ch;
        cr_assert(open_linked(a, b, &ch, &la, &lb));

        cr_assert_eq(vmq_link_try_send(&la, "1", 1, 0), 0);
        cr_assert_not(vmq_link_peer_waits_for_data(&la), "nobody sleeps");
        /* b arms (as vmq_link_recv does before it sleeps) */
        __atomic_store_n(&lb.rx_hdr->cons_wait, 3u, __ATOMIC_SEQ_CST);
        cr_assert_eq(vmq_link_try_send(&la, "2", 1, 0), 0);
        cr_assert(vmq_link_peer_waits_for_data(&la), "b sleeps");
        cr_assert_not(vmq_link_peer_waits_for_data(&la), "one kick per sleep");
        __atomic_store_n(&lb.rx_hdr->cons_wait, 5u, __ATOMIC_SEQ_CST);
        cr_assert(vmq_link_peer_waits_for_data(&la), "the next sleep");
        __atomic_store_n(&lb.rx_hdr->cons_wait, 6u, __ATOMIC_SEQ_CST);
        cr_assert_not(vmq_link_peer_waits_for_data(&la), "awake");

        /* the same for room */
        __atomic_store_n(&la.tx_hdr->prod_wait, 9u, __ATOMIC_SEQ_CST);
        cr_assert(vmq_link_peer_waits_for_room(&lb));
        cr_assert_not(vmq_link_peer_waits_for_room(&lb));

        /* KICK wakes b only, once */
        cr_assert_eq(wait_links(b, true), -VMQ_E_TIMEDOUT);
        cr_assert_eq(kick(a, ch), 0);
        cr_assert_eq(wait_links(a, true), -VMQ_E_TIMEDOUT, "the kicker is not woken");
        cr_assert_eq(wait_links(b, true), 0, "kicked");
        cr_assert_eq(wait_links(b, true), -VMQ_E_TIMEDOUT, "a kick wakes one wait");
        /* a plain WAIT also returns for a kick */
        cr_assert_eq(kick(a, ch), 0);
        cr_assert_eq(wait_links(b, false), 0);

        struct vmq_vm_stats st;
        vmq_vm_get_stats(a, &st);
        cr_assert_eq(st.kicks, 2);

        /* who may kick what */
        cr_assert_eq(kick(c, ch), -VMQ_E_NOCHAN, "not an end");
        cr_assert_eq(kick(a, 999), -VMQ_E_NOCHAN, "no such channel");
        cr_assert_eq(wait_links(b, true), -VMQ_E_TIMEDOUT, "refused kicks wake nobody");
        uint32_t hch;
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(a), VMQ_HOST_ID, NULL, &hch), 0);
        cr_assert_eq(kick(a, hch), -VMQ_E_INVAL, "the host end has no link");
        cr_assert_eq(vmq_channel_close(mon, ch), 0);
        cr_assert_eq(kick(a, ch), -VMQ_E_CLOSED);
}

/* Closing takes the link away from both ends: they find it closed, their
 * memory is no longer shared, and both are woken. */
Test(link, close_takes_it_away) {
        struct vmq_vm *a = new_vm("a"), *b = new_vm("b");
        struct vmq_link la, lb;
        struct vmq_link_msg m;
        uint32_t ch;
        cr_assert(open_linked(a, b, &ch, &la, &lb));
        cr_assert_eq(vmq_link_try_send(&la, "lost", 4, 0), 0);

        cr_assert_eq(vmq_channel_close(mon, ch), 0);
        cr_assert_eq(vmq_link_try_recv(&lb, &m), -VMQ_E_CLOSED);
        cr_assert_eq(vmq_link_try_send(&la, "late", 4, 0), -VMQ_E_CLOSED);
        cr_assert_eq(vmq_link_try_send(&lb, "late", 4, 0), -VMQ_E_CLOSED);
        cr_assert_eq(wait_links(a, true), 0, "a woken");
        cr_assert_eq(wait_links(b, true), 0, "b woken");
        /* what a writes now, b does not see */
        memset(la.tx, 0x5a, VMQ_PAGE_SIZE);
        cr_assert_eq(((uint8_t *)lb.rx)[0], 0, "no longer shared");

        struct vmq_channel_info info;
        cr_assert_eq(vmq_channel_get_info(mon, ch, &info), 0);
        cr_assert_not(info.linked);

        /* a new channel gets a link with its own id; the old HELLO's slot
         * no longer attaches for the old id */
        struct vmq_link la2, lb2;
        uint32_t ch2;
        cr_assert(open_linked(a, b, &ch2, &la2, &lb2));
        cr_assert_eq(vmq_link_try_send(&la2, "new", 3, 0), 0);
        cr_assert_eq(vmq_link_try_recv(&lb2, &m), 0);
        cr_assert_eq(vmq_link_attach(&la, la.tx_hdr, ch), -VMQ_E_NOCHAN, "old slot, closed");
}

Test(link, a_peer_that_goes_away_closes_it) {
        struct vmq_vm *a = new_vm("a"), *b = new_vm("b");
        struct vmq_link la, lb;
        struct vmq_link_msg m;
        uint32_t ch;
        cr_assert(open_linked(a, b, &ch, &la, &lb));
        vmq_vm_destroy(b);
        cr_assert_eq(vmq_link_try_recv(&la, &m), -VMQ_E_CLOSED);
        cr_assert_eq(wait_links(a, true), 0, "woken");
        struct vmq_desc d;
        cr_assert(take(a, &d));
        cr_assert_eq(d.kind, VMQ_DESC_CLOSE);
}

/* A hostile peer can write anything into the link: the other end notices,
 * reports VMQ_E_PROTO for that link from then on, and nothing else breaks. */
Test(link, a_hostile_peer_breaks_only_its_own_link) {
        struct vmq_vm *a = new_vm("a"), *b = new_vm("b"), *c = new_vm("c");
        struct vmq_link la, lb, la2, lc;
        struct vmq_link_msg m;
        uint32_t ch, ch2;
        cr_assert(open_linked(a, b, &ch, &la, &lb));
        cr_assert(open_linked(a, c, &ch2, &la2, &lc));

        /* b claims to have written 1000 messages */
        __atomic_store_n(&lb.tx_hdr->prod, 1000u, __ATOMIC_RELEASE);
        cr_assert_eq(vmq_link_try_recv(&la, &m), -VMQ_E_PROTO);
        __atomic_store_n(&lb.tx_hdr->prod, 0u, __ATOMIC_RELEASE);
        cr_assert_eq(vmq_link_try_recv(&la, &m), -VMQ_E_PROTO, "sticky");
        cr_assert_eq(vmq_link_try_send(&la, "x", 1, 0), -VMQ_E_PROTO, "both ways");

        /* the other link of a is untouched */
        cr_assert_eq(vmq_link_try_send(&la2, "fine", 4, 1), 0);
        cr_assert_eq(vmq_link_try_recv(&lc, &m), 0);
        cr_assert_eq(m.tag, 1);

        /* a message longer than a slot */
        struct vmq_link la3, lb3;
        uint32_t ch3;
        cr_assert(open_linked(a, b, &ch3, &la3, &lb3));
        cr_assert_eq(vmq_link_try_send(&lb3, "ok", 2, 0), 0);
        __atomic_store_n(&lb3.tx[0].len, 5000u, __ATOMIC_RELEASE);
        cr_assert_eq(vmq_link_try_recv(&la3, &m), -VMQ_E_PROTO);

        /* a consumer index that ran ahead of what was written */
        struct vmq_link la4, lb4;
        uint32_t ch4;
        cr_assert(open_linked(a, b, &ch4, &la4, &lb4));
        __atomic_store_n(&lb4.rx_hdr->cons, 7u, __ATOMIC_RELEASE);
        cr_assert_eq(vmq_link_try_send(&la4, "x", 1, 0), -VMQ_E_PROTO);

        /* a forged "closed", or another channel's id, reads as closed */
        struct vmq_link la5, lb5;
        uint32_t ch5;
        cr_assert(open_linked(a, b, &ch5, &la5, &lb5));
        __atomic_store_n(&lb5.tx_hdr->channel, ch2, __ATOMIC_RELEASE);
        cr_assert_eq(vmq_link_try_recv(&la5, &m), -VMQ_E_CLOSED);

        /* kicks from the scribbler only wake a; the monitor never read the
         * link, so a and its queue are fine */
        for (int i = 0; i < 1000; i++)
                cr_assert_eq(kick(b, ch), 0);
        cr_assert_eq(wait_links(a, true), 0);
        cr_assert_eq(wait_links(a, true), -VMQ_E_TIMEDOUT);
        struct vmq_request *mb = &b->vmcs->mbox[0];
        memset(mb, 0, sizeof(*mb));
        mb->abi = VMQ_ABI_VERSION;
        mb->op = VMQ_OP_INLINE;
        mb->channel = ch;
        mb->len = 3;
        memcpy(mb->data, "hey", 3);
        cr_assert_eq(vmq_vm_hypercall(b, 0, VMQ_HC_SEND), 0);
        struct vmq_desc d;
        cr_assert(take(a, &d));
        cr_assert_eq(d.kind, VMQ_DESC_INLINE);
        cr_assert_eq(d.src_vm, vmq_vm_id(b));
        cr_assert_eq(vmq_pool_check(mon->pool), 0);
}

/* The link window is not guest memory to the request path: nothing there
 * can be sent, released or printed. */
Test(link, the_window_is_out_of_every_request) {
        struct vmq_vm *a = new_vm("a"), *b = new_vm("b");
        struct vmq_link la, lb;
        uint32_t ch;
        cr_assert(open_linked(a, b, &ch, &la, &lb));
        uint64_t gpa = VMQ_LINK_GPA + (uint64_t)((uint8_t *)la.tx_hdr - (uint8_t *)a->link_hva);
        struct vmq_request *mb = &a->vmcs->mbox[0];

        memset(mb, 0, sizeof(*mb));
        mb->abi = VMQ_ABI_VERSION;
        mb->op = VMQ_OP_PAGE;
        mb->channel = ch;
        mb->gpa = gpa;
        mb->len = VMQ_PAGE_SIZE;
        cr_assert_eq(vmq_vm_hypercall(a, 0, VMQ_HC_SEND), -VMQ_E_RANGE, "send");
        mb->op = VMQ_OP_NONE;
        cr_assert_eq(vmq_vm_hypercall(a, 0, VMQ_HC_RELEASE), -VMQ_E_RANGE, "release");
        mb->len = 16;
        cr_assert_eq(vmq_vm_hypercall(a, 0, VMQ_HC_CONSOLE), -VMQ_E_RANGE, "console");
}

/* Channels open without a link when there is none to have, and get one
 * again once a link is freed. */
Test(link, channels_open_without_when_links_run_out) {
        mon = vmq_monitor_free(mon);
        setup_links(3);
        struct vmq_vm *a = new_vm("a"), *b = new_vm("b");
        struct vmq_link la, lb;
        uint32_t ch[4];
        for (int i = 0; i < 3; i++)
                cr_assert(open_linked(a, b, &ch[i], &la, &lb), "link %d", i);
        cr_assert_not(open_linked(a, b, &ch[3], &la, &lb), "the monitor's limit");
        struct vmq_channel_info info;
        cr_assert_eq(vmq_channel_get_info(mon, ch[3], &info), 0);
        cr_assert_not(info.linked);
        cr_assert_eq(vmq_channel_close(mon, ch[0]), 0);
        uint32_t again;
        cr_assert(open_linked(a, b, &again, &la, &lb), "freed by the close");

        /* the host end, and a channel opened with link = false */
        struct vmq_desc d;
        uint32_t hch, plain;
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(a), VMQ_HOST_ID, NULL, &hch), 0);
        cr_assert(take(a, &d));
        cr_assert_eq(d.flags & VMQ_DESC_F_LINK, 0);
        cr_assert_eq(vmq_channel_close(mon, ch[1]), 0);
        struct vmq_channel_config cc;
        vmq_channel_config_init(&cc);
        cc.link = false;
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(a), vmq_vm_id(b), &cc, &plain), 0);
        cr_assert(take(a, &d));
        cr_assert_eq(d.flags & VMQ_DESC_F_LINK, 0);
}

/* Every VM has VMQ_LINK_SLOTS slots; the monitor's own limit aside, the
 * next channel opens without a link. */
Test(link, a_vm_has_a_slot_per_link) {
        struct vmq_vm *a = new_vm("a");
        struct vmq_vm *peers[VMQ_LINK_SLOTS / 64 + 1];
        struct vmq_link la, lb;
        uint32_t ch;
        unsigned linked = 0;
        for (unsigned i = 0; i < VMQ_ARRAY_SIZE(peers); i++) {
                char name[16];
                snprintf(name, sizeof(name), "p%u", i);
                peers[i] = new_vm(name);
        }
        for (unsigned i = 0; i < VMQ_LINK_SLOTS + 1; i++)
                if (open_linked(a, peers[i / 64], &ch, &la, &lb))
                        linked++;
        cr_assert_eq(linked, VMQ_LINK_SLOTS);
        cr_assert_eq(vmq_link_try_send(&la, "x", 1, 0), 0, "the last one made works");
}

/* No mapping or fd outlives the channels and VMs that had links. */
static unsigned count_link_maps(void) {
        FILE *f = fopen("/proc/self/maps", "re");
        char line[512];
        unsigned n = 0;
        cr_assert_not_null(f);
        while (fgets(line, sizeof(line), f))
                if (strstr(line, "vmq-link"))
                        n++;
        fclose(f);
        return n;
}

Test(link, nothing_outlives_links) {
        int fds = vmq_test_count_fds();
        for (int round = 0; round < 3; round++) {
                struct vmq_vm *a = new_vm("a"), *b = new_vm("b");
                struct vmq_link la, lb;
                uint32_t ch;
                for (int i = 0; i < 20; i++) {
                        cr_assert(open_linked(a, b, &ch, &la, &lb));
                        if (i % 2)
                                cr_assert_eq(vmq_channel_close(mon, ch), 0);
                }
                cr_assert_gt(count_link_maps(), 0);
                vmq_vm_destroy(a);
                vmq_vm_destroy(b);
                cr_assert_eq(count_link_maps(), 0, "round %d", round);
                cr_assert_eq(mon->links, 0);
        }
        cr_assert_eq(vmq_test_count_fds(), fds);
}

/* Two threads stream through a link with the SDK's code, each waiting for
 * the other through the monitor the way vmq_link_send/recv do. */
struct streamer {
        struct vmq_vm *vm;
        struct vmq_link *l;
        uint32_t n;
        uint64_t sum;
        int error;
        unsigned waits;
};

static bool tx_full(const struct vmq_link *l) {
        return l->prod - __atomic_load_n(&l->tx_hdr->cons, __ATOMIC_ACQUIRE) == VMQ_LINK_CAP;
}

static bool rx_empty(const struct vmq_link *l) {
        return __atomic_load_n(&l->rx_hdr->prod, __ATOMIC_ACQUIRE) == l->cons;
}

/* Sleeps as vmq_link_send/recv do: arms the wait word, looks once more,
 * and waits for a kick only while there is still nothing to do. */
static void sleep_on(struct streamer *s, uint32_t *word, uint32_t *seq,
                     bool (*nothing)(const struct vmq_link *l)) {
        *seq += 2;
        __atomic_store_n(word, *seq | 1, __ATOMIC_RELAXED);
        VMQ_FULL_BARRIER();
        if (nothing(s->l)) {
                s->waits++;
                while (wait_links(s->vm, true) == -VMQ_E_TIMEDOUT)
                        sched_yield();
        }
        __atomic_store_n(word, *seq, __ATOMIC_RELAXED);
}

static void *producer(void *arg) {
        struct streamer *s = arg;
        uint32_t seq = 0;
        for (uint32_t i = 0; i < s->n;) {
                uint64_t v = (uint64_t)i * 2654435761u;
                int r = vmq_link_try_send(s->l, &v, sizeof(v), i);
                if (r == -VMQ_E_AGAIN) {
                        sleep_on(s, &s->l->tx_hdr->prod_wait, &seq, tx_full);
                        continue;
                }
                if (r < 0) {
                        s->error = r;
                        break;
                }
                s->sum += v;
                i++;
                if (vmq_link_peer_waits_for_data(s->l))
                        kick(s->vm, s->l->channel);
        }
        return NULL;
}

static void *consumer(void *arg) {
        struct streamer *s = arg;
        struct vmq_link_msg m[8];
        uint32_t seq = 0, got = 0;
        while (got < s->n) {
                int r = vmq_link_try_recv_batch(s->l, m, 8);
                if (r == 0) {
                        sleep_on(s, &s->l->rx_hdr->cons_wait, &seq, rx_empty);
                        continue;
                }
                if (r < 0) {
                        s->error = r;
                        break;
                }
                for (int i = 0; i < r; i++, got++) {
                        uint64_t v;
                        memcpy(&v, m[i].data, 8);
                        if (m[i].tag != got || v != (uint64_t)got * 2654435761u) {
                                s->error = -VMQ_E_INVAL;
                                return NULL;
                        }
                        s->sum += v;
                }
                if (vmq_link_peer_waits_for_room(s->l))
                        kick(s->vm, s->l->channel);
        }
        return NULL;
}

Test(link, two_threads_stream_and_no_wakeup_is_lost) {
        struct vmq_vm *a = new_vm("a"), *b = new_vm("b");
        struct vmq_link la, lb;
        uint32_t ch;
        cr_assert(open_linked(a, b, &ch, &la, &lb));
        uint32_t n = (uint32_t)vmq_test_scale(200000);
        struct streamer tx = {.vm = a, .l = &la, .n = n}, rx = {.vm = b, .l = &lb, .n = n};
        pthread_t t1, t2;
        cr_assert_eq(pthread_create(&t1, NULL, producer, &tx), 0);
        cr_assert_eq(pthread_create(&t2, NULL, consumer, &rx), 0);
        pthread_join(t1, NULL);
        pthread_join(t2, NULL);
        cr_assert_eq(tx.error, 0);
        cr_assert_eq(rx.error, 0, "stream broken: %d", rx.error);
        cr_assert_eq(tx.sum, rx.sum);
        cr_log_info("%u messages; the producer slept %u times, the consumer %u", n, tx.waits,
                    rx.waits);
}

/* A link the host cannot map leaves the channel without one, and every slot
 * it touched readable and closed (a guest may still read an old link that
 * had the slot). */
Test(link, a_link_the_host_cannot_map_leaves_readable_closed_slots) {
        struct vmq_vm *a = new_vm("a"), *b = new_vm("b");
        struct vmq_link la, lb;
        struct vmq_link_msg m;
        uint32_t ch, ch2;
        cr_assert(open_linked(a, b, &ch, &la, &lb));
        uint32_t a_slot = a->mon->channels[ch]->link_slot[0];
        /* end 0's two halves map, end 1's second fails */
        for (unsigned after = 4; after >= 1; after--) {
                vmq_monitor_fail_link_mmap(mon, after);
                cr_assert_not(open_linked(a, b, &ch2, &la, &lb), "failure at mmap %u", after);
                struct vmq_channel_info info;
                cr_assert_eq(vmq_channel_get_info(mon, ch2, &info), 0);
                cr_assert_not(info.linked);
                /* the slots it tried: the ones after the first link's */
                for (uint32_t s = a_slot + 1; s <= a_slot + 5 - after; s++) {
                        const struct vmq_link_hdr *h =
                                (const void *)((uint8_t *)a->link_hva + (size_t)s * VMQ_LINK_SIZE);
                        /* readable (a fault would crash the test), closed */
                        cr_assert_eq(__atomic_load_n(&h->state, __ATOMIC_RELAXED), VMQ_LINK_CLOSED,
                                     "slot %u", s);
                }
        }
        cr_assert_eq(mon->links, 1);
        /* the first link still works, and new ones can be made */
        struct vmq_link la1, lb1;
        cr_assert(open_linked(a, b, &ch2, &la1, &lb1));
        cr_assert_eq(vmq_link_try_send(&la1, "x", 1, 0), 0);
        cr_assert_eq(vmq_link_try_recv(&lb1, &m), 0);
}
