/* SPDX-License-Identifier: MIT */
/*
 * vmqctl: the channel commands — channels, channel, open, close — and the
 * channel half of stats.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "vmqctl/vmqctl.h"

const struct option channels_options[] = {
        {"ids", no_argument, NULL, OPT_IDS},
        {0},
};

const struct option open_options[] = {
        {"depth", required_argument, NULL, OPT_DEPTH},
        {"mode", required_argument, NULL, OPT_MODE},
        {"transfer", required_argument, NULL, OPT_TRANSFER},
        {"persistent", no_argument, NULL, OPT_PERSISTENT},
        {0},
};

int cmd_channels(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("channels");
        struct vmq_channel **list = NULL;
        bool ids = false;
        int w_id = 2, w_a = 5, w_b = 5;
        size_t n;
        int code, o, r;

        while ((o = ctl_getopt(ctl, cmd, argc, argv, &code)) != -1) {
                if (o == -2)
                        return code;
                if (o == OPT_IDS)
                        ids = true;
        }
        code = ctl_check_args(cmd, argc, argv, 0, 0);
        if (code >= 0)
                return code;
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;
        r = vmq_client_list_channels(ctl->client, &list, &n);
        if (r < 0)
                return ctl_fail(ctl, r, NULL, "cannot list channels");

        if (ids) {
                for (size_t i = 0; i < n; i++)
                        printf("%" PRIu32 "\n", vmq_channel_get_id(list[i]));
        } else if (ctl->json) {
                struct json j;

                json_begin(&j, stdout);
                json_open_array(&j, NULL);
                for (size_t i = 0; i < n; i++) {
                        json_open_object(&j, NULL);
                        json_u64(&j, "id", vmq_channel_get_id(list[i]));
                        json_string(&j, "end_a", vmq_channel_get_end(list[i], VMQ_CHANNEL_END_A));
                        json_string(&j, "end_b", vmq_channel_get_end(list[i], VMQ_CHANNEL_END_B));
                        json_bool(&j, "open", vmq_channel_is_open(list[i]));
                        json_close_object(&j);
                }
                json_close_array(&j);
                json_end(&j);
        } else {
                for (size_t i = 0; i < n; i++) {
                        char id[16];
                        int l;

                        l = snprintf(id, sizeof(id), "%" PRIu32, vmq_channel_get_id(list[i]));
                        w_id = l > w_id ? l : w_id;
                        l = (int)strlen(vmq_channel_get_end(list[i], VMQ_CHANNEL_END_A));
                        w_a = l > w_a ? l : w_a;
                        l = (int)strlen(vmq_channel_get_end(list[i], VMQ_CHANNEL_END_B));
                        w_b = l > w_b ? l : w_b;
                }
                if (!ctl->quiet && !ctl->no_legend)
                        printf("%*s  %-*s  %-*s  %s\n", w_id, "ID", w_a, "END A", w_b, "END B",
                               "STATE");
                for (size_t i = 0; i < n; i++)
                        printf("%*" PRIu32 "  %-*s  %-*s  %s\n", w_id, vmq_channel_get_id(list[i]),
                               w_a, vmq_channel_get_end(list[i], VMQ_CHANNEL_END_A), w_b,
                               vmq_channel_get_end(list[i], VMQ_CHANNEL_END_B),
                               vmq_channel_is_open(list[i]) ? "open" : "closed");
        }
        vmq_channel_unref_list(list);
        return EXIT_OK;
}

static void json_identity(struct json *j, const char *key, const struct vmq_channel *ch,
                          enum vmq_channel_end e) {
        json_open_object(j, key);
        json_u64(j, "id", vmq_channel_get_identity_id(ch, e));
        json_string(j, "name", vmq_channel_get_identity_name(ch, e));
        json_string(j, "uuid", vmq_channel_get_identity_uuid(ch, e));
        json_close_object(j);
}

int show_channel(struct ctl *ctl, uint32_t id, bool counters_only) {
        struct vmq_channel *ch = NULL;
        char what[32];
        int r;

        r = vmq_client_get_channel(ctl->client, id, &ch);
        if (r < 0) {
                snprintf(what, sizeof(what), "channel %" PRIu32, id);
                return ctl_fail(ctl, r, "no such channel", "%s", what);
        }

        if (ctl->json) {
                struct json j;

                json_begin(&j, stdout);
                json_open_object(&j, NULL);
                json_u64(&j, "id", vmq_channel_get_id(ch));
                json_string(&j, "end_a", vmq_channel_get_end(ch, VMQ_CHANNEL_END_A));
                json_string(&j, "end_b", vmq_channel_get_end(ch, VMQ_CHANNEL_END_B));
                json_bool(&j, "open", vmq_channel_is_open(ch));
                if (!counters_only) {
                        json_identity(&j, "identity_a", ch, VMQ_CHANNEL_END_A);
                        json_identity(&j, "identity_b", ch, VMQ_CHANNEL_END_B);
                        json_string(&j, "mode", vmq_channel_get_mode(ch));
                        json_string(&j, "transfer", vmq_channel_get_transfer(ch));
                        json_u64(&j, "depth", vmq_channel_get_depth(ch));
                        json_bool(&j, "persistent", vmq_channel_is_persistent(ch));
                        json_bool(&j, "linked", vmq_channel_is_linked(ch));
                }
                json_u64(&j, "messages_a", vmq_channel_get_messages(ch, VMQ_CHANNEL_END_A));
                json_u64(&j, "messages_b", vmq_channel_get_messages(ch, VMQ_CHANNEL_END_B));
                json_u64(&j, "bytes_a", vmq_channel_get_bytes(ch, VMQ_CHANNEL_END_A));
                json_u64(&j, "bytes_b", vmq_channel_get_bytes(ch, VMQ_CHANNEL_END_B));
                json_close_object(&j);
                json_end(&j);
                vmq_channel_unref(ch);
                return EXIT_OK;
        }

        if (counters_only) {
                printf("channel:     %" PRIu32 "\n", vmq_channel_get_id(ch));
                printf("end_a:       %s\n", vmq_channel_get_end(ch, VMQ_CHANNEL_END_A));
                printf("end_b:       %s\n", vmq_channel_get_end(ch, VMQ_CHANNEL_END_B));
                printf("open:        %s\n", vmq_channel_is_open(ch) ? "yes" : "no");
                printf("messages_a:  %" PRIu64 "\n",
                       vmq_channel_get_messages(ch, VMQ_CHANNEL_END_A));
                printf("messages_b:  %" PRIu64 "\n",
                       vmq_channel_get_messages(ch, VMQ_CHANNEL_END_B));
                printf("bytes_a:     %" PRIu64 "\n", vmq_channel_get_bytes(ch, VMQ_CHANNEL_END_A));
                printf("bytes_b:     %" PRIu64 "\n", vmq_channel_get_bytes(ch, VMQ_CHANNEL_END_B));
        } else {
                for (unsigned e = 0; e < _VMQ_CHANNEL_END_MAX; e++) {
                        uint32_t vm = vmq_channel_get_identity_id(ch, e);

                        printf("End %c:        %s", e == 0 ? 'A' : 'B', vmq_channel_get_end(ch, e));
                        if (vm || *vmq_channel_get_identity_uuid(ch, e))
                                printf(" (VM id %" PRIu32 ", UUID %s)", vm,
                                       vmq_channel_get_identity_uuid(ch, e));
                        printf("\n");
                }
                printf("Id:           %" PRIu32 "\n", vmq_channel_get_id(ch));
                printf("State:        %s\n", vmq_channel_is_open(ch) ? "open" : "closed");
                printf("Mode:         %s\n", vmq_channel_get_mode(ch));
                printf("Transfer:     %s\n", vmq_channel_get_transfer(ch));
                printf("Depth:        %" PRIu32 "\n", vmq_channel_get_depth(ch));
                printf("Persistent:   %s\n", vmq_channel_is_persistent(ch) ? "yes" : "no");
                printf("Linked:       %s\n", vmq_channel_is_linked(ch) ? "yes" : "no");
                printf("Messages:     %" PRIu64 " to A, %" PRIu64 " to B\n",
                       vmq_channel_get_messages(ch, VMQ_CHANNEL_END_A),
                       vmq_channel_get_messages(ch, VMQ_CHANNEL_END_B));
                printf("Bytes:        %" PRIu64 " to A, %" PRIu64 " to B\n",
                       vmq_channel_get_bytes(ch, VMQ_CHANNEL_END_A),
                       vmq_channel_get_bytes(ch, VMQ_CHANNEL_END_B));
        }
        vmq_channel_unref(ch);
        return EXIT_OK;
}

int cmd_channel(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("channel");
        uint32_t id;
        int code;

        code = ctl_parse_plain(ctl, cmd, argc, argv, 1, 1);
        if (code >= 0)
                return code;
        code = parse_channel_id(cmd, argv[optind], &id);
        if (code >= 0)
                return code;
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;
        return show_channel(ctl, id, false);
}

int cmd_open(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("open");
        struct vmq_channel_options opts = VMQ_CHANNEL_OPTIONS_INIT;
        const char *a, *b;
        uint32_t id;
        int code, o, r;

        while ((o = ctl_getopt(ctl, cmd, argc, argv, &code)) != -1) {
                switch (o) {
                case -2:
                        return code;
                case OPT_DEPTH:
                        if (parse_u32(optarg, &opts.depth) < 0 || opts.depth == 0)
                                return ctl_usage(cmd, "open: invalid depth '%s'", optarg);
                        break;
                case OPT_MODE:
                        if (strcmp(optarg, "immediate") != 0 && strcmp(optarg, "deferred") != 0)
                                return ctl_usage(cmd,
                                                 "open: invalid mode '%s' (immediate or deferred)",
                                                 optarg);
                        opts.mode = optarg;
                        break;
                case OPT_TRANSFER:
                        if (strcmp(optarg, "copy") != 0 && strcmp(optarg, "flip") != 0 &&
                            strcmp(optarg, "auto") != 0)
                                return ctl_usage(cmd,
                                                 "open: invalid transfer '%s' (copy, flip or auto)",
                                                 optarg);
                        opts.transfer = optarg;
                        break;
                case OPT_PERSISTENT:
                        opts.persistent = true;
                        break;
                }
        }
        code = ctl_check_args(cmd, argc, argv, 2, 2);
        if (code >= 0)
                return code;
        a = argv[optind];
        b = argv[optind + 1];
        if (is_host_end(a) && is_host_end(b))
                return ctl_usage(cmd, "open: the two ends cannot both be 'host'");
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;
        r = vmq_client_open_channel(ctl->client, a, b, &opts, &id);
        if (r == -ENOENT)
                return ctl_fail(ctl, r, "no such machine", "channel '%s' to '%s'", a, b);
        if (r == -ESRCH) {
                const char *detail = vmq_client_get_error_message(ctl->client);

                return ctl_error(EXIT_BUSY, "channel '%s' to '%s': %s", a, b,
                                 detail && *detail ? detail : "an end is not running");
        }
        if (r < 0)
                return ctl_fail(ctl, r, NULL, "channel '%s' to '%s'", a, b);
        if (ctl->json) {
                struct json j;

                json_begin(&j, stdout);
                json_open_object(&j, NULL);
                json_u64(&j, "id", id);
                json_string(&j, "end_a", a);
                json_string(&j, "end_b", b);
                json_close_object(&j);
                json_end(&j);
        } else
                printf("%" PRIu32 "\n", id);
        return EXIT_OK;
}

int cmd_close(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("close");
        uint32_t id;
        int code, r;

        code = ctl_parse_plain(ctl, cmd, argc, argv, 1, 1);
        if (code >= 0)
                return code;
        code = parse_channel_id(cmd, argv[optind], &id);
        if (code >= 0)
                return code;
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;
        r = vmq_client_close_channel(ctl->client, id);
        if (r < 0)
                return ctl_fail(ctl, r, "no such channel", "channel %" PRIu32, id);
        return EXIT_OK;
}
