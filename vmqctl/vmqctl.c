/* SPDX-License-Identifier: MIT */
/*
 * vmqctl: control vmqd — machines, channels, messages — from a shell.
 *
 * This file holds main(), the command table and its help texts, option
 * parsing and error reporting (one line on stderr, and an exit code from
 * the table in common.h); what it shares with the guest mode is in
 * common.c.  The commands live in machine.c, channel.c, message.c and
 * monitor.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "vmqctl/vmqctl.h"

static int cmd_help(struct ctl *ctl, int argc, char **argv);
/* guest.c: `vmqctl --guest ...`, inside a guest over its ivshmem device. */
int ctl_guest_main(int argc, char **argv);

const struct command commands[] = {
        {"list", cmd_list, list_options, "list [--names] [--no-legend]",
         "List the machines vmqd knows, with their state, VM id, backend (kvm\n"
         "for vmqd's micro-VMs, libvirt for adopted domains) and image (the\n"
         "domain, for libvirt).\n"
         "\n"
         "      --names       print only the names, one a line\n"
         "      --no-legend   leave out the header line\n"
         "      --json        print a JSON array of objects (\"id\" is null for a\n"
         "                    machine that does not run)\n"
         "\n"
         "Example:\n"
         "  vmqctl list\n"},
        {"info", cmd_info, NULL, "info NAME",
         "Show everything about one machine: UUID, state, VM id, image, memory,\n"
         "vCPUs, queue depth, persistence, exit code or crash reason.\n"
         "\n"
         "      --json      print a JSON object (with the machine's counters)\n"
         "\n"
         "Example:\n"
         "  vmqctl info web\n"},
        {"channels", cmd_channels, channels_options, "channels [--ids] [--no-legend]",
         "List the channels: id, both ends, and whether each is open.\n"
         "\n"
         "      --ids         print only the channel ids, one a line\n"
         "      --no-legend   leave out the header line\n"
         "      --json        print a JSON array of objects\n"
         "\n"
         "Example:\n"
         "  vmqctl channels\n"},
        {"channel", cmd_channel, NULL, "channel CHANNEL",
         "Show everything about one channel: ends and their identities, mode,\n"
         "transfer, depth, persistence, and the messages and bytes delivered.\n"
         "\n"
         "      --json      print a JSON object\n"
         "\n"
         "Example:\n"
         "  vmqctl channel 3\n"},
        {"stats", cmd_stats, NULL, "stats [NAME|CHANNEL]",
         "Show counters: vmqd's own without an argument, a machine's with its\n"
         "name, or a channel's with its id (a machine of that name wins).\n"
         "\n"
         "      --json      print a JSON object\n"
         "\n"
         "Examples:\n"
         "  vmqctl stats\n"
         "  vmqctl stats web\n"},
        {"monitor", cmd_monitor, NULL, "monitor",
         "Print vmqd's events as they happen, one a line, until interrupted:\n"
         "machine-new NAME, machine-removed NAME, machine-state NAME STATE,\n"
         "channel-new ID, channel-removed ID, channel-state ID open|closed,\n"
         "daemon-started, daemon-stopped.  Unless --quiet, a line on stderr\n"
         "says when it listens.\n"
         "\n"
         "      --json      print one JSON object a line\n"
         "\n"
         "Example:\n"
         "  vmqctl monitor\n"},
        {"version", cmd_version, NULL, "version",
         "Show the versions of vmqctl, libvmq-client and the running vmqd.\n"
         "\n"
         "      --json      print one JSON object: vmqctl, libvmq_client, vmqd\n"
         "\n"
         "Example:\n"
         "  vmqctl version\n"},
        {"create", cmd_create, create_options, "create NAME --image IMAGE [OPTIONS]",
         "Define a machine, and start it with --start.  IMAGE is the path of a\n"
         "guest image (anything with a '/', made absolute here) or the name of\n"
         "an installed one (echo, sink, source, relay, ...).\n"
         "\n"
         "      --image IMAGE        the guest image (required)\n"
         "      --memory SIZE        guest memory, a multiple of 2M (suffixes K, M, G);\n"
         "                           leave it out for vmqd's default (0 is an error)\n"
         "      --vcpus N            number of vCPUs\n"
         "      --queue-depth N      the machine's queue depth, a power of two\n"
         "      --huge-memory SIZE   bytes of the machine's own 2 MiB frames\n"
         "      --args STRING        the guest's argument string\n"
         "      --uuid UUID          the machine's UUID (random by default)\n"
         "      --persistent         save the definition across vmqd restarts\n"
         "      --autostart          start it when vmqd starts (implies --persistent)\n"
         "      --start              start it now\n"
         "      --json               print the new machine as 'info --json' does\n"
         "\n"
         "NAME: 1 to 63 characters from A-Z a-z 0-9 _ . -, not starting with\n"
         "'.' or '-', and not 'host'.  A size vmqd refuses is reported with its\n"
         "rule (a multiple of 2 MiB, at most vmqd's limits.max_memory).\n"
         "\n"
         "Example:\n"
         "  vmqctl create web --image echo --memory 64M --start\n"},
        {"adopt", cmd_adopt, adopt_options, "adopt DOMAIN [OPTIONS]",
         "Make a libvirt domain (a name or UUID at vmqd's libvirt URI) a vmq\n"
         "machine: vmqd writes its identity into the domain's metadata and\n"
         "attaches an ivshmem-doorbell device it serves (to the definition, and\n"
         "live if the domain runs).  start, stop, destroy then act on the\n"
         "domain; undefine removes the device and metadata, not the domain.\n"
         "\n"
         "      --name NAME          the machine's name (default: the domain's)\n"
         "      --persistent         save the adoption across vmqd restarts\n"
         "      --region-size SIZE   the shared region, a power of two (default 4M)\n"
         "      --rx-size SIZE       its receive window (default: half the region)\n"
         "      --vsock              give it a vhost-user-vsock device, with the\n"
         "                           lowest free CID from 3 (see vsock-connect)\n"
         "      --vsock-cid CID      the same with this CID (3 to 4294967294)\n"
         "\n"
         "The vsock device needs shared memory, which vmqd puts into the\n"
         "definition: a running domain without it gets both at its next start,\n"
         "and vmqctl says so on stderr.\n"
         "\n"
         "Examples:\n"
         "  vmqctl adopt web-vm --name web --persistent\n"
         "  vmqctl adopt web-vm --name web --vsock-cid 9\n"},
        {"start", cmd_start, NULL, "start NAME",
         "Start a machine that is not running.\n"
         "\n"
         "Example:\n"
         "  vmqctl start web\n"},
        {"stop", cmd_stop, stop_options, "stop NAME [--timeout SECONDS]",
         "Ask a machine to shut down, and stop it by force if it has not after\n"
         "SECONDS (default: vmqd's configured grace period).  Returns when the\n"
         "machine no longer runs.\n"
         "\n"
         "      --timeout SECONDS    the grace period\n"
         "\n"
         "Example:\n"
         "  vmqctl stop web --timeout 5\n"},
        {"destroy", cmd_destroy, NULL, "destroy NAME",
         "Stop a machine by force, at once.\n"
         "\n"
         "Example:\n"
         "  vmqctl destroy web\n"},
        {"undefine", cmd_undefine, NULL, "undefine NAME",
         "Forget a machine that is not running, and its saved definition.\n"
         "\n"
         "Example:\n"
         "  vmqctl undefine web\n"},
        {"open", cmd_open, open_options, "open END END [OPTIONS]",
         "Open a channel between two ends and print its id.  An end is a running\n"
         "machine's name or 'host'; not both 'host'.\n"
         "\n"
         "      --depth N                      messages that may wait at a host end\n"
         "      --mode immediate|deferred      how the ends are meant to send (it is\n"
         "                                     recorded; a guest chooses per request)\n"
         "      --transfer copy|flip|auto      how payloads move\n"
         "      --persistent                   reopen it when vmqd and both ends run\n"
         "      --json                         print {\"id\", \"end_a\", \"end_b\"}\n"
         "\n"
         "Example:\n"
         "  id=$(vmqctl open host web --depth 16)\n"},
        {"close", cmd_close, NULL, "close CHANNEL",
         "Close a channel.\n"
         "\n"
         "Example:\n"
         "  vmqctl close 3\n"},
        {"send", cmd_send, send_options, "send CHANNEL [--from END] [--tag N] [DATA | --file PATH]",
         "Send one message from the host on a channel.  The payload is DATA, or\n"
         "the content of PATH, or standard input when neither is given; any bytes\n"
         "(use -- before a DATA that starts with '-').\n"
         "\n"
         "      --file PATH     read the payload from PATH ('-': standard input)\n"
         "      --tag N         a number the receiver sees with the message\n"
         "      --from END      the sending end; only 'host' is possible\n"
         "\n"
         "Examples:\n"
         "  vmqctl send 3 hello\n"
         "  vmqctl send 3 --file blob.bin\n"},
        {"recv", cmd_recv, recv_options,
         "recv CHANNEL [--as END] [--timeout SECONDS] [--count N] [--output PATH]",
         "Receive messages for the host on a channel and write their payloads,\n"
         "byte for byte, to standard output or PATH.  Hello, close and error\n"
         "messages print a line on stderr (unless --quiet) and do not count.\n"
         "\n"
         "      --timeout SECONDS   wait at most this long for each message (0: only\n"
         "                          look; default: no limit)\n"
         "      --count N           receive N data messages (default 1)\n"
         "      --output PATH       write the payloads to PATH instead\n"
         "      --as END            the receiving end; only 'host' is possible\n"
         "      --json              print one JSON object a message, payloads in\n"
         "                          base64, hellos included\n"
         "\n"
         "Example:\n"
         "  vmqctl recv 3 --timeout 5 --count 2 > out.bin\n"},
        {"console", cmd_console, console_options, "console NAME [--follow]",
         "Print a machine's console output (vmqd keeps the last 64 KiB).\n"
         "\n"
         "      --follow    keep printing new output until the machine no longer\n"
         "                  runs (a last line on stderr says how it ended; exit 0)\n"
         "                  or until interrupted\n"
         "      --json      print a JSON object: name, offset, next_offset and\n"
         "                  data (the bytes in base64); one a line with --follow\n"
         "\n"
         "Example:\n"
         "  vmqctl console web --follow\n"},
        {"vsock-connect", cmd_vsock_connect, vsock_options, "vsock-connect NAME PORT [--verbose]",
         "Connect to vsock port PORT in machine NAME's guest, as the host (CID 2),\n"
         "and copy standard input to the connection and the connection to\n"
         "standard output.  End of input is passed on (the guest reads end of\n"
         "file); vmqctl exits 0 once the guest has closed its end and what it\n"
         "sent is written.  The machine needs a vsock device (adopt --vsock).\n"
         "Exit 1 when the guest refuses the port, 3 when the machine has no\n"
         "vsock device, 4 when vmqd's host socket is not yours to use.\n"
         "\n"
         "      --verbose   say on stderr which host port the connection has\n"
         "\n"
         "Example:\n"
         "  echo hi | vmqctl vsock-connect web 5000\n"},
        {"vsock-listen", cmd_vsock_listen, vsock_options, "vsock-listen NAME PORT [--verbose]",
         "Wait for machine NAME's guest to connect to the host (CID 2) on vsock\n"
         "port PORT, take that one connection and copy it to standard output,\n"
         "and standard input to it, as vsock-connect does.  The socket vmqd\n"
         "passes the guest's connection to (its host socket with \"_PORT\") is\n"
         "removed once the guest has connected, and on SIGINT or SIGTERM.\n"
         "Exit 7 when another program listens on that port.\n"
         "\n"
         "      --verbose   say on stderr where it listens, and when the guest\n"
         "                  connected\n"
         "\n"
         "Example:\n"
         "  vmqctl vsock-listen web 6000 > from-guest.txt\n"},
        {"help", cmd_help, NULL, "help [COMMAND]",
         "Show the help, or a command's help.\n"
         "\n"
         "Example:\n"
         "  vmqctl help recv\n"},
        {0},
};

