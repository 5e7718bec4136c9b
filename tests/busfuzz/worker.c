/* SPDX-License-Identifier: MIT */
/*
 * One phase of the fuzzer, in its own process (root, or the non-member
 * after setuid()): batches of random calls over a pool of connections,
 * with the replies judged as they come, and between batches
 *   - a liveness check: GetStatistics on a connection of its own must be
 *     answered within --liveness-ms;
 *   - fresh lists of machines and channels, for the next batch to aim at;
 *   - as a member: echo guests with host channels kept running (when there
 *     is /dev/kvm), so that Send, SendFd and Receive carry real messages;
 *     and a clean-up of the machines the batches made, now and then.
 * Connections are closed with calls pending and replaced; now and then a
 * burst of short-lived connections comes and goes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/busfuzz/busfuzz.h"

extern unsigned fz_nonfatal;

#define MAX_CONNS 64
#define INFLIGHT_PER_CONN 16
#define BURST_CONNS 40
#define ANCHORS 2

struct conn {
        sd_bus *bus;
        unsigned inflight;
        unsigned batches_left; /* closed (calls pending or not) when it reaches 0 */
};

struct phase {
        struct fz_worker *w;
        const struct fz_options *o;
        struct fz_shared *sh;
        sd_bus *control;
        char vmqd_unique[128];
        struct conn conns[MAX_CONNS];
        unsigned n_conns;
        uint64_t batch_no;
};

static const char *origin_of(struct phase *p, sd_bus_message *m) {
        const char *sender = sd_bus_message_get_sender(m);
        if (!sender || strncmp(sender, "org.freedesktop.DBus.Local", 26) == 0)
                return "local";
        if (strcmp(sender, "org.freedesktop.DBus") == 0)
                return "bus";
        if (strcmp(sender, p->vmqd_unique) == 0)
                return "vmqd";
        return sender;
}

static int connect_bus(const struct fz_options *o, sd_bus **ret) {
        sd_bus *bus = NULL;
        int r = sd_bus_new(&bus);
        if (r >= 0)
                r = sd_bus_set_address(bus, o->bus);
        if (r >= 0)
                r = sd_bus_set_bus_client(bus, 1);
        if (r >= 0)
                r = sd_bus_negotiate_fds(bus, 1);
        if (r >= 0)
                r = sd_bus_start(bus);
        if (r >= 0)
                r = sd_bus_set_method_call_timeout(bus, o->call_timeout_usec);
        if (r < 0) {
                sd_bus_unref(bus);
                return r;
        }
        *ret = bus;
        return 0;
}

/* Remembers the last call that named a FIFO, for the supervisor's FIFO
 * watch to name when vmqd blocks on one. */
static void note_fifo_call(struct fz_shared *sh, const struct fz_call *call) {
        if (!strstr(call->desc, "fifo"))
                return;
        pthread_mutex_lock(&sh->lock);
        snprintf(sh->fifo_call, sizeof(sh->fifo_call), "%s", call->desc);
        pthread_mutex_unlock(&sh->lock);
}

/* ---- replies ---- */

struct pending {
        struct fz_call call;
        struct phase *p;
        struct conn *conn;
};

static bool read_entry(sd_bus_message *m, const char *want, char type, void *out) {
        const char *contents;
        char t;
        if (sd_bus_message_peek_type(m, &t, &contents) < 0 || t != 'v' || !contents ||
            contents[0] != type || contents[1])
                return false;
        (void)want;
        if (sd_bus_message_enter_container(m, 'v', contents) < 0)
                return false;
        if (type == 'a') /* ay */
                return false;
        if (sd_bus_message_read_basic(m, type, out) < 0)
                return false;
        return sd_bus_message_exit_container(m) >= 0;
}

