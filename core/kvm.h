/*
 * /dev/kvm access: API version and capability checks up front (one clear
 * message per missing capability), VM creation with the in-kernel irqchip,
 * PIT2, TSS and identity-map addresses, and memslots for guest RAM.
 */
#ifndef RINGVM_CORE_KVM_H
#define RINGVM_CORE_KVM_H

#include "core/vm.h"

/* Open /dev/kvm, check version and capabilities. 0 or -errno (logged). */
int kvm_open(struct vm *vm) __attribute__((warn_unused_result));

/*
 * KVM_GET_SUPPORTED_CPUID into vm->cpuid (allocated by kvm_open). Half a
 * millisecond of kernel work that nothing needs before the vCPUs are set
 * up, so start-up runs it on a helper thread: it neither logs nor
 * allocates. Takes the vm; 0 or -errno.
 */
int kvm_get_cpuid(void *vm) __attribute__((warn_unused_result));

/* The VM: KVM_CREATE_VM, TSS and identity-map addresses. 0 or -errno (logged). */
int kvm_create_vm(struct vm *vm) __attribute__((warn_unused_result));

/* Register guest RAM (vm->mem) as memslots. 0 or -errno (logged). */
int kvm_set_memory(struct vm *vm) __attribute__((warn_unused_result));

/*
 * The in-kernel irqchip (PIC, IOAPIC, LAPICs) and PIT. Call after
 * kvm_set_memory: each of these calls, and a memslot change, waits for an
 * SRCU grace period in KVM, and measured on these hosts (6.18, HZ=250) the
 * memslot registered first costs ~0.2 ms for all of them together, while a
 * memslot registered after the irqchip and PIT waits 4-10 ms (whole
 * jiffies). 0 or -errno (logged).
 */
int kvm_create_irqchip(struct vm *vm) __attribute__((warn_unused_result));

/* Largest vCPU count KVM accepts (KVM_CAP_MAX_VCPUS, else NR_VCPUS). */
int kvm_max_vcpus(int kvm_fd);

void kvm_close(struct vm *vm);

#endif
