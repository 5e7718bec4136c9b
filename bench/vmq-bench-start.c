/* SPDX-License-Identifier: MIT */
/*
 * vmq-bench-start: how long a client waits for a micro-VM to start through
 * vmqd (DESIGN.md §6):
 *
 *   start_ms.vmqd        median, over 50 starts, of the time from just
 *                        before org.vmq1.Manager.StartMachine is sent to
 *                        the moment the client reads the machine's
 *                        PropertiesChanged saying State "exited"
 *   start_p99_ms.vmqd    the 99th percentile of the same
 *
 * The guest is boot.elf, which exits with code 0 at once: its exit is its
 * first hypercall, so the figure is the whole start path as a client sees
 * it (D-Bus to vmqd, VM creation and ELF load, the first KVM_RUN, the exit
 * reaching vmqd's loop and the signal's way back over the bus).
 *
 * Everything runs privately: a dbus-daemon with its own configuration and
 * socket in a temporary directory, and the built vmqd on it (--no-libvirt,
 * an empty configuration, its state in that directory, READY=1 awaited on a
 * NOTIFY_SOCKET of ours).  Each start gets a machine of its own, created
 * (not persistent, so nothing is saved) and subscribed to before the clock
 * starts and undefined after: a machine started again after it exited
 * publishes no State change when the guest exits before vmqd first looks,
 * as "exited" to "exited" is no change.
 *
 * Any failure names its step on stderr (a D-Bus error by name and message,
 * with the end of vmqd's log) and the exit status is 1; vmqd and
 * dbus-daemon are stopped and reaped and the directory removed either way.
 *
 * Usage: vmq-bench-start [--vmqd PATH] [--guest-dir DIR]
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "bus/vmq-bus.h"

#define N_STARTS 50
#define START_TIMEOUT_NS (10ull * 1000000000ull)
#define SPAWN_TIMEOUT_NS (20ull * 1000000000ull)
#define STOP_TIMEOUT_NS (10ull * 1000000000ull)
#define NS_PER_MS 1e6

static const char *arg_vmqd = VMQ_VMQD;
static const char *arg_guest_dir = VMQ_GUEST_DIR;
/* SIGINT, SIGTERM or SIGHUP came: every wait gives up, the cleanup runs. */
static volatile sig_atomic_t got_signal;

/* What is running and what to remove; see bench_env_stop(). */
struct bench_env {
        char dir[PATH_MAX]; /* private temporary directory, "" before mkdtemp */
        char address[PATH_MAX + 16];
        pid_t dbus_pid;
        pid_t vmqd_pid;
        bool vmqd_spawned; /* its log is worth showing on failure */
        sd_bus *bus;
};

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
        va_list ap;

        fputs("vmq-bench-start: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
}

static int write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "we");
        int r = 0;

        if (!f)
                return -errno;
        if (fputs(text, f) < 0)
                r = -EIO;
        if (fclose(f) != 0 && r == 0)
                r = -errno;
        return r;
}

static void on_signal(int sig) {
        got_signal = sig;
}

/* Whether to give up a wait for a signal (then says so, naming the step). */
static bool interrupted(const char *step) {
        if (!got_signal)
                return false;
        fail("%s: interrupted by signal %d", step, (int)got_signal);
        return true;
}

/* The end of a log file on stderr, so that a failure shows what vmqd said. */
static void dump_tail(const struct bench_env *e, const char *name, const char *what) {
        char path[PATH_MAX + 32], buf[4096];
        int fd;
        off_t size;
        ssize_t n;

        snprintf(path, sizeof(path), "%s/%s", e->dir, name);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return;
        size = lseek(fd, 0, SEEK_END);
        if (size > 0 &&
            lseek(fd, size > (off_t)sizeof(buf) ? size - (off_t)sizeof(buf) : 0, SEEK_SET) >= 0) {
                n = read(fd, buf, sizeof(buf));
                if (n > 0) {
                        fprintf(stderr, "--- the end of %s's log:\n", what);
                        fwrite(buf, 1, (size_t)n, stderr);
                        fputs("---\n", stderr);
                }
        }
        close(fd);
}

/*
 * Forks and execs argv[0] with stdin from /dev/null and stdout and stderr
 * to <dir>/<log>.  keep_fd (or -1) stays open across exec; notify (or NULL)
 * becomes NOTIFY_SOCKET.  The child dies with this process, so that a
 * crashed benchmark leaves no daemon behind.
 */
