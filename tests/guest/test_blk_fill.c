/*
 * `blk.fill`: writes a deterministic pattern to disk blk.disk (0) and prints
 * every operation, so a host-side script (tests/e2e/blk_mirror.py, or the C
 * mirror in tests/e2e/blk_checks.c) can build the same content in a raw
 * mirror and compare it with the device's image.
 *
 * blk.count operations (default 200), one at a time (so their order on the
 * disk is the printed order), each with a random sector and length from a
 * xorshift64* PRNG seeded by blk.seed: a share blk.discard_pct (default 10)
 * of DISCARDs, blk.zeroes_pct (default 10) of WRITE_ZEROES (half of them with
 * the UNMAP flag), the rest writes. Writes all come from one pattern buffer
 * of blk.max_kib KiB (default 64), filled once: 8-byte little-endian word i
 * is base + i × step (printed); each write first stores its tag in word 0.
 * Lengths are 1..max_kib KiB in whole sectors (half the operations are at
 * most 4 KiB); 7 in 8 operations land in the first blk.span_mib MiB (default
 * 8), so they overlap, the rest anywhere, some ending at the last sector.
 */
#include "blk.h"

#define TIMEOUT_US 5000000

const char *test_blk_fill(void)
{
	const char *why;
	unsigned disk = (unsigned)probe_opt_u64("blk.disk", 0);
	uint64_t seed = probe_opt_u64("blk.seed", 1);
	uint64_t count = probe_opt_u64("blk.count", 200);
	uint64_t discard_pct = probe_opt_u64("blk.discard_pct", 10);
	uint64_t zeroes_pct = probe_opt_u64("blk.zeroes_pct", 10);
	uint64_t max_kib = probe_opt_u64("blk.max_kib", 64);
	uint64_t span_mib = probe_opt_u64("blk.span_mib", 8);
	if (discard_pct + zeroes_pct > 100 || max_kib < 1 || max_kib > 4096 || span_mib < 1) {
		probe_printf("PROBE blk.fill error=bad-options\n");
		return "bad-options";
	}
	blk_ram_reset();
	struct blk_open_opts o = {.max_segs = BLK_MAX_SEGS, .max_slots = 2};
	struct blk_dev *b = blk_open(disk, &o, &why);
	if (!b) {
		probe_printf("PROBE blk.fill error=%s disk=%u\n", why, disk);
		return why;
	}
	blk_print_dev("blk.fill", b);
	struct blk_queue *q = &b->q[0];
	const struct blk_config *cfg = &b->cfg;
	uint64_t cap = cfg->capacity;
	uint64_t max_sec = max_kib * 1024 / BLK_SECTOR;
	if (max_sec * BLK_SECTOR > blk_max_transfer(b))
		max_sec = blk_max_transfer(b) / BLK_SECTOR;
	uint64_t span = span_mib << 11;
	if (span > cap)
		span = cap;
	bool can_discard = blk_has(b, VIRTIO_BLK_F_DISCARD) && cfg->max_discard_sectors;
	bool can_zero = blk_has(b, VIRTIO_BLK_F_WRITE_ZEROES) && cfg->max_write_zeroes_sectors;

	uint64_t *pat = (uint64_t *)blk_ram_alloc(max_kib * 1024, 4096);
	uint64_t *segbuf = (uint64_t *)blk_ram_alloc(4096, 4096);
	if (!pat || !segbuf || cap < max_sec || !max_sec || blk_has(b, VIRTIO_BLK_F_RO)) {
		const char *r = !pat || !segbuf ? "no-ram" :
		                blk_has(b, VIRTIO_BLK_F_RO) ? "read-only" : "disk-too-small";
		probe_printf("PROBE blk.fill error=%s\n", r);
		blk_close(b);
		return r;
	}
	uint64_t base = 0x9e3779b97f4a7c15ull * (seed + 1), step = 0xd1b54a32d192ed03ull;
	uint64_t w = base;
	for (uint64_t i = 0; i < max_kib * 128; i++, w += step)
		pat[i] = w;
	probe_printf("PROBE blk.fill start disk=%u seed=%lu count=%lu pattern_base=0x%lx "
	             "pattern_step=0x%lx pattern_bytes=%lu capacity=%lu discard=%u zeroes=%u\n",
	             disk, seed, count, base, step, max_kib * 1024, cap, can_discard, can_zero);

	uint64_t rs = seed * 0x2545f4914f6cdd1dull + 0x632be59bd9b4e019ull;
	if (!rs)
		rs = 1;
	uint64_t t0 = rdtsc(), bytes = 0;
	unsigned writes = 0, discards = 0, zeroes = 0, errors = 0;
	const char *fail = NULL;
	struct blk_seg segs[BLK_MAX_SEGS];
	for (uint64_t n = 0; n < count && !fail; n++) {
		uint64_t r = blk_rand(&rs);
		unsigned pct = (unsigned)(r % 100);
		const char *kind = "write";
		uint32_t type = VIRTIO_BLK_T_OUT;
		uint64_t lim = max_sec;
		if (pct < discard_pct && can_discard) {
			kind = "discard";
			type = VIRTIO_BLK_T_DISCARD;
			if (lim > cfg->max_discard_sectors)
				lim = cfg->max_discard_sectors;
		} else if (pct >= discard_pct && pct < discard_pct + zeroes_pct && can_zero) {
			kind = "zeroes";
			type = VIRTIO_BLK_T_WRITE_ZEROES;
			if (lim > cfg->max_write_zeroes_sectors)
				lim = cfg->max_write_zeroes_sectors;
		}
		r = blk_rand(&rs);
		uint64_t len = (r & 1) ? 1 + (r >> 8) % (lim < 8 ? lim : 8) : 1 + (r >> 8) % lim;
		r = blk_rand(&rs);
		unsigned where = (unsigned)(r & 15);
		uint64_t sector;
		if (where == 0)
			sector = cap - len; /* ends at the last sector */
		else if (where == 1)
			sector = (r >> 8) % (cap - len + 1);
		else
			sector = (r >> 8) % (span >= len ? span - len + 1 : 1);
		uint64_t tag = 0;
		uint32_t flags = 0;
		unsigned ns;
		bool dev_writes = false;
		if (type == VIRTIO_BLK_T_OUT) {
			tag = seed << 32 | n;
			pat[0] = tag;
			ns = blk_split(b, (uint64_t)pat, len * BLK_SECTOR, segs, BLK_MAX_SEGS);
			writes++;
			bytes += len * BLK_SECTOR;
		} else {
			if (type == VIRTIO_BLK_T_WRITE_ZEROES && (r & 16)) /* half with UNMAP */
				flags = VIRTIO_BLK_WZ_F_UNMAP;
			*(struct blk_dwz_seg *)segbuf = (struct blk_dwz_seg){sector, (uint32_t)len, flags};
			segs[0] = (struct blk_seg){(uint64_t)segbuf, sizeof(struct blk_dwz_seg)};
			ns = 1;
			if (type == VIRTIO_BLK_T_DISCARD)
				discards++;
			else
				zeroes++;
		}
		uint8_t st = 0;
		int wr = ns ? blk_sync(q, type, type == VIRTIO_BLK_T_OUT ? sector : 0, segs, ns,
		                       dev_writes, TIMEOUT_US, &st, NULL)
		            : VQ_TIMEOUT;
		const char *sw = wr == VQ_NEEDS_RESET ? "needs-reset" :
		                 wr != VQ_USED      ? "timeout" :
		                                      blk_status_word(st);
		probe_printf("PROBE blk.fill.op n=%lu kind=%s sector=%lu len=%lu tag=0x%lx", n, kind,
		             sector, len * BLK_SECTOR, tag);
		if (type == VIRTIO_BLK_T_WRITE_ZEROES)
			probe_printf(" unmap=%u", flags);
		if (sw)
			probe_printf(" status=%s\n", sw);
		else
			probe_printf(" status=0x%x\n", st);
		if (wr != VQ_USED || st != VIRTIO_BLK_S_OK) {
			errors++;
			if (wr != VQ_USED)
				fail = wr == VQ_NEEDS_RESET ? "needs-reset" : "timeout";
		}
	}
	uint8_t st = VIRTIO_BLK_S_OK;
	if (!fail && blk_has(b, VIRTIO_BLK_F_FLUSH)) {
		int wr = blk_sync(q, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, false, TIMEOUT_US, &st, NULL);
		if (wr != VQ_USED || st != VIRTIO_BLK_S_OK)
			fail = "flush-failed";
	}
	if (!fail && errors)
		fail = "request-failed";
	probe_printf("PROBE blk.fill ops=%u writes=%u discards=%u zeroes=%u bytes=%lu errors=%u "
	             "ms=%lu result=%s\n",
	             writes + discards + zeroes, writes, discards, zeroes, bytes, errors,
	             probe_us_since(t0) / 1000, fail ? fail : "ok");
	blk_close(b);
	return fail;
}
