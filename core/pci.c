/*
 * PCI configuration mechanism #1 (0xCF8/0xCFC) for bus 0 and the host bridge.
 * Every config access is a guest exit, so this stays a short table lookup.
 */
#include <errno.h>
#include <string.h>

#include "core/log.h"
#include "core/pci.h"

#define CFG_ENABLE 0x80000000u

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

int pci_root_init(struct pci_root *root)
{
	memset(root, 0, sizeof(*root));
	int r = pthread_mutex_init(&root->lock, NULL);
	if (r)
		return -r;
	uint8_t *c = root->bridge_cfg;
	put16(c + 0x00, 0x8086); /* vendor: Intel */
	put16(c + 0x02, 0x1237); /* 440FX-style host bridge id, as QEMU's pc machine */
	put16(c + 0x04, 0x0006); /* command: memory + bus master */
	put16(c + 0x06, 0x0000);
	c[0x08] = 0x02;          /* revision */
	c[0x0b] = 0x06;          /* class: bridge */
	c[0x0a] = 0x00;          /* subclass: host bridge */
	c[0x0e] = 0x00;          /* header type 0, single function */
	return 0;
}

int pci_root_add(struct pci_root *root, unsigned slot, const struct pci_dev_ops *ops, void *opaque)
{
	if (slot == 0 || slot >= PCI_SLOTS || !ops)
		return -EINVAL;
	if (root->slot[slot].ops)
		return -EBUSY;
	root->slot[slot].ops = ops;
	root->slot[slot].opaque = opaque;
	return 0;
}

static uint32_t bridge_read(struct pci_root *root, unsigned reg, unsigned len)
{
	uint32_t v = 0;
	for (unsigned i = 0; i < len; i++)
		v |= (uint32_t)root->bridge_cfg[reg + i] << (8 * i);
	return v;
}

uint32_t pci_root_cfg_read(struct pci_root *root, unsigned slot, unsigned fn, unsigned reg,
			   unsigned len)
{
	uint32_t ones = len == 4 ? 0xffffffffu : (1u << (8 * len)) - 1;
	if (slot >= PCI_SLOTS || fn != 0 || reg + len > 256)
		return ones;
	if (slot == 0)
		return bridge_read(root, reg, len);
	if (!root->slot[slot].ops)
		return ones;
	return root->slot[slot].ops->cfg_read(root->slot[slot].opaque, reg, len);
}

void pci_root_cfg_write(struct pci_root *root, unsigned slot, unsigned fn, unsigned reg,
			unsigned len, uint32_t val)
{
	if (slot >= PCI_SLOTS || fn != 0 || reg + len > 256)
		return;
	if (slot == 0)
		return; /* the host bridge has nothing the guest may change */
	if (root->slot[slot].ops && root->slot[slot].ops->cfg_write)
		root->slot[slot].ops->cfg_write(root->slot[slot].opaque, reg, len, val);
}

static void addr_read(void *opaque, uint64_t off, uint8_t *data, unsigned len)
{
	struct pci_root *root = opaque;
	pthread_mutex_lock(&root->lock);
	uint32_t v = root->addr;
	pthread_mutex_unlock(&root->lock);
	for (unsigned i = 0; i < len; i++)
		data[i] = off + i < 4 ? (uint8_t)(v >> (8 * (off + i))) : 0;
}

static void addr_write(void *opaque, uint64_t off, const uint8_t *data, unsigned len)
{
	struct pci_root *root = opaque;
	/* Only a full dword write to 0xCF8 changes the address (0xCF9 is a reset port elsewhere). */
	if (off != 0 || len != 4)
		return;
	uint32_t v = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
		     (uint32_t)data[3] << 24;
	pthread_mutex_lock(&root->lock);
	root->addr = v;
	pthread_mutex_unlock(&root->lock);
}

/* Decode the latched address; returns 0 when it selects something on bus 0. */
static int decode(uint32_t a, unsigned *slot, unsigned *fn, unsigned *reg)
{
	if (!(a & CFG_ENABLE) || ((a >> 16) & 0xff) != 0)
		return -1;
	*slot = (a >> 11) & 0x1f;
	*fn = (a >> 8) & 0x7;
	*reg = a & 0xfc;
	return 0;
}

static void data_read(void *opaque, uint64_t off, uint8_t *data, unsigned len)
{
	struct pci_root *root = opaque;
	unsigned slot, fn, reg;
	uint32_t v = 0xffffffffu;
	if (off + len > 4)
		len = (unsigned)(4 - off);
	pthread_mutex_lock(&root->lock);
	if (decode(root->addr, &slot, &fn, &reg) == 0)
		v = pci_root_cfg_read(root, slot, fn, reg + (unsigned)off, len);
	pthread_mutex_unlock(&root->lock);
	for (unsigned i = 0; i < len; i++)
		data[i] = (uint8_t)(v >> (8 * i));
}

static void data_write(void *opaque, uint64_t off, const uint8_t *data, unsigned len)
{
	struct pci_root *root = opaque;
	unsigned slot, fn, reg;
	if (off + len > 4)
		len = (unsigned)(4 - off);
	uint32_t v = 0;
	for (unsigned i = 0; i < len; i++)
		v |= (uint32_t)data[i] << (8 * i);
	pthread_mutex_lock(&root->lock);
	if (decode(root->addr, &slot, &fn, &reg) == 0)
		pci_root_cfg_write(root, slot, fn, reg + (unsigned)off, len, v);
	pthread_mutex_unlock(&root->lock);
}

static const struct bus_ops addr_ops = {.name = "pci-addr", .read = addr_read, .write = addr_write};
static const struct bus_ops data_ops = {.name = "pci-data", .read = data_read, .write = data_write};

int pci_root_attach(struct pci_root *root, struct bus *pio)
{
	int r = bus_add(pio, 0xcf8, 4, &addr_ops, root);
	if (r < 0)
		return r;
	return bus_add(pio, 0xcfc, 4, &data_ops, root);
}

void pci_root_destroy(struct pci_root *root)
{
	pthread_mutex_destroy(&root->lock);
}