static int spawn(const struct bench_env *e, char *const argv[], const char *log, int keep_fd,
                 const char *notify, pid_t *ret_pid) {
        char path[PATH_MAX + 32];
        pid_t parent = getpid(), pid;
        int logfd, nullfd;

        snprintf(path, sizeof(path), "%s/%s", e->dir, log);
        logfd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (logfd < 0)
                return -errno;
        nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (nullfd < 0) {
                int r = -errno;
                close(logfd);
                return r;
        }
        pid = fork();
        if (pid == 0) {
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                        _exit(127);
                if (dup2(nullfd, STDIN_FILENO) < 0 || dup2(logfd, STDOUT_FILENO) < 0 ||
                    dup2(logfd, STDERR_FILENO) < 0)
                        _exit(127);
                if (keep_fd >= 0 && fcntl(keep_fd, F_SETFD, 0) < 0)
                        _exit(127);
                if (notify && setenv("NOTIFY_SOCKET", notify, 1) < 0)
                        _exit(127);
                execv(argv[0], argv);
                fprintf(stderr, "Cannot run '%s': %s\n", argv[0], strerror(errno));
                _exit(127);
        }
        close(logfd);
        close(nullfd);
        if (pid < 0)
                return -errno;
        *ret_pid = pid;
        return 0;
}

/* Whether the child has exited (then reaped, its pid cleared). */
static bool child_exited(pid_t *pid, int *ret_status) {
        if (*pid <= 0 || waitpid(*pid, ret_status, WNOHANG) != *pid)
                return false;
        *pid = 0;
        return true;
}

static int find_in_path(const char *name, char *ret, size_t size) {
        const char *p = getenv("PATH");

        if (!p || !*p)
                p = "/usr/local/bin:/usr/bin:/bin";
        while (*p) {
                size_t n = strcspn(p, ":");
                if (n > 0 && (size_t)snprintf(ret, size, "%.*s/%s", (int)n, p, name) < size &&
                    access(ret, X_OK) == 0)
                        return 0;
                p += n + (p[n] == ':');
        }
        return -ENOENT;
}

/*
 * A dbus-daemon on <dir>/bus where anyone may talk to anyone (vmqd does its
 * own access checks); it writes its address to a pipe once it listens.
 */
static int start_dbus(struct bench_env *e) {
        char conf[PATH_MAX + 16], text[PATH_MAX + 1024], exe[PATH_MAX], fdarg[32],
                cfgarg[PATH_MAX + 32];
        uint64_t deadline;
        size_t len = 0;
        int pipefd[2], r;

        if (find_in_path("dbus-daemon", exe, sizeof(exe)) < 0) {
                fail("dbus-daemon: not found in PATH");
                return -ENOENT;
        }
        snprintf(conf, sizeof(conf), "%s/bus.conf", e->dir);
        snprintf(text, sizeof(text),
                 "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration "
                 "1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                 "<busconfig>\n  <type>custom</type>\n  <listen>unix:path=%s/bus</listen>\n"
                 "  <auth>EXTERNAL</auth>\n  <policy context=\"default\">\n"
                 "    <allow own=\"*\"/>\n    <allow send_destination=\"*\"/>\n"
                 "    <allow receive_sender=\"*\"/>\n  </policy>\n</busconfig>\n",
                 e->dir);
        r = write_text(conf, text);
        if (r < 0) {
                fail("dbus-daemon: cannot write '%s': %s", conf, strerror(-r));
                return r;
        }
        if (pipe2(pipefd, O_CLOEXEC) < 0) {
                r = -errno;
                fail("dbus-daemon: pipe: %s", strerror(-r));
                return r;
        }
        snprintf(fdarg, sizeof(fdarg), "--print-address=%d", pipefd[1]);
        snprintf(cfgarg, sizeof(cfgarg), "--config-file=%s", conf);
        char *argv[] = {exe, cfgarg, (char *)"--nofork", (char *)"--nopidfile", fdarg, NULL};
        r = spawn(e, argv, "dbus.log", pipefd[1], NULL, &e->dbus_pid);
        close(pipefd[1]);
        if (r < 0) {
                close(pipefd[0]);
                fail("dbus-daemon: cannot start '%s': %s", exe, strerror(-r));
                return r;
        }

        /* The address, one line, once the bus listens. */
        deadline = bench_now_ns() + SPAWN_TIMEOUT_NS;
        while (len == 0 || e->address[len - 1] != '\n') {
                struct pollfd p = {.fd = pipefd[0], .events = POLLIN};
                uint64_t now = bench_now_ns();
                ssize_t n;
                int k;

                if (interrupted("dbus-daemon")) {
                        r = -EINTR;
                        break;
                }
                if (now >= deadline || len + 1 >= sizeof(e->address)) {
                        r = -ETIMEDOUT;
                        break;
                }
                k = poll(&p, 1, (int)((deadline - now) / 1000000 + 1));
                if (k < 0 && errno != EINTR) {
                        r = -errno;
                        break;
                }
                if (k <= 0)
                        continue;
                n = read(pipefd[0], e->address + len, sizeof(e->address) - 1 - len);
                if (n == 0) {
                        r = -EPIPE;
                        break;
                }
                if (n > 0)
                        len += (size_t)n;
        }
        close(pipefd[0]);
        if (r == -EINTR)
                return r;
        if (r < 0) {
                fail("dbus-daemon: gave no address (%s)", r == -EPIPE ? "it exited" : strerror(-r));
                dump_tail(e, "dbus.log", "dbus-daemon");
                return r;
        }
        e->address[len - 1] = 0;
        return 0;
}

