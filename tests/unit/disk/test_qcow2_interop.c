/*
 * qcow2 interop with qemu-img as the oracle, both ways: images qemu-img
 * makes (compat 0.10/1.1, 4K/64K/2M clusters, lazy refcounts, every
 * preallocation, compressed with zlib and zstd, a two-level backing chain)
 * read by disk/qcow2 equal `qemu-img convert -O raw`; images disk/qcow2
 * writes (seeded random writes, discards, write-zeroes, mirrored on a raw
 * file) pass `qemu-img check` and `qemu-img compare`. Plus qcow-tool's
 * commands checked against qemu-img.
 */
#include <criterion/criterion.h>
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

#define QCOW_TOOL BUILD_PATH("tools/qcow-tool/qcow-tool")

static char dir[64];


static void setup_dir(void)
{
	REQUIRE_FACILITY(test_sh("qemu-img --version >/dev/null 2>&1") == 0,
	                 "qemu-img (qemu-utils) on PATH");
	REQUIRE_FACILITY(facility_io_uring(), "io_uring");
	snprintf(dir, sizeof(dir), "/tmp/ringvm-qi-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
}

static void rm_dir(void)
{
	cr_expect_eq(test_sh("rm -rf '%s'", dir), 0);
}

struct job {
	struct disk *d;
	int (*fn)(struct exec *, struct job *);
	const char *raw; /* a file holding what the disk must read as */
	uint64_t seed;
	int fd_mirror;
};

static int tramp(struct exec *ex, void *arg)
{
	struct job *j = arg;
	return j->fn(ex, j);
}

static int run_job(struct job *j)
{
	struct exec *ex;
	int r = exec_create(&ex, NULL);
	if (r < 0)
		return r;
	struct exec_task *t;
	r = exec_spawn(ex, tramp, j, 1 << 20, &t);
	if (r == 0)
		r = exec_join(ex, t);
	exec_destroy(ex);
	return r;
}

/* Read the whole disk in odd-sized pieces (crossing clusters) and compare. */
static int compare_body(struct exec *ex, struct job *j)
{
	int fd = open(j->raw, O_RDONLY);
	cr_assert_geq(fd, 0);
	uint64_t size = j->d->ops->size(j->d), piece = 3 * 4096 + 512;
	char *a = malloc(piece), *b = malloc(piece);
	for (uint64_t off = 0; off < size; off += piece) {
		uint64_t len = size - off < piece ? size - off : piece;
		/* two iovecs, to cross segment boundaries too */
		struct iovec v[2] = {{a, len / 2}, {a + len / 2, len - len / 2}};
		int64_t r = j->d->ops->readv(j->d, ex, v, 2, off);
		cr_assert_eq(r, (int64_t)len, "read at %llu: %lld", (unsigned long long)off,
		             (long long)r);
		cr_assert_eq(pread(fd, b, len, (off_t)off), (ssize_t)len);
		cr_assert_eq(memcmp(a, b, len), 0, "%s differs at %llu", j->raw,
		             (unsigned long long)off);
	}
	free(a);
	free(b);
	close(fd);
	return 0;
}

static void expect_reads_as(const char *img, const char *raw)
{
	struct disk d;
	char err[512];
	struct disk_open_params p = {.path = img, .read_only = true};
	cr_assert_eq(disk_open(&d, &p, err, sizeof(err)), 0, "%s", err);
	struct job j = {.d = &d, .fn = compare_body, .raw = raw};
	cr_expect_eq(run_job(&j), 0);
	disk_close(&d);
}

/* A 9 MiB source: random, compressible and zero stretches. */
static void make_source(const char *path)
{
	cr_assert_eq(test_sh("cd %s && head -c 3M /dev/urandom > %s && "
	                "yes ringvm-qcow2 | head -c 3M >> %s && truncate -s 9M %s && "
	                "head -c 100K /dev/urandom | dd of=%s bs=1 seek=8000000 conv=notrunc "
	                "status=none",
	                dir, path, path, path, path),
	             0);
}

Test(disk_qcow2_interop, images_from_qemu_img_read_back_exactly, .timeout = 600)
{
	static const char *const variants[] = {
	    "-o compat=0.10,cluster_size=4K",
	    "-o compat=0.10,cluster_size=64K",
	    "-o compat=1.1,cluster_size=4K",
	    "-o compat=1.1,cluster_size=64K,lazy_refcounts=on",
	    "-o compat=1.1,cluster_size=2M",
	    "-o compat=1.1,cluster_size=512,refcount_bits=1",
	    "-o compat=1.1,refcount_bits=64",
	    "-o preallocation=metadata",
	    "-o preallocation=falloc",
	    "-o preallocation=full,cluster_size=4K",
	    "-c -o cluster_size=4K",
	    "-c -o cluster_size=64K",
	    "-c -o compat=0.10",
	    "-c -o compression_type=zstd",
	};
	setup_dir();
	make_source("src.raw");
	for (unsigned i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		cr_assert_eq(test_sh("cd %s && rm -f v.qcow2 && qemu-img convert -O qcow2 %s src.raw v.qcow2 &&"
		                " qemu-img convert -O raw v.qcow2 v.raw",
		                dir, variants[i]),
		             0, "%s", variants[i]);
		char img[128], raw[128];
		snprintf(img, sizeof(img), "%s/v.qcow2", dir);
		snprintf(raw, sizeof(raw), "%s/v.raw", dir);
		expect_reads_as(img, raw);
	}
	rm_dir();
}

Test(disk_qcow2_interop, two_level_backing_chain, .timeout = 300)
{
	setup_dir();
	cr_assert_eq(test_sh("cd %s && head -c 3M /dev/urandom > base.raw && "
	                "qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 5M && "
	                "qemu-io -c 'write -P 7 1M 300K' -c 'write -z 2M 64K' mid.qcow2 >/dev/null && "
	                "qemu-img create -q -f qcow2 -o compat=0.10 -b mid.qcow2 -F qcow2 top.qcow2 && "
	                "qemu-io -c 'write -P 9 1500K 1M' -c 'discard 0 64K' top.qcow2 >/dev/null && "
	                "qemu-img convert -O raw top.qcow2 top.raw",
	                dir),
	             0);
	char img[128], raw[128];
	snprintf(img, sizeof(img), "%s/top.qcow2", dir);
	snprintf(raw, sizeof(raw), "%s/top.raw", dir);
	expect_reads_as(img, raw);
	rm_dir();
}

static uint64_t prng(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Several tasks doing random writes/discards/zeroes, mirrored on a raw file. */
static int random_ops(struct exec *ex, struct job *j)
{
	static __thread char buf[70000];
	uint64_t s = j->seed, size = j->d->ops->size(j->d);
	for (int i = 0; i < 150; i++) {
		uint64_t len = 512 * (1 + prng(&s) % 130), off = 512 * (prng(&s) % (size / 512));
		if (off + len > size)
			len = size - off;
		unsigned op = (unsigned)(prng(&s) % 10);
		int r;
		if (op == 0) {
			/* discard reads back undefined: mirror it by zeroing after a
			 * write_zeroes, which is what the guest would do to rely on it */
			r = j->d->ops->discard(j->d, ex, off, len);
			if (r == 0)
				r = j->d->ops->write_zeroes(j->d, ex, off, len, false);
			memset(buf, 0, len);
		} else if (op == 1) {
			r = j->d->ops->write_zeroes(j->d, ex, off, len, prng(&s) & 1);
			memset(buf, 0, len);
		} else {
			for (uint64_t k = 0; k < len; k += 8)
				memcpy(buf + k, &s, 8), prng(&s);
			struct iovec v = {buf, len};
			int64_t w = j->d->ops->writev(j->d, ex, &v, 1, off);
			r = w < 0 ? (int)w : 0;
		}
		cr_assert_eq(r, 0, "op %u at %llu+%llu", op, (unsigned long long)off,
		             (unsigned long long)len);
		cr_assert_eq(pwrite(j->fd_mirror, buf, len, (off_t)off), (ssize_t)len);
		if (i % 37 == 0)
			cr_assert_eq(j->d->ops->flush(j->d, ex), 0);
	}
	return 0;
}

Test(disk_qcow2_interop, random_writes_pass_qemu_img_check_and_compare, .timeout = 600)
{
	static const char *const variants[] = {
	    "-o compat=1.1,cluster_size=4K",
	    "-o compat=0.10,cluster_size=64K",
	    "-o compat=1.1,cluster_size=512,refcount_bits=2",
	    "-o compat=1.1,cluster_size=2M",
	    "-o compat=1.1,cluster_size=4K,refcount_bits=64",
	};
	setup_dir();
	for (unsigned v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
		/* start from a compressed image over a backing file: every kind of cluster */
		cr_assert_eq(test_sh("cd %s && rm -f b.raw w.qcow2 m.raw && head -c 2M /dev/urandom > b.raw && "
		                "qemu-img create -q -f qcow2 %s -b b.raw -F raw w.qcow2 6M && "
		                "qemu-io -c 'write -P 3 100K 500K' w.qcow2 > /dev/null && "
		                "qemu-img convert -O raw w.qcow2 m.raw",
		                dir, variants[v]),
		             0, "%s", variants[v]);
		char img[128], raw[128];
		snprintf(img, sizeof(img), "%s/w.qcow2", dir);
		snprintf(raw, sizeof(raw), "%s/m.raw", dir);
		struct disk d;
		char err[512];
		struct disk_open_params p = {.path = img};
		cr_assert_eq(disk_open(&d, &p, err, sizeof(err)), 0, "%s", err);
		int mfd = open(raw, O_RDWR);
		cr_assert_geq(mfd, 0);
		struct job j[4];
		for (int i = 0; i < 4; i++)
			j[i] = (struct job){.d = &d, .seed = 0x1234567ULL * (v + 1) + (uint64_t)i * 77,
			                    .fd_mirror = mfd};
		/* Two seeded passes (the mirror needs a defined order; racing
		 * writers are covered by racing_writes_allocate_each_cluster_once). */
		j[1].fn = random_ops;
		cr_assert_eq(run_job(&j[1]), 0);
		j[2].fn = random_ops;
		cr_assert_eq(run_job(&j[2]), 0);
		close(mfd);
		j[0].raw = raw;
		j[0].fn = compare_body;
		cr_expect_eq(run_job(&j[0]), 0, "%s: reads back as the mirror", variants[v]);
		disk_close(&d);
		cr_expect_eq(test_sh("qemu-img check -q '%s'", img), 0, "%s: qemu-img check", variants[v]);
		cr_expect_eq(test_sh("qemu-img compare -q '%s' '%s'", img, raw), 0, "%s: compare",
		             variants[v]);
	}
	rm_dir();
}

static int sector_writer(struct exec *ex, void *arg)
{
	struct job *j = arg;
	char buf[512];
	memset(buf, (int)j->seed + 1, sizeof(buf));
	for (uint64_t c = 0; c < 8; c++) {
		struct iovec v = {buf, 512};
		int64_t r = j->d->ops->writev(j->d, ex, &v, 1, c * 65536 + j->seed * 512);
		if (r < 0)
			return (int)r;
	}
	return 0;
}

static int race_run(struct exec *ex, struct job *j)
{
	struct exec_task *t[16];
	struct job sub[16];
	for (int i = 0; i < 16; i++) {
		sub[i] = *j;
		sub[i].seed = (uint64_t)i;
		cr_assert_eq(exec_spawn(ex, sector_writer, &sub[i], 1 << 18, &t[i]), 0);
	}
	int r = 0;
	for (int i = 0; i < 16; i++)
		r |= exec_join(ex, t[i]);
	char buf[512];
	for (uint64_t c = 0; c < 8; c++)
		for (int i = 0; i < 16; i++) {
			struct iovec v = {buf, 512};
			cr_assert_eq(j->d->ops->readv(j->d, ex, &v, 1, c * 65536 + (uint64_t)i * 512), 512);
			cr_expect_eq(buf[0], i + 1, "cluster %llu sector %d", (unsigned long long)c, i);
		}
	return r;
}

Test(disk_qcow2_interop, racing_writes_allocate_each_cluster_once)
{
	setup_dir();
	cr_assert_eq(test_sh("cd %s && qemu-img create -q -f qcow2 r.qcow2 1M", dir), 0);
	char img[128];
	snprintf(img, sizeof(img), "%s/r.qcow2", dir);
	struct disk d;
	char err[512];
	struct disk_open_params p = {.path = img};
	cr_assert_eq(disk_open(&d, &p, err, sizeof(err)), 0, "%s", err);
	struct job j = {.d = &d, .fn = race_run};
	cr_expect_eq(run_job(&j), 0);
	disk_close(&d);
	cr_expect_eq(test_sh("qemu-img check -q '%s'", img), 0);
	/* 8 data clusters + header, refcount table/block, L1, one L2 */
	cr_expect_eq(test_sh("test $(qemu-img check --output=json '%s' | grep -c '\"allocated-clusters\": 8') = 1",
	                img), 0);
	rm_dir();
}

/* ---- qcow-tool against qemu-img ---- */

static void need_tool(void)
{
	setup_dir();
	REQUIRE_FACILITY(access(QCOW_TOOL, X_OK) == 0,
	                 "qcow-tool built (subdir('tools/qcow-tool') in meson.build)");
}

Test(qcow_tool, create_info_agree_with_qemu_img, .timeout = 300)
{
	static const char *const opts[] = {
	    "cluster_size=4K,compat=0.10", "cluster_size=64K", "cluster_size=2M,lazy_refcounts=on",
	    "cluster_size=512,refcount_bits=1", "refcount_bits=64", "preallocation=metadata",
	    "preallocation=falloc,cluster_size=4K", "preallocation=full,cluster_size=64K",
	};
	need_tool();
	for (unsigned i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		cr_assert_eq(test_sh("cd %s && rm -f c.qcow2 && %s create -o %s c.qcow2 5M >/dev/null",
		                dir, QCOW_TOOL, opts[i]),
		             0, "%s", opts[i]);
		cr_expect_eq(test_sh("cd %s && qemu-img check -q c.qcow2", dir), 0, "%s", opts[i]);
		/* virtual size, cluster size, compat, refcount bits: same in both infos */
		cr_expect_eq(test_sh("cd %s && qemu-img info --output=json c.qcow2 | grep -E "
		                "'\"(virtual-size|cluster-size|compat|refcount-bits|lazy-refcounts)\"' | "
		                "tr -d ' ,' | sort > a && %s info --output=json c.qcow2 | grep -E "
		                "'\"(virtual-size|cluster-size|compat|refcount-bits|lazy-refcounts)\"' | "
		                "tr -d ' ,' | sort > b && cmp -s a b",
		                dir, QCOW_TOOL),
		             0, "%s: info differs", opts[i]);
	}
	/* never overwrites; --force does */
	cr_expect_eq(test_sh("cd %s && %s create c.qcow2 1M 2>/dev/null", dir, QCOW_TOOL), 1);
	cr_expect_eq(test_sh("cd %s && %s create --force c.qcow2 1M >/dev/null", dir, QCOW_TOOL), 0);
	/* bad usage: exit 2 with one line */
	cr_expect_eq(test_sh("%s create -o cluster_size=3K %s/x 1M 2>/dev/null", QCOW_TOOL, dir), 2);
	cr_expect_eq(test_sh("%s create %s/x 12Q 2>/dev/null", QCOW_TOOL, dir), 2);
	cr_expect_eq(test_sh("%s frobnicate 2>/dev/null", QCOW_TOOL), 2);
	cr_expect_eq(test_sh("%s create --help | grep -q preallocation", QCOW_TOOL), 0);
	/* a backing chain */
	cr_expect_eq(test_sh("cd %s && qemu-img create -q -f raw base.raw 3M && %s create -b base.raw "
	                "-F raw top.qcow2 >/dev/null && qemu-img info top.qcow2 | grep -q "
	                "'backing file format: raw' && qemu-img check -q top.qcow2",
	                dir, QCOW_TOOL),
	             0);
	rm_dir();
}

Test(qcow_tool, check_exit_codes_match_qemu_img, .timeout = 300)
{
	need_tool();
	cr_assert_eq(test_sh("cd %s && qemu-img create -q -f qcow2 k.qcow2 8M && "
	                "qemu-io -c 'write 0 1M' k.qcow2 >/dev/null",
	                dir),
	             0);
	cr_expect_eq(test_sh("cd %s && %s check k.qcow2 >/dev/null", dir, QCOW_TOOL), 0);
	/* a leak: raise the header cluster's refcount to 2 (first block at 128K) */
	cr_assert_eq(test_sh("cd %s && printf '\\000\\002' | dd of=k.qcow2 bs=1 seek=131072 "
	                "conv=notrunc status=none",
	                dir),
	             0);
	int q = test_sh("cd %s && qemu-img check -q k.qcow2 >/dev/null 2>&1", dir);
	cr_expect_eq(q, 3);
	cr_expect_eq(test_sh("cd %s && %s check k.qcow2 >/dev/null", dir, QCOW_TOOL), q);
	cr_expect_eq(test_sh("cd %s && %s check -r leaks k.qcow2 >/dev/null", dir, QCOW_TOOL), 0);
	cr_expect_eq(test_sh("cd %s && qemu-img check -q k.qcow2", dir), 0);
	/* a corruption: drop the refcount of a data cluster to 0 */
	cr_assert_eq(test_sh("cd %s && printf '\\000\\000' | dd of=k.qcow2 bs=1 seek=$((131072 + 2*5)) "
	                "conv=notrunc status=none",
	                dir),
	             0);
	q = test_sh("cd %s && qemu-img check -q k.qcow2 >/dev/null 2>&1", dir);
	cr_expect_eq(q, 2);
	cr_expect_eq(test_sh("cd %s && %s check k.qcow2 >/dev/null", dir, QCOW_TOOL), q);
	cr_expect_eq(test_sh("cd %s && %s check --output=json k.qcow2 | grep -q corruptions", dir,
	                QCOW_TOOL),
	             0);
	cr_expect_eq(test_sh("cd %s && %s check -r all k.qcow2 >/dev/null", dir, QCOW_TOOL), 0);
	cr_expect_eq(test_sh("cd %s && qemu-img check -q k.qcow2", dir), 0);
	rm_dir();
}

/* Found by the qcow_tool fuzz target: a repair that raised the refcount of a
 * refcount block also used as an L2 table wrote into that table. */
Test(qcow_tool, repair_refuses_overlapping_metadata, .timeout = 300)
{
	need_tool();
	cr_assert_eq(test_sh("cd %s && qemu-img create -q -f qcow2 o.qcow2 8M && "
	                "qemu-io -c 'write 0 64k' o.qcow2 >/dev/null",
	                dir),
	             0);
	/* L1 entry 0 now points at the first refcount block (cluster 2, at 128K) */
	cr_assert_eq(test_sh("cd %s && l1=$((0x$(od -An -tx1 -j40 -N8 o.qcow2 | tr -d ' \\n'))) && "
	                "printf '\\200\\000\\000\\000\\000\\002\\000\\000' | "
	                "dd of=o.qcow2 bs=1 seek=$l1 conv=notrunc status=none && cp o.qcow2 copy.qcow2",
	                dir),
	             0);
	cr_expect_eq(test_sh("cd %s && qemu-img check -q o.qcow2 >/dev/null 2>&1", dir), 2);
	cr_expect_eq(test_sh("cd %s && %s check o.qcow2 | grep -q 'holds metadata'", dir, QCOW_TOOL), 0);
	cr_expect_eq(test_sh("cd %s && %s check -r all o.qcow2 >/dev/null", dir, QCOW_TOOL), 2,
	             "overlapping metadata cannot be repaired by refcounts");
	cr_expect_eq(test_sh("cd %s && cmp -s o.qcow2 copy.qcow2", dir), 0, "the repair wrote nothing");
	rm_dir();
}

Test(qcow_tool, convert_and_resize_against_qemu_img, .timeout = 300)
{
	need_tool();
	make_source("s.raw");
	cr_expect_eq(test_sh("cd %s && %s convert -O qcow2 s.raw a.qcow2 && qemu-img check -q a.qcow2 && "
	                "qemu-img compare -q s.raw a.qcow2",
	                dir, QCOW_TOOL),
	             0);
	cr_expect_eq(test_sh("cd %s && %s convert -c -O qcow2 -o cluster_size=4K s.raw c.qcow2 && "
	                "qemu-img check -q c.qcow2 && qemu-img compare -q s.raw c.qcow2 && "
	                "test $(stat -c %%s c.qcow2) -lt $(stat -c %%s a.qcow2)",
	                dir, QCOW_TOOL),
	             0, "compressed: smaller and equal");
	cr_expect_eq(test_sh("cd %s && %s convert c.qcow2 back.raw && cmp -s back.raw s.raw", dir,
	                QCOW_TOOL),
	             0);
	cr_expect_eq(test_sh("cd %s && %s convert c.qcow2 back.raw 2>/dev/null", dir, QCOW_TOOL), 1,
	             "never overwrites");
	/* grow past what the L1 table holds (512-byte clusters: 32 KiB per L1 entry) */
	cr_expect_eq(test_sh("cd %s && qemu-img convert -O qcow2 -o cluster_size=512 s.raw g.qcow2 && "
	                "%s resize g.qcow2 +1G >/dev/null && qemu-img check -q g.qcow2 && "
	                "qemu-img info --output=json g.qcow2 | grep -q '\"virtual-size\": 1083179008' && "
	                "qemu-img convert -O raw g.qcow2 g.raw && truncate -s 9M g.raw && "
	                "cmp -s g.raw s.raw",
	                dir, QCOW_TOOL),
	             0, "grow keeps data");
	cr_expect_eq(test_sh("cd %s && %s resize g.qcow2 4M 2>/dev/null", dir, QCOW_TOOL), 1);
	/* --shrink works over unallocated space only: refused over data, fine once discarded */
	cr_expect_eq(test_sh("cd %s && %s resize --shrink g.qcow2 4M 2>/dev/null", dir, QCOW_TOOL), 1);
	cr_expect_eq(test_sh("cd %s && qemu-io -c 'discard 4M 5M' g.qcow2 >/dev/null && "
	                "%s resize --shrink g.qcow2 4M >/dev/null && "
	                "qemu-img check -q g.qcow2 && qemu-img info g.qcow2 | grep -q '4 MiB' && "
	                "qemu-img convert -O raw g.qcow2 g4.raw && head -c 4M s.raw | cmp -s - g4.raw",
	                dir, QCOW_TOOL),
	             0, "shrink");
	cr_expect_eq(test_sh("cd %s && %s map a.qcow2 | grep -q 'a.qcow2' && %s map --output=json "
	                "c.qcow2 | grep -q compressed",
	                dir, QCOW_TOOL, QCOW_TOOL),
	             0);
	rm_dir();
}
