/* SPDX-License-Identifier: MIT */
/*
 * The calls.  fz_gen_call() picks one kind of call:
 *
 *   - a method of org.vmq1.Manager, .Machine or .Channel with the right
 *     signature and mutated arguments (names of every length and charset,
 *     images that are not images, sizes zero, odd, huge or "negative",
 *     option dictionaries with unknown keys and wrong types, channel ids that
 *     never were, fds of every kind, timeouts from 0 to forever);
 *   - the same with no interface named;
 *   - org.freedesktop.DBus.Properties Get, GetAll and Set of every property
 *     (and of names that are none) on every kind of object;
 *   - a method with a signature it does not take;
 *   - a method or interface that does not exist, on an object that may not;
 *   - Introspect, Ping, GetMachineId, GetManagedObjects anywhere.
 *
 * Each call says what may come back (struct fz_call: allow, mutating,
 * must_fail), so that the worker can judge the reply without a model of
 * vmqd's state.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "tests/busfuzz/busfuzz.h"

#define MIB (1024ull * 1024)

/* Appends to a message and to the call's description; once an append
 * fails, the rest are no-ops and the call is dropped. */
struct builder {
        struct fz_worker *w;
        sd_bus_message *m;
        struct fz_call *c;
        int r;
        bool first; /* no ", " before the next argument */
};

void fz_desc(struct fz_call *call, const char *fmt, ...) {
        size_t len = strlen(call->desc);
        va_list ap;

        if (len + 1 >= sizeof(call->desc))
                return;
        va_start(ap, fmt);
        vsnprintf(call->desc + len, sizeof(call->desc) - len, fmt, ap);
        va_end(ap);
}

/* The call carries something the API documents as invalid: it must fail. */
static void fail_because(struct fz_call *c, const char *why) {
        if (!c->must_fail)
                c->why = why;
        c->must_fail = true;
}

static void sep(struct builder *b) {
        if (!b->first)
                fz_desc(b->c, ", ");
        b->first = false;
}

/* A string, shown quoted and cut. */
static void desc_string(struct fz_call *c, const char *s) {
        size_t len = strlen(s);
        fz_desc(c, "\"");
        for (size_t i = 0; i < len && i < 48; i++) {
                unsigned char ch = (unsigned char)s[i];
                if (ch < 0x20 || ch == '"' || ch == '\\')
                        fz_desc(c, "\\x%02x", ch);
                else
                        fz_desc(c, "%c", ch);
        }
        if (len > 48)
                fz_desc(c, "...\"(%zu bytes)", len);
        else
                fz_desc(c, "\"");
}

static void put_s(struct builder *b, const char *s) {
        if (b->r < 0)
                return;
        sep(b);
        desc_string(b->c, s);
        b->r = sd_bus_message_append_basic(b->m, 's', s);
}

static void put_u(struct builder *b, uint32_t v) {
        if (b->r < 0)
                return;
        sep(b);
        fz_desc(b->c, "%" PRIu32, v);
        b->r = sd_bus_message_append_basic(b->m, 'u', &v);
}

static void put_t(struct builder *b, uint64_t v) {
        if (b->r < 0)
                return;
        sep(b);
        fz_desc(b->c, "%" PRIu64, v);
        b->r = sd_bus_message_append_basic(b->m, 't', &v);
}

static void put_h(struct builder *b, int fd, const char *what) {
        if (b->r < 0)
                return;
        sep(b);
        fz_desc(b->c, "fd:%s", what);
        b->r = sd_bus_message_append_basic(b->m, 'h', &fd); /* sd-bus dups it */
}

static void put_bytes(struct builder *b, const void *data, size_t len) {
        if (b->r < 0)
                return;
        sep(b);
        fz_desc(b->c, "ay[%zu]", len);
        b->r = sd_bus_message_append_array(b->m, 'y', data, len);
}

/* One value of a random basic or container type: for wrong signatures and
 * wrong option types.  Returns the type's signature. */
