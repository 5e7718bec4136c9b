/* SPDX-License-Identifier: MIT */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-bus.h>
#include <time.h>
#include <unistd.h>

#include "tests/daemon-util.h"

const char *vmq_test_builddir(void) {
        const char *d = getenv("VMQ_BUILDDIR");
        return d ? d : VMQ_BUILDDIR;
}

const char *vmq_test_srcdir(void) {
        const char *d = getenv("VMQ_SRCDIR");
        return d ? d : VMQ_SRCDIR;
}

static void write_file(const char *path, const char *text) {
        FILE *f = fopen(path, "we");
        cr_assert_not_null(f, "%s: %s", path, strerror(errno));
        fputs(text, f);
        cr_assert_eq(fclose(f), 0);
}

bool vmq_wait_for_path(const char *path, int timeout_ms) {
        for (int waited = 0; waited <= timeout_ms; waited += 10) {
                if (access(path, F_OK) == 0)
                        return true;
                usleep(10000);
        }
        return false;
}

static void spawn_dbus(struct vmq_testbus *t);

void vmq_testbus_start(struct vmq_testbus *t) {
        char conf[300], sock[300], text[2048];

        memset(t, 0, sizeof(*t));
        t->notify_fd = -1;
        snprintf(t->dir, sizeof(t->dir), "/tmp/vmq-test-XXXXXX");
        cr_assert_not_null(mkdtemp(t->dir));
        /* the private bus must be reachable for the unprivileged test user */
        chmod(t->dir, 0755);
        snprintf(sock, sizeof(sock), "%s/bus", t->dir);
        snprintf(conf, sizeof(conf), "%s/bus.conf", t->dir);
        snprintf(t->address, sizeof(t->address), "unix:path=%s", sock);
        snprintf(t->state_dir, sizeof(t->state_dir), "%s/state", t->dir);
        /* A bus where anyone may talk to anyone: vmqd does its own access
         * checks, which is what the tests exercise. */
        snprintf(text, sizeof(text),
                 "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration "
                 "1.0//EN\"\n \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n"
                 "<busconfig>\n"
                 "  <type>custom</type>\n"
                 "  <listen>unix:path=%s</listen>\n"
                 "  <auth>EXTERNAL</auth>\n"
                 "  <policy context=\"default\">\n"
                 "    <allow user=\"*\"/>\n"
                 "    <allow own=\"*\"/>\n"
                 "    <allow send_destination=\"*\"/>\n"
                 "    <allow receive_sender=\"*\"/>\n"
                 "  </policy>\n"
                 "</busconfig>\n",
                 sock);
        write_file(conf, text);
        spawn_dbus(t);
}

void vmq_testbus_restart_dbus(struct vmq_testbus *t) {
        char sock[300];
        if (t->dbus_pid > 0) {
                kill(t->dbus_pid, SIGKILL);
                waitpid(t->dbus_pid, NULL, 0);
                t->dbus_pid = 0;
        }
        snprintf(sock, sizeof(sock), "%s/bus", t->dir);
        unlink(sock);
        spawn_dbus(t);
}

static void spawn_dbus(struct vmq_testbus *t) {
        char conf[300], sock[300];

        snprintf(sock, sizeof(sock), "%s/bus", t->dir);
        snprintf(conf, sizeof(conf), "%s/bus.conf", t->dir);
        t->dbus_pid = fork();
        cr_assert_geq(t->dbus_pid, 0);
        if (t->dbus_pid == 0) {
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                dup2(null, 0);
                dup2(null, 1);
                execlp("dbus-daemon", "dbus-daemon", "--config-file", conf, "--nofork",
                       "--nopidfile", (char *)NULL);
                _exit(127);
        }
        cr_assert(vmq_wait_for_path(sock, 10000), "dbus-daemon did not come up at %s", sock);
        chmod(sock, 0777);
}

