/* SPDX-License-Identifier: MIT */
/*
 * vmq-soak: the chaos soak.
 *
 * One process is the monitor (core/monitor.h).  It keeps a population of
 * micro-VMs running guest/images/chaos.elf: chaos VMs, which do every
 * hostile thing a guest can do to the monitor (mode=chaos), and witness
 * VMs, which behave and check every byte they receive (mode=witness).  The
 * host end does random things of its own in a loop: create, start, stop,
 * shut down and destroy VMs, open and close channels guest<->guest and
 * host<->guest, send and receive on the host's channels.  Between actions
 * it checks the invariants:
 *
 *   - the process is alive: a SIGSEGV, SIGBUS or abort() anywhere in the
 *     monitor is caught, reported (seed, operation count, last host
 *     actions, stack) and re-raised, so the process still dies of it;
 *   - no host operation hangs (a watchdog thread, --stuck seconds);
 *   - vmq_pool_check() holds (every frame free or owned exactly once);
 *   - no witness VM is ever CRASHED, none exits with a non-zero code, and no
 *     witness reports a bad payload on its console ("witness: FAIL");
 *   - what the host receives from a witness is intact and in sequence, and
 *     every message is stamped with the sender's identity;
 *   - the host holds a bounded amount of anonymous memory (--max-host-mib);
 *   - at the end, with every VM destroyed, every frame of the pool is free
 *     again (4 KiB and 2 MiB).
 * Chaos VMs may crash or exit: that is their right.
 *
 * Replay: --seed drives every choice of the host and, derived, every chaos
 * and witness VM's own PRNG (chaos_vm_seed() in guest/images/chaos.h), so a
 * run can be repeated: the choices are the same, the timing (and therefore
 * what the choices meet) is not.  Every failure prints the seed and the
 * operation count.
 *
 * --inject exists to show that the checks can fail: `mismatch` corrupts one
 * byte of the host's messages to witnesses (from a third of the run on),
 * `leak` takes pool frames behind the monitor's back and does not give them
 * back until the end check.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "core/monitor.h"
#include "core/remap.h"
#include "core/vm.h" /* struct vmq_monitor: the pool, for --inject leak */
#include "guest/images/chaos.h"
#include "tests/soak/soak.h"

const struct soak_avoid soak_avoids[AVOID_MAX] = {
        [AVOID_RESTOP] = {"restop", "", "", "no second vmq_vm_stop of a VM that ran"},
        [AVOID_REVOKE] = {"revoke", "", " shared=skip",
                          "witnesses leave pages shared with them unread (issue 7, class 2)"},
        [AVOID_COPYRACE] = {"copyrace", " race=0", "",
                            "chaos VMs never send or print a received run (class 1)"},
        [AVOID_SYSCONSOLE] = {"sysconsole", " sysconsole=0", "",
                              "chaos VMs print nothing below 64 KiB (class 6)"},
        [AVOID_ROSHARE] = {"roshare", " roshare=0", "",
                           "chaos VMs never forward a read-only share (class 3)"},
};

/* ---- small things ------------------------------------------------------------ */

static uint64_t rnd(struct soak *s, uint64_t n) {
        return chaos_below(&s->rng, n);
}

static bool chance(struct soak *s, unsigned per_mille) {
        return chaos_chance(&s->rng, per_mille);
}

static unsigned count_vms(struct soak *s, int witness) {
        unsigned n = 0;

        for (unsigned i = 0; i < SOAK_VMS_MAX; i++)
                if (s->vms[i].used && (witness < 0 || s->vms[i].witness == (witness == 1)))
                        n++;
        return n;
}

/* A random live VM (NULL when there is none); `created_only`: not started. */
static struct soak_vm *pick_vm(struct soak *s, bool created_only) {
        unsigned n = 0, k;

        for (unsigned i = 0; i < SOAK_VMS_MAX; i++)
                if (s->vms[i].used && (!created_only || !s->vms[i].started))
                        n++;
        if (!n)
                return NULL;
        k = (unsigned)rnd(s, n);
        for (unsigned i = 0; i < SOAK_VMS_MAX; i++)
                if (s->vms[i].used && (!created_only || !s->vms[i].started) && k-- == 0)
                        return &s->vms[i];
        return NULL;
}

static unsigned chans_of(struct soak *s, uint32_t id) {
        unsigned n = 0;

        for (unsigned i = 0; i < SOAK_CHANS_MAX; i++)
                if (s->chans[i].used && (s->chans[i].end[0] == id || s->chans[i].end[1] == id))
                        n++;
        return n;
}

static struct soak_chan *pick_chan(struct soak *s, bool host_only) {
        unsigned n = 0, k;

