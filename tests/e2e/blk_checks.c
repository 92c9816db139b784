/* Shared assertions and host-side helpers for the probe's virtio-blk tests (see blk_checks.h). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/e2e/blk_checks.h"
#include "tests/e2e/harness.h"

#define SECTOR BLK_CHECK_SECTOR

/* ---- small helpers ---- */

static uint64_t u64(const char *l, const char *key, const char *out)
{
	uint64_t v = 0;
	cr_assert(probe_get_u64(l, key, &v), "no numeric %s= in: %.400s\n--- output:\n%s", key, l,
	          out);
	return v;
}

static double dbl(const char *l, const char *key, const char *out)
{
	char buf[64], *end;
	cr_assert(probe_get(l, key, buf, sizeof(buf)), "no %s= in: %.400s\n--- output:\n%s", key, l,
	          out);
	double v = strtod(buf, &end);
	cr_assert(end != buf && *end == '\0', "%s=%s is not a number in: %.400s", key, buf, l);
	return v;
}

static void expect(const char *l, const char *key, const char *want, const char *out)
{
	char buf[256];
	cr_assert(probe_get(l, key, buf, sizeof(buf)), "no %s= in: %.400s\n--- output:\n%s", key, l,
	          out);
	cr_assert(strcmp(buf, want) == 0, "%s=%s, expected %s in: %.400s\n--- output:\n%s", key,
	          buf, want, l, out);
}

static bool has(const char *l, const char *key, const char *value)
{
	char buf[256];
	return probe_get(l, key, buf, sizeof(buf)) && strcmp(buf, value) == 0;
}

/* The first `PROBE <test>` line that has key (any value). */
static const char *line_with_key(const char *out, const char *test, const char *key)
{
	char tmp[256];
	const char *l;
	for (unsigned i = 0; (l = probe_line(out, test, i)); i++)
		if (probe_get(l, key, tmp, sizeof(tmp)))
			return l;
	cr_assert_fail("no `PROBE %s ... %s=` line\n--- output:\n%s", test, key, out);
	return NULL;
}

static bool in_list(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; p && *p;) {
		size_t len = strcspn(p, ",|");
		if (len == n && strncmp(p, name, n) == 0)
			return true;
		p += len;
		if (*p == ',' || *p == '|')
			p++;
	}
	return false;
}

/* ---- images ---- */

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

void blk_image_create(const char *path, uint64_t size, uint64_t seed)
{
	/* A new inode: nothing a previous run still holds (a lock) carries over. */
	if (unlink(path) != 0)
		cr_assert_eq(errno, ENOENT, "unlink %s: %s", path, strerror(errno));
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	cr_assert(ftruncate(fd, (off_t)size) == 0, "ftruncate %s: %s", path, strerror(errno));
	if (seed) {
		enum { CHUNK = 1 << 20 };
		uint64_t *buf = malloc(CHUNK);
		cr_assert_not_null(buf);
		uint64_t s = seed * 0x9E3779B97F4A7C15ull | 1;
		for (uint64_t off = 0; off < size; off += CHUNK) {
			size_t n = size - off < CHUNK ? (size_t)(size - off) : CHUNK;
			for (size_t i = 0; i < n / 8; i++)
				buf[i] = xorshift(&s);
			cr_assert(pwrite(fd, buf, n, (off_t)off) == (ssize_t)n, "pwrite %s: %s", path,
			          strerror(errno));
		}
		free(buf);
	}
	cr_assert(close(fd) == 0);
}

void blk_tmpdir(char *dir, size_t len)
{
	const char *t = getenv("TMPDIR");
	snprintf(dir, len, "%s/ringvm-blk-XXXXXX", t && *t ? t : "/tmp");
	cr_assert_not_null(mkdtemp(dir), "mkdtemp %s: %s", dir, strerror(errno));
}

void blk_tmpdir_remove(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	char p[4096];
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		unlink(p);
	}
	closedir(d);
	rmdir(dir);
}

