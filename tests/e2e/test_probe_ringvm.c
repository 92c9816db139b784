/*
 * End-to-end: the probe guest under ringvm. Every v1 probe test with 1 and 2
 * vCPUs, UART input, the i8042 reset path, a guest triple fault, and the
 * command-line and loader errors a user can hit.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/probe_checks.h"

#define RINGVM BUILD_PATH("core/ringvm")

static void need_kvm(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
}

/* Run ringvm on the probe with params; extra args (NULL-terminated) go before the kernel. */
static void run_probe(struct harness_result *r, unsigned cpus, unsigned mem, const char *params,
		      const char *const *extra, const struct harness_opts *opts)
{
	struct harness_argv a;
	struct harness_opts def = {.timeout_s = 60};
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "run");
	harness_argv_add(&a, "-c");
	harness_argv_add(&a, "%u", cpus);
	harness_argv_add(&a, "-m");
	harness_argv_add(&a, "%u", mem);
	harness_argv_add(&a, "-p");
	harness_argv_add(&a, "%s", params);
	if (extra)
		harness_argv_addv(&a, extra);
	harness_argv_add(&a, "%s", harness_probe_path());
	cr_assert_eq(harness_run(&a, opts ? opts : &def, r), 0);
}

static void all_v1(unsigned cpus, bool sandbox)
{
	need_kvm();
	struct harness_result r;
	const char *params = "probe=hello,pci,timer,smp,irq";
	const char *unjailed[] = {"--disable-sandbox", NULL};
	run_probe(&r, cpus, 256, params, sandbox ? NULL : unjailed, NULL);
	check_probe_ok(&r, "ringvm v1 probe");
	check_hello(r.out, params, 256);
	check_pci(r.out);
	check_timer(r.out);
	check_smp(r.out, cpus);
	check_irq(r.out);
	harness_result_free(&r);
}

Test(e2e_ringvm, v1_tests_1cpu, .timeout = 60)
{
	all_v1(1, true);
}

Test(e2e_ringvm, v1_tests_2cpus, .timeout = 60)
{
	all_v1(2, true);
}

Test(e2e_ringvm, v1_tests_1cpu_unsandboxed, .timeout = 60)
{
	all_v1(1, false);
}

Test(e2e_ringvm, v1_tests_2cpus_unsandboxed, .timeout = 60)
{
	all_v1(2, false);
}

/* ---- a device process that dies takes the VM down, with a message and no leftovers ---- */

struct killer {
	char marker[64];
	pid_t killed;
	unsigned scans;
};

static bool cmdline_has(pid_t pid, const char *marker)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	for (size_t i = 0; i < n; i++)
		if (!buf[i])
			buf[i] = ' ';
	buf[n] = 0;
	return strstr(buf, marker) != NULL;
}

static pid_t parent_of(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	pid_t ppid = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "PPid: %d", &ppid) == 1)
			break;
	if (f)
		fclose(f);
	return ppid;
}

/* Pids of processes whose command line carries marker; the device is the one whose parent does too. */
static unsigned find_marked(const char *marker, pid_t *pids, unsigned max)
{
	unsigned n = 0;
	DIR *d = opendir("/proc");
	for (struct dirent *e; d && (e = readdir(d));) {
		pid_t pid = (pid_t)atoi(e->d_name);
		if (pid > 0 && pid != getpid() && cmdline_has(pid, marker) && n < max)
			pids[n++] = pid;
	}
	if (d)
		closedir(d);
	return n;
}

static void *killer_main(void *arg)
{
	struct killer *k = arg;
	for (k->scans = 0; k->scans < 200; k->scans++) {
		usleep(50000);
		pid_t pids[8];
		unsigned n = find_marked(k->marker, pids, 8);
		for (unsigned i = 0; i < n; i++)
			for (unsigned j = 0; j < n; j++)
				if (parent_of(pids[i]) == pids[j]) {
					usleep(300000); /* let the guest get going */
					kill(pids[i], SIGKILL);
					k->killed = pids[i];
					return NULL;
				}
	}
	return NULL;
}

