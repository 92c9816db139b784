/*
 * vCPU threads: each runs KVM_RUN in a loop and dispatches PIO/MMIO exits to
 * the buses. vcpu_kick() ends a thread's run promptly: it sets immediate_exit
 * (so a thread about to enter KVM_RUN returns at once) and signals the thread
 * (so one inside KVM_RUN returns with EINTR).
 */
#ifndef RINGVM_CORE_VCPU_H
#define RINGVM_CORE_VCPU_H

#include <pthread.h>
#include <stdbool.h>
#include <linux/kvm.h>

#include "core/vm.h"

struct vcpu {
	struct vm *vm;
	unsigned id;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool started;
};

/* Install the kick signal handler (once per process). 0 or -errno. */
int vcpu_signal_init(void) __attribute__((warn_unused_result));

/*
 * Create vCPU id: CPUID, MSRs, FPU, LAPIC LINT pins; for id 0 also the boot
 * register state from info (APs wait for INIT/SIPI in the in-kernel LAPIC).
 * Returns 0 or -errno (logged).
 */
struct x86_boot_info;
int vcpu_create(struct vm *vm, unsigned id, const struct x86_boot_info *info, struct vcpu *out)
	__attribute__((warn_unused_result));

/* Start the thread named "vcpuN". 0 or -errno. */
int vcpu_start(struct vcpu *v) __attribute__((warn_unused_result));

/* Make the vCPU leave KVM_RUN; its thread exits once vm->stopping is set. */
void vcpu_kick(struct vcpu *v);

/* Join (if started), unmap and close. */
void vcpu_destroy(struct vcpu *v);

#endif
