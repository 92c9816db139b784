/*
 * End-to-end: the control socket of a running ringvm (probe guest idling
 * with a tick every 100 ms): status and metrics name the device process,
 * pause stops the guest's ticks and resume restarts them, stop and SIGTERM
 * end the VM with status 0 and leave neither a process nor the socket, a
 * second SIGTERM forces the exit, malformed requests do not disturb the VM,
 * and --config boots the probe (an unknown key exits 2).
 * ringvm runs here without the e2e harness's process-group kill, so a device
 * process left behind would be seen.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/common/facility.h"
#include "tests/e2e/harness.h"

#define RINGVM BUILD_PATH("core/ringvm")
#define TICKS  "probe=idle idle.secs=60 idle.tick_ms=100"

struct vmproc {
	char dir[64];
	char sock[100];
	char out[128], err[128];
	pid_t pid;
	int status;
	bool reaped;
};

static void need_kvm(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return strdup("");
	char *buf = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&buf, &len);
	char tmp[4096];
	size_t n;
	while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0)
		fwrite(tmp, 1, n, m);
	fclose(f);
	fclose(m);
	return buf;
}

/* Start ringvm run -s DIR --serial file=DIR/serial [extra...] PROBE with params. */
static void vm_start(struct vmproc *v, const char *params, const char *const *extra)
{
	memset(v, 0, sizeof(*v));
	snprintf(v->dir, sizeof(v->dir), "/tmp/ringvm-e2e-ctl-XXXXXX");
	cr_assert_not_null(mkdtemp(v->dir));
	snprintf(v->out, sizeof(v->out), "%s/serial", v->dir);
	snprintf(v->err, sizeof(v->err), "%s/stderr", v->dir);
	struct harness_argv a;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "run");
	harness_argv_add(&a, "-s");
	harness_argv_add(&a, "%s", v->dir);
	harness_argv_add(&a, "--serial");
	harness_argv_add(&a, "file=%s", v->out);
	harness_argv_add(&a, "-p");
	harness_argv_add(&a, "%s", params);
	harness_argv_addv(&a, extra);
	harness_argv_add(&a, "%s", harness_probe_path());
	cr_assert(!a.overflow);
	v->pid = fork();
	cr_assert_geq(v->pid, 0);
	if (v->pid == 0) {
		int in = open("/dev/null", O_RDONLY);
		int err = open(v->err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(in, 0);
		dup2(err, 1);
		dup2(err, 2);
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		signal(SIGPIPE, SIG_DFL);
		harness_execv(&a);
		_exit(127);
	}
	snprintf(v->sock, sizeof(v->sock), "%s/ringvm-%d.sock", v->dir, (int)v->pid);
	struct stat st;
	for (double t0 = now_s(); now_s() - t0 < 20; usleep(10000))
		if (stat(v->sock, &st) == 0)
			return;
	cr_assert_fail("the control socket %s never appeared", v->sock);
}

/* Wait up to secs for ringvm to exit; true if it did (v->status set). */
static bool vm_wait(struct vmproc *v, double secs)
{
	for (double t0 = now_s(); now_s() - t0 < secs; usleep(5000)) {
		pid_t r = waitpid(v->pid, &v->status, WNOHANG);
		if (r == v->pid) {
			v->reaped = true;
			return true;
		}
	}
	return false;
}

static void vm_cleanup(struct vmproc *v)
{
	if (!v->reaped && v->pid > 0) {
		kill(v->pid, SIGKILL);
		waitpid(v->pid, &v->status, 0);
	}
	unlink(v->out);
	unlink(v->err);
	unlink(v->sock);
	char cfg[160];
	snprintf(cfg, sizeof(cfg), "%s/vm.json", v->dir);
	unlink(cfg);
	rmdir(v->dir);
}

/* Run `ringvm ARGS...` (a control subcommand); returns its result (free it). */
static struct harness_result ctl(const char *const *args)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 40};
	struct harness_result r;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_addv(&a, args);
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	return r;
}

/* `ringvm CMD --json SOCKET`: its result object (caller puts it). */
static struct json_object *ctl_json(const struct vmproc *v, const char *cmd)
{
	const char *args[] = {cmd, "--json", v->sock, NULL};
	struct harness_result r = ctl(args);
	cr_assert(r.exited && r.exit_code == 0, "ringvm %s: exit %d: %s", cmd, r.exit_code, r.err);
	struct json_object *o = json_tokener_parse(r.out), *res;
	cr_assert_not_null(o, "ringvm %s printed %s", cmd, r.out);
	cr_assert(json_object_object_get_ex(o, "result", &res));
	json_object_get(res);
	json_object_put(o);
	harness_result_free(&r);
	return res;
}

