/* SPDX-License-Identifier: MIT */
/*
 * The guest transport over an ivshmem-doorbell device (see
 * vmq-guest-ivshmem.h and VMQ_TRANSPORT_IVSHMEM in core/vmq-abi.h).
 *
 * The region is shared with the monitor and, through it, written by code we
 * do not trust: every offset, length and index read from it is copied into
 * a local variable once and checked against the layout we checked at open
 * time (which we never read again) before it is used.
 *
 * Memory ordering follows the micro-VM SDK (guest/lib/queue.c):
 *  - queue (monitor produces, we consume): acquire-load prod, copy the slot
 *    out, release-store cons;
 *  - post ring (we produce): acquire-load cons before reusing a slot, fill
 *    the slot, release-store prod;
 *  - mailbox 0: write the request and mbox.hc, release-store status =
 *    VMQ_STATUS_PENDING, ring; the monitor release-stores the answer and we
 *    acquire-load it.
 * Our own indices (queue cons, post prod) are shadowed here and never read
 * back from the region.
 *
 * Page payloads travel as copies: a send copies the bytes into a run of the
 * send area [image_end, rx_gpa) (a first-fit page bitmap), a receive copies
 * them out of the receive window and releases the slots at once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/vmq-abi.h"
#include "libvmq-client/vmq-guest-ivshmem.h"

#define EXPORT __attribute__((visibility("default")))

/* ivshmem BAR0 registers (32-bit) */
#define REG_INTR_MASK 0u
#define REG_INTR_STATUS 1u
#define REG_IV_POSITION 2u
#define REG_DOORBELL 3u

#define INIT_TIMEOUT_USEC (5ull * 1000000ull)
#define DEFAULT_TIMEOUT_USEC (5ull * 1000000ull)
#define POST_FULL_USEC (100ull * 1000ull)
#define PEERS_MAX 64u
#define BACKLOG_MAX 1024u

_Static_assert(VMQ_IVSHMEM_INLINE_MAX == VMQ_INLINE_MAX, "inline max");
_Static_assert(sizeof(((struct vmq_ivshmem_identity *)0)->name) == VMQ_NAME_MAX, "name max");
_Static_assert((int)VMQ_IVSHMEM_SHUTDOWN == (int)VMQ_DESC_SHUTDOWN, "kinds");

struct run {
        uint32_t first, n; /* pages of the send area; n == 0: none */
};

struct peer {
        bool used;
        uint32_t channel;
        struct vmq_ivshmem_identity id;
};

struct node {
        struct node *next;
        struct vmq_ivshmem_msg *msg;
};

struct vmq_ivshmem {
        uint8_t *shm;
        size_t size;
        volatile uint32_t *regs;
        void (*ring)(void *userdata, uint32_t peer, uint32_t vector);
        void *userdata;

        /* our own mappings (vmq_ivshmem_open), unmapped by free */
        void *regs_map, *shm_map;
        size_t regs_len, shm_len;
        int uio_fd;

        struct vmq_vmcs *vmcs;
        uint64_t timeout_usec;

        /* the layout, checked once */
        uint64_t limit;    /* min(layout.ram_size, size) */
        uint64_t send_off; /* send area [send_off, send_off + send_pages * 4K) */
        uint32_t send_pages;
        uint64_t rx_off, rx_size;

        struct vmq_ring_idx *q_idx;
        uint8_t *q_slots;
        uint32_t q_cap, q_cons;

        struct vmq_ring_idx *p_idx;
        uint8_t *p_slots;
        uint32_t p_cap, p_prod, p_reclaimed;
        struct run *p_runs; /* p_cap entries: the pages of each posted request */

        uint8_t *bitmap; /* send area pages in use */

        struct peer peers[PEERS_MAX];
        struct node *backlog, **backlog_tail;
        unsigned backlog_len;
        uint64_t dropped;
};

/* ------------------------------------------------------------------------
 * Small helpers.
 */

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t deadline_of(uint64_t timeout_usec) {
        uint64_t now = now_usec();

        if (timeout_usec == UINT64_MAX || now + timeout_usec < now)
                return UINT64_MAX;
        return now + timeout_usec;
}

static void sleep_usec(uint64_t usec) {
        struct timespec ts = {.tv_sec = (time_t)(usec / 1000000u),
                              .tv_nsec = (long)(usec % 1000000u) * 1000};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#else
        __asm__ volatile("" ::: "memory");
#endif
}

/* The monitor's VMQ_E_* (negated or not) as a negative errno. */
static int errno_of(int32_t vmq_error) {
        switch (vmq_error < 0 ? -vmq_error : vmq_error) {
        case VMQ_OK:
                return 0;
        case VMQ_E_INVAL:
        case VMQ_E_ALIGN:
                return -EINVAL;
        case VMQ_E_NOTOWNED:
        case VMQ_E_FORGED:
                return -EPERM;
        case VMQ_E_RANGE:
                return -EFAULT;
        case VMQ_E_LEN:
                return -EMSGSIZE;
        case VMQ_E_NOCHAN:
                return -ENXIO;
        case VMQ_E_AGAIN:
                return -EAGAIN;
        case VMQ_E_VERSION:
                return -EPROTONOSUPPORT;
        case VMQ_E_NOSYS:
                return -ENOSYS;
        case VMQ_E_CLOSED:
                return -EPIPE;
        case VMQ_E_TIMEDOUT:
                return -ETIMEDOUT;
        case VMQ_E_NOMEM:
                return -ENOMEM;
        case VMQ_E_BUSY:
                return -EBUSY;
        default:
                return -EPROTO;
        }
}

