/* guest_mem: layout across the PCI hole, translation bounds and overflow, sealing. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/x86_64/layout.h"
#include "core/guest_mem.h"

Test(core_guest_mem, small_ram_one_region)
{
	struct guest_mem m;
	cr_assert_eq(guest_mem_create(&m, 64 << 20), 0);
	cr_assert_eq(m.nregions, 1);
	cr_assert_eq(guest_mem_size(&m), 64 << 20);
	cr_assert_not_null(guest_mem_ptr(&m, 0, 64 << 20));
	cr_assert_not_null(guest_mem_ptr(&m, (64 << 20) - 1, 1));
	cr_assert_not_null(guest_mem_ptr(&m, 64 << 20, 0)); /* empty range at the end */
	cr_assert_null(guest_mem_ptr(&m, (64 << 20) - 1, 2));
	cr_assert_null(guest_mem_ptr(&m, 64 << 20, 1));
	cr_assert_null(guest_mem_ptr(&m, 1, UINT64_MAX)); /* wraps */
	cr_assert_null(guest_mem_ptr(&m, UINT64_MAX, 2));
	guest_mem_destroy(&m);
}

Test(core_guest_mem, large_ram_splits_around_hole)
{
	struct guest_mem m;
	uint64_t size = 4ull << 30;
	cr_assert_eq(guest_mem_create(&m, size), 0);
	cr_assert_eq(m.nregions, 2);
	cr_assert_eq(m.regions[0].gpa, 0);
	cr_assert_eq(m.regions[0].size, X86_MMIO_HOLE_START);
	cr_assert_eq(m.regions[1].gpa, X86_HIGH_RAM_START);
	cr_assert_eq(m.regions[1].size, size - X86_MMIO_HOLE_START);
	/* A range crossing from low RAM into the hole is refused. */
	cr_assert_null(guest_mem_ptr(&m, X86_MMIO_HOLE_START - 8, 16));
	cr_assert_null(guest_mem_ptr(&m, X86_LAPIC_ADDR, 4));
	cr_assert_not_null(guest_mem_ptr(&m, X86_HIGH_RAM_START, 4096));
	/* Both regions are slices of one mapping: writes show through the memfd offset. */
	uint8_t *hi = guest_mem_ptr(&m, X86_HIGH_RAM_START, 1);
	*hi = 0x42;
	uint8_t b = 0;
	cr_assert_eq(pread(m.memfd, &b, 1, (off_t)X86_MMIO_HOLE_START), 1);
	cr_assert_eq(b, 0x42);
	cr_assert_null(guest_mem_ptr(&m, X86_HIGH_RAM_START + (size - X86_MMIO_HOLE_START), 1));
	guest_mem_destroy(&m);
}

Test(core_guest_mem, memfd_is_sealed)
{
	struct guest_mem m;
	cr_assert_eq(guest_mem_create(&m, 16 << 20), 0);
	int seals = fcntl(m.memfd, F_GET_SEALS);
	cr_assert(seals & F_SEAL_SHRINK);
	cr_assert(seals & F_SEAL_GROW);
	cr_assert_eq(ftruncate(m.memfd, 4096), -1);
	cr_assert_eq(ftruncate(m.memfd, 32 << 20), -1);
	/* A second mapping through guest_mem_map_fd sees the same bytes. */
	struct guest_mem m2;
	int fd2 = dup(m.memfd);
	cr_assert_eq(guest_mem_map_fd(&m2, fd2), 0);
	*(uint8_t *)guest_mem_ptr(&m, 0x1000, 1) = 7;
	cr_assert_eq(*(uint8_t *)guest_mem_ptr(&m2, 0x1000, 1), 7);
	guest_mem_destroy(&m2);
	guest_mem_destroy(&m);
}

Test(core_guest_mem, bad_sizes)
{
	struct guest_mem m;
	cr_assert_eq(guest_mem_create(&m, 0), -EINVAL);
	cr_assert_eq(guest_mem_create(&m, 4097), -EINVAL);
	cr_assert_eq(guest_mem_create(&m, 1ull << 50), -EINVAL);
}

Test(core_guest_mem, unsealed_fd_refused)
{
	struct guest_mem m;
	int fd = memfd_create("x", MFD_CLOEXEC);
	cr_assert_geq(fd, 0);
	cr_assert_eq(ftruncate(fd, 1 << 20), 0);
	cr_assert_eq(guest_mem_map_fd(&m, fd), -EPERM);
	close(fd);
}

/* guest_mem_zero: every byte of the range reads zero afterwards (whole pages
 * punched from the memfd, unaligned edges written), nothing outside changes,
 * and the shared mapping another process would use sees the same. */
Test(core_guest_mem, zero_range_punches_and_keeps_edges)
{
	struct guest_mem m;
	cr_assert_eq(guest_mem_create(&m, 16 << 20), 0);
	uint8_t *p = guest_mem_ptr(&m, 0, 16 << 20);
	memset(p, 0xAB, 64 << 10);
	uint64_t gpa = 4096 + 123, len = 5 * 4096 + 77;
	struct stat before, after;
	cr_assert_eq(fstat(m.memfd, &before), 0);
	cr_assert_eq(guest_mem_zero(&m, gpa, len), 0);
	cr_assert_eq(fstat(m.memfd, &after), 0);
	/* Pages 2-5 lie wholly inside: punched, not written (512-byte blocks). */
	cr_assert_leq(after.st_blocks, before.st_blocks - 4 * 8, "blocks %lld -> %lld",
		      (long long)before.st_blocks, (long long)after.st_blocks);
	for (uint64_t i = 0; i < 64 << 10; i++) {
		uint8_t want = i >= gpa && i < gpa + len ? 0 : 0xAB;
		cr_assert_eq(p[i], want, "byte %llu is %#x", (unsigned long long)i, p[i]);
	}
	/* A second mapping of the memfd (what a device process maps) agrees. */
	uint8_t *q = mmap(NULL, 64 << 10, PROT_READ, MAP_SHARED, m.memfd, 0);
	cr_assert_neq(q, MAP_FAILED);
	cr_assert_eq(memcmp(p, q, 64 << 10), 0);
	munmap(q, 64 << 10);
	/* Small ranges (no whole page) and ranges outside RAM. */
	memset(p, 0xCD, 100);
	cr_assert_eq(guest_mem_zero(&m, 10, 20), 0);
	cr_assert_eq(p[9], 0xCD);
	cr_assert_eq(p[10], 0);
	cr_assert_eq(p[29], 0);
	cr_assert_eq(p[30], 0xCD);
	cr_assert_eq(guest_mem_zero(&m, (16 << 20) - 4, 8), -EFAULT);
	guest_mem_destroy(&m);
}
