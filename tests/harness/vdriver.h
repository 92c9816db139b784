/*
 * A virtio driver that runs on the host instead of in a guest: it creates
 * guest RAM as a sealed memfd, builds split rings in it, and drives a real
 * device process — forked exactly as ringvm forks one (plain fork, or
 * jail_spawn when sandboxed) — by writing the queue's kick eventfd and
 * reading its irqfd, with no KVM involved. It plays both of the main
 * process's roles: the vCPU side of the bus socket and the control-loop side
 * of the VM-control socket (keeping each vector's irqfd and each queue's
 * ioeventfd). Unit tests, fuzzers and device benchmarks use it.
 */
#ifndef RINGVM_TESTS_HARNESS_VDRIVER_H
#define RINGVM_TESTS_HARNESS_VDRIVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/guest_mem.h"
#include "devices/virtio/devproc.h"
#include "devices/virtio/virtio_pci.h"
#include "jail/jail.h"
#include "tests/harness/vring.h"

#define VDRIVER_MAX_VECTORS 64
#define VDRIVER_TIMEOUT_MS  5000
#define VDRIVER_RING_BASE   0x100000ull /* rings of queue i at BASE + i * 64 KiB */
#define VDRIVER_DATA_BASE   0x200000ull /* free for test buffers from here */

struct vdriver_params {
	const char *device; /* registry option, e.g. "rng" */
	const char *opts;   /* its option string ("" when NULL) */
	uint64_t ram_size;  /* default 16 MiB */
	bool sandbox;       /* jail_spawn with the device's allowlist, else fork */
	unsigned ncpus;     /* registry_ctx.ncpus for the factory (0: 1) */
};

struct vdriver {
	struct guest_mem mem;
	const struct registry_entry *entry;
	void *dev_state;
	struct devproc_args args;
	int bus, ctl; /* our ends */
	pid_t pid;
	bool sandboxed;
	struct jail_child child;
	bool reaped;
	int status; /* wait status once reaped */
	uint32_t seq;
	/* VM-control state, as the main process would keep it. */
	struct {
		int irqfd;
		uint64_t addr;
		uint32_t data;
		bool masked;
		unsigned routes; /* MSI_ROUTE requests for this vector */
	} vec[VDRIVER_MAX_VECTORS];
	int kick[VIRTIO_MAX_QUEUES]; /* ioeventfd per queue, -1 when none */
	unsigned ctl_requests;
	int ctl_fail; /* non-zero: answer the next requests with it */
	/* Driver state. */
	uint16_t msix_cap;
	uint64_t features; /* negotiated */
	uint16_t nqueues;
	struct vring ring[VIRTIO_MAX_QUEUES];
};

/* Create RAM, fork the device process and do the HELLO handshake. 0 or -errno. */
int vdriver_spawn(struct vdriver *v, const struct vdriver_params *p);

/*
 * Bus accesses as a vCPU makes them (reads wait for the reply, writes are
 * posted). While waiting, VM-control requests are served. 0 or -errno
 * (-ETIMEDOUT, -EPIPE when the device died).
 */
int vdriver_bar_read(struct vdriver *v, uint32_t off, unsigned len, uint64_t *val);
int vdriver_bar_write(struct vdriver *v, uint32_t off, unsigned len, uint64_t val);
int vdriver_cfg_read(struct vdriver *v, uint32_t reg, unsigned len, uint32_t *val);
int vdriver_cfg_write(struct vdriver *v, uint32_t reg, unsigned len, uint32_t val);
/* Send a raw bus message (hostile tests); with a reply when want_reply. */
int vdriver_bus_raw(struct vdriver *v, const struct ipc_bus_req *req, bool want_reply,
                    struct ipc_bus_resp *resp);

/* Status register helpers. */
int vdriver_status(struct vdriver *v, uint8_t *status);
int vdriver_set_status(struct vdriver *v, uint8_t status);

/*
 * Bring the device up as a Linux driver would: MSI-X on with every vector
 * unmasked (config → vector 0, queue i → vector i + 1), reset, ACK, DRIVER,
 * features (offered ∩ want), FEATURES_OK, every queue at qsize entries with
 * rings at VDRIVER_RING_BASE + i·64 KiB, DRIVER_OK. 0 or -errno (-EPROTO if
 * FEATURES_OK did not stick).
 */
int vdriver_setup(struct vdriver *v, uint64_t want_features, uint16_t qsize);

/* Notify queue q the way the guest would: through its ioeventfd (or the notify BAR address). */
int vdriver_kick(struct vdriver *v, uint16_t q);

/*
 * Wait up to timeout_ms for an interrupt on vector (reads its irqfd, serving
 * VM-control requests meanwhile). Returns the number of interrupts (> 0),
 * -ETIMEDOUT, or -errno.
 */
int vdriver_wait_irq(struct vdriver *v, uint16_t vector, int timeout_ms);

/* Serve VM-control requests for up to timeout_ms (0: only what is queued). */
int vdriver_serve_ctl(struct vdriver *v, int timeout_ms);

/* Wait until queue q has a used entry (interrupt-driven), up to timeout_ms. */
int vdriver_wait_used(struct vdriver *v, uint16_t q, int timeout_ms);

/* Whether the device process still runs. */
bool vdriver_alive(struct vdriver *v);

/* IPC_METRICS: the device's counters into *out. 0 or -errno. */
int vdriver_metrics(struct vdriver *v, struct ipc_metrics *out);

/*
 * IPC_SHUTDOWN, then wait for the process to exit. Returns the wait status
 * (as waitpid) or -errno.
 */
int vdriver_shutdown(struct vdriver *v);

/* Wait up to timeout_ms for the process to exit by itself; its wait status or -ETIMEDOUT. */
int vdriver_wait_exit(struct vdriver *v, int timeout_ms);

/* Kill (if needed) and reap the device, close everything, destroy RAM. */
void vdriver_destroy(struct vdriver *v);

#endif
