/* SPDX-License-Identifier: MIT */
/*
 * A guest's memory as a vhost-user frontend (QEMU) describes it in its
 * memory table: up to VMQ_GMEM_MAX_REGIONS regions, each with its
 * guest-physical address, its size, the address the frontend itself maps it
 * at (vring addresses come in that space) and the address it is mapped at
 * here.  Mapping and unmapping the frontend's fds is the caller's business;
 * this is only the table and the one door through which every guest address
 * is turned into a host pointer.
 *
 * Every address and length that comes from the guest is hostile: the door
 * gives a pointer only for a range that lies inside the table, checked
 * without overflow, and a range that crosses from one region into the next
 * (regions may sit back to back) comes back in pieces.
 */
#ifndef VMQ_VHOST_GMEM_H
#define VMQ_VHOST_GMEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VMQ_GMEM_MAX_REGIONS 8u

struct vmq_gmem_region {
        uint64_t gpa;   /* guest-physical address of its first byte */
        uint64_t size;  /* bytes, > 0 */
        uint64_t uaddr; /* where the frontend maps it */
        uint8_t *hva;   /* where it is mapped here */
};

struct vmq_gmem {
        struct vmq_gmem_region r[VMQ_GMEM_MAX_REGIONS];
        unsigned n;
};

/* A piece of guest memory, mapped here. */
struct vmq_iov {
        uint8_t *base;
        uint32_t len;
};

/* Empties the table. */
void vmq_gmem_init(struct vmq_gmem *m);

/*
 * Adds a region.  -EINVAL for a size of 0, a range that wraps around the
 * 64-bit space (in guest-physical or frontend addresses) or overlaps a
 * region already there (in either); -E2BIG when the table is full.
 */
int vmq_gmem_add(struct vmq_gmem *m, uint64_t gpa, uint64_t size, uint64_t uaddr, void *hva);

/*
 * The door for guest-physical ranges: appends [gpa, gpa + len) to iov as
 * host pieces, one per region it crosses, after the *n already there (at
 * most max in all).  len 0 appends nothing.  Returns 0; -EFAULT when part
 * of the range is outside every region (or wraps); -E2BIG when the pieces
 * would not fit.  On failure *n and iov are as they were.
 */
int vmq_gmem_map(const struct vmq_gmem *m, uint64_t gpa, uint64_t len, struct vmq_iov *iov,
                 unsigned max, unsigned *n);

/* A host pointer to [uaddr, uaddr + len) of the frontend's address space,
 * when the range lies inside one region; NULL otherwise (len 0 too).  For
 * the rings, whose addresses the frontend gives in its own space. */
void *vmq_gmem_uaddr(const struct vmq_gmem *m, uint64_t uaddr, uint64_t len);

/* Copies len bytes from the pieces src (skipping its first `skip` bytes)
 * into buf; returns how many it could (fewer when src runs out). */
size_t vmq_iov_to_buf(const struct vmq_iov *src, unsigned n, size_t skip, void *buf, size_t len);

/* Copies len bytes from buf into the pieces dst, from byte `skip` of them;
 * returns how many fitted. */
size_t vmq_iov_from_buf(const struct vmq_iov *dst, unsigned n, size_t skip, const void *buf,
                        size_t len);

/* Copies len bytes from src (from its byte src_skip) into dst (from its
 * byte dst_skip), piece by piece, with no buffer between; returns how many
 * it could (fewer when either runs out). */
size_t vmq_iov_copy(const struct vmq_iov *dst, unsigned ndst, size_t dst_skip,
                    const struct vmq_iov *src, unsigned nsrc, size_t src_skip, size_t len);

/* Total bytes of the pieces. */
uint64_t vmq_iov_size(const struct vmq_iov *iov, unsigned n);

#endif /* VMQ_VHOST_GMEM_H */
