/*
 * `pci`: scans bus 0 (function 0 of each slot, the others only for
 * multi-function devices) and prints each function's ids, class, the BARs
 * as programmed (not sized: that costs config accesses) and capability ids.
 * Line: PROBE pci dev=BB:DD.F vendor= device= class= hdr= bars=i:kind:addr,...|- caps=id,...|-
 */
#include "probe.h"

#define MAX_CAPS 48

static void print_function(unsigned dev, unsigned fn, uint32_t id, uint32_t hdr)
{
	uint32_t class = pci_cfg_read32(0, dev, fn, 0x08) >> 8;
	unsigned type = hdr & 0x7f;
	unsigned nbars = type == 0 ? 6 : type == 1 ? 2 : 0;

	probe_printf(
	    "PROBE pci dev=00:%02x.%u vendor=0x%04x device=0x%04x class=0x%06x hdr=0x%02x bars=",
	    dev, fn, id & 0xffff, id >> 16, class, hdr);
	bool any = false;
	for (unsigned i = 0; i < nbars; i++) {
		uint32_t v = pci_cfg_read32(0, dev, fn, 0x10 + 4 * i);
		const char *kind;
		uint64_t addr;
		unsigned idx = i;
		if (v & 1) {
			kind = "io";
			addr = v & ~3u;
		} else if (((v >> 1) & 3) == 2 && i + 1 < nbars) {
			kind = "m64";
			addr = (v & ~0xfu) | (uint64_t)pci_cfg_read32(0, dev, fn, 0x14 + 4 * i)
			                         << 32;
			i++;
		} else {
			kind = "m32";
			addr = v & ~0xfu;
		}
		if (!addr)
			continue;
		probe_printf("%s%u:%s:0x%lx", any ? "," : "", idx, kind, addr);
		any = true;
	}
	if (!any)
		probe_printf("-");

	probe_printf(" caps=");
	any = false;
	uint32_t status = pci_cfg_read32(0, dev, fn, 0x04) >> 16;
	if (status & 0x10) {
		unsigned ptr = pci_cfg_read32(0, dev, fn, 0x34) & 0xfc;
		for (unsigned n = 0; ptr && n < MAX_CAPS; n++) {
			uint32_t cap = pci_cfg_read32(0, dev, fn, ptr);
			probe_printf("%s0x%02x", any ? "," : "", cap & 0xff);
			any = true;
			ptr = (cap >> 8) & 0xfc;
		}
	}
	probe_printf("%s\n", any ? "" : "-");
}

const char *test_pci(void)
{
	unsigned count = 0;
	for (unsigned dev = 0; dev < 32; dev++) {
		uint32_t id = pci_cfg_read32(0, dev, 0, 0x00);
		if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0)
			continue;
		uint32_t hdr = (pci_cfg_read32(0, dev, 0, 0x0c) >> 16) & 0xff;
		unsigned nfn = (hdr & 0x80) ? 8 : 1;
		for (unsigned fn = 0; fn < nfn; fn++) {
			if (fn) {
				id = pci_cfg_read32(0, dev, fn, 0x00);
				if ((id & 0xffff) == 0xffff || (id & 0xffff) == 0)
					continue;
				hdr = (pci_cfg_read32(0, dev, fn, 0x0c) >> 16) & 0xff;
			}
			print_function(dev, fn, id, hdr);
			count++;
		}
	}
	probe_printf("PROBE pci count=%u\n", count);
	return count ? NULL : "no-devices";
}
