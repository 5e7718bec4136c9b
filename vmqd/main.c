/* SPDX-License-Identifier: MIT */
/*
 * vmqd: the D-Bus service around the vmq core.  Options, the event loop,
 * signals and the service manager's notifications; the rest is in
 * manager.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-id128.h>
#include <unistd.h>

#include "bus/vmq-bus.h"
#include "core/util.h"
#include "vmqd/channel.h"
#include "vmqd/log.h"
#include "vmqd/manager.h"

#ifndef VMQ_CONFIG_FILE
#define VMQ_CONFIG_FILE "/etc/vmq/vmqd.conf"
#endif
#ifndef VMQ_STATE_DIR
#define VMQ_STATE_DIR "/var/lib/vmq"
#endif
#ifndef VMQ_IMAGE_DIR
#define VMQ_IMAGE_DIR "/usr/lib/vmq/guests"
#endif

static const char *arg_bus = "system";
static const char *arg_state_dir;
static const char *arg_config;
static const char *arg_image_dir;
static int arg_log_level = -1;
static bool arg_no_hugetlb;
static const char *arg_libvirt_uri;
static const char *arg_runtime_dir;
static bool arg_no_libvirt;

/* EX_CONFIG (sysexits.h): the configuration or the saved state cannot be
 * used as they are; restarting will not help (the unit has
 * RestartPreventExitStatus=78). */
#define EXIT_CONFIG 78
static bool config_error;

static void help(void) {
        printf("Usage: vmqd [OPTIONS...]\n"
               "\n"
               "The vmq daemon: runs micro-VMs and the message channels between them,\n"
               "and offers them on D-Bus as " VMQ_BUS_NAME ".\n"
               "\n"
               "  -h --help             Show this help and exit\n"
               "     --version          Show the version and exit\n"
               "     --bus=BUS          system (default), user, or a D-Bus address\n"
               "                        such as unix:path=/run/vmq-bus\n"
               "     --config=FILE      Configuration file (default: %s)\n"
               "     --state-dir=DIR    Where definitions are saved (default: %s)\n"
               "     --image-dir=DIR    Where installed guest images are (default: %s)\n"
               "     --log-level=LEVEL  err, warning, notice, info or debug\n"
               "     --no-hugetlb       Do not use 2 MiB hugetlb frames\n"
               "     --libvirt-uri=URI  libvirt connection for adopted domains\n"
               "                        (default: qemu:///system)\n"
               "     --no-libvirt       No libvirt backend at all\n"
               "     --runtime-dir=DIR  Where the ivshmem sockets are (default:\n"
               "                        $RUNTIME_DIRECTORY, else /run/vmq)\n"
               "\n"
               "Options given here override the configuration file.\n",
               VMQ_CONFIG_FILE, VMQ_STATE_DIR, VMQ_IMAGE_DIR);
}

/* 0: go on; > 0: exit successfully; < 0: exit with an error. */
static int parse_argv(int argc, char *argv[]) {
        enum {
                ARG_VERSION = 0x100,
                ARG_BUS,
                ARG_CONFIG,
                ARG_STATE_DIR,
                ARG_IMAGE_DIR,
                ARG_LOG_LEVEL,
                ARG_NO_HUGETLB,
                ARG_LIBVIRT_URI,
                ARG_NO_LIBVIRT,
                ARG_RUNTIME_DIR,
        };
        static const struct option options[] = {
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, ARG_VERSION},
                {"bus", required_argument, NULL, ARG_BUS},
                {"config", required_argument, NULL, ARG_CONFIG},
                {"state-dir", required_argument, NULL, ARG_STATE_DIR},
                {"image-dir", required_argument, NULL, ARG_IMAGE_DIR},
                {"log-level", required_argument, NULL, ARG_LOG_LEVEL},
                {"no-hugetlb", no_argument, NULL, ARG_NO_HUGETLB},
                {"libvirt-uri", required_argument, NULL, ARG_LIBVIRT_URI},
                {"no-libvirt", no_argument, NULL, ARG_NO_LIBVIRT},
                {"runtime-dir", required_argument, NULL, ARG_RUNTIME_DIR},
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        help();
                        return 1;
                case ARG_VERSION:
                        printf("vmqd %s\n", PACKAGE_VERSION);
                        return 1;
                case ARG_BUS:
                        if (!optarg[0]) {
                                log_error("--bus= needs a value");
                                return -EINVAL;
                        }
                        arg_bus = optarg;
                        break;
                case ARG_CONFIG:
                        arg_config = optarg;
                        break;
                case ARG_STATE_DIR:
                        if (!optarg[0]) {
                                log_error("--state-dir= needs a directory");
                                return -EINVAL;
                        }
                        arg_state_dir = optarg;
                        break;
                case ARG_IMAGE_DIR:
                        if (!optarg[0]) {
                                log_error("--image-dir= needs a directory");
                                return -EINVAL;
                        }
                        arg_image_dir = optarg;
                        break;
                case ARG_LOG_LEVEL:
                        arg_log_level = vmqd_log_level_from_string(optarg);
                        if (arg_log_level < 0) {
                                log_error("Invalid log level '%s' (err, warning, notice, info "
                                          "or debug)",
                                          optarg);
                                return -EINVAL;
                        }
                        break;
                case ARG_NO_HUGETLB:
                        arg_no_hugetlb = true;
                        break;
                case ARG_LIBVIRT_URI:
                        if (!optarg[0]) {
                                log_error("--libvirt-uri= needs a URI");
                                return -EINVAL;
                        }
                        arg_libvirt_uri = optarg;
                        break;
                case ARG_NO_LIBVIRT:
                        arg_no_libvirt = true;
                        break;
                case ARG_RUNTIME_DIR:
                        if (optarg[0] != '/') {
                                log_error("--runtime-dir= needs an absolute directory, not '%s'",
                                          optarg);
                                return -EINVAL;
                        }
                        arg_runtime_dir = optarg;
                        break;
                case '?':
                        return -EINVAL;
                default:
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                log_error("Unexpected argument '%s'", argv[optind]);
                return -EINVAL;
        }
        return 0;
}

