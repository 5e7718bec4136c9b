/* SPDX-License-Identifier: MIT */
/*
 * The VM's argument string: "key=value key=value ...", separated by spaces,
 * tabs or newlines.  A bare "key" has an empty value.  The last occurrence
 * of a key counts.
 */
#include "guest/lib/internal.h"

static bool is_space(char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Finds key's last value in args[0..max); returns its start or NULL. */
static const char *args_find(const char *args, size_t max, const char *key, size_t *ret_len) {
        size_t klen = strlen(key), i = 0;
        const char *found = NULL;

        while (i < max && args[i]) {
                size_t start, eq = SIZE_MAX;

                while (i < max && args[i] && is_space(args[i]))
                        i++;
                start = i;
                while (i < max && args[i] && !is_space(args[i])) {
                        if (args[i] == '=' && eq == SIZE_MAX)
                                eq = i;
                        i++;
                }
                if (i == start)
                        break;
                if (eq == SIZE_MAX)
                        eq = i;
                if (klen && eq - start == klen && !memcmp(args + start, key, klen)) {
                        found = args + (eq < i ? eq + 1 : i);
                        *ret_len = eq < i ? i - eq - 1 : 0;
                }
        }
        return found;
}

int vmq_args_get(const char *args, size_t max, const char *key, char *buf, size_t size) {
        size_t len = 0, n;
        const char *v = args_find(args, max, key, &len);

        if (!v)
                return -1;
        if (size) {
                n = len < size - 1 ? len : size - 1;
                memcpy(buf, v, n);
                buf[n] = '\0';
        }
        return len > INT32_MAX ? INT32_MAX : (int)len;
}

int vmq_arg_str(const char *key, char *buf, size_t size) {
        return vmq_args_get(vmq__vmcs->args, VMQ_ARGS_MAX, key, buf, size);
}

int vmq_parse_u64(const char *s, uint64_t *ret) {
        uint64_t v = 0, base = 10, mul = 1;
        bool any = false;

        if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
                base = 16;
                s += 2;
        }
        for (;; s++) {
                unsigned d;

                if (*s >= '0' && *s <= '9')
                        d = (unsigned)(*s - '0');
                else if (base == 16 && *s >= 'a' && *s <= 'f')
                        d = (unsigned)(*s - 'a' + 10);
                else if (base == 16 && *s >= 'A' && *s <= 'F')
                        d = (unsigned)(*s - 'A' + 10);
                else
                        break;
                if (v > (UINT64_MAX - d) / base)
                        return -1;
                v = v * base + d;
                any = true;
        }
        if (!any)
                return -1;
        switch (*s) {
        case 'k':
        case 'K':
                mul = 1ull << 10;
                s++;
                break;
        case 'm':
        case 'M':
                mul = 1ull << 20;
                s++;
                break;
        case 'g':
        case 'G':
                mul = 1ull << 30;
                s++;
                break;
        default:
                break;
        }
        if (*s || v > UINT64_MAX / mul)
                return -1;
        *ret = v * mul;
        return 0;
}

uint64_t vmq_arg_u64(const char *key, uint64_t def) {
        char buf[32];
        uint64_t v;
        int n = vmq_arg_str(key, buf, sizeof(buf));

        if (n < 0 || (size_t)n >= sizeof(buf) || vmq_parse_u64(buf, &v) < 0)
                return def;
        return v;
}
