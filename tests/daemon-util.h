/* SPDX-License-Identifier: MIT */
/*
 * Integration-test harness: a private dbus-daemon, a vmqd on it (with a
 * NOTIFY_SOCKET the test listens on), and helpers to run vmqctl and busctl
 * against them as outside clients.
 */
#ifndef VMQ_DAEMON_UTIL_H
#define VMQ_DAEMON_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

struct vmq_testbus {
        char dir[256];     /* private temporary directory */
        char address[512]; /* D-Bus address of the private bus */
        char state_dir[512];
        pid_t dbus_pid;
        pid_t vmqd_pid;
        int notify_fd; /* bound NOTIFY_SOCKET */
        char notify_path[512];
        char last_status[256]; /* last STATUS= seen */
        const char *env;       /* shell assignments for vmqd's environment */
        /* When set, vmqd connects to this libvirt URI (libvirt's in-process
         * test driver, test:///<file>, needs no libvirtd) with its runtime
         * directory <dir>/run, instead of running with --no-libvirt. */
        const char *libvirt_uri;
        char uri_buf[600]; /* libvirt_uri, when vmq_testbus_start_vmqd_on_domains() set it */
};

/* Starts a private dbus-daemon in a fresh temporary directory. */
void vmq_testbus_start(struct vmq_testbus *t);
/* Kills the dbus-daemon (SIGKILL) and starts a new one at the same
 * address, as when the system bus restarts under a running vmqd. */
void vmq_testbus_restart_dbus(struct vmq_testbus *t);
/* Starts vmqd on it (extra arguments appended) and waits for READY=1. */
void vmq_testbus_start_vmqd(struct vmq_testbus *t, const char *extra_args);
/* Writes a node of libvirt's test driver with the domains @names (each
 * with the ivshmem-doorbell device an adoptable domain has, its server in
 * vmqd's runtime directory <dir>/run) and starts vmqd on it. */
void vmq_testbus_start_vmqd_on_domains(struct vmq_testbus *t, const char *const *names, unsigned n);
/* Waits up to 5 s for machine @name to run; fails the test otherwise. */
void vmq_testbus_wait_running(struct vmq_testbus *t, const char *name);
/* Waits up to timeout_ms for @path to exist; returns whether it does. */
bool vmq_wait_for_path(const char *path, int timeout_ms);
/* Starts vmqd like vmq_testbus_start_vmqd() for a start that must fail:
 * waits up to 20 s for it to exit and returns its wait status (the test
 * fails if vmqd says READY=1 instead). */
int vmq_testbus_run_vmqd_to_exit(struct vmq_testbus *t, const char *extra_args);
/* Waits up to timeout_ms for a notify message containing `what`; returns
 * whether it came. */
bool vmq_testbus_wait_notify(struct vmq_testbus *t, const char *what, int timeout_ms);
/* Sends sig to vmqd and waits for it; returns its wait status. */
int vmq_testbus_stop_vmqd(struct vmq_testbus *t, int sig);
/* Stops everything and removes the directory. */
void vmq_testbus_stop(struct vmq_testbus *t);

/*
 * Runs a shell command line with VMQCTL, BUSCTL and BUS expanded by the
 * shell: $VMQCTL is the built vmqctl with --bus=<private address>, $BUSCTL
 * is busctl --address=<private address>, $BUS the address itself.  Captures
 * stdout (and stderr when merge_stderr) into a malloc()ed string; returns
 * the exit status (or -1).
 */
int vmq_testbus_run(struct vmq_testbus *t, char **ret_out, bool merge_stderr, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

/*
 * Runs a command line like vmq_testbus_run(), asserts its exit status is
 * `want` (else fails with its stderr and the end of vmqd's log) and
 * returns its stdout, malloc()ed.
 */
char *vmq_testbus_ok(struct vmq_testbus *t, int want, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
/* The stderr of the last vmq_testbus_ok() call, malloc()ed. */
char *vmq_testbus_last_err(struct vmq_testbus *t);
/* Assert that needle is, or is not, in text. */
void vmq_assert_has(const char *text, const char *needle);
void vmq_assert_hasnt(const char *text, const char *needle);
/* SIGTERM, and assert vmqd exits 0 (a LeakSanitizer report makes it 23). */
void vmq_testbus_expect_clean_exit(struct vmq_testbus *t);

/*
 * Calls method of org.vmq1.Manager (on /org/vmq1) with sd-bus on a
 * connection of its own, so that the error's name can be checked: returns
 * the call's result (negative errno on failure, with *ret_error set; the
 * caller frees it).  ret_reply may be NULL.
 */
int vmq_testbus_call(struct vmq_testbus *t, sd_bus_error *ret_error, sd_bus_message **ret_reply,
                     const char *method, const char *types, ...);

/* Path of a file in the build or source tree. */
const char *vmq_test_builddir(void);
const char *vmq_test_srcdir(void);

/* Number of fds vmqd has open, and its resident anonymous memory in KiB
 * (RssAnon: its heap and stacks; not the pool's frames, guest memory that
 * the pool keeps resident up to its peak use, see core/remap.c). */
int vmq_testbus_vmqd_fds(struct vmq_testbus *t);
long vmq_testbus_vmqd_rss_kib(struct vmq_testbus *t);

#endif
