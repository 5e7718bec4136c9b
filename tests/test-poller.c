/* SPDX-License-Identifier: MIT */
/*
 * The post-ring poller and the notification rule (core/poller.c,
 * "Notifications" in core/vmq-abi.h), on host-driven VMs: this process's
 * threads play the guests, posting to their post rings and ringing the
 * doorbell exactly when the SDK would (after a full barrier, only when the
 * monitor's word post_doorbell says 1).  No exit and no flush is made, so
 * every message that arrives was carried by the poller; one that never
 * arrives is a lost wake-up.  Runs on any host, and under ThreadSanitizer.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/util.h"
#include "core/vm.h"
#include "tests/test-util.h"

static struct vmq_monitor *mon;

/* Per VM: doorbells rung (the SDK's count, against post_doorbells_seen). */
static uint32_t rings[64];

static void setup_poll(uint32_t poll_ns) {
        struct vmq_monitor_config mc;
        vmq_monitor_config_init(&mc);
        mc.calibrate = false; /* "auto" as vmq_transfer_plan_default() says */
        mc.host_driven = true;
        mc.pool_4k_frames = 256 * 1024;
        mc.poll_ns = poll_ns;
        cr_assert_eq(vmq_monitor_new(&mc, &mon), 0);
}

static void setup(void) {
        /* Short: the poller arms and disarms often, which is where a lost
         * wake-up would hide. */
        setup_poll(20000);
}

static void teardown(void) {
        mon = vmq_monitor_free(mon);
        memset(rings, 0, sizeof(rings));
}

TestSuite(poller, .init = setup, .fini = teardown, .timeout = 120);

static struct vmq_vm *new_vm(const char *name, uint32_t post_depth) {
        struct vmq_vm_config vc;
        struct vmq_vm *vm = NULL;
        vmq_vm_config_init(&vc);
        vc.name = name;
        vc.ram_size = 4ull << 20;
        if (post_depth)
                vc.post_depth = post_depth;
        int r = vmq_vm_create_from_file(mon, &vc, vmq_test_guest("echo"), &vm);
        cr_assert_eq(r, 0, "create %s: %d", name, r);
        return vm;
}

static uint32_t open_ch(struct vmq_vm *a, struct vmq_vm *b) {
        uint32_t id;
        cr_assert_eq(vmq_channel_open(mon, vmq_vm_id(a), vmq_vm_id(b), NULL, &id), 0);
        return id;
}

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pause_ns(uint64_t ns) {
        struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
        nanosleep(&ts, NULL);
}

/* ---- the guest's side, as the SDK does it --------------------------------- */

static struct vmq_ring_idx *post_idx(struct vmq_vm *vm) {
        return (struct vmq_ring_idx *)((uint8_t *)vm->vmcs + vm->vmcs->layout.post_off);
}

static struct vmq_request *post_slots(struct vmq_vm *vm) {
        return (struct vmq_request *)((uint8_t *)vm->vmcs + vm->vmcs->layout.post_slots_off);
}

/* The guest's doorbell, counted as the SDK counts it. */
static void ring(struct vmq_vm *vm) {
        rings[vmq_vm_id(vm) % 64]++;
        cr_assert_eq(vmq_vm_ring_doorbell(vm), 0);
}

/* Posts one inline message if there is room; false when the ring is full.
 * Rings the doorbell as the SDK would, unless `quiet`. */
static bool post_inline(struct vmq_vm *vm, uint32_t ch, uint64_t tag, bool quiet,
                        atomic_uint *rang) {
        struct vmq_ring_idx *idx = post_idx(vm);
        uint32_t cap = vm->vmcs->layout.post_cap;
        uint32_t prod = __atomic_load_n(&idx->prod, __ATOMIC_RELAXED);
        if (prod - __atomic_load_n(&idx->cons, __ATOMIC_ACQUIRE) >= cap)
                return false;
        struct vmq_request r = {.abi = VMQ_ABI_VERSION, .op = VMQ_OP_INLINE, .channel = ch};
        r.len = 8;
        r.tag = tag;
        memcpy(r.data, &tag, 8);
        memcpy(&post_slots(vm)[prod & (cap - 1)], &r, sizeof(r));
        __atomic_store_n(&idx->prod, prod + 1, __ATOMIC_RELEASE);
        if (quiet)
                return true;
        VMQ_FULL_BARRIER();
        if (__atomic_load_n(&vm->vmcs->post_doorbell, __ATOMIC_RELAXED)) {
                unsigned k = vmq_vm_id(vm) % 64;
                if (__atomic_load_n(&vm->vmcs->post_doorbells_seen, __ATOMIC_RELAXED) != rings[k])
                        return true; /* a doorbell is still waiting */
                ring(vm);
                if (rang)
                        atomic_fetch_add(rang, 1);
        }
        return true;
}

