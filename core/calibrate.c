/* SPDX-License-Identifier: MIT */
/*
 * Calibration of "auto": whether this machine moves a page message faster
 * by copying it or by flipping its frames, measured with the monitor's own
 * frame pool when the monitor starts.
 *
 * Copying a run of k pages costs k fresh frames, k page copies and one
 * mapping into the receiver's window.  Flipping it costs k fresh zeroed
 * frames for the sender, and two mapping changes, one in each space; no
 * byte is copied.  Which is cheaper, and from which run length on, depends
 * on the machine: the cost of mmap and of the TLB shootdowns it causes
 * against the speed of memcpy.  So both are timed here, through the same
 * calls the monitor makes for a message (vmq_remap_copy and
 * vmq_remap_flip, between two scratch spaces of the pool), for runs of 1,
 * 2, 4, ... 64 pages of 4 KiB and for one 2 MiB page, each the best of a
 * few rounds (longer runs follow the 64-page figures).  About 20 ms on
 * these machines; under full emulation (QEMU/TCG) about 30 times that.
 * A flip leaves the sender fresh frames that fault in when it writes its
 * buffer again: that first write is timed with the flip.  What
 * the receiving guest pays later (its own page faults on the new
 * mappings) is the same for both methods, and not timed.
 *
 * The result, a vmq_transfer_plan, is what choose_how() in request.c
 * follows for channels whose transfer is "auto".
 */
#include <errno.h>
#include <string.h>

#include "core/util.h"
#include "core/vm.h"

#define ROUNDS_4K 3
#define ROUNDS_2M 2
/* 4 KiB frames the pool must have free beyond what the runs use */
#define SLACK_4K 64

void vmq_transfer_plan_default(struct vmq_transfer_plan *plan) {
        memset(plan, 0, sizeof(*plan));
        /* What the machines we measured before calibration existed had:
         * remapping a 4 KiB page cost more than copying it, a 2 MiB page
         * is far cheaper to move than to copy. */
        plan->flip_min_4k = 0;
        plan->flip_2m = true;
}

static uint32_t clamp_ns(uint64_t ns) {
        return ns > UINT32_MAX ? UINT32_MAX : (uint32_t)(ns ? ns : 1);
}

/* The sender writing its buffer again after a flip: one byte a page. */
static int touch(struct vmq_space *s, uint64_t gpa, uint64_t size, uint64_t step) {
        volatile uint8_t *p = vmq_space_translate(s, gpa, size, true);
        if (!p)
                return -EFAULT;
        for (uint64_t off = 0; off < size; off += step)
                p[off] = 1;
        return 0;
}

/* Best of `rounds`: copy, then flip, of runs of 1 << i pages, i < steps. */
static int time_4k(struct vmq_space *src, struct vmq_space *dst, unsigned steps,
                   struct vmq_transfer_plan *plan) {
        for (unsigned i = 0; i < steps; i++)
                plan->copy_ns_4k[i] = plan->flip_ns_4k[i] = UINT32_MAX;
        for (int round = 0; round < ROUNDS_4K; round++) {
                for (unsigned i = 0; i < steps; i++) {
                        size_t k = (size_t)1 << i;
                        uint64_t t0 = vmq_now_ns();
                        int r = vmq_remap_copy(src, 0, dst, 0, (uint64_t)k * VMQ_PAGE_SIZE);
                        uint64_t t1 = vmq_now_ns();
                        if (r < 0 || (r = vmq_remap_release(dst, 0, k)) < 0)
                                return r;
                        uint64_t t2 = vmq_now_ns();
                        r = vmq_remap_flip(src, 0, dst, 0, k);
                        if (r == 0)
                                r = touch(src, 0, (uint64_t)k * VMQ_PAGE_SIZE, VMQ_PAGE_SIZE);
                        uint64_t t3 = vmq_now_ns();
                        if (r < 0 || (r = vmq_remap_release(dst, 0, k)) < 0)
                                return r;
                        plan->copy_ns_4k[i] = VMQ_MIN(plan->copy_ns_4k[i], clamp_ns(t1 - t0));
                        plan->flip_ns_4k[i] = VMQ_MIN(plan->flip_ns_4k[i], clamp_ns(t3 - t2));
                }
        }
        return 0;
}

