/*
 * End-to-end: `ringvm disk resize` (the control socket's disk-resize) on a
 * running VM whose probe guest waits in `blk.resize`: a raw image grows and
 * shrinks (the file follows, the guest gets a config-change interrupt, sees
 * the new capacity and uses the new last sector; after a shrink the old end
 * is refused), a qcow2 image grows (`qemu-img check` clean, `qemu-img info`
 * shows the new virtual size; shrinking it is refused), a read-only disk
 * and malformed sizes are refused without disturbing the VM. Each case runs
 * sandboxed and with --disable-sandbox. Needs /dev/kvm (and qemu-img for
 * the qcow2 case).
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
#define PROBE  "probe=blk.resize blk.resize.secs=60"
#define MIB    (1024ull * 1024)

struct vmproc {
	char dir[64];
	char sock[100];
	char out[128], err[128], img[128];
	pid_t pid;
	int status;
	bool reaped;
};

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool on_path(const char *prog)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
	return system(cmd) == 0;
}

static void need_kvm(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
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

static uint64_t file_size(const char *path)
{
	struct stat st;
	cr_assert_eq(stat(path, &st), 0, "%s: %s", path, strerror(errno));
	return (uint64_t)st.st_size;
}

/* A temporary directory with the image v->img: raw of `size` bytes, or qcow2 (qemu-img). */
static void vm_prepare(struct vmproc *v, bool qcow2, uint64_t size)
{
	memset(v, 0, sizeof(*v));
	snprintf(v->dir, sizeof(v->dir), "/tmp/ringvm-e2e-rsz-XXXXXX");
	cr_assert_not_null(mkdtemp(v->dir));
	snprintf(v->out, sizeof(v->out), "%s/serial", v->dir);
	snprintf(v->err, sizeof(v->err), "%s/stderr", v->dir);
	snprintf(v->img, sizeof(v->img), "%s/%s", v->dir, qcow2 ? "disk.qcow2" : "disk.img");
	if (qcow2) {
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s %llu", v->img,
			 (unsigned long long)size);
		cr_assert_eq(system(cmd), 0, "%s failed", cmd);
	} else {
		int fd = open(v->img, O_RDWR | O_CREAT | O_TRUNC, 0600);
		cr_assert_geq(fd, 0);
		cr_assert_eq(ftruncate(fd, (off_t)size), 0);
		close(fd);
	}
}

/* ringvm run -s DIR --serial file=DIR/serial --block BLOCK [--disable-sandbox] -p PROBE. */
static void vm_start(struct vmproc *v, const char *block, bool sandbox)
{
	struct harness_argv a;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "run");
	harness_argv_add(&a, "-s");
	harness_argv_add(&a, "%s", v->dir);
	harness_argv_add(&a, "--serial");
	harness_argv_add(&a, "file=%s", v->out);
	harness_argv_add(&a, "--block");
	harness_argv_add(&a, "%s", block);
	if (!sandbox)
		harness_argv_add(&a, "--disable-sandbox");
	harness_argv_add(&a, "-p");
	harness_argv_add(&a, "%s", PROBE);
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
	/* The guest is waiting once it says so (the socket exists well before). */
	for (double t0 = now_s(); now_s() - t0 < 30; usleep(10000)) {
		char *s = slurp(v->out);
		bool ready = strstr(s, "PROBE blk.resize ready\r\n") || strstr(s, "PROBE blk.resize ready\n");
		free(s);
		if (ready)
			return;
		if (waitpid(v->pid, &v->status, WNOHANG) == v->pid) {
			v->reaped = true;
			char *e = slurp(v->err);
			cr_assert_fail("ringvm exited (0x%x) before the guest was ready: %s", v->status, e);
		}
	}
	char *e = slurp(v->err);
	cr_assert_fail("the guest never printed 'PROBE blk.resize ready'; stderr: %s", e);
}

/* Wait up to secs for ringvm to exit; true if it did (v->status set). */
static bool vm_wait(struct vmproc *v, double secs)
{
	for (double t0 = now_s(); now_s() - t0 < secs; usleep(5000)) {
		if (waitpid(v->pid, &v->status, WNOHANG) == v->pid) {
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
	unlink(v->img);
	rmdir(v->dir);
}

/* `ringvm disk resize [--json] ID SIZE SOCKET` (result to free). */
static struct harness_result resize_cli(const struct vmproc *v, const char *id, const char *size)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 40};
	struct harness_result r;
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "disk");
	harness_argv_add(&a, "resize");
	harness_argv_add(&a, "--json");
	harness_argv_add(&a, "%s", id);
	harness_argv_add(&a, "%s", size);
	harness_argv_add(&a, "%s", v->sock);
	cr_assert_eq(harness_run(&a, &o, &r), 0);
	return r;
}

