/*
 * The VM: /dev/kvm, guest memory and its memslots, the in-kernel irqchip and
 * PIT, the buses, the legacy devices and the vCPU threads. vm_run() builds it
 * from a vm_config, runs it until something ends it, and tears it down.
 */
#ifndef RINGVM_CORE_VM_H
#define RINGVM_CORE_VM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/bus.h"
#include "core/guest_mem.h"
#include "core/pci.h"

/*
 * Process exit statuses, documented in `ringvm run --help` and the README.
 * A second SIGINT/SIGTERM/SIGHUP forces an immediate exit with 128 + signal.
 */
enum vm_exit {
	VM_EXIT_OK = 0,          /* guest reset or shut down, or a stop request */
	VM_EXIT_ERROR = 1,       /* VMM or KVM error (incl. KVM emulation failure) */
	VM_EXIT_USAGE = 2,       /* bad arguments or unusable kernel/initrd */
	VM_EXIT_GUEST_CRASH = 3, /* guest triple fault or crash event */
	VM_EXIT_DEVICE = 4,      /* a device process died or misbehaved */
};

enum serial_mode { SERIAL_STDOUT, SERIAL_FILE, SERIAL_NONE };

#define VM_MAX_DEVICES 16

struct registry_entry;

/* One device-process device asked for on the command line (or on by default). */
struct vm_device_spec {
	const struct registry_entry *entry;
	const char *opts; /* the option's argument, "" for a flag */
};

struct vm_config {
	const char *kernel;
	const char *initrd;
	char *cmdline;     /* owned; joined -p values */
	uint64_t mem_mib;  /* default 256 */
	unsigned ncpus;    /* default 1 */
	enum serial_mode serial;
	const char *serial_path;
	bool no_i8042, no_rtc;
	struct vm_device_spec devs[VM_MAX_DEVICES];
	unsigned ndevs;
	unsigned long disabled_defaults; /* bit i: --no-<registry_at(i)->option> */
	bool disable_sandbox;            /* --disable-sandbox: device processes run unjailed */
	bool seccomp_log;                /* --seccomp-log: log seccomp violations, don't kill */
	const char *metrics_file;        /* --metrics-file: device metrics as JSON at shutdown */
	const char *socket_path;         /* --socket: control socket file or directory */
	/* --config: what the file's values point into (owned; cli_config_free). */
	void *config_json;
	char **config_strs;
	unsigned n_config_strs;
};

struct vcpu;
struct serial;
struct i8042;
struct rtc;
struct port80;
struct devmgr;
struct control;

/* Start-up phases, in order, as RINGVM_STARTUP_REPORT prints them. */
enum {
	VM_PHASE_KVM,     /* /dev/kvm opened, VM created */
	VM_PHASE_RAM,     /* guest RAM created and registered; irqchip and PIT */
	VM_PHASE_KERNEL,  /* kernel loaded, buses, legacy devices, GSI routes */
	VM_PHASE_SPAWN,   /* device processes forked, HELLOs posted */
	VM_PHASE_VCPUS,   /* vCPUs created */
	VM_PHASE_DEVICES, /* every device answered HELLO */
	VM_PHASES
};

struct vm {
	const struct vm_config *cfg;
	int kvm_fd, vm_fd;
	int run_size; /* KVM_GET_VCPU_MMAP_SIZE */
	struct kvm_cpuid2 *cpuid; /* KVM_GET_SUPPORTED_CPUID, shared template */
	struct guest_mem mem;
	struct bus pio, mmio;
	struct pci_root pci;
	struct serial *serial;
	struct i8042 *i8042;
	struct rtc *rtc;
	struct port80 *port80;
	int serial_out_fd; /* owned when serial=file */
	struct devmgr *devmgr; /* device processes and their proxies */
	unsigned ncpus;
	struct vcpu *vcpus;
	int stop_fd;                /* eventfd: written once when the VM must stop */
	atomic_bool stopping;
	atomic_int exit_code;       /* first vm_request_stop() wins */
	uint64_t start_ns;          /* CLOCK_MONOTONIC at vm_run() entry */
	struct control *control;    /* --socket server, or NULL */
	/*
	 * Pause: vCPUs that see pause_requested at the top of their loop park
	 * in vm_pause_point() on pause_cond until it is cleared or the VM
	 * stops; paused_vcpus counts the parked ones (under pause_lock).
	 */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_cond;
	atomic_bool pause_requested;
	unsigned paused_vcpus;
	atomic_ullong first_run_ns; /* monotonic time of the first KVM_RUN, for benchmarks */
	uint64_t phase_ns[VM_PHASES]; /* when each start-up phase ended (RINGVM_STARTUP_REPORT) */
	uint64_t cpuid_ns[2];         /* the start-up helper's KVM_GET_SUPPORTED_CPUID: start, end */
};

/*
 * Ask the VM to stop with code and a reason (logged unless NULL). The first
 * call decides the exit code. Async-signal-unsafe: call from threads only.
 */
void vm_request_stop(struct vm *vm, int code, const char *reason);

/*
 * Pause every vCPU: kick them out of KVM_RUN and wait (up to timeout_ms)
 * until all are parked. Idempotent. 0, -ETIMEDOUT (the request stays: they
 * park as they come out), or -ESHUTDOWN when the VM is stopping.
 */
int vm_pause(struct vm *vm, int timeout_ms);

/* Release paused vCPUs. Idempotent. 0, or -ESHUTDOWN when the VM is stopping. */
int vm_resume(struct vm *vm);

/* Called by a vCPU thread that saw pause_requested: park until resumed or stopping. */
void vm_pause_point(struct vm *vm);

/* Build, run and tear down the VM. Returns a vm_exit status. */
int vm_run(const struct vm_config *cfg);

#endif
