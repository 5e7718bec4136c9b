/* SPDX-License-Identifier: MIT */
/*
 * The C library functions gcc emits calls to (memcpy, memset, memmove,
 * memcmp) and a few string helpers, FNV-1a, a sort and UUID formatting.
 *
 * The copies use `rep movsb` / `rep stosb` (fast on any CPU with ERMS, and
 * safe from gcc turning a C loop back into a call to the very function being
 * defined).
 */
#include "guest/lib/internal.h"

void *memcpy(void *restrict dst, const void *restrict src, size_t n) {
        void *d = dst;

        __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
        return dst;
}

void *memmove(void *dst, const void *src, size_t n) {
        uintptr_t d = (uintptr_t)dst, s = (uintptr_t)src;

        if (d - s >= n) {
                /* no harmful overlap: forward copy */
                void *dp = dst;

                __asm__ volatile("rep movsb" : "+D"(dp), "+S"(src), "+c"(n) : : "memory");
        } else {
                /* dst overlaps the tail of src: copy backwards */
                void *dp = (uint8_t *)dst + n - 1;
                const void *sp = (const uint8_t *)src + n - 1;

                __asm__ volatile("std\n\trep movsb\n\tcld"
                                 : "+D"(dp), "+S"(sp), "+c"(n)
                                 :
                                 : "memory");
        }
        return dst;
}

void *memset(void *dst, int c, size_t n) {
        void *d = dst;

        __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
        return dst;
}

int memcmp(const void *a, const void *b, size_t n) {
        const uint8_t *x = a, *y = b;

        for (size_t i = 0; i < n; i++)
                if (x[i] != y[i])
                        return x[i] < y[i] ? -1 : 1;
        return 0;
}

size_t strlen(const char *s) {
        size_t n = 0;

        while (s[n])
                n++;
        return n;
}

size_t strnlen(const char *s, size_t max) {
        size_t n = 0;

        while (n < max && s[n])
                n++;
        return n;
}

int strcmp(const char *a, const char *b) {
        return strncmp(a, b, SIZE_MAX);
}

int strncmp(const char *a, const char *b, size_t n) {
        for (size_t i = 0; i < n; i++) {
                unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];

                if (x != y)
                        return x < y ? -1 : 1;
                if (!x)
                        return 0;
        }
        return 0;
}

uint64_t vmq_fnv1a(uint64_t h, const void *p, size_t n) {
        const uint8_t *b = p;

        for (size_t i = 0; i < n; i++) {
                h ^= b[i];
                h *= VMQ_FNV_PRIME;
        }
        return h;
}

static void sift_down(uint64_t *v, size_t root, size_t n) {
        for (;;) {
                size_t child = 2 * root + 1;
                uint64_t t;

                if (child >= n)
                        return;
                if (child + 1 < n && v[child + 1] > v[child])
                        child++;
                if (v[root] >= v[child])
                        return;
                t = v[root];
                v[root] = v[child];
                v[child] = t;
                root = child;
        }
}

void vmq_sort_u64(uint64_t *v, size_t n) {
        if (n < 2)
                return;
        for (size_t i = n / 2; i-- > 0;)
                sift_down(v, i, n);
        for (size_t end = n - 1; end > 0; end--) {
                uint64_t t = v[0];

                v[0] = v[end];
                v[end] = t;
                sift_down(v, 0, end);
        }
}

void vmq_format_uuid(char buf[37], const uint8_t uuid[16]) {
        static const char hex[] = "0123456789abcdef";
        size_t o = 0;

        for (unsigned i = 0; i < 16; i++) {
                if (i == 4 || i == 6 || i == 8 || i == 10)
                        buf[o++] = '-';
                buf[o++] = hex[uuid[i] >> 4];
                buf[o++] = hex[uuid[i] & 15];
        }
        buf[o] = '\0';
}