static const struct option global_options[] = {
        {"bus", required_argument, NULL, OPT_BUS},
        {"json", no_argument, NULL, OPT_JSON},
        {"quiet", no_argument, NULL, 'q'},
        {"no-legend", no_argument, NULL, OPT_NO_LEGEND},
        {"no-pager", no_argument, NULL, OPT_NO_PAGER},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {0},
};

const struct command *command_find(const char *name) {
        for (const struct command *c = commands; c->name; c++)
                if (strcmp(c->name, name) == 0)
                        return c;
        return NULL;
}

static void main_help(void) {
        printf("vmqctl — control vmqd, the vmq micro-VM daemon\n"
               "\n"
               "Usage: vmqctl [--bus=system|user|ADDRESS] [--json] [--quiet] [--no-legend]\n"
               "              [--no-pager] COMMAND [ARGS]\n"
               "\n"
               "Commands:\n");
        for (const struct command *c = commands; c->name; c++)
                printf("  %s\n", c->usage);
        printf("\n"
               "Options (also after COMMAND):\n"
               "      --bus=BUS   the bus vmqd is on: system (the default), user, or a\n"
               "                  D-Bus address such as unix:path=/run/x/bus; the\n"
               "                  VMQ_BUS environment variable sets the default\n"
               "      --json      machine-readable output (list, info, channels, channel,\n"
               "                  stats, monitor, recv, create, open, console, version)\n"
               "  -q, --quiet     no headers, no notes on stderr; errors still print\n"
               "      --no-legend no header line (list, channels)\n"
               "      --no-pager  accepted for machinectl's sake; vmqctl never pages\n"
               "  -h, --help      this help; 'vmqctl COMMAND --help' for a command's\n"
               "      --version   print vmqctl's version\n"
               "\n"
               "Exit codes:\n"
               "  0  success\n"
               "  1  other failure (the reason is printed)\n"
               "  2  usage error (bad command, option or argument)\n"
               "  3  not found (machine, channel or image)\n"
               "  4  access denied (changing calls need root or the 'vmq' group)\n"
               "  5  timed out\n"
               "  6  vmqd is not running, or the bus cannot be reached\n"
               "  7  busy or over a limit: wrong state, name or UUID taken, not running,\n"
               "     queue full, channel closed, message too large, too many\n"
               "     machines/channels\n"
               "\n"
               "Example:\n"
               "  vmqctl create web --image echo --start && vmqctl open host web\n"
               "\n"
               "Inside a guest that vmqd adopted, 'vmqctl --guest --help' shows the\n"
               "guest mode.\n");
}

