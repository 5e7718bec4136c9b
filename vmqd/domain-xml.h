/* SPDX-License-Identifier: MIT */
/*
 * What an adopted domain's definition gains for a vsock device, as edits
 * of the XML libvirt formats (virDomainGetXMLDesc), and how they are taken
 * back.  No libvirt here: strings in, strings out, so that the edits are
 * tested on their own.
 *
 * libvirt 9.0's <vsock> element knows only the kernel's vhost-vsock, so the
 * device goes in through <qemu:commandline> (libvirt then marks the domain
 * tainted, "custom-argv"):
 *
 *   -chardev socket,id=vmq-vsock-NAME,path=SOCKET
 *   -device vhost-user-vsock-pci,chardev=vmq-vsock-NAME,id=vmq-vsock-NAME,
 *           bus=pci.0|pcie.0,addr=SLOT
 *
 * SLOT is the highest slot of bus 0 that the definition leaves free (libvirt
 * gives the devices it adds later the lowest), from 0x1d down.  vhost-user
 * needs the guest's memory shared with vmqd: a definition without
 * <memoryBacking> gains one with memfd memory and shared access; one that
 * has it without <access> gains <access mode='shared'/> (and a memfd
 * <source/> when it has neither a source nor hugepages).  Memory made
 * private on purpose (access mode='private') is refused: that is the
 * user's to change.
 */
#ifndef VMQD_DOMAIN_XML_H
#define VMQD_DOMAIN_XML_H

#include <stdbool.h>

/* What domain_xml_add_vsock() added to <memoryBacking>, so that taking the
 * device back restores the memory as it was. */
enum {
        DOMAIN_XML_ADDED_BACKING = 1 << 0, /* the whole <memoryBacking> */
        DOMAIN_XML_ADDED_ACCESS = 1 << 1,  /* <access mode='shared'/> in it */
        DOMAIN_XML_ADDED_SOURCE = 1 << 2,  /* <source type='memfd'/> in it */
};

/* s quoted for an XML attribute in single quotes; NULL when out of memory. */
char *xml_attr(const char *s);

/* Does the definition carry machine @name's vsock device? */
bool domain_xml_has_vsock(const char *xml, const char *name);

/* The root bus ("pci.0" or "pcie.0", in @bus of @bus_size bytes) and the
 * slot of machine @name's device in the definition.  0, or -ENOENT when it
 * has no such device or an address of another form. */
int domain_xml_vsock_address(const char *xml, const char *name, char *bus, size_t bus_size,
                             unsigned *ret_slot);

/* Is the domain's memory shared (<access mode='shared'/> under
 * <memoryBacking>)?  Per-NUMA-cell access is not looked at. */
bool domain_xml_memory_shared(const char *xml);

/*
 * Returns in *ret a copy of @xml with machine @name's device, its chardev on
 * @socket_path, and shared memory; *ret_added says what was added to the
 * memory (DOMAIN_XML_ADDED_*).  A definition that has the device already
 * is returned as it is.
 * Returns 0; -EPERM when the memory is private on purpose; -ENOSPC when bus
 * 0 has no free slot; -EINVAL when @xml is not a domain libvirt formatted;
 * -ENOMEM.
 */
int domain_xml_add_vsock(const char *xml, const char *name, const char *socket_path, char **ret,
                         int *ret_added);

/* Returns in *ret a copy of @xml without machine @name's device and without
 * what @added (DOMAIN_XML_ADDED_*) says was added to its memory.  0,
 * -EINVAL, -ENOMEM. */
int domain_xml_remove_vsock(const char *xml, const char *name, int added, char **ret);

#endif /* VMQD_DOMAIN_XML_H */
