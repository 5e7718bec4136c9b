/* SPDX-License-Identifier: MIT */
/*
 * The hostile inputs that are files: images that are not what CreateMachine
 * wants (FIFOs, directories, devices, sparse giants, symlinks, broken and
 * mutated ELF files), and the file descriptors given to SendFd (unsealed or
 * half-sealed memfds, memfds reopened write-only, pipes, sockets, ...).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "tests/busfuzz/busfuzz.h"

/* Files made in the work directory, by name. */
static const char *const made_files[] = {
        "dir",        "fifo",        "sparse-2g",   "sparse-64m1",   "empty",     "text",
        "script",     "trunc-4",     "trunc-16",    "trunc-63",      "trunc-64",  "trunc-120",
        "trunc-half", "trunc-less1", "flip-0",      "flip-1",        "flip-2",    "flip-3",
        "flip-4",     "flip-5",      "flip-6",      "flip-7",        "elf32",     "link-echo",
        "link-dir",   "link-fifo",   "link-loop-a", "link-dangling", "link-zero", "noperm",
        "sock",       "echo-copy",   "link-fifo-2", "fifo-2",
};

/* Paths outside it, and image names. */
static const char *const other_images[] = {
        "echo",
        "sink",
        "source",
        "relay",
        "chaos",
        "witness",
        "hostile",
        "race",
        "bench-tx",
        "bench-rx",
        "nosuch",
        "echo.elf",
        "../echo",
        "./echo",
        "echo/",
        "",
        "ECHO",
        "e\ncho",
        "/",
        "/tmp",
        "/dev/zero",
        "/dev/null",
        "/dev/urandom",
        "/dev/tty",
        "/etc/passwd",
        "/etc/shadow",
        "/proc/self/status",
        "/proc/self/mem",
        "/proc/self/exe",
        "/proc/self/fd/0",
        "/proc/self/fd/1",
        "/proc/self/fd/3",
        "/proc/self/fd/4",
        "/proc/self/fd/5",
        "/proc/self/fd/6",
        "/proc/self/fd/7",
        "/proc/self/fd/8",
        "/proc/self/fd/9",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/nonexistent/image.elf",
        "relative/path.elf",
};

static int write_all(int fd, const void *buf, size_t len) {
        const uint8_t *p = buf;
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

static int put_file(const char *dir, const char *name, const void *data, size_t len, mode_t mode) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        int r = write_all(fd, data, len);
        close(fd);
        if (r == 0 && chmod(path, mode) < 0)
                r = -errno;
        return r;
}

static int sparse(const char *dir, const char *name, off_t size) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        int r = ftruncate(fd, size) < 0 ? -errno : 0;
        close(fd);
        return r;
}

static int link_to(const char *dir, const char *name, const char *target) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        (void)unlink(path);
        return symlink(target, path) < 0 ? -errno : 0;
}

static int read_whole(const char *path, uint8_t **ret, size_t *ret_len) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat st;
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0 || st.st_size <= 0 || st.st_size > 64 * 1024 * 1024) {
                close(fd);
                return -EINVAL;
        }
        uint8_t *buf = malloc((size_t)st.st_size);
        size_t done = 0;
        while (buf && done < (size_t)st.st_size) {
                ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
                if (n <= 0)
                        break;
                done += (size_t)n;
        }
        close(fd);
        if (!buf || done != (size_t)st.st_size) {
                free(buf);
                return -EIO;
        }
        *ret = buf;
        *ret_len = done;
        return 0;
}

