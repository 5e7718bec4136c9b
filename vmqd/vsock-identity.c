/* SPDX-License-Identifier: MIT */
/* The identity service of vsock: see vsock-identity.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <systemd/sd-event.h>

#include "core/util.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"
#include "vmqd/state.h"
#include "vmqd/vsock-identity.h"
#include "vmqd/vsock.h"

/* Answers waiting to be written; questions are read only while a whole
 * answer (at most ANSWER_MAX bytes) still fits. */
#define OUT_MAX 4096u
#define ANSWER_MAX 160u

struct vsock_identity {
        struct manager *manager;
        uint32_t cid; /* the asker */
        int fd;
        sd_event_source *source;
        char in[VSOCK_IDENTITY_LINE_MAX + 1];
        size_t in_len;
        char out[OUT_MAX];
        size_t out_len;
        bool done; /* no more questions: close once the answers are written */
};

static void say(struct vsock_identity *id, const char *fmt, ...)
        __attribute__((format(printf, 2, 3)));
static void say(struct vsock_identity *id, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(id->out + id->out_len, OUT_MAX - id->out_len, fmt, ap);
        va_end(ap);
        if (n > 0 && id->out_len + (size_t)n < OUT_MAX)
                id->out_len += (size_t)n;
}

/* Says "OK <cid> <name> <uuid>" when machine mc (NULL: none) has a CID
 * and the asker may know it: it is the asker, or a channel is open between
 * the two.  False when nothing was said. */
static bool say_known(struct vsock_identity *id, const struct machine *mc) {
        struct manager *m = id->manager;
        struct machine *asker = vsock_machine_by_cid(m, id->cid);

        if (!asker || !mc || !vsock_cid_of(mc) ||
            (mc != asker && !vsock_channel_open(m, asker->name, mc->name)))
                return false;
        say(id, "OK %" PRIu32 " %s %s\n", vsock_cid_of(mc), mc->name, mc->uuid);
        return true;
}

/* Answers one question (the line without its \n). */
static void answer(struct vsock_identity *id, char *line) {
        struct manager *m = id->manager;
        size_t len = strlen(line);
        uint64_t cid = 0;
        const char *p;

        if (len && line[len - 1] == '\r')
                line[len - 1] = '\0';
        if (strncmp(line, "NAME ", 5) == 0 && line[5]) {
                if (!vmqd_name_is_valid(line + 5)) {
                        say(id, "ERR bad name\n");
                        return;
                }
                if (!say_known(id, manager_find_machine(m, line + 5)))
                        say(id, "NONE %s\n", line + 5);
                return;
        }
        if (strncmp(line, "WHO ", 4) != 0 || !line[4]) {
                say(id, "ERR expected WHO <cid> or NAME <name>\n");
                return;
        }
        for (p = line + 4; *p; p++) {
                if (*p < '0' || *p > '9' || cid > UINT32_MAX) {
                        say(id, "ERR bad CID\n");
                        return;
                }
                cid = cid * 10 + (uint64_t)(*p - '0');
        }
        if (cid > UINT32_MAX) {
                say(id, "ERR bad CID\n");
                return;
        }
        if (cid == VMQ_VSOCK_CID_HOST) {
                say(id, "OK 2 host -\n");
                return;
        }
        if (!say_known(id, vsock_machine_by_cid(m, cid)))
                say(id, "NONE %" PRIu64 "\n", cid);
}

/* Takes the whole lines of in; false when a line is too long. */
static bool take_lines(struct vsock_identity *id) {
        char *nl;
        while (id->out_len + ANSWER_MAX <= OUT_MAX && (nl = memchr(id->in, '\n', id->in_len))) {
                *nl = '\0';
                answer(id, id->in);
                size_t used = (size_t)(nl + 1 - id->in);
                memmove(id->in, nl + 1, id->in_len - used);
                id->in_len -= used;
        }
        return memchr(id->in, '\n', id->in_len) || id->in_len <= VSOCK_IDENTITY_LINE_MAX;
}

static void update_events(struct vsock_identity *id) {
        uint32_t ev = 0;
        if (!id->done && id->out_len + ANSWER_MAX <= OUT_MAX)
                ev |= EPOLLIN;
        if (id->out_len)
                ev |= EPOLLOUT;
        if (!ev) {
                (void)sd_event_source_set_enabled(id->source, SD_EVENT_OFF);
                return;
        }
        (void)sd_event_source_set_io_events(id->source, ev);
        (void)sd_event_source_set_enabled(id->source, SD_EVENT_ON);
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        struct vsock_identity *id = userdata;
        (void)s;

        if (revents & EPOLLIN && !id->done) {
                ssize_t n = read(fd, id->in + id->in_len, sizeof(id->in) - id->in_len);
                if (n > 0)
                        id->in_len += (size_t)n;
                else if (n == 0 || (errno != EAGAIN && errno != EINTR))
                        id->done = true;
                if (!take_lines(id)) {
                        say(id, "ERR line too long\n");
                        id->done = true;
                }
        }
        if (id->out_len) {
                ssize_t n = send(fd, id->out, id->out_len, MSG_DONTWAIT | MSG_NOSIGNAL);
                if (n > 0) {
                        memmove(id->out, id->out + n, id->out_len - (size_t)n);
                        id->out_len -= (size_t)n;
                } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
                        id->out_len = 0; /* the other end is gone */
                        id->done = true;
                }
                if (!id->done && !take_lines(id)) {
                        say(id, "ERR line too long\n");
                        id->done = true;
                }
        }
        if (id->done && !id->out_len)
                (void)shutdown(fd, SHUT_WR); /* the guest reads the end */
        update_events(id);
        return 0;
}

int vsock_identity_new(struct manager *m, uint32_t cid, struct vsock_identity **ret, int *ret_fd) {
        struct vsock_identity *id = calloc(1, sizeof(*id));
        int sv[2];

        if (!id)
                return -ENOMEM;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0) {
                free(id);
                return -errno;
        }
        id->manager = m;
        id->cid = cid;
        id->fd = sv[0];
        if (sd_event_add_io(m->event, &id->source, id->fd, EPOLLIN, on_io, id) < 0) {
                vmq_close(sv[0]);
                vmq_close(sv[1]);
                free(id);
                return -ENOMEM;
        }
        *ret = id;
        *ret_fd = sv[1];
        return 0;
}

struct vsock_identity *vsock_identity_free(struct vsock_identity *id) {
        if (!id)
                return NULL;
        id->source = sd_event_source_disable_unref(id->source);
        vmq_close(id->fd);
        free(id);
        return NULL;
}
