/* SPDX-License-Identifier: MIT */
/*
 * vmq guest SDK.
 *
 * Everything a vmq micro-VM image needs on top of the guest ABI
 * (core/vmq-abi.h): start-up, hypercalls, sending and receiving messages and
 * pages, a page allocator, a console printf, time, arguments.
 *
 * An image defines `int vmq_main(void)` and links with guest/guest.ld,
 * guest/libvmqguest.a and -lgcc.  Start-up (guest/start.S) runs vmq_main() on
 * vCPU 0 after vmq_guest_init(); its return value becomes the VM's exit code.
 * Other vCPUs run vmq_secondary(), which parks them unless the image defines
 * its own.
 *
 * Error convention: calls that can fail return 0 (or a non-negative result
 * where said) and a negative VMQ_E_* code on failure, exactly as the monitor
 * answers; vmq_strerror() names the codes.
 *
 * Concurrency: the SDK keeps no locks.  The plain hypercall wrappers (send,
 * release, console, clock, nop, exit, wait) use the calling vCPU's own
 * mailbox (found from the stack pointer, see vmq_vcpu()) and may be called
 * from any vCPU that runs on the stack the monitor gave it.  The queue
 * consumer (vmq_try_recv / vmq_recv / vmq_peer), the post-ring producer
 * (vmq_post_*), the allocators, the argument helpers' callers' buffers and
 * vmq_printf's output interleaving are single-threaded: use them from one
 * vCPU only (the stock images use vCPU 0 only).
 *
 * Guest addresses are identity mapped: a pointer value is its guest-physical
 * address.
 */
#ifndef VMQ_GUEST_H
#define VMQ_GUEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/vmq-abi.h"
#include "guest/vmq-link.h"

#define VMQ_NORETURN __attribute__((noreturn))
#define VMQ_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ------------------------------------------------------------------------ */
/* Entry points                                                              */

/* The image's main function, run on vCPU 0.  Its return value is the VM's
 * exit code (VMQ_HC_EXIT). */
int vmq_main(void);

/* Run on every vCPU other than 0 with its index.  The SDK's weak default
 * parks the vCPU (VMQ_HC_PARK) for good; an image may define its own.  If it
 * returns, the vCPU parks. */
void vmq_secondary(unsigned index);

/* Called by start-up on vCPU 0 before vmq_main(): checks the VMCS magic and
 * version and the ring layout (on a mismatch it prints why and exits with
 * code 125), sets up the page allocators and the TSC rate.  vmcs_gpa is the
 * %rsi the monitor passed.  Not for images to call. */
void vmq_guest_init(uint64_t vmcs_gpa);

/* ------------------------------------------------------------------------ */
/* Low level                                                                 */

/* Issues hypercall nr: `inl %dx,%eax` on port VMQ_HC_PORT_BASE + nr.  The
 * arguments must already be in the calling vCPU's mailbox (vmq_mbox()); the
 * "memory" clobber orders every earlier store before the exit.  Returns the
 * monitor's %eax: 0, a non-negative result, or -VMQ_E_*. */
static inline int32_t vmq_hypercall(unsigned nr) {
        int32_t ret;
        __asm__ volatile("inl %%dx, %%eax"
                         : "=a"(ret)
                         : "d"((uint16_t)(VMQ_HC_PORT_BASE + nr))
                         : "memory");
        return ret;
}

/* Reads the time-stamp counter. */
static inline uint64_t vmq_rdtsc(void) {
        uint32_t lo, hi;
        __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
        return ((uint64_t)hi << 32) | lo;
}

/* Spin-loop hint (`pause`). */
static inline void vmq_cpu_relax(void) {
        __asm__ volatile("pause" ::: "memory");
}

/* The VMCS (at VMQ_VMCS_GPA).  Valid from the first instruction on. */
struct vmq_vmcs *vmq_vmcs(void);

/* This VM's identity as stamped by the monitor (vmq_vmcs()->self). */
const struct vmq_identity *vmq_self(void);

/* Index of the calling vCPU, derived from the stack pointer: the monitor
 * gives vCPU i the stack below ram_size - i * VMQ_STACK_SIZE.  Code that
 * switches to a stack of its own is taken for vCPU 0. */
unsigned vmq_vcpu(void);

/* The calling vCPU's mailbox, vmq_vmcs()->mbox[vmq_vcpu()]. */
struct vmq_request *vmq_mbox(void);

/* Fills *req with a well-formed empty request: abi = VMQ_ABI_VERSION, every
 * other field 0 (src_vm 0 = "me").  Start from this before setting op,
 * channel, gpa, len, flags, tag. */
void vmq_request_init(struct vmq_request *req);

