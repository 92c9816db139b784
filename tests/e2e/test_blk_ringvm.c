/*
 * End-to-end: the probe guest's virtio-blk tests against ringvm's virtio-blk
 * device (`--block path=FILE[,ro][,direct][,id=STR][,queues=N]`), held to
 * the same checks as QEMU's device (blk_checks.h) and stricter where QEMU is
 * lenient: hostile.blk runs every case and each result must be one
 * hostile-inputs.md allows; a DISCARD to a read-only disk must fail. Data is
 * checked on the host (blk.copy's target equals its source, blk.fill's image
 * equals the mirror, blk.verify's tags are in the image). Each test runs
 * with the sandbox and, when ringvm offers it, without (--disable-sandbox).
 * Until `ringvm run --help` lists BLOCK_OPT the tests skip and say so.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "tests/common/facility.h"
#include "tests/e2e/blk_checks.h"
#include "tests/e2e/harness.h"
#include "tests/e2e/probe_checks.h"

#define RINGVM    BUILD_PATH("core/ringvm")
#define BLOCK_OPT "--block" /* the CLI option that adds a virtio-blk device */
#define MIB       (1024ull * 1024)
#define DISK_SIZE (64 * MIB)
#define RO_SIZE   (16 * MIB)
#define DISK_ID   "probe-disk0"

static char dir[256], d0[320], d1[320], base[320];

static void setup(void)
{
	blk_tmpdir(dir, sizeof(dir));
	snprintf(d0, sizeof(d0), "%s/d0.img", dir);
	snprintf(d1, sizeof(d1), "%s/d1.img", dir);
	snprintf(base, sizeof(base), "%s/base.img", dir);
}

static void teardown(void)
{
	if (dir[0])
		blk_tmpdir_remove(dir);
}

TestSuite(e2e_ringvm_blk, .init = setup, .fini = teardown, .timeout = 240);

static void need_block(void)
{
	REQUIRE_FACILITY(facility_kvm(), "/dev/kvm is not usable");
	REQUIRE_FACILITY(harness_probe_exists(), "the probe guest was not built");
	REQUIRE_FACILITY(harness_ringvm_has_option(BLOCK_OPT),
	                 "ringvm run --help lists no such option");
}

/*
 * Boots the probe under ringvm with params and the NULL-terminated list of
 * --block option values; sandbox off when !sandbox. cpus 0: ringvm's default.
 */
static void run(struct harness_result *r, const char *params, const char *const *blocks,
                unsigned cpus, bool sandbox)
{
	struct harness_argv a;
	struct harness_opts o = {.timeout_s = 100};
	harness_argv_init(&a);
	harness_argv_add(&a, "%s", RINGVM);
	harness_argv_add(&a, "run");
	harness_argv_add(&a, "-m");
	harness_argv_add(&a, "256");
	if (cpus) {
		harness_argv_add(&a, "-c");
		harness_argv_add(&a, "%u", cpus);
	}
	harness_argv_add(&a, "-p");
	harness_argv_add(&a, "%s", params);
	for (; *blocks; blocks++) {
		harness_argv_add(&a, BLOCK_OPT);
		harness_argv_add(&a, "%s", *blocks);
	}
	if (!sandbox)
		harness_argv_add(&a, "--disable-sandbox");
	harness_argv_add(&a, "%s", harness_probe_path());
	cr_assert_eq(harness_run(&a, &o, r), 0);
}

/* Runs fn once with the sandbox and once without (when ringvm can turn it off). */
#define BOTH_WAYS(fn)                                                                              \
	do {                                                                                       \
		need_block();                                                                      \
		fn(true);                                                                          \
		fn(false);                                                                         \
	} while (0)

static const char *how(bool sandbox, const char *what)
{
	static char buf[128];
	snprintf(buf, sizeof(buf), "ringvm %s%s", what, sandbox ? "" : " --disable-sandbox");
	return buf;
}

/* --block values: "path=FILE" + opts (",ro", ",direct,id=X", ...). */
static char bopt[4][512];

static const char *block(unsigned i, const char *path, const char *opts)
{
	snprintf(bopt[i], sizeof(bopt[i]), "path=%s%s", path, opts);
	return bopt[i];
}

