/* SPDX-License-Identifier: MIT */
/*
 * vmqd's configuration file and persistent state: defaults, a full config,
 * every class of config error with its message, size suffixes; state round
 * trip, atomic saves that fail half-way (the old file must survive and no
 * temp file may stay), corrupt files moved aside byte for byte under a
 * timestamped name, and no leaked fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <criterion/criterion.h>

#include "core/util.h"
#include "tests/test-util.h"
#include "vmqd/config.h"
#include "vmqd/state.h"

#define MIB (1024ull * 1024ull)
#define GIB (1024ull * MIB)

static char tmpdir[64];
static int fds_before;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void)st;
        (void)flag;
        (void)ftw;
        return remove(path);
}

static void setup(void) {
        snprintf(tmpdir, sizeof(tmpdir), "/tmp/vmq-test-state-XXXXXX");
        cr_assert_not_null(mkdtemp(tmpdir));
        fds_before = vmq_test_count_fds();
}

static void teardown(void) {
        nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Called at the end of every test (a failed assertion in .fini does not
 * fail the test). */
static void assert_no_fd_leak(void) {
        int now = vmq_test_count_fds();
        cr_assert_eq(now, fds_before, "fd leak: %d before, %d after", fds_before, now);
}

TestSuite(config, .init = setup, .fini = teardown);
TestSuite(state, .init = setup, .fini = teardown);

static char *path_in(const char *name) {
        char *p = NULL;
        cr_assert_geq(asprintf(&p, "%s/%s", tmpdir, name), 0);
        return p;
}

static void write_bytes(const char *path, const void *data, size_t len) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        cr_assert_geq(fd, 0, "open \"%s\": %s", path, strerror(errno));
        cr_assert_eq(write(fd, data, len), (ssize_t)len);
        close(fd);
}

static void write_text(const char *path, const char *text) {
        write_bytes(path, text, strlen(text));
}

/* The whole file (NUL-terminated for convenience), its size in *ret_len. */
static char *read_bytes(const char *path, size_t *ret_len) {
        struct stat st;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        cr_assert_geq(fd, 0, "open \"%s\": %s", path, strerror(errno));
        cr_assert_eq(fstat(fd, &st), 0);
        char *buf = malloc((size_t)st.st_size + 1);
        cr_assert_not_null(buf);
        size_t len = 0;
        while (len < (size_t)st.st_size) {
                ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
                cr_assert_gt(n, 0);
                len += (size_t)n;
        }
        buf[len] = '\0';
        close(fd);
        if (ret_len)
                *ret_len = len;
        return buf;
}

static bool exists(const char *path) {
        struct stat st;
        return lstat(path, &st) == 0;
}

/* ---- config ---- */

static void assert_defaults(const struct vmqd_config *c) {
        cr_assert_str_eq(c->state_dir, "/var/lib/vmq");
        cr_assert_not_null(c->image_dir);
        cr_assert_eq(c->image_dir[0], '/');
        cr_assert_str_eq(c->libvirt_uri, "qemu:///system");
        cr_assert_eq(c->log_level, LOG_INFO);
        cr_assert_eq(c->hugetlb, true);
        cr_assert_eq(c->hugetlb_frames, 64);
        cr_assert_eq(c->pool_memory, 4 * GIB);
        cr_assert_eq(c->max_machines, 64);
        cr_assert_eq(c->max_channels, 256);
        cr_assert_eq(c->max_queue_depth, 1024);
        cr_assert_eq(c->max_memory, 1 * GIB);
        cr_assert_eq(c->max_message, 16 * MIB);
        cr_assert_eq(c->default_memory, 16 * MIB);
        cr_assert_eq(c->default_vcpus, 1);
        cr_assert_eq(c->default_queue_depth, 64);
        cr_assert_eq(c->default_host_depth, 256);
        cr_assert_str_eq(c->default_mode, "immediate");
        cr_assert_str_eq(c->default_transfer, "auto");
        cr_assert_eq(c->stop_timeout_sec, 10);
}

Test(config, defaults) {
        struct vmqd_config c;
        char *error = (char *)"sentinel";

        vmqd_config_init(&c);
        assert_defaults(&c);
        cr_assert_eq(vmqd_config_load(&c, NULL, &error), 0);
        cr_assert_null(error);
        assert_defaults(&c);
        vmqd_config_done(&c);
        cr_assert_null(c.state_dir);
        vmqd_config_done(&c); /* twice is fine */
        assert_no_fd_leak();
}

Test(config, missing_file) {
        struct vmqd_config c;
        _cleanup_free_ char *p = path_in("nope.conf");
        char *error = (char *)"sentinel";

        vmqd_config_init(&c);
        cr_assert_eq(vmqd_config_load(&c, p, &error), -ENOENT);
        cr_assert_str_eq(error, strerror(ENOENT));
        free(error);
        assert_defaults(&c);
        vmqd_config_done(&c);
        assert_no_fd_leak();
}

Test(config, full) {
        struct vmqd_config c;
        _cleanup_free_ char *p = path_in("vmqd.conf");
        char *error = NULL;

        write_text(p,
                   "{\n"
                   "  \"state_dir\": \"/srv/vmq/state\",\n"
                   "  \"image_dir\": \"/srv/vmq/images\",\n"
                   "  \"log_level\": \"debug\",\n"
                   "  \"hugetlb\": { \"enabled\": false, \"frames\": 128 },\n"
                   "  \"pool_memory\": \"8G\",\n"
                   "  \"limits\": { \"max_machines\": 10, \"max_channels\": 20,\n"
                   "              \"max_queue_depth\": 512, \"max_memory\": \"512MiB\",\n"
                   "              \"max_message\": 1048576 },\n"
                   "  \"defaults\": { \"memory\": 33554432, \"vcpus\": 4, \"queue_depth\": 128,\n"
                   "                \"host_depth\": 32, \"mode\": \"deferred\",\n"
                   "                \"transfer\": \"flip\", \"stop_timeout\": 30 },\n"
                   "  \"libvirt\": { \"uri\": \"qemu:///session\" }\n"
                   "}\n");
        vmqd_config_init(&c);
        int r = vmqd_config_load(&c, p, &error);
        cr_assert_eq(r, 0, "load: %s (%s)", strerror(-r), error ?: "");
        cr_assert_null(error);
        cr_assert_str_eq(c.state_dir, "/srv/vmq/state");
        cr_assert_str_eq(c.image_dir, "/srv/vmq/images");
        cr_assert_str_eq(c.libvirt_uri, "qemu:///session");
        cr_assert_eq(c.log_level, LOG_DEBUG);
        cr_assert_eq(c.hugetlb, false);
        cr_assert_eq(c.hugetlb_frames, 128);
        cr_assert_eq(c.pool_memory, 8 * GIB);
        cr_assert_eq(c.max_machines, 10);
        cr_assert_eq(c.max_channels, 20);
        cr_assert_eq(c.max_queue_depth, 512);
        cr_assert_eq(c.max_memory, 512 * MIB);
        cr_assert_eq(c.max_message, 1 * MIB);
        cr_assert_eq(c.default_memory, 32 * MIB);
        cr_assert_eq(c.default_vcpus, 4);
        cr_assert_eq(c.default_queue_depth, 128);
        cr_assert_eq(c.default_host_depth, 32);
        cr_assert_str_eq(c.default_mode, "deferred");
        cr_assert_str_eq(c.default_transfer, "flip");
        cr_assert_eq(c.stop_timeout_sec, 30);
        vmqd_config_done(&c);
        assert_no_fd_leak();
}

Test(config, partial_file_keeps_other_defaults) {
        struct vmqd_config c;
        _cleanup_free_ char *p = path_in("vmqd.conf");
        char *error = NULL;

        write_text(p, "{ \"limits\": { \"max_machines\": 7 }, \"log_level\": \"warning\" }");
        vmqd_config_init(&c);
        cr_assert_eq(vmqd_config_load(&c, p, &error), 0);
        cr_assert_eq(c.max_machines, 7);
        cr_assert_eq(c.log_level, LOG_WARNING);
        c.max_machines = 64;
        c.log_level = LOG_INFO;
        assert_defaults(&c);
        vmqd_config_done(&c);
        assert_no_fd_leak();
}

Test(config, example_file_is_the_defaults) {
        /* The example ships next to this file's source: <srcdir>/vmqd/. */
        char src[4096];
        struct vmqd_config c, d;
        char *error = NULL;

        snprintf(src, sizeof(src), "%s", __FILE__);
        char *slash = strstr(src, "tests/test-state.c");
        cr_assert_not_null(slash);
        snprintf(slash, sizeof(src) - (size_t)(slash - src), "vmqd/vmqd.conf.example");

        vmqd_config_init(&c);
        vmqd_config_init(&d);
        int r = vmqd_config_load(&c, src, &error);
        cr_assert_eq(r, 0, "\"%s\": %s (%s)", src, strerror(-r), error ?: "");
        /* image_dir depends on the build's prefix; everything else is equal */
        free(c.image_dir);
        c.image_dir = strdup(d.image_dir);
        assert_defaults(&c);
        vmqd_config_done(&c);
        vmqd_config_done(&d);
        assert_no_fd_leak();
}

