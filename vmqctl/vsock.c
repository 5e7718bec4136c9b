/* SPDX-License-Identifier: MIT */
/*
 * vmqctl: the vsock commands — vsock-connect and vsock-listen, the host's
 * end (CID 2) of an adopted domain's vsock device, on standard input and
 * output.
 *
 * Both end in relay(): one poll() loop, no threads, that copies standard
 * input to the connection and the connection to standard output.  Standard
 * input and output stay blocking (they may be shared with the shell, whose
 * file description O_NONBLOCK would change too); they are only read or
 * written once poll() says so.  The connection is non-blocking, so that a
 * guest that does not read never stops what it sends from being written
 * out.  The end: when the guest has nothing more to send and all it sent is
 * written.  End of file on standard input is passed on as
 * shutdown(SHUT_WR), which the guest sees as the host's end of sending.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "vmqctl/vmqctl.h"

const struct option vsock_options[] = {
        {"verbose", no_argument, NULL, OPT_VERBOSE},
        {0},
};

#define RELAY_BUF (64u * 1024u)

/* Bytes on their way from one fd to the other. */
struct relay_buf {
        char data[RELAY_BUF];
        size_t off, len; /* what is left to write: data[off..off+len) */
        bool eof;        /* the source has ended */
};

/* Reads what @fd has into an empty @b.  Returns 0, or a negative errno
 * (-EAGAIN: nothing after all). */
static int buf_fill(struct relay_buf *b, int fd, bool is_socket) {
        ssize_t n = is_socket ? recv(fd, b->data, sizeof(b->data), MSG_DONTWAIT)
                              : read(fd, b->data, sizeof(b->data));

        if (n < 0)
                return errno == EINTR || errno == EWOULDBLOCK ? -EAGAIN : -errno;
        if (n == 0)
                b->eof = true;
        b->off = 0;
        b->len = (size_t)n;
        return 0;
}

/* Writes what it can of @b to @fd.  Returns 0 or a negative errno. */
static int buf_drain(struct relay_buf *b, int fd, bool is_socket) {
        ssize_t n = is_socket ? send(fd, b->data + b->off, b->len, MSG_DONTWAIT | MSG_NOSIGNAL)
                              : write(fd, b->data + b->off, b->len);

        if (n < 0)
                return errno == EINTR || errno == EWOULDBLOCK ? 0 : -errno;
        b->off += (size_t)n;
        b->len -= (size_t)n;
        return 0;
}

/*
 * Copies standard input to @sock and @sock to standard output, until the
 * guest's side has ended and what it sent is written.  @mask, when not
 * NULL, is the signal mask to wait with (vsock-listen blocks SIGINT and
 * SIGTERM outside its waits, so that none comes between a look at the flag
 * and the wait).  @what names the connection in messages.  Returns an exit
 * code.
 */
