/* SPDX-License-Identifier: MIT */
/*
 * libvmq-client: struct vmq_stats, a small list of named counters, for the
 * daemon's statistics and each machine's.  Kept as a list rather than
 * fixed fields so that counters a newer vmqd adds reach the caller.
 */
#include <string.h>

#include "libvmq-client/client-internal.h"

int vmqc_stats_new(struct vmq_stats **ret) {
        struct vmq_stats *s = calloc(1, sizeof(*s));

        if (!s)
                return -ENOMEM;
        *ret = s;
        return 0;
}

int vmqc_stats_add(struct vmq_stats *s, const char *name, uint64_t value) {
        char **names;
        uint64_t *values;
        char *n;

        n = strdup(name);
        if (!n)
                return -ENOMEM;
        names = reallocarray(s->names, s->n + 1, sizeof(*names));
        if (!names) {
                free(n);
                return -ENOMEM;
        }
        s->names = names;
        values = reallocarray(s->values, s->n + 1, sizeof(*values));
        if (!values) {
                free(n);
                return -ENOMEM;
        }
        s->values = values;
        s->names[s->n] = n;
        s->values[s->n] = value;
        s->n++;
        return 0;
}

int vmqc_stats_read_dict(struct vmq_stats *s, sd_bus_message *m) {
        const char *contents = NULL;
        char type;
        int r;

        r = sd_bus_message_peek_type(m, &type, &contents);
        if (r < 0)
                return r;
        if (r == 0 || type != SD_BUS_TYPE_ARRAY || !contents)
                return -EBADMSG;

        if (strcmp(contents, "{st}") == 0) {
                r = sd_bus_message_enter_container(m, 'a', "{st}");
                if (r < 0)
                        return r;
                for (;;) {
                        const char *key;
                        uint64_t v;

                        r = sd_bus_message_read(m, "{st}", &key, &v);
                        if (r < 0)
                                return r;
                        if (r == 0)
                                break;
                        r = vmqc_stats_add(s, key, v);
                        if (r < 0)
                                return r;
                }
                return sd_bus_message_exit_container(m);
        }
        if (strcmp(contents, "{sv}") != 0)
                return -EBADMSG;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (;;) {
                const char *key;
                uint64_t v;

                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return r;
                /* The counters are u or t; non-numbers are skipped. */
                r = vmqc_read_uint(m, &v);
                if (r < 0)
                        return r;
                if (r > 0) {
                        r = vmqc_stats_add(s, key, v);
                        if (r < 0)
                                return r;
                }
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_exit_container(m);
}

VMQ_EXPORT size_t vmq_stats_get_count(const struct vmq_stats *s) {
        return s ? s->n : 0;
}

VMQ_EXPORT const char *vmq_stats_get_name(const struct vmq_stats *s, size_t i) {
        return s && i < s->n ? s->names[i] : NULL;
}

VMQ_EXPORT uint64_t vmq_stats_get_value(const struct vmq_stats *s, size_t i) {
        return s && i < s->n ? s->values[i] : 0;
}

VMQ_EXPORT int vmq_stats_lookup(const struct vmq_stats *s, const char *name, uint64_t *ret) {
        if (!s || !name)
                return -EINVAL;
        for (size_t i = 0; i < s->n; i++)
                if (strcmp(s->names[i], name) == 0) {
                        if (ret)
                                *ret = s->values[i];
                        return 0;
                }
        return -ENOENT;
}

VMQ_EXPORT struct vmq_stats *vmq_stats_free(struct vmq_stats *s) {
        if (!s)
                return NULL;
        for (size_t i = 0; i < s->n; i++)
                free(s->names[i]);
        free(s->names);
        free(s->values);
        free(s);
        return NULL;
}
