/*
 * Assertions on the probe guest's virtio-blk tests (blk.verify, blk.copy,
 * blk.fill, blk.bench, hostile.blk) and the host-side helpers they need
 * (disk images, byte-for-byte compares, the blk.fill mirror), shared by the
 * QEMU and ringvm end-to-end tests so both VMMs' virtio-blk devices are held
 * to the same expectations. VMM-specific behaviour (QEMU's per-case
 * hostile.blk results) stays in the test files.
 */
#ifndef RINGVM_TESTS_E2E_BLK_CHECKS_H
#define RINGVM_TESTS_E2E_BLK_CHECKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BLK_CHECK_SECTOR 512u

/* ---- images ---- */

/*
 * Creates path as a size-byte raw image — a new file (inode) even when path
 * existed: zeros when seed is 0 (a sparse file), else a deterministic
 * pseudo-random pattern from seed. Asserts on any I/O error.
 */
void blk_image_create(const char *path, uint64_t size, uint64_t seed);
/* A fresh directory under $TMPDIR (or /tmp), path written to dir (≥ 64 bytes). */
void blk_tmpdir(char *dir, size_t len);
/* Removes every regular file in dir, then dir. */
void blk_tmpdir_remove(const char *dir);
/* The size of a file (asserts it exists). */
uint64_t blk_file_size(const char *path);
/*
 * Compares two files byte for byte: true when equal (same size, same bytes);
 * else *first_diff is the first differing offset (or the shorter size).
 */
bool blk_files_equal(const char *a, const char *b, uint64_t *first_diff);
/* FNV-1a over a file's bytes (to show a read-only image stayed the same). */
uint64_t blk_file_hash(const char *path);

/* ---- blk.verify ---- */

struct blk_verify_expect {
	const char *id;   /* the GET_ID string expected, or NULL for any */
	bool ro_check;    /* the read-only check must have run (a read-only disk attached) */
	bool flush;       /* FLUSH offered: its check must have run */
	bool discard;     /* DISCARD offered: its check must have run */
	bool write_zeroes; /* WRITE_ZEROES offered: its checks must have run */
	/* Strict (ringvm): a DISCARD to the read-only disk must fail too (QEMU says ok). */
	bool strict;
};

/*
 * blk.verify: every check line pass=1 (skipped ones only where e allows),
 * the checks that must run did, the id as expected, the summary failed=0,
 * every completion with its interrupt.
 */
void check_blk_verify(const char *out, const struct blk_verify_expect *e);
/*
 * The image blk.verify wrote (disk 0), read on the host: every rw-* region
 * holds its tags (first and last 8 bytes of each sector), write-zeroes
 * regions are all zero, each discarded sector holds its tags or is all zero.
 */
void check_blk_verify_image(const char *out, const char *image);

/* ---- blk.copy ---- */

/* blk.copy: result=ok, bytes == expect_bytes, a rate and no missed interrupts. */
void check_blk_copy(const char *out, uint64_t expect_bytes);

/* ---- blk.fill and its mirror ---- */

/*
 * The mirror of what blk.fill did: the image it started from with every
 * printed operation applied in order. Sectors discarded (and not written
 * since) keep the old data in `data` and are flagged in `discarded`: the
 * device may return either the old data or zeros there (virtio 1.2 §5.2.6.2
 * leaves a discarded range's content to the device).
 */
struct blk_mirror {
	uint64_t sectors;
	uint8_t *data;      /* sectors × 512 bytes */
	uint8_t *discarded; /* one flag per sector */
	unsigned ops, writes, discards, zeroes;
	uint64_t pattern_base, pattern_step, pattern_bytes;
};

/*
 * Builds the mirror from base (the image before blk.fill; NULL: zeros of the
 * capacity blk.fill printed) and the `PROBE blk.fill ...` lines of out.
 * Asserts the output is complete: a start line, ops n=0.. in order, each
 * status=ok, and a summary with result=ok agreeing on the count.
 */
void blk_mirror_build(struct blk_mirror *m, const char *out, const char *base);
/*
 * Compares image with the mirror: returns the number of sectors that differ
 * (a discarded sector may be all zeros or the old data); *first is the first
 * such sector, *zeroed_discards how many discarded sectors read as zeros.
 */
uint64_t blk_mirror_compare(const struct blk_mirror *m, const char *image, uint64_t *first,
                            uint64_t *zeroed_discards);
/*
 * Settles each discarded sector (flagged, not written since) to what image
 * (raw) holds there when that is all zeros — the device's choice — and
 * clears every flag, so the mirror is then exact (for qemu-img compare).
 * Returns how many sectors were settled to zeros. Call blk_mirror_compare
 * first: a sector that is neither old data nor zeros is left as it was.
 */
uint64_t blk_mirror_settle(struct blk_mirror *m, const char *image);
/* Writes the mirror's bytes to path (a raw image, e.g. for qemu-img compare). */
void blk_mirror_write(const struct blk_mirror *m, const char *path);
void blk_mirror_free(struct blk_mirror *m);

/* ---- blk.bench ---- */

struct blk_bench_result {
	uint64_t iops, requests;
	double mbps, lat_mean_us, lat_p50_us, lat_p99_us, lat_max_us;
};
/*
 * blk.bench: result=ok, the parameters echoed, requests > 0 and no errors,
 * iops > 0 and consistent with requests / elapsed, mbps = iops × bs, latency
 * mean/p50/p99 > 0 and p50 ≤ p99 ≤ max, no completion without interrupt.
 * Fills *r when not NULL.
 */
void check_blk_bench(const char *out, const char *rw, unsigned bs, unsigned qd, unsigned queues,
                     struct blk_bench_result *r);

/* ---- hostile.blk ---- */

/* The guest's hostile.blk cases, in the order it runs them. */
extern const char *const hostile_blk_cases[];
extern const unsigned hostile_blk_ncases;

/*
 * hostile.blk: a result line for every case (result=skipped exactly for
 * those in the comma-separated skip list, and — when !have_ro — the cases
 * that need a read-only disk, reason=no-ro-disk), each other case pass=1,
 * every needs-reset result came with a config interrupt, the summary
 * agrees. strict (ringvm): each case's result is one hostile-inputs.md
 * allows (an error status or NEEDS_RESET for malformed requests, ok for the
 * valid ones, never no-completion) — see the table in blk_checks.c.
 */
void check_hostile_blk(const char *out, const char *skip, bool have_ro, bool strict);
/* Whether the strict table allows result for case name (false for an unknown case). */
bool hostile_blk_strict_allows(const char *name, const char *result);

#endif
