/* SPDX-License-Identifier: MIT */
/*
 * The remap engine: frame pool and guest-physical address spaces.
 *
 * All guest memory comes from a frame pool: a memfd cut into 4 KiB frames
 * and, where the host has hugetlb pages, a hugetlb memfd cut into 2 MiB
 * frames.  A struct vmq_space is one VM's guest-physical address space: a set
 * of regions, each a host virtual range (given to KVM as a memslot) whose
 * pages are each either EMPTY (host range PROT_NONE: no frame), OWNED (a pool
 * frame mapped read/write, owned by this space at this address) or SHARED_IN
 * (another space's frame mapped read-only here).
 *
 * Moving a page between VMs is an mmap(MAP_FIXED) of a pool frame over the
 * region's host range; KVM's MMU notifier then drops the stale second-level
 * entry, and the guest faults the new frame in on its next access.
 *
 * Invariant (checked by vmq_pool_check): every frame is either free, or owned
 * by exactly one (space, address); shared-in mappings reference an owned
 * frame and are counted on it.  Frames are zeroed before they are handed out
 * again, so no data crosses VMs through recycling.  By default the call that
 * frees a frame zeroes it (release, space teardown), so that allocation, and
 * thus flip, hands out zeroed frames at no cost.  With scrub_thread, 2 MiB
 * frames are zeroed by a pool thread instead (started by vmq_pool_new,
 * joined by vmq_pool_free): release then costs no 2 MiB memset, but waking
 * the thread costs a cross-CPU wake-up, which on a nested host is dearer
 * than the memset.  A freed-but-not-yet-zeroed frame counts as free; an
 * allocation that needs it zeroes it itself or waits for the scrubber.
 *
 * All operations on spaces of one pool are serialised by the pool's lock and
 * are all-or-nothing: on error nothing has changed.
 *
 * Errors: -EINVAL (bad argument: zero count, misaligned address, kind
 * mismatch, spaces of different pools), -ERANGE (address run not inside one
 * region), -EPERM (source page
 * not OWNED by the source space), -EBUSY (source frame is shared out, or a
 * destination slot is not EMPTY), -ENOMEM (pool has no free frame),
 * -EOPNOTSUPP (hugetlb frames requested but the pool has none); -ENOMEM
 * also when the change could take the space or the pool past its mapping
 * budget (see vmq_pool_config).
 */
#ifndef VMQ_REMAP_H
#define VMQ_REMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum vmq_frame_kind {
        VMQ_FRAME_4K,
        VMQ_FRAME_2M,
        VMQ_FRAME_KIND_MAX,
};

enum vmq_page_state {
        VMQ_PAGE_EMPTY,
        VMQ_PAGE_OWNED,
        VMQ_PAGE_SHARED_IN,
        VMQ_PAGE_STATE_MAX,
};

struct vmq_pool;
struct vmq_space;

struct vmq_pool_config {
        size_t frames_4k;      /* number of 4 KiB frames (memfd, sparse) */
        size_t frames_2m;      /* number of 2 MiB hugetlb frames; 0 for none */
        bool require_huge;     /* fail with -ENOMEM instead of running without
                            * hugetlb frames when they cannot be had */
        bool scrub_thread;     /* zero freed 2 MiB frames in a background thread
                            * instead of in the freeing call */
        size_t max_maps;       /* host mappings all spaces may hold together
                                * (0: half of vm.max_map_count) */
        size_t max_maps_space; /* host mappings one space may hold
                                * (0: VMQ_MAPS_PER_SPACE) */
};

/* Default mapping budget of one space, and vm.max_map_count's default. */
#define VMQ_MAPS_PER_SPACE 4096u
#define VMQ_DEFAULT_MAX_MAP_COUNT 65530u

/* Creates a pool.  Without require_huge, a host with too few hugetlb pages
 * yields a pool with no 2 MiB frames (vmq_pool_has_huge() is false).  The
 * huge frames are reserved and faulted in here (MAP_POPULATE of the whole
 * hugetlb memfd), so they can never SIGBUS later.  -EINVAL when both counts
 * are 0 or a count exceeds 2^32 - 1 frames. */
int vmq_pool_new(const struct vmq_pool_config *cfg, struct vmq_pool **ret);
/* Frees a pool; every space must have been freed first.  Accepts NULL;
 * returns NULL. */
struct vmq_pool *vmq_pool_free(struct vmq_pool *p);

