/* SPDX-License-Identifier: MIT */
/*
 * Persistent state (see state.h for the file format).
 *
 * Loading trusts nothing: the file may have been truncated by a full disk,
 * edited by hand, or planted by someone hostile.  It is read through
 * vmqd_json_parse_file() (size, NUL, UTF-8 and nesting limits), then every
 * key is checked for type and range and every name for validity and
 * uniqueness.  Anything wrong and the whole file is moved aside under a new
 * name: loading half of it would make the next save drop the rest.
 *
 * Saving never writes what loading would refuse: the definitions are
 * validated first.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "core/util.h"
#include "vmqd/config.h"
#include "vmqd/state.h"

#define MIB (1024ull * 1024ull)
#define TMP_FILE VMQD_STATE_FILE ".tmp"
#define ARGS_MAX 512u /* VMQ_ARGS_MAX, including the NUL */
#define IMAGE_MAX 4096u
#define DOMAIN_MAX 256u
/* Upper bounds whatever the configuration (see the limits in config.c). */
#define MAX_MACHINES 4096u
#define MAX_CHANNELS 65536u

bool vmqd_name_is_valid(const char *name) {
        size_t n;

        if (!name || !*name || name[0] == '.' || name[0] == '-')
                return false;
        n = strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");
        if (name[n] != '\0' || n > 63)
                return false;
        return strcmp(name, "host") != 0;
}

bool vmqd_uuid_is_valid(const char *uuid) {
        if (!uuid)
                return false;
        for (size_t i = 0; i < 36; i++) {
                char c = uuid[i];
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (c != '-')
                                return false;
                } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
                             (c >= 'A' && c <= 'F'))) {
                        return false;
                }
        }
        return uuid[36] == '\0';
}

bool vmqd_uuid_is_nil(const char *uuid) {
        if (!vmqd_uuid_is_valid(uuid))
                return false;
        for (size_t i = 0; i < 36; i++)
                if (uuid[i] != '0' && uuid[i] != '-')
                        return false;
        return true;
}

bool vmqd_uuid_equal(const char *a, const char *b) {
        return a && b && strcasecmp(a, b) == 0;
}

/* The UUID check shared by both kinds of machine: a UUID, and not the nil
 * one (the monitor stamps it on every message as the sender's identity). */
static int validate_uuid(const struct vmqd_machine_def *d, const char *where, char **ret_error) {
        char u[sizeof(d->uuid)];

        memcpy(u, d->uuid, sizeof(u)); /* may lack its NUL */
        u[sizeof(u) - 1] = '\0';
        if (!vmqd_uuid_is_valid(u))
                return vmqd_errorf(ret_error, "%suuid: \"%s\" is not a UUID", where,
                                   VMQD_PRINTABLE(u));
        if (vmqd_uuid_is_nil(u))
                return vmqd_errorf(ret_error, "%suuid: the nil UUID is not a machine identity",
                                   where);
        return 0;
}

static bool is_end(const char *s) {
        return s && (strcmp(s, "host") == 0 || vmqd_name_is_valid(s));
}

static bool domain_name_is_valid(const char *s) {
        size_t n = strlen(s);

        if (n == 0 || n >= DOMAIN_MAX)
                return false;
        for (; *s; s++)
                if ((unsigned char)*s < 0x20 || *s == 0x7f)
                        return false;
        return true;
}

static int validate_libvirt_machine(const struct vmqd_machine_def *d, const char *where,
                                    char **ret_error) {
        if (!domain_name_is_valid(d->domain))
                return vmqd_errorf(ret_error,
                                   "%sdomain: must be a non-empty string shorter than %u, without "
                                   "control characters",
                                   where, DOMAIN_MAX);
        if (d->image)
                return vmqd_errorf(ret_error, "%simage: a libvirt machine has no image", where);
        if (validate_uuid(d, where, ret_error) < 0)
                return -EINVAL;
        if (!VMQ_IS_POW2(d->memory) || d->memory < MIB || d->memory > 1024 * MIB)
                return vmqd_errorf(
                        ret_error,
                        "%smemory: the region size must be a power of two, between 1 MiB "
                        "and 1 GiB",
                        where);
        if (d->rx_size < 4096 || d->rx_size > d->memory / 2 || !VMQ_IS_ALIGNED(d->rx_size, 4096))
                return vmqd_errorf(
                        ret_error,
                        "%srx_size: must be a multiple of 4 KiB, at most half the region", where);
        if (d->vcpus != 1)
                return vmqd_errorf(ret_error, "%svcpus: must be 1 for a libvirt machine", where);
        if (!VMQ_IS_POW2(d->queue_depth) || d->queue_depth < 4 || d->queue_depth > 1024)
                return vmqd_errorf(ret_error, "%squeue_depth: must be a power of two, 4..1024",
                                   where);
        if (d->huge_memory != 0 || d->args || d->autostart)
                return vmqd_errorf(ret_error,
                                   "%sa libvirt machine has no huge_memory, args or autostart",
                                   where);
        if (d->vsock_cid != 0 && (d->vsock_cid < 3 || d->vsock_cid > VMQD_VSOCK_CID_MAX))
                return vmqd_errorf(ret_error,
                                   "%svsock_cid: must be 3..%u (0..2 are the hypervisor, the "
                                   "local and the host CIDs)",
                                   where, VMQD_VSOCK_CID_MAX);
        return 0;
}

