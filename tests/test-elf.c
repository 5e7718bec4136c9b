/* SPDX-License-Identifier: MIT */
/*
 * ELF loader: a minimal valid ELF64 image is built in memory, then broken in
 * one field at a time; each break must be refused with its own error, and
 * the unbroken image must parse and load byte for byte.
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "core/elf.h"
#include "core/util.h"
#include "core/vmq-abi.h"
#include "tests/test-util.h"

#define IMG_SIZE 0x3000u
#define TEXT_OFF 0x1000u
#define DATA_OFF 0x2000u
#define TEXT_GPA VMQ_IMAGE_GPA
#define DATA_GPA (VMQ_IMAGE_GPA + 0x1000)
#define DATA_MEMSZ 0x2000u /* 16 bytes of data, then bss */
#define LOAD_MAX (4ull << 20)

static const uint8_t text_bytes[16] = {0x66, 0xba, 0x07, 0x05, 0xed, 0xeb, 0xfe, 0x90,
                                       0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0x90, 0xc3};
static const uint8_t data_bytes[16] = "vmq elf data 01";

/* Image under test; 8-byte aligned so the headers can be edited in place. */
static _Alignas(8) uint8_t img[IMG_SIZE];

static Elf64_Ehdr *eh(void) {
        return (Elf64_Ehdr *)img;
}

static Elf64_Phdr *ph(unsigned i) {
        return (Elf64_Phdr *)(img + sizeof(Elf64_Ehdr) + i * sizeof(Elf64_Phdr));
}

static void set_load(unsigned i, uint64_t off, uint64_t gpa, uint64_t filesz, uint64_t memsz,
                     uint32_t flags) {
        *ph(i) = (Elf64_Phdr){
                .p_type = PT_LOAD,
                .p_flags = flags,
                .p_offset = off,
                .p_vaddr = gpa,
                .p_paddr = gpa,
                .p_filesz = filesz,
                .p_memsz = memsz,
                .p_align = 0x1000,
        };
}

/* text (R X) at 1 MiB, data + bss (R W) right after, and a GNU_STACK
 * header that the loader must ignore. */
static void make_image(void) {
        memset(img, 0, sizeof(img));
        Elf64_Ehdr *e = eh();
        memcpy(e->e_ident, ELFMAG, SELFMAG);
        e->e_ident[EI_CLASS] = ELFCLASS64;
        e->e_ident[EI_DATA] = ELFDATA2LSB;
        e->e_ident[EI_VERSION] = EV_CURRENT;
        e->e_type = ET_EXEC;
        e->e_machine = EM_X86_64;
        e->e_version = EV_CURRENT;
        e->e_entry = TEXT_GPA;
        e->e_phoff = sizeof(Elf64_Ehdr);
        e->e_ehsize = sizeof(Elf64_Ehdr);
        e->e_phentsize = sizeof(Elf64_Phdr);
        e->e_phnum = 3;

        set_load(0, TEXT_OFF, TEXT_GPA, sizeof(text_bytes), sizeof(text_bytes), PF_R | PF_X);
        set_load(1, DATA_OFF, DATA_GPA, sizeof(data_bytes), DATA_MEMSZ, PF_R | PF_W);
        *ph(2) = (Elf64_Phdr){.p_type = PT_GNU_STACK, .p_flags = PF_R | PF_W};

        memcpy(img + TEXT_OFF, text_bytes, sizeof(text_bytes));
        memcpy(img + DATA_OFF, data_bytes, sizeof(data_bytes));
}

static int parse(void) {
        struct vmq_elf_info info;
        return vmq_elf_parse(img, sizeof(img), VMQ_IMAGE_GPA, LOAD_MAX, &info);
}

static void setup(void) {
        make_image();
        /* every test starts from an image that is valid */
        cr_assert_eq(parse(), 0);
}

TestSuite(elf, .init = setup);