static const char *jstr(struct json_object *o, const char *k)
{
	struct json_object *v;
	return json_object_object_get_ex(o, k, &v) && v ? json_object_get_string(v) : "";
}

static long long jint(struct json_object *o, const char *k)
{
	struct json_object *v;
	return json_object_object_get_ex(o, k, &v) && v ? json_object_get_int64(v) : -1;
}

/* Complete `PROBE idle.tick` lines the guest has printed so far. */
static unsigned ticks(const struct vmproc *v)
{
	char *s = slurp(v->out);
	unsigned n = 0;
	for (char *p = s; (p = strstr(p, "PROBE idle.tick ")); p++)
		n += strchr(p, '\n') != NULL;
	free(s);
	return n;
}

static unsigned wait_ticks(const struct vmproc *v, unsigned want, double secs)
{
	unsigned n = 0;
	for (double t0 = now_s(); now_s() - t0 < secs; usleep(20000))
		if ((n = ticks(v)) >= want)
			break;
	return n;
}

/* The process is gone: no /proc entry, or a zombie nobody of ours holds. */
static bool process_gone(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return true;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	char *rp = strrchr(buf, ')');
	return rp && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

static pid_t device_pid(struct json_object *status, const char *option, bool *sandboxed)
{
	struct json_object *devs;
	cr_assert(json_object_object_get_ex(status, "devices", &devs));
	for (size_t i = 0; i < json_object_array_length(devs); i++) {
		struct json_object *d = json_object_array_get_idx(devs, i), *sb;
		if (strcmp(jstr(d, "option"), option) == 0) {
			json_object_object_get_ex(d, "sandboxed", &sb);
			*sandboxed = json_object_get_boolean(sb);
			return (pid_t)jint(d, "pid");
		}
	}
	cr_assert_fail("no %s device in status", option);
	return -1;
}

static void check_ended_clean(struct vmproc *v, pid_t dev, int want_status)
{
	char *err = slurp(v->err);
	cr_assert(WIFEXITED(v->status) && WEXITSTATUS(v->status) == want_status,
		  "ringvm ended with status 0x%x, want exit %d; stderr: %s", v->status, want_status,
		  err);
	free(err);
	struct stat st;
	cr_assert_neq(stat(v->sock, &st), 0, "the control socket %s is still there", v->sock);
	for (double t0 = now_s(); now_s() - t0 < 2 && !process_gone(dev);)
		usleep(10000);
	cr_assert(process_gone(dev), "device process %d is still running", (int)dev);
}

static void lifecycle(bool sandbox)
{
	need_kvm();
	struct vmproc v;
	const char *unjailed[] = {"--disable-sandbox", NULL};
	vm_start(&v, TICKS, sandbox ? NULL : unjailed);

	struct json_object *st = ctl_json(&v, "status");
	cr_assert_str_eq(jstr(st, "state"), "running");
	cr_assert_eq(jint(st, "pid"), v.pid);
	cr_assert_eq(jint(st, "vcpus"), 1);
	cr_assert_eq(jint(st, "memory_mib"), 256);
	bool sandboxed;
	pid_t dev = device_pid(st, "rng", &sandboxed);
	cr_assert_gt(dev, 0);
	/* Under valgrind the harness may run every VM unsandboxed (harness.h). */
	cr_assert_eq(sandboxed, sandbox && !harness_no_sandbox());
	cr_assert(!process_gone(dev), "status names pid %d, which does not run", (int)dev);
	json_object_put(st);

	struct json_object *m = ctl_json(&v, "metrics"), *proc, *devs;
	cr_assert(json_object_object_get_ex(m, "process", &proc));
	cr_assert_gt(jint(proc, "rss_kib"), 0);
	cr_assert(json_object_object_get_ex(m, "devices", &devs));
	cr_assert_eq(json_object_array_length(devs), 1);
	struct json_object *d0 = json_object_array_get_idx(devs, 0);
	cr_assert_eq(jint(d0, "pid"), dev);
	cr_assert_gt(jint(d0, "rss_kib"), 0);
	cr_assert_str_eq(jstr(d0, "name"), "virtio-rng");
	cr_assert_geq(jint(d0, "notifications"), 0);
	json_object_put(m);

	/* Pause: the ticks stop; status says so; pausing again is harmless. */
	cr_assert_geq(wait_ticks(&v, 3, 20), 3, "the probe does not tick");
	const char *pause[] = {"pause", v.sock, NULL};
	struct harness_result r = ctl(pause);
	cr_assert(r.exited && r.exit_code == 0 && strstr(r.out, "paused"), "pause: %s %s", r.out,
		  r.err);
	harness_result_free(&r);
	unsigned before = ticks(&v);
	usleep(700000);
	cr_assert_eq(ticks(&v), before, "the guest ticked while paused");
	r = ctl(pause);
	cr_assert(r.exited && r.exit_code == 0);
	harness_result_free(&r);
	st = ctl_json(&v, "status");
	cr_assert_str_eq(jstr(st, "state"), "paused");
	json_object_put(st);

	/* Resume: the ticks come back. */
	const char *resume[] = {"resume", v.sock, NULL};
	r = ctl(resume);
	cr_assert(r.exited && r.exit_code == 0 && strstr(r.out, "running"));
	harness_result_free(&r);
	cr_assert_geq(wait_ticks(&v, before + 2, 10), before + 2, "no ticks after resume");

	/* Requests the VM must refuse without being disturbed (hostile input 25). */
	const char *resize[] = {"disk", "resize", "0", "1G", v.sock, NULL};
	r = ctl(resize);
	cr_assert(r.exited && r.exit_code == 1 && strstr(r.err, "no block device"), "%s", r.err);
	harness_result_free(&r);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", v.sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	size_t big = 200 * 1024;
	char *junk = malloc(big);
	memset(junk, '{', big);
	cr_assert_eq(send(fd, junk, big, MSG_NOSIGNAL), (ssize_t)big);
	free(junk);
	const char *tail = "\nnot json\n{\"command\":\"format-disk\"}\n{\"command\":\"status\"}\n";
	cr_assert_eq(send(fd, tail, strlen(tail), MSG_NOSIGNAL), (ssize_t)strlen(tail));
	char buf[8192];
	size_t got = 0;
	buf[0] = 0;
	for (double t0 = now_s(); now_s() - t0 < 10 && !strstr(buf, "\"state\"");) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 1000) <= 0)
			continue;
		ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
		buf[got] = 0;
	}
	cr_assert(strstr(buf, "line-too-long") && strstr(buf, "bad-json") &&
		  strstr(buf, "unknown-command") && strstr(buf, "\"state\":\"running\""),
		  "replies: %s", buf);
	close(fd);
	before = ticks(&v);
	cr_assert_gt(wait_ticks(&v, before + 1, 5), before, "the guest stopped ticking");

	/* Stop: waits for the VM to be gone; status 0; nothing left. */
	const char *stop[] = {"stop", v.sock, NULL};
	r = ctl(stop);
	cr_assert(r.exited && r.exit_code == 0 && strstr(r.out, "stopped"), "stop: %s %s", r.out,
		  r.err);
	harness_result_free(&r);
	cr_assert(vm_wait(&v, 10), "ringvm did not exit after stop");
	check_ended_clean(&v, dev, 0);

	/* The VM is gone: the subcommands say so with status 3. */
	const char *status[] = {"status", v.sock, NULL};
	r = ctl(status);
	cr_assert(r.exited && r.exit_code == 3 && strstr(r.err, "no VM"), "%d %s", r.exit_code,
		  r.err);
	harness_result_free(&r);
	vm_cleanup(&v);
}

