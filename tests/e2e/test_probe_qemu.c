/*
 * End-to-end: boots the probe guest under QEMU + KVM + qboot and checks what
 * each probe test reports (the PROBE lines, not just the exit status). These
 * pin down the probe itself and give ringvm's own e2e tests a reference for
 * what a correct VMM produces.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <x86intrin.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"

#define TIMEOUT_S 60

struct run {
	struct harness_argv argv;
	struct harness_result res;
};

static struct run cur; /* one boot per test (Criterion forks per test) */

/* The command, how it ended and everything it printed: appended to failure messages. */
static const char *context(void)
{
	static char buf[32768];
	char cmd[2048], how[128];
	snprintf(buf, sizeof(buf), "\n--- %s\n--- %s\n--- stdout:\n%s--- stderr:\n%s",
	         harness_argv_str(&cur.argv, cmd, sizeof(cmd)),
	         harness_result_str(&cur.res, how, sizeof(how)), cur.res.out ? cur.res.out : "",
	         cur.res.err ? cur.res.err : "");
	return buf;
}

#define check(cond, fmt, ...) cr_assert(cond, fmt "%s", ##__VA_ARGS__, context())

static void require_qemu(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm not usable");
	REQUIRE_FACILITY(facility_qemu(), "qemu-system-x86_64 not on PATH");
	REQUIRE_FACILITY(facility_qboot(), "/usr/share/qemu/qboot.rom missing");
	REQUIRE_FACILITY(harness_probe_exists(), "probe guest not built (tests/guest/probe.elf)");
}

/* Boots the probe with params; asserts the run finished by itself (no timeout, exit 0). */
static void boot(unsigned cpus, unsigned mem_mib, const char *params,
                 const struct harness_opts *opts)
{
	require_qemu();
	struct harness_qemu_cfg cfg = {.mem_mib = mem_mib, .cpus = cpus, .params = params};
	struct harness_opts o = opts ? *opts : (struct harness_opts){0};
	if (o.timeout_s <= 0)
		o.timeout_s = TIMEOUT_S - 10;
	harness_qemu_probe_argv(&cur.argv, &cfg);
	int ret = harness_run(&cur.argv, &o, &cur.res);
	cr_assert_eq(ret, 0, "harness_run: %s", strerror(-ret));
	check(!cur.res.timed_out, "QEMU did not finish in %.0f s", o.timeout_s);
	check(cur.res.exited && cur.res.exit_code == 0, "QEMU did not exit with status 0");
}

static void boot_ok(unsigned cpus, unsigned mem_mib, const char *params)
{
	boot(cpus, mem_mib, params, NULL);
	check(probe_end_ok(cur.res.out), "no single PROBE-END status=ok");
}

static const char *line(const char *test)
{
	const char *l = probe_line(cur.res.out, test, 0);
	check(l != NULL, "no `PROBE %s` line", test);
	return l;
}

static uint64_t get_u64(const char *l, const char *key)
{
	uint64_t v = 0;
	check(probe_get_u64(l, key, &v), "no numeric %s= in: %.200s", key, l);
	return v;
}

static void expect_str(const char *l, const char *key, const char *want)
{
	char buf[512];
	check(probe_get(l, key, buf, sizeof(buf)), "no %s= in: %.200s", key, l);
	check(strcmp(buf, want) == 0, "%s=\"%s\", expected \"%s\"", key, buf, want);
}

static void cleanup(void)
{
	harness_result_free(&cur.res);
}

TestSuite(e2e_qemu, .timeout = TIMEOUT_S, .fini = cleanup);

static void host_vendor(char *buf, size_t len)
{
	snprintf(buf, len, "unknown");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return;
	char l[256];
	while (fgets(l, sizeof(l), f))
		if (sscanf(l, "vendor_id : %63s", buf) == 1)
			break;
	fclose(f);
}

