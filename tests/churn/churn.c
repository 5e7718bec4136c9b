/* SPDX-License-Identifier: MIT */
/*
 * vmq-churn: a churn soak of vmqd.
 *
 * --clients threads (8), each with a bus connection of its own through
 * libvmq-client, make up to --calls (10,000) mixed calls each for --seconds
 * (120): create machines (echo guests), start them, open host<->machine
 * channels, send, receive, close channels, destroy and undefine machines,
 * list machines and channels, read the statistics.  Each client owns its
 * --machines (2) machines (churn-<client>-<k>, 4 MiB echo guests) and keeps
 * a model of them, so every call has an expected outcome; an unexpected
 * error is a failure, and so is a list that disagrees with the model.
 *
 * No message is lost: every message a client sends on a host<->echo
 * channel carries a unique tag and bytes derived from it, and must come back
 * exactly once and byte-exact.  When the client closes the channel or
 * destroys the machine with messages still out, it first takes what is
 * left (what arrives after the close counts as received); the rest is
 * "dropped by design" and counted apart.  At the end every client waits
 * for what is still out on its open channels: anything that does not come
 * back is "lost", and fails the run.  A message back twice, or one that
 * was never sent on that channel, fails it too.  A Send refused with
 * QueueFull sent nothing and is only counted.
 *
 * vmqd stays flat: its fd count and VmRSS (/proc/--vmqd-pid) are sampled
 * twice a second.  After --warmup seconds (20) the fd count must stay
 * below the warm-up count + --fd-slack (16) + --fd-per-vm (16) per running
 * machine, and RSS below the warm-up RSS + --rss-mib (64).  At the end,
 * with every machine undefined, the fd count must be back to the count at
 * the start, +- --fd-end-slack (2).
 *
 * Without /dev/kvm (--kvm no) nothing can run: the clients then make the
 * calls that need no running machine (create, undefine, start and open,
 * which must fail, lists, statistics), which still shows that vmqd stays
 * flat.  tests/churn/run runs this in a QEMU guest with nested KVM instead
 * when the host has no /dev/kvm.
 *
 * Example (tests/churn/run sets up the bus and vmqd):
 *
 *   vmq-churn --bus unix:path=/tmp/x/bus --vmqd-pid 1234 --seconds 120
 *
 * Output: failures as they happen, "churn: FAIL client N: what", then the
 * seed, calls and calls/s, the calls by operation, the message account
 * (sent, received back, dropped by design, lost, refused), vmqd's fds and
 * RSS at start, after warm-up, at most and at the end with their bounds,
 * and "churn: PASSED" or "churn: FAILED".  Exit status 0 passed, 1 failed,
 * 2 usage or set-up error.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "libvmq-client/vmq-client.h"

#define MAX_CLIENTS 64
#define MAX_VMS_PER_CLIENT 4
#define INFLIGHT 16   /* messages out per channel: below the echo's and the host's depth */
#define HOST_DEPTH 64 /* the channels' depth at the host end */
#define MIB (1024ull * 1024)

struct options {
        const char *bus;
        pid_t vmqd_pid;
        unsigned clients;
        unsigned machines; /* per client */
        unsigned calls;
        double seconds;
        uint64_t seed;
        bool kvm;
        double warmup;
        unsigned rss_mib;
        unsigned fd_slack, fd_per_vm, fd_end_slack;
        bool verbose;
};

enum op {
        OP_CREATE,
        OP_START,
        OP_OPEN,
        OP_SEND,
        OP_RECEIVE,
        OP_CLOSE,
        OP_DESTROY,
        OP_UNDEFINE,
        OP_LIST_MACHINES,
        OP_LIST_CHANNELS,
        OP_STATISTICS,
        _OP_MAX,
};

static const char *const op_names[_OP_MAX] = {
        "create",  "start",    "open",          "send",          "receive",    "close",
        "destroy", "undefine", "list-machines", "list-channels", "statistics",
};

/* How often each is picked, with and without KVM. */
static const unsigned weights_kvm[_OP_MAX] = {5, 4, 6, 30, 30, 4, 3, 4, 3, 3, 2};
static const unsigned weights_nokvm[_OP_MAX] = {20, 5, 5, 0, 0, 0, 0, 20, 20, 20, 10};

struct outmsg {
        uint64_t tag;
        uint32_t len;
};

struct chan {
        uint32_t id;
        struct outmsg out[INFLIGHT];
        unsigned n_out;
};

enum vm_state { VM_NONE, VM_DEFINED, VM_RUNNING };

struct vm {
        char name[48];
        enum vm_state state;
        bool has_chan;
        struct chan ch;
};

