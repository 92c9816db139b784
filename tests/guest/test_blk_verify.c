/*
 * `blk.verify`: functional checks of virtio-blk on disk 0 (blk.disk), one
 * `PROBE blk.verify.check name=... pass=0|1` line each, then a summary.
 * Data is checked cheaply: each 512-byte sector written carries a tag in its
 * first and last 8 bytes (tag + sector, and its complement); only those words
 * are written by the guest and compared after a read back. The host can check
 * the same words in the image file from the printed sector/sectors/tag.
 * See tests/guest/README.md for the list of checks.
 */
#include "blk.h"

#define TIMEOUT_US 5000000
#define WORDS      (BLK_SECTOR / 8)

struct vctx {
	struct blk_dev *b;
	struct blk_queue *q;
	uint64_t *wbuf, *rbuf; /* 64 KiB each, in RAM above the probe */
	uint64_t cap;
	unsigned passed, failed, skipped;
	unsigned ntag;
	uint64_t nonce;
};

static void begin(const char *name)
{
	probe_printf("PROBE blk.verify.check name=%s", name);
}

static void end(struct vctx *c, bool pass)
{
	probe_printf(" pass=%u\n", pass);
	if (pass)
		c->passed++;
	else
		c->failed++;
}

static void skip(struct vctx *c, const char *name, const char *reason)
{
	probe_printf("PROBE blk.verify.check name=%s result=skipped reason=%s\n", name, reason);
	c->skipped++;
}

/* Prints " key=<status word or r>" for a request's outcome; true when it was `want`. */
static bool outcome(const char *key, int r, uint8_t st, uint8_t want)
{
	if (r == VQ_TIMEOUT) {
		probe_printf(" %s=timeout", key);
		return false;
	}
	if (r == VQ_NEEDS_RESET) {
		probe_printf(" %s=needs-reset", key);
		return false;
	}
	const char *w = blk_status_word(st);
	if (w)
		probe_printf(" %s=%s", key, w);
	else
		probe_printf(" %s=0x%x", key, st);
	return st == want;
}

static int io(struct vctx *c, uint32_t type, uint64_t sector, uint64_t *buf, uint32_t len,
              bool dev_writes, uint8_t *st)
{
	struct blk_seg s = {(uint64_t)buf, len};
	return blk_sync(c->q, type, sector, &s, len ? 1 : 0, dev_writes, TIMEOUT_US, st, NULL);
}

static void tag_sectors(uint64_t *buf, uint64_t sector, unsigned n, uint64_t tag)
{
	for (unsigned k = 0; k < n; k++) {
		buf[k * WORDS] = tag + sector + k;
		buf[k * WORDS + WORDS - 1] = ~(tag + sector + k);
	}
}

static void clear_tags(uint64_t *buf, unsigned n)
{
	for (unsigned k = 0; k < n; k++)
		buf[k * WORDS] = buf[k * WORDS + WORDS - 1] = 0;
}

/* Sectors whose tag words match: all of them → n. */
static unsigned tags_ok(const uint64_t *buf, uint64_t sector, unsigned n, uint64_t tag)
{
	unsigned ok = 0;
	for (unsigned k = 0; k < n; k++)
		ok += buf[k * WORDS] == tag + sector + k &&
		      buf[k * WORDS + WORDS - 1] == ~(tag + sector + k);
	return ok;
}

static unsigned zero_sectors(const uint64_t *buf, unsigned n)
{
	unsigned z = 0;
	for (unsigned k = 0; k < n; k++)
		z += buf[k * WORDS] == 0 && buf[k * WORDS + WORDS - 1] == 0;
	return z;
}

static uint64_t next_tag(struct vctx *c)
{
	return c->nonce + ((uint64_t)++c->ntag << 40);
}