static int relay(int sock, const sigset_t *mask, const char *what) {
        struct relay_buf *up = calloc(1, sizeof(*up)), *down = calloc(1, sizeof(*down));
        bool shut = false, lost = false;
        int code = EXIT_FAIL, r;

        if (!up || !down) {
                ctl_error(EXIT_FAIL, "%s", strerror(ENOMEM));
                goto out;
        }
        (void)fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);
        for (;;) {
                struct pollfd p[3] = {
                        {.fd = -1},
                        {.fd = -1},
                        {.fd = -1},
                };
                /* Ask a file only for what is wanted of it: a hung-up
                 * socket would wake poll() all the time otherwise. */
                if (!up->eof && up->len == 0)
                        p[0] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
                if (down->len > 0)
                        p[1] = (struct pollfd){.fd = STDOUT_FILENO, .events = POLLOUT};
                short ev = (short)((!down->eof && down->len == 0 ? POLLIN : 0) |
                                   (up->len > 0 ? POLLOUT : 0));
                if (ev)
                        p[2] = (struct pollfd){.fd = sock, .events = ev};

                if (down->eof && down->len == 0) {
                        code = EXIT_OK;
                        break;
                }
                if (ppoll(p, 3, NULL, mask) < 0) {
                        if (errno != EINTR) {
                                ctl_error(EXIT_FAIL, "poll: %s", strerror(errno));
                                break;
                        }
                        if (was_interrupted()) {
                                code = EXIT_OK;
                                break;
                        }
                        continue;
                }

                if (p[0].revents) {
                        r = buf_fill(up, STDIN_FILENO, false);
                        if (r < 0 && r != -EAGAIN) {
                                ctl_error(EXIT_FAIL, "standard input: %s", strerror(-r));
                                break;
                        }
                }
                if (p[1].revents) {
                        r = buf_drain(down, STDOUT_FILENO, false);
                        if (r < 0) {
                                ctl_error(EXIT_FAIL, "cannot write to standard output: %s",
                                          strerror(-r));
                                break;
                        }
                }
                if (p[2].revents & (POLLOUT | POLLERR | POLLHUP) && up->len > 0) {
                        r = buf_drain(up, sock, true);
                        if (r == -EPIPE || r == -ECONNRESET) {
                                /* The guest takes no more; what it sends
                                 * still counts. */
                                lost = true;
                                up->len = 0;
                                up->eof = true;
                        } else if (r < 0) {
                                ctl_error(EXIT_FAIL, "%s: %s", what, strerror(-r));
                                break;
                        }
                }
                if (p[2].revents & (POLLIN | POLLERR | POLLHUP) && !down->eof && down->len == 0) {
                        r = buf_fill(down, sock, true);
                        if (r == -ECONNRESET) {
                                ctl_error(EXIT_FAIL, "%s: the connection was reset", what);
                                break;
                        }
                        if (r < 0 && r != -EAGAIN) {
                                ctl_error(EXIT_FAIL, "%s: %s", what, strerror(-r));
                                break;
                        }
                }
                if (up->eof && up->len == 0 && !shut) {
                        (void)shutdown(sock, SHUT_WR);
                        shut = true;
                }
        }
        if (code == EXIT_OK && lost)
                code = ctl_error(EXIT_FAIL,
                                 "%s: the guest closed its end before it took all of standard "
                                 "input",
                                 what);
out:
        free(up);
        free(down);
        return code;
}

/* Parses "MACHINE PORT" after the options and connects to the bus.
 * Returns -1 to go on, or an exit code. */
static int vsock_begin(struct ctl *ctl, const struct command *cmd, int argc, char **argv,
                       bool *ret_verbose, const char **ret_name, uint32_t *ret_port) {
        int code, o;

        while ((o = ctl_getopt(ctl, cmd, argc, argv, &code)) != -1) {
                if (o == -2)
                        return code;
                if (o == OPT_VERBOSE)
                        *ret_verbose = true;
        }
        code = ctl_check_args(cmd, argc, argv, 2, 2);
        if (code >= 0)
                return code;
        *ret_name = argv[optind];
        if (parse_u32(argv[optind + 1], ret_port) < 0)
                return ctl_usage(cmd, "%s: invalid port '%s' (0 to 4294967295)", cmd->name,
                                 argv[optind + 1]);
        code = ctl_connect(ctl);
        return code == EXIT_OK ? -1 : code;
}

/* The errors both commands share, in words; returns an exit code. */
static int vsock_fail(struct ctl *ctl, int r, const char *name, uint32_t port) {
        switch (-r) {
        case ENODEV:
                return ctl_error(EXIT_NOT_FOUND,
                                 "machine '%s' has no vsock device (adopt it with --vsock)", name);
        case EACCES:
                return ctl_error(EXIT_ACCESS,
                                 "machine '%s' port %" PRIu32
                                 ": access denied to vmqd's vsock sockets (they are vmqd's "
                                 "user's: run as root)",
                                 name, port);
        case ENAMETOOLONG:
                return ctl_error(EXIT_FAIL,
                                 "machine '%s' port %" PRIu32
                                 ": the socket's path is too long for a UNIX socket",
                                 name, port);
        default:
                return ctl_fail(ctl, r, "no such machine", "machine '%s' port %" PRIu32, name,
                                port);
        }
}