Test(config, sizes) {
        static const struct {
                const char *s;
                int r;
                uint64_t v;
        } cases[] = {
                {"0", 0, 0},
                {"4096", 0, 4096},
                {"2K", 0, 2048},
                {"16M", 0, 16 * MIB},
                {"16MiB", 0, 16 * MIB},
                {"1G", 0, GIB},
                {"1GiB", 0, GIB},
                {"2T", 0, 2048 * GIB},
                {"18446744073709551615", 0, UINT64_MAX},
                {"18446744073709551616", -ERANGE, 0},
                {"17179869184G", -ERANGE, 0},
                {"", -EINVAL, 0},
                {"M", -EINVAL, 0},
                {"-1", -EINVAL, 0},
                {" 16M", -EINVAL, 0},
                {"16M ", -EINVAL, 0},
                {"16m", -EINVAL, 0},
                {"16MB", -EINVAL, 0},
                {"16Mi", -EINVAL, 0},
                {"16Q", -EINVAL, 0},
                {"1.5G", -EINVAL, 0},
                {"0x10", -EINVAL, 0},
        };
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(cases); i++) {
                uint64_t v = 12345;
                int r = vmqd_parse_size(cases[i].s, &v);
                cr_assert_eq(r, cases[i].r, "\"%s\": %d, expected %d", cases[i].s, r, cases[i].r);
                cr_assert_eq(v, r == 0 ? cases[i].v : 12345, "\"%s\"", cases[i].s);
        }
        cr_assert_eq(vmqd_parse_size(NULL, &(uint64_t){0}), -EINVAL);

        /* and through the file: numbers, numeric strings and suffixes */
        struct vmqd_config c;
        _cleanup_free_ char *p = path_in("vmqd.conf");
        write_text(p, "{ \"pool_memory\": \"2147483648\", \"limits\": { \"max_memory\": 268435456,"
                      " \"max_message\": \"64K\" }, \"defaults\": { \"memory\": \"4MiB\" } }");
        vmqd_config_init(&c);
        cr_assert_eq(vmqd_config_load(&c, p, NULL), 0);
        cr_assert_eq(c.pool_memory, 2 * GIB);
        cr_assert_eq(c.max_memory, 256 * MIB);
        cr_assert_eq(c.max_message, 64 * 1024);
        cr_assert_eq(c.default_memory, 4 * MIB);
        vmqd_config_done(&c);
        assert_no_fd_leak();
}

Test(config, log_levels) {
        cr_assert_eq(vmqd_log_level_from_string("err"), LOG_ERR);
        cr_assert_eq(vmqd_log_level_from_string("warning"), LOG_WARNING);
        cr_assert_eq(vmqd_log_level_from_string("notice"), LOG_NOTICE);
        cr_assert_eq(vmqd_log_level_from_string("info"), LOG_INFO);
        cr_assert_eq(vmqd_log_level_from_string("debug"), LOG_DEBUG);
        cr_assert_eq(vmqd_log_level_from_string("crit"), -EINVAL);
        cr_assert_eq(vmqd_log_level_from_string("INFO"), -EINVAL);
        cr_assert_eq(vmqd_log_level_from_string(NULL), -EINVAL);
        for (int l = LOG_ERR; l <= LOG_DEBUG; l++)
                cr_assert_eq(vmqd_log_level_from_string(vmqd_log_level_to_string(l)), l);
        cr_assert_null(vmqd_log_level_to_string(LOG_CRIT));
        cr_assert_null(vmqd_log_level_to_string(LOG_DEBUG + 1));
        assert_no_fd_leak();
}

/* Loads text as a config over the defaults: must fail with -EINVAL and
 * exactly this message, and leave every value at its default. */
static void expect_config_error(const char *text, size_t len, const char *message) {
        struct vmqd_config c;
        _cleanup_free_ char *p = path_in("bad.conf");
        char *error = NULL;

        write_bytes(p, text, len);
        vmqd_config_init(&c);
        int r = vmqd_config_load(&c, p, &error);
        cr_assert_eq(r, -EINVAL, "%s: got %d (%s)", text, r, error ?: "");
        cr_assert_not_null(error, "%s: no message", text);
        cr_assert_str_eq(error, message, "for %s", text);
        assert_defaults(&c); /* all or nothing */
        free(error);
        vmqd_config_done(&c);
}
#define EXPECT_ERROR(text, message) expect_config_error((text), strlen(text), (message))

Test(config, errors_json) {
        EXPECT_ERROR("", "empty file (expected a JSON object)");
        EXPECT_ERROR(" \n\t", "empty file (expected a JSON object)");
        EXPECT_ERROR("{\n  \"log_level\": \"info\",\n}",
                     "invalid JSON at line 3, column 1: unexpected character");
        EXPECT_ERROR("{ \"log_level\": \"info\"", "invalid JSON at line 1, column 22: "
                                                  "unexpected end of data");
        EXPECT_ERROR("{} {}", "invalid JSON at line 1, column 4: unexpected character");
        EXPECT_ERROR("{ /* comment */ }",
                     "invalid JSON at line 1, column 3: quoted object property name expected");
        EXPECT_ERROR("[1, 2]", "the top level must be a JSON object");
        EXPECT_ERROR("null", "the top level must be a JSON object");
        EXPECT_ERROR("42", "the top level must be a JSON object");
        EXPECT_ERROR("{\"libvirt\": {\"uri\": \"\xff\xfe\"}}",
                     "invalid JSON at line 1, column 22: invalid utf-8 string");
        expect_config_error("{\"log_level\": \"info\"}\0garbage", 30,
                            "contains a NUL byte at offset 21");
        EXPECT_ERROR("{\"libvirt\": {\"uri\": \"qemu\\u0000:///x\"}}",
                     "libvirt.uri: must not contain NUL characters");
        /* hostile nesting stops at a small depth, whatever the size */
        char deep[4096];
        size_t n = 0;
        deep[n++] = '{';
        memcpy(deep + n, "\"a\":", 4);
        n += 4;
        for (int i = 0; i < 1000; i++)
                deep[n++] = '[';
        deep[n] = '\0';
        EXPECT_ERROR(deep, "invalid JSON at line 1, column 13: nesting too deep");
        assert_no_fd_leak();
}

Test(config, errors_keys_and_types) {
        EXPECT_ERROR("{\"state_dri\": \"/x\"}", "unknown key \"state_dri\"");
        EXPECT_ERROR("{\"limits\": {\"max_machine\": 3}}", "limits: unknown key \"max_machine\"");
        EXPECT_ERROR("{\"limits\": {\"max_\\u0001\": 3}}", "limits: unknown key \"max_?\"");
        EXPECT_ERROR("{\"hugetlb\": {\"enabled\": true, \"frames\": 1, \"x\": 1}}",
                     "hugetlb: unknown key \"x\"");
        EXPECT_ERROR("{\"limits\": 5}", "limits: must be an object");
        EXPECT_ERROR("{\"defaults\": []}", "defaults: must be an object");
        /* sections exist only at the top */
        EXPECT_ERROR("{\"limits\": {\"limits\": {}}}", "limits: unknown key \"limits\"");
        EXPECT_ERROR("{\"state_dir\": 5}", "state_dir: must be a string");
        EXPECT_ERROR("{\"state_dir\": null}", "state_dir: must be a string");
        EXPECT_ERROR("{\"hugetlb\": {\"enabled\": \"yes\"}}",
                     "hugetlb.enabled: must be true or false");
        EXPECT_ERROR("{\"hugetlb\": {\"enabled\": 1}}", "hugetlb.enabled: must be true or false");
        EXPECT_ERROR("{\"limits\": {\"max_machines\": \"10\"}}",
                     "limits.max_machines: must be a non-negative integer");
        EXPECT_ERROR("{\"limits\": {\"max_machines\": 10.0}}",
                     "limits.max_machines: must be a non-negative integer");
        EXPECT_ERROR("{\"limits\": {\"max_machines\": true}}",
                     "limits.max_machines: must be a non-negative integer");
        EXPECT_ERROR("{\"defaults\": {\"memory\": 1.5e7}}",
                     "defaults.memory: must be a size (a number of bytes, or a string such as "
                     "\"16M\")");
        EXPECT_ERROR("{\"defaults\": {\"memory\": \"16 MB\"}}",
                     "defaults.memory: \"16 MB\" is not a size (use a number of bytes, or a "
                     "string such as \"16M\" or \"1G\")");
        EXPECT_ERROR("{\"defaults\": {\"memory\": \"16\\u0000M\"}}",
                     "defaults.memory: \"16\" is not a size (use a number of bytes, or a "
                     "string such as \"16M\" or \"1G\")");
        EXPECT_ERROR("{\"log_level\": \"verbose\"}",
                     "log_level: \"verbose\" is not one of \"err\", \"warning\", \"notice\", "
                     "\"info\", \"debug\"");
        EXPECT_ERROR("{\"log_level\": 7}", "log_level: must be a string");
        EXPECT_ERROR("{\"defaults\": {\"mode\": \"lazy\"}}",
                     "defaults.mode: \"lazy\" is not \"immediate\" or \"deferred\"");
        EXPECT_ERROR("{\"defaults\": {\"transfer\": \"share\"}}",
                     "defaults.transfer: \"share\" is not \"copy\", \"flip\" or \"auto\"");
        EXPECT_ERROR("{\"image_dir\": \"guests\"}",
                     "image_dir: \"guests\" is not an absolute path");
        EXPECT_ERROR("{\"libvirt\": {\"uri\": \"\"}}", "libvirt.uri: must not be empty");
        assert_no_fd_leak();
}