/* vmqd on the private bus; returns once it says READY=1. */
static int start_vmqd(struct bench_env *e, const char *guest_dir) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        char conf[PATH_MAX + 16], bus[sizeof(e->address) + 8], state[PATH_MAX + 32],
                config[PATH_MAX + 32], images[PATH_MAX + 16], buf[4096];
        uint64_t deadline;
        bool ready = false;
        int fd, r, status;

        snprintf(conf, sizeof(conf), "%s/vmqd.conf", e->dir);
        r = write_text(conf, "{}\n");
        if (r < 0) {
                fail("vmqd: cannot write '%s': %s", conf, strerror(-r));
                return r;
        }
        if ((size_t)snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/notify", e->dir) >=
            sizeof(sa.sun_path)) {
                fail("vmqd: the temporary directory '%s' is too long a path for a socket", e->dir);
                return -ENAMETOOLONG;
        }
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                r = -errno;
                fail("vmqd: cannot make the notify socket '%s': %s", sa.sun_path, strerror(-r));
                if (fd >= 0)
                        close(fd);
                return r;
        }

        snprintf(bus, sizeof(bus), "--bus=%s", e->address);
        snprintf(state, sizeof(state), "--state-dir=%s/state", e->dir);
        snprintf(config, sizeof(config), "--config=%s", conf);
        snprintf(images, sizeof(images), "--image-dir=%s", guest_dir);
        char *argv[] = {(char *)arg_vmqd, bus, config, state, images, (char *)"--no-libvirt", NULL};
        r = spawn(e, argv, "vmqd.log", -1, sa.sun_path, &e->vmqd_pid);
        e->vmqd_spawned = r >= 0;
        if (r < 0) {
                close(fd);
                fail("vmqd: cannot start '%s': %s", arg_vmqd, strerror(-r));
                return r;
        }

        deadline = bench_now_ns() + SPAWN_TIMEOUT_NS;
        while (!ready) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                ssize_t n;

                if (interrupted("vmqd")) {
                        r = -EINTR;
                        break;
                }
                if (child_exited(&e->vmqd_pid, &status)) {
                        if (WIFEXITED(status))
                                fail("vmqd: exited with status %d before READY=1",
                                     WEXITSTATUS(status));
                        else
                                fail("vmqd: killed by signal %d before READY=1", WTERMSIG(status));
                        r = -ECHILD;
                        break;
                }
                if (bench_now_ns() >= deadline) {
                        fail("vmqd: sent no READY=1 within %llu s",
                             (unsigned long long)(SPAWN_TIMEOUT_NS / 1000000000ull));
                        r = -ETIMEDOUT;
                        break;
                }
                if (poll(&p, 1, 100) <= 0)
                        continue;
                n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
                if (n <= 0)
                        continue;
                buf[n] = 0;
                ready = strncmp(buf, "READY=1", 7) == 0 || strstr(buf, "\nREADY=1");
        }
        /* Nobody reads it from now on: gone, vmqd's later notifications
         * fail at once instead of filling a queue. */
        close(fd);
        unlink(sa.sun_path);
        return ready ? 0 : r;
}

