/* SPDX-License-Identifier: MIT */
/*
 * race: a multi-vCPU guest for the race suite (tests/test-race.c).  Each
 * vCPU plays a role given by the arguments: a well-behaved sender or
 * receiver that checks every byte it gets, or an attacker racing its own
 * requests (release, forward, console, scribble, fault) on other vCPUs.
 *
 * vCPU 0 is the queue consumer (the SDK's consumer and post producer are
 * single-vCPU): it records HELLOs, picks the channel the others send on,
 * receives, verifies and releases.  The other vCPUs issue their hypercalls
 * through their own mailboxes only (vmq_send_*, vmq_release,
 * vmq_console_write, vmq_wait, or raw vmq_hypercall after filling
 * vmq_mbox()), and report to vCPU 0 through memory; only vCPU 0 prints.
 *
 * Messages.  Every payload starts with struct race_hdr {magic, vm_id,
 * vcpu, len, seq}, followed by the bytes race_byte(vm_id, vcpu, seq, j); the
 * descriptor's tag is the sending vCPU's sequence number.  A verifying
 * receiver checks the header against the monitor-stamped source (a message
 * whose header names another VM than src_vm, or whose src_vm is not the
 * channel's peer, is "foreign": data crossed), every byte of the pattern
 * ("bad"), that copied pages are zero past len ("tail": stale bytes of an
 * earlier owner of the frame), and that tags of each (VM, vCPU) arrive in
 * order ("gap": lost, "dup": duplicated).
 *
 * Arguments:
 *   roles=R0,R1,...  role of vCPU 0, 1, ... (missing: idle)
 *     vCPU 0:      recv     receive, release pages (unless keep=1)
 *                  verify   recv, and verify every message (see above)
 *                  post     post inline and copied page sends on the
 *                           channel, doorbell, and recv
 *                  postrel  recv; forward each page received by a post and
 *                           a doorbell, then release it at once
 *                  burst    post burst=N inline sends and ring the doorbell
 *                           once, then wait with no exit at all until the
 *                           monitor has carried them out (or drain_ms), and
 *                           exit
 *     vCPU 1..7:   inline, copy, flip, share, auto   send on the channel
 *                  console  CONSOLE of an own buffer, of a random receive
 *                           slot or of the system area
 *                  release  RELEASE of random receive slots
 *                  fwd      send random receive slots on (copy, auto,
 *                           flip or share)
 *                  scribble garbage in the mailboxes (any vCPU's), the post
 *                           ring's slots and indices and the queue's
 *                           consumer index, with hypercalls in between
 *                           (kicks of the channel's link among them)
 *                  idle
 *   peer=host|guest|any|<id>  the channel to send on: the latest HELLO
 *                  with the host, with a guest, with anyone, or that id
 *                  (default any); a CLOSE of it stops the sends until the
 *                  next fitting HELLO
 *   iters=N        iterations per role (default 1000)
 *   size=B         payload of page messages, 24..4096 (default 3000)
 *   seed=S         random seed (default 1)
 *   fault=V:I      vCPU V reads past the end of RAM at iteration I: the VM
 *                  crashes
 *   keep=1         vCPU 0 does not release what it receives
 *   expect=N       print the verify line when N messages arrived
 *   hold_ms=T      vCPU 0 takes nothing off its queue for T ms after start
 *   burst=N, drain_ms=T  see burst (defaults 8 and 10000)
 *   wait_host=1    burst: print "race: ready" once the channel is known,
 *                  and post only when an INLINE message from the host came
 *   exit=1         exit 0 once every role is done (default: go on receiving)
 *
 * An INLINE message tagged VMQ_TAG_REPORT (from the host) makes vCPU 0
 * print the verify line.
 *
 * Console (vCPU 0):
 *   race: start vm=<id> name=<name> vcpus=<n> iters=<n> seed=<n>
 *   race: channel=<id> peer=<vm_id>
 *   race: hold over t=<ns>
 *   race: ready
 *   race: burst posted=<n> t=<ns>
 *   race: burst pending=<n> waited_ms=<n>
 *   race: vcpu=<i> role=<r> ok=<n> again=<n> err=<n> extra=<n>
 *         extra: console: system-area reads the monitor accepted;
 *                release: pages released; others 0
 *   race: done vm=<id>
 *   race: verify report=<k> count=<n> good=<n> bad=<n> foreign=<n> gap=<n>
 *         dup=<n> tail=<n> pages=<n>
 */
