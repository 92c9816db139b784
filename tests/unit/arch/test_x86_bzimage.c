/*
 * bzImage loading: a crafted protocol-2.15 image lands at pref_address (or
 * the aligned fallback when that does not fit), its setup header reaches the
 * zero page with the loader's fields, the initrd goes as high as allowed; and
 * each malformed header is refused with a clear message (table-driven).
 */
#include <errno.h>

#include "tests/unit/arch/arch_fixture.h"

#define SETUP_SECTS 4
#define PM_OFF      ((SETUP_SECTS + 1) * 512)
#define PM_SIZE     0x2000
#define BZ_SIZE     (PM_OFF + PM_SIZE)
#define PREF        0x1000000ull /* 16 MiB, as Debian's kernels */
#define INIT_SIZE   0x100000u

struct bz_img {
	uint8_t b[BZ_SIZE];
	size_t len;
};

static void put16(uint8_t *p, uint16_t v)
{
	memcpy(p, &v, 2);
}
static void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}
static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static void make_bz(struct bz_img *im)
{
	memset(im, 0, sizeof(*im));
	im->len = BZ_SIZE;
	uint8_t *b = im->b;
	b[0x1f1] = SETUP_SECTS;
	put32(b + 0x1f4, PM_SIZE / 16); /* syssize */
	put16(b + 0x1fa, 0xffff);       /* vid_mode */
	put16(b + 0x1fe, 0xaa55);       /* boot_flag */
	b[0x200] = 0xeb;                /* jmp short to the end of the header: */
	b[0x201] = 0x268 - 0x202;       /* 0x202 + 0x66 = 0x268 */
	memcpy(b + 0x202, "HdrS", 4);
	put16(b + 0x206, 0x020f);     /* protocol 2.15 */
	b[0x211] = 0x01;              /* loadflags: LOADED_HIGH */
	put32(b + 0x214, 0x100000);   /* code32_start */
	put32(b + 0x22c, 0x7fffffff); /* initrd_addr_max */
	put32(b + 0x230, 0x200000);   /* kernel_alignment */
	b[0x234] = 1;                 /* relocatable */
	b[0x235] = 21;                /* min_alignment */
	put16(b + 0x236, 0x3);        /* XLF_KERNEL_64 | CAN_BE_LOADED_ABOVE_4G */
	put32(b + 0x238, 0x7ff);      /* cmdline_size */
	put64(b + 0x258, PREF);       /* pref_address */
	put32(b + 0x260, INIT_SIZE);  /* init_size */
	for (int i = 0; i < PM_SIZE; i++)
		b[PM_OFF + i] = (uint8_t)(i * 7 + 3);
}

static int load(struct guest_mem *m, const struct bz_img *im, const char *cmdline,
                const void *initrd, size_t initrd_len, struct x86_boot_info *info, char *err)
{
	char kpath[32], ipath[32];
	arch_write_tmp(kpath, im->b, im->len);
	if (initrd)
		arch_write_tmp(ipath, initrd, initrd_len);
	struct x86_boot_config cfg = {.kernel_path = kpath,
	                              .initrd_path = initrd ? ipath : NULL,
	                              .cmdline = cmdline,
	                              .ncpus = 1};
	int ret = x86_load(m, &cfg, info, err, 256);
	unlink(kpath);
	if (initrd)
		unlink(ipath);
	return ret;
}

