/* SPDX-License-Identifier: MIT */
/*
 * chaos: the soak's guest (tests/soak).  Two modes, chosen by mode=:
 *
 * mode=chaos (default): a hostile guest.  Every vCPU draws actions from its
 * own PRNG (seeded from seed= and its index) out of everything a guest can
 * do through the SDK and the raw ABI: sends inline and of pages with random
 * flags on known and made-up channels, from owned, received, foreign,
 * misaligned and near-boundary addresses with near-boundary lengths; posts
 * with and without a doorbell or a flush; releases of received and random
 * runs; console writes of random ranges (below 1 MiB included); garbage in
 * any mailbox, the post ring and the queue indices (restored afterwards, so
 * that the VM goes on receiving); clock, nop, short waits; port accesses of
 * every width within 0x500-0x5ff; garbage in its channel links, kicks and
 * waits for kicks; races between vCPUs on the same received
 * pages (one forwards, prints or posts them while another releases them);
 * and, rarely, a deliberate fault or exit.  vCPU 0 owns the SDK's queue
 * consumer, post producer and allocators; the others use raw mailbox
 * hypercalls.  Nothing it does may harm the monitor or another VM; it may
 * well crash itself.  Where the ABI says a request must be refused and the
 * answer does not depend on timing, it checks the answer, and prints a
 * BREACH line (guest/images/chaos.h) when the monitor accepted it: a console
 * write that touches the system area (below 64 KiB), the forwarding of a
 * read-only shared page (by copy, flip, share or auto, to a guest or the
 * host).  The mailbox is read back after such a call: a request another
 * vCPU scribbled over meanwhile proves nothing.
 *
 * mode=witness: a well-behaved guest whose data can be checked (witness.c).
 *
 * Arguments:
 *   mode=chaos|witness
 *   seed=N     PRNG seed (default 1)
 *   pace=N     microseconds a vCPU idles, on average, every few actions
 *              (default 300; 0: never)
 *   fault=N    deliberate faults per million actions (default 20)
 *   exit=N     deliberate exits per million actions (default 20)
 *   race=0     chaos: never use a received run as the source of a send or a
 *              console write (another vCPU, or the doorbell thread, would
 *              race its release: issue 7, class 1, kills the monitor today)
 *   sysconsole=0  chaos: no console write below 64 KiB (accepted today:
 *              issue 7, class 6)
 *   roshare=0  chaos: never try to forward a read-only share (accepted
 *              today: issue 7, class 3)
 *   shared=skip  witness: release pages shared with it by other VMs
 *              without reading them (a sharer that dies revokes them, and
 *              today the reader then faults: issue 7, class 2)
 *
 * Console:
 *   chaos: start vm=<id> seed=<seed> vcpus=<n> pace=<us>
 *   chaos: fault <kind>                 (just before a deliberate fault)
 *   chaos: exit <code>                  (just before a deliberate exit)
 *   chaos: BREACH <what> a=<hex> b=<hex> key=<hex>   (see chaos.h)
 */
#include "guest/images/chaos-internal.h"

#define CHANS_MAX 16u
#define HELD_MAX 32u
#define BUFS 8u
#define BUF_PAGES_MAX 8u

/* The layout as the monitor gave it, read once: the live one may be
 * scribbled over by our own vCPUs. */
static struct vmq_vmcs_layout lay;
static uint32_t vmcs_size;
uint32_t chaos_self_id;

uint64_t chaos_seed;
static uint64_t pace_us, fault_ppm, exit_ppm;
bool chaos_skip_shared;
static bool no_race, no_sysconsole, no_forward_share;
static uint64_t breach_key;
volatile bool chaos_ready;

/* Channels known from HELLOs (id 0: free slot); peer 0 is the host. */
static volatile uint32_t chan_id[CHANS_MAX], chan_peer[CHANS_MAX];

/* Links announced by HELLOs (gpa 0: free slot).  A link's slot stays mapped
 * once made (after its channel closes it holds private pages), so any of
 * these may be written at any time. */
static volatile uint64_t link_gpa[CHANS_MAX];

/* Received page runs not yet released (gpa 0: free slot).  vCPU 0 fills
 * it; every vCPU may release, forward or print them, racing the others. */
static volatile uint64_t held_gpa[HELD_MAX];
static volatile uint32_t held_len[HELD_MAX];
static unsigned held_next;

/* Send buffers of our heap, allocated once at start. */
static uint64_t buf_gpa[BUFS];
static uint32_t buf_pages[BUFS];
static uint64_t huge_buf;

/* ---- picking things ------------------------------------------------------ */

static uint64_t pick_held(uint64_t *s, uint32_t *ret_len, unsigned *ret_slot);

/* A received run to read from (send, forward, print), unless race=0. */
static uint64_t pick_held_source(uint64_t *s, uint32_t *ret_len, unsigned *ret_slot) {
        return no_race ? 0 : pick_held(s, ret_len, ret_slot);
}