static int connect_bus(struct bench_env *e) {
        int r;

        r = sd_bus_new(&e->bus);
        if (r >= 0)
                r = sd_bus_set_description(e->bus, "vmq-bench-start");
        if (r >= 0)
                r = sd_bus_set_address(e->bus, e->address);
        if (r >= 0)
                r = sd_bus_set_bus_client(e->bus, 1);
        if (r >= 0)
                r = sd_bus_start(e->bus);
        if (r < 0)
                fail("cannot connect to the private bus '%s': %s", e->address, strerror(-r));
        return r;
}

/* Prints a failed call's D-Bus error; returns r. */
static int call_failed(int r, const sd_bus_error *error, const char *step) {
        if (sd_bus_error_is_set(error))
                fail("%s: %s: %s", step, error->name, error->message ? error->message : "");
        else
                fail("%s: %s", step, strerror(-r));
        return r;
}

/* One start in flight: what its callbacks have seen. */
struct start_wait {
        uint64_t exited_ns; /* when State "exited" was read; 0 before */
        char bad_state[32]; /* a State other than running or exited */
        int bad_signal;     /* a PropertiesChanged that could not be read */
        bool replied;       /* StartMachine answered */
        sd_bus_error error; /* ... with this error */
};

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        uint64_t now = bench_now_ns();
        struct start_wait *w = userdata;
        const char *iface, *key, *state;
        int r;

        (void)ret_error;
        r = sd_bus_message_read(m, "s", &iface);
        if (r < 0 || strcmp(iface, VMQ_BUS_MACHINE_IFACE) != 0)
                return 0;
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                r = sd_bus_message_read(m, "s", &key);
                if (r >= 0 && strcmp(key, "State") == 0) {
                        r = sd_bus_message_read(m, "v", "s", &state);
                        if (r >= 0 && strcmp(state, "exited") == 0)
                                w->exited_ns = now;
                        else if (r >= 0 && strcmp(state, "running") != 0)
                                snprintf(w->bad_state, sizeof(w->bad_state), "%s", state);
                } else if (r >= 0) {
                        r = sd_bus_message_skip(m, "v");
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
        }
        if (r < 0)
                w->bad_signal = r;
        return 0;
}

static int on_start_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct start_wait *w = userdata;

        (void)ret_error;
        w->replied = true;
        if (sd_bus_message_is_method_error(m, NULL))
                (void)sd_bus_error_copy(&w->error, sd_bus_message_get_error(m));
        return 0;
}

/* Creates machine `name` (one image, not persistent); returns its path. */
static int create_machine(struct bench_env *e, const char *name, const char *image,
                          char **ret_path) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        const char *path;
        char step[128];
        int r;

        r = sd_bus_call_method(e->bus, VMQ_BUS_NAME, VMQ_BUS_PATH, VMQ_BUS_MANAGER_IFACE,
                               "CreateMachine", &error, &reply, "ssa{sv}", name, image, 1,
                               "persistent", "b", 0);
        if (r >= 0)
                r = sd_bus_message_read(reply, "o", &path);
        if (r >= 0) {
                *ret_path = strdup(path);
                r = *ret_path ? 0 : -ENOMEM;
        }
        if (r < 0) {
                snprintf(step, sizeof(step), "CreateMachine '%s'", name);
                call_failed(r, &error, step);
        }
        sd_bus_message_unref(reply);
        sd_bus_error_free(&error);
        return r;
}

static int undefine_machine(struct bench_env *e, const char *name) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        char step[128];
        int r;

        r = sd_bus_call_method(e->bus, VMQ_BUS_NAME, VMQ_BUS_PATH, VMQ_BUS_MANAGER_IFACE,
                               "UndefineMachine", &error, NULL, "s", name);
        if (r < 0) {
                snprintf(step, sizeof(step), "UndefineMachine '%s'", name);
                call_failed(r, &error, step);
        }
        sd_bus_error_free(&error);
        return r;
}

