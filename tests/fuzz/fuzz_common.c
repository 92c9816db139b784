/*
 * Helpers every fuzz target shares (see fuzz.h): a fake two-region guest
 * RAM and memfd-backed files, so targets never touch the host's filesystem.
 */
#define FUZZ_TARGET common
#include "tests/fuzz/fuzz.h"

#include <sys/mman.h>
#include <unistd.h>

static uint8_t ram[FUZZ_RAM0 + FUZZ_RAM1] __attribute__((aligned(4096)));

void fuzz_ram_init(struct guest_mem *m, const uint8_t *img, size_t len)
{
	memset(ram, 0, sizeof(ram));
	memcpy(ram, img, len < sizeof(ram) ? len : sizeof(ram));
	memset(m, 0, sizeof(*m));
	m->memfd = -1;
	m->map = ram;
	m->map_size = sizeof(ram);
	m->nregions = 2;
	m->regions[0] = (struct guest_region){.gpa = 0, .size = FUZZ_RAM0, .fd_off = 0, .host = ram};
	m->regions[1] = (struct guest_region){
	    .gpa = FUZZ_RAM1_GPA, .size = FUZZ_RAM1, .fd_off = FUZZ_RAM0, .host = ram + FUZZ_RAM0};
}

int fuzz_ram_contains(const struct guest_mem *m, const void *p, size_t len)
{
	const uint8_t *b = p;
	for (unsigned i = 0; i < m->nregions; i++) {
		const struct guest_region *r = &m->regions[i];
		if (b >= r->host && b <= r->host + r->size && len <= (size_t)(r->host + r->size - b))
			return 1;
	}
	return 0;
}

int fuzz_memfd(const char *name, const uint8_t *data, size_t size)
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t done = 0;
	while (done < size) {
		ssize_t n = write(fd, data + done, size - done);
		if (n <= 0) {
			int e = n < 0 ? errno : EIO;
			close(fd);
			return -e;
		}
		done += (size_t)n;
	}
	return fd;
}

const char *fuzz_fd_path(int fd, char *buf, size_t len)
{
	snprintf(buf, len, "/proc/self/fd/%d", fd);
	return buf;
}
