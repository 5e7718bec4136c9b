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

/* The gid of VMQ_BUS_GROUP: -ENOENT if there is no such group. */
static int vmq_group_gid(gid_t *ret) {
        _cleanup_free_ char *buf = NULL;
        struct group grp, *result = NULL;
        long size = sysconf(_SC_GETGR_R_SIZE_MAX);

        if (size <= 0)
                size = 4096;
        for (;;) {
                char *t = realloc(buf, (size_t)size);
                if (!t)
                        return -ENOMEM;
                buf = t;
                int r = getgrnam_r(VMQ_BUS_GROUP, &grp, buf, (size_t)size, &result);
                if (r == ERANGE && size < 1024 * 1024) {
                        size *= 2;
                        continue;
                }
                if (r != 0)
                        return -r;
                break;
        }
        if (!result)
                return -ENOENT;
        *ret = result->gr_gid;
        return 0;
}

/*
 * Is uid a member of gid, by the user database (its primary group, or a
 * supplementary one)?  The same question polkit's unix-group rules ask.
 */
static int uid_in_group(uid_t uid, gid_t gid) {
        _cleanup_free_ char *buf = NULL;
        _cleanup_free_ gid_t *groups = NULL;
        struct passwd pw, *result = NULL;
        long size = sysconf(_SC_GETPW_R_SIZE_MAX);
        int n = 64;

        if (size <= 0)
                size = 4096;
        for (;;) {
                char *t = realloc(buf, (size_t)size);
                if (!t)
                        return -ENOMEM;
                buf = t;
                int r = getpwuid_r(uid, &pw, buf, (size_t)size, &result);
                if (r == ERANGE && size < 1024 * 1024) {
                        size *= 2;
                        continue;
                }
                if (r != 0)
                        return -r;
                break;
        }
        if (!result)
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