Test(config, errors_ranges) {
        EXPECT_ERROR("{\"limits\": {\"max_machines\": 0}}",
                     "limits.max_machines: must be between 1 and 4096");
        EXPECT_ERROR("{\"limits\": {\"max_machines\": 4097}}",
                     "limits.max_machines: must be between 1 and 4096");
        EXPECT_ERROR("{\"limits\": {\"max_machines\": -1}}",
                     "limits.max_machines: must be between 1 and 4096");
        EXPECT_ERROR("{\"limits\": {\"max_machines\": 99999999999999999999999}}",
                     "limits.max_machines: must be between 1 and 4096");
        EXPECT_ERROR("{\"limits\": {\"max_machines\": 4294967360}}", /* 2^32 + 64 */
                     "limits.max_machines: must be between 1 and 4096");
        EXPECT_ERROR("{\"limits\": {\"max_channels\": 65537}}",
                     "limits.max_channels: must be between 1 and 65536");
        EXPECT_ERROR("{\"limits\": {\"max_queue_depth\": 100}}",
                     "limits.max_queue_depth: must be a power of two");
        EXPECT_ERROR("{\"limits\": {\"max_queue_depth\": 2048}}",
                     "limits.max_queue_depth: must be between 4 and 1024");
        EXPECT_ERROR("{\"limits\": {\"max_memory\": \"2G\"}}",
                     "limits.max_memory: must be between 4 MiB and 1 GiB");
        EXPECT_ERROR("{\"limits\": {\"max_memory\": \"5M\"}}",
                     "limits.max_memory: must be a multiple of 2 MiB");
        EXPECT_ERROR("{\"limits\": {\"max_message\": 1000}}",
                     "limits.max_message: must be between 64 KiB and 1 GiB");
        EXPECT_ERROR("{\"pool_memory\": \"99999999999T\"}",
                     "pool_memory: must be between 64 MiB and 1 TiB");
        EXPECT_ERROR("{\"pool_memory\": 0}", "pool_memory: must be between 64 MiB and 1 TiB");
        EXPECT_ERROR("{\"hugetlb\": {\"frames\": 0}}",
                     "hugetlb.frames: must be between 1 and 65536");
        EXPECT_ERROR("{\"defaults\": {\"vcpus\": 9}}", "defaults.vcpus: must be between 1 and 8");
        EXPECT_ERROR("{\"defaults\": {\"vcpus\": 0}}", "defaults.vcpus: must be between 1 and 8");
        EXPECT_ERROR("{\"defaults\": {\"memory\": \"3M\"}}",
                     "defaults.memory: must be between 4 MiB and 1 GiB");
        EXPECT_ERROR("{\"defaults\": {\"memory\": 5242880}}",
                     "defaults.memory: must be a multiple of 2 MiB");
        EXPECT_ERROR("{\"defaults\": {\"queue_depth\": 48}}",
                     "defaults.queue_depth: must be a power of two");
        EXPECT_ERROR("{\"defaults\": {\"host_depth\": 0}}",
                     "defaults.host_depth: must be between 1 and 65536");
        EXPECT_ERROR("{\"defaults\": {\"host_depth\": 3}}",
                     "defaults.host_depth: must be a power of two");
        EXPECT_ERROR("{\"defaults\": {\"stop_timeout\": 0}}",
                     "defaults.stop_timeout: must be between 1 and 3600");
        /* between keys, whatever their order in the file */
        EXPECT_ERROR("{\"defaults\": {\"memory\": \"64M\"}, \"limits\": {\"max_memory\": \"32M\"}}",
                     "defaults.memory: must not exceed limits.max_memory (32 MiB)");
        EXPECT_ERROR("{\"limits\": {\"max_queue_depth\": 16}}",
                     "defaults.queue_depth: must not exceed limits.max_queue_depth (16)");
        EXPECT_ERROR("{\"pool_memory\": \"128M\"}",
                     "limits.max_memory: must not exceed pool_memory (128 MiB)");
        assert_no_fd_leak();
}

Test(config, errors_files) {
        struct vmqd_config c;
        char *error = NULL;

        vmqd_config_init(&c);
        /* a directory */
        cr_assert_eq(vmqd_config_load(&c, tmpdir, &error), -EINVAL);
        cr_assert_str_eq(error, "not a regular file");
        free(error);

        /* over 16 MiB (sparse: the size alone must be refused) */
        _cleanup_free_ char *big = path_in("big.conf");
        write_text(big, "{}");
        cr_assert_eq(truncate(big, VMQD_FILE_MAX + 1), 0);
        cr_assert_eq(vmqd_config_load(&c, big, &error), -EINVAL);
        cr_assert_str_eq(error, "larger than 16 MiB (16777217 bytes)");
        free(error);

        /* exactly 16 MiB is read (and then refused for its NUL bytes) */
        cr_assert_eq(truncate(big, VMQD_FILE_MAX), 0);
        cr_assert_eq(vmqd_config_load(&c, big, &error), -EINVAL);
        cr_assert_str_eq(error, "contains a NUL byte at offset 2");
        free(error);

        /* a FIFO must not block the daemon */
        _cleanup_free_ char *fifo = path_in("fifo.conf");
        cr_assert_eq(mkfifo(fifo, 0600), 0);
        cr_assert_eq(vmqd_config_load(&c, fifo, &error), -EINVAL);
        cr_assert_str_eq(error, "not a regular file");
        free(error);

        /* no message pointer: still the error */
        cr_assert_eq(vmqd_config_load(&c, fifo, NULL), -EINVAL);
        assert_defaults(&c);
        vmqd_config_done(&c);
        assert_no_fd_leak();
}

/* ---- state ---- */

static const char *const UUID1 = "0f8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f60";
static const char *const UUID2 = "AB8A5C1E-3B9D-4C1A-9E77-1D2C3B4A5F61";
/* Machines of one state have UUIDs of their own (issue 8, defect 6). */
static const char *const UUID3 = "5d0c2b7e-81a4-4f3e-9b1a-6c2d8e4f0a13";
static const char *const UUID4 = "c3a9e6f1-2b48-4d7c-a0e5-97f1b2d4c6e8";

static struct vmqd_machine_def machine(const char *name, const char *uuid) {
        struct vmqd_machine_def d = {
                .name = (char *)name,
                .image = (char *)"echo",
                .memory = 16 * MIB,
                .vcpus = 1,
                .queue_depth = 64,
        };
        snprintf(d.uuid, sizeof(d.uuid), "%s", uuid);
        return d;
}

static struct vmqd_channel_def channel(const char *a, const char *b) {
        return (struct vmqd_channel_def){
                .end_a = (char *)a,
                .end_b = (char *)b,
                .depth = 256,
                .mode = (char *)"immediate",
                .transfer = (char *)"auto",
        };
}

static void sample_state(struct vmqd_state *s) {
        struct vmqd_machine_def m1 = machine("rx", UUID1);
        struct vmqd_machine_def m2 = machine("tx.bench-2_b", UUID2);
        m2.image = (char *)"/opt/guests/my \"odd\" image/\xc3\xa9.elf";
        m2.memory = 1 * GIB;
        m2.vcpus = 8;
        m2.queue_depth = 1024;
        m2.huge_memory = 64 * MIB;
        m2.args = (char *)"--count=10 --size 4096 \"quoted\" \\ / \t";
        m2.autostart = true;
        struct vmqd_channel_def c1 = channel("host", "rx");
        struct vmqd_channel_def c2 = channel("rx", "tx.bench-2_b");
        c2.depth = 1;
        c2.mode = (char *)"deferred";
        c2.transfer = (char *)"flip";
        struct vmqd_channel_def c3 = channel("tx.bench-2_b", "host");
        c3.transfer = (char *)"copy";

        *s = (struct vmqd_state){0};
        cr_assert_eq(vmqd_state_add_machine(s, &m1), 0);
        cr_assert_eq(vmqd_state_add_machine(s, &m2), 0);
        cr_assert_eq(vmqd_state_add_channel(s, &c1), 0);
        cr_assert_eq(vmqd_state_add_channel(s, &c2), 0);
        cr_assert_eq(vmqd_state_add_channel(s, &c3), 0);
        /* two channels between the same ends are allowed */
        cr_assert_eq(vmqd_state_add_channel(s, &c1), 0);
}

