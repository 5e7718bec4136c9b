/* SPDX-License-Identifier: MIT */
/*
 * Remap engine: flip, share, copy, release, their errors, zeroing, the
 * ownership invariant under random operations, and teardown.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/remap.h"
#include "core/util.h"
#include "tests/test-util.h"

#define PG 4096ull
#define HPG (2ull * 1024 * 1024)

static struct vmq_pool *new_pool_scrub(size_t f4k, size_t f2m, bool scrub_thread) {
        struct vmq_pool_config cfg = {.frames_4k = f4k,
                                      .frames_2m = f2m,
                                      .require_huge = f2m > 0,
                                      .scrub_thread = scrub_thread};
        struct vmq_pool *p = NULL;
        if (f2m > 0)
                cr_assert_geq(vmq_test_reserve_hugepages((long)f2m + 8), (long)f2m,
                              "could not reserve hugetlb pages (root is required)");
        int r = vmq_pool_new(&cfg, &p);
        cr_assert_eq(r, 0, "vmq_pool_new: %s", strerror(-r));
        cr_assert_eq(vmq_pool_has_huge(p), f2m > 0);
        return p;
}

static struct vmq_pool *new_pool(size_t f4k, size_t f2m) {
        return new_pool_scrub(f4k, f2m, false);
}

static struct vmq_space *new_space(struct vmq_pool *p) {
        struct vmq_space *s = NULL;
        cr_assert_eq(vmq_space_new(p, &s), 0);
        return s;
}

static uint8_t *add_region(struct vmq_space *s, uint64_t gpa, uint64_t size,
                           enum vmq_frame_kind kind, unsigned flags) {
        void *hva = NULL;
        int r = vmq_space_add_region(s, gpa, size, kind, flags, &hva);
        cr_assert_eq(r, 0, "add_region: %s", strerror(-r));
        cr_assert_not_null(hva);
        return hva;
}

static enum vmq_page_state state_of(struct vmq_space *s, uint64_t gpa) {
        enum vmq_page_state st = VMQ_PAGE_STATE_MAX;
        cr_assert_eq(vmq_space_page_state(s, gpa, &st, NULL), 0);
        return st;
}

static bool all_zero(const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (p[i])
                        return false;
        return true;
}

/* Touches p in a child process; returns the signal that killed it, or 0. */
static int child_touch(volatile uint8_t *p, bool write) {
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                signal(SIGSEGV, SIG_DFL);
                signal(SIGBUS, SIG_DFL);
                if (write)
                        *p = 0x5a;
                else
                        (void)*p;
                _exit(0);
        }
        int st = 0;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        return WIFSIGNALED(st) ? WTERMSIG(st) : 0;
}

/* Number of VMAs of this process that intersect [a, a + len). */
static int count_vmas(const void *a, size_t len) {
        FILE *f = fopen("/proc/self/maps", "re");
        cr_assert_not_null(f);
        uintptr_t lo = (uintptr_t)a, hi = lo + len;
        unsigned long s, e;
        char line[512];
        int n = 0;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s < hi && lo < e)
                        n++;
        fclose(f);
        return n;
}

static void fill(uint8_t *p, size_t n, uint8_t seed) {
        for (size_t i = 0; i < n; i++)
                p[i] = (uint8_t)(seed + i * 7 + (i >> 12));
}

static bool filled(const uint8_t *p, size_t n, uint8_t seed) {
        for (size_t i = 0; i < n; i++)
                if (p[i] != (uint8_t)(seed + i * 7 + (i >> 12)))
                        return false;
        return true;
}

Test(remap, flip_4k) {
        struct vmq_pool *p = new_pool(64, 0);
        struct vmq_space *a = new_space(p), *b = new_space(p);
        uint8_t *ah = add_region(a, 0, 16 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        uint8_t *bh = add_region(b, 0x100000, 16 * PG, VMQ_FRAME_4K, 0);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 48);
        cr_assert_eq(state_of(b, 0x100000 + 5 * PG), VMQ_PAGE_EMPTY);

        uint8_t *src = vmq_space_translate(a, 3 * PG, PG, true);
        cr_assert_eq(src, ah + 3 * PG);
        fill(src, PG, 1);
        cr_assert_eq(vmq_remap_flip(a, 3 * PG, b, 0x100000 + 5 * PG, 1), 0);

        uint8_t *dst = vmq_space_translate(b, 0x100000 + 5 * PG, PG, true);
        cr_assert_eq(dst, bh + 5 * PG);
        cr_assert(filled(dst, PG, 1), "receiver reads the data through translate");
        cr_assert(filled(bh + 5 * PG, PG, 1), "receiver reads the data through its hva");
        cr_assert_eq(state_of(b, 0x100000 + 5 * PG), VMQ_PAGE_OWNED);
        cr_assert_eq(state_of(a, 3 * PG), VMQ_PAGE_OWNED);
        uint8_t *old = vmq_space_translate(a, 3 * PG, PG, true);
        cr_assert_not_null(old);
        cr_assert(all_zero(old, PG), "sender's address has a fresh zeroed frame");
        cr_assert(all_zero(ah + 3 * PG, PG));
        /* the frames really are distinct now */
        old[0] = 0xee;
        cr_assert_eq(dst[0], 1);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 47);
        cr_assert_eq(vmq_pool_check(p), 0);
        vmq_space_free(a);
        vmq_space_free(b);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 64);
        vmq_pool_free(p);
}

Test(remap, flip_2m) {
        struct vmq_pool *p = new_pool(16, 4);
        struct vmq_space *a = new_space(p), *b = new_space(p);
        uint8_t *ah = add_region(a, 0x80000000, 2 * HPG, VMQ_FRAME_2M, VMQ_REGION_POPULATE);
        uint8_t *bh = add_region(b, 0xC0000000, 2 * HPG, VMQ_FRAME_2M, 0);
        cr_assert_eq((uintptr_t)ah % HPG, 0, "huge region is 2 MiB aligned in the host");
        cr_assert_eq((uintptr_t)bh % HPG, 0);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_2M), 2);
        enum vmq_frame_kind kind;
        cr_assert_eq(vmq_space_page_state(a, 0x80000000 + HPG + 5, NULL, &kind), 0);
        cr_assert_eq(kind, VMQ_FRAME_2M);

        uint8_t *src = vmq_space_translate(a, 0x80000000 + HPG, HPG, true);
        cr_assert_eq(src, ah + HPG);
        fill(src, HPG, 9);
        cr_assert_eq(vmq_remap_flip(a, 0x80000000 + HPG, b, 0xC0000000, 1), 0);
        uint8_t *dst = vmq_space_translate(b, 0xC0000000, HPG, false);
        cr_assert_eq(dst, bh);
        cr_assert(filled(dst, HPG, 9));
        cr_assert(filled(bh, HPG, 9));
        cr_assert(all_zero(ah + HPG, HPG), "sender's 2 MiB page is fresh and zeroed");
        cr_assert_eq(state_of(b, 0xC0000000 + HPG), VMQ_PAGE_EMPTY);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_2M), 1);
        cr_assert_eq(vmq_pool_check(p), 0);

        /* a flip back the other way, into the sender's second page slot */
        cr_assert_eq(vmq_remap_release(a, 0x80000000, 1), 0);
        cr_assert_eq(vmq_remap_flip(b, 0xC0000000, a, 0x80000000, 1), 0);
        cr_assert(filled(ah, HPG, 9));
        cr_assert_eq(vmq_pool_check(p), 0);
        vmq_space_free(a);
        vmq_space_free(b);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_2M), 4);
        vmq_pool_free(p);
}