/* One request line over the socket itself; the reply object (caller puts it). */
static struct json_object *ask(const struct vmproc *v, const char *line)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", v->sock);
	cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cr_assert_eq(send(fd, line, strlen(line), MSG_NOSIGNAL), (ssize_t)strlen(line));
	char buf[4096];
	size_t got = 0;
	buf[0] = 0;
	for (double t0 = now_s(); now_s() - t0 < 20 && !strchr(buf, '\n');) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 1000) <= 0)
			continue;
		ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
		buf[got] = 0;
	}
	close(fd);
	struct json_object *o = json_tokener_parse(buf);
	cr_assert_not_null(o, "no JSON reply to %s: '%s'", line, buf);
	return o;
}

static const char *err_code(struct json_object *reply)
{
	struct json_object *e, *c;
	if (!json_object_object_get_ex(reply, "error", &e) ||
	    !json_object_object_get_ex(e, "code", &c))
		return "";
	return json_object_get_string(c);
}

/* The CLI resize succeeded and reported want bytes. */
static void resize_ok(const struct vmproc *v, const char *id, const char *size, uint64_t want)
{
	struct harness_result r = resize_cli(v, id, size);
	cr_assert(r.exited && r.exit_code == 0, "disk resize %s %s: exit %d: %s", id, size,
		  r.exit_code, r.err);
	struct json_object *o = json_tokener_parse(r.out), *res, *sz;
	cr_assert_not_null(o, "disk resize printed %s", r.out);
	cr_assert(json_object_object_get_ex(o, "result", &res) &&
		  json_object_object_get_ex(res, "size", &sz));
	cr_assert_eq((uint64_t)json_object_get_int64(sz), want, "%s", r.out);
	json_object_put(o);
	harness_result_free(&r);
}

/* The CLI resize was refused (exit 1) with code in its message. */
static void resize_refused(const struct vmproc *v, const char *id, const char *size,
			   const char *code)
{
	struct harness_result r = resize_cli(v, id, size);
	cr_assert(r.exited && r.exit_code == 1, "disk resize %s %s: exit %d, want 1: %s", id,
		  size, r.exit_code, r.err);
	struct json_object *o = json_tokener_parse(r.out);
	cr_assert_not_null(o, "disk resize printed %s", r.out);
	cr_assert_str_eq(err_code(o), code, "%s", r.out);
	json_object_put(o);
	harness_result_free(&r);
}

/* The guest's result line after a resize from old to want bytes, and a clean exit. */
static void check_guest(struct vmproc *v, uint64_t old, uint64_t want)
{
	bool done = vm_wait(v, 60);
	char *out = slurp(v->out), *err = slurp(v->err);
	cr_assert(done, "ringvm did not exit after the resize; serial: %s", out);
	cr_assert(WIFEXITED(v->status) && WEXITSTATUS(v->status) == 0,
		  "ringvm ended with 0x%x; stderr: %s; serial: %s", v->status, err, out);
	cr_assert(probe_end_ok(out), "serial: %s", out);
	const char *l = probe_line_with(out, "blk.resize", "result", "ok");
	cr_assert_not_null(l, "no blk.resize result=ok: %s", out);
	uint64_t o = 0, n = 0, irq = 0;
	cr_assert(probe_get_u64(l, "old", &o) && probe_get_u64(l, "new", &n) &&
		  probe_get_u64(l, "irq", &irq));
	cr_assert_eq(o, old / 512, "%s", l);
	cr_assert_eq(n, want / 512, "%s", l);
	cr_assert_eq(irq, 1, "no config-change interrupt: %s", l);
	char w[32];
	cr_assert(probe_get(l, "read_last", w, sizeof(w)) && strcmp(w, "ok") == 0, "%s", l);
	if (want < old)
		cr_assert(probe_get(l, "read_old_last", w, sizeof(w)) && strcmp(w, "ioerr") == 0,
			  "%s", l);
	free(out);
	free(err);
}

