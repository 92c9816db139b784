/*
 * disk/qcow2: header validation (every hostile field of hostile-inputs 14,
 * each on its own mutated image), backing chains (loops, depth, missing,
 * names of FIFOs, devices and directories),
 * hostile L2 entries (15), the L2 cache (hits, misses, LRU eviction), and
 * crash ordering: a failure injected at each write step (of guest writes,
 * and of a grow or shrink) leaves an image qemu-img check accepts (exit 0
 * or 3, never 2).
 */
#include <criterion/criterion.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "disk/disk.h"
#include "disk/qcow2.h"
#include "tests/common/facility.h"

static char dir[64];

static void mkdir_tmp(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ringvm-qcow2-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void rm_tmp(void)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	cr_expect_eq(system(cmd), 0);
}

static void pathf(char *out, size_t n, const char *name)
{
	snprintf(out, n, "%s/%s", dir, name);
}

static void make(const char *name, const struct qcow2_create_opts *o)
{
	char p[128], err[256];
	pathf(p, sizeof(p), name);
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0644);
	cr_assert_geq(fd, 0);
	cr_assert_eq(qcow2_create(fd, o, err, sizeof(err)), 0, "%s", err);
	close(fd);
}

static void poke(const char *name, uint64_t off, const void *v, size_t len)
{
	char p[128];
	pathf(p, sizeof(p), name);
	int fd = open(p, O_RDWR);
	cr_assert_geq(fd, 0);
	cr_assert_eq(pwrite(fd, v, len, (off_t)off), (ssize_t)len);
	close(fd);
}

static void poke32(const char *name, uint64_t off, uint32_t v)
{
	v = htobe32(v);
	poke(name, off, &v, 4);
}

static void poke64(const char *name, uint64_t off, uint64_t v)
{
	v = htobe64(v);
	poke(name, off, &v, 8);
}

static int open_named(struct disk *d, const char *name, bool ro, char *err, size_t errlen)
{
	char p[128];
	pathf(p, sizeof(p), name);
	struct disk_open_params prm = {.path = p, .format = DISK_FORMAT_AUTO, .read_only = ro};
	return disk_open(d, &prm, err, errlen);
}