static int validate_machine(const struct vmqd_machine_def *d, const char *where, char **ret_error) {
        if (!vmqd_name_is_valid(d->name))
                return vmqd_errorf(ret_error, "%sname: \"%s\" is not a valid machine name", where,
                                   d->name ? VMQD_PRINTABLE(d->name) : "");
        if (d->domain)
                return validate_libvirt_machine(d, where, ret_error);
        if (d->rx_size != 0)
                return vmqd_errorf(ret_error, "%srx_size: only for a libvirt machine", where);
        if (d->vsock_cid != 0)
                return vmqd_errorf(ret_error, "%svsock_cid: only for a libvirt machine", where);
        if (!d->image || !*d->image || strlen(d->image) >= IMAGE_MAX)
                return vmqd_errorf(ret_error,
                                   "%simage: must be a non-empty string, shorter than %u", where,
                                   IMAGE_MAX);
        if (validate_uuid(d, where, ret_error) < 0)
                return -EINVAL;
        if (d->memory < 4 * MIB || d->memory > 1024 * MIB || !VMQ_IS_ALIGNED(d->memory, 2 * MIB))
                return vmqd_errorf(ret_error,
                                   "%smemory: must be a multiple of 2 MiB, between 4 MiB and 1 GiB",
                                   where);
        if (d->vcpus < 1 || d->vcpus > 8)
                return vmqd_errorf(ret_error, "%svcpus: must be between 1 and 8", where);
        if (!VMQ_IS_POW2(d->queue_depth) || d->queue_depth < 4 || d->queue_depth > 1024)
                return vmqd_errorf(ret_error, "%squeue_depth: must be a power of two, 4..1024",
                                   where);
        if (d->huge_memory > 1024 * MIB || !VMQ_IS_ALIGNED(d->huge_memory, 2 * MIB))
                return vmqd_errorf(ret_error,
                                   "%shuge_memory: must be a multiple of 2 MiB, at most 1 GiB",
                                   where);
        if (d->args && strlen(d->args) >= ARGS_MAX)
                return vmqd_errorf(ret_error, "%sargs: must be shorter than %u bytes", where,
                                   ARGS_MAX);
        return 0;
}

static int validate_channel(const struct vmqd_channel_def *d, const char *where, char **ret_error) {
        if (!is_end(d->end_a))
                return vmqd_errorf(ret_error, "%send_a: \"%s\" is not a machine name or \"host\"",
                                   where, d->end_a ? VMQD_PRINTABLE(d->end_a) : "");
        if (!is_end(d->end_b))
                return vmqd_errorf(ret_error, "%send_b: \"%s\" is not a machine name or \"host\"",
                                   where, d->end_b ? VMQD_PRINTABLE(d->end_b) : "");
        if (strcmp(d->end_a, d->end_b) == 0)
                return vmqd_errorf(ret_error, "%send_b: the two ends must differ", where);
        if (!VMQ_IS_POW2(d->depth) || d->depth > 65536)
                return vmqd_errorf(ret_error, "%sdepth: must be a power of two, 1..65536", where);
        if (!vmqd_mode_is_valid(d->mode))
                return vmqd_errorf(ret_error, "%smode: \"%s\" is not \"immediate\" or \"deferred\"",
                                   where, d->mode ? VMQD_PRINTABLE(d->mode) : "");
        if (!vmqd_transfer_is_valid(d->transfer))
                return vmqd_errorf(ret_error,
                                   "%stransfer: \"%s\" is not \"copy\", \"flip\" or \"auto\"",
                                   where, d->transfer ? VMQD_PRINTABLE(d->transfer) : "");
        return 0;
}

int vmqd_machine_def_validate(const struct vmqd_machine_def *d, char **ret_error) {
        return validate_machine(d, "", ret_error);
}

int vmqd_channel_def_validate(const struct vmqd_channel_def *d, char **ret_error) {
        return validate_channel(d, "", ret_error);
}

void vmqd_machine_def_done(struct vmqd_machine_def *d) {
        if (!d)
                return;
        free(d->name);
        free(d->image);
        free(d->args);
        free(d->domain);
        *d = (struct vmqd_machine_def){0};
}

void vmqd_channel_def_done(struct vmqd_channel_def *d) {
        if (!d)
                return;
        free(d->end_a);
        free(d->end_b);
        free(d->mode);
        free(d->transfer);
        *d = (struct vmqd_channel_def){0};
}

void vmqd_state_done(struct vmqd_state *s) {
        if (!s)
                return;
        for (size_t i = 0; i < s->n_machines; i++)
                vmqd_machine_def_done(&s->machines[i]);
        for (size_t i = 0; i < s->n_channels; i++)
                vmqd_channel_def_done(&s->channels[i]);
        free(s->machines);
        free(s->channels);
        *s = (struct vmqd_state){0};
}

