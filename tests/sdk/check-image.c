/* SPDX-License-Identifier: MIT */
/*
 * vmq-check-image: is a file a guest image that vmq can load?  It runs the
 * monitor's own checks (vmq_read_file() and vmq_elf_parse(), core/elf.h)
 * with the load range that vmqd gives a machine of the given memory size
 * and vCPU count, and prints the image's entry point and segments.
 *
 *   tests/sdk/vmq-check-image [--memory BYTES] [--vcpus N] IMAGE...
 *
 * BYTES defaults to 16 MiB (vmqd's default machine, vmqd.conf(5)), N to 1.
 * Exits 0 when every IMAGE passes, 1 when one does not, 2 on a usage error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/elf.h"
#include "core/vmq-abi.h"

static int usage(void) {
        fprintf(stderr, "usage: vmq-check-image [--memory BYTES] [--vcpus N] IMAGE...\n");
        return 2;
}

static int parse_u64(const char *s, uint64_t *ret) {
        char *end;
        unsigned long long v;

        errno = 0;
        v = strtoull(s, &end, 0);
        if (errno || end == s || *end)
                return -1;
        *ret = v;
        return 0;
}

static int check(const char *path, uint64_t load_max) {
        struct vmq_elf_info info;
        void *data = NULL;
        size_t size = 0;
        int r;

        r = vmq_read_file(path, VMQ_IMAGE_MAX, &data, &size);
        if (r < 0) {
                fprintf(stderr, "%s: cannot read: %s\n", path, strerror(-r));
                return 1;
        }
        r = vmq_elf_parse(data, size, VMQ_IMAGE_GPA, load_max, &info);
        free(data);
        if (r < 0) {
                fprintf(stderr, "%s: not a vmq guest image: %s\n", path, strerror(-r));
                return 1;
        }
        printf("%s: vmq guest image, entry 0x%" PRIx64 ", %u segments:", path, info.entry,
               info.nsegments);
        for (unsigned i = 0; i < info.nsegments; i++) {
                const struct vmq_elf_segment *s = &info.segments[i];
                printf(" %c%c%c@0x%" PRIx64 "+0x%" PRIx64, s->flags & 4 ? 'r' : '-',
                       s->flags & 2 ? 'w' : '-', s->flags & 1 ? 'x' : '-', s->gpa, s->memsz);
        }
        printf("\n");
        return 0;
}

int main(int argc, char **argv) {
        uint64_t memory = 16u * 1024 * 1024, vcpus = 1;
        int i, status = 0;

        for (i = 1; i < argc && argv[i][0] == '-'; i += 2) {
                if (i + 1 >= argc)
                        return usage();
                if (strcmp(argv[i], "--memory") == 0) {
                        if (parse_u64(argv[i + 1], &memory) < 0)
                                return usage();
                } else if (strcmp(argv[i], "--vcpus") == 0) {
                        if (parse_u64(argv[i + 1], &vcpus) < 0 || vcpus == 0)
                                return usage();
                } else {
                        return usage();
                }
        }
        if (i >= argc)
                return usage();
        if (vcpus > memory / VMQ_STACK_SIZE || memory - vcpus * VMQ_STACK_SIZE <= VMQ_IMAGE_GPA) {
                fprintf(stderr, "vmq-check-image: --memory is too small for %" PRIu64 " vCPUs\n",
                        vcpus);
                return 2;
        }
        for (; i < argc; i++)
                if (check(argv[i], memory - vcpus * VMQ_STACK_SIZE))
                        status = 1;
        return status;
}