/* Takes a Receive reply apart and compares it with what was sent. */
static void check_message(struct phase *p, struct fz_call *call, sd_bus_message *m) {
        const char *kind = NULL;
        uint64_t tag = 0, length = UINT64_MAX;
        const void *data = NULL;
        size_t data_len = 0;
        bool has_data = false, has_peer = false;
        int fd = -1, r;
        uint8_t *buf = NULL;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key;
                bool ok = true;
                if (sd_bus_message_read_basic(m, 's', &key) < 0) {
                        r = -EBADMSG;
                        break;
                }
                if (strcmp(key, "kind") == 0)
                        ok = read_entry(m, key, 's', &kind);
                else if (strcmp(key, "tag") == 0)
                        ok = read_entry(m, key, 't', &tag);
                else if (strcmp(key, "length") == 0)
                        ok = read_entry(m, key, 't', &length);
                else if (strcmp(key, "fd") == 0)
                        ok = read_entry(m, key, 'h', &fd);
                else if (strcmp(key, "data") == 0) {
                        ok = sd_bus_message_enter_container(m, 'v', "ay") >= 0 &&
                             sd_bus_message_read_array(m, 'y', &data, &data_len) >= 0 &&
                             sd_bus_message_exit_container(m) >= 0;
                        has_data = ok;
                } else {
                        if (strncmp(key, "peer_", 5) == 0)
                                has_peer = true;
                        ok = sd_bus_message_skip(m, "v") >= 0;
                }
                if (!ok) {
                        fz_report(p->sh, FZ_RECEIVE, "Receive: an entry of the wrong type",
                                  call->desc, "key '%s'", key);
                        return;
                }
                if (sd_bus_message_exit_container(m) < 0) {
                        r = -EBADMSG;
                        break;
                }
        }
        if (r < 0) {
                fz_report(p->sh, FZ_RECEIVE, "Receive: a malformed reply", call->desc, "%s",
                          strerror(-r));
                return;
        }
        p->sh->receives_checked[p->w->phase]++;
        if (!kind || length == UINT64_MAX) {
                fz_report(p->sh, FZ_RECEIVE, "Receive: no kind or no length", call->desc, "kind %s",
                          kind ? kind : "(none)");
                return;
        }
        if (strcmp(kind, "hello") == 0) {
                if (!has_peer)
                        fz_report(p->sh, FZ_RECEIVE, "Receive: a hello without peer_*", call->desc,
                                  "length %" PRIu64, length);
                return;
        }
        if (strcmp(kind, "data") != 0 && strcmp(kind, "page") != 0) {
                if (strcmp(kind, "close") != 0 && strcmp(kind, "error") != 0)
                        fz_report(p->sh, FZ_RECEIVE, "Receive: an undocumented kind", call->desc,
                                  "kind '%s'", kind);
                return;
        }
        if (has_data == (fd >= 0)) {
                fz_report(p->sh, FZ_RECEIVE, "Receive: not exactly one of data and fd", call->desc,
                          "length %" PRIu64, length);
                return;
        }
        if (has_data) {
                if (data_len != length || length > FZ_MAX_INLINE) {
                        fz_report(p->sh, FZ_RECEIVE, "Receive: data of the wrong length",
                                  call->desc, "%zu bytes of data, length says %" PRIu64, data_len,
                                  length);
                        return;
                }
        } else {
                struct stat st;
                off_t at = lseek(fd, 0, SEEK_CUR);
                int seals = fcntl(fd, F_GET_SEALS);
                const int need = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
                p->sh->memfds_checked[p->w->phase]++;
                if (length <= FZ_MAX_INLINE)
                        fz_report(p->sh, FZ_RECEIVE, "Receive: an fd for a small message",
                                  call->desc, "length %" PRIu64, length);
                if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != length) {
                        fz_report(p->sh, FZ_RECEIVE, "Receive: an fd of the wrong size", call->desc,
                                  "length %" PRIu64 ", file %jd bytes", length,
                                  (intmax_t)st.st_size);
                        return;
                }
                if (seals < 0 || (seals & need) != need)
                        fz_report(p->sh, FZ_RECEIVE, "Receive: a memfd that is not sealed",
                                  call->desc, "seals 0x%x", seals);
                if (at != 0)
                        fz_report(p->sh, FZ_RECEIVE, "Receive: a memfd not at offset 0", call->desc,
                                  "file offset %jd of %" PRIu64 ": read() sees %s", (intmax_t)at,
                                  length, (uint64_t)at >= length ? "nothing" : "a tail");
                buf = malloc(length);
                if (!buf)
                        return;
                /* What a reader gets: read() from where the fd is. */
                size_t got = 0;
                while (got < length) {
                        ssize_t n = read(fd, buf + got, length - got);
                        if (n <= 0)
                                break;
                        got += (size_t)n;
                }
                if (got != length) {
                        if (at == 0)
                                fz_report(p->sh, FZ_RECEIVE, "Receive: a memfd that reads short",
                                          call->desc, "read %zu of %" PRIu64 " bytes", got, length);
                        /* compare what is there anyway */
                        if (pread(fd, buf, length, 0) != (ssize_t)length) {
                                free(buf);
                                return;
                        }
                }
                data = buf;
        }
        if ((tag & FZ_TAG_MASK) == FZ_TAG_MAGIC && length > 0) {
                uint8_t *want = malloc(length);
                if (want) {
                        fz_pattern(tag, want, length);
                        if (memcmp(want, data, length) != 0)
                                fz_report(p->sh, FZ_RECEIVE,
                                          "Receive: bytes differ from those sent", call->desc,
                                          "tag 0x%" PRIx64 ", %" PRIu64 " bytes", tag, length);
                        free(want);
                }
        }
        free(buf);
}

