/* SPDX-License-Identifier: MIT */
/*
 * vmqctl: the machine commands — list, info, create, start, stop, destroy,
 * undefine, console.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "vmqctl/vmqctl.h"

#define NO_SUCH_MACHINE "no such machine"

const struct option list_options[] = {
        {"names", no_argument, NULL, OPT_NAMES},
        {0},
};

const struct option create_options[] = {
        {"image", required_argument, NULL, OPT_IMAGE},
        {"memory", required_argument, NULL, OPT_MEMORY},
        {"vcpus", required_argument, NULL, OPT_VCPUS},
        {"queue-depth", required_argument, NULL, OPT_QUEUE_DEPTH},
        {"huge-memory", required_argument, NULL, OPT_HUGE_MEMORY},
        {"args", required_argument, NULL, OPT_ARGS},
        {"uuid", required_argument, NULL, OPT_UUID},
        {"persistent", no_argument, NULL, OPT_PERSISTENT},
        {"autostart", no_argument, NULL, OPT_AUTOSTART},
        {"start", no_argument, NULL, OPT_START},
        {0},
};

const struct option adopt_options[] = {
        {"name", required_argument, NULL, OPT_NAME},
        {"persistent", no_argument, NULL, OPT_PERSISTENT},
        {"region-size", required_argument, NULL, OPT_REGION_SIZE},
        {"rx-size", required_argument, NULL, OPT_RX_SIZE},
        {"vsock", no_argument, NULL, OPT_VSOCK},
        {"vsock-cid", required_argument, NULL, OPT_VSOCK_CID},
        {0},
};

const struct option stop_options[] = {
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {0},
};

const struct option console_options[] = {
        {"follow", no_argument, NULL, 'f'},
        {0},
};

/* "64 MiB" when it divides, bytes otherwise. */
static void format_size(char *buf, size_t size, uint64_t bytes) {
        static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
        int u = -1;

        while (u < 3 && bytes >= 1024 && bytes % 1024 == 0) {
                bytes /= 1024;
                u++;
        }
        if (u < 0)
                snprintf(buf, size, "%" PRIu64 " B", bytes);
        else
                snprintf(buf, size, "%" PRIu64 " %s", bytes, units[u]);
}

/* "kvm" or "libvirt"; a list snapshot (the machine went away) says kvm. */
static const char *backend_of(const struct vmq_machine *m) {
        const char *b = vmq_machine_get_backend(m);
        return b ? b : "kvm";
}

/* "id": the VM id while the machine runs, null otherwise (0 is no id). */
static void json_machine_id(struct json *j, const struct vmq_machine *m) {
        uint32_t id = vmq_machine_get_id(m);

        if (id)
                json_u64(j, "id", id);
        else
                json_null(j, "id");
}