/* Where the PCI devices are: sysfs, or the directory in
 * $VMQ_IVSHMEM_SYSFS (ignored in set-id programs), for tests that fake a
 * device with plain files. */
static const char *pci_devices(void) {
        const char *dir = secure_getenv("VMQ_IVSHMEM_SYSFS");

        return dir && *dir ? dir : "/sys/bus/pci/devices";
}

static bool is_pow2(uint32_t v) {
        return v && !(v & (v - 1));
}

/* ------------------------------------------------------------------------
 * The layout, checked once.
 */

static int ring_check(const struct vmq_ivshmem *v, uint32_t off, uint32_t slots_off, uint32_t cap,
                      uint32_t slot_size, uint32_t vmcs_size) {
        if (!is_pow2(cap) || off % 64 || slots_off % 8 || off < sizeof(struct vmq_vmcs) ||
            slots_off < sizeof(struct vmq_vmcs) ||
            (uint64_t)off + sizeof(struct vmq_ring_idx) > vmcs_size ||
            (uint64_t)slots_off + (uint64_t)cap * slot_size > vmcs_size)
                return -EPROTO;
        (void)v;
        return 0;
}

static int attach(struct vmq_ivshmem *v) {
        struct vmq_vmcs *vmcs = (struct vmq_vmcs *)v->shm;
        struct vmq_vmcs_layout l;
        uint32_t vmcs_size;
        int r;

        if (v->size < VMQ_PAGE_SIZE)
                return -EPROTO;
        if (__atomic_load_n(&vmcs->magic, __ATOMIC_ACQUIRE) != VMQ_ABI_MAGIC)
                return -EAGAIN;
        if (vmcs->abi_version < VMQ_ABI_VERSION)
                return -EPROTONOSUPPORT;
        memcpy(&l, (const void *)&vmcs->layout, sizeof(l));
        if (l.transport != VMQ_TRANSPORT_IVSHMEM)
                return -EPROTONOSUPPORT;
        vmcs_size = vmcs->vmcs_size;
        if (vmcs_size < VMQ_PAGE_SIZE || vmcs_size % VMQ_PAGE_SIZE ||
            vmcs_size > VMQ_VMCS_MAX_SIZE || vmcs_size > v->size)
                return -EPROTO;

        v->limit = l.ram_size < v->size ? l.ram_size : v->size;
        if (l.image_end % VMQ_PAGE_SIZE || l.rx_gpa % VMQ_PAGE_SIZE || l.rx_size % VMQ_PAGE_SIZE ||
            l.image_end < vmcs_size || l.image_end > l.rx_gpa || l.rx_gpa > v->limit ||
            l.rx_size > v->limit - l.rx_gpa ||
            (l.rx_gpa - l.image_end) / VMQ_PAGE_SIZE > UINT32_MAX)
                return -EPROTO;
        v->send_off = l.image_end;
        v->send_pages = (uint32_t)((l.rx_gpa - l.image_end) / VMQ_PAGE_SIZE);
        v->rx_off = l.rx_gpa;
        v->rx_size = l.rx_size;

        r = ring_check(v, l.queue_off, l.queue_slots_off, l.queue_cap, sizeof(struct vmq_desc),
                       vmcs_size);
        if (r < 0)
                return r;
        if (l.post_cap) {
                r = ring_check(v, l.post_off, l.post_slots_off, l.post_cap,
                               sizeof(struct vmq_request), vmcs_size);
                if (r < 0)
                        return r;
        }

        v->vmcs = vmcs;
        v->q_idx = (struct vmq_ring_idx *)(v->shm + l.queue_off);
        v->q_slots = v->shm + l.queue_slots_off;
        v->q_cap = l.queue_cap;
        v->q_cons = __atomic_load_n(&v->q_idx->cons, __ATOMIC_RELAXED);
        if (l.post_cap) {
                v->p_idx = (struct vmq_ring_idx *)(v->shm + l.post_off);
                v->p_slots = v->shm + l.post_slots_off;
                v->p_cap = l.post_cap;
                v->p_prod = __atomic_load_n(&v->p_idx->prod, __ATOMIC_RELAXED);
                v->p_reclaimed = v->p_prod;
                free(v->p_runs);
                v->p_runs = calloc(l.post_cap, sizeof(*v->p_runs));
                if (!v->p_runs)
                        return -ENOMEM;
        }
        free(v->bitmap);
        v->bitmap = calloc((size_t)v->send_pages / 8 + 1, 1);
        if (!v->bitmap)
                return -ENOMEM;
        return 0;
}

/* ------------------------------------------------------------------------
 * The send area: a first-fit bitmap of 4 KiB pages.
 */

static bool page_used(const struct vmq_ivshmem *v, uint32_t i) {
        return v->bitmap[i / 8] & (1u << (i % 8));
}