        for (unsigned i = 0; i < SOAK_CHANS_MAX; i++)
                if (s->chans[i].used && (!host_only || s->chans[i].host_side >= 0))
                        n++;
        if (!n)
                return NULL;
        k = (unsigned)rnd(s, n);
        for (unsigned i = 0; i < SOAK_CHANS_MAX; i++)
                if (s->chans[i].used && (!host_only || s->chans[i].host_side >= 0) && k-- == 0)
                        return &s->chans[i];
        return NULL;
}

/* ---- host operations ------------------------------------------------------------ */

static bool avoiding(const struct soak *s, unsigned which) {
        return s->avoid & (1u << which);
}

/* The arguments --avoid adds for a VM of this kind, into buf. */
static const char *avoid_args(const struct soak *s, bool witness, char *buf, size_t size) {
        size_t used = 0;

        buf[0] = '\0';
        for (unsigned i = 0; i < AVOID_MAX; i++) {
                const char *arg = witness ? soak_avoids[i].witness_arg : soak_avoids[i].chaos_arg;
                size_t n = strlen(arg);

                if (avoiding(s, i) && used + n < size) {
                        memcpy(buf + used, arg, n + 1);
                        used += n;
                }
        }
        return buf;
}

static void op_create(struct soak *s) {
        struct vmq_vm_config cfg;
        struct soak_vm *v = NULL;
        unsigned nw = count_vms(s, 1), want_w = s->max_vms >= 3 ? (s->max_vms + 2) / 3 : 1;
        char name[32], args[256], extra[128];
        int r;

        for (unsigned i = 0; i < SOAK_VMS_MAX && !v; i++)
                if (!s->vms[i].used)
                        v = &s->vms[i];
        if (!v)
                return;
        memset(v, 0, sizeof(*v));
        v->serial = s->next_serial++;
        v->seed = chaos_vm_seed(soak_seed, v->serial);
        v->witness = nw < want_w && (nw == 0 || chance(s, 600));
        vmq_vm_config_init(&cfg);
        soak_vm_name(v, name, sizeof(name));
        cfg.name = name;
        if (v->witness) {
                cfg.vcpus = 1 + (unsigned)rnd(s, 2);
                cfg.ram_size = 16u << 20;
                cfg.queue_depth = 64;
                cfg.post_depth = 16;
                cfg.rx_size = 4u << 20;
                snprintf(args, sizeof(args), "mode=witness seed=%" PRIu64 "%s", v->seed,
                         avoid_args(s, true, extra, sizeof(extra)));
        } else {
                cfg.vcpus = 1 + (unsigned)rnd(s, 4);
                cfg.ram_size = (8u << 20) << rnd(s, 2);
                cfg.queue_depth = 4u << rnd(s, 6);
                cfg.post_depth = 4u << rnd(s, 4);
                cfg.rx_size = (64u << 10) << rnd(s, 7);
                if (vmq_monitor_has_huge(s->mon) && chance(s, 300)) {
                        cfg.huge_size = VMQ_HUGE_PAGE_SIZE;
                        cfg.huge_rx_size = VMQ_HUGE_PAGE_SIZE << rnd(s, 2);
                }
                snprintf(args, sizeof(args),
                         "mode=chaos seed=%" PRIu64 " pace=%u fault=%u exit=%u%s", v->seed,
                         s->pace_us, s->fault_ppm, s->exit_ppm,
                         avoid_args(s, false, extra, sizeof(extra)));
        }
        cfg.args = args;
        v->vcpus = cfg.vcpus;
        soak_note_op(s,
                     "create %s %s vcpus=%u ram=%" PRIu64 "M q=%u p=%u rx=%" PRIu64
                     "K huge=%" PRIu64 "M/%" PRIu64 "M seed=%" PRIu64,
                     name, soak_vm_kind(v), cfg.vcpus, cfg.ram_size >> 20, cfg.queue_depth,
                     cfg.post_depth, cfg.rx_size >> 10, cfg.huge_size >> 20, cfg.huge_rx_size >> 20,
                     v->seed);
        soak_op_begin("vmq_vm_create");
        r = vmq_vm_create(s->mon, &cfg, s->image, s->image_size, &v->vm);
        soak_op_end();
        if (r < 0) {
                /* -ENOMEM when the pool is short: fine, the population shrinks */
                s->create_failed++;
                if (r != -ENOMEM)
                        soak_fail(s, "vmq_vm_create(%s): %s", name, strerror(-r));
                return;
        }
        v->used = true;
        v->id = vmq_vm_id(v->vm);
        s->vms_created++;
        s->witnesses_created += v->witness;
        soak_publish_vms(s);
}