bool vmq_pool_has_huge(const struct vmq_pool *p);
size_t vmq_pool_frames_total(const struct vmq_pool *p, enum vmq_frame_kind kind);
/* Frames not owned by any space (including freed frames not yet zeroed). */
size_t vmq_pool_frames_free(const struct vmq_pool *p, enum vmq_frame_kind kind);
size_t vmq_frame_size(enum vmq_frame_kind kind);

/* Waits until the scrubber has zeroed every freed frame (benchmarks settle
 * with it; nothing needs it for correctness). */
void vmq_pool_scrub_wait(struct vmq_pool *p);

/* Verifies the ownership invariant over the whole pool and every space in
 * it.  Returns 0, or -EUCLEAN when it is broken. */
int vmq_pool_check(struct vmq_pool *p);

int vmq_space_new(struct vmq_pool *pool, struct vmq_space **ret);
/* Unmaps the space's regions and returns its frames to the pool, except the
 * frames it shares out: those become orphans, still mapped read-only where
 * they are shared in, and go back to the pool when the last of those pages
 * is released (so no other VM ever faults because this one went away).
 * Shares into the space are dropped.  Accepts NULL; returns NULL. */
struct vmq_space *vmq_space_free(struct vmq_space *s);

/* A run of SHARED_IN pages in another space that maps frames of a space. */
struct vmq_share_run {
        struct vmq_space *space; /* where the pages are shared in */
        uint64_t gpa;            /* first page there */
        uint64_t len;            /* bytes */
};
/* Lists the runs of pages that other spaces have shared in from `owner`
 * (to tell their VMs when owner goes away).  *ret is malloc()ed (NULL when
 * there is none), the caller frees it. */
int vmq_space_shares_out(struct vmq_space *owner, struct vmq_share_run **ret, size_t *ret_n);

/* True once a rollback of one of the space's mappings failed (the kernel
 * refused even the mmap that puts the old mapping back).  The host mapping
 * may then differ from the bookkeeping: the space's VM must not run again.
 * The frames involved are withheld from the pool for good, so no other VM
 * can be given a frame this space may still reach.  Unreachable unless the
 * host itself runs out of mappings: the budgets below keep guests from
 * causing it. */
bool vmq_space_broken(struct vmq_space *s);

/* mmap calls the pool has made (to tell how many remaps an operation
 * took). */
uint64_t vmq_pool_mmap_calls(struct vmq_pool *p);

/* Host mappings (VMAs) the space holds, as the budget counts them. */
size_t vmq_space_maps(struct vmq_space *s);

/* Fault injection for tests: the `after`-th mmap the pool makes from now
 * on, and the count - 1 after it, fail with ENOMEM (count 0: none).  The
 * only way to test rollback without lowering vm.max_map_count for every
 * process of the host. */
void vmq_pool_fail_mmap(struct vmq_pool *p, unsigned after, unsigned count);

#define VMQ_REGION_POPULATE                                                                        \
        0x1u /* every page starts OWNED, with a zeroed
                                  * frame; otherwise every page starts EMPTY */

/*
 * Adds a region [gpa, gpa + size) of frames of one kind.  gpa and size must be
 * multiples of the frame size (-EINVAL) and must not overlap another region
 * (-EEXIST).  2 MiB regions need a pool with huge frames (-EOPNOTSUPP).  With
 * VMQ_REGION_POPULATE, -ENOMEM when the pool has too few free frames (then no
 * region is added).  Populated frames are taken as one contiguous run where
 * the pool has one, so the region is one host mapping (one VMA).  The host
 * mapping stays at the same address for the life of the space (2 MiB aligned
 * for huge regions); *ret_hva gets it (for KVM_SET_USER_MEMORY_REGION).
 */
int vmq_space_add_region(struct vmq_space *s, uint64_t gpa, uint64_t size, enum vmq_frame_kind kind,
                         unsigned flags, void **ret_hva);

/* Region enumeration, in the order they were added; -ERANGE past the end.
 * Every ret_* may be NULL. */
size_t vmq_space_region_count(const struct vmq_space *s);
int vmq_space_region(const struct vmq_space *s, size_t index, uint64_t *ret_gpa, uint64_t *ret_size,
                     enum vmq_frame_kind *ret_kind, void **ret_hva);

/*
 * The checked door for reading guest memory: copies len bytes at gpa into
 * buf under the pool lock, so the pages cannot change meanwhile.  The range
 * must lie in one region, and every page in it must be OWNED, or, unless
 * `owned`, SHARED_IN.  -ERANGE (not inside one region), -EPERM (a page is
 * EMPTY, or SHARED_IN when owned is set), -EINVAL.
 */
