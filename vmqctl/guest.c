/* SPDX-License-Identifier: MIT */
/*
 * vmqctl --guest: vmqctl inside a Linux guest whose VMM is not vmq (QEMU
 * under libvirt), on the guest's own channels, over its ivshmem device
 * (libvmq-client/vmq-guest-ivshmem.h).  No D-Bus: built with
 * -DVMQCTL_GUEST_ONLY this file, with common.c (what it shares with the
 * host mode) and the transport, is the static vmqctl-static for a minimal
 * initramfs, which takes the guest commands with or without --guest.
 *
 * The guest has one queue for all its channels, and a HELLO is consumed
 * once.  So that `channels` knows channels whose HELLO an earlier run
 * consumed, every run records the HELLOs and CLOSEs it takes in a small
 * state file ($VMQ_GUEST_STATE_DIR, default /run/vmq-guest, one file per
 * device), written atomically; without a writable directory it is skipped.
 * A data message for another channel that recv or wait-hello has to take
 * off the queue is reported on stderr and lost.
 *
 * Exit codes are vmqctl(1)'s; 3 also means "no ivshmem device" and 6 "the
 * monitor has not initialised the region".
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "libvmq-client/vmq-guest-ivshmem.h"
#include "vmqctl/common.h"

/* Called by vmqctl.c's main() for `vmqctl --guest ...`. */
int ctl_guest_main(int argc, char **argv);

struct gctl {
        const char *device; /* PCI address, or NULL: the first one */
        unsigned flags;     /* VMQ_IVSHMEM_OPEN_* */
        bool quiet;
        struct vmq_ivshmem *ivs;
        char state_path[256]; /* "" when not kept */
};

struct gcommand {
        const char *name;
        int (*run)(struct gctl *g, int argc, char **argv);
        const char *usage;
        const char *help;
};

static int g_send(struct gctl *g, int argc, char **argv);
static int g_recv(struct gctl *g, int argc, char **argv);
static int g_channels(struct gctl *g, int argc, char **argv);
static int g_wait_hello(struct gctl *g, int argc, char **argv);
static int g_identity(struct gctl *g, int argc, char **argv);
static int g_help(struct gctl *g, int argc, char **argv);

static const struct gcommand gcommands[] = {
        {"send", g_send, "send CHANNEL [DATA | --file PATH] [--tag N] [--post]",
         "Send one message from this guest on a channel.  The payload is DATA, or\n"
         "the content of PATH, or standard input when neither is given; any bytes.\n"
         "Up to 96 bytes travel inline, more as pages of the send area.\n"
         "\n"
         "      --file PATH     read the payload from PATH ('-': standard input)\n"
         "      --tag N         a number the receiver sees with the message\n"
         "      --post          deferred: post it and ring, without waiting for\n"
         "                      the answer (failures come back as error messages)\n"},
        {"recv", g_recv, "recv CHANNEL [--timeout SECONDS] [--count N] [--output PATH]",
         "Receive messages on a channel and write their payloads, byte for byte,\n"
         "to standard output or PATH.  Hello, close and error messages print a\n"
         "line on stderr (unless --quiet) and do not count; so do messages for\n"
         "other channels, which are lost.\n"
         "\n"
         "      --timeout SECONDS   wait at most this long for each message (0: only\n"
         "                          look; default: no limit)\n"
         "      --count N           receive N data messages (default 1)\n"
         "      --output PATH       write the payloads to PATH instead\n"},
        {"channels", g_channels, "channels",
         "List the channels this guest learnt from hellos, one a line:\n"
         "channel=ID peer=VMID name=NAME uuid=UUID.  Hellos and closes waiting at\n"
         "the head of the queue are taken first; earlier runs' are remembered in\n"
         "$VMQ_GUEST_STATE_DIR (default /run/vmq-guest).\n"},
        {"wait-hello", g_wait_hello, "wait-hello [--count N] [--timeout SECONDS]",
         "Wait for N hellos (default 1) and print one line for each:\n"
         "channel=ID peer=VMID name=NAME uuid=UUID.  Data messages taken meanwhile\n"
         "are reported on stderr and lost.\n"
         "\n"
         "      --timeout SECONDS   wait at most this long in all (default: no limit)\n"
         "      --count N           the number of hellos\n"},
        {"identity", g_identity, "identity",
         "Print this guest's identity as the monitor stamped it:\n"
         "id=VMID name=NAME uuid=UUID, and the device's ivshmem peer id.\n"},
        {"help", g_help, "help [COMMAND]", "Show the help, or a command's help.\n"},
        {0},
};