static void op_start(struct soak *s) {
        struct soak_vm *v = pick_vm(s, true);
        char name[32];
        int r;

        if (!v)
                return;
        soak_vm_name(v, name, sizeof(name));
        soak_note_op(s, "start %s", name);
        soak_op_begin("vmq_vm_start");
        r = vmq_vm_start(v->vm);
        soak_op_end();
        v->started = true;
        if (r < 0)
                soak_fail(s, "vmq_vm_start(%s): %s", name, strerror(-r));
        else
                s->started++;
}

/* Takes a VM out of the population: check it, destroy it (which stops it
 * first), forget its channels (the monitor closed them). */
static void remove_vm(struct soak *s, struct soak_vm *v) {
        struct vmq_vm_stats st;
        char name[32];
        uint32_t id;

        soak_vm_name(v, name, sizeof(name));
        soak_check_state(s, v);
        soak_scan_console(s, v);
        vmq_vm_get_stats(v->vm, &st);
        s->guest_exits += st.exits;
        s->guest_sent += st.sent;
        s->guest_errors += st.errors;
        s->guest_posted += st.posted;
        s->guest_copies += st.copies;
        s->guest_flips += st.flips;
        s->guest_shares += st.shares;
        soak_note_op(s, "destroy %s", name);
        soak_op_begin("vmq_vm_destroy");
        vmq_vm_destroy(v->vm);
        soak_op_end();
        s->destroyed++;
        id = v->id;
        /* gone: nothing below may find it (soak_vm_by_id) */
        memset(v, 0, sizeof(*v));
        soak_publish_vms(s);
        for (unsigned i = 0; i < SOAK_CHANS_MAX; i++) {
                struct soak_chan *c = &s->chans[i];

                if (c->used && (c->end[0] == id || c->end[1] == id))
                        soak_close_drained(s, c);
        }
}

static void op_destroy(struct soak *s) {
        struct soak_vm *v = pick_vm(s, false);

        /* witnesses live longer */
        if (!v || (v->witness && !chance(s, 200)))
                return;
        remove_vm(s, v);
}

/* Stops a VM; it stays in the population (stopped) until destroyed, which
 * stops it again: vmq_vm_stop() is documented to be idempotent. */
static void op_stop(struct soak *s) {
        struct soak_vm *v = pick_vm(s, false);
        char name[32];

        if (!v || (v->witness && !chance(s, 200)))
                return;
        /* --avoid restop: never a second stop of a VM that ran */
        if (avoiding(s, AVOID_RESTOP) && v->started)
                return;
        soak_vm_name(v, name, sizeof(name));
        soak_note_op(s, "stop %s%s", name, v->stopped ? " (again)" : "");
        soak_check_state(s, v);
        soak_op_begin("vmq_vm_stop");
        vmq_vm_stop(v->vm);
        soak_op_end();
        v->started = true; /* a stopped VM cannot start again */
        v->stopped = true;
        s->stopped++;
}

static void op_shutdown(struct soak *s) {
        struct soak_vm *v = pick_vm(s, false);
        char name[32];
        int r;

        if (!v || (v->witness && !chance(s, 300)))
                return;
        soak_vm_name(v, name, sizeof(name));
        soak_note_op(s, "shutdown %s", name);
        soak_op_begin("vmq_vm_shutdown");
        r = vmq_vm_shutdown(v->vm);
        soak_op_end();
        if (r == 0)
                s->shutdowns++;
        else if (r != -ESRCH && r != -EAGAIN && r != -EPROTO)
                soak_fail(s, "vmq_vm_shutdown(%s): %s", name, strerror(-r));
}