#include "guest/images/image.h"

#define RACE_MAGIC 0x45434152u /* "RACE" */
#define BUF_PAGES 4u           /* page buffers per sending vCPU */
#define NAP_NS 1000000ull      /* secondary vCPUs' wait before the start */
#define RETRY_NS 20000ull      /* back-off after VMQ_E_AGAIN */
#define RETRY_MAX 100000u      /* AGAIN retries of one send before giving up */
#define HELLO_WAIT_NS 5000000000ull
#define ORDER_MAX 64u

struct race_hdr {
        uint32_t magic;
        uint32_t vm_id;
        uint32_t vcpu;
        uint32_t len;
        uint64_t seq;
};

enum role {
        R_IDLE,
        R_RECV,
        R_VERIFY,
        R_POST,
        R_POSTREL,
        R_BURST,
        R_INLINE,
        R_COPY,
        R_FLIP,
        R_SHARE,
        R_AUTO,
        R_CONSOLE,
        R_RELEASE,
        R_FWD,
        R_SCRIBBLE,
        R_MAX
};

static const char *const role_names[R_MAX] = {
        [R_IDLE] = "idle",       [R_RECV] = "recv",       [R_VERIFY] = "verify",
        [R_POST] = "post",       [R_POSTREL] = "postrel", [R_BURST] = "burst",
        [R_INLINE] = "inline",   [R_COPY] = "copy",       [R_FLIP] = "flip",
        [R_SHARE] = "share",     [R_AUTO] = "auto",       [R_CONSOLE] = "console",
        [R_RELEASE] = "release", [R_FWD] = "fwd",         [R_SCRIBBLE] = "scribble",
};

struct vstats {
        uint64_t ok, again, err, extra;
};

/* Set up by vCPU 0 before `go`, read-only afterwards. */
static uint8_t roles[VMQ_MAX_VCPUS];
static uint8_t *bufs[VMQ_MAX_VCPUS];
static unsigned nvcpus, nworkers;
static uint64_t iters, size, seed, fault_vcpu = UINT64_MAX, fault_iter;
static uint32_t self_id;

/* Shared between vCPUs: __atomic accesses only. */
static uint32_t go;
static uint32_t cur_ch;
static uint32_t workers_done;
static struct vstats stats[VMQ_MAX_VCPUS]; /* each written by its vCPU, read after done */

/* vCPU 0's receive side. */
enum peer_kind { PEER_ANY, PEER_HOST, PEER_GUEST, PEER_ID };
static enum peer_kind peer_kind;
static uint32_t peer_id;
static struct { uint32_t channel, vm_id; } hellos[VMQ_PEERS_MAX];
static struct {
        uint32_t vm_id, vcpu;
        uint64_t next;
} order[ORDER_MAX];
static unsigned norder;
static struct { uint64_t count, good, bad, foreign, gap, dup, tail, pages, reports; } ver;

static uint64_t rnd(uint64_t *s) {
        uint64_t x = *s;

        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        *s = x;
        return x * 0x2545f4914f6cdd1dull;
}

static uint8_t race_byte(uint32_t vm, uint32_t vcpu, uint64_t seq, size_t j) {
        return (uint8_t)(vm * 31u + vcpu * 7u + seq * 13u + j * 3u + 1u);
}

static void fill(uint8_t *buf, size_t len, uint32_t vcpu, uint64_t seq) {
        struct race_hdr h = {RACE_MAGIC, self_id, vcpu, (uint32_t)len, seq};

        memcpy(buf, &h, sizeof(h));
        for (size_t j = sizeof(h); j < len; j++)
                buf[j] = race_byte(self_id, vcpu, seq, j);
}

static uint64_t elapsed_ns(uint64_t tsc0) {
        return vmq_tsc_to_ns(vmq_rdtsc() - tsc0);
}

/* ---- vCPU 0: receiving and verifying ---------------------------------- */

static uint32_t peer_of(uint32_t ch) {
        for (unsigned i = 0; i < VMQ_PEERS_MAX; i++)
                if (hellos[i].channel == ch)
                        return hellos[i].vm_id;
        return UINT32_MAX;
}

