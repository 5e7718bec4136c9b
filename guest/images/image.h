/* SPDX-License-Identifier: MIT */
/*
 * Helpers shared by the stock guest images (header-only: each image is its
 * own program).
 */
#ifndef VMQ_GUEST_IMAGE_H
#define VMQ_GUEST_IMAGE_H

#include "guest/vmq-guest.h"

/* Back-off between retries of a send the receiver had no room for. */
#define IMAGE_RETRY_NS 20000u

/* Parses a transfer= argument into request flags: copy, flip, share (when
 * allow_share), auto (0).  Returns the flags, or -1 for anything else. */
static inline int image_transfer_flags(const char *v, bool allow_share) {
        if (!strcmp(v, "auto"))
                return 0;
        if (!strcmp(v, "copy"))
                return VMQ_REQ_F_COPY;
        if (!strcmp(v, "flip"))
                return VMQ_REQ_F_FLIP;
        if (allow_share && !strcmp(v, "share"))
                return VMQ_REQ_F_SHARE;
        return -1;
}

/* Prints "<who>: hello channel=<id> peer=<vm_id> name=<name> uuid=<uuid>"
 * for a HELLO descriptor. */
static inline void image_print_hello(const char *who, const struct vmq_desc *d) {
        struct vmq_identity id;
        char uuid[37];

        memcpy(&id, d->data, sizeof(id));
        id.name[VMQ_NAME_MAX - 1] = '\0';
        vmq_format_uuid(uuid, id.uuid);
        vmq_printf("%s: hello channel=%u peer=%u name=%s uuid=%s\n", who, d->channel, id.vm_id,
                   id.name, uuid);
}

/* Prints a one-line note for CLOSE and ERROR descriptors. */
static inline void image_print_other(const char *who, const struct vmq_desc *d) {
        if (d->kind == VMQ_DESC_CLOSE)
                vmq_printf("%s: close channel=%u\n", who, d->channel);
        else if (d->kind == VMQ_DESC_ERROR)
                vmq_printf("%s: error channel=%u tag=0x%lx error=%s\n", who, d->channel, d->tag,
                           vmq_strerror(d->error));
}

/* Sends inline, retrying while the receiver has no room (-VMQ_E_AGAIN). */
static inline int image_send_inline(uint32_t ch, const void *data, size_t len, uint64_t tag) {
        int r;

        while ((r = vmq_send_inline(ch, data, len, tag)) == -VMQ_E_AGAIN)
                vmq_delay_ns(IMAGE_RETRY_NS);
        return r;
}

/* Sends pages, retrying while the receiver has no room (-VMQ_E_AGAIN). */
static inline int image_send_pages(uint32_t ch, const void *p, size_t len, uint32_t flags,
                                   uint64_t tag) {
        int r;

        while ((r = vmq_send_pages(ch, p, len, flags, tag)) == -VMQ_E_AGAIN)
                vmq_delay_ns(IMAGE_RETRY_NS);
        return r;
}

/*
 * Received page runs whose release the monitor refused with -VMQ_E_BUSY
 * (we shared them onward and the next receiver still holds them): kept and
 * retried later.
 */
#define IMAGE_PENDING_MAX 64u

struct image_pending {
        unsigned n;
        struct {
                uint64_t gpa;
                uint32_t len;
        } runs[IMAGE_PENDING_MAX];
};

/* Retries the pending releases; returns how many are still pending. */
static inline unsigned image_release_pending(struct image_pending *p) {
        unsigned k = 0;

        for (unsigned i = 0; i < p->n; i++) {
                if (vmq_release((void *)(uintptr_t)p->runs[i].gpa, p->runs[i].len) == -VMQ_E_BUSY)
                        p->runs[k++] = p->runs[i];
        }
        p->n = k;
        return k;
}

/* Releases a received run, or keeps it pending while the monitor says
 * -VMQ_E_BUSY.  Returns 0 or the monitor's other error. */
static inline int image_release(struct image_pending *p, const struct vmq_desc *d) {
        int r = vmq_release(vmq_desc_pages(d), d->len);

        if (r != -VMQ_E_BUSY)
                return r;
        while (p->n == IMAGE_PENDING_MAX) {
                if (image_release_pending(p) == IMAGE_PENDING_MAX)
                        vmq_delay_ns(100000);
        }
        p->runs[p->n].gpa = d->gpa;
        p->runs[p->n].len = d->len;
        p->n++;
        return 0;
}

/* Frame size of a received run. */
static inline uint64_t image_desc_frame(const struct vmq_desc *d) {
        return d->flags & VMQ_DESC_F_HUGE ? VMQ_HUGE_PAGE_SIZE : VMQ_PAGE_SIZE;
}

/*
 * Sends a received PAGE run onward on channel ch with flags, then releases
 * it.  A run we received as a read-only share cannot be sent on: it is
 * copied into heap pages first, which are sent and freed.  Retries while the
 * receiver has no room.  Returns 0 or -VMQ_E_* (-VMQ_E_NOMEM: no heap for the
 * copy).
 */
static inline int image_forward_pages(struct image_pending *p, uint32_t ch,
                                      const struct vmq_desc *d, uint32_t flags) {
        int r, rr;

        if (d->flags & VMQ_DESC_F_SHARED) {
                size_t n = ((size_t)d->len + VMQ_PAGE_SIZE - 1) / VMQ_PAGE_SIZE;
                void *buf = vmq_alloc_pages(n);

                if (!buf) {
                        r = -VMQ_E_NOMEM;
                } else {
                        memcpy(buf, vmq_desc_pages(d), d->len);
                        r = image_send_pages(ch, buf, d->len, flags, d->tag);
                        vmq_free_pages(buf, n);
                }
        } else {
                r = image_send_pages(ch, vmq_desc_pages(d), d->len, flags, d->tag);
        }
        rr = image_release(p, d);
        return r < 0 ? r : rr;
}

#endif /* VMQ_GUEST_IMAGE_H */