static const char *put_random_value(struct builder *b, const char *type) {
        uint64_t *rng = &b->w->rng;
        uint64_t t = fz_next(rng);
        if (b->r < 0)
                return type;
        sep(b);
        switch (type[0]) {
        case 's':
        case 'o':
        case 'g': {
                const char *v = type[0] == 's'   ? (fz_chance(rng, 500) ? "host" : "x")
                                : type[0] == 'o' ? "/org/vmq1"
                                                 : "s";
                fz_desc(b->c, "%c:%s", type[0], v);
                b->r = sd_bus_message_append_basic(b->m, type[0], v);
                break;
        }
        case 'b': {
                int v = (int)(t & 1);
                fz_desc(b->c, "b:%d", v);
                b->r = sd_bus_message_append_basic(b->m, 'b', &v);
                break;
        }
        case 'y':
        case 'n':
        case 'q':
        case 'i':
        case 'u':
        case 'x':
        case 't':
        case 'd':
                fz_desc(b->c, "%c:%" PRIu64, type[0], t);
                b->r = sd_bus_message_append_basic(b->m, type[0], &t);
                break;
        case 'h': {
                int fd = eventfd(0, EFD_CLOEXEC);
                fz_desc(b->c, "h:eventfd");
                if (fd < 0) {
                        b->r = -errno;
                        break;
                }
                b->r = sd_bus_message_append_basic(b->m, 'h', &fd);
                close(fd);
                break;
        }
        case 'v':
                fz_desc(b->c, "v:<u 7>");
                b->r = sd_bus_message_append(b->m, "v", "u", 7);
                break;
        default:
                /* containers: a few fixed shapes */
                if (strcmp(type, "ay") == 0) {
                        fz_desc(b->c, "ay[3]");
                        b->r = sd_bus_message_append_array(b->m, 'y', "abc", 3);
                } else if (strcmp(type, "as") == 0) {
                        fz_desc(b->c, "as[2]");
                        b->r = sd_bus_message_append(b->m, "as", 2, "host", "x");
                } else if (strcmp(type, "a{sv}") == 0) {
                        fz_desc(b->c, "{memory: s \"x\"}");
                        b->r = sd_bus_message_append(b->m, "a{sv}", 1, "memory", "s", "x");
                } else if (strcmp(type, "a{ss}") == 0) {
                        fz_desc(b->c, "{a: b}");
                        b->r = sd_bus_message_append(b->m, "a{ss}", 1, "a", "b");
                } else if (strcmp(type, "(ss)") == 0) {
                        fz_desc(b->c, "(host, x)");
                        b->r = sd_bus_message_append(b->m, "(ss)", "host", "x");
                } else if (strcmp(type, "a{st}") == 0) {
                        fz_desc(b->c, "{sent: 1}");
                        b->r = sd_bus_message_append(b->m, "a{st}", 1, "sent", (uint64_t)1);
                } else if (strcmp(type, "(uss)") == 0) {
                        fz_desc(b->c, "(1, x, y)");
                        b->r = sd_bus_message_append(b->m, "(uss)", 1, "x", "y");
                } else if (strcmp(type, "(tt)") == 0) {
                        fz_desc(b->c, "(1, 2)");
                        b->r = sd_bus_message_append(b->m, "(tt)", (uint64_t)1, (uint64_t)2);
                } else {
                        b->r = -EINVAL;
                }
                break;
        }
        return type;
}

/* ---- values ---- */

/* 1..63 characters from [A-Za-z0-9_.-], not starting with '.' or '-', not
 * "host". */
static bool name_is_valid(const char *s) {
        size_t len = strlen(s);
        if (len < 1 || len > 63 || s[0] == '.' || s[0] == '-' || strcmp(s, "host") == 0)
                return false;
        for (size_t i = 0; i < len; i++) {
                char ch = s[i];
                if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                      (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
                        return false;
        }
        return true;
}

/* A machine name; whether it is a valid one goes into *valid. */
static const char *gen_name(struct fz_worker *w, char *buf, size_t size, bool *valid) {
        static const char charset[] =
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-";
        static const char *const odd[] = {
                "",     "host", ".x", "-x",    "a b",   "a/b",   "\xc3\xa4", "\xf0\x9f\x98\x80",
                "a\tb", "a\nb", "%",  "..",    ".",     "x\x01", "HOST",     "Host",
                "_",    "a-",   "9",  "a.b.c", "host ",
        };
        uint64_t *rng = &w->rng;
        const char *s;

        switch (fz_below(rng, 10)) {
        case 0:
        case 1:
        case 2:
        case 3:
                if (w->n_names > 0) {
                        s = w->names[fz_below(rng, w->n_names)];
                        break;
                }
                /* fall through */
        case 4:
        case 5:
                snprintf(buf, size, "fz%u", (unsigned)fz_below(rng, 12));
                s = buf;
                break;
        case 6: {
                size_t len = 1 + fz_below(rng, 63);
                for (size_t i = 0; i < len && i + 1 < size; i++)
                        buf[i] = charset[fz_below(rng, sizeof(charset) - 1)];
                buf[len < size ? len : size - 1] = 0;
                s = buf;
                break;
        }
        case 7: {
                /* long: 64 and more; now and then 64 KiB */
                static const size_t lens[] = {64, 65, 100, 255, 256, 1000, 4096};
                size_t len = fz_chance(rng, 20)
                                     ? size - 1
                                     : lens[fz_below(rng, sizeof(lens) / sizeof(lens[0]))];
                if (len >= size)
                        len = size - 1;
                memset(buf, fz_chance(rng, 500) ? 'a' : 'Z', len);
                buf[len] = 0;
                s = buf;
                break;
        }
        default:
                s = odd[fz_below(rng, sizeof(odd) / sizeof(odd[0]))];
                break;
        }
        *valid = name_is_valid(s);
        return s;
}

static uint32_t gen_channel_id(struct fz_worker *w) {
        uint64_t *rng = &w->rng;
        switch (fz_below(rng, 10)) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 4:
                if (w->n_channels > 0)
                        return w->channels[fz_below(rng, w->n_channels)];
                /* fall through */
        case 5:
        case 6:
                if (w->n_anchor_channels > 0)
                        return w->anchor_channels[fz_below(rng, w->n_anchor_channels)];
                return 1 + (uint32_t)fz_below(rng, 8);
        case 7:
                return 0;
        case 8:
                return UINT32_MAX - (uint32_t)fz_below(rng, 2);
        default:
                return (uint32_t)fz_next(rng);
        }
}

