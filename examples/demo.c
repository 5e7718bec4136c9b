/* SPDX-License-Identifier: MIT */
/*
 * vmq-demo: two micro-VMs talking through vmq queues, on the core alone.
 *
 *   alice runs the `source` image: it sends a stream of page messages.
 *   bob   runs the `sink` image:   it counts and checksums what arrives.
 *
 * The demo opens a guest<->guest channel alice<->bob (each side prints the
 * HELLO identity it received), lets the stream flow (pages move by remap),
 * opens a host<->guest channel to bob, asks bob for its report over it,
 * checks it against what alice says she sent, and prints the counters.
 *
 * Usage: vmq-demo [--count N] [--size BYTES] [--transfer copy|flip|auto]
 *                 [--guest-dir DIR]
 * Exit status: 0 when bob's report matches alice's, 1 otherwise.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/monitor.h"

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

/* Guest console output, line-buffered per VM, prefixed with its name. */
static void on_console(void *userdata, struct vmq_vm *vm, const char *buf, size_t len) {
        (void)userdata;
        pthread_mutex_lock(&out_lock);
        static char line[2][512];
        static size_t used[2];
        int k = vmq_vm_id(vm) & 1;
        for (size_t i = 0; i < len; i++) {
                if (buf[i] == '\n' || used[k] == sizeof(line[k]) - 1) {
                        printf("  [%s] %.*s\n", vmq_vm_name(vm), (int)used[k], line[k]);
                        used[k] = 0;
                        if (buf[i] == '\n')
                                continue;
                }
                line[k][used[k]++] = buf[i];
        }
        fflush(stdout);
        pthread_mutex_unlock(&out_lock);
}

static void on_state(void *userdata, struct vmq_vm *vm, enum vmq_vm_state state) {
        (void)userdata;
        pthread_mutex_lock(&out_lock);
        printf("  * %s is %s\n", vmq_vm_name(vm), vmq_vm_state_to_string(state));
        fflush(stdout);
        pthread_mutex_unlock(&out_lock);
}

static void format_uuid(char out[37], const uint8_t u[16]) {
        snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
                 u[13], u[14], u[15]);
}

static int die(const char *what, int r) {
        fprintf(stderr, "vmq-demo: %s: %s\n", what, strerror(-r));
        return 1;
}

/* Finds "key<number>" in the last line of a VM's console that has `prefix`. */
static int console_value(struct vmq_vm *vm, const char *prefix, const char *key, int base,
                         uint64_t *ret) {
        static char buf[65536];
        size_t n = vmq_vm_console_read(vm, buf, sizeof(buf) - 1);
        buf[n] = 0;
        char *line = NULL;
        for (char *p = strstr(buf, prefix); p; p = strstr(p + 1, prefix))
                line = p;
        if (!line)
                return -ENOENT;
        char *k = strstr(line, key);
        char *eol = strchr(line, '\n');
        if (!k || (eol && k > eol))
                return -ENOENT;
        *ret = strtoull(k + strlen(key), NULL, base);
        return 0;
}

