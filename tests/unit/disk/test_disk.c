/*
 * disk/: opening images (flags, locks, format detection, the qcow2 refusal)
 * and the raw backend's operations through a real executor on temp files,
 * with host errors (ENOSPC, EIO) reported as -errno.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "disk/disk.h"
#include "tests/common/facility.h"

static char path[64];
static int tfd = -1;

static void mkimage(uint64_t size)
{
	snprintf(path, sizeof(path), "/tmp/ringvm-disk-XXXXXX");
	tfd = mkstemp(path);
	cr_assert_geq(tfd, 0);
	cr_assert_eq(ftruncate(tfd, (off_t)size), 0);
}

static void rmimage(void)
{
	if (tfd >= 0)
		close(tfd);
	tfd = -1;
	unlink(path);
}

static int open_img(struct disk *d, enum disk_format f, bool ro, bool direct, char *err,
                    size_t errlen)
{
	struct disk_open_params p = {.path = path, .format = f, .read_only = ro, .direct = direct};
	return disk_open(d, &p, err, errlen);
}

Test(disk_open, flags_size_and_format)
{
	char err[256];
	struct disk d;
	mkimage(1 << 20);
	cr_assert_eq(open_img(&d, DISK_FORMAT_AUTO, false, false, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(d.size, 1 << 20);
	cr_expect_eq(d.format, DISK_FORMAT_RAW);
	cr_expect(d.auto_detected);
	cr_expect_eq(d.io_fd, d.fd);
	int fl = fcntl(d.fd, F_GETFL);
	cr_expect_eq(fl & O_ACCMODE, O_RDWR);
	cr_expect(fcntl(d.fd, F_GETFD) & FD_CLOEXEC);
	disk_close(&d);
	cr_assert_eq(open_img(&d, DISK_FORMAT_RAW, true, false, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(fcntl(d.fd, F_GETFL) & O_ACCMODE, O_RDONLY, "ro opens O_RDONLY");
	cr_expect_not(d.auto_detected);
	disk_close(&d);
	int r = open_img(&d, DISK_FORMAT_AUTO, false, true, err, sizeof(err));
	if (r == 0) {
		cr_expect(fcntl(d.fd, F_GETFL) & O_DIRECT, "direct opens O_DIRECT");
		disk_close(&d);
	} else {
		cr_expect_eq(r, -EINVAL, "%s", err);
	}
	disk_close(&d); /* idempotent */
	rmimage();
}

Test(disk_open, refusals_name_the_path)
{
	static const struct {
		const char *p;
		int want;
		const char *msg;
	} cases[] = {
	    {"/no/such/ringvm/image", -ENOENT, "No such file"},
	    {"/tmp", -EISDIR, NULL},
	    {"", -EINVAL, "no image path"},
	};
	char err[256];
	struct disk d;
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct disk_open_params p = {.path = cases[i].p};
		err[0] = 0;
		int r = disk_open(&d, &p, err, sizeof(err));
		/* A directory fails at open (EISDIR for O_RDWR) or as "not a file". */
		if (cases[i].want == -EISDIR)
			cr_expect(r == -EISDIR || r == -EINVAL, "case %u: %d", i, r);
		else
			cr_expect_eq(r, cases[i].want, "case %u: %d", i, r);
		if (*cases[i].p)
			cr_expect_not_null(strstr(err, cases[i].p), "case %u: '%s'", i, err);
		if (cases[i].msg)
			cr_expect_not_null(strstr(err, cases[i].msg), "case %u: '%s'", i, err);
		cr_expect_eq(d.fd, -1);
	}
	mkimage(100); /* smaller than a sector */
	cr_expect_eq(open_img(&d, DISK_FORMAT_AUTO, false, false, err, sizeof(err)), -EINVAL);
	cr_expect_not_null(strstr(err, "smaller"), "%s", err);
	rmimage();
}

/* A file with the qcow2 magic and a broken header is never opened, as qcow2 or as raw. */
Test(disk_open, qcow2_magic_never_opened_as_raw)
{
	char err[256];
	struct disk d;
	mkimage(1 << 20);
	cr_assert_eq(pwrite(tfd, DISK_QCOW2_MAGIC "\0\0\0\3", 8, 0), 8);
	for (int f = DISK_FORMAT_AUTO; f <= DISK_FORMAT_QCOW2; f++) {
		err[0] = 0;
		cr_expect_lt(open_img(&d, (enum disk_format)f, false, false, err, sizeof(err)), 0,
		             "format %d", f);
		cr_expect_not_null(strstr(err, path), "format %d: %s", f, err);
		cr_expect_eq(d.fd, -1);
	}
	/* format=qcow2 on a file without the magic: refused the same way. */
	cr_assert_eq(pwrite(tfd, "\0\0\0\0", 4, 0), 4);
	cr_expect_lt(open_img(&d, DISK_FORMAT_QCOW2, false, false, err, sizeof(err)), 0);
	rmimage();
}

