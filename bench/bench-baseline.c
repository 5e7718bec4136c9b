/* SPDX-License-Identifier: MIT */
/*
 * The baselines of DESIGN.md §6, measured in the same run as the vmq figures
 * so that every vmq result can be stated as a ratio:
 *
 *   - memcpy bandwidth: the limit of any design that copies the payload;
 *   - a UNIX socketpair between two processes: what people use without vmq.
 *
 * The socket ping-pong runs between processes, not threads, because that is
 * what two communicating programs (or a program and a VM's monitor) are; it
 * uses blocking reads, so each message pays a wake-up of the other side —
 * the same price a vmq receiver that sleeps in VMQ_HC_WAIT pays.  Left
 * alone, the scheduler tends to put the two processes on one CPU (the woken
 * side is pulled to the waker's CPU), which is cheap; the pinned variant
 * forces them apart, which is what two busy programs on a loaded host see.
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "core/util.h"

#define MEMCPY_BYTES (64u * 1024 * 1024)
#define MEMCPY_RUNS 9

#define PINGPONG_MSG 64
#define PINGPONG_WARMUP 500
#define PINGPONG_SAMPLES 5000

double bench_memcpy_gbps(void) {
        struct bench_samples s = {0};
        volatile uint8_t sink = 0;
        double r;

        /* Page-aligned, and written before timing so that page faults are
         * not part of the figure. */
        _cleanup_free_ uint8_t *src = aligned_alloc(4096, MEMCPY_BYTES);
        _cleanup_free_ uint8_t *dst = aligned_alloc(4096, MEMCPY_BYTES);
        if (!src || !dst)
                return -ENOMEM;
        memset(src, 0x5a, MEMCPY_BYTES);
        memset(dst, 0, MEMCPY_BYTES);
        memcpy(dst, src, MEMCPY_BYTES); /* warm-up run, not counted */

        for (int i = 0; i < MEMCPY_RUNS; i++) {
                src[i] = (uint8_t)i; /* a dependency the compiler must honour */
                uint64_t t0 = bench_now_ns();
                memcpy(dst, src, MEMCPY_BYTES);
                uint64_t t1 = bench_now_ns();
                /* Read the copy back so the memcpy cannot be elided. */
                sink ^= dst[i] ^ dst[MEMCPY_BYTES - 1];
                if (bench_samples_add(&s, (double)MEMCPY_BYTES / (double)(t1 - t0)) < 0) {
                        bench_samples_free(&s);
                        return -ENOMEM;
                }
        }
        (void)sink;
        r = bench_median(&s); /* bytes per ns = GB/s */
        bench_samples_free(&s);
        return r;
}

static int send_all(int fd, const void *buf, size_t len) {
        for (;;) {
                ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
                if (n == (ssize_t)len)
                        return 0;
                if (n >= 0)
                        return -EMSGSIZE; /* SEQPACKET: never partial */
                if (errno != EINTR)
                        return -errno;
        }
}

static ssize_t recv_msg(int fd, void *buf, size_t len) {
        for (;;) {
                ssize_t n = recv(fd, buf, len, 0);
                if (n >= 0)
                        return n;
                if (errno != EINTR)
                        return -errno;
        }
}

/* The echo side: runs in the child until the parent closes its end. */
_Noreturn static void echo_child(int fd) {
        uint8_t buf[PINGPONG_MSG];

        for (;;) {
                ssize_t n = recv_msg(fd, buf, sizeof(buf));
                if (n == 0)
                        _exit(EXIT_SUCCESS);
                if (n < 0 || send_all(fd, buf, (size_t)n) < 0)
                        _exit(EXIT_FAILURE);
        }
}