static bool str_eq_null(const char *a, const char *b) {
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void assert_state_eq(const struct vmqd_state *a, const struct vmqd_state *b) {
        cr_assert_eq(a->n_machines, b->n_machines);
        cr_assert_eq(a->n_channels, b->n_channels);
        for (size_t i = 0; i < a->n_machines; i++) {
                const struct vmqd_machine_def *x = &a->machines[i], *y = &b->machines[i];
                cr_assert_str_eq(x->name, y->name);
                cr_assert(str_eq_null(x->image, y->image), "image of \"%s\"", x->name);
                cr_assert(str_eq_null(x->domain, y->domain), "domain of \"%s\"", x->name);
                cr_assert_eq(x->rx_size, y->rx_size);
                cr_assert_str_eq(x->uuid, y->uuid);
                cr_assert_eq(x->memory, y->memory);
                cr_assert_eq(x->vcpus, y->vcpus);
                cr_assert_eq(x->queue_depth, y->queue_depth);
                cr_assert_eq(x->huge_memory, y->huge_memory);
                cr_assert(str_eq_null(x->args, y->args), "args of \"%s\"", x->name);
                cr_assert_eq(x->autostart, y->autostart);
        }
        for (size_t i = 0; i < a->n_channels; i++) {
                const struct vmqd_channel_def *x = &a->channels[i], *y = &b->channels[i];
                cr_assert_str_eq(x->end_a, y->end_a);
                cr_assert_str_eq(x->end_b, y->end_b);
                cr_assert_eq(x->depth, y->depth);
                cr_assert_str_eq(x->mode, y->mode);
                cr_assert_str_eq(x->transfer, y->transfer);
        }
}

Test(state, names) {
        static const char *const good[] = {
                "a",         "rx",
                "Z9",        "a.b",
                "a-b",       "a_b",
                "_x",        "9",
                "hosts",     "Host",
                "localhost", "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz_"};
        static const char *const bad[] = {
                "",    "host",
                ".a",  "-a",
                "a b", "a/b",
                "a:b", "é",
                "a\n", "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz_."};
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(good); i++)
                cr_assert(vmqd_name_is_valid(good[i]), "\"%s\" should be valid", good[i]);
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(bad); i++)
                cr_assert_not(vmqd_name_is_valid(bad[i]), "\"%s\" should be invalid", bad[i]);
        cr_assert_eq(strlen(good[VMQ_ARRAY_SIZE(good) - 1]), 63);
        cr_assert_eq(strlen(bad[VMQ_ARRAY_SIZE(bad) - 1]), 64);
        cr_assert_not(vmqd_name_is_valid(NULL));

        cr_assert(vmqd_uuid_is_valid(UUID1));
        cr_assert(vmqd_uuid_is_valid(UUID2));
        cr_assert_not(vmqd_uuid_is_valid("0f8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f6"));
        cr_assert_not(vmqd_uuid_is_valid("0f8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f600"));
        cr_assert_not(vmqd_uuid_is_valid("0f8a5c1e33b9d-4c1a-9e77-1d2c3b4a5f60"));
        cr_assert_not(vmqd_uuid_is_valid("0f8a5c1g-3b9d-4c1a-9e77-1d2c3b4a5f60"));
        cr_assert_not(vmqd_uuid_is_valid(""));
        cr_assert_not(vmqd_uuid_is_valid(NULL));
        assert_no_fd_leak();
}

Test(state, missing_file_is_empty) {
        struct vmqd_state s = {.n_machines = 99};
        char *moved = (char *)"sentinel", *error = (char *)"sentinel";

        cr_assert_eq(vmqd_state_load(tmpdir, &s, &moved, &error), 0);
        cr_assert_eq(s.n_machines, 0);
        cr_assert_eq(s.n_channels, 0);
        cr_assert_null(moved);
        cr_assert_null(error);
        vmqd_state_done(&s);

        /* a state directory that does not exist yet */
        _cleanup_free_ char *sub = path_in("not/yet");
        s.n_machines = 99;
        cr_assert_eq(vmqd_state_load(sub, &s, NULL, NULL), 0);
        cr_assert_eq(s.n_machines, 0);
        vmqd_state_done(&s);
        vmqd_state_done(NULL);
        assert_no_fd_leak();
}

Test(state, round_trip) {
        struct vmqd_state s, t;
        _cleanup_free_ char *dir = path_in("var/lib/vmq"); /* created by save */
        _cleanup_free_ char *file = NULL, *tmp = NULL;
        char *moved = NULL, *error = NULL;
        struct stat st;

        cr_assert_geq(asprintf(&file, "%s/state.json", dir), 0);
        cr_assert_geq(asprintf(&tmp, "%s/state.json.tmp", dir), 0);
        sample_state(&s);
        cr_assert_eq(vmqd_state_save(dir, &s), 0);
        cr_assert_eq(stat(dir, &st), 0);
        cr_assert_eq(st.st_mode & 07777, 0755);
        cr_assert_eq(stat(file, &st), 0);
        cr_assert(S_ISREG(st.st_mode));
        cr_assert_eq(st.st_mode & 07777, 0600);
        cr_assert_not(exists(tmp), "the temp file stayed");

        int r = vmqd_state_load(dir, &t, &moved, &error);
        cr_assert_eq(r, 0, "load: %d (%s)", r, error ?: "");
        cr_assert_null(moved);
        cr_assert_null(error);
        assert_state_eq(&s, &t);
        cr_assert_null(t.machines[0].args);
        cr_assert_not_null(t.machines[1].args);

        /* the file is what the issue says, readable by people */
        _cleanup_free_ char *text = read_bytes(file, NULL);
        cr_assert_not_null(strstr(text, "\"version\": 1"), "%s", text);
        cr_assert_not_null(strstr(text, "\"name\": \"rx\""), "%s", text);
        cr_assert_not_null(strstr(text, "\"args\": null"), "%s", text);
        cr_assert_not_null(strstr(text, "\"end_a\": \"host\""), "%s", text);
        cr_assert_eq(text[strlen(text) - 1], '\n');

        /* saving again replaces it */
        cr_assert_eq(vmqd_state_remove_machine(&t, "rx"), 0);
        cr_assert_eq(vmqd_state_save(dir, &t), 0);
        vmqd_state_done(&s);
        cr_assert_eq(vmqd_state_load(dir, &s, NULL, NULL), 0);
        assert_state_eq(&s, &t);
        cr_assert_eq(s.n_machines, 1);
        cr_assert_eq(s.n_channels, 1);

        /* and an empty state is a valid file too */
        vmqd_state_done(&t);
        cr_assert_eq(vmqd_state_save(dir, &t), 0);
        vmqd_state_done(&s);
        cr_assert_eq(vmqd_state_load(dir, &s, NULL, NULL), 0);
        cr_assert_eq(s.n_machines + s.n_channels, 0);
        vmqd_state_done(&s);
        assert_no_fd_leak();
}