static bool peer_fits(uint32_t ch, uint32_t vm) {
        switch (peer_kind) {
        case PEER_HOST:
                return vm == VMQ_HOST_ID;
        case PEER_GUEST:
                return vm != VMQ_HOST_ID;
        case PEER_ID:
                return ch == peer_id;
        default:
                return true;
        }
}

static void note_hello(const struct vmq_desc *d) {
        struct vmq_identity id;
        unsigned free_slot = VMQ_PEERS_MAX;

        memcpy(&id, d->data, sizeof(id));
        for (unsigned i = 0; i < VMQ_PEERS_MAX; i++) {
                if (hellos[i].channel == d->channel ||
                    (!hellos[i].channel && free_slot == VMQ_PEERS_MAX))
                        free_slot = i;
        }
        if (free_slot < VMQ_PEERS_MAX) {
                hellos[free_slot].channel = d->channel;
                hellos[free_slot].vm_id = id.vm_id;
        }
        if (peer_fits(d->channel, id.vm_id)) {
                __atomic_store_n(&cur_ch, d->channel, __ATOMIC_RELEASE);
                vmq_printf("race: channel=%u peer=%u\n", d->channel, id.vm_id);
        }
}

static void note_close(const struct vmq_desc *d) {
        for (unsigned i = 0; i < VMQ_PEERS_MAX; i++)
                if (hellos[i].channel == d->channel)
                        hellos[i].channel = 0;
        uint32_t ch = d->channel;
        __atomic_compare_exchange_n(&cur_ch, &ch, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static void check_order(uint32_t vm, uint32_t vcpu, uint64_t tag) {
        unsigned i;

        for (i = 0; i < norder; i++)
                if (order[i].vm_id == vm && order[i].vcpu == vcpu)
                        break;
        if (i == norder) {
                if (norder == ORDER_MAX)
                        return;
                order[norder].vm_id = vm;
                order[norder].vcpu = vcpu;
                order[norder].next = 0;
                norder++;
        }
        if (tag == order[i].next) {
                order[i].next++;
        } else if (tag > order[i].next) {
                ver.gap++;
                order[i].next = tag + 1;
        } else {
                ver.dup++;
        }
}

static void verify(const struct vmq_desc *d, const uint8_t *p, size_t len) {
        struct race_hdr h;
        bool ok = true;

        ver.count++;
        if (len < sizeof(h)) {
                ver.bad++;
                return;
        }
        memcpy(&h, p, sizeof(h));
        if (h.magic != RACE_MAGIC || h.len != len || h.vcpu >= VMQ_MAX_VCPUS) {
                ver.bad++;
                return;
        }
        if (h.vm_id != d->src_vm || peer_of(d->channel) != d->src_vm) {
                ver.foreign++;
                return;
        }
        for (size_t j = sizeof(h); j < len && ok; j++)
                ok = p[j] == race_byte(h.vm_id, h.vcpu, h.seq, j);
        if (!ok) {
                ver.bad++;
                return;
        }
        if (d->kind == VMQ_DESC_PAGE && (d->flags & VMQ_DESC_F_COPIED)) {
                size_t end = (len + VMQ_PAGE_SIZE - 1) / VMQ_PAGE_SIZE * VMQ_PAGE_SIZE;

                for (size_t j = len; j < end; j++)
                        if (p[j]) {
                                ver.tail++;
                                return;
                        }
        }
        ver.good++;
        check_order(h.vm_id, h.vcpu, d->tag);
}

static void print_verify(void) {
        vmq_printf("race: verify report=%lu count=%lu good=%lu bad=%lu foreign=%lu gap=%lu "
                   "dup=%lu tail=%lu pages=%lu\n",
                   ver.reports, ver.count, ver.good, ver.bad, ver.foreign, ver.gap, ver.dup,
                   ver.tail, ver.pages);
}

/* Forwards a received page run by a post and a doorbell, and releases it
 * at once: the monitor's doorbell thread races the release. */
static void postrel(const struct vmq_desc *d, uint64_t *rs) {
        uint32_t ch = __atomic_load_n(&cur_ch, __ATOMIC_ACQUIRE);
        uint32_t flags = rnd(rs) & 1 ? VMQ_REQ_F_COPY : 0;
        struct vstats *st = &stats[0];

        if (ch && vmq_post_pages(ch, vmq_desc_pages(d), d->len, flags, d->tag) == 0) {
                vmq_doorbell();
                st->ok++;
        } else {
                st->err++;
        }
        if (vmq_release(vmq_desc_pages(d), d->len) == 0)
                st->extra++;
}

/* Handles one descriptor on vCPU 0.  Returns true for a data message. */
static bool handle(const struct vmq_desc *d, enum role r0, bool keep, uint64_t *rs) {
        switch (d->kind) {
        case VMQ_DESC_HELLO:
                note_hello(d);
                return false;
        case VMQ_DESC_CLOSE:
                note_close(d);
                return false;
        case VMQ_DESC_ERROR:
                stats[0].err++; /* a posted request of ours failed */
                return false;
        case VMQ_DESC_INLINE:
                if (d->src_vm == VMQ_HOST_ID && d->tag == VMQ_TAG_REPORT) {
                        ver.reports++;
                        print_verify();
                        return false;
                }
                if (r0 == R_VERIFY)
                        verify(d, d->data, d->len);
                return true;
        case VMQ_DESC_PAGE:
                ver.pages++;
                if (r0 == R_VERIFY)
                        verify(d, vmq_desc_pages(d), d->len);
                if (r0 == R_POSTREL)
                        postrel(d, rs);
                else if (!keep)
                        (void)vmq_release(vmq_desc_pages(d), d->len);
                return true;
        default:
                return false;
        }
}

/* Waits (receiving) up to HELLO_WAIT_NS for a channel to send on. */
static void wait_channel(enum role r0, bool keep, uint64_t *rs) {
        uint64_t start = vmq_clock_ns();
        struct vmq_desc d;

        while (!__atomic_load_n(&cur_ch, __ATOMIC_ACQUIRE) &&
               vmq_clock_ns() - start < HELLO_WAIT_NS) {
                if (vmq_recv(&d, HELLO_WAIT_NS / 50) == 0)
                        (void)handle(&d, r0, keep, rs);
        }
}

/* ---- the sending roles ------------------------------------------------ */

static uint32_t channel_now(void) {
        return __atomic_load_n(&cur_ch, __ATOMIC_ACQUIRE);
}

/* Counts one send's outcome; AGAIN is retried up to RETRY_MAX times. */
static int send_counted(struct vstats *st, uint32_t ch, const void *p, size_t len, uint32_t flags,
                        bool pages, uint64_t tag) {
        int r;

        for (unsigned t = 0;; t++) {
                r = pages ? vmq_send_pages(ch, p, len, flags, tag)
                          : vmq_send_inline(ch, p, len, tag);
                if (r != -VMQ_E_AGAIN || t >= RETRY_MAX)
                        break;
                st->again++;
                vmq_delay_ns(RETRY_NS);
        }
        if (r == 0)
                st->ok++;
        else
                st->err++;
        return r;
}

static uint64_t rx_slot(uint64_t *rs) {
        const struct vmq_vmcs_layout *l = &vmq_vmcs()->layout;
        uint64_t slots = l->rx_size / VMQ_PAGE_SIZE;

        return l->rx_gpa + (slots ? rnd(rs) % slots : 0) * VMQ_PAGE_SIZE;
}

static void role_send(unsigned v, enum role role, uint64_t *seqp) {
        static const uint32_t flags_of[R_MAX] = {
                [R_COPY] = VMQ_REQ_F_COPY,
                [R_FLIP] = VMQ_REQ_F_FLIP,
                [R_SHARE] = VMQ_REQ_F_SHARE,
        };
        struct vstats *st = &stats[v];
        uint32_t ch = channel_now();
        uint8_t msg[VMQ_INLINE_MAX];
        uint8_t *page;

        if (!ch) {
                st->err++;
                (void)vmq_wait(NAP_NS);
                return;
        }
        if (role == R_INLINE) {
                fill(msg, sizeof(msg), v, *seqp);
                if (send_counted(st, ch, msg, sizeof(msg), 0, false, *seqp) == 0)
                        ++*seqp;
                return;
        }
        /* A shared page stays mapped in the receiver and is never rewritten:
         * its content is fixed at start (seq = its index in the buffer). */
        page = bufs[v] + (*seqp % BUF_PAGES) * VMQ_PAGE_SIZE;
        if (role != R_SHARE)
                fill(page, size, v, *seqp);
        if (send_counted(st, ch, page, size, flags_of[role], true, *seqp) == 0)
                ++*seqp;
}

static void role_console(unsigned v, uint64_t *rs) {
        struct vstats *st = &stats[v];
        struct vmq_request *m = vmq_mbox();
        uint64_t pick = rnd(rs) % 8;
        char line[32];
        int r;

        if (pick < 4) {
                int n = vmq_snprintf(line, sizeof(line), "~%u\n", v);

                vmq_console_write(line, (size_t)n);
                st->ok++;
                return;
        }
        vmq_request_init(m);
        if (pick < 7) {
                /* a receive slot another vCPU may be releasing right now */
                m->gpa = rx_slot(rs);
                m->len = (uint32_t)(1 + rnd(rs) % 256);
        } else {
                /* the supervisor-only system area */
                m->gpa = VMQ_SYSTEM_GPA + rnd(rs) % (VMQ_SYSTEM_END - VMQ_SYSTEM_GPA - 64);
                m->len = 64;
        }
        r = vmq_hypercall(VMQ_HC_CONSOLE);
        if (r == 0 && pick == 7)
                st->extra++;
        if (r == 0)
                st->ok++;
        else
                st->err++;
}

static void role_release(unsigned v, uint64_t *rs) {
        struct vstats *st = &stats[v];
        int r = vmq_release((void *)(uintptr_t)rx_slot(rs), VMQ_PAGE_SIZE * (1 + rnd(rs) % 2));

        if (r == 0) {
                st->ok++;
                st->extra++;
        } else {
                st->err++;
        }
}

static void role_fwd(unsigned v, uint64_t *rs, uint64_t it) {
        static const uint32_t how[4] = {VMQ_REQ_F_COPY, 0, VMQ_REQ_F_FLIP, VMQ_REQ_F_SHARE};
        struct vstats *st = &stats[v];
        uint32_t ch = channel_now();
        int r;

        if (!ch) {
                st->err++;
                (void)vmq_wait(NAP_NS);
                return;
        }
        r = vmq_send_pages(ch, (void *)(uintptr_t)rx_slot(rs), 1 + rnd(rs) % VMQ_PAGE_SIZE,
                           how[rnd(rs) % 4], it);
        if (r == 0)
                st->ok++;
        else if (r == -VMQ_E_AGAIN)
                st->again++;
        else
                st->err++;
}

static void role_scribble(unsigned v, uint64_t *rs, uint64_t it) {
        static const unsigned calls[] = {VMQ_HC_SEND,  VMQ_HC_FLUSH, VMQ_HC_RELEASE, VMQ_HC_CONSOLE,
                                         VMQ_HC_CLOCK, VMQ_HC_NOP,   VMQ_HC_KICK};
        struct vmq_vmcs *vmcs = vmq_vmcs();
        const struct vmq_vmcs_layout *l = &vmcs->layout;
        struct vstats *st = &stats[v];
        /* vCPU 0's mailbox is left alone: it must go on receiving and
         * reporting. */
        struct vmq_request *target = &vmcs->mbox[1 + rnd(rs) % (nvcpus - 1)];
        struct vmq_request *own = vmq_mbox();
        uint8_t *b = (uint8_t *)target;
        unsigned nr;
        int r;

        /* Garbage into a mailbox: ours, or one another vCPU is using. */
        for (size_t k = 0; k < sizeof(*target); k += 8) {
                uint64_t x = rnd(rs);

                memcpy(b + k, &x, sizeof(x));
        }
        /* Half of the time a plausible request in our own mailbox, to get
         * past the early checks to the copies and remaps. */
        if (rnd(rs) & 1) {
                own->abi = VMQ_ABI_VERSION;
                own->src_vm = 0;
                own->reserved = 0;
                own->op = (uint16_t)(rnd(rs) & 1 ? VMQ_OP_PAGE : VMQ_OP_INLINE);
                own->flags = (uint32_t)(rnd(rs) % 5);
                own->channel = channel_now();
                own->gpa = rnd(rs) & 1 ? rx_slot(rs) : (uint64_t)(uintptr_t)bufs[0];
                own->len = (uint32_t)(rnd(rs) % (2 * VMQ_PAGE_SIZE));
        }
        nr = rnd(rs) % 8 < 6 ? calls[rnd(rs) % (sizeof(calls) / sizeof(calls[0]))]
                             : (unsigned)(VMQ_HC_MAX + rnd(rs) % 64);
        r = vmq_hypercall(nr);
        if (r >= 0)
                st->ok++;
        else
                st->err++;

        /* The post ring: garbage slots and indices, then the doorbell. */
        if (it % 16 == 0 && l->post_cap) {
                struct vmq_ring_idx *pidx = (struct vmq_ring_idx *)((uint8_t *)vmcs + l->post_off);
                uint8_t *slot = (uint8_t *)vmcs + l->post_slots_off +
                                (rnd(rs) % l->post_cap) * sizeof(struct vmq_request);
                uint64_t x = rnd(rs);

                memcpy(slot + (rnd(rs) % (sizeof(struct vmq_request) / 8)) * 8, &x, sizeof(x));
                if (rnd(rs) & 1)
                        __atomic_store_n(&pidx->prod, (uint32_t)rnd(rs), __ATOMIC_RELEASE);
                else
                        __atomic_store_n(&pidx->cons, (uint32_t)rnd(rs), __ATOMIC_RELEASE);
                vmq_doorbell();
        }
        /* Our own queue's consumer index: the monitor must refuse to enqueue
         * (VMQ_E_PROTO) rather than write outside the ring. */
        if (it % 64 == 63) {
                struct vmq_ring_idx *qidx = (struct vmq_ring_idx *)((uint8_t *)vmcs + l->queue_off);

                __atomic_store_n(&qidx->cons, (uint32_t)rnd(rs), __ATOMIC_RELEASE);
        }
}

static void fault_now(void) {
        /* Past the end of RAM: not in the page tables, so a #PF at CPL 3,
         * which with no IDT is a triple fault. */
        volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)vmq_vmcs()->layout.ram_size;

        (void)*p;
}

static void run_role(unsigned v) {
        enum role role = (enum role)roles[v];
        uint64_t rs = seed * 0x9e3779b97f4a7c15ull + v + 1, seq = 0;

        if (!rs)
                rs = 1;
        for (uint64_t it = 0; it < iters; it++) {
                if (v == fault_vcpu && it == fault_iter)
                        fault_now();
                switch (role) {
                case R_INLINE:
                case R_COPY:
                case R_FLIP:
                case R_SHARE:
                case R_AUTO:
                        role_send(v, role, &seq);
                        break;
                case R_CONSOLE:
                        role_console(v, &rs);
                        break;
                case R_RELEASE:
                        role_release(v, &rs);
                        break;
                case R_FWD:
                        role_fwd(v, &rs, it);
                        break;
                case R_SCRIBBLE:
                        role_scribble(v, &rs, it);
                        break;
                default:
                        return;
                }
        }
}

void vmq_secondary(unsigned index) {
        if (index >= VMQ_MAX_VCPUS)
                return;
        /* No WAIT here: its timeout sits in the mailbox, which a scribbling
         * vCPU may overwrite between our store and the exit. */
        while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE)) {
                for (unsigned i = 0; i < 2000; i++)
                        vmq_cpu_relax();
                (void)vmq_nop();
        }
        if (roles[index] == R_IDLE)
                return; /* not counted in nworkers */
        run_role(index);
        __atomic_fetch_add(&workers_done, 1, __ATOMIC_RELEASE);
}

