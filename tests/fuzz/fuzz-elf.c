/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer harness for the ELF loader (core/elf.c).  The input is a guest
 * image.
 *
 * vmq_elf_parse() runs with the load range vm.c gives the smallest micro-VM
 * (4 MiB of RAM, one vCPU).  Its answer is checked against a second,
 * independent reading of the raw image here: an accepted image must be a
 * static x86-64 ELF64 executable whose every loaded segment is a PT_LOAD
 * program header inside the file and the load range, with paddr == vaddr, a
 * sane alignment, no overlap and the entry point in executable file bytes.
 * A refused image must leave *ret untouched.
 *
 * vmq_elf_load() then runs with a translate callback that, like vm.c's
 * translate_cb, refuses ranges outside guest RAM, and that hands out a
 * fresh heap buffer of exactly the requested length, so AddressSanitizer
 * sees any byte written past the range the loader asked for.  The loaded
 * bytes are compared with the image.  Two more loads check the error paths:
 * a callback that refuses one range (-EFAULT), and a truncated copy of the
 * image with the same info (the mismatch vmq_elf_load() re-checks, -EINVAL).
 */
#include <elf.h>
#include <errno.h>
#include <stdbool.h>

#include "core/elf.h"
#include "core/util.h"
#include "core/vmq-abi.h"
#include "tests/fuzz/fuzz-util.h"

/* The smallest micro-VM vm.c accepts: ram_size 4 MiB, one vCPU whose stack
 * is at the top of RAM. */
#define RAM_SIZE (4ull * 1024 * 1024)
#define LOAD_MIN VMQ_IMAGE_GPA
#define LOAD_MAX (RAM_SIZE - VMQ_STACK_SIZE)

struct load_ctx {
        unsigned calls;
        unsigned refuse_call; /* 1-based; 0: refuse none */
        struct {
                uint8_t *buf;
                uint64_t gpa, len;
        } seg[VMQ_ELF_MAX_SEGMENTS];
};

static void *translate(void *userdata, uint64_t gpa, uint64_t len) {
        struct load_ctx *ctx = userdata;

        /* The loader asks once per segment, and only for ranges that parse
         * put inside the load range. */
        FUZZ_CHECK(ctx->calls < VMQ_ELF_MAX_SEGMENTS);
        FUZZ_CHECK(len > 0);
        FUZZ_CHECK(vmq_range_within(gpa, len, LOAD_MIN, LOAD_MAX - LOAD_MIN));
        /* What vm.c's translate_cb (vmq_space_translate over [0, ram)) does. */
        if (!vmq_range_within(gpa, len, 0, RAM_SIZE))
                return NULL;
        if (++ctx->calls == ctx->refuse_call)
                return NULL;

        uint8_t *buf = malloc(len);
        FUZZ_CHECK(buf);
        /* Garbage, so that a loader that skips the bss memset is caught. */
        memset(buf, 0xa5, len);
        ctx->seg[ctx->calls - 1].buf = buf;
        ctx->seg[ctx->calls - 1].gpa = gpa;
        ctx->seg[ctx->calls - 1].len = len;
        return buf;
}

static void ctx_free(struct load_ctx *ctx) {
        for (unsigned i = 0; i < VMQ_ELF_MAX_SEGMENTS; i++)
                free(ctx->seg[i].buf);
        memset(ctx, 0, sizeof(*ctx));
}

