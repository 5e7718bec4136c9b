/* SPDX-License-Identifier: MIT */
/*
 * Benchmark support: sample collection and statistics, result reporting,
 * and the baselines every vmq figure is compared against (DESIGN.md §6).
 *
 * Every result is printed as one machine-readable line on stdout,
 *
 *     BENCH <name> <value> <unit>
 *
 * and remembered, so that bench_print_table() can end the run with a table a
 * person can read.  Functions return negative errno on failure, like the
 * rest of vmq; unlike core/, bench code may print.
 */
#ifndef VMQ_BENCH_UTIL_H
#define VMQ_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* A growable array of samples.  Zero-initialise before the first add. */
struct bench_samples {
        double *v;
        size_t n;
        size_t cap;
};

/* Appends x.  Returns 0 or -ENOMEM (the samples collected so far stay). */
int bench_samples_add(struct bench_samples *s, double x);
/* Frees the array and resets s to empty.  Accepts NULL. */
void bench_samples_free(struct bench_samples *s);

/*
 * Statistics over the samples (the array is sorted in place by the order
 * statistics).  Percentiles use linear interpolation between closest ranks;
 * p is in [0, 100].  All return NAN when there are no samples.
 */
double bench_percentile(struct bench_samples *s, double p);
double bench_median(struct bench_samples *s);
double bench_p99(struct bench_samples *s);
double bench_mean(const struct bench_samples *s);
double bench_min(struct bench_samples *s);

/* Monotonic clock in nanoseconds. */
uint64_t bench_now_ns(void);

/* Prints "BENCH <name> <value> <unit>" on stdout (value with up to three
 * decimals) and remembers the line for bench_print_table().  name and unit
 * must not contain white space. */
void bench_report(const char *name, double value, const char *unit);
/* Prints every reported result as an aligned table, in report order, then
 * forgets them. */
void bench_print_table(void);

/*
 * Baselines (bench-baseline.c).
 */

/* memcpy bandwidth between two 64 MiB buffers, median of several runs, in
 * GB/s (1e9 bytes per second).  Returns a negative errno on failure. */
double bench_memcpy_gbps(void);

/*
 * One-way latency of a 64-byte message between two host *processes* over an
 * AF_UNIX SOCK_SEQPACKET socketpair, measured as half of a ping-pong round
 * trip with blocking reads, over several thousand samples.  Writes the median
 * and the 99th percentile in microseconds.  Returns 0 or a negative errno.
 */
int bench_unix_socketpair_oneway_us(double *ret_p50, double *ret_p99);

/* The same with the measuring process pinned to cpu_a and the echoing one to
 * cpu_b for the duration of the measurement, so that every message pays a
 * cross-CPU wake-up (left alone, the scheduler tends to run both on one
 * CPU).  Returns 0 or a negative errno: -EINVAL for a negative cpu, the
 * sched_setaffinity error for one this process may not use. */
int bench_unix_socketpair_oneway_pinned_us(int cpu_a, int cpu_b, double *ret_p50, double *ret_p99);

/*
 * Message rate of a stream of 64-byte messages from one host process to
 * another over an AF_UNIX SOCK_SEQPACKET socketpair, one send() and one
 * recv() per message (what two programs use without vmq), in messages per
 * second: the median of several reps of `count` messages, each timed from
 * the first send to the receiver's acknowledgement of the last.  Returns 0
 * or a negative errno.
 */
int bench_unix_socketpair_msgrate_mps(unsigned count, double *ret_mps);

#endif /* VMQ_BENCH_UTIL_H */