/* ---- vCPU 0's own roles ----------------------------------------------- */

/* burst: post N sends and ring once, then wait for the monitor to carry
 * them out without a single exit (any hypercall drains the post ring too,
 * which would hide a lost wake-up), and exit. */
static int run_burst(void) {
        uint64_t n = vmq_arg_u64("burst", 8), drain_ms = vmq_arg_u64("drain_ms", 10000);
        uint32_t ch = channel_now();
        uint8_t msg[VMQ_INLINE_MAX];
        uint64_t posted = 0, tsc0;
        uint32_t pending;

        for (uint64_t i = 0; i < n && ch; i++) {
                fill(msg, sizeof(msg), 0, i);
                if (vmq_post_inline(ch, msg, sizeof(msg), i) == 0)
                        posted++;
        }
        vmq_doorbell();
        vmq_printf("race: burst posted=%lu t=%lu\n", posted, vmq_clock_ns());
        tsc0 = vmq_rdtsc();
        while ((pending = vmq_post_pending()) > 0 && elapsed_ns(tsc0) < drain_ms * 1000000ull)
                vmq_delay_ns(100000);
        vmq_printf("race: burst pending=%u waited_ms=%lu\n", pending,
                   (uint64_t)(elapsed_ns(tsc0) / 1000000u));
        return pending ? 2 : 0;
}