static uint64_t pick_held(uint64_t *s, uint32_t *ret_len, unsigned *ret_slot) {
        unsigned k = (unsigned)chaos_below(s, HELD_MAX);

        for (unsigned i = 0; i < HELD_MAX; i++, k = (k + 1) % HELD_MAX) {
                uint64_t g = held_gpa[k];

                if (g) {
                        if (ret_len)
                                *ret_len = held_len[k];
                        if (ret_slot)
                                *ret_slot = k;
                        return g;
                }
        }
        return 0;
}

static uint32_t pick_known_chan(uint64_t *s, bool host_only) {
        unsigned k = (unsigned)chaos_below(s, CHANS_MAX);

        for (unsigned i = 0; i < CHANS_MAX; i++, k = (k + 1) % CHANS_MAX) {
                uint32_t id = chan_id[k];

                if (id && (!host_only || chan_peer[k] == VMQ_HOST_ID))
                        return id;
        }
        return 0;
}

static uint32_t pick_chan(uint64_t *s) {
        uint32_t id;

        if (chaos_chance(s, 850) && (id = pick_known_chan(s, chaos_chance(s, 300))))
                return id;
        switch (chaos_below(s, 5)) {
        case 0:
                return 0;
        case 1:
                return 1 + (uint32_t)chaos_below(s, 64);
        case 2:
                return UINT32_MAX;
        case 3:
                return (uint32_t)chaos_next(s);
        default:
                return 1 + (uint32_t)chaos_below(s, 4096);
        }
}

/* An address: mostly plausible, often near a boundary, sometimes absurd. */
static uint64_t pick_gpa(uint64_t *s) {
        uint64_t g, hole = (lay.ram_size + VMQ_HUGE_PAGE_SIZE - 1) & ~(uint64_t)0x1fffff;

        unsigned k = (unsigned)chaos_below(s, 22);

        /* race=0: no address in the receive windows, where a run may be
         * released by another vCPU while the monitor reads it */
        if (no_race && k >= 4 && k <= 9)
                k = 10 + k % 4;
        switch (k) {
        case 0:
        case 1:
        case 2:
        case 3:
                g = buf_gpa[chaos_below(s, BUFS)];
                break;
        case 4:
        case 5:
        case 6:
                g = pick_held_source(s, NULL, NULL);
                break;
        case 7:
                g = lay.rx_gpa + chaos_below(s, lay.rx_size / VMQ_PAGE_SIZE) * VMQ_PAGE_SIZE;
                break;
        case 8:
                g = lay.rx_gpa + lay.rx_size - VMQ_PAGE_SIZE * chaos_below(s, 2);
                break;
        case 9:
                if (huge_buf && chaos_chance(s, 500))
                        g = huge_buf;
                else
                        g = (chaos_chance(s, 500) ? lay.huge_gpa : lay.huge_rx_gpa) +
                            chaos_below(s, 3) * VMQ_HUGE_PAGE_SIZE;
                break;
        case 10:
                g = lay.ram_size - VMQ_PAGE_SIZE * chaos_below(s, 3);
                break;
        case 11:
                g = VMQ_IMAGE_GPA + chaos_below(s, 8) * VMQ_PAGE_SIZE; /* our image */
                break;
        case 12:
                g = lay.image_end - VMQ_PAGE_SIZE * chaos_below(s, 2);
                break;
        case 13:
                g = chaos_below(s, VMQ_IMAGE_GPA) & ~(uint64_t)0xfff; /* below 1 MiB */
                break;
        case 14:
                g = VMQ_VMCS_GPA + chaos_below(s, vmcs_size / VMQ_PAGE_SIZE + 1) * VMQ_PAGE_SIZE;
                break;
        case 15:
                g = hole < VMQ_RX_GPA ? hole : 0x30000000;
                break;
        case 16:
                g = VMQ_GPA_LIMIT - VMQ_PAGE_SIZE * chaos_below(s, 2);
                break;
        case 17:
                g = VMQ_HUGE_RX_GPA + lay.huge_rx_size;
                break;
        case 18:
                g = UINT64_MAX - 4095 - chaos_below(s, 8192);
                break;
        case 19:
                g = chaos_next(s);
                break;
        case 20:
                g = VMQ_RX_GPA - VMQ_PAGE_SIZE;
                break;
        default:
                g = chaos_below(s, 2) * VMQ_PAGE_SIZE;
                break;
        }
        if (chaos_chance(s, 50))
                g += 1 + chaos_below(s, 4095);
        return g;
}

