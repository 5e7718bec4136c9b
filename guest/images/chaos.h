/* SPDX-License-Identifier: MIT */
/*
 * What the chaos image (guest/images/chaos.c) and the soak host program
 * (tests/soak/vmq-soak.c) agree on: the PRNG both draw from, and the layout
 * of a witness payload, which whoever receives it can check on its own.
 *
 * Header-only and free of any library: it compiles freestanding (the guest)
 * and hosted (the soak).
 *
 * A witness payload (every message a witness VM or the soak's host end
 * sends to a witness or the host) is `len` bytes, len >= WITNESS_HDR_SIZE:
 *
 *   struct witness_hdr   magic, the sender's VM id (0: the host), a stamp
 *                        and len again
 *   body                 bytes [WITNESS_HDR_SIZE, len): 64-bit words of
 *                        chaos_mix(key + word index), key from (src, stamp),
 *                        little-endian, the last word cut short
 *
 * The stamp is ((uint64_t)channel << 32 | seq) for a message built for one
 * send, where seq is the descriptor's tag: the n-th message a sender got
 * accepted on a channel has tag n (from 0), so a receiver sees tags 0, 1,
 * 2... with no gap, repeat or reordering.  Shared pages (VMQ_REQ_F_SHARE)
 * are written once and shared many times, so their stamp is
 * WITNESS_STAMP_SHARED | buffer index, and only the tag counts.
 */
#ifndef VMQ_GUEST_CHAOS_H
#define VMQ_GUEST_CHAOS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WITNESS_MAGIC 0x4e544957u /* "WITN" */
#define WITNESS_STAMP_SHARED (1ull << 63)

struct witness_hdr {
        uint32_t magic;
        uint32_t src; /* sender's VM id, 0 for the host */
        uint64_t stamp;
        uint32_t len;
        uint32_t reserved; /* 0 */
};

#define WITNESS_HDR_SIZE ((uint32_t)sizeof(struct witness_hdr))
_Static_assert(sizeof(struct witness_hdr) == 24, "witness header size");

/* The splitmix64 finaliser: a bijection that scrambles every bit. */
static inline uint64_t chaos_mix(uint64_t z) {
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
}

/* splitmix64: the next number of the sequence whose state is *s. */
static inline uint64_t chaos_next(uint64_t *s) {
        *s += 0x9e3779b97f4a7c15ull;
        return chaos_mix(*s);
}

/* A number in [0, n) (0 when n is 0). */
static inline uint64_t chaos_below(uint64_t *s, uint64_t n) {
        return n ? chaos_next(s) % n : 0;
}

/* True with probability per_mille / 1000. */
static inline bool chaos_chance(uint64_t *s, unsigned per_mille) {
        return chaos_below(s, 1000) < per_mille;
}

/* The seed of the k-th VM of a soak run with seed `seed`. */
static inline uint64_t chaos_vm_seed(uint64_t seed, uint64_t k) {
        return chaos_mix(seed ^ chaos_mix(k + 0x5eed));
}

/*
 * A chaos VM that sees the monitor accept what the ABI says it must refuse
 * (a console write of the system area, the forwarding of a read-only share)
 * prints, alone on a line:
 *   chaos: BREACH <what> a=<hex> b=<hex> key=<16 hex digits>
 * with key = chaos_breach_key(its seed).  The key is computed at run time,
 * so the image's own bytes, which chaos VMs print at random, never hold it.
 */
#define CHAOS_BREACH "chaos: BREACH "

static inline uint64_t chaos_breach_key(uint64_t seed) {
        return chaos_mix(seed ^ 0x6272656163680a00ull);
}

static inline uint64_t witness_key(uint32_t src, uint64_t stamp) {
        return chaos_mix(chaos_mix((uint64_t)src + 0x77697465ull) ^ stamp);
}

/* Writes a witness payload of len >= WITNESS_HDR_SIZE bytes at p. */
static inline void witness_fill(uint8_t *p, uint32_t len, uint32_t src, uint64_t stamp) {
        struct witness_hdr h = {WITNESS_MAGIC, src, stamp, len, 0};
        uint64_t key = witness_key(src, stamp);

        __builtin_memcpy(p, &h, sizeof(h));
        for (uint32_t off = WITNESS_HDR_SIZE, w = 0; off < len; off += 8, w++) {
                uint64_t v = chaos_mix(key + w);
                uint32_t n = len - off < 8 ? len - off : 8;

                __builtin_memcpy(p + off, &v, n);
        }
}

/*
 * Checks a witness payload of len bytes at p claimed to come from src.
 * Returns -1 when it is intact (and *ret_stamp = its stamp), else the
 * offset of the first byte that is wrong (0..23: in the header).
 */
static inline long witness_check(const uint8_t *p, uint32_t len, uint32_t src,
                                 uint64_t *ret_stamp) {
        struct witness_hdr h;
        uint64_t key;

        if (len < WITNESS_HDR_SIZE)
                return 0;
        __builtin_memcpy(&h, p, sizeof(h));
        if (h.magic != WITNESS_MAGIC)
                return 0;
        if (h.src != src)
                return 4;
        if (h.len != len)
                return 16;
        if (h.reserved)
                return 20;
        key = witness_key(src, h.stamp);
        for (uint32_t off = WITNESS_HDR_SIZE, w = 0; off < len; off += 8, w++) {
                uint64_t v = chaos_mix(key + w), got = 0;
                uint32_t n = len - off < 8 ? len - off : 8;

                __builtin_memcpy(&got, p + off, n);
                if (n < 8)
                        v &= (1ull << (n * 8)) - 1;
                if (got != v)
                        return (long)off;
        }
        *ret_stamp = h.stamp;
        return -1;
}

/* Offset of the first non-zero byte of p[from, to), or -1. */
static inline long chaos_nonzero(const uint8_t *p, size_t from, size_t to) {
        for (size_t i = from; i < to; i++)
                if (p[i])
                        return (long)i;
        return -1;
}

#endif /* VMQ_GUEST_CHAOS_H */
