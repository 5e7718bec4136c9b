/* SPDX-License-Identifier: MIT */
/*
 * A small printf: enough for console lines and benchmark output.  One
 * formatter writes into a buffer; vmq_printf() flushes that buffer to the
 * console when it fills and at the end, so a line is one hypercall.
 */
#include "guest/lib/internal.h"

struct out {
        char *buf;
        size_t size; /* usable bytes in buf */
        size_t pos;
        size_t total; /* bytes produced, written or not */
        bool console; /* flush to the console when full; else truncate */
};

static void out_flush(struct out *o) {
        if (o->console && o->pos)
                vmq_console_write(o->buf, o->pos);
        o->pos = 0;
}

static void out_char(struct out *o, char c) {
        o->total++;
        if (o->pos == o->size) {
                if (!o->console)
                        return;
                out_flush(o);
        }
        o->buf[o->pos++] = c;
}

static void out_pad(struct out *o, char c, int n) {
        while (n-- > 0)
                out_char(o, c);
}

enum {
        F_LEFT = 1,
        F_ZERO = 2,
        F_ALT = 4,
        F_UPPER = 8,
};

static void out_str(struct out *o, const char *s, int width, int prec, unsigned flags) {
        size_t len;

        if (!s)
                s = "(null)";
        len = prec >= 0 ? strnlen(s, (size_t)prec) : strlen(s);
        if (!(flags & F_LEFT))
                out_pad(o, ' ', width - (int)len);
        for (size_t i = 0; i < len; i++)
                out_char(o, s[i]);
        if (flags & F_LEFT)
                out_pad(o, ' ', width - (int)len);
}

static void out_num(struct out *o, uint64_t v, bool neg, unsigned base, int width, unsigned flags) {
        const char *digits = flags & F_UPPER ? "0123456789ABCDEF" : "0123456789abcdef";
        char tmp[24];
        int n = 0, len;
        bool prefix = (flags & F_ALT) && base == 16;

        do {
                tmp[n++] = digits[v % base];
                v /= base;
        } while (v);
        len = n + (neg ? 1 : 0) + (prefix ? 2 : 0);
        if (!(flags & (F_LEFT | F_ZERO)))
                out_pad(o, ' ', width - len);
        if (neg)
                out_char(o, '-');
        if (prefix) {
                out_char(o, '0');
                out_char(o, flags & F_UPPER ? 'X' : 'x');
        }
        if ((flags & F_ZERO) && !(flags & F_LEFT))
                out_pad(o, '0', width - len);
        while (n)
                out_char(o, tmp[--n]);
        if (flags & F_LEFT)
                out_pad(o, ' ', width - len);
}

enum len_mod {
        L_INT,
        L_CHAR,
        L_SHORT,
        L_LONG,
        L_LLONG,
        L_SIZE,
};