/* ---- blk.verify ---- */

static const struct blk_verify_expect verify_expect = {
    .id = DISK_ID,
    .ro_check = true,
    .flush = true,
    .discard = true,
    .write_zeroes = true,
    .strict = true,
};

static void verify(bool sandbox)
{
	struct harness_result r;
	blk_image_create(d0, DISK_SIZE, 0);
	blk_image_create(d1, RO_SIZE, 7);
	uint64_t ro_hash = blk_file_hash(d1);
	const char *b[] = {block(0, d0, ",id=" DISK_ID), block(1, d1, ",ro"), NULL};
	run(&r, "probe=blk.verify", b, 0, sandbox);
	check_probe_ok(&r, how(sandbox, "blk.verify"));
	check_blk_verify(r.out, &verify_expect);
	check_blk_verify_image(r.out, d0);
	cr_assert_eq(blk_file_hash(d1), ro_hash, "the read-only image changed");
	cr_assert_eq(blk_file_size(d0), DISK_SIZE, "disk 0 changed size");
	harness_result_free(&r);
}

Test(e2e_ringvm_blk, verify)
{
	BOTH_WAYS(verify);
}

/* O_DIRECT, direct descriptor chains, no EVENT_IDX, two queues. */
static void verify_direct(bool sandbox)
{
	struct harness_result r;
	blk_image_create(d0, DISK_SIZE, 0);
	blk_image_create(d1, RO_SIZE, 7);
	const char *b[] = {block(0, d0, ",direct,queues=2,id=" DISK_ID), block(1, d1, ",ro"), NULL};
	run(&r, "probe=blk.verify blk.indirect=0 blk.event_idx=0", b, 2, sandbox);
	check_probe_ok(&r, how(sandbox, "blk.verify direct"));
	check_blk_verify(r.out, &verify_expect);
	check_blk_verify_image(r.out, d0);
	harness_result_free(&r);
}

Test(e2e_ringvm_blk, verify_direct_chains_o_direct)
{
	BOTH_WAYS(verify_direct);
}

/* ---- blk.copy ---- */

static void copy(bool sandbox)
{
	struct harness_result r;
	blk_image_create(d0, DISK_SIZE, 1);
	blk_image_create(d1, DISK_SIZE, 2);
	const char *b[] = {block(0, d0, ""), block(1, d1, ""), NULL};
	run(&r, "probe=blk.copy", b, 0, sandbox);
	check_probe_ok(&r, how(sandbox, "blk.copy"));
	check_blk_copy(r.out, DISK_SIZE);
	uint64_t diff = 0;
	cr_assert(blk_files_equal(d0, d1, &diff), "%s: disk 1 differs from disk 0 at byte %lu",
	          how(sandbox, "blk.copy"), (unsigned long)diff);
	harness_result_free(&r);
}

Test(e2e_ringvm_blk, copy)
{
	BOTH_WAYS(copy);
}

static void copy_direct(bool sandbox)
{
	struct harness_result r;
	blk_image_create(d0, DISK_SIZE, 3);
	blk_image_create(d1, DISK_SIZE, 0);
	const char *b[] = {block(0, d0, ",direct"), block(1, d1, ",direct"), NULL};
	run(&r, "probe=blk.copy blk.chunk=65536 blk.depth=16", b, 0, sandbox);
	check_probe_ok(&r, how(sandbox, "blk.copy direct"));
	check_blk_copy(r.out, DISK_SIZE);
	uint64_t diff = 0;
	cr_assert(blk_files_equal(d0, d1, &diff), "disk 1 differs from disk 0 at byte %lu",
	          (unsigned long)diff);
	harness_result_free(&r);
}

Test(e2e_ringvm_blk, copy_small_chunks_o_direct)
{
	BOTH_WAYS(copy_direct);
}

/* ---- blk.fill + mirror ---- */