/* post: one posted request per call (inline, or a copy of a fixed page),
 * a doorbell every few.  Returns false once `iters` were posted and carried
 * out. */
static bool post_step(uint64_t *seq, uint64_t *rs) {
        struct vstats *st = &stats[0];
        uint32_t ch = channel_now();
        uint8_t msg[VMQ_INLINE_MAX];
        int r;

        if (*seq >= iters) {
                if (vmq_post_pending() == 0)
                        return false;
                /* Not left to the monitor's retry of blocked senders: that
                 * is the blocked-senders scenario's business. */
                (void)vmq_flush();
                return true;
        }
        if (!ch)
                return true;
        if (rnd(rs) & 1) {
                fill(msg, sizeof(msg), 0, *seq);
                r = vmq_post_inline(ch, msg, sizeof(msg), *seq);
        } else {
                /* The page's content is fixed (filled at start) and its
                 * header names seq = its index: it can be posted again
                 * before an earlier post of it was carried out. */
                r = vmq_post_pages(ch, bufs[0] + (*seq % BUF_PAGES) * VMQ_PAGE_SIZE, size,
                                   VMQ_REQ_F_COPY, *seq);
        }
        if (r == 0) {
                st->ok++;
                ++*seq;
                if (*seq % 4 == 0)
                        vmq_doorbell();
        } else {
                st->again++;
                (void)vmq_flush();
        }
        return true;
}

