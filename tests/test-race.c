/* SPDX-License-Identifier: MIT */
/*
 * The race suite: multi-vCPU guests (guest/images/race.c) racing their own
 * requests against each other, the doorbell thread and the host, while the
 * host opens and closes channels and destroys and starts VMs, with a
 * well-behaved pair running beside them.  After every scenario:
 *
 *   - the test process is still there (a monitor that faults takes the
 *     Criterion worker with it: the test is reported as crashed);
 *   - vmq_pool_check() holds, and once every VM is destroyed every frame
 *     is back in the pool (4 KiB, and 2 MiB when the pool has them);
 *   - no innocent VM is CRASHED;
 *   - the innocent receivers saw every message of their peer, in order,
 *     byte for byte, with the monitor-stamped source matching the sender
 *     named inside, and nothing but zeroes past the end of copied pages
 *     (no data crossed between VMs).
 *
 * Each run of the suite stays well under a minute on the development
 * machines: it runs in every build of scripts/test, ThreadSanitizer's
 * included.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/monitor.h"
#include "core/vm.h" /* the monitor's pool, for vmq_pool_check() */
#include "tests/test-util.h"

#define MIB (1024ull * 1024ull)
#define MAX_VMS 64
#define LINE_MAX 65600

static struct vmq_monitor *mon;
static struct vmq_vm *vms[MAX_VMS];
static char line[LINE_MAX];

/* Host threads of the running test, stopped by teardown() too: a failed
 * assertion leaves the test function before it stops them, and they use
 * the monitor that teardown() frees. */
static void stop_host_threads(void);

static void setup(void) {
        vmq_test_need_kvm();
        struct vmq_monitor_config mc;
        vmq_monitor_config_init(&mc);
        mc.calibrate = false; /* "auto" as vmq_transfer_plan_default() says */
        int r = vmq_monitor_new(&mc, &mon);
        cr_assert_eq(r, 0, "vmq_monitor_new: %s (the race suite needs /dev/kvm)", strerror(-r));
        memset(vms, 0, sizeof(vms));
}

static void teardown(void) {
        stop_host_threads();
        mon = vmq_monitor_free(mon);
}

TestSuite(race, .init = setup, .fini = teardown, .timeout = 180);

/* ---- VMs -------------------------------------------------------------------- */

struct vm_opts {
        unsigned vcpus;
        uint64_t ram_size, rx_size;
        uint32_t queue_depth;
};