static void remember_name(struct fz_worker *w, const char *name) {
        for (unsigned i = 0; i < w->n_names; i++)
                if (strcmp(w->names[i], name) == 0)
                        return;
        if (w->n_names < FZ_MAX_NAMES && strlen(name) < sizeof(w->names[0]))
                snprintf(w->names[w->n_names++], sizeof(w->names[0]), "%s", name);
}

static void remember_channel(struct fz_worker *w, uint32_t id) {
        for (unsigned i = 0; i < w->n_channels; i++)
                if (w->channels[i] == id)
                        return;
        if (w->n_channels < FZ_MAX_CHANNELS)
                w->channels[w->n_channels++] = id;
}

static int on_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        struct pending *pd = userdata;
        struct fz_call *call = &pd->call;
        struct phase *p = pd->p;
        struct fz_worker *w = p->w;

        (void)ret_error;
        if (call->abandoned || call->done)
                return 0;
        call->done = true;
        if (pd->conn && pd->conn->inflight > 0)
                pd->conn->inflight--;
        p->sh->replies[w->phase]++;

        if (sd_bus_message_is_method_error(m, NULL)) {
                const sd_bus_error *e = sd_bus_message_get_error(m);
                const char *origin = origin_of(p, m);
                if (strcmp(origin, "vmqd") == 0) {
                        p->sh->errors[w->phase]++;
                        fz_judge_error(p->sh, call, w->member, e);
                } else if (strcmp(origin, "local") == 0 ||
                           sd_bus_error_has_name(e, SD_BUS_ERROR_NO_REPLY)) {
                        /* sd-bus's own NoReply says it comes from the bus */
                        if (sd_bus_error_has_name(e, SD_BUS_ERROR_NO_REPLY))
                                fz_report(p->sh, FZ_STALL, "no reply in time", call->desc,
                                          "%s (after %.1f s)", e->message ? e->message : "",
                                          (double)(fz_now_usec() - call->started_usec) / 1e6);
                        else
                                fz_report(p->sh, FZ_DAEMON, e->name, call->desc, "%s",
                                          e->message ? e->message : "");
                } else if (strcmp(origin, "bus") == 0) {
                        char what[200];
                        snprintf(what, sizeof(what), "%s from the bus daemon", e->name);
                        fz_report(p->sh,
                                  sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN,
                                                         SD_BUS_ERROR_NAME_HAS_NO_OWNER)
                                          ? FZ_DAEMON
                                          : FZ_ERRORS,
                                  what, call->desc, "%s", e->message ? e->message : "");
                } else {
                        fz_report(p->sh, FZ_DAEMON, "a reply from another owner of org.vmq1",
                                  call->desc, "sender %s", origin);
                }
                return 0;
        }
        fz_count_member(p->sh, call->member, true);
        if (!fz_judge_success(p->sh, call, w->member))
                return 0;
        if (call->reply_signature && !sd_bus_message_has_signature(m, call->reply_signature)) {
                char what[120];
                snprintf(what, sizeof(what), "%s replied with the wrong signature", call->member);
                fz_report(p->sh, FZ_REPLY, what, call->desc, "'%s', not '%s'",
                          sd_bus_message_get_signature(m, true), call->reply_signature);
                return 0;
        }
        switch (call->check) {
        case CHECK_CREATE:
                remember_name(w, call->name);
                break;
        case CHECK_OPEN: {
                uint32_t id;
                const char *path;
                if (sd_bus_message_read(m, "uo", &id, &path) >= 0)
                        remember_channel(w, id);
                break;
        }
        case CHECK_RECEIVE:
                check_message(p, call, m);
                break;
        default:
                break;
        }
        return 0;
}

