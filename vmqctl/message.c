/* SPDX-License-Identifier: MIT */
/*
 * vmqctl: send and recv — the host as a channel end, binary-safe.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "vmqctl/vmqctl.h"

const struct option send_options[] = {
        {"from", required_argument, NULL, OPT_FROM},
        CTL_OPTION_FILE,
        CTL_OPTION_TAG,
        {0},
};

const struct option recv_options[] = {
        {"as", required_argument, NULL, OPT_AS},
        CTL_OPTION_TIMEOUT,
        CTL_OPTION_COUNT,
        CTL_OPTION_OUTPUT,
        {0},
};

static int check_end(const struct command *cmd, const char *option, const char *end) {
        if (is_host_end(end))
                return -1;
        return ctl_usage(cmd,
                         "%s: %s '%s': only the host end ('host') can be used from vmqctl; "
                         "vmqd does not act for a guest",
                         cmd->name, option, end);
}

int cmd_send(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("send");
        const char *file = NULL, *data_arg = NULL;
        const void *data;
        char *buf = NULL;
        size_t size = 0;
        uint64_t tag = 0;
        uint32_t id;
        int code, o, r;

        while ((o = ctl_getopt(ctl, cmd, argc, argv, &code)) != -1) {
                switch (o) {
                case -2:
                        return code;
                case OPT_FROM:
                        code = check_end(cmd, "--from", optarg);
                        if (code >= 0)
                                return code;
                        break;
                case OPT_FILE:
                        file = optarg;
                        break;
                case OPT_TAG:
                        if (parse_u64(optarg, &tag) < 0)
                                return ctl_usage(cmd, "send: invalid tag '%s'", optarg);
                        break;
                }
        }
        code = ctl_check_args(cmd, argc, argv, 1, 2);
        if (code >= 0)
                return code;
        code = parse_channel_id(cmd, argv[optind], &id);
        if (code >= 0)
                return code;
        if (optind + 1 < argc)
                data_arg = argv[optind + 1];
        if (data_arg && file)
                return ctl_usage(cmd, "send: give DATA or --file, not both");

        code = ctl_read_payload(data_arg, file, &data, &buf, &size);
        if (code != EXIT_OK)
                return code;

        code = ctl_connect(ctl);
        if (code == EXIT_OK) {
                r = vmq_client_send(ctl->client, id, data, size, tag);
                if (r < 0)
                        code = ctl_fail(ctl, r, "no such channel", "channel %" PRIu32, id);
        }
        free(buf);
        return code;
}

/* Writes out one received message.  Returns 1 when it counts toward
 * --count (data, page), 0 when it does not (hello, close, error), or -1
 * after a write error, with the exit code in *ret_code. */
static int handle_message(struct ctl *ctl, uint32_t id, const struct vmq_message *m, FILE *out,
                          const char *out_name, int *ret_code) {
        enum vmq_message_kind kind = vmq_message_get_kind(m);
        size_t size;
        const void *data = vmq_message_get_data(m, &size);
        int r;

        if (ctl->json) {
                struct json j;

                json_begin(&j, out);
                json_open_object(&j, NULL);
                json_u64(&j, "channel", id);
                json_string(&j, "kind", vmq_message_get_kind_string(m));
                json_u64(&j, "source", vmq_message_get_source(m));
                json_u64(&j, "tag", vmq_message_get_tag(m));
                json_u64(&j, "length", size);
                if (kind == VMQ_MESSAGE_HELLO) {
                        json_string(&j, "peer_name", vmq_message_get_peer_name(m));
                        json_string(&j, "peer_uuid", vmq_message_get_peer_uuid(m));
                        json_u64(&j, "peer_id", vmq_message_get_peer_id(m));
                }
                json_bytes_base64(&j, "data", data, size);
                json_close_object(&j);
                json_end(&j);
                if (ferror(out)) {
                        *ret_code = ctl_error(EXIT_FAIL, "cannot write to %s", out_name);
                        return -1;
                }
                return kind == VMQ_MESSAGE_DATA || kind == VMQ_MESSAGE_PAGE;
        }

        switch (kind) {
        case VMQ_MESSAGE_DATA:
        case VMQ_MESSAGE_PAGE:
                r = ctl_write_payload(out, out_name, data, size);
                if (r != EXIT_OK) {
                        *ret_code = r;
                        return -1;
                }
                return 1;
        case VMQ_MESSAGE_HELLO:
                if (!ctl->quiet)
                        fprintf(stderr,
                                "vmqctl: channel %" PRIu32 ": hello from '%s' (VM id %" PRIu32
                                ", UUID %s)\n",
                                id,
                                vmq_message_get_peer_name(m) ? vmq_message_get_peer_name(m) : "",
                                vmq_message_get_peer_id(m),
                                vmq_message_get_peer_uuid(m) ? vmq_message_get_peer_uuid(m) : "");
                return 0;
        case VMQ_MESSAGE_CLOSE:
                if (!ctl->quiet)
                        fprintf(stderr, "vmqctl: channel %" PRIu32 ": closed by the peer\n", id);
                return 0;
        default:
                if (!ctl->quiet)
                        fprintf(stderr,
                                "vmqctl: channel %" PRIu32 ": '%s' message (tag %" PRIu64
                                ", %zu bytes) skipped\n",
                                id, vmq_message_get_kind_string(m), vmq_message_get_tag(m), size);
                return 0;
        }
}

int cmd_recv(struct ctl *ctl, int argc, char **argv) {
        const struct command *cmd = command_find("recv");
        uint64_t timeout = UINT64_MAX;
        const char *output = NULL;
        uint32_t id, count = 1, got = 0;
        FILE *out = stdout;
        int code, o, r;

        while ((o = ctl_getopt(ctl, cmd, argc, argv, &code)) != -1) {
                switch (o) {
                case -2:
                        return code;
                case OPT_AS:
                        code = check_end(cmd, "--as", optarg);
                        if (code >= 0)
                                return code;
                        break;
                case OPT_TIMEOUT:
                        if (parse_seconds(optarg, &timeout) < 0)
                                return ctl_usage(cmd, "recv: invalid timeout '%s' (seconds)",
                                                 optarg);
                        break;
                case OPT_COUNT:
                        if (parse_u32(optarg, &count) < 0 || count == 0)
                                return ctl_usage(cmd, "recv: invalid count '%s'", optarg);
                        break;
                case 'o':
                        output = optarg;
                        break;
                }
        }
        code = ctl_check_args(cmd, argc, argv, 1, 1);
        if (code >= 0)
                return code;
        code = parse_channel_id(cmd, argv[optind], &id);
        if (code >= 0)
                return code;
        code = ctl_connect(ctl);
        if (code != EXIT_OK)
                return code;
        code = ctl_open_output(output, &out, &output);
        if (code != EXIT_OK)
                return code;

        while (got < count) {
                struct vmq_message *m = NULL;

                r = vmq_client_receive(ctl->client, id, timeout, &m);
                if (r < 0) {
                        code = ctl_fail(ctl, r, "no such channel", "channel %" PRIu32, id);
                        break;
                }
                r = handle_message(ctl, id, m, out, output ? output : "standard output", &code);
                vmq_message_free(m);
                if (r < 0)
                        break;
                got += (uint32_t)r;
        }
        return ctl_close_output(out, output, code);
}
