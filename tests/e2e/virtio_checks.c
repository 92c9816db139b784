/* Shared assertions on the probe's virtio tests (see virtio_checks.h). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tests/e2e/harness.h"
#include "tests/e2e/virtio_checks.h"

#define VIRTIO_F_VERSION_1 (1ull << 32)

/* Keep in the order of cases[] in tests/guest/test_hostile_vq.c. */
const char *const hostile_vq_cases[] = {
    "loop-self",
    "loop-2cycle",
    "loop-late",
    "next-oob",
    "head-oob",
    "addr-wrap",
    "addr-cross-ram-end",
    "addr-past-ram",
    "addr-pci-hole",
    "addr-own-bar",
    "ring-desc-past-ram",
    "ring-avail-past-ram",
    "ring-used-past-ram",
    "ring-misaligned",
    "len-4g",
    "zero-len-desc",
    "zero-len-only",
    "readable-only",
    "read-after-write",
    "indirect-not-negotiated",
    "indirect-with-next",
    "indirect-nested",
    "indirect-len-odd",
    "indirect-len-huge",
    "indirect-len-zero",
    "indirect-chain-too-long",
    "qsize-zero",
    "qsize-npot",
    "qsize-too-big",
    "notify-bad-queue",
    "notify-disabled-queue",
    "avail-jump",
    "head-twice",
    "rewrite-after-kick",
    "driver-ok-before-features-ok",
    "features-after-features-ok",
    "reset-inflight",
};
const unsigned hostile_vq_ncases = sizeof(hostile_vq_cases) / sizeof(hostile_vq_cases[0]);

static uint64_t u64(const char *l, const char *key, const char *out)
{
	uint64_t v = 0;
	cr_assert(probe_get_u64(l, key, &v), "no numeric %s= in: %.300s\n--- output:\n%s", key, l,
	          out);
	return v;
}

static void expect(const char *l, const char *key, const char *want, const char *out)
{
	char buf[256];
	cr_assert(probe_get(l, key, buf, sizeof(buf)), "no %s= in: %.300s\n--- output:\n%s", key, l,
	          out);
	cr_assert(strcmp(buf, want) == 0, "%s=%s, expected %s in: %.300s\n--- output:\n%s", key,
	          buf, want, l, out);
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

void check_rng(const char *out, unsigned reads, unsigned len)
{
	const char *l = line_with_key(out, "rng", "bytes");
	cr_assert(u64(l, "features", out) & VIRTIO_F_VERSION_1, "VERSION_1 not negotiated: %s", l);
	cr_assert_eq(u64(l, "reads", out), reads, "reads: %s", l);
	uint64_t bytes = u64(l, "bytes", out);
	cr_assert(bytes >= reads && bytes <= (uint64_t)reads * len, "bytes=%lu for %u x %u: %s",
	          (unsigned long)bytes, reads, len, l);
	if (u64(l, "sampled", out) >= 64)
		cr_assert_geq(u64(l, "distinct", out), 16, "too few distinct byte values: %s", l);
	cr_assert_geq(u64(l, "irqs", out), reads, "fewer MSI-X interrupts than requests: %s", l);
	cr_assert_eq(u64(l, "missed_irqs", out), 0, "completions without interrupt: %s", l);
}

void check_virtio_cfg(const char *out, bool strict)
{
	const char *l = line_with_key(out, "virtio-cfg", "device_id");
	cr_assert_eq(u64(l, "device_id", out), 4, "not virtio-rng: %s", l);
	uint64_t nq = u64(l, "num_queues", out), qmax = u64(l, "queue_max", out);
	cr_assert(nq >= 1 && qmax >= 1 && (qmax & (qmax - 1)) == 0, "queues: %s", l);
	cr_assert_geq(u64(l, "msix_entries", out), 2, "MSI-X table too small: %s", l);
	cr_assert(u64(l, "offered", out) & VIRTIO_F_VERSION_1, "VERSION_1 not offered: %s", l);

	const char *f = line_with_key(out, "virtio-cfg.features", "offered");
	expect(f, "version_1", "1", out);
	expect(f, "valid_features_ok", "1", out);
	expect(f, "readback", "0x100000000", out);
	if (strict)
		expect(f, "unoffered_features_ok", "0", out);

	const char *r = line_with_key(out, "virtio-cfg.reset", "status_after");
	expect(r, "before", "ok", out);
	expect(r, "status_after", "0x0", out);
	expect(r, "queue_enable", "0", out);
	expect(r, "after", "ok", out);

	const char *a = line_with_key(out, "virtio-cfg.access", "num_queues16");
	cr_assert_eq(u64(a, "num_queues16", out), nq, "num_queues changed: %s", a);
	cr_assert_eq(u64(a, "qsize16", out), qmax > 256 ? 256 : qmax, "queue_size: %s", a);
	cr_assert_not_null(line_with_key(out, "virtio-cfg.devcfg", "len"));
	const char *after = line_with_key(out, "virtio-cfg.after", "request");
	expect(after, "request", "ok", out);
	expect(line_with_key(out, "virtio-cfg", "result"), "result", "ok", out);
}

static bool in_list(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *p = list; p && *p;) {
		size_t len = strcspn(p, ",");
		if (len == n && strncmp(p, name, n) == 0)
			return true;
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

void check_hostile_vq(const char *out, const char *skip, const char *garbage_status_ok)
{
	unsigned want_skipped = 0;
	char res[64];
	for (unsigned i = 0; i < hostile_vq_ncases; i++) {
		const char *name = hostile_vq_cases[i];
		const char *l = probe_line_with(out, "hostile.vq", "case", name);
		cr_assert_not_null(l, "no result line for hostile.vq case %s\n--- output:\n%s",
		                   name, out);
		cr_assert(probe_get(l, "result", res, sizeof(res)), "no result= in: %.300s", l);
		if (in_list(skip, name)) {
			cr_assert_str_eq(res, "skipped", "case %s was not skipped: %s", name, l);
			want_skipped++;
			continue;
		}
		cr_assert_str_neq(res, "skipped", "case %s skipped unasked: %s", name, l);
		expect(l, "pass", "1", out);
		if (strcmp(res, "needs-reset") == 0 && !in_list(garbage_status_ok, name))
			cr_assert_geq(u64(l, "cfg_irqs", out), 1,
			              "NEEDS_RESET without a config interrupt: %s", l);
	}
	cr_assert_eq(probe_count(out, "hostile.vq"), hostile_vq_ncases + 1,
	             "expected %u case lines and a summary\n--- output:\n%s", hostile_vq_ncases,
	             out);
	const char *s = line_with_key(out, "hostile.vq", "passed");
	cr_assert_eq(u64(s, "failed", out), 0, "summary: %s", s);
	cr_assert_eq(u64(s, "skipped", out), want_skipped, "summary: %s", s);
	cr_assert_eq(u64(s, "passed", out), hostile_vq_ncases - want_skipped, "summary: %s", s);
}