/* ---- the connection pool ---- */

static void pump(struct phase *p, struct conn *extra, unsigned n_extra, int timeout_ms) {
        struct pollfd fds[MAX_CONNS + BURST_CONNS];
        unsigned n = 0;

        for (unsigned i = 0; i < p->n_conns + n_extra; i++) {
                struct conn *c = i < p->n_conns ? &p->conns[i] : &extra[i - p->n_conns];
                if (!c->bus)
                        continue;
                while (sd_bus_process(c->bus, NULL) > 0)
                        ;
        }
        if (timeout_ms == 0)
                return;
        for (unsigned i = 0; i < p->n_conns + n_extra; i++) {
                struct conn *c = i < p->n_conns ? &p->conns[i] : &extra[i - p->n_conns];
                int fd, events;
                if (!c->bus || (fd = sd_bus_get_fd(c->bus)) < 0 ||
                    (events = sd_bus_get_events(c->bus)) < 0)
                        continue;
                fds[n].fd = fd;
                fds[n].events = (short)events;
                fds[n].revents = 0;
                n++;
        }
        (void)poll(fds, n, timeout_ms);
        for (unsigned i = 0; i < p->n_conns + n_extra; i++) {
                struct conn *c = i < p->n_conns ? &p->conns[i] : &extra[i - p->n_conns];
                if (c->bus)
                        while (sd_bus_process(c->bus, NULL) > 0)
                                ;
        }
}

static int open_conn(struct phase *p, struct conn *c) {
        int r = connect_bus(p->o, &c->bus);
        if (r < 0) {
                fz_report(p->sh, FZ_DAEMON, "cannot connect to the bus", NULL, "%s", strerror(-r));
                c->bus = NULL;
                return r;
        }
        c->inflight = 0;
        c->batches_left = 3 + (unsigned)fz_below(&p->w->rng, 30);
        return 0;
}

/* Closes a connection whatever it has pending: its calls are given up. */
static void drop_conn(struct pending *calls, size_t n, struct conn *c) {
        for (size_t i = 0; i < n; i++)
                if (calls[i].conn == c && !calls[i].call.done) {
                        calls[i].call.abandoned = true;
                        calls[i].conn = NULL;
                }
        c->bus = sd_bus_flush_close_unref(c->bus);
        c->inflight = 0;
}

static bool send_call(struct phase *p, struct pending *pd, struct conn *c) {
        sd_bus_message *m;
        int r;

        pd->p = p;
        pd->conn = c;
        m = fz_gen_call(p->w, c->bus, &pd->call);
        if (!m) {
                pd->call.done = true; /* nothing went out */
                return false;
        }
        if (p->o->verbose)
                printf("busfuzz: call %s\n", pd->call.desc);
        pd->call.started_usec = fz_now_usec();
        note_fifo_call(p->sh, &pd->call);
        r = sd_bus_call_async(c->bus, &pd->call.slot, m, on_reply, pd,
                              pd->call.abandon ? 60 * 1000000ull : p->o->call_timeout_usec);
        sd_bus_message_unref(m);
        if (r < 0) {
                /* too big for the bus, and such: not vmqd's business */
                pd->call.done = true;
                return false;
        }
        c->inflight++;
        p->sh->calls[p->w->phase]++;
        fz_count_member(p->sh, pd->call.member, false);
        return true;
}

static void release_calls(struct pending *calls, size_t n) {
        for (size_t i = 0; i < n; i++) {
                if (!calls[i].call.done && !calls[i].call.abandoned && calls[i].conn &&
                    calls[i].conn->inflight > 0)
                        calls[i].conn->inflight--;
                calls[i].call.abandoned = true;
                calls[i].call.slot = sd_bus_slot_unref(calls[i].call.slot);
        }
        free(calls);
}