static void kill_device(bool sandbox)
{
	need_kvm();
	struct killer k = {0};
	snprintf(k.marker, sizeof(k.marker), "kill.marker=%d%ld", (int)getpid(), (long)time(NULL));
	char params[128];
	snprintf(params, sizeof(params), "probe=idle idle.secs=20 %s", k.marker);
	pthread_t t;
	cr_assert_eq(pthread_create(&t, NULL, killer_main, &k), 0);
	const char *unjailed[] = {"--disable-sandbox", NULL};
	struct harness_opts o = {.timeout_s = 30};
	struct harness_result r;
	run_probe(&r, 1, 64, params, sandbox ? NULL : unjailed, &o);
	pthread_join(t, NULL);
	cr_assert_gt(k.killed, 0, "no device process found to kill");
	cr_assert(r.exited, "ringvm did not exit by itself");
	cr_assert_eq(r.exit_code, 4, "exit %d\n%s", r.exit_code, r.err);
	cr_assert_lt(r.elapsed_s, 15, "the VM kept running after its device died");
	cr_assert_not_null(strstr(r.err, "device rng"), "stderr: %s", r.err);
	cr_assert_not_null(strstr(r.err, "signal 9"), "stderr: %s", r.err);
	pid_t left[8];
	cr_assert_eq(find_marked(k.marker, left, 8), 0, "processes left behind");
	harness_result_free(&r);
}

Test(e2e_ringvm, killed_device_stops_vm, .timeout = 60)
{
	kill_device(true);
}

Test(e2e_ringvm, killed_device_stops_vm_unsandboxed, .timeout = 60)
{
	kill_device(false);
}

Test(e2e_ringvm, large_memory_map, .timeout = 60)
{
	/* 4 GiB + 512 MiB: RAM split around the PCI hole, seen in the guest's memory map. */
	need_kvm();
	struct harness_result r;
	run_probe(&r, 1, 4608, "probe=hello", NULL, NULL);
	check_probe_ok(&r, "ringvm -m 4608");
	check_hello(r.out, "probe=hello", 4608);
	harness_result_free(&r);
}

Test(e2e_ringvm, idle_sleeps, .timeout = 60)
{
	need_kvm();
	struct harness_result r;
	run_probe(&r, 1, 128, "probe=idle idle.secs=1", NULL, NULL);
	check_probe_ok(&r, "ringvm idle");
	check_idle(r.out, 1);
	cr_assert_geq(r.elapsed_s, 0.95);
	harness_result_free(&r);
}

Test(e2e_ringvm, uart_carries_stdin, .timeout = 60)
{
	need_kvm();
	struct harness_result r;
	struct harness_opts o = {.timeout_s = 30, .stdin_data = "hello from the host\n"};
	run_probe(&r, 1, 128, "probe=echo", NULL, &o);
	check_probe_ok(&r, "ringvm echo");
	const char *l = probe_line_with(r.out, "echo", "line", "hello from the host");
	cr_assert_not_null(l, "echo line missing:\n%s", r.out);
	harness_result_free(&r);
}

Test(e2e_ringvm, i8042_reset_exits_0, .timeout = 60)
{
	/* Every probe run ends with the i8042 reset; here nothing else runs before it. */
	need_kvm();
	struct harness_result r;
	run_probe(&r, 1, 64, "probe=hello", NULL, NULL);
	cr_assert(r.exited && r.exit_code == 0, "exit %d\n%s", r.exit_code, r.err);
	harness_result_free(&r);
}

Test(e2e_ringvm, no_i8042_means_no_reset, .timeout = 60)
{
	/* Without the i8042 the probe's reset write goes nowhere: it halts, and the harness kills it. */
	need_kvm();
	struct harness_result r;
	struct harness_opts o = {.timeout_s = 3};
	const char *extra[] = {"--no-i8042", NULL};
	run_probe(&r, 1, 64, "probe=hello", extra, &o);
	cr_assert(r.timed_out, "ringvm --no-i8042 ended by itself: exit %d\n%s", r.exit_code, r.out);
	cr_assert(probe_end_ok(r.out));
	harness_result_free(&r);
}

