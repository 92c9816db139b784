/*
 * The explicit table of device-process devices, sorted by CLI option: each
 * entry names its option, its factory, its seccomp allowlist and extra
 * io_uring opcodes, and its virtio_device_ops, so everything about a device
 * is in its own file and is registered here in one line.
 */
#ifndef RINGVM_DEVICES_VIRTIO_REGISTRY_H
#define RINGVM_DEVICES_VIRTIO_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/ipc.h"
#include "devices/virtio/virtio_device.h"
#include "jail/jail.h"

/* What a factory knows about the VM it creates a device for. */
struct registry_ctx {
	unsigned ncpus; /* vCPUs (e.g. the default number of queues) */
};

/* The main process's part of a resize, around the device's IPC_RESIZE (resize_host). */
enum registry_resize_step {
	REGISTRY_RESIZE_PREPARE, /* before IPC_RESIZE: check, and make room (grow a raw file) */
	REGISTRY_RESIZE_COMMIT,  /* after the device took the new size (shrink a raw file) */
	REGISTRY_RESIZE_ABORT,   /* after the device refused it: undo PREPARE */
};

/* Most descriptors one device may ask to keep (registry_entry.keep_fds). */
#define REGISTRY_MAX_KEEP_FDS 20

struct registry_entry {
	const char *option; /* CLI option, e.g. "rng" */
	const char *meta;   /* the option's argument in --help; NULL: a flag */
	const char *help;   /* --help text, lines separated by '\n' */
	bool default_on;    /* present unless --no-<option> (then --<option> is a no-op) */
	const struct virtio_device_ops *ops;
	/*
	 * Factory, run in the main process before the device process is
	 * spawned: parse opts (the option's argument, "" when none), open what
	 * the device needs (image files...) and create the device state (which
	 * starts with a struct virtio_dev whose ops are set). ctx describes the
	 * VM. 0 and *state, or -errno with one line on stderr naming the
	 * problem: -EINVAL for a bad option, or the error of what could not be
	 * opened. `ringvm run` calls it once while parsing the command line to
	 * validate (then destroys that state) and again to build the VM.
	 */
	int (*create)(const struct registry_ctx *ctx, const char *opts, void **state);
	void (*destroy)(void *state); /* frees what create made, closes what it opened */
	/*
	 * Descriptors in state that the device process must keep (image files,
	 * TAPs...): written to fds (at most max), count returned. The main
	 * process adds them to the jail's keep list (same numbers inside), so
	 * the device process never opens anything itself. They are not made
	 * fixed files of the ring (see devproc_pre_seccomp). NULL: none.
	 */
	unsigned (*keep_fds)(void *state, int *fds, unsigned max);
	/*
	 * Fill *out with the device's metrics (IPC_METRICS), in the device
	 * process; the transport counters are filled by devproc afterwards.
	 * NULL: the device keeps none.
	 */
	void (*metrics)(void *state, struct ipc_metrics *out);
	/*
	 * IPC_RESIZE, in the device process, from the bus task (may await;
	 * the bus is not served meanwhile): make the device new_size bytes
	 * and tell the driver (config-change interrupt). Returns 0 or -errno
	 * and the size in effect afterwards in *now. NULL: -ENOTSUP.
	 */
	int (*resize)(void *state, struct exec *ex, uint64_t new_size, uint64_t *now);
	/*
	 * The main process's part of a resize, on the state the factory made
	 * there (it still holds the image descriptors, which the jailed device
	 * must not change the length of): PREPARE before IPC_RESIZE (refuse
	 * what the device would refuse; e.g. grow a raw file), COMMIT after it
	 * succeeded (e.g. shrink a raw file), ABORT after it failed (undo
	 * PREPARE). 0 or -errno. NULL: the device cannot be resized.
	 */
	int (*resize_host)(void *state, enum registry_resize_step step, uint64_t new_size);
	/*
	 * A device-specific VM-control request (core/ipc.h ops beyond
	 * MSI_ROUTE and IOEVENTFD), in the main process on the vmctl thread,
	 * on the state the factory made there. Must not block for long. 0 or
	 * -errno; a descriptor for the device in *fd_out (sent, then closed).
	 * The request comes from the untrusted device: validate everything.
	 * NULL: such requests are refused.
	 */
	int (*vmctl)(void *state, const struct ipc_ctl_req *req, int *fd_out);
	/* At most one such device per VM (the command line refuses a second). */
	bool single;
	/* Syscalls this device needs beyond jail_base_rules and devproc_rules. */
	const struct jail_syscall_rule *rules;
	size_t n_rules;
	/* io_uring opcodes beyond devproc's own (POLL_ADD, READ). */
	const uint8_t *uring_ops;
	unsigned n_uring_ops;
	/* io-wq worker caps of the device's ring [bounded, unbounded] (blocking
	 * file I/O runs there; each worker counts against RLIMIT_NPROC);
	 * 0: the kernel's default. */
	unsigned uring_max_workers[2];
	/* SQ entries of the device's ring (0: the executor's default); the
	 * CQ, twice as big, caps the operations in flight, so a device that
	 * waits on many sockets at once (vsock) needs more. */
	unsigned uring_sq_entries;
	/* Jail limits: RLIMIT_FSIZE (0 forbids writing regular files; a disk
	 * device needs JAIL_RLIM_INFINITY) and RLIMIT_NPROC (0: the jail's
	 * default). */
	uint64_t max_file_size;
	unsigned max_procs;
	/* RLIMIT_NOFILE of the jail (0: the jail's default); a device that
	 * holds many sockets (vsock) raises it. */
	unsigned max_fds;
};

/* The entry for a CLI option, or NULL. */
const struct registry_entry *registry_find(const char *option);

/* Entry i in option order, or NULL past the end (for --help and tests). */
const struct registry_entry *registry_at(size_t i);

/* Each device file exports its entry; the table in registry.c lists them. */
extern const struct registry_entry blk_entry;
extern const struct registry_entry net_entry;
extern const struct registry_entry rng_entry;
extern const struct registry_entry vsock_entry;

#endif