Test(elf, valid_image_parses) {
        struct vmq_elf_info info;
        memset(&info, 0x5a, sizeof(info));
        cr_assert_eq(vmq_elf_parse(img, sizeof(img), VMQ_IMAGE_GPA, LOAD_MAX, &info), 0);
        cr_assert_eq(info.entry, TEXT_GPA);
        cr_assert_eq(info.low, TEXT_GPA);
        cr_assert_eq(info.high, DATA_GPA + DATA_MEMSZ);
        cr_assert_eq(info.nsegments, 2);
        cr_assert_eq(info.segments[0].gpa, TEXT_GPA);
        cr_assert_eq(info.segments[0].filesz, sizeof(text_bytes));
        cr_assert_eq(info.segments[0].offset, TEXT_OFF);
        cr_assert_eq(info.segments[0].flags, PF_R | PF_X);
        cr_assert_eq(info.segments[1].gpa, DATA_GPA);
        cr_assert_eq(info.segments[1].memsz, DATA_MEMSZ);
        cr_assert_eq(info.segments[1].filesz, sizeof(data_bytes));
        cr_assert_eq(info.segments[1].flags, PF_R | PF_W);
}

struct guest_ram {
        uint8_t *mem;
        uint64_t base;
        uint64_t size;
        unsigned calls;
};

static void *translate(void *ctx, uint64_t gpa, uint64_t len) {
        struct guest_ram *ram = ctx;
        ram->calls++;
        if (!vmq_range_within(gpa, len, ram->base, ram->size))
                return NULL;
        return ram->mem + (gpa - ram->base);
}

Test(elf, valid_image_loads) {
        struct vmq_elf_info info;
        cr_assert_eq(vmq_elf_parse(img, sizeof(img), VMQ_IMAGE_GPA, LOAD_MAX, &info), 0);

        /* guest RAM [1 MiB, 1 MiB + 16 KiB), dirty so that bss zeroing shows */
        struct guest_ram ram = {.base = VMQ_IMAGE_GPA, .size = 0x4000};
        ram.mem = malloc(ram.size);
        cr_assert_not_null(ram.mem);
        memset(ram.mem, 0xaa, ram.size);

        cr_assert_eq(vmq_elf_load(img, sizeof(img), &info, translate, &ram), 0);
        cr_assert_eq(ram.calls, 2);
        cr_assert_arr_eq(ram.mem, text_bytes, sizeof(text_bytes));
        /* between the text's end and the data page: not the loader's business */
        cr_assert_eq(ram.mem[sizeof(text_bytes)], 0xaa);
        uint8_t *data = ram.mem + (DATA_GPA - VMQ_IMAGE_GPA);
        cr_assert_arr_eq(data, data_bytes, sizeof(data_bytes));
        for (size_t i = sizeof(data_bytes); i < DATA_MEMSZ; i++)
                cr_assert_eq(data[i], 0, "bss byte %zu not zeroed", i);
        cr_assert_eq(data[DATA_MEMSZ], 0xaa, "loader wrote past the segment");
        free(ram.mem);
}

Test(elf, load_refused_by_translate) {
        struct vmq_elf_info info;
        cr_assert_eq(vmq_elf_parse(img, sizeof(img), VMQ_IMAGE_GPA, LOAD_MAX, &info), 0);
        uint8_t mem[0x1000];
        /* backs the text page only */
        struct guest_ram ram = {.mem = mem, .base = VMQ_IMAGE_GPA, .size = sizeof(mem)};
        cr_assert_eq(vmq_elf_load(img, sizeof(img), &info, translate, &ram), -EFAULT);
}

/* An info that does not belong to the image (shorter file) is refused
 * rather than read out of bounds. */
Test(elf, load_rechecks_info) {
        struct vmq_elf_info info;
        cr_assert_eq(vmq_elf_parse(img, sizeof(img), VMQ_IMAGE_GPA, LOAD_MAX, &info), 0);
        uint8_t mem[0x4000];
        struct guest_ram ram = {.mem = mem, .base = VMQ_IMAGE_GPA, .size = sizeof(mem)};
        cr_assert_eq(vmq_elf_load(img, DATA_OFF + 8, &info, translate, &ram), -EINVAL);
        info.segments[0].filesz = info.segments[0].memsz + 1;
        cr_assert_eq(vmq_elf_load(img, sizeof(img), &info, translate, &ram), -EINVAL);
}

Test(elf, truncated_header) {
        struct vmq_elf_info info;
        cr_assert_eq(vmq_elf_parse(img, sizeof(Elf64_Ehdr) - 1, VMQ_IMAGE_GPA, LOAD_MAX, &info),
                     -ENOEXEC);
        cr_assert_eq(vmq_elf_parse(img, 0, VMQ_IMAGE_GPA, LOAD_MAX, &info), -ENOEXEC);
}

Test(elf, bad_magic) {
        img[EI_MAG1] = 'e';
        cr_assert_eq(parse(), -ENOEXEC);
}

