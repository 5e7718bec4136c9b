// SPDX-License-Identifier: MIT
//
// vmq-client.h from C++: the build compiles this file with -std=c++11 -Wall
// -Wextra -Werror (tests/tests.am), so a header construct that C++ refuses
// or warns about, such as a designated initializer that leaves members out
// (-Wmissing-field-initializers), fails `make check`.  Linking it checks the
// extern "C" block; running it checks what the three *_OPTIONS_INIT
// macros set.
#include <cstdio>

#include "libvmq-client/vmq-client.h"

int main() {
        const struct vmq_machine_options o = VMQ_MACHINE_OPTIONS_INIT;
        const struct vmq_adopt_options a = VMQ_ADOPT_OPTIONS_INIT;
        const struct vmq_channel_options c = VMQ_CHANNEL_OPTIONS_INIT;
        int (*create)(struct vmq_client *, const char *, const char *,
                      const struct vmq_machine_options *) = vmq_client_create_machine;
        int bad = 0;

        if (o.size != sizeof(struct vmq_machine_options)) {
                std::fprintf(stderr, "VMQ_MACHINE_OPTIONS_INIT: size is %zu, not %zu\n", o.size,
                             sizeof(struct vmq_machine_options));
                bad = 1;
        }
        if (o.memory || o.vcpus || o.queue_depth || o.huge_memory || o.args || o.uuid ||
            o.persistent || o.autostart || o.start) {
                std::fprintf(stderr, "VMQ_MACHINE_OPTIONS_INIT: a field other than size is set\n");
                bad = 1;
        }
        if (a.size != sizeof(struct vmq_adopt_options) || a.name || a.persistent ||
            a.region_size || a.rx_size) {
                std::fprintf(stderr, "VMQ_ADOPT_OPTIONS_INIT: wrong values\n");
                bad = 1;
        }
        if (c.size != sizeof(struct vmq_channel_options) || c.depth || c.mode || c.transfer ||
            c.persistent) {
                std::fprintf(stderr, "VMQ_CHANNEL_OPTIONS_INIT: wrong values\n");
                bad = 1;
        }
        // The library's symbol, reached through C linkage (a link error if
        // the header's extern "C" block went missing).
        if (!create) {
                std::fprintf(stderr, "vmq_client_create_machine has no address\n");
                bad = 1;
        }
        return bad;
}