static void command_help(const struct command *cmd) {
        printf("Usage: vmqctl %s\n\n%s", cmd->usage, cmd->help);
}

static int cmd_help(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd;
        int code, o;

        while ((o = ctl_getopt(ctl, command_find("help"), argc, argv, &code)) != -1)
                if (o == -2)
                        return code;
        if (optind >= argc) {
                main_help();
                return EXIT_OK;
        }
        cmd = command_find(argv[optind]);
        if (!cmd)
                return ctl_error(EXIT_USAGE, "unknown command '%s'", argv[optind]);
        command_help(cmd);
        return EXIT_OK;
}

/* ------------------------------------------------------------------------
 * Options.
 */

#define MAX_OPTIONS 32

int ctl_getopt(struct ctl *ctl, const struct command *cmd, int argc, char **argv, int *exit_code) {
        static const struct command *built;
        static struct option all[MAX_OPTIONS];
        int o;

        if (built != cmd) {
                size_t n = 0;

                if (cmd->options)
                        for (const struct option *p = cmd->options; p->name; p++)
                                all[n++] = *p;
                for (const struct option *p = global_options; p->name; p++)
                        all[n++] = *p;
                memset(&all[n], 0, sizeof(all[n]));
                built = cmd;
        }

        opterr = 0;
        o = getopt_long(argc, argv, ":hq", all, NULL);
        switch (o) {
        case -1:
                return -1;
        case OPT_BUS:
                ctl->bus = optarg;
                ctl->bus_from_env = false;
                return ctl_getopt(ctl, cmd, argc, argv, exit_code);
        case OPT_JSON:
                ctl->json = true;
                return ctl_getopt(ctl, cmd, argc, argv, exit_code);
        case 'q':
                ctl->quiet = true;
                return ctl_getopt(ctl, cmd, argc, argv, exit_code);
        case OPT_NO_LEGEND:
                ctl->no_legend = true;
                return ctl_getopt(ctl, cmd, argc, argv, exit_code);
        case OPT_NO_PAGER:
                /* vmqctl writes straight to its output: nothing to turn off. */
                return ctl_getopt(ctl, cmd, argc, argv, exit_code);
        case 'h':
                command_help(cmd);
                *exit_code = EXIT_OK;
                return -2;
        case OPT_VERSION:
                printf("vmqctl %s\n", PACKAGE_VERSION);
                *exit_code = EXIT_OK;
                return -2;
        case ':':
        case '?':
                *exit_code = ctl_option_error(CTL_MODE_HOST, cmd->name, o, argv, all);
                return -2;
        default:
                return o;
        }
}

