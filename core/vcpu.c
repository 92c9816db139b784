/*
 * The vCPU run loop. Exits that reach userspace are the slow path on this host
 * (≈8 µs each, host.md), so the loop does nothing per exit but the bus lookup.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "arch/x86_64/boot.h"
#include "core/log.h"
#include "core/vcpu.h"

#define SIG_VCPU_KICK (SIGRTMIN + 0)
#define MAX_BOOT_MSRS 32

static void kick_handler(int sig)
{
	(void)sig; /* only there to make KVM_RUN return EINTR */
}

int vcpu_signal_init(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: the interrupted KVM_RUN must return to the loop. */
	if (sigaction(SIG_VCPU_KICK, &sa, NULL) < 0)
		return -errno;
	return 0;
}

static int vcpu_ioctl(struct vcpu *v, unsigned long req, void *arg, const char *what)
{
	if (ioctl(v->fd, req, arg) < 0) {
		int r = -errno;
		log_error("vcpu%u: %s: %s", v->id, what, strerror(errno));
		return r;
	}
	return 0;
}

/* Room for the topology subleaves KVM's supported list may lack (x86_cpuid_add_topology). */
#define CPUID_SPARE_ENTRIES 6

static int setup_cpuid(struct vcpu *v)
{
	const struct kvm_cpuid2 *tmpl = v->vm->cpuid;
	size_t sz = sizeof(*tmpl) + tmpl->nent * sizeof(tmpl->entries[0]);
	struct kvm_cpuid2 *c = malloc(sz + CPUID_SPARE_ENTRIES * sizeof(tmpl->entries[0]));
	if (!c)
		return -ENOMEM;
	memcpy(c, tmpl, sz);
	int r = x86_cpuid_add_topology(c, tmpl->nent + CPUID_SPARE_ENTRIES);
	if (r < 0) {
		log_error("vcpu%u: cannot add CPUID topology leaves: %s", v->id, strerror(-r));
		free(c);
		return r;
	}
	x86_cpuid_setup(c, v->id, v->vm->ncpus);
	r = vcpu_ioctl(v, KVM_SET_CPUID2, c, "KVM_SET_CPUID2");
	free(c);
	return r;
}

static int setup_msrs_fpu_lapic(struct vcpu *v)
{
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e[MAX_BOOT_MSRS];
	} msrs;
	memset(&msrs, 0, sizeof(msrs));
	msrs.hdr.nmsrs = x86_boot_msrs(msrs.e, MAX_BOOT_MSRS);
	int n = ioctl(v->fd, KVM_SET_MSRS, &msrs);
	if (n < 0 || (unsigned)n != msrs.hdr.nmsrs) {
		/* KVM returns how many it set; report the first it refused. */
		log_error("vcpu%u: KVM_SET_MSRS set %d of %u (MSR 0x%x refused)", v->id, n,
			  msrs.hdr.nmsrs, n >= 0 ? msrs.e[n].index : 0);
		return n < 0 ? -errno : -EINVAL;
	}
	struct kvm_fpu fpu;
	memset(&fpu, 0, sizeof(fpu));
	x86_boot_fpu(&fpu);
	int r = vcpu_ioctl(v, KVM_SET_FPU, &fpu, "KVM_SET_FPU");
	if (r < 0)
		return r;
	struct kvm_lapic_state lapic;
	r = vcpu_ioctl(v, KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC");
	if (r < 0)
		return r;
	x86_lapic_setup(&lapic);
	return vcpu_ioctl(v, KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
}

static int setup_boot_regs(struct vcpu *v, const struct x86_boot_info *info)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	int r = vcpu_ioctl(v, KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
	if (r < 0)
		return r;
	memset(&regs, 0, sizeof(regs));
	r = x86_bsp_regs(&v->vm->mem, info, &regs, &sregs);
	if (r < 0) {
		log_error("vcpu%u: cannot build boot register state: %s", v->id, strerror(-r));
		return r;
	}
	r = vcpu_ioctl(v, KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
	if (r < 0)
		return r;
	return vcpu_ioctl(v, KVM_SET_REGS, &regs, "KVM_SET_REGS");
}

int vcpu_create(struct vm *vm, unsigned id, const struct x86_boot_info *info, struct vcpu *v)
{
	memset(v, 0, sizeof(*v));
	v->vm = vm;
	v->id = id;
	v->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)id);
	if (v->fd < 0) {
		int r = -errno;
		log_error("KVM_CREATE_VCPU %u: %s", id, strerror(errno));
		return r;
	}
	void *p = mmap(NULL, (size_t)vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
	if (p == MAP_FAILED) {
		int r = -errno;
		log_error("vcpu%u: mmap kvm_run: %s", id, strerror(errno));
		return r;
	}
	v->run = p;
	int r = setup_cpuid(v);
	if (r == 0)
		r = setup_msrs_fpu_lapic(v);
	if (r == 0 && id == 0)
		r = setup_boot_regs(v, info);
	return r;
}

static void report_regs(struct vcpu *v)
{
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0 || ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0)
		return;
	log_error("vcpu%u: rip=0x%llx rsp=0x%llx rflags=0x%llx cr0=0x%llx cr3=0x%llx cr4=0x%llx "
		  "efer=0x%llx",
		  v->id, (unsigned long long)regs.rip, (unsigned long long)regs.rsp,
		  (unsigned long long)regs.rflags, (unsigned long long)sregs.cr0,
		  (unsigned long long)sregs.cr3, (unsigned long long)sregs.cr4,
		  (unsigned long long)sregs.efer);
}