Test(state, helpers) {
        struct vmqd_state s;
        sample_state(&s);

        /* deep copies: the caller's strings are not kept */
        char name[] = "copy-me";
        struct vmqd_machine_def m = machine(name, UUID3);
        cr_assert_eq(vmqd_state_add_machine(&s, &m), 0);
        name[0] = 'X';
        cr_assert_not_null(vmqd_state_find_machine(&s, "copy-me"));
        cr_assert_null(vmqd_state_find_machine(&s, "Xopy-me"));
        cr_assert_neq(vmqd_state_find_machine(&s, "copy-me")->name, name);

        m = machine("rx", UUID1);
        cr_assert_eq(vmqd_state_add_machine(&s, &m), -EEXIST);

        /* invalid definitions */
        struct vmqd_machine_def bad[8];
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(bad); i++)
                bad[i] = machine("new", UUID1);
        bad[0].name = (char *)"host";
        bad[1].image = (char *)"";
        bad[2].uuid[8] = 'x';
        bad[3].memory = 17 * MIB;
        bad[4].vcpus = 9;
        bad[5].queue_depth = 96;
        bad[6].huge_memory = 3 * MIB;
        char longargs[600];
        memset(longargs, 'a', sizeof(longargs) - 1);
        longargs[sizeof(longargs) - 1] = '\0';
        bad[7].args = longargs;
        for (size_t i = 0; i < VMQ_ARRAY_SIZE(bad); i++) {
                char *error = NULL;
                cr_assert_eq(vmqd_state_add_machine(&s, &bad[i]), -EINVAL, "bad[%zu]", i);
                cr_assert_eq(vmqd_machine_def_validate(&bad[i], &error), -EINVAL);
                cr_assert_not_null(error);
                free(error);
        }
        char *error = NULL;
        cr_assert_eq(vmqd_machine_def_validate(&bad[3], &error), -EINVAL);
        cr_assert_str_eq(error, "memory: must be a multiple of 2 MiB, between 4 MiB and 1 GiB");
        free(error);

        struct vmqd_channel_def c = channel("host", "host");
        cr_assert_eq(vmqd_state_add_channel(&s, &c), -EINVAL);
        c = channel("rx", "rx");
        cr_assert_eq(vmqd_state_add_channel(&s, &c), -EINVAL);
        c = channel("rx", "host");
        c.depth = 3;
        cr_assert_eq(vmqd_state_add_channel(&s, &c), -EINVAL);
        c = channel("rx", "host");
        c.mode = NULL;
        cr_assert_eq(vmqd_state_add_channel(&s, &c), -EINVAL);
        c = channel("rx", "host");
        c.transfer = (char *)"share";
        cr_assert_eq(vmqd_state_add_channel(&s, &c), -EINVAL);
        c = channel("rx", "bad name");
        cr_assert_eq(vmqd_state_add_channel(&s, &c), -EINVAL);

        /* channels: found and removed by their ends, in order */
        cr_assert_eq(s.n_channels, 4);
        cr_assert_null(vmqd_state_find_channel(&s, "rx", "host"));
        cr_assert_eq(vmqd_state_remove_channel(&s, "rx", "host"), -ENOENT);
        cr_assert_not_null(vmqd_state_find_channel(&s, "tx.bench-2_b", "host"));
        cr_assert_eq(vmqd_state_remove_channel(&s, "tx.bench-2_b", "host"), 0);
        cr_assert_null(vmqd_state_find_channel(&s, "tx.bench-2_b", "host"));
        cr_assert_eq(s.n_channels, 3);

        /* removing a machine removes the channels that name it */
        cr_assert_eq(vmqd_state_remove_machine(&s, "rx"), 0);
        cr_assert_eq(vmqd_state_remove_machine(&s, "rx"), -ENOENT);
        cr_assert_null(vmqd_state_find_machine(&s, "rx"));
        cr_assert_eq(s.n_machines, 2);
        cr_assert_eq(s.n_channels, 0);
        cr_assert_str_eq(s.machines[0].name, "tx.bench-2_b");
        cr_assert_str_eq(s.machines[1].name, "copy-me");
        vmqd_state_done(&s);
        cr_assert_eq(s.n_machines, 0);
        cr_assert_null(s.machines);
        assert_no_fd_leak();
}

Test(state, save_refuses_invalid_state) {
        struct vmqd_state s;
        _cleanup_free_ char *file = path_in("state.json");

        sample_state(&s);
        free(s.machines[1].name);
        s.machines[1].name = strdup("rx"); /* a duplicate, behind the helpers' back */
        cr_assert_eq(vmqd_state_save(tmpdir, &s), -EINVAL);
        free(s.machines[1].name);
        s.machines[1].name = strdup("-x");
        cr_assert_eq(vmqd_state_save(tmpdir, &s), -EINVAL);
        cr_assert_not(exists(file));
        vmqd_state_done(&s);
        assert_no_fd_leak();
}

/* Saves the sample state, then returns the file's bytes. */
static char *save_old(size_t *ret_len) {
        struct vmqd_state s;
        _cleanup_free_ char *file = path_in("state.json");

        sample_state(&s);
        cr_assert_eq(vmqd_state_save(tmpdir, &s), 0);
        vmqd_state_done(&s);
        return read_bytes(file, ret_len);
}

/* A state whose file is larger than `bytes`. */
static void big_state(struct vmqd_state *s, size_t bytes) {
        *s = (struct vmqd_state){0};
        for (size_t i = 0; i * 200 < bytes; i++) {
                char name[32];
                char uuid[37];
                snprintf(name, sizeof(name), "m%zu", i);
                snprintf(uuid, sizeof(uuid), "0f8a5c1e-3b9d-4c1a-9e77-%012zx", i + 1);
                struct vmqd_machine_def m = machine(name, uuid);
                cr_assert_eq(vmqd_state_add_machine(s, &m), 0);
        }
}

static void assert_old_intact(const char *old, size_t old_len) {
        _cleanup_free_ char *file = path_in("state.json");
        _cleanup_free_ char *tmp = path_in("state.json.tmp");
        size_t len;
        _cleanup_free_ char *now = read_bytes(file, &len);
        struct vmqd_state s;

        cr_assert_eq(len, old_len);
        cr_assert_eq(memcmp(now, old, len), 0, "state.json changed");
        cr_assert_not(exists(tmp), "the temp file stayed");
        cr_assert_eq(vmqd_state_load(tmpdir, &s, NULL, NULL), 0);
        cr_assert_eq(s.n_machines, 2);
        vmqd_state_done(&s);
}

Test(state, failed_write_keeps_old_file) {
        /* The file system fills up half-way through the write: here, the
         * file size limit makes write() fail with EFBIG. */
        size_t old_len;
        _cleanup_free_ char *old = save_old(&old_len);
        struct vmqd_state s;
        struct rlimit saved, lim;

        big_state(&s, 64 * 1024);
        cr_assert_eq(getrlimit(RLIMIT_FSIZE, &saved), 0);
        lim = saved;
        lim.rlim_cur = 16 * 1024;
        signal(SIGXFSZ, SIG_IGN);
        cr_assert_eq(setrlimit(RLIMIT_FSIZE, &lim), 0);
        int r = vmqd_state_save(tmpdir, &s);
        cr_assert_eq(setrlimit(RLIMIT_FSIZE, &saved), 0);
        signal(SIGXFSZ, SIG_DFL);
        cr_assert_eq(r, -EFBIG, "save: %d", r);
        assert_old_intact(old, old_len);

        /* and once there is room again, the new state lands whole */
        cr_assert_eq(vmqd_state_save(tmpdir, &s), 0);
        struct vmqd_state t;
        cr_assert_eq(vmqd_state_load(tmpdir, &t, NULL, NULL), 0);
        assert_state_eq(&s, &t);
        vmqd_state_done(&s);
        vmqd_state_done(&t);
        assert_no_fd_leak();
}

Test(state, no_fd_for_temp_file_keeps_old_file) {
        size_t old_len;
        _cleanup_free_ char *old = save_old(&old_len);
        struct vmqd_state s;
        struct rlimit saved, lim;

        /* Allow exactly one more fd: the directory opens, the temp file
         * cannot. */
        int lowest = fcntl(0, F_DUPFD_CLOEXEC, 0);
        cr_assert_geq(lowest, 0);
        close(lowest);
        big_state(&s, 1000);
        cr_assert_eq(getrlimit(RLIMIT_NOFILE, &saved), 0);
        lim = saved;
        lim.rlim_cur = (rlim_t)lowest + 1;
        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
        int r = vmqd_state_save(tmpdir, &s);
        cr_assert_eq(setrlimit(RLIMIT_NOFILE, &saved), 0);
        cr_assert_eq(r, -EMFILE, "save: %d", r);
        assert_old_intact(old, old_len);
        vmqd_state_done(&s);
        assert_no_fd_leak();
}

Test(state, temp_name_taken_keeps_old_file) {
        /* Something that is not a stale temp file sits on the temp name. */
        size_t old_len;
        _cleanup_free_ char *old = save_old(&old_len);
        _cleanup_free_ char *tmp = path_in("state.json.tmp");
        struct vmqd_state s;

        cr_assert_eq(mkdir(tmp, 0700), 0);
        big_state(&s, 1000);
        cr_assert_eq(vmqd_state_save(tmpdir, &s), -EEXIST);
        cr_assert_eq(rmdir(tmp), 0);
        assert_old_intact(old, old_len);
        vmqd_state_done(&s);
        assert_no_fd_leak();
}

Test(state, crash_leftovers) {
        /* A crash between creating the temp file and the rename leaves a
         * partial temp file: loading ignores it, the next save replaces it. */
        size_t old_len;
        _cleanup_free_ char *old = save_old(&old_len);
        _cleanup_free_ char *tmp = path_in("state.json.tmp");
        struct vmqd_state s, t;

        write_bytes(tmp, old, old_len / 2);
        cr_assert_eq(vmqd_state_load(tmpdir, &s, NULL, NULL), 0);
        cr_assert_eq(s.n_machines, 2);
        cr_assert(exists(tmp));
        cr_assert_eq(vmqd_state_remove_machine(&s, "rx"), 0);
        cr_assert_eq(vmqd_state_save(tmpdir, &s), 0);
        cr_assert_not(exists(tmp));
        cr_assert_eq(vmqd_state_load(tmpdir, &t, NULL, NULL), 0);
        assert_state_eq(&s, &t);
        vmqd_state_done(&s);
        vmqd_state_done(&t);
        assert_no_fd_leak();
}

