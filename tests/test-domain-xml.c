/* SPDX-License-Identifier: MIT */
/*
 * The vsock device's edits of a domain definition (vmqd/domain-xml.c), on
 * definitions as libvirt 9.0 formats them: what goes in, where, and that
 * taking it back gives the definition as it was.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmqd/domain-xml.h"

#define HEAD                                                                                       \
        "<domain type='qemu'>\n"                                                                   \
        "  <name>web</name>\n"                                                                     \
        "  <memory unit='KiB'>262144</memory>\n"
#define OS_PC                                                                                      \
        "  <os>\n"                                                                                 \
        "    <type arch='x86_64' machine='pc-i440fx-7.2'>hvm</type>\n"                             \
        "  </os>\n"
#define OS_Q35                                                                                     \
        "  <os>\n"                                                                                 \
        "    <type arch='x86_64' machine='pc-q35-7.2'>hvm</type>\n"                                \
        "  </os>\n"
#define DEVICES                                                                                    \
        "  <devices>\n"                                                                            \
        "    <controller type='pci' index='0' model='pci-root'/>\n"                                \
        "    <shmem name='vmq-web'>\n"                                                             \
        "      <address type='pci' domain='0x0000' bus='0x00' slot='0x02' function='0x0'/>\n"      \
        "    </shmem>\n"                                                                           \
        "  </devices>\n"
#define TAIL "</domain>\n"

static const char *sock = "/run/vmq/vsock-web.sock";

/* xml without the qemu namespace on its root element, which libvirt drops
 * by itself when nothing uses it */
static char *without_ns(const char *xml) {
        const char *ns = " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'";
        char *s = strdup(xml), *p;
        cr_assert_not_null(s);
        if ((p = strstr(s, ns)))
                memmove(p, p + strlen(ns), strlen(p + strlen(ns)) + 1);
        return s;
}

/* Adds and takes back machine "web"'s device: *ret the edited definition,
 * checked to go back to @xml exactly. */
static void round_trip(const char *xml, char **ret, int *ret_added) {
        char *back = NULL, *plain;
        cr_assert_eq(domain_xml_add_vsock(xml, "web", sock, ret, ret_added), 0);
        cr_assert(domain_xml_has_vsock(*ret, "web"));
        cr_assert(domain_xml_memory_shared(*ret));
        cr_assert_eq(domain_xml_remove_vsock(*ret, "web", *ret_added, &back), 0);
        cr_assert_not(domain_xml_has_vsock(back, "web"));
        plain = without_ns(back);
        cr_assert_str_eq(plain, xml, "taking the device back restores the definition");
        free(plain);
        free(back);
}

Test(domain_xml, a_plain_domain_gains_shared_memory_the_namespace_and_the_device) {
        const char *xml = HEAD OS_PC DEVICES TAIL;
        char *out;
        int added;

        cr_assert_not(domain_xml_has_vsock(xml, "web"));
        cr_assert_not(domain_xml_memory_shared(xml));
        round_trip(xml, &out, &added);
        cr_assert_eq(added, DOMAIN_XML_ADDED_BACKING);
        cr_assert(strstr(out, "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/"
                              "domain/qemu/1.0'>\n"));
        cr_assert(strstr(out, "  <memoryBacking>\n    <source type='memfd'/>\n    <access "
                              "mode='shared'/>\n  </memoryBacking>\n"));
        cr_assert(strstr(out, "<qemu:arg value='socket,id=vmq-vsock-web,path=/run/vmq/"
                              "vsock-web.sock'/>"));
        cr_assert(strstr(out, "<qemu:arg value='vhost-user-vsock-pci,chardev=vmq-vsock-web,"
                              "id=vmq-vsock-web,bus=pci.0,addr=0x1d'/>"),
                  "on pc's root bus, in the highest free slot: %s", out);
        cr_assert(strstr(out, "</qemu:commandline>\n</domain>\n"));
        cr_assert_not(domain_xml_has_vsock(out, "we"), "another machine's name is not ours");
        free(out);
}

Test(domain_xml, q35_gets_the_pcie_root_and_taken_slots_are_skipped) {
        const char *xml = HEAD OS_Q35 "  <devices>\n"
                                      "    <controller type='pci' index='1'>\n"
                                      "      <address type='pci' domain='0x0000' bus='0x00' "
                                      "slot='0x1d' function='0x0'/>\n"
                                      "    </controller>\n"
                                      "    <disk>\n"
                                      "      <address type='pci' domain='0x0000' bus='0x01' "
                                      "slot='0x1c' function='0x0'/>\n"
                                      "    </disk>\n"
                                      "  </devices>\n"
                                      "  <qemu:commandline>\n"
                                      "    <qemu:arg value='-device'/>\n"
                                      "    <qemu:arg value='e1000,bus=pcie.0,addr=0x1b'/>\n"
                                      "  </qemu:commandline>\n" TAIL;
        char *out;
        int added;

        round_trip(xml, &out, &added);
        cr_assert(strstr(out, "bus=pcie.0,addr=0x1c'/>"),
                  "0x1d taken on bus 0; 0x1c on bus 1 is not bus 0's; 0x1b taken: %s", out);
        cr_assert(strstr(out, "<qemu:arg value='e1000,bus=pcie.0,addr=0x1b'/>"));
        free(out);
}