static void fill(bool sandbox)
{
	struct harness_result r;
	blk_image_create(d0, DISK_SIZE, 3);
	blk_image_create(base, DISK_SIZE, 3);
	const char *b[] = {block(0, d0, ""), NULL};
	run(&r, "probe=blk.fill blk.seed=5 blk.count=300", b, 0, sandbox);
	check_probe_ok(&r, how(sandbox, "blk.fill"));
	struct blk_mirror m;
	blk_mirror_build(&m, r.out, base);
	cr_assert(m.writes > 0 && m.discards > 0 && m.zeroes > 0,
	          "expected writes, discards and write-zeroes: %u/%u/%u", m.writes, m.discards,
	          m.zeroes);
	uint64_t first = 0, zd = 0;
	uint64_t bad = blk_mirror_compare(&m, d0, &first, &zd);
	blk_mirror_free(&m);
	cr_assert_eq(bad, 0, "%s: %lu sectors differ from the mirror, the first is %lu",
	             how(sandbox, "blk.fill"), (unsigned long)bad, (unsigned long)first);
	harness_result_free(&r);
}

Test(e2e_ringvm_blk, fill_matches_mirror)
{
	BOTH_WAYS(fill);
}

/* ---- blk.bench ---- */

static void bench_one(bool sandbox, const char *rw, unsigned qd, unsigned queues)
{
	struct harness_result r;
	blk_image_create(d0, DISK_SIZE, 0);
	char opts[64], p[256];
	snprintf(opts, sizeof(opts), ",queues=%u", queues);
	const char *b[] = {block(0, d0, opts), NULL};
	snprintf(p, sizeof(p),
	         "probe=timer,blk.bench blk.rw=%s blk.bs=4096 blk.qd=%u blk.queues=%u", rw, qd,
	         queues);
	run(&r, p, b, queues, sandbox);
	check_probe_ok(&r, how(sandbox, "blk.bench"));
	struct blk_bench_result x;
	check_blk_bench(r.out, rw, 4096, qd, queues, &x);
	cr_log_info("%s %s qd=%u queues=%u: %lu IOPS, latency p50 %.1f p99 %.1f µs",
	            how(sandbox, "blk.bench"), rw, qd, queues, (unsigned long)x.iops, x.lat_p50_us,
	            x.lat_p99_us);
	harness_result_free(&r);
}

static void bench(bool sandbox)
{
	bench_one(sandbox, "randread", 1, 1);
	bench_one(sandbox, "randread", 32, 1);
	bench_one(sandbox, "randwrite", 16, 2);
}

Test(e2e_ringvm_blk, bench)
{
	BOTH_WAYS(bench);
}

/* ---- hostile.blk ---- */

static void hostile(bool sandbox)
{
	struct harness_result r;
	blk_image_create(d0, DISK_SIZE, 0);
	blk_image_create(d1, RO_SIZE, 7);
	uint64_t ro_hash = blk_file_hash(d1);
	const char *b[] = {block(0, d0, ",id=" DISK_ID), block(1, d1, ",ro"), NULL};
	run(&r, "probe=hostile.blk,blk.verify", b, 0, sandbox);
	check_probe_ok(&r, how(sandbox, "hostile.blk"));
	check_hostile_blk(r.out, "", true, true);
	check_blk_verify(r.out, &verify_expect); /* and the devices are fine afterwards */
	cr_assert_eq(blk_file_size(d0), DISK_SIZE, "disk 0 changed size");
	cr_assert_eq(blk_file_hash(d1), ro_hash, "the read-only image changed");
	harness_result_free(&r);
}

Test(e2e_ringvm_blk, hostile_all_cases_strict)
{
	BOTH_WAYS(hostile);
}

/* ---- lifetime ---- */

/*
 * The same image in runs straight after one another: a finished ringvm must
 * have released the image (its lock) when it exits — its device processes
 * included — or the next run cannot open it.
 */
static void back_to_back(bool sandbox)
{
	blk_image_create(d0, DISK_SIZE, 0);
	const char *b[] = {block(0, d0, ""), NULL};
	for (unsigned i = 0; i < 5; i++) {
		struct harness_result r;
		run(&r, "probe=blk.verify blk.ro_disk=none", b, 0, sandbox);
		char what[64];
		snprintf(what, sizeof(what), "blk.verify, run %u of 5 on the same image", i + 1);
		check_probe_ok(&r, how(sandbox, what));
		harness_result_free(&r);
	}
}

Test(e2e_ringvm_blk, back_to_back_runs_same_image)
{
	BOTH_WAYS(back_to_back);
}
