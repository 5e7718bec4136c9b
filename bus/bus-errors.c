/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <pthread.h>

#include "bus/vmq-bus.h"

/* The first entry for an errno is the one sd_bus_error_set_errno() uses on
 * the service side; every entry maps a name back to its errno for clients. */
const sd_bus_error_map vmq_bus_errors[] = {
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_NO_SUCH_MACHINE, ENOENT),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_NO_SUCH_CHANNEL, ENXIO),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_MACHINE_EXISTS, EEXIST),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_INVALID_ARGUMENT, EINVAL),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_BUSY, EBUSY),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_NOT_RUNNING, ESRCH),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_QUEUE_FULL, EAGAIN),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_TIMED_OUT, ETIMEDOUT),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_CHANNEL_CLOSED, EPIPE),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_NOT_AN_END, EPERM),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_TOO_LARGE, EMSGSIZE),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_BAD_IMAGE, ENOEXEC),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_NO_SUCH_IMAGE, ENOENT),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_LIMIT_REACHED, EUSERS),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_BACKEND_UNAVAILABLE, EHOSTUNREACH),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_NO_MEMORY, ENOMEM),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_BAD_FD, EBADF),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_STATE_SAVE_FAILED, EROFS),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_UUID_IN_USE, EADDRINUSE),
        SD_BUS_ERROR_MAP(VMQ_BUS_ERROR_FAILED, EIO),
        SD_BUS_ERROR_MAP_END,
};

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void add_map(void) {
        (void)sd_bus_error_add_map(vmq_bus_errors);
}

void vmq_bus_errors_init(void) {
        pthread_once(&once, add_map);
}
