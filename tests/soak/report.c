/* SPDX-License-Identifier: MIT */
/*
 * What a failure of the soak leaves behind: the seed, the operation count,
 * the last host operations, the VMs alive and, when the process dies, the
 * stack of the thread that did.  A crash handler in the monitor process, a
 * watchdog thread for hangs, and the parent process that outlives both.
 */
#include <errno.h>
#include <execinfo.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/soak/soak.h"

struct soak_shared *soak_shared;
uint64_t soak_seed;
char soak_replay[256];
static _Atomic uint64_t g_op_start_ns;
static const char *_Atomic g_op_name;

uint64_t soak_now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double soak_elapsed_s(void) {
        return (double)(soak_now_ns() - soak_shared->t0_ns) / 1e9;
}

static void put(const char *s) {
        size_t n = strlen(s);

        while (n) {
                ssize_t w = write(STDERR_FILENO, s, n);

                if (w <= 0)
                        return;
                s += w;
                n -= (size_t)w;
        }
}

static void put_u64(uint64_t v) {
        char b[24];
        int i = (int)sizeof(b) - 1;

        b[i] = '\0';
        do {
                b[--i] = (char)('0' + v % 10);
                v /= 10;
        } while (v && i > 0);
        put(b + i);
}

/* Only async-signal-safe calls from here on (backtrace() is loaded at
 * start-up so that it does not allocate here). */
void soak_print_context(void) {
        unsigned last = atomic_load(&soak_shared->last_i);

        put("soak: last host operations (oldest first):\n");
        for (unsigned i = 0; i < SOAK_LAST_OPS; i++) {
                const char *l = soak_shared->last[(last + i) % SOAK_LAST_OPS];

                if (l[0]) {
                        put("soak:   ");
                        put(l);
                        put("\n");
                }
        }
        put("soak: VMs alive:\n");
        put(soak_shared->vms_text[atomic_load(&soak_shared->vms_cur)]);
        put("soak: replay: ");
        put(soak_replay);
        put("\n");
}

static void on_fatal(int sig) {
        void *bt[64];
        int n;

        if (!atomic_exchange(&soak_shared->fatal, true)) {
                put("soak: FAIL monitor process died: signal ");
                put_u64((uint64_t)sig);
                put(sig == SIGSEGV   ? " (SIGSEGV)"
                    : sig == SIGBUS  ? " (SIGBUS)"
                    : sig == SIGABRT ? " (SIGABRT)"
                    : sig == SIGFPE  ? " (SIGFPE)"
                                     : "");
                put(" seed=");
                put_u64(soak_seed);
                put(" ops=");
                put_u64(atomic_load(&soak_shared->ops));
                put(" elapsed_ms=");
                put_u64((soak_now_ns() - soak_shared->t0_ns) / 1000000);
                put("\nsoak: stack of the thread that died:\n");
                n = backtrace(bt, 64);
                backtrace_symbols_fd(bt, n, STDERR_FILENO);
                soak_print_context();
        }
        signal(sig, SIG_DFL);
        raise(sig);
}