/* Takes one descriptor from the VM's queue. */
static bool take(struct vmq_vm *vm, struct vmq_desc *ret) {
        return vmq_test_take(vm, ret);
}

/* ---- a stream, with pauses around the poller's idle time -------------------- */

struct stream {
        struct vmq_vm *tx, *rx;
        uint32_t ch;
        uint32_t count;
        uint32_t seed;
        uint32_t pause_every; /* a pause after one message in this many (0: 64) */
        atomic_uint rang;
        atomic_uint received;
        atomic_bool out_of_order;
        atomic_bool stop;
};

static void *producer(void *arg) {
        struct stream *s = arg;
        uint32_t seed = s->seed;
        for (uint32_t i = 0; i < s->count && !atomic_load(&s->stop);) {
                if (!post_inline(s->tx, s->ch, i, false, &s->rang)) {
                        sched_yield();
                        continue;
                }
                i++;
                seed = seed * 1103515245u + 12345u;
                /* Now and then a pause shorter, about as long, or longer
                 * than poll_ns: the poller keeps polling, arms right now,
                 * or sleeps. */
                switch ((seed >> 16) % (s->pause_every ? s->pause_every : 64)) {
                case 0:
                        pause_ns(5000);
                        break;
                case 1:
                        pause_ns(20000);
                        break;
                case 2:
                        pause_ns(60000);
                        break;
                default:
                        break;
                }
        }
        return NULL;
}

/* The receiving guest, as vmq_recv() does it: an empty queue is watched
 * for a while, then the guest waits in the monitor (an exit, which also
 * lets through senders stalled on its full queue; host-driven, it does not
 * block). */
static void *consumer(void *arg) {
        struct stream *s = arg;
        struct vmq_desc d;
        uint64_t want = 0, empty_since = 0;
        while (!atomic_load(&s->stop) && atomic_load(&s->received) < s->count) {
                if (!take(s->rx, &d)) {
                        uint64_t t = now_ns();
                        if (!empty_since)
                                empty_since = t;
                        if (t - empty_since > 30000) {
                                (void)vmq_vm_hypercall(s->rx, 0, VMQ_HC_WAIT);
                                empty_since = 0;
                        }
                        sched_yield();
                        continue;
                }
                empty_since = 0;
                if (d.kind == VMQ_DESC_HELLO)
                        continue;
                if (d.kind != VMQ_DESC_INLINE || d.tag != want)
                        atomic_store(&s->out_of_order, true);
                want = d.tag + 1;
                atomic_fetch_add(&s->received, 1);
        }
        return NULL;
}

/* Runs a stream to its end; false if it stalled for stall_ms. */
static bool run_stream(struct stream *s, int stall_ms) {
        pthread_t p, c;
        cr_assert_eq(pthread_create(&c, NULL, consumer, s), 0);
        cr_assert_eq(pthread_create(&p, NULL, producer, s), 0);
        unsigned last = 0;
        uint64_t since = now_ns();
        bool ok = true;
        while (atomic_load(&s->received) < s->count) {
                pause_ns(1000000);
                unsigned got = atomic_load(&s->received);
                if (got != last) {
                        last = got;
                        since = now_ns();
                } else if (now_ns() - since > (uint64_t)stall_ms * 1000000ull) {
                        struct vmq_ring_idx *pi = post_idx(s->tx);
                        fprintf(stderr,
                                "stream stalled: %u of %u received; tx posted-not-taken %u, "
                                "word %u, polled %d, stalled_on %u; rx queue prod %u cons %u; seen "
                                "%u rings %u\n",
                                got, s->count,
                                __atomic_load_n(&pi->prod, __ATOMIC_RELAXED) -
                                        __atomic_load_n(&pi->cons, __ATOMIC_RELAXED),
                                __atomic_load_n(&s->tx->vmcs->post_doorbell, __ATOMIC_RELAXED),
                                (int)atomic_load(&s->tx->polled), atomic_load(&s->tx->stalled_on),
                                s->rx->rxq.idx->prod, s->rx->rxq.idx->cons,
                                s->tx->vmcs->post_doorbells_seen, rings[vmq_vm_id(s->tx) % 64]);
                        ok = false;
                        break;
                }
        }
        atomic_store(&s->stop, true);
        pthread_join(p, NULL);
        pthread_join(c, NULL);
        return ok;
}

