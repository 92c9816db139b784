/*
 * End-to-end: qcow2 images through ringvm's virtio-blk device, with qemu-img
 * (Debian's qemu-utils) as the oracle.
 *
 *  - read interop: images qemu-img made (compat 0.10/1.1, 4K/64K/2M
 *    clusters, lazy refcounts, metadata/full preallocation, zlib-compressed,
 *    a raw <- qcow2 <- qcow2 backing chain) are copied by the guest
 *    (blk.copy) onto a raw disk, which must equal `qemu-img convert -O raw`;
 *  - write interop: blk.fill (writes, discards, write-zeroes) on images made
 *    by qemu-img and by qcow-tool, then `qemu-img check` clean, `qemu-img
 *    compare` against the mirror of what the guest did, `qemu-img info` and
 *    `qcow-tool info` agreeing; `qcow-tool resize` (growing the L1 table
 *    too), a second pass, still clean; blk.fill on top of a backing chain;
 *  - crash consistency (hostile-inputs 17): ringvm's whole process group
 *    SIGKILLed at random moments of allocating writes, `qemu-img check`
 *    never reporting corruption (leaks allowed);
 *  - hostile images (hostile-inputs 14-16): mutated headers and backing
 *    loops refused with exit status 2 and one line naming the problem; a
 *    corrupt-bit image served read-only; an L2 entry aimed at the header
 *    never lets a guest write land on the metadata.
 *
 * VM runs are made with the sandbox and (where the device process does the
 * work) with --disable-sandbox. Needs /dev/kvm and qemu-img.
 */
#include <criterion/criterion.h>
#include <sys/prctl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/common/facility.h"
#include "tests/e2e/blk_checks.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/probe_checks.h"

#define RINGVM    BUILD_PATH("core/ringvm")
#define QCOW_TOOL BUILD_PATH("tools/qcow-tool/qcow-tool")
#define MIRROR_PY SOURCE_PATH("tests/e2e/blk_mirror.py")
#define MIB       (1024ull * 1024)
#define IMG_SIZE  (32 * MIB)

static char dir[256];

static void setup(void)
{
	blk_tmpdir(dir, sizeof(dir));
}

static void teardown(void)
{
	if (dir[0])
		blk_tmpdir_remove(dir);
}

TestSuite(e2e_ringvm_qcow2, .init = setup, .fini = teardown, .timeout = 240);

/* dir/name, in one of a ring of buffers (several are alive at once). */
static const char *P(const char *name)
{
	static char ring[16][320];
	static unsigned next;
	char *p = ring[next++ % 16];
	snprintf(p, sizeof(ring[0]), "%s/%s", dir, name);
	return p;
}

/* ---- commands ---- */

static bool on_path(const char *prog)
{
	const char *path = getenv("PATH");
	char buf[4096];
	for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
		size_t n = strcspn(p, ":");
		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, p, prog);
		if (n && access(buf, X_OK) == 0)
			return true;
		p += n;
		if (*p == ':')
			p++;
	}
	return false;
}

static void need_all(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(on_path("qemu-img"), "qemu-img (Debian's qemu-utils) is not installed");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
	cr_assert(access(QCOW_TOOL, X_OK) == 0, "%s was not built", QCOW_TOOL);
	cr_assert(harness_ringvm_has_option("--block"), "ringvm run --help lists no --block");
}

/*
 * Runs the NULL-terminated argument list (argv[0] searched on PATH); the
 * result in *r (free it), its exit code returned (-1: did not exit).
 */
static int cmdv(struct harness_result *r, const char *arg0, va_list ap)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 120};
	harness_argv_init(&a);
	for (const char *s = arg0; s; s = va_arg(ap, const char *))
		harness_argv_add(&a, "%s", s);
	cr_assert_eq(harness_run(&a, &o, r), 0, "cannot run %s", arg0);
	return r->exited ? r->exit_code : -1;
}

static int cmd_r(struct harness_result *r, const char *arg0, ...)
{
	va_list ap;
	va_start(ap, arg0);
	int rc = cmdv(r, arg0, ap);
	va_end(ap);
	return rc;
}
#define CMD_R(r, ...) cmd_r(r, __VA_ARGS__, (const char *)NULL)

/* Runs the command and asserts it exits with status want. */
static void cmd_expect(int want, const char *arg0, ...)
{
	struct harness_result r;
	va_list ap;
	va_start(ap, arg0);
	int rc = cmdv(&r, arg0, ap);
	va_end(ap);
	cr_assert_eq(rc, want, "%s ...: exit %d, expected %d\n--- stdout:\n%s\n--- stderr:\n%s",
	             arg0, rc, want, r.out, r.err);
	harness_result_free(&r);
}
#define CMD(...) cmd_expect(0, __VA_ARGS__, (const char *)NULL)

/* A number after "key": in JSON text (the first occurrence), or false. */
static bool json_u64(const char *json, const char *key, uint64_t *v)
{
	char pat[96];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(json, pat);
	if (!p)
		return false;
	p += strlen(pat);
	while (*p == ' ')
		p++;
	char *end;
	*v = strtoull(p, &end, 10);
	return end != p;
}

/* A string after "key": in JSON text into buf, or false. */
static bool json_str(const char *json, const char *key, char *buf, size_t len)
{
	char pat[96];
	snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = strstr(json, pat);
	if (!p)
		return false;
	p += strlen(pat);
	while (*p == ' ')
		p++;
	if (*p != '"')
		return false;
	size_t n = strcspn(++p, "\"");
	snprintf(buf, len, "%.*s", (int)n, p);
	return true;
}

/* `qemu-img check` and `qcow-tool check` both find img clean (exit 0). */
static void check_clean(const char *img, const char *what)
{
	struct harness_result r;
	int rc = CMD_R(&r, "qemu-img", "check", img);
	cr_assert_eq(rc, 0, "%s: qemu-img check exit %d (2 corruption, 3 leaks):\n%s%s", what, rc,
	             r.out, r.err);
	harness_result_free(&r);
	rc = CMD_R(&r, QCOW_TOOL, "check", img);
	cr_assert_eq(rc, 0, "%s: qcow-tool check exit %d:\n%s%s", what, rc, r.out, r.err);
	harness_result_free(&r);
}

