/* SPDX-License-Identifier: MIT */
/*
 * vmq-busfuzz: a D-Bus fuzzer for vmqd.
 *
 * It talks to a running vmqd on a (private) bus, from outside, with a long
 * stream of random calls drawn from a seed: every method of org.vmq1.Manager,
 * .Machine and .Channel with mutated arguments (names of every length and
 * charset, images that are FIFOs, directories, devices, sparse 2 GB files,
 * symlinks, broken or mutated ELF files, sizes zero, odd, huge and
 * "negative", unknown and wrong-typed options, bogus channel ids and object
 * paths, every kind of fd for SendFd, Receive timeouts from 0 to forever),
 * Properties Get/GetAll/Set of every property, wrong signatures, unknown
 * methods and interfaces.  Calls go out in batches over several
 * connections; connections are closed with calls pending, Stop and Receive
 * calls are abandoned, bursts of connections come and go.  With /dev/kvm,
 * echo guests with host channels make Send, SendFd and Receive carry real
 * messages (below and above 64 KiB), which are checked byte for byte.
 *
 * It runs a phase as root and a phase as a non-member (a child that
 * setuid()s to --user with no supplementary groups): a non-member must get
 * AccessDenied for every mutating call and nothing else, and must be
 * answered on every read.
 *
 * What it checks:
 *   - every error on the wire is documented: org.vmq1.Error.* names that
 *     vmqd/DBUS-API.md lists (--api-doc), or sd-bus's standard names where
 *     they are the right answer (see verdict.c); never System.Error.*;
 *   - calls with arguments the API calls invalid (or that issue 8 says vmqd
 *     must refuse, such as the nil UUID) do not succeed;
 *   - success replies have the documented signature; received messages
 *     are well formed, memfds are sealed and readable from offset 0, and
 *     the bytes are the ones sent;
 *   - liveness: between batches, GetStatistics on a connection of its own
 *     is answered within --liveness-ms (100; a slow answer is followed by a
 *     second call at once, and the finding is when both are slow, so that
 *     one scheduling hiccup of a busy 2-core machine is not one); the
 *     supervisor also probes every 100 ms during the batches, which must
 *     not take --hang-ms (2000);
 *   - no call goes unanswered for --call-timeout;
 *   - vmqd never waits in open() for a FIFO's writer: every 100 ms the
 *     supervisor reads the wchan of vmqd's threads; when one is there, that
 *     is a finding, and the fuzzer opens the FIFO's other end so that vmqd
 *     reads end of file and the run goes on;
 *   - vmqd's fds and RSS (/proc/PID): after --warmup seconds, the fd count
 *     stays below warm-up + --fd-slack + --fd-per-vm per running machine,
 *     RSS below warm-up + --rss-mib; at the end, with everything undefined,
 *     fds are back to the count at the start, +- --fd-end-slack.
 * Stopping vmqd and reading LeakSanitizer's verdict is tests/busfuzz/run's
 * part.
 *
 * Example (tests/busfuzz/run does all of it, with a private bus):
 *
 *   vmq-busfuzz --bus unix:path=/tmp/x/bus --seconds 60 --seed 42 \
 *           --work-dir /tmp/x/files --guest-dir build/guest/images \
 *           --api-doc vmqd/DBUS-API.md --nonfatal errors
 *
 * Output: findings as they are first seen, one block per distinct
 * (class, error name, method):
 *
 *   busfuzz: FAIL [errors] System.Error.EISDIR from CreateMachine
 *       call: org.vmq1.Manager.CreateMachine("fz3", "/tmp/x/files/dir", {}) on /org/vmq1
 *       said: Cannot read image '/tmp/x/files/dir': Is a directory
 *
 * FAIL is fatal; "FINDING (non-fatal)" is a class --nonfatal names.  The
 * classes: errors (an undocumented error name, or a standard one where it
 * does not belong), access (a non-member allowed to change something,
 * refused a read, or told anything but AccessDenied), accepted (an invalid
 * argument accepted), stall (no reply, slow liveness, a FIFO that blocked
 * vmqd), receive (a malformed or corrupted message), reply (a wrong reply
 * signature), resources (fds or RSS over the bound), daemon (vmqd left the
 * bus).  At the end: the seed, calls, calls/s, max latencies, fd and RSS
 * figures, the table of findings with counts, and PASSED or FAILED.  The
 * same seed replays the same calls (what they meet depends on timing).
 * Exit status: 0 passed, 1 failed, 2 usage or set-up error.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/busfuzz/busfuzz.h"

extern unsigned fz_nonfatal;

uint64_t fz_now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void fz_pattern(uint64_t tag, uint8_t *buf, size_t len) {
        uint64_t s = fz_mix(tag), x = 0;
        for (size_t i = 0; i < len; i++) {
                if (i % 8 == 0)
                        x = fz_next(&s);
                buf[i] = (uint8_t)(x >> (8 * (i % 8)));
        }
}

static void usage(FILE *f) {
        fprintf(f,
                "usage: vmq-busfuzz --bus ADDRESS --work-dir DIR --guest-dir DIR [options]\n"
                "  --seconds S          per phase (60)\n"
                "  --seed N             (default: random; printed)\n"
                "  --as root|user|both  which phases (both)\n"
                "  --user NAME          the non-member (vmqtest)\n"
                "  --vmqd-pid PID       (default: the owner of org.vmq1)\n"
                "  --api-doc FILE       vmqd/DBUS-API.md: the documented error names\n"
                "  --nonfatal LIST      classes reported but not failing: errors, access,\n"
                "                       accepted, stall, receive, reply, resources, daemon, all\n"
                "  --kvm yes|no|auto    echo guests with host channels (auto: /dev/kvm)\n"
                "  --connections N      (6)   --batch N (64)   --call-timeout S (10)\n"
                "  --liveness-ms MS     (100) --hang-ms MS (2000)\n"
                "  --warmup S           (10, at most a fifth of the run)\n"
                "  --rss-mib N          RSS growth after warm-up (64)\n"
                "  --fd-slack N         (16)  --fd-per-vm N (16)  --fd-end-slack N (2)\n"
                "  --max-message BYTES  vmqd's limits.max_message (16 MiB)\n"
                "  --verbose            print every call\n");
}

static int parse_nonfatal(const char *list, unsigned *ret) {
        char *copy = strdup(list), *save = NULL;
        unsigned mask = 0;
        if (!copy)
                return -ENOMEM;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (strcmp(t, "all") == 0) {
                        mask = (1u << _FZ_CLASS_MAX) - 1;
                        continue;
                }
                int k = fz_class_from_name(t);
                if (k < 0) {
                        fprintf(stderr, "vmq-busfuzz: unknown class '%s'\n", t);
                        free(copy);
                        return -EINVAL;
                }
                mask |= 1u << k;
        }
        free(copy);
        *ret = mask;
        return 0;
}

/* ---- vmqd from /proc ---- */

