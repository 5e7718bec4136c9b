/* SPDX-License-Identifier: MIT */
/*
 * vmq-bench: the vmq benchmarks (DESIGN.md §6), every figure measured side
 * by side in one run with its baselines:
 *
 *   exit_roundtrip_us         raw port-I/O exit round trip (NOP hypercall):
 *                             the floor of any exit-based design
 *   memcpy_gbps               host memcpy bandwidth: the limit of copying
 *   unix_socketpair_oneway_us two host processes on different CPUs (like two
 *                             VMs on two vCPUs) ping-ponging 64-byte messages
 *                             over a UNIX socketpair, one-way = RTT/2; the
 *                             ".same_cpu" variant lets the scheduler keep both
 *                             on one CPU
 *   baseline.unix_socketpair_msgrate_mps
 *                             a stream of 64-byte messages between two host
 *                             processes over a UNIX socketpair
 *   msgrate_mps.inline64.<exit|posted|exitless>
 *                             a stream of 64-byte messages guest to guest:
 *                             one exit per message; posted in batches and
 *                             carried by the monitor's poller; or written
 *                             in batches on the channel's link (exitless:
 *                             the guests share the link's rings, the
 *                             receiver is kicked only when it sleeps); both
 *                             VMs have a queue of 1024 and a post ring of
 *                             512
 *   exits_per_msg.inline64.<exit|posted|exitless>
 *                             VM exits (hypercalls and doorbells) of both
 *                             guests per message of that stream
 *   oneway_p50_us.<path>, oneway_p99_us.<path>
 *                             guest-to-guest ping-pong, one-way = RTT/2, for
 *                             inline.immediate, inline.deferred (posted, no
 *                             doorbell: drained at the WAIT exit),
 *                             inline.posted (posted both ways, doorbells
 *                             only when the poller asks), inline.exitless
 *                             (on the channel's link both ways),
 *                             page_copy.immediate, page_flip.immediate
 *   throughput_gbps.<method>.<size>
 *                             guest-to-guest back-to-back page messages of
 *                             <size> until 16 MiB moved (64 MiB from 1m up),
 *                             until the receiver read one byte of every 4 KiB
 *                             page, batched: posted in bursts of 32 drained
 *                             with one exit each (bench-tx batch=32), given
 *                             back with one release per run of adjacent
 *                             messages of a receive batch; the four methods
 *                             of a size are run in 4 interleaved rounds of 5
 *                             reps, and the figure is the median of the
 *                             rounds
 *
 *   boot_us.raw_kvm           a bare KVM VM (4 MiB of anonymous memory, the
 *                             same 64-bit CPL 3 entry) from KVM_CREATE_VM to
 *                             its first hypercall: the floor of a start
 *   boot_us.core              vmq_vm_create() + vmq_vm_start() of the boot
 *                             image (16 MiB, one vCPU) to its first
 *                             hypercall (its exit); medians over 50 starts,
 *                             interleaved with the raw ones
 *   idle_cpu_pct.<n>vm        CPU used by the whole process (the monitor and
 *                             its VMs) over 10 s while n echo VMs (4 MiB)
 *                             wait for messages, in percent of one CPU
 *   idle_kib_per_vm           host memory per idle VM beyond its guest RAM:
 *                             the growth of used memory (MemTotal -
 *                             MemAvailable) less that of shared memory
 *                             (guest RAM is a memfd), divided by n;
 *                             .anon and .page_tables: the parts of it that
 *                             are this process's anonymous memory and page
 *                             tables (the rest is the kernel's)
 *   idle_threads_per_vm       threads of the process per idle VM (its vCPU
 *                             included)
 *
 * Output: one line "BENCH <name> <value> <unit>" per figure, then a table.
 * Usage: vmq-bench [--quick] [--guest-dir DIR] [--idle-vms N (default 1000; 0: skip)]
 *                  [--only SECTION,...]  (floors, msgrate, boot, latency,
 *                  throughput, idle; default: all)
 *                  [--batch N]  page messages per burst in the throughput
 *                  figures (1 to 64, default THROUGHPUT_BATCH; 1: the
 *                  sender makes an exit per message, as before bursts)
 * --quick: fewer iterations, starts and idle VMs, and a quarter of the
 * throughput data in three reps: for emulated machines (tests/nested/run),
 * whose figures mean something only against each other.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench/bench-util.h"
#include "core/elf.h"
#include "core/kvm.h"
#include "core/monitor.h"
#include "core/util.h"
#include "core/vm.h"
#include "core/x86.h"
#include "tests/test-util.h"

#define MIB (1024ull * 1024ull)
#define HUGE_FRAMES 72
/* Page messages per burst in the throughput figures (bench-tx batch=): the
 * sender posts 32 and drains them with one exit, and bench-rx gives a
 * receive batch back with one release per run, where an exit per message
 * (about 45 us on the development machine) cost more than copying its
 * 4 KiB (about 7 us at copy.2m's 0.55 GB/s).  Half the post ring run()
 * gives (64), so a burst can be posted while the one before waits for the
 * receiver. */
