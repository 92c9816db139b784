/*
 * What core/ asks of the architecture layer, independent of the boot format:
 * the guest RAM layout. Boot loading lives in arch/x86_64/boot.h.
 */
#ifndef RINGVM_ARCH_ARCH_H
#define RINGVM_ARCH_ARCH_H

#include <stdint.h>

#include "core/guest_mem.h"

/*
 * Split ram_size bytes of RAM into guest regions (gpa, size, fd_off; host is
 * left for the caller), sorted by gpa, never overlapping the MMIO hole.
 * Returns the number of regions written (≤ max) or -EINVAL when ram_size is 0,
 * not 4 KiB aligned, or too large for the address space.
 */
int arch_ram_layout(uint64_t ram_size, struct guest_region *regions, unsigned max)
    __attribute__((warn_unused_result));

#endif
