/* SPDX-License-Identifier: MIT */
/*
 * libvmq-client: the host as a channel end — Send/SendFd and Receive.
 *
 * Payloads up to VMQ_BUS_MAX_INLINE bytes travel inside the D-Bus message;
 * larger ones go through a memfd sealed against writes, shrinking and
 * growing, so that the daemon can map it and trust that it will not change
 * under it.  Received large payloads come the same way and are read here,
 * so a caller always gets plain bytes.
 */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "bus/vmq-bus.h"
#include "libvmq-client/client-internal.h"

/* A received fd payload larger than this is refused (the daemon's own limit
 * is far below it). */
#define MAX_FD_PAYLOAD (1ULL << 30)

struct vmq_message {
        enum vmq_message_kind kind;
        char *kind_string;
        uint32_t source;
        uint64_t tag;
        void *data;
        size_t size;
        char *peer_name;
        char *peer_uuid;
        uint32_t peer_id;
};

static const char *const kind_names[_VMQ_MESSAGE_KIND_MAX] = {
        [VMQ_MESSAGE_UNKNOWN] = "unknown", [VMQ_MESSAGE_DATA] = "data",
        [VMQ_MESSAGE_PAGE] = "page",       [VMQ_MESSAGE_HELLO] = "hello",
        [VMQ_MESSAGE_CLOSE] = "close",     [VMQ_MESSAGE_ERROR] = "error",
};

VMQ_EXPORT const char *vmq_message_kind_to_string(enum vmq_message_kind kind) {
        if ((unsigned)kind >= _VMQ_MESSAGE_KIND_MAX)
                return "unknown";
        return kind_names[kind];
}

static enum vmq_message_kind kind_from_string(const char *s) {
        for (unsigned i = 0; i < _VMQ_MESSAGE_KIND_MAX; i++)
                if (strcmp(kind_names[i], s) == 0)
                        return (enum vmq_message_kind)i;
        return VMQ_MESSAGE_UNKNOWN;
}

static int write_all(int fd, const void *data, size_t size) {
        const char *p = data;

        while (size > 0) {
                ssize_t n = write(fd, p, size);

                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                p += n;
                size -= (size_t)n;
        }
        return 0;
}

static int sealed_memfd(const void *data, size_t size) {
        _cleanup_close_ int fd = -1;
        int r;

        fd = memfd_create("vmq-send", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (fd < 0)
                return -errno;
        r = write_all(fd, data, size);
        if (r < 0)
                return r;
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0)
                return -errno;
        r = fd;
        fd = -1;
        return r;
}

VMQ_EXPORT int vmq_client_send_fd(struct vmq_client *c, uint32_t channel, int fd, uint64_t tag) {
        _cleanup_msg_ sd_bus_message *m = NULL;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (fd < 0)
                return -EBADF;
        r = vmqc_new_manager_call(c, &m, "SendFd");
        if (r < 0)
                return r;
        /* sd-bus duplicates the fd; the caller keeps its own. */
        r = sd_bus_message_append(m, "uht", channel, fd, tag);
        if (r < 0)
                return r;
        return vmqc_call(c, m, 0, -EHOSTDOWN, NULL);
}

VMQ_EXPORT int vmq_client_send(struct vmq_client *c, uint32_t channel, const void *data,
                               size_t size, uint64_t tag) {
        _cleanup_msg_ sd_bus_message *m = NULL;
        _cleanup_close_ int fd = -1;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!data && size > 0)
                return -EINVAL;
        if (size > VMQ_BUS_MAX_INLINE) {
                fd = sealed_memfd(data, size);
                if (fd < 0)
                        return fd;
                return vmq_client_send_fd(c, channel, fd, tag);
        }
        r = vmqc_new_manager_call(c, &m, "Send");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "u", channel);
        if (r < 0)
                return r;
        r = sd_bus_message_append_array(m, 'y', size ? data : "", size);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "t", tag);
        if (r < 0)
                return r;
        return vmqc_call(c, m, 0, -EHOSTDOWN, NULL);
}

VMQ_EXPORT struct vmq_message *vmq_message_free(struct vmq_message *m) {
        if (!m)
                return NULL;
        free(m->kind_string);
        free(m->data);
        free(m->peer_name);
        free(m->peer_uuid);
        free(m);
        return NULL;
}

/* Reads the whole of a received memfd. */
static int read_payload_fd(int fd, void **ret, size_t *ret_size) {
        struct stat st;
        size_t size, done = 0;
        char *buf;

        if (fstat(fd, &st) < 0)
                return -errno;
        if (!S_ISREG(st.st_mode) || st.st_size < 0)
                return -EBADMSG;
        if ((uint64_t)st.st_size > MAX_FD_PAYLOAD)
                return -EMSGSIZE;
        size = (size_t)st.st_size;
        buf = malloc(size ? size : 1);
        if (!buf)
                return -ENOMEM;
        while (done < size) {
                ssize_t n = pread(fd, buf + done, size - done, (off_t)done);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        int r = n < 0 ? -errno : -EBADMSG;

                        free(buf);
                        return r;
                }
                done += (size_t)n;
        }
        *ret = buf;
        *ret_size = size;
        return 0;
}

