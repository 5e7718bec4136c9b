/* SPDX-License-Identifier: MIT */
/* The soak's own checker (guest/images/chaos.h): a witness payload that was
 * damaged, attributed to the wrong sender or cut must be caught, or the soak
 * would pass on a monitor that corrupts data.  And its PRNG must be a pure
 * function of the seed, or --seed would replay nothing.  These need no KVM. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "guest/images/chaos.h"

#define BIG 20000u

static uint8_t buf[BIG];

Test(soak_witness, round_trip_every_length) {
        for (uint32_t len = WITNESS_HDR_SIZE; len < 600; len++) {
                uint64_t stamp = 0;

                memset(buf, 0xee, sizeof(buf));
                witness_fill(buf, len, 7, (uint64_t)3 << 32 | len);
                cr_assert_eq(witness_check(buf, len, 7, &stamp), -1, "len %u", len);
                cr_assert_eq(stamp, (uint64_t)3 << 32 | len);
                /* nothing written past len */
                cr_assert_eq(buf[len], 0xee, "len %u", len);
        }
        witness_fill(buf, BIG, 0, WITNESS_STAMP_SHARED | 2);
        uint64_t stamp = 0;
        cr_assert_eq(witness_check(buf, BIG, 0, &stamp), -1);
        cr_assert_eq(stamp, WITNESS_STAMP_SHARED | 2);
}

Test(soak_witness, every_flipped_byte_is_caught) {
        const uint32_t len = 300;

        for (uint32_t i = 0; i < len; i++) {
                for (unsigned bit = 0; bit < 8; bit++) {
                        uint64_t stamp;
                        long bad;

                        witness_fill(buf, len, 42, 99);
                        buf[i] ^= (uint8_t)(1u << bit);
                        bad = witness_check(buf, len, 42, &stamp);
                        cr_assert_geq(bad, 0, "byte %u bit %u not caught", i, bit);
                        /* any stamp is legal: a changed one shows in the body */
                        if (i < 8 || i >= 16)
                                cr_assert_leq(bad, (long)i, "byte %u bit %u reported at %ld", i,
                                              bit, bad);
                        /* the body is checked a word at a time */
                        if (i >= WITNESS_HDR_SIZE)
                                cr_assert_gt(bad, (long)i - 8);
                }
        }
}

Test(soak_witness, wrong_sender_short_and_zero_are_caught) {
        uint64_t stamp;

        witness_fill(buf, 200, 5, 1);
        cr_assert_geq(witness_check(buf, 200, 6, &stamp), 0, "another sender's payload");
        cr_assert_geq(witness_check(buf, 199, 5, &stamp), 0, "a payload cut short");
        cr_assert_geq(witness_check(buf, 10, 5, &stamp), 0, "shorter than a header");
        memset(buf, 0, 200);
        cr_assert_geq(witness_check(buf, 200, 5, &stamp), 0, "a zeroed page");
        /* the same body under another stamp: a replayed or stale message */
        witness_fill(buf, 200, 5, 1);
        struct witness_hdr h;
        memcpy(&h, buf, sizeof(h));
        h.stamp = 2;
        memcpy(buf, &h, sizeof(h));
        cr_assert_geq(witness_check(buf, 200, 5, &stamp), WITNESS_HDR_SIZE);
}

Test(soak_witness, nonzero_tail) {
        memset(buf, 0, 64);
        cr_assert_eq(chaos_nonzero(buf, 0, 64), -1);
        buf[40] = 1;
        cr_assert_eq(chaos_nonzero(buf, 0, 64), 40);
        cr_assert_eq(chaos_nonzero(buf, 41, 64), -1);
}

Test(soak_prng, a_pure_function_of_the_seed) {
        uint64_t a = 12345, b = 12345, c = 12346;
        bool differ = false;

        for (int i = 0; i < 1000; i++) {
                uint64_t x = chaos_next(&a);

                cr_assert_eq(x, chaos_next(&b));
                differ |= x != chaos_next(&c);
                cr_assert_lt(chaos_below(&a, 7), 7u);
                (void)chaos_below(&b, 7);
        }
        cr_assert(differ, "seeds 12345 and 12346 gave the same sequence");
        cr_assert_eq(chaos_below(&a, 0), 0u);
        cr_assert_eq(chaos_vm_seed(1, 5), chaos_vm_seed(1, 5));
        cr_assert_neq(chaos_vm_seed(1, 5), chaos_vm_seed(1, 6));
        cr_assert_neq(chaos_vm_seed(1, 5), chaos_vm_seed(2, 5));
}