int ctl_check_args(const struct command *cmd, int argc, char **argv, int min, int max) {
        return ctl_check_args_in(CTL_MODE_HOST, cmd->name, argc, argv, min, max);
}

int ctl_parse_plain(struct ctl *ctl, const struct command *cmd, int argc, char **argv, int min,
                    int max) {
        int code, o;

        while ((o = ctl_getopt(ctl, cmd, argc, argv, &code)) != -1) {
                if (o == -2)
                        return code;
                /* No options of its own: ctl_getopt() knows only globals. */
        }
        return ctl_check_args(cmd, argc, argv, min, max);
}

/* ------------------------------------------------------------------------
 * Errors.
 */

int ctl_usage(const struct command *cmd, const char *fmt, ...) {
        va_list ap;
        int code;

        va_start(ap, fmt);
        code = ctl_vusage_in(CTL_MODE_HOST, cmd ? cmd->name : NULL, fmt, ap);
        va_end(ap);
        return code;
}

const char *ctl_bus_name(const struct ctl *ctl) {
        static char buf[256];

        if (strcmp(ctl->bus, "system") == 0)
                return "the system bus";
        if (strcmp(ctl->bus, "user") == 0)
                return "the user bus";
        snprintf(buf, sizeof(buf), "bus '%s'", ctl->bus);
        return buf;
}

