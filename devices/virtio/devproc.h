/*
 * The device process's main: maps guest RAM, runs the executor, and serves
 * the bus socket from a coroutine while the device's queue coroutines run.
 * The main process forks it (through jail_spawn, or a plain fork with
 * --disable-sandbox), with devproc_pre_seccomp as the jail's pre-seccomp
 * hook and devproc_main as the child function.
 *
 * Bus protocol as the device sees it (core/ipc.h):
 *  1. IPC_HELLO first (version, magic) → reply with name and BARs: BAR 0 is
 *     MEM64, VIRTIO_PCI_BAR_SIZE bytes (see virtio_pci.h for its layout).
 *  2. Any number of BAR_READ / CFG_READ (replied, data in `data`) and posted
 *     BAR_WRITE / CFG_WRITE, handled strictly in order. While handling one
 *     the device may send VM-control requests and wait for their replies
 *     (IPC_CTL_MSI_ROUTE on MSI-X table/mask changes, IPC_CTL_IOEVENTFD on
 *     DRIVER_OK and reset), so the main process must serve the control
 *     socket independently of any bus reply it is waiting for.
 *  3. IPC_METRICS (any time after HELLO) → a struct ipc_metrics reply
 *     (not an ipc_bus_resp): the device's counters and the transport's.
 *  4. IPC_SHUTDOWN → in-flight requests are finished (no more VM-control
 *     requests are sent), a reply follows, the process exits 0.
 * A malformed message (unknown op, HELLO missing or repeated, bad version,
 * BAR other than 0, len not 1/2/4/8 (config: 1/2/4), access past the end of
 * the BAR or of the 256-byte config space) is logged on stderr and the
 * process exits 1. EOF on the bus socket (main process gone) exits 0.
 */
#ifndef RINGVM_DEVICES_VIRTIO_DEVPROC_H
#define RINGVM_DEVICES_VIRTIO_DEVPROC_H

#include <stdbool.h>
#include <stddef.h>

#include "async/exec.h"
#include "core/guest_mem.h"
#include "devices/virtio/registry.h"
#include "jail/jail.h"

struct devproc_args {
	int bus_sock; /* device end of the bus socketpair */
	int ctl_sock; /* device end of the VM-control socketpair */
	int memfd;    /* guest RAM, sealed against shrink/grow */
	const struct registry_entry *dev;
	void *dev_state; /* what dev->create returned (in the parent) */
	/* Set up by devproc_pre_seccomp (inside the child): */
	bool prepared;
	struct exec *ex; /* restricted to the opcodes the device needs */
	struct guest_mem mem;
};

/*
 * jail_hook_fn: in the child, before the seccomp filter is loaded. Maps
 * guest RAM from the memfd (which it then owns) and creates the executor's
 * ring, restricted to POLL_ADD, READ, ASYNC_CANCEL and dev->uring_ops, with
 * dev->uring_max_workers as io-wq caps, so io_uring_setup/register can be
 * denied afterwards. 0 or -errno.
 */
int devproc_pre_seccomp(void *arg) __attribute__((warn_unused_result));

/*
 * jail_child_fn: runs the device until IPC_SHUTDOWN or EOF (returns 0) or a
 * protocol error (returns 1). Calls devproc_pre_seccomp itself when the
 * spawner did not. Never destroys the executor: the process exits right
 * after, and the ring's teardown would call io_uring_register (to drop the
 * registered ring fd), which the seccomp filter forbids.
 */
int devproc_main(void *arg);

/* Syscalls every virtio device process needs beyond jail_base_rules. */
extern const struct jail_syscall_rule devproc_rules[];
extern const size_t devproc_rules_len;

/*
 * The device's complete allowlist for jail_config.rules: devproc_rules then
 * dev->rules, copied into out (max entries). Returns the number of entries
 * (which may exceed max: then nothing past max was written).
 */
size_t devproc_jail_rules(const struct registry_entry *dev, struct jail_syscall_rule *out,
                          size_t max);

#endif