static int set_string(char **p, const char *v) {
        char *t = strdup(v);
        if (!t)
                return -ENOMEM;
        free(*p);
        *p = t;
        return 0;
}

/*
 * Builds a configuration from the build's defaults, the file and the
 * options (which win), into *c, which must come from vmqd_config_init().
 * Logs its own errors.
 */
static int read_config(struct vmqd_config *c) {
        _cleanup_free_ char *message = NULL;
        const char *path = arg_config ? arg_config : VMQ_CONFIG_FILE;
        int r;

        if (set_string(&c->state_dir, VMQ_STATE_DIR) < 0 ||
            set_string(&c->image_dir, VMQ_IMAGE_DIR) < 0)
                return log_error_errno(ENOMEM, "Out of memory");

        r = vmqd_config_load(c, path, &message);
        if (r == -ENOENT && !arg_config)
                log_debug("No configuration file '%s', using the defaults", path);
        else if (r == -ENOENT)
                return log_error_errno(r, "Configuration file '%s' not found", path);
        else if (r < 0)
                return log_error_errno(r, "Bad configuration file '%s': %s", path,
                                       message ? message : "%m");

        if ((arg_state_dir && set_string(&c->state_dir, arg_state_dir) < 0) ||
            (arg_image_dir && set_string(&c->image_dir, arg_image_dir) < 0) ||
            (arg_libvirt_uri && set_string(&c->libvirt_uri, arg_libvirt_uri) < 0))
                return log_error_errno(ENOMEM, "Out of memory");
        if (arg_log_level >= 0)
                c->log_level = arg_log_level;
        if (arg_no_hugetlb)
                c->hugetlb = false;
        return 0;
}

static int load_config(struct manager *m) {
        int r = read_config(&m->config);
        if (r < 0) {
                config_error = true;
                return r;
        }

        const char *runtime_dir = arg_runtime_dir;
        if (!runtime_dir && getenv("RUNTIME_DIRECTORY") && getenv("RUNTIME_DIRECTORY")[0] == '/')
                runtime_dir = getenv("RUNTIME_DIRECTORY"); /* systemd's RuntimeDirectory= */
        if (runtime_dir && set_string(&m->runtime_dir, runtime_dir) < 0)
                return log_error_errno(ENOMEM, "Out of memory");
        m->no_libvirt = arg_no_libvirt;
        vmqd_log_set_level(m->config.log_level);
        return 0;
}

/* Keeps a setting that only a restart can change, saying so if the file
 * asked for another value. */
static void keep_string(const char *key, char **fresh, char **running) {
        if (strcmp(*fresh, *running) == 0)
                return;
        log_notice("Reload: '%s' changes only when vmqd restarts; keeping '%s'", key, *running);
        char *t = *fresh;
        *fresh = *running;
        *running = t;
}

static void keep_number(const char *key, uint64_t *fresh, uint64_t running) {
        if (*fresh == running)
                return;
        log_notice("Reload: '%s' changes only when vmqd restarts; keeping %" PRIu64, key, running);
        *fresh = running;
}