static uint32_t pick_len(uint64_t *s) {
        switch (chaos_below(s, 16)) {
        case 0:
                return 0;
        case 1:
                return 1 + (uint32_t)chaos_below(s, 96);
        case 2:
                return 97 + (uint32_t)chaos_below(s, 4000);
        case 3:
                return VMQ_PAGE_SIZE;
        case 4:
                return VMQ_PAGE_SIZE + 1;
        case 5:
                return VMQ_PAGE_SIZE * (1 + (uint32_t)chaos_below(s, 8));
        case 6:
                return VMQ_PAGE_SIZE * (uint32_t)chaos_below(s, 8) + 1 +
                       (uint32_t)chaos_below(s, 4095);
        case 7:
                return (uint32_t)chaos_below(s, 65536);
        case 8:
                return (uint32_t)lay.rx_size - 1 + (uint32_t)chaos_below(s, 3);
        case 9:
                return VMQ_HUGE_PAGE_SIZE - (uint32_t)chaos_below(s, 2);
        case 10:
                return VMQ_HUGE_PAGE_SIZE + 1;
        case 11:
                return UINT32_MAX - (uint32_t)chaos_below(s, 4096);
        case 12:
                return 0x80000000u;
        case 13:
                /* large but plausible: most of the heap */
                return (uint32_t)chaos_below(s, lay.ram_size / 2);
        default:
                return 1 + (uint32_t)chaos_below(s, 8192);
        }
}

static uint32_t pick_flags(uint64_t *s) {
        switch (chaos_below(s, 10)) {
        case 0:
        case 6:
                return 0;
        case 1:
        case 7:
                return VMQ_REQ_F_COPY;
        case 2:
        case 8:
                return VMQ_REQ_F_FLIP;
        case 3:
        case 9:
                return VMQ_REQ_F_SHARE;
        case 4:
                return (uint32_t)chaos_below(s, 8);
        default:
                return (uint32_t)chaos_next(s);
        }
}

static void random_bytes(uint64_t *s, void *p, size_t n) {
        uint8_t *b = p;

        for (size_t i = 0; i < n; i += 8) {
                uint64_t v = chaos_next(s);

                memcpy(b + i, &v, n - i < 8 ? n - i : 8);
        }
}

/* A request that is anything from well formed to garbage. */
static void random_request(uint64_t *s, struct vmq_request *q) {
        vmq_request_init(q);
        q->op = chaos_chance(s, 900) ? (uint16_t)(1 + chaos_below(s, 2)) : (uint16_t)chaos_next(s);
        q->flags = pick_flags(s);
        q->channel = pick_chan(s);
        q->gpa = pick_gpa(s);
        q->len = q->op == VMQ_OP_INLINE && chaos_chance(s, 900)
                         ? (uint32_t)chaos_below(s, VMQ_INLINE_MAX + 1)
                         : pick_len(s);
        q->tag = chaos_next(s);
        random_bytes(s, q->data, chaos_below(s, sizeof(q->data) + 1));
        if (chaos_chance(s, 30))
                q->abi = (uint16_t)chaos_next(s);
        if (chaos_chance(s, 30))
                q->src_vm = chaos_chance(s, 500) ? chaos_self_id : (uint32_t)chaos_below(s, 64);
        if (chaos_chance(s, 20))
                q->reserved = (uint32_t)chaos_next(s);
        if (chaos_chance(s, 50))
                q->arg = chaos_next(s);
}

/* A request that should pass every check: one of our buffers or a received
 * run, on a channel we know. */
static bool good_request(uint64_t *s, struct vmq_request *q) {
        uint32_t ch = pick_known_chan(s, chaos_chance(s, 250));

        if (!ch)
                return false;
        vmq_request_init(q);
        q->channel = ch;
        q->tag = chaos_next(s);
        if (chaos_chance(s, 300)) {
                q->op = VMQ_OP_INLINE;
                q->len = (uint32_t)chaos_below(s, VMQ_INLINE_MAX + 1);
                random_bytes(s, q->data, q->len);
                return true;
        }
        q->op = VMQ_OP_PAGE;
        q->flags = (uint32_t)chaos_below(s, 4);
        q->flags = q->flags == 3 ? VMQ_REQ_F_SHARE : q->flags;
        if (huge_buf && chaos_chance(s, 100)) {
                q->gpa = huge_buf;
                q->len = 1 + (uint32_t)chaos_below(s, VMQ_HUGE_PAGE_SIZE);
        } else if (chaos_chance(s, 30) && buf_gpa[0]) {
                /* most of the heap in one message: to the host, a copy the
                 * host must hold until it reads it (issue 7, class 5) */
                uint64_t top = lay.ram_size - (uint64_t)lay.vcpus * VMQ_STACK_SIZE;
                uint64_t room = top > buf_gpa[0] ? top - buf_gpa[0] : 0;

                q->gpa = buf_gpa[0];
                q->len = (uint32_t)(room / 2 + chaos_below(s, room / 2 + 1));
        } else if (chaos_chance(s, 350) && (q->gpa = pick_held_source(s, &q->len, NULL))) {
                /* forward a received run */
        } else {
                unsigned k = (unsigned)chaos_below(s, BUFS);

                q->gpa = buf_gpa[k];
                q->len = 1 + (uint32_t)chaos_below(s, buf_pages[k] * VMQ_PAGE_SIZE);
        }
        return q->gpa != 0;
}

/* ---- raw hypercalls, for any vCPU ------------------------------------------ */