uint64_t blk_file_size(const char *path)
{
	struct stat st;
	cr_assert(stat(path, &st) == 0, "stat %s: %s", path, strerror(errno));
	return (uint64_t)st.st_size;
}

/* Reads all of path into a malloc'd buffer. */
static uint8_t *slurp(const char *path, uint64_t *size)
{
	*size = blk_file_size(path);
	uint8_t *p = malloc(*size ? *size : 1);
	cr_assert_not_null(p);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	uint64_t got = 0;
	while (got < *size) {
		ssize_t n = pread(fd, p + got, *size - got, (off_t)got);
		cr_assert(n > 0, "read %s: %s", path, n < 0 ? strerror(errno) : "short file");
		got += (uint64_t)n;
	}
	close(fd);
	return p;
}

bool blk_files_equal(const char *a, const char *b, uint64_t *first_diff)
{
	uint64_t na, nb;
	uint8_t *pa = slurp(a, &na), *pb = slurp(b, &nb);
	uint64_t n = na < nb ? na : nb;
	bool eq = na == nb && memcmp(pa, pb, n) == 0;
	if (!eq && first_diff) {
		uint64_t i = 0;
		while (i < n && pa[i] == pb[i])
			i++;
		*first_diff = i;
	}
	free(pa);
	free(pb);
	return eq;
}

uint64_t blk_file_hash(const char *path)
{
	uint64_t n;
	uint8_t *p = slurp(path, &n);
	uint64_t h = 0xcbf29ce484222325ull;
	for (uint64_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	free(p);
	return h;
}

/* ---- blk.verify ---- */

/* Check names blk.verify prints, and whether each must run (not be skipped). */
static const char *const verify_always[] = {
    "config",        "rw-first-4k", "rw-first",   "rw-unaligned", "rw-third",       "rw-two-segments",
    "rw-middle",     "rw-near-end", "rw-last",     "write-past-end", "read-past-end",
    "read-crossing-end", "get-id", "unknown-type", "irqs",
};

static const char *check_line(const char *out, const char *name)
{
	return probe_line_with(out, "blk.verify.check", "name", name);
}

void check_blk_verify(const char *out, const struct blk_verify_expect *e)
{
	const char *l;
	unsigned lines = 0, passed = 0, skipped = 0;
	for (unsigned i = 0; (l = probe_line(out, "blk.verify.check", i)); i++) {
		char name[64];
		cr_assert(probe_get(l, "name", name, sizeof(name)), "no name= in %.300s", l);
		lines++;
		if (has(l, "result", "skipped")) {
			skipped++;
			continue;
		}
		expect(l, "pass", "1", out);
		passed++;
	}
	for (unsigned i = 0; i < sizeof(verify_always) / sizeof(verify_always[0]); i++) {
		l = check_line(out, verify_always[i]);
		cr_assert_not_null(l, "no blk.verify check %s\n--- output:\n%s", verify_always[i], out);
		expect(l, "pass", "1", out);
	}
	struct {
		bool want;
		const char *name;
	} opt[] = {{e->flush, "flush"},
	           {e->write_zeroes, "write-zeroes"},
	           {e->write_zeroes, "write-zeroes-unmap"},
	           {e->discard, "discard"},
	           {e->ro_check, "read-only"}};
	for (unsigned i = 0; i < sizeof(opt) / sizeof(opt[0]); i++) {
		if (!opt[i].want)
			continue;
		l = check_line(out, opt[i].name);
		cr_assert_not_null(l, "no blk.verify check %s\n--- output:\n%s", opt[i].name, out);
		expect(l, "pass", "1", out);
	}
	if (e->ro_check) {
		l = check_line(out, "read-only");
		expect(l, "write", "ioerr", out);
		expect(l, "unchanged", "1", out);
		char st[32];
		if (e->strict && probe_get(l, "discard", st, sizeof(st)))
			cr_assert(strcmp(st, "ok") != 0,
			          "a DISCARD to the read-only disk succeeded: %.300s", l);
	}
	if (e->id) {
		l = line_with_key(out, "blk.verify", "id");
		expect(l, "id", e->id, out);
	}
	l = line_with_key(out, "blk.verify", "passed");
	cr_assert_eq(u64(l, "failed", out), 0, "summary: %s", l);
	cr_assert_eq(u64(l, "passed", out), passed, "summary disagrees with the lines: %s", l);
	cr_assert_eq(u64(l, "skipped", out), skipped, "summary disagrees with the lines: %s", l);
	cr_assert_eq(passed + skipped, lines);
	l = check_line(out, "irqs");
	cr_assert_eq(u64(l, "missed_irqs", out), 0, "completions without interrupt: %s", l);
	cr_assert_gt(u64(l, "irqs", out), 0, "no queue interrupt at all: %s", l);
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, 8);
	return v; /* x86-64 host */
}

