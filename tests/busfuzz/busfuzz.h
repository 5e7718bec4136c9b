/* SPDX-License-Identifier: MIT */
/*
 * vmq-busfuzz: shared declarations (see busfuzz.c for what the fuzzer
 * does and how to read its output).
 *
 *   busfuzz.c  options, the supervisor (phases, /proc sampling, summary)
 *   worker.c   one phase: connections, batches, replies, liveness
 *   gen.c      the calls: methods, arguments and their mutations
 *   files.c    the hostile images and file descriptors
 *   verdict.c  which answers are allowed, and the findings table
 */
#ifndef VMQ_BUSFUZZ_H
#define VMQ_BUSFUZZ_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

#define FZ_BUS_NAME "org.vmq1"
#define FZ_PATH "/org/vmq1"
#define FZ_MACHINE_PREFIX "/org/vmq1/machine"
#define FZ_CHANNEL_PREFIX "/org/vmq1/channel"
#define FZ_MANAGER "org.vmq1.Manager"
#define FZ_MACHINE "org.vmq1.Machine"
#define FZ_CHANNEL "org.vmq1.Channel"
#define FZ_PROPERTIES "org.freedesktop.DBus.Properties"
#define FZ_MAX_INLINE (64u * 1024u)
/* Tags of the messages the fuzzer sends: their payload is fz_pattern(tag). */
#define FZ_TAG_MAGIC 0xb05f000000000000ull
#define FZ_TAG_MASK 0xffff000000000000ull

/* What a finding is about.  Each class is fatal unless --nonfatal names it. */
enum fz_class {
        FZ_ERRORS,    /* an error name the API does not document for that call */
        FZ_ACCESS,    /* a non-member changed something, was refused a read, or was
                       * told something else than AccessDenied for a mutating call */
        FZ_ACCEPTED,  /* a call with an argument the API documents as invalid succeeded */
        FZ_STALL,     /* no reply within the call timeout, or liveness over its bound */
        FZ_RECEIVE,   /* a received message that is malformed or not what was sent */
        FZ_REPLY,     /* a success reply with the wrong signature */
        FZ_RESOURCES, /* vmqd's fds or RSS over the bound */
        FZ_DAEMON,    /* vmqd left the bus or died */
        _FZ_CLASS_MAX,
};

/* The standard errors a call may get, as a bit mask. */
enum {
        A_UNKNOWN_METHOD = 1u << 0,
        A_UNKNOWN_OBJECT = 1u << 1,
        A_UNKNOWN_INTERFACE = 1u << 2,
        A_UNKNOWN_PROPERTY = 1u << 3,
        A_INVALID_ARGS = 1u << 4,
        A_READ_ONLY = 1u << 5,
        A_ACCESS_DENIED = 1u << 6,
        /* any org.vmq1.Error.* name the API documents */
        A_VMQ = 1u << 7,
        A_UNKNOWN_ANY = A_UNKNOWN_METHOD | A_UNKNOWN_OBJECT | A_UNKNOWN_INTERFACE,
};

/* What to check in a success reply. */
enum fz_check {
        CHECK_NONE,
        CHECK_CREATE,  /* remember the machine */
        CHECK_OPEN,    /* remember the channel */
        CHECK_RECEIVE, /* take the message apart and compare it with what was sent */
};

struct fz_worker;

/* One call in flight. */
struct fz_call {
        struct fz_worker *w;
        sd_bus_slot *slot;
        char desc[400];       /* how the report names it: Member(args) on path */
        char member[48];      /* for the per-method statistics */
        unsigned allow;       /* A_* bits */
        bool mutating;        /* the API says: needs root or group vmq */
        bool must_fail;       /* carries an argument the API documents as invalid */
        const char *why;      /* which one (static text) */
        bool valid_signature; /* the arguments are what the method takes */
        bool abandon;         /* not waited for (long Receive, Stop, ...) */
        bool abandoned;       /* given up: a late reply is not looked at */
        bool done;
        enum fz_check check;
        const char *reply_signature; /* of a success reply, or NULL: not checked */
        char name[128];              /* CHECK_CREATE: the machine's name */
        uint64_t started_usec;
};

/* The PRNG: splitmix64, a fine generator for choices. */
static inline uint64_t fz_mix(uint64_t x) {
        x += 0x9e3779b97f4a7c15ull;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        return x ^ (x >> 31);
}

static inline uint64_t fz_next(uint64_t *state) {
        *state += 0x9e3779b97f4a7c15ull;
        uint64_t x = *state;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        return x ^ (x >> 31);
}

/* 0 .. n-1 (n > 0) */
static inline uint64_t fz_below(uint64_t *state, uint64_t n) {
        return fz_next(state) % n;
}

/* true with probability per_mille / 1000 */
static inline bool fz_chance(uint64_t *state, unsigned per_mille) {
        return fz_below(state, 1000) < per_mille;
}

/* The payload of a message with this tag: len bytes derived from it. */
void fz_pattern(uint64_t tag, uint8_t *buf, size_t len);
uint64_t fz_now_usec(void);

/* ---- files.c ---- */

/* Makes the hostile files in dir (world-readable); returns 0 or -errno. */
int fz_files_make(const char *dir, const char *guest_dir, uint64_t seed);
/* A path for an image argument: hostile files, system files, names. */
const char *fz_image_path(uint64_t *rng, const char *dir, const char *guest_dir, char *buf,
                          size_t size);
