/* SPDX-License-Identifier: MIT */
/*
 * Channel links, the part that talks to the monitor (guest/vmq-link.h):
 * opening from a HELLO, kicking the peer, and the blocking calls, which
 * spin first and then sleep in VMQ_HC_WAIT (VMQ_WAIT_F_LINKS) after
 * setting their wait word, as "Channel links" in core/vmq-abi.h says.  A
 * SHUTDOWN from the host wakes them as well (the monitor kicks the VM):
 * a sleeping call then runs the shutdown handler (vmq_set_shutdown_handler;
 * by default the VM exits), once, and goes on waiting if it returns.
 */
#include "guest/lib/internal.h"

int vmq_link_open(struct vmq_link *l, const struct vmq_desc *hello) {
        if (hello->kind != VMQ_DESC_HELLO || !(hello->flags & VMQ_DESC_F_LINK) ||
            hello->gpa < VMQ_LINK_GPA ||
            hello->gpa - VMQ_LINK_GPA > VMQ_LINK_WINDOW - VMQ_LINK_SIZE ||
            (hello->gpa - VMQ_LINK_GPA) % VMQ_LINK_SIZE)
                return -VMQ_E_NOCHAN;
        return vmq_link_attach(l, (void *)(uintptr_t)hello->gpa, hello->channel);
}

int vmq_link_kick(uint32_t ch) {
        vmq__mbox_send(VMQ_OP_NONE, ch, 0, 0);
        return vmq_hypercall(VMQ_HC_KICK);
}

bool vmq_link_notify(struct vmq_link *l) {
        bool kick = vmq_link_peer_waits_for_data(l);
        if (vmq_link_peer_waits_for_room(l))
                kick = true;
        if (kick)
                (void)vmq_link_kick(l->channel);
        return kick;
}

static int wait_kick(uint64_t timeout_ns) {
        struct vmq_request *m = vmq__mbox_send(VMQ_OP_NONE, 0, VMQ_WAIT_F_LINKS, 0);
        m->arg = timeout_ns;
        return vmq_hypercall(VMQ_HC_WAIT);
}

/* TSC ticks for ns (0: the rate is unknown). */
static uint64_t ticks_for(uint64_t ns) {
        uint64_t khz = vmq__tsc_khz;
        return ns / 1000000 * khz + ns % 1000000 * khz / 1000000;
}

/* Retries op until it gives something other than VMQ_E_AGAIN: spinning for
 * the SDK's spin time, then sleeping with `word` armed, up to timeout_ns. */
static int until(struct vmq_link *l, int (*op)(struct vmq_link *l, void *arg), void *arg,
                 uint32_t *word, uint64_t timeout_ns) {
        int r = op(l, arg);
        if (r != -VMQ_E_AGAIN || timeout_ns == 0)
                return r == -VMQ_E_AGAIN ? -VMQ_E_TIMEDOUT : r;

        uint64_t spin = vmq__spin_ns() < timeout_ns ? vmq__spin_ns() : timeout_ns;
        uint64_t ticks = ticks_for(spin), start = vmq_rdtsc();
        uint64_t iters = ticks ? 0 : spin / 30 + 1; /* rate unknown: about 30 ns a turn */
        for (;;) {
                vmq_cpu_relax();
                r = op(l, arg);
                if (r != -VMQ_E_AGAIN)
                        return r;
                if (ticks ? vmq_rdtsc() - start >= ticks : --iters == 0)
                        break;
        }

        uint64_t deadline = UINT64_MAX, left = timeout_ns;
        if (timeout_ns != UINT64_MAX) {
                uint64_t now = vmq_clock_ns();
                deadline = now + timeout_ns < now ? UINT64_MAX - 1 : now + timeout_ns;
        }
        for (;;) {
                l->wait_seq += 2;
                __atomic_store_n(word, l->wait_seq | 1, __ATOMIC_RELAXED);
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
                r = op(l, arg);
                if (r == -VMQ_E_AGAIN) {
                        int w = wait_kick(left);
                        if (w < 0 && w != -VMQ_E_TIMEDOUT) {
                                __atomic_store_n(word, l->wait_seq, __ATOMIC_RELAXED);
                                return w;
                        }
                        r = op(l, arg);
                        /* The host's SHUTDOWN wakes link sleepers too: a
                         * guest that only waits on a link must still hear it. */
                        if (r == -VMQ_E_AGAIN && vmq__shutdown_pending())
                                vmq__shutdown_requested();
                }
                __atomic_store_n(word, l->wait_seq, __ATOMIC_RELAXED);
                if (r != -VMQ_E_AGAIN)
                        return r;
                if (timeout_ns != UINT64_MAX) {
                        uint64_t now = vmq_clock_ns();
                        if (now >= deadline)
                                return -VMQ_E_TIMEDOUT;
                        left = deadline - now;
                }
        }
}

struct send_arg {
        const void *data;
        size_t len;
        uint64_t tag;
};

static int send_op(struct vmq_link *l, void *arg) {
        const struct send_arg *a = arg;
        return vmq_link_try_send(l, a->data, a->len, a->tag);
}

int vmq_link_send(struct vmq_link *l, const void *data, size_t len, uint64_t tag,
                  uint64_t timeout_ns) {
        struct send_arg a = {data, len, tag};
        int r = until(l, send_op, &a, &l->tx_hdr->prod_wait, timeout_ns);
        if (r == 0)
                vmq_link_notify(l);
        return r;
}

struct recv_arg {
        struct vmq_link_msg *ret;
        size_t n;
};

static int recv_op(struct vmq_link *l, void *arg) {
        const struct recv_arg *a = arg;
        int r = vmq_link_try_recv_batch(l, a->ret, a->n);
        return r == 0 ? -VMQ_E_AGAIN : r;
}

int vmq_link_recv_batch(struct vmq_link *l, struct vmq_link_msg *ret, size_t n,
                        uint64_t timeout_ns) {
        struct recv_arg a = {ret, n};
        if (n == 0)
                return -VMQ_E_INVAL;
        int r = until(l, recv_op, &a, &l->rx_hdr->cons_wait, timeout_ns);
        if (r > 0)
                vmq_link_notify(l);
        return r;
}

int vmq_link_recv(struct vmq_link *l, struct vmq_link_msg *ret, uint64_t timeout_ns) {
        int r = vmq_link_recv_batch(l, ret, 1, timeout_ns);
        return r == 1 ? 0 : r;
}