static struct vmq_request *my_mbox(unsigned index) {
        return &vmq_vmcs()->mbox[index];
}

static int raw_request(unsigned index, unsigned nr, const struct vmq_request *q) {
        memcpy(my_mbox(index), q, sizeof(*q));
        return vmq_hypercall(nr);
}

int chaos_raw_simple(unsigned index, unsigned nr, uint64_t gpa, uint32_t len, uint64_t arg) {
        struct vmq_request *m = my_mbox(index);

        m->abi = VMQ_ABI_VERSION;
        m->op = VMQ_OP_NONE;
        m->flags = 0;
        m->channel = 0;
        m->src_vm = 0;
        m->reserved = 0;
        m->gpa = gpa;
        m->len = len;
        m->arg = arg;
        return vmq_hypercall(nr);
}

static void say(const char *msg) {
        vmq_console_write(msg, strlen(msg));
}

/* The monitor accepted what it must refuse (any vCPU may call this). */
static void breach(const char *what, uint64_t a, uint64_t b) {
        char line[160];

        vmq_snprintf(line, sizeof(line), "\n" CHAOS_BREACH "%s a=0x%lx b=0x%lx key=%016lx\n", what,
                     a, b, breach_key);
        say(line);
}

/* Whether the mailbox still holds the request we made (nobody scribbled
 * over it while the monitor read it). */
static bool mbox_unchanged(unsigned index, const struct vmq_request *q) {
        const struct vmq_request *m = my_mbox(index);

        return m->op == q->op && m->flags == q->flags && m->channel == q->channel &&
               m->gpa == q->gpa && m->len == q->len && m->abi == q->abi && m->src_vm == q->src_vm &&
               m->reserved == q->reserved;
}

/* ---- ports ----------------------------------------------------------------- */

static void port_access(uint64_t *s, unsigned index) {
        uint16_t port = (uint16_t)(VMQ_HC_PORT_BASE + chaos_below(s, 0x100));
        unsigned width = 1u << chaos_below(s, 3);
        bool out = chaos_chance(s, 400);
        uint32_t v = (uint32_t)chaos_next(s), r = 0;

        if (width == 4 && !out) {
                unsigned nr = port - VMQ_HC_PORT_BASE;

                /* a real hypercall with whatever the mailbox holds: keep
                 * it from exiting, parking or sleeping for long */
                if (nr == VMQ_HC_EXIT || nr == VMQ_HC_PARK)
                        port = VMQ_HC_PORT_BASE + VMQ_HC_NOP;
                my_mbox(index)->arg = chaos_below(s, 200000);
        }
        if (width == 4 && port > VMQ_HC_PORT_BASE + 0xfc)
                port = VMQ_HC_PORT_BASE + 0xfc; /* a 32-bit access must not leave the range */
        if (width == 2 && port > VMQ_HC_PORT_BASE + 0xfe)
                port = VMQ_HC_PORT_BASE + 0xfe;
        switch (width * 2 + out) {
        case 2:
                __asm__ volatile("inb %w1, %b0" : "=a"(r) : "Nd"(port) : "memory");
                break;
        case 3:
                __asm__ volatile("outb %b0, %w1" ::"a"(v), "Nd"(port) : "memory");
                break;
        case 4:
                __asm__ volatile("inw %w1, %w0" : "=a"(r) : "Nd"(port) : "memory");
                break;
        case 5:
                __asm__ volatile("outw %w0, %w1" ::"a"(v), "Nd"(port) : "memory");
                break;
        case 8:
                __asm__ volatile("inl %w1, %0" : "=a"(r) : "Nd"(port) : "memory");
                break;
        default:
                __asm__ volatile("outl %0, %w1" ::"a"(v), "Nd"(port) : "memory");
                break;
        }
        (void)r;
}

/* ---- deliberate faults ------------------------------------------------------- */

static VMQ_NORETURN void deliberate_fault(uint64_t *s) {
        static const char *const kinds[] = {
                "ud2",  "null-read",    "text-write", "hole-read",   "rx-empty-write", "hlt",
                "int3", "system-write", "divide",     "port-closed", "port-edge",
        };
        unsigned k = (unsigned)chaos_below(s, sizeof(kinds) / sizeof(kinds[0]));
        uint64_t addr = 0, lo = 1, hi = 0;
        volatile uint64_t zero = 0;

        say("chaos: fault ");
        say(kinds[k]);
        say("\n");
        switch (k) {
        case 0:
                __asm__ volatile("ud2");
                break;
        case 1:
                /* through asm so the compiler cannot see a null pointer */
                __asm__ volatile("movb (%0), %%al" ::"r"(addr) : "rax", "memory");
                break;
        case 2:
                addr = VMQ_IMAGE_GPA;
                __asm__ volatile("movb $0x90, (%0)" ::"r"(addr) : "memory");
                break;
        case 3:
                addr = 0x30000000;
                __asm__ volatile("movb (%0), %%al" ::"r"(addr) : "rax", "memory");
                break;
        case 4:
                addr = lay.rx_gpa + lay.rx_size - VMQ_PAGE_SIZE;
                __asm__ volatile("movb $1, (%0)" ::"r"(addr) : "memory");
                break;
        case 5:
                __asm__ volatile("hlt");
                break;
        case 6:
                __asm__ volatile("int3");
                break;
        case 7:
                addr = VMQ_SYSTEM_GPA;
                __asm__ volatile("movb $1, (%0)" ::"r"(addr) : "memory");
                break;
        case 8:
                __asm__ volatile("divq %2" : "+a"(lo), "+d"(hi) : "r"(zero));
                break;
        case 9:
                __asm__ volatile("inb $0x60, %%al" ::: "rax");
                break;
        default:
                /* 32 bits at 0x5fd-0x5ff: three of the four ports lie past
                 * the hypercall range */
                __asm__ volatile("inl %w0, %%eax" ::"Nd"((uint16_t)(0x5fd + chaos_below(s, 3)))
                                 : "rax");
                break;
        }
        /* still alive: the monitor let it pass; leave by the front door */
        vmq_exit(99);
}