int cmd_list(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("list");
        struct vmq_machine **list = NULL;
        bool names = false;
        int w_name = 4, w_state = 5, w_id = 2, w_backend = 7;
        size_t n;
        int code, o, r;

        while ((o = ctl_getopt(ctl, cmd, argc, argv, &code)) != -1) {
                if (o == -2)
                        return code;
                if (o == OPT_NAMES)
                        names = true;
        }
        code = ctl_check_args(cmd, argc, argv, 0, 0);
        if (code >= 0)
                return code;
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;

        r = vmq_client_list_machines(ctl->client, &list, &n);
        if (r < 0)
                return ctl_fail(ctl, r, NULL, "cannot list machines");
        /* The list carries no backend: a full snapshot of each machine does
         * (a machine that went away meanwhile keeps its list entry). */
        if (!names)
                for (size_t i = 0; i < n; i++) {
                        struct vmq_machine *full = NULL;
                        if (vmq_client_get_machine(ctl->client, vmq_machine_get_name(list[i]),
                                                   &full) >= 0) {
                                vmq_machine_unref(list[i]);
                                list[i] = full;
                        }
                }

        if (names) {
                for (size_t i = 0; i < n; i++)
                        printf("%s\n", vmq_machine_get_name(list[i]));
        } else if (ctl->json) {
                struct json j;

                json_begin(&j, stdout);
                json_open_array(&j, NULL);
                for (size_t i = 0; i < n; i++) {
                        json_open_object(&j, NULL);
                        json_string(&j, "name", vmq_machine_get_name(list[i]));
                        json_string(&j, "state", vmq_machine_get_state_string(list[i]));
                        json_machine_id(&j, list[i]);
                        json_string(&j, "backend", backend_of(list[i]));
                        json_string(&j, "image", vmq_machine_get_image(list[i]));
                        if (strcmp(backend_of(list[i]), "libvirt") == 0)
                                json_string(&j, "domain", vmq_machine_get_domain(list[i]));
                        json_close_object(&j);
                }
                json_close_array(&j);
                json_end(&j);
        } else {
                for (size_t i = 0; i < n; i++) {
                        char id[16];
                        int l;

                        l = (int)strlen(vmq_machine_get_name(list[i]));
                        w_name = l > w_name ? l : w_name;
                        l = (int)strlen(vmq_machine_get_state_string(list[i]));
                        w_state = l > w_state ? l : w_state;
                        l = snprintf(id, sizeof(id), "%" PRIu32, vmq_machine_get_id(list[i]));
                        w_id = l > w_id ? l : w_id;
                        l = (int)strlen(backend_of(list[i]));
                        w_backend = l > w_backend ? l : w_backend;
                }
                if (!ctl->quiet && !ctl->no_legend)
                        printf("%-*s  %-*s  %*s  %-*s  %s\n", w_name, "NAME", w_state, "STATE",
                               w_id, "ID", w_backend, "BACKEND", "IMAGE");
                for (size_t i = 0; i < n; i++) {
                        uint32_t id = vmq_machine_get_id(list[i]);
                        const char *backend = backend_of(list[i]);
                        char idbuf[16] = "-";

                        if (id)
                                snprintf(idbuf, sizeof(idbuf), "%" PRIu32, id);
                        printf("%-*s  %-*s  %*s  %-*s  %s\n", w_name, vmq_machine_get_name(list[i]),
                               w_state, vmq_machine_get_state_string(list[i]), w_id, idbuf,
                               w_backend, backend,
                               strcmp(backend, "libvirt") == 0 ? vmq_machine_get_domain(list[i])
                                                               : vmq_machine_get_image(list[i]));
                }
        }
        vmq_machine_unref_list(list);
        return EXIT_OK;
}

static void print_stats_json(struct json *j, const char *key, const struct vmq_stats *s) {
        json_open_object(j, key);
        for (size_t i = 0; i < vmq_stats_get_count(s); i++)
                json_u64(j, vmq_stats_get_name(s, i), vmq_stats_get_value(s, i));
        json_close_object(j);
}

void print_machine_json(struct json *j, const struct vmq_machine *m) {
        enum vmq_machine_state state = vmq_machine_get_state(m);

        json_open_object(j, NULL);
        json_string(j, "name", vmq_machine_get_name(m));
        json_string(j, "uuid", vmq_machine_get_uuid(m));
        json_string(j, "state", vmq_machine_get_state_string(m));
        json_machine_id(j, m);
        json_string(j, "backend", backend_of(m));
        json_string(j, "image", vmq_machine_get_image(m));
        if (strcmp(backend_of(m), "libvirt") == 0) {
                json_string(j, "domain", vmq_machine_get_domain(m));
        }
        /* null: no CID (0 is none) */
        if (vmq_machine_get_vsock_cid(m))
                json_u64(j, "vsock_cid", vmq_machine_get_vsock_cid(m));
        else
                json_null(j, "vsock_cid");
        json_string(j, "vsock_state", vmq_machine_get_vsock_state(m));
        json_u64(j, "memory", vmq_machine_get_memory(m));
        json_u64(j, "vcpus", vmq_machine_get_vcpus(m));
        json_u64(j, "queue_depth", vmq_machine_get_queue_depth(m));
        json_bool(j, "persistent", vmq_machine_is_persistent(m));
        json_bool(j, "autostart", vmq_machine_is_autostart(m));
        if (state == VMQ_MACHINE_EXITED)
                json_i64(j, "exit_code", vmq_machine_get_exit_code(m));
        else
                json_null(j, "exit_code");
        json_string(j, "crash_reason", vmq_machine_get_crash_reason(m));
        print_stats_json(j, "statistics", vmq_machine_get_statistics(m));
        json_close_object(j);
}

