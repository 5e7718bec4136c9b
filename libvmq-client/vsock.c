/* SPDX-License-Identifier: MIT */
/*
 * libvmq-client: the host's end of an adopted domain's vsock device.
 *
 * vmqd serves CID 2 through UNIX sockets, as Firecracker does (see
 * vmqd/vsock-host.h): the machine's VsockHostSocket property names a socket
 * that takes "CONNECT <port>\n" and answers "OK <host port>\n" once the
 * guest accepted, and a guest's connection to CID 2, port P, goes to the
 * program listening at that path followed by "_P".  The only D-Bus here is
 * reading the property; the rest is plain sockets, so that the caller ends
 * up with an ordinary stream.
 *
 * The OK line is read one byte at a time: the guest's first bytes may
 * follow it at once, and they belong to the caller's stream, not to a
 * buffer of ours.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include "bus/vmq-bus.h"
#include "libvmq-client/client-internal.h"

/* "OK 4294967295\n" with room to spare; a longer line is malformed. */
#define OK_LINE_MAX 32

/* The machine's VsockHostSocket, read within the client's call timeout:
 * -ENOENT for no such machine, -ENODEV for none (the machine has no
 * device, or vmqd predates vsock). */
static int host_socket_path(struct vmq_client *c, const char *machine, char **ret) {
        _cleanup_bus_error_ sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_free_ char *path = NULL;
        const char *value = NULL;
        int r;

        r = sd_bus_path_encode(VMQ_BUS_MACHINE_PREFIX, machine, &path);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_call(c->bus, &m, VMQ_BUS_NAME, path,
                                           "org.freedesktop.DBus.Properties", "Get");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "ss", VMQ_BUS_MACHINE_IFACE, "VsockHostSocket");
        if (r < 0)
                return r;
        r = sd_bus_call(c->bus, m, c->call_timeout_usec, &error, &reply);
        if (r < 0) {
                if (sd_bus_error_has_name(&error, SD_BUS_ERROR_UNKNOWN_PROPERTY))
                        return -ENODEV;
                return vmqc_error(c, &error, r, -ENOENT);
        }
        r = sd_bus_message_read(reply, "v", "s", &value);
        if (r < 0)
                return r == -ENXIO ? -EBADMSG : r;
        if (!*value)
                return -ENODEV;
        return vmqc_strdup(value, ret);
}

/* Fills @sa with @path; -ENAMETOOLONG when it does not fit. */
static int unix_address(const char *path, struct sockaddr_un *sa) {
        size_t len = strlen(path);

        if (len >= sizeof(sa->sun_path))
                return -ENAMETOOLONG;
        memset(sa, 0, sizeof(*sa));
        sa->sun_family = AF_UNIX;
        memcpy(sa->sun_path, path, len + 1);
        return 0;
}

/* connect() to a UNIX socket, again after a signal: the kernel leaves an
 * AF_UNIX socket unconnected when it interrupts the wait for the backlog. */
static int connect_unix(int fd, const struct sockaddr_un *sa) {
        while (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0)
                if (errno != EINTR)
                        return -errno;
        return 0;
}

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

/* Waits until @fd is readable or the deadline passes (-ETIMEDOUT). */
static int wait_readable(int fd, uint64_t deadline) {
        for (;;) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                uint64_t now = now_usec(), left;
                int ms, r;

                if (now >= deadline)
                        return -ETIMEDOUT;
                left = (deadline - now + 999) / 1000;
                ms = left > INT32_MAX ? INT32_MAX : (int)left;
                r = poll(&p, 1, ms);
                if (r > 0)
                        return 0;
                if (r < 0 && errno != EINTR)
                        return -errno;
        }
}

/* Parses "OK <decimal>" (the line without its \n). */
static int parse_ok_line(const char *line, uint32_t *ret) {
        uint64_t v = 0;
        const char *p;

        if (strncmp(line, "OK ", 3) != 0 || !line[3])
                return -EBADMSG;
        for (p = line + 3; *p; p++) {
                if (*p < '0' || *p > '9')
                        return -EBADMSG;
                v = v * 10 + (uint64_t)(*p - '0');
                if (v > UINT32_MAX)
                        return -EBADMSG;
        }
        *ret = (uint32_t)v;
        return 0;
}

/* Reads vmqd's answer to CONNECT.  End of file or a reset before a whole
 * line is the guest's refusal: vmqd closes the socket then. */