static void check_hello(unsigned mem_mib)
{
	char params[64];
	snprintf(params, sizeof(params), "probe=hello");
	boot_ok(1, mem_mib, params);
	const char *l = line("hello");
	expect_str(l, "cmdline", params);
	char vendor[64];
	host_vendor(vendor, sizeof(vendor));
	expect_str(l, "vendor", vendor);

	uint64_t entries = get_u64(l, "mem_entries");
	check(entries >= 2, "implausible memory map (%lu entries)", (unsigned long)entries);
	check(probe_count(cur.res.out, "hello.mem") == entries,
	      "mem_entries=%lu but %u hello.mem lines", (unsigned long)entries,
	      probe_count(cur.res.out, "hello.mem"));

	/* RAM is -m minus the legacy hole and firmware reservations; one range ends at -m. */
	uint64_t ram = get_u64(l, "ram_mib");
	check(ram <= mem_mib && ram + 4 >= mem_mib, "ram_mib=%lu for -m %u", (unsigned long)ram,
	      mem_mib);
	bool low = false, top = false;
	const char *m;
	for (unsigned i = 0; (m = probe_line(cur.res.out, "hello.mem", i)); i++) {
		uint64_t addr = get_u64(m, "addr"), size = get_u64(m, "size"),
		         type = get_u64(m, "type");
		if (type == 1 && addr == 0 && size >= 0x9f000)
			low = true;
		if (type == 1 && addr == 0x100000 && addr + size == (uint64_t)mem_mib << 20)
			top = true;
	}
	check(low, "no RAM entry at 0 covering the first 636 KiB");
	check(top, "no RAM entry from 1 MiB to %u MiB", mem_mib);
}

Test(e2e_qemu, hello_256m)
{
	check_hello(256);
	/* Boot speed is the point of the probe + qboot: keep an eye on it. */
	check(cur.res.elapsed_s < 60.0, "(hang check) probe=hello took %.2f s", cur.res.elapsed_s);
}

Test(e2e_qemu, hello_128m)
{
	check_hello(128);
}

Test(e2e_qemu, cmdline_carries_options)
{
	boot_ok(1, 256, "probe=hello idle.secs=3 extra=\"x\"");
	expect_str(line("hello"), "cmdline", "probe=hello idle.secs=3 extra=\"x\"");
}

Test(e2e_qemu, default_test_is_hello)
{
	boot_ok(1, 256, NULL);
	expect_str(line("hello"), "cmdline", "");
}

Test(e2e_qemu, tests_run_in_given_order)
{
	boot_ok(1, 256, "probe=timer,hello,pci");
	const char *t = line("timer"), *h = line("hello"), *p = line("pci");
	check(t < h && h < p, "tests did not run in the order given");
}

Test(e2e_qemu, unknown_test_fails)
{
	boot(1, 256, "probe=hello,bogus", NULL);
	check(probe_line(cur.res.out, "hello", 0) == NULL, "ran tests before rejecting the list");
	expect_str(line("main"), "unknown_test", "bogus");
	const char *end = probe_end_line(cur.res.out);
	check(end != NULL, "no PROBE-END");
	expect_str(end, "status", "fail");
	expect_str(end, "reason", "unknown-test");
}

Test(e2e_qemu, pci_i440fx)
{
	boot_ok(1, 256, "probe=pci");
	const char *hb = probe_line_with(cur.res.out, "pci", "dev", "00:00.0");
	check(hb != NULL, "no host bridge at 00:00.0");
	expect_str(hb, "vendor", "0x8086");
	expect_str(hb, "device", "0x1237");
	expect_str(hb, "class", "0x060000");
	const char *isa = probe_line_with(cur.res.out, "pci", "dev", "00:01.0");
	check(isa != NULL, "no PIIX3 at 00:01.0");
	expect_str(isa, "device", "0x7000");
	expect_str(isa, "class", "0x060100");
	expect_str(isa, "hdr", "0x80"); /* multi-function: 01.1 and 01.3 must be found too */
	check(probe_line_with(cur.res.out, "pci", "dev", "00:01.1") != NULL, "no IDE at 00:01.1");
	check(probe_line_with(cur.res.out, "pci", "dev", "00:01.3") != NULL, "no PM at 00:01.3");

	const char *c = NULL, *l;
	unsigned devs = 0;
	for (unsigned i = 0; (l = probe_line(cur.res.out, "pci", i)); i++) {
		char tmp[8];
		if (probe_get(l, "count", tmp, sizeof(tmp)))
			c = l;
		else
			devs++;
	}
	check(c != NULL, "no `PROBE pci count=` line");
	check(get_u64(c, "count") == devs, "count=%lu but %u device lines",
	      (unsigned long)get_u64(c, "count"), devs);
}