/* Is name "state.json.corrupt-<stamp><suffix>" with a stamp of a second in
 * [from, to]? */
static bool corrupt_name_ok(const char *path, time_t from, time_t to, const char *suffix) {
        const char *base = strrchr(path, '/');
        if (!base || strncmp(path, tmpdir, (size_t)(base - path)) != 0 ||
            strlen(tmpdir) != (size_t)(base - path))
                return false;
        for (time_t t = from; t <= to; t++) {
                char want[96], stamp[32];
                struct tm tm;
                gmtime_r(&t, &tm);
                strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
                snprintf(want, sizeof(want), "/state.json.corrupt-%s%s", stamp, suffix);
                if (strcmp(base, want) == 0)
                        return true;
        }
        return false;
}

/* Writes these bytes as state.json, loads: it must be moved aside intact,
 * with a message containing `reason`. */
static void expect_corrupt(const void *data, size_t len, const char *reason) {
        _cleanup_free_ char *file = path_in("state.json");
        struct vmqd_state s = {.n_machines = 5};
        char *moved = NULL, *error = NULL;

        write_bytes(file, data, len);
        time_t from = time(NULL);
        int r = vmqd_state_load(tmpdir, &s, &moved, &error);
        time_t to = time(NULL);
        cr_assert_eq(r, 1, "%.60s: load gave %d (%s)", (const char *)data, r, error ?: "");
        cr_assert_eq(s.n_machines, 0);
        cr_assert_eq(s.n_channels, 0);
        cr_assert_null(s.machines);
        cr_assert_not_null(moved);
        cr_assert(corrupt_name_ok(moved, from, to, ""), "moved to \"%s\"", moved);
        cr_assert_not_null(error);
        cr_assert_not_null(strstr(error, reason), "reason \"%s\", expected \"%s\"", error, reason);
        cr_assert_not(exists(file), "state.json is still there");

        size_t got_len;
        _cleanup_free_ char *got = read_bytes(moved, &got_len);
        cr_assert_eq(got_len, len);
        cr_assert_eq(memcmp(got, data, len), 0, "the moved file differs");

        /* the next start finds no state, and saving works */
        vmqd_state_done(&s);
        cr_assert_eq(vmqd_state_load(tmpdir, &s, NULL, NULL), 0);
        cr_assert_eq(vmqd_state_save(tmpdir, &s), 0);
        cr_assert_eq(unlink(moved), 0);
        free(moved);
        free(error);
}
#define EXPECT_CORRUPT(text, reason) expect_corrupt((text), strlen(text), (reason))

#define M(extra)                                                                                   \
        "{\"name\": \"rx\", \"image\": \"echo\", \"uuid\": "                                       \
        "\"0f8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f60\","                                                \
        " \"memory\": 16777216, \"vcpus\": 1, \"queue_depth\": 64" extra "}"
#define C(extra)                                                                                   \
        "{\"end_a\": \"host\", \"end_b\": \"rx\", \"depth\": 4, \"mode\": \"immediate\"" extra "}"

