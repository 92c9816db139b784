/*
 * VM assembly and lifetime: KVM, RAM, kernel, legacy devices, vCPUs; then the
 * main thread waits for a stop request (guest reset, error, signal) and tears
 * everything down in reverse order. Exit codes are enum vm_exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "arch/x86_64/boot.h"
#include "arch/x86_64/layout.h"
#include "core/control.h"
#include "core/control_vm.h"
#include "core/devmgr.h"
#include "core/kvm.h"
#include "core/log.h"
#include "core/vcpu.h"
#include "core/vm.h"
#include "core/vm_legacy.h"

/*
 * What the signal handler may touch (async-signal-safe only): the first
 * SIGINT/SIGTERM/SIGHUP asks for an orderly stop through stop_fd; a second
 * one kills the device processes, removes the control socket and exits.
 */
static int stop_fd_for_signals = -1;
static atomic_int signals_seen;
static volatile sig_atomic_t first_signal;
static int force_kill_pidfds[VM_MAX_DEVICES];
static atomic_uint n_force_kill_pidfds;
static char force_unlink_path[108];

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void vm_request_stop(struct vm *vm, int code, const char *reason)
{
	bool was = atomic_exchange(&vm->stopping, true);
	if (!was) {
		atomic_store(&vm->exit_code, code);
		if (reason)
			log_msg(code == VM_EXIT_OK ? LOG_INFO : LOG_ERROR, "%s", reason);
	}
	uint64_t one = 1;
	ssize_t w = write(vm->stop_fd, &one, sizeof(one));
	(void)w; /* the counter cannot overflow with one write per stop path */
}

static void on_signal(int sig)
{
	int saved = errno;
	if (atomic_fetch_add(&signals_seen, 1) == 0) {
		first_signal = sig;
		uint64_t one = 1;
		ssize_t w = write(stop_fd_for_signals, &one, sizeof(one));
		(void)w;
		errno = saved;
		return;
	}
	/* Forced: no orderly teardown, but nothing left behind either. */
	unsigned n = atomic_load(&n_force_kill_pidfds);
	for (unsigned i = 0; i < n && i < VM_MAX_DEVICES; i++)
		if (force_kill_pidfds[i] >= 0) /* a pidfd: never another process, even once reaped */
			syscall(SYS_pidfd_send_signal, force_kill_pidfds[i], SIGKILL, NULL, 0);
	if (force_unlink_path[0])
		unlink(force_unlink_path);
	static const char msg[] = "ringvm: second signal: forced exit, device processes killed\n";
	ssize_t w = write(STDERR_FILENO, msg, sizeof(msg) - 1);
	(void)w;
	_exit(128 + sig);
}

/* Let a forced exit (second signal) kill the device processes. One made by
 * the jail's fork fallback has no pidfd (info.pidfd -1) and is not killed
 * by pid here (it may have been reaped and its pid reused): its parent-death
 * signal, armed on the thread that spawned it, kills it when we _exit. */
static void arm_forced_exit(struct vm *vm)
{
	unsigned n = 0;
	struct devmgr_info info;
	for (unsigned i = 0; i < VM_MAX_DEVICES && devmgr_info(vm, i, &info) == 0; i++)
		force_kill_pidfds[n++] = info.pidfd;
	atomic_store(&n_force_kill_pidfds, n);
	if (vm->control)
		snprintf(force_unlink_path, sizeof(force_unlink_path), "%s",
			 control_path(vm->control));
}

/* Before the pidfds are closed (devmgr_destroy) and the socket removed (control_destroy). */
static void disarm_forced_exit(void)
{
	atomic_store(&n_force_kill_pidfds, 0);
	force_unlink_path[0] = 0;
}