static bool sector_zero(const uint8_t *p)
{
	for (unsigned i = 0; i < SECTOR; i++)
		if (p[i])
			return false;
	return true;
}

void check_blk_verify_image(const char *out, const char *image)
{
	uint64_t size;
	uint8_t *img = slurp(image, &size);
	const char *l;
	/* The regions in the order written: a sector belongs to the last one covering it. */
	enum { MAX_REGIONS = 32 };
	struct {
		const char *line;
		uint64_t sector, n;
	} reg[MAX_REGIONS];
	unsigned nreg = 0, regions = 0;
	for (unsigned i = 0; (l = probe_line(out, "blk.verify.check", i)); i++) {
		char name[64];
		cr_assert(probe_get(l, "name", name, sizeof(name)));
		uint64_t tmp;
		if (has(l, "result", "skipped") || !probe_get_u64(l, "sectors", &tmp))
			continue;
		cr_assert_lt(nreg, MAX_REGIONS);
		reg[nreg].line = l;
		reg[nreg].sector = u64(l, "sector", out);
		reg[nreg].n = u64(l, "sectors", out);
		nreg++;
	}
	for (unsigned r = 0; r < nreg; r++) {
		char name[64];
		l = reg[r].line;
		probe_get(l, "name", name, sizeof(name));
		bool rw = !strncmp(name, "rw-", 3), disc = !strcmp(name, "discard");
		bool zero = !strncmp(name, "write-zeroes", 12);
		if (!rw && !disc && !zero)
			continue;
		uint64_t sector = reg[r].sector, n = reg[r].n;
		uint64_t tag = zero ? 0 : u64(l, "tag", out);
		cr_assert((sector + n) * SECTOR <= size, "%s past the image end: %s", name, l);
		for (uint64_t s = sector; s < sector + n; s++) {
			bool later = false;
			for (unsigned q = r + 1; q < nreg; q++)
				later |= s >= reg[q].sector && s < reg[q].sector + reg[q].n;
			if (later)
				continue;
			const uint8_t *p = img + s * SECTOR;
			bool tagged = le64(p) == tag + s && le64(p + SECTOR - 8) == ~(tag + s);
			if (rw)
				cr_assert(tagged, "%s: sector %lu of the image lacks its tag 0x%lx: %s",
				          name, (unsigned long)s, (unsigned long)(tag + s), l);
			else if (zero)
				cr_assert(sector_zero(p), "%s: sector %lu of the image is not zero: %s",
				          name, (unsigned long)s, l);
			else
				cr_assert(tagged || sector_zero(p),
				          "discard: sector %lu is neither its old data nor zero: %s",
				          (unsigned long)s, l);
		}
		regions++;
	}
	free(img);
	cr_assert_geq(regions, 8, "only %u regions to check in the image\n--- output:\n%s", regions,
	              out);
}

/* ---- blk.copy ---- */

void check_blk_copy(const char *out, uint64_t expect_bytes)
{
	const char *l = line_with_key(out, "blk.copy", "bytes");
	expect(l, "result", "ok", out);
	cr_assert_eq(u64(l, "bytes", out), expect_bytes, "copied: %s", l);
	uint64_t chunk = u64(l, "chunk", out);
	cr_assert(chunk >= SECTOR && chunk % SECTOR == 0, "chunk: %s", l);
	cr_assert_geq(u64(l, "requests", out), 2 * ((expect_bytes + chunk - 1) / chunk),
	              "requests: %s", l);
	cr_assert_gt(dbl(l, "mbps", out), 0.0, "rate: %s", l);
	cr_assert_eq(u64(l, "missed_irqs", out), 0, "completions without interrupt: %s", l);
}

