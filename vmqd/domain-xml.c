/* SPDX-License-Identifier: MIT */
/*
 * The vsock device's edits of a domain definition (domain-xml.h).
 *
 * The input is what libvirt formats: one element per line, children
 * indented two spaces deeper than their parent, attributes in single
 * quotes.  The edits work on whole lines of that form and never rewrite
 * anything else; libvirt parses the result again when it is defined, and
 * refuses it if an edit went wrong.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmqd/domain-xml.h"

#define QEMU_NS "http://libvirt.org/schemas/domain/qemu/1.0"
#define SLOT_FIRST 0x03u /* 0: host bridge, 1: the chipset, 2: video */
#define SLOT_LAST 0x1du  /* q35's 0x1e and 0x1f are the chipset's and libvirt's */

char *xml_attr(const char *s) {
        size_t n = 1;
        char *out, *o;

        for (const char *p = s; *p; p++)
                n += *p == '&' ? 5 : *p == '<' || *p == '>' ? 4 : *p == '\'' || *p == '"' ? 6 : 1;
        out = o = malloc(n);
        if (!out)
                return NULL;
        for (const char *p = s; *p; p++) {
                const char *e = *p == '&'    ? "&amp;"
                                : *p == '<'  ? "&lt;"
                                : *p == '>'  ? "&gt;"
                                : *p == '\'' ? "&apos;"
                                : *p == '"'  ? "&quot;"
                                             : NULL;
                if (e) {
                        strcpy(o, e);
                        o += strlen(e);
                } else
                        *o++ = *p;
        }
        *o = '\0';
        return out;
}

/* The end of the line at p (after its \n, or at the string's end). */
static const char *line_end(const char *p) {
        const char *e = strchr(p, '\n');
        return e ? e + 1 : p + strlen(p);
}

static bool line_is(const char *p, const char *text) {
        size_t n = strlen(text);
        return strncmp(p, text, n) == 0 && (p[n] == '\n' || p[n] == '\0');
}

/* The <memoryBacking> block, [*start, *end) as whole lines; false when
 * there is none. */
static bool backing_block(const char *xml, const char **start, const char **end) {
        const char *s = strstr(xml, "\n  <memoryBacking>\n"), *e;

        if (!s)
                return false;
        s++;
        e = strstr(s, "\n  </memoryBacking>");
        if (!e)
                return false;
        *start = s;
        *end = line_end(e + 1);
        return true;
}

/* Does [start, end) contain needle? */
static bool block_has(const char *start, const char *end, const char *needle) {
        size_t n = strlen(needle);
        for (const char *p = start; p + n <= end; p++)
                if (memcmp(p, needle, n) == 0)
                        return true;
        return false;
}

bool domain_xml_memory_shared(const char *xml) {
        const char *s, *e;
        return backing_block(xml, &s, &e) && block_has(s, e, "<access mode='shared'/>");
}

/* The two arguments that name machine @name's chardev and device, as they
 * start in a <qemu:arg value='...'/>. */
static int arg_prefixes(const char *name, char **ret_chardev, char **ret_device) {
        if (asprintf(ret_chardev, "<qemu:arg value='socket,id=vmq-vsock-%s,", name) < 0)
                return -ENOMEM;
        if (asprintf(ret_device, "<qemu:arg value='vhost-user-vsock-pci,chardev=vmq-vsock-%s,",
                     name) < 0) {
                free(*ret_chardev);
                return -ENOMEM;
        }
        return 0;
}

bool domain_xml_has_vsock(const char *xml, const char *name) {
        char *chardev, *device;
        bool has;

        if (arg_prefixes(name, &chardev, &device) < 0)
                return false;
        has = strstr(xml, device) != NULL;
        free(chardev);
        free(device);
        return has;
}

/* Parses "0x1f"-style hex digits at p; -1 when there are none. */
static int hex_at(const char *p) {
        char *end;
        long v;

        if (strncmp(p, "0x", 2) != 0)
                return -1;
        v = strtol(p + 2, &end, 16);
        return end == p + 2 || v < 0 || v > 0xff ? -1 : (int)v;
}

