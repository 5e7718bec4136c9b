/* SPDX-License-Identifier: MIT */
/*
 * ELF64 loader for guest images, and whole-file reading.
 *
 * The image comes from whoever asked for a VM, so it is hostile input: each
 * header is copied out of the buffer (no aligned access into it is assumed)
 * and each field is checked before it is used, with every sum checked for
 * overflow.  Once vmq_elf_parse() accepts an image, loading it is a plain
 * copy whose every range is known to be inside the file and the load range.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/elf.h"
#include "core/util.h"

/* Program headers we are willing to look at; a real guest has three or
 * four.  More is a malformed (or malicious) image. */
#define MAX_PHDRS 64u

static bool add_overflows(uint64_t a, uint64_t b, uint64_t *sum) {
        return __builtin_add_overflow(a, b, sum);
}

static int check_ehdr(const Elf64_Ehdr *eh, size_t size) {
        if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0)
                return -ENOEXEC;
        if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
            eh->e_ident[EI_VERSION] != EV_CURRENT)
                return -ENOEXEC;
        if (eh->e_machine != EM_X86_64 || eh->e_version != EV_CURRENT)
                return -ENOEXEC;
        /* Guests are static executables at fixed addresses: no ET_DYN
         * (PIE), which would need relocation we do not do. */
        if (eh->e_type != ET_EXEC)
                return -ENOEXEC;

        if (eh->e_ehsize != sizeof(Elf64_Ehdr))
                return -EINVAL;
        if (eh->e_phentsize != sizeof(Elf64_Phdr))
                return -EINVAL;
        /* 0: nothing to load; PN_XNUM: the real count hides in a section
         * header, which no guest image needs. */
        if (eh->e_phnum == 0 || eh->e_phnum >= PN_XNUM || eh->e_phnum > MAX_PHDRS)
                return -EINVAL;

        uint64_t table_size = (uint64_t)eh->e_phnum * eh->e_phentsize;
        uint64_t table_end;
        if (add_overflows(eh->e_phoff, table_size, &table_end) || table_end > size)
                return -EOVERFLOW;
        return 0;
}

static int check_segment(const Elf64_Phdr *ph, size_t size, uint64_t load_min, uint64_t load_max) {
        uint64_t end;
        if (add_overflows(ph->p_offset, ph->p_filesz, &end) || end > size)
                return -EOVERFLOW;
        if (ph->p_filesz > ph->p_memsz)
                return -EINVAL;
        if (add_overflows(ph->p_vaddr, ph->p_memsz, &end))
                return -EOVERFLOW;
        /* identity-mapped guests: the physical address is the virtual one */
        if (ph->p_paddr != ph->p_vaddr)
                return -EINVAL;
        /* The ELF rule for loadable segments; a file breaking it was not
         * made by a linker. */
        if (ph->p_align > 1 &&
            (!VMQ_IS_POW2(ph->p_align) || (ph->p_vaddr - ph->p_offset) % ph->p_align != 0))
                return -EINVAL;
        if (ph->p_vaddr < load_min || end > load_max)
                return -ERANGE;
        return 0;
}

