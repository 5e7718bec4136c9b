/* SPDX-License-Identifier: MIT */
/*
 * Page allocators: 4 KiB pages from the heap, 2 MiB frames from the own huge
 * region.  Both are first-fit bitmaps.  The heap's bitmap sits in the first
 * pages of the heap itself, so its size follows the RAM size; the huge
 * region's (at most 1 GiB, 512 frames) is static.
 */
#include "guest/lib/internal.h"

/* First byte after the image, from guest/guest.ld. */
extern char __image_end[];

#define HUGE_FRAMES_MAX ((VMQ_HUGE_RX_GPA - VMQ_HUGE_GPA) / VMQ_HUGE_PAGE_SIZE)

static struct vmq_pool heap, huge;
static uint64_t huge_bits[(HUGE_FRAMES_MAX + 63) / 64];

static bool bit_get(const uint64_t *bits, size_t i) {
        return bits[i / 64] >> (i % 64) & 1;
}

static void bits_set(uint64_t *bits, size_t i, size_t count, bool v) {
        for (; count; i++, count--) {
                if (v)
                        bits[i / 64] |= 1ull << (i % 64);
                else
                        bits[i / 64] &= ~(1ull << (i % 64));
        }
}

void vmq__pool_init(struct vmq_pool *p, uint64_t base, uint64_t frame, size_t n, uint64_t *bits) {
        p->base = base;
        p->frame = frame;
        p->n = n;
        p->nfree = n;
        p->hint = 0;
        p->bits = bits;
        memset(bits, 0, (n + 63) / 64 * sizeof(uint64_t));
}

/* Looks for count free frames in [from, to); returns the first index or
 * SIZE_MAX. */
static size_t pool_search(const struct vmq_pool *p, size_t from, size_t to, size_t count) {
        size_t run = 0;

        for (size_t i = from; i < to; i++) {
                /* skip whole used words quickly */
                if (run == 0 && i % 64 == 0 && i + 64 <= to && p->bits[i / 64] == UINT64_MAX) {
                        i += 63;
                        continue;
                }
                if (bit_get(p->bits, i)) {
                        run = 0;
                        continue;
                }
                if (++run == count)
                        return i + 1 - count;
        }
        return SIZE_MAX;
}

uint64_t vmq__pool_alloc(struct vmq_pool *p, size_t count) {
        size_t i;

        if (count == 0 || count > p->nfree)
                return 0;
        i = pool_search(p, p->hint, p->n, count);
        if (i == SIZE_MAX)
                i = pool_search(p, 0, p->n, count);
        if (i == SIZE_MAX)
                return 0;
        bits_set(p->bits, i, count, true);
        p->nfree -= count;
        p->hint = i + count < p->n ? i + count : 0;
        return p->base + i * p->frame;
}

void vmq__pool_free(struct vmq_pool *p, uint64_t addr, size_t count) {
        size_t i;

        if (addr < p->base || (addr - p->base) % p->frame)
                return;
        i = (addr - p->base) / p->frame;
        if (i >= p->n || count > p->n - i)
                return;
        for (size_t k = i; k < i + count; k++)
                if (bit_get(p->bits, k))
                        p->nfree++;
        bits_set(p->bits, i, count, false);
}

void vmq__mem_init(void) {
        const struct vmq_vmcs_layout *l = &vmq__vmcs->layout;
        uint64_t start = l->image_end, end, vcpus = l->vcpus, total, map_pages;

        if (start < (uint64_t)(uintptr_t)__image_end)
                start = (uint64_t)(uintptr_t)__image_end;
        start = (start + VMQ_PAGE_SIZE - 1) & ~(uint64_t)(VMQ_PAGE_SIZE - 1);
        if (vcpus < 1)
                vcpus = 1;
        if (vcpus > VMQ_MAX_VCPUS)
                vcpus = VMQ_MAX_VCPUS;
        end = l->ram_size > VMQ_RX_GPA ? VMQ_RX_GPA : l->ram_size;
        end = end > vcpus * VMQ_STACK_SIZE ? end - vcpus * VMQ_STACK_SIZE : 0;
        end &= ~(uint64_t)(VMQ_PAGE_SIZE - 1);
        total = end > start ? (end - start) / VMQ_PAGE_SIZE : 0;
        /* bitmap pages first: each holds 32768 bits */
        map_pages = (total + 8 * VMQ_PAGE_SIZE) / (8 * VMQ_PAGE_SIZE + 1);
        if (total <= map_pages) {
                vmq__pool_init(&heap, start, VMQ_PAGE_SIZE, 0, huge_bits);
        } else {
                vmq__pool_init(&heap, start + map_pages * VMQ_PAGE_SIZE, VMQ_PAGE_SIZE,
                               total - map_pages, (uint64_t *)(uintptr_t)start);
        }

        total = 0;
        if (l->huge_size && l->huge_gpa % VMQ_HUGE_PAGE_SIZE == 0 && l->huge_gpa >= VMQ_HUGE_GPA &&
            l->huge_gpa < VMQ_HUGE_RX_GPA) {
                total = l->huge_size / VMQ_HUGE_PAGE_SIZE;
                if (total > (VMQ_HUGE_RX_GPA - l->huge_gpa) / VMQ_HUGE_PAGE_SIZE)
                        total = (VMQ_HUGE_RX_GPA - l->huge_gpa) / VMQ_HUGE_PAGE_SIZE;
        }
        vmq__pool_init(&huge, l->huge_gpa, VMQ_HUGE_PAGE_SIZE, total, huge_bits);
}

void *vmq_alloc_pages(size_t n) {
        return (void *)(uintptr_t)vmq__pool_alloc(&heap, n);
}

void vmq_free_pages(void *pages, size_t n) {
        vmq__pool_free(&heap, (uint64_t)(uintptr_t)pages, n);
}

size_t vmq_heap_free_pages(void) {
        return heap.nfree;
}

void *vmq_alloc_huge(size_t n) {
        return (void *)(uintptr_t)vmq__pool_alloc(&huge, n);
}

void vmq_free_huge(void *frames, size_t n) {
        vmq__pool_free(&huge, (uint64_t)(uintptr_t)frames, n);
}

size_t vmq_huge_free_frames(void) {
        return huge.nfree;
}

void *vmq_alloc_buffer(size_t bytes, bool *ret_huge) {
        void *p = NULL;
        bool is_huge = false;

        if (bytes == 0)
                return NULL;
        if (bytes >= VMQ_AUTO_HUGE_MIN) {
                p = vmq_alloc_huge((bytes + VMQ_HUGE_PAGE_SIZE - 1) / VMQ_HUGE_PAGE_SIZE);
                is_huge = p != NULL;
        }
        if (!p)
                p = vmq_alloc_pages((bytes + VMQ_PAGE_SIZE - 1) / VMQ_PAGE_SIZE);
        if (p && ret_huge)
                *ret_huge = is_huge;
        return p;
}
