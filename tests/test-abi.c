/* SPDX-License-Identifier: MIT */
/* The guest ABI header: layout facts the guest and host rely on. */
#include <criterion/criterion.h>
#include <stddef.h>

#include "core/vmq-abi.h"

Test(abi, vmcs_fits_and_rings_follow_header) {
        cr_assert_leq(sizeof(struct vmq_vmcs), VMQ_PAGE_SIZE);
        cr_assert_eq(VMQ_VMCS_QUEUE_OFF, VMQ_PAGE_SIZE);
        cr_assert_eq(VMQ_VMCS_QUEUE_SLOTS_OFF % 64, 0);
        /* a 64-deep queue and a 32-deep post ring fit the maximum VMCS */
        cr_assert_leq(VMQ_VMCS_SIZE(64, 32), VMQ_VMCS_MAX_SIZE);
        cr_assert_eq(VMQ_VMCS_SIZE(64, 32) % VMQ_PAGE_SIZE, 0);
        cr_assert_geq(VMQ_VMCS_SIZE(64, 32),
                      VMQ_VMCS_POST_SLOTS_OFF(64) + 32 * sizeof(struct vmq_request));
}

Test(abi, regions_do_not_overlap) {
        cr_assert_lt(VMQ_VMCS_GPA + VMQ_VMCS_MAX_SIZE, VMQ_IMAGE_GPA + 1);
        cr_assert_lt(VMQ_IMAGE_GPA, VMQ_RX_GPA);
        cr_assert_lt(VMQ_RX_GPA, VMQ_HUGE_GPA);
        cr_assert_lt(VMQ_HUGE_GPA, VMQ_HUGE_RX_GPA);
        cr_assert_eq(VMQ_HUGE_GPA % VMQ_HUGE_PAGE_SIZE, 0);
        cr_assert_eq(VMQ_HUGE_RX_GPA % VMQ_HUGE_PAGE_SIZE, 0);
}

Test(abi, errors_and_kinds_are_distinct_and_bounded) {
        cr_assert_eq(VMQ_OK, 0);
        cr_assert_lt(VMQ_E_PROTO, VMQ_E_MAX);
        cr_assert_eq(VMQ_HC_PORT_BASE + VMQ_HC_MAX <= VMQ_DOORBELL_PORT, 1);
        cr_assert_eq(VMQ_ABI_MAGIC, 0x31514d56u);
        const char *m = "VMQ1";
        uint32_t v =
                (uint32_t)m[0] | (uint32_t)m[1] << 8 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 24;
        cr_assert_eq(v, VMQ_ABI_MAGIC);
}

/* Every ring's indices start on a 64-byte line, for every depth a machine
 * may have: guests refuse a layout that is not (a queue of 4 once put the
 * post ring 32 bytes off, and such a guest died at once). */
Test(abi, ring_indices_are_line_aligned_at_every_depth) {
        for (uint32_t q = 4; q <= 4096; q *= 2) {
                cr_assert_eq(VMQ_VMCS_POST_OFF(q) % 64, 0, "queue depth %u", q);
                cr_assert_geq(VMQ_VMCS_POST_OFF(q),
                              VMQ_VMCS_QUEUE_SLOTS_OFF + q * sizeof(struct vmq_desc));
                for (uint32_t p = 4; p <= 256; p *= 2)
                        cr_assert_geq(VMQ_VMCS_SIZE(q, p),
                                      VMQ_VMCS_POST_SLOTS_OFF(q) + p * sizeof(struct vmq_request));
        }
}