static void op_open(struct soak *s, bool with_host) {
        struct vmq_channel_config cfg;
        struct soak_vm *a = pick_vm(s, false), *b = with_host ? NULL : pick_vm(s, false);
        struct soak_chan *c = NULL;
        uint32_t ends[2], id;
        bool swap = chance(s, 500), deep;
        int r;

        if (!a || (!with_host && (!b || a == b)))
                return;
        if (chans_of(s, a->id) >= SOAK_CHANS_PER_VM ||
            (b && chans_of(s, b->id) >= SOAK_CHANS_PER_VM))
                return;
        for (unsigned i = 0; i < SOAK_CHANS_MAX && !c; i++)
                if (!s->chans[i].used)
                        c = &s->chans[i];
        if (!c)
                return;
        vmq_channel_config_init(&cfg);
        /* mostly shallow host inboxes; now and then a deep one that the
         * host reads seldom, to see what a guest can make it hold */
        deep = with_host && chance(s, 150);
        cfg.host_depth = deep ? 256u << rnd(s, 5) : 1 + (uint32_t)rnd(s, 8);
        cfg.transfer = (enum vmq_transfer)rnd(s, VMQ_TRANSFER_MAX);
        ends[0] = a->id;
        ends[1] = b ? b->id : VMQ_HOST_ID;
        if (swap) {
                uint32_t t = ends[0];

                ends[0] = ends[1];
                ends[1] = t;
        }
        soak_note_op(s, "open %u<->%u transfer=%d depth=%u", ends[0], ends[1], (int)cfg.transfer,
                     cfg.host_depth);
        soak_op_begin("vmq_channel_open");
        r = vmq_channel_open(s->mon, ends[0], ends[1], &cfg, &id);
        soak_op_end();
        if (r == -EAGAIN || r == -EPROTO) {
                s->open_failed++; /* an end's queue is full (or scribbled over) */
                return;
        }
        if (r < 0) {
                soak_fail(s, "vmq_channel_open(%u, %u): %s", ends[0], ends[1], strerror(-r));
                return;
        }
        memset(c, 0, sizeof(*c));
        c->used = true;
        c->id = id;
        c->end[0] = ends[0];
        c->end[1] = ends[1];
        c->host_side = !b ? (ends[0] == VMQ_HOST_ID ? 0 : 1) : -1;
        c->witness = !b && a->witness;
        c->deep = deep;
        s->opened++;
}

static void op_close(struct soak *s) {
        struct soak_chan *c = pick_chan(s, false);
        int r;

        if (!c)
                return;
        soak_note_op(s, "close channel %u", c->id);
        soak_op_begin("vmq_channel_close");
        r = vmq_channel_close(s->mon, c->id);
        soak_op_end();
        if (r < 0 && r != -EPIPE)
                soak_fail(s, "vmq_channel_close(%u): %s", c->id, strerror(-r));
        s->closed++;
        soak_close_drained(s, c);
}

static void op_host_send(struct soak *s) {
        struct soak_chan *c = pick_chan(s, true);
        struct soak_vm *v;
        uint8_t *buf;
        size_t len;
        uint64_t tag;
        int r;

        if (!c)
                return;
        v = soak_vm_by_id(s, c->end[1 - c->host_side]);
        if (c->witness) {
                len = chance(s, 500) ? WITNESS_HDR_SIZE + rnd(s, VMQ_INLINE_MAX - 23)
                                     : VMQ_INLINE_MAX + 1 + rnd(s, 16384);
        } else {
                switch (rnd(s, 4)) {
                case 0:
                        len = rnd(s, VMQ_INLINE_MAX + 1);
                        break;
                case 1:
                        len = VMQ_INLINE_MAX + 1 + rnd(s, 8192);
                        break;
                case 2:
                        len = rnd(s, 256u << 10);
                        break;
                default:
                        len = 4096 * (1 + rnd(s, 16));
                        break;
                }
        }
        buf = malloc(len ? len : 1);
        if (!buf) {
                soak_fail(s, "out of memory for a %zu-byte message", len);
                return;
        }
        tag = c->witness ? c->tx : chaos_next(&s->rng);
        if (c->witness) {
                witness_fill(buf, (uint32_t)len, VMQ_HOST_ID,
                             (uint64_t)c->id << 32 | (c->tx & 0xffffffffu));
                /* --inject mismatch: from a third of the run on, one
                 * byte of every message to a witness is a lie (every one,
                 * so that a witness destroyed before it read the first
                 * cannot hide it) */
                if (s->inject && !strcmp(s->inject, "mismatch") &&
                    soak_elapsed_s() * 3 > s->seconds) {
                        buf[len - 1] ^= 0x40;
                        if (!s->injected)
                                fprintf(stderr,
                                        "soak: from now on one byte of every host message to a "
                                        "witness is corrupt, the first: tag %" PRIu64
                                        " on channel %u (to vm %u)\n",
                                        tag, c->id, c->end[1 - c->host_side]);
                        s->injected = true;
                }
        } else {
                for (size_t i = 0; i < len; i += 8) {
                        uint64_t x = chaos_next(&s->rng);

                        memcpy(buf + i, &x, len - i < 8 ? len - i : 8);
                }
        }
        soak_note_op(s, "host send channel %u len=%zu tag=%" PRIu64, c->id, len, tag);
        soak_op_begin("vmq_host_send");
        r = vmq_host_send(s->mon, c->id, buf, len, tag);
        soak_op_end();
        free(buf);
        if (r == 0) {
                s->host_sent++;
                if (c->witness)
                        c->tx++;
        } else if (r == -EAGAIN) {
                s->host_send_again++;
        } else if (r == -EPIPE) {
                /* closed by the monitor (the VM end is gone) */
        } else if (r == -EMSGSIZE && v && !v->witness) {
                /* larger than the chaos VM's receive window */
        } else {
                soak_fail(s, "vmq_host_send(channel %u, %zu bytes): %s", c->id, len, strerror(-r));
        }
}