static VMQ_NORETURN void deliberate_exit(uint64_t *s) {
        int code = (int)chaos_below(s, 256);
        char line[32];

        /* not vmq_printf: any vCPU may be here */
        vmq_snprintf(line, sizeof(line), "chaos: exit %d\n", code);
        say(line);
        vmq_exit(code);
}

/* ---- actions any vCPU may take ------------------------------------------------ */

/* Rewrites a few bytes of some mailbox (maybe another vCPU's, mid-call). */
static void scribble_mbox(uint64_t *s) {
        struct vmq_request *m = &vmq_vmcs()->mbox[chaos_below(s, VMQ_MAX_VCPUS)];
        uint8_t *p = (uint8_t *)m;
        size_t off = chaos_below(s, sizeof(*m)), n = 1 + chaos_below(s, 16);

        if (off + n > sizeof(*m))
                n = sizeof(*m) - off;
        random_bytes(s, p + off, n);
}

static void console_random(uint64_t *s, unsigned index) {
        uint64_t gpa;
        uint32_t len = (uint32_t)chaos_below(s, 64);

        switch (chaos_below(s, 6)) {
        case 0:
                gpa = chaos_below(s, VMQ_IMAGE_GPA); /* system area, VMCS, below 1 MiB */
                break;
        case 1:
                gpa = pick_held_source(s, &len, NULL);
                break;
        case 2:
                gpa = pick_gpa(s);
                len = pick_len(s);
                break;
        case 3:
                gpa = VMQ_SYSTEM_GPA + chaos_below(s, VMQ_SYSTEM_END - VMQ_SYSTEM_GPA);
                break;
        default:
                gpa = buf_gpa[chaos_below(s, BUFS)];
                break;
        }
        if (chaos_chance(s, 50))
                len = VMQ_PAGE_SIZE - 1 + (uint32_t)chaos_below(s, 3); /* the most per call */
        if (no_sysconsole && gpa < VMQ_SYSTEM_END)
                gpa = VMQ_SYSTEM_END + chaos_below(s, VMQ_IMAGE_GPA - VMQ_SYSTEM_END);
        if (chaos_raw_simple(index, VMQ_HC_CONSOLE, gpa, len, 0) == 0 && len &&
            my_mbox(index)->gpa == gpa && my_mbox(index)->len == len && gpa < VMQ_SYSTEM_END &&
            gpa + len > VMQ_SYSTEM_GPA)
                breach("console-system-area", gpa, len); /* page tables, GDT, TSS */
}

/* Sends a received run to the host or a peer while it may be released
 * under our feet by another vCPU (or released right after, by us). */
static void send_held(uint64_t *s, unsigned index, bool release_after) {
        struct vmq_request q;
        unsigned slot = 0;

        vmq_request_init(&q);
        q.op = VMQ_OP_PAGE;
        q.gpa = pick_held_source(s, &q.len, &slot);
        q.channel = pick_known_chan(s, chaos_chance(s, 700));
        q.flags = chaos_chance(s, 500) ? VMQ_REQ_F_COPY : 0;
        q.tag = chaos_next(s);
        if (!q.gpa || !q.channel)
                return;
        (void)raw_request(index, VMQ_HC_SEND, &q);
        if (release_after) {
                held_gpa[slot] = 0;
                (void)chaos_raw_simple(index, VMQ_HC_RELEASE, q.gpa, q.len, 0);
        }
}

static void release_held(uint64_t *s, unsigned index) {
        unsigned slot = 0;
        uint32_t len;
        uint64_t gpa = pick_held(s, &len, &slot);

        if (!gpa)
                return;
        if (chaos_chance(s, 800))
                held_gpa[slot] = 0;
        if (chaos_chance(s, 100))
                len = pick_len(s);
        (void)chaos_raw_simple(index, VMQ_HC_RELEASE, gpa, len, 0);
}

/* Reads (or writes) a received run: it may have been released or flipped
 * away by another vCPU, or be a read-only share: our own fault if that
 * crashes us. */