int main(int argc, char **argv) {
        const char *guest_dir = getenv("VMQ_GUEST_DIR") ? getenv("VMQ_GUEST_DIR") : VMQ_GUEST_DIR;
        const char *transfer = "flip";
        unsigned long count = 64, size = 16384;
        static const struct option opts[] = {
                {"count", required_argument, NULL, 'c'},
                {"size", required_argument, NULL, 's'},
                {"transfer", required_argument, NULL, 't'},
                {"guest-dir", required_argument, NULL, 'g'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        int c;
        while ((c = getopt_long(argc, argv, "c:s:t:g:h", opts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        count = strtoul(optarg, NULL, 0);
                        break;
                case 's':
                        size = strtoul(optarg, NULL, 0);
                        break;
                case 't':
                        transfer = optarg;
                        break;
                case 'g':
                        guest_dir = optarg;
                        break;
                case 'h':
                        printf("Usage: vmq-demo [--count N] [--size BYTES] "
                               "[--transfer copy|flip|auto] [--guest-dir DIR]\n"
                               "Boots two micro-VMs (source -> sink), shows the identities each\n"
                               "receives, streams N messages of BYTES through a vmq channel, asks\n"
                               "the sink for its report over a host channel and prints "
                               "counters.\n");
                        return 0;
                default:
                        return 2;
                }
        }

        struct vmq_monitor_config mc;
        struct vmq_monitor *m;
        vmq_monitor_config_init(&mc);
        mc.console = on_console;
        mc.state_changed = on_state;
        int r = vmq_monitor_new(&mc, &m);
        if (r < 0)
                return die("cannot start the monitor (is /dev/kvm there and yours?)", r);

        char path[4096], args[256];
        struct vmq_vm_config vc;
        struct vmq_vm *alice, *bob;

        printf("== booting two micro-VMs\n");
        vmq_vm_config_init(&vc);
        vc.name = "alice";
        snprintf(args, sizeof(args), "count=%lu size=%lu transfer=%s", count, size, transfer);
        vc.args = args;
        snprintf(path, sizeof(path), "%s/source.elf", guest_dir);
        r = vmq_vm_create_from_file(m, &vc, path, &alice);
        if (r < 0)
                return die(path, r);
        vc.name = "bob";
        vc.args = "";
        snprintf(path, sizeof(path), "%s/sink.elf", guest_dir);
        r = vmq_vm_create_from_file(m, &vc, path, &bob);
        if (r < 0)
                return die(path, r);
        if ((r = vmq_vm_start(alice)) < 0 || (r = vmq_vm_start(bob)) < 0)
                return die("start", r);

        printf("== opening channel alice <-> bob (each side receives a HELLO)\n");
        uint32_t ch_ab, ch_hb;
        r = vmq_channel_open(m, vmq_vm_id(alice), vmq_vm_id(bob), NULL, &ch_ab);
        if (r < 0)
                return die("channel open", r);

        r = vmq_vm_wait(alice, 60000);
        if (r != VMQ_VM_EXITED)
                return die("alice did not finish", r < 0 ? r : -EIO);

        printf("== opening channel host <-> bob and asking bob for a report\n");
        r = vmq_channel_open(m, VMQ_HOST_ID, vmq_vm_id(bob), NULL, &ch_hb);
        if (r < 0)
                return die("channel open", r);
        struct vmq_host_msg *msg;
        r = vmq_host_recv(m, ch_hb, 5000, &msg);
        if (r < 0)
                return die("host recv", r);
        if (msg->kind == VMQ_DESC_HELLO && msg->len >= sizeof(struct vmq_identity)) {
                struct vmq_identity id;
                char u[37];
                memcpy(&id, msg->data, sizeof(id));
                format_uuid(u, id.uuid);
                printf("  [host] hello channel=%u peer=%u name=%s uuid=%s\n", msg->channel,
                       id.vm_id, id.name, u);
        }
        free(msg);
        r = vmq_host_send(m, ch_hb, "report", 6, VMQ_TAG_REPORT);
        if (r < 0)
                return die("host send", r);
        uint64_t rep[3] = {0};
        for (;;) {
                r = vmq_host_recv(m, ch_hb, 5000, &msg);
                if (r < 0)
                        return die("waiting for bob's report", r);
                bool done = msg->kind == VMQ_DESC_INLINE && msg->tag == VMQ_TAG_REPORT &&
                            msg->len >= sizeof(rep);
                if (done)
                        memcpy(rep, msg->data, sizeof(rep));
                free(msg);
                if (done)
                        break;
        }
        printf("  [host] bob reports count=%" PRIu64 " bytes=%" PRIu64 " checksum=%016" PRIx64 "\n",
               rep[0], rep[1], rep[2]);

        uint64_t sent_count = 0, sent_sum = 0;
        if (console_value(alice, "source: channel", " count=", 10, &sent_count) < 0 ||
            console_value(alice, "source: channel", "checksum=", 16, &sent_sum) < 0)
                fprintf(stderr, "vmq-demo: alice printed no final report\n");
        bool match = rep[0] == sent_count && rep[2] == sent_sum && sent_count == count;
        printf("  [host] alice sent count=%" PRIu64 " checksum=%016" PRIx64 " -> %s\n", sent_count,
               sent_sum, match ? "MATCH" : "MISMATCH");

        printf("== counters\n");
        struct vmq_vm *vms[2] = {alice, bob};
        printf("  %-6s %8s %8s %8s %10s %6s %6s %6s %7s\n", "vm", "exits", "sent", "received",
               "bytes", "copies", "flips", "shares", "errors");
        for (int i = 0; i < 2; i++) {
                struct vmq_vm_stats s;
                vmq_vm_get_stats(vms[i], &s);
                printf("  %-6s %8" PRIu64 " %8" PRIu64 " %8" PRIu64 " %10" PRIu64 " %6" PRIu64
                       " %6" PRIu64 " %6" PRIu64 " %7" PRIu64 "\n",
                       vmq_vm_name(vms[i]), s.exits, s.sent, s.received, s.bytes_sent, s.copies,
                       s.flips, s.shares, s.errors);
        }
        uint32_t chans[2] = {ch_ab, ch_hb};
        for (int i = 0; i < 2; i++) {
                struct vmq_channel_info ci;
                if (vmq_channel_get_info(m, chans[i], &ci) == 0)
                        printf("  channel %u: %u<->%u delivered %" PRIu64 "/%" PRIu64
                               " messages, %" PRIu64 "/%" PRIu64 " bytes\n",
                               ci.id, ci.end[0], ci.end[1], ci.messages[0], ci.messages[1],
                               ci.bytes[0], ci.bytes[1]);
        }
        vmq_monitor_free(m);
        return match ? 0 : 1;
}