static const struct option global_options[] = {
        {"guest", no_argument, NULL, OPT_GUEST},
        {"device", required_argument, NULL, OPT_DEVICE},
        {"bind-uio", no_argument, NULL, OPT_BIND_UIO},
        {"poll", no_argument, NULL, OPT_POLL},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {0},
};

/* ------------------------------------------------------------------------
 * Messages and exit codes.
 */

static int exit_code_of(int r) {
        switch (-r) {
        case ENODEV:
        case ENOENT:
        case ENXIO:
                return EXIT_NOT_FOUND;
        case EACCES:
        case EPERM:
                return EXIT_ACCESS;
        case ETIMEDOUT:
                return EXIT_TIMEOUT;
        case EINVAL:
                return EXIT_USAGE;
        case EAGAIN:
        case EBUSY:
        case EPIPE:
        case EMSGSIZE:
                return EXIT_BUSY;
        default:
                return EXIT_FAIL;
        }
}

static const char *reason_of(int r) {
        switch (-r) {
        case ENXIO:
                return "no such channel, or this guest is not an end of it";
        case EAGAIN:
                return "the receiver's queue is full";
        case EPIPE:
                return "channel is closed";
        case EMSGSIZE:
                return "message too large";
        case ETIMEDOUT:
                return "the monitor did not answer in time";
        case EPROTO:
                return "the shared region is corrupt";
        case EPROTONOSUPPORT:
                return "the monitor speaks another vmq ABI";
        default:
                return strerror(-r);
        }
}

static int gfail(int r, const char *what) {
        fprintf(stderr, "vmqctl: %s: %s\n", what, reason_of(r));
        return exit_code_of(r);
}

/* Copies @s with anything unprintable (and spaces) replaced, for lines
 * other programs parse. */
static const char *printable(const char *s, char *buf, size_t size) {
        size_t i;

        for (i = 0; s[i] && i + 1 < size; i++)
                buf[i] = (s[i] > ' ' && s[i] < 0x7f) ? s[i] : '?';
        buf[i] = 0;
        return buf;
}

static void format_identity(char *buf, size_t size, uint32_t channel,
                            const struct vmq_ivshmem_identity *id) {
        char uuid[37], name[sizeof(id->name)];

        snprintf(buf, size, "channel=%" PRIu32 " peer=%" PRIu32 " name=%s uuid=%s", channel,
                 id->vm_id, printable(id->name, name, sizeof(name)),
                 vmq_ivshmem_uuid_to_string(id->uuid, uuid));
}

static const struct gcommand *gcommand_find(const char *name) {
        for (const struct gcommand *c = gcommands; c->name; c++)
                if (strcmp(c->name, name) == 0)
                        return c;
        return NULL;
}

static void command_help(const struct gcommand *cmd) {
        printf("Usage: vmqctl --guest [--device PCIADDR] %s\n\n%s", cmd->usage, cmd->help);
}

/*
 * Parses a command's options: its own (@own, may be NULL) and the global
 * ones, which may come after the command too.  Returns the option, -1 at
 * the end, or -2 with *ret_code set (usage error, --help).
 */