int domain_xml_vsock_address(const char *xml, const char *name, char *bus, size_t bus_size,
                             unsigned *ret_slot) {
        char *chardev, *device;
        const char *p, *end, *b, *a;
        int slot;

        if (arg_prefixes(name, &chardev, &device) < 0)
                return -ENOMEM;
        p = strstr(xml, device);
        free(chardev);
        free(device);
        if (!p || !(end = strchr(p, '\n')))
                return -ENOENT;
        b = strstr(p, ",bus=");
        a = strstr(p, ",addr=");
        if (!b || !a || b > end || a > end)
                return -ENOENT;
        b += 5;
        size_t n = strcspn(b, ",'");
        slot = hex_at(a + 6);
        if (n == 0 || n >= bus_size || slot < 0 || slot >= 0x20)
                return -ENOENT;
        memcpy(bus, b, n);
        bus[n] = '\0';
        *ret_slot = (unsigned)slot;
        return 0;
}

/* The highest slot of bus 0 that nothing in the definition takes, or -1. */
static int free_slot(const char *xml) {
        bool used[0x20] = {false};
        const char *p;

        for (p = xml; (p = strstr(p, "<address type='pci' ")); p++) {
                const char *e = strchr(p, '>'), *bus = strstr(p, "bus='"),
                           *slot = strstr(p, "slot='");
                if (!e || !bus || !slot || bus > e || slot > e)
                        continue;
                int b = hex_at(bus + 5), s = hex_at(slot + 6);
                if (b == 0 && s >= 0 && s < 0x20)
                        used[s] = true;
        }
        /* other devices of the command line that chose their own slot */
        for (p = xml; (p = strstr(p, "addr=")); p++) {
                int s = hex_at(p + 5);
                if (s >= 0 && s < 0x20)
                        used[s] = true;
        }
        for (int s = SLOT_LAST; s >= (int)SLOT_FIRST; s--)
                if (!used[s])
                        return s;
        return -1;
}

/* QEMU's option syntax: a comma in a value is written twice. */
static char *qemu_opt_value(const char *s) {
        size_t n = strlen(s) + 1;
        char *out, *o;

        for (const char *p = s; *p; p++)
                n += *p == ',';
        out = o = malloc(n);
        if (!out)
                return NULL;
        for (const char *p = s; *p; p++) {
                *o++ = *p;
                if (*p == ',')
                        *o++ = ',';
        }
        *o = '\0';
        return out;
}

/* Writes [p, e) to f. */
static void put(FILE *f, const char *p, const char *e) {
        (void)fwrite(p, 1, (size_t)(e - p), f);
}