Test(e2e_ringvm, triple_fault_exits_3, .timeout = 60)
{
	need_kvm();
	struct harness_result r;
	run_probe(&r, 1, 64, "probe=fault", NULL, NULL);
	cr_assert(r.exited, "not exited");
	cr_assert_eq(r.exit_code, 3, "exit %d\n%s", r.exit_code, r.err);
	cr_assert_not_null(strstr(r.err, "triple fault"), "stderr: %s", r.err);
	cr_assert_not_null(probe_line(r.out, "fault", 0));
	harness_result_free(&r);
}

Test(e2e_ringvm, serial_to_file, .timeout = 60)
{
	need_kvm();
	char path[] = "/tmp/ringvm-serial-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	close(fd);
	char opt[64];
	snprintf(opt, sizeof(opt), "--serial=file=%s", path);
	const char *extra[] = {opt, NULL};
	struct harness_result r;
	run_probe(&r, 1, 64, "probe=hello", extra, NULL);
	cr_assert(r.exited && r.exit_code == 0);
	cr_assert_null(probe_line(r.out, "hello", 0), "serial went to stdout too");
	FILE *f = fopen(path, "r");
	cr_assert_not_null(f);
	char buf[8192];
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	unlink(path);
	cr_assert(probe_end_ok(buf), "file: %s", buf);
	harness_result_free(&r);
}

/* ---- errors a user can make: one clear line, exit status 2 ---- */

static void expect_usage_error(const char *const *args, const char *needle)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 20};
	struct harness_result r;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_addv(&a, args);
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	cr_assert(r.exited && r.exit_code == 2, "exit %d for %s\n%s", r.exit_code, args[0], r.err);
	cr_assert_not_null(strstr(r.err, needle), "stderr lacks '%s': %s", needle, r.err);
	harness_result_free(&r);
}

Test(e2e_ringvm, garbage_kernel_exits_2, .timeout = 30)
{
	need_kvm();
	char path[] = "/tmp/ringvm-garbage-XXXXXX";
	int fd = mkstemp(path);
	cr_assert_geq(fd, 0);
	char junk[4096];
	for (size_t i = 0; i < sizeof(junk); i++)
		junk[i] = (char)(i * 7 + 3);
	cr_assert_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
	close(fd);
	const char *args[] = {"run", path, NULL};
	expect_usage_error(args, "ringvm: error:");
	unlink(path);
}

Test(e2e_ringvm, missing_kernel_exits_2, .timeout = 30)
{
	need_kvm();
	const char *args[] = {"run", "/nonexistent/kernel", NULL};
	expect_usage_error(args, "/nonexistent/kernel");
}

Test(e2e_ringvm, too_many_cpus_exits_2, .timeout = 30)
{
	need_kvm();
	const char *args[] = {"run", "-c", "1024", "-p", "probe=hello", harness_probe_path(), NULL};
	expect_usage_error(args, "vCPU");
}

Test(e2e_ringvm, memory_too_small_exits_2, .timeout = 30)
{
	need_kvm();
	const char *args[] = {"run", "-m", "1", harness_probe_path(), NULL};
	expect_usage_error(args, "error");
}

Test(e2e_ringvm, bad_option_exits_2, .timeout = 30)
{
	const char *args[] = {"run", "--frobnicate", "k", NULL};
	expect_usage_error(args, "unknown option '--frobnicate'");
	const char *args2[] = {"launch", NULL};
	expect_usage_error(args2, "unknown subcommand");
}

Test(e2e_ringvm, version_and_help, .timeout = 30)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 10};
	struct harness_result r;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "--version");
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	cr_assert(r.exited && r.exit_code == 0);
	cr_assert_eq(strncmp(r.out, "ringvm ", 7), 0);
	harness_result_free(&r);
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "run");
	harness_argv_add(&a, "--help");
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	cr_assert(r.exited && r.exit_code == 0);
	cr_assert_not_null(strstr(r.out, "EXIT STATUS"));
	cr_assert_not_null(strstr(r.out, "--mem"));
	harness_result_free(&r);
}
