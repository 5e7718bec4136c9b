/* SPDX-License-Identifier: MIT */
/* The guest memory table and its door: see gmem.h. */
#include <errno.h>
#include <string.h>

#include "core/util.h"
#include "vhost/gmem.h"

void vmq_gmem_init(struct vmq_gmem *m) {
        memset(m, 0, sizeof(*m));
}

/* Do [a, a + alen) and [b, b + blen) share a byte?  Neither wraps. */
static bool overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
        return a < b + blen && b < a + alen;
}

int vmq_gmem_add(struct vmq_gmem *m, uint64_t gpa, uint64_t size, uint64_t uaddr, void *hva) {
        if (size == 0 || !hva || gpa > UINT64_MAX - size || uaddr > UINT64_MAX - size)
                return -EINVAL;
        for (unsigned i = 0; i < m->n; i++)
                if (overlap(gpa, size, m->r[i].gpa, m->r[i].size) ||
                    overlap(uaddr, size, m->r[i].uaddr, m->r[i].size))
                        return -EINVAL;
        if (m->n == VMQ_GMEM_MAX_REGIONS)
                return -E2BIG;
        m->r[m->n++] =
                (struct vmq_gmem_region){.gpa = gpa, .size = size, .uaddr = uaddr, .hva = hva};
        return 0;
}

static const struct vmq_gmem_region *region_of(const struct vmq_gmem *m, uint64_t gpa) {
        for (unsigned i = 0; i < m->n; i++)
                if (gpa - m->r[i].gpa < m->r[i].size)
                        return &m->r[i];
        return NULL;
}

int vmq_gmem_map(const struct vmq_gmem *m, uint64_t gpa, uint64_t len, struct vmq_iov *iov,
                 unsigned max, unsigned *n) {
        unsigned k = *n;
        if (len > 0 && gpa > UINT64_MAX - len)
                return -EFAULT;
        while (len > 0) {
                const struct vmq_gmem_region *r = region_of(m, gpa);
                if (!r)
                        return -EFAULT;
                if (k >= max)
                        return -E2BIG;
                uint64_t off = gpa - r->gpa;
                /* a piece's length is 32-bit: a longer range takes more */
                uint64_t piece = VMQ_MIN(VMQ_MIN(len, r->size - off), (uint64_t)UINT32_MAX);
                iov[k].base = r->hva + off;
                iov[k].len = (uint32_t)piece;
                k++;
                gpa += piece;
                len -= piece;
        }
        *n = k;
        return 0;
}

void *vmq_gmem_uaddr(const struct vmq_gmem *m, uint64_t uaddr, uint64_t len) {
        if (len == 0)
                return NULL;
        for (unsigned i = 0; i < m->n; i++) {
                const struct vmq_gmem_region *r = &m->r[i];
                uint64_t off = uaddr - r->uaddr;
                if (off < r->size && len <= r->size - off)
                        return r->hva + off;
        }
        return NULL;
}

/* Moves to the piece that holds byte *skip of iov[*i..n); false past the
 * end. */
static bool iov_seek(const struct vmq_iov *iov, unsigned n, unsigned *i, size_t *skip) {
        while (*i < n && *skip >= iov[*i].len) {
                *skip -= iov[*i].len;
                (*i)++;
        }
        return *i < n;
}

size_t vmq_iov_copy(const struct vmq_iov *dst, unsigned ndst, size_t dst_skip,
                    const struct vmq_iov *src, unsigned nsrc, size_t src_skip, size_t len) {
        unsigned di = 0, si = 0;
        size_t done = 0;
        while (done < len && iov_seek(dst, ndst, &di, &dst_skip) &&
               iov_seek(src, nsrc, &si, &src_skip)) {
                size_t k = VMQ_MIN(
                        VMQ_MIN((size_t)dst[di].len - dst_skip, (size_t)src[si].len - src_skip),
                        len - done);
                memmove(dst[di].base + dst_skip, src[si].base + src_skip, k);
                done += k;
                dst_skip += k;
                src_skip += k;
        }
        return done;
}

/* The buffer as one piece: a piece is at most 4 GiB, and so is what these
 * two copy at once (no caller comes near). */
size_t vmq_iov_to_buf(const struct vmq_iov *src, unsigned n, size_t skip, void *buf, size_t len) {
        struct vmq_iov b = {buf, (uint32_t)VMQ_MIN(len, (size_t)UINT32_MAX)};
        return vmq_iov_copy(&b, 1, 0, src, n, skip, b.len);
}

size_t vmq_iov_from_buf(const struct vmq_iov *dst, unsigned n, size_t skip, const void *buf,
                        size_t len) {
        struct vmq_iov b = {(uint8_t *)(uintptr_t)buf, (uint32_t)VMQ_MIN(len, (size_t)UINT32_MAX)};
        return vmq_iov_copy(dst, n, skip, &b, 1, 0, b.len);
}

uint64_t vmq_iov_size(const struct vmq_iov *iov, unsigned n) {
        uint64_t s = 0;
        for (unsigned i = 0; i < n; i++)
                s += iov[i].len;
        return s;
}