Test(poller, a_stream_arrives_whole_and_in_order_without_exits) {
        struct stream s = {.count = (uint32_t)vmq_test_scale(60000), .seed = 1};
        s.tx = new_vm("tx", 64);
        s.rx = new_vm("rx", 0);
        s.ch = open_ch(s.tx, s.rx);
        struct vmq_vm_stats before;
        vmq_vm_get_stats(s.tx, &before);

        bool ok = run_stream(&s, vmq_test_allow_ms(2000));
        struct vmq_vm_stats st;
        vmq_vm_get_stats(s.tx, &st);
        cr_assert(ok,
                  "the stream stalled at %u of %u messages with %u posted and not taken "
                  "(a lost wake-up): doorbells %u, word %u",
                  atomic_load(&s.received), s.count,
                  __atomic_load_n(&post_idx(s.tx)->prod, __ATOMIC_RELAXED) -
                          __atomic_load_n(&post_idx(s.tx)->cons, __ATOMIC_RELAXED),
                  atomic_load(&s.rang), s.tx->vmcs->post_doorbell);
        cr_assert_not(atomic_load(&s.out_of_order), "messages arrived out of order");
        cr_assert_eq(st.exits, before.exits, "no exit was made");
        cr_assert_eq(st.posted - before.posted, s.count);
        /* The poller carried most of them without a doorbell. */
        cr_assert_gt(atomic_load(&s.rang), 0u);
        cr_assert_lt(atomic_load(&s.rang), s.count / 4, "%u doorbells for %u messages",
                     atomic_load(&s.rang), s.count);
        cr_assert_eq(st.doorbells, atomic_load(&s.rang), "each doorbell counted once");
}

Test(poller, a_quiet_vm_is_asked_for_doorbells_again) {
        struct vmq_vm *a = new_vm("a", 0), *b = new_vm("b", 0);
        uint32_t ch = open_ch(a, b);
        struct vmq_desc d;
        cr_assert_eq(a->vmcs->post_doorbell, 1u, "no polling before the first doorbell");
        cr_assert(post_inline(a, ch, 7, false, NULL));
        uint64_t t0 = now_ns();
        bool got = false;
        while (!got && now_ns() - t0 < 2000000000ull)
                got = take(b, &d) && d.kind == VMQ_DESC_INLINE;
        cr_assert(got, "the doorbell brought the message");
        /* poll_ns (20 us) later the poller stops polling a and says so. */
        t0 = now_ns();
        while (atomic_load(&a->polled) && now_ns() - t0 < 2000000000ull)
                pause_ns(100000);
        cr_assert_not(atomic_load(&a->polled));
        cr_assert_eq(__atomic_load_n(&a->vmcs->post_doorbell, __ATOMIC_RELAXED), 1u);
}

/* A guest that clears the word itself (or never reads it) and does not ring:
 * its posts wait for its next exit, and nobody else notices. */
Test(poller, a_guest_that_scribbles_on_the_word_loses_only_its_own_doorbells) {
        struct stream s = {.count = (uint32_t)vmq_test_scale(20000), .seed = 2};
        struct vmq_vm *h = new_vm("hostile", 0), *v = new_vm("victim", 0);
        uint32_t hch = open_ch(h, v);
        struct vmq_desc d;
        s.tx = new_vm("tx", 64);
        s.rx = new_vm("rx", 0);
        s.ch = open_ch(s.tx, s.rx);

        __atomic_store_n(&h->vmcs->post_doorbell, 0, __ATOMIC_RELAXED);
        cr_assert(post_inline(h, hch, 1, true, NULL));
        /* Garbage in the rest of its VMCS notification block, too. */
        memset(h->vmcs->reserved2, 0xff, sizeof(h->vmcs->reserved2));
        cr_assert(run_stream(&s, vmq_test_allow_ms(2000)), "the other stream went on");
        while (take(v, &d) && d.kind == VMQ_DESC_HELLO)
                ;
        cr_assert_neq(d.kind, VMQ_DESC_INLINE, "nothing carried the unannounced post");
        /* Its next exit (any hypercall) drains it. */
        cr_assert_eq(vmq_vm_hypercall(h, 0, VMQ_HC_NOP), 0);
        cr_assert(take(v, &d));
        cr_assert_eq(d.kind, VMQ_DESC_INLINE);
        cr_assert_eq(d.tag, 1u);
}

/* Corrupt post-ring indices while polled: counted as VMQ_E_PROTO, the poller
 * and the other VMs go on. */