static int exit_code_of(int r) {
        switch (-r) {
        case ENOENT:
        case ENXIO:
                return EXIT_NOT_FOUND;
        case EACCES:
                return EXIT_ACCESS;
        case ETIMEDOUT:
                return EXIT_TIMEOUT;
        case EHOSTDOWN:
        case ECONNRESET:
        case ENOTCONN:
        case ECONNREFUSED:
                return EXIT_NO_DAEMON;
        case EINVAL:
                return EXIT_USAGE;
        case EBUSY:
        case EEXIST:
        case ESRCH:
        case EAGAIN:
        case EPIPE:
        case EUSERS:
        case EMSGSIZE:
        case EADDRINUSE:
                return EXIT_BUSY;
        default:
                return EXIT_FAIL;
        }
}

static const char *reason_of(int r) {
        switch (-r) {
        case ENOENT:
                return "not found";
        case ENXIO:
                return "no such channel";
        case EACCES:
                return "access denied (needs root or the 'vmq' group)";
        case ETIMEDOUT:
                return "timed out";
        case ECONNRESET:
        case ENOTCONN:
                return "the bus closed the connection";
        case EINVAL:
                return "invalid argument";
        case EBUSY:
                return "busy: not possible in the current state";
        case EEXIST:
                return "already exists";
        case ESRCH:
                return "machine is not running";
        case EAGAIN:
                return "the receiver's queue is full";
        case EPIPE:
                return "channel is closed";
        case EPERM:
                return "the host is not an end of this channel";
        case EMSGSIZE:
                return "message too large";
        case ENOEXEC:
                return "guest image refused";
        case EUSERS:
                return "limit of machines or channels reached";
        case ENOMEM:
                return "out of memory";
        case EBADF:
                return "not a sealed memfd";
        case EHOSTUNREACH:
                return "the machine's backend is unavailable";
        case EADDRINUSE:
                return "another machine has that UUID";
        case EROFS:
                return "vmqd could not save its state; nothing changed";
        case EIO:
                return "vmqd failed";
        default:
                return strerror(-r);
        }
}

const char *ctl_daemon_message(struct ctl *ctl) {
        const char *m = ctl->client ? vmq_client_get_error_message(ctl->client) : NULL;
        return m && *m ? m : NULL;
}