Test(elf, class32) {
        eh()->e_ident[EI_CLASS] = ELFCLASS32;
        cr_assert_eq(parse(), -ENOEXEC);
}

Test(elf, big_endian) {
        eh()->e_ident[EI_DATA] = ELFDATA2MSB;
        cr_assert_eq(parse(), -ENOEXEC);
}

Test(elf, ident_version) {
        eh()->e_ident[EI_VERSION] = EV_NONE;
        cr_assert_eq(parse(), -ENOEXEC);
}

Test(elf, wrong_machine) {
        eh()->e_machine = EM_AARCH64;
        cr_assert_eq(parse(), -ENOEXEC);
        eh()->e_machine = EM_386;
        cr_assert_eq(parse(), -ENOEXEC);
}

Test(elf, not_exec) {
        eh()->e_type = ET_DYN;
        cr_assert_eq(parse(), -ENOEXEC);
        eh()->e_type = ET_REL;
        cr_assert_eq(parse(), -ENOEXEC);
}

Test(elf, header_version) {
        eh()->e_version = 2;
        cr_assert_eq(parse(), -ENOEXEC);
}

Test(elf, ehsize_wrong) {
        eh()->e_ehsize = sizeof(Elf64_Ehdr) - 1;
        cr_assert_eq(parse(), -EINVAL);
}

Test(elf, phentsize_wrong) {
        eh()->e_phentsize = sizeof(Elf64_Phdr) + 8;
        cr_assert_eq(parse(), -EINVAL);
        eh()->e_phentsize = 0;
        cr_assert_eq(parse(), -EINVAL);
}

Test(elf, phoff_beyond_file) {
        eh()->e_phoff = IMG_SIZE;
        cr_assert_eq(parse(), -EOVERFLOW);
        /* the table starts inside but ends outside */
        eh()->e_phoff = IMG_SIZE - sizeof(Elf64_Phdr);
        cr_assert_eq(parse(), -EOVERFLOW);
}

/* e_phoff + e_phnum * e_phentsize wraps around 2^64 */
Test(elf, phoff_plus_table_wraps) {
        eh()->e_phoff = UINT64_MAX - 16;
        cr_assert_eq(parse(), -EOVERFLOW);
}

Test(elf, phnum_limits) {
        eh()->e_phnum = 0;
        cr_assert_eq(parse(), -EINVAL);
        eh()->e_phnum = PN_XNUM;
        cr_assert_eq(parse(), -EINVAL);
        eh()->e_phnum = 65; /* more program headers than any guest has */
        cr_assert_eq(parse(), -EINVAL);
        /* a plausible count whose table runs past the end of the file */
        eh()->e_phoff = IMG_SIZE - 4 * sizeof(Elf64_Phdr);
        eh()->e_phnum = 5;
        cr_assert_eq(parse(), -EOVERFLOW);
}

Test(elf, segment_beyond_file) {
        ph(1)->p_filesz = IMG_SIZE - DATA_OFF + 1;
        cr_assert_eq(parse(), -EOVERFLOW);
        ph(1)->p_filesz = 16;
        ph(1)->p_offset = IMG_SIZE - 8;
        ph(1)->p_align = 8;
        cr_assert_eq(parse(), -EOVERFLOW);
        /* offset + filesz wraps */
        ph(1)->p_offset = UINT64_MAX - 7;
        cr_assert_eq(parse(), -EOVERFLOW);
}

Test(elf, filesz_above_memsz) {
        ph(1)->p_filesz = 32;
        ph(1)->p_memsz = 31;
        cr_assert_eq(parse(), -EINVAL);
}

Test(elf, vaddr_plus_memsz_wraps) {
        uint64_t gpa = UINT64_MAX & ~0xfffull; /* congruent with offset 0x2000 */
        ph(1)->p_vaddr = ph(1)->p_paddr = gpa;
        ph(1)->p_memsz = 0x2000;
        cr_assert_eq(parse(), -EOVERFLOW);
}

/* A segment over the VMCS (below the load range) */
Test(elf, segment_below_load_min) {
        ph(1)->p_vaddr = ph(1)->p_paddr = VMQ_VMCS_GPA;
        cr_assert_eq(parse(), -ERANGE);
        /* one page below, ending exactly at load_min: still outside */
        ph(1)->p_vaddr = ph(1)->p_paddr = VMQ_IMAGE_GPA - 0x2000;
        cr_assert_eq(parse(), -ERANGE);
}

