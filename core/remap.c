/* SPDX-License-Identifier: MIT */
/*
 * The remap engine: frame pool, guest-physical address spaces, and the page
 * moves between them (flip, share, copy, release).
 *
 * How it works
 * ------------
 * A pool is one memfd per frame kind: a sparse shmem memfd cut into 4 KiB
 * frames and, when the host has them, a hugetlb memfd cut into 2 MiB frames.
 * The pool keeps its own MAP_SHARED mapping of each memfd, through which it
 * zeroes and fills frames without touching any guest mapping.  The hugetlb
 * mapping is made with MAP_POPULATE at creation: mmap(MAP_SHARED) of a
 * hugetlb file reserves every huge page of the range or fails with ENOMEM, so
 * a pool that exists can never SIGBUS on a missing huge page later.
 *
 * A space is a list of regions.  Each region reserves a host virtual range
 * once (PROT_NONE, MAP_NORESERVE; 2 MiB aligned for huge regions) that stays
 * put for the life of the space, because it is what KVM's memslot points at.
 * Each page of the range is in one of three states, recorded in a per-page
 * state array together with the frame index:
 *
 *   EMPTY      anonymous PROT_NONE mapping: no frame, any access faults;
 *   OWNED      mmap(MAP_SHARED|MAP_FIXED) of the frame, read/write;
 *   SHARED_IN  the same, read-only, of a frame another page OWNS.
 *
 * Every state change is an mmap(MAP_FIXED) over the page's host range; the
 * kernel's MMU notifier tells KVM to drop the stale second-level entry, and
 * the guest faults the new frame in on its next access.  Runs of pages whose
 * frames are consecutive in the memfd are changed with a single mmap, which
 * the kernel then keeps (or merges back) as a single VMA: this matters,
 * because vm.max_map_count (65530 by default) bounds the VMAs of the whole
 * process, every VM included.  That is also why the frame allocator is a
 * bitmap searched first-fit for a contiguous run before it falls back to
 * scattered frames.
 *
 * Ownership is recorded twice, on purpose: the page knows its frame, and the
 * frame knows its (owner space, gpa) and how many SHARED_IN pages map it.
 * vmq_pool_check() verifies that the two views agree.
 *
 * Revocation.  When a space that shares frames out goes away, the pages that
 * map them elsewhere are left alone: unmapping them would make the receiving
 * guest fault on its next read, and crash, for what another VM did.  The
 * frames become orphans instead (no owner, held by their shares) and go back
 * to the pool when the last SHARED_IN page of each is released or its space
 * freed.  The receiver keeps a read-only private copy, at no cost; the
 * monitor tells it through its queue (vmq_space_shares_out()).
 *
 * Zeroing: a frame is zeroed when it goes back to the pool, not when it is
 * handed out.  A flip must give the sender a fresh zeroed frame at once, and
 * zeroing 2 MiB costs about as much as copying 2 MiB: doing it at allocation
 * would throw away the whole point of flipping huge frames.  Zeroing on
 * return moves that cost to vmq_remap_release() and vmq_space_free(), off
 * the send path; optionally (scrub_thread) further, to a pool thread, which
 * pays off where cross-CPU wake-ups are cheap (bare metal), not on a nested
 * host where a wake-up costs more than the 2 MiB memset it saves.  4 KiB runs of 16 frames or more are zeroed by punching a
 * hole in the memfd instead (cost proportional to the resident pages only,
 * and the memory goes back to the host: a VM that never touched most of its
 * RAM does not get it written at teardown).  Huge frames are never punched:
 * that would drop their hugetlb reservation.
 *
 * All-or-nothing: every operation validates the whole request and allocates
 * the frames it needs before it changes any mapping; if an mmap still fails
 * (ENOMEM: too many VMAs), the pages already changed are mapped back from
 * the unchanged state arrays before the error is returned.
 *
 * Mapping budget.  Every host mapping counts against vm.max_map_count, one
 * limit for the whole process.  Each region counts its run breaks (adjacent
 * pages that cannot share a mapping: different states, or frames that are
 * not consecutive); a change that could take a space past its budget, or all
 * spaces past the pool's (half of vm.max_map_count by default), is refused
 * with -ENOMEM before anything changes.  So no guest can make the kernel
 * refuse a mapping.
 *
 * Rollback.  If the kernel refuses even the mmap that puts an old mapping
 * back (the host itself out of mappings, which the budget keeps guests from
 * causing), the mapping no longer matches the bookkeeping.  Nothing aborts:
 * the space is marked broken (its VM must not run again, see
 * vmq_space_broken()) and every frame that was in play is marked lost and
 * never handed out again, so no VM can be given a frame another may reach.
 *
 * Locking: one mutex per pool guards the pool and all its spaces.  Every
 * entry point takes it.  It is the innermost lock of the monitor (see
 * core/vm.h): nothing is called with it held that takes another.  Guest
 * memory is read under it (vmq_space_read(), copies), because any vCPU of a
 * guest, or the monitor's doorbell thread, may release or flip the pages at
 * any moment.  Pointers from vmq_space_translate() stay valid only until the
 * pages change, and are only for pages that cannot change.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/falloc.h>
#include <linux/memfd.h>

#include "core/remap.h"
#include "core/util.h"

#define FRAME_NONE UINT32_MAX
/* Freed runs of 4 KiB frames shorter than this are zeroed with memset and
 * stay resident; longer ones are punched out of the memfd, their memory
 * back to the host.  A punched frame faults in again, page by page, when a
 * copy next writes it: with runs of 16 punched, a 64-page copy took 556 us
 * on these machines, with 512, 22 us.  The cost is that up to the pool's
 * peak use stays resident (frames are handed out lowest first, so the same
 * ones come back). */
#define PUNCH_MIN_FRAMES 512u
#define HUGE_SIZE (2u * 1024u * 1024u)
#define SMALL_SIZE 4096u

struct frame {
        struct vmq_space *owner; /* NULL: free, or orphaned (shares > 0) */
        uint64_t gpa;            /* the owner's address of this frame */
        uint32_t shares;         /* SHARED_IN pages mapping this frame */
        bool lost;               /* a failed rollback may have left it mapped
                                  * somewhere: never handed out again */
};

struct frame_set {
        int fd;
        uint8_t *base; /* the pool's own MAP_SHARED mapping of fd */
        size_t size;   /* frame size */
        size_t total;
        size_t nfree;    /* allocatable: clean + ndirty + nscrub */
        size_t ndirty;   /* free, waiting for the scrubber */
        size_t nscrub;   /* free, being zeroed by the scrubber right now */
        size_t nlost;    /* withheld for good after a failed rollback */
        bool deferred;   /* zeroing is the scrubber's job */
        size_t hint;     /* no clean free frame below this index */
        uint64_t *used;  /* bitmap, 1 = not clean-free (owned, dirty, scrubbing) */
        uint64_t *dirty; /* bitmap, 1 = dirty (deferred sets only) */
        struct frame *frames;
};

struct vmq_pool {
        pthread_mutex_t lock;
        struct frame_set sets[VMQ_FRAME_KIND_MAX];
        struct vmq_space *spaces; /* doubly linked, for check and revocation */
        size_t nspaces;
        /* the scrubber: zeroes released huge frames off the callers' path */
        pthread_t scrubber;
        bool scrubber_running;
        bool scrubber_stop;
        pthread_cond_t scrub_work; /* a frame became dirty, or stop */
        pthread_cond_t scrub_done; /* a frame became clean */
        /* Host mappings (VMAs) of all spaces, and their budgets. */
        size_t nmaps, max_maps, max_maps_space;
        unsigned fail_after, fail_count; /* fault injection: vmq_pool_fail_mmap() */
        uint64_t mmap_calls;             /* vmq_pool_mmap_calls() */
};

struct region {
        uint64_t gpa;
        uint64_t size;
        enum vmq_frame_kind kind;
        uint8_t *hva;
        size_t npages;
        size_t nshared_in; /* SHARED_IN pages */
        size_t nbreaks;    /* host mappings of the region, minus one */
        size_t find_hint;
        uint8_t *state;  /* enum vmq_page_state per page */
        uint32_t *frame; /* frame index per page, FRAME_NONE when EMPTY */
};

struct vmq_space {
        struct vmq_pool *pool;
        struct vmq_space *prev, *next;
        struct region *regions;
        size_t nregions;
        size_t shared_out; /* sum of shares over the frames this space owns */
        size_t nmaps;      /* host mappings of all its regions */
        bool broken;       /* a rollback failed: see vmq_space_broken() */
};

