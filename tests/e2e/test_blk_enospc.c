/*
 * A disk on a full filesystem (a 1 MiB tmpfs holding a sparse 64 MiB raw
 * image): host ENOSPC becomes IOERR for the guest's request, the VM keeps
 * running, the device keeps serving (writes into space already allocated
 * still succeed after the first failure), and ringvm ends normally. Run
 * sandboxed and with --disable-sandbox.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <unistd.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"

static void enospc(bool sandbox)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(facility_root(), "mounting a small tmpfs needs root");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
	char dir[] = "/tmp/ringvm-enospc-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	cr_assert_eq(mount("tmpfs", dir, "tmpfs", 0, "size=1m"), 0, "mount tmpfs");
	char img[128], opt[160];
	snprintf(img, sizeof(img), "%s/disk.raw", dir);
	FILE *f = fopen(img, "w");
	cr_assert_not_null(f);
	cr_assert_eq(ftruncate(fileno(f), 64 << 20), 0);
	fclose(f);
	snprintf(opt, sizeof(opt), "path=%s", img);
	struct harness_argv a;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", BUILD_PATH("core/ringvm"));
	harness_argv_add(&a, "run");
	if (!sandbox)
		harness_argv_add(&a, "--disable-sandbox");
	harness_argv_add(&a, "--block");
	harness_argv_add(&a, "%s", opt);
	harness_argv_add(&a, "-p");
	harness_argv_add(&a, "probe=blk.fill blk.count=100 blk.max_kib=64 blk.discard_pct=0 "
			     "blk.zeroes_pct=0");
	harness_argv_add(&a, "%s", harness_probe_path());
	struct harness_opts o = {.timeout_s = 60};
	struct harness_result r;
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	umount2(dir, MNT_DETACH);
	rmdir(dir);
	/* The VM ran to the probe's end and reset normally: exit 0, no device failure. */
	cr_assert(r.exited && r.exit_code == 0, "exit %d\n%s", r.exit_code, r.err);
	cr_assert_null(strstr(r.err, "device block"), "stderr: %s", r.err);
	const char *end = probe_end_line(r.out);
	cr_assert_not_null(end);
	cr_assert_not_null(strstr(end, "request-failed"), "%s", end);
	/* Some writes failed with IOERR, and the device served writes after the first failure. */
	const char *first_err = strstr(r.out, "status=ioerr");
	cr_assert_not_null(first_err, "no request failed on a full filesystem:\n%s", r.out);
	unsigned ok_after = 0;
	for (const char *p = first_err; (p = strstr(p, "status=ok")); p++)
		ok_after++;
	cr_assert_gt(ok_after, 0, "no request succeeded after the first IOERR:\n%s", r.out);
	uint64_t ops = 0, errors = 0;
	bool found = false;
	for (unsigned i = 0; !found && probe_line(r.out, "blk.fill", i); i++) {
		const char *l = probe_line(r.out, "blk.fill", i);
		found = probe_get_u64(l, "ops", &ops) && probe_get_u64(l, "errors", &errors);
	}
	cr_assert(found, "no blk.fill summary line");
	cr_assert_eq(ops, 100, "the guest stopped before its last request");
	cr_assert(errors > 0 && errors < ops);
	harness_result_free(&r);
}

Test(e2e_ringvm_blk, enospc_is_ioerr_and_vm_keeps_running, .timeout = 90)
{
	enospc(true);
}

Test(e2e_ringvm_blk, enospc_is_ioerr_unsandboxed, .timeout = 90)
{
	enospc(false);
}
