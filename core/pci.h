/*
 * PCI root: bus 0 configuration space through the 0xCF8 address latch and the
 * 0xCFC–0xCFF data window, a host bridge at 00:00.0, and up to 31 more slots
 * whose config accesses go to a pci_dev_ops (a main-process device now, a
 * proxy stub forwarding to a device process later). Absent functions read
 * as all-ones, as on real hardware.
 */
#ifndef RINGVM_CORE_PCI_H
#define RINGVM_CORE_PCI_H

#include <pthread.h>
#include <stdint.h>

#include "core/bus.h"

#define PCI_SLOTS 32

/* reg is the byte offset in the 256-byte config space; len 1, 2 or 4; reg+len <= 256. */
typedef uint32_t pci_cfg_read_fn(void *opaque, unsigned reg, unsigned len);
typedef void pci_cfg_write_fn(void *opaque, unsigned reg, unsigned len, uint32_t val);

struct pci_dev_ops {
	const char *name;
	pci_cfg_read_fn *cfg_read;
	pci_cfg_write_fn *cfg_write;
};

struct pci_root {
	pthread_mutex_t lock; /* guards addr and serialises config accesses */
	uint32_t addr;        /* last value written to 0xCF8 */
	struct {
		const struct pci_dev_ops *ops;
		void *opaque;
	} slot[PCI_SLOTS];
	uint8_t bridge_cfg[256]; /* the host bridge's config space */
};

/* Set up the root with the host bridge in slot 0. Returns 0 or -errno. */
int pci_root_init(struct pci_root *root) __attribute__((warn_unused_result));

/* Put a device in slot (1..31). -EBUSY if taken, -EINVAL if out of range. */
int pci_root_add(struct pci_root *root, unsigned slot, const struct pci_dev_ops *ops, void *opaque)
	__attribute__((warn_unused_result));

/* Claim 0xCF8 (4 bytes) and 0xCFC (4 bytes) on the PIO bus. */
int pci_root_attach(struct pci_root *root, struct bus *pio) __attribute__((warn_unused_result));

/* Config read/write of 00:slot.0 as the 0xCFC window does it (for tests and ECAM). */
uint32_t pci_root_cfg_read(struct pci_root *root, unsigned slot, unsigned fn, unsigned reg,
			   unsigned len);
void pci_root_cfg_write(struct pci_root *root, unsigned slot, unsigned fn, unsigned reg,
			unsigned len, uint32_t val);

void pci_root_destroy(struct pci_root *root);

#endif
