/* SPDX-License-Identifier: MIT */
/*
 * The invariants the soak checks between its operations: VM states (no
 * witness crashes), consoles (no witness reports a bad payload, no chaos VM
 * got away with a BREACH), the pool's ownership records, the host's
 * memory, and every message the host receives (identity stamping, witness
 * payloads and their sequence).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/remap.h"
#include "core/vm.h" /* struct vmq_monitor: the pool, for vmq_pool_check() */
#include "guest/images/chaos.h"
#include "tests/soak/soak.h"

struct soak_vm *soak_vm_by_id(struct soak *s, uint32_t id) {
        for (unsigned i = 0; i < SOAK_VMS_MAX; i++)
                if (s->vms[i].used && s->vms[i].id == id)
                        return &s->vms[i];
        return NULL;
}

/* One line of a VM's console: a witness's report of a bad payload, or a
 * chaos VM's BREACH line with its key (anything else a chaos VM prints is
 * noise: it prints random memory, its own image included). */
static void console_line(struct soak *s, struct soak_vm *v, const char *line) {
        char name[32], key[32];
        const char *b;

        soak_vm_name(v, name, sizeof(name));
        if (v->witness) {
                if (strncmp(line, "witness: FAIL", 13) == 0)
                        soak_fail(s, "witness %s (id %u, seed %" PRIu64 ") reports: %s", name,
                                  v->id, v->seed, line);
                return;
        }
        b = strstr(line, CHAOS_BREACH);
        if (!b || v->breached)
                return;
        snprintf(key, sizeof(key), "key=%016" PRIx64, chaos_breach_key(v->seed));
        if (!strstr(b, key))
                return;
        v->breached = true;
        soak_fail(s,
                  "chaos %s (id %u, seed %" PRIu64
                  ") got the monitor to accept what it must refuse: %s",
                  name, v->id, v->seed, b);
}

/* Reads a VM's new console output and looks at every complete line. */
void soak_scan_console(struct soak *s, struct soak_vm *v) {
        char buf[4096];
        size_t n;

        while ((n = vmq_vm_console_read_from(v->vm, &v->con_off, buf, sizeof(buf))) > 0) {
                for (size_t i = 0; i < n; i++) {
                        if (buf[i] == '\n' || v->line_len == sizeof(v->line) - 1) {
                                v->line[v->line_len] = '\0';
                                console_line(s, v, v->line);
                                v->line_len = 0;
                                if (buf[i] == '\n')
                                        continue;
                        }
                        v->line[v->line_len++] = buf[i];
                }
        }
}

static void count_crash_reason(struct soak *s, const char *reason) {
        for (unsigned i = 0; i < 8; i++) {
                if (!s->crash_reasons[i][0])
                        snprintf(s->crash_reasons[i], sizeof(s->crash_reasons[i]), "%s", reason);
                if (!strcmp(s->crash_reasons[i], reason)) {
                        s->crash_reason_count[i]++;
                        return;
                }
        }
}

/* Looks at a VM's state once it has ended: witnesses must not crash or
 * exit with an error, chaos VMs are counted. */
void soak_check_state(struct soak *s, struct soak_vm *v) {
        enum vmq_vm_state st = vmq_vm_state(v->vm);
        char name[32];

        if (v->ended || (st != VMQ_VM_CRASHED && st != VMQ_VM_EXITED))
                return;
        v->ended = true;
        soak_vm_name(v, name, sizeof(name));
        if (v->witness) {
                soak_scan_console(s, v);
                if (st == VMQ_VM_CRASHED) {
                        s->witness_crashed++;
                        soak_fail(s, "witness %s (id %u, seed %" PRIu64 ") CRASHED: %s", name,
                                  v->id, v->seed, vmq_vm_crash_reason(v->vm));
                } else if (vmq_vm_exit_code(v->vm) != 0) {
                        soak_fail(s, "witness %s (id %u, seed %" PRIu64 ") exited with code %d",
                                  name, v->id, v->seed, vmq_vm_exit_code(v->vm));
                }
                return;
        }
        if (st == VMQ_VM_CRASHED) {
                s->chaos_crashed++;
                count_crash_reason(s, vmq_vm_crash_reason(v->vm));
        } else {
                s->chaos_exited++;
        }
}

static long rss_anon_kib(void) {
        FILE *f = fopen("/proc/self/status", "re");
        char line[256];
        long kib = -1;

        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "RssAnon: %ld kB", &kib) == 1)
                        break;
        fclose(f);
        return kib;
}