static struct vmq_vm *create(const char *name, const struct vm_opts *o, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Creates (not starts) a race VM with the given arguments. */
static struct vmq_vm *create(const char *name, const struct vm_opts *o, const char *fmt, ...) {
        char args[VMQ_ARGS_MAX];
        struct vmq_vm_config vc;
        struct vmq_vm *vm;
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(args, sizeof(args), fmt, ap);
        va_end(ap);
        vmq_vm_config_init(&vc);
        vc.name = name;
        vc.args = args;
        vc.vcpus = o && o->vcpus ? o->vcpus : 1;
        vc.ram_size = o && o->ram_size ? o->ram_size : 8 * MIB;
        if (o && o->rx_size)
                vc.rx_size = o->rx_size;
        if (o && o->queue_depth)
                vc.queue_depth = o->queue_depth;
        int r = vmq_vm_create_from_file(mon, &vc, vmq_test_guest("race"), &vm);
        cr_assert_eq(r, 0, "create %s (%s): %s", name, args, strerror(-r));
        for (unsigned i = 0; i < MAX_VMS; i++)
                if (!vms[i]) {
                        vms[i] = vm;
                        return vm;
                }
        cr_assert_fail("more than %d VMs", MAX_VMS);
        return NULL;
}

static void start(struct vmq_vm *vm) {
        int r = vmq_vm_start(vm);
        cr_assert_eq(r, 0, "start %s: %s", vmq_vm_name(vm), strerror(-r));
}

static void destroy(struct vmq_vm *vm) {
        for (unsigned i = 0; i < MAX_VMS; i++)
                if (vms[i] == vm)
                        vms[i] = NULL;
        vmq_vm_destroy(vm);
}

/* Opens a channel, retrying while an end's queue has no room for the
 * HELLO. */
static uint32_t open_ch(uint32_t a, uint32_t b, const struct vmq_channel_config *cfg) {
        uint32_t id;
        int r;
        for (int tries = 0; (r = vmq_channel_open(mon, a, b, cfg, &id)) == -EAGAIN; tries++) {
                cr_assert_lt(tries, 5000, "channel %u<->%u: the queues stay full", a, b);
                usleep(1000);
        }
        cr_assert_eq(r, 0, "channel open %u<->%u: %s", a, b, strerror(-r));
        return id;
}

/* Opens a channel, or returns 0 when an end's queue stayed full for
 * 200 ms (the peer's senders may keep it full: that is allowed). */
static uint32_t try_open_ch(uint32_t a, uint32_t b, const struct vmq_channel_config *cfg) {
        uint32_t id;
        int r;
        for (int tries = 0; (r = vmq_channel_open(mon, a, b, cfg, &id)) == -EAGAIN; tries++) {
                if (tries == 200)
                        return 0;
                usleep(1000);
        }
        cr_assert_eq(r, 0, "channel open %u<->%u: %s", a, b, strerror(-r));
        return id;
}

static void check_pool(const char *when) {
        cr_assert_eq(vmq_pool_check(mon->pool), 0, "vmq_pool_check failed %s", when);
}

/* Destroys every VM of the test, then every frame must be free. */
static void destroy_all_and_count_frames(void) {
        for (unsigned i = 0; i < MAX_VMS; i++)
                if (vms[i])
                        destroy(vms[i]);
        check_pool("after destroying every VM");
        cr_assert_eq(vmq_monitor_frames_free(mon, false), vmq_monitor_frames_total(mon, false),
                     "4 KiB frames leaked: %zu of %zu free", vmq_monitor_frames_free(mon, false),
                     vmq_monitor_frames_total(mon, false));
        if (vmq_monitor_has_huge(mon))
                cr_assert_eq(vmq_monitor_frames_free(mon, true),
                             vmq_monitor_frames_total(mon, true), "2 MiB frames leaked");
}

static void not_crashed(struct vmq_vm *vm) {
        cr_assert_neq(vmq_vm_state(vm), VMQ_VM_CRASHED, "innocent %s crashed: %s", vmq_vm_name(vm),
                      vmq_vm_crash_reason(vm));
}

/* The last console line of vm containing needle (in `line`). */
static const char *wait_line(struct vmq_vm *vm, const char *needle, int timeout_ms) {
        int r = vmq_test_wait_line(vm, needle, timeout_ms, line, sizeof(line));
        cr_assert_eq(r, 0, "%s (%s): no '%s' on the console within %d ms; console:\n%s",
                     vmq_vm_name(vm), vmq_vm_state_to_string(vmq_vm_state(vm)), needle, timeout_ms,
                     line);
        return line;
}

static uint64_t value(const char *l, const char *key) {
        uint64_t v = 0;
        cr_assert(vmq_test_line_u64(l, key, 10, &v), "no %s= in '%s'", key, l);
        return v;
}

/* The per-vCPU summary of a race VM, once it is done. */
static void vcpu_line(struct vmq_vm *vm, unsigned v, uint64_t *ok, uint64_t *err, uint64_t *extra) {
        char needle[32];
        snprintf(needle, sizeof(needle), "race: vcpu=%u ", v);
        wait_line(vm, needle, 1000);
        *ok = value(line, "ok");
        *err = value(line, "err");
        *extra = value(line, "extra");
}

/* The monitor's side of a VM that seems stuck, for failure messages: what
 * it sees of the post ring (the guest's producer index against its own
 * consumer index), whom the ring's head waits for, whether the poller polls
 * it, the doorbell word, and its queue as the monitor counts it.  A guest
 * that says it posted while the monitor sees no post points at the memory
 * the two share, not at the wake-up logic (static buffer). */
static const char *monitor_view(struct vmq_vm *vm) {
        static char text[320];
        snprintf(text, sizeof(text),
                 "monitor's view of %s: post ring prod=%u cons=%u, stalled_on=%u, "
                 "has_stalled=%d, polled=%d, doorbell word=%u; queue count=%d prod=%u cons=%u, "
                 "vCPUs waiting=%d",
                 vmq_vm_name(vm), __atomic_load_n(&vm->postq.idx->prod, __ATOMIC_ACQUIRE),
                 __atomic_load_n(&vm->postq.local, __ATOMIC_RELAXED),
                 (unsigned)atomic_load(&vm->stalled_on), (int)atomic_load(&vm->has_stalled),
                 (int)atomic_load(&vm->polled),
                 __atomic_load_n(&vm->vmcs->post_doorbell, __ATOMIC_RELAXED),
                 vmq_monitor_queue_count(vm), __atomic_load_n(&vm->rxq.idx->prod, __ATOMIC_ACQUIRE),
                 __atomic_load_n(&vm->rxq.idx->cons, __ATOMIC_ACQUIRE), atomic_load(&vm->waiters));
        return text;
}

/* ---- the innocent pair --------------------------------------------------------- */

/*
 * A multi-vCPU sender whose vCPUs send inline, copied, flipped, shared and
 * auto pages (and vCPU 0 posts), and a receiver that verifies every byte.
 */
struct innocent {
        struct vmq_vm *tx, *rx;
        uint64_t expect;
};

#define INNOCENT_ITERS 100

static struct innocent innocent_start(void) {
        struct innocent p;
        p.rx = create("inn-rx", NULL, "roles=verify expect=%d", 6 * INNOCENT_ITERS);
        p.tx = create("inn-tx", &(struct vm_opts){.vcpus = 6},
                      "roles=post,inline,copy,flip,share,auto "
                      "peer=guest iters=%d seed=7 exit=1",
                      INNOCENT_ITERS);
        p.expect = 6 * INNOCENT_ITERS;
        open_ch(vmq_vm_id(p.tx), vmq_vm_id(p.rx), NULL);
        start(p.rx);
        start(p.tx);
        return p;
}

/* The tail of a VM's console, for failure messages (static buffer). */
static const char *console_tail(struct vmq_vm *vm) {
        static char text[65536 + 1];
        vmq_test_console(vm, text, sizeof(text));
        size_t n = strlen(text);
        return n > 2000 ? text + n - 2000 : text;
}

static void innocent_check(const struct innocent *p) {
        int st = vmq_vm_wait(p->tx, 60000);
        if (st != VMQ_VM_EXITED) {
                struct vmq_vm_stats tx, rx;
                vmq_vm_get_stats(p->tx, &tx);
                vmq_vm_get_stats(p->rx, &rx);
                cr_log_error("inn-tx: sent=%" PRIu64 " posted=%" PRIu64 " errors=%" PRIu64
                             " again=%" PRIu64 " exits=%" PRIu64 "; console:\n%s",
                             tx.sent, tx.posted, tx.errors, tx.error[VMQ_E_AGAIN], tx.exits,
                             console_tail(p->tx));
                cr_log_error("inn-rx: received=%" PRIu64 " exits=%" PRIu64 "; console:\n%s",
                             rx.received, rx.exits, console_tail(p->rx));
                cr_log_error("%s", monitor_view(p->tx));
                cr_log_error("%s", monitor_view(p->rx));
        }
        cr_assert_eq(st, VMQ_VM_EXITED, "innocent sender: %s %s",
                     st < 0 ? "still running" : vmq_vm_state_to_string(st),
                     vmq_vm_crash_reason(p->tx));
        cr_assert_eq(vmq_vm_exit_code(p->tx), 0);
        for (unsigned v = 0; v < 6; v++) {
                uint64_t ok, err, extra;
                vcpu_line(p->tx, v, &ok, &err, &extra);
                cr_assert_eq(err, 0, "innocent sender vCPU %u had errors: %s", v, line);
                cr_assert_eq(ok, INNOCENT_ITERS, "innocent sender vCPU %u: %s", v, line);
        }
        not_crashed(p->rx);
        /* Every message is on the receiver's queue now: wait until it has
         * verified them all. */
        char needle[64];
        snprintf(needle, sizeof(needle), "race: verify report=0 count=%" PRIu64 " ", p->expect);
        struct vmq_vm *rx = p->rx;
        int r = vmq_test_wait_line(rx, needle, 30000, line, sizeof(line));
        if (r < 0) /* say what it did see */
                wait_line(rx, "race: verify", 10);
        cr_assert_eq(r, 0, "innocent receiver never verified %" PRIu64 " messages: %s", p->expect,
                     line);
        cr_assert_eq(value(line, "good"), p->expect, "data crossed or broke: %s", line);
        cr_assert_eq(value(line, "bad"), 0, "%s", line);
        cr_assert_eq(value(line, "foreign"), 0, "%s", line);
        cr_assert_eq(value(line, "gap"), 0, "%s", line);
        cr_assert_eq(value(line, "dup"), 0, "%s", line);
        cr_assert_eq(value(line, "tail"), 0, "stale bytes past a copied payload: %s", line);
        not_crashed(p->rx);
}

/* ---- the host end: feeds pages, drains what comes back ------------------------ */

struct feeder {
        uint32_t ch, from;
        atomic_bool stop;
        atomic_uint_least64_t sent, got, foreign;
        pthread_t thread;
};

static void *feeder_main(void *arg) {
        struct feeder *f = arg;
        uint8_t buf[VMQ_PAGE_SIZE];
        uint64_t i = 0;

        memset(buf, 0xa5, sizeof(buf));
        while (!atomic_load(&f->stop)) {
                struct vmq_host_msg *msg;
                size_t len = VMQ_INLINE_MAX + 1 + (size_t)(i * 2654435761u % (sizeof(buf) - 200));
                int r = vmq_host_send(mon, f->ch, buf, len, i);
                if (r == 0) {
                        atomic_fetch_add(&f->sent, 1);
                        i++;
                } else {
                        usleep(200);
                }
                while (vmq_host_recv(mon, f->ch, 0, &msg) == 0) {
                        if ((msg->kind == VMQ_DESC_INLINE || msg->kind == VMQ_DESC_PAGE) &&
                            msg->src_vm != f->from)
                                atomic_fetch_add(&f->foreign, 1);
                        atomic_fetch_add(&f->got, 1);
                        free(msg);
                }
        }
        return NULL;
}

static struct feeder feeder; /* one per test at most */
static bool feeder_running;

static struct feeder *feeder_start(uint32_t ch, struct vmq_vm *peer) {
        struct feeder *f = &feeder;
        memset(f, 0, sizeof(*f));
        f->ch = ch;
        f->from = vmq_vm_id(peer);
        cr_assert_eq(pthread_create(&f->thread, NULL, feeder_main, f), 0);
        feeder_running = true;
        return f;
}

static void feeder_stop(struct feeder *f) {
        if (!feeder_running)
                return;
        atomic_store(&f->stop, true);
        pthread_join(f->thread, NULL);
        feeder_running = false;
        cr_assert_eq(atomic_load(&f->foreign), 0, "the host got messages from a VM other than %u",
                     f->from);
}

/* ---- scenarios -------------------------------------------------------------------- */

/* Baseline: the innocent pair alone passes every check (so that a failure
 * in the scenarios below is the attackers' doing). */
Test(race, innocent_pair_alone) {
        struct innocent p = innocent_start();
        innocent_check(&p);
        check_pool("after the innocent pair");
        destroy_all_and_count_frames();
}

/*
 * An attacker whose vCPUs forward received pages to the host (the host's
 * copy), print them (CONSOLE) and release them, all at once; the host feeds
 * it pages and drains what comes back.  Issue 7, class 1: the copies run
 * after the pool lock is dropped.
 */
Test(race, release_races_host_copy_and_console) {
        struct innocent p = innocent_start();
        struct vmq_vm *atk = create("atk", &(struct vm_opts){.vcpus = 6, .rx_size = 64 * 1024},
                                    "roles=recv,fwd,fwd,release,release,console keep=1 peer=host "
                                    "iters=2000 seed=11");
        uint32_t ch = open_ch(vmq_vm_id(atk), VMQ_HOST_ID, NULL);
        start(atk);
        struct feeder *f = feeder_start(ch, atk);
        wait_line(atk, "race: done", 90000);
        feeder_stop(f);
        cr_assert_gt(atomic_load(&f->sent), 0);
        uint64_t ok, err, released;
        vcpu_line(atk, 3, &ok, &err, &released);
        cr_assert_gt(released, 0, "the attacker never released a page: no race was run");
        check_pool("after the release race");
        innocent_check(&p);
        destroy_all_and_count_frames();
}

/*
 * One vCPU: forward each received page by a post and a doorbell, release it
 * at once.  The doorbell thread copies it for the host while it is released
 * (issue 7, class 1, the single-vCPU form).
 */
Test(race, doorbell_thread_races_release) {
        struct innocent p = innocent_start();
        struct vmq_vm *atk = create("atk1", &(struct vm_opts){.rx_size = 64 * 1024},
                                    "roles=postrel peer=host iters=2000 seed=12");
        uint32_t ch = open_ch(vmq_vm_id(atk), VMQ_HOST_ID, NULL);
        start(atk);
        struct feeder *f = feeder_start(ch, atk);
        wait_line(atk, "race: done", 90000);
        feeder_stop(f);
        uint64_t posted, err, released;
        vcpu_line(atk, 0, &posted, &err, &released);
        cr_assert_gt(posted, 0, "nothing was posted: no race was run");
        check_pool("after the doorbell race");
        innocent_check(&p);
        destroy_all_and_count_frames();
}

/*
 * Sharers destroyed while the receiver reads what they shared: the
 * receiver did nothing wrong and must not be marked crashed (issue 7, class
 * 2), and must never see another VM's data.
 */
Test(race, sharer_destroyed_while_receiver_reads) {
        struct innocent p = innocent_start();
        struct vmq_vm *rd = create("rd", NULL, "roles=verify");
        uint32_t hc = open_ch(VMQ_HOST_ID, vmq_vm_id(rd), NULL);
        start(rd);
        for (int round = 0; round < 8; round++) {
                struct vmq_vm_stats st;
                vmq_vm_get_stats(rd, &st);
                uint64_t before = st.received;
                struct vmq_vm *shr = create("shr", &(struct vm_opts){.vcpus = 3},
                                            "roles=recv,share,share peer=guest iters=1000000 "
                                            "seed=%d",
                                            20 + round);
                open_ch(vmq_vm_id(shr), vmq_vm_id(rd), NULL);
                start(shr);
                /* Destroy it while shares are in flight: 50 to 250 in. */
                uint64_t want = before + 50 + (uint64_t)round * 25;
                for (int waited = 0; st.received < want; waited++) {
                        cr_assert_lt(waited, 30000, "round %d: the sharer shares nothing", round);
                        cr_assert_eq(vmq_vm_state(shr), VMQ_VM_RUNNING, "sharer: %s",
                                     vmq_vm_crash_reason(shr));
                        usleep(1000);
                        vmq_vm_get_stats(rd, &st);
                }
                destroy(shr);
                check_pool("after destroying a sharer");
                usleep(20000); /* let the receiver read what is left */
                not_crashed(rd);
        }
        /* Revoked pages may read back as anything the fix decides (zeroes,
         * a private copy), but never as another VM's data. */
        cr_assert_eq(vmq_host_send(mon, hc, "report", 6, VMQ_TAG_REPORT), 0);
        wait_line(rd, "race: verify report=1 ", 10000);
        cr_assert_eq(value(line, "foreign"), 0, "%s", line);
        cr_assert_eq(value(line, "tail"), 0, "%s", line);
        cr_assert_gt(value(line, "pages"), 0, "%s", line);
        not_crashed(rd);
        innocent_check(&p);
        destroy_all_and_count_frames();
}

/* A host thread receiving on whatever host channel is current, while the
 * test thread closes it under its feet. */
struct host_reader {
        _Atomic uint64_t target; /* channel | sender VM id << 32, one load */
        atomic_bool stop;
        atomic_uint_least64_t got, foreign;
        pthread_t thread;
};

static struct host_reader reader;
static bool reader_running;

static void stop_host_threads(void) {
        if (reader_running) {
                atomic_store(&reader.stop, true);
                pthread_join(reader.thread, NULL);
                reader_running = false;
        }
        if (feeder_running) {
                atomic_store(&feeder.stop, true);
                pthread_join(feeder.thread, NULL);
                feeder_running = false;
        }
}

static void *host_reader_main(void *arg) {
        struct host_reader *h = arg;
        while (!atomic_load(&h->stop)) {
                uint64_t t = atomic_load(&h->target);
                uint32_t ch = (uint32_t)t, from = (uint32_t)(t >> 32);
                struct vmq_host_msg *msg;
                if (!ch || vmq_host_recv(mon, ch, 2, &msg) < 0) {
                        usleep(100);
                        continue;
                }
                if ((msg->kind == VMQ_DESC_INLINE || msg->kind == VMQ_DESC_PAGE) &&
                    msg->src_vm != from)
                        atomic_fetch_add(&h->foreign, 1);
                atomic_fetch_add(&h->got, 1);
                free(msg);
        }
        return NULL;
}

/*
 * The host opens and closes channels and destroys and restarts VMs while
 * their vCPUs send inline, flipped, copied and auto pages to each other and
 * to the host.
 */
Test(race, host_churns_channels_and_vms_while_guests_send) {
        struct innocent p = innocent_start();
        struct vm_opts three = {.vcpus = 3, .rx_size = 1 * MIB};
        const char *args[2] = {"roles=recv,inline,flip peer=any iters=1000000 seed=31",
                               "roles=recv,copy,auto peer=any iters=1000000 seed=32"};
        const char *names[2] = {"c1", "c2"};
        struct vmq_vm *c[2];
        struct vmq_channel_config small;
        vmq_channel_config_init(&small);
        small.host_depth = 16;
        struct host_reader *hr = &reader;
        memset(hr, 0, sizeof(*hr));
        for (int i = 0; i < 2; i++) {
                c[i] = create(names[i], &three, "%s", args[i]);
                start(c[i]);
        }
        cr_assert_eq(pthread_create(&hr->thread, NULL, host_reader_main, hr), 0);
        reader_running = true;
        unsigned opened = 0;
        for (int round = 0; round < 20; round++) {
                uint32_t g = try_open_ch(vmq_vm_id(c[0]), vmq_vm_id(c[1]), NULL);
                uint32_t h = try_open_ch(VMQ_HOST_ID, vmq_vm_id(c[round % 2]), &small);
                opened += (g != 0) + (h != 0);
                if (h)
                        atomic_store(&hr->target, h | (uint64_t)vmq_vm_id(c[round % 2]) << 32);
                usleep(10000 + (useconds_t)(round * 7919 % 30000));
                uint32_t order[2] = {round % 2 ? g : h, round % 2 ? h : g};
                for (int i = 0; i < 2; i++)
                        if (order[i])
                                cr_assert_eq(vmq_channel_close(mon, order[i]), 0);
                /* Every few rounds one of them dies while the other is
                 * still sending to it, and comes back. */
                if (round % 10 == 4) {
                        int k = round / 10 % 2;
                        for (int i = 0; i < 2; i++)
                                not_crashed(c[i]);
                        destroy(c[k]);
                        c[k] = create(names[k], &three, "%s", args[k]);
                        start(c[k]);
                }
                check_pool("during the churn");
        }
        cr_assert_geq(opened, 20, "only %u of 40 channels could be opened", opened);
        stop_host_threads();
        cr_assert_eq(atomic_load(&hr->foreign), 0, "the host got a message from the wrong VM");
        cr_assert_gt(atomic_load(&hr->got), 0, "the host never received anything");
        for (int i = 0; i < 2; i++)
                not_crashed(c[i]);
        innocent_check(&p);
        destroy_all_and_count_frames();
}

/*
 * More than 16 senders blocked on one receiver: each posts a burst and
 * rings once, then waits without any exit.  The receiver takes nothing off
 * its queue until all are blocked, then drains.  Every sender's posts must
 * be carried out (issue 7, class 4: the 17th sender's wake-up is lost).
 *
 * The senders boot first and wait (asleep) for a word from the host; the
 * receiver is started then, and the word sent to every sender at once, so
 * that all of them have posted long before the receiver's hold is over.
 */
Test(race, more_than_16_blocked_senders_all_drain) {
        enum { SENDERS = 24, BURST = 8 };
        struct vm_opts small = {.ram_size = 4 * MIB, .rx_size = 64 * 1024};
        /* The receiver holds its queue full while every sender posts and
         * blocks; each sender then waits drain_ms for its posts. */
        int hold_ms = vmq_test_allow_ms(2000), drain_ms = vmq_test_allow_ms(5000);
        struct vmq_vm *rcv = create("rcv", &small, "roles=recv hold_ms=%d", hold_ms);
        struct vmq_vm *b[SENDERS];
        uint32_t hc[SENDERS];
        for (int i = 0; i < SENDERS; i++) {
                char name[16];
                snprintf(name, sizeof(name), "b%02d", i);
                b[i] = create(name, &small,
                              "roles=burst burst=%d drain_ms=%d peer=guest wait_host=1", BURST,
                              drain_ms);
                open_ch(vmq_vm_id(b[i]), vmq_vm_id(rcv), NULL);
                hc[i] = open_ch(VMQ_HOST_ID, vmq_vm_id(b[i]), NULL);
                start(b[i]);
        }
        for (int i = 0; i < SENDERS; i++)
                wait_line(b[i], "race: ready", 30000);
        start(rcv);
        for (int i = 0; i < SENDERS; i++)
                cr_assert_eq(vmq_host_send(mon, hc[i], "go", 2, 0), 0);
        uint64_t hold_over = value(wait_line(rcv, "race: hold over", 10000 + hold_ms), "t");
        unsigned stuck = 0;
        for (int i = 0; i < SENDERS; i++) {
                int st = vmq_vm_wait(b[i], 25000 + drain_ms);
                cr_assert(st == VMQ_VM_EXITED, "%s: %s %s", vmq_vm_name(b[i]),
                          st < 0 ? "still running" : vmq_vm_state_to_string(st),
                          vmq_vm_crash_reason(b[i]));
                uint64_t posted_at = value(wait_line(b[i], "race: burst posted=", 100), "t");
                cr_assert_eq(value(line, "posted"), BURST, "%s", line);
                cr_assert_lt(posted_at, hold_over,
                             "%s posted after the receiver started draining: raise hold_ms",
                             vmq_vm_name(b[i]));
                if (value(wait_line(b[i], "race: burst pending=", 100), "pending") != 0) {
                        stuck++;
                        cr_log_error("%s: %s", vmq_vm_name(b[i]), line);
                        cr_log_error("%s", monitor_view(b[i]));
                }
        }
        if (stuck)
                cr_log_error("%s", monitor_view(rcv));
        cr_assert_eq(stuck, 0,
                     "%u of %d blocked senders were never woken: their posts stayed in the ring "
                     "(lost wake-up)",
                     stuck, SENDERS);
        not_crashed(rcv);
        destroy_all_and_count_frames();
}

/*
 * Attackers that scribble over mailboxes, the post ring and their own queue
 * index, and an 8-vCPU VM sending every way at once until one vCPU faults,
 * beside the innocent pair and an innocent receiver of the attackers'
 * messages.
 */
Test(race, scribblers_and_a_faulting_vm_beside_innocents) {
        struct innocent p = innocent_start();
        struct vmq_vm *dump = create("dump", NULL, "roles=recv");
        struct vmq_vm *scr = create("scr", &(struct vm_opts){.vcpus = 4, .rx_size = 64 * 1024},
                                    "roles=recv,scribble,scribble,console peer=guest iters=1000 "
                                    "seed=41");
        struct vmq_vm *flt =
                create("flt", &(struct vm_opts){.vcpus = 8, .rx_size = 64 * 1024},
                       "roles=recv,inline,copy,flip,share,auto,release,fwd peer=guest iters=1000 "
                       "fault=3:300 seed=42");
        open_ch(vmq_vm_id(scr), vmq_vm_id(dump), NULL);
        open_ch(vmq_vm_id(flt), vmq_vm_id(dump), NULL);
        start(dump);
        start(scr);
        start(flt);
        cr_log_info("scribblers: started");
        int st = vmq_vm_wait(flt, 60000);
        cr_log_info("scribblers: flt %s", vmq_vm_state_to_string(vmq_vm_state(flt)));
        cr_assert_eq(st, VMQ_VM_CRASHED, "the faulting VM: %s",
                     st < 0 ? "still running" : vmq_vm_state_to_string(st));
        wait_line(scr, "race: done", 90000);
        cr_log_info("scribblers: scr done");
        not_crashed(dump);
        check_pool("after the scribblers");
        /* The faulted VM's shares into dump are revoked here. */
        destroy(flt);
        destroy(scr);
        cr_log_info("scribblers: attackers destroyed");
        check_pool("after destroying the attackers");
        usleep(20000);
        not_crashed(dump);
        innocent_check(&p);
        destroy_all_and_count_frames();
}

/* CONSOLE of the supervisor-only system area (page tables) is refused like
 * any other address the guest cannot read (issue 7, class 6). */
Test(race, console_cannot_read_the_system_area) {
        struct vmq_vm *vm = create("cons", &(struct vm_opts){.vcpus = 2},
                                   "roles=recv,console iters=400 seed=51 exit=1");
        start(vm);
        int st = vmq_vm_wait(vm, 60000);
        cr_assert_eq(st, VMQ_VM_EXITED, "%s", st < 0 ? "still running" : vmq_vm_crash_reason(vm));
        uint64_t ok, err, sysarea;
        vcpu_line(vm, 1, &ok, &err, &sysarea);
        cr_assert_gt(ok + err, 0, "%s", line);
        cr_assert_eq(sysarea, 0,
                     "the monitor printed %" PRIu64 " reads of the system area for the guest: %s",
                     sysarea, line);
        destroy_all_and_count_frames();
}