static void state_donep(struct vmqd_state *s) {
        vmqd_state_done(s);
}

/* strdup() that copies NULL as NULL; false on ENOMEM. */
static bool dup_or_null(char **dst, const char *src) {
        *dst = NULL;
        if (!src)
                return true;
        *dst = strdup(src);
        return *dst != NULL;
}

static int machine_copy(struct vmqd_machine_def *dst, const struct vmqd_machine_def *src) {
        *dst = *src;
        /* No pointer of src may stay in dst: the cleanup frees them. */
        dst->name = dst->image = dst->args = dst->domain = NULL;
        if (!dup_or_null(&dst->name, src->name) || !dup_or_null(&dst->image, src->image) ||
            !dup_or_null(&dst->args, src->args) || !dup_or_null(&dst->domain, src->domain)) {
                vmqd_machine_def_done(dst);
                return -ENOMEM;
        }
        return 0;
}

static int channel_copy(struct vmqd_channel_def *dst, const struct vmqd_channel_def *src) {
        *dst = *src;
        dst->end_a = dst->end_b = dst->mode = dst->transfer = NULL;
        if (!dup_or_null(&dst->end_a, src->end_a) || !dup_or_null(&dst->end_b, src->end_b) ||
            !dup_or_null(&dst->mode, src->mode) || !dup_or_null(&dst->transfer, src->transfer)) {
                vmqd_channel_def_done(dst);
                return -ENOMEM;
        }
        return 0;
}

struct vmqd_machine_def *vmqd_state_find_machine(struct vmqd_state *s, const char *name) {
        if (!s || !name)
                return NULL;
        for (size_t i = 0; i < s->n_machines; i++)
                if (strcmp(s->machines[i].name, name) == 0)
                        return &s->machines[i];
        return NULL;
}

struct vmqd_machine_def *vmqd_state_find_machine_by_uuid(struct vmqd_state *s, const char *uuid) {
        if (!s || !uuid)
                return NULL;
        for (size_t i = 0; i < s->n_machines; i++)
                if (vmqd_uuid_equal(s->machines[i].uuid, uuid))
                        return &s->machines[i];
        return NULL;
}

struct vmqd_machine_def *vmqd_state_find_machine_by_vsock_cid(struct vmqd_state *s, uint32_t cid) {
        if (!s || cid == 0)
                return NULL;
        for (size_t i = 0; i < s->n_machines; i++)
                if (s->machines[i].vsock_cid == cid)
                        return &s->machines[i];
        return NULL;
}

struct vmqd_channel_def *vmqd_state_find_channel(struct vmqd_state *s, const char *end_a,
                                                 const char *end_b) {
        if (!s || !end_a || !end_b)
                return NULL;
        for (size_t i = 0; i < s->n_channels; i++)
                if (strcmp(s->channels[i].end_a, end_a) == 0 &&
                    strcmp(s->channels[i].end_b, end_b) == 0)
                        return &s->channels[i];
        return NULL;
}

/* Appends *d (taking ownership of its strings) without checks. */
static int push_machine(struct vmqd_state *s, struct vmqd_machine_def *d) {
        struct vmqd_machine_def *n =
                reallocarray(s->machines, s->n_machines + 1, sizeof(*s->machines));
        if (!n)
                return -ENOMEM;
        s->machines = n;
        s->machines[s->n_machines++] = *d;
        *d = (struct vmqd_machine_def){0};
        return 0;
}

static int push_channel(struct vmqd_state *s, struct vmqd_channel_def *d) {
        struct vmqd_channel_def *n =
                reallocarray(s->channels, s->n_channels + 1, sizeof(*s->channels));
        if (!n)
                return -ENOMEM;
        s->channels = n;
        s->channels[s->n_channels++] = *d;
        *d = (struct vmqd_channel_def){0};
        return 0;
}

int vmqd_state_add_machine(struct vmqd_state *s, const struct vmqd_machine_def *d) {
        struct vmqd_machine_def copy;
        int r;

        if (!s || !d)
                return -EINVAL;
        r = vmqd_machine_def_validate(d, NULL);
        if (r < 0)
                return r;
        if (vmqd_state_find_machine(s, d->name) || vmqd_state_find_machine_by_uuid(s, d->uuid) ||
            vmqd_state_find_machine_by_vsock_cid(s, d->vsock_cid))
                return -EEXIST;
        r = machine_copy(&copy, d);
        if (r < 0)
                return r;
        r = push_machine(s, &copy);
        if (r < 0)
                vmqd_machine_def_done(&copy);
        return r;
}