int vmq_elf_parse(const void *image, size_t size, uint64_t load_min, uint64_t load_max,
                  struct vmq_elf_info *ret) {
        if (!image || !ret || load_min > load_max)
                return -EINVAL;

        Elf64_Ehdr eh;
        if (size < sizeof(eh))
                return -ENOEXEC;
        memcpy(&eh, image, sizeof(eh));
        int r = check_ehdr(&eh, size);
        if (r < 0)
                return r;

        struct vmq_elf_info info = {.entry = eh.e_entry, .low = UINT64_MAX, .high = 0};
        for (unsigned i = 0; i < eh.e_phnum; i++) {
                Elf64_Phdr ph;
                memcpy(&ph, (const uint8_t *)image + eh.e_phoff + (size_t)i * sizeof(ph),
                       sizeof(ph));

                switch (ph.p_type) {
                case PT_LOAD:
                        break;
                case PT_INTERP:
                case PT_DYNAMIC:
                        /* wants a dynamic loader: not a static executable */
                        return -ENOEXEC;
                default:
                        /* notes, GNU_STACK and the like do not concern us */
                        continue;
                }
                if (ph.p_memsz == 0)
                        continue;

                r = check_segment(&ph, size, load_min, load_max);
                if (r < 0)
                        return r;
                for (unsigned j = 0; j < info.nsegments; j++)
                        if (vmq_ranges_overlap(ph.p_vaddr, ph.p_memsz, info.segments[j].gpa,
                                               info.segments[j].memsz))
                                return -EINVAL;
                if (info.nsegments == VMQ_ELF_MAX_SEGMENTS)
                        return -EINVAL;

                info.segments[info.nsegments++] = (struct vmq_elf_segment){
                        .gpa = ph.p_vaddr,
                        .memsz = ph.p_memsz,
                        .filesz = ph.p_filesz,
                        .offset = ph.p_offset,
                        .flags = ph.p_flags & (PF_R | PF_W | PF_X),
                };
                info.low = VMQ_MIN(info.low, ph.p_vaddr);
                info.high = VMQ_MAX(info.high, ph.p_vaddr + ph.p_memsz);
        }
        if (info.nsegments == 0)
                return -EINVAL;

        /* The entry point must be code that came from the file. */
        bool entry_ok = false;
        for (unsigned i = 0; i < info.nsegments; i++) {
                const struct vmq_elf_segment *s = &info.segments[i];
                if ((s->flags & PF_X) && info.entry >= s->gpa && info.entry - s->gpa < s->filesz)
                        entry_ok = true;
        }
        if (!entry_ok)
                return -EINVAL;

        *ret = info;
        return 0;
}

int vmq_elf_load(const void *image, size_t size, const struct vmq_elf_info *info,
                 vmq_elf_translate_t translate, void *ctx) {
        if (!image || !info || !translate || info->nsegments > VMQ_ELF_MAX_SEGMENTS)
                return -EINVAL;

        for (unsigned i = 0; i < info->nsegments; i++) {
                const struct vmq_elf_segment *s = &info->segments[i];
                /* parse() guaranteed these; re-checked because a mismatched
                 * info/image pair would otherwise read out of bounds */
                if (s->filesz > s->memsz || !vmq_range_within(s->offset, s->filesz, 0, size))
                        return -EINVAL;

                uint8_t *dst = translate(ctx, s->gpa, s->memsz);
                if (!dst)
                        return -EFAULT;
                memcpy(dst, (const uint8_t *)image + s->offset, s->filesz);
                memset(dst + s->filesz, 0, s->memsz - s->filesz);
        }
        return 0;
}

int vmq_read_file(const char *path, size_t max_size, void **ret_data, size_t *ret_size) {
        if (!path || !ret_data || !ret_size)
                return -EINVAL;
        /* keeps max_size + 1 below from wrapping */
        if (max_size == SIZE_MAX)
                max_size--;

        /* O_NONBLOCK: a FIFO (or a device that waits) must not hold the
         * caller until someone opens its other end; it is refused below. */
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return -errno;

        struct stat st;
        if (fstat(fd, &st) < 0)
                return -errno;
        if (S_ISDIR(st.st_mode))
                return -EISDIR;
        if (!S_ISREG(st.st_mode))
                return -EINVAL;
        if ((uint64_t)st.st_size > max_size)
                return -EFBIG;

        /* The file may grow while we read it: read up to max_size + 1 bytes
         * so that growth past the limit is still refused. */
        size_t cap = (size_t)st.st_size + 1;
        _cleanup_free_ uint8_t *data = malloc(cap);
        if (!data)
                return -ENOMEM;
        size_t len = 0;
        for (;;) {
                if (len == cap) {
                        if (cap > max_size)
                                return -EFBIG;
                        size_t ncap = VMQ_MIN(cap * 2, max_size + 1);
                        uint8_t *n = realloc(data, ncap);
                        if (!n)
                                return -ENOMEM;
                        data = n;
                        cap = ncap;
                }
                ssize_t k = read(fd, data + len, cap - len);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                if (k == 0)
                        break;
                len += (size_t)k;
        }
        if (len > max_size)
                return -EFBIG;

        *ret_data = VMQ_TAKE_PTR(data);
        *ret_size = len;
        return 0;
}
