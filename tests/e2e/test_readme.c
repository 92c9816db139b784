/*
 * The README's promises, run as tests: `make demo`'s script boots the probe
 * with a qcow2 and a raw disk (and net, as root) and checks the copy on the
 * host; the README's `ringvm run` example boots the probe.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"

Test(e2e_readme, demo_script, .timeout = 300)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
	struct harness_argv a;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", SOURCE_PATH("tools/demo"));
	harness_argv_add(&a, "%s", RINGVM_BUILD_DIR);
	struct harness_opts o = {.timeout_s = 240};
	struct harness_result r;
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	cr_assert(r.exited && r.exit_code == 0, "demo exit %d\n%s\n%s", r.exit_code, r.out, r.err);
	cr_assert_not_null(strstr(r.out, "byte-identical"), "%s", r.out);
	cr_assert_not_null(strstr(r.out, "PROBE blk.bench"), "%s", r.out);
	cr_assert_not_null(strstr(r.out, "PROBE rng"), "%s", r.out);
	if (facility_root())
		cr_assert_not_null(strstr(r.out, " 0% packet loss"), "%s", r.out);
	harness_result_free(&r);
}

Test(e2e_readme, run_example, .timeout = 60)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
	/* README: ringvm run -c 2 -m 512 -p "probe=hello,pci,timer,smp,irq" probe.elf */
	struct harness_argv a;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", BUILD_PATH("core/ringvm"));
	const char *args[] = {"run", "-c", "2", "-m", "512", "-p", "probe=hello,pci,timer,smp,irq",
			      NULL};
	harness_argv_addv(&a, args);
	harness_argv_add(&a, "%s", harness_probe_path());
	struct harness_opts o = {.timeout_s = 50};
	struct harness_result r;
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	cr_assert(r.exited && r.exit_code == 0, "exit %d\n%s", r.exit_code, r.err);
	cr_assert(probe_end_ok(r.out), "%s", r.out);
	harness_result_free(&r);
}
