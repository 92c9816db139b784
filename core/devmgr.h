/*
 * Device processes of a VM: spawns one jailed process per device (or an
 * unjailed one with --disable-sandbox), puts a proxy for each on the PCI bus,
 * and runs the "vmctl" thread that serves their VM-control sockets and
 * watches their pidfds, so a device that dies stops the VM with a message
 * naming it. Shutdown asks each device to finish, then reaps it: no orphan,
 * no zombie, on every exit path.
 */
#ifndef RINGVM_CORE_DEVMGR_H
#define RINGVM_CORE_DEVMGR_H

#include "core/vm.h"

/*
 * Spawn every device of vm->cfg and set up its proxy. Must run while the
 * process is single-threaded (the devices are forked without exec), after
 * guest RAM exists and before any vCPU starts. 0 or -errno (logged).
 */
int devmgr_create(struct vm *vm) __attribute__((warn_unused_result));

/* Start the vmctl thread. 0 or -errno. */
int devmgr_start(struct vm *vm) __attribute__((warn_unused_result));

/* Ask every device to shut down and reap it; stop the vmctl thread. Idempotent. */
void devmgr_stop(struct vm *vm);

/* Free everything (after devmgr_stop). */
void devmgr_destroy(struct vm *vm);

#endif
