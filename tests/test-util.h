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

#include <stdint.h>

#define VMQ_TEST_FNV_INIT 0xcbf29ce484222325ull
uint64_t vmq_test_fnv1a(uint64_t h, const void *p, size_t n);
/* The bytes the `source` image puts in message i: (i*131 + j*7 + 1) & 0xff */
void vmq_test_source_pattern(uint64_t i, uint8_t *buf, size_t len);

/*
 * Builds a minimal ELF64 x86-64 executable in memory whose single PT_LOAD
 * segment holds `code` at VMQ_IMAGE_GPA and whose entry is its first byte.
 * Returns the malloc()ed image and its size.
 */
void *vmq_test_make_elf(const void *code, size_t code_len, size_t *ret_size);

/*
 * For tests that boot micro-VMs: returns when /dev/kvm opens.  Otherwise
 * the test fails, unless VMQ_TEST_NO_KVM names why this host cannot have
 * KVM (scripts/test sets it after trying to load it): then the test is
 * skipped, loudly, with that reason.
 */
void vmq_test_need_kvm(void);
/* Whether /dev/kvm opens. */
bool vmq_test_have_kvm(void);
/*
 * n, or a tenth of it (at least 1) when the tests run under emulation
 * (tests/nested/run sets VMQ_UNDER_EMULATION in its guest, where every
 * call costs tens of times more): for the tests whose point is many
 * repetitions of the same thing, not a number.
 */
int vmq_test_scale(int n);
/*
 * ms, or four times as long under emulation: for a wait that stands for
 * "long enough for the guests to do their part" (a lost wake-up still
 * never ends), never for a bound being tested.
 */
int vmq_test_allow_ms(int ms);
struct vmq_vm;

/* The VM's console (its last 64 KiB) into buf, NUL-terminated, with any NUL
 * byte the guest printed shown as '.'; returns buf. */
char *vmq_test_console(struct vmq_vm *vm, char *buf, size_t size);

/* Host-driven VMs: takes one descriptor from the VM's queue as its guest
 * would (false: empty). */
struct vmq_desc;
bool vmq_test_take(struct vmq_vm *vm, struct vmq_desc *ret);

/*
 * Waits up to timeout_ms for a console line containing `needle` and copies
 * the last such line (without its newline) into line.  Returns 0, or
 * -ETIMEDOUT (line then holds the whole console, for the failure message).
 */
int vmq_test_wait_line(struct vmq_vm *vm, const char *needle, int timeout_ms, char *line,
                       size_t size);

/* The value of " key=" (or "key=" at the start) in line, in base.  Returns
 * false when the key is not there. */
bool vmq_test_line_u64(const char *line, const char *key, int base, uint64_t *ret);
#endif