static void touch_held(uint64_t *s) {
        uint32_t len;
        uint64_t gpa = pick_held(s, &len, NULL);
        bool write = chaos_chance(s, 100);

        if (!gpa)
                return;
        for (uint64_t off = 0; off < len; off += VMQ_PAGE_SIZE) {
                volatile uint8_t *p = (volatile uint8_t *)(uintptr_t)(gpa + off);

                if (write)
                        *p = (uint8_t)chaos_next(s);
                else
                        (void)*p;
        }
}

static void idle(uint64_t *s, unsigned index) {
        uint64_t ns = chaos_below(s, 2 * pace_us + 1) * 1000;

        /* WAIT returns at once while our queue holds something. */
        if (chaos_raw_simple(index, VMQ_HC_WAIT, 0, 0, ns) == 0 && ns)
                vmq_delay_ns(ns / 4);
}

/* The links: garbage into one (the monitor never reads them; only the peer
 * of that link may notice), kicks on any channel, waits for a kick. */
static void link_chaos(uint64_t *s, unsigned index) {
        uint64_t g = link_gpa[chaos_below(s, CHANS_MAX)];
        struct vmq_request *m;

        switch (chaos_below(s, 3)) {
        case 0:
                if (g) {
                        uint64_t x = chaos_next(s);
                        uint64_t off = chaos_below(s, VMQ_LINK_SIZE / 8) * 8;

                        __atomic_store_n((uint64_t *)(uintptr_t)(g + off), x, __ATOMIC_RELAXED);
                }
                break;
        case 1:
                m = my_mbox(index);
                m->abi = VMQ_ABI_VERSION;
                m->channel = pick_chan(s);
                (void)vmq_hypercall(VMQ_HC_KICK);
                break;
        default:
                m = my_mbox(index);
                m->abi = VMQ_ABI_VERSION;
                m->flags = VMQ_WAIT_F_LINKS;
                m->arg = chaos_below(s, 100000);
                (void)vmq_hypercall(VMQ_HC_WAIT);
                break;
        }
}

static void common_action(uint64_t *s, unsigned index, unsigned a) {
        struct vmq_request q;

        switch (a) {
        case 0:
                random_request(s, &q);
                (void)raw_request(index, VMQ_HC_SEND, &q);
                break;
        case 1:
                if (good_request(s, &q))
                        (void)raw_request(index, VMQ_HC_SEND, &q);
                break;
        case 2:
                send_held(s, index, chaos_chance(s, 300));
                break;
        case 3:
                release_held(s, index);
                break;
        case 4:
                (void)chaos_raw_simple(index, VMQ_HC_RELEASE, pick_gpa(s), pick_len(s), 0);
                break;
        case 5:
                console_random(s, index);
                break;
        case 6:
                (void)chaos_raw_simple(index, VMQ_HC_FLUSH, 0, 0, 0);
                break;
        case 7:
                vmq_doorbell();
                break;
        case 8:
                (void)chaos_raw_simple(index, chaos_chance(s, 500) ? VMQ_HC_CLOCK : VMQ_HC_NOP, 0,
                                       0, 0);
                break;
        case 9:
                (void)chaos_raw_simple(index, VMQ_HC_WAIT, 0, 0, chaos_below(s, 100000));
                break;
        case 10:
                scribble_mbox(s);
                break;
        case 11:
                port_access(s, index);
                break;
        case 12:
                /* an unknown hypercall number (not exit or park) */
                random_request(s, &q);
                memcpy(my_mbox(index), &q, sizeof(q));
                {
                        unsigned nr = VMQ_HC_MAX + (unsigned)chaos_below(s, 0x100 - VMQ_HC_MAX - 1);

                        if (nr == VMQ_DOORBELL_PORT - VMQ_HC_PORT_BASE)
                                nr++;
                        __asm__ volatile("inl %w1, %%eax"
                                         : "=a"(nr)
                                         : "Nd"((uint16_t)(VMQ_HC_PORT_BASE + nr))
                                         : "memory");
                }
                break;
        case 13:
                link_chaos(s, index);
                break;
        default:
                touch_held(s);
                break;
        }
}

#define COMMON_ACTIONS 15u

static void maybe_die(uint64_t *s) {
        if (fault_ppm && chaos_below(s, 1000000) < fault_ppm)
                deliberate_fault(s);
        if (exit_ppm && chaos_below(s, 1000000) < exit_ppm)
                deliberate_exit(s);
}

/* ---- chaos, vCPU 0 ----------------------------------------------------------- */