/* ---- blk.fill mirror ---- */

void blk_mirror_build(struct blk_mirror *m, const char *out, const char *base)
{
	memset(m, 0, sizeof(*m));
	const char *st = NULL, *l;
	for (unsigned i = 0; (l = probe_line(out, "blk.fill", i)); i++) {
		char tmp[64];
		if (probe_get(l, "pattern_base", tmp, sizeof(tmp))) {
			st = l;
			break;
		}
	}
	cr_assert_not_null(st, "no `PROBE blk.fill start` line\n--- output:\n%s", out);
	m->pattern_base = u64(st, "pattern_base", out);
	m->pattern_step = u64(st, "pattern_step", out);
	m->pattern_bytes = u64(st, "pattern_bytes", out);
	m->sectors = u64(st, "capacity", out);
	cr_assert(m->pattern_bytes >= 8 && m->pattern_bytes % 8 == 0, "pattern: %s", st);

	uint64_t bytes = m->sectors * SECTOR;
	if (base) {
		uint64_t size;
		m->data = slurp(base, &size);
		cr_assert_eq(size, bytes, "base image %s: %lu bytes, the disk has %lu", base,
		             (unsigned long)size, (unsigned long)bytes);
	} else {
		m->data = calloc(1, bytes);
		cr_assert_not_null(m->data);
	}
	m->discarded = calloc(1, m->sectors);
	cr_assert_not_null(m->discarded);

	uint64_t *pat = malloc(m->pattern_bytes);
	cr_assert_not_null(pat);
	uint64_t w = m->pattern_base;
	for (uint64_t i = 0; i < m->pattern_bytes / 8; i++, w += m->pattern_step)
		pat[i] = w;

	for (unsigned n = 0; (l = probe_line(out, "blk.fill.op", n)); n++) {
		char kind[16];
		cr_assert_eq(u64(l, "n", out), n, "operations out of order at: %s", l);
		cr_assert(probe_get(l, "kind", kind, sizeof(kind)), "no kind= in %s", l);
		expect(l, "status", "ok", out);
		uint64_t sector = u64(l, "sector", out), len = u64(l, "len", out);
		cr_assert(len && len % SECTOR == 0 && sector * SECTOR + len <= bytes &&
		              sector < m->sectors,
		          "bad range: %s", l);
		uint64_t ns = len / SECTOR;
		uint8_t *dst = m->data + sector * SECTOR;
		if (!strcmp(kind, "write")) {
			cr_assert(len <= m->pattern_bytes, "write longer than the pattern: %s", l);
			memcpy(dst, pat, len);
			uint64_t tag = u64(l, "tag", out);
			memcpy(dst, &tag, 8);
			memset(m->discarded + sector, 0, ns);
			m->writes++;
		} else if (!strcmp(kind, "zeroes")) {
			memset(dst, 0, len);
			memset(m->discarded + sector, 0, ns);
			m->zeroes++;
		} else if (!strcmp(kind, "discard")) {
			memset(m->discarded + sector, 1, ns); /* data: old or zero, both allowed */
			m->discards++;
		} else {
			cr_assert_fail("unknown kind %s in %s", kind, l);
		}
		m->ops++;
	}
	free(pat);
	l = line_with_key(out, "blk.fill", "ops");
	expect(l, "result", "ok", out);
	cr_assert_eq(u64(l, "ops", out), m->ops, "summary disagrees with the op lines: %s", l);
	cr_assert_eq(u64(l, "writes", out), m->writes, "summary: %s", l);
	cr_assert_eq(u64(l, "discards", out), m->discards, "summary: %s", l);
	cr_assert_eq(u64(l, "zeroes", out), m->zeroes, "summary: %s", l);
	cr_assert_eq(u64(l, "errors", out), 0, "summary: %s", l);
}