struct counts {
        uint64_t calls;
        uint64_t by_op[_OP_MAX];
        uint64_t usec_by_op[_OP_MAX]; /* time spent in the calls */
        uint64_t sent, received, received_after_close, dropped, lost, refused, bytes;
        uint64_t failures;
};

struct client {
        const struct options *o;
        unsigned index;
        struct vmq_client *c;
        uint64_t rng;
        uint64_t seq;
        struct vm vms[MAX_VMS_PER_CLIENT];
        struct counts n;
        pthread_t thread;
};

static uint64_t start_usec, end_usec;
static atomic_uint failures_printed;
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t mix(uint64_t x) {
        x += 0x9e3779b97f4a7c15ull;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        return x ^ (x >> 31);
}

/* splitmix64 */
static uint64_t next(uint64_t *s) {
        uint64_t x = *s;
        *s += 0x9e3779b97f4a7c15ull;
        return mix(x);
}

static uint64_t below(uint64_t *s, uint64_t n) {
        return next(s) % n;
}

/* The payload of the message with this tag. */
static void pattern(uint64_t tag, uint8_t *buf, size_t len) {
        uint64_t s = mix(tag), x = 0;
        for (size_t i = 0; i < len; i++) {
                if (i % 8 == 0)
                        x = next(&s);
                buf[i] = (uint8_t)(x >> (8 * (i % 8)));
        }
}

static void fail(struct client *cl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct client *cl, const char *fmt, ...) {
        va_list ap;
        cl->n.failures++;
        if (atomic_fetch_add(&failures_printed, 1) >= 50)
                return;
        pthread_mutex_lock(&print_lock);
        printf("churn: FAIL client %u: ", cl->index);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        pthread_mutex_unlock(&print_lock);
}

/* Counts a call of op that started at t0 (now_usec()). */
static void counted(struct client *cl, enum op op, uint64_t t0) {
        cl->n.calls++;
        cl->n.by_op[op]++;
        cl->n.usec_by_op[op] += now_usec() - t0;
}

/* An error where the model says the call succeeds. */
static void unexpected(struct client *cl, enum op op, struct vm *vm, int r) {
        const char *msg = vmq_client_get_error_message(cl->c);
        fail(cl, "%s %s: %s (%s)", op_names[op], vm ? vm->name : "", strerror(-r),
             msg ? msg : "no message");
}

/* ---- messages ---- */

/* Takes one received message in; returns false when it was not expected. */
static void take_message(struct client *cl, struct vm *vm, struct vmq_message *m, bool closed) {
        struct chan *ch = &vm->ch;
        enum vmq_message_kind kind = vmq_message_get_kind(m);
        size_t size = 0;
        const void *data = vmq_message_get_data(m, &size);
        uint64_t tag = vmq_message_get_tag(m);

        switch (kind) {
        case VMQ_MESSAGE_HELLO: {
                const char *peer = vmq_message_get_peer_name(m);
                if (!peer || strcmp(peer, vm->name) != 0)
                        fail(cl, "channel %u: a HELLO from '%s', not '%s'", ch->id,
                             peer ? peer : "(none)", vm->name);
                return;
        }
        case VMQ_MESSAGE_CLOSE:
                if (!closed)
                        fail(cl, "channel %u to %s: CLOSE, but nobody closed it", ch->id, vm->name);
                return;
        case VMQ_MESSAGE_DATA:
        case VMQ_MESSAGE_PAGE:
                break;
        default:
                fail(cl, "channel %u to %s: a message of kind '%s'", ch->id, vm->name,
                     vmq_message_get_kind_string(m));
                return;
        }
        for (unsigned i = 0; i < ch->n_out; i++) {
                if (ch->out[i].tag != tag)
                        continue;
                if (size != ch->out[i].len) {
                        fail(cl, "channel %u: tag 0x%" PRIx64 " came back with %zu bytes, not %u",
                             ch->id, tag, size, ch->out[i].len);
                } else {
                        uint8_t *want = malloc(size ? size : 1);
                        if (want) {
                                pattern(tag, want, size);
                                if (size && memcmp(want, data, size) != 0)
                                        fail(cl,
                                             "channel %u: tag 0x%" PRIx64 " came back changed "
                                             "(%zu bytes)",
                                             ch->id, tag, size);
                                free(want);
                        }
                }
                ch->out[i] = ch->out[--ch->n_out];
                cl->n.received++;
                if (closed)
                        cl->n.received_after_close++;
                return;
        }
        fail(cl,
             "channel %u to %s: tag 0x%" PRIx64 " (%zu bytes) is not out: a duplicate, or "
             "never sent on this channel",
             ch->id, vm->name, tag, size);
}

