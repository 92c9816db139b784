/*
 * x86_load's common steps: file errors name the path and the reason, unknown
 * formats and bad configurations are refused, the PVH command line limit and
 * initrd module list, error-buffer truncation — and, when
 * tools/fetch-test-kernel has cached Debian's kernel, that both its bzImage
 * and its ELF vmlinux load.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "tests/common/facility.h"
#include "tests/unit/arch/arch_fixture.h"

/* The smallest PVH kernel: one PT_LOAD at 1 MiB and the Xen PHYS32_ENTRY note. */
static size_t make_pvh(uint8_t *b)
{
	memset(b, 0, 0x200);
	memcpy(b,
	       "\x7f"
	       "ELF\2\1\1",
	       7);
	b[16] = 2;  /* ET_EXEC */
	b[18] = 62; /* EM_X86_64 */
	uint64_t phoff = 64;
	memcpy(b + 32, &phoff, 8);
	b[54] = 56; /* e_phentsize */
	b[56] = 2;  /* e_phnum */
	uint64_t load[] = {0x0000000500000001ull, 0x100, 0, 0x100000, 0x10, 0x1000, 0};
	memcpy(b + 64, load, 56);
	uint64_t note[] = {4, 0x180, 0, 0, 20, 20, 0};
	memcpy(b + 120, note, 56);
	uint32_t nh[] = {4, 4, 18};
	memcpy(b + 0x180, nh, 12);
	memcpy(b + 0x18c, "Xen\0", 4);
	uint32_t entry = 0x100000;
	memcpy(b + 0x190, &entry, 4);
	return 0x200;
}

static int load_pvh(struct guest_mem *m, const char *cmdline, const char *initrd,
                    struct x86_boot_info *info, char *err, size_t errlen)
{
	uint8_t img[0x200];
	char path[32];
	arch_write_tmp(path, img, make_pvh(img));
	struct x86_boot_config cfg = {
	    .kernel_path = path, .initrd_path = initrd, .cmdline = cmdline, .ncpus = 1};
	int ret = x86_load(m, &cfg, info, err, errlen);
	unlink(path);
	return ret;
}

Test(arch_load, missing_kernel_names_path)
{
	struct guest_mem m;
	struct x86_boot_info info;
	char err[256];
	arch_mem_init(&m, 16 * MIB);
	struct x86_boot_config cfg = {
	    .kernel_path = "/nonexistent/bzImage", .cmdline = "", .ncpus = 1};
	cr_assert_eq(x86_load(&m, &cfg, &info, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "/nonexistent/bzImage") && strstr(err, "No such file"), "%s", err);
	arch_mem_fini(&m);
}

Test(arch_load, missing_initrd_names_path)
{
	struct guest_mem m;
	struct x86_boot_info info;
	char err[256];
	arch_mem_init(&m, 16 * MIB);
	cr_assert_eq(load_pvh(&m, "", "/nonexistent/initrd.img", &info, err, sizeof(err)), -ENOENT);
	cr_assert(strstr(err, "initrd /nonexistent/initrd.img") && strstr(err, "No such file"),
	          "%s", err);
	arch_mem_fini(&m);
}

Test(arch_load, directory_and_unknown_formats)
{
	struct guest_mem m;
	struct x86_boot_info info;
	char err[256], path[32];
	arch_mem_init(&m, 16 * MIB);
	struct x86_boot_config cfg = {.kernel_path = "/tmp", .cmdline = "", .ncpus = 1};
	cr_assert_eq(x86_load(&m, &cfg, &info, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "not a regular file"), "%s", err);

	static const char *junk[] = {"", "MZ\x90\0 a PE file is not a kernel", "\177EL"};
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		arch_write_tmp(path, junk[i], strlen(junk[i]));
		cfg.kernel_path = path;
		cr_expect_eq(x86_load(&m, &cfg, &info, err, sizeof(err)), -ENOEXEC, "junk %zu", i);
		cr_expect(strstr(err, "not an ELF64 or bzImage kernel"), "%s", err);
		unlink(path);
	}
	arch_mem_fini(&m);
}

Test(arch_load, bad_config)
{
	struct guest_mem m;
	struct x86_boot_info info;
	char err[256];
	arch_mem_init(&m, 16 * MIB);
	struct x86_boot_config cfg = {.kernel_path = "/x", .cmdline = "", .ncpus = 0};
	cr_assert_eq(x86_load(&m, &cfg, &info, err, sizeof(err)), -EINVAL);
	cfg.ncpus = X86_MAX_CPUS + 1;
	cr_assert_eq(x86_load(&m, &cfg, &info, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "255 vCPUs"), "%s", err);
	arch_mem_fini(&m);

	arch_mem_init(&m, 512 * 1024);
	cfg.ncpus = 1;
	cr_assert_eq(x86_load(&m, &cfg, &info, err, sizeof(err)), -ENOMEM);
	cr_assert(strstr(err, "-m too small"), "%s", err);
	arch_mem_fini(&m);
}