int ctl_fail(struct ctl *ctl, int r, const char *not_found, const char *fmt, ...) {
        const char *detail = ctl_daemon_message(ctl);
        va_list ap;

        fputs("vmqctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        if (r == -EHOSTDOWN)
                fprintf(stderr, ": vmqd is not running on %s\n", ctl_bus_name(ctl));
        else if ((r == -ENOENT || r == -ENXIO) && not_found)
                fprintf(stderr, ": %s\n", not_found);
        else if (detail && r != -EACCES)
                /* The daemon's own words say which argument or limit; our
                 * generic reason next to them would only say it twice.  A
                 * capital that starts a sentence goes, one that starts an
                 * acronym ("UUID") stays. */
                fprintf(stderr, ": %c%s\n",
                        detail[0] >= 'A' && detail[0] <= 'Z' && detail[1] >= 'a' && detail[1] <= 'z'
                                ? detail[0] - 'A' + 'a'
                                : detail[0],
                        detail + 1);
        else
                fprintf(stderr, ": %s\n", reason_of(r));
        return exit_code_of(r);
}

/* Whether @bus can name a bus at all: "system", "user", or a D-Bus
 * address, which is TRANSPORT:KEY=VALUE[,...][;...]. */
static bool bus_is_plausible(const char *bus) {
        const char *colon = strchr(bus, ':');

        if (strcmp(bus, "system") == 0 || strcmp(bus, "user") == 0)
                return true;
        return colon && colon != bus && strchr(colon, '=');
}

int ctl_connect(struct ctl *ctl) {
        int r;

        if (!bus_is_plausible(ctl->bus))
                return ctl_error(EXIT_USAGE,
                                 "%s '%s' names no bus: give system, user, or a D-Bus address "
                                 "such as unix:path=/run/dbus/system_bus_socket",
                                 ctl->bus_from_env ? "VMQ_BUS" : "--bus", ctl->bus);
        r = vmq_client_new(&ctl->client);
        if (r < 0)
                return ctl_error(EXIT_FAIL, "%s", strerror(-r));
        r = vmq_client_connect(ctl->client, ctl->bus);
        if (r == -EINVAL)
                return ctl_error(EXIT_USAGE,
                                 "cannot connect to %s: not a valid D-Bus address (such as "
                                 "unix:path=/run/dbus/system_bus_socket)",
                                 ctl_bus_name(ctl));
        if (r < 0)
                return ctl_error(EXIT_NO_DAEMON, "cannot connect to %s: %s%s", ctl_bus_name(ctl),
                                 strerror(-r),
                                 r == -ECONNREFUSED || r == -ENOENT
                                         ? " (no D-Bus daemon listens at that address)"
                                         : "");
        return EXIT_OK;
}

int parse_channel_id(const struct command *cmd, const char *s, uint32_t *ret) {
        return ctl_parse_channel_in(CTL_MODE_HOST, cmd->name, s, UINT32_MAX, ret);
}

bool is_host_end(const char *s) {
        return strcmp(s, VMQ_CLIENT_HOST_END) == 0;
}

/* ------------------------------------------------------------------------
 * main
 */

int main(int argc, char **argv) {
        struct ctl ctl = {.bus = "system"};
        const struct command *cmd;
        const char *env;
        int o, code;

        for (int i = 1; i < argc && argv[i][0] == '-' && strcmp(argv[i], "--") != 0; i++)
                if (strcmp(argv[i], "--guest") == 0)
                        return ctl_guest_main(argc, argv);

        env = getenv("VMQ_BUS");
        if (env && *env) {
                ctl.bus = env;
                ctl.bus_from_env = true;
        }

        opterr = 0;
        while ((o = getopt_long(argc, argv, "+:hq", global_options, NULL)) != -1) {
                switch (o) {
                case OPT_BUS:
                        ctl.bus = optarg;
                        ctl.bus_from_env = false;
                        break;
                case OPT_JSON:
                        ctl.json = true;
                        break;
                case 'q':
                        ctl.quiet = true;
                        break;
                case OPT_NO_LEGEND:
                        ctl.no_legend = true;
                        break;
                case OPT_NO_PAGER:
                        break;
                case 'h':
                        main_help();
                        return ctl_finish_output(EXIT_OK);
                case OPT_VERSION:
                        printf("vmqctl %s\n", PACKAGE_VERSION);
                        return ctl_finish_output(EXIT_OK);
                default:
                        return ctl_option_error(CTL_MODE_HOST, NULL, o, argv, global_options);
                }
        }
        if (optind >= argc)
                return ctl_usage(NULL, "no command given");
        cmd = command_find(argv[optind]);
        if (!cmd)
                return ctl_usage(NULL, "unknown command '%s'", argv[optind]);
        if (!*ctl.bus)
                return ctl_usage(NULL, "--bus needs a value");

        argc -= optind;
        argv += optind;
        optind = 0; /* GNU getopt: start afresh on the command's arguments */
        code = cmd->run(&ctl, argc, argv);
        vmq_client_unref(ctl.client);
        return ctl_finish_output(code);
}