static int read_ok_line(int fd, uint64_t deadline, uint32_t *ret_port) {
        char line[OK_LINE_MAX];
        size_t n = 0;

        for (;;) {
                ssize_t k;
                int r;

                r = wait_readable(fd, deadline);
                if (r < 0)
                        return r;
                k = recv(fd, line + n, 1, MSG_DONTWAIT);
                if (k < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        return errno == ECONNRESET ? -ECONNREFUSED : -errno;
                }
                if (k == 0)
                        return -ECONNREFUSED;
                if (line[n] == '\n') {
                        line[n] = '\0';
                        return parse_ok_line(line, ret_port);
                }
                if (++n == sizeof(line))
                        return -EBADMSG;
        }
}

static int send_all(int fd, const char *buf, size_t len) {
        while (len > 0) {
                ssize_t k = send(fd, buf, len, MSG_NOSIGNAL);

                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                buf += k;
                len -= (size_t)k;
        }
        return 0;
}

VMQ_EXPORT int vmq_client_vsock_connect(struct vmq_client *c, const char *machine, uint32_t port,
                                        int *ret_fd, uint32_t *ret_host_port) {
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = -1;
        struct sockaddr_un sa;
        char line[OK_LINE_MAX];
        uint64_t deadline;
        uint32_t host_port = 0;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!machine || !ret_fd)
                return -EINVAL;
        r = host_socket_path(c, machine, &path);
        if (r < 0)
                return r;
        r = unix_address(path, &sa);
        if (r < 0)
                return r;
        deadline = vmqc_add_timeout(now_usec(), c->call_timeout_usec);

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        r = connect_unix(fd, &sa);
        /* No socket there, or nobody behind it: vmqd dropped the device
         * since it answered. */
        if (r == -ENOENT || r == -ECONNREFUSED)
                return -ECONNREFUSED;
        if (r < 0)
                return r;
        snprintf(line, sizeof(line), "CONNECT %" PRIu32 "\n", port);
        r = send_all(fd, line, strlen(line));
        if (r == -EPIPE || r == -ECONNRESET)
                return -ECONNREFUSED;
        if (r < 0)
                return r;
        r = read_ok_line(fd, deadline, &host_port);
        if (r < 0)
                return r;
        *ret_fd = fd;
        fd = -1;
        if (ret_host_port)
                *ret_host_port = host_port;
        return 0;
}

/*
 * Whether a socket is bound at @sa's path: -EADDRINUSE when one is, 0 when
 * the file is a socket nobody holds any more (a program that did not
 * unlink it).  The probe is a datagram socket: connect() then finds the
 * stream socket bound there and fails with EPROTOTYPE, or finds none and
 * fails with ECONNREFUSED; unlike a stream connect(), it never puts a
 * connection in a live listener's queue, which that listener would take
 * for the guest's.
 */
static int probe_bound(const struct sockaddr_un *sa) {
        _cleanup_close_ int probe = -1;
        int r;

        probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (probe < 0)
                return -errno;
        r = connect_unix(probe, sa);
        if (r == -ECONNREFUSED)
                return 0;
        if (r == -EPROTOTYPE || r == 0)
                return -EADDRINUSE;
        return r;
}

/*
 * Binds @fd to @sa.  A socket file there whose listener is gone is
 * replaced; one that a program still holds, or anything that is not a
 * socket, gives -EADDRINUSE.
 */
static int bind_replacing_stale(int fd, const struct sockaddr_un *sa) {
        for (unsigned attempt = 0;; attempt++) {
                struct stat st;
                int r;

                if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
                        return 0;
                if (errno != EADDRINUSE || attempt > 0)
                        return -errno;
                if (lstat(sa->sun_path, &st) < 0) {
                        if (errno == ENOENT)
                                continue; /* gone meanwhile: bind again */
                        return -errno;
                }
                if (!S_ISSOCK(st.st_mode))
                        return -EADDRINUSE;
                r = probe_bound(sa);
                if (r < 0)
                        return r;
                if (unlink(sa->sun_path) < 0 && errno != ENOENT)
                        return -errno;
        }
}

VMQ_EXPORT int vmq_client_vsock_listen(struct vmq_client *c, const char *machine, uint32_t port,
                                       int *ret_fd, char **ret_path) {
        _cleanup_free_ char *host = NULL, *path = NULL;
        _cleanup_close_ int fd = -1;
        struct sockaddr_un sa;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!machine || !ret_fd || !ret_path)
                return -EINVAL;
        r = host_socket_path(c, machine, &host);
        if (r < 0)
                return r;
        if (asprintf(&path, "%s_%" PRIu32, host, port) < 0) {
                path = NULL;
                return -ENOMEM;
        }
        r = unix_address(path, &sa);
        if (r < 0)
                return r;

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        r = bind_replacing_stale(fd, &sa);
        if (r < 0)
                return r;
        if (listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                (void)unlink(path);
                return r;
        }
        *ret_fd = fd;
        fd = -1;
        *ret_path = VMQC_TAKE_PTR(path);
        return 0;
}