static uint64_t gen_tag(struct fz_worker *w) {
        if (fz_chance(&w->rng, 100))
                return fz_next(&w->rng);
        return FZ_TAG_MAGIC | (w->next_tag++ & ~FZ_TAG_MASK);
}

/* A value of the option's own type, mutated; *bad when the API documents
 * the value as invalid. */
static void put_option_value(struct builder *b, const char *key, const char *type,
                             const char **bad) {
        uint64_t *rng = &b->w->rng;

        if (strcmp(type, "t") == 0) {
                static const uint64_t good[] = {2 * MIB, 4 * MIB, 16 * MIB, 32 * MIB, 64 * MIB};
                static const uint64_t odd[] = {0,          1,          2 * MIB + 1,
                                               3 * MIB,    4096,       128 * MIB,
                                               1ull << 40, UINT64_MAX, UINT64_MAX - 2 * MIB + 1,
                                               1ull << 63};
                uint64_t v;
                if (strcmp(key, "huge_memory") == 0 && fz_chance(rng, 500))
                        v = 0;
                else if (fz_chance(rng, 600))
                        v = good[fz_below(rng, sizeof(good) / sizeof(good[0]))];
                else
                        v = odd[fz_below(rng, sizeof(odd) / sizeof(odd[0]))];
                if (strcmp(key, "memory") == 0 && (v == 0 || v % (2 * MIB) != 0))
                        *bad = "memory that is not a non-zero multiple of 2 MiB";
                if (strcmp(key, "huge_memory") == 0 && v % (2 * MIB) != 0)
                        *bad = "huge_memory that is not a multiple of 2 MiB";
                fz_desc(b->c, "t %" PRIu64, v);
                b->r = sd_bus_message_append(b->m, "v", "t", v);
        } else if (strcmp(type, "u") == 0) {
                static const uint32_t vals[] = {0,    1,    2,     3,        4,         5,
                                                8,    9,    16,    64,       255,       256,
                                                1024, 2048, 65536, 1u << 31, UINT32_MAX};
                uint32_t v = vals[fz_below(rng, sizeof(vals) / sizeof(vals[0]))];
                if (strcmp(key, "vcpus") == 0 && v == 0)
                        *bad = "0 vcpus";
                if (strcmp(key, "queue_depth") == 0 && (v == 0 || (v & (v - 1)) != 0))
                        *bad = "a queue_depth that is not a power of two";
                fz_desc(b->c, "u %" PRIu32, v);
                b->r = sd_bus_message_append(b->m, "v", "u", v);
        } else if (strcmp(type, "b") == 0) {
                int v = fz_chance(rng, strcmp(key, "start") == 0 ? 250 : 400);
                fz_desc(b->c, "b %d", v);
                b->r = sd_bus_message_append(b->m, "v", "b", v);
        } else if (strcmp(key, "uuid") == 0) {
                static const char *const vals[] = {
                        "00000000-0000-0000-0000-000000000000",
                        "",
                        "x",
                        "0123456789abcdef0123456789abcdeg",
                        "01234567-89ab-cdef-0123-456789abcdef0",
                        "{01234567-89ab-cdef-0123-456789abcdef}",
                };
                char buf[40];
                const char *v;
                if (fz_chance(rng, 500)) {
                        uint64_t hi = fz_next(rng), lo = fz_next(rng);
                        snprintf(buf, sizeof(buf), "%08x-%04x-4%03x-a%03x-%012llx",
                                 (unsigned)(hi >> 32), (unsigned)(hi >> 16) & 0xffff,
                                 (unsigned)hi & 0xfff, (unsigned)(lo >> 48) & 0xfff,
                                 (unsigned long long)(lo & 0xffffffffffffull));
                        v = buf;
                } else {
                        v = vals[fz_below(rng, sizeof(vals) / sizeof(vals[0]))];
                        *bad = v[0] == '0' && v[1] == '0' ? "the nil UUID" : "a UUID that is none";
                }
                desc_string(b->c, v);
                b->r = sd_bus_message_append(b->m, "v", "s", v);
        } else if (strcmp(key, "mode") == 0 || strcmp(key, "transfer") == 0) {
                static const char *const good[] = {"immediate", "deferred", "copy", "flip", "auto"};
                static const char *const odd[] = {"", "IMMEDIATE", "page", "copy ", "x"};
                const char *v;
                if (fz_chance(rng, 700)) {
                        v = strcmp(key, "mode") == 0 ? good[fz_below(rng, 2)]
                                                     : good[2 + fz_below(rng, 3)];
                } else {
                        v = odd[fz_below(rng, sizeof(odd) / sizeof(odd[0]))];
                        *bad = "an unknown mode or transfer";
                }
                desc_string(b->c, v);
                b->r = sd_bus_message_append(b->m, "v", "s", v);
        } else {
                /* other strings: args, a domain's name */
                static const size_t lens[] = {0, 7, 255, 511, 512, 4096, 100000};
                size_t len = lens[fz_below(rng, sizeof(lens) / sizeof(lens[0]))];
                char *v = malloc(len + 1);
                if (!v) {
                        b->r = -ENOMEM;
                        return;
                }
                if (len == 7)
                        memcpy(v, "count=1", 7);
                else
                        memset(v, 'a', len);
                v[len] = 0;
                desc_string(b->c, v);
                b->r = sd_bus_message_append(b->m, "v", "s", v);
                free(v);
        }
}

