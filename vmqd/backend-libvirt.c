/* SPDX-License-Identifier: MIT */
/*
 * The libvirt backend: a machine that is an adopted libvirt domain (see
 * libvirt.h for what adopting does, and libvirt.c for the connection).
 * Its part of the machine is struct libvirt_link (mc->link): the shared
 * region, the ivshmem server QEMU connects to, the region VM that stands
 * for the guest in the monitor while the domain runs, and the domain's
 * state as last seen.
 *
 * Threads and locks.  Everything here runs on the event loop's thread,
 * except each adopted domain's ivshmem server, which runs on a thread of
 * its own: QEMU connects to it and waits for the region while libvirtd
 * starts it or hot-plugs the device, that is while vmqd's loop may be
 * blocked in virDomainCreate() or virDomainAttachDeviceFlags().  Two locks
 * per domain, always taken in this order and never the other way round:
 *
 *   vm_lock   the region VM pointer: the server thread holds it while it
 *             serves a doorbell, the loop while it makes or destroys the
 *             region VM;
 *   (monitor) the core's own locks, taken inside the two calls above;
 *   srv_lock  the server object; a leaf: held only around calls into
 *             core/ivshmem-server.c, which call back nothing but our
 *             server ops, which take no lock.
 *
 * A domain's vsock device has the same need (QEMU talks vhost-user with it
 * while it starts): vsock_assist_begin() lends its socket a thread for the
 * time of virDomainCreate() (vsock.h).
 *
 * The core's notify callback (ring the guest) comes from any thread, from
 * inside the monitor, and takes srv_lock only.  The doorbell op only sets a
 * flag: the server thread serves it after dropping srv_lock.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <systemd/sd-id128.h>

#include "bus/vmq-bus.h"
#include "core/ivshmem-server.h"
#include "core/monitor.h"
#include "core/util.h"
#include "vmqd/backend-libvirt.h"
#include "vmqd/backend.h"
#include "vmqd/libvirt.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"
#include "vmqd/domain-xml.h"
#include "vmqd/vsock.h"

/* Eventfds per peer: the guest's doorbell vector 0, and one spare. */
#define LINK_VECTORS 2u
#define QEMU_CONF "/etc/libvirt/qemu.conf"

struct libvirt_link {
        struct machine *machine;
        int memfd;
        uint8_t *region;
        size_t size;
        char *socket_path;

        struct vmq_ivshmem_server *srv;
        pthread_mutex_t srv_lock;
        pthread_mutex_t vm_lock;
        struct vmq_vm *vm;     /* under vm_lock (mirrors machine->vm) */
        _Atomic uint16_t peer; /* the connected QEMU's peer id, 0: none */
        atomic_bool rang;      /* the server's doorbell fired (server thread only) */

        pthread_t thread;
        bool thread_started;
        int stop_fd;

        /* Loop thread only. */
        sd_event_source *replug_timer; /* a look at the vsock device, soon */
        unsigned replug_tries;         /* chardev-remove tries after device_del; 0: none yet */
        enum machine_state dom_state;
        const char *reason; /* static */
        bool gone;          /* the domain was not found last time */
};

static int lv_error(struct machine *mc, const char *what, sd_bus_error *error) {
        virErrorPtr e = virGetLastError();
        int code = e ? e->code : VIR_ERR_INTERNAL_ERROR;
        const char *msg = libvirt_error_message();

        log_debug("Machine '%s': %s: %s", mc->name, what, msg);
        if (!libvirt_is_connected(mc->manager) || code == VIR_ERR_NO_CONNECT ||
            code == VIR_ERR_SYSTEM_ERROR || code == VIR_ERR_RPC)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BACKEND_UNAVAILABLE,
                                         "Cannot %s machine '%s': %s", what, mc->name, msg);
        if (code == VIR_ERR_NO_DOMAIN)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_SUCH_MACHINE,
                                         "Cannot %s machine '%s': its domain '%s' is gone", what,
                                         mc->name, mc->domain);
        if (code == VIR_ERR_OPERATION_INVALID)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY, "Cannot %s machine '%s': %s",
                                         what, mc->name, msg);
        /* Not SD_BUS_ERROR_FAILED: sd-bus maps that to EACCES. */
        return sd_bus_error_set_errnof(error, code == VIR_ERR_NO_SUPPORT ? EOPNOTSUPP : EIO,
                                       "Cannot %s machine '%s': %s", what, mc->name, msg);
}

/* ---- the ivshmem server and the region VM ------------------------------------- */

static void link_notify(void *userdata, struct vmq_vm *vm) {
        struct libvirt_link *l = userdata;
        uint16_t peer;

        (void)vm;
        pthread_mutex_lock(&l->srv_lock);
        peer = atomic_load(&l->peer);
        if (peer && l->srv)
                (void)vmq_ivshmem_server_notify(l->srv, peer, 0);
        pthread_mutex_unlock(&l->srv_lock);
}

static const struct vmq_region_ops link_region_ops = {.notify = link_notify};

/* Server ops: on the server thread, srv_lock held. */
static void link_peer_joined(void *userdata, struct vmq_ivshmem_server *srv, uint16_t peer_id) {
        struct libvirt_link *l = userdata;
        pid_t pid = 0;
        uid_t uid = 0;
        uint16_t old = atomic_load(&l->peer);

        (void)vmq_ivshmem_server_peer_cred(srv, peer_id, &pid, &uid);
        if (old && vmq_ivshmem_server_peer_cred(srv, old, NULL, NULL) == 0) {
                /* One domain, one QEMU: a second client is not that guest. */
                log_warning("Machine '%s': refusing a second ivshmem client (pid %d, uid %u)",
                            l->machine->name, (int)pid, (unsigned)uid);
                (void)vmq_ivshmem_server_kick(srv, peer_id);
                return;
        }
        atomic_store(&l->peer, peer_id);
        log_info("Machine '%s': QEMU (pid %d) connected to the ivshmem server as peer %u",
                 l->machine->name, (int)pid, (unsigned)peer_id);
}

static void link_peer_left(void *userdata, struct vmq_ivshmem_server *srv, uint16_t peer_id) {
        struct libvirt_link *l = userdata;
        uint16_t expected = peer_id;

        (void)srv;
        if (atomic_compare_exchange_strong(&l->peer, &expected, 0))
                log_info("Machine '%s': QEMU left the ivshmem server (peer %u)", l->machine->name,
                         (unsigned)peer_id);
}

