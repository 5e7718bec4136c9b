/* SPDX-License-Identifier: MIT */
/*
 * vmqctl: what the host mode (vmqctl.c and the command files) and the guest
 * mode (guest.c) share.  Nothing here knows D-Bus or libvmq-client: this
 * module is also linked into the static vmqctl-static.
 *
 * Exit codes (documented in `vmqctl --help`; the man page copies them):
 *   0  success
 *   1  failure not covered below
 *   2  usage error: unknown command or option, bad or missing argument
 *      (also an argument the daemon refused as invalid)
 *   3  not found: no such machine, channel or image (guest: no ivshmem
 *      device)
 *   4  access denied: changing calls need root or the "vmq" group
 *   5  timed out
 *   6  vmqd is not running, or the bus cannot be reached (guest: the
 *      monitor has not initialised the region)
 *   7  busy or over a limit: wrong state, name taken, not running, queue
 *      full, channel closed, message too large, too many machines/channels
 */
#ifndef VMQCTL_COMMON_H
#define VMQCTL_COMMON_H

#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum {
        EXIT_OK = 0,
        EXIT_FAIL = 1,
        EXIT_USAGE = 2,
        EXIT_NOT_FOUND = 3,
        EXIT_ACCESS = 4,
        EXIT_TIMEOUT = 5,
        EXIT_NO_DAEMON = 6,
        EXIT_NO_MONITOR = EXIT_NO_DAEMON, /* the guest mode's name for 6 */
        EXIT_BUSY = 7,
};

/* Long-only options of both modes; the host's global ones come first. */
enum {
        OPT_BUS = 0x100,
        OPT_JSON,
        OPT_QUIET,
        OPT_HELP,
        OPT_VERSION,
        OPT_IMAGE,
        OPT_MEMORY,
        OPT_VCPUS,
        OPT_QUEUE_DEPTH,
        OPT_HUGE_MEMORY,
        OPT_ARGS,
        OPT_UUID,
        OPT_PERSISTENT,
        OPT_AUTOSTART,
        OPT_START,
        OPT_TIMEOUT,
        OPT_DEPTH,
        OPT_MODE,
        OPT_TRANSFER,
        OPT_FROM,
        OPT_AS,
        OPT_FILE,
        OPT_TAG,
        OPT_COUNT,
        OPT_OUTPUT,
        OPT_FOLLOW,
        OPT_NAMES,
        OPT_IDS,
        OPT_NAME,
        OPT_REGION_SIZE,
        OPT_RX_SIZE,
        OPT_NO_LEGEND,
        OPT_NO_PAGER,
        OPT_VSOCK,
        OPT_VSOCK_CID,
        OPT_VERBOSE,
        /* The guest mode's. */
        OPT_GUEST,
        OPT_DEVICE,
        OPT_BIND_UIO,
        OPT_POLL,
        OPT_POST,
};

/* Option table entries that send and recv of both modes share. */
#define CTL_OPTION_FILE                                                                            \
        { "file", required_argument, NULL, OPT_FILE }
#define CTL_OPTION_TAG                                                                             \
        { "tag", required_argument, NULL, OPT_TAG }
#define CTL_OPTION_TIMEOUT                                                                         \
        { "timeout", required_argument, NULL, OPT_TIMEOUT }
#define CTL_OPTION_COUNT                                                                           \
        { "count", required_argument, NULL, OPT_COUNT }
#define CTL_OPTION_OUTPUT                                                                          \
        { "output", required_argument, NULL, 'o' }

/* How usage hints name the mode, after "vmqctl ": */
#define CTL_MODE_HOST ""
#define CTL_MODE_GUEST "--guest "

/* Prints "vmqctl: <message>" and returns @code. */
int ctl_error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "vmqctl: <message> (see 'vmqctl <mode><command> --help')", or
 * "(see 'vmqctl <mode>--help')" when @command is NULL, and returns
 * EXIT_USAGE.  @mode is CTL_MODE_HOST or CTL_MODE_GUEST. */
int ctl_usage_in(const char *mode, const char *command, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
int ctl_vusage_in(const char *mode, const char *command, const char *fmt, va_list ap)
        __attribute__((format(printf, 3, 0)));
/* After getopt_long() returned ':' or '?': prints the usage error for
 * argv[optind - 1] (or optopt), prefixed with "<command>: " unless
 * @command is NULL (the options before the command), and returns
 * EXIT_USAGE.  @longopts, the table given to getopt_long(), lets it say
 * "option '--quiet' takes no value" for "--quiet=1". */
int ctl_option_error(const char *mode, const char *command, int o, char **argv,
                     const struct option *longopts);
/* Checks the number of arguments left after option parsing, argv[optind..];
 * returns -1 when between @min and @max, or EXIT_USAGE. */
int ctl_check_args_in(const char *mode, const char *command, int argc, char **argv, int min,
                      int max);
/* Checks that standard output was written; returns @code or EXIT_FAIL. */
int ctl_finish_output(int code);

/* Parsers; each returns 0 or -EINVAL. */
int parse_u32(const char *s, uint32_t *ret);
int parse_u64(const char *s, uint64_t *ret);
/* A size with an optional K, M, G or T (powers of 1024) suffix, with an
 * optional "B" or "iB" after it. */
int parse_size(const char *s, uint64_t *ret);
/* Seconds, possibly fractional ("0.5"), to microseconds; "infinity" gives
 * UINT64_MAX. */
int parse_seconds(const char *s, uint64_t *ret);
/* Parses a channel id up to @max; returns -1 when fine, or EXIT_USAGE
 * after the usage error. */
int ctl_parse_channel_in(const char *mode, const char *command, const char *s, uint32_t max,
                         uint32_t *ret);

/*
 * The payload of send: @data_arg itself when not NULL, else the content of
 * @file, else standard input (also for @file "-").  On EXIT_OK, *ret_data
 * points at the payload and *ret_buf is what to free() (NULL for
 * @data_arg); otherwise the error was printed and the exit code returned.
 */
int ctl_read_payload(const char *data_arg, const char *file, const void **ret_data, char **ret_buf,
                     size_t *ret_size);

/* The output of recv: standard output, or @output unless NULL or "-".
 * *ret_name becomes NULL for standard output.  Returns an exit code. */
int ctl_open_output(const char *output, FILE **ret, const char **ret_name);
/* Writes and flushes one payload; returns an exit code.  @name: as from
 * ctl_open_output(). */
int ctl_write_payload(FILE *out, const char *name, const void *data, size_t size);
/* Closes what ctl_open_output() opened; returns @code, or EXIT_FAIL when
 * @code was EXIT_OK and closing failed. */
int ctl_close_output(FILE *out, const char *name, int code);

#endif /* VMQCTL_COMMON_H */
