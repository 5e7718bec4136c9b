/* SPDX-License-Identifier: MIT */
/*
 * vmqctl: monitor (events in a poll loop, the way any program embeds
 * libvmq-client), stats and version.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vmqctl/vmqctl.h"

static int on_event(struct vmq_client *c, const struct vmq_event *ev, void *userdata) {
        struct ctl *ctl = userdata;
        enum vmq_event_type type = vmq_event_get_type(ev);
        const char *name = vmq_event_get_machine_name(ev);

        (void)c;
        if (ctl->json) {
                struct json j;

                json_begin(&j, stdout);
                json_open_object(&j, NULL);
                json_string(&j, "event", vmq_event_type_to_string(type));
                switch (type) {
                case VMQ_EVENT_MACHINE_NEW:
                case VMQ_EVENT_MACHINE_REMOVED:
                        json_string(&j, "machine", name);
                        break;
                case VMQ_EVENT_MACHINE_STATE:
                        json_string(&j, "machine", name);
                        json_string(&j, "state", vmq_event_get_machine_state(ev));
                        break;
                case VMQ_EVENT_CHANNEL_NEW:
                case VMQ_EVENT_CHANNEL_REMOVED:
                        json_u64(&j, "channel", vmq_event_get_channel_id(ev));
                        break;
                case VMQ_EVENT_CHANNEL_STATE:
                        json_u64(&j, "channel", vmq_event_get_channel_id(ev));
                        json_bool(&j, "open", vmq_event_get_channel_open(ev));
                        break;
                default:
                        break;
                }
                json_close_object(&j);
                json_end(&j);
        } else {
                switch (type) {
                case VMQ_EVENT_MACHINE_NEW:
                case VMQ_EVENT_MACHINE_REMOVED:
                        printf("%s %s\n", vmq_event_type_to_string(type), name);
                        break;
                case VMQ_EVENT_MACHINE_STATE:
                        printf("%s %s %s\n", vmq_event_type_to_string(type), name,
                               vmq_event_get_machine_state(ev));
                        break;
                case VMQ_EVENT_CHANNEL_NEW:
                case VMQ_EVENT_CHANNEL_REMOVED:
                        printf("%s %" PRIu32 "\n", vmq_event_type_to_string(type),
                               vmq_event_get_channel_id(ev));
                        break;
                case VMQ_EVENT_CHANNEL_STATE:
                        printf("%s %" PRIu32 " %s\n", vmq_event_type_to_string(type),
                               vmq_event_get_channel_id(ev),
                               vmq_event_get_channel_open(ev) ? "open" : "closed");
                        break;
                default:
                        printf("%s\n", vmq_event_type_to_string(type));
                        break;
                }
                /* Line by line, also into a pipe. */
                fflush(stdout);
        }
        return ferror(stdout) ? -EIO : 0;
}

static uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

int cmd_monitor(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("monitor");
        int code, r;

        code = ctl_parse_plain(ctl, cmd, argc, argv, 0, 0);
        if (code >= 0)
                return code;
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;
        install_interrupt_handlers();
        r = vmq_client_subscribe(ctl->client, on_event, ctl);
        if (r < 0)
                return ctl_fail(ctl, r, NULL, "cannot subscribe to events");
        if (!ctl->quiet)
                ctl_error(0, "monitoring %s; press Ctrl-C to stop", ctl_bus_name(ctl));

        while (!was_interrupted()) {
                struct pollfd p;
                uint64_t until;
                int ms = -1;

                while ((r = vmq_client_process(ctl->client)) > 0)
                        ;
                if (r < 0) {
                        if (r == -EIO)
                                return ctl_error(EXIT_FAIL, "cannot write to standard output");
                        return ctl_fail(ctl, r, NULL, "monitor");
                }
                r = vmq_client_get_timeout(ctl->client, &until);
                if (r > 0) {
                        uint64_t now = now_usec();

                        ms = until > now ? (int)((until - now + 999) / 1000) : 0;
                }
                p.fd = vmq_client_get_fd(ctl->client);
                p.events = (short)vmq_client_get_events(ctl->client);
                p.revents = 0;
                if (p.fd < 0)
                        return ctl_fail(ctl, p.fd, NULL, "monitor");
                if (poll(&p, 1, ms) < 0 && errno != EINTR)
                        return ctl_error(EXIT_FAIL, "poll: %s", strerror(errno));
        }
        return EXIT_OK;
}