static int count_fds(pid_t pid) {
        char path[64];
        struct dirent *de;
        int n = 0;
        snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(path);
        if (!d)
                return -1;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

static long rss_kib(pid_t pid) {
        char path[64], line[256];
        long kib = -1;
        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %ld", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}

struct samples {
        int fds_start, fds_warm, fds_max, fds_end;
        long rss_start, rss_warm, rss_max, rss_end;
        bool warm;
        uint64_t start_usec;
};

/* GetStatistics: its latency in ms, and the number of running machines. */
static double probe(sd_bus *bus, uint32_t *running, int *r_out) {
        sd_bus_message *reply = NULL;
        uint64_t t0 = fz_now_usec();
        int r = sd_bus_call_method(bus, FZ_BUS_NAME, FZ_PATH, FZ_MANAGER, "GetStatistics", NULL,
                                   &reply, "");
        double ms = (double)(fz_now_usec() - t0) / 1000.0;
        *running = 0;
        if (r >= 0 && sd_bus_message_enter_container(reply, 'a', "{sv}") >= 0) {
                const char *key;
                while (sd_bus_message_enter_container(reply, 'e', "sv") > 0) {
                        if (sd_bus_message_read(reply, "s", &key) < 0)
                                break;
                        if (strcmp(key, "running") == 0)
                                (void)sd_bus_message_read(reply, "v", "u", running);
                        else
                                (void)sd_bus_message_skip(reply, "v");
                        (void)sd_bus_message_exit_container(reply);
                }
        }
        sd_bus_message_unref(reply);
        *r_out = r;
        return ms;
}

static void sample(const struct fz_options *o, struct fz_shared *sh, struct samples *s,
                   uint32_t running) {
        int fds = count_fds(o->vmqd_pid);
        long rss = rss_kib(o->vmqd_pid);
        if (fds < 0 || rss < 0)
                return;
        if (fds > s->fds_max)
                s->fds_max = fds;
        if (rss > s->rss_max)
                s->rss_max = rss;
        if (!s->warm) {
                if ((double)(fz_now_usec() - s->start_usec) / 1e6 >= o->warmup) {
                        s->warm = true;
                        s->fds_warm = fds;
                        s->rss_warm = rss;
                }
                return;
        }
        unsigned fd_bound = (unsigned)s->fds_warm + o->fd_slack + o->fd_per_vm * running;
        if ((unsigned)fds > fd_bound)
                fz_report(sh, FZ_RESOURCES, "vmqd's fds grew", NULL,
                          "%d fds, bound %u (%d after warm-up + %u + %u per running machine, %u "
                          "running)",
                          fds, fd_bound, s->fds_warm, o->fd_slack, o->fd_per_vm, running);
        if (rss > s->rss_warm + (long)o->rss_mib * 1024)
                fz_report(sh, FZ_RESOURCES, "vmqd's RSS grew", NULL,
                          "%.1f MiB, bound %.1f MiB (%.1f after warm-up + %u)", rss / 1024.0,
                          (s->rss_warm + (long)o->rss_mib * 1024) / 1024.0, s->rss_warm / 1024.0,
                          o->rss_mib);
}

static int connect_control(const struct fz_options *o, sd_bus **ret) {
        sd_bus *bus = NULL;
        int r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, o->bus);
        if (r >= 0)
                r = sd_bus_set_bus_client(bus, 1);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r >= 0)
                r = sd_bus_set_method_call_timeout(bus, o->call_timeout_usec);
        if (r < 0) {
                sd_bus_unref(bus);
                return r;
        }
        *ret = bus;
        return 0;
}

