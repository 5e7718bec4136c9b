/* SPDX-License-Identifier: MIT */
/*
 * Small helpers shared by all host code: scope-bound cleanup, checked
 * arithmetic, and a few macros.  Header-only on purpose.
 */
#ifndef VMQ_UTIL_H
#define VMQ_UTIL_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define VMQ_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define VMQ_ALIGN_UP(x, a) (((x) + ((a)-1)) & ~((__typeof__(x))(a)-1))
#define VMQ_IS_ALIGNED(x, a) (((x) & ((__typeof__(x))(a)-1)) == 0)
#define VMQ_MIN(a, b) ((a) < (b) ? (a) : (b))
#define VMQ_MAX(a, b) ((a) > (b) ? (a) : (b))
#define VMQ_IS_POW2(x) ((x) != 0 && ((x) & ((x)-1)) == 0)

/* A full barrier between a store and a later load (mfence), as the
 * notification rules of core/vmq-abi.h need.  ThreadSanitizer does not model
 * fences (gcc refuses them there, -Wtsan): under it, a seq_cst
 * read-modify-write of one shared word stands in, which x86 orders the same
 * way and which it understands. */
#ifdef __SANITIZE_THREAD__
#define VMQ_FULL_BARRIER()                                                                         \
        do {                                                                                       \
                static int vmq_barrier_word_;                                                      \
                (void)__atomic_fetch_add(&vmq_barrier_word_, 0, __ATOMIC_SEQ_CST);                 \
        } while (0)
#else
#define VMQ_FULL_BARRIER() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#endif

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _likely_(x) __builtin_expect(!!(x), 1)
#define _unlikely_(x) __builtin_expect(!!(x), 0)

/* Returns -1 so that `fd = vmq_close(fd);` leaves fd invalid. */
static inline int vmq_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void)close(fd);
                errno = saved;
        }
        return -1;
}

static inline void vmq_closep(int *fd) {
        *fd = vmq_close(*fd);
}

static inline void vmq_freep(void *p) {
        free(*(void **)p);
}

#define _cleanup_close_ _cleanup_(vmq_closep)
#define _cleanup_free_ _cleanup_(vmq_freep)

/* Take ownership out of a cleanup variable. */
#define VMQ_TAKE_PTR(p)                                                                            \
        ({                                                                                         \
                __typeof__(p) _t = (p);                                                            \
                (p) = NULL;                                                                        \
                _t;                                                                                \
        })
#define VMQ_TAKE_FD(fd)                                                                            \
        ({                                                                                         \
                int _t = (fd);                                                                     \
                (fd) = -1;                                                                         \
                _t;                                                                                \
        })

/*
 * Checked range test: is [addr, addr + len) inside [base, base + size)?
 * Never overflows, whatever the (hostile) inputs.
 */
static inline bool vmq_range_within(uint64_t addr, uint64_t len, uint64_t base, uint64_t size) {
        if (addr < base)
                return false;
        if (addr - base > size)
                return false;
        return len <= size - (addr - base);
}

/* Does [a, a + alen) overlap [b, b + blen)?  Inputs must not wrap. */
static inline bool vmq_ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
        return a < b + blen && b < a + alen;
}

/* CLOCK_MONOTONIC, in nanoseconds. */
static inline uint64_t vmq_now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The CLOCK_MONOTONIC time `ms` milliseconds from now (now when ms <= 0),
 * for pthread_cond_timedwait() on a condvar that uses CLOCK_MONOTONIC. */
static inline struct timespec vmq_deadline_ms(int ms) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (ms > 0) {
                ts.tv_sec += ms / 1000;
                ts.tv_nsec += (long)(ms % 1000) * 1000000L;
                if (ts.tv_nsec >= 1000000000L) {
                        ts.tv_sec++;
                        ts.tv_nsec -= 1000000000L;
                }
        }
        return ts;
}

#endif /* VMQ_UTIL_H */