int domain_xml_add_vsock(const char *xml, const char *name, const char *socket_path, char **ret,
                         int *ret_added) {
        const char *root, *root_end, *close, *bs = NULL, *be = NULL, *mach;
        char *buf = NULL, *opt = NULL, *path = NULL;
        size_t size = 0;
        int added = 0, slot;
        bool pcie, has_backing;
        FILE *f;

        *ret_added = 0;
        root = strstr(xml, "<domain ");
        close = root ? strstr(root, "\n</domain>") : NULL;
        root_end = root ? strchr(root, '>') : NULL;
        if (!root || !close || !root_end || root_end > close)
                return -EINVAL;
        if (domain_xml_has_vsock(xml, name)) {
                *ret = strdup(xml);
                return *ret ? 0 : -ENOMEM;
        }
        has_backing = backing_block(xml, &bs, &be);
        if (has_backing && block_has(bs, be, "<access mode='private'/>"))
                return -EPERM;
        slot = free_slot(xml);
        if (slot < 0)
                return -ENOSPC;
        /* q35 ("q35", "pc-q35-7.2") has a PCI Express root bus */
        mach = strstr(xml, "<type arch=");
        mach = mach ? strstr(mach, "machine='") : NULL;
        pcie = mach && (strncmp(mach + 9, "q35", 3) == 0 || strncmp(mach + 9, "pc-q35", 6) == 0);

        opt = qemu_opt_value(socket_path);
        path = opt ? xml_attr(opt) : NULL;
        f = path ? open_memstream(&buf, &size) : NULL;
        if (!f) {
                free(opt);
                free(path);
                return -ENOMEM;
        }

        /* the root element, with the qemu namespace */
        put(f, xml, root_end);
        if (!strstr(root, "xmlns:qemu=") || strstr(root, "xmlns:qemu=") > root_end)
                fputs(" xmlns:qemu='" QEMU_NS "'", f);
        const char *p = root_end;

        /* shared memory */
        if (has_backing && !block_has(bs, be, "<access mode='shared'/>")) {
                const char *inner = line_end(bs);
                put(f, p, inner);
                if (!block_has(bs, be, "<source ") && !block_has(bs, be, "<hugepages")) {
                        fputs("    <source type='memfd'/>\n", f);
                        added |= DOMAIN_XML_ADDED_SOURCE;
                }
                fputs("    <access mode='shared'/>\n", f);
                added |= DOMAIN_XML_ADDED_ACCESS;
                p = inner;
        }
        put(f, p, close + 1);
        if (!has_backing) {
                fputs("  <memoryBacking>\n"
                      "    <source type='memfd'/>\n"
                      "    <access mode='shared'/>\n"
                      "  </memoryBacking>\n",
                      f);
                added |= DOMAIN_XML_ADDED_BACKING;
        }
        /* the device; libvirt merges several <qemu:commandline> into one */
        fprintf(f,
                "  <qemu:commandline>\n"
                "    <qemu:arg value='-chardev'/>\n"
                "    <qemu:arg value='socket,id=vmq-vsock-%s,path=%s'/>\n"
                "    <qemu:arg value='-device'/>\n"
                "    <qemu:arg value='vhost-user-vsock-pci,chardev=vmq-vsock-%s,id=vmq-vsock-%s,"
                "bus=%s,addr=0x%x'/>\n"
                "  </qemu:commandline>\n",
                name, path, name, name, pcie ? "pcie.0" : "pci.0", (unsigned)slot);
        fputs(close + 1, f);
        free(opt);
        free(path);
        if (fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        *ret_added = added;
        return 0;
}

int domain_xml_remove_vsock(const char *xml, const char *name, int added, char **ret) {
        char *chardev, *device, *buf = NULL;
        const char *bs = NULL, *be = NULL, *p;
        size_t size = 0;
        bool has_backing;
        FILE *f;

        if (!strstr(xml, "<domain ") || !strstr(xml, "\n</domain>"))
                return -EINVAL;
        if (arg_prefixes(name, &chardev, &device) < 0)
                return -ENOMEM;
        f = open_memstream(&buf, &size);
        if (!f) {
                free(chardev);
                free(device);
                return -ENOMEM;
        }
        has_backing = backing_block(xml, &bs, &be);
        for (p = xml; *p;) {
                const char *e = line_end(p), *lead = p + strspn(p, " ");
                /* an option's name and its value go together */
                if (line_is(lead, "<qemu:arg value='-chardev'/>") ||
                    line_is(lead, "<qemu:arg value='-device'/>")) {
                        const char *v = e + strspn(e, " ");
                        if (strncmp(v, chardev, strlen(chardev)) == 0 ||
                            strncmp(v, device, strlen(device)) == 0) {
                                p = line_end(e);
                                continue;
                        }
                }
                /* a <qemu:commandline> left empty goes too */
                if (line_is(lead, "<qemu:commandline>")) {
                        const char *q = e;
                        while (*q) {
                                const char *qe = line_end(q), *ql = q + strspn(q, " "), *v;
                                if (!line_is(ql, "<qemu:arg value='-chardev'/>") &&
                                    !line_is(ql, "<qemu:arg value='-device'/>"))
                                        break;
                                v = qe + strspn(qe, " ");
                                if (strncmp(v, chardev, strlen(chardev)) != 0 &&
                                    strncmp(v, device, strlen(device)) != 0)
                                        break;
                                q = line_end(qe);
                        }
                        if (line_is(q + strspn(q, " "), "</qemu:commandline>")) {
                                p = line_end(q);
                                continue;
                        }
                }
                if (has_backing && p >= bs && p < be) {
                        if (added & DOMAIN_XML_ADDED_BACKING) {
                                p = be;
                                continue;
                        }
                        if (((added & DOMAIN_XML_ADDED_ACCESS) &&
                             line_is(lead, "<access mode='shared'/>")) ||
                            ((added & DOMAIN_XML_ADDED_SOURCE) &&
                             line_is(lead, "<source type='memfd'/>"))) {
                                p = e;
                                continue;
                        }
                }
                put(f, p, e);
                p = e;
        }
        free(chardev);
        free(device);
        if (fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        return 0;
}