Test(state, corrupt_files_are_moved_aside) {
        /* the building blocks are valid */
        _cleanup_free_ char *file = path_in("state.json");
        struct vmqd_state s;
        write_text(file,
                   "{\"version\": 1, \"machines\": [" M(
                           ", \"args\": null, \"autostart\": "
                           "true, \"huge_memory\": 0") "],"
                                                       " \"channels\": [" C(
                                                               ", \"transfer\": \"auto\"") "]}");
        cr_assert_eq(vmqd_state_load(tmpdir, &s, NULL, NULL), 0);
        cr_assert_eq(s.n_machines, 1);
        cr_assert_eq(s.n_channels, 1);
        cr_assert(s.machines[0].autostart);
        vmqd_state_done(&s);
        write_text(file, "{\"version\": 1}");
        cr_assert_eq(vmqd_state_load(tmpdir, &s, NULL, NULL), 0);
        vmqd_state_done(&s);

        /* syntax */
        EXPECT_CORRUPT("", "empty file");
        EXPECT_CORRUPT("garbage", "invalid JSON at line 1");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(""), "unexpected end of data");
        EXPECT_CORRUPT("[]", "the top level must be a JSON object");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [{\"name\": \"\xc3\x28\"}]}",
                       "invalid utf-8");
        expect_corrupt("{\"version\": 1}\0\0\0\0", 18, "contains a NUL byte at offset 14");
        char deep[256] = "{\"version\": 1, \"machines\": ";
        for (size_t i = strlen(deep); i < sizeof(deep) - 1; i++)
                deep[i] = '[';
        deep[sizeof(deep) - 1] = '\0';
        EXPECT_CORRUPT(deep, "nesting too deep");

        /* structure and types */
        EXPECT_CORRUPT("{}", "version: missing");
        EXPECT_CORRUPT("{\"version\": 2}", "version: 2 is not supported");
        EXPECT_CORRUPT("{\"version\": \"1\"}", "version: must be an integer");
        EXPECT_CORRUPT("{\"version\": 1, \"extra\": 1}", "unknown key \"extra\"");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": {}}", "machines: must be an array");
        EXPECT_CORRUPT("{\"version\": 1, \"channels\": 3}", "channels: must be an array");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [3]}", "machines[0]: must be an object");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(", \"colour\": 1") "]}",
                       "machines[0]: unknown key \"colour\"");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [{\"name\": \"rx\"}]}",
                       "machines[0].image: missing");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(", \"autostart\": 1") "]}",
                       "machines[0].autostart: must be true or false");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(", \"huge_memory\": \"2M\"") "]}",
                       "machines[0].huge_memory: must be a non-negative integer");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(", \"huge_memory\": -2097152") "]}",
                       "machines[0].huge_memory: must be a non-negative integer");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(", \"args\": 5") "]}",
                       "machines[0].args: must be a string");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(", \"args\": \"a\\u0000b\"") "]}",
                       "machines[0].args: must not contain NUL characters");
        EXPECT_CORRUPT("{\"version\": 1, \"channels\": [" C("") "]}",
                       "channels[0].transfer: missing");

        /* values */
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M("") "," M("") "]}",
                       "machines[1].name: \"rx\" is defined twice");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [{\"name\": \"host\", \"image\": \"echo\","
                       " \"uuid\": \"0f8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f60\", \"memory\": 16777216,"
                       " \"vcpus\": 1, \"queue_depth\": 64}]}",
                       "machines[0].name: \"host\" is not a valid machine name");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [{\"name\": \"../etc\", \"image\": \"x\","
                       " \"uuid\": \"0f8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f60\", \"memory\": 16777216,"
                       " \"vcpus\": 1, \"queue_depth\": 64}]}",
                       "machines[0].name: \"../etc\" is not a valid machine name");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [{\"name\": \"a\", \"image\": \"x\","
                       " \"uuid\": \"not-a-uuid\", \"memory\": 16777216,"
                       " \"vcpus\": 1, \"queue_depth\": 64}]}",
                       "machines[0].uuid: \"not-a-uuid\" is not a UUID");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [{\"name\": \"a\", \"image\": \"x\","
                       " \"uuid\": \"0f8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f60\", \"memory\": "
                       "99999999999999999999999, \"vcpus\": 1, \"queue_depth\": 64}]}",
                       "machines[0].memory: must be a multiple of 2 MiB");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [{\"name\": \"a\", \"image\": \"x\","
                       " \"uuid\": \"0f8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f60\", \"memory\": "
                       "16777216, \"vcpus\": 4294967297, \"queue_depth\": 64}]}",
                       "machines[0].vcpus: too large");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(", \"huge_memory\": 1048576") "]}",
                       "machines[0].huge_memory: must be a multiple of 2 MiB");
        EXPECT_CORRUPT("{\"version\": 1, \"channels\": [" C(", \"transfer\": \"teleport\"") "]}",
                       "channels[0].transfer: \"teleport\" is not");
        EXPECT_CORRUPT("{\"version\": 1, \"channels\": [{\"end_a\": \"host\", \"end_b\": "
                       "\"host\", \"depth\": 4, \"mode\": \"immediate\", \"transfer\": "
                       "\"auto\"}]}",
                       "channels[0].end_b: the two ends must differ");
        EXPECT_CORRUPT("{\"version\": 1, \"channels\": [{\"end_a\": \"host\", \"end_b\": "
                       "\"rx\", \"depth\": 0, \"mode\": \"immediate\", \"transfer\": "
                       "\"auto\"}]}",
                       "channels[0].depth: must be a power of two");
        assert_no_fd_leak();
}

Test(state, corrupt_large_and_special_files) {
        _cleanup_free_ char *file = path_in("state.json");
        struct vmqd_state s;
        char *moved = NULL, *error = NULL;

        /* over 16 MiB: refused by its size, moved aside whole */
        write_text(file, "{\"version\": 1}");
        cr_assert_eq(truncate(file, VMQD_FILE_MAX + 4096), 0);
        cr_assert_eq(vmqd_state_load(tmpdir, &s, &moved, &error), 1);
        cr_assert_str_eq(error, "larger than 16 MiB (16781312 bytes)");
        struct stat st;
        cr_assert_eq(stat(moved, &st), 0);
        cr_assert_eq(st.st_size, VMQD_FILE_MAX + 4096);
        cr_assert_eq(unlink(moved), 0);
        free(moved);
        free(error);
        vmqd_state_done(&s);

        /* a FIFO planted under the name must not hang the daemon */
        cr_assert_eq(mkfifo(file, 0600), 0);
        cr_assert_eq(vmqd_state_load(tmpdir, &s, &moved, &error), 1);
        cr_assert_str_eq(error, "not a regular file");
        cr_assert_eq(lstat(moved, &st), 0);
        cr_assert(S_ISFIFO(st.st_mode));
        free(moved);
        free(error);
        vmqd_state_done(&s);
        assert_no_fd_leak();
}

Test(state, corrupt_name_never_overwrites) {
        /* Two corrupt files within one second: the second gets ".1"; an
         * existing file of that name is never replaced. */
        _cleanup_free_ char *file = path_in("state.json");
        time_t now = time(NULL);
        struct vmqd_state s;
        char *moved = NULL;

        for (time_t t = now; t < now + 30; t++) {
                char name[64], stamp[32];
                struct tm tm;
                gmtime_r(&t, &tm);
                strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
                snprintf(name, sizeof(name), "state.json.corrupt-%s", stamp);
                _cleanup_free_ char *p = path_in(name);
                write_text(p, "older corrupt file");
        }
        write_text(file, "newer corrupt file");
        cr_assert_eq(vmqd_state_load(tmpdir, &s, &moved, NULL), 1);
        cr_assert(corrupt_name_ok(moved, now, time(NULL), ".1"), "moved to \"%s\"", moved);
        _cleanup_free_ char *text = read_bytes(moved, NULL);
        cr_assert_str_eq(text, "newer corrupt file");
        free(moved);
        vmqd_state_done(&s);

        /* the placeholders are all untouched */
        for (time_t t = now; t < now + 30; t++) {
                char name[64], stamp[32];
                struct tm tm;
                gmtime_r(&t, &tm);
                strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
                snprintf(name, sizeof(name), "state.json.corrupt-%s", stamp);
                _cleanup_free_ char *p = path_in(name);
                _cleanup_free_ char *old = read_bytes(p, NULL);
                cr_assert_str_eq(old, "older corrupt file");
        }
        assert_no_fd_leak();
}

Test(state, io_errors_are_errors) {
        /* The state directory path names a file: an I/O error, not a
         * corrupt state; *ret is not touched, nothing is moved. */
        _cleanup_free_ char *file = path_in("plain");
        struct vmqd_state s = {.n_machines = 42};
        char *moved = (char *)"sentinel", *error = NULL;

        write_text(file, "x");
        cr_assert_eq(vmqd_state_load(file, &s, &moved, &error), -ENOTDIR);
        cr_assert_eq(s.n_machines, 42);
        cr_assert_null(moved);
        cr_assert_not_null(error);
        cr_assert_not_null(strstr(error, "cannot open the state directory"), "%s", error);
        free(error);

        struct vmqd_state empty = {0};
        cr_assert_eq(vmqd_state_save(file, &empty), -ENOTDIR);
        _cleanup_free_ char *below = NULL;
        cr_assert_geq(asprintf(&below, "%s/sub", file), 0);
        cr_assert_eq(vmqd_state_save(below, &empty), -ENOTDIR);
        _cleanup_free_ char *text = read_bytes(file, NULL);
        cr_assert_str_eq(text, "x");
        assert_no_fd_leak();
}

/* An adopted libvirt domain: its own keys, saved and restored. */
#define L(extra)                                                                                   \
        "{\"name\": \"web\", \"backend\": \"libvirt\", \"domain\": \"web-vm\", \"uuid\": "         \
        "\"0f8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f60\", \"memory\": 4194304, \"vcpus\": 1,"             \
        " \"queue_depth\": 64" extra "}"

static struct vmqd_machine_def libvirt_machine(void) {
        struct vmqd_machine_def d = {
                .name = (char *)"web",
                .domain = (char *)"web-vm",
                .memory = 4 * MIB,
                .rx_size = 2 * MIB,
                .vcpus = 1,
                .queue_depth = 64,
        };
        snprintf(d.uuid, sizeof(d.uuid), "%s", UUID4);
        return d;
}

Test(state, libvirt_machines) {
        _cleanup_free_ char *file = path_in("state.json");
        struct vmqd_state s, t;
        char *error = NULL;

        sample_state(&s);
        struct vmqd_machine_def d = libvirt_machine();
        cr_assert_eq(vmqd_state_add_machine(&s, &d), 0);
        cr_assert_eq(vmqd_state_save(tmpdir, &s), 0);
        cr_assert_eq(vmqd_state_load(tmpdir, &t, NULL, NULL), 0);
        assert_state_eq(&s, &t);
        struct vmqd_machine_def *w = vmqd_state_find_machine(&t, "web");
        cr_assert_not_null(w);
        cr_assert_null(w->image);
        cr_assert_str_eq(w->domain, "web-vm");
        cr_assert_eq(w->rx_size, 2 * MIB);
        cr_assert_null(vmqd_state_find_machine(&t, "rx")->domain);
        _cleanup_free_ char *text = read_bytes(file, NULL);
        cr_assert_not_null(strstr(text, "\"backend\": \"libvirt\""), "%s", text);
        cr_assert_not_null(strstr(text, "\"domain\": \"web-vm\""), "%s", text);
        cr_assert_null(strstr(text, "\"backend\": \"kvm\""), "kvm is the default: %s", text);
        vmqd_state_done(&s);
        vmqd_state_done(&t);

        /* what a libvirt machine must and must not have */
        d = libvirt_machine();
        cr_assert_eq(vmqd_machine_def_validate(&d, NULL), 0);
#define EXPECT_INVALID(stmt, reason)                                                               \
        do {                                                                                       \
                d = libvirt_machine();                                                             \
                stmt;                                                                              \
                cr_assert_eq(vmqd_machine_def_validate(&d, &error), -EINVAL, "%s", #stmt);         \
                cr_assert_not_null(strstr(error, reason), "%s: %s", #stmt, error);                 \
                free(error);                                                                       \
                error = NULL;                                                                      \
        } while (0)
        EXPECT_INVALID(d.domain = (char *)"", "domain: must be a non-empty string");
        EXPECT_INVALID(d.domain = (char *)"a\nb", "domain: must be");
        EXPECT_INVALID(d.image = (char *)"echo", "image: a libvirt machine has no image");
        EXPECT_INVALID(d.memory = 3 * MIB, "memory: the region size must be a power of two");
        EXPECT_INVALID(d.memory = 2 * 1024 * MIB, "memory: the region size");
        EXPECT_INVALID(d.rx_size = 0, "rx_size: must be a multiple of 4 KiB");
        EXPECT_INVALID(d.rx_size = 4 * MIB, "rx_size: must be a multiple of 4 KiB");
        EXPECT_INVALID(d.rx_size = 4097, "rx_size");
        EXPECT_INVALID(d.vcpus = 2, "vcpus: must be 1");
        EXPECT_INVALID(d.autostart = true, "no huge_memory, args or autostart");
        EXPECT_INVALID(d.args = (char *)"x", "no huge_memory, args or autostart");
        EXPECT_INVALID((d.domain = NULL, d.image = (char *)"echo", d.memory = 16 * MIB),
                       "rx_size: only for a libvirt machine");
#undef EXPECT_INVALID

        /* in the file */
        write_text(file, "{\"version\": 1, \"machines\": [" L(", \"rx_size\": 8192") "]}");
        cr_assert_eq(vmqd_state_load(tmpdir, &s, NULL, NULL), 0);
        cr_assert_eq(s.machines[0].rx_size, 8192);
        cr_assert_str_eq(s.machines[0].domain, "web-vm");
        vmqd_state_done(&s);
        write_text(file, "{\"version\": 1, \"machines\": [" M(", \"backend\": \"kvm\"") "]}");
        cr_assert_eq(vmqd_state_load(tmpdir, &s, NULL, NULL), 0);
        cr_assert_null(s.machines[0].domain);
        vmqd_state_done(&s);
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" L("") "]}",
                       "machines[0].rx_size: missing");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" L(", \"rx_size\": 8192, \"image\": "
                                                            "\"echo\"") "]}",
                       "machines[0].image: a libvirt machine has no image");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(", \"backend\": \"xen\"") "]}",
                       "machines[0].backend: \"xen\" is not \"kvm\" or \"libvirt\"");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(", \"domain\": \"d\"") "]}",
                       "machines[0].domain: only for the libvirt backend");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(", \"rx_size\": 8192") "]}",
                       "machines[0].rx_size: only for a libvirt machine");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [{\"name\": \"web\", \"backend\": "
                       "\"libvirt\"}]}",
                       "machines[0].domain: missing");
        assert_no_fd_leak();
}