/* The host's TSC rate over ~100 ms, in kHz (the guest's TSC runs at the host's rate). */
static uint64_t host_tsc_khz(void)
{
	struct timespec a, b;
	clock_gettime(CLOCK_MONOTONIC_RAW, &a);
	uint64_t t0 = __rdtsc();
	struct timespec d = {0, 100 * 1000 * 1000};
	nanosleep(&d, NULL);
	uint64_t t1 = __rdtsc();
	clock_gettime(CLOCK_MONOTONIC_RAW, &b);
	double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
	return (uint64_t)((double)(t1 - t0) / ns * 1e6);
}

Test(e2e_qemu, timer_tsc_khz)
{
	boot_ok(1, 256, "probe=timer");
	uint64_t khz = get_u64(line("timer"), "tsc_khz");
	check(khz > 100000 && khz < 10000000, "implausible tsc_khz=%lu", (unsigned long)khz);
	uint64_t host = host_tsc_khz();
	/*
	 * The probe calibrates against 10 ms of PIT channel 2, and every port read
	 * is emulated: a host busy with other work stretches one read by hundreds
	 * of µs. ±15 % still catches a wrong PIT or TSC model (those are off by
	 * factors), without failing on a loaded CI machine.
	 */
	check(khz * 100 > host * 85 && khz * 100 < host * 115,
	      "guest tsc_khz=%lu, host TSC measures %lu kHz", (unsigned long)khz,
	      (unsigned long)host);
}

Test(e2e_qemu, smp_one_cpu)
{
	boot_ok(1, 256, "probe=smp");
	const char *l = line("smp");
	check(get_u64(l, "cpus") == 1 && get_u64(l, "started") == 1, "expected cpus=1 started=1");
	expect_str(l, "apic_ids", "0");
}

Test(e2e_qemu, smp_two_cpus)
{
	boot_ok(2, 256, "probe=smp");
	const char *l = line("smp");
	check(get_u64(l, "cpus") == 2, "expected cpus=2");
	check(get_u64(l, "started") == 2, "expected started=2");
	expect_str(l, "apic_ids", "0,1");
	expect_str(l, "source", "madt");
	check(probe_count(cur.res.out, "smp.ap") == 1, "expected one AP report");
	check(get_u64(line("smp.ap"), "apic_id") == 1, "AP reported the wrong APIC id");
}

Test(e2e_qemu, irq_lapic_timer)
{
	boot_ok(1, 256, "probe=irq");
	const char *l = line("irq");
	expect_str(l, "lapic_timer", "ok");
	check(get_u64(l, "ticks") >= 1, "no LAPIC timer interrupt taken");
	check(get_u64(l, "lapic_khz") > 1000, "implausible LAPIC timer clock");
}

Test(e2e_qemu, idle_one_second)
{
	boot_ok(1, 256, "probe=idle idle.secs=1");
	const char *l = line("idle");
	check(get_u64(l, "secs") == 1, "idle ran for the wrong duration");
	check(get_u64(l, "elapsed_ms") >= 1000, "guest says it slept less than 1 s");
	check(get_u64(l, "wakeups") >= 1, "never woken by the LAPIC timer");
	check(cur.res.elapsed_s >= 0.95, "idle 1 s finished after %.3f s", cur.res.elapsed_s);
	check(cur.res.elapsed_s < 60.0, "(hang check) idle 1 s took %.3f s", cur.res.elapsed_s);
}

Test(e2e_qemu, echo_after_ready)
{
	const char *in = "hello from the host, \"quoted\" \\ back\n";
	struct harness_opts o = {.stdin_data = in, .stdin_after = "PROBE echo ready"};
	boot(1, 256, "probe=echo", &o);
	check(probe_end_ok(cur.res.out), "no single PROBE-END status=ok");
	const char *l = probe_line(cur.res.out, "echo", 1); /* after `PROBE echo ready` */
	check(l != NULL, "no echo line");
	expect_str(l, "line", "hello from the host, \"quoted\" \\ back");
}

Test(e2e_qemu, echo_input_before_boot)
{
	/* Written before the guest exists: QEMU must hold it in the pipe, not drop it. */
	struct harness_opts o = {.stdin_data = "early bird\r\n"};
	boot(1, 256, "probe=echo", &o);
	check(probe_end_ok(cur.res.out), "no single PROBE-END status=ok");
	check(probe_line_with(cur.res.out, "echo", "line", "early bird") != NULL,
	      "line not echoed");
}