size_t vmq_frame_size(enum vmq_frame_kind kind) {
        return kind == VMQ_FRAME_2M ? HUGE_SIZE : SMALL_SIZE;
}

static void pool_lock(const struct vmq_pool *p) {
        /* The lock is state, not value: const accessors lock it too. */
        int r = pthread_mutex_lock((pthread_mutex_t *)&p->lock);
        assert(r == 0);
        (void)r;
}

static void pool_unlock(const struct vmq_pool *p) {
        int r = pthread_mutex_unlock((pthread_mutex_t *)&p->lock);
        assert(r == 0);
        (void)r;
}

/* ---- frame bitmap ---------------------------------------------------- */

static bool bm_test(const uint64_t *bm, size_t i) {
        return (bm[i / 64] >> (i % 64)) & 1;
}

static void bm_put(uint64_t *bm, size_t i, bool v) {
        if (v)
                bm[i / 64] |= 1ull << (i % 64);
        else
                bm[i / 64] &= ~(1ull << (i % 64));
}

/* First index >= from whose bit is `v`, or total. */
static size_t bm_find(const uint64_t *bm, size_t total, size_t from, bool v) {
        while (from < total) {
                uint64_t w = bm[from / 64];
                if (!v)
                        w = ~w;
                w &= ~0ull << (from % 64);
                if (w) {
                        size_t i = (from & ~(size_t)63) + (size_t)__builtin_ctzll(w);
                        return i < total ? i : total;
                }
                from = (from | 63) + 1;
        }
        return total;
}

static void zero_frames(struct frame_set *fs, size_t first, size_t n) {
        if (fs->size == SMALL_SIZE && n >= PUNCH_MIN_FRAMES &&
            fallocate(fs->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)(first * fs->size),
                      (off_t)(n * fs->size)) == 0)
                return;
        /* Shorter runs: a memset of resident pages is cheaper than faulting
         * them in again.  Huge frames: a hole would drop the hugetlb
         * reservation. */
        memset(fs->base + first * fs->size, 0, n * fs->size);
}

static void mark_clean(struct frame_set *fs, size_t f) {
        bm_put(fs->used, f, false);
        if (f < fs->hint)
                fs->hint = f;
}

/*
 * Takes n frames: the first contiguous clean run that fits, else the first n
 * clean frames.  Only marks them allocated; the caller fills in the owner once
 * the operation commits, or gives them back with frames_put().
 *
 * When too few frames are clean, dirty ones are zeroed here, synchronously,
 * unless `overwrite`: the caller is about to write every byte of every frame
 * (copy), so zeroing first would only double the cost.  When even that is
 * not enough but the scrubber is zeroing some right now, waits for it and
 * returns -EAGAIN: the lock was dropped, so the caller must validate its
 * request again (nothing has changed yet).
 */
static int frames_take(struct vmq_pool *p, struct frame_set *fs, size_t n, uint32_t *out,
                       bool overwrite) {
        if (n > fs->nfree)
                return -ENOMEM;
        size_t clean = fs->nfree - fs->ndirty - fs->nscrub;
        if (clean + fs->ndirty < n) {
                int e = pthread_cond_wait(&p->scrub_done, &p->lock);
                assert(e == 0);
                (void)e;
                return -EAGAIN;
        }
        for (; clean < n; clean++) {
                size_t f = bm_find(fs->dirty, fs->total, 0, true);
                assert(f < fs->total);
                bm_put(fs->dirty, f, false);
                fs->ndirty--;
                if (!overwrite)
                        zero_frames(fs, f, 1);
                mark_clean(fs, f);
        }
        size_t start = fs->total;
        if (n > 1) {
                size_t i = bm_find(fs->used, fs->total, fs->hint, false);
                while (i < fs->total) {
                        size_t j = bm_find(fs->used, fs->total, i, true);
                        if (j - i >= n) {
                                start = i;
                                break;
                        }
                        i = bm_find(fs->used, fs->total, j, false);
                }
        }
        if (start < fs->total) {
                for (size_t k = 0; k < n; k++)
                        out[k] = (uint32_t)(start + k);
        } else {
                size_t i = fs->hint;
                for (size_t k = 0; k < n; k++) {
                        i = bm_find(fs->used, fs->total, i, false);
                        assert(i < fs->total);
                        out[k] = (uint32_t)i++;
                }
        }
        for (size_t k = 0; k < n; k++) {
                assert(!bm_test(fs->used, out[k]));
                bm_put(fs->used, out[k], true);
        }
        fs->nfree -= n;
        fs->hint = bm_find(fs->used, fs->total, fs->hint, false);
        return 0;
}

/* Returns frames to the free set, zeroed now or handed to the scrubber.  The
 * frames must be mapped nowhere but in the pool's own mapping. */
static void frames_put(struct vmq_pool *p, struct frame_set *fs, const uint32_t *in, size_t nin) {
        _cleanup_free_ uint32_t *kept = NULL;
        const uint32_t *idx = in;
        size_t n = 0;
        for (size_t k = 0; k < nin; k++) {
                struct frame *f = &fs->frames[in[k]];
                assert(bm_test(fs->used, in[k]));
                assert(f->shares == 0);
                f->owner = NULL;
                f->gpa = 0;
                if (f->lost)
                        fs->nlost++;
                else
                        n++;
        }
        if (n < nin) {
                /* Lost frames stay allocated: compact the rest. */
                kept = malloc(VMQ_MAX(n, (size_t)1) * sizeof(uint32_t));
                if (!kept) {
                        /* Cannot even list them: withhold them all. */
                        for (size_t k = 0; k < nin; k++)
                                if (!fs->frames[in[k]].lost) {
                                        fs->frames[in[k]].lost = true;
                                        fs->nlost++;
                                }
                        return;
                }
                n = 0;
                for (size_t k = 0; k < nin; k++)
                        if (!fs->frames[in[k]].lost)
                                kept[n++] = in[k];
                idx = kept;
        }
        fs->nfree += n;
        if (fs->deferred) {
                for (size_t k = 0; k < n; k++)
                        bm_put(fs->dirty, idx[k], true);
                fs->ndirty += n;
                int e = pthread_cond_signal(&p->scrub_work);
                assert(e == 0);
                (void)e;
                return;
        }
        size_t i = 0;
        while (i < n) {
                size_t j = i + 1;
                while (j < n && idx[j] == idx[i] + (j - i))
                        j++;
                zero_frames(fs, idx[i], j - i);
                i = j;
        }
        for (size_t k = 0; k < n; k++)
                mark_clean(fs, idx[k]);
}

/*
 * The scrubber thread: zeroes dirty frames one at a time with the lock
 * dropped, so that neither the releasing vCPU nor any other waits for 2 MiB
 * of memset.  A frame being zeroed is neither owned nor allocatable
 * (counted in nscrub); frames_take() waits for it only when nothing else
 * would do.
 */