Test(remap, flip_batched_run) {
        struct vmq_pool *p = new_pool(256, 0);
        /* Fragment the free frames first: single-frame holes at the start of
         * the pool, so that only a search for a contiguous run finds one. */
        struct vmq_space *c = new_space(p);
        add_region(c, 0, 8 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        for (int i = 0; i < 8; i += 2)
                cr_assert_eq(vmq_remap_release(c, (uint64_t)i * PG, 1), 0);
        struct vmq_space *a = new_space(p), *b = new_space(p);
        uint8_t *ah = add_region(a, 0, 64 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        uint8_t *bh = add_region(b, 0x200000, 64 * PG, VMQ_FRAME_4K, 0);
        cr_assert_eq(count_vmas(ah, 64 * PG), 1, "populated region is one mapping");
        for (int i = 0; i < 64; i++)
                fill(ah + i * PG, PG, (uint8_t)i);
        cr_assert_eq(vmq_remap_flip(a, 8 * PG, b, 0x200000 + 16 * PG, 32), 0);
        for (int i = 0; i < 32; i++) {
                cr_assert(filled(bh + (16 + i) * PG, PG, (uint8_t)(8 + i)), "page %d", i);
                cr_assert(all_zero(ah + (8 + i) * PG, PG));
        }
        cr_assert(filled(ah + 7 * PG, PG, 7));
        cr_assert(filled(ah + 40 * PG, PG, 40));
        /* Contiguous frames were moved with one mmap each way, and the kernel
         * keeps each as one VMA. */
        cr_assert_eq(count_vmas(bh + 16 * PG, 32 * PG), 1);
        cr_assert_eq(count_vmas(bh, 64 * PG), 3);
        cr_assert_leq(count_vmas(ah, 64 * PG), 3);
        cr_assert_eq(vmq_pool_check(p), 0);
        /* and a batched release puts the whole run back */
        cr_assert_eq(vmq_remap_release(b, 0x200000 + 16 * PG, 32), 0);
        cr_assert_eq(vmq_space_translate(b, 0x200000 + 16 * PG, 1, false), NULL);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 256 - 64 - 4);
        cr_assert_eq(vmq_pool_check(p), 0);
        /* scattered frames still work when no run is left: 4 single holes */
        struct vmq_space *d = new_space(p);
        add_region(d, 0, 188 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 0);
        cr_assert_eq(vmq_pool_check(p), 0);
        vmq_space_free(d);
        vmq_space_free(c);
        vmq_space_free(a);
        vmq_space_free(b);
        vmq_pool_free(p);
}

Test(remap, share_is_read_only_and_revocable) {
        struct vmq_pool *p = new_pool(64, 0);
        struct vmq_space *a = new_space(p), *b = new_space(p);
        uint8_t *ah = add_region(a, 0, 8 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        uint8_t *bh = add_region(b, 0x100000, 8 * PG, VMQ_FRAME_4K, 0);
        add_region(a, 0x100000, 8 * PG, VMQ_FRAME_4K, 0);
        fill(ah + 2 * PG, 2 * PG, 3);
        cr_assert_eq(vmq_remap_share(a, 2 * PG, b, 0x100000 + 4 * PG, 2), 0);
        cr_assert_eq(state_of(b, 0x100000 + 4 * PG), VMQ_PAGE_SHARED_IN);
        cr_assert_eq(state_of(a, 2 * PG), VMQ_PAGE_OWNED);

        uint8_t *ro = vmq_space_translate(b, 0x100000 + 4 * PG, 2 * PG, false);
        cr_assert_eq(ro, bh + 4 * PG);
        cr_assert(filled(ro, 2 * PG, 3));
        cr_assert_null(vmq_space_translate(b, 0x100000 + 4 * PG, 1, true));
        cr_assert_eq(child_touch(bh + 4 * PG, false), 0, "shared page is readable");
        cr_assert_eq(child_touch(bh + 4 * PG, true), SIGSEGV, "shared page is read-only");
        /* the share is live: the owner's writes show */
        ah[2 * PG + 10] = 0x77;
        cr_assert_eq(bh[4 * PG + 10], 0x77);

        cr_assert_eq(vmq_remap_flip(a, 2 * PG, b, 0x100000, 1), -EBUSY);
        cr_assert_eq(vmq_remap_flip(a, 3 * PG, b, 0x100000, 1), -EBUSY);
        cr_assert_eq(vmq_remap_release(a, 2 * PG, 1), -EBUSY);
        cr_assert_eq(vmq_remap_release(a, 0, 4), -EBUSY, "a run holding a shared frame");
        cr_assert_eq(state_of(a, 0), VMQ_PAGE_OWNED, "nothing changed");
        /* sharing is not re-sharing: the receiver does not own it */
        cr_assert_eq(vmq_remap_share(b, 0x100000 + 4 * PG, a, 0x100000, 1), -EPERM);
        cr_assert_eq(vmq_pool_check(p), 0);

        /* revocation by the receiver */
        cr_assert_eq(vmq_remap_release(b, 0x100000 + 4 * PG, 1), 0);
        cr_assert_eq(state_of(b, 0x100000 + 4 * PG), VMQ_PAGE_EMPTY);
        cr_assert_null(vmq_space_translate(b, 0x100000 + 4 * PG, 1, false));
        cr_assert_eq(child_touch(bh + 4 * PG, false), SIGSEGV, "revoked slot is inaccessible");
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 56, "a revoked share frees nothing");
        cr_assert_eq(vmq_pool_check(p), 0);
        /* the owner may move the frame again; the other one is still shared */
        cr_assert_eq(vmq_remap_flip(a, 2 * PG, b, 0x100000, 1), 0);
        cr_assert_eq(bh[10], 0x77);
        cr_assert_eq(vmq_remap_flip(a, 3 * PG, b, 0x100000 + PG, 1), -EBUSY);
        cr_assert_eq(vmq_pool_check(p), 0);

        /* freeing the owner leaves the receiver its pages: it must never
         * fault because another VM went away.  The frame is an orphan,
         * still read-only, held until the receiver releases it. */
        struct vmq_share_run *runs = NULL;
        size_t nruns = 0;
        cr_assert_eq(vmq_space_shares_out(a, &runs, &nruns), 0);
        cr_assert_eq(nruns, 1);
        cr_assert_eq(runs[0].space, b);
        cr_assert_eq(runs[0].gpa, 0x100000 + 5 * PG);
        cr_assert_eq(runs[0].len, PG);
        free(runs);
        uint8_t before = bh[5 * PG];
        vmq_space_free(a);
        cr_assert_eq(state_of(b, 0x100000 + 5 * PG), VMQ_PAGE_SHARED_IN);
        cr_assert_eq(bh[5 * PG], before, "same contents");
        cr_assert_eq(child_touch(bh + 5 * PG, false), 0, "still readable");
        cr_assert_eq(child_touch(bh + 5 * PG, true), SIGSEGV, "still read-only");
        cr_assert_null(vmq_space_translate(b, 0x100000 + 5 * PG, 1, true));
        cr_assert_eq(vmq_remap_share(b, 0x100000 + 5 * PG, b, 0x100000 + 6 * PG, 1), -EPERM);
        cr_assert_eq(vmq_pool_check(p), 0);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 62, "the orphan is held");
        cr_assert_eq(vmq_remap_release(b, 0x100000 + 5 * PG, 1), 0);
        cr_assert_eq(vmq_pool_check(p), 0);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 63);
        vmq_space_free(b);
        vmq_pool_free(p);
}