/* The guest's tag is in the last sector of the raw file. */
static void check_raw_tail(const struct vmproc *v, uint64_t size)
{
	uint64_t words[64];
	int fd = open(v->img, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, words, sizeof(words), (off_t)(size - 512)), (ssize_t)sizeof(words));
	close(fd);
	cr_assert_eq(words[0], 0x2144455a49534552ull, "no guest tag at the new last sector");
	cr_assert_eq(words[1], size / 512 - 1);
	cr_assert_eq(words[63], ~(size / 512 - 1));
}

static void raw_grow(bool sandbox)
{
	need_kvm();
	struct vmproc v;
	vm_prepare(&v, false, 16 * MIB);
	char block[200];
	snprintf(block, sizeof(block), "path=%s", v.img);
	vm_start(&v, block, sandbox);
	/* By its default id: the image's file name. */
	resize_ok(&v, "disk.img", "48M", 48 * MIB);
	check_guest(&v, 16 * MIB, 48 * MIB);
	cr_assert_eq(file_size(v.img), 48 * MIB);
	check_raw_tail(&v, 48 * MIB);
	vm_cleanup(&v);
}

static void raw_shrink(bool sandbox)
{
	need_kvm();
	struct vmproc v;
	vm_prepare(&v, false, 32 * MIB);
	char block[200];
	snprintf(block, sizeof(block), "path=%s,format=raw,id=scratch", v.img);
	vm_start(&v, block, sandbox);
	/* Over the protocol itself, the size as an integer, the disk by its id=. */
	struct json_object *o = ask(&v, "{\"command\":\"disk-resize\",\"disk\":\"scratch\","
					"\"size\":8388608}\n");
	struct json_object *ok, *res, *sz;
	cr_assert(json_object_object_get_ex(o, "ok", &ok) && json_object_get_boolean(ok), "%s",
		  json_object_to_json_string(o));
	cr_assert(json_object_object_get_ex(o, "result", &res) &&
		  json_object_object_get_ex(res, "size", &sz));
	cr_assert_eq((uint64_t)json_object_get_int64(sz), 8 * MIB);
	json_object_put(o);
	check_guest(&v, 32 * MIB, 8 * MIB);
	cr_assert_eq(file_size(v.img), 8 * MIB);
	check_raw_tail(&v, 8 * MIB);
	vm_cleanup(&v);
}

/* `qemu-img info` of the image: its virtual size, and `qemu-img check` exits 0. */
static void check_qcow2(const struct vmproc *v, uint64_t want)
{
	struct harness_argv a;
	struct harness_opts opts = {.timeout_s = 60};
	struct harness_result r;
	harness_argv_init(&a);
	harness_argv_add(&a, "qemu-img");
	harness_argv_add(&a, "check");
	harness_argv_add(&a, "%s", v->img);
	cr_assert_eq(harness_run(&a, &opts, &r), 0);
	cr_assert(r.exited && r.exit_code == 0, "qemu-img check: exit %d: %s%s", r.exit_code, r.out,
		  r.err);
	harness_result_free(&r);
	harness_argv_init(&a);
	harness_argv_add(&a, "qemu-img");
	harness_argv_add(&a, "info");
	harness_argv_add(&a, "--output=json");
	harness_argv_add(&a, "%s", v->img);
	cr_assert_eq(harness_run(&a, &opts, &r), 0);
	cr_assert(r.exited && r.exit_code == 0, "qemu-img info: %s", r.err);
	struct json_object *o = json_tokener_parse(r.out), *vs;
	cr_assert(o && json_object_object_get_ex(o, "virtual-size", &vs), "%s", r.out);
	cr_assert_eq((uint64_t)json_object_get_int64(vs), want, "%s", r.out);
	json_object_put(o);
	harness_result_free(&r);
}

static void qcow2_grow(bool sandbox)
{
	need_kvm();
	REQUIRE_FACILITY(on_path("qemu-img"), "qemu-img (Debian's qemu-utils) is not installed");
	struct vmproc v;
	vm_prepare(&v, true, 16 * MIB);
	char block[200];
	snprintf(block, sizeof(block), "path=%s,id=sys", v.img);
	vm_start(&v, block, sandbox);
	resize_refused(&v, "sys", "8M", "not-supported"); /* qcow2 only grows */
	/* Past one L2 table's reach (512 MiB with 64 KiB clusters): a second L1 entry. */
	resize_ok(&v, "sys", "1G", 1024 * MIB);
	check_guest(&v, 16 * MIB, 1024 * MIB);
	check_qcow2(&v, 1024 * MIB);
	vm_cleanup(&v);
}

