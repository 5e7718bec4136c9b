/* SPDX-License-Identifier: MIT */
/*
 * Start-up, the VMCS, the per-vCPU mailbox and the simple hypercalls.
 */
#include "guest/lib/internal.h"

/* Initialised so that it is right even before start.S stores %rsi. */
struct vmq_vmcs *vmq__vmcs = (struct vmq_vmcs *)(uintptr_t)VMQ_VMCS_GPA;

/* TSC rate: from the VMCS, or measured on demand (0: not known yet). */
uint64_t vmq__tsc_khz;

struct vmq_vmcs *vmq_vmcs(void) {
        return vmq__vmcs;
}

const struct vmq_identity *vmq_self(void) {
        return &vmq__vmcs->self;
}

unsigned vmq_vcpu(void) {
        uint64_t sp, top = vmq__vmcs->layout.ram_size, i;

        __asm__("movq %%rsp, %0" : "=r"(sp));
        if (sp >= top)
                return 0;
        i = (top - 1 - sp) / VMQ_STACK_SIZE;
        return i < VMQ_MAX_VCPUS ? (unsigned)i : 0;
}

struct vmq_request *vmq_mbox(void) {
        return &vmq__vmcs->mbox[vmq_vcpu()];
}

void vmq_request_init(struct vmq_request *req) {
        memset(req, 0, sizeof(*req));
        req->abi = VMQ_ABI_VERSION;
}

int vmq_hypercall_req(unsigned nr, const struct vmq_request *req) {
        memcpy(vmq_mbox(), req, sizeof(*req));
        return vmq_hypercall(nr);
}

/* Prepares the mailbox for an argument-less or arg-only hypercall: a valid
 * header so that a monitor checking it is satisfied. */
static struct vmq_request *mbox_simple(uint64_t arg) {
        struct vmq_request *m = vmq_mbox();

        m->abi = VMQ_ABI_VERSION;
        m->op = VMQ_OP_NONE;
        m->flags = 0;
        m->channel = 0;
        m->src_vm = 0;
        m->gpa = 0;
        m->len = 0;
        m->reserved = 0;
        m->tag = 0;
        m->arg = arg;
        return m;
}

int vmq_nop(void) {
        return vmq_hypercall(VMQ_HC_NOP);
}

void vmq_exit(int code) {
        mbox_simple((uint64_t)(int64_t)code);
        for (;;)
                vmq_hypercall(VMQ_HC_EXIT);
}

void vmq_park(void) {
        mbox_simple(0);
        for (;;)
                vmq_hypercall(VMQ_HC_PARK);
}

__attribute__((weak)) void vmq_secondary(unsigned index) {
        (void)index;
        vmq_park();
}

const char *vmq_strerror(int err) {
        static const char *const names[VMQ_E_MAX] = {
                [VMQ_OK] = "OK",
                [VMQ_E_INVAL] = "INVAL",
                [VMQ_E_NOTOWNED] = "NOTOWNED",
                [VMQ_E_RANGE] = "RANGE",
                [VMQ_E_ALIGN] = "ALIGN",
                [VMQ_E_LEN] = "LEN",
                [VMQ_E_NOCHAN] = "NOCHAN",
                [VMQ_E_AGAIN] = "AGAIN",
                [VMQ_E_FORGED] = "FORGED",
                [VMQ_E_VERSION] = "VERSION",
                [VMQ_E_NOSYS] = "NOSYS",
                [VMQ_E_CLOSED] = "CLOSED",
                [VMQ_E_TIMEDOUT] = "TIMEDOUT",
                [VMQ_E_NOMEM] = "NOMEM",
                [VMQ_E_BUSY] = "BUSY",
                [VMQ_E_PROTO] = "PROTO",
        };
        unsigned e = err < 0 ? (unsigned)-(int64_t)err : (unsigned)err;

        return e < VMQ_E_MAX && names[e] ? names[e] : "?";
}

void vmq_console_write(const void *buf, size_t len) {
        const uint8_t *p = buf;

        while (len > 0) {
                size_t n = len > VMQ_PAGE_SIZE ? VMQ_PAGE_SIZE : len;
                struct vmq_request *m = mbox_simple(0);

                m->gpa = (uint64_t)(uintptr_t)p;
                m->len = (uint32_t)n;
                vmq_hypercall(VMQ_HC_CONSOLE);
                p += n;
                len -= n;
        }
}

uint64_t vmq_clock_ns(void) {
        struct vmq_request *m = mbox_simple(0);

        m->result = 0;
        vmq_hypercall(VMQ_HC_CLOCK);
        return m->result;
}

uint64_t vmq_tsc_khz(void) {
        uint64_t t0, c0, t1, c1;

        if (vmq__tsc_khz)
                return vmq__tsc_khz;
        if (vmq__vmcs->tsc_khz) {
                vmq__tsc_khz = vmq__vmcs->tsc_khz;
                return vmq__tsc_khz;
        }
        /* The monitor does not know: measure against the host clock.  Each
         * clock call is an exit, so the error is a few exits in 2 ms. */
        t0 = vmq_clock_ns();
        c0 = vmq_rdtsc();
        do {
                t1 = vmq_clock_ns();
                c1 = vmq_rdtsc();
        } while (t1 - t0 < 2000000 && t1 >= t0);
        if (t1 > t0 && c1 > c0)
                vmq__tsc_khz = (c1 - c0) * 1000000 / (t1 - t0);
        if (!vmq__tsc_khz)
                vmq__tsc_khz = 1000000; /* no TSC progress: pretend 1 GHz */
        return vmq__tsc_khz;
}

uint64_t vmq_tsc_to_ns(uint64_t ticks) {
        uint64_t khz = vmq_tsc_khz();

        /* ticks * 1e6 / khz without overflowing 64 bits */
        return ticks / khz * 1000000 + ticks % khz * 1000000 / khz;
}

void vmq_delay_ns(uint64_t ns) {
        uint64_t khz = vmq_tsc_khz();
        uint64_t ticks = ns / 1000000 * khz + ns % 1000000 * khz / 1000000;
        uint64_t start = vmq_rdtsc();

        while (vmq_rdtsc() - start < ticks)
                vmq_cpu_relax();
}

void vmq_guest_init(uint64_t vmcs_gpa) {
        static const char bad_magic[] = "vmq: VMCS magic or ABI version mismatch\n";
        static const char bad_layout[] = "vmq: impossible VMCS ring layout\n";

        vmq__vmcs = (struct vmq_vmcs *)(uintptr_t)vmcs_gpa;
        if (vmq__vmcs->magic != VMQ_ABI_MAGIC || vmq__vmcs->abi_version < VMQ_ABI_VERSION) {
                vmq_console_write(bad_magic, sizeof(bad_magic) - 1);
                vmq_exit(125);
        }
        if (vmq__vmcs->tsc_khz)
                vmq__tsc_khz = vmq__vmcs->tsc_khz;
        if (vmq__queue_init() < 0) {
                vmq_console_write(bad_layout, sizeof(bad_layout) - 1);
                vmq_exit(125);
        }
        vmq__mem_init();
}