/* Created layout (64K clusters): header 0, refcount table 64K, block 128K, L1 192K. */
Test(disk_qcow2_header, hostile_fields_each_refused_with_the_reason)
{
	static const struct {
		const char *what;
		uint64_t off;
		unsigned width; /* 4 or 8 */
		uint64_t val;
		int want;
		const char *msg;
	} cases[] = {
	    {"version 1", 4, 4, 1, -ENOTSUP, "unsupported qcow2 version 1"},
	    {"version 4", 4, 4, 4, -ENOTSUP, "unsupported qcow2 version 4"},
	    {"cluster_bits 8", 20, 4, 8, -EINVAL, "cluster_bits 8 out of range"},
	    {"cluster_bits 22", 20, 4, 22, -EINVAL, "cluster_bits 22 out of range"},
	    {"cluster_bits huge", 20, 4, 0xffffffff, -EINVAL, "out of range"},
	    {"size overflowing", 24, 8, 1ULL << 63, -EINVAL, "virtual size"},
	    {"size past L1", 24, 8, 1ULL << 40, -EINVAL, "L1 table too small"},
	    {"crypt_method aes", 32, 4, 1, -ENOTSUP, "encrypted"},
	    {"crypt_method luks", 32, 4, 2, -ENOTSUP, "encrypted"},
	    {"l1_size huge", 36, 4, 0x10000000, -EINVAL, "L1 table too large"},
	    {"l1_size past EOF", 36, 4, 100000, -EINVAL, "L1 table past end of file"},
	    {"l1 offset unaligned", 40, 8, 192 * 1024 + 512, -EINVAL, "L1 table offset not cluster-aligned"},
	    {"l1 offset past EOF", 40, 8, 1ULL << 40, -EINVAL, "L1 table past end of file"},
	    {"l1 over header", 40, 8, 0, -EINVAL, "L1 table overlaps the header"},
	    {"l1 over refcount table", 40, 8, 64 * 1024, -EINVAL, "overlaps the refcount table"},
	    {"refcount table unaligned", 48, 8, 64 * 1024 + 8, -EINVAL, "refcount table offset not"},
	    {"refcount table over header", 48, 8, 0, -EINVAL, "refcount table overlaps the header"},
	    {"refcount table truncated", 56, 4, 100, -EINVAL, "refcount table truncated"},
	    {"refcount table empty", 56, 4, 0, -EINVAL, "invalid refcount table size"},
	    {"refcount table huge", 56, 4, 0x7fffffff, -EINVAL, "invalid refcount table size"},
	    {"unknown incompatible bit 5", 72, 8, 1ULL << 5, -ENOTSUP, "unknown incompatible feature bit 5"},
	    {"unknown incompatible bit 63", 72, 8, 1ULL << 63, -ENOTSUP, "unknown incompatible feature bit 63"},
	    {"external data file", 72, 8, 1ULL << 2, -ENOTSUP, "external data files"},
	    {"extended L2", 72, 8, 1ULL << 4, -ENOTSUP, "extended L2"},
	    {"compression bit without type", 72, 8, 1ULL << 3, -EINVAL, "invalid compression type"},
	    {"refcount_order 7", 96, 4, 7, -EINVAL, "refcount_order 7 out of range"},
	    {"refcount_order huge", 96, 4, 0x80000000u, -EINVAL, "out of range"},
	    {"header length short", 100, 4, 96, -EINVAL, "invalid header length 96"},
	    {"header length unaligned", 100, 4, 108, -EINVAL, "invalid header length 108"},
	    {"header length past cluster", 100, 4, 1u << 20, -EINVAL, "invalid header length"},
	    {"backing name too long", 16, 4, 5000, -EINVAL, "invalid backing file name"},
	};
	mkdir_tmp();
	struct qcow2_create_opts o = {.size = 64 << 20};
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char err[512] = "";
		struct disk d;
		make("h.qcow2", &o);
		if (!strcmp(cases[i].what, "backing name too long"))
			poke64("h.qcow2", 8, 512);
		if (cases[i].width == 4)
			poke32("h.qcow2", cases[i].off, (uint32_t)cases[i].val);
		else
			poke64("h.qcow2", cases[i].off, cases[i].val);
		int r = open_named(&d, "h.qcow2", false, err, sizeof(err));
		cr_expect_eq(r, cases[i].want, "%s: got %d (%s)", cases[i].what, r, err);
		cr_expect_not_null(strstr(err, cases[i].msg), "%s: '%s'", cases[i].what, err);
		cr_expect_not_null(strstr(err, "h.qcow2"), "%s: names the path: '%s'", cases[i].what, err);
		if (r == 0)
			disk_close(&d);
	}
	rm_tmp();
}