int vmqd_state_copy(const struct vmqd_state *s, struct vmqd_state *ret) {
        _cleanup_(state_donep) struct vmqd_state c = {0};
        int r;

        if (!s || !ret)
                return -EINVAL;
        if (s->n_machines > 0) {
                c.machines = calloc(s->n_machines, sizeof(*c.machines));
                if (!c.machines)
                        return -ENOMEM;
        }
        for (; c.n_machines < s->n_machines; c.n_machines++) {
                r = machine_copy(&c.machines[c.n_machines], &s->machines[c.n_machines]);
                if (r < 0)
                        return r;
        }
        if (s->n_channels > 0) {
                c.channels = calloc(s->n_channels, sizeof(*c.channels));
                if (!c.channels)
                        return -ENOMEM;
        }
        for (; c.n_channels < s->n_channels; c.n_channels++) {
                r = channel_copy(&c.channels[c.n_channels], &s->channels[c.n_channels]);
                if (r < 0)
                        return r;
        }
        *ret = c;
        c = (struct vmqd_state){0};
        return 0;
}

int vmqd_state_remove_machine(struct vmqd_state *s, const char *name) {
        struct vmqd_machine_def *m = vmqd_state_find_machine(s, name);
        size_t j = 0;

        if (!m)
                return -ENOENT;
        for (size_t i = 0; i < s->n_channels; i++) {
                struct vmqd_channel_def *c = &s->channels[i];
                /* m->name, not name: the caller's pointer may be one of
                 * the strings freed here. */
                if (strcmp(c->end_a, m->name) == 0 || strcmp(c->end_b, m->name) == 0)
                        vmqd_channel_def_done(c);
                else
                        s->channels[j++] = *c;
        }
        s->n_channels = j;
        vmqd_machine_def_done(m);
        size_t idx = (size_t)(m - s->machines);
        memmove(m, m + 1, (s->n_machines - idx - 1) * sizeof(*m));
        s->n_machines--;
        return 0;
}

int vmqd_state_add_channel(struct vmqd_state *s, const struct vmqd_channel_def *d) {
        struct vmqd_channel_def copy;
        int r;

        if (!s || !d)
                return -EINVAL;
        r = vmqd_channel_def_validate(d, NULL);
        if (r < 0)
                return r;
        r = channel_copy(&copy, d);
        if (r < 0)
                return r;
        r = push_channel(s, &copy);
        if (r < 0)
                vmqd_channel_def_done(&copy);
        return r;
}

int vmqd_state_remove_channel(struct vmqd_state *s, const char *end_a, const char *end_b) {
        struct vmqd_channel_def *c = vmqd_state_find_channel(s, end_a, end_b);

        if (!c)
                return -ENOENT;
        vmqd_channel_def_done(c);
        size_t idx = (size_t)(c - s->channels);
        memmove(c, c + 1, (s->n_channels - idx - 1) * sizeof(*c));
        s->n_channels--;
        return 0;
}

/* Loading. */

/* Rejects keys of obj that are not in allowed (NULL-terminated). */
static int check_keys(struct json_object *obj, const char *const *allowed, const char *where,
                      char **ret_error) {
        json_object_object_foreach(obj, key, v) {
                const char *const *a;
                (void)v;
                for (a = allowed; *a; a++)
                        if (strcmp(key, *a) == 0)
                                break;
                if (!*a)
                        return vmqd_errorf(ret_error, "%s%sunknown key \"%s\"", where,
                                           *where ? ": " : "", VMQD_PRINTABLE(key));
        }
        return 0;
}

/* The value of key, or NULL (absent).  *ret_error set if absent and required. */
static struct json_object *get_key(struct json_object *obj, const char *key, bool required,
                                   const char *where, int *r, char **ret_error) {
        struct json_object *v = NULL;
        if (!json_object_object_get_ex(obj, key, &v) && required)
                *r = vmqd_errorf(ret_error, "%s%s: missing", where, key);
        return v;
}

static int get_string(struct json_object *obj, const char *key, bool required, bool nullable,
                      const char *where, char **ret, char **ret_error) {
        int r = 0;
        struct json_object *v = get_key(obj, key, required, where, &r, ret_error);
        const char *s;

        if (r < 0)
                return r;
        if (!v) { /* absent, or JSON null */
                if (json_object_object_get_ex(obj, key, NULL) && !nullable)
                        return vmqd_errorf(ret_error, "%s%s: must be a string", where, key);
                return 0;
        }
        if (!json_object_is_type(v, json_type_string))
                return vmqd_errorf(ret_error, "%s%s: must be a string", where, key);
        s = json_object_get_string(v);
        if ((size_t)json_object_get_string_len(v) != strlen(s))
                return vmqd_errorf(ret_error, "%s%s: must not contain NUL characters", where, key);
        *ret = strdup(s);
        return *ret ? 0 : -ENOMEM;
}

static int get_uint(struct json_object *obj, const char *key, bool required, uint64_t max,
                    const char *where, uint64_t *ret, char **ret_error) {
        int r = 0;
        struct json_object *v = get_key(obj, key, required, where, &r, ret_error);

        if (r < 0)
                return r;
        if (!v && !json_object_object_get_ex(obj, key, NULL))
                return 0;
        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
                return vmqd_errorf(ret_error, "%s%s: must be a non-negative integer", where, key);
        /* json-c saturates out-of-range numbers at UINT64_MAX: caught here
         * or by the range checks. */
        if (json_object_get_uint64(v) > max)
                return vmqd_errorf(ret_error, "%s%s: too large", where, key);
        *ret = json_object_get_uint64(v);
        return 0;
}