static void format(struct out *o, const char *fmt, va_list ap) {
        while (*fmt) {
                const char *start = fmt;
                unsigned flags = 0;
                int width = 0, prec = -1;
                enum len_mod mod = L_INT;
                uint64_t u;
                int64_t s;

                if (*fmt != '%') {
                        out_char(o, *fmt++);
                        continue;
                }
                fmt++;
                for (;; fmt++) {
                        if (*fmt == '-')
                                flags |= F_LEFT;
                        else if (*fmt == '0')
                                flags |= F_ZERO;
                        else if (*fmt == '#')
                                flags |= F_ALT;
                        else
                                break;
                }
                if (*fmt == '*') {
                        width = va_arg(ap, int);
                        if (width < 0) {
                                flags |= F_LEFT;
                                width = -width;
                        }
                        fmt++;
                } else {
                        while (*fmt >= '0' && *fmt <= '9')
                                width = width * 10 + (*fmt++ - '0');
                }
                if (*fmt == '.') {
                        fmt++;
                        prec = 0;
                        if (*fmt == '*') {
                                prec = va_arg(ap, int);
                                fmt++;
                        } else {
                                while (*fmt >= '0' && *fmt <= '9')
                                        prec = prec * 10 + (*fmt++ - '0');
                        }
                }
                switch (*fmt) {
                case 'h':
                        fmt++;
                        mod = L_SHORT;
                        if (*fmt == 'h') {
                                fmt++;
                                mod = L_CHAR;
                        }
                        break;
                case 'l':
                        fmt++;
                        mod = L_LONG;
                        if (*fmt == 'l') {
                                fmt++;
                                mod = L_LLONG;
                        }
                        break;
                case 'z':
                case 'j':
                case 't':
                        fmt++;
                        mod = L_SIZE;
                        break;
                default:
                        break;
                }
                switch (*fmt) {
                case 'd':
                case 'i':
                        switch (mod) {
                        case L_LONG:
                                s = va_arg(ap, long);
                                break;
                        case L_LLONG:
                                s = va_arg(ap, long long);
                                break;
                        case L_SIZE:
                                s = va_arg(ap, int64_t);
                                break;
                        case L_CHAR:
                                s = (signed char)va_arg(ap, int);
                                break;
                        case L_SHORT:
                                s = (short)va_arg(ap, int);
                                break;
                        default:
                                s = va_arg(ap, int);
                                break;
                        }
                        out_num(o, s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s, s < 0, 10,
                                width, flags);
                        break;
                case 'u':
                case 'x':
                case 'X':
                        switch (mod) {
                        case L_LONG:
                                u = va_arg(ap, unsigned long);
                                break;
                        case L_LLONG:
                                u = va_arg(ap, unsigned long long);
                                break;
                        case L_SIZE:
                                u = va_arg(ap, uint64_t);
                                break;
                        case L_CHAR:
                                u = (unsigned char)va_arg(ap, unsigned);
                                break;
                        case L_SHORT:
                                u = (unsigned short)va_arg(ap, unsigned);
                                break;
                        default:
                                u = va_arg(ap, unsigned);
                                break;
                        }
                        if (*fmt == 'X')
                                flags |= F_UPPER;
                        out_num(o, u, false, *fmt == 'u' ? 10 : 16, width, flags);
                        break;
                case 'p':
                        out_num(o, (uint64_t)(uintptr_t)va_arg(ap, void *), false, 16, width,
                                flags | F_ALT);
                        break;
                case 's':
                        out_str(o, va_arg(ap, const char *), width, prec, flags);
                        break;
                case 'c':
                        if (!(flags & F_LEFT))
                                out_pad(o, ' ', width - 1);
                        out_char(o, (char)va_arg(ap, int));
                        if (flags & F_LEFT)
                                out_pad(o, ' ', width - 1);
                        break;
                case '%':
                        out_char(o, '%');
                        break;
                default:
                        /* unknown conversion (or end of string): print as is */
                        while (start < fmt)
                                out_char(o, *start++);
                        if (*fmt)
                                out_char(o, *fmt);
                        else
                                continue;
                        break;
                }
                fmt++;
        }
}

int vmq_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
        struct out o = {.buf = buf, .size = size ? size - 1 : 0};

        format(&o, fmt, ap);
        if (size)
                buf[o.pos] = '\0';
        return o.total > INT32_MAX ? INT32_MAX : (int)o.total;
}

int vmq_snprintf(char *buf, size_t size, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vmq_vsnprintf(buf, size, fmt, ap);
        va_end(ap);
        return r;
}

int vmq_vprintf(const char *fmt, va_list ap) {
        char buf[512];
        struct out o = {.buf = buf, .size = sizeof(buf), .console = true};

        format(&o, fmt, ap);
        out_flush(&o);
        return o.total > INT32_MAX ? INT32_MAX : (int)o.total;
}

int vmq_printf(const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vmq_vprintf(fmt, ap);
        va_end(ap);
        return r;
}