Test(disk_qcow2_header, feature_bits_dirty_corrupt_autoclear)
{
	char err[512];
	struct disk d;
	mkdir_tmp();
	struct qcow2_create_opts o = {.size = 1 << 20};
	/* corrupt: read-only even when asked read-write */
	make("c.qcow2", &o);
	poke64("c.qcow2", 72, 1ULL << 1);
	cr_assert_eq(open_named(&d, "c.qcow2", false, err, sizeof(err)), 0, "%s", err);
	cr_expect(d.read_only);
	disk_close(&d);
	/* dirty: read-only leaves the bit; read-write rebuilds refcounts and clears it */
	make("d.qcow2", &o);
	poke64("d.qcow2", 72, 1ULL << 0);
	struct qcow2_info di;
	cr_assert_eq(open_named(&d, "d.qcow2", true, err, sizeof(err)), 0, "%s", err);
	qcow2_get_info(&d, &di);
	cr_expect_eq(di.incompat & 1, 1);
	disk_close(&d);
	cr_assert_eq(open_named(&d, "d.qcow2", false, err, sizeof(err)), 0, "%s", err);
	qcow2_get_info(&d, &di);
	cr_expect_eq(di.incompat & 1, 0, "dirty bit cleared after the rebuild");
	cr_expect_not(d.read_only);
	disk_close(&d);
	cr_assert_eq(open_named(&d, "d.qcow2", true, err, sizeof(err)), 0, "%s", err);
	qcow2_get_info(&d, &di);
	cr_expect_eq(di.incompat & 1, 0, "dirty bit cleared on disk too");
	disk_close(&d);
	/* dirty with a reference no refcount block covers: cannot be rebuilt, refused */
	make("dx.qcow2", &o);
	poke64("dx.qcow2", 72, 1ULL << 0);
	poke64("dx.qcow2", 3 << 16, (1ULL << 63) | (64ULL << 16)); /* L1[0]: an L2 past EOF */
	cr_expect_eq(open_named(&d, "dx.qcow2", false, err, sizeof(err)), -EUCLEAN);
	cr_expect_not_null(strstr(err, "dirty"), "%s", err);
	cr_assert_eq(open_named(&d, "dx.qcow2", true, err, sizeof(err)), 0, "%s", err);
	disk_close(&d);
	/* unknown autoclear bits are cleared by a read-write open, kept by a read-only one */
	make("a.qcow2", &o);
	poke64("a.qcow2", 88, 0xf0f0ULL);
	cr_assert_eq(open_named(&d, "a.qcow2", true, err, sizeof(err)), 0, "%s", err);
	struct qcow2_info in;
	qcow2_get_info(&d, &in);
	cr_expect_eq(in.autoclear, 0xf0f0ULL);
	disk_close(&d);
	cr_assert_eq(open_named(&d, "a.qcow2", false, err, sizeof(err)), 0, "%s", err);
	disk_close(&d);
	cr_assert_eq(open_named(&d, "a.qcow2", true, err, sizeof(err)), 0, "%s", err);
	qcow2_get_info(&d, &in);
	cr_expect_eq(in.autoclear, 0);
	disk_close(&d);
	/* a format=raw open of a qcow2 file stays refused; format=qcow2 of a raw one too */
	char p[128];
	pathf(p, sizeof(p), "a.qcow2");
	struct disk_open_params prm = {.path = p, .format = DISK_FORMAT_RAW};
	cr_expect_eq(disk_open(&d, &prm, err, sizeof(err)), -ENOTSUP);
	rm_tmp();
}

Test(disk_qcow2_backing, loops_depth_missing_and_fds)
{
	char err[512];
	struct disk d;
	mkdir_tmp();
	/* a chain that refers to itself */
	struct qcow2_create_opts o = {.size = 1 << 20, .backing = "self.qcow2", .backing_fmt = "qcow2"};
	make("self.qcow2", &o);
	cr_expect_eq(open_named(&d, "self.qcow2", true, err, sizeof(err)), -ELOOP, "%s", err);
	/* a two-image loop */
	o.backing = "b.qcow2";
	make("a.qcow2", &o);
	o.backing = "a.qcow2";
	make("b.qcow2", &o);
	cr_expect_eq(open_named(&d, "a.qcow2", true, err, sizeof(err)), -ELOOP, "%s", err);
	/* missing */
	o.backing = "nowhere.qcow2";
	make("m.qcow2", &o);
	cr_expect_eq(open_named(&d, "m.qcow2", true, err, sizeof(err)), -ENOENT, "%s", err);
	cr_expect_not_null(strstr(err, "nowhere.qcow2"), "%s", err);
	/* a wrong backing format */
	o.backing = "raw.img";
	o.backing_fmt = "vmdk";
	make("f.qcow2", &o);
	cr_expect_eq(open_named(&d, "f.qcow2", true, err, sizeof(err)), -ENOTSUP, "%s", err);
	/* deeper than DISK_MAX_CHAIN */
	o.backing = NULL;
	o.backing_fmt = NULL;
	make("l0.qcow2", &o);
	char name[32], prev[32] = "l0.qcow2";
	for (int i = 1; i <= DISK_MAX_CHAIN + 1; i++) {
		snprintf(name, sizeof(name), "l%d.qcow2", i);
		o.backing = prev;
		o.backing_fmt = "qcow2";
		make(name, &o);
		snprintf(prev, sizeof(prev), "%s", name);
	}
	cr_expect_eq(open_named(&d, name, true, err, sizeof(err)), -EMLINK, "%s", err);
	/* exactly at the limit: opens, and every fd of the chain is listed */
	snprintf(name, sizeof(name), "l%d.qcow2", DISK_MAX_CHAIN);
	cr_assert_eq(open_named(&d, name, false, err, sizeof(err)), 0, "%s", err);
	int fds[32];
	cr_expect_eq(disk_fds(&d, fds, 32), DISK_MAX_CHAIN + 1);
	cr_expect_eq(fds[0], d.fd);
	cr_expect_eq(fds[1], d.backing->fd);
	cr_expect(d.backing->read_only, "backing files are read-only");
	cr_expect_eq(disk_fds(&d, fds, 1), DISK_MAX_CHAIN + 1, "the count even past max");
	disk_close(&d);
	rm_tmp();
}