static int ggetopt(struct gctl *g, const struct gcommand *cmd, const struct option *own, int argc,
                   char **argv, int *ret_code) {
        struct option all[16];
        size_t n = 0;
        int o;

        if (own)
                for (const struct option *p = own; p->name; p++)
                        all[n++] = *p;
        for (const struct option *p = global_options; p->name; p++)
                all[n++] = *p;
        memset(&all[n], 0, sizeof(all[n]));

        for (;;) {
                opterr = 0;
                o = getopt_long(argc, argv, ":hq", all, NULL);
                switch (o) {
                case OPT_GUEST:
                        continue;
                case OPT_DEVICE:
                        g->device = optarg;
                        continue;
                case OPT_BIND_UIO:
                        g->flags |= VMQ_IVSHMEM_OPEN_BIND_UIO;
                        continue;
                case OPT_POLL:
                        g->flags |= VMQ_IVSHMEM_OPEN_POLL;
                        continue;
                case 'q':
                        g->quiet = true;
                        continue;
                case 'h':
                        command_help(cmd);
                        *ret_code = EXIT_OK;
                        return -2;
                case OPT_VERSION:
                        printf("vmqctl %s (guest)\n", PACKAGE_VERSION);
                        *ret_code = EXIT_OK;
                        return -2;
                case ':':
                case '?':
                        *ret_code = ctl_option_error(CTL_MODE_GUEST, cmd->name, o, argv, all);
                        return -2;
                default:
                        return o;
                }
        }
}

static int check_args(const struct gcommand *cmd, int argc, int min, int max, char **argv) {
        return ctl_check_args_in(CTL_MODE_GUEST, cmd->name, argc, argv, min, max);
}

/* VMQ_IVSHMEM_ANY_CHANNEL is no channel id. */
static int parse_channel(const struct gcommand *cmd, const char *s, uint32_t *ret) {
        return ctl_parse_channel_in(CTL_MODE_GUEST, cmd->name, s, VMQ_IVSHMEM_ANY_CHANNEL - 1, ret);
}

/* ------------------------------------------------------------------------
 * The device and the state file.
 */

static int gopen(struct gctl *g) {
        const char *dir = getenv("VMQ_GUEST_STATE_DIR");
        int r;

        r = vmq_ivshmem_open(g->device, g->flags, &g->ivs);
        if (r == -ENODEV)
                return g->device ? ctl_error(EXIT_NOT_FOUND, "'%s' is not an ivshmem device",
                                             g->device)
                                 : ctl_error(EXIT_NOT_FOUND, "no ivshmem device found");
        if (r == -ETIMEDOUT)
                return ctl_error(EXIT_NO_MONITOR,
                                 "the monitor has not initialised the ivshmem region");
        if (r < 0)
                return gfail(r, "cannot open the ivshmem device");

        if (!dir || !*dir)
                dir = "/run/vmq-guest";
        if (mkdir(dir, 0755) == 0 || errno == EEXIST)
                snprintf(g->state_path, sizeof(g->state_path), "%s/%s.channels", dir,
                         g->device ? g->device : "default");
        return EXIT_OK;
}

/* Records a HELLO (line != NULL) or CLOSE of @channel in the state file. */
static void state_note(struct gctl *g, uint32_t channel, const char *line) {
        char tmp[300], buf[512], key[32];
        FILE *in, *out;
        int fd;

        if (!g->state_path[0])
                return;
        snprintf(tmp, sizeof(tmp), "%s.XXXXXX", g->state_path);
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return;
        out = fdopen(fd, "w");
        if (!out) {
                close(fd);
                unlink(tmp);
                return;
        }
        snprintf(key, sizeof(key), "channel=%" PRIu32 " ", channel);
        in = fopen(g->state_path, "re");
        if (in) {
                while (fgets(buf, sizeof(buf), in))
                        if (strncmp(buf, key, strlen(key)) != 0)
                                fputs(buf, out);
                fclose(in);
        }
        if (line)
                fprintf(out, "%s\n", line);
        if (fflush(out) != 0 || fsync(fileno(out)) != 0 || fclose(out) != 0 ||
            rename(tmp, g->state_path) != 0)
                unlink(tmp);
}