static void link_doorbell(void *userdata, struct vmq_ivshmem_server *srv, unsigned vector) {
        struct libvirt_link *l = userdata;

        (void)srv;
        (void)vector;
        atomic_store(&l->rang, true);
}

static const struct vmq_ivshmem_server_ops link_server_ops = {
        .peer_joined = link_peer_joined,
        .peer_left = link_peer_left,
        .doorbell = link_doorbell,
};

static void *link_thread(void *userdata) {
        struct libvirt_link *l = userdata;
        struct pollfd p[2] = {
                {.fd = vmq_ivshmem_server_get_fd(l->srv), .events = POLLIN},
                {.fd = l->stop_fd, .events = POLLIN},
        };

        for (;;) {
                int r;

                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        log_error_errno(errno, "Machine '%s': ivshmem server poll failed: %m",
                                        l->machine->name);
                        break;
                }
                if (p[1].revents)
                        break;
                if (!p[0].revents)
                        continue;
                pthread_mutex_lock(&l->srv_lock);
                r = vmq_ivshmem_server_process(l->srv);
                pthread_mutex_unlock(&l->srv_lock);
                if (atomic_exchange(&l->rang, false)) {
                        pthread_mutex_lock(&l->vm_lock);
                        if (l->vm)
                                vmq_vm_region_doorbell(l->vm);
                        pthread_mutex_unlock(&l->vm_lock);
                }
                if (r < 0) /* out of fds or memory: let it pass */
                        (void)poll(NULL, 0, 100);
        }
        return NULL;
}

/* QEMU's user and group under this libvirtd: qemu.conf, else Debian's
 * compiled-in libvirt-qemu:libvirt-qemu. */
static void qemu_owner(uid_t *ret_uid, gid_t *ret_gid, bool *ret_found) {
        char user[64] = "libvirt-qemu", group[64] = "libvirt-qemu", line[256];
        struct passwd *pw;
        struct group *gr;
        FILE *f;

        f = fopen(QEMU_CONF, "re");
        if (f) {
                while (fgets(line, sizeof(line), f)) {
                        char key[16], value[64];
                        if (sscanf(line, " %15[a-z] = \"%63[^\"]\"", key, value) != 2)
                                continue;
                        if (strcmp(key, "user") == 0)
                                snprintf(user, sizeof(user), "%s", value);
                        else if (strcmp(key, "group") == 0)
                                snprintf(group, sizeof(group), "%s", value);
                }
                fclose(f);
        }
        *ret_found = false;
        pw = user[0] == '+' ? getpwuid((uid_t)strtoul(user + 1, NULL, 10)) : getpwnam(user);
        if (!pw)
                return;
        *ret_uid = pw->pw_uid;
        *ret_gid = pw->pw_gid;
        gr = group[0] == '+' ? getgrgid((gid_t)strtoul(group + 1, NULL, 10)) : getgrnam(group);
        if (gr)
                *ret_gid = gr->gr_gid;
        *ret_found = true;
}

static int mkdir_p(const char *path, mode_t mode) {
        _cleanup_free_ char *p = strdup(path);

        if (!p)
                return -ENOMEM;
        for (char *s = p + 1; *s; s++) {
                if (*s != '/')
                        continue;
                *s = '\0';
                if (mkdir(p, mode) < 0 && errno != EEXIST)
                        return -errno;
                *s = '/';
        }
        if (mkdir(p, mode) < 0 && errno != EEXIST)
                return -errno;
        return 0;
}

static void lv_detach(struct machine *mc) {
        struct libvirt_link *l = mc->link;

        vsock_device_free(mc);
        if (!l)
                return;
        l->replug_timer = sd_event_source_disable_unref(l->replug_timer);
        if (l->thread_started) {
                uint64_t one = 1;
                (void)!write(l->stop_fd, &one, sizeof(one));
                pthread_join(l->thread, NULL);
        }
        pthread_mutex_lock(&l->vm_lock);
        if (l->vm)
                vmq_vm_destroy(l->vm);
        l->vm = NULL;
        mc->vm = NULL;
        pthread_mutex_unlock(&l->vm_lock);
        pthread_mutex_lock(&l->srv_lock);
        l->srv = vmq_ivshmem_server_free(l->srv);
        pthread_mutex_unlock(&l->srv_lock);
        if (l->region && l->region != MAP_FAILED)
                munmap(l->region, l->size);
        vmq_close(l->memfd);
        vmq_close(l->stop_fd);
        pthread_mutex_destroy(&l->srv_lock);
        pthread_mutex_destroy(&l->vm_lock);
        free(l->socket_path);
        free(l);
        mc->link = NULL;
}