/*
 * hostile-inputs 16, path tricks: the backing name is the image's to choose.
 * A FIFO would block the open forever and a character device may act on
 * open, so anything but a regular file or block device is refused before
 * it is opened (the test's timeout catches a hang). Names resolve against
 * the image's directory ("sub/../x" and symlinks as the file system says),
 * and whatever is opened is opened read-only.
 */
Test(disk_qcow2_backing, path_tricks_fifo_device_directory, .timeout = 30)
{
	static const struct {
		const char *backing, *fmt;
		int want;
	} cases[] = {
	    {"fifo", "raw", -EINVAL},          {"fifo", NULL, -EINVAL},
	    {"link-to-fifo", "raw", -EINVAL},  {"/dev/null", "raw", -EINVAL},
	    {"/dev/zero", NULL, -EINVAL},      {".", "raw", -EINVAL},
	    {"sub", NULL, -EINVAL},            {"sub/../base.raw", "raw", 0},
	    {"sub/../sub/../base.raw", NULL, 0}, {"link-to-base", "raw", 0},
	};
	char err[512], p[128], q[128];
	struct disk d;
	mkdir_tmp();
	pathf(p, sizeof(p), "fifo");
	cr_assert_eq(mkfifo(p, 0600), 0);
	pathf(q, sizeof(q), "link-to-fifo");
	cr_assert_eq(symlink(p, q), 0);
	pathf(p, sizeof(p), "sub");
	cr_assert_eq(mkdir(p, 0700), 0);
	pathf(p, sizeof(p), "base.raw");
	int fd = open(p, O_RDWR | O_CREAT, 0600);
	cr_assert(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
	close(fd);
	pathf(q, sizeof(q), "link-to-base");
	cr_assert_eq(symlink("base.raw", q), 0);
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct qcow2_create_opts o = {.size = 1 << 20, .backing = cases[i].backing,
		                              .backing_fmt = cases[i].fmt};
		make("top.qcow2", &o);
		err[0] = '\0';
		int r = open_named(&d, "top.qcow2", false, err, sizeof(err));
		cr_expect_eq(r, cases[i].want, "backing '%s': got %d (%s)", cases[i].backing, r, err);
		if (cases[i].want == -EINVAL)
			cr_expect_not_null(strstr(err, "not a regular file or block device"),
			                   "backing '%s': %s", cases[i].backing, err);
		if (r == 0) {
			cr_expect(d.backing && d.backing->read_only, "backing '%s' opened read-write",
			          cases[i].backing);
			cr_expect_eq(fcntl(d.backing->fd, F_GETFL) & O_NONBLOCK, 0,
			             "backing '%s' left O_NONBLOCK", cases[i].backing);
			disk_close(&d);
		}
	}
	rm_tmp();
}

/* ---- I/O through an executor ---- */

typedef int body_fn(struct exec *ex, struct disk *d);
struct run {
	body_fn *fn;
	struct disk *d;
};
static int tramp(struct exec *ex, void *arg)
{
	struct run *r = arg;
	return r->fn(ex, r->d);
}
static body_fn rd_fails, five;

