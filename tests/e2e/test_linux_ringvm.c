/*
 * End-to-end: ringvm boots Debian's cloud kernel (fetched by
 * tools/fetch-test-kernel into <build>/test-kernel, which `make check` runs).
 * On PVM hosts (kvm_pvm loaded, as on this project's machines) guest kernel
 * code is emulated and Linux stops early on an instruction PVM cannot
 * emulate (../shared/host.md), so the test asserts what a kernel prints
 * before that: the banner, our command line, and an e820 map that matches
 * -m. On an ordinary KVM host it also boots a generated initramfs whose
 * /init prints a marker and reboots, and asserts that ringvm saw it.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"

#define RINGVM     BUILD_PATH("core/ringvm")
#define KERNEL_DIR BUILD_PATH("test-kernel")

static bool pvm_host(void)
{
	return access("/sys/module/kvm_pvm", F_OK) == 0;
}

static void need_kernel(const char *path)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(access(path, R_OK) == 0,
			 "no test kernel: run tools/fetch-test-kernel " KERNEL_DIR);
}

/* Sum of the "usable" BIOS-e820 ranges the kernel printed, in bytes. */
static uint64_t e820_usable(const char *out, unsigned *lines)
{
	uint64_t total = 0;
	*lines = 0;
	for (const char *p = out; (p = strstr(p, "BIOS-e820: [mem ")); p++) {
		unsigned long long a, b;
		char kind[32];
		if (sscanf(p, "BIOS-e820: [mem 0x%llx-0x%llx] %31s", &a, &b, kind) != 3)
			continue;
		(*lines)++;
		if (strcmp(kind, "usable") == 0)
			total += b - a + 1;
	}
	return total;
}

/* ---- a tiny initramfs for ordinary KVM hosts ---- */

static void cpio_entry(FILE *f, const char *name, unsigned mode, unsigned rmaj, unsigned rmin,
		       const void *data, size_t len)
{
	static unsigned ino = 1;
	size_t nlen = strlen(name) + 1;
	fprintf(f, "070701%08X%08X%08X%08X%08X%08X%08zX%08X%08X%08X%08X%08zX%08X", ino++, mode,
		0, 0, 1, 0, len, 0, 0, rmaj, rmin, nlen, 0);
	fwrite(name, 1, nlen, f);
	for (size_t pad = (110 + nlen) % 4; pad && pad < 4; pad++)
		fputc(0, f);
	if (len) {
		fwrite(data, 1, len, f);
		for (size_t pad = len % 4; pad && pad < 4; pad++)
			fputc(0, f);
	}
}

/* Build dir/initrd.cpio with a static /init that prints a marker and reboots. */
static bool make_initramfs(const char *dir, char *out, size_t outlen)
{
	char src[512], bin[512];
	snprintf(src, sizeof(src), "%s/init.c", dir);
	snprintf(bin, sizeof(bin), "%s/init", dir);
	FILE *f = fopen(src, "w");
	if (!f)
		return false;
	fputs("#include <sys/reboot.h>\n#include <unistd.h>\n"
	      "int main(void){write(1,\"RINGVM-INIT-OK\\n\",15);sync();"
	      "reboot(RB_AUTOBOOT);return 0;}\n",
	      f);
	fclose(f);
	char cmd[1200];
	snprintf(cmd, sizeof(cmd), "cc -static -O2 -o %s %s", bin, src);
	if (system(cmd) != 0)
		return false;
	int fd = open(bin, O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0)
		return false;
	char *buf = malloc((size_t)st.st_size);
	bool ok = buf && read(fd, buf, (size_t)st.st_size) == st.st_size;
	close(fd);
	snprintf(out, outlen, "%s/initrd.cpio", dir);
	f = ok ? fopen(out, "w") : NULL;
	if (f) {
		cpio_entry(f, "dev", 040755, 0, 0, NULL, 0);
		cpio_entry(f, "dev/console", 020600, 5, 1, NULL, 0);
		cpio_entry(f, "init", 0100755, 0, 0, buf, (size_t)st.st_size);
		cpio_entry(f, "TRAILER!!!", 0, 0, 0, NULL, 0);
		ok = fclose(f) == 0;
	} else {
		ok = false;
	}
	free(buf);
	return ok;
}

static void boot_linux(const char *kernel, double timeout_s)
{
	need_kernel(kernel);
	bool pvm = pvm_host();
	char dir[] = "/tmp/ringvm-linux-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	char initrd[600] = "";
	if (!pvm)
		cr_assert(make_initramfs(dir, initrd, sizeof(initrd)), "cannot build the initramfs");
	const char *params = "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 ringvm.e2e=ok";
	struct harness_argv a;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "run");
	harness_argv_add(&a, "-m");
	harness_argv_add(&a, "512");
	harness_argv_add(&a, "-c");
	harness_argv_add(&a, "2");
	harness_argv_add(&a, "--no-rng");
	harness_argv_add(&a, "-p");
	harness_argv_add(&a, "%s", params);
	if (initrd[0]) {
		harness_argv_add(&a, "-i");
		harness_argv_add(&a, "%s", initrd);
	}
	harness_argv_add(&a, "%s", kernel);
	struct harness_opts o = {.timeout_s = timeout_s};
	struct harness_result r;
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	cr_log_info("host kind: %s; ringvm %s after %.1f s", pvm ? "PVM (kvm_pvm)" : "ordinary KVM",
		    r.exited ? "exited" : "was killed", r.elapsed_s);
	cr_assert_not_null(strstr(r.out, "Linux version "), "no banner\nstdout:\n%.4000s\nstderr:\n%s",
			   r.out, r.err);
	const char *cl = strstr(r.out, "Command line: ");
	cr_assert_not_null(cl, "no Command line: line");
	cr_assert_not_null(strstr(cl, params), "our parameters are not on the kernel's command line");
	unsigned lines;
	uint64_t usable = e820_usable(r.out, &lines);
	cr_assert_geq(lines, 2, "no e820 map printed");
	/* 512 MiB less the legacy hole below 1 MiB (and nothing more). */
	cr_assert(usable <= 512ull << 20 && usable >= (512ull << 20) - (1 << 20),
		  "usable e820 RAM %" PRIu64 " bytes for -m 512", usable);
	if (pvm) {
		/* Expected end here: PVM's emulator gives up; ringvm must say so and exit 1. */
		if (r.exited) {
			cr_assert_eq(r.exit_code, 1, "exit %d\n%s", r.exit_code, r.err);
			cr_assert_not_null(strstr(r.err, "emulation failed"), "stderr: %s", r.err);
		}
	} else {
		cr_assert_not_null(strstr(r.out, "RINGVM-INIT-OK"), "init did not run:\n%s", r.out);
		cr_assert(r.exited && r.exit_code == 0, "exit %d", r.exit_code);
	}
	harness_result_free(&r);
	char cmd[700];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert_eq(system(cmd), 0);
}

Test(e2e_linux, elf_vmlinux_banner, .timeout = 240)
{
	boot_linux(KERNEL_DIR "/vmlinux", 200);
}

Test(e2e_linux, bzimage_banner, .timeout = 600)
{
	boot_linux(KERNEL_DIR "/vmlinuz", 500);
}