/* Write n tagged sectors (nseg segments), read them back, compare the tags. */
static void rw_check(struct vctx *c, const char *name, uint64_t sector, unsigned n, unsigned nseg)
{
	uint64_t tag = next_tag(c);
	tag_sectors(c->wbuf, sector, n, tag);
	clear_tags(c->rbuf, n);
	begin(name);
	probe_printf(" sector=%lu sectors=%u segs=%u tag=0x%lx", sector, n, nseg, tag);
	uint8_t st = 0;
	struct blk_seg segs[2];
	uint32_t len = n * BLK_SECTOR;
	segs[0] = (struct blk_seg){(uint64_t)c->wbuf, nseg == 2 ? len / 2 : len};
	segs[1] = (struct blk_seg){(uint64_t)c->wbuf + len / 2, len / 2};
	int r = blk_sync(c->q, VIRTIO_BLK_T_OUT, sector, segs, nseg, false, TIMEOUT_US, &st, NULL);
	bool pass = outcome("write", r, st, VIRTIO_BLK_S_OK);
	r = io(c, VIRTIO_BLK_T_IN, sector, c->rbuf, len, true, &st);
	pass &= outcome("read", r, st, VIRTIO_BLK_S_OK);
	unsigned good = tags_ok(c->rbuf, sector, n, tag);
	probe_printf(" data=%s", good == n ? "ok" : "mismatch");
	end(c, pass && good == n);
}

/* Tagged write, then WRITE_ZEROES (flags), then every sector must read as zero. */
static void zeroes_check(struct vctx *c, const char *name, uint64_t sector, unsigned n,
                         uint32_t flags)
{
	uint64_t tag = next_tag(c);
	tag_sectors(c->wbuf, sector, n, tag);
	struct blk_dwz_seg *seg = (struct blk_dwz_seg *)(c->wbuf + 4096);
	*seg = (struct blk_dwz_seg){sector, n, flags};
	begin(name);
	probe_printf(" sector=%lu sectors=%u flags=%u", sector, n, flags);
	uint8_t st = 0;
	int r = io(c, VIRTIO_BLK_T_OUT, sector, c->wbuf, n * BLK_SECTOR, false, &st);
	bool pass = outcome("write", r, st, VIRTIO_BLK_S_OK);
	r = io(c, VIRTIO_BLK_T_WRITE_ZEROES, 0, (uint64_t *)seg, sizeof(*seg), false, &st);
	pass &= outcome("zeroes", r, st, VIRTIO_BLK_S_OK);
	for (unsigned k = 0; k < n; k++)
		c->rbuf[k * WORDS] = c->rbuf[k * WORDS + WORDS - 1] = ~0ull;
	r = io(c, VIRTIO_BLK_T_IN, sector, c->rbuf, n * BLK_SECTOR, true, &st);
	pass &= outcome("read", r, st, VIRTIO_BLK_S_OK);
	unsigned z = zero_sectors(c->rbuf, n);
	probe_printf(" zero_sectors=%u", z);
	end(c, pass && z == n);
}

/* Tagged write, DISCARD, read back: each sector must hold its old tags or zeros. */
static void discard_check(struct vctx *c, uint64_t sector, unsigned n)
{
	uint64_t tag = next_tag(c);
	tag_sectors(c->wbuf, sector, n, tag);
	struct blk_dwz_seg *seg = (struct blk_dwz_seg *)(c->wbuf + 4096);
	*seg = (struct blk_dwz_seg){sector, n, 0};
	begin("discard");
	probe_printf(" sector=%lu sectors=%u tag=0x%lx", sector, n, tag);
	uint8_t st = 0;
	int r = io(c, VIRTIO_BLK_T_OUT, sector, c->wbuf, n * BLK_SECTOR, false, &st);
	bool pass = outcome("write", r, st, VIRTIO_BLK_S_OK);
	r = io(c, VIRTIO_BLK_T_DISCARD, 0, (uint64_t *)seg, sizeof(*seg), false, &st);
	pass &= outcome("discard", r, st, VIRTIO_BLK_S_OK);
	clear_tags(c->rbuf, n);
	for (unsigned k = 0; k < n; k++)
		c->rbuf[k * WORDS] = 1; /* neither a tag nor zero */
	r = io(c, VIRTIO_BLK_T_IN, sector, c->rbuf, n * BLK_SECTOR, true, &st);
	pass &= outcome("read", r, st, VIRTIO_BLK_S_OK);
	unsigned z = zero_sectors(c->rbuf, n), old = tags_ok(c->rbuf, sector, n, tag);
	probe_printf(" zero_sectors=%u old_sectors=%u", z, old);
	end(c, pass && z + old == n);
}