Test(poller, corrupt_indices_while_polled_hurt_only_that_vm) {
        struct stream s = {.count = (uint32_t)vmq_test_scale(20000), .seed = 3};
        struct vmq_vm *h = new_vm("hostile", 0), *v = new_vm("victim", 0);
        uint32_t hch = open_ch(h, v);
        s.tx = new_vm("tx", 64);
        s.rx = new_vm("rx", 0);
        s.ch = open_ch(s.tx, s.rx);

        cr_assert(post_inline(h, hch, 1, false, NULL)); /* now polled */
        __atomic_store_n(&post_idx(h)->prod, 0x80000000u, __ATOMIC_RELEASE);
        ring(h);
        cr_assert(run_stream(&s, vmq_test_allow_ms(2000)));
        struct vmq_vm_stats st;
        vmq_vm_get_stats(h, &st);
        cr_assert_gt(st.error[VMQ_E_PROTO], 0u);
}

/* A receiver that never reads: the sender's head stalls.  That is no work:
 * the poller stops polling the sender instead of spinning on it, and the
 * receiver's next WAIT lets the head through. */
Test(poller, a_stalled_head_is_not_polled_forever) {
        struct vmq_vm *a = new_vm("a", 0), *b = new_vm("b", 0);
        uint32_t ch = open_ch(a, b);
        uint32_t depth = b->vmcs->layout.queue_cap, sent = 0;
        struct vmq_desc d;

        /* b's queue holds the HELLO and depth - 1 messages; the rest wait. */
        while (sent < depth + 4)
                if (post_inline(a, ch, sent, false, NULL))
                        sent++;
        uint64_t t0 = now_ns();
        while ((atomic_load(&a->polled) || atomic_load(&a->stalled_on) == VMQ_NO_VM) &&
               now_ns() - t0 < 2000000000ull)
                pause_ns(100000);
        cr_assert_neq(atomic_load(&a->stalled_on), VMQ_NO_VM, "a's head is stalled on b");
        cr_assert_not(atomic_load(&a->polled), "the poller stopped polling a stalled ring");

        /* The receiver reads and waits: the stalled requests go through. */
        uint32_t got = 0;
        t0 = now_ns();
        while (got < sent && now_ns() - t0 < 5000000000ull) {
                while (take(b, &d))
                        if (d.kind == VMQ_DESC_INLINE)
                                got++;
                (void)vmq_vm_hypercall(b, 0, VMQ_HC_WAIT);
        }
        cr_assert_eq(got, sent);
}

/* One VM floods its ring without pause; another's messages still get
 * through: the poller takes at most a budget per VM and pass, so a VM that
 * rings while another floods is served within a few passes.  Checked as
 * liveness (each of the other VM's messages arrives while the flood runs),
 * not as a time or a count: on a loaded 2-CPU host this thread may be off
 * the CPU for milliseconds while the poller carries thousands of flood
 * requests, so neither bounds anything the poller does.  The worst count
 * is logged. */
Test(poller, a_flood_does_not_starve_another_vm) {
        struct stream flood = {.count = UINT32_MAX, .seed = 4};
        flood.tx = new_vm("flood", 256);
        flood.rx = new_vm("sink", 0);
        flood.ch = open_ch(flood.tx, flood.rx);
        struct vmq_vm *a = new_vm("a", 0), *b = new_vm("b", 0);
        uint32_t ch = open_ch(a, b);
        pthread_t p, c;
        cr_assert_eq(pthread_create(&c, NULL, consumer, &flood), 0);
        cr_assert_eq(pthread_create(&p, NULL, producer, &flood), 0);

        uint64_t worst = 0;
        struct vmq_desc d;
        int rounds = vmq_test_scale(200);
        for (int i = 0; i < rounds; i++) {
                uint64_t f0 = atomic_load(&flood.tx->st_sent);
                while (!post_inline(a, ch, (uint64_t)i, false, NULL))
                        sched_yield();
                uint64_t t0 = now_ns();
                for (;;) {
                        if (take(b, &d) && d.kind == VMQ_DESC_INLINE)
                                break;
                        cr_assert_lt(now_ns() - t0, 10000000000ull, "message %d never came", i);
                }
                /* (a delivery that fails is counted, then taken back) */
                int64_t carried = (int64_t)(atomic_load(&flood.tx->st_sent) - f0);
                if (carried > (int64_t)worst)
                        worst = (uint64_t)carried;
                pause_ns(200000);
        }
        atomic_store(&flood.stop, true);
        pthread_join(p, NULL);
        pthread_join(c, NULL);
        cr_assert_gt(atomic_load(&flood.received), 0u, "the flood went through too");
        cr_log_info("at most %lu flood requests carried while one of another VM's messages "
                    "waited",
                    (unsigned long)worst);
}