/* Copies *req verbatim (nothing is fixed up: a request with a wrong abi,
 * src_vm or reserved field goes out as it is) into the calling vCPU's
 * mailbox and issues hypercall nr.  Returns the monitor's answer.  For tests
 * of the monitor's checks; ordinary code uses the calls below. */
int vmq_hypercall_req(unsigned nr, const struct vmq_request *req);

/* VMQ_HC_NOP: an exit that does nothing (the raw exit round trip).
 * Returns the monitor's answer (0). */
int vmq_nop(void);

/* Stops the VM with exit code `code` (VMQ_HC_EXIT).  Does not return. */
VMQ_NORETURN void vmq_exit(int code);

/* Stops the calling vCPU until the VM stops (VMQ_HC_PARK).  Does not
 * return. */
VMQ_NORETURN void vmq_park(void);

/* Name of an error code, e.g. vmq_strerror(-VMQ_E_AGAIN) = "AGAIN"; accepts
 * the code with either sign.  "?" for unknown codes. */
const char *vmq_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Sending                                                                   */

/* Immediate send of len <= VMQ_INLINE_MAX bytes on channel ch with a tag
 * (VMQ_HC_SEND, one exit).  Returns 0 when the message is on the receiver's
 * queue; -VMQ_E_AGAIN when the receiver's queue is full (nothing happened,
 * retry later); -VMQ_E_LEN (without an exit) when len is too big; any other
 * -VMQ_E_* from the monitor. */
int vmq_send_inline(uint32_t ch, const void *data, size_t len, uint64_t tag);

/* Immediate send of the page run at `pages` (aligned to the frame size of its
 * region: 4 KiB for RAM and the 4 KiB receive window, 2 MiB for the huge
 * regions) holding len > 0 bytes: ceil(len / frame) frames.  flags is
 * VMQ_REQ_F_COPY, VMQ_REQ_F_FLIP, VMQ_REQ_F_SHARE or 0 (the channel's
 * policy).  After a FLIP the run holds fresh zeroed frames, still owned by
 * the sender; after a SHARE the run cannot move or be released until the
 * receiver releases it (-VMQ_E_BUSY) and the receiver sees later writes to
 * it.  Pages may come from RAM at or above VMQ_IMAGE_GPA (the heap), from
 * the own huge region, or from received non-shared pages in the receive
 * windows (forwarding).  A page received as a read-only share
 * (VMQ_DESC_F_SHARED) cannot be sent on by any method, to a VM or to the
 * host: -VMQ_E_NOTOWNED.  Returns 0, -VMQ_E_AGAIN (receiver's queue or
 * window full, or the host's inbox or host memory budget: nothing happened),
 * -VMQ_E_NOMEM (the message can never fit the host memory budget, or the
 * move would pass this VM's mapping budget), -VMQ_E_LEN (len 0 or above
 * UINT32_MAX, no exit) or another -VMQ_E_* from the monitor. */
int vmq_send_pages(uint32_t ch, const void *pages, size_t len, uint32_t flags, uint64_t tag);

/* Immediate send of a request built by the caller (vmq_request_init() then
 * fields); the SDK sets nothing.  Same returns as above. */
int vmq_send_request(const struct vmq_request *req);

/* Posted sends: write the request into the post ring without an exit.  The
 * monitor's poller carries it out while it polls this VM's post ring (for a
 * while after the last request it found, 100 us by default), and else the
 * SDK rings the doorbell after posting, because the monitor said so in
 * vmcs->post_doorbell (see "Notifications" in core/vmq-abi.h): a guest that
 * posts steadily makes no exit at all.  The monitor also drains the ring at
 * this VM's next exit of any kind and on vmq_flush().  The payload (inline data is copied into
 * the ring now; pages are read only when the monitor carries the request
 * out) must stay untouched until then.  A posted request that fails comes
 * back as a VMQ_DESC_ERROR descriptor on this VM's own queue (error =
 * VMQ_E_*, tag = the request's tag, channel = its channel).  A request the
 * receiver has no room for is not an error: it waits at the head of the
 * ring, in order, and the monitor retries it when the receiver makes room.
 * When the ring is full the SDK calls vmq_flush() and tries again (a few
 * times).  Returns 0 once posted, -VMQ_E_AGAIN if the ring stayed full,
 * -VMQ_E_LEN for an inline len above VMQ_INLINE_MAX or a page len of 0,
 * -VMQ_E_NOSYS when the VMCS has no post ring.  vCPU 0 only (one producer). */