#define THROUGHPUT_BATCH 32
static int throughput_batch = THROUGHPUT_BATCH; /* --batch */

static const char *guest_dir = VMQ_GUEST_DIR;
static struct vmq_monitor *mon;
static bool quick, skip_idle;
static const char *only; /* comma-separated sections, NULL: all */

/* Whether the run includes this section (and says so on stderr). */
static bool want(const char *section) {
        size_t n = strlen(section);
        for (const char *p = only; p; p = strchr(p, ',')) {
                if (*p == ',')
                        p++;
                if (strncmp(p, section, n) == 0 && (p[n] == ',' || p[n] == '\0'))
                        goto yes;
        }
        if (only)
                return false;
yes:
        fprintf(stderr, "vmq-bench: %s\n", section);
        return true;
}
static int idle_vms = 1000;

static char *image_path(const char *name) {
        static char path[4096];
        snprintf(path, sizeof(path), "%s/%s.elf", guest_dir, name);
        return path;
}

/* Reads "BENCHDATA <key> <value>" from a VM's console. */
static int benchdata(struct vmq_vm *vm, const char *key, double *ret) {
        static char buf[65536];
        size_t n = vmq_vm_console_read(vm, buf, sizeof(buf) - 1);
        char pat[128];
        buf[n] = 0;
        snprintf(pat, sizeof(pat), "BENCHDATA %s ", key);
        char *p = strstr(buf, pat);
        if (!p)
                return -ENOENT;
        *ret = strtod(p + strlen(pat), NULL);
        return 0;
}

static void dump_console(struct vmq_vm *vm) {
        static char buf[65536];
        struct vmq_vm_stats st;
        size_t n = vmq_vm_console_read(vm, buf, sizeof(buf) - 1);
        buf[n] = 0;
        vmq_vm_get_stats(vm, &st);
        const struct vmq_ring_idx *q = (const struct vmq_ring_idx *)((const uint8_t *)vm->vmcs +
                                                                     vm->vmcs->layout.queue_off);
        fprintf(stderr,
                "--- console of %s (%s %s; exits %llu doorbells %llu sent %llu received %llu "
                "errors %llu, AGAIN %llu NOMEM %llu; copies %llu flips %llu; queue prod %u cons "
                "%u; host maps %zu)\n%s---\n",
                vmq_vm_name(vm), vmq_vm_state_to_string(vmq_vm_state(vm)), vmq_vm_crash_reason(vm),
                (unsigned long long)st.exits, (unsigned long long)st.doorbells,
                (unsigned long long)st.sent, (unsigned long long)st.received,
                (unsigned long long)st.errors, (unsigned long long)st.error[VMQ_E_AGAIN],
                (unsigned long long)st.error[VMQ_E_NOMEM], (unsigned long long)st.copies,
                (unsigned long long)st.flips, __atomic_load_n(&q->prod, __ATOMIC_RELAXED),
                __atomic_load_n(&q->cons, __ATOMIC_RELAXED), vmq_space_maps(vm->space), buf);
}

/* Exits of both VMs of the last run(): hypercalls and doorbells. */
static uint64_t last_exits;
/* Ring depths of the VMs run() makes (0: the defaults, 64 and 64). */
static uint32_t queue_depth, post_depth;

