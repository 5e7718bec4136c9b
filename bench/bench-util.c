/* SPDX-License-Identifier: MIT */
/* Benchmark statistics and reporting; see bench-util.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench-util.h"
#include "core/util.h"

int bench_samples_add(struct bench_samples *s, double x) {
        if (s->n == s->cap) {
                size_t cap = s->cap ? s->cap * 2 : 1024;
                double *v = realloc(s->v, cap * sizeof(*v));
                if (!v)
                        return -ENOMEM;
                s->v = v;
                s->cap = cap;
        }
        s->v[s->n++] = x;
        return 0;
}

void bench_samples_free(struct bench_samples *s) {
        if (!s)
                return;
        free(s->v);
        *s = (struct bench_samples){0};
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

double bench_percentile(struct bench_samples *s, double p) {
        if (s->n == 0)
                return NAN;
        /* Sorting every time is O(n log n) on data that is usually already
         * sorted by the previous call; the sample counts here are small. */
        qsort(s->v, s->n, sizeof(*s->v), cmp_double);
        p = p < 0 ? 0 : p > 100 ? 100 : p;
        double rank = p / 100.0 * (double)(s->n - 1);
        size_t lo = (size_t)rank;
        if (lo + 1 >= s->n)
                return s->v[s->n - 1];
        double frac = rank - (double)lo;
        return s->v[lo] + frac * (s->v[lo + 1] - s->v[lo]);
}

double bench_median(struct bench_samples *s) {
        return bench_percentile(s, 50);
}

double bench_p99(struct bench_samples *s) {
        return bench_percentile(s, 99);
}

double bench_min(struct bench_samples *s) {
        return bench_percentile(s, 0);
}

double bench_mean(const struct bench_samples *s) {
        if (s->n == 0)
                return NAN;
        double sum = 0;
        for (size_t i = 0; i < s->n; i++)
                sum += s->v[i];
        return sum / (double)s->n;
}

uint64_t bench_now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Results reported so far, for the final table. */
struct result {
        char *name;
        char *unit;
        double value;
};

static struct result *results;
static size_t n_results, cap_results;

void bench_report(const char *name, double value, const char *unit) {
        printf("BENCH %s %.3f %s\n", name, value, unit);
        /* Flush now: a benchmark that hangs or crashes later must not take
         * the figures already measured down with it. */
        fflush(stdout);

        if (n_results == cap_results) {
                size_t cap = cap_results ? cap_results * 2 : 32;
                struct result *r = realloc(results, cap * sizeof(*r));
                if (!r)
                        return; /* the BENCH line is out; only the table loses it */
                results = r;
                cap_results = cap;
        }
        char *n = strdup(name), *u = strdup(unit);
        if (!n || !u) {
                free(n);
                free(u);
                return;
        }
        results[n_results++] = (struct result){.name = n, .unit = u, .value = value};
}

void bench_print_table(void) {
        int wname = (int)strlen("benchmark"), wval = (int)strlen("value");
        char buf[64];

        for (size_t i = 0; i < n_results; i++) {
                wname = VMQ_MAX(wname, (int)strlen(results[i].name));
                wval = VMQ_MAX(wval, snprintf(buf, sizeof(buf), "%.3f", results[i].value));
        }
        printf("\n%-*s  %*s  %s\n", wname, "benchmark", wval, "value", "unit");
        for (int i = 0; i < wname + wval + 8; i++)
                putchar('-');
        putchar('\n');
        for (size_t i = 0; i < n_results; i++) {
                printf("%-*s  %*.3f  %s\n", wname, results[i].name, wval, results[i].value,
                       results[i].unit);
                free(results[i].name);
                free(results[i].unit);
        }
        fflush(stdout);
        free(results);
        results = NULL;
        n_results = cap_results = 0;
}