/* Start number i: a new machine, its start timed to State "exited". */
static int measure_start(struct bench_env *e, const char *image, unsigned i, double *ret_ms) {
        struct start_wait w = {.error = SD_BUS_ERROR_NULL};
        sd_bus_slot *match = NULL, *call = NULL;
        char name[32], step[96];
        char *path = NULL;
        uint64_t t0, deadline;
        int r;

        snprintf(name, sizeof(name), "bench-start-%u", i);
        snprintf(step, sizeof(step), "start %u of %u, machine '%s'", i + 1, N_STARTS, name);
        r = create_machine(e, name, image, &path);
        if (r < 0)
                return r;
        r = sd_bus_match_signal(e->bus, &match, NULL, path, "org.freedesktop.DBus.Properties",
                                "PropertiesChanged", on_properties_changed, &w);
        if (r < 0) {
                fail("%s: cannot subscribe to PropertiesChanged of '%s': %s", step, path,
                     strerror(-r));
                goto out;
        }

        t0 = bench_now_ns();
        deadline = t0 + START_TIMEOUT_NS;
        r = sd_bus_call_method_async(e->bus, &call, VMQ_BUS_NAME, VMQ_BUS_PATH,
                                     VMQ_BUS_MANAGER_IFACE, "StartMachine", on_start_reply, &w, "s",
                                     name);
        if (r < 0) {
                fail("%s: cannot send StartMachine: %s", step, strerror(-r));
                goto out;
        }
        while (!w.bad_signal &&
               !(w.replied && (w.exited_ns || w.bad_state[0] || sd_bus_error_is_set(&w.error)))) {
                uint64_t now;

                if (interrupted(step)) {
                        r = -EINTR;
                        goto out;
                }
                r = sd_bus_process(e->bus, NULL);
                if (r < 0) {
                        fail("%s: the bus connection failed: %s", step, strerror(-r));
                        goto out;
                }
                if (r > 0)
                        continue;
                now = bench_now_ns();
                if (now >= deadline) {
                        fail("%s: no %s within %llu s of StartMachine", step,
                             w.replied ? "State \"exited\"" : "answer",
                             (unsigned long long)(START_TIMEOUT_NS / 1000000000ull));
                        r = -ETIMEDOUT;
                        goto out;
                }
                r = sd_bus_wait(e->bus, (deadline - now) / 1000);
                if (r < 0 && r != -EINTR) {
                        fail("%s: waiting on the bus failed: %s", step, strerror(-r));
                        goto out;
                }
        }
        if (sd_bus_error_is_set(&w.error)) {
                snprintf(step + strlen(step), sizeof(step) - strlen(step), ": StartMachine");
                r = call_failed(-EIO, &w.error, step);
                goto out;
        }
        if (w.bad_signal) {
                fail("%s: cannot read a PropertiesChanged signal: %s", step,
                     strerror(-w.bad_signal));
                r = w.bad_signal;
                goto out;
        }
        if (w.bad_state[0]) {
                fail("%s: the machine went \"%s\", not \"exited\"", step, w.bad_state);
                r = -EPROTO;
                goto out;
        }
        *ret_ms = (double)(w.exited_ns - t0) / NS_PER_MS;
        r = undefine_machine(e, name);
out:
        sd_bus_slot_unref(call);
        sd_bus_slot_unref(match);
        sd_bus_error_free(&w.error);
        free(path);
        return r;
}

/* Stops a child: sig, then SIGKILL after STOP_TIMEOUT_NS; always reaps. */
static void stop_child(pid_t *pid, int sig, const char *what) {
        uint64_t deadline = bench_now_ns() + STOP_TIMEOUT_NS;
        int status;

        if (*pid <= 0)
                return;
        (void)kill(*pid, sig);
        while (!child_exited(pid, &status)) {
                if (bench_now_ns() >= deadline) {
                        fail("%s (pid %d) did not stop; killing it", what, (int)*pid);
                        (void)kill(*pid, SIGKILL);
                        (void)waitpid(*pid, &status, 0);
                        *pid = 0;
                        return;
                }
                usleep(10000);
        }
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void)st;
        (void)flag;
        (void)ftw;
        if (remove(path) < 0)
                fail("cannot remove '%s': %s", path, strerror(errno));
        return 0;
}

