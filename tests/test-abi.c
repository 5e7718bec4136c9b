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