static void pages_mark(struct vmq_ivshmem *v, uint32_t first, uint32_t n, bool used) {
        for (uint32_t i = first; i < first + n; i++) {
                if (used)
                        v->bitmap[i / 8] |= (uint8_t)(1u << (i % 8));
                else
                        v->bitmap[i / 8] &= (uint8_t) ~(1u << (i % 8));
        }
}

static int pages_alloc(struct vmq_ivshmem *v, uint32_t n, uint32_t *ret_first) {
        uint32_t start = 0, len = 0;

        for (uint32_t i = 0; i < v->send_pages; i++) {
                if (page_used(v, i)) {
                        len = 0;
                        start = i + 1;
                        continue;
                }
                if (++len == n) {
                        pages_mark(v, start, n, true);
                        *ret_first = start;
                        return 0;
                }
        }
        return -ENOSPC;
}

/* ------------------------------------------------------------------------
 * Doorbell, interrupts and the hypercall.
 */

static void ring_monitor(struct vmq_ivshmem *v) {
        if (v->ring)
                v->ring(v->userdata, VMQ_IVSHMEM_MONITOR_PEER, 0);
        else
                v->regs[REG_DOORBELL] = (uint32_t)VMQ_IVSHMEM_MONITOR_PEER << 16 | 0u;
}

/* Polls *done with a back-off: spins about 20 us, then sleeps from 10 us up
 * to 1 ms at a time, until @deadline. */
struct backoff {
        unsigned spins;
        uint64_t sleep;
};

static void backoff_step(struct backoff *b, uint64_t deadline) {
        uint64_t now, s;

        if (b->spins < 2000) {
                b->spins++;
                cpu_relax();
                return;
        }
        b->sleep = b->sleep ? (b->sleep * 2 > 1000 ? 1000 : b->sleep * 2) : 10;
        s = b->sleep;
        if (deadline != UINT64_MAX) {
                now = now_usec();
                if (now >= deadline)
                        return;
                if (deadline - now < s)
                        s = deadline - now;
        }
        sleep_usec(s);
}

static struct vmq_request *mbox_prepare(struct vmq_ivshmem *v, uint16_t op, uint32_t channel,
                                        uint32_t flags, uint64_t off, uint32_t len, uint64_t tag) {
        struct vmq_request *m = &v->vmcs->mbox[0];

        m->abi = VMQ_ABI_VERSION;
        m->op = op;
        m->flags = flags;
        m->channel = channel;
        m->src_vm = 0;
        m->gpa = off;
        m->len = len;
        m->reserved = 0;
        m->tag = tag;
        m->arg = 0;
        m->result = 0;
        return m;
}

/* Issues hypercall @hc with mailbox 0 as prepared.  Returns the monitor's
 * non-negative answer, a mapped negative errno, or -ETIMEDOUT. */
static int hypercall(struct vmq_ivshmem *v, unsigned hc) {
        struct vmq_request *m = &v->vmcs->mbox[0];
        uint64_t deadline = deadline_of(v->timeout_usec);
        struct backoff b = {0};
        int32_t s;

        m->hc = hc;
        __atomic_store_n(&m->status, VMQ_STATUS_PENDING, __ATOMIC_RELEASE);
        ring_monitor(v);
        for (;;) {
                s = __atomic_load_n(&m->status, __ATOMIC_ACQUIRE);
                if (s != VMQ_STATUS_PENDING)
                        return s >= 0 ? s : errno_of(s);
                if (deadline != UINT64_MAX && now_usec() >= deadline)
                        return -ETIMEDOUT;
                backoff_step(&b, deadline);
        }
}

/* ------------------------------------------------------------------------
 * Opening.
 */

static struct vmq_ivshmem *ivs_alloc(void) {
        struct vmq_ivshmem *v = calloc(1, sizeof(*v));

        if (!v)
                return NULL;
        v->uio_fd = -1;
        v->timeout_usec = DEFAULT_TIMEOUT_USEC;
        v->backlog_tail = &v->backlog;
        return v;
}

/* Requests a previous user of the region posted may still be pending: let
 * the monitor carry them out before we hand their pages out again. */
static void settle(struct vmq_ivshmem *v) {
        if (v->p_cap && __atomic_load_n(&v->p_idx->cons, __ATOMIC_ACQUIRE) != v->p_prod) {
                mbox_prepare(v, VMQ_OP_NONE, 0, 0, 0, 0, 0);
                (void)hypercall(v, VMQ_HC_FLUSH);
        }
}

EXPORT int vmq_ivshmem_open_region(void *regs, void *shm, size_t size,
                                   void (*ring)(void *userdata, uint32_t peer, uint32_t vector),
                                   void *userdata, struct vmq_ivshmem **ret) {
        struct vmq_ivshmem *v;
        int r;

        if ((!regs && !ring) || !shm || (uintptr_t)shm % VMQ_PAGE_SIZE || !ret)
                return -EINVAL;
        v = ivs_alloc();
        if (!v)
                return -ENOMEM;
        v->regs = regs;
        v->shm = shm;
        v->size = size;
        v->ring = ring;
        v->userdata = userdata;
        r = attach(v);
        if (r < 0) {
                vmq_ivshmem_free(v);
                return r;
        }
        settle(v);
        *ret = v;
        return 0;
}