static int get_bool(struct json_object *obj, const char *key, const char *where, bool *ret,
                    char **ret_error) {
        struct json_object *v = NULL;

        if (!json_object_object_get_ex(obj, key, &v))
                return 0;
        if (!json_object_is_type(v, json_type_boolean))
                return vmqd_errorf(ret_error, "%s%s: must be true or false", where, key);
        *ret = json_object_get_boolean(v);
        return 0;
}

static const char *const machine_keys[] = {
        "name", "image",     "uuid",    "memory", "vcpus",   "queue_depth", "huge_memory",
        "args", "autostart", "backend", "domain", "rx_size", "vsock_cid",   NULL};
static const char *const channel_keys[] = {"end_a", "end_b", "depth", "mode", "transfer", NULL};
static const char *const top_keys[] = {"version", "machines", "channels", NULL};

static int machine_from_json(struct json_object *o, const char *where, struct vmqd_machine_def *ret,
                             char **ret_error) {
        _cleanup_free_ char *uuid = NULL;
        struct vmqd_machine_def d = {0};
        _cleanup_free_ char *backend = NULL;
        uint64_t memory = 0, vcpus = 0, depth = 0, huge = 0, rx = 0, cid = 0;
        bool libvirt = false;
        int r;

        if (!json_object_is_type(o, json_type_object))
                return vmqd_errorf(ret_error, "%s: must be an object", where);
        char w[48];
        snprintf(w, sizeof(w), "%s.", where);
        r = check_keys(o, machine_keys, where, ret_error);
        if (r >= 0)
                r = get_string(o, "name", true, false, w, &d.name, ret_error);
        if (r >= 0)
                r = get_string(o, "backend", false, false, w, &backend, ret_error);
        if (r >= 0 && backend) {
                if (strcmp(backend, "libvirt") == 0)
                        libvirt = true;
                else if (strcmp(backend, "kvm") != 0)
                        r = vmqd_errorf(ret_error,
                                        "%sbackend: \"%s\" is not \"kvm\" or \"libvirt\"", w,
                                        VMQD_PRINTABLE(backend));
        }
        if (r >= 0)
                r = get_string(o, "image", !libvirt, libvirt, w, &d.image, ret_error);
        if (r >= 0)
                r = get_string(o, "domain", libvirt, false, w, &d.domain, ret_error);
        if (r >= 0 && !libvirt && d.domain)
                r = vmqd_errorf(ret_error, "%sdomain: only for the libvirt backend", w);
        if (r >= 0)
                r = get_uint(o, "rx_size", libvirt, UINT64_MAX, w, &rx, ret_error);
        if (r >= 0)
                r = get_uint(o, "vsock_cid", false, UINT32_MAX, w, &cid, ret_error);
        if (r >= 0)
                r = get_string(o, "uuid", true, false, w, &uuid, ret_error);
        if (r >= 0)
                r = get_uint(o, "memory", true, UINT64_MAX, w, &memory, ret_error);
        if (r >= 0)
                r = get_uint(o, "vcpus", true, UINT32_MAX, w, &vcpus, ret_error);
        if (r >= 0)
                r = get_uint(o, "queue_depth", true, UINT32_MAX, w, &depth, ret_error);
        if (r >= 0)
                r = get_uint(o, "huge_memory", false, UINT64_MAX, w, &huge, ret_error);
        if (r >= 0)
                r = get_string(o, "args", false, true, w, &d.args, ret_error);
        if (r >= 0)
                r = get_bool(o, "autostart", w, &d.autostart, ret_error);
        if (r >= 0) {
                if (!vmqd_uuid_is_valid(uuid))
                        r = vmqd_errorf(ret_error, "%suuid: \"%s\" is not a UUID", w,
                                        VMQD_PRINTABLE(uuid));
                else
                        memcpy(d.uuid, uuid, sizeof(d.uuid));
        }
        d.memory = memory;
        d.vcpus = (uint32_t)vcpus;
        d.queue_depth = (uint32_t)depth;
        d.huge_memory = huge;
        d.rx_size = rx;
        d.vsock_cid = (uint32_t)cid;
        if (r >= 0)
                r = validate_machine(&d, w, ret_error);
        if (r < 0) {
                vmqd_machine_def_done(&d);
                return r;
        }
        *ret = d;
        return 0;
}