Test(e2e_control, status_metrics_pause_resume_stop, .timeout = 120)
{
	lifecycle(true);
}

Test(e2e_control, status_metrics_pause_resume_stop_unsandboxed, .timeout = 120)
{
	lifecycle(false);
}

Test(e2e_control, sigterm_stops_in_order, .timeout = 60)
{
	need_kvm();
	struct vmproc v;
	vm_start(&v, TICKS, NULL);
	struct json_object *st = ctl_json(&v, "status");
	bool sb;
	pid_t dev = device_pid(st, "rng", &sb);
	json_object_put(st);
	cr_assert_geq(wait_ticks(&v, 1, 20), 1);
	kill(v.pid, SIGTERM);
	cr_assert(vm_wait(&v, 10), "ringvm did not exit on SIGTERM");
	check_ended_clean(&v, dev, 0);
	vm_cleanup(&v);
}

Test(e2e_control, sigterm_while_paused_stops, .timeout = 60)
{
	need_kvm();
	struct vmproc v;
	vm_start(&v, TICKS, NULL);
	const char *pause[] = {"pause", v.sock, NULL};
	struct harness_result r = ctl(pause);
	cr_assert(r.exited && r.exit_code == 0);
	harness_result_free(&r);
	struct json_object *st = ctl_json(&v, "status");
	bool sb;
	pid_t dev = device_pid(st, "rng", &sb);
	json_object_put(st);
	kill(v.pid, SIGINT);
	cr_assert(vm_wait(&v, 10), "a paused ringvm did not exit on SIGINT");
	check_ended_clean(&v, dev, 0);
	vm_cleanup(&v);
}