/* The common handling of a HELLO or CLOSE: state file, and a note on
 * stderr unless quiet or @silent. */
static void note_control(struct gctl *g, const struct vmq_ivshmem_msg *m, bool silent) {
        char line[256], name[64];

        if (m->kind == VMQ_IVSHMEM_HELLO) {
                format_identity(line, sizeof(line), m->channel, &m->peer);
                state_note(g, m->channel, line);
                if (!g->quiet && !silent)
                        fprintf(stderr,
                                "vmqctl: channel %" PRIu32 ": hello from '%s' (VM id %" PRIu32
                                ", UUID %s)\n",
                                m->channel, printable(m->peer.name, name, sizeof(name)),
                                m->peer.vm_id, vmq_ivshmem_uuid_to_string(m->peer.uuid, line));
        } else if (m->kind == VMQ_IVSHMEM_CLOSE) {
                state_note(g, m->channel, NULL);
                if (!g->quiet && !silent)
                        fprintf(stderr, "vmqctl: channel %" PRIu32 ": closed by the peer\n",
                                m->channel);
        }
}

/* Notes a message nobody asked for on stderr. */
static void note_other(struct gctl *g, const struct vmq_ivshmem_msg *m) {
        if (g->quiet)
                return;
        switch (m->kind) {
        case VMQ_IVSHMEM_DATA:
        case VMQ_IVSHMEM_PAGE:
                fprintf(stderr,
                        "vmqctl: channel %" PRIu32 ": message (tag %" PRIu64
                        ", %zu bytes) dropped: not the channel asked for\n",
                        m->channel, m->tag, m->len);
                break;
        case VMQ_IVSHMEM_ERROR:
                fprintf(stderr,
                        "vmqctl: channel %" PRIu32 ": a posted message (tag %" PRIu64
                        ") failed: %s\n",
                        m->channel, m->tag, reason_of(m->error));
                break;
        case VMQ_IVSHMEM_SHUTDOWN:
                fprintf(stderr, "vmqctl: the host asks this guest to shut down\n");
                break;
        default:
                break;
        }
}

/* ------------------------------------------------------------------------
 * Commands.
 */

static int g_send(struct gctl *g, int argc, char **argv) {
        static const struct option opts[] = {
                CTL_OPTION_FILE,
                CTL_OPTION_TAG,
                {"post", no_argument, NULL, OPT_POST},
                {0},
        };
        const struct gcommand *cmd = gcommand_find("send");
        const char *file = NULL, *data_arg = NULL;
        char *buf = NULL, what[64];
        const void *data;
        bool post = false;
        uint64_t tag = 0;
        size_t size = 0;
        uint32_t id;
        int code, o, r;

        while ((o = ggetopt(g, cmd, opts, argc, argv, &code)) != -1) {
                switch (o) {
                case -2:
                        return code;
                case OPT_FILE:
                        file = optarg;
                        break;
                case OPT_TAG:
                        if (parse_u64(optarg, &tag) < 0)
                                return ctl_usage_in(CTL_MODE_GUEST, cmd->name,
                                                    "send: invalid tag '%s'", optarg);
                        break;
                case OPT_POST:
                        post = true;
                        break;
                }
        }
        code = check_args(cmd, argc, 1, 2, argv);
        if (code >= 0)
                return code;
        code = parse_channel(cmd, argv[optind], &id);
        if (code >= 0)
                return code;
        if (optind + 1 < argc)
                data_arg = argv[optind + 1];
        if (data_arg && file)
                return ctl_usage_in(CTL_MODE_GUEST, cmd->name,
                                    "send: give DATA or --file, not both");

        code = ctl_read_payload(data_arg, file, &data, &buf, &size);
        if (code != EXIT_OK)
                return code;

        code = gopen(g);
        if (code == EXIT_OK) {
                r = post ? vmq_ivshmem_post(g->ivs, id, data, size, tag)
                         : vmq_ivshmem_send(g->ivs, id, data, size, tag);
                snprintf(what, sizeof(what), "channel %" PRIu32, id);
                if (r < 0)
                        code = gfail(r, what);
        }
        free(buf);
        return code;
}

