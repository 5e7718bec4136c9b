/* SPDX-License-Identifier: MIT */
/*
 * Private state shared by the guest SDK's files.  Not installed, not for
 * images.
 */
#ifndef VMQ_GUEST_INTERNAL_H
#define VMQ_GUEST_INTERNAL_H

#include "guest/vmq-guest.h"

/* The VMCS pointer; start.S stores %rsi here on every vCPU. */
extern struct vmq_vmcs *vmq__vmcs;
/* TSC ticks per ms when known (from the VMCS or measured), else 0. */
extern uint64_t vmq__tsc_khz;

/* A bitmap allocator of fixed-size frames over [base, base + n * frame). */
struct vmq_pool {
        uint64_t base;
        uint64_t frame;
        size_t n;
        size_t nfree;
        size_t hint;
        uint64_t *bits; /* n bits, 1 = used */
};

/* Sets the pool up over [base, base + n * frame) with a zeroed bitmap of
 * (n + 63) / 64 words at bits. */
void vmq__pool_init(struct vmq_pool *p, uint64_t base, uint64_t frame, size_t n, uint64_t *bits);
/* First fit of count contiguous frames, starting the search at the hint.
 * Returns the address or 0. */
uint64_t vmq__pool_alloc(struct vmq_pool *p, size_t count);
/* Frees count frames at addr; a range not wholly inside the pool is
 * ignored. */
void vmq__pool_free(struct vmq_pool *p, uint64_t addr, size_t count);

/* Fills the calling vCPU's mailbox with a well-formed request header and
 * returns it (arg 0, no payload). */
struct vmq_request *vmq__mbox_send(uint16_t op, uint32_t ch, uint32_t flags, uint64_t tag);
/* Whether a SHUTDOWN descriptor waits in the queue (not taken). */
bool vmq__shutdown_pending(void);
/* Calls the shutdown handler (once: a handler that returns is not called
 * again from here). */
void vmq__shutdown_requested(void);
/* How long vmq_recv() and the link calls spin before they block (ns). */
uint64_t vmq__spin_ns(void);

/* Sets the heap and huge pools up from the VMCS layout. */
void vmq__mem_init(void);
/* Sets the rings up from the VMCS layout; returns 0 or -1 when the layout is
 * impossible. */
int vmq__queue_init(void);

#endif /* VMQ_GUEST_INTERNAL_H */