struct option_spec {
        const char *key;
        const char *type;
};

/* An a{sv} of options from specs, mutated: unknown keys, wrong types,
 * odd values, keys given twice.  An unknown key or a wrong type makes the
 * call invalid wherever it is; a bad value only when it is the key's last
 * (the last one given wins). */
#define MAX_SPECS 16
static void put_options(struct builder *b, const struct option_spec *specs, size_t n) {
        static const char *const unknown[] = {"nosuch",  "",        "Memory",
                                              "memory ", "start\n", "persistent.x"};
        static const char *const wrong_types[] = {"s",     "u", "t", "b",    "i",    "ay", "as",
                                                  "a{sv}", "v", "h", "(ss)", "(tt)", "d",  "o"};
        uint64_t *rng = &b->w->rng;
        unsigned count = (unsigned)fz_below(rng, 5);
        const char *last_bad[MAX_SPECS] = {0};

        if (b->r < 0 || n > MAX_SPECS)
                return;
        sep(b);
        fz_desc(b->c, "{");
        b->r = sd_bus_message_open_container(b->m, 'a', "{sv}");
        for (unsigned i = 0; i < count && b->r >= 0; i++) {
                size_t k = fz_below(rng, n);
                const struct option_spec *o = &specs[k];
                const char *key = o->key;
                const char *bad = NULL;

                if (fz_chance(rng, 60)) {
                        key = unknown[fz_below(rng, sizeof(unknown) / sizeof(unknown[0]))];
                        fail_because(b->c, "an unknown option");
                }
                if (i > 0)
                        fz_desc(b->c, ", ");
                fz_desc(b->c, "%s: ", key);
                b->r = sd_bus_message_open_container(b->m, 'e', "sv");
                if (b->r >= 0)
                        b->r = sd_bus_message_append_basic(b->m, 's', key);
                if (b->r < 0)
                        break;
                if (fz_chance(rng, 100)) {
                        const char *t = wrong_types[fz_below(rng, sizeof(wrong_types) /
                                                                          sizeof(wrong_types[0]))];
                        if (strcmp(t, o->type) != 0)
                                fail_because(b->c, "an option of the wrong type");
                        else if (key == o->key)
                                last_bad[k] = NULL; /* a value of its type, unjudged */
                        fz_desc(b->c, "%s ", t);
                        b->r = sd_bus_message_open_container(b->m, 'v', t);
                        if (b->r >= 0) {
                                bool saved = b->first;
                                b->first = true;
                                put_random_value(b, t);
                                b->first = saved;
                        }
                        if (b->r >= 0)
                                b->r = sd_bus_message_close_container(b->m);
                } else {
                        put_option_value(b, key, o->type, &bad);
                        if (key == o->key)
                                last_bad[k] = bad;
                }
                if (b->r >= 0)
                        b->r = sd_bus_message_close_container(b->m);
        }
        if (b->r >= 0)
                b->r = sd_bus_message_close_container(b->m);
        fz_desc(b->c, "}");
        for (size_t k = 0; k < n; k++)
                if (last_bad[k])
                        fail_because(b->c, last_bad[k]);
}

/* ---- the methods ---- */

enum where { ON_MANAGER, ON_MACHINE, ON_CHANNEL };

struct method {
        enum where where;
        const char *member;
        const char *signature;
        const char *reply;
        bool mutating;
        unsigned weight;
        void (*args)(struct builder *b);
};

static void name_arg(struct builder *b) {
        char buf[4200];
        bool valid;
        const char *name = gen_name(b->w, buf, sizeof(buf), &valid);
        if (!valid)
                fail_because(b->c, "an invalid machine name"); /* no machine has one */
        put_s(b, name);
}

static void args_create(struct builder *b) {
        static const struct option_spec specs[] = {
                {"memory", "t"},      {"vcpus", "u"},     {"queue_depth", "u"},
                {"huge_memory", "t"}, {"args", "s"},      {"uuid", "s"},
                {"persistent", "b"},  {"autostart", "b"}, {"start", "b"},
        };
        char buf[4200], img[8300];
        bool valid;
        const char *name = gen_name(b->w, buf, sizeof(buf), &valid);

        if (!valid)
                fail_because(b->c, "an invalid machine name");
        put_s(b, name);
        snprintf(b->c->name, sizeof(b->c->name), "%s", name);
        put_s(b,
              fz_image_path(&b->w->rng, b->w->o->work_dir, b->w->o->guest_dir, img, sizeof(img)));
        put_options(b, specs, sizeof(specs) / sizeof(specs[0]));
        b->c->check = CHECK_CREATE;
}

static void args_adopt(struct builder *b) {
        static const struct option_spec specs[] = {
                {"name", "s"}, {"persistent", "b"}, {"region_size", "t"}, {"rx_size", "t"}};
        char buf[4200];
        bool valid;
        put_s(b, gen_name(b->w, buf, sizeof(buf), &valid));
        put_options(b, specs, sizeof(specs) / sizeof(specs[0]));
}

static void args_name(struct builder *b) {
        name_arg(b);
}

