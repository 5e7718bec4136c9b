/* SPDX-License-Identifier: MIT */
/*
 * vmqctl: error reporting, argument checks, parsers and the payload input
 * and output of send and recv, for the host and the guest mode alike.  No
 * D-Bus, no libvmq-client: vmqctl-static links this too.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "vmqctl/common.h"

/* ------------------------------------------------------------------------
 * Errors.
 */

int ctl_error(int code, const char *fmt, ...) {
        va_list ap;

        fputs("vmqctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        return code;
}

int ctl_vusage_in(const char *mode, const char *command, const char *fmt, va_list ap) {
        fputs("vmqctl: ", stderr);
        vfprintf(stderr, fmt, ap);
        if (command)
                fprintf(stderr, " (see 'vmqctl %s%s --help')\n", mode, command);
        else
                fprintf(stderr, " (see 'vmqctl %s--help')\n", mode);
        return EXIT_USAGE;
}

int ctl_usage_in(const char *mode, const char *command, const char *fmt, ...) {
        va_list ap;
        int code;

        va_start(ap, fmt);
        code = ctl_vusage_in(mode, command, fmt, ap);
        va_end(ap);
        return code;
}

/* Whether argv[optind - 1] is "--NAME=VALUE" for a flag of @longopts
 * (NAME possibly abbreviated) whose value getopt_long() reported in
 * optopt; then *ret_len is the length of "--NAME". */
static bool is_flag_with_value(char **argv, const struct option *longopts, size_t *ret_len) {
        const char *arg, *eq;
        size_t len;

        if (!optopt || optind < 1 || !longopts)
                return false;
        arg = argv[optind - 1];
        if (strncmp(arg, "--", 2) != 0 || !(eq = strchr(arg, '=')))
                return false;
        len = (size_t)(eq - arg) - 2;
        for (const struct option *p = longopts; p->name; p++)
                if (p->has_arg == no_argument && p->val == optopt &&
                    strncmp(p->name, arg + 2, len) == 0) {
                        *ret_len = len + 2;
                        return true;
                }
        return false;
}

int ctl_option_error(const char *mode, const char *command, int o, char **argv,
                     const struct option *longopts) {
        size_t len;

        const char *prefix = command ? command : "", *colon = command ? ": " : "";
        char short_opt[3] = {'-', (char)optopt, 0};

        if (o == ':')
                return ctl_usage_in(mode, command, "%s%soption '%s' needs a value", prefix, colon,
                                    argv[optind - 1]);
        /* "--quiet=1": getopt_long() knew the flag (optopt is its value)
         * but not what to do with a value.  A short option refused in the
         * middle of "-qz" leaves argv[optind - 1] at an earlier word: the
         * table says whether that word is the culprit. */
        if (o == '?' && is_flag_with_value(argv, longopts, &len))
                return ctl_usage_in(mode, command, "%s%soption '%.*s' takes no value", prefix,
                                    colon, (int)len, argv[optind - 1]);
        return ctl_usage_in(mode, command, "%s%sunknown option '%s'", prefix, colon,
                            optopt ? short_opt : argv[optind - 1]);
}

int ctl_check_args_in(const char *mode, const char *command, int argc, char **argv, int min,
                      int max) {
        int n = argc - optind;

        if (n < min)
                return ctl_usage_in(mode, command, "%s: missing argument", command);
        if (n > max)
                return ctl_usage_in(mode, command, "%s: unexpected argument '%s'", command,
                                    argv[optind + max]);
        return -1;
}

int ctl_finish_output(int code) {
        if (fflush(stdout) != 0 || ferror(stdout)) {
                /* A closed pipe is the reader's choice, not our failure. */
                if (errno == EPIPE)
                        return code;
                ctl_error(EXIT_FAIL, "cannot write to standard output: %s", strerror(errno));
                return code == EXIT_OK ? EXIT_FAIL : code;
        }
        return code;
}

/* ------------------------------------------------------------------------
 * Parsers.
 */

int parse_u64(const char *s, uint64_t *ret) {
        unsigned long long v;
        char *end;

        if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || *end)
                return -EINVAL;
        *ret = v;
        return 0;
}

int parse_u32(const char *s, uint32_t *ret) {
        uint64_t v;

        if (parse_u64(s, &v) < 0 || v > UINT32_MAX)
                return -EINVAL;
        *ret = (uint32_t)v;
        return 0;
}