static int run_on(struct disk *d, body_fn *fn)
{
	struct exec *ex;
	int r = exec_create(&ex, NULL);
	if (r < 0)
		return r;
	struct run a = {fn, d};
	struct exec_task *t;
	r = exec_spawn(ex, tramp, &a, 1 << 20, &t);
	if (r == 0)
		r = exec_join(ex, t);
	exec_destroy(ex);
	return r;
}

static int rd(struct exec *ex, struct disk *d, void *buf, size_t len, uint64_t off)
{
	struct iovec v = {buf, len};
	int64_t r = d->ops->readv(d, ex, &v, 1, off);
	return r < 0 ? (int)r : 0;
}
static int wr(struct exec *ex, struct disk *d, const void *buf, size_t len, uint64_t off)
{
	struct iovec v = {(void *)buf, len};
	int64_t r = d->ops->writev(d, ex, &v, 1, off);
	return r < 0 ? (int)r : 0;
}

static int hostile_l2(struct exec *ex, struct disk *d)
{
	char buf[512];
	memset(buf, 0x5a, sizeof(buf));
	/* entry 0 points into the refcount table, entry 1 past EOF, entry 2 unaligned */
	cr_expect_eq(wr(ex, d, buf, 512, 0), -EIO, "a write aimed at metadata is refused");
	cr_expect_eq(wr(ex, d, buf, 512, 65536), -EIO, "past EOF refused");
	cr_expect_eq(rd(ex, d, buf, 512, 2 * 65536), -EIO, "unaligned entry refused");
	cr_expect_eq(rd(ex, d, buf, 512, 65536), 0, "a read past EOF reads zeros");
	cr_expect_eq(buf[0], 0);
	return 0;
}

