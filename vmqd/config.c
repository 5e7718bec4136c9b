/* SPDX-License-Identifier: MIT */
/*
 * vmqd.conf — the daemon's configuration file (vmqd.conf(5)).
 *
 * A JSON object.  Every key is optional; a key that is absent keeps its
 * default.  Unknown keys, wrong types and out-of-range values are errors
 * (the daemon refuses to start rather than guess).  The file is strict JSON
 * (no comments, no trailing commas), UTF-8, at most 16 MiB.
 *
 *   {
 *     "state_dir": "/var/lib/vmq",
 *     "image_dir": "/usr/local/lib/vmq/guests",
 *     "log_level": "info",
 *     "hugetlb": { "enabled": true, "frames": 64 },
 *     "pool_memory": 4294967296,
 *     "limits": {
 *       "max_machines": 64,
 *       "max_channels": 256,
 *       "max_queue_depth": 1024,
 *       "max_memory": 1073741824,
 *       "max_message": 16777216
 *     },
 *     "defaults": {
 *       "memory": 16777216,
 *       "vcpus": 1,
 *       "queue_depth": 64,
 *       "host_depth": 256,
 *       "mode": "immediate",
 *       "transfer": "auto",
 *       "stop_timeout": 10
 *     },
 *     "libvirt": { "uri": "qemu:///system" }
 *   }
 *
 * Keys (default; allowed values):
 *
 *   state_dir             "/var/lib/vmq"; an absolute path.  Where machine
 *                         and channel definitions are saved (state.json).
 *   image_dir             $(pkglibdir)/guests; an absolute path.  Where
 *                         installed guest images are looked up by name
 *                         (<image_dir>/<name>.elf).
 *   log_level             "info"; "err", "warning", "notice", "info" or
 *                         "debug".
 *   hugetlb.enabled       true; take 2 MiB hugetlb frames for the pool when
 *                         the host has them (false: never).
 *   hugetlb.frames        64; 1..65536: how many 2 MiB frames to take.
 *   pool_memory           4 GiB; 64 MiB..1 TiB, a multiple of 2 MiB: size of
 *                         the pool of 4 KiB frames (sparse: only what
 *                         guests use is allocated).
 *   limits.max_machines   64; 1..4096.
 *   limits.max_channels   256; 1..65536.
 *   limits.max_queue_depth 1024; a power of two, 4..1024.
 *   limits.max_memory     1 GiB; 4 MiB..1 GiB, a multiple of 2 MiB, at most
 *                         pool_memory: the most memory one machine may have.
 *   limits.max_message    16 MiB; 64 KiB..1 GiB: the largest message the
 *                         host may send (SendFd).
 *   defaults.memory       16 MiB; 4 MiB..limits.max_memory, a multiple of
 *                         2 MiB.
 *   defaults.vcpus        1; 1..8.
 *   defaults.queue_depth  64; a power of two, 4..limits.max_queue_depth.
 *   defaults.host_depth   256; a power of two, 1..65536: messages that may
 *                         wait at a host end of a channel.
 *   defaults.mode         "immediate"; "immediate" or "deferred".
 *   defaults.transfer     "auto"; "copy", "flip" or "auto".
 *   defaults.stop_timeout 10; 1..3600 seconds: how long StopMachine waits
 *                         for the guest before stopping it by force.
 *   libvirt.uri           "qemu:///system"; a non-empty string.
 *
 * Sizes (pool_memory, limits.max_memory, limits.max_message,
 * defaults.memory) are a number of bytes, or a string: a number of bytes
 * followed by an optional K, M, G or T (binary: 1024, 1024², …), itself
 * optionally followed by "iB": 16777216, "16777216", "16M", "16MiB".
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>

#include "core/util.h"
#include "vmqd/config.h"

#ifndef VMQ_IMAGE_DIR
#define VMQ_IMAGE_DIR "/usr/local/lib/vmq/guests"
#endif

#define KIB (1024ull)
#define MIB (1024ull * KIB)
#define GIB (1024ull * MIB)
#define TIB (1024ull * GIB)

/* Neither file needs more than three levels; hostile nesting stops here. */
#define JSON_MAX_DEPTH 8