/* An independent reading of what vmq_elf_parse() accepted. */
static void check_accepted(const uint8_t *image, size_t size, const struct vmq_elf_info *info) {
        Elf64_Ehdr eh;
        FUZZ_CHECK(size >= sizeof(eh));
        memcpy(&eh, image, sizeof(eh));
        FUZZ_CHECK(memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0);
        FUZZ_CHECK(eh.e_ident[EI_CLASS] == ELFCLASS64);
        FUZZ_CHECK(eh.e_ident[EI_DATA] == ELFDATA2LSB);
        FUZZ_CHECK(eh.e_ident[EI_VERSION] == EV_CURRENT);
        FUZZ_CHECK(eh.e_machine == EM_X86_64 && eh.e_version == EV_CURRENT);
        FUZZ_CHECK(eh.e_type == ET_EXEC);
        FUZZ_CHECK(eh.e_ehsize == sizeof(Elf64_Ehdr) && eh.e_phentsize == sizeof(Elf64_Phdr));
        FUZZ_CHECK(eh.e_phnum > 0 && eh.e_phnum <= 64);
        FUZZ_CHECK(eh.e_phoff <= size && size - eh.e_phoff >= eh.e_phnum * sizeof(Elf64_Phdr));
        FUZZ_CHECK(info->entry == eh.e_entry);

        FUZZ_CHECK(info->nsegments >= 1 && info->nsegments <= VMQ_ELF_MAX_SEGMENTS);
        unsigned k = 0;
        uint64_t low = UINT64_MAX, high = 0;
        bool entry_ok = false;
        for (unsigned i = 0; i < eh.e_phnum; i++) {
                Elf64_Phdr ph;
                memcpy(&ph, image + eh.e_phoff + i * sizeof(ph), sizeof(ph));
                FUZZ_CHECK(ph.p_type != PT_INTERP && ph.p_type != PT_DYNAMIC);
                if (ph.p_type != PT_LOAD || ph.p_memsz == 0)
                        continue;

                /* The k-th loadable program header is the k-th segment. */
                FUZZ_CHECK(k < info->nsegments);
                const struct vmq_elf_segment *s = &info->segments[k++];
                FUZZ_CHECK(s->gpa == ph.p_vaddr && s->memsz == ph.p_memsz);
                FUZZ_CHECK(s->filesz == ph.p_filesz && s->offset == ph.p_offset);
                FUZZ_CHECK(s->flags == (ph.p_flags & (PF_R | PF_W | PF_X)));
                FUZZ_CHECK(ph.p_paddr == ph.p_vaddr);
                FUZZ_CHECK(s->filesz <= s->memsz);
                FUZZ_CHECK(vmq_range_within(s->offset, s->filesz, 0, size));
                FUZZ_CHECK(vmq_range_within(s->gpa, s->memsz, LOAD_MIN, LOAD_MAX - LOAD_MIN));
                if (ph.p_align > 1) {
                        FUZZ_CHECK(VMQ_IS_POW2(ph.p_align));
                        FUZZ_CHECK((ph.p_vaddr - ph.p_offset) % ph.p_align == 0);
                }
                for (unsigned j = 0; j + 1 < k; j++) {
                        const struct vmq_elf_segment *o = &info->segments[j];
                        FUZZ_CHECK(s->gpa + s->memsz <= o->gpa || o->gpa + o->memsz <= s->gpa);
                }
                low = VMQ_MIN(low, s->gpa);
                high = VMQ_MAX(high, s->gpa + s->memsz);
                if ((s->flags & PF_X) && info->entry >= s->gpa && info->entry - s->gpa < s->filesz)
                        entry_ok = true;
        }
        FUZZ_CHECK(k == info->nsegments);
        FUZZ_CHECK(info->low == low && info->high == high);
        FUZZ_CHECK(entry_ok);
}

/* The loaded bytes are the file bytes, then zeroes up to memsz. */
static void check_loaded(const uint8_t *image, const struct vmq_elf_info *info,
                         const struct load_ctx *ctx) {
        FUZZ_CHECK(ctx->calls == info->nsegments);
        for (unsigned i = 0; i < info->nsegments; i++) {
                const struct vmq_elf_segment *s = &info->segments[i];
                FUZZ_CHECK(ctx->seg[i].gpa == s->gpa && ctx->seg[i].len == s->memsz);
                FUZZ_CHECK(memcmp(ctx->seg[i].buf, image + s->offset, s->filesz) == 0);
                for (uint64_t j = s->filesz; j < s->memsz; j++)
                        FUZZ_CHECK(ctx->seg[i].buf[j] == 0);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        struct vmq_elf_info info, untouched;
        struct load_ctx ctx = {0};
        int r;

        memset(&info, 0x5a, sizeof(info));
        untouched = info;
        r = vmq_elf_parse(data, size, LOAD_MIN, LOAD_MAX, &info);
        if (r < 0) {
                FUZZ_CHECK(r == -ENOEXEC || r == -EINVAL || r == -ERANGE || r == -EOVERFLOW);
                FUZZ_CHECK(memcmp(&info, &untouched, sizeof(info)) == 0);
                return 0;
        }
        FUZZ_CHECK(r == 0);
        check_accepted(data, size, &info);

        /* The normal load. */
        r = vmq_elf_load(data, size, &info, translate, &ctx);
        FUZZ_CHECK(r == 0);
        check_loaded(data, &info, &ctx);
        ctx_free(&ctx);

        /* A guest memory accessor that refuses one segment's range. */
        ctx.refuse_call = 1 + (unsigned)(size % info.nsegments);
        r = vmq_elf_load(data, size, &info, translate, &ctx);
        FUZZ_CHECK(r == -EFAULT && ctx.calls == ctx.refuse_call);
        ctx_free(&ctx);

        /* The same info with a truncated image: segments past the end must
         * be refused before anything is read from them.  The copy is exactly
         * `cut` bytes long so that AddressSanitizer sees a read past it. */
        size_t cut = size - 1 - data[size - 1] % size;
        uint8_t *copy = malloc(cut ? cut : 1);
        FUZZ_CHECK(copy);
        memcpy(copy, data, cut);
        bool fits = true;
        for (unsigned i = 0; i < info.nsegments; i++)
                fits &= vmq_range_within(info.segments[i].offset, info.segments[i].filesz, 0, cut);
        r = vmq_elf_load(copy, cut, &info, translate, &ctx);
        FUZZ_CHECK(fits ? r == 0 : r == -EINVAL);
        if (r == 0)
                check_loaded(copy, &info, &ctx);
        ctx_free(&ctx);
        free(copy);
        return 0;
}
