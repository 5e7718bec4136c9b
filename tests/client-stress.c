/* SPDX-License-Identifier: MIT */
/*
 * vmq-client-stress ADDRESS CHANNEL N: one of the concurrent clients of the
 * daemon tests.  Over libvmq-client it makes N round trips on a host<->echo
 * channel (a Send, then a Receive of the reflection, each checked byte for
 * byte), i.e. 2N calls, with a GetStatistics every 10 round trips.
 * Exit status 0 when every call succeeded and no message was lost.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libvmq-client/vmq-client.h"

int main(int argc, char **argv) {
        struct vmq_client *c = NULL;
        unsigned long channel, n;
        int r;

        if (argc != 4) {
                fprintf(stderr, "usage: %s ADDRESS CHANNEL N\n", argv[0]);
                return 2;
        }
        channel = strtoul(argv[2], NULL, 10);
        n = strtoul(argv[3], NULL, 10);
        r = vmq_client_new(&c);
        if (r == 0)
                r = vmq_client_connect(c, argv[1]);
        if (r < 0) {
                fprintf(stderr, "stress: connect: %s\n", strerror(-r));
                return 1;
        }
        for (unsigned long i = 0; i < n; i++) {
                char out[64];
                int len = snprintf(out, sizeof(out), "client %lu message %lu", channel, i);
                for (int tries = 0;; tries++) {
                        r = vmq_client_send(c, (uint32_t)channel, out, (size_t)len, i);
                        if (r != -EAGAIN || tries > 1000)
                                break;
                }
                if (r < 0) {
                        fprintf(stderr, "stress: send %lu: %s\n", i, strerror(-r));
                        return 1;
                }
                struct vmq_message *m = NULL;
                r = vmq_client_receive(c, (uint32_t)channel, 10 * 1000000ull, &m);
                if (r < 0) {
                        fprintf(stderr, "stress: receive %lu: %s\n", i, strerror(-r));
                        return 1;
                }
                size_t size = 0;
                const void *data = vmq_message_get_data(m, &size);
                if (vmq_message_get_tag(m) != i || size != (size_t)len ||
                    memcmp(data, out, size) != 0) {
                        fprintf(stderr, "stress: message %lu lost or changed (tag %" PRIu64 ")\n",
                                i, vmq_message_get_tag(m));
                        return 1;
                }
                vmq_message_free(m);
                if (i % 10 == 0) {
                        struct vmq_stats *s = NULL;
                        r = vmq_client_get_statistics(c, &s);
                        if (r < 0) {
                                fprintf(stderr, "stress: statistics: %s\n", strerror(-r));
                                return 1;
                        }
                        vmq_stats_free(s);
                }
        }
        vmq_client_unref(c);
        return 0;
}