int vmq_post_inline(uint32_t ch, const void *data, size_t len, uint64_t tag);
int vmq_post_pages(uint32_t ch, const void *pages, size_t len, uint32_t flags, uint64_t tag);
/* Posts a request verbatim (nothing is fixed up). */
int vmq_post_request(const struct vmq_request *req);

/*
 * Batches: fill several slots of the post ring in place, then publish them
 * with one index store and at most one doorbell.  vmq_post_room() is the
 * number of free slots now; vmq_post_slot(i) is the i-th of them (i below
 * the room; fill it completely, starting from vmq_request_init());
 * vmq_post_commit(n) publishes the first n.  Example, 64-byte messages:
 *
 *     uint32_t n = vmq_post_room();
 *     for (uint32_t i = 0; i < n; i++) {
 *             struct vmq_request *s = vmq_post_slot(i);
 *             vmq_request_init(s);
 *             s->op = VMQ_OP_INLINE, s->channel = ch, s->len = 64;
 *             memcpy(s->data, msg[i], 64);
 *     }
 *     vmq_post_commit(n);
 *
 * vCPU 0 only, like every posting call.  vmq_post_slot() returns NULL when
 * the VM has no post ring or i is past its capacity.
 */
uint32_t vmq_post_room(void);
struct vmq_request *vmq_post_slot(uint32_t i);
void vmq_post_commit(uint32_t n);

/* The notification step every posting call ends with: a full barrier, then
 * the doorbell if the monitor asked for one.  Returns whether it rang.  For
 * code that writes the ring itself, or after vmq_set_post_doorbell(false). */
bool vmq_post_notify(void);

/* true (the default): posting calls end with vmq_post_notify().  false:
 * they never ring; posted requests wait for the poller if it happens to
 * poll this VM, for the next exit, for vmq_flush() or for vmq_doorbell()
 * (the "natural exit" mode, which batches a whole burst into one exit). */
void vmq_set_post_doorbell(bool on);

/* Number of posted requests the monitor has not carried out yet.  The
 * monitor takes requests in order and moves its index past one only after
 * carrying it out, so when this drops to k, every request but the last k
 * posted is done and its payload pages may be reused.  A request the
 * receiver has no room for stays at the head of the ring (no ERROR, no
 * loss) until the receiver makes room. */
uint32_t vmq_post_pending(void);

/* Capacity of the post ring (0: none). */
uint32_t vmq_post_capacity(void);

/* Rings the doorbell (`outb` to VMQ_DOORBELL_PORT, an ioeventfd) whatever
 * vmcs->post_doorbell says: the monitor drains the post ring soon,
 * asynchronously, and polls it for a while; there is no answer. */
void vmq_doorbell(void);

/* VMQ_HC_FLUSH: the monitor drains the post ring now.  Returns the number of
 * requests drained (>= 0) or -VMQ_E_*.  When it returns, every request
 * posted before the call has been carried out and its ERROR descriptor, if
 * any, is on this VM's queue. */
int vmq_flush(void);

/* ------------------------------------------------------------------------ */
/* Receiving                                                                 */

/* Dequeues one descriptor into *ret without blocking or exiting.  HELLO
 * descriptors also record the peer's identity for vmq_peer(); CLOSE forgets
 * it.  Returns 0 with *ret filled, -VMQ_E_AGAIN when the queue is empty,
 * -VMQ_E_PROTO when the queue indices are impossible.  vCPU 0 only. */
/* What vmq_try_recv()/vmq_recv() do when they dequeue a SHUTDOWN
 * descriptor (the host stopping the VM gracefully), before returning it: by
 * default print a line and vmq_exit(0).  NULL: just return the descriptor. */
void vmq_set_shutdown_handler(void (*handler)(void));

int vmq_try_recv(struct vmq_desc *ret);

/* Dequeues one descriptor, waiting up to timeout_ns (0: poll once,
 * UINT64_MAX: forever).  It first spins on the queue in the guest for the
 * spin time (vmq_set_spin_ns(), default 30 us: waking a sleeping vCPU costs
 * far more), then blocks in the monitor (VMQ_HC_WAIT).  Returns 0 with *ret
 * filled, -VMQ_E_TIMEDOUT, or another -VMQ_E_*.  vCPU 0 only. */
int vmq_recv(struct vmq_desc *ret, uint64_t timeout_ns);

/* Dequeues up to n descriptors into ret[0..n): waits for the first as
 * vmq_recv() does, then takes whatever else is there with one update of
 * the queue's index.  Returns how many (>= 1), or -VMQ_E_* as vmq_recv();
 * -VMQ_E_INVAL for n == 0.  A SHUTDOWN descriptor ends the batch (the
 * shutdown handler runs after the batch is taken).  vCPU 0 only. */
