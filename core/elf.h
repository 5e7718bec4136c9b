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
        uint64_t gpa; /* p_paddr == p_vaddr (identity-mapped guests) */
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
 * PT_LOAD segments of zero memsz are skipped; other program headers are
 * ignored, except PT_INTERP and PT_DYNAMIC (a dynamic executable).
 * Returns 0; -ENOEXEC (not a static ELF64 x86-64 executable: truncated
 * header, magic, class, data, machine, type (ET_DYN too), version, PT_INTERP
 * or PT_DYNAMIC), -EINVAL (inconsistent headers: e_ehsize, e_phentsize,
 * e_phnum 0 or above 64, p_paddr != p_vaddr, p_align not a power of two or
 * not congruent, filesz > memsz, overlapping segments, no loadable segment,
 * more than VMQ_ELF_MAX_SEGMENTS, entry outside the file bytes of an
 * executable segment), -ERANGE (a segment outside [load_min, load_max), e.g.
 * over the VMCS), -EOVERFLOW (an offset + size that overflows or exceeds the
 * file, or a vaddr + memsz that wraps).  *ret is written only on success.
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

/* The largest guest image file vmq reads: images are small (the SDK's are
 * tens of KiB), and reading one must stay quick. */
#define VMQ_IMAGE_MAX (16u * 1024u * 1024u)

/* Reads a whole regular file (a guest image) into a malloc()ed buffer,
 * refusing files larger than max_size (-EFBIG), even if they grow while
 * being read.  Never blocks on opening: a FIFO without a writer, a device
 * or a socket is refused like anything else that is not a regular file
 * (-EINVAL); -EISDIR for a directory; else the open/read errno.  An empty
 * file gives size 0 and a buffer to free. */
int vmq_read_file(const char *path, size_t max_size, void **ret_data, size_t *ret_size);

#endif /* VMQ_ELF_H */
