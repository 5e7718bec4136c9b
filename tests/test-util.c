/* SPDX-License-Identifier: MIT */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