/* Waits for the calls that are waited for; reports those that stall. */
static void wait_calls(struct phase *p, struct pending *calls, size_t n, struct conn *extra,
                       unsigned n_extra) {
        uint64_t deadline = fz_now_usec() + p->o->call_timeout_usec + 2000000;

        for (;;) {
                size_t left = 0;
                for (size_t i = 0; i < n; i++)
                        if (!calls[i].call.done && !calls[i].call.abandoned &&
                            !calls[i].call.abandon)
                                left++;
                if (left == 0)
                        return;
                uint64_t now = fz_now_usec();
                if (now > deadline) {
                        for (size_t i = 0; i < n; i++)
                                if (!calls[i].call.done && !calls[i].call.abandoned &&
                                    !calls[i].call.abandon)
                                        fz_report(p->sh, FZ_STALL, "no reply in time",
                                                  calls[i].call.desc, "waited %.1f s",
                                                  (double)(now - calls[i].call.started_usec) / 1e6);
                        return;
                }
                pump(p, extra, n_extra, 20);
        }
}

static void run_batch(struct phase *p) {
        struct fz_worker *w = p->w;
        size_t n = p->o->batch;
        struct pending *calls = calloc(n, sizeof(*calls));

        if (!calls)
                return;
        for (size_t i = 0; i < n; i++) {
                struct conn *c = &p->conns[fz_below(&w->rng, p->n_conns)];
                if (!c->bus && open_conn(p, c) < 0)
                        break;
                while (c->inflight >= INFLIGHT_PER_CONN)
                        pump(p, NULL, 0, 10);
                (void)send_call(p, &calls[i], c);
                if (i % 8 == 7)
                        pump(p, NULL, 0, 0);
        }
        /* A client that goes away with calls pending. */
        if (fz_chance(&w->rng, 250)) {
                struct conn *c = &p->conns[fz_below(&w->rng, p->n_conns)];
                if (c->bus) {
                        (void)sd_bus_flush(c->bus);
                        drop_conn(calls, n, c);
                }
        }
        wait_calls(p, calls, n, NULL, 0);
        release_calls(calls, n);
        /* Connections are replaced after a while, so that what they left
         * pending in vmqd (long Receives) is dropped with them. */
        for (unsigned i = 0; i < p->n_conns; i++) {
                struct conn *c = &p->conns[i];
                if (c->bus && c->batches_left-- == 0)
                        drop_conn(NULL, 0, c);
        }
}

/* Many connections at once, each with one call; half of them leave
 * without waiting for the answer. */
static void burst(struct phase *p) {
        struct conn extra[BURST_CONNS];
        struct pending *calls = calloc(BURST_CONNS, sizeof(*calls));
        unsigned n = 0;

        memset(extra, 0, sizeof(extra));
        if (!calls)
                return;
        for (unsigned i = 0; i < BURST_CONNS; i++) {
                if (open_conn(p, &extra[i]) < 0)
                        break;
                n++;
                (void)send_call(p, &calls[i], &extra[i]);
        }
        for (unsigned i = 0; i < n; i += 2) {
                (void)sd_bus_flush(extra[i].bus);
                drop_conn(calls, n, &extra[i]);
        }
        wait_calls(p, calls, n, extra, n);
        release_calls(calls, n);
        for (unsigned i = 0; i < n; i++)
                extra[i].bus = sd_bus_flush_close_unref(extra[i].bus);
}

/* ---- between batches ---- */

/* GetStatistics on the control connection: its latency in ms, or < 0. */
static double timed_statistics(struct phase *p) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        uint64_t t0 = fz_now_usec();
        int r = sd_bus_call_method(p->control, FZ_BUS_NAME, FZ_PATH, FZ_MANAGER, "GetStatistics",
                                   &e, &reply, "");
        double ms = (double)(fz_now_usec() - t0) / 1000.0;

        if (r < 0) {
                fz_report(p->sh, FZ_DAEMON, "GetStatistics failed", "liveness check", "%s: %s",
                          e.name ? e.name : "", e.message ? e.message : strerror(-r));
                ms = -1;
        }
        sd_bus_message_unref(reply);
        sd_bus_error_free(&e);
        return ms;
}

/* The liveness check between batches.  One answer slower than the bound
 * is followed at once by a second call: a finding is when both are slow,
 * i.e. vmqd did not answer for twice the bound, so that one scheduling
 * hiccup of a small, busy machine is not one.  The maximum reported is
 * the first call's. */