Test(arch_bzimage, loads_at_pref_address)
{
	struct guest_mem m;
	struct bz_img im;
	struct x86_boot_info info;
	char err[256];
	arch_mem_init(&m, 64 * MIB);
	arch_mark_trampoline(&m);
	make_bz(&im);
	cr_assert_eq(load(&m, &im, "console=ttyS0", NULL, 0, &info, err), 0, "%s", err);
	cr_assert_eq(info.kind, X86_ENTRY_LINUX64);
	cr_assert_str_eq(info.format, "bzImage");
	cr_assert_eq(info.kernel_start, PREF);
	cr_assert_eq(info.kernel_end, PREF + INIT_SIZE);
	cr_assert_eq(info.entry, PREF + 0x200, "64-bit entry is load + 0x200");
	cr_assert_eq(info.boot_arg, X86_ZERO_PAGE_ADDR);
	cr_assert_eq(memcmp(arch_gpa(&m, PREF, PM_SIZE), im.b + PM_OFF, PM_SIZE), 0);

	const uint8_t *bp = arch_gpa(&m, X86_ZERO_PAGE_ADDR, 0x1000);
	/* The setup header is copied from 0x1f1 to its end (0x268) ... */
	cr_assert_eq(memcmp(bp + 0x1f1, im.b + 0x1f1, 0x210 - 0x1f1), 0);
	cr_assert_eq(memcmp(bp + 0x230, im.b + 0x230, 0x268 - 0x230), 0);
	cr_assert_eq(bp[0x268], 0, "nothing past the header's end");
	cr_assert_eq(bp[0x1ef], 0, "sentinel clear");
	/* ... with the loader's fields filled in. */
	cr_assert_eq(bp[0x210], 0xff, "type_of_loader");
	cr_assert_eq(arch_le32(bp + 0x228), X86_CMDLINE_ADDR);
	cr_assert_str_eq((char *)arch_gpa(&m, X86_CMDLINE_ADDR, 14), "console=ttyS0");
	cr_assert_eq(arch_le32(bp + 0x218), 0, "no initrd");
	cr_assert_eq(arch_le32(bp + 0x21c), 0);
	cr_assert_eq(bp[0x1e8], 4, "e820 entries");
	const uint8_t *e = bp + 0x2d0;
	cr_assert_eq(arch_le64(e), 0);
	cr_assert_eq(arch_le64(e + 8), X86_EBDA_START);
	cr_assert_eq(arch_le32(e + 16), 1);
	cr_assert_eq(arch_le64(e + 20), X86_EBDA_START);
	cr_assert_eq(arch_le32(e + 36), 2);
	cr_assert_eq(arch_le64(e + 40), X86_ACPI_ADDR);
	cr_assert_eq(arch_le64(e + 48), 0x20000);
	cr_assert_eq(arch_le32(e + 56), 2);
	cr_assert_eq(arch_le64(e + 60), MIB);
	cr_assert_eq(arch_le64(e + 68), 63 * MIB);
	cr_assert_eq(arch_le32(e + 76), 1);
	arch_assert_trampoline(&m);
	arch_mem_fini(&m);
}

Test(arch_bzimage, relocates_when_pref_does_not_fit)
{
	struct guest_mem m;
	struct bz_img im;
	struct x86_boot_info info;
	char err[256];
	arch_mem_init(&m, 16 * MIB); /* [16 MiB, 17 MiB) is past the end */
	make_bz(&im);
	cr_assert_eq(load(&m, &im, "", NULL, 0, &info, err), 0, "%s", err);
	cr_assert_eq(info.kernel_start, 2 * MIB, "1 MiB rounded up to kernel_alignment");
	cr_assert_eq(info.entry, 2 * MIB + 0x200);
	arch_mem_fini(&m);
}

Test(arch_bzimage, initrd_high_below_limits)
{
	struct guest_mem m;
	struct bz_img im;
	struct x86_boot_info info;
	char err[256];
	static uint8_t initrd[5000];
	for (size_t i = 0; i < sizeof(initrd); i++)
		initrd[i] = (uint8_t)(i ^ 0x3c);
	arch_mem_init(&m, 64 * MIB);
	make_bz(&im);
	cr_assert_eq(load(&m, &im, "", initrd, sizeof(initrd), &info, err), 0, "%s", err);
	cr_assert_eq(info.initrd_start, 64 * MIB - 0x2000, "as high as possible, page aligned");
	cr_assert_eq(info.initrd_size, sizeof(initrd));
	cr_assert_eq(
	    memcmp(arch_gpa(&m, info.initrd_start, sizeof(initrd)), initrd, sizeof(initrd)), 0);
	const uint8_t *bp = arch_gpa(&m, X86_ZERO_PAGE_ADDR, 0x1000);
	cr_assert_eq(arch_le32(bp + 0x218), info.initrd_start);
	cr_assert_eq(arch_le32(bp + 0x21c), sizeof(initrd));

	/* initrd_addr_max is inclusive: with 32 MiB - 1 the initrd ends at or below 32 MiB. */
	put32(im.b + 0x22c, 32 * MIB - 1);
	cr_assert_eq(load(&m, &im, "", initrd, sizeof(initrd), &info, err), 0, "%s", err);
	cr_assert_eq(info.initrd_start, 32 * MIB - 0x2000);

	/* Limit below the kernel's end: nowhere to put it. */
	put32(im.b + 0x22c, PREF + INIT_SIZE + 0x1000);
	cr_assert_eq(load(&m, &im, "", initrd, sizeof(initrd), &info, err), -ENOMEM);
	cr_assert(strstr(err, "initrd") && strstr(err, "does not fit"), "%s", err);
	arch_mem_fini(&m);
}

Test(arch_bzimage, cmdline_size_enforced)
{
	struct guest_mem m;
	struct bz_img im;
	struct x86_boot_info info;
	char err[256];
	static char cmd[0x801];
	arch_mem_init(&m, 64 * MIB);
	make_bz(&im);
	memset(cmd, 'a', 0x7ff);
	cr_assert_eq(load(&m, &im, cmd, NULL, 0, &info, err), 0, "%s", err);
	cmd[0x7ff] = 'a';
	cr_assert_eq(load(&m, &im, cmd, NULL, 0, &info, err), -E2BIG);
	cr_assert(strstr(err, "command line is 2048 bytes") && strstr(err, "at most 2047"), "%s",
	          err);
	arch_mem_fini(&m);
}