void soak_install_fatal_handlers(void) {
        static const int sigs[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
        struct sigaction sa;
        void *bt[2];

        (void)backtrace(bt, 2); /* loads libgcc now, not in the handler */
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_fatal;
        sigemptyset(&sa.sa_mask);
        for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
                sigaction(sigs[i], &sa, NULL);
}

/* The watchdog: a host operation that takes longer than stuck_s is a hang
 * (a deadlock in the monitor, or a join that never returns). */
void *soak_watchdog(void *arg) {
        unsigned stuck_s = *(unsigned *)arg;

        for (;;) {
                sleep(1);
                uint64_t start = atomic_load(&g_op_start_ns);

                if (start && soak_now_ns() - start > (uint64_t)stuck_s * 1000000000ull) {
                        const char *name = atomic_load(&g_op_name);

                        fprintf(stderr,
                                "soak: FAIL host operation '%s' stuck for %u s seed=%" PRIu64
                                " ops=%" PRIu64 " elapsed=%.1fs\n",
                                name ? name : "?", stuck_s, soak_seed,
                                atomic_load(&soak_shared->ops), soak_elapsed_s());
                        atomic_store(&soak_shared->fatal, true);
                        soak_print_context();
                        abort(); /* a core dump shows every thread */
                }
        }
        return NULL;
}

void soak_note_op(struct soak *s, const char *fmt, ...) {
        unsigned i = atomic_load(&soak_shared->last_i);
        char *l = soak_shared->last[i];
        va_list ap;
        int n;

        n = snprintf(l, sizeof(soak_shared->last[0]), "#%" PRIu64 " ",
                     atomic_load(&soak_shared->ops));
        va_start(ap, fmt);
        vsnprintf(l + n, sizeof(soak_shared->last[0]) - (size_t)n, fmt, ap);
        va_end(ap);
        atomic_store(&soak_shared->last_i, (i + 1) % SOAK_LAST_OPS);
        if (s->verbose)
                fprintf(stderr, "soak: %s\n", l);
}

void soak_op_begin(const char *name) {
        atomic_store(&g_op_name, name);
        atomic_store(&g_op_start_ns, soak_now_ns());
}

void soak_op_end(void) {
        atomic_store(&g_op_start_ns, 0);
}

void soak_fail(struct soak *s, const char *fmt, ...) {
        va_list ap;

        fputs("soak: FAIL ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fprintf(stderr, " seed=%" PRIu64 " ops=%" PRIu64 " elapsed=%.1fs\n", soak_seed,
                atomic_load(&soak_shared->ops), soak_elapsed_s());
        if (!s->failed)
                soak_print_context();
        s->failed = true;
        atomic_store(&soak_shared->fatal, true);
}

const char *soak_vm_kind(const struct soak_vm *v) {
        return v->witness ? "witness" : "chaos";
}

void soak_vm_name(const struct soak_vm *v, char *buf, size_t size) {
        snprintf(buf, size, "%c%" PRIu64, v->witness ? 'w' : 'c', v->serial);
}

/* Rewrites the list of live VMs the crash handler prints. */
void soak_publish_vms(struct soak *s) {
        int next = 1 - atomic_load(&soak_shared->vms_cur);
        char *t = soak_shared->vms_text[next];
        size_t used = 0;

        t[0] = '\0';
        for (unsigned i = 0; i < SOAK_VMS_MAX && used < sizeof(soak_shared->vms_text[0]) - 1; i++) {
                const struct soak_vm *v = &s->vms[i];
                char name[32];
                int n;

                if (!v->used)
                        continue;
                soak_vm_name(v, name, sizeof(name));
                n = snprintf(t + used, sizeof(soak_shared->vms_text[0]) - used,
                             "soak:   %s id=%u %s vcpus=%u seed=%" PRIu64 "\n", name, v->id,
                             soak_vm_kind(v), v->vcpus, v->seed);
                if (n < 0 || (size_t)n >= sizeof(soak_shared->vms_text[0]) - used)
                        break; /* the list is cut short, still terminated */
                used += (size_t)n;
        }
        atomic_store(&soak_shared->vms_cur, next);
}

static const char *signal_name(int sig) {
        switch (sig) {
        case SIGSEGV:
                return " (SIGSEGV)";
        case SIGBUS:
                return " (SIGBUS)";
        case SIGABRT:
                return " (SIGABRT)";
        case SIGFPE:
                return " (SIGFPE)";
        case SIGILL:
                return " (SIGILL)";
        case SIGKILL:
                return " (SIGKILL)";
        default:
                return "";
        }
}

static pid_t g_child;

static void forward_signal(int sig) {
        if (g_child > 0)
                kill(g_child, sig);
}

/* The parent: waits for the monitor process and reports how it ended. */
int soak_supervise(pid_t child) {
        static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGABRT};
        struct sigaction sa;
        int status;

        g_child = child;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = forward_signal;
        sigemptyset(&sa.sa_mask);
        for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
                sigaction(sigs[i], &sa, NULL);
        while (waitpid(child, &status, 0) < 0)
                if (errno != EINTR)
                        return 2;
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        if (!WIFSIGNALED(status))
                return 2;
        fflush(stdout);
        fprintf(stderr,
                "soak: FAIL monitor process died: signal %d%s seed=%" PRIu64 " ops=%" PRIu64
                " elapsed=%.1fs\n",
                WTERMSIG(status), signal_name(WTERMSIG(status)), soak_seed,
                atomic_load(&soak_shared->ops), soak_shared->t0_ns ? soak_elapsed_s() : 0.0);
        if (!atomic_load(&soak_shared->fatal)) {
                fprintf(stderr, "soak: it could not report itself (the fault came with every "
                                "signal blocked); run it again with --no-fork under gdb for "
                                "the stack\n");
                fflush(stderr);
                soak_print_context();
        }
        return 128 + WTERMSIG(status);
}