static int lv_attach(struct machine *mc) {
        struct manager *m = mc->manager;
        struct libvirt_link *l;
        bool found;
        uid_t uid = 0;
        gid_t gid = 0;
        int r;

        assert(mc->backend == &libvirt_backend && !mc->link);
        l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->machine = mc;
        l->memfd = l->stop_fd = -1;
        l->dom_state = MACHINE_DEFINED;
        l->reason = "";
        pthread_mutex_init(&l->srv_lock, NULL);
        pthread_mutex_init(&l->vm_lock, NULL);
        mc->link = l;

        l->size = mc->memory;
        l->memfd = memfd_create(mc->name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
        if (l->memfd < 0) {
                r = -errno;
                goto fail;
        }
        if (ftruncate(l->memfd, (off_t)l->size) < 0) {
                r = -errno;
                goto fail;
        }
        /* The size is what QEMU maps as BAR 2: nobody may change it. */
        (void)fcntl(l->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
        l->region = mmap(NULL, l->size, PROT_READ | PROT_WRITE, MAP_SHARED, l->memfd, 0);
        if (l->region == MAP_FAILED) {
                r = -errno;
                goto fail;
        }
        l->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (l->stop_fd < 0) {
                r = -errno;
                goto fail;
        }

        /* QEMU (another user) must reach the socket: the directory is
         * world-searchable, the socket belongs to QEMU's user, mode 0660. */
        r = mkdir_p(m->runtime_dir, 0755);
        if (r < 0)
                goto fail;
        if (asprintf(&l->socket_path, "%s/ivshmem-%s.sock", m->runtime_dir, mc->name) < 0) {
                l->socket_path = NULL;
                r = -ENOMEM;
                goto fail;
        }
        r = vmq_ivshmem_server_new(l->socket_path, l->memfd, LINK_VECTORS, &link_server_ops, l,
                                   &l->srv);
        if (r < 0)
                goto fail;
        qemu_owner(&uid, &gid, &found);
        if (!found)
                log_warning("Machine '%s': cannot tell QEMU's user (see %s); socket '%s' stays "
                            "root's",
                            mc->name, QEMU_CONF, l->socket_path);
        else if (uid != 0 && chown(l->socket_path, uid, gid) < 0)
                log_warning_errno(errno, "Machine '%s': cannot hand socket '%s' to QEMU's user: %m",
                                  mc->name, l->socket_path);
        (void)chmod(l->socket_path, 0660);
        if (mc->vsock_cid) {
                r = vsock_device_new(m, mc, found ? uid : 0, found ? gid : 0);
                if (r < 0)
                        goto fail;
        }

        r = -pthread_create(&l->thread, NULL, link_thread, l);
        if (r < 0)
                goto fail;
        l->thread_started = true;
        return 0;
fail:
        lv_detach(mc);
        return r;
}

static const char *link_socket(const struct machine *mc) {
        return mc->link && mc->link->socket_path ? mc->link->socket_path : "";
}

static enum machine_state lv_state(const struct machine *mc) {
        const struct libvirt_link *l = mc->link;

        if (!l)
                return MACHINE_DEFINED;
        if (l->dom_state == MACHINE_RUNNING && mc->vm && vmq_vm_state(mc->vm) == VMQ_VM_CRASHED)
                return MACHINE_CRASHED; /* the guest broke its region */
        return l->dom_state;
}

static bool lv_active(const struct machine *mc) {
        return mc->link && mc->link->dom_state == MACHINE_RUNNING;
}

static const char *lv_crash_reason(const struct machine *mc) {
        const struct libvirt_link *l = mc->link;

        if (!l)
                return "";
        if (l->dom_state == MACHINE_RUNNING && mc->vm)
                return vmq_vm_crash_reason(mc->vm);
        return l->reason;
}

/* Makes the region VM anew (the guest finds a fresh VMCS). */
static int link_start_region(struct libvirt_link *l) {
        struct machine *mc = l->machine;
        struct vmq_vm_config cfg;
        struct vmq_vm *vm = NULL;
        sd_id128_t uuid;
        int r;

        vmq_vm_config_init(&cfg);
        cfg.name = mc->name;
        if (sd_id128_from_string(mc->uuid, &uuid) >= 0)
                memcpy(cfg.uuid, uuid.bytes, sizeof(cfg.uuid));
        cfg.queue_depth = mc->queue_depth;
        cfg.rx_size = mc->rx_size;

        pthread_mutex_lock(&l->vm_lock);
        if (l->vm)
                vmq_vm_destroy(l->vm);
        l->vm = mc->vm = NULL;
        memset(l->region, 0, l->size);
        r = vmq_vm_create_region(mc->manager->monitor, &cfg, l->region, l->size, &link_region_ops,
                                 l, &vm);
        if (r >= 0)
                l->vm = mc->vm = vm;
        pthread_mutex_unlock(&l->vm_lock);
        if (r >= 0 && atomic_load(&l->peer))
                link_notify(l, vm); /* a guest already up sees the new VMCS at once */
        return r;
}

/* ---- re-plugging the vsock device ---------------------------------------------- */

static virDomainPtr lookup_domain(struct machine *mc);

/* How long after a domain is seen running its QEMU has to be connected to
 * the vsock device before vmqd re-plugs it, and how long the guest has to
 * let the old device go. */
#define REPLUG_GRACE_USEC (1000u * 1000u)
#define REPLUG_UNPLUG_TRIES 50u
#define REPLUG_UNPLUG_WAIT_USEC (100u * 1000u)

/* Runs a QMP command in the domain's QEMU.  0, or -EIO (logged unless
 * @quiet) when libvirt or QEMU refused it. */
static int qmp(struct machine *mc, virDomainPtr dom, bool quiet, const char *cmd) {
        char *result = NULL;
        int r = virDomainQemuMonitorCommand(dom, cmd, &result, 0);

        if (r < 0 || !result || strstr(result, "\"error\"")) {
                if (!quiet)
                        log_warning("Machine '%s': QEMU of domain '%s' refused %s: %s", mc->name,
                                    mc->domain, cmd,
                                    r < 0    ? libvirt_error_message()
                                    : result ? result
                                             : "?");
                free(result);
                return -EIO;
        }
        free(result);
        return 0;
}

/* Does the socket path fit a QMP command as it is (no JSON escapes)? */
static bool qmp_path_ok(const char *path) {
        return !strpbrk(path, "\"\\") && strlen(path) <= 512;
}

/*
 * Plugs machine mc's vsock device into the running QEMU of domain dom, on
 * root bus @bus at @slot: chardev-add on vmqd's socket, then device_add,
 * with a thread serving the socket meanwhile (QEMU talks vhost-user inside
 * device_add while the loop waits for libvirt).  The guest needs shared
 * memory.  libvirt marks the domain tainted ("custom-monitor").  0, or
 * -EIO (logged).
 */
static int plug_vsock(struct machine *mc, virDomainPtr dom, const char *bus, unsigned slot) {
        const char *path = vsock_device_socket(mc);
        char cmd[1024];
        int r;

        if (!qmp_path_ok(path)) {
                log_warning("Machine '%s': vsock socket '%s' cannot go into a QMP command",
                            mc->name, path);
                return -EIO;
        }
        snprintf(cmd, sizeof(cmd),
                 "{\"execute\":\"chardev-add\",\"arguments\":{\"id\":\"vmq-vsock-%s\","
                 "\"backend\":{\"type\":\"socket\",\"data\":{\"server\":false,"
                 "\"addr\":{\"type\":\"unix\",\"data\":{\"path\":\"%s\"}}}}}}",
                 mc->name, path);
        struct vsock_assist *assist = vsock_assist_begin(mc);
        r = qmp(mc, dom, false, cmd);
        if (r >= 0) {
                snprintf(cmd, sizeof(cmd),
                         "{\"execute\":\"device_add\",\"arguments\":{"
                         "\"driver\":\"vhost-user-vsock-pci\",\"id\":\"vmq-vsock-%s\","
                         "\"chardev\":\"vmq-vsock-%s\",\"bus\":\"%s\",\"addr\":\"0x%x\"}}",
                         mc->name, mc->name, bus, slot);
                r = qmp(mc, dom, false, cmd);
                if (r < 0) {
                        snprintf(cmd, sizeof(cmd),
                                 "{\"execute\":\"chardev-remove\",\"arguments\":{\"id\":"
                                 "\"vmq-vsock-%s\"}}",
                                 mc->name);
                        (void)qmp(mc, dom, true, cmd);
                }
        }
        vsock_assist_end(assist);
        return r;
}

/*
 * QEMU 7.2 does not reconnect a vhost-user-vsock chardev: a domain that ran
 * before this vmqd holds a dead device.  Its monitor can plug a new one:
 * device_del (the guest lets the old one go over ACPI), chardev-remove once
 * it has, then plug_vsock() at the same address.  The guest's connections
 * are lost; its listeners stay.  The wait for the guest is the timer's,
 * not the loop's: chardev-remove is tried again every
 * REPLUG_UNPLUG_WAIT_USEC, REPLUG_UNPLUG_TRIES times at most.
 * Returns whether to look again after REPLUG_UNPLUG_WAIT_USEC.
 */
static bool replug_vsock(struct libvirt_link *l, virDomainPtr dom) {
        struct machine *mc = l->machine;
        char cmd[256], bus[16];
        unsigned slot;

        if (l->replug_tries == 0) {
                _cleanup_free_ char *live = virDomainGetXMLDesc(dom, 0);
                if (!live || domain_xml_vsock_address(live, mc->name, bus, sizeof(bus), &slot) < 0)
                        return false; /* the device comes with the domain's next start */
                log_notice("Machine '%s': QEMU of domain '%s' is not connected to the vsock "
                           "device (vmqd restarted?): re-plugging it",
                           mc->name, mc->domain);
                snprintf(cmd, sizeof(cmd),
                         "{\"execute\":\"device_del\",\"arguments\":{\"id\":\"vmq-vsock-%s\"}}",
                         mc->name);
                (void)qmp(mc, dom, true, cmd); /* gone already: the chardev may be left */
        }
        snprintf(cmd, sizeof(cmd),
                 "{\"execute\":\"chardev-remove\",\"arguments\":{\"id\":\"vmq-vsock-%s\"}}",
                 mc->name);
        if (qmp(mc, dom, true, cmd) < 0) {
                if (++l->replug_tries < REPLUG_UNPLUG_TRIES)
                        return true;
                log_warning("Machine '%s': the guest of domain '%s' did not let its old vsock "
                            "device go; restart the domain for a working one",
                            mc->name, mc->domain);
                l->replug_tries = 0;
                return false;
        }
        l->replug_tries = 0;
        /* the same address: QEMU's command line, in the live XML */
        _cleanup_free_ char *xml = virDomainGetXMLDesc(dom, 0);
        if (!xml || domain_xml_vsock_address(xml, mc->name, bus, sizeof(bus), &slot) < 0) {
                log_warning("Machine '%s': domain '%s' lost its vsock device's address; restart "
                            "the domain for a working one",
                            mc->name, mc->domain);
                return false;
        }
        if (plug_vsock(mc, dom, bus, slot) >= 0)
                log_info("Machine '%s': vsock device re-plugged into domain '%s' (libvirt marks "
                         "it tainted: custom-monitor)",
                         mc->name, mc->domain);
        return false;
}

static int on_replug_timer(sd_event_source *s, uint64_t usec, void *userdata) {
        struct libvirt_link *l = userdata;
        struct machine *mc = l->machine;
        virDomainPtr dom;
        bool again = false;

        (void)s;
        (void)usec;
        l->replug_timer = sd_event_source_disable_unref(l->replug_timer);
        if (l->dom_state != MACHINE_RUNNING || vsock_device_connected(mc)) {
                l->replug_tries = 0;
                return 0;
        }
        dom = lookup_domain(mc);
        if (!dom)
                return 0;
        if (virDomainIsActive(dom) == 1)
                again = replug_vsock(l, dom);
        else
                l->replug_tries = 0;
        virDomainFree(dom);
        if (again &&
            sd_event_add_time_relative(mc->manager->event, &l->replug_timer, CLOCK_MONOTONIC,
                                       REPLUG_UNPLUG_WAIT_USEC, 0, on_replug_timer, l) < 0)
                l->replug_tries = 0;
        return 0;
}

/* A domain just seen running whose QEMU is not connected to the vsock
 * device gets a look soon: QEMU connects while it starts, but vmqd may not
 * have taken the connection yet. */
static void watch_vsock(struct libvirt_link *l) {
        struct machine *mc = l->machine;

        if (!mc->vsock_cid || l->replug_timer || vsock_device_connected(mc))
                return;
        if (sd_event_add_time_relative(mc->manager->event, &l->replug_timer, CLOCK_MONOTONIC,
                                       REPLUG_GRACE_USEC, 0, on_replug_timer, l) < 0)
                log_warning("Machine '%s': cannot watch its vsock device; restart domain '%s' if "
                            "it does not work",
                            mc->name, mc->domain);
}

/* Applies the domain's state to the machine and publishes it. */
static void link_apply(struct libvirt_link *l, enum machine_state s, const char *reason) {
        struct machine *mc = l->machine;
        struct manager *m = mc->manager;
        int r;

        if (s == MACHINE_RUNNING) {
                if (l->dom_state == MACHINE_RUNNING)
                        return;
                manager_remove_closed_channels(m, mc->name);
                r = link_start_region(l);
                if (r < 0) {
                        log_error_errno(r, "Machine '%s': cannot set up its shared region: %m",
                                        mc->name);
                        l->dom_state = MACHINE_CRASHED;
                        l->reason = "vmqd could not set up the shared region";
                } else {
                        l->dom_state = MACHINE_RUNNING;
                        l->reason = "";
                        log_info("Machine '%s' (domain '%s') is running, vm %u", mc->name,
                                 mc->domain, vmq_vm_id(mc->vm));
                        /* QEMU connects while it starts: a domain that was
                         * running before this vmqd holds a dead region. */
                        if (!atomic_load(&l->peer))
                                log_notice("Machine '%s': QEMU is not connected to the region; "
                                           "domain '%s' reconnects at its next start",
                                           mc->name, mc->domain);
                }
                manager_process_monitor(m);
                if (l->dom_state == MACHINE_RUNNING) {
                        manager_open_persistent_channels(m);
                        watch_vsock(l);
                }
                return;
        }
        if (l->dom_state == MACHINE_RUNNING) {
                pthread_mutex_lock(&l->vm_lock);
                if (l->vm)
                        (void)vmq_vm_stop(l->vm);
                pthread_mutex_unlock(&l->vm_lock);
        }
        l->dom_state = s;
        l->reason = reason;
        manager_process_monitor(m);
}

/* What the domain's state means for the machine. */
static int domain_state(virDomainPtr dom, enum machine_state current, enum machine_state *ret,
                        const char **ret_reason) {
        int state, why;

        if (virDomainGetState(dom, &state, &why, 0) < 0)
                return -EIO;
        *ret_reason = "";
        switch (state) {
        case VIR_DOMAIN_RUNNING:
        case VIR_DOMAIN_BLOCKED:
        case VIR_DOMAIN_PAUSED:
        case VIR_DOMAIN_SHUTDOWN:
        case VIR_DOMAIN_PMSUSPENDED:
                *ret = MACHINE_RUNNING; /* QEMU is there, and so is the region */
                break;
        case VIR_DOMAIN_CRASHED:
                *ret = MACHINE_CRASHED;
                *ret_reason = "the guest crashed (libvirt)";
                break;
        case VIR_DOMAIN_SHUTOFF:
                if (why == VIR_DOMAIN_SHUTOFF_CRASHED) {
                        *ret = MACHINE_CRASHED;
                        *ret_reason = "the guest crashed (libvirt)";
                } else if (why == VIR_DOMAIN_SHUTOFF_FAILED) {
                        *ret = MACHINE_CRASHED;
                        *ret_reason = "the domain failed to start (libvirt)";
                } else {
                        *ret = current == MACHINE_DEFINED ? MACHINE_DEFINED : MACHINE_STOPPED;
                }
                break;
        default:
                *ret = current == MACHINE_DEFINED ? MACHINE_DEFINED : MACHINE_STOPPED;
                break;
        }
        return 0;
}

static virDomainPtr lookup_domain(struct machine *mc) {
        struct manager *m = mc->manager;

        if (!libvirt_is_connected(m))
                return NULL;
        return virDomainLookupByUUIDString(libvirt_connection(m), mc->uuid);
}

/* Looks at the domain and brings the machine in line with it. */
static void resync_machine(struct machine *mc) {
        struct libvirt_link *l = mc->link;
        enum machine_state s;
        const char *reason;
        virDomainPtr dom;

        if (!l || !libvirt_is_connected(mc->manager))
                return;
        dom = lookup_domain(mc);
        if (!dom) {
                if (!l->gone)
                        log_warning("Machine '%s': domain '%s' (%s) no longer exists", mc->name,
                                    mc->domain, mc->uuid);
                l->gone = true;
                if (l->dom_state != MACHINE_DEFINED)
                        link_apply(l, MACHINE_STOPPED, "");
                return;
        }
        l->gone = false;
        if (domain_state(dom, l->dom_state, &s, &reason) >= 0)
                link_apply(l, s, reason);
        virDomainFree(dom);
}

void libvirt_machine_resync(struct machine *mc) {
        /* The connection code asks about every machine; only ours answer. */
        if (mc->backend != &libvirt_backend)
                return;
        resync_machine(mc);
}

/* ---- machines: start, stop, forget ------------------------------------------- */

static int lv_start(struct machine *mc, sd_bus_error *error) {
        virDomainPtr dom;
        int r;

        if (!libvirt_is_connected(mc->manager))
                return libvirt_unavailable(mc->manager, error);
        dom = lookup_domain(mc);
        if (!dom)
                return lv_error(mc, "start", error);
        struct vsock_assist *assist = vsock_assist_begin(mc);
        r = virDomainCreate(dom);
        vsock_assist_end(assist);
        if (r < 0)
                r = lv_error(mc, "start", error);
        else
                log_info("Machine '%s': started domain '%s'", mc->name, mc->domain);
        virDomainFree(dom);
        if (r >= 0)
                resync_machine(mc); /* not waiting for the event */
        return r < 0 ? r : 0;
}

static int lv_stop(struct machine *mc, sd_bus_error *error) {
        virDomainPtr dom;
        int r;

        if (!libvirt_is_connected(mc->manager))
                return libvirt_unavailable(mc->manager, error);
        dom = lookup_domain(mc);
        if (!dom)
                return lv_error(mc, "stop", error);
        r = virDomainShutdown(dom);
        if (r < 0)
                r = lv_error(mc, "stop", error);
        virDomainFree(dom);
        return r < 0 ? r : 0;
}

static int lv_kill(struct machine *mc, sd_bus_error *error) {
        virDomainPtr dom;
        int r;

        if (!libvirt_is_connected(mc->manager)) {
                log_warning("Machine '%s': cannot destroy domain '%s': no libvirt connection",
                            mc->name, mc->domain);
                return libvirt_unavailable(mc->manager, error);
        }
        dom = lookup_domain(mc);
        if (!dom)
                return lv_error(mc, "destroy", error);
        r = virDomainDestroy(dom);
        if (r < 0) {
                if (!error)
                        log_warning("Machine '%s': cannot destroy domain '%s': %s", mc->name,
                                    mc->domain, libvirt_error_message());
                r = lv_error(mc, "destroy", error);
        } else
                log_info("Machine '%s': destroyed domain '%s'", mc->name, mc->domain);
        virDomainFree(dom);
        resync_machine(mc);
        return r < 0 ? r : 0;
}

/* The <shmem> device of machine mc, for attaching and detaching.  No
 * <size>: with a server, QEMU takes the region's size from the fd (and
 * libvirt refuses a size for ivshmem-doorbell). */
static char *shmem_xml(const struct machine *mc, const char *socket_path) {
        char *x = NULL;

        if (asprintf(&x,
                     "<shmem name='vmq-%s'>\n"
                     "  <model type='ivshmem-doorbell'/>\n"
                     "  <server path='%s'/>\n"
                     "  <msi vectors='%u' ioeventfd='on'/>\n"
                     "</shmem>\n",
                     mc->name, socket_path, LINK_VECTORS) < 0)
                return NULL;
        return x;
}

/* Does the domain's definition (flags: 0 live, VIR_DOMAIN_XML_INACTIVE)
 * have machine mc's <shmem> device? */
static int has_shmem(virDomainPtr dom, const struct machine *mc, unsigned flags) {
        _cleanup_free_ char *xml = virDomainGetXMLDesc(dom, flags);
        _cleanup_free_ char *needle = NULL;

        if (!xml)
                return -EIO;
        if (asprintf(&needle, "<shmem name='vmq-%s'>", mc->name) < 0)
                return -ENOMEM;
        return strstr(xml, needle) != NULL;
}

/*
 * Puts machine mc's vsock device into the domain's definition, with shared
 * memory (domain-xml.h), and stores in *ret_added what that added to the
 * memory.  A running domain whose memory is shared gets the device at once
 * over QEMU's monitor (plug_vsock(): libvirt cannot, its <vsock> being the
 * kernel's); one whose memory is not shared gets it with its next start,
 * as its memory does.
 */
static int configure_vsock(struct machine *mc, virDomainPtr dom, bool active, int *ret_added,
                           sd_bus_error *error) {
        _cleanup_free_ char *xml = NULL, *edited = NULL, *live = NULL;
        virDomainPtr defined;
        int r;

        *ret_added = 0;
        xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
        if (!xml)
                return lv_error(mc, "read the definition of", error);
        if (domain_xml_has_vsock(xml, mc->name))
                return 0;
        r = domain_xml_add_vsock(xml, mc->name, vsock_device_socket(mc), &edited, ret_added);
        if (r == -EPERM)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Domain '%s' has private memory (<memoryBacking> with "
                                         "<access mode='private'/>); a vsock device needs it "
                                         "shared",
                                         mc->domain);
        if (r == -ENOSPC)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_LIMIT_REACHED,
                                         "Domain '%s' has no free PCI slot on bus 0 for the vsock "
                                         "device",
                                         mc->domain);
        if (r < 0)
                return sd_bus_error_set_errnof(error, -r,
                                               "Cannot add the vsock device to domain '%s': %s",
                                               mc->domain, strerror(-r));
        defined = virDomainDefineXML(virDomainGetConnect(dom), edited);
        if (!defined)
                return lv_error(mc, "add the vsock device to the definition of", error);
        virDomainFree(defined);
        log_info("Machine '%s': domain '%s' has the vsock device in its definition%s (libvirt "
                 "marks it tainted: custom-argv)",
                 mc->name, mc->domain, *ret_added ? ", and its memory is now shared (memfd)" : "");
        if (active) {
                char bus[16];
                unsigned slot;
                live = virDomainGetXMLDesc(dom, 0);
                if (!live || domain_xml_has_vsock(live, mc->name))
                        return 0;
                if (domain_xml_memory_shared(live) &&
                    domain_xml_vsock_address(edited, mc->name, bus, sizeof(bus), &slot) >= 0 &&
                    plug_vsock(mc, dom, bus, slot) >= 0) {
                        log_info("Machine '%s': vsock device hot-plugged into running domain '%s' "
                                 "(libvirt marks it tainted: custom-monitor)",
                                 mc->name, mc->domain);
                        return 0;
                }
                mc->vsock_restart_needed = true;
                log_notice("Machine '%s': domain '%s' is running%s: its vsock device comes with "
                           "its next start (restart the domain)",
                           mc->name, mc->domain,
                           domain_xml_memory_shared(live) ? "" : " with memory that is not shared");
        }
        return 0;
}

/* What configure_vsock() added to the domain's memory, as the metadata
 * says (0 when it says nothing). */
static int vsock_added(virDomainPtr dom) {
        _cleanup_free_ char *meta = virDomainGetMetadata(
                dom, VIR_DOMAIN_METADATA_ELEMENT, VMQD_LIBVIRT_NS_URI, VIR_DOMAIN_AFFECT_CONFIG);
        const char *p = meta ? strstr(meta, "vsock-memory=") : NULL;

        if (!p || (p[13] != '\'' && p[13] != '"'))
                return 0;
        return (int)strtol(p + 14, NULL, 10) &
               (DOMAIN_XML_ADDED_BACKING | DOMAIN_XML_ADDED_ACCESS | DOMAIN_XML_ADDED_SOURCE);
}

/* Takes machine mc's vsock device out of the domain's definition, and the
 * memory settings it brought. */
static int unconfigure_vsock(struct machine *mc, virDomainPtr dom, sd_bus_error *error) {
        _cleanup_free_ char *xml = NULL, *edited = NULL;
        virDomainPtr defined;
        int r;

        xml = virDomainGetXMLDesc(dom, VIR_DOMAIN_XML_INACTIVE | VIR_DOMAIN_XML_SECURE);
        if (!xml)
                return lv_error(mc, "read the definition of", error);
        if (!domain_xml_has_vsock(xml, mc->name))
                return 0;
        r = domain_xml_remove_vsock(xml, mc->name, vsock_added(dom), &edited);
        if (r < 0)
                return sd_bus_error_set_errnof(
                        error, -r, "Cannot take the vsock device out of domain '%s': %s",
                        mc->domain, strerror(-r));
        defined = virDomainDefineXML(virDomainGetConnect(dom), edited);
        if (!defined)
                return lv_error(mc, "take the vsock device out of the definition of", error);
        virDomainFree(defined);
        return 0;
}

/* Writes vmq's metadata and attaches the <shmem> device (config and, if the
 * domain runs, live), and the vsock device (config only: configure_vsock).
 * A live attach that fails is only logged: the device is in the definition
 * and comes with the next start. */
static int configure_domain(struct machine *mc, virDomainPtr dom, sd_bus_error *error) {
        _cleanup_free_ char *sock = xml_attr(mc->link->socket_path);
        _cleanup_free_ char *meta = NULL, *dev = NULL;
        bool active = virDomainIsActive(dom) == 1, persistent = virDomainIsPersistent(dom) == 1;
        unsigned flags =
                (persistent ? VIR_DOMAIN_AFFECT_CONFIG : 0) | (active ? VIR_DOMAIN_AFFECT_LIVE : 0);
        int r, added = 0;

        if (!sock)
                return -ENOMEM;
        if (mc->vsock_cid && !persistent)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Domain '%s' is transient: a vsock device goes into a "
                                         "domain's definition (virsh define it first)",
                                         mc->domain);
        if (mc->vsock_cid) {
                r = configure_vsock(mc, dom, active, &added, error);
                if (r < 0)
                        return r;
        }
        if (asprintf(&meta,
                     "<machine name='%s' uuid='%s' region='%" PRIu64 "' rx='%" PRIu64
                     "' socket='%s' vsock-memory='%d'/>",
                     mc->name, mc->uuid, mc->memory, mc->rx_size, sock, added) < 0)
                return -ENOMEM;
        dev = shmem_xml(mc, sock);
        if (!dev)
                return -ENOMEM;

        if (virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, meta, VMQD_LIBVIRT_NS_KEY,
                                 VMQD_LIBVIRT_NS_URI, flags) < 0)
                return lv_error(mc, "write the metadata of", error);

        if (persistent) {
                r = has_shmem(dom, mc, VIR_DOMAIN_XML_INACTIVE);
                if (r < 0)
                        return lv_error(mc, "read the definition of", error);
                if (r == 0 && virDomainAttachDeviceFlags(dom, dev, VIR_DOMAIN_AFFECT_CONFIG) < 0)
                        return lv_error(mc, "attach the ivshmem device to", error);
        }
        if (active) {
                r = has_shmem(dom, mc, 0);
                if (r == 0 && virDomainAttachDeviceFlags(dom, dev, VIR_DOMAIN_AFFECT_LIVE) < 0) {
                        if (!persistent)
                                return lv_error(mc, "attach the ivshmem device to", error);
                        log_warning("Machine '%s': cannot hot-plug the ivshmem device into running "
                                    "domain '%s' (%s); it comes with the next start",
                                    mc->name, mc->domain, libvirt_error_message());
                }
        }
        return 0;
}