int cmd_info(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("info");
        struct vmq_machine *m = NULL;
        enum vmq_machine_state state;
        const char *name;
        char mem[32];
        int code, r;

        code = ctl_parse_plain(ctl, cmd, argc, argv, 1, 1);
        if (code >= 0)
                return code;
        name = argv[optind];
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;
        r = vmq_client_get_machine(ctl->client, name, &m);
        if (r < 0)
                return ctl_fail(ctl, r, NO_SUCH_MACHINE, "machine '%s'", name);

        if (ctl->json) {
                struct json j;

                json_begin(&j, stdout);
                print_machine_json(&j, m);
                json_end(&j);
                vmq_machine_unref(m);
                return EXIT_OK;
        }
        state = vmq_machine_get_state(m);
        format_size(mem, sizeof(mem), vmq_machine_get_memory(m));
        printf("Name:         %s\n", vmq_machine_get_name(m));
        printf("UUID:         %s\n", vmq_machine_get_uuid(m));
        printf("State:        %s\n", vmq_machine_get_state_string(m));
        if (state == VMQ_MACHINE_EXITED)
                printf("Exit code:    %" PRId32 "\n", vmq_machine_get_exit_code(m));
        if (state == VMQ_MACHINE_CRASHED)
                printf("Crash reason: %s\n", vmq_machine_get_crash_reason(m));
        if (vmq_machine_get_id(m))
                printf("VM id:        %" PRIu32 "\n", vmq_machine_get_id(m));
        else
                printf("VM id:        -\n");
        printf("Backend:      %s\n", backend_of(m));
        if (strcmp(backend_of(m), "libvirt") == 0) {
                printf("Domain:       %s\n", vmq_machine_get_domain(m));
                printf("Region:       %s\n", mem);
        } else {
                printf("Image:        %s\n", vmq_machine_get_image(m));
                printf("Memory:       %s\n", mem);
        }
        if (vmq_machine_get_vsock_cid(m))
                printf("Vsock CID:    %" PRIu32 " (%s)\n", vmq_machine_get_vsock_cid(m),
                       vmq_machine_get_vsock_state(m));
        printf("vCPUs:        %" PRIu32 "\n", vmq_machine_get_vcpus(m));
        printf("Queue depth:  %" PRIu32 "\n", vmq_machine_get_queue_depth(m));
        printf("Persistent:   %s\n", vmq_machine_is_persistent(m) ? "yes" : "no");
        printf("Autostart:    %s\n", vmq_machine_is_autostart(m) ? "yes" : "no");
        vmq_machine_unref(m);
        return EXIT_OK;
}

/*
 * A size vmqd refused, in words: vmqd says "Invalid memory size 'BYTES'
 * (a multiple of 2 MiB, at most BYTES)"; the user typed "3G".  Returns an
 * exit code, or -1 when @detail is not about @what.
 */
static int size_refused(const char *name, const char *detail, const char *prefix,
                        const char *option, const char *arg, uint64_t value) {
        const char *most = strstr(detail, "at most ");
        unsigned long long max;
        char buf[32];

        if (!arg || strncmp(detail, prefix, strlen(prefix)) != 0)
                return -1;
        if (most && sscanf(most, "at most %llu", &max) == 1 && value > max) {
                format_size(buf, sizeof(buf), max);
                return ctl_error(EXIT_USAGE,
                                 "machine '%s': %s %s: more than the largest allowed, %s", name,
                                 option, arg, buf);
        }
        if (value % (2u << 20) != 0)
                return ctl_error(EXIT_USAGE, "machine '%s': %s %s: not a multiple of 2 MiB", name,
                                 option, arg);
        return -1;
}