int vm_pause(struct vm *vm, int timeout_ms)
{
	unsigned want = 0;
	for (unsigned i = 0; i < vm->ncpus; i++)
		want += vm->vcpus && vm->vcpus[i].started;
	pthread_mutex_lock(&vm->pause_lock);
	if (atomic_load(&vm->stopping)) {
		pthread_mutex_unlock(&vm->pause_lock);
		return -ESHUTDOWN;
	}
	atomic_store(&vm->pause_requested, true);
	pthread_mutex_unlock(&vm->pause_lock);
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	struct timespec dl;
	clock_gettime(CLOCK_MONOTONIC, &dl);
	dl.tv_sec += timeout_ms / 1000;
	dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (dl.tv_nsec >= 1000000000L) {
		dl.tv_sec++;
		dl.tv_nsec -= 1000000000L;
	}
	int r = 0;
	pthread_mutex_lock(&vm->pause_lock);
	while (vm->paused_vcpus < want && !atomic_load(&vm->stopping) && r == 0)
		r = pthread_cond_timedwait(&vm->pause_cond, &vm->pause_lock, &dl);
	if (atomic_load(&vm->stopping))
		r = ESHUTDOWN;
	pthread_mutex_unlock(&vm->pause_lock);
	return -r;
}

int vm_resume(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	atomic_store(&vm->pause_requested, false);
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
	return atomic_load(&vm->stopping) ? -ESHUTDOWN : 0;
}

void vm_pause_point(struct vm *vm)
{
	pthread_mutex_lock(&vm->pause_lock);
	vm->paused_vcpus++;
	pthread_cond_broadcast(&vm->pause_cond);
	while (atomic_load(&vm->pause_requested) && !atomic_load(&vm->stopping))
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	vm->paused_vcpus--;
	pthread_mutex_unlock(&vm->pause_lock);
}

static int install_signals(struct vm *vm)
{
	stop_fd_for_signals = vm->stop_fd;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0 ||
	    sigaction(SIGHUP, &sa, NULL) < 0)
		return -errno;
	/* A closed stdout must not kill the VMM mid-write; errors are handled instead. */
	signal(SIGPIPE, SIG_IGN);
	return vcpu_signal_init();
}

static int load_kernel(struct vm *vm, struct x86_boot_info *info)
{
	char err[256] = "";
	struct x86_boot_config bc = {
		.kernel_path = vm->cfg->kernel,
		.initrd_path = vm->cfg->initrd,
		.cmdline = vm->cfg->cmdline ? vm->cfg->cmdline : "",
		.ncpus = vm->ncpus,
		.mem_is_zero = true, /* guest_mem_create made a fresh memfd */
	};
	int r = x86_load(&vm->mem, &bc, info, err, sizeof(err));
	if (r < 0)
		log_error("%s", err[0] ? err : strerror(-r));
	else
		log_info("loaded %s kernel %s, entry 0x%llx", info->format, vm->cfg->kernel,
			 (unsigned long long)info->entry);
	return r;
}

static void stop_vcpus(struct vm *vm)
{
	atomic_store(&vm->stopping, true);
	/* Paused vCPUs wait on the condition variable, not in KVM_RUN. */
	pthread_mutex_lock(&vm->pause_lock);
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	for (unsigned i = 0; i < vm->ncpus; i++)
		vcpu_destroy(&vm->vcpus[i]);
}

/* Wait until a stop request or a signal; a signal stops the VM with status 0 (as `stop`). */
static void wait_for_stop(struct vm *vm)
{
	for (;;) {
		uint64_t v;
		ssize_t n = read(vm->stop_fd, &v, sizeof(v));
		if (n == sizeof(v))
			break;
		if (n < 0 && errno != EINTR)
			break;
	}
	if (!atomic_load(&vm->stopping)) {
		/* Only the signal handler writes stop_fd without a request. */
		char why[96];
		const char *name = sigabbrev_np(first_signal);
		snprintf(why, sizeof(why), "stopping on SIG%s (send it again to force)",
			 name ? name : "?");
		vm_request_stop(vm, VM_EXIT_OK, why);
	}
}

static int check_cpus(struct vm *vm)
{
	int max = kvm_max_vcpus(vm->kvm_fd);
	if ((int)vm->ncpus > max) {
		log_error("--cpus %u: KVM allows at most %d vCPUs", vm->ncpus, max);
		return -EINVAL;
	}
	return 0;
}

/*
 * KVM_GET_SUPPORTED_CPUID costs half a millisecond of kernel time that
 * nothing needs before the vCPUs are created, so it runs on a helper thread
 * while the VM, its memory and the devices are set up. The device processes
 * are forked without exec, which is only safe while no other thread can
 * hold a libc lock: a helper does nothing but its ioctl (no allocation, no
 * logging) and then parks in read() until bg_end(), so it never allocates
 * or exits while a fork may happen.
 */