int fz_files_make(const char *dir, const char *guest_dir, uint64_t seed) {
        char path[PATH_MAX], target[PATH_MAX];
        uint8_t *elf = NULL;
        size_t elf_len = 0;
        uint64_t rng = fz_mix(seed ^ 0x66696c6573ull);
        int r;

        if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                return -errno;
        (void)chmod(dir, 0755);
        snprintf(path, sizeof(path), "%s/echo.elf", guest_dir);
        r = read_whole(path, &elf, &elf_len);
        if (r < 0) {
                fprintf(stderr, "busfuzz: cannot read %s: %s\n", path, strerror(-r));
                return r;
        }

        snprintf(path, sizeof(path), "%s/dir", dir);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
                goto fail;
        const char *fifos[] = {"fifo", "fifo-2"};
        for (size_t i = 0; i < 2; i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, fifos[i]);
                if (mkfifo(path, 0644) < 0 && errno != EEXIST)
                        goto fail;
        }
        if ((r = sparse(dir, "sparse-2g", 2ll * 1024 * 1024 * 1024)) < 0 ||
            (r = sparse(dir, "sparse-64m1", 64ll * 1024 * 1024 + 1)) < 0 ||
            (r = put_file(dir, "empty", "", 0, 0644)) < 0 ||
            (r = put_file(dir, "text", "not an image\n", 13, 0644)) < 0 ||
            (r = put_file(dir, "script", "#!/bin/sh\nexit 0\n", 17, 0755)) < 0 ||
            (r = put_file(dir, "echo-copy", elf, elf_len, 0644)) < 0 ||
            (r = put_file(dir, "noperm", elf, elf_len, 0000)) < 0)
                goto out;
        const struct {
                const char *name;
                size_t len;
        } cuts[] = {
                {"trunc-4", 4},
                {"trunc-16", 16},
                {"trunc-63", 63},
                {"trunc-64", 64},
                {"trunc-120", 120},
                {"trunc-half", elf_len / 2},
                {"trunc-less1", elf_len - 1},
        };
        for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
                if ((r = put_file(dir, cuts[i].name, elf, cuts[i].len < elf_len ? cuts[i].len : 0,
                                  0644)) < 0)
                        goto out;
        /* Mutated copies: a few bytes of the ELF and program headers (the
         * first 0x200 bytes) and a few anywhere. */
        for (int i = 0; i < 8; i++) {
                uint8_t *m = malloc(elf_len);
                char name[32];
                if (!m) {
                        r = -ENOMEM;
                        goto out;
                }
                memcpy(m, elf, elf_len);
                unsigned flips = 1 + (unsigned)fz_below(&rng, 8);
                for (unsigned k = 0; k < flips; k++) {
                        size_t at = fz_chance(&rng, 700)
                                            ? fz_below(&rng, elf_len < 0x200 ? elf_len : 0x200)
                                            : fz_below(&rng, elf_len);
                        m[at] = fz_chance(&rng, 500) ? (uint8_t)fz_next(&rng) : 0xff;
                }
                snprintf(name, sizeof(name), "flip-%d", i);
                r = put_file(dir, name, m, elf_len, 0644);
                free(m);
                if (r < 0)
                        goto out;
        }
        /* A 32-bit ELF: the class byte says so. */
        {
                uint8_t *m = malloc(elf_len);
                if (!m) {
                        r = -ENOMEM;
                        goto out;
                }
                memcpy(m, elf, elf_len);
                if (elf_len > 4)
                        m[4] = 1; /* ELFCLASS32 */
                r = put_file(dir, "elf32", m, elf_len, 0644);
                free(m);
                if (r < 0)
                        goto out;
        }
        snprintf(target, sizeof(target), "%s/echo.elf", guest_dir);
        if ((r = link_to(dir, "link-echo", target)) < 0 ||
            (r = link_to(dir, "link-dir", "dir")) < 0 ||
            (r = link_to(dir, "link-fifo", "fifo")) < 0 ||
            (r = link_to(dir, "link-fifo-2", "link-fifo")) < 0 ||
            (r = link_to(dir, "link-loop-a", "link-loop-b")) < 0 ||
            (r = link_to(dir, "link-loop-b", "link-loop-a")) < 0 ||
            (r = link_to(dir, "link-dangling", "nothing-here")) < 0 ||
            (r = link_to(dir, "link-zero", "/dev/zero")) < 0)
                goto out;
        /* A socket file: bound, then closed (open() of it gives ENXIO). */
        {
                struct sockaddr_un sa = {.sun_family = AF_UNIX};
                int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                snprintf(path, sizeof(path), "%s/sock", dir);
                (void)unlink(path);
                if (s >= 0 && strlen(path) < sizeof(sa.sun_path)) {
                        memcpy(sa.sun_path, path, strlen(path) + 1);
                        (void)bind(s, (struct sockaddr *)&sa, sizeof(sa));
                }
                if (s >= 0)
                        close(s);
        }
        r = 0;
        goto out;
