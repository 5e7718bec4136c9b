/* SPDX-License-Identifier: MIT */
/* Helpers shared by the test suites. */
#ifndef VMQ_TEST_UTIL_H
#define VMQ_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>

/* Number of open file descriptors of this process. */
int vmq_test_count_fds(void);
/* Number of threads of this process. */
int vmq_test_count_threads(void);

/*
 * Makes sure the host has at least `pages` free 2 MiB hugetlb pages, raising
 * /proc/sys/vm/nr_hugepages as root.  Returns the number of free pages after
 * trying (the caller asserts on it: on the project's machines, tests must run,
 * not skip).
 */
long vmq_test_reserve_hugepages(long pages);

/* Path of a built guest image, e.g. vmq_test_guest("echo") */
const char *vmq_test_guest(const char *name);

#endif