static enum role parse_role(const char *s, size_t n) {
        for (unsigned r = 0; r < R_MAX; r++)
                if (strlen(role_names[r]) == n && !memcmp(role_names[r], s, n))
                        return (enum role)r;
        return R_MAX;
}

static int parse_args(void) {
        char buf[128], *p;
        unsigned v = 0;

        if (vmq_arg_str("roles", buf, sizeof(buf)) >= 0) {
                p = buf;
                while (*p && v < VMQ_MAX_VCPUS) {
                        size_t n = 0;
                        enum role r;

                        while (p[n] && p[n] != ',')
                                n++;
                        r = parse_role(p, n);
                        if (r == R_MAX || (v == 0 && r >= R_INLINE) ||
                            (v > 0 && r != R_IDLE && r < R_INLINE)) {
                                vmq_printf("race: bad role '%.*s' for vcpu %u\n", (int)n, p, v);
                                return -1;
                        }
                        roles[v++] = (uint8_t)r;
                        p += n;
                        if (*p == ',')
                                p++;
                }
        }
        if (vmq_arg_str("peer", buf, sizeof(buf)) >= 0) {
                uint64_t id;

                if (!strcmp(buf, "host"))
                        peer_kind = PEER_HOST;
                else if (!strcmp(buf, "guest"))
                        peer_kind = PEER_GUEST;
                else if (!strcmp(buf, "any"))
                        peer_kind = PEER_ANY;
                else if (vmq_parse_u64(buf, &id) == 0 && id && id <= UINT32_MAX) {
                        peer_kind = PEER_ID;
                        peer_id = (uint32_t)id;
                } else {
                        vmq_printf("race: bad peer '%s'\n", buf);
                        return -1;
                }
        }
        if (vmq_arg_str("fault", buf, sizeof(buf)) >= 0) {
                char *colon = buf;

                while (*colon && *colon != ':')
                        colon++;
                if (!*colon) {
                        vmq_printf("race: bad fault '%s'\n", buf);
                        return -1;
                }
                *colon = '\0';
                if (vmq_parse_u64(buf, &fault_vcpu) < 0 ||
                    vmq_parse_u64(colon + 1, &fault_iter) < 0) {
                        vmq_printf("race: bad fault argument\n");
                        return -1;
                }
        }
        iters = vmq_arg_u64("iters", 1000);
        size = vmq_arg_u64("size", 3000);
        seed = vmq_arg_u64("seed", 1);
        if (size < sizeof(struct race_hdr) || size > VMQ_PAGE_SIZE) {
                vmq_printf("race: bad size %lu\n", size);
                return -1;
        }
        return 0;
}