/* Stop the VM over the socket and expect a clean exit with the guest still waiting. */
static void stop_vm(struct vmproc *v)
{
	struct json_object *o = ask(v, "{\"command\":\"stop\"}\n");
	json_object_put(o);
	cr_assert(vm_wait(v, 30), "ringvm did not stop");
	cr_assert(WIFEXITED(v->status) && WEXITSTATUS(v->status) == 0, "status 0x%x", v->status);
}

static void read_only_refused(bool sandbox)
{
	need_kvm();
	struct vmproc v;
	vm_prepare(&v, false, 16 * MIB);
	char block[200];
	snprintf(block, sizeof(block), "path=%s,ro", v.img);
	vm_start(&v, block, sandbox);
	resize_refused(&v, "0", "32M", "read-only");
	resize_refused(&v, "0", "8M", "read-only");
	cr_assert_eq(file_size(v.img), 16 * MIB);
	/* The guest saw nothing: no new capacity line. */
	char *out = slurp(v.out);
	cr_assert_null(probe_line_with(out, "blk.resize", "result", "ok"), "%s", out);
	free(out);
	stop_vm(&v);
	vm_cleanup(&v);
}

static void bad_size_refused(bool sandbox)
{
	need_kvm();
	struct vmproc v;
	vm_prepare(&v, false, 16 * MIB);
	char block[200];
	snprintf(block, sizeof(block), "path=%s", v.img);
	vm_start(&v, block, sandbox);
	resize_refused(&v, "0", "1000", "bad-argument");   /* not a multiple of 512 */
	resize_refused(&v, "0", "0", "bad-argument");
	resize_refused(&v, "0", "12Q", "bad-argument");
	resize_refused(&v, "0", "99999999999999999999", "bad-argument");
	resize_refused(&v, "1", "32M", "not-found");       /* one disk only */
	resize_refused(&v, "nosuch", "32M", "not-found");
	const char *bad_json[] = {
	    "{\"command\":\"disk-resize\",\"disk\":0,\"size\":1024}\n", /* disk not a string */
	    "{\"command\":\"disk-resize\",\"disk\":\"0\",\"size\":-512}\n",
	    "{\"command\":\"disk-resize\",\"disk\":\"0\",\"size\":1.5}\n",
	    "{\"command\":\"disk-resize\",\"disk\":\"0\"}\n",
	};
	for (size_t i = 0; i < sizeof(bad_json) / sizeof(bad_json[0]); i++) {
		struct json_object *o = ask(&v, bad_json[i]);
		cr_assert_str_eq(err_code(o), "bad-argument", "%s", bad_json[i]);
		json_object_put(o);
	}
	cr_assert_eq(file_size(v.img), 16 * MIB);
	/* The VM took none of it to heart: a good resize still works. */
	resize_ok(&v, "0", "20M", 20 * MIB);
	check_guest(&v, 16 * MIB, 20 * MIB);
	cr_assert_eq(file_size(v.img), 20 * MIB);
	vm_cleanup(&v);
}

TestSuite(e2e_ringvm_resize, .timeout = 180);

Test(e2e_ringvm_resize, raw_grow)
{
	raw_grow(true);
}

Test(e2e_ringvm_resize, raw_grow_unsandboxed)
{
	raw_grow(false);
}

Test(e2e_ringvm_resize, raw_shrink)
{
	raw_shrink(true);
}

Test(e2e_ringvm_resize, raw_shrink_unsandboxed)
{
	raw_shrink(false);
}

Test(e2e_ringvm_resize, qcow2_grow)
{
	qcow2_grow(true);
}

Test(e2e_ringvm_resize, qcow2_grow_unsandboxed)
{
	qcow2_grow(false);
}

Test(e2e_ringvm_resize, read_only_refused)
{
	read_only_refused(true);
}

Test(e2e_ringvm_resize, read_only_refused_unsandboxed)
{
	read_only_refused(false);
}

Test(e2e_ringvm_resize, bad_size_refused)
{
	bad_size_refused(true);
}

Test(e2e_ringvm_resize, bad_size_refused_unsandboxed)
{
	bad_size_refused(false);
}
