/*
 * End-to-end: the probe guest's virtio tests against ringvm's virtio-rng
 * device process, held to the same assertions as QEMU's device
 * (virtio_checks.h) but stricter where QEMU is lenient: virtio-cfg runs in
 * strict mode and hostile.vq runs every case. Each test runs with the
 * sandbox and, when ringvm offers it, without (--disable-sandbox).
 * Until `ringvm run --help` lists RNG_OPT the tests skip and say so.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/probe_checks.h"
#include "tests/e2e/virtio_checks.h"

#define RINGVM  BUILD_PATH("core/ringvm")
#define RNG_OPT "--rng" /* the CLI option that adds a virtio-rng device */

static void need_rng(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
	REQUIRE_FACILITY(harness_ringvm_has_option(RNG_OPT),
	                 "ringvm run --help lists no such option");
}

/* Boots the probe under ringvm with a virtio-rng device; sandbox off when !sandbox. */
static void run(struct harness_result *r, const char *params, bool sandbox)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 50};
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "run");
	harness_argv_add(&a, "-m");
	harness_argv_add(&a, "256");
	harness_argv_add(&a, "-p");
	harness_argv_add(&a, "%s", params);
	harness_argv_add(&a, RNG_OPT);
	if (!sandbox)
		harness_argv_add(&a, "--disable-sandbox");
	harness_argv_add(&a, "%s", harness_probe_path());
	cr_assert_eq(harness_run(&a, &o, r), 0);
}

/* Runs fn once with the sandbox and once without (when ringvm can turn it off). */
#define BOTH_WAYS(fn)                                                                              \
	do {                                                                                       \
		need_rng();                                                                        \
		fn(true);                                                                          \
		fn(false);                                                                         \
	} while (0)

static void rng(bool sandbox)
{
	struct harness_result r;
	run(&r, "probe=rng,rng rng.reads=8 rng.len=256", sandbox);
	check_probe_ok(&r, sandbox ? "ringvm rng" : "ringvm rng --disable-sandbox");
	check_rng(r.out, 8, 256);
	harness_result_free(&r);
}

Test(e2e_ringvm_virtio, rng, .timeout = 120)
{
	BOTH_WAYS(rng);
}

static void rng_indirect(bool sandbox)
{
	struct harness_result r;
	run(&r, "probe=rng rng.indirect=1 rng.event_idx=0 rng.reads=4 rng.len=4096", sandbox);
	check_probe_ok(&r, "ringvm rng indirect");
	check_rng(r.out, 4, 4096);
	harness_result_free(&r);
}

Test(e2e_ringvm_virtio, rng_indirect_without_event_idx, .timeout = 120)
{
	BOTH_WAYS(rng_indirect);
}

static void virtio_cfg(bool sandbox)
{
	struct harness_result r;
	run(&r, "probe=virtio-cfg", sandbox);
	check_probe_ok(&r, "ringvm virtio-cfg (strict)");
	check_virtio_cfg(r.out, true);
	harness_result_free(&r);
}

Test(e2e_ringvm_virtio, virtio_cfg_strict, .timeout = 120)
{
	BOTH_WAYS(virtio_cfg);
}

static void hostile(bool sandbox)
{
	struct harness_result r;
	run(&r, "probe=hostile.vq,rng hostile.good_ms=3000", sandbox);
	check_probe_ok(&r, "ringvm hostile.vq");
	check_hostile_vq(r.out, "", "");
	check_rng(r.out, 4, 64);
	harness_result_free(&r);
}

Test(e2e_ringvm_virtio, hostile_vq_all_cases, .timeout = 120)
{
	BOTH_WAYS(hostile);
}