/* Receives on vm's channel until nothing is out, or timeout_usec passes
 * with nothing new.  closed: the channel is closed already (take what is
 * left until the daemon says there is no more). */
static void drain(struct client *cl, struct vm *vm, uint64_t timeout_usec, bool closed) {
        uint64_t last = now_usec();
        while (vm->ch.n_out > 0 || closed) {
                struct vmq_message *m = NULL;
                uint64_t t0 = now_usec();
                int r = vmq_client_receive(cl->c, vm->ch.id, closed ? 0 : 100000, &m);
                counted(cl, OP_RECEIVE, t0);
                if (r == 0) {
                        take_message(cl, vm, m, closed);
                        vmq_message_free(m);
                        last = now_usec();
                        continue;
                }
                if (closed && (r == -EPIPE || r == -ENXIO || r == -ETIMEDOUT))
                        return;
                if (r != -ETIMEDOUT) {
                        unexpected(cl, OP_RECEIVE, vm, r);
                        return;
                }
                if (now_usec() - last > timeout_usec)
                        return;
        }
}

/* The channel went away (closed by us, or its machine destroyed): take
 * what is left, and count the rest as dropped by design. */
static void forget_channel(struct client *cl, struct vm *vm) {
        drain(cl, vm, 0, true);
        cl->n.dropped += vm->ch.n_out;
        vm->ch.n_out = 0;
        vm->has_chan = false;
}

/* ---- operations ---- */

static int do_create(struct client *cl, struct vm *vm) {
        struct vmq_machine_options opts = VMQ_MACHINE_OPTIONS_INIT;
        opts.memory = 4 * MIB;
        opts.start = cl->o->kvm && below(&cl->rng, 2);
        uint64_t t0 = now_usec();
        int r = vmq_client_create_machine(cl->c, vm->name, "echo", &opts);
        counted(cl, OP_CREATE, t0);
        if (r < 0)
                unexpected(cl, OP_CREATE, vm, r);
        else
                vm->state = opts.start ? VM_RUNNING : VM_DEFINED;
        return r;
}

static int do_start(struct client *cl, struct vm *vm) {
        uint64_t t0 = now_usec();
        int r = vmq_client_start_machine(cl->c, vm->name);
        counted(cl, OP_START, t0);
        if (r == 0 && !cl->o->kvm)
                fail(cl, "start %s succeeded without /dev/kvm", vm->name);
        else if (r < 0 && cl->o->kvm)
                unexpected(cl, OP_START, vm, r);
        else if (r == 0)
                vm->state = VM_RUNNING;
        return r;
}

static void do_open(struct client *cl, struct vm *vm) {
        struct vmq_channel_options opts = VMQ_CHANNEL_OPTIONS_INIT;
        bool host_first = below(&cl->rng, 2);
        uint32_t id = 0;
        int r;

        opts.depth = HOST_DEPTH;
        uint64_t t0 = now_usec();
        r = vmq_client_open_channel(cl->c, host_first ? VMQ_CLIENT_HOST_END : vm->name,
                                    host_first ? vm->name : VMQ_CLIENT_HOST_END, &opts, &id);
        counted(cl, OP_OPEN, t0);
        if (vm->state != VM_RUNNING) {
                if (r == 0)
                        fail(cl, "open host<->%s succeeded, but %s is not running", vm->name,
                             vm->name);
                return;
        }
        if (r < 0) {
                unexpected(cl, OP_OPEN, vm, r);
                return;
        }
        vm->has_chan = true;
        vm->ch.id = id;
        vm->ch.n_out = 0;
}

static void do_send(struct client *cl, struct vm *vm) {
        struct chan *ch = &vm->ch;
        uint64_t x = below(&cl->rng, 100);
        size_t len = x < 80   ? 1 + below(&cl->rng, 4096)
                     : x < 95 ? 4096 + below(&cl->rng, 60 * 1024)
                              : 64 * 1024 + 1 + below(&cl->rng, 256 * 1024);
        uint64_t tag = ((uint64_t)(cl->index + 1) << 48) | (cl->seq++ & 0xffffffffffffull);
        uint8_t *buf = malloc(len);
        int r;

        if (!buf)
                return;
        pattern(tag, buf, len);
        uint64_t t0 = now_usec();
        r = vmq_client_send(cl->c, ch->id, buf, len, tag);
        counted(cl, OP_SEND, t0);
        free(buf);
        if (r == -EAGAIN) {
                cl->n.refused++;
                return;
        }
        if (r < 0) {
                unexpected(cl, OP_SEND, vm, r);
                return;
        }
        ch->out[ch->n_out].tag = tag;
        ch->out[ch->n_out].len = (uint32_t)len;
        ch->n_out++;
        cl->n.sent++;
        cl->n.bytes += len;
}