Test(remap, share_2m) {
        struct vmq_pool *p = new_pool(16, 2);
        struct vmq_space *a = new_space(p), *b = new_space(p);
        uint8_t *ah = add_region(a, 0x80000000, HPG, VMQ_FRAME_2M, VMQ_REGION_POPULATE);
        uint8_t *bh = add_region(b, 0xC0000000, HPG, VMQ_FRAME_2M, 0);
        fill(ah, HPG, 5);
        cr_assert_eq(vmq_remap_share(a, 0x80000000, b, 0xC0000000, 1), 0);
        cr_assert(filled(bh, HPG, 5));
        cr_assert_eq(child_touch(bh + HPG - 1, true), SIGSEGV);
        cr_assert_eq(vmq_pool_check(p), 0);
        /* the receiver goes away first: the owner's frame is its own again */
        vmq_space_free(b);
        cr_assert_eq(vmq_pool_check(p), 0);
        cr_assert_eq(vmq_remap_release(a, 0x80000000, 1), 0);
        vmq_space_free(a);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_2M), 2);
        vmq_pool_free(p);
}

Test(remap, copy_and_copy_in) {
        struct vmq_pool *p = new_pool(64, 0);
        struct vmq_space *a = new_space(p), *b = new_space(p);
        uint8_t *ah = add_region(a, 0, 8 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        uint8_t *bh = add_region(b, 0x100000, 8 * PG, VMQ_FRAME_4K, 0);
        fill(ah, 8 * PG, 11);
        size_t before = vmq_pool_frames_free(p, VMQ_FRAME_4K);

        /* unaligned source, 2 destination pages, tail of the last one zero */
        cr_assert_eq(vmq_remap_copy(a, 100, b, 0x100000 + 2 * PG, 6000), 0);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), before - 2, "fresh frames");
        cr_assert_eq(memcmp(bh + 2 * PG, ah + 100, 6000), 0);
        cr_assert(all_zero(bh + 2 * PG + 6000, 2 * PG - 6000));
        cr_assert_eq(state_of(b, 0x100000 + 3 * PG), VMQ_PAGE_OWNED);
        cr_assert_eq(state_of(b, 0x100000 + 4 * PG), VMQ_PAGE_EMPTY);
        cr_assert(filled(ah, 8 * PG, 11), "source unchanged");
        cr_assert_eq(state_of(a, 0), VMQ_PAGE_OWNED);
        /* the copy has frames of its own */
        bh[2 * PG] ^= 0xff;
        cr_assert(filled(ah, 8 * PG, 11));
        cr_assert_eq(vmq_remap_flip(b, 0x100000 + 2 * PG, a, 0, 1), -EBUSY);

        /* a shared-in page is readable, but not the receiver's to pass on:
         * not even as a copy */
        cr_assert_eq(vmq_remap_share(a, 7 * PG, b, 0x100000 + 7 * PG, 1), 0);
        cr_assert_eq(vmq_remap_copy(b, 0x100000 + 7 * PG, b, 0x100000, PG), -EPERM);
        cr_assert_eq(state_of(b, 0x100000), VMQ_PAGE_EMPTY);
        cr_assert_eq(vmq_remap_copy(a, 7 * PG, b, 0x100000, PG), 0);
        cr_assert_eq(memcmp(bh, ah + 7 * PG, PG), 0);

        static const char msg[] = "hello from the host";
        cr_assert_eq(vmq_remap_copy_in(b, 0x100000 + 5 * PG, msg, sizeof(msg)), 0);
        cr_assert_str_eq(
                (const char *)vmq_space_translate(b, 0x100000 + 5 * PG, sizeof(msg), false), msg);
        cr_assert(all_zero(bh + 5 * PG + sizeof(msg), PG - sizeof(msg)));
        cr_assert_eq(vmq_remap_copy_in(b, 0x100000 + 5 * PG, msg, sizeof(msg)), -EBUSY);
        cr_assert_eq(vmq_pool_check(p), 0);
        vmq_space_free(b);
        vmq_space_free(a);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 64);
        vmq_pool_free(p);
}

Test(remap, errors) {
        struct vmq_pool *p = new_pool(40, 0);
        struct vmq_space *a = new_space(p), *b = new_space(p);
        uint8_t *ah = add_region(a, 0, 16 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        add_region(a, 16 * PG, 16 * PG, VMQ_FRAME_4K, 0); /* adjacent region */
        add_region(b, 0x100000, 16 * PG, VMQ_FRAME_4K, 0);
        void *hva;

        /* region arguments */
        cr_assert_eq(vmq_space_add_region(b, 0x100000 + 8 * PG, 16 * PG, VMQ_FRAME_4K, 0, &hva),
                     -EEXIST);
        cr_assert_eq(vmq_space_add_region(b, 0x300001, PG, VMQ_FRAME_4K, 0, &hva), -EINVAL);
        cr_assert_eq(vmq_space_add_region(b, 0x300000, 0, VMQ_FRAME_4K, 0, &hva), -EINVAL);
        cr_assert_eq(vmq_space_add_region(b, 0x300000, PG + 1, VMQ_FRAME_4K, 0, &hva), -EINVAL);
        cr_assert_eq(vmq_space_add_region(b, UINT64_MAX - PG + 1, 2 * PG, VMQ_FRAME_4K, 0, &hva),
                     -EINVAL);
        cr_assert_eq(vmq_space_add_region(b, 0x80000000, HPG, VMQ_FRAME_2M, 0, &hva), -EOPNOTSUPP);
        cr_assert_eq(vmq_space_region_count(b), 1);

        /* misaligned, zero count, out of range, crossing regions */
        cr_assert_eq(vmq_remap_flip(a, 100, b, 0x100000, 1), -EINVAL);
        cr_assert_eq(vmq_remap_flip(a, 0, b, 0x100000 + 8, 1), -EINVAL);
        cr_assert_eq(vmq_remap_flip(a, 0, b, 0x100000, 0), -EINVAL);
        cr_assert_eq(vmq_remap_flip(a, 0x900000, b, 0x100000, 1), -ERANGE);
        cr_assert_eq(vmq_remap_flip(a, 0, b, 0x100000 + 15 * PG, 2), -ERANGE);
        cr_assert_eq(vmq_remap_flip(a, 15 * PG, b, 0x100000, 2), -ERANGE, "crosses regions");
        cr_assert_eq(vmq_remap_flip(a, 0, b, 0x100000, SIZE_MAX), -ERANGE);
        cr_assert_eq(vmq_remap_share(a, 15 * PG, b, 0x100000, 2), -ERANGE);
        cr_assert_eq(vmq_remap_release(a, 15 * PG, 2), -ERANGE);
        cr_assert_eq(vmq_remap_copy(a, 15 * PG, b, 0x100000, 2 * PG), -ERANGE);
        cr_assert_eq(vmq_remap_copy(a, 0, b, 0x100000 + 15 * PG, 2 * PG), -ERANGE);
        cr_assert_eq(vmq_remap_copy(a, 0, b, 0x100000 + 1, 8), -EINVAL);
        cr_assert_eq(vmq_remap_copy(a, UINT64_MAX - 3, b, 0x100000, 8), -ERANGE);
        cr_assert_eq(vmq_remap_copy_in(b, 0x100000, "x", 0), -EINVAL);

        /* not owned source, non-empty destination */
        cr_assert_eq(vmq_remap_flip(a, 16 * PG, b, 0x100000, 1), -EPERM);
        cr_assert_eq(vmq_remap_flip(b, 0x100000, a, 16 * PG, 1), -EPERM);
        cr_assert_eq(vmq_remap_share(b, 0x100000, a, 16 * PG, 1), -EPERM);
        cr_assert_eq(vmq_remap_copy(b, 0x100000, a, 16 * PG, 8), -EPERM);
        cr_assert_eq(vmq_remap_release(b, 0x100000, 1), -EPERM);
        cr_assert_eq(vmq_remap_flip(a, 0, a, 4 * PG, 1), -EBUSY);
        cr_assert_eq(vmq_remap_share(a, 0, a, 4 * PG, 1), -EBUSY);
        cr_assert_eq(vmq_remap_copy(a, 0, a, 4 * PG, 8), -EBUSY);
        /* a partly-empty destination run is refused as a whole */
        cr_assert_eq(vmq_remap_flip(a, 0, b, 0x100000, 1), 0);
        cr_assert_eq(vmq_remap_flip(a, 0, b, 0x100000 + 15 * PG, 1), 0);
        cr_assert_eq(vmq_remap_flip(a, 1 * PG, b, 0x100000 + 14 * PG, 2), -EBUSY);
        cr_assert_eq(state_of(b, 0x100000 + 14 * PG), VMQ_PAGE_EMPTY);
        cr_assert_eq(vmq_pool_check(p), 0);

        /* exhaustion: 40 frames, 18 in use; take the rest */
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 22);
        cr_assert_eq(
                vmq_space_add_region(b, 0x400000, 23 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE, &hva),
                -ENOMEM);
        cr_assert_eq(vmq_space_region_count(b), 1);
        cr_assert_eq(vmq_remap_flip(a, 0, b, 0x100000 + 1 * PG, 13), 0);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 9);
        add_region(b, 0x400000, 9 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 0);
        fill(ah, 16 * PG, 21);
        enum vmq_page_state st_a[32], st_b[16];
        for (int i = 0; i < 32; i++)
                st_a[i] = state_of(a, i * PG);
        for (int i = 0; i < 16; i++)
                st_b[i] = state_of(b, 0x100000 + i * PG);
        cr_assert_eq(vmq_remap_release(b, 0x100000 + 15 * PG, 1), 0);
        cr_assert_eq(vmq_remap_release(b, 0x100000 + 14 * PG, 1), -EPERM);
        st_b[15] = VMQ_PAGE_EMPTY;
        /* one frame free; a flip of two needs two fresh ones */
        cr_assert_eq(vmq_remap_flip(a, 0, b, 0x100000 + 14 * PG, 2), -ENOMEM);
        cr_assert_eq(vmq_remap_copy(a, 0, a, 16 * PG, 2 * PG), -ENOMEM);
        cr_assert_eq(vmq_remap_copy_in(a, 16 * PG, ah, 2 * PG), -ENOMEM);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 1, "nothing was taken");
        cr_assert(filled(ah, 16 * PG, 21), "nothing moved");
        for (int i = 0; i < 32; i++)
                cr_assert_eq(state_of(a, i * PG), st_a[i]);
        for (int i = 0; i < 16; i++)
                cr_assert_eq(state_of(b, 0x100000 + i * PG), st_b[i]);
        cr_assert_eq(vmq_pool_check(p), 0);
        /* but a flip of one fits */
        cr_assert_eq(vmq_remap_flip(a, 0, b, 0x100000 + 15 * PG, 1), 0);
        cr_assert(filled(vmq_space_translate(b, 0x100000 + 15 * PG, PG, false), PG, 21));
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 0);
        cr_assert_eq(vmq_pool_check(p), 0);
        vmq_space_free(a);
        vmq_space_free(b);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 40);
        vmq_pool_free(p);
}