/* create's EINVAL: the name and the sizes are the user's, so say what rule
 * each broke in the user's terms; anything else in vmqd's words. */
static int create_refused(struct ctl *ctl, const char *name, const struct vmq_machine_options *o,
                          const char *memory_arg, const char *huge_arg) {
        const char *detail = ctl_daemon_message(ctl);
        int code;

        if (detail && strncmp(detail, "Invalid machine name", 20) == 0)
                return ctl_error(EXIT_USAGE, "invalid machine name '%s': a name is %s", name,
                                 CTL_NAME_RULE);
        if (detail) {
                code = size_refused(name, detail, "Invalid memory size", "--memory", memory_arg,
                                    o->memory);
                if (code >= 0)
                        return code;
                code = size_refused(name, detail, "Invalid huge_memory", "--huge-memory", huge_arg,
                                    o->huge_memory);
                if (code >= 0)
                        return code;
        }
        return ctl_fail(ctl, -EINVAL, NULL, "machine '%s'", name);
}

/* create --json: the machine as vmqd now has it, as info --json prints it. */
static int print_new_machine_json(struct ctl *ctl, const char *name) {
        struct vmq_machine *m = NULL;
        struct json j;
        int r;

        r = vmq_client_get_machine(ctl->client, name, &m);
        if (r < 0)
                return ctl_fail(ctl, r, NO_SUCH_MACHINE, "machine '%s' (created)", name);
        json_begin(&j, stdout);
        print_machine_json(&j, m);
        json_end(&j);
        vmq_machine_unref(m);
        return EXIT_OK;
}

int cmd_create(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("create");
        struct vmq_machine_options opts = VMQ_MACHINE_OPTIONS_INIT;
        const char *image = NULL, *name, *memory_arg = NULL, *huge_arg = NULL;
        char *abs = NULL;
        int code, o, r;

        while ((o = ctl_getopt(ctl, cmd, argc, argv, &code)) != -1) {
                switch (o) {
                case -2:
                        return code;
                case OPT_IMAGE:
                        image = optarg;
                        break;
                case OPT_MEMORY:
                        if (parse_size(optarg, &opts.memory) < 0)
                                return ctl_usage(cmd, "create: invalid size '%s'", optarg);
                        /* Zero would mean "the default" on the bus: say so
                         * rather than quietly give the default. */
                        if (opts.memory == 0)
                                return ctl_usage(cmd,
                                                 "create: --memory %s: a machine needs memory; "
                                                 "leave --memory out for vmqd's default",
                                                 optarg);
                        memory_arg = optarg;
                        break;
                case OPT_HUGE_MEMORY:
                        if (parse_size(optarg, &opts.huge_memory) < 0)
                                return ctl_usage(cmd, "create: invalid size '%s'", optarg);
                        huge_arg = optarg;
                        break;
                case OPT_VCPUS:
                        if (parse_u32(optarg, &opts.vcpus) < 0 || opts.vcpus == 0)
                                return ctl_usage(cmd, "create: invalid number of vCPUs '%s'",
                                                 optarg);
                        break;
                case OPT_QUEUE_DEPTH:
                        if (parse_u32(optarg, &opts.queue_depth) < 0 || opts.queue_depth == 0)
                                return ctl_usage(cmd, "create: invalid queue depth '%s'", optarg);
                        break;
                case OPT_ARGS:
                        opts.args = optarg;
                        break;
                case OPT_UUID:
                        opts.uuid = optarg;
                        break;
                case OPT_PERSISTENT:
                        opts.persistent = true;
                        break;
                case OPT_AUTOSTART:
                        opts.autostart = true;
                        break;
                case OPT_START:
                        opts.start = true;
                        break;
                }
        }
        code = ctl_check_args(cmd, argc, argv, 1, 1);
        if (code >= 0)
                return code;
        name = argv[optind];
        if (!image)
                return ctl_usage(cmd, "create: --image is required");
        if (!*image)
                return ctl_usage(cmd, "create: --image needs a value");

        /* A path: vmqd wants it absolute, and we can say early when it is
         * missing.  A bare name is an installed image, vmqd's to find. */
        if (strchr(image, '/')) {
                abs = realpath(image, NULL);
                if (!abs)
                        return ctl_error(errno == ENOENT ? EXIT_NOT_FOUND : EXIT_FAIL,
                                         "image '%s': %s", image,
                                         errno == ENOENT ? "no such file" : strerror(errno));
                image = abs;
        }

        code = ctl_connect(ctl);
        if (code == EXIT_OK) {
                r = vmq_client_create_machine(ctl->client, name, image, &opts);
                if (r == -ENOENT)
                        code = ctl_fail(ctl, r, "no such image", "machine '%s': image '%s'", name,
                                        image);
                else if (r == -ENOEXEC)
                        code = ctl_fail(ctl, r, NULL, "machine '%s': image '%s'", name, image);
                else if (r == -EINVAL)
                        code = create_refused(ctl, name, &opts, memory_arg, huge_arg);
                else if (r < 0)
                        code = ctl_fail(ctl, r, NULL, "machine '%s'", name);
                else if (ctl->json)
                        code = print_new_machine_json(ctl, name);
        }
        free(abs);
        return code;
}

