/* SPDX-License-Identifier: MIT */
/*
 * vmqctl: a tiny JSON writer.  vmqctl links nothing but libvmq-client, so
 * the output is written by hand: strings are escaped per RFC 8259 (quotes,
 * backslashes and every control character), payload bytes go out as
 * base64.
 */
#include <inttypes.h>
#include <string.h>

#include "vmqctl/vmqctl.h"

void json_begin(struct json *j, FILE *f) {
        memset(j, 0, sizeof(*j));
        j->f = f;
        j->first[0] = true;
}

static void put_escaped(FILE *f, const char *s) {
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
                switch (*p) {
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                case '\r':
                        fputs("\\r", f);
                        break;
                case '\t':
                        fputs("\\t", f);
                        break;
                case '\b':
                        fputs("\\b", f);
                        break;
                case '\f':
                        fputs("\\f", f);
                        break;
                default:
                        if (*p < 0x20 || *p == 0x7f)
                                fprintf(f, "\\u%04x", *p);
                        else
                                fputc(*p, f);
                }
        }
        fputc('"', f);
}

/* The comma and the key before a value. */
static void prefix(struct json *j, const char *key) {
        if (!j->first[j->depth])
                fputc(',', j->f);
        j->first[j->depth] = false;
        if (key) {
                put_escaped(j->f, key);
                fputc(':', j->f);
        }
}

static void open_container(struct json *j, const char *key, char c) {
        prefix(j, key);
        fputc(c, j->f);
        if (j->depth + 1 < sizeof(j->first))
                j->depth++;
        j->first[j->depth] = true;
}

void json_open_object(struct json *j, const char *key) {
        open_container(j, key, '{');
}

void json_close_object(struct json *j) {
        fputc('}', j->f);
        if (j->depth > 0)
                j->depth--;
}

void json_open_array(struct json *j, const char *key) {
        open_container(j, key, '[');
}

void json_close_array(struct json *j) {
        fputc(']', j->f);
        if (j->depth > 0)
                j->depth--;
}

void json_string(struct json *j, const char *key, const char *value) {
        prefix(j, key);
        if (value)
                put_escaped(j->f, value);
        else
                fputs("null", j->f);
}

void json_bytes_base64(struct json *j, const char *key, const void *data, size_t size) {
        static const char b64[] =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const unsigned char *p = data;
        size_t i;

        prefix(j, key);
        fputc('"', j->f);
        for (i = 0; i + 3 <= size; i += 3) {
                uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];

                fputc(b64[v >> 18 & 63], j->f);
                fputc(b64[v >> 12 & 63], j->f);
                fputc(b64[v >> 6 & 63], j->f);
                fputc(b64[v & 63], j->f);
        }
        if (size - i == 1) {
                uint32_t v = (uint32_t)p[i] << 16;

                fputc(b64[v >> 18 & 63], j->f);
                fputc(b64[v >> 12 & 63], j->f);
                fputs("==", j->f);
        } else if (size - i == 2) {
                uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;

                fputc(b64[v >> 18 & 63], j->f);
                fputc(b64[v >> 12 & 63], j->f);
                fputc(b64[v >> 6 & 63], j->f);
                fputc('=', j->f);
        }
        fputc('"', j->f);
}

void json_u64(struct json *j, const char *key, uint64_t value) {
        prefix(j, key);
        fprintf(j->f, "%" PRIu64, value);
}

void json_i64(struct json *j, const char *key, int64_t value) {
        prefix(j, key);
        fprintf(j->f, "%" PRId64, value);
}

void json_bool(struct json *j, const char *key, bool value) {
        prefix(j, key);
        fputs(value ? "true" : "false", j->f);
}

void json_null(struct json *j, const char *key) {
        prefix(j, key);
        fputs("null", j->f);
}

void json_end(struct json *j) {
        fputc('\n', j->f);
        fflush(j->f);
}