/* A request that must fail with `want` (IOERR / UNSUPP). */
static void refused(struct vctx *c, const char *name, uint32_t type, uint64_t sector,
                    uint32_t len, bool dev_writes, uint8_t want)
{
	begin(name);
	probe_printf(" type=%u sector=%lu len=%u", type, sector, len);
	uint8_t st = 0;
	int r = io(c, type, sector, c->rbuf, len, dev_writes, &st);
	end(c, outcome("status", r, st, want));
}

/* Read-only disk: reads work, writes / discards / write-zeroes fail and change nothing. */
static void ro_check(struct vctx *c, struct blk_dev *rb)
{
	struct blk_queue *q = &rb->q[0];
	uint64_t *before = c->rbuf, *after = c->rbuf + 512, *w = c->wbuf;
	uint8_t st = 0;
	begin("read-only");
	probe_printf(" disk=%u", rb->disk);
	struct blk_seg s = {(uint64_t)before, BLK_SECTOR};
	int r = blk_sync(q, VIRTIO_BLK_T_IN, 0, &s, 1, true, TIMEOUT_US, &st, NULL);
	bool pass = outcome("read", r, st, VIRTIO_BLK_S_OK);
	uint64_t tag = next_tag(c);
	tag_sectors(w, 0, 1, tag);
	if (before[0] == w[0])
		w[0] ^= 1; /* make sure the write would show */
	s = (struct blk_seg){(uint64_t)w, BLK_SECTOR};
	r = blk_sync(q, VIRTIO_BLK_T_OUT, 0, &s, 1, false, TIMEOUT_US, &st, NULL);
	pass &= outcome("write", r, st, VIRTIO_BLK_S_IOERR);
	if (blk_has(rb, VIRTIO_BLK_F_DISCARD) || blk_has(rb, VIRTIO_BLK_F_WRITE_ZEROES)) {
		struct blk_dwz_seg *seg = (struct blk_dwz_seg *)(w + 4096);
		*seg = (struct blk_dwz_seg){0, 1, 0};
		s = (struct blk_seg){(uint64_t)seg, sizeof(*seg)};
		if (blk_has(rb, VIRTIO_BLK_F_DISCARD)) {
			/*
			 * A discard is a hint: completing it without dropping data is
			 * allowed (QEMU says ok); the data must stay (checked below).
			 */
			r = blk_sync(q, VIRTIO_BLK_T_DISCARD, 0, &s, 1, false, TIMEOUT_US, &st, NULL);
			pass &= r == VQ_USED;
			outcome("discard", r, st, st);
		}
		if (blk_has(rb, VIRTIO_BLK_F_WRITE_ZEROES)) {
			r = blk_sync(q, VIRTIO_BLK_T_WRITE_ZEROES, 0, &s, 1, false, TIMEOUT_US, &st,
			             NULL);
			/* Any error will do; a success is a write that was not refused. */
			pass &= r == VQ_USED && st != VIRTIO_BLK_S_OK;
			outcome("zeroes", r, st, st);
		}
	}
	after[0] = ~before[0];
	after[WORDS - 1] = ~before[WORDS - 1];
	s = (struct blk_seg){(uint64_t)after, BLK_SECTOR};
	r = blk_sync(q, VIRTIO_BLK_T_IN, 0, &s, 1, true, TIMEOUT_US, &st, NULL);
	pass &= outcome("reread", r, st, VIRTIO_BLK_S_OK);
	bool same = after[0] == before[0] && after[WORDS - 1] == before[WORDS - 1];
	probe_printf(" unchanged=%u", same);
	end(c, pass && same);
}

