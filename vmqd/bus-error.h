/* SPDX-License-Identifier: MIT */
/*
 * The error map on the wire: every error a vmqd method answers is one of
 * the documented names (vmqd/DBUS-API.md, "Errors"): org.vmq1.Error.*, or
 * org.freedesktop.DBus.Error.AccessDenied from the access check.  Calls
 * that do not fit the interface at all (an unknown method, object or
 * property, a wrong signature) are answered by sd-bus before vmqd sees
 * them, with the standard org.freedesktop.DBus.Error.* names.
 *
 * sd_bus_error_set_errno() ignores registered maps and would put
 * System.Error.EISDIR and the like on the wire for an errno nobody turned
 * into a name.  So every method handler is registered through
 * VMQD_BUS_METHOD(), whose wrapper passes what the handler returned to
 * vmqd_bus_error_check().
 */
#ifndef VMQD_BUS_ERROR_H
#define VMQD_BUS_ERROR_H

#include <stdbool.h>
#include <systemd/sd-bus.h>

/*
 * r < 0 from a method handler: makes *error a documented one.  An error
 * already set under a documented name stays.  One under another name
 * (a raw errno name, or a standard one from an sd-bus helper) is renamed
 * by its errno, keeping its message.  None set: named by -r, with
 * strerror(-r) as the message.  Errnos without a name of their own become
 * org.vmq1.Error.Failed.  Returns r (or 0 when the error was set and r
 * was not negative, which sd-bus answers the same way).
 */
int vmqd_bus_error_check(int r, sd_bus_error *error);

/*
 * Answers call (a method call whose reply comes later, like Receive) with
 * the error name and printf-style message, through vmqd_bus_error_check():
 * a name that is not documented goes out as a documented one.  Returns
 * what sd_bus_reply_method_error() returns.
 */
int vmqd_bus_reply_errorf(sd_bus_message *call, const char *name, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

/* Whether name is one of the documented error names. */
bool vmqd_bus_error_is_documented(const char *name);

/* Defines handler_checked(), the wrapper to put in a vtable. */
#define VMQD_BUS_CHECKED(handler)                                                                  \
        static int handler##_checked(sd_bus_message *m_, void *u_, sd_bus_error *e_) {             \
                return vmqd_bus_error_check(handler(m_, u_, e_), e_);                              \
        }

#endif /* VMQD_BUS_ERROR_H */
