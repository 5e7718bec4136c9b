/* SPDX-License-Identifier: MIT */
/*
 * The soak's shared declarations: its objects (tests/soak/vmq-soak.c), the
 * reports a failure leaves behind (report.c) and the invariant checks
 * (check.c).  See vmq-soak.c for what the soak does.
 */
#ifndef VMQ_SOAK_H
#define VMQ_SOAK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/monitor.h"

#define SOAK_VMS_MAX 64u
#define SOAK_CHANS_MAX 512u
#define SOAK_CHANS_PER_VM 6u
#define SOAK_LAST_OPS 16u
#define SOAK_CHECK_NS 250000000ull      /* pool check, consoles, memory: every 250 ms */
#define SOAK_PROGRESS_NS 10000000000ull /* a progress line every 10 s */

/*
 * Known bugs the soak can steer around (--avoid), so that one bug found does
 * not hide the next.  Each names what it leaves out: an argument for the
 * chaos or witness VMs, or a host action.
 */
enum {
        AVOID_RESTOP,     /* host: a second vmq_vm_stop of a VM that ran */
        AVOID_REVOKE,     /* witnesses: reading pages others share with them */
        AVOID_COPYRACE,   /* chaos: a received run as the source of a send */
        AVOID_SYSCONSOLE, /* chaos: console writes below 64 KiB */
        AVOID_ROSHARE,    /* chaos: forwarding a read-only share */
        AVOID_MAX
};

struct soak_avoid {
        const char *name, *chaos_arg, *witness_arg, *help;
};
extern const struct soak_avoid soak_avoids[AVOID_MAX];

struct soak_vm {
        bool used;
        struct vmq_vm *vm;
        uint32_t id;
        uint64_t serial, seed;
        bool witness, started, stopped, ended, breached;
        unsigned vcpus;
        uint64_t con_off;
        char line[256];
        size_t line_len;
};

struct soak_chan {
        bool used;
        uint32_t id;
        uint32_t end[2];
        int host_side; /* index of the host end, or -1 */
        bool deep;     /* host end with a deep inbox, drained seldom */
        bool witness;  /* host channel whose VM end is a witness */
        uint64_t tx, rx;
};

struct soak {
        /* options */
        unsigned seconds, max_vms, pace_us, fault_ppm, exit_ppm, stuck_s;
        size_t pool_mib, huge_frames, max_host_mib;
        const char *guest_dir;
        const char *inject;
        unsigned avoid; /* bits: 1 << AVOID_* */
        bool no_fork;
        bool verbose;

        struct vmq_monitor *mon;
        void *image;
        size_t image_size;
        uint64_t rng;
        struct soak_vm vms[SOAK_VMS_MAX];
        struct soak_chan chans[SOAK_CHANS_MAX];
        uint64_t next_serial;
        uint64_t last_check_ns;
        bool injected;
        struct vmq_space *leak;

        /* counters */
        uint64_t vms_created, create_failed, witnesses_created, started, stopped, shutdowns,
                destroyed;
        uint64_t chaos_crashed, chaos_exited, witness_crashed;
        uint64_t opened, open_failed, closed;
        uint64_t host_sent, host_send_again, host_received, host_verified;
        uint64_t pool_checks;
        long anon_peak_kib;
        uint64_t guest_exits, guest_sent, guest_posted, guest_errors;
        uint64_t guest_copies, guest_flips, guest_shares;
        char crash_reasons[8][64];
        uint64_t crash_reason_count[8];

        bool failed;
};

/*
 * State that outlives the process that runs the monitor.  vmq-soak forks:
 * the child is the monitor, the parent waits for it, so that a crash the
 * child cannot report itself (a fault while every signal is blocked, as
 * inside glibc's pthread_kill) is still reported with the operation count
 * and the last host operations, which the child keeps here.
 */
struct soak_shared {
        _Atomic uint64_t ops;
        uint64_t t0_ns;
        char last[SOAK_LAST_OPS][112];
        _Atomic unsigned last_i;
        char vms_text[2][4096];
        _Atomic int vms_cur;
        _Atomic bool fatal; /* a failure was reported with its context */
};

extern struct soak_shared *soak_shared;
extern uint64_t soak_seed;
extern char soak_replay[256];

/* report.c */
uint64_t soak_now_ns(void);
double soak_elapsed_s(void);
/* Prints the last host operations, the VMs alive and the replay command
 * (async-signal-safe). */
void soak_print_context(void);
/* SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL: reported, then re-raised. */
void soak_install_fatal_handlers(void);
/* Thread: a host operation longer than *(unsigned *)arg seconds is a hang. */
void *soak_watchdog(void *arg);
/* Marks the start and end of a host operation, for the watchdog. */
void soak_op_begin(const char *name);
void soak_op_end(void);
/* Records a host operation in the ring the reports print. */
void soak_note_op(struct soak *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An invariant failed: prints it with the seed and the operation count. */
void soak_fail(struct soak *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *soak_vm_kind(const struct soak_vm *v);
void soak_vm_name(const struct soak_vm *v, char *buf, size_t size);
/* Rewrites the list of live VMs the reports print. */
void soak_publish_vms(struct soak *s);
/* The parent: waits for the monitor process, reports how it ended, and
 * returns the exit status to pass on. */
int soak_supervise(pid_t child);

/* check.c */
struct soak_vm *soak_vm_by_id(struct soak *s, uint32_t id);
/* Reads a VM's new console output: witness reports, chaos BREACH lines. */
void soak_scan_console(struct soak *s, struct soak_vm *v);
/* Looks at a VM that ended (crashed or exited) once. */
void soak_check_state(struct soak *s, struct soak_vm *v);
/* Every VM's state and console; with full, also the pool and the host's
 * memory. */
void soak_check_all(struct soak *s, bool full);
void soak_forget_chan(struct soak_chan *c);
/* Receives and checks up to max messages on a host channel; false when it
 * is closed and drained. */
bool soak_host_drain(struct soak *s, struct soak_chan *c, unsigned max, int timeout_ms);
/* A channel that was closed: takes what is left, forgets it. */
void soak_close_drained(struct soak *s, struct soak_chan *c);

#endif /* VMQ_SOAK_H */