/* Reads a sysfs attribute of a device into buf (NUL-terminated, trailing
 * newline removed). */
static int read_attr(const char *dev, const char *attr, char *buf, size_t size) {
        char path[512];
        ssize_t n;
        int fd;

        snprintf(path, sizeof(path), "%s/%s/%s", pci_devices(), dev, attr);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, size - 1);
        if (n < 0)
                n = -errno;
        close(fd);
        if (n < 0)
                return (int)n;
        buf[n] = 0;
        if (n > 0 && buf[n - 1] == '\n')
                buf[n - 1] = 0;
        return 0;
}

static int write_file(const char *path, const char *value) {
        size_t len = strlen(value);
        ssize_t n;
        int fd;

        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = write(fd, value, len);
        if (n < 0)
                n = -errno;
        close(fd);
        if (n < 0)
                return (int)n;
        return (size_t)n == len ? 0 : -EIO;
}

static bool valid_address(const char *dev) {
        return *dev && *dev != '.' && !strchr(dev, '/') && strlen(dev) < 64;
}

static bool is_ivshmem(const char *dev) {
        char vendor[32], device[32];

        if (read_attr(dev, "vendor", vendor, sizeof(vendor)) < 0 ||
            read_attr(dev, "device", device, sizeof(device)) < 0)
                return false;
        return strtoul(vendor, NULL, 16) == VMQ_IVSHMEM_PCI_VENDOR &&
               strtoul(device, NULL, 16) == VMQ_IVSHMEM_PCI_DEVICE;
}

/* Binds @dev to uio_pci_generic when it has no driver and that driver is
 * loaded.  Best effort: polling works without. */
static void bind_uio(const char *dev) {
        char path[512];
        struct stat st;

        snprintf(path, sizeof(path), "%s/%s/driver", pci_devices(), dev);
        if (lstat(path, &st) == 0)
                return; /* bound already (maybe to uio_pci_generic) */
        if (stat("/sys/bus/pci/drivers/uio_pci_generic", &st) < 0)
                return;
        snprintf(path, sizeof(path), "%s/%s/driver_override", pci_devices(), dev);
        if (write_file(path, "uio_pci_generic") == 0) {
                (void)write_file("/sys/bus/pci/drivers_probe", dev);
                return;
        }
        /* Kernels without driver_override: new_id binds every 1af4:1110. */
        (void)write_file("/sys/bus/pci/drivers/uio_pci_generic/new_id", "1af4 1110");
}

/* Opens /dev/uioN of @dev, or returns -ENOENT. */
static int open_uio(const char *dev) {
        char path[512];
        struct dirent *de;
        DIR *d;
        int fd = -ENOENT;

        snprintf(path, sizeof(path), "%s/%s/uio", pci_devices(), dev);
        d = opendir(path);
        if (!d)
                return -ENOENT;
        while ((de = readdir(d))) {
                if (strncmp(de->d_name, "uio", 3) != 0)
                        continue;
                snprintf(path, sizeof(path), "/dev/%s", de->d_name);
                fd = open(path, O_RDWR | O_CLOEXEC);
                if (fd < 0)
                        fd = -errno;
                break;
        }
        closedir(d);
        return fd;
}