/* ---- issue 8: one UUID per machine, never nil; changes on a copy ---- */

static const char *const NIL_UUID = "00000000-0000-0000-0000-000000000000";

Test(state, uuids_are_unique_and_not_nil) {
        struct vmqd_state s;
        char *error = NULL;

        cr_assert(vmqd_uuid_is_nil(NIL_UUID));
        cr_assert_not(vmqd_uuid_is_nil(UUID1));
        cr_assert_not(vmqd_uuid_is_nil("00000000-0000-0000-0000-00000000000"));
        cr_assert(vmqd_uuid_equal(UUID2, "ab8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f61"));
        cr_assert_not(vmqd_uuid_equal(UUID1, UUID2));
        cr_assert_not(vmqd_uuid_equal(UUID1, NULL));

        /* the nil UUID is not a definition's */
        struct vmqd_machine_def m = machine("zero", NIL_UUID);
        cr_assert_eq(vmqd_machine_def_validate(&m, &error), -EINVAL);
        cr_assert_str_eq(error, "uuid: the nil UUID is not a machine identity");
        free(error);

        /* nor can two machines share one, whatever the case */
        sample_state(&s);
        cr_assert_not_null(
                vmqd_state_find_machine_by_uuid(&s, "ab8a5c1e-3b9d-4c1a-9e77-1d2c3b4a5f61"));
        cr_assert_null(vmqd_state_find_machine_by_uuid(&s, UUID3));
        m = machine("new", "0F8A5C1E-3B9D-4C1A-9E77-1D2C3B4A5F60"); /* rx's */
        cr_assert_eq(vmqd_state_add_machine(&s, &m), -EEXIST);
        m = machine("zero", NIL_UUID);
        cr_assert_eq(vmqd_state_add_machine(&s, &m), -EINVAL);
        cr_assert_eq(s.n_machines, 2);

        /* save never writes what load refuses: a shared UUID behind the
         * helpers' back */
        _cleanup_free_ char *file = path_in("state.json");
        memcpy(s.machines[1].uuid, UUID1, sizeof(s.machines[1].uuid));
        cr_assert_eq(vmqd_state_save(tmpdir, &s), -EINVAL);
        memcpy(s.machines[1].uuid, NIL_UUID, sizeof(s.machines[1].uuid));
        cr_assert_eq(vmqd_state_save(tmpdir, &s), -EINVAL);
        cr_assert_not(exists(file));
        vmqd_state_done(&s);
        assert_no_fd_leak();
}

Test(state, files_with_a_shared_or_nil_uuid_are_moved_aside) {
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(
                               "") ", {\"name\": \"tx\", \"image\": "
                                   "\"echo\", \"uuid\": \"0F8A5C1E-3B9D-4C1A-9E77-1D2C3B4A5F60\", "
                                   "\"memory\": "
                                   "16777216, \"vcpus\": 1, \"queue_depth\": 64}]}",
                       "machines[1].uuid: \"0F8A5C1E-3B9D-4C1A-9E77-1D2C3B4A5F60\" of machine "
                       "\"tx\" is also the UUID of machine \"rx\" (machines[0])");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [{\"name\": \"web\", \"backend\": "
                       "\"libvirt\", \"domain\": \"web-vm\", \"uuid\": "
                       "\"00000000-0000-0000-0000-000000000000\", \"memory\": 4194304, "
                       "\"rx_size\": 2097152, \"vcpus\": 1, \"queue_depth\": 64}]}",
                       "machines[0].uuid: the nil UUID is not a machine identity");
}

Test(state, copy_is_deep_and_independent) {
        struct vmqd_state s, c;

        sample_state(&s);
        cr_assert_eq(vmqd_state_copy(&s, &c), 0);
        assert_state_eq(&s, &c);
        for (size_t i = 0; i < s.n_machines; i++) {
                cr_assert_neq(c.machines[i].name, s.machines[i].name);
                cr_assert_neq(c.machines[i].image, s.machines[i].image);
        }
        for (size_t i = 0; i < s.n_channels; i++)
                cr_assert_neq(c.channels[i].end_a, s.channels[i].end_a);
        /* changing the copy leaves the original as it was */
        cr_assert_eq(vmqd_state_remove_machine(&c, "rx"), 0);
        cr_assert_not_null(vmqd_state_find_machine(&s, "rx"));
        cr_assert_eq(s.n_channels, 4);
        vmqd_state_done(&c);
        /* an empty state copies to an empty state */
        struct vmqd_state e = {0};
        cr_assert_eq(vmqd_state_copy(&e, &c), 0);
        cr_assert_eq(c.n_machines, 0);
        cr_assert_null(c.machines);
        vmqd_state_done(&c);
        vmqd_state_done(&s);
        assert_no_fd_leak();
}

/* ---- issue 11: a libvirt machine's vsock CID ---- */

Test(state, vsock_cids_are_checked_saved_and_unique) {
        _cleanup_free_ char *file = path_in("state.json");
        struct vmqd_state s, t;
        char *error = NULL;

        /* saved and loaded; 0 (no device) is not written */
        sample_state(&s);
        struct vmqd_machine_def d = libvirt_machine();
        d.vsock_cid = 7;
        cr_assert_eq(vmqd_state_add_machine(&s, &d), 0);
        cr_assert_eq(vmqd_state_save(tmpdir, &s), 0);
        cr_assert_eq(vmqd_state_load(tmpdir, &t, NULL, NULL), 0);
        cr_assert_eq(vmqd_state_find_machine(&t, "web")->vsock_cid, 7);
        cr_assert_eq(vmqd_state_find_machine(&t, "rx")->vsock_cid, 0);
        cr_assert_eq(vmqd_state_find_machine_by_vsock_cid(&t, 7),
                     vmqd_state_find_machine(&t, "web"));
        cr_assert_null(vmqd_state_find_machine_by_vsock_cid(&t, 0), "0 is nobody's CID");
        _cleanup_free_ char *text = read_bytes(file, NULL);
        cr_assert_not_null(strstr(text, "\"vsock_cid\": 7"), "%s", text);
        cr_assert_null(strstr(strstr(text, "vsock_cid") + 1, "vsock_cid"),
                       "only the machine with a device has one: %s", text);

        /* one CID, one machine */
        d = libvirt_machine();
        d.name = (char *)"web2";
        d.domain = (char *)"web2-vm";
        snprintf(d.uuid, sizeof(d.uuid), "%s", UUID3);
        d.vsock_cid = 7;
        cr_assert_eq(vmqd_state_add_machine(&s, &d), -EEXIST);
        vmqd_state_done(&s);
        vmqd_state_done(&t);

        /* the range, and micro-VMs have none */
        d = libvirt_machine();
        d.vsock_cid = 2;
        cr_assert_eq(vmqd_machine_def_validate(&d, &error), -EINVAL);
        cr_assert_not_null(strstr(error, "vsock_cid: must be 3.."), "%s", error);
        free(error);
        d.vsock_cid = 0xffffffffu;
        cr_assert_eq(vmqd_machine_def_validate(&d, NULL), -EINVAL);
        d.vsock_cid = 3;
        cr_assert_eq(vmqd_machine_def_validate(&d, NULL), 0);

        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" M(", \"vsock_cid\": 5") "]}",
                       "machines[0].vsock_cid: only for a libvirt machine");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" L(", \"rx_size\": 8192, \"vsock_cid\": "
                                                            "1") "]}",
                       "machines[0].vsock_cid: must be 3..");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" L(", \"rx_size\": 8192, \"vsock_cid\": "
                                                            "\"5\"") "]}",
                       "machines[0].vsock_cid");
        EXPECT_CORRUPT("{\"version\": 1, \"machines\": [" L(
                               ", \"rx_size\": 8192, \"vsock_cid\": 5") ", {\"name\": \"web2\", "
                                                                        "\"backend\": \"libvirt\", "
                                                                        "\"domain\": \"w2\", "
                                                                        "\"uuid\": "
                                                                        "\"ab8a5c1e-3b9d-4c1a-9e77-"
                                                                        "1d2c3b4a5f61\", "
                                                                        "\"memory\": 4194304, "
                                                                        "\"vcpus\": 1, "
                                                                        "\"queue_depth\": 64, "
                                                                        "\"rx_size\": 8192, "
                                                                        "\"vsock_cid\": 5}]}",
                       "machines[1].vsock_cid: 5 of machine \"web2\" is also the CID of machine "
                       "\"web\" (machines[0])");
        assert_no_fd_leak();
}