Test(domain_xml, memory_backing_without_access_gains_only_what_it_lacks) {
        const char *huge = HEAD "  <memoryBacking>\n"
                                "    <hugepages/>\n"
                                "  </memoryBacking>\n" OS_PC DEVICES TAIL;
        const char *bare = HEAD "  <memoryBacking>\n"
                                "    <nosharepages/>\n"
                                "  </memoryBacking>\n" OS_PC DEVICES TAIL;
        char *out;
        int added;

        round_trip(huge, &out, &added);
        cr_assert_eq(added, DOMAIN_XML_ADDED_ACCESS, "hugepages are its source");
        cr_assert(
                strstr(out, "  <memoryBacking>\n    <access mode='shared'/>\n    <hugepages/>\n"));
        free(out);
        round_trip(bare, &out, &added);
        cr_assert_eq(added, DOMAIN_XML_ADDED_ACCESS | DOMAIN_XML_ADDED_SOURCE);
        free(out);
}

Test(domain_xml, shared_memory_stays_and_private_memory_is_refused) {
        const char *shared = HEAD "  <memoryBacking>\n"
                                  "    <source type='file'/>\n"
                                  "    <access mode='shared'/>\n"
                                  "  </memoryBacking>\n" OS_PC DEVICES TAIL;
        const char *private = HEAD "  <memoryBacking>\n"
                                   "    <access mode='private'/>\n"
                                   "  </memoryBacking>\n" OS_PC DEVICES TAIL;
        char *out = NULL;
        int added;

        cr_assert(domain_xml_memory_shared(shared));
        round_trip(shared, &out, &added);
        cr_assert_eq(added, 0);
        free(out);
        out = NULL;
        cr_assert_eq(domain_xml_add_vsock(private, "web", sock, &out, &added), -EPERM);
        cr_assert_null(out);
}

Test(domain_xml, a_second_add_changes_nothing_and_other_arguments_stay) {
        const char *xml = HEAD OS_PC DEVICES "  <qemu:commandline>\n"
                                             "    <qemu:arg value='-device'/>\n"
                                             "    <qemu:arg value='virtio-rng-pci'/>\n"
                                             "  </qemu:commandline>\n" TAIL;
        char *out, *again = NULL, *back = NULL;
        int added, added2;

        round_trip(xml, &out, &added);
        cr_assert_eq(domain_xml_add_vsock(out, "web", sock, &again, &added2), 0);
        cr_assert_str_eq(again, out);
        cr_assert_eq(added2, 0);
        /* libvirt merges the two <qemu:commandline> into one */
        const char *merged = "<domain type='qemu' "
                             "xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\n"
                             "  <name>web</name>\n"
                             "  <qemu:commandline>\n"
                             "    <qemu:arg value='-device'/>\n"
                             "    <qemu:arg value='virtio-rng-pci'/>\n"
                             "    <qemu:arg value='-chardev'/>\n"
                             "    <qemu:arg value='socket,id=vmq-vsock-web,path=/x'/>\n"
                             "    <qemu:arg value='-device'/>\n"
                             "    <qemu:arg value='vhost-user-vsock-pci,chardev=vmq-vsock-web,"
                             "id=vmq-vsock-web,bus=pci.0,addr=0x1d'/>\n"
                             "  </qemu:commandline>\n"
                             "</domain>\n";
        cr_assert_eq(domain_xml_remove_vsock(merged, "web", 0, &back), 0);
        cr_assert(strstr(back, "  <qemu:commandline>\n"
                               "    <qemu:arg value='-device'/>\n"
                               "    <qemu:arg value='virtio-rng-pci'/>\n"
                               "  </qemu:commandline>\n"),
                  "%s", back);
        cr_assert_not(domain_xml_has_vsock(back, "web"));
        free(out);
        free(again);
        free(back);
}

Test(domain_xml, the_socket_path_is_quoted_for_qemu_and_for_xml) {
        const char *xml = HEAD OS_PC DEVICES TAIL;
        char *out;
        int added;

        cr_assert_eq(domain_xml_add_vsock(xml, "web", "/run/a,b'<c.sock", &out, &added), 0);
        cr_assert(strstr(out, "path=/run/a,,b&apos;&lt;c.sock'/>"), "%s", out);
        free(out);
}

Test(domain_xml, what_is_not_a_domain_is_refused) {
        char *out = NULL;
        int added;

        cr_assert_eq(domain_xml_add_vsock("<network>\n</network>\n", "web", sock, &out, &added),
                     -EINVAL);
        cr_assert_eq(domain_xml_add_vsock("<domain type='qemu'", "web", sock, &out, &added),
                     -EINVAL);
        cr_assert_eq(domain_xml_remove_vsock("", "web", 0, &out), -EINVAL);
        cr_assert_null(out);
}

Test(domain_xml, the_device_address_is_read_back_for_a_replug) {
        const char *xml = HEAD OS_Q35 DEVICES TAIL;
        char *out, bus[16];
        unsigned slot = 0;
        int added;

        cr_assert_eq(domain_xml_vsock_address(xml, "web", bus, sizeof(bus), &slot), -ENOENT);
        cr_assert_eq(domain_xml_add_vsock(xml, "web", sock, &out, &added), 0);
        cr_assert_eq(domain_xml_vsock_address(out, "web", bus, sizeof(bus), &slot), 0);
        cr_assert_str_eq(bus, "pcie.0");
        cr_assert_eq(slot, 0x1d);
        cr_assert_eq(domain_xml_vsock_address(out, "we", bus, sizeof(bus), &slot), -ENOENT);
        cr_assert_eq(domain_xml_vsock_address(out, "web", bus, 4, &slot), -ENOENT,
                     "a bus name that does not fit is not cut");
        free(out);
}