static int channel_from_json(struct json_object *o, const char *where, struct vmqd_channel_def *ret,
                             char **ret_error) {
        struct vmqd_channel_def d = {0};
        uint64_t depth = 0;
        int r;

        if (!json_object_is_type(o, json_type_object))
                return vmqd_errorf(ret_error, "%s: must be an object", where);
        char w[48];
        snprintf(w, sizeof(w), "%s.", where);
        r = check_keys(o, channel_keys, where, ret_error);
        if (r >= 0)
                r = get_string(o, "end_a", true, false, w, &d.end_a, ret_error);
        if (r >= 0)
                r = get_string(o, "end_b", true, false, w, &d.end_b, ret_error);
        if (r >= 0)
                r = get_uint(o, "depth", true, UINT32_MAX, w, &depth, ret_error);
        if (r >= 0)
                r = get_string(o, "mode", true, false, w, &d.mode, ret_error);
        if (r >= 0)
                r = get_string(o, "transfer", true, false, w, &d.transfer, ret_error);
        d.depth = (uint32_t)depth;
        if (r >= 0)
                r = validate_channel(&d, w, ret_error);
        if (r < 0) {
                vmqd_channel_def_done(&d);
                return r;
        }
        *ret = d;
        return 0;
}

/* -EINVAL (with a reason) if the document is not a valid state, -ENOMEM. */
static int state_from_json(struct json_object *root, struct vmqd_state *ret, char **ret_error) {
        _cleanup_(state_donep) struct vmqd_state s = {0};
        struct json_object *version, *machines = NULL, *channels = NULL;
        int r;

        r = check_keys(root, top_keys, "", ret_error);
        if (r < 0)
                return r;
        if (!json_object_object_get_ex(root, "version", &version))
                return vmqd_errorf(ret_error, "version: missing");
        if (!json_object_is_type(version, json_type_int))
                return vmqd_errorf(ret_error, "version: must be an integer");
        if (json_object_get_int64(version) != VMQD_STATE_VERSION)
                return vmqd_errorf(ret_error, "version: %" PRId64 " is not supported (only %d is)",
                                   json_object_get_int64(version), VMQD_STATE_VERSION);

        if (json_object_object_get_ex(root, "machines", &machines) &&
            !json_object_is_type(machines, json_type_array))
                return vmqd_errorf(ret_error, "machines: must be an array");
        if (json_object_object_get_ex(root, "channels", &channels) &&
            !json_object_is_type(channels, json_type_array))
                return vmqd_errorf(ret_error, "channels: must be an array");

        size_t nm = machines ? json_object_array_length(machines) : 0;
        size_t nc = channels ? json_object_array_length(channels) : 0;
        if (nm > MAX_MACHINES)
                return vmqd_errorf(ret_error, "machines: more than %u", MAX_MACHINES);
        if (nc > MAX_CHANNELS)
                return vmqd_errorf(ret_error, "channels: more than %u", MAX_CHANNELS);

        for (size_t i = 0; i < nm; i++) {
                struct vmqd_machine_def d, *other;
                char where[32];

                snprintf(where, sizeof(where), "machines[%zu]", i);
                r = machine_from_json(json_object_array_get_idx(machines, i), where, &d, ret_error);
                if (r < 0)
                        return r;
                if (vmqd_state_find_machine(&s, d.name)) {
                        r = vmqd_errorf(ret_error, "%s.name: \"%s\" is defined twice", where,
                                        VMQD_PRINTABLE(d.name));
                        vmqd_machine_def_done(&d);
                        return r;
                }
                /* Two machines with one UUID would be one identity for the
                 * monitor's stamps: refused like a name defined twice. */
                other = vmqd_state_find_machine_by_uuid(&s, d.uuid);
                if (other) {
                        r = vmqd_errorf(ret_error,
                                        "%s.uuid: \"%s\" of machine \"%s\" is also the UUID of "
                                        "machine \"%s\" (machines[%zu])",
                                        where, d.uuid, VMQD_PRINTABLE(d.name), other->name,
                                        (size_t)(other - s.machines));
                        vmqd_machine_def_done(&d);
                        return r;
                }
                /* One CID, one device: the switch could not tell them apart. */
                other = vmqd_state_find_machine_by_vsock_cid(&s, d.vsock_cid);
                if (other) {
                        r = vmqd_errorf(ret_error,
                                        "%s.vsock_cid: %u of machine \"%s\" is also the CID of "
                                        "machine \"%s\" (machines[%zu])",
                                        where, d.vsock_cid, VMQD_PRINTABLE(d.name), other->name,
                                        (size_t)(other - s.machines));
                        vmqd_machine_def_done(&d);
                        return r;
                }
                r = push_machine(&s, &d);
                if (r < 0) {
                        vmqd_machine_def_done(&d);
                        return r;
                }
        }
        for (size_t i = 0; i < nc; i++) {
                struct vmqd_channel_def d;
                char where[32];

                snprintf(where, sizeof(where), "channels[%zu]", i);
                r = channel_from_json(json_object_array_get_idx(channels, i), where, &d, ret_error);
                if (r < 0)
                        return r;
                r = push_channel(&s, &d);
                if (r < 0) {
                        vmqd_channel_def_done(&d);
                        return r;
                }
        }
        *ret = s;
        s = (struct vmqd_state){0};
        return 0;
}

/*
 * Renames <dir>/state.json to state.json.corrupt-<UTC stamp>, never
 * replacing an existing file: a second corruption within the same second
 * gets ".1", ".2", ...
 */
