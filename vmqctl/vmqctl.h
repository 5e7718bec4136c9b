/* SPDX-License-Identifier: MIT */
/*
 * vmqctl: what the command files share.  vmqctl speaks to vmqd only through
 * libvmq-client.
 *
 * Exit codes, option ids, messages and parsers: vmqctl/common.h.
 */
#ifndef VMQCTL_H
#define VMQCTL_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "libvmq-client/vmq-client.h"
#include "vmqctl/common.h"

struct ctl {
        const char *bus;   /* "system", "user" or an address */
        bool bus_from_env; /* VMQ_BUS gave it, not --bus */
        bool json;
        bool quiet;
        bool no_legend;            /* no header line in list and channels */
        struct vmq_client *client; /* connected by ctl_connect() */
};

struct command {
        const char *name;
        int (*run)(struct ctl *ctl, int argc, char **argv);
        const struct option *options; /* the command's own, or NULL */
        const char *usage;            /* the synopsis after "vmqctl " */
        const char *help;             /* what it does, options, an example */
};

/* vmqctl.c */
extern const struct command commands[];

/* Parses a command's options (its own and the global ones); returns the
 * option's value, -1 at the end, or -2 after a usage error or --help has
 * been handled (the command then returns *exit_code). */
int ctl_getopt(struct ctl *ctl, const struct command *cmd, int argc, char **argv, int *exit_code);
/* For commands without options of their own: parses the global ones and
 * checks that between @min and @max arguments follow the command.  Returns
 * -1 to go on (the arguments are argv[optind..argc-1]), or an exit code. */
int ctl_parse_plain(struct ctl *ctl, const struct command *cmd, int argc, char **argv, int min,
                    int max);
/* Checks the number of arguments left after option parsing; returns -1 or
 * EXIT_USAGE. */
int ctl_check_args(const struct command *cmd, int argc, char **argv, int min, int max);
/* Connects to ctl->bus; prints the error itself.  Returns an exit code. */
int ctl_connect(struct ctl *ctl);
/* Prints "vmqctl: <what>: <reason>" for a negative errno from the library,
 * and returns the matching exit code.  @not_found words ENOENT/ENXIO
 * ("no such machine"), or NULL for the generic wording. */
int ctl_fail(struct ctl *ctl, int r, const char *not_found, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
/* Prints "vmqctl: <message>" with a hint at the command's help, or
 * vmqctl's with @cmd NULL, and returns EXIT_USAGE. */
int ctl_usage(const struct command *cmd, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
/* vmqd's own words for the last failed call, or NULL when it gave none;
 * for the commands that word some refusals themselves. */
const char *ctl_daemon_message(struct ctl *ctl);
/* How vmqd limits machine names, in words, for error messages. */
#define CTL_NAME_RULE                                                                              \
        "1 to 63 characters from A-Z a-z 0-9 _ . -, not starting with '.' or '-', "                \
        "and not 'host'"
/* The bus in words for messages: "the system bus", "bus 'unix:...'". */
const char *ctl_bus_name(const struct ctl *ctl);

/* Parses a channel id; returns -1 when fine, or EXIT_USAGE. */
int parse_channel_id(const struct command *cmd, const char *s, uint32_t *ret);
/* The host end: "host" and nothing else, today. */
bool is_host_end(const char *s);

/* json.c: hand-written JSON on a FILE, with proper escaping. */
struct json {
        FILE *f;
        unsigned depth;
        bool first[8];
};
void json_begin(struct json *j, FILE *f);
void json_open_object(struct json *j, const char *key);
void json_close_object(struct json *j);
void json_open_array(struct json *j, const char *key);
void json_close_array(struct json *j);
void json_string(struct json *j, const char *key, const char *value);
void json_bytes_base64(struct json *j, const char *key, const void *data, size_t size);
void json_u64(struct json *j, const char *key, uint64_t value);
void json_i64(struct json *j, const char *key, int64_t value);
void json_bool(struct json *j, const char *key, bool value);
void json_null(struct json *j, const char *key);
/* Ends the document with a newline. */
void json_end(struct json *j);

/* machine.c */
void print_machine_json(struct json *j, const struct vmq_machine *m);
/* SIGINT and SIGTERM set a flag instead of killing, for the loops of
 * monitor, console --follow and recv. */
void install_interrupt_handlers(void);
bool was_interrupted(void);

/* channel.c */
/* Prints a channel (only its ends and counters with @counters_only);
 * returns an exit code.  Needs a connected ctl. */
int show_channel(struct ctl *ctl, uint32_t id, bool counters_only);

/* The commands, by file. */
int cmd_list(struct ctl *ctl, int argc, char **argv);
int cmd_info(struct ctl *ctl, int argc, char **argv);
int cmd_create(struct ctl *ctl, int argc, char **argv);
int cmd_adopt(struct ctl *ctl, int argc, char **argv);
int cmd_start(struct ctl *ctl, int argc, char **argv);
int cmd_stop(struct ctl *ctl, int argc, char **argv);
int cmd_destroy(struct ctl *ctl, int argc, char **argv);
int cmd_undefine(struct ctl *ctl, int argc, char **argv);
int cmd_console(struct ctl *ctl, int argc, char **argv);
int cmd_channels(struct ctl *ctl, int argc, char **argv);
int cmd_channel(struct ctl *ctl, int argc, char **argv);
int cmd_open(struct ctl *ctl, int argc, char **argv);
int cmd_close(struct ctl *ctl, int argc, char **argv);
int cmd_send(struct ctl *ctl, int argc, char **argv);
int cmd_recv(struct ctl *ctl, int argc, char **argv);
int cmd_stats(struct ctl *ctl, int argc, char **argv);
int cmd_monitor(struct ctl *ctl, int argc, char **argv);
int cmd_version(struct ctl *ctl, int argc, char **argv);
int cmd_vsock_connect(struct ctl *ctl, int argc, char **argv);
int cmd_vsock_listen(struct ctl *ctl, int argc, char **argv);

/* Command option tables, for the command table in vmqctl.c. */
extern const struct option list_options[];
extern const struct option create_options[];
extern const struct option adopt_options[];
extern const struct option stop_options[];
extern const struct option console_options[];
extern const struct option channels_options[];
extern const struct option open_options[];
extern const struct option send_options[];
extern const struct option recv_options[];
extern const struct option vsock_options[];

/* Looks up a command by name (for the commands' own --help). */
const struct command *command_find(const char *name);

#endif /* VMQCTL_H */