static int lv_forget(struct machine *mc, sd_bus_error *error) {
        _cleanup_free_ char *sock = NULL, *dev = NULL;
        virDomainPtr dom;
        int r = 0;

        if (!libvirt_is_connected(mc->manager))
                return libvirt_unavailable(mc->manager, error);
        dom = lookup_domain(mc);
        if (!dom) {
                virErrorPtr e = virGetLastError();
                if (e && e->code == VIR_ERR_NO_DOMAIN)
                        return 0; /* nothing left to undo */
                return lv_error(mc, "undefine", error);
        }
        if (virDomainIsPersistent(dom) == 1) {
                if (mc->vsock_cid)
                        r = unconfigure_vsock(mc, dom, error);
                sock = xml_attr(link_socket(mc));
                dev = sock ? shmem_xml(mc, sock) : NULL;
                if (!dev && r >= 0)
                        r = -ENOMEM;
                if (r >= 0 && has_shmem(dom, mc, VIR_DOMAIN_XML_INACTIVE) > 0 &&
                    virDomainDetachDeviceFlags(dom, dev, VIR_DOMAIN_AFFECT_CONFIG) < 0)
                        r = lv_error(mc, "detach the ivshmem device from", error);
                if (r >= 0 && virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, NULL,
                                                   VMQD_LIBVIRT_NS_KEY, VMQD_LIBVIRT_NS_URI,
                                                   VIR_DOMAIN_AFFECT_CONFIG) < 0)
                        r = lv_error(mc, "remove the metadata of", error);
        }
        if (r >= 0 && virDomainIsActive(dom) == 1)
                (void)virDomainSetMetadata(dom, VIR_DOMAIN_METADATA_ELEMENT, NULL,
                                           VMQD_LIBVIRT_NS_KEY, VMQD_LIBVIRT_NS_URI,
                                           VIR_DOMAIN_AFFECT_LIVE);
        virDomainFree(dom);
        if (r >= 0)
                log_info("Machine '%s': domain '%s' no longer carries vmq's device and metadata",
                         mc->name, mc->domain);
        return r;
}

