/*
 * End-to-end: the probe's measurement tests behind bench/proxy — `lat`
 * (register-read latency, proxied and main-process) and `rng.bench`
 * (virtio-rng throughput) — under ringvm, with the sandbox and without.
 * Correctness only: every line is there and self-consistent, nothing about
 * how fast (timing belongs to bench/proxy.py). Skips until `ringvm run
 * --help` lists --rng.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/probe_checks.h"

#define RINGVM BUILD_PATH("core/ringvm")

static const char *const lat_kinds[] = {"loop",           "pio-rtc",    "pio-uart",
                                        "cfg-bridge",     "cfg-virtio", "cfgdata-bridge",
                                        "cfgdata-virtio", "mmio-virtio"};
#define NKINDS (sizeof(lat_kinds) / sizeof(lat_kinds[0]))

static void need_rng(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
	REQUIRE_FACILITY(harness_ringvm_has_option("--rng"),
	                 "ringvm run --help lists no such option");
}

static void run(struct harness_result *r, const char *params, bool sandbox, bool rng)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 60};
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "run");
	harness_argv_add(&a, "-m");
	harness_argv_add(&a, "256");
	harness_argv_add(&a, "-p");
	harness_argv_add(&a, "%s", params);
	if (!rng)
		harness_argv_add(&a, "--no-rng");
	if (!sandbox)
		harness_argv_add(&a, "--disable-sandbox");
	harness_argv_add(&a, "%s", harness_probe_path());
	cr_assert_eq(harness_run(&a, &o, r), 0);
}

/* A decimal value ("75.61") of key in line; fails the test when absent. */
static double get_num(const char *line, const char *key)
{
	char buf[64], *end;
	cr_assert(probe_get(line, key, buf, sizeof(buf)), "no %s= in: %.200s", key, line);
	double v = strtod(buf, &end);
	cr_assert(end != buf && *end == '\0', "%s=%s is not a number", key, buf);
	return v;
}

static const char *lat_line(const char *out, const char *kind)
{
	const char *l = probe_line_with(out, "lat", "kind", kind);
	cr_assert_not_null(l, "no PROBE lat kind=%s line:\n%s", kind, out);
	return l;
}

static void lat(bool sandbox)
{
	struct harness_result r;
	run(&r, "probe=lat lat.n=200", sandbox, true);
	check_probe_ok(&r, sandbox ? "ringvm lat" : "ringvm lat --disable-sandbox");
	cr_assert_eq(probe_count(r.out, "lat"), NKINDS, "one line per kind:\n%s", r.out);
	for (unsigned i = 0; i < NKINDS; i++) {
		const char *l = lat_line(r.out, lat_kinds[i]);
		cr_assert(!strstr(l, "skipped="), "kind %s skipped: %.200s", lat_kinds[i], l);
		cr_assert_eq(get_num(l, "n"), 200);
		double mean = get_num(l, "mean_us"), p50 = get_num(l, "p50_us");
		double p99 = get_num(l, "p99_us"), lo = get_num(l, "min_us"),
		       hi = get_num(l, "max_us");
		cr_assert(mean > 0, "%s: mean_us=%g", lat_kinds[i], mean);
		cr_assert(lo <= p50 && p50 <= p99 && p99 <= hi,
		          "%s: min %g, p50 %g, p99 %g, max %g out of order", lat_kinds[i], lo, p50,
		          p99, hi);
		cr_assert(lo <= mean && mean <= hi, "%s: mean %g outside [%g, %g]", lat_kinds[i],
		          mean, lo, hi);
		cr_assert(get_num(l, "net_us") >= 0);
	}
	const char *done = probe_line(r.out, "lat.done", 0);
	cr_assert_not_null(done, "no PROBE lat.done line:\n%s", r.out);
	cr_assert_eq(get_num(done, "kinds"), NKINDS);
	harness_result_free(&r);
}

Test(e2e_ringvm_lat, lat_all_kinds, .timeout = 120)
{
	need_rng();
	lat(true);
	lat(false);
}

static void rng_bench(bool sandbox)
{
	struct harness_result r;
	run(&r, "probe=rng.bench rngb.secs=1", sandbox, true);
	check_probe_ok(&r, sandbox ? "ringvm rng.bench" : "ringvm rng.bench --disable-sandbox");
	const char *s = probe_line(r.out, "rng.bench.start", 0);
	cr_assert_not_null(s, "no PROBE rng.bench.start line:\n%s", r.out);
	cr_assert_eq(get_num(s, "len"), 65536);
	cr_assert_eq(get_num(s, "qd"), 4);
	const char *l = probe_line(r.out, "rng.bench", 0);
	cr_assert_not_null(l, "no PROBE rng.bench line:\n%s", r.out);
	cr_assert(!strstr(l, "error="), "%.300s", l);
	double bytes = get_num(l, "bytes"), reqs = get_num(l, "requests");
	cr_assert(bytes > 0 && reqs > 0, "%.300s", l);
	cr_assert(bytes <= reqs * 65536, "more bytes than the requests could hold: %.300s", l);
	cr_assert(get_num(l, "mbps") > 0, "%.300s", l);
	cr_assert(get_num(l, "secs") >= 1.0, "stopped before rngb.secs: %.300s", l);
	cr_assert(get_num(l, "irqs") > 0, "%.300s", l);
	harness_result_free(&r);
}

Test(e2e_ringvm_lat, rng_bench, .timeout = 120)
{
	need_rng();
	rng_bench(true);
	rng_bench(false);
}

/* Without the device: lat still measures the main-process kinds, rng.bench fails cleanly. */
Test(e2e_ringvm_lat, without_rng_device, .timeout = 120)
{
	need_rng();
	struct harness_result r;
	run(&r, "probe=lat lat.n=20", true, false);
	check_probe_ok(&r, "ringvm lat --no-rng");
	cr_assert(strstr(lat_line(r.out, "mmio-virtio"), "skipped=no-device"), "%s", r.out);
	cr_assert_not_null(strstr(lat_line(r.out, "pio-rtc"), "mean_us="));
	harness_result_free(&r);

	run(&r, "probe=rng.bench", true, false);
	const char *end = probe_end_line(r.out);
	cr_assert_not_null(end, "no PROBE-END:\n%s", r.out);
	cr_assert(strstr(end, "status=fail reason=no-device test=rng.bench"), "%s", end);
	harness_result_free(&r);
}