/* Forks vmqd (through sh, for t->env); returns the path of its log. */
static void spawn_vmqd(struct vmq_testbus *t, const char *extra_args, char *logpath, size_t size) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        char vmqd[512], images[512], libvirt[1200], cmd[4096];

        if (t->notify_fd < 0) {
                snprintf(t->notify_path, sizeof(t->notify_path), "%s/notify", t->dir);
                t->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
                cr_assert_geq(t->notify_fd, 0);
                cr_assert_lt(strlen(t->notify_path), sizeof(sa.sun_path));
                memcpy(sa.sun_path, t->notify_path, strlen(t->notify_path) + 1);
                cr_assert_eq(bind(t->notify_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        }
        snprintf(vmqd, sizeof(vmqd), "%s/vmqd/vmqd", vmq_test_builddir());
        snprintf(images, sizeof(images), "%s/guest/images", vmq_test_builddir());
        snprintf(logpath, size, "%s/vmqd.log", t->dir);
        /* $$ is the shell's pid, which exec hands on to vmqd */
        if (t->libvirt_uri)
                snprintf(libvirt, sizeof(libvirt), "--libvirt-uri=%s --runtime-dir=%s/run",
                         t->libvirt_uri, t->dir);
        else
                snprintf(libvirt, sizeof(libvirt), "--no-libvirt");
        snprintf(cmd, sizeof(cmd),
                 "WATCHDOG_PID=$$; export WATCHDOG_PID; %s exec %s --bus=%s --state-dir=%s "
                 "--image-dir=%s %s %s >>%s 2>&1",
                 t->env ? t->env : "", vmqd, t->address, t->state_dir, images, libvirt,
                 extra_args ? extra_args : "", logpath);

        t->vmqd_pid = fork();
        cr_assert_geq(t->vmqd_pid, 0);
        if (t->vmqd_pid == 0) {
                setenv("NOTIFY_SOCKET", t->notify_path, 1);
                execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
                _exit(127);
        }
}

/*
 * The notify socket is read all the time, by a thread, as the service
 * manager would: a vmqd whose datagrams nobody reads would block in
 * sd_notify() once the socket's queue (net.unix.max_dgram_qlen, 10) is
 * full.  Messages wait in a queue for vmq_testbus_wait_notify().
 */
#define NOTIFY_QUEUE 4096
static struct {
        pthread_t thread;
        bool running, stop;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        char *queue[NOTIFY_QUEUE];
        size_t head, tail; /* take from head, add at tail */
        struct vmq_testbus *t;
} notify = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void *notify_drain(void *arg) {
        struct vmq_testbus *t = arg;
        char buf[4096];

        while (!__atomic_load_n(&notify.stop, __ATOMIC_ACQUIRE)) {
                struct pollfd p = {.fd = t->notify_fd, .events = POLLIN};
                if (poll(&p, 1, 50) <= 0)
                        continue;
                ssize_t n = recv(t->notify_fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
                if (n <= 0)
                        continue;
                buf[n] = 0;
                pthread_mutex_lock(&notify.lock);
                char *s = strstr(buf, "STATUS=");
                if (s) {
                        snprintf(t->last_status, sizeof(t->last_status), "%s", s + 7);
                        char *nl = strchr(t->last_status, '\n');
                        if (nl)
                                *nl = 0;
                }
                if (notify.tail - notify.head == NOTIFY_QUEUE) /* full: the oldest goes */
                        free(notify.queue[notify.head++ % NOTIFY_QUEUE]);
                notify.queue[notify.tail++ % NOTIFY_QUEUE] = strdup(buf);
                pthread_cond_broadcast(&notify.cond);
                pthread_mutex_unlock(&notify.lock);
        }
        return NULL;
}

static void notify_start(struct vmq_testbus *t) {
        if (notify.running)
                return;
        notify.stop = false;
        notify.t = t;
        cr_assert_eq(pthread_create(&notify.thread, NULL, notify_drain, t), 0);
        notify.running = true;
}

static void notify_stop(void) {
        if (!notify.running)
                return;
        __atomic_store_n(&notify.stop, true, __ATOMIC_RELEASE);
        pthread_join(notify.thread, NULL);
        notify.running = false;
        while (notify.head != notify.tail)
                free(notify.queue[notify.head++ % NOTIFY_QUEUE]);
        notify.head = notify.tail = 0;
}

/* Takes queued messages until one contains `what` (true), or the timeout. */
static bool notify_take(const char *what, int timeout_ms) {
        struct timespec deadline;
        bool found = false;

        clock_gettime(CLOCK_REALTIME, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
                deadline.tv_sec++;
                deadline.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&notify.lock);
        while (!found) {
                while (notify.head != notify.tail && !found) {
                        char *m = notify.queue[notify.head++ % NOTIFY_QUEUE];
                        found = strstr(m, what) != NULL;
                        free(m);
                }
                if (found || pthread_cond_timedwait(&notify.cond, &notify.lock, &deadline) != 0)
                        break;
        }
        pthread_mutex_unlock(&notify.lock);
        return found;
}

void vmq_testbus_start_vmqd_on_domains(struct vmq_testbus *t, const char *const *names,
                                       unsigned n) {
        char path[512];
        FILE *f;

        snprintf(path, sizeof(path), "%s/node.xml", t->dir);
        f = fopen(path, "we");
        cr_assert_not_null(f);
        fprintf(f, "<node>\n");
        for (unsigned i = 0; i < n; i++)
                fprintf(f,
                        "  <domain type='test'>\n"
                        "    <name>%s</name>\n"
                        "    <uuid>6695eb01-f6a4-8304-79aa-97f2502e19%02u</uuid>\n"
                        "    <memory>65536</memory>\n"
                        "    <vcpu>1</vcpu>\n"
                        "    <os><type arch='x86_64'>hvm</type></os>\n"
                        "    <devices>\n"
                        "      <shmem name='vmq-%s'>\n"
                        "        <model type='ivshmem-doorbell'/>\n"
                        "        <server path='%s/run/ivshmem-%s.sock'/>\n"
                        "        <msi vectors='2' ioeventfd='on'/>\n"
                        "      </shmem>\n"
                        "    </devices>\n"
                        "  </domain>\n",
                        names[i], i + 1, names[i], t->dir, names[i]);
        fprintf(f, "</node>\n");
        cr_assert_eq(fclose(f), 0);
        snprintf(t->uri_buf, sizeof(t->uri_buf), "test://%s", path);
        t->libvirt_uri = t->uri_buf;
        vmq_testbus_start_vmqd(t, "");
}

void vmq_testbus_wait_running(struct vmq_testbus *t, const char *name) {
        char *out = vmq_testbus_ok(
                t, 0,
                "for i in $(seq 100); do $BUSCTL get-property org.vmq1 "
                "/org/vmq1/machine/%s org.vmq1.Machine State | grep -q running && break; "
                "sleep 0.05; done; $BUSCTL get-property org.vmq1 /org/vmq1/machine/%s "
                "org.vmq1.Machine State",
                name, name);
        cr_assert(strstr(out, "running"), "%s: %s", name, out);
        free(out);
}

int vmq_testbus_run_vmqd_to_exit(struct vmq_testbus *t, const char *extra_args) {
        char logpath[600];

        spawn_vmqd(t, extra_args, logpath, sizeof(logpath));
        notify_start(t);
        for (int waited = 0;; waited += 50) {
                int status;
                if (waitpid(t->vmqd_pid, &status, WNOHANG) == t->vmqd_pid) {
                        t->vmqd_pid = 0;
                        return status;
                }
                cr_assert_lt(waited, 20000, "vmqd did not exit within 20 s");
                if (notify_take("READY=1", 50)) {
                        char *log = NULL;
                        vmq_testbus_run(t, &log, true, "cat %s", logpath);
                        cr_assert_fail("vmqd started (READY=1) where it must refuse:\n%s",
                                       log ? log : "");
                }
        }
}

void vmq_testbus_start_vmqd(struct vmq_testbus *t, const char *extra_args) {
        char logpath[600];

        spawn_vmqd(t, extra_args, logpath, sizeof(logpath));
        notify_start(t);

        /* Wait for READY=1 on the notify socket. */
        for (int waited = 0;; waited += 100) {
                int status;
                cr_assert_lt(waited, 20000, "vmqd sent no READY=1 within 20 s");
                if (waitpid(t->vmqd_pid, &status, WNOHANG) == t->vmqd_pid) {
                        char *log = NULL;
                        t->vmqd_pid = 0; /* reaped: nothing to stop later */
                        vmq_testbus_run(t, &log, true, "cat %s", logpath);
                        cr_assert_fail("vmqd exited (status %d) before READY=1:\n%s", status,
                                       log ? log : "");
                }
                if (notify_take("READY=1", 100))
                        break;
        }
}

bool vmq_testbus_wait_notify(struct vmq_testbus *t, const char *what, int timeout_ms) {
        (void)t;
        return notify_take(what, timeout_ms);
}

int vmq_testbus_stop_vmqd(struct vmq_testbus *t, int sig) {
        int status = -1;
        if (t->vmqd_pid <= 0)
                return -1;
        kill(t->vmqd_pid, sig);
        for (int waited = 0; waited < 30000; waited += 10) {
                pid_t p = waitpid(t->vmqd_pid, &status, WNOHANG);
                if (p == t->vmqd_pid || (p < 0 && errno == ECHILD)) {
                        t->vmqd_pid = 0;
                        return p < 0 ? -1 : status;
                }
                usleep(10000);
        }
        kill(t->vmqd_pid, SIGKILL);
        waitpid(t->vmqd_pid, &status, 0);
        t->vmqd_pid = 0;
        cr_assert_fail("vmqd did not stop within 30 s of signal %d", sig);
        return status;
}

void vmq_testbus_stop(struct vmq_testbus *t) {
        char cmd[400];
        if (t->vmqd_pid > 0)
                vmq_testbus_stop_vmqd(t, SIGTERM);
        if (t->dbus_pid > 0) {
                kill(t->dbus_pid, SIGTERM);
                waitpid(t->dbus_pid, NULL, 0);
                t->dbus_pid = 0;
        }
        notify_stop();
        if (t->notify_fd >= 0)
                close(t->notify_fd);
        t->notify_fd = -1;
        if (t->dir[0] && !getenv("VMQ_TEST_KEEP")) {
                snprintf(cmd, sizeof(cmd), "rm -rf '%s'", t->dir);
                (void)!system(cmd);
        }
}

int vmq_testbus_run(struct vmq_testbus *t, char **ret_out, bool merge_stderr, const char *fmt,
                    ...) {
        char *body = NULL, *cmd = NULL;
        va_list ap;
        va_start(ap, fmt);
        cr_assert_geq(vasprintf(&body, fmt, ap), 0);
        va_end(ap);
        cr_assert_geq(asprintf(&cmd,
                               "VMQCTL='%s/vmqctl/vmqctl --bus=%s'; BUSCTL='busctl --address=%s'; "
                               "BUS='%s'; export VMQCTL BUSCTL BUS; %s %s",
                               vmq_test_builddir(), t->address, t->address, t->address, body,
                               merge_stderr ? "2>&1" : ""),
                      0);
        FILE *p = popen(cmd, "r");
        free(body);
        free(cmd);
        cr_assert_not_null(p);
        size_t cap = 4096, len = 0;
        char *out = malloc(cap);
        cr_assert_not_null(out);
        size_t n;
        while ((n = fread(out + len, 1, cap - len - 1, p)) > 0) {
                len += n;
                if (cap - len < 2) {
                        cap *= 2;
                        out = realloc(out, cap);
                        cr_assert_not_null(out);
                }
        }
        out[len] = 0;
        int status = pclose(p);
        if (ret_out)
                *ret_out = out;
        else
                free(out);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

char *vmq_testbus_ok(struct vmq_testbus *t, int want, const char *fmt, ...) {
        char *line = NULL, *out = NULL, *err = NULL;
        va_list ap;
        va_start(ap, fmt);
        cr_assert_geq(vasprintf(&line, fmt, ap), 0);
        va_end(ap);
        int r = vmq_testbus_run(t, &out, false, "%s 2>%s/last.err", line, t->dir);
        if (r != want) {
                vmq_testbus_run(t, &err, true, "cat %s/last.err; tail -20 %s/vmqd.log", t->dir,
                                t->dir);
                cr_assert_fail("'%s' exited %d, want %d\nstdout: %s\nstderr+log: %s", line, r, want,
                               out, err);
        }
        free(line);
        return out;
}

char *vmq_testbus_last_err(struct vmq_testbus *t) {
        char *err = NULL;
        vmq_testbus_run(t, &err, false, "cat %s/last.err", t->dir);
        return err;
}

void vmq_assert_has(const char *text, const char *needle) {
        cr_assert(strstr(text, needle) != NULL, "'%s' not in:\n%s", needle, text);
}

void vmq_assert_hasnt(const char *text, const char *needle) {
        cr_assert(strstr(text, needle) == NULL, "'%s' unexpectedly in:\n%s", needle, text);
}

void vmq_testbus_expect_clean_exit(struct vmq_testbus *t) {
        int st = vmq_testbus_stop_vmqd(t, SIGTERM);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                char *log = NULL;
                vmq_testbus_run(t, &log, true, "tail -60 %s/vmqd.log", t->dir);
                cr_assert_fail("vmqd exit status %d after SIGTERM:\n%s", st, log);
        }
}

int vmq_testbus_call(struct vmq_testbus *t, sd_bus_error *ret_error, sd_bus_message **ret_reply,
                     const char *method, const char *types, ...) {
        sd_bus *bus = NULL;
        sd_bus_message *reply = NULL;
        va_list ap;
        int r;

        cr_assert_geq(sd_bus_new(&bus), 0);
        cr_assert_geq(sd_bus_set_address(bus, t->address), 0);
        cr_assert_geq(sd_bus_set_bus_client(bus, 1), 0);
        cr_assert_geq(sd_bus_negotiate_fds(bus, 1), 0);
        cr_assert_geq(sd_bus_start(bus), 0);
        va_start(ap, types);
        r = sd_bus_call_methodv(bus, "org.vmq1", "/org/vmq1", "org.vmq1.Manager", method, ret_error,
                                &reply, types, ap);
        va_end(ap);
        if (ret_reply)
                *ret_reply = reply;
        else
                sd_bus_message_unref(reply);
        sd_bus_flush_close_unref(bus);
        return r;
}

static int count_entries(const char *path) {
        DIR *d = opendir(path);
        int n = 0;
        struct dirent *de;
        if (!d)
                return -1;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

int vmq_testbus_vmqd_fds(struct vmq_testbus *t) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/fd", (int)t->vmqd_pid);
        return count_entries(path);
}

long vmq_testbus_vmqd_rss_kib(struct vmq_testbus *t) {
        char path[64], line[256];
        long kib = -1;
        snprintf(path, sizeof(path), "/proc/%d/status", (int)t->vmqd_pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "RssAnon: %ld", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}
