/*
 * disk/qcow2 write paths: a partial allocating write without a backing file
 * writes only the guest's bytes and zeroes the rest by fallocate (on ext4,
 * and on tmpfs, which has no ZERO_RANGE), also into a freed cluster that
 * still holds old data; an in-place write in flight while a discard frees
 * its cluster never lands in the cluster's next owner (a deterministic
 * interleaving through the executor); a dirty image qemu-io left behind is
 * rebuilt on a read-write open. qcow-tool resize --shrink: refused over
 * data, shrinks the L1 table (freeing its clusters) over unallocated space.
 * Progress bars only when asked or on a terminal; zstd-compressed convert.
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "disk/disk.h"
#include "disk/qcow2.h"
#include "tests/common/facility.h"

#define CS (64u << 10)
#define QCOW_TOOL BUILD_PATH("tools/qcow-tool/qcow-tool")

static char dir[64];


static void setup_in(const char *base)
{
	REQUIRE_FACILITY(test_sh("qemu-img --version >/dev/null 2>&1") == 0,
	                 "qemu-img (qemu-utils) on PATH");
	REQUIRE_FACILITY(facility_io_uring(), "io_uring");
	snprintf(dir, sizeof(dir), "%s/ringvm-qw-XXXXXX", base);
	cr_assert_not_null(mkdtemp(dir));
}

static void rm_dir(void)
{
	cr_expect_eq(test_sh("rm -rf '%s'", dir), 0);
}

static const char *path(const char *name)
{
	static char ring[4][128];
	static unsigned next;
	char *p = ring[next++ % 4];
	snprintf(p, sizeof(ring[0]), "%s/%s", dir, name);
	return p;
}

static void open_rw(struct disk *d, const char *p)
{
	char err[512];
	struct disk_open_params prm = {.path = p, .format = DISK_FORMAT_AUTO};
	cr_assert_eq(disk_open(d, &prm, err, sizeof(err)), 0, "%s", err);
}

typedef int body_fn(struct exec *ex, struct disk *d);

static int tramp_body;
static body_fn *the_body;
static struct disk *the_disk;

static int tramp(struct exec *ex, void *arg)
{
	(void)arg;
	return the_body(ex, the_disk);
}

static int run(body_fn *fn, struct disk *d)
{
	struct exec *ex;
	int r = exec_create(&ex, NULL);
	cr_assert_eq(r, 0);
	struct exec_task *t;
	the_body = fn;
	the_disk = d;
	r = exec_spawn(ex, tramp, &tramp_body, 1 << 20, &t);
	if (r == 0)
		r = exec_join(ex, t);
	exec_destroy(ex);
	return r;
}

static int wr(struct exec *ex, struct disk *d, uint64_t off, uint8_t byte, size_t len)
{
	uint8_t *b = malloc(len);
	memset(b, byte, len);
	struct iovec v = {b, len};
	int64_t r = d->ops->writev(d, ex, &v, 1, off);
	free(b);
	return r < 0 ? (int)r : 0;
}

/* ---- partial allocating writes ---- */

static int partial_body(struct exec *ex, struct disk *d)
{
	/* Cluster 0 full of 0xff, then discarded: its host cluster is free but
	 * still holds 0xff, and the next allocation reuses it. */
	cr_assert_eq(wr(ex, d, 0, 0xff, CS), 0);
	cr_assert_eq(d->ops->discard(d, ex, 0, CS), 0);
	cr_assert_eq(wr(ex, d, 5 * (uint64_t)CS + 1000, 0x11, 3000), 0);
	/* A fresh cluster past the end of the file; one crossing two clusters. */
	cr_assert_eq(wr(ex, d, 40 * (uint64_t)CS + 512, 0x22, 4096), 0);
	cr_assert_eq(wr(ex, d, 60 * (uint64_t)CS - 2048, 0x33, 4096), 0);
	/* Write-zeroes into an unallocated cluster allocates nothing. */
	cr_assert_eq(d->ops->write_zeroes(d, ex, 70 * (uint64_t)CS + 4096, 8192, false), 0);
	enum qcow2_kind k;
	uint64_t h;
	cr_assert_eq(qcow2_map_cluster(d, ex, 70, &k, &h), 0);
	cr_expect_eq(k, QCOW2_UNALLOC, "write-zeroes over zeros allocated a cluster");
	return d->ops->flush(d, ex);
}