Test(arch_load, pvh_cmdline_limit_and_initrd_module)
{
	struct guest_mem m;
	struct x86_boot_info info;
	char err[256], ipath[32];
	static char cmd[X86_CMDLINE_MAX + 1];
	arch_mem_init(&m, 64 * MIB);
	memset(cmd, 'x', X86_CMDLINE_MAX - 1);
	cr_assert_eq(load_pvh(&m, cmd, NULL, &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(strlen(arch_gpa(&m, X86_CMDLINE_ADDR, X86_CMDLINE_MAX)), X86_CMDLINE_MAX - 1);
	cmd[X86_CMDLINE_MAX - 1] = 'x';
	cr_assert_eq(load_pvh(&m, cmd, NULL, &info, err, sizeof(err)), -E2BIG);
	cr_assert(strstr(err, "at most 65535"), "%s", err);

	arch_write_tmp(ipath, "initrd!", 7);
	cr_assert_eq(load_pvh(&m, "", ipath, &info, err, sizeof(err)), 0, "%s", err);
	cr_assert_eq(info.initrd_start, 64 * MIB - 0x1000);
	cr_assert_eq(info.initrd_size, 7);
	const uint8_t *si = arch_gpa(&m, X86_PVH_INFO_ADDR, 56);
	cr_assert_eq(arch_le32(si + 12), 1, "nr_modules");
	cr_assert_eq(arch_le64(si + 16), X86_PVH_MODLIST_ADDR);
	const uint8_t *mod = arch_gpa(&m, X86_PVH_MODLIST_ADDR, 32);
	cr_assert_eq(arch_le64(mod), info.initrd_start);
	cr_assert_eq(arch_le64(mod + 8), 7);
	cr_assert_eq(memcmp(arch_gpa(&m, info.initrd_start, 7), "initrd!", 7), 0);
	unlink(ipath);

	arch_write_tmp(ipath, "", 0);
	cr_assert_eq(load_pvh(&m, "", ipath, &info, err, sizeof(err)), -EINVAL);
	cr_assert(strstr(err, "is empty"), "%s", err);
	unlink(ipath);
	arch_mem_fini(&m);
}

Test(arch_load, error_message_is_bounded)
{
	struct guest_mem m;
	struct x86_boot_info info;
	char err[16];
	memset(err, 'Z', sizeof(err));
	arch_mem_init(&m, 16 * MIB);
	struct x86_boot_config cfg = {
	    .kernel_path = "/nonexistent/a/very/long/path/to/a/kernel", .cmdline = "", .ncpus = 1};
	cr_assert_eq(x86_load(&m, &cfg, &info, err, 8), -ENOENT);
	cr_assert_eq(strlen(err), 7);
	cr_assert_eq(err[8], 'Z', "wrote past errlen");
	arch_mem_fini(&m);
}

/* Debian's kernel as cached by tools/fetch-test-kernel, or skip. */
static const char *test_kernel(char *buf, size_t len, const char *name)
{
	const char *dir = getenv("RINGVM_TEST_KERNEL_DIR");
	snprintf(buf, len, "%s/%s", dir ? dir : BUILD_PATH("test-kernel"), name);
	struct stat st;
	if (stat(buf, &st) < 0)
		cr_skip_test("skipped: no cached kernel at %s (run tools/fetch-test-kernel)", buf);
	return buf;
}

static void load_real(const char *name, const char *format)
{
	char path[512], err[256];
	struct guest_mem m;
	struct x86_boot_info info;
	struct kvm_regs regs;
	struct kvm_sregs sregs = {0};
	arch_mem_init(&m, 256 * MIB);
	arch_mark_trampoline(&m);
	struct x86_boot_config cfg = {.kernel_path = test_kernel(path, sizeof(path), name),
	                              .cmdline = "console=ttyS0 earlyprintk=ttyS0",
	                              .ncpus = 2};
	cr_assert_eq(x86_load(&m, &cfg, &info, err, sizeof(err)), 0, "%s: %s", path, err);
	cr_assert_str_eq(info.format, format);
	cr_assert(info.entry >= info.kernel_start && info.entry < info.kernel_end);
	cr_assert_eq(x86_bsp_regs(&m, &info, &regs, &sregs), 0);
	cr_assert_eq(regs.rip, info.entry);
	arch_assert_trampoline(&m);
	arch_mem_fini(&m);
}

Test(arch_load, debian_bzimage)
{
	load_real("vmlinuz", "bzImage");
}

Test(arch_load, debian_vmlinux_elf)
{
	/* Debian's vmlinux carries Linux's PVH note. */
	load_real("vmlinux", "pvh-elf");
}
