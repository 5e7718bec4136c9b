/* SPDX-License-Identifier: MIT */
/*
 * What the two modes of chaos.elf share: chaos.c (the hostile mode and the
 * entry points) and witness.c (the checking mode).
 */
#ifndef VMQ_GUEST_CHAOS_INTERNAL_H
#define VMQ_GUEST_CHAOS_INTERNAL_H

#include "guest/images/chaos.h"
#include "guest/images/image.h"

extern uint32_t chaos_self_id; /* our VM id */
extern uint64_t chaos_seed;    /* seed= */
extern bool chaos_skip_shared; /* shared=skip */
/* vCPU 0 is set up: the others may start */
extern volatile bool chaos_ready;

/* Issues hypercall nr from vCPU index with a mailbox holding only gpa, len
 * and arg.  Returns the monitor's answer. */
int chaos_raw_simple(unsigned index, unsigned nr, uint64_t gpa, uint32_t len, uint64_t arg);

/* witness.c: mode=witness on vCPU 0 (returns only on a fatal error) and on
 * the other vCPUs. */
int witness_main(uint64_t *s);
VMQ_NORETURN void witness_secondary(uint64_t *s, unsigned index);

#endif /* VMQ_GUEST_CHAOS_INTERNAL_H */
