/*
 * Fuzz target "x86_load": the x86-64 kernel loaders (arch/x86_64: PVH ELF
 * with its Xen note, plain ELF64, Linux bzImage; the format is detected from
 * the contents) on an untrusted kernel image, with the memory map, MP and
 * ACPI tables written into a 16 MiB guest RAM. Input: 1 byte, then the image.
 *   [0] bit 0 an initrd (4 KiB), bit 1 a long command line, bits 2-3 vCPUs
 * On success the kernel and entry point lie in RAM; on failure the message
 * is one terminated line.
 */
#define FUZZ_TARGET x86_load
#include "tests/fuzz/fuzz.h"

#include <string.h>
#include <unistd.h>

#include "arch/x86_64/boot.h"

#define RAM (16ull << 20)

static struct guest_mem mem;
static int initrd_fd = -1;
static char cmdline[4096];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	if (initrd_fd < 0) {
		static uint8_t rd[4096];
		FUZZ_CHECK(guest_mem_create(&mem, RAM) == 0, "guest RAM");
		memset(rd, 0x42, sizeof(rd));
		initrd_fd = fuzz_memfd("fuzz-initrd", rd, sizeof(rd));
		FUZZ_CHECK(initrd_fd >= 0, "initrd memfd");
		memset(cmdline, 'c', sizeof(cmdline) - 1);
	}
	int fd = fuzz_memfd("fuzz-kernel", data + 1, size - 1);
	if (fd < 0)
		return 0;
	char kpath[64], rpath[64], err[256];
	struct x86_boot_config cfg = {
	    .kernel_path = fuzz_fd_path(fd, kpath, sizeof(kpath)),
	    .initrd_path = data[0] & 1 ? fuzz_fd_path(initrd_fd, rpath, sizeof(rpath)) : NULL,
	    .cmdline = data[0] & 2 ? cmdline : "console=ttyS0",
	    .ncpus = 1u + ((data[0] >> 2) & 3),
	};
	struct x86_boot_info info;
	memset(err, 0x7f, sizeof(err));
	int r = x86_load(&mem, &cfg, &info, err, sizeof(err));
	if (r == 0) {
		FUZZ_CHECK(info.kernel_start <= info.kernel_end, "kernel extent inverted");
		FUZZ_CHECK(guest_mem_valid(&mem, info.kernel_start,
		                           info.kernel_end - info.kernel_start),
		           "kernel [%#llx, %#llx) outside RAM", (unsigned long long)info.kernel_start,
		           (unsigned long long)info.kernel_end);
		FUZZ_CHECK(guest_mem_valid(&mem, info.entry, 1), "entry %#llx outside RAM",
		           (unsigned long long)info.entry);
		FUZZ_CHECK(!info.initrd_size ||
		               guest_mem_valid(&mem, info.initrd_start, info.initrd_size),
		           "initrd outside RAM");
	} else {
		FUZZ_CHECK(memchr(err, 0, sizeof(err)) && err[0], "error %d without a message", r);
	}
	close(fd);
	return 0;
}
