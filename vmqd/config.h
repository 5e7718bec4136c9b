/* SPDX-License-Identifier: MIT */
/*
 * vmqd's configuration: defaults, and the JSON file (vmqd.conf(5)) that
 * overrides them.  The layout of the file is documented at the top of
 * config.c; vmqd/vmqd.conf.example holds every key at its default value.
 *
 * No logging here: errors come back as negative errno plus a message that
 * the daemon logs.
 */
#ifndef VMQD_CONFIG_H
#define VMQD_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

/* Default path of the configuration file (the daemon's --config). */
#define VMQD_CONFIG_PATH "/etc/vmq/vmqd.conf"
/* Files larger than this are refused (config and state alike). */
#define VMQD_FILE_MAX (16u * 1024u * 1024u)

struct vmqd_config {
        char *state_dir;   /* default "/var/lib/vmq" */
        char *image_dir;   /* default VMQ_IMAGE_DIR (a -D from the build: $(pkglibdir)/guests) */
        char *libvirt_uri; /* default "qemu:///system"; --libvirt-uri (vmqd/libvirt.h) */
        int log_level; /* syslog priority LOG_ERR..LOG_DEBUG; JSON "log_level": "err"|"warning"|"notice"|"info"|"debug"; default LOG_INFO */
        bool hugetlb;  /* use 2 MiB hugetlb frames when available; default true */
        uint32_t hugetlb_frames;  /* how many to take; default 64 */
        uint64_t pool_memory;     /* bytes of 4 KiB frames in the pool; default 4 GiB (sparse) */
        uint32_t max_machines;    /* default 64 */
        uint32_t max_channels;    /* default 256 */
        uint32_t max_queue_depth; /* default 1024, power of two */
        uint64_t max_memory;      /* per machine, default 1 GiB */
        uint64_t max_message;     /* largest host message (SendFd), default 16 MiB */
        uint64_t default_memory;  /* default 16 MiB */
        uint32_t default_vcpus;   /* default 1 */
        uint32_t default_queue_depth; /* default 64 */
        uint32_t default_host_depth;  /* messages waiting at a host end, default 256 */
        char *default_mode;           /* "immediate" | "deferred", default "immediate" */
        char *default_transfer;       /* "copy" | "flip" | "auto", default "auto" */
        uint32_t stop_timeout_sec;    /* default 10 */
};

/*
 * Fills *c with the built-in defaults.  Aborts only if strdup() fails for
 * the few default strings (there is nothing sensible to run without them).
 * Call vmqd_config_done() when finished.
 */
void vmqd_config_init(struct vmqd_config *c);

/*
 * Loads a JSON config file over the values already in *c (normally the
 * defaults from vmqd_config_init()).  path NULL: nothing to load, returns 0.
 *
 * Returns 0 on success.  A missing file is -ENOENT (the daemon decides
 * whether that's fine: the default path may be absent; an explicit --config
 * must exist).  Invalid JSON, unknown keys, wrong types, out-of-range values,
 * a file larger than VMQD_FILE_MAX or containing NUL bytes: -EINVAL.  Other
 * I/O errors: their negative errno.
 *
 * On any failure *c is left exactly as it was (the file is applied all or
 * nothing).  If ret_error is not NULL it is always written: NULL on success,
 * else a malloc()ed message: on -EINVAL which key and why, for example
 * "limits.max_machines: must be between 1 and 4096"; on other errors the
 * strerror() text.  It may be NULL on -ENOMEM.  The message does not repeat
 * the path.
 */
int vmqd_config_load(struct vmqd_config *c, const char *path, char **ret_error);

/* Frees the strings of *c and leaves it zeroed.  Accepts a zeroed struct. */
void vmqd_config_done(struct vmqd_config *c);

/*
 * Parses a size: decimal digits, optionally followed by K, M, G or T
 * (binary multiples: 1024, 1024², …), optionally followed by "iB":
 * "4096", "16M", "16MiB", "1G".  -EINVAL if malformed, -ERANGE on overflow.
 * *ret written only on success.
 */
int vmqd_parse_size(const char *s, uint64_t *ret);

/* "err" | "warning" | "notice" | "info" | "debug" <-> LOG_ERR..LOG_DEBUG.
 * from_string: the priority, or -EINVAL.  to_string: NULL if out of range. */
int vmqd_log_level_from_string(const char *s);
const char *vmqd_log_level_to_string(int level);

/* Is s one of the channel modes ("immediate", "deferred"), or one of the
 * transfer policies ("copy", "flip", "auto")?  NULL: false. */
bool vmqd_mode_is_valid(const char *s);
bool vmqd_transfer_is_valid(const char *s);

/*
 * Shared with state.c: reads and parses a JSON file of at most
 * VMQD_FILE_MAX bytes, strictly (UTF-8 checked, no NUL bytes, no trailing
 * garbage, nesting limited to a few levels).  dirfd may be AT_FDCWD.
 * Returns 0 and *ret (a reference the caller puts); -EINVAL and *ret_error
 * (malloc()ed, may be NULL on ENOMEM) when the file is not valid JSON, too
 * large, or not a regular file; other negative errno (-ENOENT, -EACCES,
 * -EIO, ...) when it cannot be read, with *ret_error NULL.
 */
struct json_object;
int vmqd_json_parse_file(int dirfd, const char *path, struct json_object **ret, char **ret_error);

/* Also shared with state.c: replaces *ret_error (when ret_error is not
 * NULL) with the formatted message and returns -EINVAL. */
__attribute__((format(printf, 2, 3))) int vmqd_errorf(char **ret_error, const char *fmt, ...);

/* A user-supplied string made safe to put in quotes in a message: control
 * characters and quotes replaced, long values cut short with "...". */
const char *vmqd_printable(const char *s, char *buf, size_t size);
#define VMQD_PRINTABLE(s) vmqd_printable((s), (char[80]){0}, 80)

/* json_object_put() as a scope cleanup. */
void vmqd_json_putp(struct json_object **o);
#define _cleanup_json_ _cleanup_(vmqd_json_putp)

#endif /* VMQD_CONFIG_H */
