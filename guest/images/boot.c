/* SPDX-License-Identifier: MIT */
/*
 * boot: exits at once with code 0.  Its exit hypercall is the first
 * hypercall the VM makes, so the time from creating the VM to that exit is
 * the start-up cost of a micro-VM (vmq-bench's boot_us.core).
 *
 * Arguments: none.  Console: nothing.
 */
#include "guest/images/image.h"

int vmq_main(void) {
        return 0;
}