static int g_recv(struct gctl *g, int argc, char **argv) {
        static const struct option opts[] = {
                CTL_OPTION_TIMEOUT,
                CTL_OPTION_COUNT,
                CTL_OPTION_OUTPUT,
                {0},
        };
        const struct gcommand *cmd = gcommand_find("recv");
        uint64_t timeout = UINT64_MAX;
        const char *output = NULL;
        uint32_t id, count = 1, got = 0;
        FILE *out = stdout;
        char what[64];
        int code, o, r;

        while ((o = ggetopt(g, cmd, opts, argc, argv, &code)) != -1) {
                switch (o) {
                case -2:
                        return code;
                case OPT_TIMEOUT:
                        if (parse_seconds(optarg, &timeout) < 0)
                                return ctl_usage_in(CTL_MODE_GUEST, cmd->name,
                                                    "recv: invalid timeout '%s' (seconds)", optarg);
                        break;
                case OPT_COUNT:
                        if (parse_u32(optarg, &count) < 0 || count == 0)
                                return ctl_usage_in(CTL_MODE_GUEST, cmd->name,
                                                    "recv: invalid count '%s'", optarg);
                        break;
                case 'o':
                        output = optarg;
                        break;
                }
        }
        code = check_args(cmd, argc, 1, 1, argv);
        if (code >= 0)
                return code;
        code = parse_channel(cmd, argv[optind], &id);
        if (code >= 0)
                return code;
        code = gopen(g);
        if (code != EXIT_OK)
                return code;
        code = ctl_open_output(output, &out, &output);
        if (code != EXIT_OK)
                return code;

        snprintf(what, sizeof(what), "channel %" PRIu32, id);
        while (got < count) {
                struct vmq_ivshmem_msg *m = NULL;

                /* Every channel: a message for another one is reported,
                 * not kept by a process that is about to exit. */
                r = vmq_ivshmem_recv(g->ivs, VMQ_IVSHMEM_ANY_CHANNEL, timeout, &m);
                if (r < 0) {
                        code = r == -ETIMEDOUT ? ctl_error(EXIT_TIMEOUT, "%s: timed out", what)
                                               : gfail(r, what);
                        break;
                }
                note_control(g, m, false);
                if (m->channel == id &&
                    (m->kind == VMQ_IVSHMEM_DATA || m->kind == VMQ_IVSHMEM_PAGE)) {
                        code = ctl_write_payload(out, output, m->data, m->len);
                        if (code != EXIT_OK) {
                                free(m);
                                break;
                        }
                        got++;
                } else if (m->channel == id && m->kind == VMQ_IVSHMEM_CLOSE) {
                        free(m);
                        code = gfail(-EPIPE, what);
                        break;
                } else if (m->kind != VMQ_IVSHMEM_HELLO && m->kind != VMQ_IVSHMEM_CLOSE)
                        note_other(g, m);
                free(m);
        }
        return ctl_close_output(out, output, code);
}