static int call_manager(sd_bus *bus, const char *member, const char *types, ...) {
        sd_bus_message *m = NULL, *reply = NULL;
        va_list ap;
        int r = sd_bus_message_new_method_call(bus, &m, FZ_BUS_NAME, FZ_PATH, FZ_MANAGER, member);
        if (r >= 0) {
                va_start(ap, types);
                r = sd_bus_message_appendv(m, types, ap);
                va_end(ap);
        }
        if (r >= 0)
                r = sd_bus_call(bus, m, 0, NULL, &reply);
        sd_bus_message_unref(m);
        sd_bus_message_unref(reply);
        return r;
}

/* Machines and channels for the non-member to aim at. */
static void make_fixtures(const struct fz_options *o, sd_bus *bus) {
        (void)call_manager(bus, "CreateMachine", "ssa{sv}", "fz-fixture-0", "echo", 0);
        (void)call_manager(bus, "CreateMachine", "ssa{sv}", "fz-fixture-1", "echo", 1, "persistent",
                           "b", 1);
        if (o->kvm) {
                (void)call_manager(bus, "CreateMachine", "ssa{sv}", "fz-fixture-2", "echo", 1,
                                   "start", "b", 1);
                (void)call_manager(bus, "OpenChannel", "ssa{sv}", "host", "fz-fixture-2", 0);
                (void)call_manager(bus, "OpenChannel", "ssa{sv}", "fz-fixture-2", "host", 0);
        }
}