Test(e2e_qemu, echo_timeout)
{
	boot(1, 256, "probe=echo echo.timeout=1", NULL);
	check(probe_line_with(cur.res.out, "echo", "timeout", "1") != NULL,
	      "ready line lacks timeout=1");
	const char *end = probe_end_line(cur.res.out);
	check(end != NULL, "no PROBE-END");
	expect_str(end, "status", "fail");
	expect_str(end, "reason", "echo-timeout");
	check(cur.res.elapsed_s >= 0.95, "timed out after only %.3f s", cur.res.elapsed_s);
}

/*
 * The reason of QEMU's last KVM exit, from `-trace kvm_run_exit` on stderr
 * ("kvm_run_exit cpu_index 0, reason 8"), or -1.
 */
static int last_kvm_exit_reason(void)
{
	int reason = -1;
	for (const char *p = cur.res.err; (p = strstr(p, "kvm_run_exit")); p++) {
		const char *r = strstr(p, "reason ");
		const char *nl = strchr(p, '\n');
		if (r && (!nl || r < nl))
			reason = atoi(r + 7);
	}
	return reason;
}

#define KVM_EXIT_IO_REASON       2
#define KVM_EXIT_SHUTDOWN_REASON 8

/*
 * A triple fault under KVM is KVM_EXIT_SHUTDOWN, which QEMU turns into a reset
 * request; -no-reboot makes that an exit with status 0 (checked by boot()),
 * the same as the i8042 reset that ends every other run. QEMU's kvm_run_exit
 * trace tells the two apart.
 */
Test(e2e_qemu, fault_triple_fault_exits)
{
	static const char *const trace[] = {"-trace", "kvm_run_exit", NULL};
	require_qemu();
	struct harness_qemu_cfg cfg = {.params = "probe=fault", .extra = trace};
	struct harness_opts o = {.timeout_s = TIMEOUT_S - 10};
	harness_qemu_probe_argv(&cur.argv, &cfg);
	cr_assert_eq(harness_run(&cur.argv, &o, &cur.res), 0);
	check(cur.res.exited && cur.res.exit_code == 0, "QEMU did not exit with status 0");
	check(strstr(cur.res.out, "PROBE fault triggering") != NULL, "no `PROBE fault triggering`");
	check(probe_end_line(cur.res.out) == NULL, "the guest survived its triple fault");
	check(last_kvm_exit_reason() == KVM_EXIT_SHUTDOWN_REASON,
	      "last KVM exit was %d, not KVM_EXIT_SHUTDOWN", last_kvm_exit_reason());
	check(cur.res.elapsed_s < 60.0, "(hang check) QEMU took %.2f s to stop", cur.res.elapsed_s);
}

/* The control for the test above: a normal end is the i8042 reset, a port write. */
Test(e2e_qemu, end_is_i8042_reset)
{
	static const char *const trace[] = {"-trace", "kvm_run_exit", NULL};
	require_qemu();
	struct harness_qemu_cfg cfg = {.params = "probe=hello", .extra = trace};
	struct harness_opts o = {.timeout_s = TIMEOUT_S - 10};
	harness_qemu_probe_argv(&cur.argv, &cfg);
	cr_assert_eq(harness_run(&cur.argv, &o, &cur.res), 0);
	check(cur.res.exited && cur.res.exit_code == 0, "QEMU did not exit with status 0");
	check(probe_end_ok(cur.res.out), "no single PROBE-END status=ok");
	check(last_kvm_exit_reason() == KVM_EXIT_IO_REASON, "last KVM exit was %d, not KVM_EXIT_IO",
	      last_kvm_exit_reason());
}

/* An exception with the probe's IDT in place is reported by the guest itself. */
Test(e2e_qemu, fault_exception_reported)
{
	boot(1, 256, "probe=fault fault.kind=exception", NULL);
	const char *t = line("trap");
	check(get_u64(t, "vector") == 6, "expected #UD (vector 6)");
	check(get_u64(t, "rip") >= 0x100000, "RIP outside the probe image");
	const char *end = probe_end_line(cur.res.out);
	check(end != NULL, "no PROBE-END");
	expect_str(end, "status", "fail");
	expect_str(end, "reason", "exception");
}