static int print_stats(struct ctl *ctl, const struct vmq_stats *s, const char *name) {
        size_t n = vmq_stats_get_count(s);
        int w = 0;

        if (ctl->json) {
                struct json j;

                json_begin(&j, stdout);
                json_open_object(&j, NULL);
                if (name)
                        json_string(&j, "machine", name);
                for (size_t i = 0; i < n; i++)
                        json_u64(&j, vmq_stats_get_name(s, i), vmq_stats_get_value(s, i));
                json_close_object(&j);
                json_end(&j);
                return EXIT_OK;
        }
        for (size_t i = 0; i < n; i++) {
                int l = (int)strlen(vmq_stats_get_name(s, i));

                w = l > w ? l : w;
        }
        for (size_t i = 0; i < n; i++)
                printf("%s:%*s %" PRIu64 "\n", vmq_stats_get_name(s, i),
                       w - (int)strlen(vmq_stats_get_name(s, i)), "", vmq_stats_get_value(s, i));
        return EXIT_OK;
}

int cmd_stats(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("stats");
        struct vmq_machine *m = NULL;
        struct vmq_stats *s = NULL;
        const char *arg;
        uint32_t id;
        int code, r;

        code = ctl_parse_plain(ctl, cmd, argc, argv, 0, 1);
        if (code >= 0)
                return code;
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;

        if (optind >= argc) {
                r = vmq_client_get_statistics(ctl->client, &s);
                if (r < 0)
                        return ctl_fail(ctl, r, NULL, "cannot read statistics");
                code = print_stats(ctl, s, NULL);
                vmq_stats_free(s);
                return code;
        }

        /* A machine of that name first; then, for a number, a channel. */
        arg = argv[optind];
        r = vmq_client_get_machine(ctl->client, arg, &m);
        if (r >= 0) {
                code = print_stats(ctl, vmq_machine_get_statistics(m), vmq_machine_get_name(m));
                vmq_machine_unref(m);
                return code;
        }
        if (r != -ENOENT && r != -EINVAL)
                return ctl_fail(ctl, r, NULL, "machine '%s'", arg);
        if (parse_u32(arg, &id) < 0)
                return ctl_fail(ctl, -ENOENT, "no such machine", "machine '%s'", arg);
        return show_channel(ctl, id, true);
}

int cmd_version(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("version");
        char *v = NULL;
        int code, r = 0;

        code = ctl_parse_plain(ctl, cmd, argc, argv, 0, 0);
        if (code >= 0)
                return code;
        if (!ctl->json) {
                printf("vmqctl %s\n", PACKAGE_VERSION);
                printf("libvmq-client %s\n", vmq_client_get_library_version());
                fflush(stdout);
        }
        code = ctl_connect(ctl);
        if (code == EXIT_OK) {
                r = vmq_client_get_daemon_version(ctl->client, &v);
                if (r < 0)
                        code = ctl_fail(ctl, r, NULL, "cannot read the version of vmqd");
        }
        if (ctl->json) {
                /* One object whatever happened: "vmqd" is null when it
                 * could not be asked (the error is on stderr). */
                struct json j;

                json_begin(&j, stdout);
                json_open_object(&j, NULL);
                json_string(&j, "vmqctl", PACKAGE_VERSION);
                json_string(&j, "libvmq_client", vmq_client_get_library_version());
                json_string(&j, "vmqd", v);
                json_close_object(&j);
                json_end(&j);
        } else if (v)
                printf("vmqd %s\n", v);
        free(v);
        return code;
}