int vmq_recv_batch(struct vmq_desc *ret, size_t n, uint64_t timeout_ns);

/* Sets how long vmq_recv() spins before blocking (0: block at once).
 * Measured with the TSC when its rate is known, else as a fixed number of
 * `pause` iterations (about 1000 per 30 us). */
void vmq_set_spin_ns(uint64_t ns);

/* VMQ_HC_WAIT: blocks until this VM's queue is non-empty or timeout_ns
 * elapse (0: do not block, UINT64_MAX: forever).  Returns 0 when the queue is
 * non-empty, -VMQ_E_TIMEDOUT otherwise.  Waiting also drains the post ring
 * (it is an exit). */
int vmq_wait(uint64_t timeout_ns);

/* Gives received pages back (VMQ_HC_RELEASE): pages = the descriptor's gpa,
 * len = its len.  After this the slots are empty and must not be touched.
 * Pages received as a share whose sharer went away (a VMQ_DESC_REVOKED
 * descriptor for them arrives) stay readable until released like this.
 * Releasing a whole received run is never refused for the mapping budget.
 * Returns 0 or -VMQ_E_*. */
int vmq_release(const void *pages, size_t len);

/* Gives back the pages of every VMQ_DESC_PAGE descriptor among d[0..n), as
 * vmq_release() would each, in fewer exits: runs that are exactly adjacent
 * (one's len rounded up to its frame size, 4 KiB or 2 MiB with
 * VMQ_DESC_F_HUGE, ends where the next starts) in the same window are
 * merged, whatever the order of the descriptors, and each merged run is
 * one VMQ_HC_RELEASE (the monitor places the messages of a burst next to
 * each other, so a received batch is usually one or two runs).  Runs are
 * merged within groups of 64 page descriptors, and up to 4 GiB.  Other
 * kinds are skipped, VMQ_DESC_REVOKED included: it tells of pages an
 * earlier PAGE descriptor delivered, and release those through that one
 * (its run may span several messages, and once they are released its
 * slots may hold new ones).  When the monitor refuses a merged run, which
 * it then leaves untouched, its descriptors are released one by one, so
 * every page that can be released is.  Returns 0, or the error of the
 * first descriptor in d's order whose pages were not released (the others
 * were).  After this, none of the descriptors' slots may be touched. */
int vmq_release_batch(const struct vmq_desc *d, size_t n);

/* The payload of a PAGE descriptor as a pointer. */
static inline void *vmq_desc_pages(const struct vmq_desc *d) {
        return (void *)(uintptr_t)d->gpa;
}

/* Most channels whose peer identity vmq_peer() remembers. */
#define VMQ_PEERS_MAX 32u

/* Identity of the peer at the other end of channel ch, as carried by the
 * channel's HELLO (seen by vmq_try_recv / vmq_recv).  Returns 0 and fills
 * *ret, or -VMQ_E_NOCHAN when no HELLO was seen for ch (or it was closed). */
int vmq_peer(uint32_t ch, struct vmq_identity *ret);

/* ------------------------------------------------------------------------ */
/* Memory                                                                    */

/* Allocates n contiguous 4 KiB pages from the heap: the RAM between the
 * page-aligned end of the image and the vCPU stacks at the top of RAM
 * (ram_size - vcpus * VMQ_STACK_SIZE).  The pages are 4 KiB aligned; their
 * content is undefined (fresh RAM and flipped-away pages are zero).  Returns
 * NULL when n is 0 or no run of n free pages exists.  vCPU 0 only. */
void *vmq_alloc_pages(size_t n);

/* Frees n pages from vmq_alloc_pages().  Pages outside the heap are
 * ignored. */
void vmq_free_pages(void *pages, size_t n);

/* Free pages left in the heap (not necessarily contiguous). */
size_t vmq_heap_free_pages(void);

/* Allocates n contiguous 2 MiB frames from the VM's own huge region
 * (layout.huge_gpa, huge_size).  Returns NULL when n is 0, the host gave no
 * huge region, or no run of n free frames exists.  vCPU 0 only. */
void *vmq_alloc_huge(size_t n);

/* Frees n frames from vmq_alloc_huge(). */
void vmq_free_huge(void *frames, size_t n);

/* Free 2 MiB frames left in the huge region. */
size_t vmq_huge_free_frames(void);

/*
 * Smallest message for which vmq_alloc_buffer() picks 2 MiB frames.  Moving
 * a whole 2 MiB frame costs about as much as copying 64 KiB on the machines
 * vmq was measured on, and much less than copying 512 KiB; below this size a
 * copy of 4 KiB pages wins.
 */
#define VMQ_AUTO_HUGE_MIN (512u * 1024u)