static void op_host_recv(struct soak *s) {
        struct soak_chan *c = pick_chan(s, true);

        if (!c || (c->deep && !chance(s, 100)))
                return;
        soak_note_op(s, "host recv channel %u", c->id);
        if (!soak_host_drain(s, c, 1 + (unsigned)rnd(s, 16), chance(s, 50) ? 1 : 0))
                soak_forget_chan(c);
}

/* Takes some pool frames behind the monitor's back (--inject leak). */
static void inject_leak(struct soak *s) {
        void *hva;

        if (vmq_space_new(s->mon->pool, &s->leak) < 0 ||
            vmq_space_add_region(s->leak, VMQ_IMAGE_GPA, 16 * VMQ_PAGE_SIZE, VMQ_FRAME_4K,
                                 VMQ_REGION_POPULATE, &hva) < 0) {
                fprintf(stderr, "soak: --inject leak: could not take frames\n");
                return;
        }
        fprintf(stderr, "soak: injected a leak of 16 frames\n");
}

static void one_op(struct soak *s) {
        unsigned nvms = count_vms(s, -1), created = 0, hostch = 0, nch = 0;
        unsigned w[11], total = 0, k;

        for (unsigned i = 0; i < SOAK_VMS_MAX; i++)
                created += s->vms[i].used && !s->vms[i].started;
        for (unsigned i = 0; i < SOAK_CHANS_MAX; i++) {
                nch += s->chans[i].used;
                hostch += s->chans[i].used && s->chans[i].host_side >= 0;
        }
        w[0] = nvms < s->max_vms ? (nvms < s->max_vms / 2 + 1 ? 40 : 6) : 0; /* create */
        w[1] = created ? 30 : 0;                                             /* start */
        w[2] = nvms >= 2 ? 10 : 0;                                           /* open g<->g */
        w[3] = nvms ? 6 : 0;                                                 /* open h<->g */
        w[4] = nch ? 4 : 0;                                                  /* close */
        w[5] = hostch ? 30 : 0;                                              /* host send */
        w[6] = hostch ? 30 : 0;                                              /* host recv */
        w[7] = nvms ? 2 : 0;                                                 /* stop */
        w[8] = nvms ? 2 : 0;                                                 /* shutdown */
        w[9] = nvms ? 3 : 0;                                                 /* destroy */
        w[10] = 2;                                                           /* idle */
        for (unsigned i = 0; i < 11; i++)
                total += w[i];
        k = (unsigned)rnd(s, total);
        for (unsigned i = 0; i < 11; i++) {
                if (k >= w[i]) {
                        k -= w[i];
                        continue;
                }
                switch (i) {
                case 0:
                        op_create(s);
                        break;
                case 1:
                        op_start(s);
                        break;
                case 2:
                        op_open(s, false);
                        break;
                case 3:
                        op_open(s, true);
                        break;
                case 4:
                        op_close(s);
                        break;
                case 5:
                        op_host_send(s);
                        break;
                case 6:
                        op_host_recv(s);
                        break;
                case 7:
                        op_stop(s);
                        break;
                case 8:
                        op_shutdown(s);
                        break;
                case 9:
                        op_destroy(s);
                        break;
                default:
                        usleep(2000);
                        break;
                }
                break;
        }
        atomic_fetch_add(&soak_shared->ops, 1);
}

/* ---- main ------------------------------------------------------------------------ */

static int read_image(struct soak *s) {
        char path[4096];
        FILE *f;
        long size;

        snprintf(path, sizeof(path), "%s/chaos.elf", s->guest_dir);
        f = fopen(path, "rbe");
        if (!f) {
                fprintf(stderr, "soak: cannot open '%s': %m\n", path);
                return -1;
        }
        if (fseek(f, 0, SEEK_END) < 0 || (size = ftell(f)) <= 0 || fseek(f, 0, SEEK_SET) < 0 ||
            !(s->image = malloc((size_t)size)) ||
            fread(s->image, 1, (size_t)size, f) != (size_t)size) {
                fprintf(stderr, "soak: cannot read '%s'\n", path);
                fclose(f);
                return -1;
        }
        fclose(f);
        s->image_size = (size_t)size;
        return 0;
}

static uint64_t random_seed(void) {
        uint64_t v = 0;
        FILE *f = fopen("/dev/urandom", "rbe");

        if (!f || fread(&v, sizeof(v), 1, f) != 1)
                v = soak_now_ns();
        if (f)
                fclose(f);
        return v;
}