int vmq_main(void) {
        struct vmq_desc d;
        enum role r0;
        bool keep, exit_when_done, own_role, reported = false, post_busy = true;
        uint64_t expect, hold_ms, rs, post_seq = 0;

        self_id = vmq_self()->vm_id;
        nvcpus = vmq_vmcs()->layout.vcpus;
        if (nvcpus == 0 || nvcpus > VMQ_MAX_VCPUS)
                nvcpus = 1;
        if (parse_args() < 0)
                return 1;
        r0 = (enum role)roles[0];
        own_role = r0 == R_POST || r0 == R_POSTREL; /* vCPU 0 has iterations of its own */
        keep = vmq_arg_u64("keep", 0) != 0;
        exit_when_done = vmq_arg_u64("exit", 0) != 0;
        expect = vmq_arg_u64("expect", 0);
        hold_ms = vmq_arg_u64("hold_ms", 0);
        rs = seed * 0x9e3779b97f4a7c15ull + 1;
        vmq_printf("race: start vm=%u name=%s vcpus=%u iters=%lu seed=%lu\n", self_id,
                   vmq_self()->name, nvcpus, iters, seed);

        /* Buffers for every sending vCPU (the allocator is vCPU 0's), and
         * the fixed content of the pages that are shared or posted. */
        for (unsigned v = 0; v < nvcpus; v++) {
                enum role r = (enum role)roles[v];

                if (v > 0 && r != R_IDLE)
                        nworkers++;
                if (r == R_POST || r == R_COPY || r == R_FLIP || r == R_SHARE || r == R_AUTO ||
                    r == R_SCRIBBLE) {
                        bufs[v] = vmq_alloc_pages(BUF_PAGES);
                        if (!bufs[v]) {
                                vmq_printf("race: no heap for vcpu %u\n", v);
                                return 1;
                        }
                        for (unsigned k = 0; k < BUF_PAGES; k++)
                                fill(bufs[v] + k * VMQ_PAGE_SIZE, size, v, k);
                }
        }
        if (!bufs[0])
                bufs[0] = vmq_alloc_pages(BUF_PAGES); /* scribble's plausible address */
        (void)vmq_tsc_khz(); /* measured once here, if ever, not by every vCPU */

        if (hold_ms) {
                /* Nothing taken off the queue meanwhile, not even HELLOs. */
                vmq_delay_ns(hold_ms * 1000000ull);
                vmq_printf("race: hold over t=%lu\n", vmq_clock_ns());
        }
        if (nworkers || r0 == R_POST || r0 == R_BURST || r0 == R_POSTREL)
                wait_channel(r0, keep, &rs);
        if (r0 == R_BURST) {
                if (vmq_arg_u64("wait_host", 0)) {
                        vmq_printf("race: ready\n");
                        while (vmq_recv(&d, UINT64_MAX) != 0 || d.kind != VMQ_DESC_INLINE ||
                               d.src_vm != VMQ_HOST_ID)
                                ;
                }
                return run_burst();
        }
        __atomic_store_n(&go, 1, __ATOMIC_RELEASE);

        for (;;) {
                bool busy = false;

                if (r0 == R_POST && post_busy)
                        busy = post_busy = post_step(&post_seq, &rs);
                if (vmq_recv(&d, busy ? 0 : NAP_NS) == 0 && handle(&d, r0, keep, &rs) && expect &&
                    ver.count == expect)
                        print_verify();
                if (r0 == R_POSTREL && stats[0].ok + stats[0].err >= iters)
                        post_busy = false;
                if (!reported && (!own_role || !post_busy) &&
                    __atomic_load_n(&workers_done, __ATOMIC_ACQUIRE) == nworkers) {
                        reported = true;
                        for (unsigned v = 0; v < nvcpus; v++)
                                vmq_printf("race: vcpu=%u role=%s ok=%lu again=%lu err=%lu "
                                           "extra=%lu\n",
                                           v, role_names[roles[v]], stats[v].ok, stats[v].again,
                                           stats[v].err, stats[v].extra);
                        vmq_printf("race: done vm=%u\n", self_id);
                        if (r0 == R_VERIFY)
                                print_verify();
                        if (exit_when_done)
                                return 0;
                }
        }
}