Test(remap, kind_mismatch) {
        struct vmq_pool *p = new_pool(1024, 2);
        struct vmq_space *a = new_space(p);
        add_region(a, 0, HPG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        uint8_t *hh = add_region(a, 0x80000000, 2 * HPG, VMQ_FRAME_2M, 0);
        cr_assert_eq(vmq_remap_flip(a, 0, a, 0x80000000, 1), -EINVAL);
        cr_assert_eq(vmq_remap_share(a, 0, a, 0x80000000, 1), -EINVAL);
        cr_assert_eq(vmq_remap_flip(a, 0, a, 0x80000000 + PG, 1), -EINVAL, "misaligned huge");
        /* copy is byte-wise: it may cross kinds */
        memset(vmq_space_translate(a, 0, PG, true), 0x42, PG);
        cr_assert_eq(vmq_remap_copy(a, 0, a, 0x80000000, PG), 0);
        cr_assert_eq(hh[PG - 1], 0x42);
        cr_assert_eq(hh[PG], 0);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_2M), 1);
        cr_assert_eq(vmq_pool_check(p), 0);
        vmq_space_free(a);
        vmq_pool_free(p);
}

Test(remap, translate_and_find_empty) {
        struct vmq_pool *p = new_pool(64, 0);
        struct vmq_space *a = new_space(p);
        uint8_t *ah = add_region(a, 0x10000, 8 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        add_region(a, 0x40000000, 8 * PG, VMQ_FRAME_4K, 0);
        cr_assert_eq(vmq_space_translate(a, 0x10000 + 5, 8 * PG - 5, true), ah + 5);
        cr_assert_null(vmq_space_translate(a, 0x10000 + 5, 8 * PG - 4, true));
        cr_assert_eq(vmq_space_translate(a, 0x10000 + 8 * PG - 1, 0, true), ah + 8 * PG - 1);
        cr_assert_null(vmq_space_translate(a, 0x10000 + 8 * PG, 0, true));
        cr_assert_null(vmq_space_translate(a, 0xffff, 2, false));
        cr_assert_null(vmq_space_translate(a, 0x10000, UINT64_MAX, false));
        cr_assert_eq(vmq_space_page_state(a, 0x20000000, NULL, NULL), -ERANGE);

        cr_assert_eq(vmq_remap_release(a, 0x10000 + 3 * PG, 1), 0);
        cr_assert_null(vmq_space_translate(a, 0x10000 + 2 * PG, 2 * PG, false), "hole in range");
        cr_assert_not_null(vmq_space_translate(a, 0x10000 + 2 * PG, PG, false));

        uint64_t gpa = 0;
        cr_assert_eq(vmq_space_find_empty(a, 0x10000, 1, &gpa), 0);
        cr_assert_eq(gpa, 0x10000 + 3 * PG);
        cr_assert_eq(vmq_space_find_empty(a, 0x10000, 2, &gpa), -ENOSPC);
        cr_assert_eq(vmq_space_find_empty(a, 0x40000000, 3, &gpa), 0);
        cr_assert_eq(gpa, 0x40000000);
        cr_assert_eq(vmq_space_find_empty(a, 0x40000000 + 5 * PG, 3, &gpa), 0);
        cr_assert_eq(gpa, 0x40000000 + 3 * PG, "next fit after the last find");
        cr_assert_eq(vmq_space_find_empty(a, 0x40000000, 3, &gpa), 0);
        cr_assert_eq(gpa, 0x40000000, "wraps around");
        cr_assert_eq(vmq_space_find_empty(a, 0x40000000, 9, &gpa), -ENOSPC);
        cr_assert_eq(vmq_space_find_empty(a, 0x90000000, 1, &gpa), -ERANGE);

        uint64_t rg, rs;
        enum vmq_frame_kind rk;
        void *rh;
        cr_assert_eq(vmq_space_region_count(a), 2);
        cr_assert_eq(vmq_space_region(a, 0, &rg, &rs, &rk, &rh), 0);
        cr_assert_eq(rg, 0x10000);
        cr_assert_eq(rs, 8 * PG);
        cr_assert_eq(rk, VMQ_FRAME_4K);
        cr_assert_eq(rh, ah);
        cr_assert_eq(vmq_space_region(a, 2, &rg, &rs, &rk, &rh), -ERANGE);
        vmq_space_free(a);
        vmq_pool_free(p);
}

Test(remap, frames_zeroed_before_reuse) {
        struct vmq_pool *p = new_pool(20, 0);
        struct vmq_space *a = new_space(p);
        uint8_t *ah = add_region(a, 0, 20 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        memset(ah, 0xaa, 20 * PG);
        /* a short run (zeroed by memset) and a long one (by hole punch) */
        cr_assert_eq(vmq_remap_release(a, 0, 3), 0);
        cr_assert_eq(vmq_remap_release(a, 3 * PG, 17), 0);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 20);
        /* the only frames there are are the dirty ones */
        uint8_t *bh = add_region(a, 0x100000, 20 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        cr_assert(all_zero(bh, 20 * PG));
        memset(bh, 0xbb, 20 * PG);
        vmq_space_free(a);
        a = new_space(p);
        ah = add_region(a, 0, 20 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        cr_assert(all_zero(ah, 20 * PG), "space teardown zeroes too");
        /* a flip hands the sender a zeroed recycled frame */
        memset(ah, 0xcc, 20 * PG);
        cr_assert_eq(vmq_remap_release(a, 19 * PG, 1), 0);
        add_region(a, 0x100000, PG, VMQ_FRAME_4K, 0);
        cr_assert_eq(vmq_remap_flip(a, 0, a, 0x100000, 1), 0);
        cr_assert(all_zero(ah, PG));
        vmq_space_free(a);
        vmq_pool_free(p);
}

Test(remap, huge_frames_zeroed_before_reuse) {
        struct vmq_pool *p = new_pool(16, 2);
        struct vmq_space *a = new_space(p);
        uint8_t *ah = add_region(a, 0x80000000, 2 * HPG, VMQ_FRAME_2M, VMQ_REGION_POPULATE);
        memset(ah, 0xaa, 2 * HPG);
        cr_assert_eq(vmq_remap_release(a, 0x80000000, 2), 0);
        uint8_t *bh = add_region(a, 0xC0000000, 2 * HPG, VMQ_FRAME_2M, VMQ_REGION_POPULATE);
        cr_assert(all_zero(bh, 2 * HPG));
        vmq_space_free(a);
        vmq_pool_free(p);
}

Test(remap, scrubber_zeroes_released_huge_frames) {
        struct vmq_pool *p = new_pool_scrub(16, 2, true);
        struct vmq_space *a = new_space(p);
        uint8_t *ah = add_region(a, 0x80000000, 2 * HPG, VMQ_FRAME_2M, VMQ_REGION_POPULATE);
        memset(ah, 0xaa, 2 * HPG);
        cr_assert_eq(vmq_remap_release(a, 0x80000000, 2), 0);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_2M), 2, "dirty frames count as free");
        cr_assert_eq(vmq_pool_check(p), 0);
        /* all zeroing done by the thread: nothing is left for allocation */
        vmq_pool_scrub_wait(p);
        cr_assert_eq(vmq_pool_check(p), 0);
        uint8_t *bh = add_region(a, 0xC0000000, 2 * HPG, VMQ_FRAME_2M, VMQ_REGION_POPULATE);
        cr_assert(all_zero(bh, 2 * HPG));
        /* a copy into a frame still dirty zeroes the part it does not fill */
        memset(bh, 0xbb, 2 * HPG);
        cr_assert_eq(vmq_remap_release(a, 0xC0000000, 2), 0);
        static const char msg[] = "small message in a huge frame";
        cr_assert_eq(vmq_remap_copy_in(a, 0xC0000000, msg, sizeof(msg)), 0);
        cr_assert_eq(vmq_remap_copy_in(a, 0xC0000000 + HPG, msg, sizeof(msg)), 0);
        for (int i = 0; i < 2; i++) {
                cr_assert_str_eq((const char *)bh + i * HPG, msg);
                cr_assert(all_zero(bh + i * HPG + sizeof(msg), HPG - sizeof(msg)));
        }
        cr_assert_eq(vmq_pool_check(p), 0);
        vmq_space_free(a);
        vmq_pool_scrub_wait(p);
        vmq_pool_free(p);
}

Test(remap, no_huge_without_require) {
        /* far more huge pages than any host here has free: the pool degrades */
        struct vmq_pool_config cfg = {.frames_4k = 8, .frames_2m = 1u << 20};
        struct vmq_pool *p = NULL;
        cr_assert_eq(vmq_pool_new(&cfg, &p), 0);
        cr_assert_not(vmq_pool_has_huge(p));
        cr_assert_eq(vmq_pool_frames_total(p, VMQ_FRAME_2M), 0);
        cr_assert_eq(vmq_pool_frames_total(p, VMQ_FRAME_4K), 8);
        vmq_pool_free(p);
        cfg.require_huge = true;
        p = NULL;
        cr_assert_eq(vmq_pool_new(&cfg, &p), -ENOMEM);
        cr_assert_null(p);
}

Test(remap, teardown_returns_everything) {
        int fds = vmq_test_count_fds();
        int threads = vmq_test_count_threads();
        struct vmq_pool *p = new_pool_scrub(256, 2, true);
        struct vmq_space *s[3];
        for (int i = 0; i < 3; i++) {
                s[i] = new_space(p);
                add_region(s[i], 0, 32 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
                add_region(s[i], 0x40000000, 32 * PG, VMQ_FRAME_4K, 0);
        }
        add_region(s[0], 0x80000000, HPG, VMQ_FRAME_2M, VMQ_REGION_POPULATE);
        add_region(s[1], 0xC0000000, HPG, VMQ_FRAME_2M, 0);
        cr_assert_eq(vmq_remap_flip(s[0], 0x80000000, s[1], 0xC0000000, 1), 0);
        /* shares in every direction, including into the owner itself */
        for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++)
                        cr_assert_eq(vmq_remap_share(s[i], (uint64_t)j * PG, s[j],
                                                     0x40000000 + (uint64_t)(4 * i) * PG, 2),
                                     0);
        cr_assert_eq(vmq_remap_flip(s[2], 10 * PG, s[0], 0x40000000 + 20 * PG, 4), 0);
        cr_assert_eq(vmq_pool_check(p), 0);
        vmq_space_free(s[1]);
        cr_assert_eq(vmq_pool_check(p), 0);
        cr_assert_eq(state_of(s[0], 0x40000000 + 4 * PG), VMQ_PAGE_SHARED_IN,
                     "share of s1 kept as an orphan");
        cr_assert_eq(state_of(s[0], 0x40000000), VMQ_PAGE_SHARED_IN);
        vmq_space_free(s[0]);
        vmq_space_free(s[2]);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 256);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_2M), 2);
        cr_assert_eq(vmq_pool_check(p), 0);
        cr_assert_eq(vmq_test_count_threads(), threads + 1, "the scrubber runs");
        vmq_pool_free(p);
        cr_assert_eq(vmq_test_count_fds(), fds, "no fd leaked");
        cr_assert_eq(vmq_test_count_threads(), threads, "scrubber joined");
}