struct bad_bz {
	const char *name;
	void (*mutate)(struct bz_img *im);
	uint64_t ram;
	int err;
	const char *msg;
};

static void m_old_protocol(struct bz_img *im)
{
	put16(im->b + 0x206, 0x0205);
}
static void m_no_64bit(struct bz_img *im)
{
	put16(im->b + 0x236, 0x2);
}
static void m_short_header(struct bz_img *im)
{
	im->len = 0x220;
}
static void m_setup_past_eof(struct bz_img *im)
{
	im->len = 0x400;
}
static void m_syssize(struct bz_img *im)
{
	put32(im->b + 0x1f4, PM_SIZE / 16 + 1);
}
static void m_cut_kernel(struct bz_img *im)
{
	im->len = PM_OFF + 0x100;
}
static void m_alignment(struct bz_img *im)
{
	put32(im->b + 0x230, 0x3000);
}
static void m_alignment_zero(struct bz_img *im)
{
	put32(im->b + 0x230, 0);
}
static void m_init_size_huge(struct bz_img *im)
{
	put32(im->b + 0x260, 0x8000000);
}
static void m_init_size_hole(struct bz_img *im)
{
	put32(im->b + 0x260, 0xf0000000u);
}
static void m_fixed_low(struct bz_img *im)
{
	im->b[0x234] = 0;
	put64(im->b + 0x258, 0x80000);
}
static void m_fixed_past_ram(struct bz_img *im)
{
	im->b[0x234] = 0;
	put64(im->b + 0x258, 128 * MIB);
}
static void m_fixed_wrap(struct bz_img *im)
{
	im->b[0x234] = 0;
	put64(im->b + 0x258, UINT64_MAX - 0xfff);
}
static void m_fixed_hole(struct bz_img *im)
{
	im->b[0x234] = 0;
	put64(im->b + 0x258, 0xbff80000ull);
}

static const struct bad_bz bad_bzs[] = {
    {"protocol 2.05", m_old_protocol, 64 * MIB, -ENOEXEC, "boot protocol 2.05 is too old"},
    {"no XLF_KERNEL_64", m_no_64bit, 64 * MIB, -ENOEXEC, "no 64-bit entry point"},
    {"header cut short", m_short_header, 64 * MIB, -ENOEXEC, "truncated bzImage header"},
    {"setup past EOF", m_setup_past_eof, 64 * MIB, -ENOEXEC, "truncated bzImage: 2560 setup"},
    {"syssize past EOF", m_syssize, 64 * MIB, -ENOEXEC, "header says"},
    {"kernel cut short", m_cut_kernel, 64 * MIB, -ENOEXEC, "header says"},
    {"alignment not a power of 2", m_alignment, 64 * MIB, -ENOEXEC, "bad kernel_alignment"},
    {"alignment 0", m_alignment_zero, 64 * MIB, -ENOEXEC, "bad kernel_alignment"},
    {"init_size beyond RAM", m_init_size_huge, 64 * MIB, -ENOMEM, "-m too small"},
    {"init_size into the hole", m_init_size_hole, 64 * MIB, -ENOEXEC, "PCI hole"},
    {"fixed below 1 MiB", m_fixed_low, 64 * MIB, -ENOEXEC, "boot data area"},
    {"fixed past RAM", m_fixed_past_ram, 64 * MIB, -ENOMEM, "-m too small"},
    {"fixed address wraps", m_fixed_wrap, 64 * MIB, -ENOEXEC, "wraps"},
    {"fixed across the hole", m_fixed_hole, 4 * GIB, -ENOEXEC, "PCI hole"},
    {"RAM smaller than the kernel", NULL, 2 * MIB, -ENOMEM, "-m too small"},
};

Test(arch_bzimage, bad_images_rejected)
{
	for (size_t i = 0; i < sizeof(bad_bzs) / sizeof(bad_bzs[0]); i++) {
		const struct bad_bz *t = &bad_bzs[i];
		struct guest_mem m;
		struct bz_img im;
		struct x86_boot_info info;
		char err[256] = "";
		arch_mem_init(&m, t->ram);
		make_bz(&im);
		if (t->mutate)
			t->mutate(&im);
		int ret = load(&m, &im, "", NULL, 0, &info, err);
		cr_expect_eq(ret, t->err, "%s: got %d (%s)", t->name, ret, err);
		cr_expect(strstr(err, t->msg), "%s: message '%s' lacks '%s'", t->name, err, t->msg);
		arch_mem_fini(&m);
	}
}