static uint32_t gen_stop_timeout(struct builder *b) {
        static const uint32_t vals[] = {0, 1, 0, 1, 2, 5, 60, UINT32_MAX};
        uint32_t t = vals[fz_below(&b->w->rng, sizeof(vals) / sizeof(vals[0]))];
        /* 0 is the configured default (the run script sets 1 s) */
        if (t > 1)
                b->c->abandon = true;
        return t;
}

static void args_stop(struct builder *b) {
        name_arg(b);
        put_u(b, gen_stop_timeout(b));
}

static void args_none(struct builder *b) {
        (void)b;
}

static void args_open(struct builder *b) {
        static const struct option_spec specs[] = {
                {"depth", "u"}, {"mode", "s"}, {"transfer", "s"}, {"persistent", "b"}};
        char buf[2][4200];
        for (int i = 0; i < 2; i++) {
                bool valid = true;
                const char *end = fz_chance(&b->w->rng, 400)
                                          ? "host"
                                          : gen_name(b->w, buf[i], sizeof(buf[i]), &valid);
                if (!valid)
                        fail_because(b->c, "an invalid machine name");
                put_s(b, end);
        }
        put_options(b, specs, sizeof(specs) / sizeof(specs[0]));
        b->c->check = CHECK_OPEN;
}

static void args_channel(struct builder *b) {
        put_u(b, gen_channel_id(b->w));
}

static void args_send(struct builder *b) {
        static const size_t sizes[] = {0, 1, 7, 100, 4096, 65535, 65536, 65537, 200000, 1u << 20};
        size_t len = sizes[fz_below(&b->w->rng, sizeof(sizes) / sizeof(sizes[0]))];
        uint64_t tag = gen_tag(b->w);
        uint8_t *data = malloc(len ? len : 1);

        if (!data) {
                b->r = -ENOMEM;
                return;
        }
        fz_pattern(tag, data, len);
        put_u(b, gen_channel_id(b->w));
        put_bytes(b, data, len);
        put_t(b, tag);
        free(data);
        if (len > FZ_MAX_INLINE)
                fail_because(b->c, "more than 64 KiB");
}

static void args_send_fd(struct builder *b) {
        uint64_t tag = gen_tag(b->w);
        struct fz_fd f;
        int r;

        put_u(b, gen_channel_id(b->w));
        r = fz_fd_make(&b->w->rng, b->w->o->work_dir, tag, b->w->o->max_message, &f);
        if (r < 0) {
                b->r = r;
                return;
        }
        put_h(b, f.fd, f.what);
        close(f.fd);
        put_t(b, tag);
        if (!f.valid)
                fail_because(b->c, "an fd that is not a sealed memfd of at most max_message");
}

static void args_receive(struct builder *b) {
        static const uint64_t waited[] = {0, 0, 1, 1000, 50000, 100000};
        static const uint64_t long_ones[] = {2000000, 10000000, UINT64_MAX, UINT64_MAX - 1,
                                             1ull << 63};
        uint64_t t;
        put_u(b, gen_channel_id(b->w));
        if (fz_chance(&b->w->rng, 850)) {
                t = waited[fz_below(&b->w->rng, sizeof(waited) / sizeof(waited[0]))];
        } else {
                t = long_ones[fz_below(&b->w->rng, sizeof(long_ones) / sizeof(long_ones[0]))];
                b->c->abandon = true;
        }
        put_t(b, t);
        b->c->check = CHECK_RECEIVE;
}

static void args_machine_stop(struct builder *b) {
        put_u(b, gen_stop_timeout(b));
}

static void args_console(struct builder *b) {
        static const uint64_t vals[] = {0, 1, 4096, 65536, 65537, 1ull << 32, UINT64_MAX};
        put_t(b, fz_chance(&b->w->rng, 800)
                         ? vals[fz_below(&b->w->rng, sizeof(vals) / sizeof(vals[0]))]
                         : fz_next(&b->w->rng));
}

static const struct method methods[] = {
        {ON_MANAGER, "CreateMachine", "ssa{sv}", "o", true, 12, args_create},
        {ON_MANAGER, "AdoptDomain", "sa{sv}", "o", true, 1, args_adopt},
        {ON_MANAGER, "StartMachine", "s", "", true, 4, args_name},
        {ON_MANAGER, "StopMachine", "su", "", true, 3, args_stop},
        {ON_MANAGER, "DestroyMachine", "s", "", true, 3, args_name},
        {ON_MANAGER, "UndefineMachine", "s", "", true, 6, args_name},
        {ON_MANAGER, "ListMachines", "", "a(ssuso)", false, 2, args_none},
        {ON_MANAGER, "GetMachine", "s", "o", false, 3, args_name},
        {ON_MANAGER, "OpenChannel", "ssa{sv}", "uo", true, 8, args_open},
        {ON_MANAGER, "CloseChannel", "u", "", true, 4, args_channel},
        {ON_MANAGER, "ListChannels", "", "a(ussbo)", false, 2, args_none},
        {ON_MANAGER, "GetChannel", "u", "o", false, 3, args_channel},
        {ON_MANAGER, "Send", "uayt", "", true, 8, args_send},
        {ON_MANAGER, "SendFd", "uht", "", true, 6, args_send_fd},
        {ON_MANAGER, "Receive", "ut", "a{sv}", true, 8, args_receive},
        {ON_MANAGER, "GetStatistics", "", "a{sv}", false, 2, args_none},
        {ON_MACHINE, "Start", "", "", true, 2, args_none},
        {ON_MACHINE, "Stop", "u", "", true, 2, args_machine_stop},
        {ON_MACHINE, "Destroy", "", "", true, 2, args_none},
        {ON_MACHINE, "Undefine", "", "", true, 2, args_none},
        {ON_MACHINE, "ReadConsole", "t", "ayt", false, 3, args_console},
        {ON_CHANNEL, "Close", "", "", true, 3, args_none},
};
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))