Test(elf, segment_above_load_max) {
        struct vmq_elf_info info;
        /* data ends at DATA_GPA + DATA_MEMSZ: a limit one byte lower refuses */
        cr_assert_eq(
                vmq_elf_parse(img, sizeof(img), VMQ_IMAGE_GPA, DATA_GPA + DATA_MEMSZ - 1, &info),
                -ERANGE);
        cr_assert_eq(vmq_elf_parse(img, sizeof(img), VMQ_IMAGE_GPA, DATA_GPA + DATA_MEMSZ, &info),
                     0);
        /* well above */
        ph(1)->p_vaddr = ph(1)->p_paddr = VMQ_RX_GPA;
        cr_assert_eq(parse(), -ERANGE);
}

Test(elf, overlapping_segments) {
        /* With 8-byte alignment the only thing wrong is the overlap. */
        ph(1)->p_align = 8;
        ph(1)->p_vaddr = ph(1)->p_paddr = TEXT_GPA + 8;
        cr_assert_eq(parse(), -EINVAL);
        /* right after the text: fine */
        ph(1)->p_vaddr = ph(1)->p_paddr = TEXT_GPA + sizeof(text_bytes);
        cr_assert_eq(parse(), 0);
        /* same start, containing the text */
        ph(1)->p_vaddr = ph(1)->p_paddr = TEXT_GPA;
        ph(1)->p_memsz = 0x100;
        cr_assert_eq(parse(), -EINVAL);
        /* entirely inside the text */
        ph(1)->p_vaddr = ph(1)->p_paddr = TEXT_GPA + 8;
        ph(1)->p_filesz = 0;
        ph(1)->p_memsz = 4;
        cr_assert_eq(parse(), -EINVAL);
}

Test(elf, entry_outside_code) {
        eh()->e_entry = DATA_GPA; /* in a segment, but not executable */
        cr_assert_eq(parse(), -EINVAL);
        eh()->e_entry = TEXT_GPA + sizeof(text_bytes); /* just past the code */
        cr_assert_eq(parse(), -EINVAL);
        eh()->e_entry = TEXT_GPA - 1;
        cr_assert_eq(parse(), -EINVAL);
        eh()->e_entry = 0;
        cr_assert_eq(parse(), -EINVAL);
        eh()->e_entry = TEXT_GPA + sizeof(text_bytes) - 1; /* last code byte */
        cr_assert_eq(parse(), 0);
}

/* Executable, but bss-only: nothing from the file to execute */
Test(elf, entry_in_exec_bss) {
        ph(1)->p_flags = PF_R | PF_W | PF_X;
        eh()->e_entry = DATA_GPA + sizeof(data_bytes);
        cr_assert_eq(parse(), -EINVAL);
        eh()->e_entry = DATA_GPA;
        cr_assert_eq(parse(), 0);
}

/* text + n bss-only segments, one page each */
static void make_many(unsigned n) {
        eh()->e_phnum = (uint16_t)(1 + n);
        for (unsigned i = 1; i <= n; i++)
                set_load(i, 0, TEXT_GPA + 0x1000ull * i, 0, 0x1000, PF_R | PF_W);
}

Test(elf, too_many_segments) {
        make_many(VMQ_ELF_MAX_SEGMENTS - 1);
        cr_assert_eq(parse(), 0);
        make_many(VMQ_ELF_MAX_SEGMENTS);
        cr_assert_eq(parse(), -EINVAL);
}

Test(elf, no_loadable_segment) {
        ph(0)->p_type = PT_NOTE;
        ph(1)->p_type = PT_NOTE;
        cr_assert_eq(parse(), -EINVAL);
        /* PT_LOAD with nothing in it counts as nothing */
        make_image();
        ph(0)->p_memsz = ph(0)->p_filesz = 0;
        ph(1)->p_memsz = ph(1)->p_filesz = 0;
        cr_assert_eq(parse(), -EINVAL);
}

Test(elf, dynamic_executable) {
        ph(2)->p_type = PT_INTERP;
        cr_assert_eq(parse(), -ENOEXEC);
        ph(2)->p_type = PT_DYNAMIC;
        cr_assert_eq(parse(), -ENOEXEC);
}

Test(elf, paddr_differs) {
        ph(1)->p_paddr = DATA_GPA + 0x100000;
        cr_assert_eq(parse(), -EINVAL);
}