static void partial_alloc(const char *base, unsigned version)
{
	setup_in(base);
	const char *img = path("p.qcow2");
	cr_assert_eq(test_sh("qemu-img create -q -f qcow2 -o compat=%s '%s' 8M",
	                version == 2 ? "0.10" : "1.1", img), 0);
	struct disk d;
	open_rw(&d, img);
	cr_assert_eq(run(partial_body, &d), 0);
	disk_close(&d);
	/* The expected content, built on a raw file by qemu-io, then compared. */
	const char *raw = path("p.raw");
	cr_assert_eq(test_sh("qemu-img create -q -f raw '%s' 8M && qemu-io -f raw "
	                "-c 'write -P 0x11 %u 3000' -c 'write -P 0x22 %u 4096' "
	                "-c 'write -P 0x33 %u 4096' '%s' >/dev/null",
	                raw, 5 * CS + 1000, 40 * CS + 512, 60 * CS - 2048, raw), 0);
	cr_expect_eq(test_sh("qemu-img compare -q -f raw -F qcow2 '%s' '%s'", raw, img), 0,
	             "%s: the image does not read as written (v%u)", base, version);
	cr_expect_eq(test_sh("qemu-img check -q '%s'", img), 0, "%s: qemu-img check (v%u)", base,
	             version);
	/* Every data cluster lies inside the file. */
	struct stat st;
	cr_assert_eq(stat(img, &st), 0);
	cr_expect_eq(st.st_size % 512, 0);
	cr_expect_eq(test_sh("qemu-img check --output=json '%s' | grep -q '\"image-end-offset\": %lld'",
	                img, (long long)st.st_size), 0, "image end offset is not the file size");
	rm_dir();
}

Test(disk_qcow2_write, partial_allocating_write_zero_fills_ext4)
{
	partial_alloc("/tmp", 3);
	partial_alloc("/tmp", 2);
}

Test(disk_qcow2_write, partial_allocating_write_zero_fills_tmpfs)
{
	struct stat st;
	REQUIRE_FACILITY(stat("/dev/shm", &st) == 0, "/dev/shm (tmpfs)");
	partial_alloc("/dev/shm", 3);
	partial_alloc("/dev/shm", 2);
}

/* ---- in-place write vs discard of the same cluster ---- */

struct racer {
	struct disk *d;
	uint64_t off;
	uint8_t byte;
	size_t len;
	bool discard, done;
	int r;
};

static int racer_task(struct exec *ex, void *arg)
{
	struct racer *a = arg;
	a->r = a->discard ? a->d->ops->discard(a->d, ex, a->off, a->len)
	                  : wr(ex, a->d, a->off, a->byte, a->len);
	a->done = true;
	return 0;
}

static int race_body(struct exec *ex, struct disk *d)
{
	cr_assert_eq(wr(ex, d, 0, 0x58, CS), 0); /* cluster 0 allocated: writes go in place */
	struct racer a = {d, 0, 0x41, 4096, false}, b = {d, 0, 0, CS, true},
	             c = {d, CS, 0x43, CS, false};
	struct exec_task *ta, *tb, *tc;
	/* A: an in-place write to cluster 0, parked after its lookup (in flight). */
	qcow2_hold_writes(d, ex, true);
	cr_assert_eq(exec_spawn(ex, racer_task, &a, 0, &ta), 0);
	for (int i = 0; i < 10; i++)
		exec_yield(ex);
	cr_assert_not(a.done);
	/* B: discard cluster 0. Without the in-flight guard it frees the host
	 * cluster at once; give it ample time either way. */
	cr_assert_eq(exec_spawn(ex, racer_task, &b, 0, &tb), 0);
	for (int i = 0; i < 200 && !b.done; i++)
		cr_assert_eq(exec_sleep(ex, 1000000), 0);
	cr_log_info("discard %s while the write was in flight",
	            b.done ? "completed" : "waited");
	/* C: a new cluster for guest cluster 1 (would reuse a freed cluster 0). */
	cr_assert_eq(exec_spawn(ex, racer_task, &c, 0, &tc), 0);
	cr_assert_eq(exec_join(ex, tc), 0);
	cr_assert_eq(c.r, 0);
	/* A's write now lands: it must not reach cluster 1's data. */
	qcow2_hold_writes(d, ex, false);
	cr_assert_eq(exec_join(ex, ta), 0);
	cr_assert_eq(exec_join(ex, tb), 0);
	cr_assert_eq(a.r, 0);
	cr_assert_eq(b.r, 0);
	uint8_t *buf = malloc(CS);
	struct iovec v = {buf, CS};
	cr_assert_eq(d->ops->readv(d, ex, &v, 1, CS), (int64_t)CS);
	size_t bad = 0;
	for (size_t i = 0; i < CS; i++)
		bad += buf[i] != 0x43;
	free(buf);
	cr_expect_eq(bad, 0, "%zu bytes of guest cluster 1 were overwritten by a write to cluster 0",
	             bad);
	struct qcow2_check ck;
	cr_assert_eq(qcow2_check(d, ex, 0, &ck), 0);
	cr_expect_eq(ck.corruptions, 0, "%s", ck.first_error);
	return d->ops->flush(d, ex);
}