uint64_t blk_mirror_compare(const struct blk_mirror *m, const char *image, uint64_t *first,
                            uint64_t *zeroed_discards)
{
	uint64_t size, bad = 0, zd = 0;
	uint8_t *img = slurp(image, &size);
	cr_assert_eq(size, m->sectors * SECTOR, "image %s: %lu bytes, the mirror has %lu", image,
	             (unsigned long)size, (unsigned long)(m->sectors * SECTOR));
	*first = UINT64_MAX;
	for (uint64_t s = 0; s < m->sectors; s++) {
		const uint8_t *a = img + s * SECTOR, *b = m->data + s * SECTOR;
		if (!memcmp(a, b, SECTOR))
			continue;
		if (m->discarded[s] && sector_zero(a)) {
			zd++;
			continue;
		}
		if (*first == UINT64_MAX)
			*first = s;
		bad++;
	}
	free(img);
	if (zeroed_discards)
		*zeroed_discards = zd;
	return bad;
}

uint64_t blk_mirror_settle(struct blk_mirror *m, const char *image)
{
	uint64_t size, zeroed = 0;
	uint8_t *img = slurp(image, &size);
	cr_assert_eq(size, m->sectors * SECTOR, "image %s: %lu bytes, the mirror has %lu", image,
	             (unsigned long)size, (unsigned long)(m->sectors * SECTOR));
	for (uint64_t s = 0; s < m->sectors; s++) {
		if (m->discarded[s] && sector_zero(img + s * SECTOR) &&
		    !sector_zero(m->data + s * SECTOR)) {
			memset(m->data + s * SECTOR, 0, SECTOR);
			zeroed++;
		}
		m->discarded[s] = 0;
	}
	free(img);
	return zeroed;
}

void blk_mirror_write(const struct blk_mirror *m, const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	cr_assert(fd >= 0, "open %s: %s", path, strerror(errno));
	uint64_t n = m->sectors * SECTOR, done = 0;
	while (done < n) {
		ssize_t w = pwrite(fd, m->data + done, n - done, (off_t)done);
		cr_assert(w > 0, "write %s: %s", path, strerror(errno));
		done += (uint64_t)w;
	}
	close(fd);
}

void blk_mirror_free(struct blk_mirror *m)
{
	free(m->data);
	free(m->discarded);
	m->data = m->discarded = NULL;
}

/* ---- blk.bench ---- */

void check_blk_bench(const char *out, const char *rw, unsigned bs, unsigned qd, unsigned queues,
                     struct blk_bench_result *r)
{
	const char *l = line_with_key(out, "blk.bench", "iops");
	char num[32];
	expect(l, "result", "ok", out);
	expect(l, "rw", rw, out);
	snprintf(num, sizeof(num), "%u", bs);
	expect(l, "bs", num, out);
	snprintf(num, sizeof(num), "%u", qd);
	expect(l, "qd", num, out);
	snprintf(num, sizeof(num), "%u", queues);
	expect(l, "queues", num, out);
	struct blk_bench_result x = {
	    .iops = u64(l, "iops", out),
	    .requests = u64(l, "requests", out),
	    .mbps = dbl(l, "mbps", out),
	    .lat_mean_us = dbl(l, "lat_mean_us", out),
	    .lat_p50_us = dbl(l, "lat_p50_us", out),
	    .lat_p99_us = dbl(l, "lat_p99_us", out),
	    .lat_max_us = dbl(l, "lat_max_us", out),
	};
	cr_assert_gt(x.requests, 0, "no requests: %s", l);
	cr_assert_eq(u64(l, "errors", out), 0, "errors: %s", l);
	cr_assert_gt(x.iops, 0, "iops: %s", l);
	uint64_t ms = u64(l, "elapsed_ms", out);
	cr_assert_gt(ms, 0, "elapsed: %s", l);
	double iops = (double)x.requests * 1000.0 / (double)ms;
	cr_assert(x.iops > iops * 0.9 && x.iops < iops * 1.1 + 1, "iops=%lu vs %.0f from requests: %s",
	          (unsigned long)x.iops, iops, l);
	double mbps = (double)x.iops * bs / 1e6;
	cr_assert(x.mbps > mbps * 0.95 - 0.02 && x.mbps < mbps * 1.05 + 0.02,
	          "mbps=%.2f, iops × bs gives %.2f: %s", x.mbps, mbps, l);
	cr_assert(x.lat_mean_us > 0 && x.lat_p50_us > 0 && x.lat_p99_us > 0, "latency: %s", l);
	cr_assert(x.lat_p50_us <= x.lat_p99_us && x.lat_p99_us <= x.lat_max_us * 1.2 + 0.01,
	          "percentiles out of order: %s", l);
	cr_assert_eq(u64(l, "missed_irqs", out), 0, "completions without interrupt: %s", l);
	if (r)
		*r = x;
}