void vmqd_json_putp(struct json_object **o) {
        if (*o)
                json_object_put(*o);
}

static void tokener_freep(struct json_tokener **t) {
        if (*t)
                json_tokener_free(*t);
}

int vmqd_errorf(char **ret_error, const char *fmt, ...) {
        if (ret_error) {
                va_list ap;
                char *m = NULL;
                va_start(ap, fmt);
                if (vasprintf(&m, fmt, ap) < 0)
                        m = NULL;
                va_end(ap);
                free(*ret_error);
                *ret_error = m;
        }
        return -EINVAL;
}

const char *vmqd_printable(const char *s, char *buf, size_t size) {
        size_t i = 0;
        for (; s[i] && i + 4 < size; i++) {
                unsigned char c = (unsigned char)s[i];
                buf[i] = (c < 0x20 || c == 0x7f || c == '"' || c == '\\') ? '?' : (char)c;
        }
        if (s[i]) {
                memcpy(buf + i, "...", 3);
                i += 3;
        }
        buf[i] = '\0';
        return buf;
}

int vmqd_json_parse_file(int dirfd, const char *path, struct json_object **ret, char **ret_error) {
        _cleanup_close_ int fd = -1;
        _cleanup_free_ char *buf = NULL;
        _cleanup_(tokener_freep) struct json_tokener *tok = NULL;
        struct json_object *o;
        struct stat st;
        size_t len = 0, cap;

        if (ret_error)
                *ret_error = NULL;

        /* O_NONBLOCK: a FIFO planted under the name must not hang us. */
        fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode))
                return vmqd_errorf(ret_error, "not a regular file");
        if (st.st_size > (off_t)VMQD_FILE_MAX)
                return vmqd_errorf(ret_error, "larger than 16 MiB (%jd bytes)",
                                   (intmax_t)st.st_size);

        /* The size is a hint only: the file may change while we read. */
        cap = (size_t)st.st_size + 1;
        buf = malloc(cap + 1);
        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t n;
                if (len == cap) {
                        char *nb;
                        if (cap > VMQD_FILE_MAX)
                                return vmqd_errorf(ret_error, "larger than 16 MiB");
                        cap = VMQ_MIN(cap * 2, (size_t)VMQD_FILE_MAX + 1);
                        nb = realloc(buf, cap + 1);
                        if (!nb)
                                return -ENOMEM;
                        buf = nb;
                }
                n = read(fd, buf + len, cap - len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        if (len > VMQD_FILE_MAX)
                return vmqd_errorf(ret_error, "larger than 16 MiB");
        buf[len] = '\0';

        const char *nul = memchr(buf, '\0', len);
        if (nul)
                return vmqd_errorf(ret_error, "contains a NUL byte at offset %zu",
                                   (size_t)(nul - buf));

        tok = json_tokener_new_ex(JSON_MAX_DEPTH);
        if (!tok)
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        /* The length includes the final NUL: the input ends there. */
        o = json_tokener_parse_ex(tok, buf, (int)len + 1);
        enum json_tokener_error jerr = json_tokener_get_error(tok);
        if (jerr != json_tokener_success || !o) {
                size_t end = VMQ_MIN(json_tokener_get_parse_end(tok), len);
                unsigned line = 1, col = 1;
                if (o)
                        json_object_put(o);
                if (len == 0 || strspn(buf, " \t\r\n") == len)
                        return vmqd_errorf(ret_error, "empty file (expected a JSON object)");
                for (size_t i = 0; i < end; i++) {
                        if (buf[i] == '\n') {
                                line++;
                                col = 1;
                        } else {
                                col++;
                        }
                }
                if (jerr == json_tokener_success) /* the file says "null" */
                        return vmqd_errorf(ret_error, "the top level must be a JSON object");
                return vmqd_errorf(ret_error, "invalid JSON at line %u, column %u: %s", line, col,
                                   jerr == json_tokener_continue ? "unexpected end of data"
                                                                 : json_tokener_error_desc(jerr));
        }
        if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return vmqd_errorf(ret_error, "the top level must be a JSON object");
        }
        *ret = o;
        return 0;
}