/* The disk for the read-only check: blk.ro_disk=N, else the first one offering RO. */
static int find_ro_disk(unsigned self)
{
	char v[16];
	if (probe_opt("blk.ro_disk", v, sizeof(v))) {
		if (!strncmp(v, "none", 5))
			return -1;
		return (int)probe_opt_u64("blk.ro_disk", 0);
	}
	unsigned n = blk_count();
	for (unsigned i = 0; i < n; i++) {
		const char *why;
		struct virtio_dev *d = virtio_open_nth(VIRTIO_ID_BLOCK, i, &why);
		if (i != self && d && (d->offered & VIRTIO_BIT(VIRTIO_BLK_F_RO)))
			return (int)i;
	}
	return -1;
}

const char *test_blk_verify(void)
{
	struct vctx c = {0};
	const char *why;
	unsigned disk = (unsigned)probe_opt_u64("blk.disk", 0);
	struct blk_open_opts o = {.no_indirect = !probe_opt_u64("blk.indirect", 1),
	                          .no_event_idx = !probe_opt_u64("blk.event_idx", 1),
	                          .max_slots = 4};
	uint64_t t0 = rdtsc();
	blk_ram_reset();
	c.b = blk_open(disk, &o, &why);
	if (!c.b) {
		probe_printf("PROBE blk.verify error=%s disk=%u\n", why, disk);
		return why;
	}
	c.q = &c.b->q[0];
	blk_print_dev("blk.verify", c.b);
	c.wbuf = (uint64_t *)blk_ram_alloc(65536, 4096);
	c.rbuf = (uint64_t *)blk_ram_alloc(65536, 4096);
	if (!c.wbuf || !c.rbuf) {
		probe_printf("PROBE blk.verify error=no-ram\n");
		blk_close(c.b);
		return "no-ram";
	}
	c.cap = c.b->cfg.capacity;
	c.nonce = rdtsc() & 0xffffffffffull;
	bool ro = blk_has(c.b, VIRTIO_BLK_F_RO);
	const struct blk_config *cfg = &c.b->cfg;

	begin("config");
	probe_printf(" capacity=%lu blk_size=%u ro=%u", c.cap, cfg->blk_size, ro);
	bool cfg_ok = c.cap >= 2048 &&
	              (!blk_has(c.b, VIRTIO_BLK_F_BLK_SIZE) ||
	               (cfg->blk_size >= 512 && !(cfg->blk_size & (cfg->blk_size - 1)))) &&
	              (!blk_has(c.b, VIRTIO_BLK_F_MQ) || cfg->num_queues >= 1);
	end(&c, cfg_ok);
	if (c.cap < 2048) { /* the regions below need 1 MiB */
		blk_close(c.b);
		probe_printf("PROBE blk.verify passed=%u failed=%u skipped=%u\n", c.passed, c.failed,
		             c.skipped);
		return "disk-too-small";
	}

	uint64_t cap = c.cap;
	if (!ro) {
		rw_check(&c, "rw-first-4k", 0, 8, 1);
		rw_check(&c, "rw-first", 0, 1, 1);
		rw_check(&c, "rw-unaligned", 1, 8, 1);
		rw_check(&c, "rw-third", (cap / 3) | 1, 4, 1);
		if (c.b->max_segs >= 2 &&
		    (!blk_has(c.b, VIRTIO_BLK_F_SEG_MAX) || cfg->seg_max >= 2))
			rw_check(&c, "rw-two-segments", (cap / 4) & ~7ull, 8, 2);
		else
			skip(&c, "rw-two-segments", "seg-max");
		rw_check(&c, "rw-middle", (cap / 2) & ~7ull, 8, 1);
		rw_check(&c, "rw-near-end", cap - 9, 8, 1);
		rw_check(&c, "rw-last", cap - 1, 1, 1);

		if (blk_has(c.b, VIRTIO_BLK_F_FLUSH)) {
			begin("flush");
			uint8_t st = 0;
			int r = io(&c, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, false, &st);
			end(&c, outcome("status", r, st, VIRTIO_BLK_S_OK));
		} else {
			skip(&c, "flush", "not-offered");
		}

		uint64_t zs = ((cap / 2) & ~7ull) + 64;
		if (blk_has(c.b, VIRTIO_BLK_F_WRITE_ZEROES) && cfg->max_write_zeroes_sectors >= 16) {
			zeroes_check(&c, "write-zeroes", zs, 16, 0);
			zeroes_check(&c, "write-zeroes-unmap", zs + 64, 16, VIRTIO_BLK_WZ_F_UNMAP);
		} else {
			skip(&c, "write-zeroes", "not-offered");
			skip(&c, "write-zeroes-unmap", "not-offered");
		}
		if (blk_has(c.b, VIRTIO_BLK_F_DISCARD) && cfg->max_discard_sectors >= 16) {
			uint64_t al = cfg->discard_sector_alignment;
			unsigned n = 16;
			if (al > 16 && al <= 2048 && al <= cfg->max_discard_sectors)
				n = (unsigned)al;
			uint64_t ds = zs + 256;
			if (al > 1 && al <= 2048)
				ds = (ds + al - 1) / al * al;
			discard_check(&c, ds, n);
		} else {
			skip(&c, "discard", "not-offered");
		}
		refused(&c, "write-past-end", VIRTIO_BLK_T_OUT, cap, BLK_SECTOR, false,
		        VIRTIO_BLK_S_IOERR);
	} else {
		static const char *const rw[] = {"rw-first-4k",  "rw-first",     "rw-unaligned", "rw-third",
		                                 "rw-two-segments", "rw-middle", "rw-near-end",
		                                 "rw-last",      "flush",        "write-zeroes",
		                                 "write-zeroes-unmap", "discard", "write-past-end"};
		for (unsigned i = 0; i < sizeof(rw) / sizeof(rw[0]); i++)
			skip(&c, rw[i], "read-only");
	}
	refused(&c, "read-past-end", VIRTIO_BLK_T_IN, cap, BLK_SECTOR, true, VIRTIO_BLK_S_IOERR);
	refused(&c, "read-crossing-end", VIRTIO_BLK_T_IN, cap - 1, 2 * BLK_SECTOR, true,
	        VIRTIO_BLK_S_IOERR);

	/* GET_ID: 20 bytes, NUL-padded when shorter. */
	{
		char *id = (char *)c.rbuf;
		memset(id, 0, 24);
		begin("get-id");
		uint8_t st = 0;
		int r = io(&c, VIRTIO_BLK_T_GET_ID, 0, c.rbuf, VIRTIO_BLK_ID_BYTES, true, &st);
		end(&c, outcome("status", r, st, VIRTIO_BLK_S_OK));
		size_t n = 0;
		while (n < VIRTIO_BLK_ID_BYTES && id[n])
			n++;
		probe_printf("PROBE blk.verify id=");
		probe_print_quoted(id, n);
		probe_printf("\n");
	}
	refused(&c, "unknown-type", 0x55, 0, 0, false, VIRTIO_BLK_S_UNSUPP);

	/* Read-only: this disk if it is read-only, else blk.ro_disk / the first read-only disk. */
	if (ro) {
		ro_check(&c, c.b);
	} else {
		int rd = find_ro_disk(disk);
		if (rd < 0) {
			skip(&c, "read-only", "no-ro-disk");
		} else {
			struct blk_dev *rb = blk_open((unsigned)rd, &o, &why);
			if (!rb) {
				begin("read-only");
				probe_printf(" disk=%d error=%s", rd, why);
				end(&c, false);
			} else if (!blk_has(rb, VIRTIO_BLK_F_RO)) {
				begin("read-only");
				probe_printf(" disk=%d error=not-read-only", rd);
				end(&c, false);
				blk_close(rb);
			} else {
				blk_print_dev("blk.verify", rb);
				ro_check(&c, rb);
				blk_close(rb);
			}
		}
	}

	/* Every completion came with its interrupt. */
	begin("irqs");
	uint32_t irqs = blk_irqs_settled(c.q, 1);
	probe_printf(" irqs=%u missed_irqs=%u foreign=%u", irqs, c.q->missed_irqs, c.q->foreign);
	end(&c, irqs > 0 && c.q->missed_irqs == 0 && c.q->foreign == 0);

	blk_close(c.b);
	probe_printf("PROBE blk.verify passed=%u failed=%u skipped=%u ms=%lu\n", c.passed, c.failed,
	             c.skipped, probe_us_since(t0) / 1000);
	return c.failed ? "blk-verify-failed" : NULL;
}