Test(disk_qcow2_write, inplace_write_vs_discard_never_reaches_a_reused_cluster)
{
	setup_in("/tmp");
	const char *img = path("r.qcow2");
	cr_assert_eq(test_sh("qemu-img create -q -f qcow2 '%s' 8M", img), 0);
	struct disk d;
	open_rw(&d, img);
	cr_assert_eq(run(race_body, &d), 0);
	disk_close(&d);
	cr_expect_eq(test_sh("qemu-img check -q '%s'", img), 0, "qemu-img check");
	rm_dir();
}

/* ---- dirty images ---- */

static int noop_body(struct exec *ex, struct disk *d)
{
	return wr(ex, d, 3 * (uint64_t)CS, 0x66, 4096);
}

Test(disk_qcow2_write, dirty_image_from_killed_qemu_io_rebuilt_on_open)
{
	setup_in("/tmp");
	REQUIRE_FACILITY(test_sh("qemu-io --version >/dev/null 2>&1") == 0, "qemu-io (qemu-utils)");
	const char *img = path("d.qcow2");
	cr_assert_eq(test_sh("qemu-img create -q -f qcow2 -o lazy_refcounts=on '%s' 16M && "
	                "qemu-io -c 'write -P 0x5a 0 512' -c 'write -P 0x33 1M 128k' "
	                "-c 'sigraise 9' '%s' >/dev/null 2>&1; true", img, img), 0);
	cr_assert_eq(test_sh("qemu-img check -q '%s' 2>/dev/null", img), 2,
	             "the killed writer left no refcount errors to rebuild");
	/* qcow-tool opens images from a task: the rebuild's own executor nests in it */
	cr_assert_eq(test_sh("cp '%s' '%s.t'", img, img), 0);
	cr_expect_eq(test_sh("%s check '%s.t' >/dev/null", QCOW_TOOL, img), 2, "read-only check");
	cr_expect_eq(test_sh("%s check -r all '%s.t' >/dev/null && qemu-img check -q '%s.t'", QCOW_TOOL,
	                img, img), 0, "qcow-tool check -r all on a dirty image");
	struct disk d;
	open_rw(&d, img);
	struct qcow2_info in;
	qcow2_get_info(&d, &in);
	cr_expect_eq(in.incompat & 1, 0, "dirty bit still set after a read-write open");
	cr_assert_eq(run(noop_body, &d), 0);
	disk_close(&d);
	cr_expect_eq(test_sh("qemu-img check -q '%s'", img), 0, "qemu-img check after the rebuild");
	cr_expect_eq(test_sh("qemu-io -c 'read -P 0x5a 0 512' -c 'read -P 0x33 1M 128k' "
	                "-c 'read -P 0x66 192k 4k' '%s' | grep -q Pattern; test $? = 1", img), 0,
	             "data lost by the rebuild");
	rm_dir();
}

/* ---- qcow-tool resize --shrink ---- */

static uint32_t l1_size_of(const char *img)
{
	uint32_t v = 0;
	int fd = open(img, O_RDONLY);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pread(fd, &v, 4, 36), 4);
	close(fd);
	return be32toh(v);
}

Test(qcow_tool, shrink_only_over_unallocated_space_and_l1_shrinks)
{
	setup_in("/tmp");
	const char *img = path("s.qcow2");
	/* 512-byte clusters: 64 MiB needs 2048 L1 entries, 32 clusters of L1 table. */
	cr_assert_eq(test_sh("%s create -o cluster_size=512 '%s' 64M >/dev/null", QCOW_TOOL, img), 0);
	cr_assert_eq(test_sh("qemu-io -c 'write -P 1 100k 8k' -c 'write -P 2 40M 8k' "
	                "-c 'write -z 50M 4k' '%s' >/dev/null", img), 0);
	cr_expect_eq(l1_size_of(img), 2048);
	/* Data past the new end: refused, the image untouched. */
	cr_assert_eq(test_sh("cp '%s' '%s.before'", img, img), 0);
	cr_expect_eq(test_sh("%s resize --shrink '%s' 1M 2>/dev/null", QCOW_TOOL, img), 1);
	cr_expect_eq(test_sh("cmp -s '%s' '%s.before'", img, img), 0, "a refused shrink changed the image");
	cr_expect_eq(test_sh("%s resize '%s' 1M 2>/dev/null", QCOW_TOOL, img), 1, "shrink without --shrink");
	/* Discarded: now it shrinks, the L1 table with it, and nothing leaks. */
	cr_assert_eq(test_sh("qemu-io -c 'discard 40M 8k' '%s' >/dev/null", img), 0);
	cr_expect_eq(test_sh("%s resize --shrink '%s' 1M >/dev/null", QCOW_TOOL, img), 0);
	cr_expect_eq(l1_size_of(img), 32);
	cr_expect_eq(test_sh("qemu-img check -q '%s'", img), 0, "qemu-img check after the shrink");
	cr_expect_eq(test_sh("qemu-img info '%s' | grep -q 'virtual size: 1 MiB'", img), 0);
	cr_expect_eq(test_sh("qemu-io -c 'read -P 1 100k 8k' '%s' | grep -q Pattern; test $? = 1", img),
	             0, "data before the new end lost");
	/* Relative sizes, down to one cluster's worth of L1; and back up again. */
	cr_expect_eq(test_sh("%s resize --shrink '%s' -1000K 2>/dev/null", QCOW_TOOL, img), 1,
	             "-1000K would cut the data at 100K: refused");
	cr_expect_eq(test_sh("%s resize '%s' 64M >/dev/null && qemu-img check -q '%s'", QCOW_TOOL, img,
	                img), 0, "grow after the shrink");
	cr_expect_eq(test_sh("qemu-io -c 'read -P 0 40M 8k' -c 'read -P 1 100k 8k' '%s' "
	                "| grep -q Pattern; test $? = 1", img), 0, "contents after growing back");
	rm_dir();
}