int vmq_space_read(struct vmq_space *s, uint64_t gpa, void *buf, uint64_t len, bool owned);

/*
 * Host pointer for [gpa, gpa + len) if the whole range
 * lies in one region and every page in it is OWNED (or, when !write, OWNED
 * or SHARED_IN).  NULL otherwise.  len may be 0 (then gpa must still be
 * inside a region).  The pointer stays valid only until the pages change,
 * which another thread may do at any time once the VM runs: use it only for
 * pages the guest cannot move (its VMCS, the system area, loading the image
 * before the VM starts); read anything else with vmq_space_read().
 */
void *vmq_space_translate(struct vmq_space *s, uint64_t gpa, uint64_t len, bool write);

/* State of the page containing gpa; -ERANGE outside every region. */
int vmq_space_page_state(struct vmq_space *s, uint64_t gpa, enum vmq_page_state *ret_state,
                         enum vmq_frame_kind *ret_kind);

/* Finds `count` consecutive EMPTY pages in the region that contains
 * region_gpa (any address in it; -ERANGE if none) (first fit, starting after
 * the last place found).  -ENOSPC when there is no such run.  It reserves
 * nothing: the caller fills the run under its own serialisation. */
int vmq_space_find_empty(struct vmq_space *s, uint64_t region_gpa, size_t count, uint64_t *ret_gpa);

/*
 * flip: moves the frames of `count` OWNED pages at src_gpa to the EMPTY
 * pages at dst_gpa (both runs in regions of the same frame kind); the source
 * pages get fresh zeroed frames and stay OWNED.
 */
int vmq_remap_flip(struct vmq_space *src, uint64_t src_gpa, struct vmq_space *dst, uint64_t dst_gpa,
                   size_t count);

/*
 * share: maps the frames of `count` OWNED pages at src_gpa read-only at the
 * EMPTY pages dst_gpa (SHARED_IN).  While shared, the source frames cannot be
 * flipped or released (-EBUSY).  vmq_remap_release() on the destination
 * revokes the share.
 */
int vmq_remap_share(struct vmq_space *src, uint64_t src_gpa, struct vmq_space *dst,
                    uint64_t dst_gpa, size_t count);

/*
 * copy: gives the EMPTY destination pages covering len bytes at dst_gpa
 * fresh zeroed frames and copies len bytes from src_gpa (OWNED pages of
 * src: a read-only share is not the space's to pass on, -EPERM) into them.  dst_gpa must be frame aligned; src_gpa need not be.  The
 * two regions may be of different kinds.  The copy is made under the pool
 * lock: meant for small messages.
 */
int vmq_remap_copy(struct vmq_space *src, uint64_t src_gpa, struct vmq_space *dst, uint64_t dst_gpa,
                   uint64_t len);

/*
 * copy_in: like copy, from a host buffer (the host end of a channel).
 */
int vmq_remap_copy_in(struct vmq_space *dst, uint64_t dst_gpa, const void *data, uint64_t len);

/*
 * copy_batch: copies several messages (pieces) at once into the EMPTY pages
 * from dst_gpa on, each piece starting on a frame of its own, in order, and
 * maps them into dst together: one mmap when the frames it takes are
 * consecutive, where a copy per piece makes one each.  A piece is `len`
 * bytes at src_gpa of `src` (checked as for copy), or, with src NULL, at
 * the host buffer `data` (as for copy_in).  All or nothing: the first
 * failing check's error, and nothing changed.  n is 1 to
 * VMQ_COPY_BATCH_MAX.
 */
#define VMQ_COPY_BATCH_MAX 64u
struct vmq_copy_piece {
        struct vmq_space *src; /* NULL: data */
        uint64_t src_gpa;
        const void *data;
        uint64_t len;
};
int vmq_remap_copy_batch(struct vmq_space *dst, uint64_t dst_gpa,
                         const struct vmq_copy_piece *pieces, size_t n);

/*
 * release: makes `count` pages at gpa EMPTY: OWNED frames go back to the pool
 * (zeroed before reuse), SHARED_IN mappings are revoked.  EMPTY pages in the
 * run are an error (-EPERM) and nothing changes; so is an OWNED frame that is
 * shared out (-EBUSY; -EPERM wins when both apply).
 */
int vmq_remap_release(struct vmq_space *s, uint64_t gpa, size_t count);

#endif /* VMQ_REMAP_H */