static void note_chan(const struct vmq_desc *d) {
        struct vmq_identity id;
        unsigned free_slot = CHANS_MAX;

        for (unsigned i = 0; i < CHANS_MAX; i++) {
                if (chan_id[i] == d->channel) {
                        if (d->kind == VMQ_DESC_CLOSE)
                                chan_id[i] = 0;
                        return;
                }
                if (!chan_id[i] && free_slot == CHANS_MAX)
                        free_slot = i;
        }
        if (d->kind != VMQ_DESC_HELLO)
                return;
        if (free_slot == CHANS_MAX)
                free_slot = d->channel % CHANS_MAX;
        memcpy(&id, d->data, sizeof(id));
        chan_peer[free_slot] = id.vm_id;
        chan_id[free_slot] = d->channel;
        if ((d->flags & VMQ_DESC_F_LINK) && d->gpa >= VMQ_LINK_GPA &&
            d->gpa - VMQ_LINK_GPA <= VMQ_LINK_WINDOW - VMQ_LINK_SIZE &&
            (d->gpa - VMQ_LINK_GPA) % VMQ_LINK_SIZE == 0)
                link_gpa[d->channel % CHANS_MAX] = d->gpa;
}

static void hold(uint64_t *s, const struct vmq_desc *d) {
        unsigned k = held_next;

        if (chaos_chance(s, 300)) {
                (void)vmq_release(vmq_desc_pages(d), d->len);
                return;
        }
        for (unsigned i = 0; i < HELD_MAX; i++) {
                if (!held_gpa[(k + i) % HELD_MAX]) {
                        k = (k + i) % HELD_MAX;
                        break;
                }
        }
        if (held_gpa[k]) {
                /* full: give the oldest back first */
                uint64_t g = held_gpa[k];

                held_gpa[k] = 0;
                (void)vmq_release((void *)(uintptr_t)g, held_len[k]);
        }
        held_len[k] = d->len;
        held_gpa[k] = d->gpa;
        held_next = (k + 1) % HELD_MAX;
}

/* A read-only share may not travel on: try, right after it arrived (before
 * any vCPU can know of it, so before anyone can release it). */
static void forward_share(uint64_t *s, const struct vmq_desc *d) {
        static const uint32_t how[] = {0, VMQ_REQ_F_COPY, VMQ_REQ_F_FLIP, VMQ_REQ_F_SHARE};
        struct vmq_request q;

        vmq_request_init(&q);
        q.op = VMQ_OP_PAGE;
        q.gpa = d->gpa;
        q.len = d->len;
        q.flags = how[chaos_below(s, 4)];
        q.channel = pick_known_chan(s, chaos_chance(s, 500));
        q.tag = chaos_next(s);
        if (q.channel && raw_request(0, VMQ_HC_SEND, &q) == 0 && mbox_unchanged(0, &q))
                breach("forward-readonly-share", q.gpa, (uint64_t)q.channel << 32 | q.flags);
}

static void drain(uint64_t *s) {
        struct vmq_desc d;
        unsigned n = 1 + (unsigned)chaos_below(s, 16);

        while (n-- && vmq_try_recv(&d) == 0) {
                if (d.kind == VMQ_DESC_HELLO || d.kind == VMQ_DESC_CLOSE) {
                        note_chan(&d);
                } else if (d.kind == VMQ_DESC_PAGE && d.gpa) {
                        if ((d.flags & VMQ_DESC_F_SHARED) && !no_forward_share &&
                            chaos_chance(s, 500))
                                forward_share(s, &d);
                        hold(s, &d);
                }
        }
}

static void post_some(uint64_t *s) {
        struct vmq_request q;
        unsigned n = 1 + (unsigned)chaos_below(s, 4);

        while (n--) {
                if (chaos_chance(s, 500) ? !good_request(s, &q) : (random_request(s, &q), false))
                        continue;
                (void)vmq_post_request(&q);
        }
        switch (chaos_below(s, 3)) {
        case 0:
                vmq_doorbell();
                break;
        case 1:
                (void)vmq_flush();
                break;
        default:
                break; /* left for the next exit of any kind */
        }
}

/* The race of issue 7 class 1 with one vCPU: post a copy of a received
 * run, ring the doorbell (another thread drains it), release the run. */
static void post_then_release(uint64_t *s) {
        struct vmq_request q;
        unsigned slot = 0;

        vmq_request_init(&q);
        q.op = VMQ_OP_PAGE;
        q.gpa = pick_held_source(s, &q.len, &slot);
        q.channel = pick_known_chan(s, chaos_chance(s, 700));
        q.flags = chaos_chance(s, 500) ? VMQ_REQ_F_COPY : 0;
        if (!q.gpa || !q.channel)
                return;
        if (vmq_post_request(&q) < 0)
                return;
        vmq_doorbell();
        held_gpa[slot] = 0;
        (void)vmq_release((void *)(uintptr_t)q.gpa, q.len);
}

/* Garbage in one of the rings' indices or slots, or in the VMCS header;
 * a hypercall or two while it is there; then the old value back. */