static int g_wait_hello(struct gctl *g, int argc, char **argv) {
        static const struct option opts[] = {
                CTL_OPTION_TIMEOUT,
                CTL_OPTION_COUNT,
                {0},
        };
        const struct gcommand *cmd = gcommand_find("wait-hello");
        uint64_t timeout = UINT64_MAX, start = 0;
        uint32_t count = 1, got = 0;
        struct timespec ts;
        char line[256];
        int code, o, r;

        while ((o = ggetopt(g, cmd, opts, argc, argv, &code)) != -1) {
                switch (o) {
                case -2:
                        return code;
                case OPT_TIMEOUT:
                        if (parse_seconds(optarg, &timeout) < 0)
                                return ctl_usage_in(CTL_MODE_GUEST, cmd->name,
                                                    "wait-hello: invalid timeout '%s' (seconds)",
                                                    optarg);
                        break;
                case OPT_COUNT:
                        if (parse_u32(optarg, &count) < 0 || count == 0)
                                return ctl_usage_in(CTL_MODE_GUEST, cmd->name,
                                                    "wait-hello: invalid count '%s'", optarg);
                        break;
                }
        }
        code = check_args(cmd, argc, 0, 0, argv);
        if (code >= 0)
                return code;
        code = gopen(g);
        if (code != EXIT_OK)
                return code;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        start = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        while (got < count) {
                struct vmq_ivshmem_msg *m = NULL;
                uint64_t left = timeout, now;

                if (timeout != UINT64_MAX) {
                        clock_gettime(CLOCK_MONOTONIC, &ts);
                        now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
                        left = now - start >= timeout ? 0 : timeout - (now - start);
                }
                r = vmq_ivshmem_recv(g->ivs, VMQ_IVSHMEM_ANY_CHANNEL, left, &m);
                if (r == -ETIMEDOUT)
                        return ctl_error(EXIT_TIMEOUT,
                                         "wait-hello: timed out after %" PRIu32 " of %" PRIu32
                                         " hellos",
                                         got, count);
                if (r < 0)
                        return gfail(r, "wait-hello");
                note_control(g, m, true);
                if (m->kind == VMQ_IVSHMEM_HELLO) {
                        format_identity(line, sizeof(line), m->channel, &m->peer);
                        printf("%s\n", line);
                        fflush(stdout);
                        got++;
                } else if (m->kind != VMQ_IVSHMEM_CLOSE)
                        note_other(g, m);
                free(m);
        }
        return EXIT_OK;
}

static int g_channels(struct gctl *g, int argc, char **argv) {
        const struct gcommand *cmd = gcommand_find("channels");
        enum vmq_ivshmem_kind kind;
        char buf[512];
        FILE *in;
        int code, o;

        while ((o = ggetopt(g, cmd, NULL, argc, argv, &code)) != -1)
                if (o == -2)
                        return code;
        code = check_args(cmd, argc, 0, 0, argv);
        if (code >= 0)
                return code;
        code = gopen(g);
        if (code != EXIT_OK)
                return code;

        /* Take the hellos and closes at the head of the queue, and nothing
         * else: data behind them stays for recv. */
        while (vmq_ivshmem_peek(g->ivs, &kind, NULL) > 0 &&
               (kind == VMQ_IVSHMEM_HELLO || kind == VMQ_IVSHMEM_CLOSE)) {
                struct vmq_ivshmem_msg *m = NULL;

                if (vmq_ivshmem_recv(g->ivs, VMQ_IVSHMEM_ANY_CHANNEL, 0, &m) < 0)
                        break;
                note_control(g, m, true);
                free(m);
        }
        if (!g->state_path[0])
                return ctl_error(EXIT_FAIL,
                                 "cannot keep the channel list: no writable state directory");
        in = fopen(g->state_path, "re");
        if (!in)
                return EXIT_OK; /* no channel yet */
        while (fgets(buf, sizeof(buf), in))
                fputs(buf, stdout);
        fclose(in);
        return EXIT_OK;
}

static int g_identity(struct gctl *g, int argc, char **argv) {
        const struct gcommand *cmd = gcommand_find("identity");
        struct vmq_ivshmem_identity id;
        char uuid[37], name[64];
        int code, o;

        while ((o = ggetopt(g, cmd, NULL, argc, argv, &code)) != -1)
                if (o == -2)
                        return code;
        code = check_args(cmd, argc, 0, 0, argv);
        if (code >= 0)
                return code;
        code = gopen(g);
        if (code != EXIT_OK)
                return code;
        vmq_ivshmem_self(g->ivs, &id);
        printf("id=%" PRIu32 " name=%s uuid=%s ivposition=%d interrupts=%s\n", id.vm_id,
               printable(id.name, name, sizeof(name)), vmq_ivshmem_uuid_to_string(id.uuid, uuid),
               vmq_ivshmem_position(g->ivs), vmq_ivshmem_uses_interrupts(g->ivs) ? "uio" : "poll");
        return EXIT_OK;
}