/* qemu-img info and qcow-tool info (JSON) agree on img; virtual size is vsize. */
static void check_info(const char *img, uint64_t vsize, const char *what)
{
	struct harness_result q, t;
	cr_assert_eq(CMD_R(&q, "qemu-img", "info", "--output=json", img), 0, "qemu-img info: %s",
	             q.err);
	cr_assert_eq(CMD_R(&t, QCOW_TOOL, "info", "--output=json", img), 0, "qcow-tool info: %s",
	             t.err);
	static const char *const nums[] = {"virtual-size", "cluster-size", "refcount-bits"};
	for (unsigned i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
		uint64_t a, b;
		cr_assert(json_u64(q.out, nums[i], &a), "%s: qemu-img info has no %s:\n%s", what,
		          nums[i], q.out);
		cr_assert(json_u64(t.out, nums[i], &b), "%s: qcow-tool info has no %s:\n%s", what,
		          nums[i], t.out);
		cr_assert_eq(a, b, "%s: %s: qemu-img says %lu, qcow-tool %lu", what, nums[i],
		             (unsigned long)a, (unsigned long)b);
	}
	uint64_t vs = 0;
	json_u64(q.out, "virtual-size", &vs);
	cr_assert_eq(vs, vsize, "%s: virtual size %lu, expected %lu", what, (unsigned long)vs,
	             (unsigned long)vsize);
	static const char *const strs[] = {"format", "compat"};
	for (unsigned i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
		char a[64], b[64];
		cr_assert(json_str(q.out, strs[i], a, sizeof(a)), "%s: qemu-img info has no %s",
		          what, strs[i]);
		cr_assert(json_str(t.out, strs[i], b, sizeof(b)), "%s: qcow-tool info has no %s",
		          what, strs[i]);
		cr_assert_str_eq(a, b, "%s: %s: qemu-img says %s, qcow-tool %s", what, strs[i], a,
		                 b);
	}
	harness_result_free(&q);
	harness_result_free(&t);
}

/* ---- ringvm ---- */

static const char *how(bool sandbox, const char *what)
{
	static char buf[160];
	snprintf(buf, sizeof(buf), "ringvm %s%s", what, sandbox ? "" : " --disable-sandbox");
	return buf;
}

static void ringvm_argv(struct harness_argv *a, const char *params, const char *const *blocks,
                        bool sandbox)
{
	harness_argv_init(a);
	harness_argv_add(a, "%s", RINGVM);
	harness_argv_add(a, "run");
	harness_argv_add(a, "-m");
	harness_argv_add(a, "256");
	harness_argv_add(a, "-p");
	harness_argv_add(a, "%s", params);
	for (; *blocks; blocks++) {
		harness_argv_add(a, "--block");
		harness_argv_add(a, "%s", *blocks);
	}
	if (!sandbox)
		harness_argv_add(a, "--disable-sandbox");
	harness_argv_add(a, "%s", harness_probe_path());
}

/* Boots the probe with params and the NULL-terminated --block values. */
static void run(struct harness_result *r, const char *params, const char *const *blocks,
                bool sandbox)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 100};
	ringvm_argv(&a, params, blocks, sandbox);
	cr_assert_eq(harness_run(&a, &o, r), 0);
}

/* --block values. */
static char bopt[4][512];

static const char *block(unsigned i, const char *path, const char *opts)
{
	snprintf(bopt[i], sizeof(bopt[i]), "path=%s%s", path, opts);
	return bopt[i];
}

/* ---- image content ---- */