static int calibrate_4k(struct vmq_pool *p, struct vmq_transfer_plan *plan) {
        unsigned steps = VMQ_PLAN_STEPS;
        /* the source's run and the receiver's, both at the longest run */
        while (steps > 0 &&
               2 * ((size_t)1 << (steps - 1)) + SLACK_4K > vmq_pool_frames_free(p, VMQ_FRAME_4K))
                steps--;
        if (steps == 0)
                return -ENOSPC;
        uint64_t size = ((uint64_t)1 << (steps - 1)) * VMQ_PAGE_SIZE;
        struct vmq_space *src = NULL, *dst = NULL;
        int r = vmq_space_new(p, &src);
        if (r == 0)
                r = vmq_space_new(p, &dst);
        if (r == 0)
                r = vmq_space_add_region(src, 0, size, VMQ_FRAME_4K, VMQ_REGION_POPULATE, NULL);
        if (r == 0)
                r = vmq_space_add_region(dst, 0, size, VMQ_FRAME_4K, 0, NULL);
        if (r == 0)
                r = time_4k(src, dst, steps, plan);
        vmq_space_free(dst);
        vmq_space_free(src);
        if (r < 0)
                return r;
        plan->steps_4k = steps;
        /* Flip from the shortest run on which it wins, and keeps winning
         * on every longer run measured; copy below it. */
        plan->flip_min_4k = 0;
        for (unsigned i = steps; i-- > 0;) {
                if (plan->flip_ns_4k[i] >= plan->copy_ns_4k[i])
                        break;
                plan->flip_min_4k = 1u << i;
        }
        return 0;
}

/* One 2 MiB page: copied into 4 KiB pages (where a copy lands in the
 * receiver's window), or flipped into the huge window. */
static int calibrate_2m(struct vmq_pool *p, struct vmq_transfer_plan *plan) {
        size_t pages = VMQ_HUGE_PAGE_SIZE / VMQ_PAGE_SIZE;
        if (!vmq_pool_has_huge(p) || vmq_pool_frames_free(p, VMQ_FRAME_2M) < 3 ||
            vmq_pool_frames_free(p, VMQ_FRAME_4K) < pages + SLACK_4K)
                return -ENOSPC;
        struct vmq_space *src = NULL, *dst = NULL;
        int r = vmq_space_new(p, &src);
        if (r == 0)
                r = vmq_space_new(p, &dst);
        if (r == 0)
                r = vmq_space_add_region(src, 0, VMQ_HUGE_PAGE_SIZE, VMQ_FRAME_2M,
                                         VMQ_REGION_POPULATE, NULL);
        if (r == 0)
                r = vmq_space_add_region(dst, 0, VMQ_HUGE_PAGE_SIZE, VMQ_FRAME_4K, 0, NULL);
        /* the huge window above the 4 KiB one, 2 MiB aligned */
        if (r == 0)
                r = vmq_space_add_region(dst, VMQ_HUGE_PAGE_SIZE, VMQ_HUGE_PAGE_SIZE, VMQ_FRAME_2M,
                                         0, NULL);
        uint64_t copy = UINT64_MAX, flip = UINT64_MAX;
        for (int round = 0; r == 0 && round < ROUNDS_2M; round++) {
                uint64_t t0 = vmq_now_ns();
                r = vmq_remap_copy(src, 0, dst, 0, VMQ_HUGE_PAGE_SIZE);
                uint64_t t1 = vmq_now_ns();
                if (r == 0)
                        r = vmq_remap_release(dst, 0, pages);
                if (r < 0)
                        break;
                uint64_t t2 = vmq_now_ns();
                r = vmq_remap_flip(src, 0, dst, VMQ_HUGE_PAGE_SIZE, 1);
                if (r == 0)
                        r = touch(src, 0, VMQ_HUGE_PAGE_SIZE, VMQ_HUGE_PAGE_SIZE);
                uint64_t t3 = vmq_now_ns();
                if (r == 0)
                        r = vmq_remap_release(dst, VMQ_HUGE_PAGE_SIZE, 1);
                copy = VMQ_MIN(copy, t1 - t0);
                flip = VMQ_MIN(flip, t3 - t2);
                if (copy > 4 * flip || flip > 4 * copy)
                        break; /* no second round can turn that round */
        }
        vmq_space_free(dst);
        vmq_space_free(src);
        if (r < 0)
                return r;
        plan->copy_ns_2m = clamp_ns(copy);
        plan->flip_ns_2m = clamp_ns(flip);
        plan->flip_2m = flip < copy;
        return 0;
}

int vmq_pool_calibrate(struct vmq_pool *p, struct vmq_transfer_plan *plan) {
        vmq_transfer_plan_default(plan);
        int r = calibrate_4k(p, plan);
        if (r < 0) {
                vmq_transfer_plan_default(plan);
                return r;
        }
        plan->measured = true;
        r = calibrate_2m(p, plan);
        if (r < 0 && r != -ENOSPC) {
                vmq_transfer_plan_default(plan);
                return r;
        }
        return 0;
}