/* Closes every channel, destroys and undefines every machine. */
static void remove_all(sd_bus *bus) {
        sd_bus_message *reply = NULL;
        const char *name, *state, *image, *path, *a, *b;
        uint32_t id;
        int open;
        char names[256][64];
        unsigned n = 0;

        if (sd_bus_call_method(bus, FZ_BUS_NAME, FZ_PATH, FZ_MANAGER, "ListChannels", NULL, &reply,
                               "") >= 0 &&
            sd_bus_message_enter_container(reply, 'a', "(ussbo)") >= 0) {
                uint32_t ids[1024];
                unsigned k = 0;
                while (k < 1024 &&
                       sd_bus_message_read(reply, "(ussbo)", &id, &a, &b, &open, &path) > 0)
                        ids[k++] = id;
                for (unsigned i = 0; i < k; i++)
                        (void)call_manager(bus, "CloseChannel", "u", ids[i]);
        }
        reply = sd_bus_message_unref(reply);
        if (sd_bus_call_method(bus, FZ_BUS_NAME, FZ_PATH, FZ_MANAGER, "ListMachines", NULL, &reply,
                               "") >= 0 &&
            sd_bus_message_enter_container(reply, 'a', "(ssuso)") >= 0) {
                while (n < 256 &&
                       sd_bus_message_read(reply, "(ssuso)", &name, &state, &id, &image, &path) > 0)
                        snprintf(names[n++], sizeof(names[0]), "%s", name);
        }
        sd_bus_message_unref(reply);
        for (unsigned i = 0; i < n; i++) {
                (void)call_manager(bus, "DestroyMachine", "s", names[i]);
                (void)call_manager(bus, "UndefineMachine", "s", names[i]);
        }
}

/* In the child: become the non-member, with no supplementary groups. */
static int drop_privileges(const char *user) {
        struct passwd *pw = getpwnam(user);
        struct group *vmq = getgrnam("vmq");
        gid_t groups[8];

        if (!pw) {
                fprintf(stderr, "busfuzz: no user '%s' (tests/busfuzz/run makes it)\n", user);
                return -ENOENT;
        }
        if (vmq && pw->pw_gid == vmq->gr_gid) {
                fprintf(stderr, "busfuzz: '%s' has group vmq as its primary group\n", user);
                return -EPERM;
        }
        if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
                return -errno;
        if (getuid() != pw->pw_uid || geteuid() != pw->pw_uid || getgroups(8, groups) != 0) {
                fprintf(stderr, "busfuzz: could not drop to '%s'\n", user);
                return -EPERM;
        }
        /* setuid() made the process undumpable, which keeps LeakSanitizer
         * from inspecting it at exit. */
        (void)prctl(PR_SET_DUMPABLE, 1);
        return 0;
}

/* The FIFO watch.  CreateMachine with an image that is a FIFO: a vmqd
 * that opens it without O_NONBLOCK blocks until a writer comes, and so
 * does every call behind it.  A thread looks at vmqd's threads every 100
 * ms; one blocked opening a FIFO is reported (with the last call that
 * named one), and the fuzzer opens the FIFOs' other ends and closes them,
 * so that vmqd reads end of file and goes on. */
struct fifo_watch {
        const struct fz_options *o;
        struct fz_shared *sh;
        atomic_bool stop;
        pthread_t thread;
};

static void *fifo_watch_main(void *arg) {
        struct fifo_watch *fw = arg;
        char call[sizeof(fw->sh->fifo_call)];

        while (!atomic_load(&fw->stop)) {
                usleep(100000);
                if (!fz_blocked_on_fifo(fw->o->vmqd_pid))
                        continue;
                pthread_mutex_lock(&fw->sh->lock);
                snprintf(call, sizeof(call), "%s", fw->sh->fifo_call);
                pthread_mutex_unlock(&fw->sh->lock);
                fz_report(fw->sh, FZ_STALL, "vmqd blocked opening a FIFO image",
                          call[0] ? call : NULL,
                          "a thread of vmqd waited in open() for a writer: the fuzzer opened "
                          "the FIFO's other end, so that it could go on");
                (void)fz_files_unblock(fw->o->work_dir);
        }
        return NULL;
}

