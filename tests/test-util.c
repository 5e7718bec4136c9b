/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/monitor.h"
#include "core/vm.h"
#include "tests/test-util.h"

static int count_dir_entries(const char *path) {
        DIR *d = opendir(path);
        if (!d)
                return -1;
        int n = 0;
        struct dirent *de;
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n;
}

int vmq_test_count_fds(void) {
        /* opendir itself holds one fd while counting */
        return count_dir_entries("/proc/self/fd") - 1;
}

int vmq_test_count_threads(void) {
        return count_dir_entries("/proc/self/task");
}

static long read_long(const char *path) {
        FILE *f = fopen(path, "re");
        long v = -1;
        if (!f)
                return -1;
        if (fscanf(f, "%ld", &v) != 1)
                v = -1;
        fclose(f);
        return v;
}

long vmq_test_reserve_hugepages(long pages) {
        const char *free_path = "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages";
        const char *nr_path = "/proc/sys/vm/nr_hugepages";
        long free_now = read_long(free_path);
        if (free_now >= pages)
                return free_now;
        long nr = read_long(nr_path);
        if (nr < 0)
                return free_now;
        /* Other suites may be using some right now: add what is missing. */
        long want = nr + (pages - (free_now < 0 ? 0 : free_now));
        int fd = open(nr_path, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) {
                char buf[32];
                int len = snprintf(buf, sizeof(buf), "%ld\n", want);
                if (write(fd, buf, (size_t)len) < 0) {
                        /* not root, or no memory: the caller sees the count */
                }
                close(fd);
        }
        return read_long(free_path);
}

const char *vmq_test_guest(const char *name) {
        static __thread char path[4096];
        const char *dir = getenv("VMQ_GUEST_DIR");
        if (!dir)
                dir = VMQ_GUEST_DIR;
        snprintf(path, sizeof(path), "%s/%s.elf", dir, name);
        return path;
}

#include <elf.h>
#include <stdint.h>

#include "core/vmq-abi.h"

uint64_t vmq_test_fnv1a(uint64_t h, const void *p, size_t n) {
        const uint8_t *b = p;
        for (size_t i = 0; i < n; i++) {
                h ^= b[i];
                h *= 0x100000001b3ull;
        }
        return h;
}

void vmq_test_source_pattern(uint64_t i, uint8_t *buf, size_t len) {
        for (size_t j = 0; j < len; j++)
                buf[j] = (uint8_t)(i * 131 + j * 7 + 1);
}

void *vmq_test_make_elf(const void *code, size_t code_len, size_t *ret_size) {
        size_t off = 0x1000, size = off + code_len;
        uint8_t *img = calloc(1, size);
        Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
        Elf64_Phdr *ph = (Elf64_Phdr *)(img + sizeof(*eh));
        if (!img)
                return NULL;
        memcpy(eh->e_ident, ELFMAG, SELFMAG);
        eh->e_ident[EI_CLASS] = ELFCLASS64;
        eh->e_ident[EI_DATA] = ELFDATA2LSB;
        eh->e_ident[EI_VERSION] = EV_CURRENT;
        eh->e_type = ET_EXEC;
        eh->e_machine = EM_X86_64;
        eh->e_version = EV_CURRENT;
        eh->e_entry = VMQ_IMAGE_GPA;
        eh->e_phoff = sizeof(*eh);
        eh->e_ehsize = sizeof(*eh);
        eh->e_phentsize = sizeof(*ph);
        eh->e_phnum = 1;
        ph->p_type = PT_LOAD;
        ph->p_flags = PF_R | PF_X;
        ph->p_offset = off;
        ph->p_vaddr = ph->p_paddr = VMQ_IMAGE_GPA;
        ph->p_filesz = ph->p_memsz = code_len;
        ph->p_align = 0x1000;
        memcpy(img + off, code, code_len);
        *ret_size = size;
        return img;
}

char *vmq_test_console(struct vmq_vm *vm, char *buf, size_t size) {
        size_t n = size ? vmq_vm_console_read(vm, buf, size - 1) : 0;
        /* A guest may print binary bytes: a NUL would end the string. */
        for (size_t i = 0; i < n; i++)
                if (buf[i] == '\0')
                        buf[i] = '.';
        if (size)
                buf[n] = '\0';
        return buf;
}

/* The last line of text containing needle, or NULL. */
static const char *last_line_with(const char *text, const char *needle, size_t *ret_len) {
        const char *found = NULL;
        for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
                found = p;
        if (!found)
                return NULL;
        while (found > text && found[-1] != '\n')
                found--;
        const char *eol = strchr(found, '\n');
        *ret_len = eol ? (size_t)(eol - found) : strlen(found);
        return found;
}

int vmq_test_wait_line(struct vmq_vm *vm, const char *needle, int timeout_ms, char *line,
                       size_t size) {
        static __thread char text[65536 + 1];
        for (int waited = 0;; waited += 10) {
                size_t len;
                const char *p =
                        last_line_with(vmq_test_console(vm, text, sizeof(text)), needle, &len);
                if (p) {
                        snprintf(line, size, "%.*s", (int)len, p);
                        return 0;
                }
                if (waited >= timeout_ms) {
                        snprintf(line, size, "%s", text);
                        return -ETIMEDOUT;
                }
                usleep(10000);
        }
}

bool vmq_test_line_u64(const char *line, const char *key, int base, uint64_t *ret) {
        size_t klen = strlen(key);
        for (const char *p = strstr(line, key); p; p = strstr(p + 1, key)) {
                if ((p == line || p[-1] == ' ') && p[klen] == '=') {
                        char *end;
                        errno = 0;
                        unsigned long long v = strtoull(p + klen + 1, &end, base);
                        if (errno || end == p + klen + 1)
                                return false;
                        *ret = v;
                        return true;
                }
        }
        return false;
}

bool vmq_test_take(struct vmq_vm *vm, struct vmq_desc *ret) {
        struct vmq_ring_idx *idx =
                (struct vmq_ring_idx *)((uint8_t *)vm->vmcs + vm->vmcs->layout.queue_off);
        struct vmq_desc *slots =
                (struct vmq_desc *)((uint8_t *)vm->vmcs + vm->vmcs->layout.queue_slots_off);
        uint32_t cons = __atomic_load_n(&idx->cons, __ATOMIC_RELAXED);
        if (cons == __atomic_load_n(&idx->prod, __ATOMIC_ACQUIRE))
                return false;
        memcpy(ret, &slots[cons & (vm->vmcs->layout.queue_cap - 1)], sizeof(*ret));
        __atomic_store_n(&idx->cons, cons + 1, __ATOMIC_RELEASE);
        return true;
}
