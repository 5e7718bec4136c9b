/* SPDX-License-Identifier: MIT */
/*
 * Channel links ("Channel links" in core/vmq-abi.h): two rings of inline
 * messages in shared memory that the monitor maps into both ends of a
 * channel between two micro-VMs when it opens, and takes away when it
 * closes.  The guests then talk without exits; the monitor only wakes a
 * sleeping end when the other kicks (VMQ_HC_KICK).
 *
 * A link is a memfd of VMQ_LINK_SIZE bytes: [0, 8 KiB) is the ring from
 * end 0 to end 1, [8 KiB, 16 KiB) the other.  End 0 maps it as it is, end
 * 1 with the halves swapped, so that each sees its transmit ring first.
 * The fd is closed as soon as both mappings exist: the memory lives as
 * long as a mapping does, and no fd stays open per channel.
 *
 * The monitor writes each ring's first header line when it makes the link
 * and never reads the link again: it is the two guests' memory, and a
 * hostile one can write anything there.
 *
 * Each VM's link window is one host range of VMQ_LINK_WINDOW bytes, given
 * to KVM as its own memslot at VMQ_LINK_GPA the first time the VM gets a
 * link (PROT_NONE where no link is: a guest touching an unused slot faults
 * as it does on an empty receive slot).  The guest's page tables map the
 * window from creation.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/util.h"
#include "core/vm.h"

#define LINK_HALF (VMQ_LINK_SIZE / 2)
#define LINK_MEMSLOT 4u /* after the four regions' (core/vm.c) */

_Static_assert(LINK_HALF == 2 * VMQ_PAGE_SIZE, "a ring is a header page and a message page");