int cmd_adopt(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("adopt");
        struct vmq_adopt_options opts = VMQ_ADOPT_OPTIONS_INIT;
        const char *domain;
        char *name = NULL;
        int code, o, r;

        while ((o = ctl_getopt(ctl, cmd, argc, argv, &code)) != -1) {
                switch (o) {
                case -2:
                        return code;
                case OPT_NAME:
                        opts.name = optarg;
                        break;
                case OPT_PERSISTENT:
                        opts.persistent = true;
                        break;
                case OPT_REGION_SIZE:
                        if (parse_size(optarg, &opts.region_size) < 0 || opts.region_size == 0)
                                return ctl_usage(cmd, "adopt: invalid size '%s'", optarg);
                        break;
                case OPT_RX_SIZE:
                        if (parse_size(optarg, &opts.rx_size) < 0 || opts.rx_size == 0)
                                return ctl_usage(cmd, "adopt: invalid size '%s'", optarg);
                        break;
                case OPT_VSOCK:
                        opts.vsock = true;
                        break;
                case OPT_VSOCK_CID:
                        /* 0 would mean "the lowest free" on the bus: that
                         * is --vsock's, so a 0 here is a mistake.  The
                         * range is vmqd's to check. */
                        if (parse_u32(optarg, &opts.vsock_cid) < 0 || opts.vsock_cid == 0)
                                return ctl_usage(cmd,
                                                 "adopt: invalid CID '%s' (--vsock alone takes "
                                                 "the lowest free one)",
                                                 optarg);
                        opts.vsock = true;
                        break;
                }
        }
        code = ctl_check_args(cmd, argc, argv, 1, 1);
        if (code >= 0)
                return code;
        domain = argv[optind];
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;
        r = vmq_client_adopt_domain(ctl->client, domain, &opts, &name);
        if (r == -EINVAL && ctl_daemon_message(ctl) &&
            strncmp(ctl_daemon_message(ctl), "Invalid machine name", 20) == 0)
                return ctl_error(EXIT_USAGE,
                                 "domain '%s': invalid machine name '%s': a name is %s%s", domain,
                                 opts.name ? opts.name : domain, CTL_NAME_RULE,
                                 opts.name ? "" : " (give one with --name)");
        /* vmqd words the CID's range after the value it quotes; the user
         * typed --vsock-cid, not the bus's vsock_cid. */
        if (r == -EINVAL && ctl_daemon_message(ctl) &&
            strncmp(ctl_daemon_message(ctl), "Invalid vsock_cid", 17) == 0) {
                const char *range = strstr(ctl_daemon_message(ctl), "' (");
                return ctl_error(EXIT_USAGE, "domain '%s': --vsock-cid %" PRIu32 ": out of range%s",
                                 domain, opts.vsock_cid, range ? range + 1 : "");
        }
        if (r < 0)
                return ctl_fail(ctl, r, "no such domain", "domain '%s'", domain);
        if (!ctl->quiet)
                printf("%s\n", name);
        if (opts.vsock) {
                /* The device reaches a running domain at once only when its
                 * memory was shared already: say when it needs a restart. */
                struct vmq_machine *m = NULL;
                if (vmq_client_get_machine(ctl->client, name, &m) >= 0 &&
                    strcmp(vmq_machine_get_vsock_state(m), "restart-needed") == 0)
                        fprintf(stderr,
                                "vmqctl: domain '%s' runs without its vsock device (CID %" PRIu32
                                "): its memory was not shared; the device and shared memory "
                                "come with its next start (virsh shutdown %s; virsh start %s)\n",
                                domain, vmq_machine_get_vsock_cid(m), domain, domain);
                vmq_machine_unref(m);
        }
        free(name);
        return ctl_finish_output(EXIT_OK);
}