static int map_resource(const char *dev, const char *res, size_t min, void **ret, size_t *ret_len) {
        char path[512];
        struct stat st;
        size_t len;
        void *p;
        int fd;

        snprintf(path, sizeof(path), "%s/%s/%s", pci_devices(), dev, res);
        fd = open(path, O_RDWR | O_CLOEXEC | O_SYNC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        len = (size_t)st.st_size;
        if (len < min) {
                close(fd);
                return -ENODEV;
        }
        /* BAR0 is 256 bytes: map the page that holds it. */
        len = (len + VMQ_PAGE_SIZE - 1) & ~((size_t)VMQ_PAGE_SIZE - 1);
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        close(fd);
        if (p == MAP_FAILED)
                return -errno;
        *ret = p;
        *ret_len = len;
        return 0;
}

static int open_device(const char *dev, unsigned flags, uint64_t wait_usec,
                       struct vmq_ivshmem **ret) {
        char path[512];
        struct vmq_ivshmem *v;
        uint64_t deadline;
        int r;

        if (!valid_address(dev))
                return -ENODEV;
        if (!is_ivshmem(dev))
                return -ENODEV;
        if (flags & VMQ_IVSHMEM_OPEN_BIND_UIO)
                bind_uio(dev);
        snprintf(path, sizeof(path), "%s/%s/enable", pci_devices(), dev);
        r = write_file(path, "1");
        if (r == -EACCES || r == -EPERM)
                return r;

        v = ivs_alloc();
        if (!v)
                return -ENOMEM;
        r = map_resource(dev, "resource0", 16, &v->regs_map, &v->regs_len);
        if (r < 0)
                goto fail;
        r = map_resource(dev, "resource2", VMQ_PAGE_SIZE, &v->shm_map, &v->shm_len);
        if (r < 0)
                goto fail;
        v->regs = v->regs_map;
        v->shm = v->shm_map;
        v->size = v->shm_len;
        if (!(flags & VMQ_IVSHMEM_OPEN_POLL)) {
                v->uio_fd = open_uio(dev);
                if (v->uio_fd < 0)
                        v->uio_fd = -1;
                else
                        v->regs[REG_INTR_MASK] = 0xffffffffu; /* INTx from the doorbell */
        }

        deadline = deadline_of(wait_usec);
        while ((r = attach(v)) == -EAGAIN && now_usec() < deadline)
                sleep_usec(10000);
        if (r < 0)
                goto fail;
        settle(v);
        *ret = v;
        return 0;
fail:
        vmq_ivshmem_free(v);
        return r == -EAGAIN ? -ETIMEDOUT : r;
}

static int select_pci(const struct dirent *de) {
        return de->d_name[0] != '.';
}

EXPORT int vmq_ivshmem_open(const char *pci_device, unsigned flags, struct vmq_ivshmem **ret) {
        struct dirent **list = NULL;
        char first[64] = "";
        int n, r = -ENODEV;

        if (!ret)
                return -EINVAL;
        if (pci_device)
                return open_device(pci_device, flags, INIT_TIMEOUT_USEC, ret);

        n = scandir(pci_devices(), &list, select_pci, alphasort);
        if (n < 0)
                return -ENODEV;
        for (int i = 0; i < n; i++) {
                if (r != 0 && is_ivshmem(list[i]->d_name)) {
                        /* The first one whose region is a vmq VMCS already. */
                        r = open_device(list[i]->d_name, flags, 0, ret);
                        if (r < 0 && !first[0] && strlen(list[i]->d_name) < sizeof(first))
                                memcpy(first, list[i]->d_name, strlen(list[i]->d_name) + 1);
                }
                free(list[i]);
        }
        free(list);
        if (r == 0)
                return 0;
        if (!first[0])
                return -ENODEV;
        return open_device(first, flags, INIT_TIMEOUT_USEC, ret);
}

EXPORT struct vmq_ivshmem *vmq_ivshmem_free(struct vmq_ivshmem *v) {
        if (!v)
                return NULL;
        while (v->backlog) {
                struct node *n = v->backlog;

                v->backlog = n->next;
                free(n->msg);
                free(n);
        }
        if (v->uio_fd >= 0)
                close(v->uio_fd);
        if (v->regs_map)
                munmap(v->regs_map, v->regs_len);
        if (v->shm_map)
                munmap(v->shm_map, v->shm_len);
        free(v->p_runs);
        free(v->bitmap);
        free(v);
        return NULL;
}

EXPORT int vmq_ivshmem_set_timeout(struct vmq_ivshmem *v, uint64_t usec) {
        v->timeout_usec = usec;
        return 0;
}

static void identity_from(struct vmq_ivshmem_identity *ret, const void *raw) {
        struct vmq_identity id;

        memcpy(&id, raw, sizeof(id));
        memset(ret, 0, sizeof(*ret));
        ret->vm_id = id.vm_id;
        memcpy(ret->uuid, id.uuid, sizeof(ret->uuid));
        memcpy(ret->name, id.name, sizeof(ret->name));
        ret->name[sizeof(ret->name) - 1] = 0;
}

EXPORT int vmq_ivshmem_self(struct vmq_ivshmem *v, struct vmq_ivshmem_identity *ret) {
        identity_from(ret, &v->vmcs->self);
        return 0;
}

EXPORT int vmq_ivshmem_position(struct vmq_ivshmem *v) {
        if (!v->regs)
                return -ENODEV;
        return (int)(v->regs[REG_IV_POSITION] & 0xffff);
}

EXPORT bool vmq_ivshmem_uses_interrupts(struct vmq_ivshmem *v) {
        return v->uio_fd >= 0;
}

EXPORT size_t vmq_ivshmem_max_send(struct vmq_ivshmem *v) {
        size_t area = (size_t)v->send_pages * VMQ_PAGE_SIZE;

        if (area > UINT32_MAX)
                area = UINT32_MAX;
        return area > VMQ_INLINE_MAX ? area : VMQ_INLINE_MAX;
}

/* ------------------------------------------------------------------------
 * Sending and posting.
 */

/* Frees the pages of posted requests the monitor has passed. */
static int post_reclaim(struct vmq_ivshmem *v) {
        uint32_t cons;

        if (!v->p_cap)
                return 0;
        cons = __atomic_load_n(&v->p_idx->cons, __ATOMIC_ACQUIRE);
        /* The monitor may only move cons forward, up to our prod. */
        if ((uint32_t)(cons - v->p_reclaimed) > (uint32_t)(v->p_prod - v->p_reclaimed))
                return -EPROTO;
        for (; v->p_reclaimed != cons; v->p_reclaimed++) {
                struct run *run = &v->p_runs[v->p_reclaimed & (v->p_cap - 1)];

                if (run->n)
                        pages_mark(v, run->first, run->n, false);
                run->n = 0;
        }
        return 0;
}

/* Copies @len bytes into a fresh run of the send area. */
static int stage_pages(struct vmq_ivshmem *v, const void *data, size_t len, struct run *ret) {
        uint32_t n, first;
        int r;

        if (len > vmq_ivshmem_max_send(v))
                return -EMSGSIZE;
        n = (uint32_t)((len + VMQ_PAGE_SIZE - 1) / VMQ_PAGE_SIZE);
        r = pages_alloc(v, n, &first);
        if (r < 0) {
                (void)post_reclaim(v);
                r = pages_alloc(v, n, &first);
        }
        if (r < 0)
                return -EAGAIN; /* held by posted requests, for now */
        memcpy(v->shm + v->send_off + (uint64_t)first * VMQ_PAGE_SIZE, data, len);
        ret->first = first;
        ret->n = n;
        return 0;
}

EXPORT int vmq_ivshmem_send(struct vmq_ivshmem *v, uint32_t channel, const void *data, size_t len,
                            uint64_t tag) {
        struct vmq_request *m;
        struct run run;
        int r;

        if (len <= VMQ_INLINE_MAX) {
                m = mbox_prepare(v, VMQ_OP_INLINE, channel, 0, 0, (uint32_t)len, tag);
                if (len)
                        memcpy(m->data, data, len);
                r = hypercall(v, VMQ_HC_SEND);
                return r < 0 ? r : 0;
        }
        r = stage_pages(v, data, len, &run);
        if (r < 0)
                return r;
        mbox_prepare(v, VMQ_OP_PAGE, channel, VMQ_REQ_F_COPY,
                     v->send_off + (uint64_t)run.first * VMQ_PAGE_SIZE, (uint32_t)len, tag);
        r = hypercall(v, VMQ_HC_SEND);
        /* The monitor copied the pages before answering; after a timeout it
         * may still read them, so they stay reserved. */
        if (r != -ETIMEDOUT)
                pages_mark(v, run.first, run.n, false);
        return r < 0 ? r : 0;
}

EXPORT int vmq_ivshmem_post(struct vmq_ivshmem *v, uint32_t channel, const void *data, size_t len,
                            uint64_t tag) {
        uint64_t deadline = 0;
        struct vmq_request *s;
        struct run run = {0};
        struct backoff b = {0};
        int r;

        if (!v->p_cap)
                return -ENOSYS;
        for (;;) {
                r = post_reclaim(v);
                if (r < 0)
                        return r;
                if ((uint32_t)(v->p_prod - v->p_reclaimed) < v->p_cap)
                        break;
                if (!deadline) {
                        deadline = deadline_of(POST_FULL_USEC);
                        ring_monitor(v);
                } else if (now_usec() >= deadline)
                        return -EAGAIN;
                backoff_step(&b, deadline);
        }
        if (len > VMQ_INLINE_MAX) {
                r = stage_pages(v, data, len, &run);
                if (r < 0)
                        return r == -EAGAIN ? -EMSGSIZE : r;
        }

        s = (struct vmq_request *)(v->p_slots + (size_t)(v->p_prod & (v->p_cap - 1)) * sizeof(*s));
        s->abi = VMQ_ABI_VERSION;
        s->op = run.n ? VMQ_OP_PAGE : VMQ_OP_INLINE;
        s->flags = run.n ? VMQ_REQ_F_COPY : 0;
        s->channel = channel;
        s->src_vm = 0;
        s->gpa = run.n ? v->send_off + (uint64_t)run.first * VMQ_PAGE_SIZE : 0;
        s->len = (uint32_t)len;
        s->reserved = 0;
        s->tag = tag;
        s->arg = 0;
        s->status = 0;
        s->hc = 0;
        s->result = 0;
        if (!run.n && len)
                memcpy(s->data, data, len);
        v->p_runs[v->p_prod & (v->p_cap - 1)] = run;
        v->p_prod++;
        __atomic_store_n(&v->p_idx->prod, v->p_prod, __ATOMIC_RELEASE);
        ring_monitor(v);
        return 0;
}

EXPORT int vmq_ivshmem_post_pending(struct vmq_ivshmem *v) {
        int r;

        if (!v->p_cap)
                return 0;
        r = post_reclaim(v);
        if (r < 0)
                return r;
        return (int)(v->p_prod - v->p_reclaimed);
}

EXPORT int vmq_ivshmem_flush(struct vmq_ivshmem *v) {
        int r;

        mbox_prepare(v, VMQ_OP_NONE, 0, 0, 0, 0, 0);
        r = hypercall(v, VMQ_HC_FLUSH);
        (void)post_reclaim(v);
        return r;
}

/* ------------------------------------------------------------------------
 * Receiving.
 */

static struct peer *peer_find(struct vmq_ivshmem *v, uint32_t channel) {
        for (unsigned i = 0; i < PEERS_MAX; i++)
                if (v->peers[i].used && v->peers[i].channel == channel)
                        return &v->peers[i];
        return NULL;
}

static void peer_note(struct vmq_ivshmem *v, const struct vmq_ivshmem_msg *m) {
        struct peer *p = peer_find(v, m->channel);

        if (m->kind == VMQ_IVSHMEM_CLOSE) {
                if (p)
                        p->used = false;
                return;
        }
        for (unsigned i = 0; !p && i < PEERS_MAX; i++)
                if (!v->peers[i].used)
                        p = &v->peers[i];
        if (!p)
                return;
        p->used = true;
        p->channel = m->channel;
        p->id = m->peer;
}

EXPORT int vmq_ivshmem_peer(struct vmq_ivshmem *v, uint32_t channel,
                            struct vmq_ivshmem_identity *ret) {
        struct peer *p = peer_find(v, channel);

        if (!p)
                return -ENXIO;
        *ret = p->id;
        return 0;
}

static bool queue_ready(struct vmq_ivshmem *v) {
        return __atomic_load_n(&v->q_idx->prod, __ATOMIC_ACQUIRE) != v->q_cons;
}

/* Gives received slots back to the monitor. */
static void release(struct vmq_ivshmem *v, uint64_t off, uint32_t len) {
        mbox_prepare(v, VMQ_OP_NONE, 0, 0, off, len, 0);
        (void)hypercall(v, VMQ_HC_RELEASE);
}

/*
 * Dequeues one descriptor and turns it into a message.  Returns 1 with
 * *ret set, 0 when the queue is empty, -EPROTO for impossible indices, or
 * -ENOMEM.  A descriptor that fails its checks is skipped (and counted); its
 * slots, if any, are not ours to release.
 */
static int dequeue(struct vmq_ivshmem *v, struct vmq_ivshmem_msg **ret) {
        struct vmq_ivshmem_msg *m;
        struct vmq_desc d;
        uint32_t prod;

        for (;;) {
                prod = __atomic_load_n(&v->q_idx->prod, __ATOMIC_ACQUIRE);
                if (prod == v->q_cons)
                        return 0;
                if ((uint32_t)(prod - v->q_cons) > v->q_cap)
                        return -EPROTO;
                memcpy(&d, v->q_slots + (size_t)(v->q_cons & (v->q_cap - 1)) * sizeof(d),
                       sizeof(d));
                v->q_cons++;
                __atomic_store_n(&v->q_idx->cons, v->q_cons, __ATOMIC_RELEASE);

                switch (d.kind) {
                case VMQ_DESC_INLINE:
                        if (d.len > VMQ_INLINE_MAX)
                                break;
                        m = calloc(1, sizeof(*m) + d.len);
                        if (!m)
                                return -ENOMEM;
                        memcpy(m->data, d.data, d.len);
                        m->len = d.len;
                        goto done;
                case VMQ_DESC_PAGE:
                        /* Inside the receive window, whole slots. */
                        if (d.len == 0 || d.gpa % VMQ_PAGE_SIZE || d.gpa < v->rx_off ||
                            d.gpa - v->rx_off > v->rx_size ||
                            d.len > v->rx_size - (d.gpa - v->rx_off))
                                break;
                        m = calloc(1, sizeof(*m) + d.len);
                        if (m) {
                                memcpy(m->data, v->shm + d.gpa, d.len);
                                m->len = d.len;
                        }
                        release(v, d.gpa, d.len);
                        if (!m)
                                return -ENOMEM;
                        goto done;
                case VMQ_DESC_HELLO:
                case VMQ_DESC_CLOSE:
                case VMQ_DESC_ERROR:
                case VMQ_DESC_SHUTDOWN:
                        m = calloc(1, sizeof(*m));
                        if (!m)
                                return -ENOMEM;
                        if (d.kind == VMQ_DESC_HELLO)
                                identity_from(&m->peer, d.data);
                        if (d.kind == VMQ_DESC_ERROR)
                                m->error = errno_of(d.error);
                        goto done;
                default:
                        break;
                }
                v->dropped++;
                continue;
        done:
                m->kind = (enum vmq_ivshmem_kind)d.kind;
                m->channel = d.channel;
                m->src_vm = d.src_vm;
                m->tag = d.tag;
                if (m->kind == VMQ_IVSHMEM_HELLO || m->kind == VMQ_IVSHMEM_CLOSE)
                        peer_note(v, m);
                *ret = m;
                return 1;
        }
}

static bool matches(const struct vmq_ivshmem_msg *m, uint32_t channel) {
        return channel == VMQ_IVSHMEM_ANY_CHANNEL || m->channel == channel ||
               m->kind == VMQ_IVSHMEM_SHUTDOWN || m->kind == VMQ_IVSHMEM_ERROR;
}

static struct vmq_ivshmem_msg *backlog_take(struct vmq_ivshmem *v, uint32_t channel) {
        for (struct node **p = &v->backlog; *p; p = &(*p)->next) {
                struct node *n = *p;
                struct vmq_ivshmem_msg *m = n->msg;

                if (!matches(m, channel))
                        continue;
                *p = n->next;
                if (v->backlog_tail == &n->next)
                        v->backlog_tail = p;
                v->backlog_len--;
                free(n);
                return m;
        }
        return NULL;
}

static void backlog_put(struct vmq_ivshmem *v, struct vmq_ivshmem_msg *m) {
        struct node *n;

        if (v->backlog_len >= BACKLOG_MAX) {
                n = v->backlog;
                v->backlog = n->next;
                if (!v->backlog)
                        v->backlog_tail = &v->backlog;
                v->backlog_len--;
                free(n->msg);
                free(n);
                v->dropped++;
        }
        n = calloc(1, sizeof(*n));
        if (!n) {
                free(m);
                v->dropped++;
                return;
        }
        n->msg = m;
        *v->backlog_tail = n;
        v->backlog_tail = &n->next;
        v->backlog_len++;
}

/* Sleeps until the queue may hold something or @deadline passes. */
static void wait_queue(struct vmq_ivshmem *v, uint64_t deadline) {
        struct backoff b = {0};

        if (v->uio_fd >= 0) {
                int32_t one = 1, count;
                struct pollfd p = {.fd = v->uio_fd, .events = POLLIN};
                uint64_t now;
                int ms;

                /* Clear the device's status (it drops INTx), re-enable the
                 * interrupt in UIO, then look: an enqueue after the look
                 * raises it again. */
                (void)v->regs[REG_INTR_STATUS];
                if (write(v->uio_fd, &one, sizeof(one)) != sizeof(one))
                        goto poll;
                if (queue_ready(v))
                        return;
                now = now_usec();
                if (deadline != UINT64_MAX && now >= deadline)
                        return;
                ms = deadline == UINT64_MAX || deadline - now > 1000000
                             ? 1000
                             : (int)((deadline - now + 999) / 1000);
                if (poll(&p, 1, ms) > 0 && (p.revents & POLLIN))
                        (void)!read(v->uio_fd, &count, sizeof(count));
                return;
        }
poll:
        while (!queue_ready(v)) {
                if (deadline != UINT64_MAX && now_usec() >= deadline)
                        return;
                backoff_step(&b, deadline);
                if (b.sleep >= 1000)
                        return; /* let the caller look at the clock */
        }
}

EXPORT int vmq_ivshmem_recv(struct vmq_ivshmem *v, uint32_t channel, uint64_t timeout_usec,
                            struct vmq_ivshmem_msg **ret) {
        uint64_t deadline = deadline_of(timeout_usec);
        struct vmq_ivshmem_msg *m;
        int r;

        m = backlog_take(v, channel);
        if (m) {
                *ret = m;
                return 0;
        }
        for (;;) {
                while ((r = dequeue(v, &m)) > 0) {
                        if (matches(m, channel)) {
                                *ret = m;
                                return 0;
                        }
                        backlog_put(v, m);
                }
                if (r < 0)
                        return r;
                if (timeout_usec == 0 || (deadline != UINT64_MAX && now_usec() >= deadline))
                        return -ETIMEDOUT;
                wait_queue(v, deadline);
        }
}

EXPORT int vmq_ivshmem_peek(struct vmq_ivshmem *v, enum vmq_ivshmem_kind *ret_kind,
                            uint32_t *ret_channel) {
        const struct vmq_desc *d;
        uint32_t prod;

        if (v->backlog) {
                if (ret_kind)
                        *ret_kind = v->backlog->msg->kind;
                if (ret_channel)
                        *ret_channel = v->backlog->msg->channel;
                return 1;
        }
        prod = __atomic_load_n(&v->q_idx->prod, __ATOMIC_ACQUIRE);
        if (prod == v->q_cons)
                return 0;
        if ((uint32_t)(prod - v->q_cons) > v->q_cap)
                return -EPROTO;
        d = (const struct vmq_desc *)(v->q_slots +
                                      (size_t)(v->q_cons & (v->q_cap - 1)) * sizeof(*d));
        if (ret_kind)
                *ret_kind = (enum vmq_ivshmem_kind)__atomic_load_n(&d->kind, __ATOMIC_RELAXED);
        if (ret_channel)
                *ret_channel = __atomic_load_n(&d->channel, __ATOMIC_RELAXED);
        return 1;
}

EXPORT uint64_t vmq_ivshmem_dropped(struct vmq_ivshmem *v) {
        return v->dropped;
}

EXPORT int vmq_ivshmem_wait(struct vmq_ivshmem *v, uint64_t timeout_usec) {
        uint64_t deadline = deadline_of(timeout_usec);

        for (;;) {
                if (v->backlog || queue_ready(v))
                        return 1;
                if (timeout_usec == 0 || (deadline != UINT64_MAX && now_usec() >= deadline))
                        return 0;
                wait_queue(v, deadline);
        }
}

/* ------------------------------------------------------------------------
 * Strings.
 */

EXPORT char *vmq_ivshmem_uuid_to_string(const uint8_t uuid[16], char buf[37]) {
        static const char hex[] = "0123456789abcdef";
        char *p = buf;

        for (unsigned i = 0; i < 16; i++) {
                if (i == 4 || i == 6 || i == 8 || i == 10)
                        *p++ = '-';
                *p++ = hex[uuid[i] >> 4];
                *p++ = hex[uuid[i] & 15];
        }
        *p = 0;
        return buf;
}

EXPORT const char *vmq_ivshmem_kind_to_string(enum vmq_ivshmem_kind kind) {
        switch (kind) {
        case VMQ_IVSHMEM_DATA:
                return "data";
        case VMQ_IVSHMEM_PAGE:
                return "page";
        case VMQ_IVSHMEM_HELLO:
                return "hello";
        case VMQ_IVSHMEM_CLOSE:
                return "close";
        case VMQ_IVSHMEM_ERROR:
                return "error";
        case VMQ_IVSHMEM_SHUTDOWN:
                return "shutdown";
        default:
                return "unknown";
        }
}