static void *scrubber_main(void *arg) {
        struct vmq_pool *p = arg;
        pthread_mutex_lock(&p->lock);
        for (;;) {
                struct frame_set *fs = NULL;
                for (size_t k = 0; k < VMQ_FRAME_KIND_MAX && !fs; k++)
                        if (p->sets[k].ndirty > 0)
                                fs = &p->sets[k];
                if (p->scrubber_stop)
                        break;
                if (!fs) {
                        pthread_cond_wait(&p->scrub_work, &p->lock);
                        continue;
                }
                size_t f = bm_find(fs->dirty, fs->total, 0, true);
                assert(f < fs->total);
                bm_put(fs->dirty, f, false);
                fs->ndirty--;
                fs->nscrub++;
                pthread_mutex_unlock(&p->lock);
                memset(fs->base + f * fs->size, 0, fs->size);
                pthread_mutex_lock(&p->lock);
                fs->nscrub--;
                mark_clean(fs, f);
                pthread_cond_broadcast(&p->scrub_done);
        }
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

static int scrubber_start(struct vmq_pool *p) {
        /* The thread must not take the process's signals (SIGINT, SIGCHLD,
         * ...): block them all in it. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int r = pthread_create(&p->scrubber, NULL, scrubber_main, p);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r != 0)
                return -r;
        (void)pthread_setname_np(p->scrubber, "vmq-scrub");
        p->scrubber_running = true;
        return 0;
}

static void scrubber_stop(struct vmq_pool *p) {
        if (!p->scrubber_running)
                return;
        pool_lock(p);
        p->scrubber_stop = true;
        pthread_cond_signal(&p->scrub_work);
        pool_unlock(p);
        pthread_join(p->scrubber, NULL);
        p->scrubber_running = false;
}

void vmq_pool_scrub_wait(struct vmq_pool *p) {
        if (!p)
                return;
        pool_lock(p);
        for (size_t k = 0; k < VMQ_FRAME_KIND_MAX; k++)
                while (p->sets[k].ndirty + p->sets[k].nscrub > 0)
                        pthread_cond_wait(&p->scrub_done, &p->lock);
        pool_unlock(p);
}

/* ---- pool ------------------------------------------------------------ */

static long read_sysfs_long(const char *path) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -1;
        char buf[32];
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return -1;
        buf[n] = 0;
        char *end;
        long v = strtol(buf, &end, 10);
        return end == buf ? -1 : v;
}

static void set_fini(struct frame_set *fs) {
        if (fs->base && fs->total > 0)
                (void)munmap(fs->base, fs->total * fs->size);
        fs->fd = vmq_close(fs->fd);
        free(fs->used);
        free(fs->dirty);
        free(fs->frames);
        *fs = (struct frame_set){.fd = -1};
}

static int set_init(struct frame_set *fs, enum vmq_frame_kind kind, size_t total) {
        size_t size = vmq_frame_size(kind);
        *fs = (struct frame_set){.fd = -1, .size = size};
        if (total == 0)
                return 0;
        /* Frame indices are uint32_t in the page tables of every space. */
        if (total >= FRAME_NONE || total > SIZE_MAX / size)
                return -EINVAL;
        unsigned mflags = MFD_CLOEXEC;
        int mapflags = MAP_SHARED;
        if (kind == VMQ_FRAME_2M) {
                mflags |= MFD_HUGETLB | MFD_HUGE_2MB;
                /* Reserves and faults in every huge page now: see the top. */
                mapflags |= MAP_POPULATE;
        }
        fs->fd = memfd_create(kind == VMQ_FRAME_2M ? "vmq-pool-2m" : "vmq-pool-4k", mflags);
        if (fs->fd < 0)
                return -errno;
        if (ftruncate(fs->fd, (off_t)(total * size)) < 0)
                return -errno;
        void *base = mmap(NULL, total * size, PROT_READ | PROT_WRITE, mapflags, fs->fd, 0);
        if (base == MAP_FAILED)
                return -errno;
        fs->base = base;
        fs->total = total;
        fs->used = calloc((total + 63) / 64, sizeof(uint64_t));
        fs->dirty = calloc((total + 63) / 64, sizeof(uint64_t));
        fs->frames = calloc(total, sizeof(struct frame));
        if (!fs->used || !fs->dirty || !fs->frames)
                return -ENOMEM;
        fs->nfree = total;
        return 0;
}

static bool host_has_huge(size_t n) {
        long free_pages =
                read_sysfs_long("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
        long resv = read_sysfs_long("/sys/kernel/mm/hugepages/hugepages-2048kB/resv_hugepages");
        if (free_pages < 0)
                return false;
        /* Reserved pages are counted free but promised to someone else. */
        if (resv > 0)
                free_pages -= resv;
        return free_pages >= 0 && (size_t)free_pages >= n;
}

int vmq_pool_new(const struct vmq_pool_config *cfg, struct vmq_pool **ret) {
        if (!cfg || !ret || (cfg->frames_4k == 0 && cfg->frames_2m == 0))
                return -EINVAL;
        struct vmq_pool *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        for (size_t k = 0; k < VMQ_FRAME_KIND_MAX; k++)
                p->sets[k].fd = -1;
        /* Plain initialisers: default attributes, and none of these can fail. */
        p->lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
        p->scrub_work = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
        p->scrub_done = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
        int r;

        /* Half of the process's mappings for guest memory, the other half
         * for everything else the process maps (libraries, stacks, vCPU run
         * areas, the daemon's own). */
        long limit = read_sysfs_long("/proc/sys/vm/max_map_count");
        p->max_maps = cfg->max_maps ? cfg->max_maps
                                    : (size_t)(limit > 0 ? limit : VMQ_DEFAULT_MAX_MAP_COUNT) / 2;
        p->max_maps_space = cfg->max_maps_space ? cfg->max_maps_space : VMQ_MAPS_PER_SPACE;

        r = set_init(&p->sets[VMQ_FRAME_4K], VMQ_FRAME_4K, cfg->frames_4k);
        if (r < 0)
                goto fail;
        if (cfg->frames_2m > 0) {
                if (!host_has_huge(cfg->frames_2m))
                        r = -ENOMEM;
                else
                        r = set_init(&p->sets[VMQ_FRAME_2M], VMQ_FRAME_2M, cfg->frames_2m);
                if (r < 0) {
                        set_fini(&p->sets[VMQ_FRAME_2M]);
                        if (cfg->require_huge) {
                                /* EINVAL/EFAULT/ENOSYS from hugetlb mean "no huge
                                 * pages here" just as ENOMEM does. */
                                r = -ENOMEM;
                                goto fail;
                        }
                        r = 0;
                }
        }
        if (cfg->frames_4k == 0 && p->sets[VMQ_FRAME_2M].total == 0) {
                r = -ENOMEM;
                goto fail;
        }
        if (cfg->scrub_thread && p->sets[VMQ_FRAME_2M].total > 0) {
                /* Only huge frames are worth a thread: zeroing 4 KiB costs
                 * less than waking it. */
                r = scrubber_start(p);
                if (r < 0)
                        goto fail;
                p->sets[VMQ_FRAME_2M].deferred = true;
        }
        *ret = p;
        return 0;
fail:
        for (size_t k = 0; k < VMQ_FRAME_KIND_MAX; k++)
                set_fini(&p->sets[k]);
        free(p);
        return r;
}

struct vmq_pool *vmq_pool_free(struct vmq_pool *p) {
        if (!p)
                return NULL;
        /* Spaces point into the pool: freeing it under them is a bug.  Without
         * asserts, leak the pool rather than leave them dangling. */
        assert(p->nspaces == 0);
        if (p->nspaces != 0)
                return NULL;
        scrubber_stop(p);
        for (size_t k = 0; k < VMQ_FRAME_KIND_MAX; k++)
                set_fini(&p->sets[k]);
        pthread_cond_destroy(&p->scrub_work);
        pthread_cond_destroy(&p->scrub_done);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
}

bool vmq_pool_has_huge(const struct vmq_pool *p) {
        return p && p->sets[VMQ_FRAME_2M].total > 0;
}

size_t vmq_pool_frames_total(const struct vmq_pool *p, enum vmq_frame_kind kind) {
        if (!p || (unsigned)kind >= VMQ_FRAME_KIND_MAX)
                return 0;
        return p->sets[kind].total; /* immutable after creation */
}

size_t vmq_pool_frames_free(const struct vmq_pool *p, enum vmq_frame_kind kind) {
        if (!p || (unsigned)kind >= VMQ_FRAME_KIND_MAX)
                return 0;
        pool_lock(p);
        size_t n = p->sets[kind].nfree;
        pool_unlock(p);
        return n;
}

/* ---- mappings ---------------------------------------------------------- */

static size_t region_fsize(const struct region *r) {
        return vmq_frame_size(r->kind);
}

/* Does the page run change between pages i and i + 1 of r, so that the two
 * cannot share one host mapping (VMA)?  With states/frames, the proposed
 * values for pages [first, first + n) are used instead of r's. */
static bool run_break_at(const uint8_t *st, const uint32_t *fr, size_t i) {
        if (st[i] != st[i + 1])
                return true;
        return st[i] != VMQ_PAGE_EMPTY && fr[i + 1] != fr[i] + 1;
}

/* Run breaks around pages [first, first + n) of r: every boundary that a
 * change of those pages can create or remove. */
static size_t window_breaks(const struct region *r, size_t first, size_t n) {
        size_t lo = first > 0 ? first - 1 : 0, hi = VMQ_MIN(first + n, r->npages - 1), b = 0;
        for (size_t i = lo; i < hi; i++)
                b += run_break_at(r->state, r->frame, i);
        return b;
}

/* Host mappings that map_pages() with these arguments makes. */
static size_t proposed_runs(const uint8_t *states, uint8_t state, const uint32_t *frames,
                            size_t n) {
        size_t runs = n > 0;
        for (size_t i = 1; i < n; i++) {
                uint8_t a = states ? states[i - 1] : state, b = states ? states[i] : state;
                runs += a != b || (a != VMQ_PAGE_EMPTY && frames[i] != frames[i - 1] + 1);
        }
        return runs;
}

/*
 * The mapping budget: a change of pages [first, first + n) of a region of s
 * into `runs` runs adds at most runs + 1 host mappings (the run breaks inside
 * it and at its two edges).  -ENOMEM when that could exceed the space's or
 * the pool's budget, checked before anything changes.
 */
static int maps_check(const struct vmq_pool *p, const struct vmq_space *s, size_t runs) {
        if (s->nmaps + runs + 1 > p->max_maps_space || p->nmaps + runs + 1 > p->max_maps)
                return -ENOMEM;
        return 0;
}

/* Books the change of r's run breaks from `before` to its current count
 * around [first, first + n), after the state arrays were updated. */
static void maps_account(struct vmq_pool *p, struct vmq_space *s, struct region *r, size_t before,
                         size_t first, size_t n) {
        size_t after = window_breaks(r, first, n);
        r->nbreaks = r->nbreaks - before + after;
        s->nmaps = s->nmaps - before + after;
        p->nmaps = p->nmaps - before + after;
}

static void *pool_mmap(struct vmq_pool *p, void *addr, size_t len, int prot, int flags, int fd,
                       off_t off) {
        p->mmap_calls++;
        if (p->fail_count > 0) {
                if (p->fail_after > 1) {
                        p->fail_after--;
                } else {
                        p->fail_count--;
                        errno = ENOMEM;
                        return MAP_FAILED;
                }
        }
        return mmap(addr, len, prot, flags, fd, off);
}

/*
 * Makes the host mapping of pages [first, first + n) of r match the given
 * states and frames (index 0 of the arrays is page `first`).  `states` may be
 * NULL, then every page gets `state`.  Consecutive pages with the same state
 * and consecutive frames are mapped with one mmap.  With `populate`, the
 * mmap fills in the host page tables of the frames it maps (MAP_POPULATE):
 * for pages a message has just placed, which the guest is about to touch,
 * so that it does not fault them in one by one (each a host page fault
 * under its EPT violation).  Never for a whole region, whose frames stay
 * sparse until the guest uses them.
 */
static int map_pages(struct vmq_pool *p, const struct region *r, size_t first, size_t n,
                     const uint8_t *states, uint8_t state, const uint32_t *frames, bool populate) {
        const struct frame_set *fs = &p->sets[r->kind];
        size_t i = 0;
        while (i < n) {
                uint8_t st = states ? states[i] : state;
                size_t j = i + 1;
                while (j < n && (states ? states[j] : state) == st &&
                       (st == VMQ_PAGE_EMPTY || frames[j] == frames[i] + (j - i)))
                        j++;
                void *addr = r->hva + (first + i) * fs->size;
                size_t len = (j - i) * fs->size;
                void *m;
                if (st == VMQ_PAGE_EMPTY)
                        m = pool_mmap(p, addr, len, PROT_NONE,
                                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1,
                                      0);
                else
                        m = pool_mmap(p, addr, len,
                                      st == VMQ_PAGE_OWNED ? PROT_READ | PROT_WRITE : PROT_READ,
                                      MAP_SHARED | MAP_FIXED | (populate ? MAP_POPULATE : 0),
                                      fs->fd, (off_t)frames[i] * (off_t)fs->size);
                if (m == MAP_FAILED)
                        return -errno;
                i = j;
        }
        return 0;
}

/* Withholds frames from the pool for good (see "Rollback" at the top). */
static void frames_lose(struct frame_set *fs, const uint32_t *idx, size_t n) {
        for (size_t k = 0; k < n; k++)
                fs->frames[idx[k]].lost = true;
}

/*
 * Puts back the mapping that the (unchanged) state arrays describe.  If even
 * that fails, the host mapping of those pages no longer matches the
 * bookkeeping: the space is marked broken (its VM must never run again) and
 * every frame that is or was mapped there is withheld from the pool, so no
 * other VM can ever be given a frame that this one may still reach.  Returns
 * false in that case.
 */
static bool map_restore(struct vmq_pool *p, struct vmq_space *s, const struct region *r,
                        size_t first, size_t n) {
        if (map_pages(p, r, first, n, r->state + first, 0, r->frame + first, false) == 0)
                return true;
        s->broken = true;
        struct frame_set *fs = &p->sets[r->kind];
        for (size_t i = first; i < first + n; i++)
                if (r->state[i] != VMQ_PAGE_EMPTY)
                        fs->frames[r->frame[i]].lost = true;
        return false;
}

static struct region *region_of(const struct vmq_space *s, uint64_t gpa) {
        for (size_t i = 0; i < s->nregions; i++) {
                struct region *r = &s->regions[i];
                if (gpa - r->gpa < r->size)
                        return r;
        }
        return NULL;
}

/* Resolves a run of `count` pages at gpa into one region. */
static int resolve_run(const struct vmq_space *s, uint64_t gpa, size_t count, struct region **ret_r,
                       size_t *ret_first) {
        struct region *r = region_of(s, gpa);
        if (!r)
                return -ERANGE;
        if (!VMQ_IS_ALIGNED(gpa, (uint64_t)region_fsize(r)))
                return -EINVAL;
        size_t first = (size_t)((gpa - r->gpa) / region_fsize(r));
        if (count > r->npages - first)
                return -ERANGE;
        *ret_r = r;
        *ret_first = first;
        return 0;
}

static int check_all(const struct region *r, size_t first, size_t n, uint8_t state) {
        for (size_t i = 0; i < n; i++)
                if (r->state[first + i] != state)
                        return -1;
        return 0;
}

/* ---- spaces ------------------------------------------------------------ */

int vmq_space_new(struct vmq_pool *pool, struct vmq_space **ret) {
        if (!pool || !ret)
                return -EINVAL;
        struct vmq_space *s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->pool = pool;
        pool_lock(pool);
        s->next = pool->spaces;
        if (pool->spaces)
                pool->spaces->prev = s;
        pool->spaces = s;
        pool->nspaces++;
        pool_unlock(pool);
        *ret = s;
        return 0;
}

/* One SHARED_IN page goes away (its mapping already has): the frame loses a
 * share, and an orphaned frame whose last share this was goes back. */
static void drop_share(struct vmq_pool *p, struct frame_set *fs, struct region *r, uint32_t f) {
        struct frame *fr = &fs->frames[f];
        fr->shares--;
        r->nshared_in--;
        if (fr->owner)
                fr->owner->shared_out--;
        else if (fr->shares == 0)
                frames_put(p, fs, &f, 1);
}

static void region_fini(struct vmq_pool *p, struct vmq_space *s, struct region *r) {
        struct frame_set *fs = &p->sets[r->kind];
        if (r->hva) {
                (void)munmap(r->hva, r->size);
                s->nmaps -= r->nbreaks + 1;
                p->nmaps -= r->nbreaks + 1;
        }
        if (r->state) {
                /* Return owned frames in runs, so that contiguous RAM is
                 * zeroed by one hole punch.  A frame still shared into
                 * another space is orphaned instead: it stays mapped there,
                 * read-only, until that space releases it (see "Revocation"
                 * at the top). */
                size_t i = 0;
                while (i < r->npages) {
                        if (r->state[i] == VMQ_PAGE_SHARED_IN)
                                drop_share(p, fs, r, r->frame[i]);
                        if (r->state[i] == VMQ_PAGE_OWNED && fs->frames[r->frame[i]].shares > 0) {
                                struct frame *fr = &fs->frames[r->frame[i]];
                                s->shared_out -= fr->shares;
                                fr->owner = NULL;
                                fr->gpa = 0;
                                i++;
                                continue;
                        }
                        if (r->state[i] != VMQ_PAGE_OWNED) {
                                i++;
                                continue;
                        }
                        size_t j = i + 1;
                        while (j < r->npages && r->state[j] == VMQ_PAGE_OWNED &&
                               fs->frames[r->frame[j]].shares == 0)
                                j++;
                        frames_put(p, fs, r->frame + i, j - i);
                        i = j;
                }
        }
        free(r->state);
        free(r->frame);
        *r = (struct region){0};
}

struct vmq_space *vmq_space_free(struct vmq_space *s) {
        if (!s)
                return NULL;
        struct vmq_pool *p = s->pool;
        pool_lock(p);
        for (size_t i = 0; i < s->nregions; i++)
                region_fini(p, s, &s->regions[i]);
        assert(s->shared_out == 0);
        if (s->prev)
                s->prev->next = s->next;
        else
                p->spaces = s->next;
        if (s->next)
                s->next->prev = s->prev;
        p->nspaces--;
        pool_unlock(p);
        free(s->regions);
        free(s);
        return NULL;
}

int vmq_space_shares_out(struct vmq_space *owner, struct vmq_share_run **ret, size_t *ret_n) {
        if (!owner || !ret || !ret_n)
                return -EINVAL;
        struct vmq_pool *p = owner->pool;
        struct vmq_share_run *runs = NULL;
        size_t n = 0, cap = 0;
        int r = 0;
        pool_lock(p);
        for (struct vmq_space *t = p->spaces; t && owner->shared_out > 0 && r == 0; t = t->next)
                for (size_t ri = 0; ri < t->nregions && r == 0; ri++) {
                        const struct region *reg = &t->regions[ri];
                        const struct frame_set *fs = &p->sets[reg->kind];
                        for (size_t i = 0; i < reg->npages && reg->nshared_in > 0; i++) {
                                if (reg->state[i] != VMQ_PAGE_SHARED_IN ||
                                    fs->frames[reg->frame[i]].owner != owner)
                                        continue;
                                uint64_t gpa = reg->gpa + (uint64_t)i * fs->size;
                                if (n > 0 && runs[n - 1].space == t &&
                                    runs[n - 1].gpa + runs[n - 1].len == gpa) {
                                        runs[n - 1].len += fs->size;
                                        continue;
                                }
                                if (n == cap) {
                                        size_t c = cap ? cap * 2 : 8;
                                        struct vmq_share_run *g =
                                                reallocarray(runs, c, sizeof(*runs));
                                        if (!g) {
                                                r = -ENOMEM;
                                                break;
                                        }
                                        runs = g;
                                        cap = c;
                                }
                                runs[n++] = (struct vmq_share_run){t, gpa, fs->size};
                        }
                }
        pool_unlock(p);
        if (r < 0) {
                free(runs);
                return r;
        }
        *ret = runs;
        *ret_n = n;
        return 0;
}

bool vmq_space_broken(struct vmq_space *s) {
        if (!s)
                return false;
        pool_lock(s->pool);
        bool b = s->broken;
        pool_unlock(s->pool);
        return b;
}

void vmq_pool_fail_mmap(struct vmq_pool *p, unsigned after, unsigned count) {
        pool_lock(p);
        p->fail_after = after;
        p->fail_count = count;
        pool_unlock(p);
}

uint64_t vmq_pool_mmap_calls(struct vmq_pool *p) {
        pool_lock(p);
        uint64_t n = p->mmap_calls;
        pool_unlock(p);
        return n;
}

size_t vmq_space_maps(struct vmq_space *s) {
        pool_lock(s->pool);
        size_t n = s->nmaps;
        pool_unlock(s->pool);
        return n;
}

int vmq_space_add_region(struct vmq_space *s, uint64_t gpa, uint64_t size, enum vmq_frame_kind kind,
                         unsigned flags, void **ret_hva) {
        if (!s || (unsigned)kind >= VMQ_FRAME_KIND_MAX || (flags & ~VMQ_REGION_POPULATE))
                return -EINVAL;
        uint64_t fsize = vmq_frame_size(kind);
        if (size == 0 || !VMQ_IS_ALIGNED(gpa, fsize) || !VMQ_IS_ALIGNED(size, fsize) ||
            gpa + size < gpa || size > SIZE_MAX - HUGE_SIZE)
                return -EINVAL;
        struct vmq_pool *p = s->pool;
        struct frame_set *fs = &p->sets[kind];
        size_t npages = (size_t)(size / fsize);
        if (npages >= FRAME_NONE)
                return -EINVAL;

        struct region reg = {.gpa = gpa, .size = size, .kind = kind, .npages = npages};
        _cleanup_free_ uint32_t *frames = NULL;
        bool taken = false;
        int r;

        /* What is private to the new region is built before taking the lock. */
        reg.state = calloc(npages, 1); /* VMQ_PAGE_EMPTY == 0 */
        reg.frame = malloc(npages * sizeof(uint32_t));
        if (flags & VMQ_REGION_POPULATE)
                frames = malloc(npages * sizeof(uint32_t));
        if (!reg.state || !reg.frame || ((flags & VMQ_REGION_POPULATE) && !frames)) {
                free(reg.state);
                free(reg.frame);
                return -ENOMEM;
        }
        memset(reg.frame, 0xff, npages * sizeof(uint32_t)); /* FRAME_NONE */

        /* Huge frames must sit at 2 MiB-aligned host addresses: reserve one
         * frame more and trim both ends. */
        size_t extra = kind == VMQ_FRAME_2M ? HUGE_SIZE : 0;
        uint8_t *raw = mmap(NULL, size + extra, PROT_NONE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (raw == MAP_FAILED) {
                r = -errno;
                free(reg.state);
                free(reg.frame);
                return r;
        }
        uint8_t *hva = (uint8_t *)VMQ_ALIGN_UP((uintptr_t)raw, (uintptr_t)fsize);
        if (hva > raw)
                (void)munmap(raw, (size_t)(hva - raw));
        if (raw + size + extra > hva + size)
                (void)munmap(hva + size, (size_t)(raw + size + extra - (hva + size)));
        reg.hva = hva;

        pool_lock(p);
        if (fs->total == 0) {
                r = kind == VMQ_FRAME_2M ? -EOPNOTSUPP : -ENOMEM;
                goto out;
        }
retry:
        for (size_t i = 0; i < s->nregions; i++)
                if (vmq_ranges_overlap(gpa, size, s->regions[i].gpa, s->regions[i].size)) {
                        r = -EEXIST;
                        goto out;
                }
        if (flags & VMQ_REGION_POPULATE) {
                r = frames_take(p, fs, npages, frames, false);
                if (r == -EAGAIN)
                        goto retry; /* the lock was dropped */
                if (r < 0)
                        goto out;
                taken = true;
        }
        size_t runs = flags & VMQ_REGION_POPULATE
                              ? proposed_runs(NULL, VMQ_PAGE_OWNED, frames, npages)
                              : 1;
        /* One mapping fewer than runs + 1 is all a new region can take. */
        if (runs > 0 && maps_check(p, s, runs - 1) < 0) {
                r = -ENOMEM;
                goto out;
        }
        struct region *grown = reallocarray(s->regions, s->nregions + 1, sizeof(*grown));
        if (!grown) {
                r = -ENOMEM;
                goto out;
        }
        s->regions = grown;
        if (flags & VMQ_REGION_POPULATE) {
                r = map_pages(p, &reg, 0, npages, NULL, VMQ_PAGE_OWNED, frames, false);
                if (r < 0)
                        goto out;
                for (size_t i = 0; i < npages; i++) {
                        reg.state[i] = VMQ_PAGE_OWNED;
                        reg.frame[i] = frames[i];
                        fs->frames[frames[i]].owner = s;
                        fs->frames[frames[i]].gpa = gpa + i * fsize;
                }
                taken = false;
        }
        reg.nbreaks = runs - 1;
        s->nmaps += runs;
        p->nmaps += runs;
        s->regions[s->nregions++] = reg;
        reg = (struct region){0};
        if (ret_hva)
                *ret_hva = hva;
        r = 0;
out:
        if (taken)
                frames_put(p, fs, frames, npages);
        if (reg.hva)
                (void)munmap(reg.hva, size);
        free(reg.state);
        free(reg.frame);
        pool_unlock(p);
        return r;
}

size_t vmq_space_region_count(const struct vmq_space *s) {
        if (!s)
                return 0;
        pool_lock(s->pool);
        size_t n = s->nregions;
        pool_unlock(s->pool);
        return n;
}

int vmq_space_region(const struct vmq_space *s, size_t index, uint64_t *ret_gpa, uint64_t *ret_size,
                     enum vmq_frame_kind *ret_kind, void **ret_hva) {
        if (!s)
                return -EINVAL;
        int r = 0;
        pool_lock(s->pool);
        if (index >= s->nregions) {
                r = -ERANGE;
        } else {
                const struct region *reg = &s->regions[index];
                if (ret_gpa)
                        *ret_gpa = reg->gpa;
                if (ret_size)
                        *ret_size = reg->size;
                if (ret_kind)
                        *ret_kind = reg->kind;
                if (ret_hva)
                        *ret_hva = reg->hva;
        }
        pool_unlock(s->pool);
        return r;
}

int vmq_space_read(struct vmq_space *s, uint64_t gpa, void *buf, uint64_t len, bool owned) {
        if (!s || (len > 0 && !buf))
                return -EINVAL;
        int r = 0;
        pool_lock(s->pool);
        const struct region *reg = region_of(s, gpa);
        if (!reg || !vmq_range_within(gpa, len, reg->gpa, reg->size)) {
                r = -ERANGE;
                goto out;
        }
        size_t fsize = region_fsize(reg);
        uint64_t off = gpa - reg->gpa;
        for (size_t i = (size_t)(off / fsize); len > 0 && i <= (size_t)((off + len - 1) / fsize);
             i++) {
                uint8_t st = reg->state[i];
                if (st != VMQ_PAGE_OWNED && (owned || st != VMQ_PAGE_SHARED_IN)) {
                        r = -EPERM;
                        goto out;
                }
        }
        if (len > 0)
                memcpy(buf, reg->hva + off, len);
out:
        pool_unlock(s->pool);
        return r;
}

void *vmq_space_translate(struct vmq_space *s, uint64_t gpa, uint64_t len, bool write) {
        if (!s)
                return NULL;
        void *ptr = NULL;
        pool_lock(s->pool);
        const struct region *r = region_of(s, gpa);
        if (!r || !vmq_range_within(gpa, len, r->gpa, r->size))
                goto out;
        size_t fsize = region_fsize(r);
        uint64_t off = gpa - r->gpa;
        size_t first = (size_t)(off / fsize);
        size_t last = len == 0 ? first : (size_t)((off + len - 1) / fsize);
        for (size_t i = first; i <= last && len > 0; i++) {
                uint8_t st = r->state[i];
                if (st != VMQ_PAGE_OWNED && (write || st != VMQ_PAGE_SHARED_IN))
                        goto out;
        }
        ptr = r->hva + off;
out:
        pool_unlock(s->pool);
        return ptr;
}

int vmq_space_page_state(struct vmq_space *s, uint64_t gpa, enum vmq_page_state *ret_state,
                         enum vmq_frame_kind *ret_kind) {
        if (!s)
                return -EINVAL;
        int r = 0;
        pool_lock(s->pool);
        const struct region *reg = region_of(s, gpa);
        if (!reg) {
                r = -ERANGE;
        } else {
                if (ret_state)
                        *ret_state = reg->state[(gpa - reg->gpa) / region_fsize(reg)];
                if (ret_kind)
                        *ret_kind = reg->kind;
        }
        pool_unlock(s->pool);
        return r;
}

/* First run of `count` EMPTY pages in [lo, hi), or SIZE_MAX. */
static size_t scan_empty(const struct region *r, size_t lo, size_t hi, size_t count) {
        size_t run = 0;
        for (size_t i = lo; i < hi; i++) {
                run = r->state[i] == VMQ_PAGE_EMPTY ? run + 1 : 0;
                if (run == count)
                        return i + 1 - count;
        }
        return SIZE_MAX;
}

int vmq_space_find_empty(struct vmq_space *s, uint64_t region_gpa, size_t count,
                         uint64_t *ret_gpa) {
        if (!s || count == 0 || !ret_gpa)
                return -EINVAL;
        int r = 0;
        pool_lock(s->pool);
        struct region *reg = region_of(s, region_gpa);
        if (!reg) {
                r = -ERANGE;
                goto out;
        }
        /* Next fit: received pages are usually released in arrival order, so
         * starting after the last find keeps the search short. */
        size_t at = SIZE_MAX;
        if (count <= reg->npages) {
                at = scan_empty(reg, reg->find_hint, reg->npages, count);
                if (at == SIZE_MAX)
                        at = scan_empty(reg, 0, VMQ_MIN(reg->npages, reg->find_hint + count - 1),
                                        count);
        }
        if (at == SIZE_MAX) {
                r = -ENOSPC;
                goto out;
        }
        reg->find_hint = at + count < reg->npages ? at + count : 0;
        *ret_gpa = reg->gpa + (uint64_t)at * region_fsize(reg);
out:
        pool_unlock(s->pool);
        return r;
}

/* ---- operations ---------------------------------------------------------- */

int vmq_remap_flip(struct vmq_space *src, uint64_t src_gpa, struct vmq_space *dst, uint64_t dst_gpa,
                   size_t count) {
        if (!src || !dst || count == 0 || src->pool != dst->pool)
                return -EINVAL;
        struct vmq_pool *p = src->pool;
        _cleanup_free_ uint32_t *fresh = NULL;
        struct region *sr, *dr;
        size_t sf, df;
        int r;

        pool_lock(p);
retry:
        r = resolve_run(src, src_gpa, count, &sr, &sf);
        if (r < 0)
                goto out;
        r = resolve_run(dst, dst_gpa, count, &dr, &df);
        if (r < 0)
                goto out;
        if (sr->kind != dr->kind) {
                r = -EINVAL;
                goto out;
        }
        struct frame_set *fs = &p->sets[sr->kind];
        if (check_all(sr, sf, count, VMQ_PAGE_OWNED) < 0) {
                r = -EPERM;
                goto out;
        }
        for (size_t i = 0; i < count; i++)
                if (fs->frames[sr->frame[sf + i]].shares > 0) {
                        r = -EBUSY;
                        goto out;
                }
        if (check_all(dr, df, count, VMQ_PAGE_EMPTY) < 0) {
                r = -EBUSY;
                goto out;
        }
        if (!fresh)
                fresh = malloc(count * sizeof(uint32_t));
        if (!fresh) {
                r = -ENOMEM;
                goto out;
        }
        r = frames_take(p, fs, count, fresh, false);
        if (r == -EAGAIN)
                goto retry; /* the lock was dropped: validate again */
        if (r < 0)
                goto out;
        if (maps_check(p, src, proposed_runs(NULL, VMQ_PAGE_OWNED, fresh, count)) < 0 ||
            maps_check(p, dst, proposed_runs(NULL, VMQ_PAGE_OWNED, sr->frame + sf, count)) < 0) {
                frames_put(p, fs, fresh, count);
                r = -ENOMEM;
                goto out;
        }

        /* Revoke before granting: the sender loses the old frames before the
         * receiver gets them. */
        /* Both runs in one region: one window over both, or the breaks
         * between them would be booked twice. */
        bool one = sr == dr;
        size_t ulo = VMQ_MIN(sf, df), un = VMQ_MAX(sf, df) + count - ulo;
        size_t sbefore = one ? window_breaks(sr, ulo, un) : window_breaks(sr, sf, count);
        size_t dbefore = one ? 0 : window_breaks(dr, df, count);
        r = map_pages(p, sr, sf, count, NULL, VMQ_PAGE_OWNED, fresh, true);
        if (r < 0) {
                if (!map_restore(p, src, sr, sf, count))
                        frames_lose(fs, fresh, count);
                frames_put(p, fs, fresh, count);
                goto out;
        }
        r = map_pages(p, dr, df, count, NULL, VMQ_PAGE_OWNED, sr->frame + sf, true);
        if (r < 0) {
                bool ok = map_restore(p, dst, dr, df, count);
                if (!ok)
                        /* dst may still map the sender's frames */
                        frames_lose(fs, sr->frame + sf, count);
                if (!map_restore(p, src, sr, sf, count) || !ok)
                        frames_lose(fs, fresh, count);
                frames_put(p, fs, fresh, count);
                goto out;
        }
        size_t fsize = fs->size;
        for (size_t i = 0; i < count; i++) {
                uint32_t old = sr->frame[sf + i];
                dr->state[df + i] = VMQ_PAGE_OWNED;
                dr->frame[df + i] = old;
                fs->frames[old].owner = dst;
                fs->frames[old].gpa = dst_gpa + i * fsize;
                sr->frame[sf + i] = fresh[i];
                fs->frames[fresh[i]].owner = src;
                fs->frames[fresh[i]].gpa = src_gpa + i * fsize;
        }
        if (one) {
                maps_account(p, src, sr, sbefore, ulo, un);
        } else {
                maps_account(p, src, sr, sbefore, sf, count);
                maps_account(p, dst, dr, dbefore, df, count);
        }
out:
        pool_unlock(p);
        return r;
}

int vmq_remap_share(struct vmq_space *src, uint64_t src_gpa, struct vmq_space *dst,
                    uint64_t dst_gpa, size_t count) {
        if (!src || !dst || count == 0 || src->pool != dst->pool)
                return -EINVAL;
        struct vmq_pool *p = src->pool;
        struct region *sr, *dr;
        size_t sf, df;
        int r;

        pool_lock(p);
        r = resolve_run(src, src_gpa, count, &sr, &sf);
        if (r < 0)
                goto out;
        r = resolve_run(dst, dst_gpa, count, &dr, &df);
        if (r < 0)
                goto out;
        if (sr->kind != dr->kind) {
                r = -EINVAL;
                goto out;
        }
        if (check_all(sr, sf, count, VMQ_PAGE_OWNED) < 0) {
                r = -EPERM;
                goto out;
        }
        if (check_all(dr, df, count, VMQ_PAGE_EMPTY) < 0) {
                r = -EBUSY;
                goto out;
        }
        if (maps_check(p, dst, proposed_runs(NULL, VMQ_PAGE_SHARED_IN, sr->frame + sf, count)) <
            0) {
                r = -ENOMEM;
                goto out;
        }
        size_t before = window_breaks(dr, df, count);
        struct frame_set *fs = &p->sets[sr->kind];
        r = map_pages(p, dr, df, count, NULL, VMQ_PAGE_SHARED_IN, sr->frame + sf, true);
        if (r < 0) {
                if (!map_restore(p, dst, dr, df, count))
                        frames_lose(fs, sr->frame + sf, count);
                goto out;
        }
        for (size_t i = 0; i < count; i++) {
                uint32_t f = sr->frame[sf + i];
                dr->state[df + i] = VMQ_PAGE_SHARED_IN;
                dr->frame[df + i] = f;
                fs->frames[f].shares++;
        }
        maps_account(p, dst, dr, before, df, count);
        dr->nshared_in += count;
        src->shared_out += count;
out:
        pool_unlock(p);
        return r;
}

/* Pages of fsize that len bytes take. */
static uint64_t pages_of(uint64_t len, size_t fsize) {
        return len / fsize + (len % fsize != 0);
}

/*
 * Where piece k's bytes are, checked under the lock: with a source space,
 * only OWNED pages of one region (a read-only share is not the sender's to
 * pass on, by copy or otherwise); without one, the caller's host buffer.
 */
static int piece_data(const struct vmq_space *dst, const struct vmq_copy_piece *pc,
                      const uint8_t **ret) {
        if (pc->len == 0)
                return -EINVAL;
        if (!pc->src) {
                if (!pc->data)
                        return -EINVAL;
                *ret = pc->data;
                return 0;
        }
        if (pc->src->pool != dst->pool)
                return -EINVAL;
        const struct region *sr = region_of(pc->src, pc->src_gpa);
        if (!sr || !vmq_range_within(pc->src_gpa, pc->len, sr->gpa, sr->size))
                return -ERANGE;
        size_t fsize = region_fsize(sr);
        uint64_t off = pc->src_gpa - sr->gpa;
        for (size_t i = (size_t)(off / fsize); i <= (size_t)((off + pc->len - 1) / fsize); i++)
                if (sr->state[i] != VMQ_PAGE_OWNED)
                        return -EPERM;
        *ret = sr->hva + off;
        return 0;
}

/*
 * Common part of copy, copy_in and copy_batch: gives the EMPTY pages at
 * dst_gpa fresh frames filled from the pieces in turn, each starting on a
 * frame of its own, and maps them all with as few mmaps as their frames
 * allow (one, when the pool hands out consecutive frames).  Everything is
 * checked before anything changes; all or nothing.  -EAGAIN when
 * frames_take() dropped the lock: the caller validates again.
 */
static int copy_locked(struct vmq_pool *p, struct vmq_space *dst, uint64_t dst_gpa,
                       const struct vmq_copy_piece *pieces, size_t npieces) {
        const uint8_t *data[VMQ_COPY_BATCH_MAX]; /* where each piece's bytes are */
        struct region *dr = region_of(dst, dst_gpa);
        if (!dr)
                return -ERANGE;
        size_t fsize = region_fsize(dr);
        if (!VMQ_IS_ALIGNED(dst_gpa, (uint64_t)fsize) || npieces == 0 ||
            npieces > VMQ_COPY_BATCH_MAX)
                return -EINVAL;
        uint64_t count64 = 0;
        for (size_t k = 0; k < npieces; k++) {
                int r = piece_data(dst, &pieces[k], &data[k]);
                if (r < 0)
                        return r;
                /* at most 2^52 pages a piece, of at most 64 pieces (the
                 * caller's bound): no overflow */
                count64 += pages_of(pieces[k].len, fsize);
        }
        size_t df;
        if (count64 > dr->npages)
                return -ERANGE;
        size_t count = (size_t)count64;
        int r = resolve_run(dst, dst_gpa, count, &dr, &df);
        if (r < 0)
                return r;
        if (check_all(dr, df, count, VMQ_PAGE_EMPTY) < 0)
                return -EBUSY;
        struct frame_set *fs = &p->sets[dr->kind];
        _cleanup_free_ uint32_t *fresh = malloc(count * sizeof(uint32_t));
        if (!fresh)
                return -ENOMEM;
        r = frames_take(p, fs, count, fresh, true);
        if (r < 0)
                return r;
        if (maps_check(p, dst, proposed_runs(NULL, VMQ_PAGE_OWNED, fresh, count)) < 0) {
                frames_put(p, fs, fresh, count);
                return -ENOMEM;
        }
        /* Fill through the pool's mapping before the receiver can see the
         * frames: it never observes a half-written page.  Frames of a
         * deferred set may be dirty (see frames_take): their tail is zeroed
         * here, which is all of the zeroing they need. */
        size_t at = 0;
        for (size_t k = 0; k < npieces; k++) {
                uint64_t len = pieces[k].len;
                for (uint64_t done = 0; done < len; done += fsize, at++) {
                        size_t n = (size_t)VMQ_MIN((uint64_t)fsize, len - done);
                        uint8_t *frame = fs->base + (size_t)fresh[at] * fsize;
                        memcpy(frame, data[k] + done, n);
                        if (fs->deferred && n < fsize)
                                memset(frame + n, 0, fsize - n);
                }
        }
        size_t before = window_breaks(dr, df, count);
        r = map_pages(p, dr, df, count, NULL, VMQ_PAGE_OWNED, fresh, true);
        if (r < 0) {
                if (!map_restore(p, dst, dr, df, count))
                        frames_lose(fs, fresh, count);
                frames_put(p, fs, fresh, count);
                return r;
        }
        for (size_t i = 0; i < count; i++) {
                dr->state[df + i] = VMQ_PAGE_OWNED;
                dr->frame[df + i] = fresh[i];
                fs->frames[fresh[i]].owner = dst;
                fs->frames[fresh[i]].gpa = dst_gpa + (uint64_t)i * fsize;
        }
        maps_account(p, dst, dr, before, df, count);
        return 0;
}

int vmq_remap_copy_batch(struct vmq_space *dst, uint64_t dst_gpa,
                         const struct vmq_copy_piece *pieces, size_t n) {
        if (!dst || !pieces || n == 0 || n > VMQ_COPY_BATCH_MAX)
                return -EINVAL;
        int r;
        pool_lock(dst->pool);
        do
                r = copy_locked(dst->pool, dst, dst_gpa, pieces, n);
        while (r == -EAGAIN); /* the lock was dropped: everything is checked again */
        pool_unlock(dst->pool);
        return r;
}

int vmq_remap_copy(struct vmq_space *src, uint64_t src_gpa, struct vmq_space *dst, uint64_t dst_gpa,
                   uint64_t len) {
        if (!src || !dst || len == 0 || src->pool != dst->pool)
                return -EINVAL;
        struct vmq_copy_piece pc = {.src = src, .src_gpa = src_gpa, .len = len};
        return vmq_remap_copy_batch(dst, dst_gpa, &pc, 1);
}

int vmq_remap_copy_in(struct vmq_space *dst, uint64_t dst_gpa, const void *data, uint64_t len) {
        if (!dst || !data || len == 0)
                return -EINVAL;
        struct vmq_copy_piece pc = {.data = data, .len = len};
        return vmq_remap_copy_batch(dst, dst_gpa, &pc, 1);
}

int vmq_remap_release(struct vmq_space *s, uint64_t gpa, size_t count) {
        if (!s || count == 0)
                return -EINVAL;
        struct vmq_pool *p = s->pool;
        _cleanup_free_ uint32_t *owned = NULL;
        struct region *reg;
        size_t first, nowned = 0;
        int r;

        pool_lock(p);
        r = resolve_run(s, gpa, count, &reg, &first);
        if (r < 0)
                goto out;
        struct frame_set *fs = &p->sets[reg->kind];
        /* EMPTY pages first, so that the error does not depend on where in
         * the run the pages are. */
        for (size_t i = first; i < first + count; i++)
                if (reg->state[i] == VMQ_PAGE_EMPTY) {
                        r = -EPERM;
                        goto out;
                }
        for (size_t i = first; i < first + count; i++) {
                if (reg->state[i] == VMQ_PAGE_OWNED) {
                        if (fs->frames[reg->frame[i]].shares > 0) {
                                r = -EBUSY;
                                goto out;
                        }
                        nowned++;
                }
        }
        owned = malloc(VMQ_MAX(nowned, (size_t)1) * sizeof(uint32_t));
        if (!owned) {
                r = -ENOMEM;
                goto out;
        }
        /* Releasing can split a mapping in three; releasing a whole run
         * never adds one, so a guest at its budget can always give back. */
        size_t before = window_breaks(reg, first, count);
        size_t after = (first > 0 && reg->state[first - 1] != VMQ_PAGE_EMPTY) +
                       (first + count < reg->npages && reg->state[first + count] != VMQ_PAGE_EMPTY);
        if (after > before && (s->nmaps + after - before > p->max_maps_space ||
                               p->nmaps + after - before > p->max_maps)) {
                r = -ENOMEM;
                goto out;
        }
        r = map_pages(p, reg, first, count, NULL, VMQ_PAGE_EMPTY, NULL, false);
        if (r < 0) {
                (void)map_restore(p, s, reg, first, count);
                goto out;
        }
        nowned = 0;
        for (size_t i = first; i < first + count; i++) {
                uint32_t f = reg->frame[i];
                uint8_t st = reg->state[i];
                reg->state[i] = VMQ_PAGE_EMPTY;
                reg->frame[i] = FRAME_NONE;
                if (st == VMQ_PAGE_OWNED)
                        owned[nowned++] = f;
                else
                        drop_share(p, fs, reg, f);
        }
        maps_account(p, s, reg, before, first, count);
        /* Zeroed here, under the lock and off the send path: see the top. */
        frames_put(p, fs, owned, nowned);
out:
        pool_unlock(p);
        return r;
}

/* ---- invariant check ------------------------------------------------------- */

static bool space_listed(const struct vmq_pool *p, const struct vmq_space *s) {
        for (const struct vmq_space *t = p->spaces; t; t = t->next)
                if (t == s)
                        return true;
        return false;
}

static int check_locked(struct vmq_pool *p, uint32_t **scratch) {
        size_t nspaces = 0;
        for (struct vmq_space *t = p->spaces; t; t = t->next) {
                if (t->pool != p || (t->next && t->next->prev != t))
                        return -EUCLEAN;
                nspaces++;
        }
        if (nspaces != p->nspaces || (p->spaces && p->spaces->prev))
                return -EUCLEAN;

        for (size_t k = 0; k < VMQ_FRAME_KIND_MAX; k++) {
                struct frame_set *fs = &p->sets[k];
                /* share references seen per frame */
                uint32_t *seen = scratch[k];
                size_t used = 0, unowned = 0, ndirty = 0, owned_pages = 0, orphans = 0, lost = 0;
                for (size_t f = 0; f < fs->total; f++) {
                        bool u = bm_test(fs->used, f);
                        bool d = bm_test(fs->dirty, f);
                        const struct frame *fr = &fs->frames[f];
                        /* free (clean, dirty or being scrubbed) XOR owned */
                        if (fr->owner && (!u || d || !space_listed(p, fr->owner)))
                                return -EUCLEAN;
                        /* an orphan: no owner, held by its shares */
                        if (!fr->owner && fr->shares != 0 && (!u || d))
                                return -EUCLEAN;
                        if (d && (!u || !fs->deferred))
                                return -EUCLEAN;
                        if (!u && f < fs->hint)
                                return -EUCLEAN;
                        if (fr->lost && (!u || d))
                                return -EUCLEAN;
                        used += fr->owner != NULL;
                        orphans += !fr->owner && fr->shares != 0;
                        lost += u && !fr->owner && fr->shares == 0 && fr->lost;
                        unowned += u && !fr->owner && fr->shares == 0 && !fr->lost;
                        ndirty += d;
                }
                if (used + orphans + lost + fs->nfree != fs->total || ndirty != fs->ndirty ||
                    unowned != fs->ndirty + fs->nscrub || lost != fs->nlost)
                        return -EUCLEAN;

                for (struct vmq_space *t = p->spaces; t; t = t->next) {
                        for (size_t ri = 0; ri < t->nregions; ri++) {
                                const struct region *r = &t->regions[ri];
                                if ((size_t)r->kind != k)
                                        continue;
                                size_t nshared = 0;
                                for (size_t i = 0; i < r->npages; i++) {
                                        uint32_t f = r->frame[i];
                                        uint64_t gpa = r->gpa + (uint64_t)i * fs->size;
                                        switch (r->state[i]) {
                                        case VMQ_PAGE_EMPTY:
                                                if (f != FRAME_NONE)
                                                        return -EUCLEAN;
                                                break;
                                        case VMQ_PAGE_OWNED:
                                                /* (owner, gpa) names one page, so
                                                 * valid claims are injective; their
                                                 * count equal to `used` makes it a
                                                 * bijection. */
                                                if (f >= fs->total || fs->frames[f].owner != t ||
                                                    fs->frames[f].gpa != gpa)
                                                        return -EUCLEAN;
                                                owned_pages++;
                                                break;
                                        case VMQ_PAGE_SHARED_IN:
                                                if (f >= fs->total)
                                                        return -EUCLEAN;
                                                seen[f]++;
                                                nshared++;
                                                break;
                                        default:
                                                return -EUCLEAN;
                                        }
                                }
                                if (nshared != r->nshared_in)
                                        return -EUCLEAN;
                                size_t breaks = 0;
                                for (size_t i = 0; i + 1 < r->npages; i++)
                                        breaks += run_break_at(r->state, r->frame, i);
                                if (breaks != r->nbreaks)
                                        return -EUCLEAN;
                        }
                }
                if (owned_pages != used)
                        return -EUCLEAN;
                for (size_t f = 0; f < fs->total; f++)
                        if (seen[f] != fs->frames[f].shares)
                                return -EUCLEAN;
        }

        /* Each space's count of shares on its frames, and of mappings. */
        size_t maps = 0;
        for (struct vmq_space *t = p->spaces; t; t = t->next) {
                size_t m = 0;
                for (size_t ri = 0; ri < t->nregions; ri++)
                        m += t->regions[ri].nbreaks + 1;
                if (m != t->nmaps)
                        return -EUCLEAN;
                maps += m;
                size_t out = 0;
                for (size_t k = 0; k < VMQ_FRAME_KIND_MAX; k++)
                        for (size_t f = 0; f < p->sets[k].total; f++)
                                if (p->sets[k].frames[f].owner == t)
                                        out += p->sets[k].frames[f].shares;
                if (out != t->shared_out)
                        return -EUCLEAN;
        }
        if (maps != p->nmaps)
                return -EUCLEAN;
        return 0;
}

int vmq_pool_check(struct vmq_pool *p) {
        if (!p)
                return -EINVAL;
        uint32_t *scratch[VMQ_FRAME_KIND_MAX] = {0};
        int r = 0;
        for (size_t k = 0; k < VMQ_FRAME_KIND_MAX; k++) {
                scratch[k] = calloc(VMQ_MAX(p->sets[k].total, (size_t)1), sizeof(uint32_t));
                if (!scratch[k])
                        r = -ENOMEM;
        }
        if (r == 0) {
                pool_lock(p);
                r = check_locked(p, scratch);
                pool_unlock(p);
        }
        for (size_t k = 0; k < VMQ_FRAME_KIND_MAX; k++)
                free(scratch[k]);
        return r;
}