static int pingpong(int fd, struct bench_samples *s) {
        uint8_t out[PINGPONG_MSG], in[PINGPONG_MSG];
        int r;

        for (int i = 0; i < PINGPONG_WARMUP + PINGPONG_SAMPLES; i++) {
                memset(out, i & 0xff, sizeof(out));
                uint64_t t0 = bench_now_ns();
                r = send_all(fd, out, sizeof(out));
                if (r < 0)
                        return r;
                ssize_t n = recv_msg(fd, in, sizeof(in));
                uint64_t t1 = bench_now_ns();
                if (n < 0)
                        return (int)n;
                if (n != (ssize_t)sizeof(in) || memcmp(in, out, sizeof(in)) != 0)
                        return -EPROTO;
                if (i < PINGPONG_WARMUP)
                        continue;
                r = bench_samples_add(s, (double)(t1 - t0) / 2.0 / 1000.0);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* cpu < 0: leave the affinity alone */
static int pin_self(int cpu) {
        cpu_set_t set;

        if (cpu < 0)
                return 0;
        if (cpu >= CPU_SETSIZE)
                return -EINVAL;
        CPU_ZERO(&set);
        CPU_SET(cpu, &set);
        if (sched_setaffinity(0, sizeof(set), &set) < 0)
                return -errno;
        return 0;
}

/* The other process of a baseline: runs on its end of the socketpair and
 * never returns; `arg` is what the caller passed to fork_peer(). */
typedef void (*peer_fn)(int fd, int arg);

/* Makes an AF_UNIX SOCK_SEQPACKET socketpair and forks a child that runs
 * fn on one end; *ret_fd is the parent's end.  Returns 0 or -errno. */
static int fork_peer(peer_fn fn, int arg, int *ret_fd, pid_t *ret_pid) {
        int sv[2];
        pid_t pid;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        /* Buffered output must not be written twice. */
        fflush(stdout);
        fflush(stderr);
        pid = fork();
        if (pid < 0) {
                int r = -errno;
                vmq_close(sv[0]);
                vmq_close(sv[1]);
                return r;
        }
        if (pid == 0) {
                vmq_close(sv[0]);
                fn(sv[1], arg);
                _exit(EXIT_FAILURE); /* fn does not return */
        }
        vmq_close(sv[1]);
        *ret_fd = sv[0];
        *ret_pid = pid;
        return 0;
}

/* Closes the parent's end (EOF tells the child to exit), reaps the child
 * whatever happened, and returns r, or the child's failure when r is 0. */
static int reap_peer(int fd, pid_t pid, int r) {
        int status = 0;

        vmq_close(fd);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        if (r == 0)
                                r = -errno;
                        return r;
                }
        if (r == 0 && (!WIFEXITED(status) || WEXITSTATUS(status) != EXIT_SUCCESS))
                r = -ECHILD;
        return r;
}

static void pinned_echo_child(int fd, int cpu) {
        if (pin_self(cpu) < 0)
                _exit(EXIT_FAILURE); /* the parent sees EOF, then ECHILD */
        echo_child(fd);
}

static int socketpair_oneway(int parent_cpu, int child_cpu, double *ret_p50, double *ret_p99) {
        struct bench_samples s = {0};
        cpu_set_t saved;
        int fd, r;
        pid_t pid;

        r = fork_peer(pinned_echo_child, child_cpu, &fd, &pid);
        if (r < 0)
                return r;

        /* Pin only for the measurement: later benchmarks of the same
         * process must not inherit it. */
        r = 0;
        if (parent_cpu >= 0 && sched_getaffinity(0, sizeof(saved), &saved) < 0)
                r = -errno;
        if (r == 0)
                r = pin_self(parent_cpu);
        if (r == 0) {
                r = pingpong(fd, &s);
                if (parent_cpu >= 0)
                        (void)sched_setaffinity(0, sizeof(saved), &saved);
        }

        r = reap_peer(fd, pid, r);
        if (r == 0) {
                *ret_p50 = bench_median(&s);
                *ret_p99 = bench_p99(&s);
        }
        bench_samples_free(&s);
        return r;
}

#define MSGRATE_REPS 5

/* The receiving side of the stream: `count` messages, then a one-byte
 * acknowledgement, until the parent closes its end. */
_Noreturn static void stream_child(int fd, int count) {
        uint8_t buf[PINGPONG_MSG];

        for (;;) {
                for (int i = 0; i < count; i++) {
                        ssize_t n = recv_msg(fd, buf, sizeof(buf));
                        if (n == 0 && i == 0)
                                _exit(EXIT_SUCCESS);
                        if (n != (ssize_t)sizeof(buf))
                                _exit(EXIT_FAILURE);
                }
                if (send_all(fd, buf, 1) < 0)
                        _exit(EXIT_FAILURE);
        }
}

int bench_unix_socketpair_msgrate_mps(unsigned count, double *ret_mps) {
        struct bench_samples s = {0};
        uint8_t msg[PINGPONG_MSG] = {0}, ack;
        int fd, r;
        pid_t pid;

        if (count == 0 || count > INT_MAX)
                return -EINVAL;
        r = fork_peer(stream_child, (int)count, &fd, &pid);
        if (r < 0)
                return r;

        for (int rep = 0; r == 0 && rep < 1 + MSGRATE_REPS; rep++) {
                uint64_t t0 = bench_now_ns();
                for (unsigned i = 0; r == 0 && i < count; i++)
                        r = send_all(fd, msg, sizeof(msg));
                if (r == 0 && recv_msg(fd, &ack, 1) != 1)
                        r = -EPROTO;
                uint64_t ns = bench_now_ns() - t0;
                if (r == 0 && rep > 0) /* the first warms up */
                        r = bench_samples_add(&s, ns ? (double)count * 1e9 / (double)ns : 0);
        }

        r = reap_peer(fd, pid, r);
        if (r == 0)
                *ret_mps = bench_median(&s);
        bench_samples_free(&s);
        return r;
}

int bench_unix_socketpair_oneway_us(double *ret_p50, double *ret_p99) {
        return socketpair_oneway(-1, -1, ret_p50, ret_p99);
}

int bench_unix_socketpair_oneway_pinned_us(int cpu_a, int cpu_b, double *ret_p50, double *ret_p99) {
        if (cpu_a < 0 || cpu_b < 0)
                return -EINVAL;
        return socketpair_oneway(cpu_a, cpu_b, ret_p50, ret_p99);
}