/*
 * Runs bench-tx with `args` (paired with bench-rx, started with rx_args,
 * unless alone) and reads the BENCHDATA keys into values.  Returns 0 or a
 * negative errno.
 */
static int run(const char *args, const char *rx_args, bool alone, enum vmq_transfer transfer,
               bool huge, const char *const *keys, double *values, size_t nkeys) {
        struct vmq_vm_config tc, rc;
        struct vmq_vm *tx = NULL, *rx = NULL;
        int r;

        vmq_vm_config_init(&tc);
        tc.name = "bench-tx";
        tc.args = args;
        tc.ram_size = 96 * MIB;
        if (huge)
                tc.huge_size = 32 * MIB;
        if (queue_depth)
                tc.queue_depth = queue_depth;
        if (post_depth)
                tc.post_depth = post_depth;
        vmq_vm_config_init(&rc);
        rc.name = "bench-rx";
        if (queue_depth)
                rc.queue_depth = queue_depth;
        if (post_depth)
                rc.post_depth = post_depth;
        rc.args = rx_args;
        rc.rx_size = 64 * MIB;
        if (huge)
                rc.huge_rx_size = 32 * MIB;

        r = vmq_vm_create_from_file(mon, &tc, image_path("bench-tx"), &tx);
        if (r < 0)
                goto out;
        if (!alone) {
                struct vmq_channel_config cc;
                uint32_t ch;
                r = vmq_vm_create_from_file(mon, &rc, image_path("bench-rx"), &rx);
                if (r < 0)
                        goto out;
                vmq_channel_config_init(&cc);
                cc.transfer = transfer;
                r = vmq_channel_open(mon, vmq_vm_id(tx), vmq_vm_id(rx), &cc, &ch);
                if (r < 0)
                        goto out;
                r = vmq_vm_start(rx);
                if (r < 0)
                        goto out;
        }
        r = vmq_vm_start(tx);
        if (r < 0)
                goto out;
        r = vmq_vm_wait(tx, quick ? 60000 : 240000);
        if (r != VMQ_VM_EXITED || vmq_vm_exit_code(tx) != 0) {
                fprintf(stderr, "vmq-bench: '%s' failed\n", args);
                dump_console(tx);
                if (rx)
                        dump_console(rx);
                r = -EIO;
                goto out;
        }
        r = 0;
        last_exits = 0;
        for (struct vmq_vm *vm = tx; vm; vm = vm == tx ? rx : NULL) {
                struct vmq_vm_stats st;
                vmq_vm_get_stats(vm, &st);
                last_exits += st.exits + st.doorbells;
        }
        for (size_t i = 0; i < nkeys; i++) {
                if (benchdata(tx, keys[i], &values[i]) < 0) {
                        fprintf(stderr, "vmq-bench: '%s' printed no %s\n", args, keys[i]);
                        dump_console(tx);
                        r = -EIO;
                }
        }
out:
        if (r < 0 && r != -EIO)
                fprintf(stderr, "vmq-bench: '%s': %s\n", args, strerror(-r));
        vmq_vm_destroy(tx);
        vmq_vm_destroy(rx);
        return r;
}

/* ---- starts ---- */

#define RAW_MEM (4ull << 20)

/* One bare KVM VM, from KVM_CREATE_VM to its first port I/O exit; returns
 * the time in ns, or a negative errno.  Teardown is not timed. */
