/* SPDX-License-Identifier: MIT */
/*
 * The guest half of tests/libvirt/vsock-e2e: a small static program that
 * speaks AF_VSOCK through the guest kernel's own virtio-vsock driver, and
 * prints one line per result on stdout for the host to follow.
 *
 *   vsock-probe serve PORT stream|seqpacket
 *       echoes every connection on PORT (forever; one process per
 *       connection): a stream byte for byte, a seqpacket record for record
 *   vsock-probe stream CID PORT BYTES
 *       connects, sends BYTES patterned bytes while reading the echo, and
 *       prints "VSOCK-STREAM ok bytes=N md5=<fnv> ms=T" (or "failed ...")
 *   vsock-probe seqpacket CID PORT RECORDS
 *       sends RECORDS records of sizes 1..~16 KiB, each echoed back whole:
 *       "VSOCK-SEQPACKET ok records=N bytes=B"
 *   vsock-probe refused CID PORT
 *       "VSOCK-REFUSED ok errno=E" when the connection is refused or reset
 *   vsock-probe retry CID PORT SECONDS
 *       tries to connect once a tenth of a second until it works:
 *       "VSOCK-RETRY ok after=N"
 *   vsock-probe cid
 *       "VSOCK-CID <the guest's own CID>"
 *   vsock-probe rtt CID PORT COUNT
 *       COUNT round trips of 64 bytes on a stream to an echo:
 *       "VSOCK-RTT ok count=N us_per_rt=U"
 *   vsock-probe who CID
 *       asks vmqd's identity service (CID 2, port 1) "WHO CID" and prints
 *       "VSOCK-WHO <its answer>"
 *   vsock-probe name NAME SECONDS
 *       asks it "NAME NAME" once a second until the answer is OK, and
 *       prints "VSOCK-NAME <that answer>" (or the last one, after SECONDS)
 * And the same measures over vmq's own transport, the ivshmem-doorbell
 * device (libvmq-client's guest transport, compiled in), for the figures
 * next to vsock's:
 *   vsock-probe ivs-echo
 *       reflects every message on any channel (forever)
 *   vsock-probe ivs-bench PEER COUNT BYTES
 *       on the channel with machine PEER (an ivs-echo there): COUNT round
 *       trips of 64 bytes, "IVS-RTT ok count=N us_per_rt=U"; then BYTES
 *       patterned bytes there and back in messages of up to 64 KiB, at
 *       most 4 in flight, "IVS-STREAM ok bytes=N ms=T"
 * Exit status 0 on success.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "libvmq-client/vmq-guest-ivshmem.h"

static long long now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static uint8_t pattern(uint64_t i) {
        return (uint8_t)(i * 2654435761u >> 13);
}

/* FNV-1a over what went each way: both ends print it. */
static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n) {
        for (size_t i = 0; i < n; i++)
                h = (h ^ p[i]) * 0x100000001b3ull;
        return h;
}

static int vsock_socket(int type) {
        int s = socket(AF_VSOCK, type | SOCK_CLOEXEC, 0);
        if (s < 0)
                printf("VSOCK-ERROR socket: %s\n", strerror(errno));
        return s;
}

static int vsock_connect(unsigned cid, unsigned port, int type) {
        struct sockaddr_vm a = {.svm_family = AF_VSOCK, .svm_cid = cid, .svm_port = port};
        int s = vsock_socket(type);
        if (s < 0)
                return -1;
        struct timeval tv = {.tv_sec = 20};
        (void)setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        (void)setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0) {
                int e = errno;
                close(s);
                errno = e;
                return -1;
        }
        return s;
}