Test(disk_open, image_locks)
{
	char err[256];
	struct disk a, b;
	mkimage(1 << 20);
	cr_assert_eq(open_img(&a, DISK_FORMAT_AUTO, false, false, err, sizeof(err)), 0);
	cr_expect_eq(open_img(&b, DISK_FORMAT_AUTO, false, false, err, sizeof(err)), -EBUSY);
	cr_expect_not_null(strstr(err, path), "%s", err);
	cr_expect_not_null(strstr(err, "in use by another process"), "%s", err);
	cr_expect_eq(open_img(&b, DISK_FORMAT_AUTO, true, false, err, sizeof(err)), -EBUSY);
	cr_expect_not_null(strstr(err, "locked for writing"), "%s", err);
	/* A child process sees the same lock. */
	pid_t pid = fork();
	if (pid == 0) {
		struct disk c;
		_exit(open_img(&c, DISK_FORMAT_AUTO, false, false, err, sizeof(err)) == -EBUSY ? 0 : 1);
	}
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "another process got the image");
	disk_close(&a);
	/* Readers share; a writer then waits for all of them. */
	cr_assert_eq(open_img(&a, DISK_FORMAT_AUTO, true, false, err, sizeof(err)), 0);
	cr_assert_eq(open_img(&b, DISK_FORMAT_AUTO, true, false, err, sizeof(err)), 0);
	struct disk w;
	cr_expect_eq(open_img(&w, DISK_FORMAT_AUTO, false, false, err, sizeof(err)), -EBUSY);
	disk_close(&a);
	disk_close(&b);
	cr_expect_eq(open_img(&w, DISK_FORMAT_AUTO, false, false, err, sizeof(err)), 0);
	disk_close(&w);
	rmimage();
}

Test(disk_open, format_probe_writes)
{
	struct disk d = {.format = DISK_FORMAT_RAW, .auto_detected = true};
	char magic_sector[512] = DISK_QCOW2_MAGIC, other[512] = "QFI?";
	char q[1] = {'Q'}, fi[3] = {'F', 'I', '\xfb'};
	struct iovec whole = {magic_sector, 512}, no = {other, 512};
	struct iovec split[2] = {{q, 1}, {fi, 3}};
	cr_expect(disk_write_is_format_probe(&d, &whole, 1, 0));
	cr_expect(disk_write_is_format_probe(&d, split, 2, 0), "magic across two iovecs");
	cr_expect_not(disk_write_is_format_probe(&d, &no, 1, 0));
	cr_expect_not(disk_write_is_format_probe(&d, &whole, 1, 512), "not at sector 0");
	d.auto_detected = false;
	cr_expect_not(disk_write_is_format_probe(&d, &whole, 1, 0), "format=raw was explicit");
}

/* ---- the raw backend through the executor ---- */

struct job {
	struct disk *d;
	int (*fn)(struct exec *ex, struct job *j);
	uint8_t *buf;
	size_t len;
	uint64_t off;
	int64_t res[8];
};

static int job_task(struct exec *ex, void *arg)
{
	struct job *j = arg;
	return j->fn(ex, j);
}

static int run(struct job *j)
{
	struct exec *ex;
	struct exec_task *t;
	REQUIRE_FACILITY(facility_io_uring(), "io_uring_setup unavailable");
	cr_assert_eq(exec_create(&ex, NULL), 0);
	cr_assert_eq(exec_spawn(ex, job_task, j, 0, &t), 0);
	int r = exec_join(ex, t);
	exec_destroy(ex);
	return r;
}

