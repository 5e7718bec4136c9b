/* SPDX-License-Identifier: MIT */
/*
 * Linked into tests/vmq-test in the ThreadSanitizer build only
 * (configure --enable-tsan): lets Criterion start under TSan.
 *
 * Criterion's runner (criterion_initialize -> cri_alloc_init ->
 * BoxFort's bxf_arena_init) maps its "inheritable arena" at a random
 * address base = 0x2000'0000'0000 + (rand_r() & 0x3fffff) * 16 MiB, tries 10
 * such addresses, and skips any where mincore() finds a mapping.  TSan
 * reserves nearly all of [0x2000'0000'0000, 0x6000'0000'0000) for its shadow
 * and protects the gaps between its regions with PROT_NONE mappings, so the
 * 10 random tries almost always fail and every run aborts with "criterion:
 * Could not initialize inheritable arena: Resource temporarily unavailable"
 * (Criterion issue #274, open; seen here with gcc 12 and Criterion 2.4.1).
 *
 * The only part of that range TSan leaves to the program is the one where
 * the kernel puts PIE executables (from 0x5500'0000'0000: up to
 * 0x5680'0000'0000 in gcc 12's libtsan, up to 0x5a00'0000'0000 in clang 14's).
 * The executable's definition of rand_r() comes before libc's (and libtsan's
 * interceptor) for every shared library, so this one steers BoxFort's tries
 * to 0x5670'0000'0000 and the 16 MiB steps after it: above where ASLR puts
 * PIE executables and their heap (0x5555'5555'4000 plus at most 1 TiB with
 * vm.mmap_rnd_bits = 28), below the end of TSan's application range in
 * both runtimes.  The worker processes map the arena at the same address,
 * which is also free in them for the same reason.
 *
 * Nothing of vmq calls rand_r(); this file must not be linked into any
 * other build.
 */
#include <stdlib.h>

/* BoxFort's arena: base = 0x2000'0000'0000 + r * 16 MiB, r masked with
 * 0x3fffff.  0x367000 * 16 MiB + 0x2000'0000'0000 = 0x5670'0000'0000. */
#define ARENA_SLOT_FIRST 0x367000u
#define ARENA_SLOTS 64u

int rand_r(unsigned *seedp) {
        return (int)(ARENA_SLOT_FIRST + (*seedp)++ % ARENA_SLOTS);
}