fail:
        r = -errno;
out:
        free(elf);
        return r;
}

const char *fz_image_path(uint64_t *rng, const char *dir, const char *guest_dir, char *buf,
                          size_t size) {
        const size_t n_made = sizeof(made_files) / sizeof(made_files[0]);
        const size_t n_other = sizeof(other_images) / sizeof(other_images[0]);

        switch (fz_below(rng, 10)) {
        case 0:
        case 1:
        case 2:
        case 3:
                snprintf(buf, size, "%s/%s", dir, made_files[fz_below(rng, n_made)]);
                return buf;
        case 4:
                snprintf(buf, size, "%s/echo.elf", guest_dir);
                return buf;
        case 5: {
                /* a long path or name: up to 8 KiB */
                static const size_t lens[] = {63, 64, 255, 256, 4095, 4096, 4097, 8192};
                size_t len = lens[fz_below(rng, sizeof(lens) / sizeof(lens[0]))];
                if (len >= size)
                        len = size - 1;
                bool absolute = fz_chance(rng, 500);
                for (size_t i = 0; i < len; i++)
                        buf[i] = absolute && (i == 0 || i % 50 == 0) ? '/' : 'a';
                buf[len] = 0;
                return buf;
        }
        default:
                return other_images[fz_below(rng, n_other)];
        }
}

bool fz_blocked_on_fifo(pid_t pid) {
        char path[64], wchan[64];
        struct dirent *de;
        bool blocked = false;
        DIR *d;

        snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
        d = opendir(path);
        if (!d)
                return false;
        while (!blocked && (de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "/proc/%d/task/%.16s/wchan", (int)pid, de->d_name);
                int fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                ssize_t n = read(fd, wchan, sizeof(wchan) - 1);
                close(fd);
                if (n > 0) {
                        wchan[n] = 0;
                        /* open() of a FIFO that has no writer */
                        blocked = strcmp(wchan, "wait_for_partner") == 0;
                }
        }
        closedir(d);
        return blocked;
}

int fz_files_unblock(const char *dir) {
        const char *fifos[] = {"fifo", "fifo-2"};
        char path[PATH_MAX];
        int n = 0;

        for (size_t i = 0; i < 2; i++) {
                snprintf(path, sizeof(path), "%s/%s", dir, fifos[i]);
                /* O_NONBLOCK: succeeds only when a reader has it open. */
                int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
                if (fd >= 0) {
                        n++;
                        close(fd);
                }
        }
        return n;
}

/* A memfd of size bytes holding fz_pattern(tag), sealed with seals. */
static int memfd_with(uint64_t tag, uint64_t size, bool content, int seals) {
        int fd = memfd_create("busfuzz", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        if (ftruncate(fd, (off_t)size) < 0)
                goto fail;
        if (content && size > 0) {
                void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                if (p == MAP_FAILED)
                        goto fail;
                fz_pattern(tag, p, size);
                munmap(p, size);
        }
        if (seals && fcntl(fd, F_ADD_SEALS, seals) < 0)
                goto fail;
        return fd;
fail:;
        int r = -errno;
        close(fd);
        return r;
}

static int open_errno(const char *path, int flags) {
        int fd = open(path, flags | O_CLOEXEC);
        return fd < 0 ? -errno : fd;
}

static int reopen(int fd, int flags) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int r = open(path, flags | O_CLOEXEC);
        int e = errno;
        close(fd);
        return r < 0 ? -e : r;
}

