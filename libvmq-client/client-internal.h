/* SPDX-License-Identifier: MIT */
/*
 * libvmq-client's private parts: the client structure and the helpers that
 * every file of the library shares.  Not installed.
 */
#ifndef VMQ_CLIENT_INTERNAL_H
#define VMQ_CLIENT_INTERNAL_H

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <systemd/sd-bus.h>

#include "libvmq-client/vmq-client.h"

/* Symbols of the public API; everything else is hidden (-fvisibility=hidden,
 * and the version script). */
#define VMQ_EXPORT __attribute__((visibility("default")))

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void vmqc_freep(void *p) {
        free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(vmqc_freep)

static inline void vmqc_closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                (void)close(*fd);
                errno = saved;
        }
}
#define _cleanup_close_ _cleanup_(vmqc_closep)

static inline void vmqc_msg_unrefp(sd_bus_message **m) {
        sd_bus_message_unref(*m);
}
#define _cleanup_msg_ _cleanup_(vmqc_msg_unrefp)

static inline void vmqc_error_freep(sd_bus_error *e) {
        sd_bus_error_free(e);
}
#define _cleanup_bus_error_ _cleanup_(vmqc_error_freep)

#define VMQC_TAKE_PTR(p)                                                                           \
        ({                                                                                         \
                __typeof__(p) _t = (p);                                                            \
                (p) = NULL;                                                                        \
                _t;                                                                                \
        })

/* The default method-call timeout (sd-bus's own default as well). */
#define VMQC_CALL_TIMEOUT_USEC (25ULL * 1000000ULL)

struct vmq_client {
        unsigned refcount;
        sd_bus *bus;
        uint64_t call_timeout_usec;
        char *error_message; /* of the last failing call */

        /* events */
        sd_bus_slot *match_manager;
        sd_bus_slot *match_owner;
        int (*callback)(struct vmq_client *c, const struct vmq_event *ev, void *userdata);
        void *userdata;
        int callback_error; /* what a callback returned, for vmq_client_process() */
};

struct vmq_stats {
        size_t n;
        char **names;
        uint64_t *values;
};

/* client.c */
int vmqc_check(struct vmq_client *c);
void vmqc_clear_error(struct vmq_client *c);
/* Turns a failed call's error into a negative errno and remembers its text.
 * @r is what sd_bus_call() returned; @unknown_object is the errno for a
 * vanished object (-ENOENT for machines, -ENXIO for channels). */
int vmqc_error(struct vmq_client *c, const sd_bus_error *error, int r, int unknown_object);
/* A new method call on the manager object. */
int vmqc_new_manager_call(struct vmq_client *c, sd_bus_message **ret, const char *member);
/* Sends @m and waits @timeout_usec (0: the client's call timeout) for the
 * reply; maps errors as vmqc_error() does. */
int vmqc_call(struct vmq_client *c, sd_bus_message *m, uint64_t timeout_usec, int unknown_object,
              sd_bus_message **ret_reply);
/* Org.freedesktop.DBus.Properties.GetAll(@iface) on @path. */
int vmqc_get_all(struct vmq_client *c, const char *path, const char *iface, int unknown_object,
                 sd_bus_message **ret_reply);
/* Helpers for the variant of an a{sv} entry.  vmqc_variant_sig() peeks at
 * its signature.  The readers return 1 when they read the value, or 0 when
 * it had an unexpected type and was skipped (a newer vmqd may change
 * things), or a negative errno.  vmqc_read_uint() takes any unsigned width
 * and booleans; vmqc_read_string() takes s and o and replaces *ret. */
int vmqc_variant_sig(sd_bus_message *m, const char **ret_sig);
int vmqc_read_uint(sd_bus_message *m, uint64_t *ret);
/* vmqc_read_uint() into narrower destinations (the value is truncated to
 * the field, as the API defines these properties). */
int vmqc_read_u32(sd_bus_message *m, uint32_t *ret);
int vmqc_read_bool(sd_bus_message *m, bool *ret);
int vmqc_read_string(sd_bus_message *m, char **ret);
int vmqc_read_int32(sd_bus_message *m, int32_t *ret);
int vmqc_skip_variant(sd_bus_message *m);
/* Walks an a{sv}: for every entry, calls entry() positioned on the entry's
 * variant, which it must read or skip.  Returns 0 or a negative errno. */
int vmqc_read_dict(sd_bus_message *m,
                   int (*entry)(sd_bus_message *m, const char *key, void *userdata),
                   void *userdata);
int vmqc_strdup(const char *s, char **ret);
uint64_t vmqc_add_timeout(uint64_t a, uint64_t b);

/* stats.c */
int vmqc_stats_new(struct vmq_stats **ret);
int vmqc_stats_add(struct vmq_stats *s, const char *name, uint64_t value);
/* Reads an a{sv} or a{st} of counters from @m into @s. */
int vmqc_stats_read_dict(struct vmq_stats *s, sd_bus_message *m);

#endif /* VMQ_CLIENT_INTERNAL_H */