/* Whether a thread of pid is blocked opening a FIFO (its wchan says so;
 * root can read it). */
bool fz_blocked_on_fifo(pid_t pid);
/* The FIFOs among them, opened for writing and closed again, so that a
 * reader blocked on one sees end of file.  Returns how many had a reader. */
int fz_files_unblock(const char *dir);

/* The kinds of file descriptor SendFd is given. */
struct fz_fd {
        int fd;
        bool valid;    /* a sealed memfd of an acceptable size: the call may succeed */
        uint64_t size; /* its size when it is a memfd */
        char what[64]; /* for the report */
};
/* Makes an fd of a random kind whose content, if any, is fz_pattern(tag). */
int fz_fd_make(uint64_t *rng, const char *dir, uint64_t tag, uint64_t max_message,
               struct fz_fd *ret);

/* ---- verdict.c ---- */

struct fz_finding {
        char key[160];  /* class and error name: one line in the table per key */
        char call[400]; /* the first call that produced it */
        char text[200]; /* the first message */
        uint64_t count;
        int klass;
};

#define FZ_MAX_FINDINGS 128

/* What the supervisor and the workers share (MAP_SHARED).  The counters
 * have one writer at a time (the worker of the current phase); findings
 * come from both, under the lock. */
struct fz_shared {
        pthread_mutex_t lock; /* process-shared: findings, fifo_call */
        char fifo_call[400];  /* the last call that named a FIFO */
        uint64_t calls[2];
        uint64_t batches[2];
        uint64_t replies[2];
        uint64_t errors[2]; /* error replies that were allowed */
        uint64_t receives_checked[2];
        uint64_t memfds_checked[2];
        double seconds[2];
        double max_liveness_ms[2]; /* between batches */
        uint64_t liveness_checks[2];
        uint64_t liveness_retried[2]; /* slow once, fast at once again */
        double max_load_ms;           /* the supervisor's probe, during batches */
        uint64_t load_probes;
        uint64_t counts[_FZ_CLASS_MAX]; /* findings, fatal or not */
        unsigned n_findings;
        struct fz_finding findings[FZ_MAX_FINDINGS];
        int dropped; /* findings beyond the table */
        /* calls by member, and how many of them succeeded */
        unsigned n_members;
        struct {
                char name[32];
                uint64_t calls, ok;
        } members[48];
};

/* Counts a call (ok: its success reply) in the table by member. */
void fz_count_member(struct fz_shared *sh, const char *member, bool ok);

/* Loads the org.vmq1.Error.* names from the API document; 0 or -errno. */
int fz_load_documented(const char *api_doc);
bool fz_is_documented(const char *name);
unsigned fz_documented_count(void);
/* Records a finding (printed the first time its key is seen). */
void fz_report(struct fz_shared *sh, int klass, const char *name, const char *call, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));
const char *fz_class_name(int klass);
int fz_class_from_name(const char *name);
/* Judges an error reply; records a finding when it is not allowed. */
void fz_judge_error(struct fz_shared *sh, const struct fz_call *call, bool member,
                    const sd_bus_error *e);
/* Judges a success reply (access and must_fail); false when it was a
 * finding already. */
bool fz_judge_success(struct fz_shared *sh, const struct fz_call *call, bool member);

/* ---- gen.c ---- */

/* Builds a random call on bus; returns the message (or NULL: no call this
 * time) and fills call. */
sd_bus_message *fz_gen_call(struct fz_worker *w, sd_bus *bus, struct fz_call *call);
/* Appends text to call->desc (cut to fit). */
void fz_desc(struct fz_call *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- worker.c ---- */

struct fz_options {
        const char *bus;
        pid_t vmqd_pid;
        double seconds; /* per phase */
        uint64_t seed;
        const char *user; /* the non-member */
        bool phase_root, phase_user;
        unsigned nonfatal; /* bit per class */
        const char *work_dir;
        const char *guest_dir;
        const char *api_doc;
        bool kvm;
        unsigned connections;
        unsigned batch;
        uint64_t call_timeout_usec;
        double liveness_ms; /* between batches */
        double hang_ms;     /* the supervisor's probe during batches */
        unsigned fd_slack;  /* fds over the warm-up count, plus per running machine */
        unsigned fd_per_vm;
        unsigned fd_end_slack; /* at the end, over the count at the start */
        unsigned rss_mib;      /* RSS growth after warm-up */
        double warmup;         /* seconds */
        uint64_t max_message;
        bool verbose;
};

/* Runs one phase (member: as root; else as the non-member); returns the
 * number of fatal findings.  In the worker process. */
int fz_worker_run(const struct fz_options *o, struct fz_shared *sh, int phase, bool member);

/* The worker's state, as gen.c sees it. */
#define FZ_MAX_NAMES 64
#define FZ_MAX_CHANNELS 64
struct fz_worker {
        const struct fz_options *o;
        struct fz_shared *sh;
        uint64_t rng;
        bool member;
        int phase;
        /* machines and channels seen in the last lists */
        char names[FZ_MAX_NAMES][64];
        unsigned n_names;
        uint32_t channels[FZ_MAX_CHANNELS];
        unsigned n_channels;
        /* echo anchors (with KVM): running echo guests with host channels */
        uint32_t anchor_channels[4];
        unsigned n_anchor_channels;
        uint64_t next_tag;
};

#endif