static void scribble_vmcs(uint64_t *s) {
        uint8_t *v = (uint8_t *)vmq_vmcs();
        uint32_t off, n = 4, saved[4];

        switch (chaos_below(s, 6)) {
        case 0:
                off = lay.queue_off + (uint32_t)offsetof(struct vmq_ring_idx, cons);
                break;
        case 1:
                off = lay.queue_off + (uint32_t)offsetof(struct vmq_ring_idx, prod);
                break;
        case 2:
                off = lay.post_off + (uint32_t)offsetof(struct vmq_ring_idx, prod);
                break;
        case 3:
                off = lay.post_off + (uint32_t)offsetof(struct vmq_ring_idx, cons);
                break;
        case 4:
                /* a post slot, pending or not: not restored */
                off = lay.post_slots_off +
                      (uint32_t)chaos_below(s, lay.post_cap * sizeof(struct vmq_request) - 16);
                random_bytes(s, v + off, 16);
                (void)vmq_flush();
                return;
        default:
                /* identity, layout, stats: OUT fields */
                off = (uint32_t)chaos_below(s, offsetof(struct vmq_vmcs, mbox) - 16);
                n = 16;
                break;
        }
        memcpy(saved, v + off, n);
        random_bytes(s, v + off, n);
        if (chaos_chance(s, 500))
                (void)vmq_flush();
        if (chaos_chance(s, 500))
                (void)vmq_nop();
        if (chaos_chance(s, 300))
                (void)vmq_wait(0);
        memcpy(v + off, saved, n);
}

static void chaos_vcpu0(uint64_t *s) {
        for (;;) {
                unsigned a = (unsigned)chaos_below(s, 100);

                maybe_die(s);
                if (a < 22)
                        drain(s);
                else if (a < 30)
                        post_some(s);
                else if (a < 34)
                        post_then_release(s);
                else if (a < 36)
                        scribble_vmcs(s);
                else if (a < 38)
                        (void)vmq_flush();
                else
                        common_action(s, 0, (unsigned)chaos_below(s, COMMON_ACTIONS));
                if (pace_us && chaos_chance(s, 150))
                        idle(s, 0);
        }
}

static void chaos_secondary(uint64_t *s, unsigned index) {
        for (;;) {
                maybe_die(s);
                common_action(s, index, (unsigned)chaos_below(s, COMMON_ACTIONS));
                if (pace_us && chaos_chance(s, 150))
                        idle(s, index);
        }
}

/* ---- entry points ----------------------------------------------------------------- */

static bool witness_mode;

void vmq_secondary(unsigned index) {
        uint64_t s;

        while (!__atomic_load_n(&chaos_ready, __ATOMIC_ACQUIRE))
                vmq_cpu_relax();
        s = chaos_mix(chaos_seed ^ chaos_mix(index));
        if (witness_mode)
                witness_secondary(&s, index);
        chaos_secondary(&s, index);
}

int vmq_main(void) {
        char mode[16] = "chaos";
        uint64_t s;

        lay = vmq_vmcs()->layout;
        vmcs_size = vmq_vmcs()->vmcs_size;
        chaos_self_id = vmq_self()->vm_id;
        chaos_seed = vmq_arg_u64("chaos_seed", 1);
        pace_us = vmq_arg_u64("pace", 300);
        fault_ppm = vmq_arg_u64("fault", 20);
        exit_ppm = vmq_arg_u64("exit", 20);
        vmq_arg_str("mode", mode, sizeof(mode));
        {
                char v[8] = "";

                vmq_arg_str("shared", v, sizeof(v));
                chaos_skip_shared = !strcmp(v, "skip");
        }
        no_race = vmq_arg_u64("race", 1) == 0;
        breach_key = chaos_breach_key(chaos_seed);
        no_sysconsole = vmq_arg_u64("sysconsole", 1) == 0;
        no_forward_share = vmq_arg_u64("roshare", 1) == 0;
        s = chaos_mix(chaos_seed);
        if (!strcmp(mode, "witness")) {
                witness_mode = true;
                return witness_main(&s);
        }
        if (strcmp(mode, "chaos")) {
                vmq_printf("chaos: bad mode=%s\n", mode);
                return 2;
        }

        for (unsigned k = 0; k < BUFS; k++) {
                buf_pages[k] = 1 + (unsigned)chaos_below(&s, BUF_PAGES_MAX);
                buf_gpa[k] = (uint64_t)(uintptr_t)vmq_alloc_pages(buf_pages[k]);
                if (buf_gpa[k])
                        random_bytes(&s, (void *)(uintptr_t)buf_gpa[k],
                                     buf_pages[k] * VMQ_PAGE_SIZE);
        }
        if (lay.huge_size)
                huge_buf = (uint64_t)(uintptr_t)vmq_alloc_huge(1);
        vmq_set_spin_ns(0);
        /* Some chaos VMs obey SHUTDOWN, some ignore it. */
        if (chaos_chance(&s, 500))
                vmq_set_shutdown_handler(NULL);
        vmq_printf("chaos: start vm=%u seed=%lu vcpus=%u pace=%lu\n", chaos_self_id, chaos_seed,
                   lay.vcpus, pace_us);
        __atomic_store_n(&chaos_ready, true, __ATOMIC_RELEASE);
        chaos_vcpu0(&s);
        return 0;
}