static int simple_machine_command(struct ctl *ctl, const char *cmdname, int argc, char **argv,
                                  int (*fn)(struct vmq_client *, const char *)) {
        const struct command *cmd = command_find(cmdname);
        const char *name;
        int code, r;

        code = ctl_parse_plain(ctl, cmd, argc, argv, 1, 1);
        if (code >= 0)
                return code;
        name = argv[optind];
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;
        r = fn(ctl->client, name);
        if (r < 0)
                return ctl_fail(ctl, r, NO_SUCH_MACHINE, "machine '%s'", name);
        return EXIT_OK;
}

int cmd_start(struct ctl *ctl, int argc, char **argv) {
        return simple_machine_command(ctl, "start", argc, argv, vmq_client_start_machine);
}

int cmd_destroy(struct ctl *ctl, int argc, char **argv) {
        return simple_machine_command(ctl, "destroy", argc, argv, vmq_client_destroy_machine);
}

int cmd_undefine(struct ctl *ctl, int argc, char **argv) {
        return simple_machine_command(ctl, "undefine", argc, argv, vmq_client_undefine_machine);
}

int cmd_stop(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("stop");
        uint32_t timeout = 0;
        const char *name;
        int code, o, r;

        while ((o = ctl_getopt(ctl, cmd, argc, argv, &code)) != -1) {
                if (o == -2)
                        return code;
                if (o == OPT_TIMEOUT && (parse_u32(optarg, &timeout) < 0 || timeout == 0))
                        return ctl_usage(cmd,
                                         "stop: invalid timeout '%s' (whole seconds, 1 or more)",
                                         optarg);
        }
        code = ctl_check_args(cmd, argc, argv, 1, 1);
        if (code >= 0)
                return code;
        name = argv[optind];
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;
        r = vmq_client_stop_machine(ctl->client, name, timeout);
        if (r < 0)
                return ctl_fail(ctl, r, NO_SUCH_MACHINE, "machine '%s'", name);
        return EXIT_OK;
}

/* ------------------------------------------------------------------------
 * console
 */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
        (void)sig;
        interrupted = 1;
}

/* SIGINT and SIGTERM end a loop cleanly; no SA_RESTART, so that poll()
 * returns at once. */
void install_interrupt_handlers(void) {
        struct sigaction sa = {.sa_handler = on_signal};

        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
}

bool was_interrupted(void) {
        return interrupted != 0;
}

#define CONSOLE_POLL_MS 200

