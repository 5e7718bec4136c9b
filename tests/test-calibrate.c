/* SPDX-License-Identifier: MIT */
/*
 * The calibration of "auto" (core/calibrate.c): what it measures, what it
 * decides from that, and that it leaves the pool as it found it.  The
 * figures themselves are this machine's; the checks are on their shape
 * and on the decision agreeing with them.  Host-driven monitors: runs
 * anywhere.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "core/util.h"
#include "core/vm.h"
#include "tests/test-util.h"

static struct vmq_monitor *monitor(size_t frames_4k, size_t frames_2m, bool calibrate) {
        struct vmq_monitor_config mc;
        struct vmq_monitor *m = NULL;
        vmq_monitor_config_init(&mc);
        cr_assert(mc.calibrate, "on by default");
        mc.host_driven = true;
        mc.pool_4k_frames = frames_4k;
        mc.pool_2m_frames = frames_2m;
        mc.calibrate = calibrate;
        int r = vmq_monitor_new(&mc, &m);
        cr_assert_eq(r, 0, "vmq_monitor_new: %d", r);
        return m;
}

static void assert_pool_whole(struct vmq_monitor *m) {
        cr_assert_eq(vmq_pool_check(m->pool), 0);
        for (int huge = 0; huge < 2; huge++)
                cr_assert_eq(vmq_monitor_frames_free(m, huge), vmq_monitor_frames_total(m, huge),
                             "%s frames all back in the pool", huge ? "2 MiB" : "4 KiB");
}

/* The decision is the figures': flipped from flip_min_4k on, every longer
 * run measured flips faster, and the run just below it copies faster. */
static void assert_plan_agrees(const struct vmq_transfer_plan *p) {
        cr_assert(p->measured);
        for (unsigned i = 0; i < p->steps_4k; i++) {
                cr_assert(p->copy_ns_4k[i] > 0 && p->copy_ns_4k[i] < UINT32_MAX, "copy %u", i);
                cr_assert(p->flip_ns_4k[i] > 0 && p->flip_ns_4k[i] < UINT32_MAX, "flip %u", i);
                bool flips = p->flip_min_4k != 0 && (1u << i) >= p->flip_min_4k;
                if (flips)
                        cr_assert_lt(p->flip_ns_4k[i], p->copy_ns_4k[i], "run of %u pages",
                                     1u << i);
        }
        if (p->flip_min_4k == 0) {
                cr_assert_geq(p->flip_ns_4k[p->steps_4k - 1], p->copy_ns_4k[p->steps_4k - 1]);
        } else {
                cr_assert_eq(p->flip_min_4k & (p->flip_min_4k - 1), 0, "a measured run length");
                cr_assert_leq(p->flip_min_4k, 1u << (p->steps_4k - 1));
                if (p->flip_min_4k > 1) {
                        unsigned below = (unsigned)__builtin_ctz(p->flip_min_4k) - 1;
                        cr_assert_geq(p->flip_ns_4k[below], p->copy_ns_4k[below]);
                }
        }
        for (unsigned i = p->steps_4k; i < VMQ_PLAN_STEPS; i++)
                cr_assert(p->copy_ns_4k[i] == 0 && p->flip_ns_4k[i] == 0, "not measured: %u", i);
}

Test(calibrate, measures_every_run_and_leaves_the_pool_whole) {
        struct vmq_monitor *m = monitor(64 * 1024, 0, true);
        struct vmq_transfer_plan p;
        vmq_monitor_transfer_plan(m, &p);
        cr_assert_eq(p.steps_4k, VMQ_PLAN_STEPS);
        assert_plan_agrees(&p);
        cr_log_info(
                "copy/flip ns: 1 page %u/%u, %u pages %u/%u; auto flips from %u pages (0: never)",
                p.copy_ns_4k[0], p.flip_ns_4k[0], 1u << (VMQ_PLAN_STEPS - 1),
                p.copy_ns_4k[VMQ_PLAN_STEPS - 1], p.flip_ns_4k[VMQ_PLAN_STEPS - 1], p.flip_min_4k);
        /* no huge frames: the 2 MiB default stands */
        cr_assert_eq(p.copy_ns_2m, 0);
        cr_assert_eq(p.flip_ns_2m, 0);
        cr_assert(p.flip_2m);
        assert_pool_whole(m);
        vmq_monitor_free(m);
}

Test(calibrate, huge_pages_too, .timeout = 60) {
        cr_assert_geq(vmq_test_reserve_hugepages(4), 4, "4 free hugetlb pages");
        struct vmq_monitor *m = monitor(64 * 1024, 4, true);
        cr_assert(vmq_monitor_has_huge(m));
        struct vmq_transfer_plan p;
        vmq_monitor_transfer_plan(m, &p);
        assert_plan_agrees(&p);
        cr_assert(p.copy_ns_2m > 0 && p.flip_ns_2m > 0);
        cr_assert_eq(p.flip_2m, p.flip_ns_2m < p.copy_ns_2m);
        cr_log_info("2 MiB page: copy %u ns, flip %u ns", p.copy_ns_2m, p.flip_ns_2m);
        assert_pool_whole(m);
        vmq_monitor_free(m);
}

/* A pool too small for the longest runs times the ones it can hold; one
 * too small for any keeps the defaults, and the monitor works. */
Test(calibrate, small_pools) {
        struct vmq_monitor *m = monitor(96, 0, true); /* 64 spare + 2 x 16 */
        struct vmq_transfer_plan p;
        vmq_monitor_transfer_plan(m, &p);
        cr_assert_eq(p.steps_4k, 5, "runs up to 16 pages: %u steps", p.steps_4k);
        assert_plan_agrees(&p);
        assert_pool_whole(m);
        vmq_monitor_free(m);

        m = monitor(65, 0, true);
        vmq_monitor_transfer_plan(m, &p);
        cr_assert_not(p.measured);
        cr_assert_eq(p.steps_4k, 0);
        cr_assert_eq(p.flip_min_4k, 0);
        cr_assert(p.flip_2m);
        assert_pool_whole(m);
        vmq_monitor_free(m);
}

Test(calibrate, off_keeps_the_defaults) {
        struct vmq_monitor *m = monitor(64 * 1024, 0, false);
        struct vmq_transfer_plan p, d;
        vmq_monitor_transfer_plan(m, &p);
        vmq_transfer_plan_default(&d);
        cr_assert_eq(memcmp(&p, &d, sizeof(p)), 0);
        cr_assert_not(p.measured);
        vmq_monitor_free(m);
}