/* ---- random operations against a model ---------------------------------- */

#define RS 4     /* spaces */
#define RPMAX 48 /* pages per space, at most */

struct mpage {
        int state;    /* enum vmq_page_state */
        uint64_t tag; /* OWNED: first 8 bytes of the page */
        int shares;   /* OWNED: SHARED_IN pages pointing here */
        int os, op;   /* SHARED_IN: owning space and page, or os -1 and op
                       * the orphan (owner gone) */
};

struct morphan {
        uint64_t tag;
        int shares;
};

struct model {
        enum vmq_frame_kind kind;
        uint64_t fs;   /* frame size */
        uint64_t base; /* gpa of every space's region */
        int np;        /* pages per space */
        int nf;        /* frames in the pool */
        struct vmq_pool *pool;
        struct vmq_space *sp[RS];
        struct mpage pg[RS][RPMAX];
        uint64_t rng;
        uint64_t next_tag;
        int owned;
        int moves; /* successful flips, shares and copies */
        struct morphan orph[RS * RPMAX * 64];
        int norph, live_orphans;
};

static uint64_t shared_tag(struct model *m, const struct mpage *q) {
        return q->os < 0 ? m->orph[q->op].tag : m->pg[q->os][q->op].tag;
}

/* One SHARED_IN page goes away. */
static void model_drop_share(struct model *m, struct mpage *q) {
        if (q->os >= 0) {
                m->pg[q->os][q->op].shares--;
        } else if (--m->orph[q->op].shares == 0) {
                m->live_orphans--;
        }
}