/* Started after a fork(), never before: a worker must not inherit it. */
static int watch_start(struct fifo_watch *fw) {
        atomic_store(&fw->stop, false);
        return -pthread_create(&fw->thread, NULL, fifo_watch_main, fw);
}

static void watch_stop(struct fifo_watch *fw) {
        atomic_store(&fw->stop, true);
        pthread_join(fw->thread, NULL);
}

static const char *const phase_names[2] = {"root", "non-member"};

/* Runs one phase in a child; samples vmqd and probes the bus meanwhile. */
static int run_phase(const struct fz_options *o, struct fz_shared *sh, sd_bus *control,
                     struct samples *s, int phase) {
        struct fifo_watch fw = {.o = o, .sh = sh};
        int status, r;
        pid_t pid;

        fflush(stdout);
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                if (phase == 1 && drop_privileges(o->user) < 0)
                        _exit(2);
                int fatal = fz_worker_run(o, sh, phase, phase == 0);
                fflush(stdout);
                exit(fatal ? 1 : 0);
        }
        r = watch_start(&fw);
        if (r < 0) {
                kill(pid, SIGTERM);
                waitpid(pid, &status, 0);
                return r;
        }
        for (;;) {
                uint32_t running;
                if (waitpid(pid, &status, WNOHANG) == pid)
                        break;
                double ms = probe(control, &running, &r);
                sh->load_probes++;
                if (ms > sh->max_load_ms)
                        sh->max_load_ms = ms;
                if (r < 0)
                        fz_report(sh, FZ_DAEMON, "GetStatistics failed", "supervisor's probe", "%s",
                                  strerror(-r));
                else if (ms > o->hang_ms)
                        fz_report(sh, FZ_STALL, "vmqd was slow to answer during a batch",
                                  "supervisor's probe", "GetStatistics took %.0f ms (bound %.0f)",
                                  ms, o->hang_ms);
                if (kill(o->vmqd_pid, 0) < 0 && errno == ESRCH) {
                        fz_report(sh, FZ_DAEMON, "vmqd died", NULL, "pid %d is gone",
                                  (int)o->vmqd_pid);
                        kill(pid, SIGTERM);
                        waitpid(pid, &status, 0);
                        break;
                }
                sample(o, sh, s, running);
                usleep(100000);
        }
        watch_stop(&fw);
        if (WIFSIGNALED(status)) {
                printf("busfuzz: the %s worker died of signal %d\n", phase_names[phase],
                       WTERMSIG(status));
                return -EIO;
        }
        if (WEXITSTATUS(status) == 2) {
                printf("busfuzz: the %s worker could not start\n", phase_names[phase]);
                return -EIO;
        }
        if (WEXITSTATUS(status) > 2) {
                printf("busfuzz: the %s worker exited with status %d (23: LeakSanitizer)\n",
                       phase_names[phase], WEXITSTATUS(status));
                return -EIO;
        }
        return 0;
}