static void usage(FILE *out) {
        fprintf(out,
                "usage: vmq-soak [--seconds N] [--seed S] [--vms N] [options]\n"
                "  --seconds N        how long to run (default 60)\n"
                "  --seed S           seed of every choice (default: random, printed)\n"
                "  --vms N            most VMs alive at once, about a third witnesses (default 6)\n"
                "  --guest-dir DIR    where chaos.elf is (default the build's guest/images)\n"
                "  --pool-mib N       4 KiB frame pool size (default 512)\n"
                "  --huge N           2 MiB frames to use when the host has them (default 8)\n"
                "  --pace US          chaos vCPUs idle about this long every few actions (default "
                "300)\n"
                "  --fault PPM        deliberate guest faults per million actions (default 20)\n"
                "  --exit PPM         deliberate guest exits per million actions (default 20)\n"
                "  --max-host-mib N   anonymous memory the host may hold (default 512)\n"
                "  --stuck S          a host operation longer than this is a hang (default 60)\n"
                "  --inject KIND      make a check fail on purpose: mismatch | leak\n"
                "  --avoid BUG        steer clear of a known bug to look further (repeatable;\n"
                "                     all: every one):\n");
        for (unsigned i = 0; i < AVOID_MAX; i++)
                fprintf(out, "                     %s: %s\n", soak_avoids[i].name,
                        soak_avoids[i].help);
        fprintf(out, "  --verbose          print every host operation\n"
                     "  --no-fork          be the monitor in this process (for gdb); by default a\n"
                     "                     parent process waits for the monitor and reports its "
                     "death\n");
}

