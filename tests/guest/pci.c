/*
 * PCI configuration mechanism #1 (0xCF8/0xCFC) and a bump allocator for
 * BARs that firmware left unassigned (qboot assigns none). Each config
 * access costs ~30 µs on PVM hosts, so BARs are only sized when assigned.
 */
#include "probe.h"

#define PCI_CMD_IO  0x1
#define PCI_CMD_MEM 0x2

static uint64_t next_mem = 0xC0000000ull;
static const uint64_t mem_end = 0xFEC00000ull;
static uint32_t next_io = 0xC000;
static const uint32_t io_end = 0x10000;

static uint32_t cfg_addr(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
	return 0x80000000u | bus << 16 | dev << 11 | fn << 8 | (off & 0xfc);
}

uint32_t pci_cfg_read32(unsigned bus, unsigned dev, unsigned fn, unsigned off)
{
	outl(0xcf8, cfg_addr(bus, dev, fn, off));
	return inl(0xcfc);
}

void pci_cfg_write32(unsigned bus, unsigned dev, unsigned fn, unsigned off, uint32_t v)
{
	outl(0xcf8, cfg_addr(bus, dev, fn, off));
	outl(0xcfc, v);
}

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

uint64_t pci_bar_assign(unsigned bus, unsigned dev, unsigned fn, unsigned bar)
{
	unsigned off = 0x10 + 4 * bar;
	uint32_t orig = pci_cfg_read32(bus, dev, fn, off);
	bool io = orig & 1;
	bool is64 = !io && ((orig >> 1) & 3) == 2;
	uint64_t cur = io ? (orig & ~3u) : (orig & ~0xfu);
	uint32_t orig_hi = 0;
	if (is64) {
		orig_hi = pci_cfg_read32(bus, dev, fn, off + 4);
		cur |= (uint64_t)orig_hi << 32;
	}
	uint32_t cmd = pci_cfg_read32(bus, dev, fn, 0x04) & 0xffff;
	uint32_t enable = io ? PCI_CMD_IO : PCI_CMD_MEM;
	if (cur) {
		if (!(cmd & enable))
			pci_cfg_write32(bus, dev, fn, 0x04, cmd | enable);
		return cur;
	}

	/* Size it with decoding off, so the probe pattern never decodes. */
	pci_cfg_write32(bus, dev, fn, 0x04, cmd & ~(PCI_CMD_IO | PCI_CMD_MEM));
	pci_cfg_write32(bus, dev, fn, off, 0xffffffffu);
	uint64_t mask = pci_cfg_read32(bus, dev, fn, off);
	if (is64) {
		pci_cfg_write32(bus, dev, fn, off + 4, 0xffffffffu);
		mask |= (uint64_t)pci_cfg_read32(bus, dev, fn, off + 4) << 32;
	} else {
		mask |= 0xffffffff00000000ull;
	}
	mask &= io ? ~3ull : ~0xfull;
	uint64_t size = mask ? (~mask + 1) : 0;
	if (io)
		size &= 0xffff;

	uint64_t addr = 0;
	if (size && io) {
		uint64_t a = align_up(next_io, size);
		if (a + size <= io_end) {
			addr = a;
			next_io = (uint32_t)(a + size);
		}
	} else if (size) {
		uint64_t a = align_up(next_mem, size);
		if (a + size <= mem_end) {
			addr = a;
			next_mem = a + size;
		}
	}
	pci_cfg_write32(bus, dev, fn, off, (uint32_t)addr | (orig & (io ? 3 : 0xf)));
	if (is64)
		pci_cfg_write32(bus, dev, fn, off + 4, (uint32_t)(addr >> 32));
	pci_cfg_write32(bus, dev, fn, 0x04, addr ? (cmd | enable) : cmd);
	return addr;
}
