/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the libFuzzer harnesses: a checked assertion that is
 * never compiled out, and a reader that turns the fuzzer's bytes into
 * typed values (zeroes once the input runs out, so every input is valid).
 */
#ifndef VMQ_FUZZ_UTIL_H
#define VMQ_FUZZ_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libFuzzer's entry points (it declares none in a C header). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An invariant of the code under test.  Unlike assert() it survives
 * -DNDEBUG, and abort() is what libFuzzer reports as a crash. */
#define FUZZ_CHECK(cond)                                                                           \
        do {                                                                                       \
                if (!(cond)) {                                                                     \
                        fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__,       \
                                #cond);                                                            \
                        abort();                                                                   \
                }                                                                                  \
        } while (0)

struct fuzz_input {
        const uint8_t *p;
        size_t n;
};

static inline size_t fuzz_left(const struct fuzz_input *in) {
        return in->n;
}

/* Copies up to len bytes into buf and zero-fills the rest. */
static inline void fuzz_bytes(struct fuzz_input *in, void *buf, size_t len) {
        size_t k = len < in->n ? len : in->n;
        if (k)
                memcpy(buf, in->p, k);
        if (len > k)
                memset((uint8_t *)buf + k, 0, len - k);
        in->p += k;
        in->n -= k;
}

static inline uint8_t fuzz_u8(struct fuzz_input *in) {
        uint8_t v;
        fuzz_bytes(in, &v, sizeof(v));
        return v;
}

static inline uint16_t fuzz_u16(struct fuzz_input *in) {
        uint16_t v;
        fuzz_bytes(in, &v, sizeof(v));
        return v;
}

static inline uint32_t fuzz_u32(struct fuzz_input *in) {
        uint32_t v;
        fuzz_bytes(in, &v, sizeof(v));
        return v;
}

static inline uint64_t fuzz_u64(struct fuzz_input *in) {
        uint64_t v;
        fuzz_bytes(in, &v, sizeof(v));
        return v;
}

#endif /* VMQ_FUZZ_UTIL_H */