static void do_receive(struct client *cl, struct vm *vm) {
        struct vmq_message *m = NULL;
        uint64_t t0 = now_usec();
        int r = vmq_client_receive(cl->c, vm->ch.id, vm->ch.n_out ? 50000 : 0, &m);
        counted(cl, OP_RECEIVE, t0);
        if (r == 0) {
                take_message(cl, vm, m, false);
                vmq_message_free(m);
        } else if (r != -ETIMEDOUT) {
                unexpected(cl, OP_RECEIVE, vm, r);
        }
}

static void do_close(struct client *cl, struct vm *vm) {
        /* Half the time, wait for what is out first. */
        if (below(&cl->rng, 2))
                drain(cl, vm, 1000000, false);
        uint64_t t0 = now_usec();
        int r = vmq_client_close_channel(cl->c, vm->ch.id);
        counted(cl, OP_CLOSE, t0);
        if (r < 0)
                unexpected(cl, OP_CLOSE, vm, r);
        forget_channel(cl, vm);
}

static void do_destroy(struct client *cl, struct vm *vm) {
        uint64_t t0 = now_usec();
        int r = vmq_client_destroy_machine(cl->c, vm->name);
        counted(cl, OP_DESTROY, t0);
        if (r < 0) {
                unexpected(cl, OP_DESTROY, vm, r);
                return;
        }
        vm->state = VM_DEFINED;
        if (vm->has_chan)
                forget_channel(cl, vm);
}

static void do_undefine(struct client *cl, struct vm *vm) {
        uint64_t t0 = now_usec();
        int r = vmq_client_undefine_machine(cl->c, vm->name);
        counted(cl, OP_UNDEFINE, t0);
        if (r < 0)
                unexpected(cl, OP_UNDEFINE, vm, r);
        else
                vm->state = VM_NONE;
}

static void do_list_machines(struct client *cl) {
        struct vmq_machine **list = NULL;
        size_t n = 0;
        uint64_t t0 = now_usec();
        int r = vmq_client_list_machines(cl->c, &list, &n);
        counted(cl, OP_LIST_MACHINES, t0);
        if (r < 0) {
                unexpected(cl, OP_LIST_MACHINES, NULL, r);
                return;
        }
        /* Our machines are there, in the state we know. */
        for (unsigned k = 0; k < cl->o->machines; k++) {
                struct vm *vm = &cl->vms[k];
                bool found = false;
                for (size_t i = 0; i < n; i++) {
                        if (strcmp(vmq_machine_get_name(list[i]), vm->name) != 0)
                                continue;
                        found = true;
                        enum vmq_machine_state st = vmq_machine_get_state(list[i]);
                        bool running = st == VMQ_MACHINE_RUNNING;
                        if (vm->state == VM_NONE || running == (vm->state == VM_RUNNING))
                                continue;
                        if (st == VMQ_MACHINE_CRASHED) {
                                /* An echo guest never crashes: say why once, then
                                 * go on with the machine as vmqd has it. */
                                struct vmq_machine *m = NULL;
                                const char *why = "its reason could not be read";
                                if (vmq_client_get_machine(cl->c, vm->name, &m) >= 0 &&
                                    vmq_machine_get_crash_reason(m))
                                        why = vmq_machine_get_crash_reason(m);
                                fail(cl, "list: %s crashed: %s", vm->name, why);
                                vmq_machine_unref(m);
                                vm->state = VM_DEFINED;
                                if (vm->has_chan)
                                        forget_channel(cl, vm);
                        } else {
                                fail(cl, "list: %s is %s", vm->name,
                                     vmq_machine_get_state_string(list[i]));
                        }
                }
                if (found != (vm->state != VM_NONE))
                        fail(cl, "list: %s is %s", vm->name, found ? "there" : "missing");
        }
        vmq_machine_unref_list(list);
}

static void do_list_channels(struct client *cl) {
        struct vmq_channel **list = NULL;
        size_t n = 0;
        uint64_t t0 = now_usec();
        int r = vmq_client_list_channels(cl->c, &list, &n);
        counted(cl, OP_LIST_CHANNELS, t0);
        if (r < 0) {
                unexpected(cl, OP_LIST_CHANNELS, NULL, r);
                return;
        }
        for (unsigned k = 0; k < cl->o->machines; k++) {
                struct vm *vm = &cl->vms[k];
                bool open = false;
                if (!vm->has_chan)
                        continue;
                for (size_t i = 0; i < n; i++)
                        if (vmq_channel_get_id(list[i]) == vm->ch.id)
                                open = vmq_channel_is_open(list[i]);
                if (!open)
                        fail(cl, "list: channel %u to %s is not listed as open", vm->ch.id,
                             vm->name);
        }
        vmq_channel_unref_list(list);
}