int cmd_vsock_connect(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("vsock-connect");
        bool verbose = false;
        const char *name = NULL;
        uint32_t port = 0, host_port = 0;
        char what[128];
        int code, fd = -1, r;

        code = vsock_begin(ctl, cmd, argc, argv, &verbose, &name, &port);
        if (code >= 0)
                return code;
        r = vmq_client_vsock_connect(ctl->client, name, port, &fd, &host_port);
        switch (-r) {
        case 0:
                break;
        case ECONNREFUSED:
                return ctl_error(EXIT_FAIL,
                                 "machine '%s': the guest refused port %" PRIu32
                                 " (nothing listens there, or its QEMU is not connected)",
                                 name, port);
        case ETIMEDOUT:
                return ctl_error(EXIT_TIMEOUT,
                                 "machine '%s': no answer to a connection to port %" PRIu32
                                 " in time",
                                 name, port);
        case EBADMSG:
                return ctl_error(EXIT_FAIL,
                                 "machine '%s' port %" PRIu32 ": vmqd's answer was malformed", name,
                                 port);
        default:
                return vsock_fail(ctl, r, name, port);
        }
        if (verbose && !ctl->quiet)
                ctl_error(0, "connected to machine '%s' port %" PRIu32 " from host port %" PRIu32,
                          name, port, host_port);
        snprintf(what, sizeof(what), "machine '%s' port %" PRIu32, name, port);
        code = relay(fd, NULL, what);
        close(fd);
        return code;
}

/* Waits for the guest's connection on @listen_fd with the signals
 * unblocked.  Returns the connection, -EINTR when interrupted, or a
 * negative errno. */
static int accept_one(int listen_fd, const sigset_t *mask) {
        for (;;) {
                struct pollfd p = {.fd = listen_fd, .events = POLLIN};
                int fd;

                if (ppoll(&p, 1, NULL, mask) < 0) {
                        if (errno != EINTR)
                                return -errno;
                        if (was_interrupted())
                                return -EINTR;
                        continue;
                }
                fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
                if (fd >= 0)
                        return fd;
                if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED)
                        return -errno;
        }
}

int cmd_vsock_listen(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("vsock-listen");
        bool verbose = false;
        const char *name = NULL;
        uint32_t port = 0;
        char *path = NULL, what[128];
        sigset_t block, old;
        int code, listen_fd = -1, fd, r;

        code = vsock_begin(ctl, cmd, argc, argv, &verbose, &name, &port);
        if (code >= 0)
                return code;

        /* From before the socket exists until it is gone, SIGINT and SIGTERM
         * only come during a wait, which then ends: the file never stays. */
        sigemptyset(&block);
        sigaddset(&block, SIGINT);
        sigaddset(&block, SIGTERM);
        sigprocmask(SIG_BLOCK, &block, &old);
        install_interrupt_handlers();

        r = vmq_client_vsock_listen(ctl->client, name, port, &listen_fd, &path);
        if (r == -EADDRINUSE)
                return ctl_error(EXIT_BUSY,
                                 "machine '%s' port %" PRIu32
                                 ": taken (another program listens there)",
                                 name, port);
        if (r < 0)
                return vsock_fail(ctl, r, name, port);
        if (verbose && !ctl->quiet)
                ctl_error(0, "listening on '%s' for machine '%s' port %" PRIu32, path, name, port);

        fd = accept_one(listen_fd, &old);
        /* One connection: later ones find nobody and are reset. */
        close(listen_fd);
        (void)unlink(path);
        if (fd == -EINTR)
                code = EXIT_OK;
        else if (fd < 0)
                code = ctl_error(EXIT_FAIL, "'%s': %s", path, strerror(-fd));
        else {
                if (verbose && !ctl->quiet)
                        ctl_error(0, "machine '%s' connected to port %" PRIu32, name, port);
                snprintf(what, sizeof(what), "machine '%s' port %" PRIu32, name, port);
                code = relay(fd, &old, what);
                close(fd);
        }
        free(path);
        return code;
}
