/*
 * x86-64 guest RAM layout: low RAM up to the 32-bit PCI hole, the rest above
 * 4 GiB. The memfd is one contiguous file; each region maps a slice of it.
 */
#include <errno.h>

#include "arch/arch.h"
#include "arch/x86_64/layout.h"

/* 1 TiB of guest RAM is far beyond what these hosts give, and keeps gpa math in range. */
#define X86_MAX_RAM (1ull << 40)

int arch_ram_layout(uint64_t ram_size, struct guest_region *regions, unsigned max)
{
	if (ram_size == 0 || (ram_size & 0xfff) || ram_size > X86_MAX_RAM || max < 2)
		return -EINVAL;
	uint64_t low = ram_size < X86_MMIO_HOLE_START ? ram_size : X86_MMIO_HOLE_START;
	regions[0] = (struct guest_region){.gpa = 0, .size = low, .fd_off = 0};
	if (low == ram_size)
		return 1;
	regions[1] =
	    (struct guest_region){.gpa = X86_HIGH_RAM_START, .size = ram_size - low, .fd_off = low};
	return 2;
}