/*
 * SIGHUP (systemctl reload): reads the configuration again and applies
 * what can change while machines run: the log level, the limits, the
 * defaults for new machines and channels, the image directory and the
 * stop timeout.  A bad file changes nothing.  The state directory, the
 * libvirt URI and the frame pool stay as they were until a restart.
 */
static void reload_config(struct manager *m) {
        struct vmqd_config c;
        uint64_t v;

        (void)sd_notify(false, "RELOADING=1\nSTATUS=Reloading the configuration");
        vmqd_config_init(&c);
        if (read_config(&c) < 0) {
                log_error("Reload failed; the running configuration is unchanged");
                vmqd_config_done(&c);
                (void)sd_notify(false, "READY=1");
                return;
        }
        keep_string("state_dir", &c.state_dir, &m->config.state_dir);
        keep_string("libvirt_uri", &c.libvirt_uri, &m->config.libvirt_uri);
        v = c.hugetlb;
        keep_number("hugetlb", &v, m->config.hugetlb);
        c.hugetlb = v != 0;
        v = c.hugetlb_frames;
        keep_number("hugetlb_frames", &v, m->config.hugetlb_frames);
        c.hugetlb_frames = (uint32_t)v;
        keep_number("pool_memory", &c.pool_memory, m->config.pool_memory);
        if (c.max_machines < m->n_machines)
                log_notice("Reload: %zu machines are defined, above the new limit of %u; no new "
                           "machine can be created until some are undefined",
                           m->n_machines, c.max_machines);
        if (c.max_channels < m->n_channels)
                log_notice("Reload: %zu channels exist, above the new limit of %u", m->n_channels,
                           c.max_channels);

        struct vmqd_config old = m->config;
        m->config = c;
        vmqd_config_done(&old);
        vmqd_log_set_level(m->config.log_level);
        log_info("Reloaded the configuration (log level %s)",
                 vmqd_log_level_to_string(m->config.log_level));
        (void)sd_notify(false, "READY=1");
}

/*
 * One vmqd per state directory: a second one would start the same
 * autostart guests and overwrite the first one's saves.  The lock is an
 * flock() on the directory itself, held until exit; the kernel drops it
 * whichever way vmqd ends.
 */
static int lock_state_dir(const char *dir, int *ret_fd) {
        int fd;

        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return log_error_errno(errno, "Cannot create the state directory '%s': %m", dir);
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return log_error_errno(errno, "Cannot open the state directory '%s': %m", dir);
        if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
                int e = errno;
                close(fd);
                if (e == EWOULDBLOCK)
                        return log_error_errno(EBUSY,
                                               "Another vmqd is using the state directory '%s'; "
                                               "not starting a second one",
                                               dir);
                return log_error_errno(e, "Cannot lock the state directory '%s': %m", dir);
        }
        *ret_fd = fd;
        return 0;
}

/*
 * The identity the host end has on channels: an id derived from
 * /etc/machine-id for this application (machine-id(5) asks for that:
 * the machine id itself must not be handed out), stable across restarts.
 * Without a machine id, a random one for this run.
 */
#define VMQ_HOST_APP_ID                                                                            \
        SD_ID128_MAKE(5c, 0e, 2b, 71, 94, d3, 4a, 8f, b1, 66, 0d, 7e, 39, a2, c4, 18)

static void host_identity(uint8_t uuid[16]) {
        sd_id128_t id;
        int r = sd_id128_get_machine_app_specific(VMQ_HOST_APP_ID, &id);
        if (r < 0) {
                log_notice_errno(r, "No machine id (%m); the host end gets a random identity");
                r = sd_id128_randomize(&id);
        }
        if (r < 0)
                memset(&id, 0, sizeof(id)); /* the core then picks one */
        memcpy(uuid, id.bytes, 16);
}

static int connect_bus(sd_bus **ret) {
        sd_bus *bus = NULL;
        int r;

        if (strcmp(arg_bus, "system") == 0)
                r = sd_bus_open_system_with_description(&bus, "vmqd");
        else if (strcmp(arg_bus, "user") == 0)
                r = sd_bus_open_user_with_description(&bus, "vmqd");
        else {
                r = sd_bus_new(&bus);
                if (r >= 0)
                        r = sd_bus_set_address(bus, arg_bus);
                if (r >= 0)
                        r = sd_bus_set_bus_client(bus, 1);
                if (r >= 0)
                        r = sd_bus_set_description(bus, "vmqd");
                if (r >= 0)
                        r = sd_bus_start(bus);
        }
        if (r < 0) {
                sd_bus_unref(bus);
                return log_error_errno(r, "Cannot connect to the bus '%s': %m", arg_bus);
        }
        *ret = bus;
        return 0;
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void)s;
        (void)si;
        manager_begin_shutdown(userdata);
        return 0;
}