static void print_summary(const struct fz_options *o, const struct fz_shared *sh,
                          const struct samples *s, bool failed) {
        printf("busfuzz: seed %" PRIu64 "\n", o->seed);
        for (int ph = 0; ph < 2; ph++) {
                if (!(ph == 0 ? o->phase_root : o->phase_user))
                        continue;
                double secs = sh->seconds[ph] > 0 ? sh->seconds[ph] : 1;
                printf("busfuzz: %s%s%s: %" PRIu64 " calls in %.1f s (%.0f calls/s), %" PRIu64
                       " batches, %" PRIu64 " replies (%" PRIu64 " allowed errors); liveness "
                       "between batches: max %.1f ms over %" PRIu64 " checks (bound %.0f ms "
                       "twice in a row; %" PRIu64 " slow once); %" PRIu64
                       " messages received and checked, %" PRIu64 " as memfds\n",
                       phase_names[ph], ph ? " as " : "", ph ? o->user : "", sh->calls[ph],
                       sh->seconds[ph], (double)sh->calls[ph] / secs, sh->batches[ph],
                       sh->replies[ph], sh->errors[ph], sh->max_liveness_ms[ph],
                       sh->liveness_checks[ph], o->liveness_ms, sh->liveness_retried[ph],
                       sh->receives_checked[ph], sh->memfds_checked[ph]);
        }
        printf("busfuzz: calls by member (succeeded):");
        for (unsigned i = 0; i < sh->n_members; i++)
                printf(" %s %" PRIu64 " (%" PRIu64 ")", sh->members[i].name, sh->members[i].calls,
                       sh->members[i].ok);
        printf("\n");
        printf("busfuzz: during batches: max latency %.1f ms over %" PRIu64
               " probes (bound %.0f ms)\n",
               sh->max_load_ms, sh->load_probes, o->hang_ms);
        printf("busfuzz: vmqd fds: %d at start, %d after warm-up (%.0f s), max %d, %d at end "
               "(bounds: warm-up + %u + %u per running machine; at end start + %u)\n",
               s->fds_start, s->fds_warm, o->warmup, s->fds_max, s->fds_end, o->fd_slack,
               o->fd_per_vm, o->fd_end_slack);
        printf("busfuzz: vmqd RSS: %.1f MiB at start, %.1f after warm-up, max %.1f, %.1f at end "
               "(bound: warm-up + %u MiB)\n",
               s->rss_start / 1024.0, s->rss_warm / 1024.0, s->rss_max / 1024.0,
               s->rss_end / 1024.0, o->rss_mib);
        if (sh->n_findings) {
                printf("busfuzz: findings (count, class and name, first call):\n");
                for (unsigned i = 0; i < sh->n_findings; i++) {
                        const struct fz_finding *f = &sh->findings[i];
                        printf("  %6" PRIu64 "  %s%s\n          %s\n          %s\n", f->count,
                               f->key, fz_nonfatal & (1u << f->klass) ? " (non-fatal)" : "",
                               f->call[0] ? f->call : "-", f->text);
                }
                if (sh->dropped)
                        printf("  ... and %d more distinct findings\n", sh->dropped);
        }
        printf("busfuzz: %s\n", failed ? "FAILED" : "PASSED");
}