static int rw_ops(struct exec *ex, struct job *j)
{
	struct disk *d = j->d;
	uint8_t *a = j->buf, *b = j->buf + 65536;
	for (unsigned i = 0; i < 65536; i++)
		a[i] = (uint8_t)(i * 7 + 1);
	/* Three iovecs, unequal: the data lands contiguously. */
	struct iovec w[3] = {{a, 512}, {a + 512, 4096 - 512}, {a + 4096, 65536 - 4096}};
	j->res[0] = d->ops->writev(d, ex, w, 3, 1 << 20);
	memset(b, 0, 65536);
	struct iovec r[2] = {{b, 1000}, {b + 1000, 65536 - 1000}};
	j->res[1] = d->ops->readv(d, ex, r, 2, 1 << 20);
	j->res[2] = d->ops->flush(d, ex);
	j->res[3] = d->ops->discard(d, ex, (1 << 20) + 4096, 8192);
	j->res[4] = d->ops->write_zeroes(d, ex, (1 << 20) + 32768, 4096, false);
	j->res[5] = d->ops->write_zeroes(d, ex, (1 << 20) + 40960, 4096, true);
	return 0;
}

Test(disk_raw, read_write_flush_discard_zeroes)
{
	char err[256];
	struct disk d;
	mkimage(4 << 20);
	cr_assert_eq(open_img(&d, DISK_FORMAT_RAW, false, false, err, sizeof(err)), 0, "%s", err);
	static uint8_t buf[2 * 65536];
	struct job j = {.d = &d, .fn = rw_ops, .buf = buf};
	cr_assert_eq(run(&j), 0);
	cr_expect_eq(j.res[0], 65536, "writev %lld", (long long)j.res[0]);
	cr_expect_eq(j.res[1], 65536, "readv %lld", (long long)j.res[1]);
	cr_expect_eq(memcmp(buf, buf + 65536, 65536), 0, "read back other bytes");
	for (int i = 2; i < 6; i++)
		cr_expect_eq(j.res[i], 0, "op %d: %lld", i, (long long)j.res[i]);
	uint8_t file[65536];
	cr_assert_eq(pread(tfd, file, sizeof(file), 1 << 20), (ssize_t)sizeof(file));
	for (unsigned i = 0; i < 65536; i++) {
		bool zero = (i >= 4096 && i < 12288) || (i >= 32768 && i < 36864) ||
		            (i >= 40960 && i < 45056);
		uint8_t want = zero ? 0 : (uint8_t)(i * 7 + 1);
		if (file[i] != want)
			cr_assert_fail("file byte %u is %u, want %u", i, file[i], want);
	}
	disk_close(&d);
	rmimage();
}

static int past_eof(struct exec *ex, struct job *j)
{
	struct iovec v = {j->buf, j->len};
	memset(j->buf, 0xcc, j->len);
	j->res[0] = j->d->ops->readv(j->d, ex, &v, 1, j->off);
	return 0;
}

Test(disk_raw, read_past_end_of_file_is_zeros)
{
	char err[256];
	struct disk d;
	mkimage(1 << 20);
	cr_assert_eq(pwrite(tfd, "abcd", 4, 4096), 4);
	cr_assert_eq(open_img(&d, DISK_FORMAT_RAW, false, false, err, sizeof(err)), 0);
	cr_assert_eq(ftruncate(tfd, 4096 + 2), 0); /* someone shrank the file under us */
	static uint8_t buf[8192];
	struct job j = {.d = &d, .fn = past_eof, .buf = buf, .len = 8192, .off = 0};
	cr_assert_eq(run(&j), 0);
	cr_expect_eq(j.res[0], 8192);
	cr_expect(buf[4096] == 'a' && buf[4097] == 'b' && buf[4098] == 0 && buf[8191] == 0);
	disk_close(&d);
	rmimage();
}

static int write_one(struct exec *ex, struct job *j)
{
	struct iovec v = {j->buf, j->len};
	j->res[0] = j->d->ops->writev(j->d, ex, &v, 1, j->off);
	j->res[1] = j->d->ops->discard(j->d, ex, 0, 4096);
	j->res[2] = j->d->ops->flush(j->d, ex);
	return 0;
}

Test(disk_raw, read_only_refuses_writes)
{
	char err[256];
	struct disk d;
	mkimage(1 << 20);
	cr_assert_eq(open_img(&d, DISK_FORMAT_RAW, true, false, err, sizeof(err)), 0);
	static uint8_t buf[4096];
	struct job j = {.d = &d, .fn = write_one, .buf = buf, .len = 4096};
	cr_assert_eq(run(&j), 0);
	cr_expect_eq(j.res[0], -EROFS);
	cr_expect_eq(j.res[1], -EROFS);
	cr_expect_eq(j.res[2], 0, "flush of a read-only disk is a no-op");
	disk_close(&d);
	rmimage();
}