static int on_sighup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        (void)s;
        (void)si;
        reload_config(userdata);
        return 0;
}

/*
 * STATUS= goes out without ever blocking the loop: sd_notify() waits when
 * the service manager's socket queue is full, and a status line is not
 * worth a stalled daemon.  A line that cannot go now goes later (after the
 * next event, or after status_retry).  READY=1, RELOADING=1 and STOPPING=1
 * still go through sd_notify(): they must arrive.
 */
static int notify_nonblocking(const char *text) {
        const char *path = getenv("NOTIFY_SOCKET");
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        size_t len;

        if (!path || !path[0])
                return 0;
        len = strlen(path);
        if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path))
                return -EINVAL;
        memcpy(sa.sun_path, path, len);
        if (sa.sun_path[0] == '@')
                sa.sun_path[0] = 0; /* abstract namespace */
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return -errno;
        if (sendto(fd, text, strlen(text), MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sa,
                   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
                return -errno;
        return 1;
}

/* ---- the bus connection, and getting it back -------------------------------- */

static int bus_retry_usec = 100000; /* the first retry; doubles up to 5 s */
static sd_event_source *bus_retry;

static int bus_setup(struct manager *m);

static int on_bus_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        struct manager *m = userdata;

        (void)s;
        (void)usec;
        bus_retry = sd_event_source_disable_unref(bus_retry);
        if (m->bus) {
                /* The dead connection: its pending calls go with it (no
                 * client can get their answers), then the connection. */
                for (struct channel *c = m->channels; c; c = c->next)
                        channel_drop_receives_of(c, NULL);
                m->owner_slot = sd_bus_slot_unref(m->owner_slot);
                (void)sd_bus_detach_event(m->bus);
                m->bus = sd_bus_close_unref(m->bus);
        }
        if (m->stopping)
                return 0;
        if (bus_setup(m) < 0) {
                m->bus = sd_bus_close_unref(m->bus);
                m->owner_slot = sd_bus_slot_unref(m->owner_slot);
                if (bus_retry_usec < 5000000)
                        bus_retry_usec *= 2;
                if (sd_event_add_time_relative(m->event, &bus_retry, CLOCK_MONOTONIC,
                                               (uint64_t)bus_retry_usec, 0, on_bus_retry, m) < 0) {
                        log_error("Cannot arm a timer to reconnect to the bus; exiting");
                        return sd_event_exit(m->event, -ENOTCONN);
                }
                return 0;
        }
        log_notice("Connected to the bus '%s' again, as %s", arg_bus, VMQ_BUS_NAME);
        bus_retry_usec = 100000;
        return 0;
}

/*
 * The bus went away (dbus-daemon restarted or died).  Machines and
 * channels live on in this process, so vmqd stays and connects again
 * until it can (every 0.1 s at first, then every 5 s), and takes its name
 * back.  Clients see the name vanish and return.
 */
static int on_bus_disconnected(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct manager *m = userdata;

        (void)message;
        (void)error;
        if (m->stopping) {
                log_notice("Lost the bus while stopping");
                return 0;
        }
        log_warning("Lost the connection to the bus '%s'; machines keep running, reconnecting",
                    arg_bus);
        (void)notify_nonblocking("STATUS=Lost the bus connection, reconnecting");
        /* Not from inside the bus's own callback: on the next iteration. */
        bus_retry = sd_event_source_disable_unref(bus_retry);
        if (sd_event_add_time_relative(m->event, &bus_retry, CLOCK_MONOTONIC, 0, 0, on_bus_retry,
                                       m) < 0) {
                log_error("Cannot arm a timer to reconnect to the bus; exiting");
                return sd_event_exit(m->event, -ENOTCONN);
        }
        return 0;
}

/* Connects, attaches to the loop and watches for the connection's loss. */
static int bus_open(struct manager *m) {
        int r;

        r = connect_bus(&m->bus);
        if (r < 0)
                return r;
        r = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Cannot attach the bus to the event loop: %m");
        r = sd_bus_match_signal(m->bus, NULL, "org.freedesktop.DBus.Local",
                                "/org/freedesktop/DBus/Local", "org.freedesktop.DBus.Local",
                                "Disconnected", on_bus_disconnected, m);
        if (r < 0)
                return log_error_errno(r, "Cannot watch the bus connection: %m");
        return 0;
}