int main(int argc, char **argv) {
        enum {
                O_BUS = 0x100,
                O_SECONDS,
                O_SEED,
                O_AS,
                O_USER,
                O_PID,
                O_API_DOC,
                O_NONFATAL,
                O_KVM,
                O_CONNECTIONS,
                O_BATCH,
                O_CALL_TIMEOUT,
                O_LIVENESS,
                O_HANG,
                O_WARMUP,
                O_RSS,
                O_FD_SLACK,
                O_FD_PER_VM,
                O_FD_END,
                O_MAX_MESSAGE,
                O_WORK_DIR,
                O_GUEST_DIR,
                O_VERBOSE,
        };
        static const struct option options[] = {
                {"help", no_argument, NULL, 'h'},
                {"bus", required_argument, NULL, O_BUS},
                {"seconds", required_argument, NULL, O_SECONDS},
                {"seed", required_argument, NULL, O_SEED},
                {"as", required_argument, NULL, O_AS},
                {"user", required_argument, NULL, O_USER},
                {"vmqd-pid", required_argument, NULL, O_PID},
                {"api-doc", required_argument, NULL, O_API_DOC},
                {"nonfatal", required_argument, NULL, O_NONFATAL},
                {"kvm", required_argument, NULL, O_KVM},
                {"connections", required_argument, NULL, O_CONNECTIONS},
                {"batch", required_argument, NULL, O_BATCH},
                {"call-timeout", required_argument, NULL, O_CALL_TIMEOUT},
                {"liveness-ms", required_argument, NULL, O_LIVENESS},
                {"hang-ms", required_argument, NULL, O_HANG},
                {"warmup", required_argument, NULL, O_WARMUP},
                {"rss-mib", required_argument, NULL, O_RSS},
                {"fd-slack", required_argument, NULL, O_FD_SLACK},
                {"fd-per-vm", required_argument, NULL, O_FD_PER_VM},
                {"fd-end-slack", required_argument, NULL, O_FD_END},
                {"max-message", required_argument, NULL, O_MAX_MESSAGE},
                {"work-dir", required_argument, NULL, O_WORK_DIR},
                {"guest-dir", required_argument, NULL, O_GUEST_DIR},
                {"verbose", no_argument, NULL, O_VERBOSE},
                {},
        };
        struct fz_options o = {
                .seconds = 60,
                .user = "vmqtest",
                .phase_root = true,
                .phase_user = true,
                .connections = 6,
                .batch = 64,
                .call_timeout_usec = 10000000,
                .liveness_ms = 100,
                .hang_ms = 2000,
                .warmup = -1,
                .rss_mib = 64,
                .fd_slack = 16,
                .fd_per_vm = 16,
                .fd_end_slack = 2,
                .max_message = 16u << 20,
        };
        const char *kvm = "auto";
        bool have_seed = false;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        usage(stdout);
                        return 0;
                case O_BUS:
                        o.bus = optarg;
                        break;
                case O_SECONDS:
                        o.seconds = strtod(optarg, NULL);
                        break;
                case O_SEED:
                        o.seed = strtoull(optarg, NULL, 0);
                        have_seed = true;
                        break;
                case O_AS:
                        o.phase_root = strcmp(optarg, "root") == 0 || strcmp(optarg, "both") == 0;
                        o.phase_user = strcmp(optarg, "user") == 0 || strcmp(optarg, "both") == 0;
                        if (!o.phase_root && !o.phase_user) {
                                usage(stderr);
                                return 2;
                        }
                        break;
                case O_USER:
                        o.user = optarg;
                        break;
                case O_PID:
                        o.vmqd_pid = (pid_t)atoi(optarg);
                        break;
                case O_API_DOC:
                        o.api_doc = optarg;
                        break;
                case O_NONFATAL:
                        if (parse_nonfatal(optarg, &o.nonfatal) < 0)
                                return 2;
                        break;
                case O_KVM:
                        kvm = optarg;
                        break;
                case O_CONNECTIONS:
                        o.connections = (unsigned)atoi(optarg);
                        break;
                case O_BATCH:
                        o.batch = (unsigned)atoi(optarg);
                        break;
                case O_CALL_TIMEOUT:
                        o.call_timeout_usec = (uint64_t)(strtod(optarg, NULL) * 1e6);
                        break;
                case O_LIVENESS:
                        o.liveness_ms = strtod(optarg, NULL);
                        break;
                case O_HANG:
                        o.hang_ms = strtod(optarg, NULL);
                        break;
                case O_WARMUP:
                        o.warmup = strtod(optarg, NULL);
                        break;
                case O_RSS:
                        o.rss_mib = (unsigned)atoi(optarg);
                        break;
                case O_FD_SLACK:
                        o.fd_slack = (unsigned)atoi(optarg);
                        break;
                case O_FD_PER_VM:
                        o.fd_per_vm = (unsigned)atoi(optarg);
                        break;
                case O_FD_END:
                        o.fd_end_slack = (unsigned)atoi(optarg);
                        break;
                case O_MAX_MESSAGE:
                        o.max_message = strtoull(optarg, NULL, 0);
                        break;
                case O_WORK_DIR:
                        o.work_dir = optarg;
                        break;
                case O_GUEST_DIR:
                        o.guest_dir = optarg;
                        break;
                case O_VERBOSE:
                        o.verbose = true;
                        break;
                default:
                        usage(stderr);
                        return 2;
                }
        }
        if (!o.bus || !o.work_dir || !o.guest_dir || optind < argc || o.connections == 0 ||
            o.batch == 0 || o.seconds <= 0) {
                usage(stderr);
                return 2;
        }
        if (!have_seed) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                o.seed = fz_mix((uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32)) % 1000000000u;
        }
        if (o.warmup < 0)
                o.warmup = o.seconds / 5 < 10 ? o.seconds / 5 : 10;
        o.kvm = strcmp(kvm, "yes") == 0 ||
                (strcmp(kvm, "auto") == 0 && access("/dev/kvm", R_OK | W_OK) == 0);
        fz_nonfatal = o.nonfatal;
        setvbuf(stdout, NULL, _IOLBF, 0);

        int r = fz_load_documented(o.api_doc);
        if (r < 0) {
                fprintf(stderr, "vmq-busfuzz: no error names in %s: %s\n", o.api_doc, strerror(-r));
                return 2;
        }
        r = fz_files_make(o.work_dir, o.guest_dir, o.seed);
        if (r < 0) {
                fprintf(stderr, "vmq-busfuzz: cannot make the files in %s: %s\n", o.work_dir,
                        strerror(-r));
                return 2;
        }
        sd_bus *control = NULL;
        r = connect_control(&o, &control);
        if (r < 0) {
                fprintf(stderr, "vmq-busfuzz: cannot connect to %s: %s\n", o.bus, strerror(-r));
                return 2;
        }
        if (o.vmqd_pid <= 0) {
                sd_bus_creds *creds = NULL;
                pid_t pid = 0;
                r = sd_bus_get_name_creds(control, FZ_BUS_NAME, SD_BUS_CREDS_PID, &creds);
                if (r >= 0)
                        r = sd_bus_creds_get_pid(creds, &pid);
                sd_bus_creds_unref(creds);
                if (r < 0) {
                        fprintf(stderr, "vmq-busfuzz: who is org.vmq1? %s\n", strerror(-r));
                        return 2;
                }
                o.vmqd_pid = pid;
        }

        struct fz_shared *sh =
                mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (sh == MAP_FAILED)
                return 2;
        memset(sh, 0, sizeof(*sh));
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
        pthread_mutex_init(&sh->lock, &attr);
        pthread_mutexattr_destroy(&attr);

        printf("busfuzz: seed %" PRIu64 ", %.0f s per phase (%s%s%s), vmqd pid %d, kvm %s, "
               "%u documented org.vmq1.Error names\n",
               o.seed, o.seconds, o.phase_root ? "root" : "",
               o.phase_root && o.phase_user ? ", " : "", o.phase_user ? "non-member" : "",
               (int)o.vmqd_pid, o.kvm ? "yes" : "no", fz_documented_count());

        struct samples s = {.start_usec = fz_now_usec()};
        s.fds_start = s.fds_max = count_fds(o.vmqd_pid);
        s.rss_start = s.rss_max = rss_kib(o.vmqd_pid);
        bool broken = false;
        if (o.phase_root) {
                printf("busfuzz: phase 1: root\n");
                broken |= run_phase(&o, sh, control, &s, 0) < 0;
        }
        if (o.phase_user && !broken) {
                printf("busfuzz: phase 2: non-member '%s'\n", o.user);
                make_fixtures(&o, control);
                broken |= run_phase(&o, sh, control, &s, 1) < 0;
        }
        struct fifo_watch fw = {.o = &o, .sh = sh};
        bool watching = watch_start(&fw) >= 0;
        remove_all(control);
        if (watching)
                watch_stop(&fw);
        usleep(500000);
        s.fds_end = count_fds(o.vmqd_pid);
        s.rss_end = rss_kib(o.vmqd_pid);
        if (s.fds_end > s.fds_start + (int)o.fd_end_slack)
                fz_report(sh, FZ_RESOURCES, "vmqd's fds are not back", NULL,
                          "%d fds at the end, %d at the start (slack %u)", s.fds_end, s.fds_start,
                          o.fd_end_slack);
        if (s.warm && s.rss_end > s.rss_warm + (long)o.rss_mib * 1024)
                fz_report(sh, FZ_RESOURCES, "vmqd's RSS grew", NULL,
                          "%.1f MiB at the end, %.1f after warm-up (bound + %u MiB)",
                          s.rss_end / 1024.0, s.rss_warm / 1024.0, o.rss_mib);
        control = sd_bus_flush_close_unref(control);

        bool failed = broken;
        for (int k = 0; k < _FZ_CLASS_MAX; k++)
                if (sh->counts[k] && !(fz_nonfatal & (1u << k)))
                        failed = true;
        print_summary(&o, sh, &s, failed);
        munmap(sh, sizeof(*sh));
        return failed ? 1 : 0;
}