/* ---- AdoptDomain --------------------------------------------------------------- */

struct adopt_options {
        const char *name;
        int persistent;
        uint64_t region_size;
        uint64_t rx_size;
        int vsock;          /* give it a vhost-user-vsock device */
        uint32_t vsock_cid; /* with this CID (implies vsock); 0: the lowest free */
};

static int read_adopt_options(sd_bus_message *message, struct adopt_options *o,
                              sd_bus_error *error) {
        const struct bus_option options[] = {
                {"name", "s", &o->name},
                {"persistent", "b", &o->persistent},
                {"region_size", "t", &o->region_size},
                {"rx_size", "t", &o->rx_size},
                {"vsock", "b", &o->vsock},
                {"vsock_cid", "u", &o->vsock_cid},
        };
        return bus_read_options(message, options, VMQ_ARRAY_SIZE(options), error);
}

/* The machine that has adopted the domain with this UUID, or NULL. */
static struct machine *find_adopted(struct manager *m, const char *uuid) {
        struct machine *mc = manager_find_machine_by_uuid(m, uuid);
        return mc && mc->backend == &libvirt_backend ? mc : NULL;
}

/* manager_add_machine()'s activation step: give the domain vmq's device
 * and metadata (undone here if that fails half-way). */
static int adopt_configure(struct machine *mc, void *userdata, sd_bus_error *error) {
        virDomainPtr dom = userdata;
        int r = configure_domain(mc, dom, error);

        if (r < 0)
                (void)lv_forget(mc, NULL); /* what got written */
        return r;
}