static void do_statistics(struct client *cl) {
        struct vmq_stats *s = NULL;
        uint64_t t0 = now_usec();
        int r = vmq_client_get_statistics(cl->c, &s);
        counted(cl, OP_STATISTICS, t0);
        if (r < 0)
                unexpected(cl, OP_STATISTICS, NULL, r);
        vmq_stats_free(s);
}

/* One step: an operation picked by weight, aimed at one of the client's
 * machines; when it does not fit that machine's state, the machine's next
 * step in its life instead. */
static void step(struct client *cl) {
        const unsigned *w = cl->o->kvm ? weights_kvm : weights_nokvm;
        unsigned total = 0, x;
        enum op op = OP_STATISTICS;
        struct vm *vm = &cl->vms[below(&cl->rng, cl->o->machines)];

        for (int i = 0; i < _OP_MAX; i++)
                total += w[i];
        x = (unsigned)below(&cl->rng, total);
        for (int i = 0; i < _OP_MAX; i++) {
                if (x < w[i]) {
                        op = (enum op)i;
                        break;
                }
                x -= w[i];
        }
        bool chan_open = vm->has_chan;
        switch (op) {
        case OP_SEND:
                if (chan_open && vm->ch.n_out < INFLIGHT) {
                        do_send(cl, vm);
                        return;
                }
                if (chan_open) {
                        do_receive(cl, vm);
                        return;
                }
                break;
        case OP_RECEIVE:
                if (chan_open) {
                        do_receive(cl, vm);
                        return;
                }
                break;
        case OP_CLOSE:
                if (chan_open) {
                        do_close(cl, vm);
                        return;
                }
                break;
        case OP_DESTROY:
                if (vm->state == VM_RUNNING) {
                        do_destroy(cl, vm);
                        return;
                }
                break;
        case OP_UNDEFINE:
                if (vm->state == VM_DEFINED) {
                        do_undefine(cl, vm);
                        return;
                }
                break;
        case OP_LIST_MACHINES:
                do_list_machines(cl);
                return;
        case OP_LIST_CHANNELS:
                do_list_channels(cl);
                return;
        case OP_STATISTICS:
                do_statistics(cl);
                return;
        default:
                break;
        }
        /* The machine's next step. */
        switch (vm->state) {
        case VM_NONE:
                (void)do_create(cl, vm);
                break;
        case VM_DEFINED:
                if (!cl->o->kvm) {
                        /* start and open must fail; then it goes */
                        if (below(&cl->rng, 4) == 0)
                                (void)do_start(cl, vm);
                        else if (below(&cl->rng, 3) == 0)
                                do_open(cl, vm);
                        else
                                do_undefine(cl, vm);
                } else {
                        (void)do_start(cl, vm);
                }
                break;
        case VM_RUNNING:
                if (!vm->has_chan)
                        do_open(cl, vm);
                else if (vm->ch.n_out < INFLIGHT)
                        do_send(cl, vm);
                else
                        do_receive(cl, vm);
                break;
        }
}

static void *client_main(void *arg) {
        struct client *cl = arg;
        const struct options *o = cl->o;
        int r = vmq_client_new(&cl->c);

        if (r >= 0)
                r = vmq_client_connect(cl->c, o->bus);
        if (r < 0) {
                fail(cl, "connect: %s", strerror(-r));
                return NULL;
        }
        for (unsigned k = 0; k < cl->o->machines; k++)
                snprintf(cl->vms[k].name, sizeof(cl->vms[k].name), "churn-%u-%u", cl->index, k);

        while (cl->n.calls < o->calls && now_usec() < end_usec)
                step(cl);

        /* The end: what is out on open channels must come back. */
        for (unsigned k = 0; k < cl->o->machines; k++) {
                struct vm *vm = &cl->vms[k];
                if (!vm->has_chan)
                        continue;
                drain(cl, vm, 20000000, false);
                if (vm->ch.n_out > 0) {
                        cl->n.lost += vm->ch.n_out;
                        fail(cl,
                             "channel %u to %s: %u messages never came back (first tag 0x%" PRIx64
                             ", %u bytes)",
                             vm->ch.id, vm->name, vm->ch.n_out, vm->ch.out[0].tag,
                             vm->ch.out[0].len);
                        vm->ch.n_out = 0;
                }
                uint64_t t0 = now_usec();
                int r2 = vmq_client_close_channel(cl->c, vm->ch.id);
                counted(cl, OP_CLOSE, t0);
                if (r2 < 0)
                        unexpected(cl, OP_CLOSE, vm, r2);
                forget_channel(cl, vm);
        }
        for (unsigned k = 0; k < cl->o->machines; k++) {
                struct vm *vm = &cl->vms[k];
                if (vm->state == VM_RUNNING)
                        do_destroy(cl, vm);
                if (vm->state == VM_DEFINED)
                        do_undefine(cl, vm);
        }
        cl->c = vmq_client_unref(cl->c);
        return NULL;
}