void soak_check_all(struct soak *s, bool full) {
        for (unsigned i = 0; i < SOAK_VMS_MAX; i++) {
                if (!s->vms[i].used)
                        continue;
                soak_check_state(s, &s->vms[i]);
                /* chaos VMs print a lot: read them often, before their
                 * 64 KiB console ring wraps */
                if (full || !s->vms[i].witness)
                        soak_scan_console(s, &s->vms[i]);
        }
        if (!full)
                return;
        soak_op_begin("vmq_pool_check");
        int r = vmq_pool_check(s->mon->pool);
        soak_op_end();
        s->pool_checks++;
        if (r < 0)
                soak_fail(s, "vmq_pool_check: %s", strerror(-r));
        long kib = rss_anon_kib();
        if (kib > s->anon_peak_kib)
                s->anon_peak_kib = kib;
        if (kib > 0 && (size_t)kib / 1024 > s->max_host_mib)
                soak_fail(s, "host memory: %ld MiB of anonymous memory held, limit %zu MiB",
                          kib / 1024, s->max_host_mib);
}

/* ---- host receive ------------------------------------------------------------- */

void soak_forget_chan(struct soak_chan *c) {
        c->used = false;
}

/* Checks one message the host received on channel c. */
static void check_host_msg(struct soak *s, struct soak_chan *c, const struct vmq_host_msg *msg) {
        uint32_t vmid = c->end[1 - c->host_side];
        uint64_t stamp = 0;
        long bad;

        s->host_received++;
        if (msg->src_vm != vmid) {
                soak_fail(s,
                          "host got a message on channel %u from vm %u stamped src_vm=%u (kind %u)",
                          c->id, vmid, msg->src_vm, msg->kind);
                return;
        }
        if (msg->channel != c->id) {
                soak_fail(s, "host got a message for channel %u on channel %u", msg->channel,
                          c->id);
                return;
        }
        if (msg->kind == VMQ_DESC_HELLO) {
                struct vmq_identity id;
                struct soak_vm *v = soak_vm_by_id(s, vmid);

                if (msg->len != sizeof(id)) {
                        soak_fail(s, "HELLO of %zu bytes on channel %u", msg->len, c->id);
                        return;
                }
                memcpy(&id, msg->data, sizeof(id));
                if (id.vm_id != vmid || (v && strcmp(id.name, vmq_vm_name(v->vm)) != 0))
                        soak_fail(s, "HELLO on channel %u names vm %u '%.64s', the peer is vm %u",
                                  c->id, id.vm_id, id.name, vmid);
                return;
        }
        if (msg->kind == VMQ_DESC_CLOSE || !c->witness)
                return;
        if (msg->kind != VMQ_DESC_INLINE && msg->kind != VMQ_DESC_PAGE) {
                soak_fail(s, "host got kind %u from witness vm %u on channel %u", msg->kind, vmid,
                          c->id);
                return;
        }
        if (msg->len > UINT32_MAX)
                bad = 0;
        else
                bad = witness_check(msg->data, (uint32_t)msg->len, vmid, &stamp);
        if (bad >= 0) {
                soak_fail(s,
                          "host got a bad payload from witness vm %u on channel %u: len=%zu "
                          "tag=%" PRIu64 " first bad byte at %ld",
                          vmid, c->id, msg->len, msg->tag, bad);
                return;
        }
        if (msg->tag != c->rx)
                soak_fail(s,
                          "host got tag %" PRIu64
                          " from witness vm %u on channel %u, expected %" PRIu64,
                          msg->tag, vmid, c->id, c->rx);
        else if (!(stamp & WITNESS_STAMP_SHARED) &&
                 stamp != ((uint64_t)c->id << 32 | (msg->tag & 0xffffffffu)))
                soak_fail(s, "host got stamp 0x%" PRIx64 " with tag %" PRIu64 " on channel %u",
                          stamp, msg->tag, c->id);
        c->rx = msg->tag + 1;
        s->host_verified++;
}

/* Receives up to max messages on c; returns false when the channel is
 * closed and drained. */
bool soak_host_drain(struct soak *s, struct soak_chan *c, unsigned max, int timeout_ms) {
        while (max--) {
                struct vmq_host_msg *msg = NULL;
                int r;

                soak_op_begin("vmq_host_recv");
                r = vmq_host_recv(s->mon, c->id, timeout_ms, &msg);
                soak_op_end();
                if (r == -ETIMEDOUT)
                        return true;
                if (r == -EPIPE)
                        return false;
                if (r < 0) {
                        soak_fail(s, "vmq_host_recv(channel %u): %s", c->id, strerror(-r));
                        return false;
                }
                check_host_msg(s, c, msg);
                free(msg);
                timeout_ms = 0;
        }
        return true;
}

/* A channel the monitor closed (or we did): take what is left, forget it. */
void soak_close_drained(struct soak *s, struct soak_chan *c) {
        if (c->host_side >= 0)
                (void)soak_host_drain(s, c, 100000, 0);
        soak_forget_chan(c);
}