static int reserve_window(struct vmq_vm *vm) {
        if (vm->link_hva)
                return 0;
        void *p = mmap(NULL, VMQ_LINK_WINDOW, PROT_NONE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
                return -errno;
        if (vm->vm_fd >= 0) {
                int r = vmq_kvm_set_memslot(vm->vm_fd, LINK_MEMSLOT, VMQ_LINK_GPA, VMQ_LINK_WINDOW,
                                            p, 0);
                if (r < 0) {
                        munmap(p, VMQ_LINK_WINDOW);
                        return r;
                }
        }
        vm->link_hva = p;
        return 0;
}

static int find_slot(struct vmq_vm *vm, uint32_t *ret) {
        for (uint32_t k = 0; k < VMQ_LINK_SLOTS; k++) {
                /* round robin, so that a slot is not handed out again at
                 * once: an old HELLO then finds another channel's header */
                uint32_t i = (vm->link_hint + k) % VMQ_LINK_SLOTS;
                if (!(vm->link_used[i / 64] & (1ull << (i % 64)))) {
                        vm->link_hint = i + 1;
                        *ret = i;
                        return 0;
                }
        }
        return -ENOSPC;
}

static void set_used(struct vmq_vm *vm, uint32_t slot, bool used) {
        if (used)
                vm->link_used[slot / 64] |= 1ull << (slot % 64);
        else
                vm->link_used[slot / 64] &= ~(1ull << (slot % 64));
}

static uint8_t *slot_hva(struct vmq_vm *vm, uint32_t slot) {
        return (uint8_t *)vm->link_hva + (size_t)slot * VMQ_LINK_SIZE;
}

static void write_header(uint8_t *ring, uint32_t channel, uint32_t state) {
        struct vmq_link_hdr *h = (struct vmq_link_hdr *)ring;
        h->magic = VMQ_LINK_MAGIC;
        h->channel = channel;
        h->cap = VMQ_LINK_CAP;
        __atomic_store_n(&h->state, state, __ATOMIC_RELEASE);
}

/* Takes the slot's link away from the VM: private zeroed pages whose
 * headers say closed.  false when the kernel refused (the old mapping may
 * still be there). */
static bool retire_slot(struct vmq_vm *vm, uint32_t slot, uint32_t channel) {
        uint8_t *at = slot_hva(vm, slot);
        if (mmap(at, VMQ_LINK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                 -1, 0) == MAP_FAILED)
                return false;
        write_header(at, channel, VMQ_LINK_CLOSED);
        write_header(at + LINK_HALF, channel, VMQ_LINK_CLOSED);
        return true;
}

/* One half of a link into a slot; fails as told by
 * vmq_monitor_fail_link_mmap(). */
static int map_half(struct vmq_monitor *m, uint8_t *at, int fd, off_t off) {
        if (m->link_fail_mmap > 0 && --m->link_fail_mmap == 0)
                return -ENOMEM;
        if (mmap(at, LINK_HALF, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, off) ==
            MAP_FAILED)
                return -errno;
        return 0;
}

/* Maps the memfd's two halves at the slot, swapped for end 1. */
static int map_end(struct vmq_vm *vm, uint32_t slot, int fd, int side) {
        uint8_t *at = slot_hva(vm, slot);
        off_t tx = side == 0 ? 0 : LINK_HALF, rx = side == 0 ? LINK_HALF : 0;
        int r = map_half(vm->mon, at, fd, tx);
        if (r == 0)
                r = map_half(vm->mon, at + LINK_HALF, fd, rx);
        /* A failed MAP_FIXED may already have taken the old pages away, and
         * the guest may still read an old link that had this slot: make it
         * a closed slot, as after a close, so that it stays readable. */
        if (r < 0)
                (void)retire_slot(vm, slot, 0);
        return r;
}

void vmq_monitor_fail_link_mmap(struct vmq_monitor *m, unsigned after) {
        vmq_monitor_wrlock(m);
        m->link_fail_mmap = after;
        pthread_rwlock_unlock(&m->rw);
}

int vmq_monitor_link_make(struct vmq_monitor *m, struct vmq_channel *ch, struct vmq_vm *ends[2]) {
        uint32_t slot[2];
        int fd, r;

        for (int i = 0; i < 2; i++)
                if (!ends[i] || !ends[i]->ops->links)
                        return -EOPNOTSUPP;
        if (m->links >= m->cfg.max_links)
                return -ENOSPC;
        for (int i = 0; i < 2; i++) {
                r = reserve_window(ends[i]);
                if (r < 0)
                        return r;
                r = find_slot(ends[i], &slot[i]);
                if (r < 0)
                        return r;
        }
        fd = memfd_create("vmq-link", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (ftruncate(fd, VMQ_LINK_SIZE) < 0) {
                r = -errno;
                vmq_close(fd);
                return r;
        }
        r = map_end(ends[0], slot[0], fd, 0);
        if (r == 0) {
                r = map_end(ends[1], slot[1], fd, 1);
                if (r < 0)
                        (void)retire_slot(ends[0], slot[0], 0);
        }
        vmq_close(fd);
        if (r < 0)
                return r;
        /* Through end 0's mapping: its halves are the memfd's in order. */
        write_header(slot_hva(ends[0], slot[0]), ch->id, VMQ_LINK_OPEN);
        write_header(slot_hva(ends[0], slot[0]) + LINK_HALF, ch->id, VMQ_LINK_OPEN);
        for (int i = 0; i < 2; i++) {
                set_used(ends[i], slot[i], true);
                ch->link_vm[i] = ends[i];
                ch->link_slot[i] = slot[i];
        }
        ch->linked = true;
        m->links++;
        return 0;
}

uint64_t vmq_monitor_link_gpa(const struct vmq_channel *ch, int side) {
        return VMQ_LINK_GPA + (uint64_t)ch->link_slot[side] * VMQ_LINK_SIZE;
}

void vmq_monitor_link_unmake(struct vmq_monitor *m, struct vmq_channel *ch, uint32_t gone) {
        if (!ch->linked)
                return;
        for (int i = 0; i < 2; i++) {
                struct vmq_vm *vm = ch->link_vm[i];
                /* A VM that is going away loses its whole window. */
                if (vm->id != gone) {
                        if (!retire_slot(vm, ch->link_slot[i], ch->id))
                                /* The shared pages may still be mapped: the
                                 * VM must not run on with a way to its
                                 * former peer.  Only a host out of memory
                                 * for the mapping gets here. */
                                vmq_vm_fault(vm, "host could not take a closed link away");
                        else
                                set_used(vm, ch->link_slot[i], false);
                        atomic_store(&vm->kicked, true);
                        vmq_vm_wake(vm);
                }
                ch->link_vm[i] = NULL;
        }
        ch->linked = false;
        m->links--;
}

void vmq_vm_link_fini(struct vmq_vm *vm) {
        if (vm->link_hva)
                munmap(vm->link_hva, VMQ_LINK_WINDOW);
        vm->link_hva = NULL;
}

int32_t vmq_monitor_link_kick(struct vmq_vm *vm, uint32_t id) {
        struct vmq_channel *ch;
        int side = vmq_monitor_open_end_locked(vm->mon, id, vm->id, &ch);
        if (side < 0)
                return side;
        if (!ch->linked)
                return -VMQ_E_INVAL; /* nothing to kick: it has no link */
        struct vmq_vm *peer = ch->link_vm[1 - side];
        atomic_fetch_add(&vm->st_kicks, 1);
        /* seq_cst: pairs with the waiter's increment of waiters before it
         * looks at kicked (core/vm.c wait_queue) */
        atomic_store(&peer->kicked, true);
        vmq_vm_wake(peer);
        return 0;
}