static uint64_t rnd(struct model *m) {
        /* xorshift64*: fixed, libc-independent sequence */
        m->rng ^= m->rng >> 12;
        m->rng ^= m->rng << 25;
        m->rng ^= m->rng >> 27;
        return m->rng * 0x2545F4914F6CDD1Dull;
}

static unsigned rn(struct model *m, unsigned n) {
        return (unsigned)(rnd(m) % n);
}

static uint64_t gpa_of_(struct model *m, int page) {
        return m->base + (uint64_t)page * m->fs;
}
#define gpa_of(page) gpa_of_(m, page)

static uint64_t *word(struct model *m, int s, int page) {
        return vmq_space_translate(m->sp[s], gpa_of(page), 8, false);
}

static void model_space_new(struct model *m, int s) {
        m->sp[s] = new_space(m->pool);
        add_region(m->sp[s], m->base, (uint64_t)m->np * m->fs, m->kind, 0);
        for (int i = 0; i < m->np; i++)
                m->pg[s][i] = (struct mpage){.state = VMQ_PAGE_EMPTY};
}

/* A space goes away: its shares into others stay readable there, as
 * orphans, until released. */
static void model_space_free(struct model *m, int s) {
        for (int i = 0; i < m->np; i++) {
                struct mpage *q = &m->pg[s][i];
                if (q->state == VMQ_PAGE_SHARED_IN)
                        model_drop_share(m, q);
        }
        for (int i = 0; i < m->np; i++) {
                struct mpage *q = &m->pg[s][i];
                if (q->state != VMQ_PAGE_OWNED)
                        continue;
                m->owned--;
                if (q->shares == 0)
                        continue;
                cr_assert_lt(m->norph, (int)VMQ_ARRAY_SIZE(m->orph));
                int o = m->norph++;
                m->orph[o] = (struct morphan){.tag = q->tag, .shares = q->shares};
                m->live_orphans++;
                for (int t = 0; t < RS; t++)
                        for (int j = 0; j < m->np; j++) {
                                struct mpage *r = &m->pg[t][j];
                                if (t != s && r->state == VMQ_PAGE_SHARED_IN && r->os == s &&
                                    r->op == i) {
                                        r->os = -1;
                                        r->op = o;
                                }
                        }
        }
        vmq_space_free(m->sp[s]);
}

/* The error the engine must give for a move of n pages, in its check order. */
static int expect_move(struct model *m, int s, int a, int d, int b, int n, bool share) {
        for (int i = 0; i < n; i++)
                if (m->pg[s][a + i].state != VMQ_PAGE_OWNED)
                        return -EPERM;
        if (!share)
                for (int i = 0; i < n; i++)
                        if (m->pg[s][a + i].shares)
                                return -EBUSY;
        for (int i = 0; i < n; i++)
                if (m->pg[d][b + i].state != VMQ_PAGE_EMPTY)
                        return -EBUSY;
        if (!share && m->nf - m->owned - m->live_orphans < n)
                return -ENOMEM;
        return 0;
}

/* A page of space s in `state` (any page if there is none), to make most
 * operations plausible rather than almost all of them errors. */
static int pick(struct model *m, int s, int state) {
        int start = (int)rn(m, (unsigned)m->np);
        for (int i = 0; i < m->np; i++) {
                int p = (start + i) % m->np;
                if (m->pg[s][p].state == state)
                        return p;
        }
        return start;
}

static void random_op(struct model *m) {
        int s = (int)rn(m, RS), d = (int)rn(m, RS);
        int n = 1 + (int)rn(m, 4);
        int a, b;
        if (rn(m, 4) != 0) {
                a = pick(m, s, rn(m, 2) ? VMQ_PAGE_OWNED : VMQ_PAGE_SHARED_IN);
                b = pick(m, d, VMQ_PAGE_EMPTY);
                if (rn(m, 2))
                        n = 1;
                n = VMQ_MIN(n, m->np - VMQ_MAX(a, b));
        } else {
                n = VMQ_MIN(n, m->np);
                a = (int)rn(m, (unsigned)(m->np - n + 1));
                b = (int)rn(m, (unsigned)(m->np - n + 1));
        }
        unsigned op = rn(m, 200);
        int r, want;

        if (op < 40) { /* populate one page from the host */
                uint64_t tag = ++m->next_tag;
                want = m->pg[d][b].state != VMQ_PAGE_EMPTY   ? -EBUSY
                       : m->owned + m->live_orphans >= m->nf ? -ENOMEM
                                                             : 0;
                r = vmq_remap_copy_in(m->sp[d], gpa_of(b), &tag, sizeof(tag));
                cr_assert_eq(r, want);
                if (r == 0) {
                        m->pg[d][b] = (struct mpage){.state = VMQ_PAGE_OWNED, .tag = tag};
                        m->owned++;
                }
        } else if (op < 60) { /* the guest writes its page */
                if (m->pg[s][a].state == VMQ_PAGE_OWNED) {
                        uint64_t *w = vmq_space_translate(m->sp[s], gpa_of(a), m->fs, true);
                        cr_assert_not_null(w);
                        m->pg[s][a].tag = *w = ++m->next_tag;
                }
        } else if (op < 100) { /* flip */
                want = expect_move(m, s, a, d, b, n, false);
                r = vmq_remap_flip(m->sp[s], gpa_of(a), m->sp[d], gpa_of(b), (size_t)n);
                cr_assert_eq(r, want, "flip %d:%d -> %d:%d x%d", s, a, d, b, n);
                for (int i = 0; r == 0 && i < n; i++) {
                        m->pg[d][b + i] = m->pg[s][a + i];
                        m->pg[s][a + i].tag = 0;
                }
                if (r == 0) {
                        m->owned += n;
                        m->moves++;
                }
        } else if (op < 125) { /* share */
                want = expect_move(m, s, a, d, b, n, true);
                r = vmq_remap_share(m->sp[s], gpa_of(a), m->sp[d], gpa_of(b), (size_t)n);
                cr_assert_eq(r, want, "share %d:%d -> %d:%d x%d", s, a, d, b, n);
                m->moves += r == 0;
                for (int i = 0; r == 0 && i < n; i++) {
                        m->pg[s][a + i].shares++;
                        m->pg[d][b + i] =
                                (struct mpage){.state = VMQ_PAGE_SHARED_IN, .os = s, .op = a + i};
                }
        } else if (op < 150) { /* copy n-1 pages and a bit, from owned pages only */
                uint64_t len = (uint64_t)(n - 1) * m->fs + 8 + rn(m, (unsigned)m->fs - 8);
                want = 0;
                for (int i = 0; i < n; i++)
                        if (m->pg[s][a + i].state != VMQ_PAGE_OWNED)
                                want = -EPERM;
                for (int i = 0; i < n && want == 0; i++)
                        if (m->pg[d][b + i].state != VMQ_PAGE_EMPTY)
                                want = -EBUSY;
                if (want == 0 && m->nf - m->owned - m->live_orphans < n)
                        want = -ENOMEM;
                uint64_t tags[4];
                for (int i = 0; i < n; i++) {
                        struct mpage *q = &m->pg[s][a + i];
                        tags[i] = q->state == VMQ_PAGE_SHARED_IN ? shared_tag(m, q) : q->tag;
                }
                r = vmq_remap_copy(m->sp[s], gpa_of(a), m->sp[d], gpa_of(b), len);
                cr_assert_eq(r, want, "copy %d:%d -> %d:%d x%d", s, a, d, b, n);
                for (int i = 0; r == 0 && i < n; i++)
                        m->pg[d][b + i] = (struct mpage){.state = VMQ_PAGE_OWNED, .tag = tags[i]};
                if (r == 0) {
                        m->owned += n;
                        m->moves++;
                }
        } else if (op < 198) { /* release */
                want = 0;
                for (int i = 0; i < n; i++)
                        if (m->pg[s][a + i].state == VMQ_PAGE_EMPTY)
                                want = -EPERM;
                for (int i = 0; i < n && want == 0; i++)
                        if (m->pg[s][a + i].shares)
                                want = -EBUSY;
                r = vmq_remap_release(m->sp[s], gpa_of(a), (size_t)n);
                cr_assert_eq(r, want, "release %d:%d x%d", s, a, n);
                for (int i = 0; r == 0 && i < n; i++) {
                        struct mpage *q = &m->pg[s][a + i];
                        if (q->state == VMQ_PAGE_SHARED_IN)
                                model_drop_share(m, q);
                        else
                                m->owned--;
                        *q = (struct mpage){.state = VMQ_PAGE_EMPTY};
                }
        } else { /* a VM goes away and a new one takes its place */
                model_space_free(m, s);
                model_space_new(m, s);
        }
        cr_assert_eq(vmq_pool_frames_free(m->pool, m->kind),
                     (size_t)(m->nf - m->owned - m->live_orphans));
}

