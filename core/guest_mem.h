/*
 * Guest physical memory: one memfd, sealed against shrinking and growing once
 * sized, mapped MAP_SHARED so device processes can map the same pages.
 * Regions are disjoint and sorted by guest address; translation succeeds only
 * when a whole (gpa, len) range lies inside one region.
 */
#ifndef RINGVM_CORE_GUEST_MEM_H
#define RINGVM_CORE_GUEST_MEM_H

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>


#define GUEST_MEM_MAX_REGIONS 4

struct guest_region {
	uint64_t gpa;      /* first guest-physical address */
	uint64_t size;     /* bytes */
	uint64_t fd_off;   /* offset of this region inside the memfd */
	uint8_t *host;     /* host mapping of the region */
};

struct guest_mem {
	int memfd;          /* -1 for memory not backed by a memfd (tests) */
	uint8_t *map;       /* whole memfd mapping (regions point into it) */
	uint64_t map_size;  /* bytes mapped at map == total RAM */
	unsigned nregions;
	struct guest_region regions[GUEST_MEM_MAX_REGIONS];
};

/* From arch/arch.h (declared here too: arch.h itself includes this header). */
int arch_ram_layout(uint64_t ram_size, struct guest_region *regions, unsigned max);

/*
 * Host pointer for [gpa, gpa+len) or NULL when any byte of it is outside a
 * single RAM region or the range wraps. len 0 is valid inside a region (and at
 * its very end). Lock-free and allocation-free: used on every device hot path.
 */
static inline void *guest_mem_ptr(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct guest_region *r = &m->regions[i];
		if (gpa < r->gpa)
			return NULL; /* sorted: gpa lies in a hole */
		uint64_t off = gpa - r->gpa;
		if (off > r->size)
			continue;
		if (len > r->size - off)
			return NULL; /* runs past the end of the region (or wraps) */
		return r->host + off;
	}
	return NULL;
}

/* True when [gpa, gpa+len) lies inside one RAM region. */
static inline int guest_mem_valid(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	return guest_mem_ptr(m, gpa, len) != NULL;
}

/*
 * Zero [gpa, gpa+len), which must lie inside one region (-EFAULT otherwise).
 * Whole pages of a memfd-backed range are punched out of the memfd instead
 * of written: they read as zeros all the same, and pages never touched (all
 * of fresh guest RAM, e.g. a kernel's bss at start-up) cost no page fault
 * and no host memory. Edges and test memory without a memfd get memset.
 */
static inline int guest_mem_zero(const struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	uint8_t *p = guest_mem_ptr(m, gpa, len);
	if (!p)
		return -EFAULT;
	if (m->memfd < 0) {
		memset(p, 0, len);
		return 0;
	}
	uint64_t off = (uint64_t)(p - m->map);
	uint64_t start = (off + 4095) & ~4095ull, end = (off + len) & ~4095ull;
	if (end <= start ||
	    fallocate(m->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)start,
		      (off_t)(end - start)) < 0) {
		memset(p, 0, len);
		return 0;
	}
	memset(p, 0, start - off);
	memset(m->map + end, 0, off + len - end);
	return 0;
}

/*
 * Create guest RAM of ram_size bytes laid out by arch_ram_layout() (RAM below
 * the 32-bit PCI hole, the rest above 4 GiB), backed by one sealed memfd.
 * Returns 0 or -errno (-EINVAL for a size of 0 or not a multiple of 4 KiB).
 */
int guest_mem_create(struct guest_mem *m, uint64_t ram_size) __attribute__((warn_unused_result));

/*
 * Map size bytes of m->memfd MAP_SHARED and point the regions at it
 * (layout from arch_ram_layout). Used by guest_mem_create and
 * guest_mem_map_fd. Returns 0 or -errno.
 */
static inline int guest_mem_map_regions(struct guest_mem *m, uint64_t size)
{
	int n = arch_ram_layout(size, m->regions, GUEST_MEM_MAX_REGIONS);
	if (n < 0)
		return n;
	/* MAP_NORESERVE: guest RAM is touched lazily; most guests never touch all of it. */
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, m->memfd, 0);
	if (p == MAP_FAILED)
		return -errno;
	m->map = (uint8_t *)p;
	m->map_size = size;
	m->nregions = (unsigned)n;
	for (int i = 0; i < n; i++)
		m->regions[i].host = m->map + m->regions[i].fd_off;
	return 0;
}

/*
 * Build a guest_mem over an existing memfd (a device process maps the memfd
 * it was handed). The memfd must be sealed against shrinking and growing
 * (-EPERM otherwise): only then can no one truncate RAM under a mapping.
 * The layout is recomputed from the memfd's size. Takes ownership of memfd
 * on success. Inline because device processes (devices/, below core/ in the
 * link order) map guest RAM too.
 */
static inline __attribute__((warn_unused_result)) int guest_mem_map_fd(struct guest_mem *m,
									int memfd)
{
	struct stat st;
	memset(m, 0, sizeof(*m));
	m->memfd = -1;
	if (fstat(memfd, &st) < 0)
		return -errno;
	int seals = fcntl(memfd, F_GET_SEALS);
	if (seals < 0)
		return -errno;
	if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) != (F_SEAL_SHRINK | F_SEAL_GROW))
		return -EPERM;
	m->memfd = memfd;
	int r = guest_mem_map_regions(m, (uint64_t)st.st_size);
	if (r < 0)
		m->memfd = -1;
	return r;
}

/* Unmap and close. Safe on a zeroed struct. */
void guest_mem_destroy(struct guest_mem *m);

/* Total RAM in bytes. */
static inline uint64_t guest_mem_size(const struct guest_mem *m)
{
	return m->map_size;
}

#endif