int fz_fd_make(uint64_t *rng, const char *dir, uint64_t tag, uint64_t max_message,
               struct fz_fd *ret) {
        const int sealed = F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW;
        static const uint64_t sizes[] = {0,       1,        100,       4096,
                                         65535,   65536,    65537,     200000,
                                         1 << 20, 4u << 20, 16u << 20, (16u << 20) + 1};
        uint64_t size = sizes[fz_below(rng, sizeof(sizes) / sizeof(sizes[0]))];
        int pipefd[2], sv[2], fd = -1;
        char path[PATH_MAX];

        /* big ones rarely: they cost time under ASan */
        if (size > (1u << 20) && fz_chance(rng, 700))
                size = 1 + fz_below(rng, 70000);
        memset(ret, 0, sizeof(*ret));
        ret->size = size;
        switch (fz_below(rng, 18)) {
        case 0:
        case 1:
        case 2:
        case 3:
        case 4:
        case 5:
                fd = memfd_with(tag, size, true, sealed | (fz_chance(rng, 500) ? F_SEAL_SEAL : 0));
                ret->valid = size <= max_message;
                snprintf(ret->what, sizeof(ret->what), "sealed memfd of %llu bytes",
                         (unsigned long long)size);
                break;
        case 6:
                fd = memfd_with(tag, size, true, 0);
                snprintf(ret->what, sizeof(ret->what), "unsealed memfd of %llu bytes",
                         (unsigned long long)size);
                break;
        case 7:
                fd = memfd_with(tag, size, true, F_SEAL_WRITE);
                snprintf(ret->what, sizeof(ret->what), "memfd sealed only against writing");
                break;
        case 8:
                fd = memfd_with(tag, size, true, F_SEAL_FUTURE_WRITE | F_SEAL_SHRINK | F_SEAL_GROW);
                snprintf(ret->what, sizeof(ret->what), "memfd with F_SEAL_FUTURE_WRITE");
                break;
        case 9:
                fd = memfd_with(tag, size, true, sealed);
                if (fd >= 0)
                        fd = reopen(fd, O_WRONLY);
                snprintf(ret->what, sizeof(ret->what), "sealed memfd reopened write-only");
                break;
        case 10:
                fd = memfd_with(tag, size, true, sealed);
                if (fd >= 0)
                        fd = reopen(fd, O_RDONLY);
                /* the seals are the file's: still a sealed memfd */
                ret->valid = size <= max_message;
                snprintf(ret->what, sizeof(ret->what), "sealed memfd reopened read-only (%llu B)",
                         (unsigned long long)size);
                break;
        case 11:
                /* huge and sparse: far over max_message */
                ret->size = (uint64_t)1 << (30 + fz_below(rng, 4));
                fd = memfd_with(tag, ret->size, false, sealed);
                snprintf(ret->what, sizeof(ret->what), "sealed sparse memfd of %llu bytes",
                         (unsigned long long)ret->size);
                break;
        case 12:
                if (pipe2(pipefd, O_CLOEXEC) < 0)
                        return -errno;
                (void)write(pipefd[1], "x", 1);
                fd = fz_chance(rng, 500) ? pipefd[0] : pipefd[1];
                close(fd == pipefd[0] ? pipefd[1] : pipefd[0]);
                snprintf(ret->what, sizeof(ret->what), "a pipe's %s end",
                         fd == pipefd[0] ? "read" : "write");
                break;
        case 13:
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                        return -errno;
                close(sv[1]);
                fd = sv[0];
                snprintf(ret->what, sizeof(ret->what), "a socket");
                break;
        case 14:
                snprintf(path, sizeof(path), "%s/echo-copy", dir);
                fd = open_errno(path, O_RDONLY);
                snprintf(ret->what, sizeof(ret->what), "a regular file");
                break;
        case 15: {
                static const char *const devs[] = {"/dev/null", "/dev/zero"};
                const char *d = devs[fz_below(rng, 2)];
                fd = open_errno(d, O_RDONLY);
                snprintf(ret->what, sizeof(ret->what), "%s", d);
                break;
        }
        case 16:
                snprintf(path, sizeof(path), "%s/dir", dir);
                fd = open_errno(path, fz_chance(rng, 500) ? O_RDONLY | O_DIRECTORY : O_PATH);
                snprintf(ret->what, sizeof(ret->what), "a directory");
                break;
        default:
                fd = eventfd(0, EFD_CLOEXEC);
                if (fd < 0)
                        fd = -errno;
                snprintf(ret->what, sizeof(ret->what), "an eventfd");
                break;
        }
        if (fd < 0)
                return fd;
        ret->fd = fd;
        return 0;
}