static int serve(unsigned port, int type) {
        struct sockaddr_vm a = {
                .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = port};
        int l = vsock_socket(type);
        if (l < 0)
                return 1;
        if (bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 16) < 0) {
                printf("VSOCK-ERROR bind %u: %s\n", port, strerror(errno));
                return 1;
        }
        signal(SIGCHLD, SIG_IGN);
        printf("VSOCK-SERVING port=%u\n", port);
        fflush(stdout);
        for (;;) {
                int c = accept(l, NULL, NULL);
                if (c < 0)
                        continue;
                if (fork() == 0) {
                        static uint8_t buf[65536];
                        for (;;) {
                                ssize_t n = recv(c, buf, sizeof(buf), 0);
                                if (n <= 0)
                                        _exit(0);
                                for (ssize_t d = 0; d < n;) {
                                        ssize_t w = send(c, buf + d, (size_t)(n - d), MSG_NOSIGNAL);
                                        if (w <= 0)
                                                _exit(0);
                                        d += w;
                                }
                        }
                }
                close(c);
        }
}

static int stream(unsigned cid, unsigned port, size_t bytes) {
        long long t0 = now_us();
        int s = vsock_connect(cid, port, SOCK_STREAM);
        if (s < 0) {
                printf("VSOCK-STREAM failed connect errno=%d (%s)\n", errno, strerror(errno));
                return 1;
        }
        static uint8_t out[16384], in[65536];
        size_t sent = 0, got = 0;
        uint64_t hs = 0xcbf29ce484222325ull, hr = hs;
        while (got < bytes) {
                if (sent < bytes) {
                        size_t n = bytes - sent < sizeof(out) ? bytes - sent : sizeof(out);
                        for (size_t i = 0; i < n; i++)
                                out[i] = pattern(sent + i);
                        ssize_t w = send(s, out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                        if (w > 0) {
                                hs = fnv(hs, out, (size_t)w);
                                sent += (size_t)w;
                        } else if (w < 0 && errno != EAGAIN) {
                                printf("VSOCK-STREAM failed send at %zu: %s\n", sent,
                                       strerror(errno));
                                return 1;
                        }
                }
                ssize_t r = recv(s, in, sizeof(in), sent < bytes ? MSG_DONTWAIT : 0);
                if (r == 0 || (r < 0 && errno != EAGAIN)) {
                        printf("VSOCK-STREAM failed recv at %zu: %s\n", got,
                               r == 0 ? "end of file" : strerror(errno));
                        return 1;
                }
                if (r > 0) {
                        for (ssize_t i = 0; i < r; i++)
                                if (in[i] != pattern(got + (size_t)i)) {
                                        printf("VSOCK-STREAM failed: byte %zu differs\n",
                                               got + (size_t)i);
                                        return 1;
                                }
                        hr = fnv(hr, in, (size_t)r);
                        got += (size_t)r;
                }
        }
        long long ms = (now_us() - t0) / 1000;
        close(s);
        printf("VSOCK-STREAM ok bytes=%zu sent=%016llx got=%016llx ms=%lld\n", got,
               (unsigned long long)hs, (unsigned long long)hr, ms);
        return hs == hr ? 0 : 1;
}

static int seqpacket(unsigned cid, unsigned port, unsigned records) {
        int s = vsock_connect(cid, port, SOCK_SEQPACKET);
        if (s < 0) {
                printf("VSOCK-SEQPACKET failed connect errno=%d (%s)\n", errno, strerror(errno));
                return 1;
        }
        static uint8_t out[16384], in[32768];
        size_t total = 0;
        for (unsigned k = 0; k < records; k++) {
                size_t n = 1 + (k * 7919u) % sizeof(out);
                for (size_t i = 0; i < n; i++)
                        out[i] = pattern(k * 1000003u + i);
                if (send(s, out, n, MSG_NOSIGNAL) != (ssize_t)n) {
                        printf("VSOCK-SEQPACKET failed send %u: %s\n", k, strerror(errno));
                        return 1;
                }
                ssize_t r = recv(s, in, sizeof(in), 0);
                if (r != (ssize_t)n || memcmp(in, out, n) != 0) {
                        printf("VSOCK-SEQPACKET failed: record %u of %zu bytes came back as "
                               "%zd bytes%s\n",
                               k, n, r, r == (ssize_t)n ? " (different)" : "");
                        return 1;
                }
                total += n;
        }
        close(s);
        printf("VSOCK-SEQPACKET ok records=%u bytes=%zu\n", records, total);
        return 0;
}

static int refused(unsigned cid, unsigned port) {
        int s = vsock_connect(cid, port, SOCK_STREAM);
        if (s >= 0) {
                printf("VSOCK-REFUSED failed: connected\n");
                return 1;
        }
        bool ok = errno == ECONNRESET || errno == ECONNREFUSED;
        printf("VSOCK-REFUSED %s errno=%d (%s)\n", ok ? "ok" : "failed", errno, strerror(errno));
        return ok ? 0 : 1;
}

static int retry(unsigned cid, unsigned port, unsigned seconds) {
        for (unsigned i = 0; i < seconds * 10; i++) {
                int s = vsock_connect(cid, port, SOCK_STREAM);
                if (s >= 0) {
                        close(s);
                        printf("VSOCK-RETRY ok after=%u\n", i);
                        return 0;
                }
                usleep(100000);
        }
        printf("VSOCK-RETRY failed after %u s\n", seconds);
        return 1;
}

static int rtt(unsigned cid, unsigned port, unsigned count) {
        int s = vsock_connect(cid, port, SOCK_STREAM);
        if (s < 0) {
                printf("VSOCK-RTT failed connect: %s\n", strerror(errno));
                return 1;
        }
        uint8_t b[64] = {0};
        long long t0 = now_us();
        for (unsigned i = 0; i < count; i++) {
                if (send(s, b, sizeof(b), MSG_NOSIGNAL) != sizeof(b) ||
                    recv(s, b, sizeof(b), MSG_WAITALL) != sizeof(b)) {
                        printf("VSOCK-RTT failed at %u: %s\n", i, strerror(errno));
                        return 1;
                }
        }
        long long us = now_us() - t0;
        close(s);
        printf("VSOCK-RTT ok count=%u us_per_rt=%lld\n", count, us / (count ? count : 1));
        return 0;
}

static int own_cid(void) {
        unsigned cid = 0;
        int fd = open("/dev/vsock", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || ioctl(fd, IOCTL_VM_SOCKETS_GET_LOCAL_CID, &cid) < 0) {
                printf("VSOCK-CID failed: %s\n", strerror(errno));
                return 1;
        }
        printf("VSOCK-CID %u\n", cid);
        return 0;
}

/* Asks vmqd's identity service question @q; its answer's line, without
 * the newline, goes to @a.  0, or -1 (a VSOCK-@what failed line said why). */
static int ask_identity(const char *what, const char *q, char *a, size_t size) {
        int s = vsock_connect(2, 1, SOCK_STREAM);
        size_t n = 0;
        if (s < 0) {
                printf("VSOCK-%s failed connect errno=%d (%s)\n", what, errno, strerror(errno));
                return -1;
        }
        if (send(s, q, strlen(q), MSG_NOSIGNAL) != (ssize_t)strlen(q)) {
                printf("VSOCK-%s failed send: %s\n", what, strerror(errno));
                close(s);
                return -1;
        }
        while (n < size - 1 && !memchr(a, '\n', n)) {
                ssize_t r = recv(s, a + n, size - 1 - n, 0);
                if (r <= 0) {
                        printf("VSOCK-%s failed recv: %s\n", what, r ? strerror(errno) : "end");
                        close(s);
                        return -1;
                }
                n += (size_t)r;
        }
        close(s);
        a[n] = '\0';
        a[strcspn(a, "\n")] = '\0';
        return 0;
}

static int who(unsigned cid) {
        char q[32], a[256];
        snprintf(q, sizeof(q), "WHO %u\n", cid);
        if (ask_identity("WHO", q, a, sizeof(a)) < 0)
                return 1;
        printf("VSOCK-WHO %s\n", a);
        return 0;
}

static int name(const char *machine, unsigned seconds) {
        char q[96], a[256] = "";
        snprintf(q, sizeof(q), "NAME %s\n", machine);
        for (unsigned i = 0; i <= seconds; i++) {
                if (ask_identity("NAME", q, a, sizeof(a)) < 0)
                        return 1;
                if (!strncmp(a, "OK ", 3))
                        break;
                sleep(1);
        }
        printf("VSOCK-NAME %s\n", a);
        return strncmp(a, "OK ", 3) ? 1 : 0;
}

/* ---- vmq's transport ---- */

static struct vmq_ivshmem *ivs_open(const char *what) {
        struct vmq_ivshmem *v = NULL;
        int r = vmq_ivshmem_open(NULL, VMQ_IVSHMEM_OPEN_BIND_UIO, &v);
        if (r < 0)
                printf("%s failed open: %s\n", what, strerror(-r));
        return v;
}

/* The channel whose HELLO names machine @peer (waiting up to a minute). */
static int ivs_channel(struct vmq_ivshmem *v, const char *peer, uint32_t *ret) {
        for (;;) {
                struct vmq_ivshmem_msg *m = NULL;
                int r = vmq_ivshmem_recv(v, VMQ_IVSHMEM_ANY_CHANNEL, 60000000, &m);
                if (r < 0)
                        return r;
                bool found = m->kind == VMQ_IVSHMEM_HELLO && !strcmp(m->peer.name, peer);
                *ret = m->channel;
                free(m);
                if (found)
                        return 0;
        }
}

static int ivs_echo(void) {
        struct vmq_ivshmem *v = ivs_open("IVS-ECHO");
        if (!v)
                return 1;
        printf("IVS-ECHO serving\n");
        for (;;) {
                struct vmq_ivshmem_msg *m = NULL;
                if (vmq_ivshmem_recv(v, VMQ_IVSHMEM_ANY_CHANNEL, UINT64_MAX, &m) < 0)
                        continue;
                if (m->kind == VMQ_IVSHMEM_DATA || m->kind == VMQ_IVSHMEM_PAGE)
                        while (vmq_ivshmem_send(v, m->channel, m->data, m->len, m->tag) == -EAGAIN)
                                usleep(100);
                free(m);
        }
}

/* One message there and its reflection back; 0 or a negative errno. */
static int ivs_exchange(struct vmq_ivshmem *v, uint32_t ch, const uint8_t *out, size_t n,
                        uint8_t *in) {
        int r;
        while ((r = vmq_ivshmem_send(v, ch, out, n, 0)) == -EAGAIN)
                usleep(100);
        if (r < 0)
                return r;
        struct vmq_ivshmem_msg *m = NULL;
        r = vmq_ivshmem_recv(v, ch, 20000000, &m);
        if (r < 0)
                return r;
        r = m->len == n ? 0 : -EBADMSG;
        if (r == 0)
                memcpy(in, m->data, n);
        free(m);
        return r;
}

static int ivs_rtt(struct vmq_ivshmem *v, uint32_t ch, unsigned count) {
        uint8_t b[64] = {0};
        int r;
        long long t0 = now_us();
        for (unsigned i = 0; i < count; i++)
                if ((r = ivs_exchange(v, ch, b, sizeof(b), b)) < 0) {
                        printf("IVS-RTT failed at %u: %s\n", i, strerror(-r));
                        return 1;
                }
        long long us = now_us() - t0;
        printf("IVS-RTT ok count=%u us_per_rt=%lld\n", count, us / (count ? count : 1));
        return 0;
}

/* Up to 4 messages in flight, as a socket's buffer lets a stream run
 * ahead of its echo. */
static int ivs_stream(struct vmq_ivshmem *v, uint32_t ch, size_t bytes) {
        static uint8_t out[65536];
        int r;
        size_t chunk =
                vmq_ivshmem_max_send(v) < sizeof(out) ? vmq_ivshmem_max_send(v) : sizeof(out);
        size_t sent = 0, got = 0;
        unsigned in_flight = 0;
        long long t0 = now_us();
        while (got < bytes) {
                if (sent < bytes && in_flight < 4) {
                        size_t n = bytes - sent < chunk ? bytes - sent : chunk;
                        for (size_t i = 0; i < n; i++)
                                out[i] = pattern(sent + i);
                        r = vmq_ivshmem_send(v, ch, out, n, 0);
                        if (r == 0) {
                                sent += n;
                                in_flight++;
                                continue;
                        }
                        if (r != -EAGAIN) {
                                printf("IVS-STREAM failed send at %zu: %s\n", sent, strerror(-r));
                                return 1;
                        }
                }
                struct vmq_ivshmem_msg *m = NULL;
                r = vmq_ivshmem_recv(v, ch, 20000000, &m);
                if (r < 0) {
                        printf("IVS-STREAM failed recv at %zu: %s\n", got, strerror(-r));
                        return 1;
                }
                if (m->kind != VMQ_IVSHMEM_DATA && m->kind != VMQ_IVSHMEM_PAGE) {
                        free(m);
                        continue;
                }
                for (size_t i = 0; i < m->len; i++)
                        if (got + i >= bytes || m->data[i] != pattern(got + i)) {
                                printf("IVS-STREAM failed: byte %zu differs\n", got + i);
                                free(m);
                                return 1;
                        }
                got += m->len;
                in_flight--;
                free(m);
        }
        long long ms = (now_us() - t0) / 1000;
        printf("IVS-STREAM ok bytes=%zu ms=%lld\n", bytes, ms);
        return 0;
}

static int ivs_bench(const char *peer, unsigned count, size_t bytes) {
        struct vmq_ivshmem *v = ivs_open("IVS-RTT");
        uint32_t ch;
        int r;
        if (!v)
                return 1;
        if ((r = ivs_channel(v, peer, &ch)) < 0) {
                printf("IVS-RTT failed: no channel with %s: %s\n", peer, strerror(-r));
                vmq_ivshmem_free(v);
                return 1;
        }
        r = ivs_rtt(v, ch, count);
        if (r == 0)
                r = ivs_stream(v, ch, bytes);
        vmq_ivshmem_free(v);
        return r;
}

int main(int argc, char **argv) {
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (argc < 2)
                goto usage;
        const char *cmd = argv[1];
        if (!strcmp(cmd, "cid"))
                return own_cid();
        if (!strcmp(cmd, "who") && argc == 3)
                return who((unsigned)strtoul(argv[2], NULL, 0));
        if (!strcmp(cmd, "name") && argc == 4)
                return name(argv[2], (unsigned)strtoul(argv[3], NULL, 0));
        if (!strcmp(cmd, "ivs-echo"))
                return ivs_echo();
        if (!strcmp(cmd, "ivs-bench") && argc == 5)
                return ivs_bench(argv[2], (unsigned)strtoul(argv[3], NULL, 0),
                                 strtoul(argv[4], NULL, 0));
        if (!strcmp(cmd, "serve") && argc == 4)
                return serve((unsigned)strtoul(argv[2], NULL, 0),
                             !strcmp(argv[3], "seqpacket") ? SOCK_SEQPACKET : SOCK_STREAM);
        if (argc != 5 && !(argc == 4 && !strcmp(cmd, "refused")))
                goto usage;
        unsigned cid = (unsigned)strtoul(argv[2], NULL, 0);
        unsigned port = (unsigned)strtoul(argv[3], NULL, 0);
        if (!strcmp(cmd, "refused"))
                return refused(cid, port);
        unsigned long n = strtoul(argv[4], NULL, 0);
        if (!strcmp(cmd, "stream"))
                return stream(cid, port, n);
        if (!strcmp(cmd, "seqpacket"))
                return seqpacket(cid, port, (unsigned)n);
        if (!strcmp(cmd, "retry"))
                return retry(cid, port, (unsigned)n);
        if (!strcmp(cmd, "rtt"))
                return rtt(cid, port, (unsigned)n);
usage:
        fprintf(stderr, "usage: see the comment at the top of vsock-probe.c\n");
        return 2;
}