static double raw_kvm_boot_ns(int kvm_fd) {
        /* mov $0x507,%dx; in (%dx),%eax; jmp . */
        static const uint8_t code[] = {0x66, 0xba, 0x07, 0x05, 0xed, 0xeb, 0xfe};
        static const struct vmq_x86_map maps[] = {
                {.gpa = VMQ_VMCS_GPA,
                 .size = RAW_MEM - VMQ_VMCS_GPA,
                 .user = true,
                 .writable = true},
        };
        struct kvm_run *run = NULL;
        size_t run_size = 0;
        struct vmq_x86_boot boot;
        struct kvm_sregs sregs;
        struct kvm_regs regs;
        uint8_t *mem = MAP_FAILED;
        int vm_fd = -1, vcpu_fd = -1;
        double r = -EIO;

        uint64_t t0 = bench_now_ns();
        vm_fd = vmq_kvm_create_vm(kvm_fd);
        if (vm_fd < 0)
                return vm_fd;
        mem = mmap(NULL, RAW_MEM, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED)
                goto out;
        memcpy(mem + VMQ_IMAGE_GPA, code, sizeof(code));
        if (vmq_x86_build(mem + VMQ_SYSTEM_GPA, maps, 1, &boot) < 0 ||
            vmq_kvm_set_memslot(vm_fd, 0, 0, RAW_MEM, mem, 0) < 0)
                goto out;
        vcpu_fd = vmq_kvm_create_vcpu(kvm_fd, vm_fd, 0, &run, &run_size);
        if (vcpu_fd < 0 || ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0)
                goto out;
        vmq_x86_setup_sregs(&boot, &sregs);
        vmq_x86_setup_regs(VMQ_IMAGE_GPA, RAW_MEM, 0, VMQ_VMCS_GPA, &regs);
        if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0 || ioctl(vcpu_fd, KVM_SET_REGS, &regs) < 0)
                goto out;
        while (ioctl(vcpu_fd, KVM_RUN, 0) < 0)
                if (errno != EINTR && errno != EAGAIN)
                        goto out;
        if (run->exit_reason == KVM_EXIT_IO && run->io.port == VMQ_HC_PORT_BASE + VMQ_HC_NOP)
                r = (double)(bench_now_ns() - t0);
out:
        if (run)
                munmap(run, run_size);
        if (mem != MAP_FAILED)
                munmap(mem, RAW_MEM);
        vmq_close(vcpu_fd);
        vmq_close(vm_fd);
        return r;
}

/* One micro-VM of the boot image, created and started, to its exit (its
 * first hypercall); returns ns or a negative errno. */
static double core_boot_ns(const void *image, size_t size, int i) {
        struct vmq_vm_config c;
        struct vmq_vm *vm = NULL;
        char name[32];
        double r;

        snprintf(name, sizeof(name), "boot%d", i);
        vmq_vm_config_init(&c);
        c.name = name;
        uint64_t t0 = bench_now_ns();
        int e = vmq_vm_create(mon, &c, image, size, &vm);
        if (e == 0)
                e = vmq_vm_start(vm);
        if (e == 0)
                e = vmq_vm_wait(vm, 60000);
        r = e == VMQ_VM_EXITED ? (double)(bench_now_ns() - t0) : e < 0 ? e : -EIO;
        vmq_vm_destroy(vm);
        return r;
}

static int boot_figures(int starts) {
        struct bench_samples raw = {0}, core = {0};
        void *image = NULL;
        size_t size = 0;
        int kvm_fd, r;

        r = vmq_read_file(image_path("boot"), 1 << 24, &image, &size);
        if (r < 0) {
                fprintf(stderr, "vmq-bench: %s: %s\n", image_path("boot"), strerror(-r));
                return r;
        }
        kvm_fd = vmq_kvm_open();
        if (kvm_fd < 0) {
                free(image);
                return kvm_fd;
        }
        for (int i = 0; i < starts && r == 0; i++) {
                double a = raw_kvm_boot_ns(kvm_fd), b = core_boot_ns(image, size, i);
                if (a < 0 || b < 0) {
                        fprintf(stderr, "vmq-bench: start %d failed: raw %s, core %s\n", i,
                                a < 0 ? strerror((int)-a) : "ok", b < 0 ? strerror((int)-b) : "ok");
                        r = -EIO;
                        break;
                }
                bench_samples_add(&raw, a / 1000.0);
                bench_samples_add(&core, b / 1000.0);
                if ((i + 1) % 10 == 0)
                        fprintf(stderr,
                                "vmq-bench: boot: %d of %d starts (last: raw %.0f us, core %.0f "
                                "us)\n",
                                i + 1, starts, a / 1000.0, b / 1000.0);
        }
        if (r == 0) {
                bench_report("boot_us.raw_kvm", bench_median(&raw), "us");
                bench_report("boot_us.core", bench_median(&core), "us");
                bench_report("boot_p99_us.core", bench_p99(&core), "us");
        }
        bench_samples_free(&raw);
        bench_samples_free(&core);
        vmq_close(kvm_fd);
        free(image);
        return r;
}