static const struct method *pick_method(uint64_t *rng) {
        unsigned total = 0;
        for (size_t i = 0; i < N_METHODS; i++)
                total += methods[i].weight;
        unsigned x = (unsigned)fz_below(rng, total);
        for (size_t i = 0; i < N_METHODS; i++) {
                if (x < methods[i].weight)
                        return &methods[i];
                x -= methods[i].weight;
        }
        return &methods[0];
}

static const char *interface_of(enum where where) {
        return where == ON_MANAGER ? FZ_MANAGER : where == ON_MACHINE ? FZ_MACHINE : FZ_CHANNEL;
}

/* An object path of the kind `where`; *maybe_gone: it may not exist. */
static char *gen_path(struct fz_worker *w, enum where where, bool *maybe_gone) {
        char *path = NULL;
        *maybe_gone = where != ON_MANAGER;
        if (where == ON_MACHINE) {
                char buf[300];
                bool valid;
                const char *name = gen_name(w, buf, sizeof(buf), &valid);
                if (sd_bus_path_encode(FZ_MACHINE_PREFIX, name, &path) < 0)
                        return NULL;
        } else if (where == ON_CHANNEL) {
                if (asprintf(&path, FZ_CHANNEL_PREFIX "/%" PRIu32, gen_channel_id(w)) < 0)
                        return NULL;
        } else {
                path = strdup(FZ_PATH);
        }
        return path;
}

static const char *const bogus_paths[] = {
        "/",
        "/org",
        "/org/vmq1/machine",
        "/org/vmq1/channel",
        "/org/vmq1/channel/abc",
        "/org/vmq1/channel/0",
        "/org/vmq1/channel/4294967296",
        "/org/vmq1/channel/00001",
        "/org/vmq1/channel/1/2",
        "/org/vmq1/machine/_",
        "/org/vmq1/machine/host",
        "/org/vmq1/machine/a/b",
        "/org/vmq1/machine/_2e_2e",
        "/org/vmq1/machineX",
        "/org/vmq1/Manager",
        "/org/vmq2",
        "/org/freedesktop/DBus",
};

static sd_bus_message *new_call(sd_bus *bus, struct fz_call *c, const char *path, const char *iface,
                                const char *member) {
        sd_bus_message *m = NULL;
        if (sd_bus_message_new_method_call(bus, &m, FZ_BUS_NAME, path, iface, member) < 0)
                return NULL;
        snprintf(c->member, sizeof(c->member), "%s", member);
        fz_desc(c, "%s.%s(", iface ? iface : "<no interface>", member);
        return m;
}

static void finish_desc(struct fz_call *c, const char *path) {
        fz_desc(c, ") on %s", path);
}

/* A method of the table, with its own signature (iface NULL: none named). */
static sd_bus_message *gen_method(struct fz_worker *w, sd_bus *bus, struct fz_call *c,
                                  bool name_interface) {
        const struct method *md = pick_method(&w->rng);
        bool maybe_gone;
        char *path = gen_path(w, md->where, &maybe_gone);
        sd_bus_message *m;

        if (!path)
                return NULL;
        m = new_call(bus, c, path, name_interface ? interface_of(md->where) : NULL, md->member);
        if (!m) {
                free(path);
                return NULL;
        }
        struct builder b = {.w = w, .m = m, .c = c, .first = true};
        c->mutating = md->mutating;
        c->valid_signature = true;
        c->reply_signature = md->reply;
        c->allow = A_VMQ | (maybe_gone ? A_UNKNOWN_OBJECT : 0);
        /* sd-bus dispatches no call without an interface: UnknownObject */
        if (!name_interface)
                c->allow |= A_UNKNOWN_ANY;
        md->args(&b);
        finish_desc(c, path);
        free(path);
        if (b.r < 0)
                return sd_bus_message_unref(m);
        return m;
}

static const char *const signatures[] = {
        "",      "s",       "u",      "t",  "b", "i",   "ss",   "su",  "us",    "uu",
        "sss",   "ssa{sv}", "sa{sv}", "ay", "h", "ut",  "uayt", "uht", "v",     "as",
        "a{ss}", "(ss)",    "o",      "g",  "d", "uuu", "ssss", "tu",  "a{sv}", "sas",
};

