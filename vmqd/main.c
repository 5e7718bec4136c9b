/* SPDX-License-Identifier: MIT */
/*
 * vmqd: the D-Bus service around the vmq core.  Options, the event loop,
 * signals and the service manager's notifications; the rest is in
 * manager.c.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "bus/vmq-bus.h"
#include "core/util.h"
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

static int load_config(struct manager *m) {
        _cleanup_free_ char *message = NULL;
        const char *path = arg_config ? arg_config : VMQ_CONFIG_FILE;
        int r;

        /* The build's paths are the defaults; the file and the options win. */
        if (set_string(&m->config.state_dir, VMQ_STATE_DIR) < 0 ||
            set_string(&m->config.image_dir, VMQ_IMAGE_DIR) < 0)
                return log_error_errno(ENOMEM, "Out of memory");

        r = vmqd_config_load(&m->config, path, &message);
        if (r == -ENOENT && !arg_config)
                log_debug("No configuration file '%s', using the defaults", path);
        else if (r == -ENOENT)
                return log_error_errno(r, "Configuration file '%s' not found", path);
        else if (r < 0)
                return log_error_errno(r, "Bad configuration file '%s': %s", path,
                                       message ? message : "%m");

        const char *runtime_dir = arg_runtime_dir;
        if (!runtime_dir && getenv("RUNTIME_DIRECTORY") && getenv("RUNTIME_DIRECTORY")[0] == '/')
                runtime_dir = getenv("RUNTIME_DIRECTORY"); /* systemd's RuntimeDirectory= */
        if ((arg_state_dir && set_string(&m->config.state_dir, arg_state_dir) < 0) ||
            (arg_image_dir && set_string(&m->config.image_dir, arg_image_dir) < 0) ||
            (arg_libvirt_uri && set_string(&m->config.libvirt_uri, arg_libvirt_uri) < 0) ||
            (runtime_dir && set_string(&m->runtime_dir, runtime_dir) < 0))
                return log_error_errno(ENOMEM, "Out of memory");
        m->no_libvirt = arg_no_libvirt;
        if (arg_log_level >= 0)
                m->config.log_level = arg_log_level;
        if (arg_no_hugetlb)
                m->config.hugetlb = false;
        vmqd_log_set_level(m->config.log_level);
        return 0;
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

static void manager_freep(struct manager **m) {
        manager_free(*m);
}

static int run(int argc, char *argv[]) {
        _cleanup_(manager_freep) struct manager *m = NULL;
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

        /* Before the monitor starts threads, so they inherit the mask and
         * only the event loop's signalfd sees these.  SIGUSR1 is the core's. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0)
                return log_error_errno(errno, "Cannot block signals: %m");

        r = sd_event_default(&m->event);
        if (r < 0)
                return log_error_errno(r, "Cannot create the event loop: %m");
        r = sd_event_add_signal(m->event, NULL, SIGTERM, on_signal, m);
        if (r >= 0)
                r = sd_event_add_signal(m->event, NULL, SIGINT, on_signal, m);
        if (r < 0)
                return log_error_errno(r, "Cannot watch signals: %m");
        r = sd_event_set_watchdog(m->event, true);
        if (r < 0)
                log_warning_errno(r, "Cannot enable the watchdog: %m");

        r = connect_bus(&m->bus);
        if (r < 0)
                return r;
        r = sd_bus_attach_event(m->bus, m->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return log_error_errno(r, "Cannot attach the bus to the event loop: %m");

        r = manager_startup(m);
        if (r < 0)
                return r;

        r = sd_bus_request_name(m->bus, VMQ_BUS_NAME, 0);
        if (r < 0)
                return log_error_errno(r, "Cannot own the name '%s': %m", VMQ_BUS_NAME);

        log_info("Ready on bus '%s': %zu machines, %zu channels", arg_bus, m->n_machines,
                 m->n_channels);
        if (m->corrupt_state_file[0])
                (void)sd_notifyf(false,
                                 "READY=1\nSTATUS=%zu machines, %zu channels; corrupt state "
                                 "file moved to '%s'",
                                 m->n_machines, m->n_channels, m->corrupt_state_file);
        else
                (void)sd_notifyf(false, "READY=1\nSTATUS=%zu machines, %zu channels", m->n_machines,
                                 m->n_channels);

        r = sd_event_loop(m->event);
        if (r < 0)
                return log_error_errno(r, "Event loop failed: %m");

        r = manager_save_state(m);
        (void)sd_notify(false, "STATUS=Stopped");
        log_info("Stopped");
        return r;
}

int main(int argc, char *argv[]) {
        int r = run(argc, argv);
        return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
