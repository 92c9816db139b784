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

#include "devices/virtio/virtio_device.h"
#include "jail/jail.h"

struct registry_entry {
	const char *option; /* CLI option, e.g. "rng" */
	const char *meta;   /* the option's argument in --help; NULL: a flag */
	const char *help;   /* --help text, lines separated by '\n' */
	bool default_on;    /* present unless --no-<option> (then --<option> is a no-op) */
	const struct virtio_device_ops *ops;
	/*
	 * Factory, run in the main process before the device process is
	 * spawned: parse opts (the option's argument, "" when none) and create
	 * the device state (which starts with a struct virtio_dev whose ops are
	 * set). 0 and *state, or -EINVAL for a bad option (message on stderr),
	 * -ENOMEM.
	 */
	int (*create)(const char *opts, void **state);
	void (*destroy)(void *state); /* frees what create made */
	/* Syscalls this device needs beyond jail_base_rules and devproc_rules. */
	const struct jail_syscall_rule *rules;
	size_t n_rules;
	/* io_uring opcodes beyond devproc's own (POLL_ADD, READ). */
	const uint8_t *uring_ops;
	unsigned n_uring_ops;
};

/* The entry for a CLI option, or NULL. */
const struct registry_entry *registry_find(const char *option);

/* Entry i in option order, or NULL past the end (for --help and tests). */
const struct registry_entry *registry_at(size_t i);

/* Each device file exports its entry; the table in registry.c lists them. */
extern const struct registry_entry rng_entry;

#endif