static void model_verify(struct model *m) {
        for (int s = 0; s < RS; s++)
                for (int i = 0; i < m->np; i++) {
                        struct mpage *q = &m->pg[s][i];
                        cr_assert_eq((int)state_of(m->sp[s], gpa_of(i)), q->state, "%d:%d", s, i);
                        uint64_t *w = word(m, s, i);
                        if (q->state == VMQ_PAGE_EMPTY) {
                                cr_assert_null(w);
                                continue;
                        }
                        cr_assert_not_null(w);
                        uint64_t tag = q->state == VMQ_PAGE_SHARED_IN ? shared_tag(m, q) : q->tag;
                        cr_assert_eq(*w, tag, "content of %d:%d", s, i);
                        cr_assert_eq(vmq_space_translate(m->sp[s], gpa_of(i), 8, true) != NULL,
                                     q->state == VMQ_PAGE_OWNED);
                }
}

static void random_run(struct model *m, int ops) {
        for (int s = 0; s < RS; s++)
                model_space_new(m, s);
        for (int i = 0; i < ops; i++) {
                random_op(m);
                if (i % 250 == 0) {
                        model_verify(m);
                        cr_assert_eq(vmq_pool_check(m->pool), 0, "after op %d", i);
                }
        }
        model_verify(m);
        cr_assert_eq(vmq_pool_check(m->pool), 0);
        size_t nfree = vmq_pool_frames_free(m->pool, m->kind);
        cr_assert_eq(nfree + (size_t)m->owned + (size_t)m->live_orphans,
                     vmq_pool_frames_total(m->pool, m->kind), "frames conserved");
        cr_assert_gt(m->owned, 0);
        cr_assert_gt(m->moves, ops / 20, "only %d moves succeeded", m->moves);
        for (int s = 0; s < RS; s++)
                model_space_free(m, s);
        cr_assert_eq(vmq_pool_frames_free(m->pool, m->kind), (size_t)m->nf);
        cr_assert_eq(vmq_pool_check(m->pool), 0);
        vmq_pool_free(m->pool);
}

Test(remap, random_operations) {
        static struct model m;
        memset(&m, 0, sizeof(m));
        m = (struct model){.kind = VMQ_FRAME_4K, .fs = PG, .base = 0x200000, .np = 48, .nf = 150};
        m.rng = 0x9e3779b97f4a7c15ull;
        m.pool = new_pool((size_t)m.nf, 0);
        random_run(&m, 10000);
}

/* The same with 2 MiB frames, whose zeroing the scrubber does concurrently:
 * allocations race with it for the frames it is zeroing. */
Test(remap, random_operations_2m) {
        static struct model m;
        memset(&m, 0, sizeof(m));
        m = (struct model){.kind = VMQ_FRAME_2M, .fs = HPG, .base = 0x80000000, .np = 4, .nf = 8};
        m.rng = 0x2545f4914f6cdd1dull;
        m.pool = new_pool_scrub(16, (size_t)m.nf, true);
        random_run(&m, 1500);
}

Test(remap, random_operations_2m_inline_zeroing) {
        static struct model m;
        memset(&m, 0, sizeof(m));
        m = (struct model){.kind = VMQ_FRAME_2M, .fs = HPG, .base = 0x80000000, .np = 4, .nf = 8};
        m.rng = 0x853c49e6748fea9bull;
        m.pool = new_pool(16, (size_t)m.nf);
        random_run(&m, 1000);
}

/* ---- concurrency ---------------------------------------------------------- */

struct ping {
        struct vmq_space *a, *b;
        int rounds;
        int failures;
};

static void *ping_thread(void *arg) {
        struct ping *pg = arg;
        for (int i = 0; i < pg->rounds; i++) {
                /* bounce page 0 between the two spaces, checking the payload */
                uint64_t *w = vmq_space_translate(pg->a, 0, 8, true);
                if (!w) {
                        pg->failures++;
                        continue;
                }
                *w = (uint64_t)i + 1;
                if (vmq_remap_flip(pg->a, 0, pg->b, 0, 1) < 0)
                        pg->failures++;
                w = vmq_space_translate(pg->b, 0, 8, false);
                if (!w || *w != (uint64_t)i + 1)
                        pg->failures++;
                if (vmq_remap_release(pg->b, 0, 1) < 0)
                        pg->failures++;
        }
        return NULL;
}

Test(remap, concurrent_spaces) {
        struct vmq_pool *p = new_pool(64, 0);
        struct ping pg[3];
        pthread_t th[3];
        for (int i = 0; i < 3; i++) {
                pg[i] = (struct ping){.a = new_space(p), .b = new_space(p), .rounds = 2000};
                add_region(pg[i].a, 0, 4 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
                add_region(pg[i].b, 0, 4 * PG, VMQ_FRAME_4K, 0);
        }
        for (int i = 0; i < 3; i++)
                cr_assert_eq(pthread_create(&th[i], NULL, ping_thread, &pg[i]), 0);
        for (int i = 0; i < 3; i++) {
                cr_assert_eq(pthread_join(th[i], NULL), 0);
                cr_assert_eq(pg[i].failures, 0);
        }
        cr_assert_eq(vmq_pool_check(p), 0);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 64 - 12);
        for (int i = 0; i < 3; i++) {
                vmq_space_free(pg[i].a);
                vmq_space_free(pg[i].b);
        }
        vmq_pool_free(p);
}

/* Whether this process's page tables map the page at p (pagemap bit 63),
 * without touching it. */
static bool pte_present(const void *p) {
        int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
        cr_assert_geq(fd, 0);
        uint64_t e = 0;
        off_t off = (off_t)((uintptr_t)p / (uintptr_t)sysconf(_SC_PAGESIZE)) * 8;
        cr_assert_eq(pread(fd, &e, sizeof(e), off), (ssize_t)sizeof(e));
        close(fd);
        return (e >> 63) & 1;
}