static void liveness(struct phase *p) {
        int ph = p->w->phase;
        double ms = timed_statistics(p);

        if (ms < 0)
                return;
        p->sh->liveness_checks[ph]++;
        if (ms > p->sh->max_liveness_ms[ph])
                p->sh->max_liveness_ms[ph] = ms;
        if (ms <= p->o->liveness_ms)
                return;
        double again = timed_statistics(p);
        if (again > p->o->liveness_ms)
                fz_report(p->sh, FZ_STALL, "liveness: GetStatistics was slow", "liveness check",
                          "%.1f ms, then %.1f ms (bound %.0f ms), after batch %" PRIu64, ms, again,
                          p->o->liveness_ms, p->batch_no);
        else if (again >= 0)
                p->sh->liveness_retried[ph]++;
}

/* Reads the machines and channels that exist now. */
static void refresh(struct phase *p) {
        struct fz_worker *w = p->w;
        sd_bus_message *reply = NULL;
        const char *name, *state, *image, *path, *a, *b;
        uint32_t id;
        int open;

        w->n_names = 0;
        if (sd_bus_call_method(p->control, FZ_BUS_NAME, FZ_PATH, FZ_MANAGER, "ListMachines", NULL,
                               &reply, "") >= 0 &&
            sd_bus_message_enter_container(reply, 'a', "(ssuso)") >= 0) {
                while (sd_bus_message_read(reply, "(ssuso)", &name, &state, &id, &image, &path) > 0)
                        remember_name(w, name);
        }
        reply = sd_bus_message_unref(reply);
        w->n_channels = 0;
        if (sd_bus_call_method(p->control, FZ_BUS_NAME, FZ_PATH, FZ_MANAGER, "ListChannels", NULL,
                               &reply, "") >= 0 &&
            sd_bus_message_enter_container(reply, 'a', "(ussbo)") >= 0) {
                while (sd_bus_message_read(reply, "(ussbo)", &id, &a, &b, &open, &path) > 0)
                        remember_channel(w, id);
        }
        sd_bus_message_unref(reply);
}

static int call_simple(struct phase *p, const char *member, const char *types, ...) {
        sd_bus_message *m = NULL, *reply = NULL;
        va_list ap;
        int r = sd_bus_message_new_method_call(p->control, &m, FZ_BUS_NAME, FZ_PATH, FZ_MANAGER,
                                               member);
        if (r >= 0) {
                va_start(ap, types);
                r = sd_bus_message_appendv(m, types, ap);
                va_end(ap);
        }
        if (r >= 0)
                r = sd_bus_call(p->control, m, 0, NULL, &reply);
        sd_bus_message_unref(m);
        sd_bus_message_unref(reply);
        return r;
}

/* Echo guests with open host channels, so that messages really travel. */
static void keep_anchors(struct phase *p) {
        struct fz_worker *w = p->w;
        sd_bus_message *reply = NULL;
        const char *path, *a, *b;
        uint32_t id;
        int open;

        w->n_anchor_channels = 0;
        for (unsigned i = 0; i < ANCHORS; i++) {
                char name[32], *mpath = NULL, *state = NULL;
                snprintf(name, sizeof(name), "fz-anchor-%u", i);
                if (sd_bus_path_encode(FZ_MACHINE_PREFIX, name, &mpath) < 0)
                        continue;
                if (sd_bus_get_property_string(p->control, FZ_BUS_NAME, mpath, FZ_MACHINE, "State",
                                               NULL, &state) < 0) {
                        (void)call_simple(p, "CreateMachine", "ssa{sv}", name, "echo", 1, "start",
                                          "b", 1);
                } else if (strcmp(state, "running") != 0) {
                        (void)call_simple(p, "StartMachine", "s", name);
                }
                free(state);
                free(mpath);
        }
        if (sd_bus_call_method(p->control, FZ_BUS_NAME, FZ_PATH, FZ_MANAGER, "ListChannels", NULL,
                               &reply, "") >= 0 &&
            sd_bus_message_enter_container(reply, 'a', "(ussbo)") >= 0) {
                while (sd_bus_message_read(reply, "(ussbo)", &id, &a, &b, &open, &path) > 0)
                        if (open && strcmp(a, "host") == 0 && strncmp(b, "fz-anchor-", 10) == 0 &&
                            w->n_anchor_channels < 4)
                                w->anchor_channels[w->n_anchor_channels++] = id;
        }
        sd_bus_message_unref(reply);
        for (unsigned i = 0; i < ANCHORS && w->n_anchor_channels < ANCHORS; i++) {
                char name[32];
                snprintf(name, sizeof(name), "fz-anchor-%u", i);
                sd_bus_message *m = NULL, *r = NULL;
                if (sd_bus_message_new_method_call(p->control, &m, FZ_BUS_NAME, FZ_PATH, FZ_MANAGER,
                                                   "OpenChannel") >= 0 &&
                    sd_bus_message_append(m, "ssa{sv}", "host", name, 1, "depth", "u",
                                          (uint32_t)64) >= 0 &&
                    sd_bus_call(p->control, m, 0, NULL, &r) >= 0 &&
                    sd_bus_message_read(r, "u", &id) >= 0)
                        w->anchor_channels[w->n_anchor_channels++] = id;
                sd_bus_message_unref(m);
                sd_bus_message_unref(r);
        }
}