int libvirt_method_adopt_domain(sd_bus_message *message, void *userdata, sd_bus_error *error) {
        struct manager *m = userdata;
        struct adopt_options o = {.region_size = VMQD_LIBVIRT_REGION_DEFAULT};
        struct vmqd_machine_def def = {0};
        char uuid[VIR_UUID_STRING_BUFLEN];
        _cleanup_free_ char *why = NULL, *dom_name = NULL;
        const char *domain, *name;
        struct machine *mc, *other;
        virConnectPtr conn;
        virDomainPtr dom;
        int r;

        r = vmqd_check_access(message, error);
        if (r < 0)
                return r;
        r = sd_bus_message_read(message, "s", &domain);
        if (r < 0)
                return r;
        r = read_adopt_options(message, &o, error);
        if (r < 0)
                return r;
        conn = libvirt_connection(m);
        if (!conn)
                return libvirt_unavailable(m, error);
        if (m->stopping)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY, "vmqd is shutting down");

        dom = virDomainLookupByName(conn, domain);
        if (!dom)
                dom = virDomainLookupByUUIDString(conn, domain);
        if (!dom)
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_SUCH_MACHINE,
                                         "No libvirt domain '%s' at '%s'", domain,
                                         m->config.libvirt_uri);
        if (virDomainGetUUIDString(dom, uuid) < 0 || !(dom_name = strdup(virDomainGetName(dom)))) {
                virDomainFree(dom);
                return sd_bus_error_set_errnof(error, EIO,
                                               "Cannot read the name and UUID of domain '%s': %s",
                                               domain, libvirt_error_message());
        }

        name = o.name ? o.name : dom_name;
        if (!vmqd_name_is_valid(name) || strcmp(name, VMQ_BUS_HOST_END) == 0)
                r = sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                      "Invalid machine name '%s'%s", name,
                                      o.name ? "" : " (give one with the 'name' option)");
        else if ((other = find_adopted(m, uuid)))
                r = sd_bus_error_setf(error, VMQ_BUS_ERROR_MACHINE_EXISTS,
                                      "Domain '%s' is adopted already, as machine '%s'", dom_name,
                                      other->name);
        else if ((r = manager_check_new_machine(m, name, uuid, error)) < 0)
                ; /* name or UUID taken (the domain's UUID is the machine's) */
        else if (m->n_machines >= m->config.max_machines)
                r = sd_bus_error_setf(error, VMQ_BUS_ERROR_LIMIT_REACHED,
                                      "Cannot adopt domain '%s': the limit of %u machines is "
                                      "reached",
                                      dom_name, m->config.max_machines);
        else if (!VMQ_IS_POW2(o.region_size) || o.region_size < VMQD_LIBVIRT_REGION_MIN ||
                 o.region_size > VMQD_LIBVIRT_REGION_MAX)
                r = sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                      "Invalid region_size '%" PRIu64
                                      "' (a power of two, 1 MiB..1 GiB)",
                                      o.region_size);
        else if (o.vsock_cid && (o.vsock_cid < 3 || o.vsock_cid > VMQD_VSOCK_CID_MAX))
                r = sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                      "Invalid vsock_cid '%" PRIu32
                                      "' (3..%u: 0, 1 and 2 are the hypervisor, local and host "
                                      "CIDs)",
                                      o.vsock_cid, VMQD_VSOCK_CID_MAX);
        else if (o.vsock_cid && (other = vsock_machine_by_cid(m, o.vsock_cid)))
                r = sd_bus_error_setf(error, VMQ_BUS_ERROR_MACHINE_EXISTS,
                                      "vsock CID %" PRIu32 " is machine '%s''s already",
                                      o.vsock_cid, other->name);
        else if (o.vsock && !o.vsock_cid && !(o.vsock_cid = vsock_free_cid(m)))
                r = sd_bus_error_setf(error, VMQ_BUS_ERROR_LIMIT_REACHED, "No vsock CID is free");
        if (r < 0) {
                virDomainFree(dom);
                return r;
        }

        def.name = (char *)name;
        def.vsock_cid = o.vsock_cid;
        snprintf(def.uuid, sizeof(def.uuid), "%s", uuid);
        def.memory = o.region_size;
        def.rx_size = o.rx_size ? o.rx_size : o.region_size / 2;
        def.vcpus = 1;
        def.queue_depth = m->config.default_queue_depth;
        def.domain = dom_name;
        if (vmqd_machine_def_validate(&def, &why) < 0) {
                virDomainFree(dom);
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_INVALID_ARGUMENT,
                                         "Cannot adopt domain '%s': %s", dom_name,
                                         why ? why : "bad definition");
        }

        r = machine_new(m, &def, o.persistent, &mc);
        if (r < 0) {
                virDomainFree(dom);
                return r;
        }
        r = machine_attach(mc);
        if (r < 0) {
                log_error_errno(r, "Machine '%s': cannot serve its region%s under '%s': %m", name,
                                def.vsock_cid ? " and vsock device" : "", m->runtime_dir);
                sd_bus_error_set_errnof(error, -r,
                                        "Cannot serve the region%s of machine '%s' under '%s': %s",
                                        def.vsock_cid ? " and vsock device" : "", name,
                                        m->runtime_dir, strerror(-r));
                machine_free(mc);
                virDomainFree(dom);
                return r;
        }
        /* Saved first (if persistent), then the domain is configured, then
         * the machine is listed: a failure leaves no trace. */
        r = manager_add_machine(m, mc, adopt_configure, dom, error);
        virDomainFree(dom);
        if (r < 0) {
                machine_free(mc);
                return r;
        }

        log_info("Machine '%s' adopted domain '%s' (%s), region %" PRIu64 " bytes on '%s'",
                 mc->name, mc->domain, mc->uuid, mc->memory, link_socket(mc));
        resync_machine(mc);
        manager_process_monitor(m);
        return sd_bus_reply_method_return(message, "o", mc->path);
}

static uint32_t lv_id(const struct machine *mc) {
        return mc->vm ? vmq_vm_id(mc->vm) : 0;
}

static int lv_exit_code(const struct machine *mc) {
        (void)mc;
        return 0; /* a domain stops, shuts off or crashes; it has no exit code */
}

const struct machine_backend libvirt_backend = {
        .name = "libvirt",
        .ends_with_vmqd = false,
        .attach = lv_attach,
        .detach = lv_detach,
        .start = lv_start,
        .stop = lv_stop,
        .kill = lv_kill,
        .forget = lv_forget,
        .state = lv_state,
        .active = lv_active,
        .id = lv_id,
        .exit_code = lv_exit_code,
        .crash_reason = lv_crash_reason,
};
