/* SPDX-License-Identifier: MIT */
/*
 * vmqd's log: lines on stderr, filtered by a maximum syslog priority.
 * Under systemd ($JOURNAL_STREAM or $INVOCATION_ID set) each line starts
 * with "<N>" so journald records its priority; otherwise with "vmqd: ".
 */
#ifndef VMQD_LOG_H
#define VMQD_LOG_H

#include <syslog.h>

/* Reads the environment once; call before the first log line. */
void vmqd_log_open(void);
/* Lines with a priority above level (less urgent) are dropped. */
void vmqd_log_set_level(int level);
int vmqd_log_get_level(void);

/*
 * Logs one line.  error is an errno value (either sign) that %m expands to,
 * or 0.  Returns -abs(error), so that `return log_error_errno(r, ...);`
 * both logs and propagates.
 */
int vmqd_log_internal(int level, int error, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

#define log_full_errno(level, error, ...) vmqd_log_internal(level, error, __VA_ARGS__)
#define log_debug(...) vmqd_log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) vmqd_log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) vmqd_log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) vmqd_log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) vmqd_log_internal(LOG_ERR, 0, __VA_ARGS__)
#define log_debug_errno(error, ...) vmqd_log_internal(LOG_DEBUG, error, __VA_ARGS__)
#define log_notice_errno(error, ...) vmqd_log_internal(LOG_NOTICE, error, __VA_ARGS__)
#define log_warning_errno(error, ...) vmqd_log_internal(LOG_WARNING, error, __VA_ARGS__)
#define log_error_errno(error, ...) vmqd_log_internal(LOG_ERR, error, __VA_ARGS__)

#endif /* VMQD_LOG_H */
