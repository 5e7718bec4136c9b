/* SPDX-License-Identifier: MIT */
/*
 * Who may call mutating methods: root, or members of the vmq group.  The
 * D-Bus policy lets everyone call, so the check is ours, made on the
 * sender's credentials as the bus (or, augmented, /proc) reports them.
 */
#include <errno.h>
#include <grp.h>
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

int vmqd_check_access(sd_bus_message *message, sd_bus_error *error) {
        _cleanup_(creds_unrefp) sd_bus_creds *creds = NULL;
        const gid_t *gids = NULL;
        uid_t uid;
        gid_t gid, vmq_gid = 0;
        int r, n;

        r = sd_bus_query_sender_creds(message,
                                      SD_BUS_CREDS_UID | SD_BUS_CREDS_EUID | SD_BUS_CREDS_EGID |
                                              SD_BUS_CREDS_SUPPLEMENTARY_GIDS |
                                              SD_BUS_CREDS_AUGMENT,
                                      &creds);
        if (r < 0) {
                const char *sender = sd_bus_message_get_sender(message);
                log_debug_errno(r, "Cannot read the credentials of %s: %m",
                                sender ? sender : "n/a");
                sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                                  "Cannot read the caller's credentials: %s", strerror(-r));
                return -EACCES;
        }

        /* A private bus may only tell the uid; the effective one is better. */
        r = sd_bus_creds_get_euid(creds, &uid);
        if (r < 0)
                r = sd_bus_creds_get_uid(creds, &uid);
        if (r >= 0 && uid == 0)
                return 0;

        r = vmq_group_gid(&vmq_gid);
        if (r >= 0) {
                if (sd_bus_creds_get_egid(creds, &gid) >= 0 && gid == vmq_gid)
                        return 0;
                n = sd_bus_creds_get_supplementary_gids(creds, &gids);
                for (int i = 0; i < n; i++)
                        if (gids[i] == vmq_gid)
                                return 0;
        }

        sd_bus_error_setf(error, SD_BUS_ERROR_ACCESS_DENIED,
                          "Access denied: root or group '%s' required", VMQ_BUS_GROUP);
        return -EACCES;
}