int parse_size(const char *s, uint64_t *ret) {
        static const char units[] = "KMGT";
        unsigned long long v;
        uint64_t mult = 1;
        char *end;

        if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || end == s)
                return -EINVAL;
        if (*end) {
                const char *u = strchr(units, *end >= 'a' ? *end - 'a' + 'A' : *end);

                if (!u || *u == 0)
                        return -EINVAL;
                for (const char *p = units; p <= u; p++)
                        mult *= 1024;
                end++;
                if (strcmp(end, "") != 0 && strcasecmp(end, "B") != 0 && strcmp(end, "iB") != 0)
                        return -EINVAL;
        }
        if (v > UINT64_MAX / mult)
                return -EINVAL;
        *ret = v * mult;
        return 0;
}

int parse_seconds(const char *s, uint64_t *ret) {
        double d;
        char *end;

        if (!s || !*s)
                return -EINVAL;
        if (strcmp(s, "infinity") == 0) {
                *ret = UINT64_MAX;
                return 0;
        }
        if (*s == '-' || *s == '+' || *s == ' ')
                return -EINVAL;
        errno = 0;
        d = strtod(s, &end);
        if (errno != 0 || *end || !isfinite(d) || d < 0 || d > 1e12)
                return -EINVAL;
        *ret = (uint64_t)(d * 1e6 + 0.5);
        return 0;
}

int ctl_parse_channel_in(const char *mode, const char *command, const char *s, uint32_t max,
                         uint32_t *ret) {
        if (parse_u32(s, ret) < 0 || *ret > max)
                return ctl_usage_in(mode, command, "%s: invalid channel id '%s'", command, s);
        return -1;
}

/* ------------------------------------------------------------------------
 * Payloads.
 */

/* Reads all of @fd (a file or a pipe) into a new buffer. */
static int read_all(int fd, char **ret, size_t *ret_size) {
        size_t size = 0, cap = 64 * 1024;
        char *buf = malloc(cap);

        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n;

                if (size == cap) {
                        char *b;

                        if (cap > SIZE_MAX / 2) {
                                free(buf);
                                return -EFBIG;
                        }
                        b = realloc(buf, cap * 2);
                        if (!b) {
                                free(buf);
                                return -ENOMEM;
                        }
                        buf = b;
                        cap *= 2;
                }
                n = read(fd, buf + size, cap - size);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        n = -errno;
                        free(buf);
                        return (int)n;
                }
                if (n == 0)
                        break;
                size += (size_t)n;
        }
        *ret = buf;
        *ret_size = size;
        return 0;
}

int ctl_read_payload(const char *data_arg, const char *file, const void **ret_data, char **ret_buf,
                     size_t *ret_size) {
        char *buf = NULL;
        size_t size = 0;
        int r;

        if (data_arg) {
                *ret_data = data_arg;
                *ret_buf = NULL;
                *ret_size = strlen(data_arg);
                return EXIT_OK;
        }
        if (file && strcmp(file, "-") != 0) {
                int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);

                if (fd < 0)
                        return ctl_error(errno == ENOENT ? EXIT_NOT_FOUND : EXIT_FAIL,
                                         "file '%s': %s", file, strerror(errno));
                r = read_all(fd, &buf, &size);
                close(fd);
                if (r < 0)
                        return ctl_error(EXIT_FAIL, "file '%s': %s", file, strerror(-r));
        } else {
                r = read_all(STDIN_FILENO, &buf, &size);
                if (r < 0)
                        return ctl_error(EXIT_FAIL, "standard input: %s", strerror(-r));
        }
        *ret_data = buf;
        *ret_buf = buf;
        *ret_size = size;
        return EXIT_OK;
}

int ctl_open_output(const char *output, FILE **ret, const char **ret_name) {
        FILE *out;

        if (!output || strcmp(output, "-") == 0) {
                *ret = stdout;
                *ret_name = NULL;
                return EXIT_OK;
        }
        out = fopen(output, "wbe");
        if (!out)
                return ctl_error(EXIT_FAIL, "output '%s': %s", output, strerror(errno));
        *ret = out;
        *ret_name = output;
        return EXIT_OK;
}

int ctl_write_payload(FILE *out, const char *name, const void *data, size_t size) {
        if ((size > 0 && fwrite(data, 1, size, out) != size) || fflush(out) != 0)
                return ctl_error(EXIT_FAIL, "cannot write to %s: %s",
                                 name ? name : "standard output", strerror(errno));
        return EXIT_OK;
}

int ctl_close_output(FILE *out, const char *name, int code) {
        if (out != stdout && fclose(out) != 0 && code == EXIT_OK)
                return ctl_error(EXIT_FAIL, "output '%s': %s", name, strerror(errno));
        return code;
}