/* ---- vmqd from /proc ---- */

static int count_fds(pid_t pid) {
        char path[64];
        struct dirent *de;
        int n = 0;
        snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(path);
        if (!d)
                return -1;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

static long rss_kib(pid_t pid) {
        char path[64], line[256];
        long kib = -1;
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}

struct monitor {
        const struct options *o;
        struct vmq_client *c;
        int fds_start, fds_warm, fds_max, fds_end;
        long rss_start, rss_warm, rss_max, rss_end;
        bool warm;
        atomic_bool stop;
        uint64_t failures;
        pthread_t thread;
};

static void monitor_fail(struct monitor *mo, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void monitor_fail(struct monitor *mo, const char *fmt, ...) {
        va_list ap;
        mo->failures++;
        if (mo->failures > 5)
                return;
        pthread_mutex_lock(&print_lock);
        printf("churn: FAIL vmqd: ");
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        printf("\n");
        pthread_mutex_unlock(&print_lock);
}

static void monitor_sample(struct monitor *mo) {
        const struct options *o = mo->o;
        int fds = count_fds(o->vmqd_pid);
        long rss = rss_kib(o->vmqd_pid);
        uint64_t running = 0;
        struct vmq_stats *s = NULL;

        if (fds < 0 || rss < 0) {
                monitor_fail(mo, "pid %d is gone", (int)o->vmqd_pid);
                return;
        }
        if (fds > mo->fds_max)
                mo->fds_max = fds;
        if (rss > mo->rss_max)
                mo->rss_max = rss;
        if (!mo->warm) {
                if ((double)(now_usec() - start_usec) / 1e6 >= o->warmup) {
                        mo->warm = true;
                        mo->fds_warm = fds;
                        mo->rss_warm = rss;
                }
                return;
        }
        if (vmq_client_get_statistics(mo->c, &s) >= 0)
                (void)vmq_stats_lookup(s, "running", &running);
        vmq_stats_free(s);
        unsigned bound = (unsigned)mo->fds_warm + o->fd_slack + o->fd_per_vm * (unsigned)running;
        if ((unsigned)fds > bound)
                monitor_fail(mo,
                             "%d fds, over the bound of %u (%d after warm-up + %u + %u for "
                             "each of %" PRIu64 " running machines)",
                             fds, bound, mo->fds_warm, o->fd_slack, o->fd_per_vm, running);
        if (rss > mo->rss_warm + (long)o->rss_mib * 1024)
                monitor_fail(mo,
                             "RSS %.1f MiB, over the bound of %.1f MiB (%.1f after warm-up + "
                             "%u)",
                             rss / 1024.0, (mo->rss_warm + (long)o->rss_mib * 1024) / 1024.0,
                             mo->rss_warm / 1024.0, o->rss_mib);
}

static void *monitor_main(void *arg) {
        struct monitor *mo = arg;
        while (!atomic_load(&mo->stop)) {
                monitor_sample(mo);
                usleep(500000);
        }
        return NULL;
}

static void usage(FILE *f) {
        fprintf(f, "usage: vmq-churn --bus ADDRESS --vmqd-pid PID [options]\n"
                   "  --clients N        (8)      --calls N       per client (10000)\n"
                   "  --machines N       per client, 1..4 (2)\n"
                   "  --seconds S        (120)    --seed N        (default: random; printed)\n"
                   "  --kvm yes|no|auto  (auto: /dev/kvm)\n"
                   "  --warmup S         (20, at most a sixth of the run)\n"
                   "  --rss-mib N        RSS growth after warm-up (64)\n"
                   "  --fd-slack N (16)  --fd-per-vm N (16)  --fd-end-slack N (2)\n");
}

int main(int argc, char **argv) {
        enum {
                O_BUS = 0x100,
                O_PID,
                O_CLIENTS,
                O_MACHINES,
                O_CALLS,
                O_SECONDS,
                O_SEED,
                O_KVM,
                O_WARMUP,
                O_RSS,
                O_FD_SLACK,
                O_FD_PER_VM,
                O_FD_END,
        };
        static const struct option options[] = {
                {"help", no_argument, NULL, 'h'},
                {"bus", required_argument, NULL, O_BUS},
                {"vmqd-pid", required_argument, NULL, O_PID},
                {"clients", required_argument, NULL, O_CLIENTS},
                {"machines", required_argument, NULL, O_MACHINES},
                {"calls", required_argument, NULL, O_CALLS},
                {"seconds", required_argument, NULL, O_SECONDS},
                {"seed", required_argument, NULL, O_SEED},
                {"kvm", required_argument, NULL, O_KVM},
                {"warmup", required_argument, NULL, O_WARMUP},
                {"rss-mib", required_argument, NULL, O_RSS},
                {"fd-slack", required_argument, NULL, O_FD_SLACK},
                {"fd-per-vm", required_argument, NULL, O_FD_PER_VM},
                {"fd-end-slack", required_argument, NULL, O_FD_END},
                {},
        };
        struct options o = {
                .clients = 8,
                .machines = 2,
                .calls = 10000,
                .seconds = 120,
                .warmup = -1,
                .rss_mib = 64,
                .fd_slack = 16,
                .fd_per_vm = 16,
                .fd_end_slack = 2,
        };
        const char *kvm = "auto";
        bool have_seed = false;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        usage(stdout);
                        return 0;
                case O_BUS:
                        o.bus = optarg;
                        break;
                case O_PID:
                        o.vmqd_pid = (pid_t)atoi(optarg);
                        break;
                case O_CLIENTS:
                        o.clients = (unsigned)atoi(optarg);
                        break;
                case O_MACHINES:
                        o.machines = (unsigned)atoi(optarg);
                        break;
                case O_CALLS:
                        o.calls = (unsigned)atoi(optarg);
                        break;
                case O_SECONDS:
                        o.seconds = strtod(optarg, NULL);
                        break;
                case O_SEED:
                        o.seed = strtoull(optarg, NULL, 0);
                        have_seed = true;
                        break;
                case O_KVM:
                        kvm = optarg;
                        break;
                case O_WARMUP:
                        o.warmup = strtod(optarg, NULL);
                        break;
                case O_RSS:
                        o.rss_mib = (unsigned)atoi(optarg);
                        break;
                case O_FD_SLACK:
                        o.fd_slack = (unsigned)atoi(optarg);
                        break;
                case O_FD_PER_VM:
                        o.fd_per_vm = (unsigned)atoi(optarg);
                        break;
                case O_FD_END:
                        o.fd_end_slack = (unsigned)atoi(optarg);
                        break;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (!o.bus || o.vmqd_pid <= 0 || o.clients == 0 || o.clients > MAX_CLIENTS ||
            o.machines == 0 || o.machines > MAX_VMS_PER_CLIENT || o.seconds <= 0 || optind < argc) {
                usage(stderr);
                return 2;
        }
        if (!have_seed) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                o.seed = mix((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32)) % 1000000000u;
        }
        if (o.warmup < 0)
                o.warmup = o.seconds / 6 < 20 ? o.seconds / 6 : 20;
        o.kvm = strcmp(kvm, "yes") == 0 ||
                (strcmp(kvm, "auto") == 0 && access("/dev/kvm", R_OK | W_OK) == 0);
        setvbuf(stdout, NULL, _IOLBF, 0);
        printf("churn: seed %" PRIu64 ", %u clients, up to %u calls each, %.0f s, kvm %s, vmqd "
               "pid %d\n",
               o.seed, o.clients, o.calls, o.seconds, o.kvm ? "yes" : "no (no machine runs)",
               (int)o.vmqd_pid);

        struct monitor mo = {.o = &o};
        int r = vmq_client_new(&mo.c);
        if (r >= 0)
                r = vmq_client_connect(mo.c, o.bus);
        if (r < 0) {
                fprintf(stderr, "churn: connect to %s: %s\n", o.bus, strerror(-r));
                return 2;
        }
        mo.fds_start = mo.fds_max = count_fds(o.vmqd_pid);
        mo.rss_start = mo.rss_max = rss_kib(o.vmqd_pid);
        if (mo.fds_start < 0 || mo.rss_start < 0) {
                fprintf(stderr, "churn: cannot read /proc/%d\n", (int)o.vmqd_pid);
                return 2;
        }

        start_usec = now_usec();
        end_usec = start_usec + (uint64_t)(o.seconds * 1e6);
        struct client *clients = calloc(o.clients, sizeof(*clients));
        if (!clients)
                return 2;
        pthread_create(&mo.thread, NULL, monitor_main, &mo);
        for (unsigned i = 0; i < o.clients; i++) {
                clients[i].o = &o;
                clients[i].index = i;
                clients[i].rng = mix(o.seed * 64 + i);
                if (pthread_create(&clients[i].thread, NULL, client_main, &clients[i]) != 0) {
                        fprintf(stderr, "churn: cannot start client %u\n", i);
                        return 2;
                }
        }
        struct counts total = {0};
        for (unsigned i = 0; i < o.clients; i++) {
                pthread_join(clients[i].thread, NULL);
                struct counts *n = &clients[i].n;
                total.calls += n->calls;
                for (int k = 0; k < _OP_MAX; k++) {
                        total.by_op[k] += n->by_op[k];
                        total.usec_by_op[k] += n->usec_by_op[k];
                }
                total.sent += n->sent;
                total.received += n->received;
                total.received_after_close += n->received_after_close;
                total.dropped += n->dropped;
                total.lost += n->lost;
                total.refused += n->refused;
                total.bytes += n->bytes;
                total.failures += n->failures;
        }
        double secs = (double)(now_usec() - start_usec) / 1e6;
        atomic_store(&mo.stop, true);
        pthread_join(mo.thread, NULL);

        /* Everything is undefined now: the fds must be back. */
        usleep(500000);
        mo.fds_end = count_fds(o.vmqd_pid);
        mo.rss_end = rss_kib(o.vmqd_pid);
        if (mo.fds_end < 0)
                monitor_fail(&mo, "pid %d is gone at the end", (int)o.vmqd_pid);
        else if (mo.fds_end > mo.fds_start + (int)o.fd_end_slack ||
                 mo.fds_end < mo.fds_start - (int)o.fd_end_slack)
                monitor_fail(&mo, "%d fds at the end, %d at the start (+-%u)", mo.fds_end,
                             mo.fds_start, o.fd_end_slack);
        if (mo.warm && mo.rss_end > mo.rss_warm + (long)o.rss_mib * 1024)
                monitor_fail(&mo, "RSS %.1f MiB at the end, %.1f after warm-up (bound + %u MiB)",
                             mo.rss_end / 1024.0, mo.rss_warm / 1024.0, o.rss_mib);
        mo.c = vmq_client_unref(mo.c);

        printf("churn: seed %" PRIu64 "\n", o.seed);
        printf("churn: %" PRIu64 " calls in %.1f s (%.0f calls/s) by %u clients\n", total.calls,
               secs, (double)total.calls / secs, o.clients);
        printf("churn: by operation (mean time per call):");
        for (int k = 0; k < _OP_MAX; k++)
                printf(" %s %" PRIu64 " (%.1f ms)", op_names[k], total.by_op[k],
                       total.by_op[k]
                               ? (double)total.usec_by_op[k] / 1000.0 / (double)total.by_op[k]
                               : 0.0);
        printf("\n");
        printf("churn: messages: %" PRIu64 " sent (%.1f MiB), %" PRIu64
               " received back exactly once and byte-exact (%" PRIu64 " of them after the "
               "close), %" PRIu64 " dropped by design (closed or destroyed first), %" PRIu64
               " lost; %" PRIu64 " sends refused with QueueFull\n",
               total.sent, (double)total.bytes / MIB, total.received, total.received_after_close,
               total.dropped, total.lost, total.refused);
        printf("churn: vmqd fds: %d at start, %d after warm-up (%.0f s), max %d, %d at end "
               "(bounds: warm-up + %u + %u per running machine; at end start +-%u)\n",
               mo.fds_start, mo.fds_warm, o.warmup, mo.fds_max, mo.fds_end, o.fd_slack, o.fd_per_vm,
               o.fd_end_slack);
        printf("churn: vmqd RSS: %.1f MiB at start, %.1f after warm-up, max %.1f, %.1f at end "
               "(bound: warm-up + %u MiB)\n",
               mo.rss_start / 1024.0, mo.rss_warm / 1024.0, mo.rss_max / 1024.0,
               mo.rss_end / 1024.0, o.rss_mib);
        bool failed = total.failures > 0 || mo.failures > 0 || total.lost > 0;
        if (total.failures + mo.failures > 55)
                printf("churn: (%" PRIu64 " failures in all; the first 55 are above)\n",
                       total.failures + mo.failures);
        printf("churn: %s\n", failed ? "FAILED" : "PASSED");
        free(clients);
        return failed ? 1 : 0;
}