static uint64_t xs(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

static void write_all(int fd, const void *buf, size_t n, uint64_t off)
{
	cr_assert(pwrite(fd, buf, n, (off_t)off) == (ssize_t)n, "pwrite: %s", strerror(errno));
}

/*
 * A raw image of size bytes with mixed content in 48 KiB blocks (never
 * cluster-aligned runs): holes, random data, compressible text, half-filled
 * blocks, a lone non-zero byte in zeros. Deterministic in seed.
 */
static void make_content(const char *path, uint64_t size, uint64_t seed)
{
	enum { BLK = 48 * 1024 };
	blk_image_create(path, size, 0);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	cr_assert(fd >= 0);
	uint64_t s = seed * 0x9E3779B97F4A7C15ull | 1;
	uint8_t *buf = malloc(BLK);
	cr_assert_not_null(buf);
	for (uint64_t off = 0, i = 0; off < size; off += BLK, i++) {
		size_t n = size - off < BLK ? (size_t)(size - off) : BLK;
		unsigned kind = (unsigned)(xs(&s) % 5);
		memset(buf, 0, n);
		switch (kind) {
		case 0:
			continue; /* a hole */
		case 1:
		case 3:
			for (size_t k = 0; k + 8 <= (kind == 3 ? n / 2 : n); k += 8) {
				uint64_t v = xs(&s);
				memcpy(buf + k, &v, 8);
			}
			break;
		case 2:
			for (size_t k = 0; k < n;) {
				int w = snprintf((char *)buf + k, n - k,
				                 "ringvm qcow2 block %lu line %zu\n",
				                 (unsigned long)i, k);
				if (w <= 0)
					break;
				k += (size_t)w;
			}
			break;
		case 4:
			buf[xs(&s) % n] = (uint8_t)(1 + xs(&s) % 255);
			break;
		}
		write_all(fd, buf, n, off);
	}
	free(buf);
	cr_assert(close(fd) == 0);
}

/* Copies src to dst, then overwrites `edits` random ranges (data or zeros). */
static void make_variation(const char *src, const char *dst, uint64_t seed, unsigned edits)
{
	uint64_t size = blk_file_size(src);
	CMD("cp", "--sparse=always", src, dst);
	int fd = open(dst, O_WRONLY | O_CLOEXEC);
	cr_assert(fd >= 0);
	uint64_t s = seed * 0x9E3779B97F4A7C15ull | 1;
	enum { MAXLEN = 256 * 1024 };
	uint8_t *buf = malloc(MAXLEN);
	cr_assert_not_null(buf);
	for (unsigned e = 0; e < edits; e++) {
		uint64_t len = 1 + xs(&s) % MAXLEN, off = xs(&s) % (size - len);
		bool zero = xs(&s) % 3 == 0;
		for (uint64_t k = 0; k < len; k++)
			buf[k] = zero ? 0 : (uint8_t)xs(&s);
		write_all(fd, buf, len, off);
	}
	free(buf);
	cr_assert(close(fd) == 0);
}

static void assert_same(const char *a, const char *b, const char *what)
{
	uint64_t diff = 0;
	cr_assert(blk_files_equal(a, b, &diff), "%s: %s and %s differ at byte %lu (%lu/%lu bytes)",
	          what, a, b, (unsigned long)diff, (unsigned long)blk_file_size(a),
	          (unsigned long)blk_file_size(b));
}

/* The bytes [off, off+len) of path into buf. */
static void peek(const char *path, uint64_t off, void *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	cr_assert(pread(fd, buf, len, (off_t)off) == (ssize_t)len, "pread %s", path);
	close(fd);
}

/* ---- 1. read interop ---- */

/*
 * The guest copies img (read-only, format fmt) onto a raw disk pre-filled
 * with noise; the copy must equal `qemu-img convert -O raw img`, and img
 * must be unchanged.
 */
static void copy_check(const char *img, const char *fmt, bool sandbox, const char *what)
{
	const char *expect = P("expect.raw"), *dst = P("dst.raw");
	unlink(expect);
	CMD("qemu-img", "convert", "-O", "raw", img, expect);
	uint64_t size = blk_file_size(expect);
	blk_image_create(dst, size, 99);
	uint64_t hash = blk_file_hash(img);
	char o[64];
	snprintf(o, sizeof(o), ",ro,format=%s", fmt);
	const char *b[] = {block(0, img, o), block(1, dst, ""), NULL};
	struct harness_result r;
	run(&r, "probe=blk.copy", b, sandbox);
	check_probe_ok(&r, how(sandbox, what));
	/* check_blk_copy() but for missed_irqs: on this loaded 2-core host (other
	 * tests' VMs and qemu-img run in parallel) a device process preempted
	 * between publishing a completion and signalling its irqfd can make an
	 * interrupt later than the probe's 10 ms grace. The data is what counts. */
	const char *l = probe_line_with(r.out, "blk.copy", "result", "ok");
	uint64_t bytes = 0, missed = 0;
	cr_assert(l && probe_get_u64(l, "bytes", &bytes) && bytes == size,
	          "%s: blk.copy did not copy %lu bytes:\n%s", how(sandbox, what),
	          (unsigned long)size, r.out);
	if (probe_get_u64(l, "missed_irqs", &missed) && missed)
		cr_log_info("%s: %lu completions seen without their interrupt within 10 ms: %s",
		            how(sandbox, what), (unsigned long)missed, l);
	harness_result_free(&r);
	assert_same(dst, expect, how(sandbox, what));
	cr_assert_eq(blk_file_hash(img), hash, "%s: the read-only image changed", what);
}

struct read_variant {
	const char *name;
	const char *opts; /* qemu-img convert -o */
	bool compress;
};

static void read_interop(const struct read_variant *v)
{
	need_all();
	const char *src = P("src.raw"), *img = P("img.qcow2");
	make_content(src, IMG_SIZE, 11);
	if (v->compress)
		CMD("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", v->opts, src,
		    img);
	else
		CMD("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", v->opts, src, img);
	CMD("qemu-img", "check", img);
	for (int sandbox = 1; sandbox >= 0; sandbox--) {
		copy_check(img, sandbox ? "qcow2" : "auto", sandbox, v->name);
		assert_same(P("dst.raw"), src, v->name); /* and the oracle agrees with the source */
	}
}

#define READ_TEST(tname, o, c)                                                                     \
	Test(e2e_ringvm_qcow2, read_##tname)                                                       \
	{                                                                                          \
		static const struct read_variant v = {#tname, o, c};                               \
		read_interop(&v);                                                                  \
	}

READ_TEST(compat_0_10, "compat=0.10", false)
READ_TEST(compat_1_1_cluster_4k, "compat=1.1,cluster_size=4096", false)
READ_TEST(cluster_2m, "compat=1.1,cluster_size=2097152", false)
READ_TEST(lazy_refcounts, "compat=1.1,lazy_refcounts=on", false)
READ_TEST(prealloc_metadata, "preallocation=metadata", false)
READ_TEST(prealloc_full, "preallocation=full,cluster_size=65536", false)
READ_TEST(compressed_zlib, "compression_type=zlib", true)
READ_TEST(compressed_v2_cluster_4k, "compat=0.10,cluster_size=4096", true)

/*
 * base.raw <- mid.qcow2 (64K clusters) <- top.qcow2 (4K clusters), each layer
 * holding only what differs from the one below: made by `qemu-img rebase`
 * (safe mode) from overlays of full copies that are then deleted. Relative
 * backing names. Returns the expected content (want.raw).
 */
static const char *make_chain(void)
{
	const char *base = P("base.raw"), *b = P("B.raw"), *c = P("C.raw"), *want = P("want.raw");
	const char *mid = P("mid.qcow2"), *top = P("top.qcow2");
	make_content(base, IMG_SIZE, 21);
	make_variation(base, b, 22, 40);
	make_variation(b, c, 23, 40);
	CMD("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", "-b", b, "-F",
	    "raw", mid);
	CMD("qemu-img", "rebase", "-b", "base.raw", "-F", "raw", mid);
	CMD("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", c, "-F",
	    "raw", top);
	CMD("qemu-img", "rebase", "-b", "mid.qcow2", "-F", "qcow2", top);
	CMD("qemu-img", "check", mid);
	CMD("qemu-img", "check", top);
	cr_assert(rename(c, want) == 0);
	cr_assert(unlink(b) == 0);
	/* The chain must really be three deep and sparse. */
	struct harness_result r;
	cr_assert_eq(CMD_R(&r, "qemu-img", "info", "--backing-chain", "--output=json", top), 0);
	cr_assert(strstr(r.out, "\"backing-filename\": \"mid.qcow2\"") &&
	              strstr(r.out, "\"backing-filename\": \"base.raw\""),
	          "unexpected chain:\n%s", r.out);
	harness_result_free(&r);
	cr_assert_lt(blk_file_size(top), IMG_SIZE / 2, "top layer is not sparse");
	return want;
}

Test(e2e_ringvm_qcow2, read_backing_chain_two_levels)
{
	need_all();
	const char *want = make_chain(), *top = P("top.qcow2");
	uint64_t hb = blk_file_hash(P("base.raw")), hm = blk_file_hash(P("mid.qcow2"));
	for (int sandbox = 1; sandbox >= 0; sandbox--) {
		copy_check(top, "auto", sandbox, "backing chain");
		assert_same(P("dst.raw"), want, "backing chain vs the content it was built from");
	}
	cr_assert_eq(blk_file_hash(P("base.raw")), hb, "base changed");
	cr_assert_eq(blk_file_hash(P("mid.qcow2")), hm, "mid changed");
}

/* ---- 2. write interop ---- */

static void write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cr_assert(fd >= 0);
	write_all(fd, s, strlen(s), 0);
	close(fd);
}

/*
 * blk.fill (seed, count; 20 % discards, 20 % write-zeroes) on img, whose
 * content before is base (raw); then: both checkers clean, the image read
 * by qemu-img equals the mirror (discarded sectors settled to what the
 * device chose: old data or zeros), the Python mirror agrees when py.
 */
static void fill_check(const char *img, const char *base, unsigned seed, unsigned count,
                       bool sandbox, bool py, const char *what)
{
	char params[256];
	snprintf(params, sizeof(params),
	         "probe=blk.fill blk.seed=%u blk.count=%u blk.discard_pct=20 blk.zeroes_pct=20",
	         seed, count);
	const char *b[] = {block(0, img, ""), NULL};
	struct harness_result r;
	run(&r, params, b, sandbox);
	check_probe_ok(&r, how(sandbox, what));
	check_clean(img, how(sandbox, what));

	const char *now = P("now.raw"), *mirror = P("mirror.raw");
	unlink(now);
	CMD("qemu-img", "convert", "-O", "raw", img, now);
	struct blk_mirror m;
	blk_mirror_build(&m, r.out, base);
	cr_assert(m.writes > 0 && m.discards > 0 && m.zeroes > 0, "%s: ops %u/%u/%u", what,
	          m.writes, m.discards, m.zeroes);
	uint64_t first = 0, zd = 0, bad = blk_mirror_compare(&m, now, &first, &zd);
	cr_assert_eq(bad, 0, "%s: %lu sectors differ from the mirror, the first is %lu",
	             how(sandbox, what), (unsigned long)bad, (unsigned long)first);
	uint64_t settled = blk_mirror_settle(&m, now);
	cr_log_info("%s: %u writes, %u discards, %u write-zeroes; %lu discarded sectors read as "
	            "zeros instead of their old data",
	            how(sandbox, what), m.writes, m.discards, m.zeroes, (unsigned long)settled);
	blk_mirror_write(&m, mirror);
	blk_mirror_free(&m);
	struct harness_result c;
	int rc = CMD_R(&c, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", mirror, img);
	cr_assert_eq(rc, 0, "%s: qemu-img compare mirror vs image: exit %d\n%s%s",
	             how(sandbox, what), rc, c.out, c.err);
	harness_result_free(&c);
	if (py) {
		const char *log = P("fill.log"), *pym = P("pymirror.raw");
		write_file(log, r.out);
		struct harness_argv a;
		struct harness_opts o = {.timeout_s = 60};
		harness_argv_init(&a);
		harness_argv_add(&a, "python3");
		harness_argv_add(&a, "%s", MIRROR_PY);
		if (base) {
			harness_argv_add(&a, "--base");
			harness_argv_add(&a, "%s", base);
		}
		harness_argv_add(&a, "--out");
		harness_argv_add(&a, "%s", pym);
		harness_argv_add(&a, "--compare");
		harness_argv_add(&a, "%s", now);
		harness_argv_add(&a, "%s", log);
		cr_assert_eq(harness_run(&a, &o, &c), 0);
		cr_assert(c.exited && c.exit_code == 0, "%s: blk_mirror.py: %s%s", what, c.out,
		          c.err);
		harness_result_free(&c);
		unlink(pym);
	}
	harness_result_free(&r);
}

struct write_variant {
	const char *name;
	bool qemu_img;    /* created by qemu-img (else qcow-tool) */
	const char *opts; /* -o, or NULL */
	uint64_t size, grown;
	bool l1_moves; /* growing must relocate the L1 table */
};

static void write_interop(const struct write_variant *v)
{
	need_all();
	const char *img = P("img.qcow2"), *base = P("base.raw");
	char sz[32], gsz[32];
	snprintf(sz, sizeof(sz), "%lu", (unsigned long)v->size);
	snprintf(gsz, sizeof(gsz), "%lu", (unsigned long)v->grown);
	for (int sandbox = 1; sandbox >= 0; sandbox--) {
		unlink(img);
		const char *creator = v->qemu_img ? "qemu-img" : QCOW_TOOL;
		if (v->opts)
			CMD(creator, "create", "-f", "qcow2", "-o", v->opts, img, sz);
		else
			CMD(creator, "create", "-f", "qcow2", img, sz);
		check_clean(img, "fresh image");
		check_info(img, v->size, "fresh image");

		fill_check(img, NULL, 5 + (unsigned)sandbox, 300, sandbox, sandbox, v->name);
		check_info(img, v->size, "after blk.fill");

		/* Grow, then a second pass over the old content. */
		uint64_t l1_before, l1_after;
		peek(img, 40, &l1_before, 8);
		CMD(QCOW_TOOL, "resize", img, gsz);
		peek(img, 40, &l1_after, 8);
		if (v->l1_moves)
			cr_assert_neq(l1_before, l1_after, "%s: the L1 table was not relocated",
			              v->name);
		check_clean(img, "after qcow-tool resize");
		check_info(img, v->grown, "after qcow-tool resize");
		unlink(base);
		CMD("qemu-img", "convert", "-O", "raw", img, base);
		cr_assert_eq(blk_file_size(base), v->grown);
		fill_check(img, base, 17 + (unsigned)sandbox, 300, sandbox, false, v->name);
		check_info(img, v->grown, "after the second blk.fill");
	}
}

#define WRITE_TEST(tname, q, o, s, g, m)                                                           \
	Test(e2e_ringvm_qcow2, write_##tname)                                                      \
	{                                                                                          \
		static const struct write_variant v = {#tname, q, o, s, g, m};                     \
		write_interop(&v);                                                                 \
	}

WRITE_TEST(qemu_img_default, true, NULL, IMG_SIZE, 48 * MIB, false)
WRITE_TEST(qemu_img_compat_0_10_4k, true, "compat=0.10,cluster_size=4096", IMG_SIZE, 40 * MIB,
           false)
WRITE_TEST(qcow_tool_default, false, NULL, IMG_SIZE, 48 * MIB, false)
/* 512-byte clusters: the 16 MiB image's L1 table fills its clusters; growing relocates it. */
WRITE_TEST(qcow_tool_512_l1_grows, false, "cluster_size=512", 16 * MIB, 40 * MIB, true)

/*
 * A dirty image (lazy refcounts; qemu-io killed by SIGKILL after its writes,
 * so the refcounts on disk are too low): ringvm rebuilds the refcounts when
 * it opens the image read-write, blk.fill writes on it, and qemu-img check
 * is clean afterwards.
 */
Test(e2e_ringvm_qcow2, write_dirty_image_rebuilt)
{
	need_all();
	REQUIRE_FACILITY(on_path("qemu-io"), "qemu-io (Debian's qemu-utils) is not installed");
	const char *img = P("dirty.qcow2"), *base = P("dirty.raw");
	for (int sandbox = 1; sandbox >= 0; sandbox--) {
		unlink(img);
		unlink(base);
		CMD("qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", img, "32M");
		struct harness_result k;
		cmd_r(&k, "qemu-io", "-c", "write -P 0x5a 0 512", "-c", "write -P 0x33 5M 200k",
		      "-c", "write -P 0x44 20M 64k", "-c", "sigraise 9", img, (const char *)NULL);
		harness_result_free(&k);
		struct harness_result c;
		int rc = CMD_R(&c, "qemu-img", "check", img);
		harness_result_free(&c);
		cr_assert_eq(rc, 2, "the killed qemu-io should leave refcounts too low (exit %d)", rc);
		CMD("qemu-img", "convert", "-O", "raw", img, base);
		fill_check(img, base, 29 + (unsigned)sandbox, 200, sandbox, false,
		           "blk.fill on a dirty image");
	}
}

/* blk.fill on the top of the two-level chain: copy-on-write from both layers below. */
Test(e2e_ringvm_qcow2, write_over_backing_chain)
{
	need_all();
	const char *want = make_chain(), *top = P("top.qcow2");
	const char *saved = P("top.saved");
	CMD("cp", top, saved);
	uint64_t hb = blk_file_hash(P("base.raw")), hm = blk_file_hash(P("mid.qcow2"));
	for (int sandbox = 1; sandbox >= 0; sandbox--) {
		CMD("cp", saved, top);
		fill_check(top, want, 31 + (unsigned)sandbox, 300, sandbox, false, "over a chain");
	}
	cr_assert_eq(blk_file_hash(P("base.raw")), hb, "base changed");
	cr_assert_eq(blk_file_hash(P("mid.qcow2")), hm, "mid changed");
}

/* ---- 3. crash consistency ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Starts argv in a new process group with stdout+stderr on a pipe, drains
 * the pipe until marker shows up, then for delay_ms more, then SIGKILLs the
 * whole group. Returns the number of `PROBE blk.fill.op` lines seen; *ended
 * when the guest finished (PROBE-END) before the kill.
 */
/*
 * ringvm's device processes die with it (same process group, and their
 * parent-death signal), but for a moment they are orphans: this test
 * process makes itself their subreaper (see spawn_and_kill) and reaps them
 * here, so they are never handed to Criterion's runner, which would count
 * a stray child as a failed run.
 */
static void reap_orphans(void)
{
	for (int tries = 0; tries < 200; tries++) {
		pid_t r = waitpid(-1, NULL, WNOHANG);
		if (r < 0 && errno == ECHILD)
			return;
		if (r == 0)
			usleep(10000);
	}
}

static unsigned spawn_and_kill(const struct harness_argv *a, const char *marker, unsigned delay_ms,
                               bool *ended, uint64_t *ran_ms)
{
	int p[2];
	cr_assert(pipe2(p, O_CLOEXEC) == 0);
	cr_assert_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
	uint64_t t0 = now_ms();
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		setpgid(0, 0);
		int nul = open("/dev/null", O_RDONLY);
		dup2(nul, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		close_range(3, ~0u, 0); /* nothing of the test process leaks into the VM */
		harness_execv(a);
		_exit(127);
	}
	setpgid(pid, pid);
	close(p[1]);
	/* Keep a window of the stream: enough to find markers across reads. */
	char win[8192];
	size_t wl = 0;
	unsigned ops = 0;
	bool seen = false;
	*ended = false;
	uint64_t deadline = now_ms() + 20000, kill_at = UINT64_MAX;
	for (;;) {
		uint64_t t = now_ms();
		if (!seen && t >= deadline)
			break;
		if (t >= kill_at)
			break;
		struct pollfd pf = {p[0], POLLIN, 0};
		int wait = (int)((seen ? kill_at : deadline) - t);
		if (poll(&pf, 1, wait) <= 0)
			continue;
		char buf[4096];
		ssize_t n = read(p[0], buf, sizeof(buf));
		if (n <= 0)
			break; /* it exited on its own */
		for (ssize_t i = 0; i < n; i++) {
			if (wl == sizeof(win) - 1) {
				memmove(win, win + sizeof(win) / 2, sizeof(win) / 2 - 1);
				wl = sizeof(win) / 2 - 1;
			}
			win[wl++] = buf[i];
			win[wl] = 0;
			if (buf[i] != '\n')
				continue;
			/* A complete line ends the window: look at it. */
			char *ls = win + wl - 1;
			while (ls > win && ls[-1] != '\n')
				ls--;
			if (!strncmp(ls, "PROBE blk.fill.op ", 18))
				ops++;
			if (!strncmp(ls, "PROBE-END", 9))
				*ended = true;
			if (!seen && strstr(ls, marker)) {
				seen = true;
				kill_at = now_ms() + delay_ms;
			}
		}
	}
	kill(-pid, SIGKILL);
	*ran_ms = now_ms() - t0;
	int st;
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	reap_orphans();
	close(p[0]);
	cr_assert(seen, "the marker '%s' never appeared (ringvm %s)", marker,
	          WIFEXITED(st) ? "exited" : "was killed");
	return ops;
}

/* Waits until nothing holds img's lock any more (the device process died too). */
static void wait_unlocked(const char *img)
{
	int fd = open(img, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0);
	uint64_t until = now_ms() + 5000;
	while (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		cr_assert_lt(
		    now_ms(), until,
		    "%s is still locked 5 s after SIGKILL: a device process outlived ringvm", img);
		usleep(2000);
	}
	close(fd);
}

/*
 * Clusters at or past the end of img's file whose refcount is not 0 (an
 * allocation whose data never reached the file). Reads the header, the
 * refcount table and the blocks directly; 16-bit refcounts only.
 */
static uint64_t rc_past_eof(const char *img)
{
	uint64_t size = blk_file_size(img), rt_off, n = 0;
	uint32_t cbits, rt_cl, order;
	peek(img, 20, &cbits, 4);
	peek(img, 48, &rt_off, 8);
	peek(img, 56, &rt_cl, 4);
	peek(img, 96, &order, 4);
	cbits = be32toh(cbits);
	rt_off = be64toh(rt_off);
	rt_cl = be32toh(rt_cl);
	cr_assert_eq(be32toh(order), 4, "%s: refcount_order %u", img, be32toh(order));
	uint64_t cs = 1ull << cbits, per = cs / 2;
	uint64_t *rt = malloc(rt_cl * cs);
	uint16_t *blk = malloc(cs);
	cr_assert(rt && blk);
	peek(img, rt_off, rt, rt_cl * cs);
	for (uint64_t b = 0; b < rt_cl * cs / 8; b++) {
		uint64_t off = be64toh(rt[b]);
		if (!off || ((b + 1) * per) * cs <= size)
			continue;
		cr_assert_leq(off + cs, size, "%s: refcount block %lu past the end", img,
		              (unsigned long)b);
		peek(img, off, blk, cs);
		for (uint64_t i = 0; i < per; i++)
			if (blk[i] && (b * per + i) * cs >= size)
				n++;
	}
	free(rt);
	free(blk);
	return n;
}

static unsigned env_uint(const char *name, unsigned def)
{
	const char *s = getenv(name);
	return s && *s ? (unsigned)strtoul(s, NULL, 0) : def;
}

/*
 * hostile-inputs 17. Each iteration boots ringvm on a qcow2 image with small
 * clusters doing allocating writes — blk.fill (one at a time, with
 * discards and write-zeroes: frees too) or blk.bench randwrite at QD 16
 * (concurrent allocations) — and SIGKILLs the whole process group at a
 * random moment once they run; then qemu-img check must say 0 (clean) or 3
 * (leaks), never 2 (corruption), and qcow-tool check must agree. Every
 * fourth iteration starts from a fresh image, the others continue on the
 * crashed one. RINGVM_CRASH_ITERS / RINGVM_CRASH_SEED override the defaults.
 */
Test(e2e_ringvm_qcow2, crash_sigkill_during_allocating_writes, .timeout = 300)
{
	need_all();
	unsigned iters = env_uint("RINGVM_CRASH_ITERS", 24);
	uint64_t seed = env_uint("RINGVM_CRASH_SEED", (unsigned)time(NULL));
	uint64_t s = seed * 0x9E3779B97F4A7C15ull | 1;
	const char *img = P("crash.qcow2");
	unsigned leaky = 0, fresh = 0, midrun = 0;
	uint64_t leaked = 0, ops_total = 0, ms_total = 0, prev_leaks = 0, past_eof = 0;
	uint64_t last_tool_leaks = 0;
	for (unsigned i = 0; i < iters; i++) {
		unsigned variant = (i / 4) % 3;
		const char *cs = variant == 0 ? "512" : variant == 1 ? "4096" : "65536";
		if (i % 4 == 0) {
			unlink(img);
			char o[64];
			snprintf(o, sizeof(o), "cluster_size=%s", cs);
			if (variant == 1)
				CMD("qemu-img", "create", "-q", "-f", "qcow2", "-o", o, img, "32M");
			else
				CMD(QCOW_TOOL, "create", "-o", o, img, "32M");
			fresh++;
			prev_leaks = 0;
		}
		bool sandbox = i % 2 == 0, bench = i % 3 == 2;
		char params[256];
		if (bench)
			snprintf(params, sizeof(params),
			         "probe=timer,blk.bench blk.rw=randwrite blk.bs=%u blk.qd=16 "
			         "blk.secs=30 "
			         "blk.seed=%u",
			         i % 2 ? 4096 : 65536, (unsigned)(xs(&s) % 100000));
		else
			snprintf(params, sizeof(params),
			         "probe=blk.fill blk.seed=%u blk.count=1000000 blk.discard_pct=10 "
			         "blk.zeroes_pct=10 blk.span_mib=24",
			         (unsigned)(xs(&s) % 100000));
		const char *b[] = {block(0, img, ""), NULL};
		struct harness_argv a;
		ringvm_argv(&a, params, b, sandbox);
		cr_assert(!a.overflow);
		unsigned delay = 50 + (unsigned)(xs(&s) % 650);
		bool ended;
		uint64_t ran;
		unsigned ops = spawn_and_kill(&a, bench ? "PROBE timer " : "PROBE blk.fill start",
		                              delay, &ended, &ran);
		cr_assert(!ended, "iteration %u: the guest finished before the kill", i);
		midrun++;
		ops_total += ops;
		ms_total += ran;
		wait_unlocked(img);

		struct harness_result q, t;
		int rq = CMD_R(&q, "qemu-img", "check", "--output=json", img);
		cr_assert(
		    rq == 0 || rq == 3,
		    "iteration %u (seed %lu, cluster %s, %s, %s, killed %u ms in): qemu-img check "
		    "exit %d (2: corruption)\n%s%s",
		    i, (unsigned long)seed, cs, bench ? "blk.bench" : "blk.fill",
		    sandbox ? "sandboxed" : "no sandbox", delay, rq, q.out, q.err);
		uint64_t l = 0, lt = 0, eof = rc_past_eof(img);
		json_u64(q.out, "leaks", &l);
		int rt = CMD_R(&t, QCOW_TOOL, "check", img);
		if (rt == 3)
			cr_assert(sscanf(t.out, "%lu leaked clusters", (unsigned long *)&lt) == 1,
			          "qcow-tool check: %s", t.out);
		/* qemu-img looks only at clusters inside the file; qcow-tool also counts
		 * those past its end that a killed allocation left with refcount 1. */
		cr_assert(
		    rt == (l + eof ? 3 : 0) && lt == l + eof,
		    "iteration %u: qcow-tool check exit %d (%lu leaks), qemu-img check %d "
		    "(%lu leaks) + %lu referenced clusters past the end of the file\n%s%s\n%s",
		    i, rt, (unsigned long)lt, rq, (unsigned long)l, (unsigned long)eof, t.out,
		    t.err, q.out);
		past_eof += eof;
		last_tool_leaks = lt;
		cr_assert_geq(l, prev_leaks, "iteration %u: leaks went down (%lu -> %lu)", i,
		              (unsigned long)prev_leaks, (unsigned long)l);
		if (l > prev_leaks) { /* this crash leaked (earlier ones' leaks carry over) */
			leaky++;
			leaked += l - prev_leaks;
		}
		cr_log_info(
		    "crash %u: cluster %s, %s, %s, killed %u ms after the writes began "
		    "(%lu ms after exec), %u ops printed, qemu-img check %d, %lu new leaked "
		    "clusters",
		    i, cs, bench ? "blk.bench" : "blk.fill", sandbox ? "sandbox" : "no sandbox",
		    delay, (unsigned long)ran, ops, rq, (unsigned long)(l - prev_leaks));
		prev_leaks = l;
		harness_result_free(&q);
		harness_result_free(&t);
	}
	/* The last crashed image still works: repair the leaks, boot, verify. */
	if (last_tool_leaks) { /* qcow-tool: it sees those past the end of the file too */
		struct harness_result fx;
		int rc = CMD_R(&fx, QCOW_TOOL, "check", "-r", "leaks", img);
		cr_assert(rc == 0, "qcow-tool check -r leaks: exit %d\n%s%s", rc, fx.out, fx.err);
		harness_result_free(&fx);
	}
	check_clean(img, "after the crash loop and repair");
	struct harness_result r;
	const char *b[] = {block(0, img, ""), NULL};
	run(&r, "probe=blk.verify blk.ro_disk=none", b, true);
	check_probe_ok(&r, "ringvm blk.verify on the crashed image");
	harness_result_free(&r);
	check_clean(img, "after blk.verify");
	cr_log_info(
	    "crash loop: seed %lu, %u iterations (%u fresh images), %u killed mid-run, "
	    "%u leaked (%lu leaked clusters in all), none corrupt; refcounted clusters past "
	    "EOF (qcow-tool-only leaks) seen %lu times; %lu blk.fill ops printed, %lu ms in "
	    "ringvm",
	    (unsigned long)seed, iters, fresh, midrun, leaky, (unsigned long)leaked,
	    (unsigned long)past_eof, (unsigned long)ops_total, (unsigned long)ms_total);
}

/* ---- 4. hostile images ---- */

/*
 * blk.verify on a lone read-only disk: every check passed except, perhaps,
 * `irqs` — the few requests such a run makes can all complete before the
 * guest ever waits (it looks at the used ring before it sleeps with
 * interrupts enabled), leaving its "irqs > 0" unmet; no completion may
 * have come without its interrupt though. The read-only check ran: a read
 * worked, a write got IOERR, the sector is unchanged.
 */
static void check_verify_read_only(const struct harness_result *r, const char *what)
{
	cr_assert(r->exited && r->exit_code == 0, "%s: ringvm did not exit cleanly:\n%s", what,
	          r->err);
	cr_assert_not_null(probe_end_line(r->out), "%s: no PROBE-END:\n%s", what, r->out);
	const char *l;
	char v[64], name[64];
	unsigned checks = 0;
	for (unsigned i = 0; (l = probe_line(r->out, "blk.verify.check", i)); i++) {
		cr_assert(probe_get(l, "name", name, sizeof(name)));
		if (probe_get(l, "result", v, sizeof(v)) && !strcmp(v, "skipped"))
			continue;
		checks++;
		if (!strcmp(name, "irqs")) {
			cr_assert(probe_get(l, "missed_irqs", v, sizeof(v)) && !strcmp(v, "0"),
			          "%s: %s", what, l);
			continue;
		}
		cr_assert(probe_get(l, "pass", v, sizeof(v)) && !strcmp(v, "1"),
		          "%s: check failed: %s\n--- output:\n%s", what, l, r->out);
	}
	l = probe_line_with(r->out, "blk.verify.check", "name", "read-only");
	cr_assert_not_null(l, "%s: no read-only check:\n%s", what, r->out);
	cr_assert(probe_get(l, "write", v, sizeof(v)) && !strcmp(v, "ioerr"),
	          "%s: a guest write did not get IOERR: %s", what, l);
	cr_assert(probe_get(l, "unchanged", v, sizeof(v)) && !strcmp(v, "1"), "%s: %s", what, l);
	cr_assert_geq(checks, 6, "%s: too few checks ran:\n%s", what, r->out);
}

static void poke(const char *path, uint64_t off, const void *bytes, size_t n)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	write_all(fd, bytes, n, off);
	close(fd);
}

static void poke32(const char *path, uint64_t off, uint32_t v)
{
	uint32_t be = htobe32(v);
	poke(path, off, &be, 4);
}

static void poke64(const char *path, uint64_t off, uint64_t v)
{
	uint64_t be = htobe64(v);
	poke(path, off, &be, 8);
}

/*
 * ringvm refuses img (with opts): exit status 2, one line on stderr naming
 * the image and containing want; nothing written to the image.
 */
static void refused(const char *img, const char *opts, const char *want, const char *what)
{
	uint64_t hash = blk_file_hash(img);
	const char *b[] = {block(0, img, opts), NULL};
	struct harness_result r;
	run(&r, "probe=blk.verify", b, true);
	cr_assert(r.exited && r.exit_code == 2, "%s: ringvm should exit 2: %s\n--- stderr:\n%s",
	          what, r.exited ? "other exit" : "killed", r.err);
	cr_assert_null(strstr(r.out, "PROBE"), "%s: the guest ran:\n%s", what, r.out);
	size_t n = strlen(r.err);
	cr_assert(n > 1 && r.err[n - 1] == '\n' && !memchr(r.err, '\n', n - 1),
	          "%s: not exactly one line on stderr:\n%s", what, r.err);
	cr_assert(strstr(r.err, want), "%s: the message does not say '%s':\n%s", what, want, r.err);
	const char *slash = strrchr(img, '/');
	cr_assert(strstr(r.err, slash ? slash + 1 : img), "%s: the message does not name %s:\n%s",
	          what, img, r.err);
	cr_log_info("%s: %s", what, r.err);
	harness_result_free(&r);
	cr_assert_eq(blk_file_hash(img), hash, "%s: the refused image was modified", what);
	/* qcow-tool opens images through the same code: it refuses them the same
	 * way — unless ringvm was told the format (qcow-tool detects it) or the
	 * refusal is of a read-write open (info opens read-only: a dirty image is
	 * fine to read). */
	if (!strstr(opts, "format=") && !strstr(want, "dirty")) {
		int rc = CMD_R(&r, QCOW_TOOL, "info", img);
		cr_assert_eq(rc, 1, "%s: qcow-tool info should exit 1: %d\n%s", what, rc, r.err);
		cr_assert(strstr(r.err, want), "%s: qcow-tool's message does not say '%s':\n%s", what,
		          want, r.err);
		harness_result_free(&r);
		cr_assert_eq(blk_file_hash(img), hash, "%s: qcow-tool modified the image", what);
	}
}

/* A valid v3 image with some data, copied to name. */
static const char *good_image(const char *name)
{
	const char *src = P("good.raw"), *img = P("good.qcow2");
	if (access(img, F_OK) != 0) {
		make_content(src, 16 * MIB, 41);
		CMD("qemu-img", "convert", "-f", "raw", "-O", "qcow2", src, img);
	}
	const char *dst = P(name);
	CMD("cp", img, dst);
	return dst;
}

Test(e2e_ringvm_qcow2, hostile_headers_refused)
{
	need_all();
	const char *p;

	p = good_image("magic.qcow2");
	poke(p, 0, "QFI\xfc", 4);
	refused(p, ",format=qcow2", "bad magic", "bad magic");

	p = good_image("version1.qcow2");
	poke32(p, 4, 1);
	refused(p, "", "version 1", "version 1");
	p = good_image("version4.qcow2");
	poke32(p, 4, 4);
	refused(p, "", "version 4", "version 4");

	p = good_image("cbits30.qcow2");
	poke32(p, 20, 30);
	refused(p, "", "cluster_bits 30", "cluster_bits 30");
	p = good_image("cbits8.qcow2");
	poke32(p, 20, 8);
	refused(p, "", "cluster_bits 8", "cluster_bits 8");

	p = good_image("size.qcow2");
	poke64(p, 24, UINT64_MAX - 511);
	refused(p, "", "too large", "virtual size overflowing");

	p = good_image("l1eof.qcow2");
	poke64(p, 40, 1ull << 40);
	refused(p, "", "L1 table past end of file", "L1 offset past EOF");
	p = good_image("l1unaligned.qcow2");
	poke64(p, 40, 0x30200);
	refused(p, "", "L1 table offset not cluster-aligned", "L1 offset unaligned");
	p = good_image("l1huge.qcow2");
	poke32(p, 36, 0x7fffffff);
	refused(p, "", "L1 table too large", "l1_size huge");

	p = good_image("rcorder.qcow2");
	poke32(p, 96, 7);
	refused(p, "", "refcount_order 7", "refcount_order 7");
	p = good_image("hdrlen.qcow2");
	poke32(p, 100, 97);
	refused(p, "", "header length", "header length 97");

	p = good_image("incompat.qcow2");
	poke64(p, 72, 1ull << 5);
	refused(p, "", "unknown incompatible feature bit 5", "unknown incompatible bit");
	p = good_image("crypt.qcow2");
	poke32(p, 32, 1);
	refused(p, "", "encrypted", "crypt_method 1");
	/* Dirty with an L1 entry past the end of the file: the refcount rebuild
	 * cannot repair that, so read-write is refused (read-only is fine, below). */
	p = good_image("dirty.qcow2");
	poke64(p, 72, 1);
	uint64_t l1;
	peek(p, 40, &l1, 8);
	poke64(p, be64toh(l1), (1ull << 63) | (1ull << 40));
	refused(p, "", "dirty", "dirty bit, not rebuildable, read-write");
}

Test(e2e_ringvm_qcow2, hostile_backing_refused)
{
	need_all();
	/* Refers to itself: made as an overlay of "loop.qcow2", then renamed to it. */
	const char *self = P("loop.qcow2");
	CMD("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "loop.qcow2", "-F", "qcow2",
	    P("tmp.qcow2"), "16M");
	cr_assert(rename(P("tmp.qcow2"), self) == 0);
	refused(self, "", "refers back to itself", "self-referencing backing file");
	refused(self, ",ro", "refers back to itself", "self-referencing backing file, ro");

	/* a -> b -> a. */
	CMD("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "b.qcow2", "-F", "qcow2",
	    P("a.qcow2"), "16M");
	CMD("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "a.qcow2", "-F", "qcow2",
	    P("b.qcow2"), "16M");
	refused(P("a.qcow2"), "", "refers back to itself", "two-image backing loop");

	/* Missing, wrong format, too deep. */
	CMD("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "nothere.qcow2", "-F", "qcow2",
	    P("missing.qcow2"), "16M");
	refused(P("missing.qcow2"), "", "No such file", "missing backing file");
	blk_image_create(P("plain.raw"), 16 * MIB, 3);
	CMD("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "plain.raw", "-F", "qcow2",
	    P("wrongfmt.qcow2"), "16M");
	refused(P("wrongfmt.qcow2"), "", "bad magic", "backing file of the wrong format");
	CMD("qemu-img", "create", "-q", "-f", "qcow2", P("d0.qcow2"), "16M");
	for (unsigned i = 1; i <= 17; i++) {
		char name[32], below[32];
		snprintf(name, sizeof(name), "d%u.qcow2", i);
		snprintf(below, sizeof(below), "d%u.qcow2", i - 1);
		CMD("qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", below, "-F", "qcow2",
		    P(name), "16M");
	}
	refused(P("d17.qcow2"), ",ro", "too deep", "a chain 17 below the top");
	/* 16 below the top is allowed. */
	struct harness_result r;
	const char *b[] = {block(0, P("d16.qcow2"), ",ro"), NULL};
	run(&r, "probe=blk.verify", b, true);
	check_verify_read_only(&r, "ringvm on a chain 16 deep");
	harness_result_free(&r);
}

/*
 * The corrupt bit: ringvm opens the image read-only even when read-write
 * was asked for; the guest's blk.verify sees a read-only disk (its writes
 * get IOERR) and the image stays byte for byte the same. A dirty image
 * asked for read-only boots too.
 */
static void corrupt_ro(bool sandbox)
{
	const char *p = good_image("corrupt.qcow2");
	uint8_t h[8];
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0 && pread(fd, h, 8, 72) == 8);
	close(fd);
	uint64_t incompat;
	memcpy(&incompat, h, 8);
	poke64(p, 72, be64toh(incompat) | 2);
	uint64_t hash = blk_file_hash(p);
	const char *b[] = {block(0, p, ""), NULL};
	struct harness_result r;
	run(&r, "probe=blk.verify", b, sandbox);
	check_verify_read_only(&r, how(sandbox, "blk.verify on a corrupt-bit image"));
	const char *l = probe_line_with(r.out, "blk.verify.check", "name", "config");
	char v[32];
	cr_assert(l && probe_get(l, "ro", v, sizeof(v)) && !strcmp(v, "1"),
	          "the corrupt image was not offered read-only: %s", l ? l : r.out);
	harness_result_free(&r);
	cr_assert_eq(blk_file_hash(p), hash, "the corrupt image was modified");

	p = good_image("dirty_ro.qcow2");
	poke64(p, 72, 1);
	hash = blk_file_hash(p);
	b[0] = block(0, p, ",ro");
	run(&r, "probe=blk.verify", b, sandbox);
	check_verify_read_only(&r, how(sandbox, "blk.verify on a dirty image, ro"));
	harness_result_free(&r);
	cr_assert_eq(blk_file_hash(p), hash, "the dirty image was modified");
}

Test(e2e_ringvm_qcow2, hostile_corrupt_bit_read_only)
{
	need_all();
	corrupt_ro(true);
	corrupt_ro(false);
}

/*
 * hostile-inputs 15: guest cluster 0's L2 entry aimed at the image's own L1
 * table, marked COPIED so a write would go in place. Guest writes there
 * must fail (IOERR), the header and the L1 table must not change, and the
 * rest of the disk must keep working.
 */
static void l2_at_metadata(bool sandbox)
{
	const char *p = P("l2meta.qcow2");
	unlink(p);
	CMD("qemu-img", "create", "-q", "-f", "qcow2", p, "16M");
	/* Allocate guest cluster 0 (and its L2 table) with a guest write first. */
	const char *b[] = {block(0, p, ""), NULL};
	struct harness_result r;
	run(&r,
	    "probe=blk.fill blk.count=1 blk.max_kib=1 blk.span_mib=1 blk.discard_pct=0 "
	    "blk.zeroes_pct=0 blk.seed=1",
	    b, sandbox);
	check_probe_ok(&r, "allocating write");
	harness_result_free(&r);
	/* Find the L2 table through the L1 table and aim entry 0 at the L1 table. */
	uint64_t l1off, l1e;
	peek(p, 40, &l1off, 8);
	l1off = be64toh(l1off);
	peek(p, l1off, &l1e, 8);
	uint64_t l2 = be64toh(l1e) & 0x00fffffffffffe00ull;
	cr_assert(l2 != 0 && l1off != 0, "guest cluster 0 has no L2 table");
	poke64(p, l2, (1ull << 63) | l1off);
	static uint8_t hdr[4096], l1[65536], hdr2[4096], l1_2[65536];
	peek(p, 0, hdr, sizeof(hdr));
	peek(p, l1off, l1, sizeof(l1));

	run(&r, "probe=blk.verify blk.ro_disk=none", b, sandbox);
	cr_assert(r.exited, "ringvm did not exit on its own: %s", r.err);
	const char *l = probe_line_with(r.out, "blk.verify.check", "name", "rw-first-4k");
	cr_assert_not_null(l, "no rw-first-4k check:\n%s", r.out);
	char v[32];
	cr_assert(probe_get(l, "write", v, sizeof(v)) && !strcmp(v, "ioerr"),
	          "%s: a guest write aimed at the L1 table did not get IOERR: %s",
	          how(sandbox, "L2 entry at the L1 table"), l);
	l = probe_line_with(r.out, "blk.verify.check", "name", "rw-middle");
	cr_assert(l && probe_get(l, "pass", v, sizeof(v)) && !strcmp(v, "1"),
	          "the rest of the disk stopped working:\n%s", r.out);
	harness_result_free(&r);
	peek(p, 0, hdr2, sizeof(hdr2));
	peek(p, l1off, l1_2, sizeof(l1_2));
	cr_assert(!memcmp(hdr, hdr2, sizeof(hdr)), "the header was overwritten");
	cr_assert(!memcmp(l1, l1_2, sizeof(l1)), "%s: the L1 table was overwritten",
	          how(sandbox, "L2 entry at the L1 table"));
	/* qemu-img sees the planted overlap as corruption (and nothing worse). */
	struct harness_result q;
	int rc = CMD_R(&q, "qemu-img", "check", p);
	cr_assert_eq(rc, 2, "qemu-img check should report the planted corruption: exit %d\n%s%s",
	             rc, q.out, q.err);
	harness_result_free(&q);
}

Test(e2e_ringvm_qcow2, hostile_l2_entry_at_l1_table)
{
	need_all();
	l2_at_metadata(true);
	l2_at_metadata(false);
}
