/* SPDX-License-Identifier: MIT */
/* Runs the baseline measurements alone: `make bench` until the full vmq
 * benchmark joins them, and a quick check of a machine's floor figures. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench-util.h"

int main(void) {
        double gbps, p50, p99;
        int r, ret = EXIT_SUCCESS;

        setvbuf(stdout, NULL, _IOLBF, 0); /* a run cut short keeps its lines */

        gbps = bench_memcpy_gbps();
        if (gbps < 0) {
                fprintf(stderr, "memcpy baseline failed: %s\n", strerror((int)-gbps));
                ret = EXIT_FAILURE;
        } else {
                bench_report("baseline.memcpy_64MiB", gbps, "GB/s");
        }

        r = bench_unix_socketpair_oneway_us(&p50, &p99);
        if (r < 0) {
                fprintf(stderr, "socketpair baseline failed: %s\n", strerror(-r));
                ret = EXIT_FAILURE;
        } else {
                bench_report("baseline.unix_seqpacket_64B_oneway_p50", p50, "us");
                bench_report("baseline.unix_seqpacket_64B_oneway_p99", p99, "us");
        }

        /* Cross-CPU variant, when there are two CPUs to cross. */
        if (sysconf(_SC_NPROCESSORS_ONLN) >= 2) {
                r = bench_unix_socketpair_oneway_pinned_us(0, 1, &p50, &p99);
                if (r < 0) {
                        fprintf(stderr, "pinned socketpair baseline failed: %s\n", strerror(-r));
                        ret = EXIT_FAILURE;
                } else {
                        bench_report("baseline.unix_seqpacket_64B_oneway_xcpu_p50", p50, "us");
                        bench_report("baseline.unix_seqpacket_64B_oneway_xcpu_p99", p99, "us");
                }
        }

        double mps;
        r = bench_unix_socketpair_msgrate_mps(200000, &mps);
        if (r < 0) {
                fprintf(stderr, "socketpair stream baseline failed: %s\n", strerror(-r));
                ret = EXIT_FAILURE;
        } else {
                bench_report("baseline.unix_socketpair_msgrate_mps", mps, "msg/s");
        }

        bench_print_table();
        return ret;
}
