/*
 * Shared by the arch/ unit tests: guest RAM built by hand over an anonymous
 * mapping (no memfd, laid out by arch_ram_layout like guest_mem_create does),
 * and kernel/initrd images written to temporary files for x86_load.
 */
#ifndef RINGVM_TESTS_UNIT_ARCH_FIXTURE_H
#define RINGVM_TESTS_UNIT_ARCH_FIXTURE_H

#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "arch/arch.h"
#include "arch/x86_64/boot.h"
#include "arch/x86_64/layout.h"

#define MIB (1024ull * 1024)
#define GIB (1024ull * MIB)

/* RAM of ram bytes; pages are only touched when written (MAP_NORESERVE), so 8 GiB is cheap. */
static inline void arch_mem_init(struct guest_mem *m, uint64_t ram)
{
	memset(m, 0, sizeof(*m));
	m->memfd = -1;
	m->map = mmap(NULL, ram, PROT_READ | PROT_WRITE,
	              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	cr_assert(m->map != MAP_FAILED, "mmap %llu bytes", (unsigned long long)ram);
	m->map_size = ram;
	int n = arch_ram_layout(ram, m->regions, GUEST_MEM_MAX_REGIONS);
	cr_assert(n > 0);
	m->nregions = (unsigned)n;
	for (int i = 0; i < n; i++)
		m->regions[i].host = m->map + m->regions[i].fd_off;
}

static inline void arch_mem_fini(struct guest_mem *m)
{
	if (m->map)
		munmap(m->map, m->map_size);
	m->map = NULL;
}

static inline void *arch_gpa(struct guest_mem *m, uint64_t gpa, uint64_t len)
{
	void *p = guest_mem_ptr(m, gpa, len);
	cr_assert(p, "gpa 0x%llx+0x%llx not in RAM", (unsigned long long)gpa,
	          (unsigned long long)len);
	return p;
}

/* Write len bytes to a new temp file; path must hold 32 bytes. Caller unlinks. */
static inline void arch_write_tmp(char *path, const void *buf, size_t len)
{
	strcpy(path, "/tmp/ringvm-arch-XXXXXX");
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert(write(fd, buf, len) == (ssize_t)len);
	close(fd);
}

static inline uint32_t arch_le32(const void *p)
{
	uint32_t v;
	memcpy(&v, p, 4);
	return v;
}

static inline uint64_t arch_le64(const void *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v;
}

static inline uint16_t arch_le16(const void *p)
{
	uint16_t v;
	memcpy(&v, p, 2);
	return v;
}

/* The probe guest's AP trampoline page: the loaders must never write there. */
static inline void arch_mark_trampoline(struct guest_mem *m)
{
	memset(arch_gpa(m, X86_TRAMPOLINE_START, 0x1000), 0xcc, 0x1000);
}

static inline void arch_assert_trampoline(struct guest_mem *m)
{
	const uint8_t *p = arch_gpa(m, X86_TRAMPOLINE_START, 0x1000);
	for (int i = 0; i < 0x1000; i++)
		cr_assert_eq(p[i], 0xcc, "trampoline page byte 0x%x was written", i);
}

#endif