/* Destroys and undefines what the batches made, and closes their channels,
 * so that the number of objects stays bounded. */
static void clean_up(struct phase *p, bool anchors_too) {
        struct fz_worker *w = p->w;
        refresh(p);
        for (unsigned i = 0; i < w->n_channels; i++) {
                bool anchor = false;
                for (unsigned k = 0; k < w->n_anchor_channels; k++)
                        anchor |= w->anchor_channels[k] == w->channels[i];
                if (!anchor || anchors_too)
                        (void)call_simple(p, "CloseChannel", "u", w->channels[i]);
        }
        for (unsigned i = 0; i < w->n_names; i++) {
                if (!anchors_too && strncmp(w->names[i], "fz-anchor-", 10) == 0)
                        continue;
                (void)call_simple(p, "DestroyMachine", "s", w->names[i]);
                (void)call_simple(p, "UndefineMachine", "s", w->names[i]);
        }
        refresh(p);
}

int fz_worker_run(const struct fz_options *o, struct fz_shared *sh, int phase, bool member) {
        struct fz_worker w = {
                .o = o,
                .sh = sh,
                .rng = fz_mix(o->seed * 2 + (uint64_t)phase),
                .member = member,
                .phase = phase,
                .next_tag = (uint64_t)phase << 40,
        };
        struct phase p = {.w = &w, .o = o, .sh = sh};
        sd_bus_message *reply = NULL;
        const char *owner;
        int r;

        r = connect_bus(o, &p.control);
        if (r < 0) {
                fz_report(sh, FZ_DAEMON, "cannot connect to the bus", NULL, "%s", strerror(-r));
                return 1;
        }
        r = sd_bus_call_method(p.control, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", "GetNameOwner", NULL, &reply, "s",
                               FZ_BUS_NAME);
        if (r < 0 || sd_bus_message_read(reply, "s", &owner) < 0) {
                fz_report(sh, FZ_DAEMON, "org.vmq1 has no owner", NULL, "%s", strerror(-r));
                sd_bus_message_unref(reply);
                sd_bus_unref(p.control);
                return 1;
        }
        snprintf(p.vmqd_unique, sizeof(p.vmqd_unique), "%s", owner);
        sd_bus_message_unref(reply);

        p.n_conns = o->connections < MAX_CONNS ? o->connections : MAX_CONNS;
        uint64_t start = fz_now_usec();
        uint64_t end = start + (uint64_t)(o->seconds * 1e6);
        while (fz_now_usec() < end) {
                if (member && o->kvm)
                        keep_anchors(&p);
                refresh(&p);
                if (fz_chance(&w.rng, 30))
                        burst(&p);
                else
                        run_batch(&p);
                p.batch_no++;
                sh->batches[phase]++;
                liveness(&p);
                if (member && (w.n_names > 16 || p.batch_no % 25 == 0))
                        clean_up(&p, false);
        }
        for (unsigned i = 0; i < p.n_conns; i++)
                p.conns[i].bus = sd_bus_flush_close_unref(p.conns[i].bus);
        if (member)
                clean_up(&p, true);
        sh->seconds[phase] = (double)(fz_now_usec() - start) / 1e6;
        p.control = sd_bus_flush_close_unref(p.control);

        int fatal = 0;
        for (int k = 0; k < _FZ_CLASS_MAX; k++)
                if (sh->counts[k] && !(fz_nonfatal & (1u << k)))
                        fatal++;
        return fatal;
}