Test(e2e_control, second_sigterm_forces, .timeout = 60)
{
	need_kvm();
	struct vmproc v;
	vm_start(&v, TICKS, NULL);
	struct json_object *st = ctl_json(&v, "status");
	bool sb;
	pid_t dev = device_pid(st, "rng", &sb);
	json_object_put(st);
	/* A device that cannot answer makes the orderly stop wait (2 s per device). */
	cr_assert_eq(kill(dev, SIGSTOP), 0);
	kill(v.pid, SIGTERM);
	usleep(200000);
	double t0 = now_s();
	kill(v.pid, SIGTERM);
	cr_assert(vm_wait(&v, 5), "ringvm did not exit on the second SIGTERM");
	cr_assert_lt(now_s() - t0, 1.0, "the forced exit took %.2f s", now_s() - t0);
	check_ended_clean(&v, dev, 128 + SIGTERM);
	char *err = slurp(v.err);
	cr_assert(strstr(err, "forced exit"), "%s", err);
	free(err);
	vm_cleanup(&v);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	cr_assert_not_null(f);
	fputs(text, f);
	fclose(f);
}

Test(e2e_control, config_file_boots_probe_bad_key_exits_2, .timeout = 60)
{
	need_kvm();
	char dir[64], path[128], json[1024];
	snprintf(dir, sizeof(dir), "/tmp/ringvm-e2e-cfg-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/vm.json", dir);
	snprintf(json, sizeof(json),
		 "{\n  \"kernel\": \"%s\",\n  \"mem\": 128,\n  \"cpus\": 2,\n"
		 "  \"params\": [\"probe=hello,smp\"],\n  \"disable_sandbox\": true,\n"
		 "  \"socket\": \"%s\",\n  \"serial\": \"stdout\"\n}\n",
		 harness_probe_path(), dir);
	write_file(path, json);
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 60};
	struct harness_result r;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "run");
	harness_argv_add(&a, "--config=%s", path);
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	cr_assert(r.exited && r.exit_code == 0, "exit %d: %s", r.exit_code, r.err);
	cr_assert(probe_end_ok(r.out), "%s", r.out);
	const char *hello = probe_line(r.out, "hello", 0);
	char cmdline[128];
	uint64_t ram;
	cr_assert(hello && probe_get(hello, "cmdline", cmdline, sizeof(cmdline)));
	cr_assert_str_eq(cmdline, "probe=hello,smp");
	cr_assert(probe_get_u64(hello, "ram_mib", &ram) && ram < 128 && ram > 100);
	cr_assert_not_null(probe_line_with(r.out, "smp", "started", "2"));
	harness_result_free(&r);
	/* Flags override the file. */
	harness_argv_add(&a, "-m");
	harness_argv_add(&a, "64");
	harness_argv_add(&a, "-p");
	harness_argv_add(&a, "probe=hello");
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	cr_assert(r.exited && r.exit_code == 0, "exit %d: %s", r.exit_code, r.err);
	hello = probe_line(r.out, "hello", 0);
	cr_assert(hello && probe_get(hello, "cmdline", cmdline, sizeof(cmdline)));
	cr_assert_str_eq(cmdline, "probe=hello");
	cr_assert(probe_get_u64(hello, "ram_mib", &ram) && ram < 64);
	harness_result_free(&r);
	/* The socket files went away with the VMs: rmdir at the end checks it. */
	write_file(path, "{\"mem\": 128, \"vcpus\": 2}\n");
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "run");
	harness_argv_add(&a, "--config");
	harness_argv_add(&a, "%s", path);
	harness_argv_add(&a, "%s", harness_probe_path());
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	cr_assert(r.exited && r.exit_code == 2, "exit %d", r.exit_code);
	cr_assert(strstr(r.err, "'vcpus'") && strstr(r.err, "unknown key"), "%s", r.err);
	harness_result_free(&r);
	unlink(path);
	cr_assert_eq(rmdir(dir), 0, "something was left in %s", dir);
}
