/*
 * Linux bzImage (boot protocol ≥ 2.06, Documentation/arch/x86/boot.rst):
 * validates the setup header, places the protected-mode kernel at its
 * preferred address (or the lowest aligned one above 1 MiB when relocatable),
 * copies it there and keeps the header for the zero page. Entry is the 64-bit
 * entry point, load address + 0x200.
 */
#include <errno.h>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/x86_priv.h"

/* Setup header fields, as file offsets. */
#define HDR_SETUP_SECTS  0x1f1
#define HDR_SYSSIZE      0x1f4
#define HDR_JUMP         0x200
#define HDR_VERSION      0x206
#define HDR_INITRD_MAX   0x22c
#define HDR_ALIGN        0x230
#define HDR_RELOCATABLE  0x234
#define HDR_XLOADFLAGS   0x236
#define HDR_CMDLINE_SIZE 0x238
#define HDR_PREF_ADDRESS 0x258
#define HDR_INIT_SIZE    0x260

#define XLF_KERNEL_64     0x1
#define ENTRY64_OFFSET    0x200
#define DEFAULT_LOAD_ADDR 0x100000ull

/* Where the kernel goes: [load, load + init_size) must be RAM above 1 MiB. */
static int place_kernel(struct x86_ctx *c, const uint8_t *h, uint16_t version, uint64_t init_size,
                        uint64_t *load)
{
	int relocatable = version >= 0x205 && h[HDR_RELOCATABLE];
	uint64_t pref = version >= 0x20a ? x86_get64(h + HDR_PREF_ADDRESS) : DEFAULT_LOAD_ADDR;
	if (!relocatable) {
		*load = pref;
		return x86_check_range(c, "kernel", pref, init_size);
	}
	uint64_t align = x86_get32(h + HDR_ALIGN);
	if (align < 0x1000 || align > (1ull << 30) || (align & (align - 1)))
		return x86_fail(c, -ENOEXEC, "%s: bad kernel_alignment 0x%llx", c->path,
		                (unsigned long long)align);
	char discard[1];
	/* A preferred address that fits is taken silently; only the fallback may fail. */
	struct x86_ctx quiet = *c;
	quiet.err = discard;
	quiet.errlen = sizeof(discard);
	if (!(pref & (align - 1)) && x86_check_range(&quiet, "kernel", pref, init_size) == 0) {
		*load = pref;
		return 0;
	}
	*load = (X86_HIGH_MEM_START + align - 1) & ~(align - 1);
	return x86_check_range(c, "kernel", *load, init_size);
}

int x86_bzimage_load(struct x86_ctx *c)
{
	uint8_t h[X86_SETUP_HDR_END] = {0};
	/* Protocol 2.06 ends its header at cmdline_size (0x23c); newer fields are read as 0. */
	if (c->fsize < HDR_CMDLINE_SIZE + 4)
		return x86_fail(c, -ENOEXEC, "%s: truncated bzImage header (%llu bytes)", c->path,
		                (unsigned long long)c->fsize);
	size_t n = c->fsize < sizeof(h) ? (size_t)c->fsize : sizeof(h);
	int ret = x86_read(c, h, n, 0);
	if (ret < 0)
		return ret;
	uint16_t version = x86_get16(h + HDR_VERSION);
	if (version < 0x206)
		return x86_fail(c, -ENOEXEC,
		                "%s: boot protocol %u.%02u is too old (2.06 or newer needed)",
		                c->path, version >> 8, version & 0xff);
	if (version >= 0x20c && !(x86_get16(h + HDR_XLOADFLAGS) & XLF_KERNEL_64))
		return x86_fail(c, -ENOEXEC, "%s: bzImage has no 64-bit entry point", c->path);

	uint64_t setup_sects = h[HDR_SETUP_SECTS] ? h[HDR_SETUP_SECTS] : 4;
	uint64_t setup_size = (setup_sects + 1) * 512;
	if (setup_size >= c->fsize)
		return x86_fail(c, -ENOEXEC,
		                "%s: truncated bzImage: %llu setup bytes, file has %llu", c->path,
		                (unsigned long long)setup_size, (unsigned long long)c->fsize);
	uint64_t ksize = c->fsize - setup_size;
	uint64_t syssize = (uint64_t)x86_get32(h + HDR_SYSSIZE) * 16;
	if (syssize > ksize)
		return x86_fail(c, -ENOEXEC,
		                "%s: truncated bzImage: kernel is %llu bytes, header says %llu",
		                c->path, (unsigned long long)ksize, (unsigned long long)syssize);
	/* init_size covers the decompressor's working area: reserve all of it. */
	uint64_t init_size = version >= 0x20a ? x86_get32(h + HDR_INIT_SIZE) : 0;
	if (init_size < ksize)
		init_size = ksize;

	uint64_t load = 0;
	ret = place_kernel(c, h, version, init_size, &load);
	if (ret < 0)
		return ret;
	ret = x86_copy_to_guest(c, load, setup_size, ksize);
	if (ret < 0)
		return ret;
	(void)guest_mem_zero(c->mem, load + ksize, init_size - ksize);

	c->k.kind = X86_ENTRY_LINUX64;
	c->k.format = "bzImage";
	c->k.entry = load + ENTRY64_OFFSET;
	c->k.start = load;
	c->k.end = load + init_size;
	c->k.cmdline_max = x86_get32(h + HDR_CMDLINE_SIZE);
	if (c->k.cmdline_max > X86_CMDLINE_MAX - 1)
		c->k.cmdline_max = X86_CMDLINE_MAX - 1;
	/* initrd_addr_max is the highest address the initrd may occupy (inclusive). */
	c->k.initrd_end_max = (uint64_t)x86_get32(h + HDR_INITRD_MAX) + 1;

	/* The header ends at 0x202 + the jump's displacement byte (boot.rst). */
	uint64_t end = 0x202 + (uint64_t)h[HDR_JUMP + 1];
	if (end > n)
		end = n;
	c->k.hdr_len = (size_t)(end - X86_SETUP_HDR_OFF);
	memcpy(c->k.hdr, h + X86_SETUP_HDR_OFF, c->k.hdr_len);
	return 0;
}
