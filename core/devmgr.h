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

#include <stdbool.h>
#include <sys/types.h>

#include "core/ipc.h"
#include "core/vm.h"

/*
 * Device start-up comes in steps so that the slow parts overlap: each
 * device process builds its jail while the VMM spawns the next one and
 * creates its vCPUs, before the VMM waits for any device's HELLO.
 *
 * devmgr_create: the device manager and the GSI routing table. 0 or -errno
 * (logged).
 */
int devmgr_create(struct vm *vm) __attribute__((warn_unused_result));

/*
 * Spawn every device of vm->cfg and post its HELLO. The devices are forked
 * without exec: no other thread may hold a libc lock meanwhile (the start-up
 * helper thread only sits in an ioctl). After guest RAM exists, before any
 * vCPU starts. 0 or -errno (logged).
 */
int devmgr_spawn(struct vm *vm) __attribute__((warn_unused_result));

/*
 * Wait for every device's HELLO in slot order; place BARs and plug each into
 * PCI. Before the vCPUs start. 0 or -errno (logged).
 */
int devmgr_connect(struct vm *vm) __attribute__((warn_unused_result));

/* Start the vmctl thread. 0 or -errno. */
int devmgr_start(struct vm *vm) __attribute__((warn_unused_result));

/* Ask every device to shut down and reap it; stop the vmctl thread. Idempotent. */
void devmgr_stop(struct vm *vm);

/* What the control socket reports about device i (devmgr_info). */
struct devmgr_info {
	const char *option; /* CLI option, e.g. "rng" */
	unsigned slot;      /* PCI slot on bus 0 */
	pid_t pid;          /* in ringvm's PID namespace */
	/* The process's pidfd (valid until devmgr_destroy), or -1; also -1 for a
	 * process made by the jail's fork fallback, which has none. */
	int pidfd;
	bool sandboxed;     /* jailed (not --disable-sandbox) */
	bool alive;         /* not known to have died or been shut down */
};

/* Number of device processes (0 before devmgr_create). */
unsigned devmgr_count(struct vm *vm);

/* Describe device i. 0, or -ENOENT past the end. Thread-safe while the VM runs. */
int devmgr_info(struct vm *vm, unsigned i, struct devmgr_info *out);

/*
 * Ask device i for its counters (IPC_METRICS on its bus socket, serialised
 * with the vCPUs' accesses, bounded wait). 0, or -errno (-ENOENT past the
 * end, -EPIPE when the device is gone).
 */
int devmgr_metrics(struct vm *vm, unsigned i, struct ipc_metrics *out)
	__attribute__((warn_unused_result));

/*
 * Resize device i to size bytes: its registry hooks' main-process part
 * (a raw image file grows before and shrinks after), then IPC_RESIZE on its
 * bus socket (serialised with the vCPUs' accesses, bounded wait), after
 * which the guest has had a config-change interrupt. 0 with the size now
 * in effect in *now, or -errno with one line in err: -ENOENT past the end,
 * -ENOTSUP not resizable (or a qcow2 shrink), -EROFS read-only, -EINVAL a
 * bad size, -EPIPE the device is gone, or what the device or the host said.
 */
int devmgr_resize(struct vm *vm, unsigned i, uint64_t size, uint64_t *now, char *err,
		  size_t errlen) __attribute__((warn_unused_result));

/* Free everything (after devmgr_stop). */
void devmgr_destroy(struct vm *vm);

#endif