/* ---- idle VMs ---- */

/* kB of /proc/meminfo's field, or -1. */
static long meminfo_kib(const char *field) {
        char line[256];
        long v = -1;
        size_t n = strlen(field);
        FILE *f = fopen("/proc/meminfo", "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, field, n) == 0 && line[n] == ':') {
                        v = strtol(line + n + 1, NULL, 10);
                        break;
                }
        fclose(f);
        return v;
}

static long used_kib(void) {
        long total = meminfo_kib("MemTotal"), avail = meminfo_kib("MemAvailable");
        return total < 0 || avail < 0 ? -1 : total - avail;
}

/* A "Name: value" field of /proc/self/status (kB fields in KiB). */
static long status_field(const char *field) {
        char line[256];
        long v = -1;
        size_t n = strlen(field);
        FILE *f = fopen("/proc/self/status", "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, field, n) == 0 && line[n] == ':')
                        v = strtol(line + n + 1, NULL, 10);
        fclose(f);
        return v;
}

static long threads_now(void) {
        return status_field("Threads");
}

static double cpu_seconds(void) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
               (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int idle_figures(int n, int seconds) {
        struct vmq_monitor_config mc;
        struct vmq_monitor *im = NULL;
        struct vmq_vm **vms = calloc((size_t)n, sizeof(*vms));
        struct rlimit rl;
        int r = 0, made = 0;

        if (!vms)
                return -ENOMEM;
        /* Three fds per VM (VM, vCPU, doorbell). */
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
                rl.rlim_cur = rl.rlim_max;
                (void)setrlimit(RLIMIT_NOFILE, &rl);
        }
        vmq_monitor_config_init(&mc);
        mc.pool_4k_frames = (size_t)n * 1024 + 4096; /* 4 MiB each */
        r = vmq_monitor_new(&mc, &im);
        if (r < 0)
                goto out;
        long used0 = used_kib(), shmem0 = meminfo_kib("Shmem"), threads0 = threads_now();
        long anon0 = status_field("RssAnon"), pt0 = status_field("VmPTE");
        for (; made < n; made++) {
                struct vmq_vm_config c;
                char name[32];
                snprintf(name, sizeof(name), "idle%d", made);
                vmq_vm_config_init(&c);
                c.name = name;
                c.ram_size = 4ull << 20;
                c.rx_size = 1ull << 20;
                if (made % 100 == 0)
                        fprintf(stderr, "vmq-bench: idle: %d of %d VMs started\n", made, n);
                r = vmq_vm_create_from_file(im, &c, image_path("echo"), &vms[made]);
                if (r == 0)
                        r = vmq_vm_start(vms[made]);
                if (r < 0) {
                        fprintf(stderr, "vmq-bench: idle VM %d: %s\n", made, strerror(-r));
                        made++;
                        goto out;
                }
        }
        sleep(2); /* every guest has printed its line and sleeps in WAIT */
        long used1 = used_kib(), shmem1 = meminfo_kib("Shmem"), threads1 = threads_now();
        long anon1 = status_field("RssAnon"), pt1 = status_field("VmPTE");
        double c0 = cpu_seconds(), t0 = (double)bench_now_ns();
        sleep((unsigned)seconds);
        double cpu = cpu_seconds() - c0, wall = ((double)bench_now_ns() - t0) / 1e9;
        for (int i = 0; i < n; i++)
                if (vmq_vm_state(vms[i]) != VMQ_VM_RUNNING) {
                        fprintf(stderr, "vmq-bench: idle VM %d is %s\n", i,
                                vmq_vm_state_to_string(vmq_vm_state(vms[i])));
                        r = -EIO;
                        goto out;
                }
        char name[64];
        snprintf(name, sizeof(name), "idle_cpu_pct.%dvm", n);
        bench_report(name, cpu / wall * 100.0, "%");
        if (used0 >= 0 && used1 >= 0 && shmem0 >= 0 && shmem1 >= 0)
                bench_report("idle_kib_per_vm",
                             (double)((used1 - used0) - (shmem1 - shmem0)) / (double)n, "KiB");
        /* Of that, what this process holds itself (its anonymous memory:
         * heap, thread stacks) and its page tables; the rest is the
         * kernel's, mostly KVM's per VM and per vCPU. */
        if (anon0 >= 0 && anon1 >= 0)
                bench_report("idle_kib_per_vm.anon", (double)(anon1 - anon0) / (double)n, "KiB");
        if (pt0 >= 0 && pt1 >= 0)
                bench_report("idle_kib_per_vm.page_tables", (double)(pt1 - pt0) / (double)n, "KiB");
        if (threads0 >= 0 && threads1 >= 0)
                bench_report("idle_threads_per_vm", (double)(threads1 - threads0) / (double)n,
                             "threads");
out:
        for (int i = 0; i < made; i++)
                vmq_vm_destroy(vms[i]);
        vmq_monitor_free(im);
        free(vms);
        return r;
}

struct tp {
        const char *method;
        const char *size_name;
        uint64_t size;
        double gbps;
};

int main(int argc, char **argv) {
        static const struct option opts[] = {
                {"quick", no_argument, NULL, 'q'},
                {"guest-dir", required_argument, NULL, 'g'},
                {"idle-vms", required_argument, NULL, 'i'},
                {"only", required_argument, NULL, 'o'},
                {"batch", required_argument, NULL, 'b'},
                {"help", no_argument, NULL, 'h'},
                {0},
        };
        int c, failures = 0;
        char args[256];

        if (getenv("VMQ_GUEST_DIR"))
                guest_dir = getenv("VMQ_GUEST_DIR");
        /* Line by line, also into a pipe or a file: a run cut short keeps
         * what it measured. */
        setvbuf(stdout, NULL, _IOLBF, 0);
        while ((c = getopt_long(argc, argv, "qg:i:o:b:h", opts, NULL)) != -1) {
                switch (c) {
                case 'q':
                        quick = true;
                        break;
                case 'g':
                        guest_dir = optarg;
                        break;
                case 'o':
                        only = optarg;
                        break;
                case 'b':
                        throughput_batch = atoi(optarg);
                        if (throughput_batch < 1 || throughput_batch > 64) {
                                fprintf(stderr, "vmq-bench: --batch takes 1 to 64\n");
                                return 2;
                        }
                        break;
                case 'i':
                        idle_vms = atoi(optarg);
                        skip_idle = idle_vms <= 0;
                        break;
                case 'h':
                        printf("Usage: vmq-bench [--quick] [--guest-dir DIR] [--idle-vms N] "
                               "[--only SECTION,...] [--batch N]\n"
                               "Sections: floors msgrate boot latency throughput idle.\n"
                               "Runs the vmq benchmarks and prints BENCH <name> <value> <unit>\n"
                               "lines and a table.  Needs /dev/kvm and root (for hugetlb "
                               "pages).\n");
                        return 0;
                default:
                        return 2;
                }
        }

        long have = vmq_test_reserve_hugepages(HUGE_FRAMES);
        struct vmq_monitor_config mc;
        vmq_monitor_config_init(&mc);
        if (have >= HUGE_FRAMES)
                mc.pool_2m_frames = HUGE_FRAMES;
        else
                fprintf(stderr, "vmq-bench: only %ld free hugetlb pages: flip2m is skipped\n",
                        have);
        int r = vmq_monitor_new(&mc, &mon);
        if (r < 0) {
                fprintf(stderr, "vmq-bench: cannot start the monitor: %s\n", strerror(-r));
                return 1;
        }
        bool huge = vmq_monitor_has_huge(mon);
        {
                struct vmq_transfer_plan plan;
                vmq_monitor_transfer_plan(mon, &plan);
                fprintf(stderr,
                        "vmq-bench: auto (%s) flips runs of 4 KiB pages from %u pages on "
                        "(0: never) and %s 2 MiB pages\n",
                        plan.measured ? "calibrated" : "not calibrated", plan.flip_min_4k,
                        plan.flip_2m ? "flips" : "copies");
        }

        /* Floors and baselines. */
        bool floors = want("floors");
        if (floors) {
                const char *keys[] = {"exit_roundtrip_ns", "exit_roundtrip_p99_ns"};
                double v[2];
                snprintf(args, sizeof(args), "test=exit iters=%d", quick ? 20000 : 100000);
                if (run(args, "", true, VMQ_TRANSFER_AUTO, false, keys, v, 2) == 0)
                        bench_report("exit_roundtrip_us", v[0] / 1000.0, "us");
                else
                        failures++;
        }
        if (floors) {
                double memcpy_gbps = bench_memcpy_gbps();
                if (memcpy_gbps > 0)
                        bench_report("memcpy_gbps", memcpy_gbps, "GB/s");
                else
                        failures++;
                double p50, p99;
                if (sysconf(_SC_NPROCESSORS_ONLN) >= 2 &&
                    bench_unix_socketpair_oneway_pinned_us(0, 1, &p50, &p99) == 0) {
                        bench_report("unix_socketpair_oneway_us", p50, "us");
                        bench_report("unix_socketpair_oneway_p99_us", p99, "us");
                } else {
                        failures++;
                }
                if (bench_unix_socketpair_oneway_us(&p50, &p99) == 0)
                        bench_report("unix_socketpair_oneway_us.same_cpu", p50, "us");
        }
        bool msgrate = want("msgrate");
        if (msgrate) {
                double mps;
                if (bench_unix_socketpair_msgrate_mps(quick ? 20000 : 200000, &mps) == 0)
                        bench_report("baseline.unix_socketpair_msgrate_mps", mps, "msg/s");
                else
                        failures++;
        }

        /* Message rate: a stream of 64-byte messages, with and without
         * exits, on rings sized for streams (a receiver that empties its
         * queue waits in the monitor: one exit per refill). */
        queue_depth = 1024;
        post_depth = 512;
        static const struct {
                const char *name, *tx_mode, *rx_args;
                int count;
        } modes[] = {
                {"exit", "exit", "", 50000},
                {"posted", "exitless", "", 500000},
                {"exitless", "link", "link=1", 2000000},
        };
        for (size_t i = 0; msgrate && i < sizeof(modes) / sizeof(modes[0]); i++) {
                const char *keys[] = {"msgrate_mps_p50", "msgrate_messages"};
                double v[2];
                char name[128];
                snprintf(args, sizeof(args), "test=msgrate mode=%s size=64 count=%d reps=5",
                         modes[i].tx_mode, quick ? modes[i].count / 25 : modes[i].count);
                if (run(args, modes[i].rx_args, false, VMQ_TRANSFER_AUTO, false, keys, v, 2) < 0) {
                        failures++;
                        continue;
                }
                snprintf(name, sizeof(name), "msgrate_mps.inline64.%s", modes[i].name);
                bench_report(name, v[0], "msg/s");
                snprintf(name, sizeof(name), "exits_per_msg.inline64.%s", modes[i].name);
                bench_report(name, v[1] > 0 ? (double)last_exits / v[1] : -1, "exits");
        }

        queue_depth = post_depth = 0;

        /* Starts. */
        if (want("boot") && boot_figures(quick ? 10 : 50) < 0)
                failures++;

        /* One-way latency. */
        static const struct {
                const char *name, *args, *rx_args;
        } paths[] = {
                {"inline.immediate", "path=inline post=0 size=64", ""},
                {"inline.deferred", "path=inline post=1 doorbell=0 size=64", ""},
                {"inline.posted", "path=inline post=1 size=64", "post=1"},
                {"inline.exitless", "path=link size=64", "link=1"},
                {"page_copy.immediate", "path=page_copy post=0 size=4096", ""},
                {"page_flip.immediate", "path=page_flip post=0 size=4096", ""},
        };
        bool latency = want("latency");
        for (size_t i = 0; latency && i < sizeof(paths) / sizeof(paths[0]); i++) {
                const char *keys[] = {"oneway_p50_ns", "oneway_p99_ns"};
                double v[2];
                char name[128];
                snprintf(args, sizeof(args), "test=latency %s iters=%d", paths[i].args,
                         quick ? 1000 : 5000);
                if (run(args, paths[i].rx_args, false, VMQ_TRANSFER_AUTO, false, keys, v, 2) < 0) {
                        failures++;
                        continue;
                }
                snprintf(name, sizeof(name), "oneway_p50_us.%s", paths[i].name);
                bench_report(name, v[0] / 1000.0, "us");
                snprintf(name, sizeof(name), "oneway_p99_us.%s", paths[i].name);
                bench_report(name, v[1] / 1000.0, "us");
        }

        /* Throughput.  The methods of one size are measured in interleaved
         * rounds, so that a slow spell of the machine hits all of them
         * alike; each figure is the median of the rounds' medians. */
        static const char *methods[] = {"copy", "flip4k", "flip2m", "auto"};
        static const struct {
                const char *name;
                uint64_t size;
        } sizes[] = {{"4k", 4096}, {"64k", 65536}, {"1m", MIB}, {"2m", 2 * MIB}, {"16m", 16 * MIB}};
        const int rounds = quick ? 1 : 4;
        struct tp results[4][5];
        bool tput = want("throughput");
        for (size_t mi = 0; mi < 4; mi++)
                for (size_t si = 0; si < 5; si++)
                        results[mi][si].gbps = -1;
        for (size_t si = 0; tput && si < 5; si++) {
                struct bench_samples rs[4];
                memset(rs, 0, sizeof(rs));
                for (int round = 0; round < rounds; round++) {
                        for (size_t k = 0; k < 4; k++) {
                                /* each round starts with another method, so
                                 * that no method always follows the same one */
                                size_t mi = (k + (size_t)round) % 4;
                                const char *keys[] = {"throughput_gbps_p50"};
                                double gbps;
                                /* large messages move fast: more of them
                                 * per rep keeps a rep long against noise */
                                uint64_t total = sizes[si].size >= MIB ? 64 * MIB : 16 * MIB;
                                if (quick) /* under emulation: a quarter */
                                        total = VMQ_MAX(total / 4, sizes[si].size);
                                if (strcmp(methods[mi], "flip2m") == 0 && !huge)
                                        continue;
                                snprintf(args, sizeof(args),
                                         "test=throughput method=%s size=%llu total=%llu reps=%d "
                                         "batch=%d",
                                         methods[mi], (unsigned long long)sizes[si].size,
                                         (unsigned long long)total, quick ? 3 : 5,
                                         throughput_batch);
                                if (run(args, "", false, VMQ_TRANSFER_AUTO, huge, keys, &gbps, 1) <
                                    0) {
                                        failures++;
                                        continue;
                                }
                                bench_samples_add(&rs[mi], gbps);
                        }
                }
                for (size_t mi = 0; mi < 4; mi++) {
                        struct tp *t = &results[mi][si];
                        char name[128];
                        t->method = methods[mi];
                        t->size_name = sizes[si].name;
                        t->size = sizes[si].size;
                        t->gbps = rs[mi].n ? bench_median(&rs[mi]) : -1;
                        bench_samples_free(&rs[mi]);
                        if (t->gbps < 0)
                                continue;
                        snprintf(name, sizeof(name), "throughput_gbps.%s.%s", methods[mi],
                                 sizes[si].name);
                        bench_report(name, t->gbps, "GB/s");
                }
        }

        /* Idle VMs, last: they take a while to set up. */
        if (!skip_idle && want("idle") && idle_figures(quick ? 100 : idle_vms, quick ? 2 : 10) < 0)
                failures++;

        bench_print_table();

        /* What the figures say against each other (informational). */
        printf("\nratios (same run):\n");
        for (size_t si = 0; si < 5; si++) {
                double best = 0, autov = results[3][si].gbps;
                const char *best_name = "-";
                for (size_t mi = 0; mi < 3; mi++)
                        if (results[mi][si].gbps > best) {
                                best = results[mi][si].gbps;
                                best_name = methods[mi];
                        }
                if (best > 0 && autov > 0)
                        printf("  %-4s auto / best (%s) = %.2f\n", sizes[si].name, best_name,
                               autov / best);
        }
        if (results[2][3].gbps > 0 && results[0][3].gbps > 0)
                printf("  2m   flip2m / copy = %.2f\n", results[2][3].gbps / results[0][3].gbps);
        vmq_monitor_free(mon);
        if (failures)
                fprintf(stderr, "vmq-bench: %d measurements failed\n", failures);
        return failures ? 1 : 0;
}