/* ---- hostile.blk ---- */

/*
 * Keep in the order of cases[] in tests/guest/test_hostile_blk.c. `strict`
 * lists the results a device held to hostile-inputs.md may give ('|'):
 * a malformed request gets an error status or DEVICE_NEEDS_RESET (`err`
 * stands for ioerr|unsupp|needs-reset), never ok and never silence; a valid
 * one gets ok. `completed` is a request returned without a status byte
 * written — right when the chain has no writable byte to write it into.
 */
static const struct {
	const char *name;
	bool ro; /* needs a read-only disk */
	const char *strict;
} hcases[] = {
    {"data-len-odd-write", false, "err"},
    {"data-len-odd-read", false, "err"},
    {"sector-overflow-read", false, "err"},
    {"sector-overflow-write", false, "err"},
    {"sector-huge-write", false, "err"},
    {"sector-past-capacity", false, "err"},
    {"len-crosses-end", false, "err"},
    /* The spec lets a device fill a short GET_ID buffer (QEMU does) or refuse it. */
    {"get-id-short", false, "ok|err"},
    {"get-id-no-data", false, "ok|err"},
    {"get-id-readable", false, "ok|err"},
    /* "The device MUST set the status to VIRTIO_BLK_S_UNSUPP" for unknown types. */
    {"type-unknown", false, "unsupp"},
    {"type-all-ones", false, "unsupp"},
    {"type-get-lifetime", false, "unsupp"},
    {"type-secure-erase", false, "unsupp"},
    {"write-ro", true, "ioerr"},
    {"discard-ro", true, "err"},
    {"zeroes-ro", true, "err"},
    {"flush-with-data", false, "err"},
    {"flush-with-in-data", false, "err"},
    {"flush-sector", false, "ok|err"},
    {"discard-many-segs", false, "err"},
    {"zeroes-many-segs", false, "err"},
    /* §5.2.6.2: unmap set on a DISCARD, or any unknown flag: UNSUPP. */
    {"discard-unmap-flag", false, "unsupp"},
    {"discard-bad-flags", false, "unsupp"},
    {"zeroes-bad-flags", false, "unsupp"},
    {"discard-past-capacity", false, "err"},
    {"zeroes-past-capacity", false, "err"},
    {"discard-overflow", false, "err"},
    {"zeroes-overflow", false, "err"},
    {"discard-too-many-sectors", false, "err"},
    {"zeroes-too-many-sectors", false, "err"},
    {"discard-seg-odd-len", false, "err"},
    {"discard-no-segment", false, "err"},
    {"header-write-only", false, "err"},
    {"header-short", false, "err"},
    {"header-split", false, "ok"},
    {"status-read-only", false, "needs-reset|completed"},
    {"status-in-data", false, "ok"},
    {"chain-header-only", false, "needs-reset|completed"},
    {"chain-status-only", false, "err"},
    /* A read or write whose data buffer has the wrong direction moves no data: 0 bytes is ok. */
    {"read-into-readable", false, "ok|err"},
    {"write-from-writable", false, "ok|err"},
};