/*
 * Allocates a send buffer of `bytes` placed for the monitor's adaptive
 * ("auto") transfer: 2 MiB frames, which the monitor moves by remapping,
 * when bytes >= VMQ_AUTO_HUGE_MIN and enough frames are free; otherwise 4 KiB
 * pages, which it copies.  *ret_huge (may be NULL) says which; free with
 * vmq_free_huge() or vmq_free_pages() accordingly.  NULL when neither fits.
 */
void *vmq_alloc_buffer(size_t bytes, bool *ret_huge);

/* ------------------------------------------------------------------------ */
/* Console                                                                   */

/* Writes len bytes to the VM's console (VMQ_HC_CONSOLE, in pieces of at most
 * 4096 bytes).  buf must be in guest memory (any pointer of the image is). */
void vmq_console_write(const void *buf, size_t len);

/* Formats to the console.  Conversions: %s %c %d %i %u %x %X %p %% with the
 * length modifiers hh h l ll z j t, flags '-' (left-justify) '0' (zero pad)
 * '#' (0x prefix), a width and, for %s, a precision (both may be '*').
 * uint64_t is `unsigned long` here: print it with %lu / %lx.  Output is
 * buffered and written with as few console hypercalls as possible (one per
 * call for lines up to 512 bytes).  Returns the number of bytes written. */
int vmq_printf(const char *fmt, ...) VMQ_PRINTF(1, 2);
int vmq_vprintf(const char *fmt, va_list ap) VMQ_PRINTF(1, 0);

/* Formats into buf (at most size bytes including the NUL, which is always
 * written when size > 0).  Returns the length the full output would have. */
int vmq_snprintf(char *buf, size_t size, const char *fmt, ...) VMQ_PRINTF(3, 4);
int vmq_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) VMQ_PRINTF(3, 0);

/* Formats a binary UUID as 36 characters "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
 * (lowercase) plus a NUL into buf. */
void vmq_format_uuid(char buf[37], const uint8_t uuid[16]);

/* ------------------------------------------------------------------------ */
/* Time                                                                      */

/* Host CLOCK_MONOTONIC in ns (VMQ_HC_CLOCK: one exit). */
uint64_t vmq_clock_ns(void);

/* TSC ticks per millisecond: vmq_vmcs()->tsc_khz, or, when the monitor gave
 * 0, a rate measured once against vmq_clock_ns() over about 2 ms (the first
 * call pays for that). */
uint64_t vmq_tsc_khz(void);

/* Converts TSC ticks to ns (no overflow for any tick count). */
uint64_t vmq_tsc_to_ns(uint64_t ticks);

/* Busy-waits ns nanoseconds in the guest (no exit, except the one-off TSC
 * measurement of vmq_tsc_khz()). */
void vmq_delay_ns(uint64_t ns);

/* ------------------------------------------------------------------------ */
/* Arguments: vmq_vmcs()->args, "key=value key=value ..."                    */

/* Value of key as a number: decimal, or hexadecimal with 0x, optionally
 * followed by one of k K (x 1024), m M (x 2^20), g G (x 2^30).  When the key
 * appears several times the last one counts.  Returns def when the key is
 * absent or its value is not such a number. */
uint64_t vmq_arg_u64(const char *key, uint64_t def);

/* Copies key's value (NUL-terminated, truncated to size - 1 bytes) into buf.
 * Returns the value's full length (>= 0), or -1 when the key is absent (buf
 * is then untouched). */
int vmq_arg_str(const char *key, char *buf, size_t size);

/* Same over any argument string (at most max bytes are looked at), for
 * code that parses strings of its own. */
int vmq_args_get(const char *args, size_t max, const char *key, char *buf, size_t size);

/* Parses a number as vmq_arg_u64() does.  Returns 0 and sets *ret, or -1. */
int vmq_parse_u64(const char *s, uint64_t *ret);

/* ------------------------------------------------------------------------ */
/* Utilities                                                                 */

/* FNV-1a, 64 bit: start with h = VMQ_FNV_INIT and feed the bytes in order;
 * feeding a buffer in pieces gives the same result as feeding it whole. */
#define VMQ_FNV_INIT 0xcbf29ce484222325ull
#define VMQ_FNV_PRIME 0x100000001b3ull
uint64_t vmq_fnv1a(uint64_t h, const void *p, size_t n);

/* Sorts n 64-bit values in place, ascending (heapsort: no recursion, no
 * allocation). */
void vmq_sort_u64(uint64_t *v, size_t n);

/* The C library functions gcc may emit calls to, and a few more. */
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

#endif /* VMQ_GUEST_H */