static int parse_args(struct soak *s, int argc, char **argv, bool *ret_seeded) {
        static const struct option opts[] = {
                {"seconds", required_argument, NULL, 's'},
                {"seed", required_argument, NULL, 'S'},
                {"vms", required_argument, NULL, 'n'},
                {"guest-dir", required_argument, NULL, 'g'},
                {"pool-mib", required_argument, NULL, 'p'},
                {"huge", required_argument, NULL, 'H'},
                {"pace", required_argument, NULL, 'P'},
                {"fault", required_argument, NULL, 'f'},
                {"exit", required_argument, NULL, 'e'},
                {"max-host-mib", required_argument, NULL, 'm'},
                {"stuck", required_argument, NULL, 'k'},
                {"inject", required_argument, NULL, 'i'},
                {"avoid", required_argument, NULL, 'a'},
                {"verbose", no_argument, NULL, 'v'},
                {"no-fork", no_argument, NULL, 'F'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        int o;

        *ret_seeded = false;
        while ((o = getopt_long(argc, argv, "s:S:n:g:p:H:P:f:e:m:k:i:a:vFh", opts, NULL)) != -1) {
                char *end = NULL;
                unsigned long long v = 0;

                if (optarg && o != 'g' && o != 'i' && o != 'a') {
                        errno = 0;
                        v = strtoull(optarg, &end, 0);
                        if (errno || !end || *end || end == optarg) {
                                fprintf(stderr, "soak: bad number '%s'\n", optarg);
                                return -1;
                        }
                }
                switch (o) {
                case 's':
                        s->seconds = (unsigned)v;
                        break;
                case 'S':
                        soak_seed = v;
                        *ret_seeded = true;
                        break;
                case 'n':
                        s->max_vms = (unsigned)v;
                        break;
                case 'g':
                        s->guest_dir = optarg;
                        break;
                case 'p':
                        s->pool_mib = (size_t)v;
                        break;
                case 'H':
                        s->huge_frames = (size_t)v;
                        break;
                case 'P':
                        s->pace_us = (unsigned)v;
                        break;
                case 'f':
                        s->fault_ppm = (unsigned)v;
                        break;
                case 'e':
                        s->exit_ppm = (unsigned)v;
                        break;
                case 'm':
                        s->max_host_mib = (size_t)v;
                        break;
                case 'k':
                        s->stuck_s = (unsigned)v;
                        break;
                case 'i':
                        s->inject = optarg;
                        break;
                case 'a': {
                        unsigned i = 0;

                        if (!strcmp(optarg, "all")) {
                                s->avoid = (1u << AVOID_MAX) - 1;
                                break;
                        }
                        while (i < AVOID_MAX && strcmp(optarg, soak_avoids[i].name))
                                i++;
                        if (i == AVOID_MAX) {
                                fprintf(stderr, "soak: unknown bug to avoid '%s'\n", optarg);
                                return -1;
                        }
                        s->avoid |= 1u << i;
                        break;
                }
                case 'v':
                        s->verbose = true;
                        break;
                case 'F':
                        s->no_fork = true;
                        break;
                case 'h':
                        usage(stdout);
                        exit(0);
                default:
                        usage(stderr);
                        return -1;
                }
        }
        if (optind != argc || s->max_vms < 2 || s->max_vms > SOAK_VMS_MAX || s->pool_mib < 64 ||
            !s->stuck_s ||
            (s->inject && strcmp(s->inject, "mismatch") && strcmp(s->inject, "leak"))) {
                usage(stderr);
                return -1;
        }
        return 0;
}

static long free_hugepages(void) {
        FILE *f = fopen("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "re");
        long n = 0;

        if (f) {
                if (fscanf(f, "%ld", &n) != 1)
                        n = 0;
                fclose(f);
        }
        return n;
}

static int run(struct soak *s);

int main(int argc, char **argv) {
        static struct soak soak;
        struct soak *s = &soak;
        bool seeded;
        pid_t child;

        s->seconds = 60;
        s->max_vms = 6;
        s->guest_dir = getenv("VMQ_GUEST_DIR") ? getenv("VMQ_GUEST_DIR") : VMQ_GUEST_DIR;
        s->pool_mib = 512;
        s->huge_frames = 8;
        s->pace_us = 300;
        s->fault_ppm = 20;
        s->exit_ppm = 20;
        s->max_host_mib = 512;
        s->stuck_s = 60;
        if (parse_args(s, argc, argv, &seeded) < 0)
                return 2;
        if (!seeded)
                soak_seed = random_seed();
        s->rng = chaos_mix(soak_seed ^ 0x686f7374ull);
        {
                int n = snprintf(soak_replay, sizeof(soak_replay),
                                 "vmq-soak --seed %" PRIu64 " --seconds %u --vms %u%s%s", soak_seed,
                                 s->seconds, s->max_vms, s->inject ? " --inject " : "",
                                 s->inject ? s->inject : "");

                for (unsigned i = 0; i < AVOID_MAX && n > 0 && (size_t)n < sizeof(soak_replay); i++)
                        if (avoiding(s, i))
                                n += snprintf(soak_replay + n, sizeof(soak_replay) - (size_t)n,
                                              " --avoid %s", soak_avoids[i].name);
        }
        if (read_image(s) < 0)
                return 2;
        soak_shared = mmap(NULL, sizeof(*soak_shared), PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (soak_shared == MAP_FAILED) {
                fprintf(stderr, "soak: mmap: %m\n");
                return 2;
        }
        if (s->no_fork)
                return run(s);
        fflush(NULL);
        child = fork();
        if (child < 0) {
                fprintf(stderr, "soak: fork: %m\n");
                return 2;
        }
        if (child == 0)
                _exit(run(s));
        return soak_supervise(child);
}

/* The monitor process: the soak itself. */
static int run(struct soak *s) {
        struct vmq_monitor_config mc;
        pthread_t wd;
        uint64_t end_ns, next_progress, ops;
        size_t free4, total4, free2, total2;
        double secs;
        int r;

        vmq_monitor_config_init(&mc);
        mc.pool_4k_frames = s->pool_mib * 256;
        if (s->huge_frames && free_hugepages() > 0) {
                size_t have = (size_t)free_hugepages();

                mc.pool_2m_frames = s->huge_frames < have ? s->huge_frames : have;
        }
        r = vmq_monitor_new(&mc, &s->mon);
        if (r == -ENOENT || r == -EACCES) {
                fprintf(stderr, "soak: SKIP no usable /dev/kvm: %s\n", strerror(-r));
                return 77;
        }
        if (r < 0) {
                fprintf(stderr, "soak: vmq_monitor_new: %s\n", strerror(-r));
                return 2;
        }
        soak_install_fatal_handlers();
        soak_shared->t0_ns = soak_now_ns();
        printf("soak: seed=%" PRIu64 " seconds=%u vms=%u pool=%zuMiB huge=%zu pace=%uus "
               "fault=%uppm exit=%uppm\n",
               soak_seed, s->seconds, s->max_vms, s->pool_mib,
               vmq_monitor_frames_total(s->mon, true), s->pace_us, s->fault_ppm, s->exit_ppm);
        fflush(stdout);
        soak_publish_vms(s);
        pthread_create(&wd, NULL, soak_watchdog, &s->stuck_s);
        pthread_detach(wd);
        if (s->inject && !strcmp(s->inject, "leak"))
                inject_leak(s);

        end_ns = soak_shared->t0_ns + (uint64_t)s->seconds * 1000000000ull;
        next_progress = soak_shared->t0_ns + SOAK_PROGRESS_NS;
        while (!s->failed && soak_now_ns() < end_ns) {
                if (soak_now_ns() >= next_progress) {
                        /* a trace of how far it got, should the process die
                         * where no handler can report (a fault with every
                         * signal blocked, as inside pthread_kill) */
                        printf("soak: t=%.0fs ops=%" PRIu64 " vms=%u created=%" PRIu64
                               " chaos_crashed=%" PRIu64 " host_verified=%" PRIu64 "\n",
                               soak_elapsed_s(), atomic_load(&soak_shared->ops), count_vms(s, -1),
                               s->vms_created, s->chaos_crashed, s->host_verified);
                        fflush(stdout);
                        next_progress += SOAK_PROGRESS_NS;
                }
                one_op(s);
                soak_check_all(s, false);
                if (soak_now_ns() - s->last_check_ns > SOAK_CHECK_NS) {
                        soak_check_all(s, true);
                        s->last_check_ns = soak_now_ns();
                }
                usleep((useconds_t)rnd(s, 1000));
        }
        ops = atomic_load(&soak_shared->ops);
        secs = soak_elapsed_s();

        /* The end: look at every VM once more, then destroy them all,
         * witnesses first, so that no witness runs on while the chaos VMs
         * that shared pages with it go. */
        soak_check_all(s, true);
        for (int pass = 1; pass >= 0; pass--)
                for (unsigned i = 0; i < SOAK_VMS_MAX; i++)
                        if (s->vms[i].used && s->vms[i].witness == pass)
                                remove_vm(s, &s->vms[i]);
        soak_op_begin("vmq_pool_check (end)");
        r = vmq_pool_check(s->mon->pool);
        soak_op_end();
        if (r < 0)
                soak_fail(s, "vmq_pool_check at the end: %s", strerror(-r));
        free4 = vmq_monitor_frames_free(s->mon, false);
        total4 = vmq_monitor_frames_total(s->mon, false);
        free2 = vmq_monitor_frames_free(s->mon, true);
        total2 = vmq_monitor_frames_total(s->mon, true);
        if (free4 != total4 || free2 != total2)
                soak_fail(s, "frames not conserved: 4 KiB %zu of %zu free, 2 MiB %zu of %zu free",
                          free4, total4, free2, total2);
        s->leak = vmq_space_free(s->leak);
        soak_op_begin("vmq_monitor_free");
        s->mon = vmq_monitor_free(s->mon);
        soak_op_end();
        free(s->image);

        printf("soak: vms created=%" PRIu64 " (witnesses %" PRIu64 ") create_failed=%" PRIu64
               " started=%" PRIu64 " stopped=%" PRIu64 " shutdowns=%" PRIu64 " destroyed=%" PRIu64
               "\n",
               s->vms_created, s->witnesses_created, s->create_failed, s->started, s->stopped,
               s->shutdowns, s->destroyed);
        printf("soak: channels opened=%" PRIu64 " open_failed=%" PRIu64 " closed=%" PRIu64
               "; host sent=%" PRIu64 " (again %" PRIu64 ") received=%" PRIu64 " verified=%" PRIu64
               "; pool checks=%" PRIu64 "; host anonymous memory peak %ld MiB\n",
               s->opened, s->open_failed, s->closed, s->host_sent, s->host_send_again,
               s->host_received, s->host_verified, s->pool_checks, s->anon_peak_kib / 1024);
        printf("soak: guests: hypercall exits=%" PRIu64 " requests accepted=%" PRIu64
               " (posted %" PRIu64 "; copies %" PRIu64 " flips %" PRIu64 " shares %" PRIu64
               ") refused=%" PRIu64 "; chaos exited=%" PRIu64 " crashed=%" PRIu64 "\n",
               s->guest_exits, s->guest_sent, s->guest_posted, s->guest_copies, s->guest_flips,
               s->guest_shares, s->guest_errors, s->chaos_exited, s->chaos_crashed);
        for (unsigned i = 0; i < 8 && s->crash_reasons[i][0]; i++)
                printf("soak:   chaos crashes \"%s\": %" PRIu64 "\n", s->crash_reasons[i],
                       s->crash_reason_count[i]);
        printf("soak: seed=%" PRIu64 " seconds=%.0f ops=%" PRIu64 " ops/s=%.1f vms_created=%" PRIu64
               " chaos_crashed=%" PRIu64 " witness_crashed=%" PRIu64 " frames %s\n",
               soak_seed, secs, ops, secs > 0 ? (double)ops / secs : 0.0, s->vms_created,
               s->chaos_crashed, s->witness_crashed,
               free4 == total4 && free2 == total2 ? "conserved" : "LEAKED");
        if (s->failed) {
                printf("soak: FAILED; replay: %s\n", soak_replay);
                return 1;
        }
        return 0;
}