Test(elf, bad_alignment) {
        ph(1)->p_align = 0x1800; /* not a power of two */
        cr_assert_eq(parse(), -EINVAL);
        ph(1)->p_align = 0x1000;
        ph(1)->p_offset = DATA_OFF + 0x10; /* offset and vaddr not congruent */
        cr_assert_eq(parse(), -EINVAL);
}

/*
 * Random corruption of the headers (fixed seed, so reproducible): parse()
 * must never crash, and whatever it accepts must satisfy its promises.
 */
Test(elf, random_corruption_keeps_promises) {
        srand(12345);
        unsigned accepted = 0;
        for (int round = 0; round < 20000; round++) {
                make_image();
                int flips = 1 + rand() % 4;
                for (int f = 0; f < flips; f++) {
                        size_t at = (size_t)rand() % (sizeof(Elf64_Ehdr) + 3 * sizeof(Elf64_Phdr));
                        img[at] ^= (uint8_t)(1u << (rand() % 8));
                }
                struct vmq_elf_info info;
                if (vmq_elf_parse(img, sizeof(img), VMQ_IMAGE_GPA, LOAD_MAX, &info) != 0)
                        continue;
                accepted++;
                cr_assert_gt(info.nsegments, 0);
                cr_assert_leq(info.nsegments, VMQ_ELF_MAX_SEGMENTS);
                bool entry_in_code = false;
                for (unsigned i = 0; i < info.nsegments; i++) {
                        const struct vmq_elf_segment *s = &info.segments[i];
                        cr_assert(vmq_range_within(s->gpa, s->memsz, VMQ_IMAGE_GPA,
                                                   LOAD_MAX - VMQ_IMAGE_GPA));
                        cr_assert(vmq_range_within(s->offset, s->filesz, 0, sizeof(img)));
                        cr_assert_leq(s->filesz, s->memsz);
                        if ((s->flags & PF_X) && info.entry >= s->gpa &&
                            info.entry < s->gpa + s->filesz)
                                entry_in_code = true;
                        for (unsigned j = 0; j < i; j++)
                                cr_assert(!vmq_ranges_overlap(s->gpa, s->memsz,
                                                              info.segments[j].gpa,
                                                              info.segments[j].memsz));
                }
                cr_assert(entry_in_code);
        }
        /* flips in padding and flag bits leave the image valid: the test
         * exercised the accepting path too */
        cr_assert_gt(accepted, 0);
}

/* ---- vmq_read_file ---- */

static char tmp_dir[] = "/tmp/vmq-test-elf-XXXXXX";

static void write_file(const char *path, const void *data, size_t size) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        cr_assert_geq(fd, 0);
        cr_assert_eq(write(fd, data, size), (ssize_t)size);
        close(fd);
}

Test(elf, read_file, .timeout = 20) {
        int fds = vmq_test_count_fds();
        cr_assert_not_null(mkdtemp(tmp_dir));
        char path[128];
        snprintf(path, sizeof(path), "%s/image", tmp_dir);
        write_file(path, img, sizeof(img));

        void *data = NULL;
        size_t size = 0;
        cr_assert_eq(vmq_read_file(path, sizeof(img), &data, &size), 0);
        cr_assert_eq(size, sizeof(img));
        cr_assert_arr_eq(data, img, sizeof(img));
        free(data);

        cr_assert_eq(vmq_read_file(path, sizeof(img) - 1, &data, &size), -EFBIG);
        cr_assert_eq(vmq_read_file(path, SIZE_MAX, &data, &size), 0);
        free(data);

        write_file(path, "", 0);
        cr_assert_eq(vmq_read_file(path, 100, &data, &size), 0);
        cr_assert_eq(size, 0);
        free(data);

        cr_assert_eq(vmq_read_file(tmp_dir, 100, &data, &size), -EISDIR);
        cr_assert_eq(vmq_read_file("/dev/null", 100, &data, &size), -EINVAL);
        /* A FIFO nobody writes to is refused at once, not waited on (the
         * suite's timeout ends a read that blocks). */
        unlink(path);
        cr_assert_eq(mkfifo(path, 0600), 0);
        cr_assert_eq(vmq_read_file(path, 100, &data, &size), -EINVAL);
        unlink(path);
        cr_assert_eq(vmq_read_file(path, 100, &data, &size), -ENOENT);
        rmdir(tmp_dir);
        cr_assert_eq(vmq_test_count_fds(), fds);
}