static void handle_io(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	/* count > 1 for rep ins/outs: each element is one access of io.size bytes. */
	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
		if (run->io.direction == KVM_EXIT_IO_OUT)
			bus_write(&v->vm->pio, run->io.port, data, run->io.size);
		else
			bus_read(&v->vm->pio, run->io.port, data, run->io.size);
	}
}

static void handle_mmio(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	unsigned len = run->mmio.len > 8 ? 8 : run->mmio.len;
	if (run->mmio.is_write)
		bus_write(&v->vm->mmio, run->mmio.phys_addr, run->mmio.data, len);
	else
		bus_read(&v->vm->mmio, run->mmio.phys_addr, run->mmio.data, len);
}

/* Returns 1 to keep running, 0 when the VM was asked to stop. */
static int handle_exit(struct vcpu *v)
{
	struct kvm_run *run = v->run;
	char msg[160];
	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_io(v);
		return 1;
	case KVM_EXIT_MMIO:
		handle_mmio(v);
		return 1;
	case KVM_EXIT_INTR:
		return 1;
	case KVM_EXIT_SHUTDOWN:
		snprintf(msg, sizeof(msg), "guest triple fault on vcpu%u (KVM_EXIT_SHUTDOWN)", v->id);
		vm_request_stop(v->vm, VM_EXIT_GUEST_CRASH, msg);
		report_regs(v);
		return 0;
	case KVM_EXIT_SYSTEM_EVENT:
		if (run->system_event.type == KVM_SYSTEM_EVENT_CRASH) {
			snprintf(msg, sizeof(msg), "guest reported a crash on vcpu%u", v->id);
			vm_request_stop(v->vm, VM_EXIT_GUEST_CRASH, msg);
		} else {
			vm_request_stop(v->vm, VM_EXIT_OK, NULL);
		}
		return 0;
	case KVM_EXIT_HLT:
		/* Only without an in-kernel LAPIC; treat a halted boot CPU as power-off. */
		vm_request_stop(v->vm, VM_EXIT_OK, NULL);
		return 0;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(msg, sizeof(msg), "vcpu%u: KVM entry failed, hardware reason 0x%llx", v->id,
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		vm_request_stop(v->vm, VM_EXIT_ERROR, msg);
		report_regs(v);
		return 0;
	case KVM_EXIT_INTERNAL_ERROR:
		snprintf(msg, sizeof(msg), "vcpu%u: KVM internal error, suberror %u%s", v->id,
			 run->internal.suberror,
			 run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
				 ? " (instruction emulation failed)"
				 : "");
		vm_request_stop(v->vm, VM_EXIT_ERROR, msg);
		report_regs(v);
		return 0;
	default:
		snprintf(msg, sizeof(msg), "vcpu%u: unexpected KVM exit reason %u", v->id,
			 run->exit_reason);
		vm_request_stop(v->vm, VM_EXIT_ERROR, msg);
		report_regs(v);
		return 0;
	}
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct vm *vm = v->vm;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIG_VCPU_KICK);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	if (v->id == 0) {
		unsigned long long zero = 0;
		atomic_compare_exchange_strong(&vm->first_run_ns, &zero, now_ns());
	}
	while (!atomic_load(&vm->stopping)) {
		/* Checked after every exit: a pause kick leaves KVM_RUN with EINTR. */
		if (atomic_load(&vm->pause_requested))
			vm_pause_point(vm);
		if (ioctl(v->fd, KVM_RUN, 0) < 0) {
			/* EINTR: kicked or a stray signal; EAGAIN: an AP just got its SIPI. */
			if (errno == EINTR || errno == EAGAIN) {
				v->run->immediate_exit = atomic_load(&vm->stopping);
				continue;
			}
			char msg[96];
			snprintf(msg, sizeof(msg), "vcpu%u: KVM_RUN: %s", v->id, strerror(errno));
			vm_request_stop(vm, VM_EXIT_ERROR, msg);
			break;
		}
		if (!handle_exit(v))
			break;
	}
	return NULL;
}

int vcpu_start(struct vcpu *v)
{
	/* Block the kick signal while creating so only the vCPU thread unblocks it. */
	int r = pthread_create(&v->thread, NULL, vcpu_thread, v);
	if (r) {
		log_error("vcpu%u: pthread_create: %s", v->id, strerror(r));
		return -r;
	}
	char name[16];
	snprintf(name, sizeof(name), "vcpu%u", v->id);
	pthread_setname_np(v->thread, name);
	v->started = true;
	return 0;
}

void vcpu_kick(struct vcpu *v)
{
	if (!v->run)
		return;
	v->run->immediate_exit = 1;
	if (v->started)
		pthread_kill(v->thread, SIG_VCPU_KICK);
}

void vcpu_destroy(struct vcpu *v)
{
	if (v->started)
		pthread_join(v->thread, NULL);
	v->started = false;
	if (v->run)
		munmap(v->run, (size_t)v->vm->run_size);
	if (v->fd >= 0)
		close(v->fd);
	v->run = NULL;
	v->fd = -1;
}