/* Whether @name still runs; with *ret_state set when it does not.  A
 * machine that is gone counts as not running (state "removed"). */
static bool console_machine_runs(struct ctl *ctl, const char *name, char *ret_state, size_t size) {
        struct vmq_machine *m = NULL;
        bool runs;

        if (vmq_client_get_machine(ctl->client, name, &m) < 0) {
                snprintf(ret_state, size, "was removed");
                return false;
        }
        runs = vmq_machine_get_state(m) == VMQ_MACHINE_RUNNING;
        if (!runs && vmq_machine_get_state(m) == VMQ_MACHINE_EXITED)
                snprintf(ret_state, size, "exited with code %" PRId32,
                         vmq_machine_get_exit_code(m));
        else if (!runs && vmq_machine_get_state(m) == VMQ_MACHINE_CRASHED)
                snprintf(ret_state, size, "crashed: %s", vmq_machine_get_crash_reason(m));
        else if (!runs && vmq_machine_get_state(m) == VMQ_MACHINE_STOPPED)
                snprintf(ret_state, size, "stopped");
        else if (!runs)
                snprintf(ret_state, size, "is not running (%s)", vmq_machine_get_state_string(m));
        vmq_machine_unref(m);
        return runs;
}

static void console_json(const char *name, uint64_t offset, uint64_t next, const void *data,
                         size_t size) {
        struct json j;

        json_begin(&j, stdout);
        json_open_object(&j, NULL);
        json_string(&j, "name", name);
        json_u64(&j, "offset", offset);
        json_u64(&j, "next_offset", next);
        json_bytes_base64(&j, "data", data, size);
        json_close_object(&j);
        json_end(&j);
}

int cmd_console(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("console");
        uint64_t offset = 0;
        bool follow = false, first = true, last = false;
        char state[256];
        const char *name;
        int code, o, r;

        while ((o = ctl_getopt(ctl, cmd, argc, argv, &code)) != -1) {
                if (o == -2)
                        return code;
                if (o == 'f')
                        follow = true;
        }
        code = ctl_check_args(cmd, argc, argv, 1, 1);
        if (code >= 0)
                return code;
        name = argv[optind];
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;
        if (follow)
                install_interrupt_handlers();

        for (;;) {
                void *data = NULL;
                size_t size = 0;
                uint64_t next;

                /* Following, look at the state before reading: what a
                 * machine printed before it stopped is then read once
                 * more, after it stopped, and nothing is lost. */
                if (follow && !first && !console_machine_runs(ctl, name, state, sizeof(state)))
                        last = true;
                r = vmq_client_read_console(ctl->client, name, offset, &data, &size, &next);
                if (r < 0) {
                        if (was_interrupted())
                                return EXIT_OK;
                        if (r == -ENOENT && !first) {
                                /* Undefined while we followed it: the end. */
                                if (!ctl->quiet)
                                        ctl_error(0, "machine '%s' was removed", name);
                                return EXIT_OK;
                        }
                        return ctl_fail(ctl, r, NO_SUCH_MACHINE, "machine '%s'", name);
                }
                if (ctl->json && (size > 0 || !follow))
                        console_json(name, offset, next, data, size);
                else if (size > 0) {
                        fwrite(data, 1, size, stdout);
                        fflush(stdout);
                }
                free(data);
                offset = next;
                if (ferror(stdout))
                        return EXIT_FAIL;
                if (!follow || was_interrupted())
                        return EXIT_OK;
                /* A machine that did not run when we began has nothing
                 * more to print either. */
                if (first && !console_machine_runs(ctl, name, state, sizeof(state)))
                        last = true;
                first = false;
                if (last) {
                        if (!ctl->quiet)
                                ctl_error(0, "machine '%s' %s", name, state);
                        return EXIT_OK;
                }
                (void)poll(NULL, 0, CONSOLE_POLL_MS);
                if (was_interrupted())
                        return EXIT_OK;
        }
}