static int read_data_variant(sd_bus_message *reply, struct vmq_message *msg) {
        const char *sig;
        const void *p;
        size_t size;
        int r;

        r = vmqc_variant_sig(reply, &sig);
        if (r < 0)
                return r;
        if (strcmp(sig, "ay") != 0)
                return vmqc_skip_variant(reply);
        r = sd_bus_message_enter_container(reply, 'v', "ay");
        if (r < 0)
                return r;
        r = sd_bus_message_read_array(reply, 'y', &p, &size);
        if (r < 0)
                return r;
        free(msg->data);
        msg->data = NULL;
        msg->size = 0;
        if (size > 0) {
                msg->data = malloc(size);
                if (!msg->data)
                        return -ENOMEM;
                memcpy(msg->data, p, size);
                msg->size = size;
        }
        return sd_bus_message_exit_container(reply);
}

static int read_fd_variant(sd_bus_message *reply, struct vmq_message *msg) {
        const char *sig;
        int fd, r;

        r = vmqc_variant_sig(reply, &sig);
        if (r < 0)
                return r;
        if (strcmp(sig, "h") != 0)
                return vmqc_skip_variant(reply);
        /* The fd belongs to the reply message. */
        r = sd_bus_message_read(reply, "v", "h", &fd);
        if (r < 0)
                return r;
        free(msg->data);
        msg->data = NULL;
        msg->size = 0;
        return read_payload_fd(fd, &msg->data, &msg->size);
}

static int message_entry(sd_bus_message *reply, const char *key, void *userdata) {
        struct vmq_message *msg = userdata;

        if (strcmp(key, "kind") == 0)
                return vmqc_read_string(reply, &msg->kind_string);
        if (strcmp(key, "peer_name") == 0)
                return vmqc_read_string(reply, &msg->peer_name);
        if (strcmp(key, "peer_uuid") == 0)
                return vmqc_read_string(reply, &msg->peer_uuid);
        if (strcmp(key, "data") == 0)
                return read_data_variant(reply, msg);
        if (strcmp(key, "fd") == 0)
                return read_fd_variant(reply, msg);
        if (strcmp(key, "source") == 0)
                return vmqc_read_u32(reply, &msg->source);
        if (strcmp(key, "tag") == 0)
                return vmqc_read_uint(reply, &msg->tag);
        if (strcmp(key, "peer_id") == 0)
                return vmqc_read_u32(reply, &msg->peer_id);
        /* "length" is the payload's size, which we know. */
        return vmqc_skip_variant(reply);
}

static int read_message(sd_bus_message *reply, struct vmq_message *msg) {
        int r;

        r = vmqc_read_dict(reply, message_entry, msg);
        if (r < 0)
                return r;
        if (!msg->kind_string) {
                r = vmqc_strdup("unknown", &msg->kind_string);
                if (r < 0)
                        return r;
        }
        msg->kind = kind_from_string(msg->kind_string);
        return 0;
}

VMQ_EXPORT int vmq_client_receive(struct vmq_client *c, uint32_t channel, uint64_t timeout_usec,
                                  struct vmq_message **ret) {
        _cleanup_msg_ sd_bus_message *m = NULL, *reply = NULL;
        struct vmq_message *msg;
        int r;

        r = vmqc_check(c);
        if (r < 0)
                return r;
        if (!ret)
                return -EINVAL;
        r = vmqc_new_manager_call(c, &m, "Receive");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "ut", channel, timeout_usec);
        if (r < 0)
                return r;
        /* The daemon answers when a message comes or its timeout expires;
         * give it the call timeout on top (UINT64_MAX stays unlimited). */
        r = vmqc_call(c, m, vmqc_add_timeout(timeout_usec, c->call_timeout_usec), -EHOSTDOWN,
                      &reply);
        if (r < 0)
                return r;

        msg = calloc(1, sizeof(*msg));
        if (!msg)
                return -ENOMEM;
        r = read_message(reply, msg);
        if (r < 0) {
                vmq_message_free(msg);
                return r;
        }
        *ret = msg;
        return 0;
}

VMQ_EXPORT enum vmq_message_kind vmq_message_get_kind(const struct vmq_message *m) {
        return m->kind;
}

VMQ_EXPORT const char *vmq_message_get_kind_string(const struct vmq_message *m) {
        return m->kind_string;
}

VMQ_EXPORT uint32_t vmq_message_get_source(const struct vmq_message *m) {
        return m->source;
}

VMQ_EXPORT uint64_t vmq_message_get_tag(const struct vmq_message *m) {
        return m->tag;
}

VMQ_EXPORT const void *vmq_message_get_data(const struct vmq_message *m, size_t *ret_size) {
        if (ret_size)
                *ret_size = m->size;
        return m->data;
}

VMQ_EXPORT const char *vmq_message_get_peer_name(const struct vmq_message *m) {
        return m->peer_name;
}

VMQ_EXPORT const char *vmq_message_get_peer_uuid(const struct vmq_message *m) {
        return m->peer_uuid;
}

VMQ_EXPORT uint32_t vmq_message_get_peer_id(const struct vmq_message *m) {
        return m->peer_id;
}
