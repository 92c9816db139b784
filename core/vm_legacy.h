/*
 * The main-process legacy devices of a VM (COM1 UART, i8042, CMOS RTC, port
 * 0x80) wired to the PIO bus and KVM IRQ lines, and the thread that feeds
 * standard input to the UART.
 */
#ifndef RINGVM_CORE_VM_LEGACY_H
#define RINGVM_CORE_VM_LEGACY_H

#include "core/vm.h"

/* Create the devices the config asks for and put them on the bus. 0 or -errno (logged). */
int vm_legacy_create(struct vm *vm) __attribute__((warn_unused_result));

/* Start the stdin → UART thread (when the serial console is stdout). 0 or -errno. */
int vm_legacy_start(struct vm *vm) __attribute__((warn_unused_result));

/* Stop the input thread and restore the terminal. Idempotent. */
void vm_legacy_stop(struct vm *vm);

/* Free the devices. No vCPU may be running. */
void vm_legacy_destroy(struct vm *vm);

#endif
