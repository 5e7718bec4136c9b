/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "vmqd/log.h"

static int max_level = LOG_INFO;
static bool under_systemd;

void vmqd_log_open(void) {
        under_systemd = getenv("JOURNAL_STREAM") || getenv("INVOCATION_ID");
}

void vmqd_log_set_level(int level) {
        max_level = level;
}

int vmqd_log_get_level(void) {
        return max_level;
}

int vmqd_log_internal(int level, int error, const char *format, ...) {
        char buf[2048];
        va_list ap;

        if (error < 0)
                error = -error;
        if (level > max_level)
                return -error;

        /* Let %m expand to the error passed in, not to whatever errno is. */
        errno = error;
        va_start(ap, format);
        (void)vsnprintf(buf, sizeof(buf), format, ap);
        va_end(ap);

        if (under_systemd)
                fprintf(stderr, "<%d>%s\n", level, buf);
        else
                fprintf(stderr, "vmqd: %s\n", buf);
        errno = error;
        return -error;
}
