/*
 * x86_load: opens the kernel, detects its format by content, and runs the
 * steps every format shares — command line, initrd placement, MP table and
 * the boot argument (zero page or PVH start info). Also the bounds-checked
 * file and guest-range helpers the format loaders use.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/x86_priv.h"

#define MIB (1024ull * 1024)

int x86_fail(struct x86_ctx *c, int ret, const char *fmt, ...)
{
	if (c->errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->err, c->errlen, fmt, ap);
		va_end(ap);
	}
	return ret;
}

int x86_read(struct x86_ctx *c, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = pread(c->fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return x86_fail(c, -errno, "%s: read at offset %llu: %s", c->path,
			                (unsigned long long)off, strerror(errno));
		if (n == 0) /* the file shrank under us after fstat */
			return x86_fail(c, -EIO, "%s: unexpected end of file at offset %llu",
			                c->path, (unsigned long long)off);
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int x86_copy_to_guest(struct x86_ctx *c, uint64_t gpa, uint64_t off, uint64_t len)
{
	uint8_t *dst = guest_mem_ptr(c->mem, gpa, len);
	if (!dst)
		return x86_fail(c, -EFAULT, "%s: [0x%llx, +0x%llx) is not guest RAM", c->path,
		                (unsigned long long)gpa, (unsigned long long)len);
	/* pread moves at most ~2 GiB per call; x86_read loops over short reads. */
	while (len) {
		size_t chunk = len > (1u << 30) ? (1u << 30) : (size_t)len;
		int ret = x86_read(c, dst, chunk, off);
		if (ret < 0)
			return ret;
		dst += chunk;
		off += chunk;
		len -= chunk;
	}
	return 0;
}

int x86_check_range(struct x86_ctx *c, const char *what, uint64_t gpa, uint64_t len)
{
	unsigned long long a = gpa, mib = guest_mem_size(c->mem) / MIB;
	if (len > UINT64_MAX - gpa)
		return x86_fail(c, -ENOEXEC, "%s: %s at 0x%llx + 0x%llx wraps the address space",
		                c->path, what, a, (unsigned long long)len);
	unsigned long long b = gpa + len;
	if (gpa < X86_HIGH_MEM_START)
		return x86_fail(c, -ENOEXEC,
		                "%s: %s [0x%llx, 0x%llx) overlaps the boot data area below 1 MiB",
		                c->path, what, a, b);
	if (gpa < X86_MMIO_HOLE_END && b > X86_MMIO_HOLE_START)
		return x86_fail(c, -ENOEXEC,
		                "%s: %s [0x%llx, 0x%llx) overlaps the PCI hole [3 GiB, 4 GiB)",
		                c->path, what, a, b);
	if (!guest_mem_valid(c->mem, gpa, len))
		return x86_fail(
		    c, -ENOMEM,
		    "%s: %s [0x%llx, 0x%llx) does not fit in %llu MiB of RAM (-m too small)",
		    c->path, what, a, b, mib);
	return 0;
}

static int open_file(struct x86_ctx *c, const char *path, const char *what)
{
	c->path = path;
	c->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (c->fd < 0)
		return x86_fail(c, -errno, "cannot open %s %s: %s", what, path, strerror(errno));
	struct stat st;
	int ret;
	if (fstat(c->fd, &st) < 0) {
		ret = x86_fail(c, -errno, "cannot stat %s %s: %s", what, path, strerror(errno));
		goto close_fd;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = x86_fail(c, -EINVAL, "%s %s is not a regular file", what, path);
		goto close_fd;
	}
	c->fsize = (uint64_t)st.st_size;
	return 0;
close_fd:
	close(c->fd);
	c->fd = -1;
	return ret;
}

