/*
 * Guest RAM creation: one memfd sized once and sealed against shrink/grow
 * (a device process holding it can then never truncate RAM under the VM),
 * mapped once MAP_SHARED; regions are slices of that one mapping.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/arch.h"
#include "core/guest_mem.h"

int guest_mem_create(struct guest_mem *m, uint64_t ram_size)
{
	struct guest_region probe[GUEST_MEM_MAX_REGIONS];
	memset(m, 0, sizeof(*m));
	m->memfd = -1;
	int r = arch_ram_layout(ram_size, probe, GUEST_MEM_MAX_REGIONS);
	if (r < 0)
		return r;
	m->memfd = memfd_create("ringvm-guest-ram", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (m->memfd < 0)
		return -errno;
	if (ftruncate(m->memfd, (off_t)ram_size) < 0) {
		r = -errno;
		goto err_close;
	}
	if (fcntl(m->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
		r = -errno;
		goto err_close;
	}
	r = guest_mem_map_regions(m, ram_size);
	if (r < 0)
		goto err_close;
	return 0;
err_close:
	close(m->memfd);
	m->memfd = -1;
	return r;
}

void guest_mem_destroy(struct guest_mem *m)
{
	if (m->map)
		munmap(m->map, m->map_size);
	if (m->memfd >= 0)
		close(m->memfd);
	memset(m, 0, sizeof(*m));
	m->memfd = -1;
}
