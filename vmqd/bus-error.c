/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "bus/vmq-bus.h"
#include "core/util.h"
#include "vmqd/bus-error.h"

/* errno -> the name a raw errno gets; the rest is Failed. */
static const char *name_of_errno(int e) {
        switch (e) {
        case ENOMEM:
                return VMQ_BUS_ERROR_NO_MEMORY;
        case EINVAL:
        case ENXIO: /* sd_bus_message_read() of a wrong type */
        case EBADMSG:
        case ERANGE:
        case ENAMETOOLONG:
        case EILSEQ:
                return VMQ_BUS_ERROR_INVALID_ARGUMENT;
        case EMSGSIZE:
        case EFBIG:
        case E2BIG:
                return VMQ_BUS_ERROR_TOO_LARGE;
        case EAGAIN:
                return VMQ_BUS_ERROR_QUEUE_FULL;
        case ETIMEDOUT:
        case ETIME:
                return VMQ_BUS_ERROR_TIMED_OUT;
        case EPIPE:
                return VMQ_BUS_ERROR_CHANNEL_CLOSED;
        case EBUSY:
                return VMQ_BUS_ERROR_BUSY;
        case ESRCH:
                return VMQ_BUS_ERROR_NOT_RUNNING;
        case EUSERS:
                return VMQ_BUS_ERROR_LIMIT_REACHED;
        case EBADF:
        case EBADFD:
                return VMQ_BUS_ERROR_BAD_FD;
        case ENOEXEC:
        case EISDIR:
                return VMQ_BUS_ERROR_BAD_IMAGE;
        case EHOSTUNREACH:
        case ENODEV:
                return VMQ_BUS_ERROR_BACKEND_UNAVAILABLE;
        case EACCES:
        case EPERM:
                return SD_BUS_ERROR_ACCESS_DENIED;
        default:
                return VMQ_BUS_ERROR_FAILED;
        }
}

bool vmqd_bus_error_is_documented(const char *name) {
        if (!name)
                return false;
        if (strcmp(name, SD_BUS_ERROR_ACCESS_DENIED) == 0)
                return true;
        for (const sd_bus_error_map *e = vmq_bus_errors; e->name; e++)
                if (e->name && strcmp(e->name, name) == 0)
                        return true;
        return false;
}

int vmqd_bus_error_check(int r, sd_bus_error *error) {
        if (r >= 0 && !sd_bus_error_is_set(error))
                return r;
        if (sd_bus_error_is_set(error)) {
                if (vmqd_bus_error_is_documented(error->name))
                        return r < 0 ? r : -EIO;
                int e = sd_bus_error_get_errno(error);
                if (e <= 0)
                        e = r < 0 ? -r : EIO;
                sd_bus_error named = SD_BUS_ERROR_NULL;
                (void)sd_bus_error_setf(&named, name_of_errno(e), "%s",
                                        error->message ? error->message : strerror(e));
                sd_bus_error_free(error);
                sd_bus_error_move(error, &named);
                return -e;
        }
        (void)sd_bus_error_setf(error, name_of_errno(-r), "%s", strerror(-r));
        return r;
}

int vmqd_bus_reply_errorf(sd_bus_message *call, const char *name, const char *format, ...) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        va_list ap;

        va_start(ap, format);
        (void)sd_bus_error_setfv(&e, name, format, ap);
        va_end(ap);
        (void)vmqd_bus_error_check(-EIO, &e);
        return sd_bus_reply_method_error(call, &e);
}