Test(disk_qcow2_hostile, l2_entries_into_metadata_or_past_eof)
{
	REQUIRE_FACILITY(facility_io_uring(), "io_uring");
	char err[512];
	struct disk d;
	mkdir_tmp();
	struct qcow2_create_opts o = {.size = 1 << 20};
	make("x.qcow2", &o);
	/* L1[0] → an L2 table at 256K whose entries are hostile */
	poke64("x.qcow2", 192 * 1024, (256 * 1024) | (1ULL << 63));
	poke64("x.qcow2", 256 * 1024, (64 * 1024) | (1ULL << 63));
	poke64("x.qcow2", 256 * 1024 + 8, (1ULL << 40) | (1ULL << 63));
	poke64("x.qcow2", 256 * 1024 + 16, (320 * 1024 + 512) | (1ULL << 63));
	poke64("x.qcow2", 320 * 1024, 0); /* extends the file */
	cr_assert_eq(open_named(&d, "x.qcow2", false, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(run_on(&d, hostile_l2), 0);
	disk_close(&d);
	/* an L1 entry past EOF: reads fail, never crash */
	make("y.qcow2", &o);
	poke64("y.qcow2", 192 * 1024, (1ULL << 40));
	cr_assert_eq(open_named(&d, "y.qcow2", false, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(run_on(&d, rd_fails), 0);
	disk_close(&d);
	rm_tmp();
}

static int rd_fails(struct exec *ex, struct disk *d)
{
	char buf[512];
	cr_expect_eq(rd(ex, d, buf, 512, 0), -EIO);
	return 0;
}

Test(disk_qcow2_cache, l2_hits_misses_lru_eviction)
{
	REQUIRE_FACILITY(facility_io_uring(), "io_uring");
	char err[512], p[128];
	struct disk d;
	mkdir_tmp();
	struct qcow2_create_opts o = {.size = 1 << 20, .cluster_bits = 9};
	make("c.qcow2", &o);
	pathf(p, sizeof(p), "c.qcow2");
	struct disk_open_params prm = {.path = p, .l2_cache_bytes = 4 * 512};
	cr_assert_eq(disk_open(&d, &prm, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(qcow2_l2_cache_tables(&d), 4);
	disk_close(&d);
	/* the default covers the whole image: 1 MiB / 32 KiB per table */
	cr_assert_eq(open_named(&d, "c.qcow2", false, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(qcow2_l2_cache_tables(&d), 32);
	disk_close(&d);
	prm.l2_cache_bytes = 2 * 512; /* below the floor of 4: 4 tables */
	cr_assert_eq(disk_open(&d, &prm, err, sizeof(err)), 0, "%s", err);
	disk_close(&d);
	/* with 4 slots and 5 tables touched in order, table 0 is gone */
	prm.l2_cache_bytes = 4 * 512;
	cr_assert_eq(disk_open(&d, &prm, err, sizeof(err)), 0, "%s", err);
	cr_expect_eq(run_on(&d, five), 0);
	disk_close(&d);
	rm_tmp();
}

static int five(struct exec *ex, struct disk *d)
{
	char buf[512] = {1};
	struct qcow2_cache_stats a, b;
	for (int t = 0; t < 5; t++)
		cr_assert_eq(wr(ex, d, buf, 512, (uint64_t)t * 32768), 0);
	qcow2_stats(d, &a, NULL);
	cr_assert_eq(rd(ex, d, buf, 512, 4 * 32768), 0);
	qcow2_stats(d, &b, NULL);
	cr_expect_eq(b.hits, a.hits + 1, "most recent table: hit");
	cr_assert_eq(rd(ex, d, buf, 512, 0), 0);
	qcow2_stats(d, &a, NULL);
	cr_expect_eq(a.misses, b.misses + 1, "least recent table: evicted, reloaded");
	cr_expect_gt(a.evictions, 0);
	cr_expect_eq(buf[0], 1);
	return 0;
}

/* ---- crash ordering ---- */

static uint64_t prng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int workload(struct exec *ex, struct disk *d)
{
	static char buf[8192];
	uint64_t s = 0x9e3779b97f4a7c15ULL;
	for (int i = 0; i < 60; i++) {
		uint64_t off = (prng(&s) % (d->size / 512 - 16)) * 512;
		unsigned len = (unsigned)(1 + prng(&s) % 16) * 512, op = (unsigned)(prng(&s) % 8);
		memset(buf, (int)i + 1, len);
		int r = op == 0 ? d->ops->discard(d, ex, off, len)
		      : op == 1 ? d->ops->write_zeroes(d, ex, off, len, i & 1)
		                : wr(ex, d, buf, len, off);
		if (r < 0)
			return r;
	}
	return d->ops->flush(d, ex);
}

static int qemu_img_check(const char *path)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "qemu-img check -q '%s' >/dev/null 2>&1", path);
	int st = system(cmd);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool have_qemu_img(void)
{
	return system("qemu-img --version >/dev/null 2>&1") == 0;
}

Test(disk_qcow2_crash, failure_at_each_write_step_never_corrupts, .timeout = 600)
{
	REQUIRE_FACILITY(facility_io_uring(), "io_uring");
	REQUIRE_FACILITY(have_qemu_img(), "qemu-img (qemu-utils) on PATH");
	static const struct qcow2_create_opts variants[] = {
	    {.size = 8 << 20, .cluster_bits = 9, .refcount_order = 6}, /* refblocks + table growth */
	    {.size = 8 << 20, .cluster_bits = 12, .version = 2},
	};
	mkdir_tmp();
	for (unsigned v = 0; v < 2; v++) {
		unsigned completed = 0;
		for (uint64_t n = 1; n < 5000 && !completed; n += (n < 64 ? 1 : 7)) {
			char err[512], p[128];
			struct disk d;
			make("f.qcow2", &variants[v]);
			cr_assert_eq(open_named(&d, "f.qcow2", false, err, sizeof(err)), 0, "%s", err);
			qcow2_fail_write(&d, n, -EIO);
			int r = run_on(&d, workload);
			disk_close(&d); /* the "crash": nothing more is written */
			if (r == 0)
				completed = 1;
			else
				cr_assert_eq(r, -EIO, "variant %u step %llu: %d", v, (unsigned long long)n, r);
			pathf(p, sizeof(p), "f.qcow2");
			int c = qemu_img_check(p);
			cr_assert(c == 0 || c == 3, "variant %u: failing write %llu: qemu-img check exit %d",
			          v, (unsigned long long)n, c);
			if (completed)
				cr_expect_eq(c, 0, "a run without failure leaks nothing");
		}
		cr_expect(completed, "variant %u: the workload eventually ran clean", v);
	}
	rm_tmp();
}

/*
 * hostile-inputs 18, an interrupted resize: a grow that must move the L1
 * table (512-byte clusters: one L1 entry per 32 KiB) and a shrink that
 * drops L1 entries (over unallocated space only: a shrink over data is
 * refused), each cut off at every write step in turn (the "crash":
 * nothing more is written). qemu-img check must accept what is left (0 or
 * 3, never 2), the image must open at its old or its new size, and the
 * data below the smaller size must be intact.
 */
static uint64_t resize_to;
static char pattern[64 * 1024];

static int fill(struct exec *ex, struct disk *d)
{
	return wr(ex, d, pattern, sizeof(pattern), 0);
}
static int grow(struct exec *ex, struct disk *d)
{
	return qcow2_grow(d, ex, resize_to);
}
static int shrink(struct exec *ex, struct disk *d)
{
	uint64_t busy;
	return qcow2_shrink(d, ex, resize_to, &busy);
}
static uint64_t keep_len;
static int intact(struct exec *ex, struct disk *d)
{
	static char got[sizeof(pattern)];
	int r = rd(ex, d, got, keep_len, 0);
	return r < 0 ? r : memcmp(got, pattern, keep_len) ? -EILSEQ : 0;
}

static void resize_cut_everywhere(const char *what, uint64_t from, uint64_t to, body_fn *fn)
{
	char err[512], p[128];
	struct disk d;
	unsigned completed = 0, cuts = 0;
	pathf(p, sizeof(p), "r.qcow2");
	resize_to = to;
	keep_len = from < to ? from : to;
	if (keep_len > sizeof(pattern))
		keep_len = sizeof(pattern);
	for (uint64_t n = 1; n < 2000 && !completed; n++) {
		struct qcow2_create_opts o = {.size = from, .cluster_bits = 9};
		make("r.qcow2", &o);
		cr_assert_eq(open_named(&d, "r.qcow2", false, err, sizeof(err)), 0, "%s", err);
		cr_assert_eq(run_on(&d, fill), 0);
		qcow2_fail_write(&d, n, -EIO);
		int r = run_on(&d, fn);
		disk_close(&d);
		if (r == 0)
			completed = 1;
		else
			cuts++;
		int c = qemu_img_check(p);
		cr_assert(c == 0 || c == 3, "%s cut at write %llu (%d): qemu-img check exit %d", what,
		          (unsigned long long)n, r, c);
		cr_assert_eq(open_named(&d, "r.qcow2", true, err, sizeof(err)), 0, "%s cut at %llu: %s",
		             what, (unsigned long long)n, err);
		uint64_t size = d.ops->size(&d);
		cr_expect(size == from || size == to, "%s cut at %llu: size %llu", what,
		          (unsigned long long)n, (unsigned long long)size);
		cr_expect_eq(run_on(&d, intact), 0, "%s cut at %llu: data below %llu changed", what,
		             (unsigned long long)n, (unsigned long long)keep_len);
		disk_close(&d);
	}
	cr_expect(completed, "%s never completed", what);
	cr_expect_gt(cuts, 0, "%s: no write step was cut", what);
}

Test(disk_qcow2_crash, interrupted_resize_never_corrupts, .timeout = 600)
{
	REQUIRE_FACILITY(facility_io_uring(), "io_uring");
	REQUIRE_FACILITY(have_qemu_img(), "qemu-img (qemu-utils) on PATH");
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (char)(i * 7 + 3);
	mkdir_tmp();
	resize_cut_everywhere("grow moving L1", 1 << 20, 64 << 20, grow);
	resize_cut_everywhere("shrink dropping L1 entries", 1 << 20, 128 << 10, shrink);
	rm_tmp();
}