static int move_aside(int dfd, const char *dir, char **ret_path) {
        char stamp[32], name[64];
        struct tm tm;
        time_t now = time(NULL);

        if (!gmtime_r(&now, &tm) || strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm) == 0)
                return -EINVAL;
        for (unsigned i = 0;; i++) {
                if (i >= 1000)
                        return -EEXIST;
                if (i == 0)
                        snprintf(name, sizeof(name), VMQD_STATE_FILE ".corrupt-%s", stamp);
                else
                        snprintf(name, sizeof(name), VMQD_STATE_FILE ".corrupt-%s.%u", stamp, i);
                if (renameat2(dfd, VMQD_STATE_FILE, dfd, name, RENAME_NOREPLACE) == 0)
                        break;
                if (errno == EEXIST)
                        continue;
                if (errno != EINVAL && errno != ENOSYS)
                        return -errno;
                /* The file system cannot rename without replacing: a hard
                 * link is created only if the name is free. */
                if (linkat(dfd, VMQD_STATE_FILE, dfd, name, 0) < 0) {
                        if (errno == EEXIST)
                                continue;
                        return -errno;
                }
                if (unlinkat(dfd, VMQD_STATE_FILE, 0) < 0)
                        return -errno;
                break;
        }
        if (fsync(dfd) < 0)
                return -errno;
        if (asprintf(ret_path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        return 0;
}

int vmqd_state_load(const char *dir, struct vmqd_state *ret, char **ret_moved_to,
                    char **ret_error) {
        _cleanup_json_ struct json_object *root = NULL;
        _cleanup_free_ char *error = NULL, *moved = NULL;
        _cleanup_close_ int dfd = -1;
        struct vmqd_state s = {0};
        int r;

        if (ret_moved_to)
                *ret_moved_to = NULL;
        if (ret_error)
                *ret_error = NULL;
        if (!dir || !ret)
                return -EINVAL;

        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
                if (errno == ENOENT)
                        goto done; /* nothing saved yet */
                r = -errno;
                if (ret_error && asprintf(ret_error, "cannot open the state directory \"%s\": %s",
                                          dir, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }

        r = vmqd_json_parse_file(dfd, VMQD_STATE_FILE, &root, &error);
        if (r == -ENOENT)
                goto done;
        if (r == 0) {
                r = state_from_json(root, &s, &error);
                if (r == 0)
                        goto done;
        }
        if (r != -EINVAL) {
                if (ret_error && asprintf(ret_error, "cannot read \"%s/%s\": %s", dir,
                                          VMQD_STATE_FILE, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }

        /* Not valid: keep it, under another name, for the administrator. */
        r = move_aside(dfd, dir, &moved);
        if (r < 0) {
                if (ret_error && asprintf(ret_error,
                                          "\"%s/%s\" is not valid (%s) and could not be moved "
                                          "aside: %s",
                                          dir, VMQD_STATE_FILE, error ?: "?", strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        *ret = (struct vmqd_state){0};
        if (ret_moved_to)
                *ret_moved_to = VMQ_TAKE_PTR(moved);
        if (ret_error)
                *ret_error = VMQ_TAKE_PTR(error);
        return 1;

done:
        *ret = s;
        return 0;
}

/* Saving. */

static int add_value(struct json_object *obj, const char *key, struct json_object *v) {
        if (!v)
                return -ENOMEM;
        if (json_object_object_add(obj, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

static int add_string(struct json_object *obj, const char *key, const char *s) {
        if (!s) /* JSON null */
                return json_object_object_add(obj, key, NULL) < 0 ? -ENOMEM : 0;
        return add_value(obj, key, json_object_new_string(s));
}

static int add_uint(struct json_object *obj, const char *key, uint64_t v) {
        /* Every value is range-checked far below INT64_MAX. */
        return add_value(obj, key, json_object_new_int64((int64_t)v));
}

static int append(struct json_object *array, struct json_object *v) {
        if (!v)
                return -ENOMEM;
        if (json_object_array_add(array, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

static struct json_object *libvirt_machine_to_json(const struct vmqd_machine_def *d) {
        struct json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        if (add_string(o, "name", d->name) < 0 || add_string(o, "backend", "libvirt") < 0 ||
            add_string(o, "domain", d->domain) < 0 || add_string(o, "uuid", d->uuid) < 0 ||
            add_uint(o, "memory", d->memory) < 0 || add_uint(o, "rx_size", d->rx_size) < 0 ||
            add_uint(o, "vcpus", d->vcpus) < 0 || add_uint(o, "queue_depth", d->queue_depth) < 0 ||
            add_value(o, "autostart", json_object_new_boolean(d->autostart)) < 0 ||
            (d->vsock_cid && add_uint(o, "vsock_cid", d->vsock_cid) < 0)) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static struct json_object *machine_to_json(const struct vmqd_machine_def *d) {
        struct json_object *o;

        if (d->domain)
                return libvirt_machine_to_json(d);
        o = json_object_new_object();
        if (!o)
                return NULL;
        if (add_string(o, "name", d->name) < 0 || add_string(o, "image", d->image) < 0 ||
            add_string(o, "uuid", d->uuid) < 0 || add_uint(o, "memory", d->memory) < 0 ||
            add_uint(o, "vcpus", d->vcpus) < 0 || add_uint(o, "queue_depth", d->queue_depth) < 0 ||
            add_uint(o, "huge_memory", d->huge_memory) < 0 || add_string(o, "args", d->args) < 0 ||
            add_value(o, "autostart", json_object_new_boolean(d->autostart)) < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static struct json_object *channel_to_json(const struct vmqd_channel_def *d) {
        struct json_object *o = json_object_new_object();
        if (!o)
                return NULL;
        if (add_string(o, "end_a", d->end_a) < 0 || add_string(o, "end_b", d->end_b) < 0 ||
            add_uint(o, "depth", d->depth) < 0 || add_string(o, "mode", d->mode) < 0 ||
            add_string(o, "transfer", d->transfer) < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static int state_to_json(const struct vmqd_state *s, struct json_object **ret) {
        _cleanup_json_ struct json_object *root = json_object_new_object();
        struct json_object *machines = json_object_new_array();
        struct json_object *channels = json_object_new_array();
        int r;

        if (!root || !machines || !channels) {
                json_object_put(machines);
                json_object_put(channels);
                return -ENOMEM;
        }
        r = add_uint(root, "version", VMQD_STATE_VERSION);
        if (r < 0) {
                json_object_put(machines);
                json_object_put(channels);
                return r;
        }
        r = add_value(root, "machines", machines);
        if (r < 0) {
                json_object_put(channels);
                return r;
        }
        r = add_value(root, "channels", channels);
        if (r < 0)
                return r;
        for (size_t i = 0; i < s->n_machines; i++) {
                r = append(machines, machine_to_json(&s->machines[i]));
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < s->n_channels; i++) {
                r = append(channels, channel_to_json(&s->channels[i]));
                if (r < 0)
                        return r;
        }
        *ret = VMQ_TAKE_PTR(root);
        return 0;
}

static int mkdir_p(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1;; s++) {
                if (*s != '/' && *s != '\0')
                        continue;
                char c = *s;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = c;
                if (!c)
                        break;
        }
        return 0;
}

static int write_all(int fd, const char *buf, size_t len) {
        while (len > 0) {
                ssize_t n = write(fd, buf, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                buf += n;
                len -= (size_t)n;
        }
        return 0;
}

int vmqd_state_save(const char *dir, const struct vmqd_state *s) {
        _cleanup_json_ struct json_object *root = NULL;
        _cleanup_close_ int dfd = -1, fd = -1;
        const char *text;
        size_t len;
        int r;

        if (!dir || !*dir || !s)
                return -EINVAL;

        /* Never write what vmqd_state_load() would move aside. */
        for (size_t i = 0; i < s->n_machines; i++) {
                r = vmqd_machine_def_validate(&s->machines[i], NULL);
                if (r < 0)
                        return r;
                for (size_t j = 0; j < i; j++)
                        if (strcmp(s->machines[i].name, s->machines[j].name) == 0 ||
                            vmqd_uuid_equal(s->machines[i].uuid, s->machines[j].uuid))
                                return -EINVAL;
        }
        for (size_t i = 0; i < s->n_channels; i++) {
                r = vmqd_channel_def_validate(&s->channels[i], NULL);
                if (r < 0)
                        return r;
        }
        if (s->n_machines > MAX_MACHINES || s->n_channels > MAX_CHANNELS)
                return -EINVAL;

        r = state_to_json(s, &root);
        if (r < 0)
                return r;
        text = json_object_to_json_string_length(root,
                                                 JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                                                         JSON_C_TO_STRING_NOSLASHESCAPE,
                                                 &len);
        if (!text)
                return -ENOMEM;

        r = mkdir_p(dir, 0755);
        if (r < 0)
                return r;
        dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;

        /* A temp file left by a crash is stale; anything else under that
         * name (a directory, say) makes the exclusive create below fail. */
        (void)unlinkat(dfd, TMP_FILE, 0);
        fd = openat(dfd, TMP_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return -errno;
        if (fchmod(fd, 0600) < 0 || (r = write_all(fd, text, len)) < 0 ||
            (r = write_all(fd, "\n", 1)) < 0 || fsync(fd) < 0) {
                if (r == 0)
                        r = -errno;
                goto fail;
        }
        r = close(VMQ_TAKE_FD(fd));
        if (r < 0) {
                r = -errno;
                goto fail;
        }
        if (renameat(dfd, TMP_FILE, dfd, VMQD_STATE_FILE) < 0) {
                r = -errno;
                goto fail;
        }
        /* Make the rename itself durable. */
        if (fsync(dfd) < 0)
                return -errno;
        return 0;

fail:
        (void)unlinkat(dfd, TMP_FILE, 0);
        return r;
}