Test(disk_raw, enospc_is_reported)
{
	/* /dev/full fails every write with ENOSPC: a disk of any size on it. */
	int fd = open("/dev/full", O_RDWR | O_CLOEXEC);
	REQUIRE_FACILITY(fd >= 0, "/dev/full missing");
	struct disk d = {.ops = &disk_raw_ops, .fd = fd, .io_fd = fd, .size = 1 << 20};
	static uint8_t buf[4096];
	struct job j = {.d = &d, .fn = write_one, .buf = buf, .len = 4096};
	cr_assert_eq(run(&j), 0);
	cr_expect_eq(j.res[0], -ENOSPC, "%lld", (long long)j.res[0]);
	disk_close(&d);
}

Test(disk_raw, enospc_on_a_full_filesystem)
{
	REQUIRE_FACILITY(facility_root(), "mounting a small tmpfs needs root");
	char dir[] = "/tmp/ringvm-diskfull-XXXXXX";
	cr_assert_not_null(mkdtemp(dir));
	if (mount("ringvm-test", dir, "tmpfs", 0, "size=64k") < 0) {
		rmdir(dir);
		REQUIRE_FACILITY(false, "cannot mount tmpfs here");
	}
	snprintf(path, sizeof(path), "%s/img", dir);
	tfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	cr_assert_geq(tfd, 0);
	cr_assert_eq(ftruncate(tfd, 4 << 20), 0);
	char err[256];
	struct disk d;
	cr_assert_eq(open_img(&d, DISK_FORMAT_RAW, false, false, err, sizeof(err)), 0, "%s", err);
	static uint8_t buf[256 * 1024];
	struct job j = {.d = &d, .fn = write_one, .buf = buf, .len = sizeof(buf)};
	cr_assert_eq(run(&j), 0);
	cr_expect_eq(j.res[0], -ENOSPC, "%lld", (long long)j.res[0]);
	disk_close(&d);
	rmimage();
	cr_expect_eq(umount(dir), 0);
	rmdir(dir);
}

/* EIO from the host: a device-mapper "error" target behind a linear sector 0. */
Test(disk_raw, eio_is_reported)
{
	REQUIRE_FACILITY(facility_root(), "device-mapper needs root");
	if (system("command -v dmsetup >/dev/null && command -v losetup >/dev/null") != 0)
		cr_skip_test("skipped: dmsetup/losetup not installed");
	mkimage(1 << 20);
	char cmd[512], loop[64] = "";
	snprintf(cmd, sizeof(cmd), "losetup -f --show %s", path);
	FILE *p = popen(cmd, "r");
	if (!p || !fgets(loop, sizeof(loop), p) || pclose(p) != 0) {
		rmimage();
		cr_skip_test("skipped: no loop device");
	}
	loop[strcspn(loop, "\n")] = 0;
	char name[32];
	snprintf(name, sizeof(name), "ringvm-eio-%d", (int)getpid());
	snprintf(cmd, sizeof(cmd),
	         "printf '0 8 linear %s 0\\n8 2040 error\\n' | dmsetup create %s 2>/dev/null", loop,
	         name);
	if (system(cmd) != 0) {
		snprintf(cmd, sizeof(cmd), "losetup -d %s", loop);
		(void)!system(cmd);
		rmimage();
		/* Not a facility CI promises: kernels without device-mapper skip. */
		cr_skip_test("skipped: device-mapper unavailable in this kernel");
	}
	char dev[64];
	snprintf(dev, sizeof(dev), "/dev/mapper/%s", name);
	struct disk_open_params op = {.path = dev, .format = DISK_FORMAT_RAW};
	char err[256];
	struct disk d;
	int r = disk_open(&d, &op, err, sizeof(err));
	cr_expect_eq(r, 0, "%s", err);
	if (r == 0) {
		cr_expect_eq(d.size, 1 << 20, "block device size");
		static uint8_t buf[4096];
		struct job j = {.d = &d, .fn = past_eof, .buf = buf, .len = 4096, .off = 8192};
		cr_assert_eq(run(&j), 0);
		cr_expect_eq(j.res[0], -EIO, "%lld", (long long)j.res[0]);
		disk_close(&d);
	}
	snprintf(cmd, sizeof(cmd), "dmsetup remove %s; losetup -d %s", name, loop);
	(void)!system(cmd);
	rmimage();
}