static void close_file(struct x86_ctx *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

static int load_kernel(struct x86_ctx *c)
{
	int ret = open_file(c, c->cfg->kernel_path, "kernel");
	if (ret < 0)
		return ret;
	uint8_t magic[0x206] = {0};
	size_t n = c->fsize < sizeof(magic) ? (size_t)c->fsize : sizeof(magic);
	ret = x86_read(c, magic, n, 0);
	if (ret < 0)
		goto close_fd;
	if (n >= 4 && !memcmp(magic,
	                      "\x7f"
	                      "ELF",
	                      4))
		ret = x86_elf_load(c);
	else if (n >= 0x206 && !memcmp(magic + 0x202, "HdrS", 4))
		ret = x86_bzimage_load(c);
	else
		ret = x86_fail(c, -ENOEXEC, "%s: not an ELF64 or bzImage kernel", c->path);
close_fd:
	close_file(c);
	return ret;
}

/* Highest page-aligned spot below the limits that clears the kernel: Linux itself does so. */
static int load_initrd(struct x86_ctx *c, struct x86_boot_info *out)
{
	int ret = open_file(c, c->cfg->initrd_path, "initrd");
	if (ret < 0)
		return ret;
	uint64_t size = c->fsize;
	uint64_t top = c->low_end < c->k.initrd_end_max ? c->low_end : c->k.initrd_end_max;
	uint64_t floor = (c->k.end + 0xfff) & ~0xfffull;
	if (size == 0) {
		ret = x86_fail(c, -EINVAL, "initrd %s is empty", c->path);
		goto close_fd;
	}
	if (size > top || ((top - size) & ~0xfffull) < floor) {
		ret = x86_fail(c, -ENOMEM,
		               "initrd %s (%llu bytes) does not fit between the kernel end 0x%llx "
		               "and 0x%llx (-m too small)",
		               c->path, (unsigned long long)size, (unsigned long long)floor,
		               (unsigned long long)top);
		goto close_fd;
	}
	uint64_t start = (top - size) & ~0xfffull;
	ret = x86_check_range(c, "initrd", start, size);
	if (ret < 0)
		goto close_fd;
	ret = x86_copy_to_guest(c, start, 0, size);
	if (ret < 0)
		goto close_fd;
	out->initrd_start = start;
	out->initrd_size = size;
close_fd:
	close_file(c);
	return ret;
}

static int write_cmdline(struct x86_ctx *c)
{
	size_t len = strlen(c->cfg->cmdline);
	if (len > c->k.cmdline_max)
		return x86_fail(c, -E2BIG,
		                "command line is %zu bytes; this kernel accepts at most %llu", len,
		                (unsigned long long)c->k.cmdline_max);
	char *dst = guest_mem_ptr(c->mem, X86_CMDLINE_ADDR, len + 1);
	if (!dst) /* cannot happen: x86_load checked RAM covers 1 MiB */
		return x86_fail(c, -ENOMEM, "no RAM for the command line");
	memcpy(dst, c->cfg->cmdline, len + 1);
	return 0;
}

/* Zero what the loaders fill below 1 MiB, leaving [0x8000, 0x9000) to the guest. */
static void clear_boot_area(struct guest_mem *mem)
{
	(void)guest_mem_zero(mem, X86_GDT_ADDR, X86_TRAMPOLINE_START - X86_GDT_ADDR);
	(void)guest_mem_zero(mem, X86_TRAMPOLINE_END, X86_HIGH_MEM_START - X86_TRAMPOLINE_END);
}

int x86_load(struct guest_mem *mem, const struct x86_boot_config *cfg, struct x86_boot_info *out,
             char *err, size_t errlen)
{
	struct x86_ctx c = {.mem = mem, .cfg = cfg, .err = err, .errlen = errlen, .fd = -1};
	if (errlen)
		err[0] = '\0';
	if (!cfg->kernel_path || !cfg->cmdline)
		return x86_fail(&c, -EINVAL, "no kernel or command line given");
	if (cfg->ncpus < 1 || cfg->ncpus > X86_MAX_CPUS)
		return x86_fail(&c, -EINVAL, "%u vCPUs: the MP table supports 1 to %u", cfg->ncpus,
		                X86_MAX_CPUS);
	if (mem->nregions < 1 || mem->regions[0].gpa != 0 ||
	    mem->regions[0].size < X86_HIGH_MEM_START)
		return x86_fail(&c, -ENOMEM,
		                "guest RAM must cover at least the first 1 MiB (-m too small)");
	c.low_end = mem->regions[0].size;
	if (c.low_end > X86_MMIO_HOLE_START)
		c.low_end = X86_MMIO_HOLE_START;
	memset(out, 0, sizeof(*out));
	if (!cfg->mem_is_zero)
		clear_boot_area(mem);

	int ret = load_kernel(&c);
	if (ret < 0)
		return ret;
	out->kind = c.k.kind;
	out->entry = c.k.entry;
	out->kernel_start = c.k.start;
	out->kernel_end = c.k.end;
	out->format = c.k.format;
	out->boot_arg = c.k.kind == X86_ENTRY_PVH ? X86_PVH_INFO_ADDR : X86_ZERO_PAGE_ADDR;

	ret = write_cmdline(&c);
	if (ret < 0)
		return ret;
	if (cfg->initrd_path) {
		ret = load_initrd(&c, out);
		if (ret < 0)
			return ret;
	}
	ret = x86_mptable_write(mem, cfg->ncpus);
	if (ret < 0)
		return x86_fail(&c, ret, "cannot write the MP table");
	ret = x86_acpi_write(mem, cfg->ncpus);
	if (ret < 0)
		return x86_fail(&c, ret, "cannot write the ACPI tables");
	if (c.k.kind == X86_ENTRY_PVH)
		return x86_pvh_write(&c, out);
	return x86_zero_page_write(&c, out);
}