/* CPU time (user + system, clock ticks) of this process's thread named
 * `name`, or -1. */
static long thread_ticks(const char *name) {
        DIR *dir = opendir("/proc/self/task");
        struct dirent *e;
        long ticks = -1;
        cr_assert_not_null(dir);
        while ((e = readdir(dir))) {
                char path[300], buf[1024];
                if (e->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "/proc/self/task/%s/stat", e->d_name);
                FILE *f = fopen(path, "re");
                if (!f)
                        continue;
                size_t n = fread(buf, 1, sizeof(buf) - 1, f);
                fclose(f);
                buf[n] = 0;
                char *open = strchr(buf, '('), *close = strrchr(buf, ')');
                if (!open || !close || (size_t)(close - open - 1) != strlen(name) ||
                    strncmp(open + 1, name, strlen(name)) != 0)
                        continue;
                unsigned long ut, st;
                /* fields after the name: state, then 10 more, then utime stime */
                if (sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut,
                           &st) == 2)
                        ticks = (long)(ut + st);
        }
        closedir(dir);
        return ticks;
}

Test(poller, many_quiet_vms_cost_the_poller_nothing) {
        int n = vmq_test_scale(200);
        struct vmq_vm **vms = calloc((size_t)n, sizeof(*vms));
        cr_assert_not_null(vms);
        for (int i = 0; i < n; i++) {
                char name[32];
                snprintf(name, sizeof(name), "idle%d", i);
                vms[i] = new_vm(name, 0);
                ring(vms[i]); /* polled for a moment */
        }
        uint64_t t0 = now_ns();
        for (int i = 0; i < n; i++)
                while (atomic_load(&vms[i]->polled) && now_ns() - t0 < 5000000000ull)
                        pause_ns(100000);
        for (int i = 0; i < n; i++)
                cr_assert_not(atomic_load(&vms[i]->polled), "idle%d still polled", i);
        long before = thread_ticks("vmq-poller");
        cr_assert_geq(before, 0, "the poller thread is there, named vmq-poller");
        pause_ns(500000000ull);
        long after = thread_ticks("vmq-poller");
        /* Asleep in epoll_wait: not one clock tick (10 ms) in half a
         * second. */
        cr_assert_leq(after - before, 1, "the poller used %ld ticks while every VM was quiet",
                      after - before);
        free(vms);
}

/* The moment the poller stops polling a VM, over and over: a window of
 * 1 us (it grows to 32 us at most), and one message at a time, each posted
 * after the last one arrived and after a pause of 0 to 64 us, busy, so that
 * posts land before, on and after the moment the poller asks for doorbells.
 * Nothing else drains the ring (no exit, no other post to ring for it): a
 * message that does not arrive was lost by the notification rule. */
static void setup_arming(void) {
        setup_poll(1000);
}

TestSuite(poller_arming, .init = setup_arming, .fini = teardown, .timeout = 120);

Test(poller_arming, no_request_is_left_behind_when_the_poller_stops) {
        struct vmq_vm *tx = new_vm("tx", 64), *rx = new_vm("rx", 0);
        uint32_t ch = open_ch(tx, rx), seed = 6;
        int rounds = vmq_test_scale(3000);
        atomic_uint rang = 0;
        struct vmq_desc d;

        for (int i = 0; i < rounds; i++) {
                cr_assert(post_inline(tx, ch, (uint64_t)i, false, &rang));
                uint64_t t0 = now_ns();
                for (;;) {
                        if (take(rx, &d) && d.kind == VMQ_DESC_INLINE)
                                break;
                        cr_assert_lt(now_ns() - t0, (uint64_t)vmq_test_allow_ms(1000) * 1000000ull,
                                     "message %d of %d was left behind: posted, word %u, "
                                     "polled %d, doorbells %u",
                                     i, rounds, tx->vmcs->post_doorbell,
                                     (int)atomic_load(&tx->polled), atomic_load(&rang));
                }
                cr_assert_eq(d.tag, (uint64_t)i);
                seed = seed * 1103515245u + 12345u;
                uint64_t until = now_ns() + (seed >> 16) % 64000;
                while (now_ns() < until)
                        ;
        }
        cr_assert_gt(atomic_load(&rang), (unsigned)rounds / 20,
                     "the poller stopped often (%u doorbells)", atomic_load(&rang));
}
