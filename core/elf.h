/* SPDX-License-Identifier: MIT */
/*
 * ELF64 loader for guest images.  The image is untrusted input: every
 * header field is checked (magic, class, data, version, machine, type,
 * header sizes, program-header table bounds, segment offsets and sizes with
 * overflow checks, filesz <= memsz, alignment, segments inside the allowed
 * load range and not overlapping each other).
 */
#ifndef VMQ_ELF_H
#define VMQ_ELF_H

#include <stddef.h>
#include <stdint.h>

#define VMQ_ELF_MAX_SEGMENTS 16

struct vmq_elf_segment {
        uint64_t gpa;    /* p_paddr == p_vaddr (identity-mapped guests) */
        uint64_t memsz;
        uint64_t filesz;
        uint64_t offset; /* in the image */
        uint32_t flags;  /* PF_R | PF_W | PF_X */
};

struct vmq_elf_info {
        uint64_t entry;
        uint64_t low;  /* lowest segment address */
        uint64_t high; /* first byte past the highest segment */
        unsigned nsegments;
        struct vmq_elf_segment segments[VMQ_ELF_MAX_SEGMENTS];
};

/*
 * Parses and validates an ET_EXEC x86-64 little-endian ELF64 image whose
 * PT_LOAD segments must all lie in [load_min, load_max) and whose entry
 * point must lie in an executable segment.
 * Returns 0; -ENOEXEC (not an ELF64 x86-64 executable: magic, class, data,
 * machine, type, version), -EINVAL (inconsistent headers, filesz > memsz,
 * overlapping segments, no loadable segment, too many segments, entry outside
 * code), -ERANGE (a segment outside the load range, e.g. over the VMCS),
 * -EOVERFLOW (an offset + size that overflows or exceeds the file).
 */
int vmq_elf_parse(const void *image, size_t size, uint64_t load_min, uint64_t load_max,
                  struct vmq_elf_info *ret);

/* Guest memory accessor used by the loader: host pointer for [gpa, gpa+len)
 * or NULL. */
typedef void *(*vmq_elf_translate_t)(void *ctx, uint64_t gpa, uint64_t len);

/* Copies file bytes of every segment and zeroes the rest (bss).  The info
 * must come from vmq_elf_parse() of the same image.  -EFAULT when the
 * translate callback refuses a range. */
int vmq_elf_load(const void *image, size_t size, const struct vmq_elf_info *info,
                 vmq_elf_translate_t translate, void *ctx);

/* Reads a whole file (a guest image) into a malloc()ed buffer, refusing
 * files larger than max_size (-EFBIG). */
int vmq_read_file(const char *path, size_t max_size, void **ret_data, size_t *ret_size);

#endif /* VMQ_ELF_H */