/* Splits a signature into complete types (only the shapes of the table). */
static size_t next_type(const char *sig, char *out, size_t size) {
        size_t len = 0;
        if (!sig[0])
                return 0;
        if (sig[0] == 'a' && sig[1] == '{') {
                const char *end = strchr(sig, '}');
                len = end ? (size_t)(end - sig) + 1 : strlen(sig);
        } else if (sig[0] == 'a') {
                len = 2;
        } else if (sig[0] == '(') {
                const char *end = strchr(sig, ')');
                len = end ? (size_t)(end - sig) + 1 : strlen(sig);
        } else {
                len = 1;
        }
        snprintf(out, size, "%.*s", (int)len, sig);
        return len;
}

/* A method of the table with arguments it does not take. */
static sd_bus_message *gen_wrong_signature(struct fz_worker *w, sd_bus *bus, struct fz_call *c) {
        const struct method *md = pick_method(&w->rng);
        const char *sig;
        bool maybe_gone;
        char *path;
        sd_bus_message *m;

        do
                sig = signatures[fz_below(&w->rng, sizeof(signatures) / sizeof(signatures[0]))];
        while (strcmp(sig, md->signature) == 0);
        path = gen_path(w, md->where, &maybe_gone);
        if (!path)
                return NULL;
        m = new_call(bus, c, path, interface_of(md->where), md->member);
        if (!m) {
                free(path);
                return NULL;
        }
        struct builder b = {.w = w, .m = m, .c = c, .first = true};
        c->mutating = md->mutating;
        c->valid_signature = false;
        c->allow = A_INVALID_ARGS | (maybe_gone ? A_UNKNOWN_OBJECT : 0);
        fail_because(c, "a wrong signature");
        for (const char *p = sig; *p;) {
                char type[16];
                size_t len = next_type(p, type, sizeof(type));
                put_random_value(&b, type);
                p += len;
        }
        fz_desc(c, " as '%s'", sig);
        finish_desc(c, path);
        free(path);
        if (b.r < 0)
                return sd_bus_message_unref(m);
        return m;
}

/* A method or interface that is not there, or a bogus object. */
static sd_bus_message *gen_bogus(struct fz_worker *w, sd_bus *bus, struct fz_call *c) {
        static const char *const members[] = {
                "Nope", "createmachine", "CreateMachine2", "Get", "Introspect", "Close", "Start"};
        static const char *const ifaces[] = {"org.vmq1.Bogus", "org.vmq1", "org.vmq1.Manager.X",
                                             FZ_MANAGER,       FZ_MACHINE, FZ_CHANNEL};
        uint64_t *rng = &w->rng;
        const char *path;
        bool maybe_gone = true;
        char *own = NULL;

        if (fz_chance(rng, 500)) {
                path = bogus_paths[fz_below(rng, sizeof(bogus_paths) / sizeof(bogus_paths[0]))];
        } else {
                own = gen_path(w, (enum where)fz_below(rng, 3), &maybe_gone);
                if (!own)
                        return NULL;
                path = own;
        }
        const char *iface = ifaces[fz_below(rng, sizeof(ifaces) / sizeof(ifaces[0]))];
        const char *member = members[fz_below(rng, sizeof(members) / sizeof(members[0]))];
        sd_bus_message *m = new_call(bus, c, path, iface, member);
        if (m) {
                c->allow = A_UNKNOWN_ANY | A_INVALID_ARGS;
                /* The Machine and Channel interfaces have Start and Close: on
                 * a path that resolves, they are real, mutating calls. */
                if ((strcmp(member, "Start") == 0 && strcmp(iface, FZ_MACHINE) == 0) ||
                    (strcmp(member, "Close") == 0 && strcmp(iface, FZ_CHANNEL) == 0)) {
                        c->mutating = true;
                        c->valid_signature = true;
                        c->allow = A_UNKNOWN_ANY | A_VMQ;
                }
                finish_desc(c, path);
        }
        free(own);
        return m;
}

static const char *const properties[] = {
        /* Manager */
        "Version",
        "StateDirectory",
        "ImageDirectory",
        "CorruptStateFile",
        "HugePages",
        "MaxInlineSend",
        /* Machine */
        "Name",
        "UUID",
        "Backend",
        "Domain",
        "Image",
        "Memory",
        "VCPUs",
        "QueueDepth",
        "Persistent",
        "Autostart",
        "Id",
        "State",
        "ExitCode",
        "CrashReason",
        "Statistics",
        /* Channel */
        "EndA",
        "EndB",
        "IdentityA",
        "IdentityB",
        "Mode",
        "Transfer",
        "Depth",
        "Open",
        "Linked",
        "Messages",
        "Bytes",
        /* none */
        "",
        "Nope",
        "version",
        "State ",
        "a.b",
};

static bool member_name_is_valid(const char *s) {
        if (!s[0] || strlen(s) > 255 || (s[0] >= '0' && s[0] <= '9'))
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      (*p >= '0' && *p <= '9') || *p == '_'))
                        return false;
        return true;
}

static bool interface_name_is_valid(const char *s) {
        char buf[256];
        unsigned parts = 0;
        if (!s[0] || strlen(s) > 255)
                return false;
        snprintf(buf, sizeof(buf), "%s", s);
        for (char *save = NULL, *p = strtok_r(buf, ".", &save); p;
             p = strtok_r(NULL, ".", &save), parts++)
                if (!member_name_is_valid(p))
                        return false;
        return parts >= 2 && s[strlen(s) - 1] != '.' && s[0] != '.' && !strstr(s, "..");
}

