/* SPDX-License-Identifier: MIT */
/*
 * The KVM backend: a micro-VM that vmqd runs itself, on /dev/kvm through
 * the core monitor (vmq_vm_create_from_file()).  mc->vm is the core VM;
 * a machine that is not running keeps its last one (console and exit code
 * stay readable) until it starts again or is freed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-id128.h>

#include "bus/vmq-bus.h"
#include "core/util.h"
#include "vmqd/backend.h"
#include "vmqd/log.h"
#include "vmqd/machine.h"
#include "vmqd/manager.h"

static void kvm_detach(struct machine *mc) {
        if (!mc->vm)
                return;
        vmq_vm_destroy(mc->vm);
        mc->vm = NULL;
}

static int start_error(struct machine *mc, const char *path, int r, sd_bus_error *error) {
        switch (r) {
        case -ENOENT:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_SUCH_IMAGE,
                                         "Image '%s' of machine '%s' not found", path, mc->name);
        case -ENOEXEC:
        case -ERANGE:
        case -EOVERFLOW:
        case -EFBIG:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                         "Image '%s' of machine '%s' refused: %s", path, mc->name,
                                         strerror(-r));
        case -EINVAL:
                /* The definition was checked when it was made: it is the
                 * file, which may have changed since (a FIFO, a device). */
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                         "Image '%s' of machine '%s' refused: not a regular file, "
                                         "or not a vmq guest image",
                                         path, mc->name);
        case -ENOMEM:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_NO_MEMORY,
                                         "Not enough memory to start machine '%s'", mc->name);
        case -EEXIST:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BUSY,
                                         "Machine '%s' still exists in the monitor", mc->name);
        case -EISDIR:
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                         "Image '%s' of machine '%s' is a directory", path,
                                         mc->name);
        case -ENODEV:
        case -EACCES:
        case -EPERM:
                if (vmq_monitor_kvm_error(mc->manager->monitor) < 0)
                        return sd_bus_error_setf(
                                error, VMQ_BUS_ERROR_BACKEND_UNAVAILABLE,
                                "Cannot start machine '%s': this host gives vmqd no /dev/kvm (%s)",
                                mc->name, strerror(-vmq_monitor_kvm_error(mc->manager->monitor)));
                return sd_bus_error_setf(error, VMQ_BUS_ERROR_BAD_IMAGE,
                                         "Image '%s' of machine '%s' cannot be read: %s", path,
                                         mc->name, strerror(-r));
        default:
                return sd_bus_error_set_errnof(error, -r, "Cannot start machine '%s': %s", mc->name,
                                               strerror(-r));
        }
}

static int kvm_start(struct machine *mc, sd_bus_error *error) {
        struct manager *m = mc->manager;
        _cleanup_free_ char *path = NULL;
        struct vmq_vm_config cfg;
        struct vmq_vm *vm = NULL;
        sd_id128_t uuid;
        int r;

        path = machine_image_path(mc);
        if (!path)
                return sd_bus_error_set_errno(error, ENOMEM);

        /* The old VM goes first: the core wants unique names. */
        kvm_detach(mc);

        vmq_vm_config_init(&cfg);
        cfg.name = mc->name;
        if (mc->uuid[0] && sd_id128_from_string(mc->uuid, &uuid) >= 0)
                memcpy(cfg.uuid, uuid.bytes, sizeof(cfg.uuid));
        cfg.ram_size = mc->memory;
        cfg.vcpus = mc->vcpus;
        cfg.queue_depth = mc->queue_depth;
        cfg.huge_size = mc->huge_memory;
        cfg.huge_rx_size = mc->huge_memory;
        cfg.args = mc->args;

        r = vmq_vm_create_from_file(m->monitor, &cfg, path, &vm);
        if (r < 0) {
                log_debug_errno(r, "Cannot create machine '%s' from '%s': %m", mc->name, path);
                return start_error(mc, path, r, error);
        }
        r = vmq_vm_start(vm);
        if (r < 0) {
                vmq_vm_destroy(vm);
                log_debug_errno(r, "Cannot start machine '%s': %m", mc->name);
                return start_error(mc, path, r, error);
        }
        mc->vm = vm;
        log_info("Machine '%s' started (vm %u, image '%s')", mc->name, vmq_vm_id(vm), path);
        return 0;
}

static int kvm_kill(struct machine *mc, sd_bus_error *error) {
        int r;

        if (!mc->vm)
                return 0;
        r = vmq_vm_stop(mc->vm);
        if (r < 0)
                return sd_bus_error_set_errnof(error, -r, "Cannot stop machine '%s': %s", mc->name,
                                               strerror(-r));
        return 0;
}

static int kvm_stop(struct machine *mc, sd_bus_error *error) {
        int r;

        if (!mc->vm)
                return 0;
        r = vmq_vm_shutdown(mc->vm);
        if (r == -EAGAIN) {
                /* The guest's queue is full: it won't see a SHUTDOWN soon. */
                log_notice("Machine '%s' has no room for a shutdown request, stopping it",
                           mc->name);
                return kvm_kill(mc, error);
        }
        if (r < 0 && r != -ESRCH) /* -ESRCH: it stopped meanwhile */
                return sd_bus_error_set_errnof(error, -r, "Cannot stop machine '%s': %s", mc->name,
                                               strerror(-r));
        return 0;
}

static enum machine_state kvm_state(const struct machine *mc) {
        if (!mc->vm)
                return MACHINE_DEFINED;
        switch (vmq_vm_state(mc->vm)) {
        case VMQ_VM_RUNNING:
                return MACHINE_RUNNING;
        case VMQ_VM_EXITED:
                return MACHINE_EXITED;
        case VMQ_VM_STOPPED:
                return MACHINE_STOPPED;
        case VMQ_VM_CRASHED:
                return MACHINE_CRASHED;
        default:
                return MACHINE_DEFINED;
        }
}

static bool kvm_active(const struct machine *mc) {
        return kvm_state(mc) == MACHINE_RUNNING;
}

static uint32_t kvm_id(const struct machine *mc) {
        return mc->vm ? vmq_vm_id(mc->vm) : 0;
}

static int kvm_exit_code(const struct machine *mc) {
        return mc->vm ? vmq_vm_exit_code(mc->vm) : 0;
}

static const char *kvm_crash_reason(const struct machine *mc) {
        return mc->vm ? vmq_vm_crash_reason(mc->vm) : NULL;
}

const struct machine_backend kvm_backend = {
        .name = "kvm",
        .ends_with_vmqd = true,
        .attach = NULL,
        .detach = kvm_detach,
        .start = kvm_start,
        .stop = kvm_stop,
        .kill = kvm_kill,
        .forget = NULL,
        .state = kvm_state,
        .active = kvm_active,
        .id = kvm_id,
        .exit_code = kvm_exit_code,
        .crash_reason = kvm_crash_reason,
};
