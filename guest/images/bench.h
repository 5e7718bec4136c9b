/* SPDX-License-Identifier: MIT */
/*
 * The protocol between bench-tx and bench-rx.
 *
 *   INLINE tag BENCH_TAG_PING       rx replies at once with the same data,
 *                                   length and tag (pong)
 *   PAGE, tag with BENCH_TAG_LAST   rx reads one byte of every 4 KiB page,
 *                                   releases the run, then replies INLINE
 *                                   tag BENCH_TAG_ACK, data = the 8-byte tag
 *   PAGE, other tags                rx reads and releases, no reply
 *   INLINE, tag with BENCH_TAG_LAST rx replies INLINE tag BENCH_TAG_ACK
 *                                   (the end of a msgrate stream)
 *   INLINE, other tags              rx counts it, no reply
 *   INLINE tag VMQ_TAG_DONE         rx prints its totals and exits 0
 */
#ifndef VMQ_GUEST_BENCH_H
#define VMQ_GUEST_BENCH_H

#include "guest/images/image.h"

#define BENCH_TAG_PING 0x70696e67ull /* "ping" */
#define BENCH_TAG_ACK 0x61636bull    /* "ack" */
#define BENCH_TAG_LAST (1ull << 63)  /* message that wants an ACK */

#endif /* VMQ_GUEST_BENCH_H */