const char *const hostile_blk_cases[] = {
    "data-len-odd-write",   "data-len-odd-read",     "sector-overflow-read",
    "sector-overflow-write", "sector-huge-write",    "sector-past-capacity",
    "len-crosses-end",      "get-id-short",          "get-id-no-data",
    "get-id-readable",      "type-unknown",          "type-all-ones",
    "type-get-lifetime",    "type-secure-erase",     "write-ro",
    "discard-ro",           "zeroes-ro",             "flush-with-data",
    "flush-with-in-data",   "flush-sector",          "discard-many-segs",
    "zeroes-many-segs",     "discard-unmap-flag",    "discard-bad-flags",
    "zeroes-bad-flags",     "discard-past-capacity", "zeroes-past-capacity",
    "discard-overflow",     "zeroes-overflow",       "discard-too-many-sectors",
    "zeroes-too-many-sectors", "discard-seg-odd-len", "discard-no-segment",
    "header-write-only",    "header-short",          "header-split",
    "status-read-only",     "status-in-data",        "chain-header-only",
    "chain-status-only",    "read-into-readable",    "write-from-writable",
};
const unsigned hostile_blk_ncases = sizeof(hostile_blk_cases) / sizeof(hostile_blk_cases[0]);
_Static_assert(sizeof(hostile_blk_cases) / sizeof(hostile_blk_cases[0]) ==
                   sizeof(hcases) / sizeof(hcases[0]),
               "hostile.blk case tables");

static bool strict_ok(const char *allowed, const char *result)
{
	if (in_list(allowed, result))
		return true;
	return in_list(allowed, "err") && (!strcmp(result, "ioerr") || !strcmp(result, "unsupp") ||
	                                   !strcmp(result, "needs-reset"));
}

bool hostile_blk_strict_allows(const char *name, const char *result)
{
	for (unsigned i = 0; i < hostile_blk_ncases; i++)
		if (!strcmp(hcases[i].name, name))
			return strict_ok(hcases[i].strict, result);
	return false;
}

void check_hostile_blk(const char *out, const char *skip, bool have_ro, bool strict)
{
	unsigned want_skipped = 0;
	char res[64];
	for (unsigned i = 0; i < hostile_blk_ncases; i++) {
		const char *name = hcases[i].name;
		cr_assert_str_eq(name, hostile_blk_cases[i]);
		const char *l = probe_line_with(out, "hostile.blk", "case", name);
		cr_assert_not_null(l, "no result line for hostile.blk case %s\n--- output:\n%s", name,
		                   out);
		cr_assert(probe_get(l, "result", res, sizeof(res)), "no result= in: %.300s", l);
		bool skip_ro = hcases[i].ro && !have_ro;
		if (in_list(skip, name) || skip_ro) {
			cr_assert_str_eq(res, "skipped", "case %s was not skipped: %s", name, l);
			if (skip_ro && !in_list(skip, name))
				expect(l, "reason", "no-ro-disk", out);
			want_skipped++;
			continue;
		}
		cr_assert_str_neq(res, "skipped", "case %s skipped unasked: %s", name, l);
		expect(l, "pass", "1", out);
		if (strcmp(res, "needs-reset") == 0)
			cr_assert_geq(u64(l, "cfg_irqs", out), 1,
			              "NEEDS_RESET without a config interrupt: %s", l);
		if (strict)
			cr_assert(strict_ok(hcases[i].strict, res),
			          "hostile.blk %s: result=%s, hostile-inputs.md allows %s: %s", name, res,
			          hcases[i].strict, l);
	}
	cr_assert_eq(probe_count(out, "hostile.blk"), hostile_blk_ncases + 1,
	             "expected %u case lines and a summary\n--- output:\n%s", hostile_blk_ncases,
	             out);
	const char *s = line_with_key(out, "hostile.blk", "passed");
	cr_assert_eq(u64(s, "failed", out), 0, "summary: %s", s);
	cr_assert_eq(u64(s, "skipped", out), want_skipped, "summary: %s", s);
	cr_assert_eq(u64(s, "passed", out), hostile_blk_ncases - want_skipped, "summary: %s", s);
}
