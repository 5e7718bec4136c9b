/* SPDX-License-Identifier: MIT */
/* vmq_test_need_kvm(): Criterion-only, so not in test-util.c, which the
 * benchmarks link too. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/test-util.h"

bool vmq_test_have_kvm(void) {
        int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return false;
        close(fd);
        return true;
}

void vmq_test_need_kvm(void) {
        int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
        if (fd >= 0) {
                close(fd);
                return;
        }
        int e = errno;
        const char *why = getenv("VMQ_TEST_NO_KVM");
        if (why && *why) {
                /* Criterion does not print skipped tests: say it here, in a
                 * line scripts/test counts. */
                fprintf(stderr,
                        "[NOT RUN] %s::%s: needs /dev/kvm, which this host cannot give: %s\n",
                        criterion_current_test->category, criterion_current_test->name, why);
                cr_skip_test("needs /dev/kvm, which this host cannot give: %s", why);
        }
        cr_assert_fail("needs /dev/kvm: %s (scripts/test sets VMQ_TEST_NO_KVM=<reason> only "
                       "after it found that this host cannot have KVM)",
                       strerror(e));
}

static bool under_emulation(void) {
        const char *e = getenv("VMQ_UNDER_EMULATION");
        return e && e[0] && strcmp(e, "0") != 0;
}

int vmq_test_scale(int n) {
        if (!under_emulation())
                return n;
        return n / 10 > 0 ? n / 10 : 1;
}

int vmq_test_allow_ms(int ms) {
        return under_emulation() ? ms * 4 : ms;
}