int vmqd_parse_size(const char *s, uint64_t *ret) {
        uint64_t v = 0, mult = 1;
        const char *p = s;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                if (__builtin_mul_overflow(v, 10, &v) ||
                    __builtin_add_overflow(v, (uint64_t)(*p - '0'), &v))
                        return -ERANGE;
        }
        switch (*p) {
        case '\0':
                break;
        case 'K':
                mult = KIB;
                break;
        case 'M':
                mult = MIB;
                break;
        case 'G':
                mult = GIB;
                break;
        case 'T':
                mult = TIB;
                break;
        default:
                return -EINVAL;
        }
        if (*p) {
                p++;
                if (strcmp(p, "") != 0 && strcmp(p, "iB") != 0)
                        return -EINVAL;
        }
        if (__builtin_mul_overflow(v, mult, &v))
                return -ERANGE;
        *ret = v;
        return 0;
}

static const char *const log_levels[] = {
        [LOG_ERR] = "err",   [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
        [LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

int vmqd_log_level_from_string(const char *s) {
        if (!s)
                return -EINVAL;
        for (int i = LOG_ERR; i <= LOG_DEBUG; i++)
                if (strcmp(s, log_levels[i]) == 0)
                        return i;
        return -EINVAL;
}

const char *vmqd_log_level_to_string(int level) {
        if (level < LOG_ERR || level > LOG_DEBUG)
                return NULL;
        return log_levels[level];
}

static bool string_in(const char *s, const char *const *list) {
        if (!s)
                return false;
        for (; *list; list++)
                if (strcmp(s, *list) == 0)
                        return true;
        return false;
}

static const char *const modes[] = {"immediate", "deferred", NULL};
static const char *const transfers[] = {"copy", "flip", "auto", NULL};

bool vmqd_mode_is_valid(const char *s) {
        return string_in(s, modes);
}

bool vmqd_transfer_is_valid(const char *s) {
        return string_in(s, transfers);
}

static char *xstrdup(const char *s) {
        char *p = strdup(s);
        if (!p)
                abort();
        return p;
}

void vmqd_config_init(struct vmqd_config *c) {
        *c = (struct vmqd_config){
                .state_dir = xstrdup("/var/lib/vmq"),
                .image_dir = xstrdup(VMQ_IMAGE_DIR),
                .libvirt_uri = xstrdup("qemu:///system"),
                .log_level = LOG_INFO,
                .hugetlb = true,
                .hugetlb_frames = 64,
                .pool_memory = 4 * GIB,
                .max_machines = 64,
                .max_channels = 256,
                .max_queue_depth = 1024,
                .max_memory = 1 * GIB,
                .max_message = 16 * MIB,
                .default_memory = 16 * MIB,
                .default_vcpus = 1,
                .default_queue_depth = 64,
                .default_host_depth = 256,
                .default_mode = xstrdup("immediate"),
                .default_transfer = xstrdup("auto"),
                .stop_timeout_sec = 10,
        };
}

void vmqd_config_done(struct vmqd_config *c) {
        if (!c)
                return;
        free(c->state_dir);
        free(c->image_dir);
        free(c->libvirt_uri);
        free(c->default_mode);
        free(c->default_transfer);
        *c = (struct vmqd_config){0};
}

/* The table of keys. */

enum key_type {
        KEY_PATH,      /* char *, absolute path */
        KEY_STRING,    /* char *, non-empty */
        KEY_MODE,      /* char *, a channel mode */
        KEY_TRANSFER,  /* char *, a transfer policy */
        KEY_LOG_LEVEL, /* int */
        KEY_BOOL,      /* bool */
        KEY_U32,       /* uint32_t, a JSON integer */
        KEY_SIZE,      /* uint64_t, a JSON integer or a size string */
};

#define KEY_POW2 0x1u    /* a power of two */
#define KEY_ALIGN2M 0x2u /* a multiple of 2 MiB */

struct key {
        const char *section; /* NULL: top level */
        const char *name;
        enum key_type type;
        size_t offset;
        uint64_t min, max;
        unsigned flags;
};

#define F(field) offsetof(struct vmqd_config, field)
static const struct key keys[] = {
        {NULL, "state_dir", KEY_PATH, F(state_dir), 0, 0, 0},
        {NULL, "image_dir", KEY_PATH, F(image_dir), 0, 0, 0},
        {NULL, "log_level", KEY_LOG_LEVEL, F(log_level), 0, 0, 0},
        {NULL, "pool_memory", KEY_SIZE, F(pool_memory), 64 * MIB, 1 * TIB, KEY_ALIGN2M},
        {"hugetlb", "enabled", KEY_BOOL, F(hugetlb), 0, 0, 0},
        {"hugetlb", "frames", KEY_U32, F(hugetlb_frames), 1, 65536, 0},
        {"limits", "max_machines", KEY_U32, F(max_machines), 1, 4096, 0},
        {"limits", "max_channels", KEY_U32, F(max_channels), 1, 65536, 0},
        {"limits", "max_queue_depth", KEY_U32, F(max_queue_depth), 4, 1024, KEY_POW2},
        {"limits", "max_memory", KEY_SIZE, F(max_memory), 4 * MIB, 1 * GIB, KEY_ALIGN2M},
        {"limits", "max_message", KEY_SIZE, F(max_message), 64 * KIB, 1 * GIB, 0},
        {"defaults", "memory", KEY_SIZE, F(default_memory), 4 * MIB, 1 * GIB, KEY_ALIGN2M},
        {"defaults", "vcpus", KEY_U32, F(default_vcpus), 1, 8, 0},
        {"defaults", "queue_depth", KEY_U32, F(default_queue_depth), 4, 1024, KEY_POW2},
        {"defaults", "host_depth", KEY_U32, F(default_host_depth), 1, 65536, KEY_POW2},
        {"defaults", "mode", KEY_MODE, F(default_mode), 0, 0, 0},
        {"defaults", "transfer", KEY_TRANSFER, F(default_transfer), 0, 0, 0},
        {"defaults", "stop_timeout", KEY_U32, F(stop_timeout_sec), 1, 3600, 0},
        {"libvirt", "uri", KEY_STRING, F(libvirt_uri), 0, 0, 0},
};
#undef F

static const char *const sections[] = {"hugetlb", "limits", "defaults", "libvirt", NULL};

/* "16 MiB" for exact binary multiples, else the number of bytes. */
static const char *format_size(uint64_t v, char *buf, size_t size) {
        static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
        int u = -1;
        while (u < 3 && v >= 1024 && v % 1024 == 0) {
                v /= 1024;
                u++;
        }
        if (u < 0)
                snprintf(buf, size, "%" PRIu64, v);
        else
                snprintf(buf, size, "%" PRIu64 " %s", v, units[u]);
        return buf;
}
#define FORMAT_SIZE(v) format_size((v), (char[32]){0}, 32)

/* Reads an unsigned integer (from a JSON integer, or for sizes also from a
 * string); false if the type is wrong.  Negative values come back as
 * *negative, so that the range check can report them. */
static int get_unsigned(struct json_object *v, const char *key, bool size, uint64_t *ret,
                        bool *ret_negative, char **ret_error) {
        *ret_negative = false;
        if (json_object_is_type(v, json_type_int)) {
                if (json_object_get_int64(v) < 0) {
                        *ret_negative = true;
                        *ret = 0;
                } else {
                        /* json-c saturates at UINT64_MAX: the range check catches it. */
                        *ret = json_object_get_uint64(v);
                }
                return 0;
        }
        if (size && json_object_is_type(v, json_type_string)) {
                const char *s = json_object_get_string(v);
                int r = vmqd_parse_size(s, ret);
                if (r == -ERANGE) {
                        *ret = UINT64_MAX;
                        return 0;
                }
                if (r < 0 || (size_t)json_object_get_string_len(v) != strlen(s))
                        return vmqd_errorf(ret_error,
                                           "%s: \"%s\" is not a size (use a number of bytes, or a "
                                           "string such as \"16M\" or \"1G\")",
                                           key, VMQD_PRINTABLE(s));
                return 0;
        }
        if (size)
                return vmqd_errorf(
                        ret_error,
                        "%s: must be a size (a number of bytes, or a string such as \"16M\")", key);
        return vmqd_errorf(ret_error, "%s: must be a non-negative integer", key);
}

static int check_range(const char *key, const struct key *k, uint64_t v, bool negative,
                       char **ret_error) {
        if (negative || v < k->min || v > k->max) {
                if (k->type == KEY_SIZE)
                        return vmqd_errorf(ret_error, "%s: must be between %s and %s", key,
                                           FORMAT_SIZE(k->min), FORMAT_SIZE(k->max));
                return vmqd_errorf(ret_error, "%s: must be between %" PRIu64 " and %" PRIu64, key,
                                   k->min, k->max);
        }
        if ((k->flags & KEY_POW2) && !VMQ_IS_POW2(v))
                return vmqd_errorf(ret_error, "%s: must be a power of two", key);
        if ((k->flags & KEY_ALIGN2M) && !VMQ_IS_ALIGNED(v, 2 * MIB))
                return vmqd_errorf(ret_error, "%s: must be a multiple of 2 MiB", key);
        return 0;
}

static int set_string(char **field, const char *s) {
        char *n = strdup(s);
        if (!n)
                return -ENOMEM;
        free(*field);
        *field = n;
        return 0;
}

static int apply_key(struct vmqd_config *c, const struct key *k, struct json_object *v,
                     char **ret_error) {
        char key[64];
        void *field = (char *)c + k->offset;
        uint64_t u = 0;
        bool negative;
        int r;

        snprintf(key, sizeof(key), "%s%s%s", k->section ?: "", k->section ? "." : "", k->name);

        switch (k->type) {
        case KEY_PATH:
        case KEY_STRING:
        case KEY_MODE:
        case KEY_TRANSFER:
        case KEY_LOG_LEVEL: {
                if (!json_object_is_type(v, json_type_string))
                        return vmqd_errorf(ret_error, "%s: must be a string", key);
                const char *s = json_object_get_string(v);
                if ((size_t)json_object_get_string_len(v) != strlen(s))
                        return vmqd_errorf(ret_error, "%s: must not contain NUL characters", key);
                switch (k->type) {
                case KEY_PATH:
                        if (s[0] != '/')
                                return vmqd_errorf(ret_error, "%s: \"%s\" is not an absolute path",
                                                   key, VMQD_PRINTABLE(s));
                        if (strlen(s) >= 4096)
                                return vmqd_errorf(ret_error, "%s: path too long", key);
                        return set_string(field, s);
                case KEY_STRING:
                        if (!*s)
                                return vmqd_errorf(ret_error, "%s: must not be empty", key);
                        return set_string(field, s);
                case KEY_MODE:
                        if (!vmqd_mode_is_valid(s))
                                return vmqd_errorf(
                                        ret_error,
                                        "%s: \"%s\" is not \"immediate\" or \"deferred\"", key,
                                        VMQD_PRINTABLE(s));
                        return set_string(field, s);
                case KEY_TRANSFER:
                        if (!vmqd_transfer_is_valid(s))
                                return vmqd_errorf(
                                        ret_error,
                                        "%s: \"%s\" is not \"copy\", \"flip\" or \"auto\"", key,
                                        VMQD_PRINTABLE(s));
                        return set_string(field, s);
                default:
                        r = vmqd_log_level_from_string(s);
                        if (r < 0)
                                return vmqd_errorf(ret_error,
                                                   "%s: \"%s\" is not one of \"err\", \"warning\", "
                                                   "\"notice\", \"info\", \"debug\"",
                                                   key, VMQD_PRINTABLE(s));
                        *(int *)field = r;
                        return 0;
                }
        }
        case KEY_BOOL:
                if (!json_object_is_type(v, json_type_boolean))
                        return vmqd_errorf(ret_error, "%s: must be true or false", key);
                *(bool *)field = json_object_get_boolean(v);
                return 0;
        case KEY_U32:
        case KEY_SIZE:
                r = get_unsigned(v, key, k->type == KEY_SIZE, &u, &negative, ret_error);
                if (r < 0)
                        return r;
                r = check_range(key, k, u, negative, ret_error);
                if (r < 0)
                        return r;
                if (k->type == KEY_U32)
                        *(uint32_t *)field = (uint32_t)u;
                else
                        *(uint64_t *)field = u;
                return 0;
        }
        return -EINVAL;
}

static const struct key *find_key(const char *section, const char *name) {
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(keys); i++) {
                const struct key *k = &keys[i];
                if ((!section) != (!k->section))
                        continue;
                if (section && strcmp(section, k->section) != 0)
                        continue;
                if (strcmp(name, k->name) == 0)
                        return k;
        }
        return NULL;
}

static int apply_object(struct vmqd_config *c, const char *section, struct json_object *obj,
                        char **ret_error) {
        json_object_object_foreach(obj, name, v) {
                const struct key *k;
                int r;

                if (!section && string_in(name, sections)) {
                        if (!json_object_is_type(v, json_type_object))
                                return vmqd_errorf(ret_error, "%s: must be an object", name);
                        r = apply_object(c, name, v, ret_error);
                        if (r < 0)
                                return r;
                        continue;
                }
                k = find_key(section, name);
                if (!k) {
                        if (section)
                                return vmqd_errorf(ret_error, "%s: unknown key \"%s\"", section,
                                                   VMQD_PRINTABLE(name));
                        return vmqd_errorf(ret_error, "unknown key \"%s\"", VMQD_PRINTABLE(name));
                }
                r = apply_key(c, k, v, ret_error);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Checks between keys, once all are known. */
static int check_config(const struct vmqd_config *c, char **ret_error) {
        if (c->max_memory > c->pool_memory)
                return vmqd_errorf(ret_error, "limits.max_memory: must not exceed pool_memory (%s)",
                                   FORMAT_SIZE(c->pool_memory));
        if (c->default_memory > c->max_memory)
                return vmqd_errorf(ret_error,
                                   "defaults.memory: must not exceed limits.max_memory (%s)",
                                   FORMAT_SIZE(c->max_memory));
        if (c->default_queue_depth > c->max_queue_depth)
                return vmqd_errorf(ret_error,
                                   "defaults.queue_depth: must not exceed limits.max_queue_depth "
                                   "(%" PRIu32 ")",
                                   c->max_queue_depth);
        return 0;
}

static int config_copy(struct vmqd_config *dst, const struct vmqd_config *src) {
        *dst = *src;
        dst->state_dir = dst->image_dir = dst->libvirt_uri = NULL;
        dst->default_mode = dst->default_transfer = NULL;
        if ((src->state_dir && !(dst->state_dir = strdup(src->state_dir))) ||
            (src->image_dir && !(dst->image_dir = strdup(src->image_dir))) ||
            (src->libvirt_uri && !(dst->libvirt_uri = strdup(src->libvirt_uri))) ||
            (src->default_mode && !(dst->default_mode = strdup(src->default_mode))) ||
            (src->default_transfer && !(dst->default_transfer = strdup(src->default_transfer)))) {
                vmqd_config_done(dst);
                return -ENOMEM;
        }
        return 0;
}

int vmqd_config_load(struct vmqd_config *c, const char *path, char **ret_error) {
        _cleanup_json_ struct json_object *root = NULL;
        struct vmqd_config n;
        char *error = NULL;
        int r;

        if (ret_error)
                *ret_error = NULL;
        if (!path)
                return 0;

        r = vmqd_json_parse_file(AT_FDCWD, path, &root, &error);
        if (r >= 0) {
                r = config_copy(&n, c);
                if (r >= 0) {
                        r = apply_object(&n, NULL, root, &error);
                        if (r >= 0)
                                r = check_config(&n, &error);
                        if (r < 0) {
                                vmqd_config_done(&n);
                        } else {
                                vmqd_config_done(c);
                                *c = n;
                        }
                }
        }
        /* I/O errors get a message too, so that the caller can always log
         * one. */
        if (r < 0 && r != -EINVAL && !error)
                error = strdup(strerror(-r));
        if (ret_error)
                *ret_error = error;
        else
                free(error);
        return r;
}