/* ---- progress bars: on stderr with -p (or a terminal), never otherwise ---- */

Test(qcow_tool, progress_only_when_asked_or_on_a_terminal)
{
	setup_in("/tmp");
	const char *img = path("p.qcow2"), *img2 = path("p2.qcow2");
	/* -p: the bar (to 100 %) on stderr, stdout as without; neither: stderr empty */
	cr_assert_eq(test_sh("%s create -p -o preallocation=full '%s' 8M >%s/o1 2>%s/e1", QCOW_TOOL, img,
	                dir, dir), 0);
	cr_assert_eq(test_sh("%s create -o preallocation=full '%s' 8M >%s/o2 2>%s/e2 </dev/null",
	                QCOW_TOOL, img2, dir, dir), 0);
	cr_assert_eq(test_sh("%s check -p '%s' >%s/o3 2>%s/e3", QCOW_TOOL, img, dir, dir), 0);
	cr_assert_eq(test_sh("%s check '%s' >%s/o4 2>%s/e4", QCOW_TOOL, img, dir, dir), 0);
	cr_assert_eq(test_sh("%s convert -p -O qcow2 '%s' '%s/c1' >%s/o5 2>%s/e5", QCOW_TOOL, img, dir,
	                dir, dir), 0);
	cr_assert_eq(test_sh("%s convert -O qcow2 '%s' '%s/c2' >%s/o6 2>%s/e6", QCOW_TOOL, img, dir, dir,
	                dir), 0);
	for (int k = 1; k <= 5; k += 2) {
		cr_expect_eq(test_sh("grep -q '(100%%)' %s/e%d", dir, k), 0, "no progress bar with -p (%d)", k);
		cr_expect_eq(test_sh("test ! -s %s/e%d", dir, k + 1), 0, "a progress bar nobody asked for (%d)",
		             k + 1);
		cr_expect_eq(test_sh("grep -q '(100%%)' %s/o%d", dir, k), 1, "the bar leaked to stdout (%d)", k);
	}
	cr_expect_eq(test_sh("cmp -s %s/o3 %s/o4", dir, dir), 0, "check's output differs with -p");
	rm_dir();
}

/* ---- zstd: convert -c -o compression_type=zstd, read by qemu-img ---- */

Test(qcow_tool, convert_compressed_zstd_interop)
{
	setup_in("/tmp");
	/* half random (stored plainly), half text (compressed) */
	cr_assert_eq(test_sh("cd %s && head -c 2M /dev/urandom > s.raw && "
	                "yes 'ringvm qcow2 zstd' | head -c 2M >> s.raw", dir), 0);
	cr_expect_eq(test_sh("cd %s && %s convert -c -O qcow2 -o compression_type=zstd s.raw z.qcow2 && "
	                "qemu-img info z.qcow2 | grep -q 'compression type: zstd' && "
	                "qemu-img check -q z.qcow2 && qemu-img compare -q s.raw z.qcow2 && "
	                "qemu-img check z.qcow2 | grep -q '[1-9][0-9.]*%% compressed'",
	                dir, QCOW_TOOL), 0, "zstd-compressed image from qcow-tool");
	cr_expect_eq(test_sh("cd %s && %s create -o compression_type=zstd -f qcow2 e.qcow2 1M >/dev/null && "
	                "qemu-img info e.qcow2 | grep -q 'compression type: zstd' && "
	                "qemu-img check -q e.qcow2", dir, QCOW_TOOL), 0, "create zstd");
	cr_expect_eq(test_sh("cd %s && %s create -o compat=0.10,compression_type=zstd x.qcow2 1M "
	                "2>/dev/null", dir, QCOW_TOOL), 2, "zstd needs compat=1.1");
	rm_dir();
}
