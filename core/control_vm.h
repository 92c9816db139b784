/*
 * The control socket's commands for a running VM (stop, pause, resume,
 * status, metrics, disk-resize): control.c serves the socket, this file
 * turns each command into calls on struct vm and builds its JSON result.
 */
#ifndef RINGVM_CORE_CONTROL_VM_H
#define RINGVM_CORE_CONTROL_VM_H

#include "core/vm.h"

/*
 * Create vm->control on vm->cfg->socket_path (nothing when NULL), before the
 * VM is built. 0 or -errno (logged as one line naming the path).
 */
int control_vm_create(struct vm *vm) __attribute__((warn_unused_result));

/* Start serving (the "control" thread), once the vCPUs run. 0 or -errno (logged). */
int control_vm_start(struct vm *vm) __attribute__((warn_unused_result));

/* VmRSS of /proc/<pid>/status in KiB (pid 0: this process), or -errno. */
long long control_vm_rss_kib(int pid);

#endif