static void main_help(void) {
        printf("vmqctl --guest — vmq inside a guest, over its ivshmem device\n"
               "\n"
               "Usage: vmqctl --guest [--device PCIADDR] [--bind-uio|--poll] [--quiet] "
               "COMMAND [ARGS]\n"
               "\n"
               "Commands:\n");
        for (const struct gcommand *c = gcommands; c->name; c++)
                printf("  %s\n", c->usage);
        printf("\n"
               "Options (also after COMMAND):\n"
               "      --device PCIADDR  the ivshmem device (e.g. 0000:00:05.0); default:\n"
               "                        the first whose region holds a vmq VMCS\n"
               "      --bind-uio        bind the device to uio_pci_generic (if loaded and\n"
               "                        the device has no driver) to sleep on interrupts\n"
               "      --poll            never use UIO: poll with short sleeps\n"
               "  -q, --quiet           no notes on stderr; errors still print\n"
               "  -h, --help            this help; 'vmqctl --guest COMMAND --help'\n"
               "\n"
               "Exit codes: as vmqctl(1); 3: no ivshmem device, 6: the monitor has not\n"
               "initialised the region, 5: timed out.\n"
               "\n"
               "Example:\n"
               "  vmqctl --guest wait-hello && vmqctl --guest send 3 hello\n");
}

static int g_help(struct gctl *g, int argc, char **argv) {
        const struct gcommand *cmd = gcommand_find("help"), *c;
        int code, o;

        while ((o = ggetopt(g, cmd, NULL, argc, argv, &code)) != -1)
                if (o == -2)
                        return code;
        if (optind >= argc) {
                main_help();
                return EXIT_OK;
        }
        c = gcommand_find(argv[optind]);
        if (!c)
                return ctl_usage_in(CTL_MODE_GUEST, NULL, "unknown command '%s'", argv[optind]);
        command_help(c);
        return EXIT_OK;
}

int ctl_guest_main(int argc, char **argv) {
        struct gctl g = {0};
        const struct gcommand *cmd;
        int o, code;

        opterr = 0;
        optind = 1;
        while ((o = getopt_long(argc, argv, "+:hq", global_options, NULL)) != -1) {
                switch (o) {
                case OPT_GUEST:
                        break;
                case OPT_DEVICE:
                        g.device = optarg;
                        break;
                case OPT_BIND_UIO:
                        g.flags |= VMQ_IVSHMEM_OPEN_BIND_UIO;
                        break;
                case OPT_POLL:
                        g.flags |= VMQ_IVSHMEM_OPEN_POLL;
                        break;
                case 'q':
                        g.quiet = true;
                        break;
                case 'h':
                        main_help();
                        return ctl_finish_output(EXIT_OK);
                case OPT_VERSION:
                        printf("vmqctl %s (guest)\n", PACKAGE_VERSION);
                        return ctl_finish_output(EXIT_OK);
                default:
                        return ctl_option_error(CTL_MODE_GUEST, NULL, o, argv, global_options);
                }
        }
        if (optind >= argc)
                return ctl_usage_in(CTL_MODE_GUEST, NULL, "no command given");
        cmd = gcommand_find(argv[optind]);
        if (!cmd)
                return ctl_usage_in(CTL_MODE_GUEST, NULL, "unknown guest command '%s'",
                                    argv[optind]);

        argc -= optind;
        argv += optind;
        optind = 0; /* GNU getopt: start afresh on the command's arguments */
        code = cmd->run(&g, argc, argv);
        vmq_ivshmem_free(g.ivs);
        return ctl_finish_output(code);
}

#ifdef VMQCTL_GUEST_ONLY
int main(int argc, char **argv) {
        return ctl_guest_main(argc, argv);
}
#endif