static void bench_env_stop(struct bench_env *e) {
        e->bus = sd_bus_flush_close_unref(e->bus);
        stop_child(&e->vmqd_pid, SIGTERM, "vmqd");
        stop_child(&e->dbus_pid, SIGTERM, "dbus-daemon");
        if (e->dir[0])
                (void)nftw(e->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        e->dir[0] = 0;
}

static int run(struct bench_env *e, const char *guest_dir, const char *image) {
        struct bench_samples samples = {0};
        const char *tmp = getenv("TMPDIR");
        int r;

        snprintf(e->dir, sizeof(e->dir), "%s/vmq-bench-start-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(e->dir)) {
                r = -errno;
                fail("cannot make a temporary directory '%s': %s", e->dir, strerror(-r));
                e->dir[0] = 0;
                return r;
        }
        r = start_dbus(e);
        if (r >= 0)
                r = start_vmqd(e, guest_dir);
        if (r >= 0)
                r = connect_bus(e);
        for (unsigned i = 0; r >= 0 && i < N_STARTS; i++) {
                double ms = 0;
                r = measure_start(e, image, i, &ms);
                if (r >= 0) {
                        r = bench_samples_add(&samples, ms);
                        if (r < 0)
                                fail("cannot keep the samples: %s", strerror(-r));
                }
        }
        if (r >= 0) {
                bench_report("start_ms.vmqd", bench_median(&samples), "ms");
                bench_report("start_p99_ms.vmqd", bench_p99(&samples), "ms");
                bench_print_table();
        } else if (e->vmqd_spawned && !got_signal) {
                dump_tail(e, "vmqd.log", "vmqd");
        }
        bench_samples_free(&samples);
        return r;
}

static void help(void) {
        printf("Usage: vmq-bench-start [OPTIONS...]\n"
               "\n"
               "Measures how long a machine takes to start through vmqd: from\n"
               "StartMachine on D-Bus to the guest's first hypercall (boot.elf exits at\n"
               "once), median and 99th percentile over %u starts, on a private\n"
               "dbus-daemon and vmqd.  Needs /dev/kvm.\n"
               "\n"
               "  -h --help             Show this help and exit\n"
               "     --vmqd=PATH        The vmqd to run (default: %s)\n"
               "     --guest-dir=DIR    Where boot.elf is (default: %s)\n",
               N_STARTS, VMQ_VMQD, VMQ_GUEST_DIR);
}

int main(int argc, char *argv[]) {
        enum { ARG_VMQD = 0x100, ARG_GUEST_DIR };
        static const struct option options[] = {
                {"help", no_argument, NULL, 'h'},
                {"vmqd", required_argument, NULL, ARG_VMQD},
                {"guest-dir", required_argument, NULL, ARG_GUEST_DIR},
                {},
        };
        struct sigaction sa = {.sa_handler = on_signal};

        setvbuf(stdout, NULL, _IOLBF, 0); /* a run cut short keeps its lines */
        struct bench_env e = {0};
        char image[PATH_MAX + 16], *guest_dir;
        int c, r;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return EXIT_SUCCESS;
                case ARG_VMQD:
                        arg_vmqd = optarg;
                        break;
                case ARG_GUEST_DIR:
                        arg_guest_dir = optarg;
                        break;
                default:
                        return EXIT_FAILURE;
                }
        }
        if (optind < argc) {
                fail("unexpected argument '%s'", argv[optind]);
                return EXIT_FAILURE;
        }
        if (access(arg_vmqd, X_OK) < 0) {
                fail("vmqd '%s' cannot be run: %s", arg_vmqd, strerror(errno));
                return EXIT_FAILURE;
        }
        /* vmqd gets absolute paths: it does not share our directory. */
        guest_dir = realpath(arg_guest_dir, NULL);
        if (guest_dir)
                snprintf(image, sizeof(image), "%s/boot.elf", guest_dir);
        if (!guest_dir || access(image, R_OK) < 0) {
                fail("guest image '%s/boot.elf': %s", arg_guest_dir, strerror(errno));
                free(guest_dir);
                return EXIT_FAILURE;
        }

        /* Without SA_RESTART: a signal ends the wait it interrupts. */
        (void)sigaction(SIGINT, &sa, NULL);
        (void)sigaction(SIGTERM, &sa, NULL);
        (void)sigaction(SIGHUP, &sa, NULL);

        r = run(&e, guest_dir, image);
        bench_env_stop(&e);
        free(guest_dir);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