static sd_bus_message *gen_property(struct fz_worker *w, sd_bus *bus, struct fz_call *c) {
        static const char *const ifaces[] = {
                FZ_MANAGER, FZ_MACHINE,      FZ_CHANNEL, FZ_MANAGER,         FZ_MACHINE,
                FZ_CHANNEL, "org.vmq1.Nope", "",         "not an interface", FZ_PROPERTIES};
        static const char *const variants[] = {"s", "u", "t", "b", "i", "a{st}", "(uss)", "(tt)"};
        uint64_t *rng = &w->rng;
        bool maybe_gone;
        char *path;
        const char *iface = ifaces[fz_below(rng, sizeof(ifaces) / sizeof(ifaces[0]))];
        const char *prop = properties[fz_below(rng, sizeof(properties) / sizeof(properties[0]))];
        unsigned kind = (unsigned)fz_below(rng, 4); /* Get, Get, GetAll, Set */
        const char *member = kind == 2 ? "GetAll" : kind == 3 ? "Set" : "Get";

        if (fz_chance(rng, 100)) {
                path = strdup(
                        bogus_paths[fz_below(rng, sizeof(bogus_paths) / sizeof(bogus_paths[0]))]);
                maybe_gone = true;
        } else {
                enum where where = (enum where)fz_below(rng, 3);
                path = gen_path(w, where, &maybe_gone);
                /* mostly a property the object has */
                if (fz_chance(rng, 600)) {
                        static const size_t first[] = {0, 6, 21, 32};
                        iface = interface_of(where);
                        prop = properties[first[where] +
                                          fz_below(rng, first[where + 1] - first[where])];
                }
        }
        if (!path)
                return NULL;
        sd_bus_message *m = new_call(bus, c, path, FZ_PROPERTIES, member);
        if (!m) {
                free(path);
                return NULL;
        }
        struct builder b = {.w = w, .m = m, .c = c, .first = true};
        c->allow = A_UNKNOWN_PROPERTY | A_UNKNOWN_INTERFACE | (maybe_gone ? A_UNKNOWN_ANY : 0);
        if (!interface_name_is_valid(iface) || (kind != 2 && !member_name_is_valid(prop)))
                c->allow |= A_INVALID_ARGS;
        c->valid_signature = true;
        put_s(&b, iface);
        if (kind != 2)
                put_s(&b, prop);
        if (kind == 3) {
                /* nothing is writable */
                const char *t = variants[fz_below(rng, sizeof(variants) / sizeof(variants[0]))];
                c->allow |= A_READ_ONLY | A_INVALID_ARGS;
                fail_because(c, "a read-only property");
                if (b.r >= 0)
                        b.r = sd_bus_message_open_container(m, 'v', t);
                put_random_value(&b, t);
                if (b.r >= 0)
                        b.r = sd_bus_message_close_container(m);
        }
        if (kind == 0 || kind == 1)
                c->reply_signature = "v";
        else if (kind == 2)
                c->reply_signature = "a{sv}";
        finish_desc(c, path);
        free(path);
        if (b.r < 0)
                return sd_bus_message_unref(m);
        return m;
}

static sd_bus_message *gen_standard(struct fz_worker *w, sd_bus *bus, struct fz_call *c) {
        static const struct {
                const char *iface, *member, *reply;
        } std[] = {
                {"org.freedesktop.DBus.Introspectable", "Introspect", "s"},
                {"org.freedesktop.DBus.Peer", "Ping", ""},
                {"org.freedesktop.DBus.Peer", "GetMachineId", "s"},
                {"org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "a{oa{sa{sv}}}"},
        };
        uint64_t *rng = &w->rng;
        unsigned k = (unsigned)fz_below(rng, sizeof(std) / sizeof(std[0]));
        bool maybe_gone = true;
        char *path;

        if (fz_chance(rng, 300))
                path = strdup(
                        bogus_paths[fz_below(rng, sizeof(bogus_paths) / sizeof(bogus_paths[0]))]);
        else
                path = gen_path(w, (enum where)fz_below(rng, 3), &maybe_gone);
        if (!path)
                return NULL;
        sd_bus_message *m = new_call(bus, c, path, std[k].iface, std[k].member);
        if (m) {
                c->valid_signature = true;
                c->reply_signature = std[k].reply;
                c->allow = A_UNKNOWN_ANY;
                finish_desc(c, path);
        }
        free(path);
        return m;
}

sd_bus_message *fz_gen_call(struct fz_worker *w, sd_bus *bus, struct fz_call *call) {
        unsigned x = (unsigned)fz_below(&w->rng, 100);
        sd_bus_message *m;

        memset(call, 0, sizeof(*call));
        call->w = w;
        if (x < 62)
                m = gen_method(w, bus, call, true);
        else if (x < 65)
                m = gen_method(w, bus, call, false);
        else if (x < 77)
                m = gen_property(w, bus, call);
        else if (x < 87)
                m = gen_wrong_signature(w, bus, call);
        else if (x < 94)
                m = gen_bogus(w, bus, call);
        else
                m = gen_standard(w, bus, call);
        /* A non-member's mutating call may always be refused, however
         * malformed. */
        if (m && !w->member && call->mutating)
                call->allow |= A_ACCESS_DENIED;
        return m;
}
