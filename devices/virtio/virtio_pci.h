/*
 * The modern virtio-pci transport (virtio 1.2 §4.1), running in the device
 * process: the function's 256-byte PCI config space with the virtio and
 * MSI-X capabilities, one 64-bit memory BAR (BAR 0/1) holding common cfg,
 * ISR, device cfg, the notify addresses, the MSI-X table and PBA; feature
 * negotiation, the status state machine, queue setup, reset, and interrupt
 * delivery by irqfd. VM-global changes (MSI routes, ioeventfds) are asked of
 * the main process over the VM-control socket (core/ipc.h).
 */
#ifndef RINGVM_DEVICES_VIRTIO_VIRTIO_PCI_H
#define RINGVM_DEVICES_VIRTIO_VIRTIO_PCI_H

#include <stdbool.h>
#include <stdint.h>

#include "core/ipc.h"
#include "devices/virtio/virtio_device.h"

/* BAR 0 (64-bit, non-prefetchable memory) layout: fixed offsets. */
#define VIRTIO_PCI_BAR            0
#define VIRTIO_PCI_BAR_SIZE       0x4000
#define VIRTIO_PCI_COMMON_OFF     0x0000 /* struct virtio_pci_common_cfg, 0x3c bytes */
#define VIRTIO_PCI_COMMON_LEN     0x3c
#define VIRTIO_PCI_ISR_OFF        0x0800 /* one byte, read-to-clear */
#define VIRTIO_PCI_DEVCFG_OFF     0x1000 /* device config, up to 0x1000 bytes */
#define VIRTIO_PCI_NOTIFY_OFF     0x2000 /* queue i kicks at NOTIFY_OFF + 4·i */
#define VIRTIO_PCI_NOTIFY_MULT    4u
#define VIRTIO_PCI_MSIX_TABLE_OFF 0x3000 /* 16 bytes per vector */
#define VIRTIO_PCI_MSIX_PBA_OFF   0x3800
#define VIRTIO_PCI_MSIX_VECTORS   (VIRTIO_MAX_QUEUES + 1)

/* Notify address of queue i inside BAR 0 (what IPC_CTL_IOEVENTFD carries). */
static inline uint32_t virtio_pci_notify_off(unsigned queue)
{
	return VIRTIO_PCI_NOTIFY_OFF + VIRTIO_PCI_NOTIFY_MULT * queue;
}

/* PCI ids. */
#define VIRTIO_PCI_VENDOR      0x1af4
#define VIRTIO_PCI_DEVICE_BASE 0x1040
#define VIRTIO_PCI_SUBSYS_ID   0x0040

struct virtio_msix_vec {
	uint32_t addr_lo, addr_hi, data, ctrl; /* the table entry as written */
	int irqfd;                             /* created on the first route, or -1 */
	bool irqfd_sent; /* the main process has acknowledged a route carrying irqfd */
	bool routed;     /* the main process has the route for (addr, data), unmasked */
};

struct virtio_pci {
	struct virtio_dev *dev;
	struct exec *ex;
	int ctl_sock;
	uint32_t ctl_seq;
	bool ctl_dead; /* the VM-control socket failed: the process must exit */
	bool shutdown; /* IPC_SHUTDOWN: no more VM-control requests */
	/* One VM-control request at a time: the bus task and device tasks
	 * (virtio_vmctl_call) share the socket, and a reply is read by whoever
	 * sent the request. */
	struct exec_sem ctl_lock;
	/* PCI config space: contents and per-bit write masks. */
	uint8_t cfg[256];
	uint8_t wmask[256];
	uint8_t cap_pcicfg; /* offset of the PCI_CFG access capability */
	uint8_t cap_msix;   /* offset of the MSI-X capability */
	/* Common cfg state. */
	uint32_t dfselect, gfselect;
	uint64_t offered;         /* features offered */
	uint64_t driver_features; /* as written by the driver */
	bool features_beyond_64;  /* the driver set a bit past 63 (never offered) */
	uint8_t status;
	uint8_t generation;
	uint8_t isr;
	uint16_t queue_sel;
	uint16_t config_vector;
	/* MSI-X. */
	uint16_t nvec;
	struct virtio_msix_vec vec[VIRTIO_PCI_MSIX_VECTORS];
	uint64_t pba;           /* pending bits, one per vector */
	uint64_t signals, irqs; /* counters: raise requests, irqfd writes */
};

/*
 * Set up the transport for device d (whose ops are set). ctl_sock is the
 * VM-control socket (kept, not owned); mem is guest RAM. No I/O happens
 * here. 0 or -EINVAL for ops the transport cannot host.
 */
int virtio_pci_init(struct virtio_pci *p, struct virtio_dev *d, struct exec *ex,
                    const struct guest_mem *mem, int ctl_sock) __attribute__((warn_unused_result));

/* The BARs for the HELLO reply. */
void virtio_pci_bars(const struct virtio_pci *p, struct ipc_bar_info bars[IPC_MAX_BARS]);

/*
 * Bus accesses, already validated by the caller: bar == VIRTIO_PCI_BAR,
 * off + len ≤ VIRTIO_PCI_BAR_SIZE, len ∈ {1, 2, 4, 8}; config reg + len ≤
 * 256, len ∈ {1, 2, 4}. Anything the register layout does not define reads
 * as zero and ignores writes. Writes may await the main process (MSI routes,
 * ioeventfds) and run reset or activation, so all four must be called from a
 * task of the executor, one at a time and in bus order.
 */
uint64_t virtio_pci_bar_read(struct virtio_pci *p, uint32_t off, unsigned len);
void virtio_pci_bar_write(struct virtio_pci *p, uint32_t off, unsigned len, uint64_t val);
uint32_t virtio_pci_cfg_read(struct virtio_pci *p, unsigned reg, unsigned len);
void virtio_pci_cfg_write(struct virtio_pci *p, unsigned reg, unsigned len, uint32_t val);

/*
 * Stop the device as a reset does (queue coroutines stopped, in-flight
 * requests finished, ioeventfds deassigned), then close every irqfd. From a
 * task. Afterwards only virtio_pci_* reads are valid.
 */
void virtio_pci_shutdown(struct virtio_pci *p);

#endif
