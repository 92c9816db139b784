/*
 * What a virtio device file provides and what it may call. A device fills
 * one `static const struct virtio_device_ops` and embeds `struct virtio_dev`
 * as the first member of its state; the transport (virtio_pci.c) owns
 * features, status, queue setup, config generation, interrupts and the
 * per-queue coroutines, so a device only handles its queues' chains and its
 * config space.
 */
#ifndef RINGVM_DEVICES_VIRTIO_VIRTIO_DEVICE_H
#define RINGVM_DEVICES_VIRTIO_VIRTIO_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "async/exec.h"
#include "core/ipc.h"
#include "core/guest_mem.h"
#include "devices/virtio/virtq.h"

#define VIRTIO_MAX_QUEUES 16
#define VIRTIO_NO_VECTOR  0xffff

/* Device status bits (virtio 1.2 §2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE 0x01
#define VIRTIO_STATUS_DRIVER      0x02
#define VIRTIO_STATUS_DRIVER_OK   0x04
#define VIRTIO_STATUS_FEATURES_OK 0x08
#define VIRTIO_STATUS_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED      0x80

/* Reserved feature bits the transport handles (virtio 1.2 §6); ring bits are in virtq.h. */
#define VIRTIO_F_VERSION_1 32

/* Virtio device ids (virtio 1.2 §5). */
#define VIRTIO_ID_NET     1
#define VIRTIO_ID_BLOCK   2
#define VIRTIO_ID_CONSOLE 3
#define VIRTIO_ID_ENTROPY 4
#define VIRTIO_ID_VSOCK   19

struct virtio_dev;
struct virtio_pci;

/* One queue: what the driver programmed, and the coroutine serving it. */
struct virtio_queue {
	struct virtq vq; /* valid while enabled */
	struct virtio_dev *dev;
	uint16_t index;
	/* Programmed through common cfg; frozen once enabled. */
	uint16_t size;
	uint16_t vector; /* MSI-X vector or VIRTIO_NO_VECTOR */
	bool enabled;
	uint64_t desc_gpa, avail_gpa, used_gpa;
	/* Running state (transport-owned, from DRIVER_OK to reset). */
	int kick_fd;    /* eventfd registered as this queue's ioeventfd, or -1 */
	bool ioeventfd; /* kick_fd registered with the main process */
	struct exec_eventfd kick;
	struct exec_task *task;  /* the queue coroutine, or NULL */
	bool stopping;           /* reset asked the coroutine to leave */
	bool waiting;            /* the coroutine is parked on the kick eventfd */
	uint64_t kicks, batches; /* counters for tests and benchmarks */
};

/*
 * Handle a kick of q: pop chains until virtq_pop returns 0, complete them
 * (virtq_push) or keep them in flight for asynchronous completion. Runs in
 * q's coroutine and may await. The transport signals the queue after it
 * returns (once per batch). A negative return (typically virtq_pop's fatal
 * error) makes the transport set DEVICE_NEEDS_RESET and stop the queue.
 */
typedef int virtio_queue_fn(struct virtio_dev *d, struct virtio_queue *q);

struct virtio_device_ops {
	const char *name;                /* e.g. "virtio-rng": HELLO name, < 16 bytes */
	uint16_t device_id;              /* VIRTIO_ID_* (PCI device id 0x1040 + this) */
	uint8_t pci_class, pci_subclass; /* PCI class code of this device type */
	uint16_t num_queues;             /* 1..VIRTIO_MAX_QUEUES */
	uint16_t queue_max_size;         /* power of two ≤ VIRTQ_MAX_SIZE, every queue */
	uint64_t features;               /* device-type bits offered; the transport adds
	                                    VERSION_1, RING_EVENT_IDX, RING_INDIRECT_DESC */
	uint32_t config_size;            /* bytes of device config space (≤ 4096), 0: none */
	/* Device config access, off + len ≤ config_size guaranteed; may be NULL
	 * when config_size is 0. Little-endian contents. */
	void (*config_read)(struct virtio_dev *d, uint32_t off, void *buf, uint32_t len);
	void (*config_write)(struct virtio_dev *d, uint32_t off, const void *buf, uint32_t len);
	/* DRIVER_OK: features are final, enabled queues are set up and their
	 * coroutines about to start. From a task; may await. 0 or -errno (the
	 * device then gets DEVICE_NEEDS_RESET). May be NULL. */
	int (*activate)(struct virtio_dev *d);
	virtio_queue_fn *queue_kick;
	/* Reset (or shutdown): queue coroutines have stopped; finish every
	 * request still in flight (push it) before returning. From a task; may
	 * await. The transport then clears queues and features. May be NULL. */
	void (*reset)(struct virtio_dev *d);
};

/* Common state every device embeds first; filled by the transport. */
struct virtio_dev {
	const struct virtio_device_ops *ops;
	struct virtio_pci *pci;
	struct exec *ex;
	const struct guest_mem *mem;
	uint64_t features; /* negotiated; valid from FEATURES_OK */
	struct virtio_queue queues[VIRTIO_MAX_QUEUES];
};

static inline bool virtio_has_feature(const struct virtio_dev *d, unsigned bit)
{
	return d->features & (1ull << bit);
}

/*
 * Signal the driver about q's used ring if it wants it (EVENT_IDX or
 * NO_INTERRUPT): for devices that complete asynchronously, after a batch of
 * virtq_push outside queue_kick. Any task of the device.
 */
void virtio_queue_signal(struct virtio_dev *d, struct virtio_queue *q);

/* Device config changed: bump config generation and raise the config interrupt. */
void virtio_config_changed(struct virtio_dev *d);

/*
 * A fatal device error (e.g. a broken queue): set DEVICE_NEEDS_RESET and
 * raise the config interrupt; the driver must reset the device.
 */
void virtio_needs_reset(struct virtio_dev *d, const char *why);

/*
 * A device-specific VM-control request (e.g. IPC_CTL_VSOCK_CONNECT) to the
 * main process, from any task of the device: serialised with the
 * transport's own requests, awaited. The reply's result (0 or -errno; a
 * descriptor it carries goes to *fd_out when fd_out is set, else it is
 * closed), or -EPIPE/-ESHUTDOWN when the socket is gone or the device
 * shutting down. The calling task must not be cancelled meanwhile (a
 * cancelled wait breaks the socket for the whole device).
 */
int virtio_vmctl_call(struct virtio_dev *d, struct ipc_ctl_req *req, int *fd_out)
    __attribute__((warn_unused_result));

#endif
