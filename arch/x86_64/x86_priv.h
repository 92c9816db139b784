/*
 * Private to arch/x86_64/: the state one x86_load call carries between the
 * format loaders (ELF, bzImage) and the common steps (command line, initrd,
 * zero page, PVH start info), plus bounds-checked file and guest-range helpers.
 * Kernel and initrd files are hostile input: every header field is checked.
 */
#ifndef RINGVM_ARCH_X86_64_X86_PRIV_H
#define RINGVM_ARCH_X86_64_X86_PRIV_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "arch/x86_64/boot.h"

/* Bytes of the bzImage setup header copied into the zero page: [0x1f1, 0x290). */
#define X86_SETUP_HDR_OFF 0x1f1
#define X86_SETUP_HDR_END 0x290

/* What a format loader found and loaded. */
struct x86_kernel {
	enum x86_entry_kind kind;
	uint64_t entry;
	uint64_t start, end; /* loaded extent (bzImage: up to load + init_size) */
	const char *format;
	uint64_t cmdline_max;    /* longest command line, NUL excluded */
	uint64_t initrd_end_max; /* the initrd must end at or below this address */
	/* LINUX64 only: setup header bytes from file offset 0x1f1 (0 bytes → synthesize one). */
	uint8_t hdr[X86_SETUP_HDR_END - X86_SETUP_HDR_OFF];
	size_t hdr_len;
};

struct x86_ctx {
	struct guest_mem *mem;
	const struct x86_boot_config *cfg;
	char *err;
	size_t errlen;
	const char *path; /* file being read, for messages */
	int fd;
	uint64_t fsize;
	uint64_t low_end; /* end of the RAM region at 0 (≤ 3 GiB) */
	struct x86_kernel k;
};

/* Format a one-line message into c->err and return ret (a negative errno). */
int x86_fail(struct x86_ctx *c, int ret, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Read exactly len bytes at off; the caller has already checked off + len ≤ fsize. */
int x86_read(struct x86_ctx *c, void *buf, size_t len, uint64_t off)
    __attribute__((warn_unused_result));

/* Copy [off, off+len) of the open file to guest [gpa, gpa+len) (checked by the caller). */
int x86_copy_to_guest(struct x86_ctx *c, uint64_t gpa, uint64_t off, uint64_t len)
    __attribute__((warn_unused_result));

/*
 * Check that what ([gpa, gpa+len)) lies in RAM above the boot data (≥ 1 MiB),
 * off the PCI hole and inside one RAM region; otherwise report why.
 */
int x86_check_range(struct x86_ctx *c, const char *what, uint64_t gpa, uint64_t len)
    __attribute__((warn_unused_result));

/* True when [off, off+len) lies inside the file (overflow-safe). */
static inline int x86_in_file(const struct x86_ctx *c, uint64_t off, uint64_t len)
{
	return off <= c->fsize && len <= c->fsize - off;
}

/* Format loaders: parse, validate and copy the image; fill c->k. */
int x86_elf_load(struct x86_ctx *c) __attribute__((warn_unused_result));
int x86_bzimage_load(struct x86_ctx *c) __attribute__((warn_unused_result));

/* Boot-argument writers: the Linux zero page and the PVH hvm_start_info. */
int x86_zero_page_write(struct x86_ctx *c, const struct x86_boot_info *info)
    __attribute__((warn_unused_result));
int x86_pvh_write(struct x86_ctx *c, const struct x86_boot_info *info)
    __attribute__((warn_unused_result));

/* Little-endian stores and loads at byte offsets (the boot structures are LE, packed). */
static inline void x86_put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, sizeof(v));
}
static inline void x86_put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}
static inline void x86_put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, sizeof(v));
}
static inline uint16_t x86_get16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}
static inline uint32_t x86_get32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}
static inline uint64_t x86_get64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

/* Sum of bytes, for the MP and ACPI checksums (a table is valid when it sums to 0). */
static inline uint8_t x86_sum8(const uint8_t *p, size_t len)
{
	uint8_t s = 0;
	for (size_t i = 0; i < len; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

#endif
