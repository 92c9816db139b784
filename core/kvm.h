/*
 * /dev/kvm access: API version and capability checks up front (one clear
 * message per missing capability), VM creation with the in-kernel irqchip,
 * PIT2, TSS and identity-map addresses, and memslots for guest RAM.
 */
#ifndef RINGVM_CORE_KVM_H
#define RINGVM_CORE_KVM_H

#include "core/vm.h"

/* Open /dev/kvm, check version and capabilities, create the VM. 0 or -errno (logged). */
int kvm_init_vm(struct vm *vm) __attribute__((warn_unused_result));

/* Register every guest_mem region as a memslot. 0 or -errno. */
int kvm_set_memory(struct vm *vm) __attribute__((warn_unused_result));

/* Largest vCPU count KVM accepts (KVM_CAP_MAX_VCPUS, else NR_VCPUS). */
int kvm_max_vcpus(int kvm_fd);

void kvm_close(struct vm *vm);

#endif