/* Pages a copy, a flip or a share places are mapped in at once (the
 * receiver does not fault them in one by one), and so are the sender's
 * fresh frames after a flip; a region's pages are not, until used. */
Test(remap, placed_pages_are_mapped_in_at_once) {
        struct vmq_pool *p = new_pool(4096, 0);
        struct vmq_space *a = new_space(p), *b = new_space(p);
        uint8_t *ha = add_region(a, 0, 64 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        uint8_t *hb = add_region(b, 0, 64 * PG, VMQ_FRAME_4K, 0);
        cr_assert_not(pte_present(ha + 40 * PG), "a region stays sparse until used");
        fill(ha, 8 * PG, 3);

        cr_assert_eq(vmq_remap_copy(a, 0, b, 0, 8 * PG), 0);
        for (int i = 0; i < 8; i++)
                cr_assert(pte_present(hb + i * PG), "copied page %d", i);
        cr_assert(filled(hb, 8 * PG, 3));
        cr_assert_eq(vmq_remap_release(b, 0, 8), 0);

        cr_assert_eq(vmq_remap_flip(a, 0, b, 16 * PG, 8), 0);
        for (int i = 0; i < 8; i++) {
                cr_assert(pte_present(hb + (16 + i) * PG), "flipped page %d", i);
                cr_assert(pte_present(ha + i * PG), "the sender's fresh page %d", i);
        }
        cr_assert(filled(hb + 16 * PG, 8 * PG, 3));
        cr_assert(all_zero(ha, 8 * PG));
        cr_assert_eq(vmq_remap_release(b, 16 * PG, 8), 0);

        fill(ha + 8 * PG, 4 * PG, 9);
        cr_assert_eq(vmq_remap_share(a, 8 * PG, b, 32 * PG, 4), 0);
        for (int i = 0; i < 4; i++)
                cr_assert(pte_present(hb + (32 + i) * PG), "shared page %d", i);
        cr_assert_eq(vmq_remap_release(b, 32 * PG, 4), 0);

        vmq_space_free(a);
        vmq_space_free(b);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 4096);
        vmq_pool_free(p);
}

/* Several messages copied as one: each starts on a page of its own, what
 * they held arrives whole with zeroed tails, and it takes one mmap where a
 * copy per message takes one each. */
Test(remap, a_copy_batch_is_one_remap) {
        struct vmq_pool *p = new_pool(4096, 0);
        struct vmq_space *a = new_space(p), *b = new_space(p);
        uint8_t *ha = add_region(a, 0, 64 * PG, VMQ_FRAME_4K, VMQ_REGION_POPULATE);
        uint8_t *hb = add_region(b, 0x100000, 64 * PG, VMQ_FRAME_4K, 0);
        static uint8_t host[3000];
        const uint64_t lens[4] = {100, 2 * PG, PG + 1, 3000};
        struct vmq_copy_piece pc[5];
        fill(ha, 16 * PG, 5);
        memset(host, 0xab, sizeof(host));
        for (int i = 0; i < 4; i++)
                pc[i] = (struct vmq_copy_piece){
                        .src = a, .src_gpa = (uint64_t)i * 4 * PG + 7, .len = lens[i]};
        pc[4] = (struct vmq_copy_piece){.data = host, .len = sizeof(host)};

        uint64_t calls = vmq_pool_mmap_calls(p);
        cr_assert_eq(vmq_remap_copy_batch(b, 0x100000, pc, 5), 0);
        cr_assert_eq(vmq_pool_mmap_calls(p) - calls, 1, "one remap for five messages, not %lu",
                     (unsigned long)(vmq_pool_mmap_calls(p) - calls));
        /* Pages: 1 + 2 + 2 + 1 + 1 = 7, one run of consecutive frames. */
        uint64_t at = 0;
        for (int i = 0; i < 4; i++) {
                cr_assert(memcmp(hb + at, ha + i * 4 * PG + 7, lens[i]) == 0, "message %d", i);
                uint64_t end = VMQ_ALIGN_UP(lens[i], PG);
                cr_assert(all_zero(hb + at + lens[i], end - lens[i]), "tail of message %d", i);
                at += end;
        }
        cr_assert(memcmp(hb + at, host, sizeof(host)) == 0);
        cr_assert_eq(at + PG, 7 * PG);
        cr_assert_eq(state_of(b, 0x100000 + 6 * PG), VMQ_PAGE_OWNED);
        cr_assert_eq(state_of(b, 0x100000 + 7 * PG), VMQ_PAGE_EMPTY);
        cr_assert_eq(vmq_space_maps(b), 2, "one run of copies beside the empty rest");
        cr_assert_eq(vmq_pool_check(p), 0);

        /* The same five one by one: an mmap each. */
        calls = vmq_pool_mmap_calls(p);
        for (int i = 0; i < 5; i++)
                cr_assert_eq(
                        vmq_remap_copy_batch(b, 0x100000 + (8 + 2 * (uint64_t)i) * PG, &pc[i], 1),
                        0);
        cr_assert_eq(vmq_pool_mmap_calls(p) - calls, 5);

        /* All or nothing: one bad piece, and nothing changes. */
        size_t before = vmq_pool_frames_free(p, VMQ_FRAME_4K);
        calls = vmq_pool_mmap_calls(p);
        struct vmq_copy_piece bad[3] = {pc[0], pc[1], pc[2]};
        bad[2].src_gpa = 63 * PG + 100; /* runs past the region */
        cr_assert_eq(vmq_remap_copy_batch(b, 0x100000 + 20 * PG, bad, 3), -ERANGE);
        bad[2] = (struct vmq_copy_piece){.src = b, .src_gpa = 0x100000 + 40 * PG, .len = 10};
        cr_assert_eq(vmq_remap_copy_batch(b, 0x100000 + 20 * PG, bad, 3), -EPERM, "not owned");
        bad[2] = pc[2];
        bad[1].len = 0;
        cr_assert_eq(vmq_remap_copy_batch(b, 0x100000 + 20 * PG, bad, 3), -EINVAL);
        cr_assert_eq(vmq_remap_copy_batch(b, 0x100000 + 60 * PG, pc, 3), -ERANGE,
                     "past the window");
        cr_assert_eq(vmq_remap_copy_batch(b, 0x100000 + 6 * PG, pc, 1), -EBUSY, "not empty");
        cr_assert_eq(vmq_remap_copy_batch(b, 0x100000 + 20 * PG, pc, 0), -EINVAL);
        cr_assert_eq(vmq_remap_copy_batch(b, 0x100000 + 20 * PG, pc, VMQ_COPY_BATCH_MAX + 1),
                     -EINVAL);
        cr_assert_eq(vmq_pool_mmap_calls(p), calls, "a refused batch maps nothing");
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), before);
        cr_assert_eq(state_of(b, 0x100000 + 20 * PG), VMQ_PAGE_EMPTY);

        /* A failed mmap is rolled back whole. */
        vmq_pool_fail_mmap(p, 1, 1);
        cr_assert_eq(vmq_remap_copy_batch(b, 0x100000 + 20 * PG, pc, 5), -ENOMEM);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), before);
        for (int i = 20; i < 27; i++)
                cr_assert_eq(state_of(b, 0x100000 + (uint64_t)i * PG), VMQ_PAGE_EMPTY);
        cr_assert_not(vmq_space_broken(b));
        cr_assert_eq(vmq_pool_check(p), 0);

        vmq_space_free(a);
        vmq_space_free(b);
        cr_assert_eq(vmq_pool_frames_free(p, VMQ_FRAME_4K), 4096);
        vmq_pool_free(p);
}