static int request_name(struct manager *m) {
        int r = sd_bus_request_name(m->bus, VMQ_BUS_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Cannot own the name '%s': %m", VMQ_BUS_NAME);
        return 0;
}

/* A new connection after a loss: objects registered, name taken.  Logs
 * what failed; on failure m->bus may hold a half-set-up connection for
 * the caller to drop. */
static int bus_setup(struct manager *m) {
        int r = bus_open(m);
        if (r >= 0)
                r = manager_bus_register(m);
        if (r >= 0)
                r = request_name(m);
        return r;
}

/* ---- STATUS= ------------------------------------------------------------------- */

static sd_event_source *status_retry;

static int on_post(sd_event_source *s, void *userdata);

static int on_status_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        (void)s;
        (void)usec;
        status_retry = sd_event_source_disable_unref(status_retry);
        return on_post(NULL, userdata);
}

/* After each loop iteration: tells the service manager what runs now, when
 * that changed (systemctl status shows it). */
static int on_post(sd_event_source *s, void *userdata) {
        static char sent[256];
        struct manager *m = userdata;
        char status[256], line[300];

        (void)s;
        if (m->stopping)
                return 0;
        if (!m->bus)
                snprintf(status, sizeof(status), "Lost the bus connection, reconnecting");
        else
                snprintf(status, sizeof(status),
                         "%zu machines (%zu running), %zu channels (%zu open)%s%s", m->n_machines,
                         manager_count_running(m), m->n_channels, manager_count_open_channels(m),
                         m->corrupt_state_file[0] ? "; corrupt state file moved to " : "",
                         m->corrupt_state_file);
        if (strcmp(status, sent) == 0)
                return 0;
        snprintf(line, sizeof(line), "STATUS=%s", status);
        int r = notify_nonblocking(line);
        if (r == -EAGAIN || r == -EWOULDBLOCK) {
                if (!status_retry)
                        (void)sd_event_add_time_relative(m->event, &status_retry, CLOCK_MONOTONIC,
                                                         1000000, 0, on_status_retry, m);
                return 0;
        }
        memcpy(sent, status, sizeof(sent));
        return 0;
}

static void manager_freep(struct manager **m) {
        manager_free(*m);
}

static int run(int argc, char *argv[]) {
        _cleanup_(manager_freep) struct manager *m = NULL;
        _cleanup_close_ int lock_fd = -1;
        sigset_t mask;
        int r;

        vmqd_log_open();
        vmq_bus_errors_init();

        r = parse_argv(argc, argv);
        if (r != 0)
                return r;

        r = manager_new(&m);
        if (r < 0)
                return log_error_errno(r, "Cannot allocate the daemon's context: %m");
        r = load_config(m);
        if (r < 0)
                return r;
        /* Before anything else touches the state or a guest. */
        r = lock_state_dir(m->config.state_dir, &lock_fd);
        if (r < 0)
                return r;
        host_identity(m->host_uuid);

        /* Before the monitor starts threads, so they inherit the mask and
         * only the event loop's signalfd sees these.  SIGUSR1 is the core's. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Cannot block signals: %m");

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGHUP, on_sighup, m);
        if (r < 0)
                return log_error_errno(r, "Cannot watch signals: %m");
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                log_warning_errno(r, "Cannot enable the watchdog: %m");
        r = sd_event_add_post(m->event, NULL, on_post, m);
        if (r < 0)
                return log_error_errno(r, "Cannot add the status updater: %m");

        r = bus_open(m);
        if (r < 0)
                return r;
        r = manager_startup(m);
        if (r == MANAGER_ERROR_OVER_LIMITS)
                config_error = true;
        if (r < 0)
                return r;
        r = request_name(m);
        if (r < 0)
                return r;
        manager_autostart(m);

        log_info("Ready on bus '%s': %zu machines, %zu channels", arg_bus, m->n_machines,
                 m->n_channels);
        (void)on_post(NULL, m); /* STATUS= */
        (void)sd_notify(false, "READY=1");

        r = sd_event_loop(m->event);
        bus_retry = sd_event_source_disable_unref(bus_retry);
        status_retry = sd_event_source_disable_unref(status_retry);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");

        r = manager_save_state(m);
        (void)sd_notify(false, "STATUS=Stopped");
        log_info("Stopped");
        return r;
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);
        if (r >= 0)
                return EXIT_SUCCESS;
        return config_error ? EXIT_CONFIG : EXIT_FAILURE;
}