struct bg_job {
	int (*fn)(void *arg);
	void *arg;
	pthread_t thread;
	bool started;
	int release_fd;
	int result;
	uint64_t t0, t1; /* when fn started and returned (RINGVM_STARTUP_REPORT) */
};

static void *bg_worker(void *arg)
{
	struct bg_job *j = arg;
	j->t0 = now_ns();
	j->result = j->fn(j->arg);
	j->t1 = now_ns();
	uint64_t v;
	while (read(j->release_fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
	return NULL;
}

static void bg_begin(struct bg_job *j, int (*fn)(void *), void *arg)
{
	j->fn = fn;
	j->arg = arg;
	j->release_fd = eventfd(0, EFD_CLOEXEC);
	j->started = j->release_fd >= 0 &&
		     pthread_create(&j->thread, NULL, bg_worker, j) == 0;
	if (!j->started) {
		j->t0 = now_ns();
		j->result = fn(arg);
		j->t1 = now_ns();
	}
}

/* Idempotent; fine on a job that never began (release_fd -1). */
static int bg_end(struct bg_job *j)
{
	if (j->started) {
		uint64_t one = 1;
		ssize_t w = write(j->release_fd, &one, sizeof(one));
		(void)w;
		pthread_join(j->thread, NULL);
		j->started = false;
	}
	if (j->release_fd >= 0)
		close(j->release_fd);
	j->release_fd = -1;
	return j->result;
}

/* RINGVM_STARTUP_REPORT: where start-up time goes, for bench/boot.sh. */
static void mark(struct vm *vm, unsigned phase)
{
	if (phase < VM_PHASES)
		vm->phase_ns[phase] = now_ns();
}

static void startup_report(struct vm *vm)
{
	static const char *const names[VM_PHASES] = {"kvm", "memory", "kernel", "spawn",
						     "vcpus", "devices"};
	fprintf(stderr, "ringvm: startup_ns=%llu first_run_monotonic_ns=%llu phases_us=",
		(unsigned long long)(vm->first_run_ns - vm->start_ns),
		(unsigned long long)vm->first_run_ns);
	uint64_t prev = vm->start_ns;
	for (unsigned i = 0; i < VM_PHASES; i++) {
		uint64_t t = vm->phase_ns[i] ? vm->phase_ns[i] : prev;
		fprintf(stderr, "%s%s:%llu", i ? "," : "", names[i],
			(unsigned long long)(t - prev) / 1000);
		prev = t;
	}
	/* The helper thread: when it started and finished, from vm_run entry. */
	fprintf(stderr, " cpuid_us=%llu-%llu",
		(unsigned long long)(vm->cpuid_ns[0] - vm->start_ns) / 1000,
		(unsigned long long)(vm->cpuid_ns[1] - vm->start_ns) / 1000);
	fputc('\n', stderr);
}

int vm_run(const struct vm_config *cfg)
{
	struct vm *vm = calloc(1, sizeof(*vm));
	struct x86_boot_info info;
	struct bg_job cpuid = {.release_fd = -1};
	int code = VM_EXIT_ERROR;
	if (!vm) {
		log_error("out of memory");
		return VM_EXIT_ERROR;
	}
	vm->cfg = cfg;
	vm->start_ns = now_ns();
	vm->kvm_fd = vm->vm_fd = -1;
	vm->serial_out_fd = -1;
	vm->ncpus = cfg->ncpus;
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* vm_pause's deadline */
	pthread_cond_init(&vm->pause_cond, &ca);
	pthread_condattr_destroy(&ca);
	vm->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (vm->stop_fd < 0) {
		log_error("eventfd: %s", strerror(errno));
		goto out_free;
	}
	if (install_signals(vm) < 0) {
		log_error("cannot install signal handlers: %s", strerror(errno));
		goto out_stopfd;
	}
	/* Before the VM exists: an unusable --socket is a usage error, found at once. */
	if (control_vm_create(vm) < 0) {
		code = VM_EXIT_USAGE;
		goto out_stopfd;
	}
	if (kvm_open(vm) < 0)
		goto out_kvm;
	bg_begin(&cpuid, kvm_get_cpuid, vm);
	if (kvm_create_vm(vm) < 0)
		goto out_kvm;
	if (check_cpus(vm) < 0) {
		code = VM_EXIT_USAGE;
		goto out_kvm;
	}
	mark(vm, VM_PHASE_KVM);
	int r = guest_mem_create(&vm->mem, cfg->mem_mib << 20);
	if (r < 0) {
		log_error("cannot create %llu MiB of guest RAM: %s",
			  (unsigned long long)cfg->mem_mib, strerror(-r));
		goto out_kvm;
	}
	/* Memslot before irqchip and PIT: see kvm_create_irqchip. */
	if (kvm_set_memory(vm) < 0 || kvm_create_irqchip(vm) < 0)
		goto out_mem;
	mark(vm, VM_PHASE_RAM);
	if (load_kernel(vm, &info) < 0) {
		code = VM_EXIT_USAGE;
		goto out_mem;
	}
	if (bus_init(&vm->pio, "pio") < 0 || bus_init(&vm->mmio, "mmio") < 0 ||
	    pci_root_init(&vm->pci) < 0 || pci_root_attach(&vm->pci, &vm->pio) < 0) {
		log_error("cannot set up the buses");
		goto out_bus;
	}
	if (vm_legacy_create(vm) < 0)
		goto out_legacy;
	if (devmgr_create(vm) < 0)
		goto out_legacy;
	mark(vm, VM_PHASE_KERNEL);
	/* Fork the device processes now, while no thread can hold a libc lock. */
	if (devmgr_spawn(vm) < 0)
		goto out_legacy;
	arm_forced_exit(vm);
	mark(vm, VM_PHASE_SPAWN);
	vm->vcpus = calloc(vm->ncpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		goto out_legacy;
	for (unsigned i = 0; i < vm->ncpus; i++)
		vm->vcpus[i].fd = -1;
	r = bg_end(&cpuid);
	if (r < 0) {
		log_error("KVM_GET_SUPPORTED_CPUID: %s", strerror(-r));
		goto out_vcpus;
	}
	vm->cpuid_ns[0] = cpuid.t0;
	vm->cpuid_ns[1] = cpuid.t1;
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (vcpu_create(vm, i, &info, &vm->vcpus[i]) < 0)
			goto out_vcpus;
	mark(vm, VM_PHASE_VCPUS);
	if (devmgr_connect(vm) < 0)
		goto out_vcpus;
	mark(vm, VM_PHASE_DEVICES);
	if (devmgr_start(vm) < 0 || vm_legacy_start(vm) < 0)
		goto out_vcpus;
	for (unsigned i = 0; i < vm->ncpus; i++)
		if (vcpu_start(&vm->vcpus[i]) < 0) {
			vm_request_stop(vm, VM_EXIT_ERROR, NULL);
			break;
		}
	if (vm->control && control_vm_start(vm) < 0)
		vm_request_stop(vm, VM_EXIT_ERROR, "cannot start the control thread");
	log_info("VM started: %u vCPU(s), %llu MiB, start-up %.2f ms", vm->ncpus,
		 (unsigned long long)cfg->mem_mib, (double)(now_ns() - vm->start_ns) / 1e6);
	wait_for_stop(vm);
	code = atomic_load(&vm->exit_code);
	stop_vcpus(vm);
	devmgr_stop(vm);
	vm_legacy_stop(vm);
	if (getenv("RINGVM_STARTUP_REPORT") && vm->first_run_ns)
		startup_report(vm); /* for bench/boot.sh: the VMM's own part */
	goto out_legacy;
out_vcpus:
	stop_vcpus(vm);
	devmgr_stop(vm);
	vm_legacy_stop(vm);
out_legacy:
	disarm_forced_exit();
	/* The control thread reads device state: it goes before the devices are freed. */
	control_destroy(vm->control);
	vm->control = NULL;
	free(vm->vcpus);
	vm->vcpus = NULL;
	devmgr_destroy(vm);
	vm_legacy_destroy(vm);
out_bus:
	pci_root_destroy(&vm->pci);
	bus_destroy(&vm->mmio);
	bus_destroy(&vm->pio);
out_mem:
	guest_mem_destroy(&vm->mem);
out_kvm:
	(void)bg_end(&cpuid); /* before kvm_close frees vm->cpuid */
	kvm_close(vm);
out_stopfd:
	disarm_forced_exit();
	control_destroy(vm->control);
	close(vm->stop_fd);
out_free:
	pthread_cond_destroy(&vm->pause_cond);
	pthread_mutex_destroy(&vm->pause_lock);
	free(vm);
	return code;
}
