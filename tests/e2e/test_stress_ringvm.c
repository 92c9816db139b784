/*
 * End-to-end, hostile-inputs 24: tests/stress/start-stop-loop starts and
 * stops ringvm (raw + qcow2 disks and rng; the guest ending the VM or a
 * control-socket stop; sandboxed and not) and checks that no descriptor,
 * process, image lock, file or memory growth is left. The suite runs 48
 * cycles; the script's default of 1000 is for a local run (docs/security.md).
 * A second test hands the script a ringvm that leaves a process behind, so
 * the checker itself is shown to fail when it should. hostile-inputs 23
 * with I/O in flight: tests/stress/kill-mid-io SIGKILLs the main process,
 * SIGKILLs or SIGSTOPs the block device during guest writes, and checks
 * that everything ends, nothing is left and qemu-img check accepts the image.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"

#define RINGVM    BUILD_PATH("core/ringvm")
#define QCOW_TOOL BUILD_PATH("tools/qcow-tool/qcow-tool")
#define LOOP      SOURCE_PATH("tests/stress/start-stop-loop")
#define KILL      SOURCE_PATH("tests/stress/kill-mid-io")

static void need(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
	REQUIRE_FACILITY(access("/usr/bin/python3", X_OK) == 0, "python3 is not installed");
}

static void loop(struct harness_result *r, const char *ringvm, unsigned cycles)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 280};
	harness_argv_init(&a);
	harness_argv_add(&a, "python3");
	harness_argv_add(&a, "%s", LOOP);
	harness_argv_add(&a, "--ringvm");
	harness_argv_add(&a, "%s", ringvm);
	harness_argv_add(&a, "--qcow-tool");
	harness_argv_add(&a, "%s", QCOW_TOOL);
	harness_argv_add(&a, "--probe");
	harness_argv_add(&a, "%s", harness_probe_path());
	harness_argv_add(&a, "--cycles");
	harness_argv_add(&a, "%u", cycles);
	cr_assert_eq(harness_run(&a, &o, r), 0);
}

Test(e2e_ringvm_stress, start_stop_48_cycles_leave_nothing, .timeout = 300)
{
	need();
	struct harness_result r;
	loop(&r, RINGVM, 48);
	cr_log_info("%s", r.out);
	cr_assert(r.exited && r.exit_code == 0, "start-stop-loop failed (%s):\n%s%s",
	          r.timed_out ? "timed out" : "exit", r.out, r.err);
	cr_assert_not_null(strstr(r.out, "start-stop cycles=48 ok=1 failures=0"), "%s", r.out);
	harness_result_free(&r);
}

Test(e2e_ringvm_stress, checker_sees_a_leftover_process, .timeout = 120)
{
	need();
	char dir[] = "/tmp/ringvm-e2e-stress-XXXXXX", fake[64];
	cr_assert_not_null(mkdtemp(dir));
	snprintf(fake, sizeof(fake), "%s/ringvm", dir);
	FILE *f = fopen(fake, "w");
	cr_assert_not_null(f);
	/* A background sleep outlives this "ringvm": the launcher inherits it. */
	fprintf(f, "#!/bin/sh\n(sleep 60 </dev/null >/dev/null 2>&1 &)\nexec %s \"$@\"\n", RINGVM);
	fclose(f);
	cr_assert_eq(chmod(fake, 0700), 0);
	struct harness_result r;
	loop(&r, fake, 2);
	unlink(fake);
	rmdir(dir);
	cr_assert(r.exited && r.exit_code == 1, "the loop should fail (exit 1):\n%s%s", r.out,
	          r.err);
	cr_assert_not_null(strstr(r.out, "processes left"), "%s", r.out);
	harness_result_free(&r);
}

Test(e2e_ringvm_stress, kill_mid_io_main_device_and_stopped_device, .timeout = 300)
{
	need();
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 280};
	harness_argv_init(&a);
	harness_argv_add(&a, "python3");
	harness_argv_add(&a, "%s", KILL);
	harness_argv_add(&a, "--ringvm");
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "--qcow-tool");
	harness_argv_add(&a, "%s", QCOW_TOOL);
	harness_argv_add(&a, "--probe");
	harness_argv_add(&a, "%s", harness_probe_path());
	struct harness_result r;
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	cr_log_info("%s", r.out);
	cr_assert(r.exited && r.exit_code == 0, "kill-mid-io failed:\n%s%s", r.out, r.err);
	/* 3 kinds x 2 sandbox modes, each with its 3 device processes seen. */
	const char *l = r.out;
	unsigned runs = 0;
	while ((l = strstr(l, " ok=1 devices=3 "))) {
		runs++;
		l++;
	}
	cr_assert_eq(runs, 6, "%s", r.out);
	harness_result_free(&r);
}
