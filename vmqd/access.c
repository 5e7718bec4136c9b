/* SPDX-License-Identifier: MIT */
/*
 * Who may call mutating methods: root, or members of the vmq group.  The
 * D-Bus policy lets everyone call, so the check is ours.  It rests on the
 * uid the bus vouches for (dbus-daemon read it from the socket when the
 * client connected), and on the user database for that uid's groups: a
 * client cannot change either by the time the call is checked.
 */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus/vmq-bus.h"
#include "core/util.h"
#include "vmqd/log.h"
#include "vmqd/manager.h"

static void creds_unrefp(sd_bus_creds **c) {
        sd_bus_creds_unref(*c);
}

/* One getgrnam_r() or getpwuid_r(): 1 found, 0 no such entry, -ERANGE
 * when buf is too small, another -errno on failure. */
typedef int (*db_lookup)(const void *key, void *entry, char *buf, size_t size);

static int group_by_name(const void *key, void *entry, char *buf, size_t size) {
        struct group *found = NULL;
        int r = getgrnam_r(key, entry, buf, size, &found);
        return r != 0 ? -r : found != NULL;
}

static int user_by_uid(const void *key, void *entry, char *buf, size_t size) {
        struct passwd *found = NULL;
        int r = getpwuid_r(*(const uid_t *)key, entry, buf, size, &found);
        return r != 0 ? -r : found != NULL;
}

/* Runs lookup with a buffer that grows (from the sysconf() hint, up to
 * 1 MiB) until the entry fits; the entry's strings point into *ret_buf,
 * which the caller frees. */
static int lookup_grown(db_lookup lookup, int sysconf_name, const void *key, void *entry,
                        char **ret_buf) {
        long size = sysconf(sysconf_name);
        char *buf = NULL;
        int r;

        if (size <= 0)
                size = 4096;
        for (;;) {
                char *t = realloc(buf, (size_t)size);
                if (!t) {
                        free(buf);
                        return -ENOMEM;
                }
                buf = t;
                r = lookup(key, entry, buf, (size_t)size);
                if (r != -ERANGE || size >= 1024 * 1024)
                        break;
                size *= 2;
        }
        *ret_buf = buf;
        return r;
}

/* The gid of group vmq; -ENOENT when there is no such group. */
static int vmq_group_gid(gid_t *ret) {
        _cleanup_free_ char *buf = NULL;
        struct group grp;
        int r = lookup_grown(group_by_name, _SC_GETGR_R_SIZE_MAX, VMQ_BUS_GROUP, &grp, &buf);
        if (r < 0)
                return r;
        if (r == 0)
                return -ENOENT;
        *ret = grp.gr_gid;
        return 0;
}

/* Whether the user uid has gid as its primary or a supplementary group, by
 * the user database; 1, 0 or -errno. */
static int uid_in_group(uid_t uid, gid_t gid) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_free_ gid_t *groups = NULL;
        struct passwd pw;
        int n = 64;
        int r = lookup_grown(user_by_uid, _SC_GETPW_R_SIZE_MAX, &uid, &pw, &buf);
        if (r < 0)
                return r;
        if (r == 0)
                return 0; /* a uid without a user is in no group */
        if (pw.pw_gid == gid)
                return 1;
        for (;;) {
                int want = n;
                gid_t *t = realloc(groups, (size_t)n * sizeof(*groups));
                if (!t)
                        return -ENOMEM;
                groups = t;
                if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &want) >= 0) {
                        for (int i = 0; i < want; i++)
                                if (groups[i] == gid)
                                        return 1;
                        return 0;
                }
                if (want <= n || want > 65536)
                        return -E2BIG;
                n = want;
        }
}

int vmqd_check_access(sd_bus_message *message, sd_bus_error *error) {
        _cleanup_(creds_unrefp) sd_bus_creds *creds = NULL;
        uid_t uid;
        gid_t vmq_gid = 0;
        int r;

        /* Only what the bus itself vouches for (the uid it took from the
         * socket when the client connected), never what sd-bus would add
         * from /proc, which the client could change meanwhile. */
        r = sd_bus_query_sender_creds(message, SD_BUS_CREDS_UID | SD_BUS_CREDS_EUID, &creds);
        if (r >= 0) {
                r = sd_bus_creds_get_euid(creds, &uid);
                if (r < 0)
                        r = sd_bus_creds_get_uid(creds, &uid);
        }
        if (r < 0) {
                const char *sender = sd_bus_message_get_sender(message);
                log_debug_errno(r, "Cannot read the credentials of %s: %m",
                                sender ? sender : "n/a");
                sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                  "Cannot read the caller's credentials: %s", strerror(-r));
                return -EACCES;
        }
        if (uid == 0)
                return 0;

        r = vmq_group_gid(&vmq_gid);
        if (r >= 0)
                r = uid_in_group(uid, vmq_gid);
        if (r > 0)
                return 0;
        if (r < 0 && r != -ENOENT)
                log_warning_errno(r, "Cannot tell whether uid %u is in group '%s': %m",
                                  (unsigned)uid, VMQ_BUS_GROUP);
        sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                          "Access denied: root or group '%s' required", VMQ_BUS_GROUP);
        return -EACCES;
}
