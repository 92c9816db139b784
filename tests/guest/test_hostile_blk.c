/*
 * `hostile.blk`: virtio-blk request abuse (/work/shared/hostile-inputs.md
 * cases 12 and 13, and the request-layout half of case 6) against disk 0 —
 * and, for the writes a read-only disk must refuse, against a read-only disk
 * (blk.ro_disk=N, else the first disk offering VIRTIO_BLK_F_RO).
 *
 * Each case builds one direct chain by hand (descriptors from the middle of
 * the ring up, away from the driver layer's slots), notifies, and waits up
 * to hostile.blk.wait_ms (default 100) for its completion or NEEDS_RESET.
 * It records the status byte (pre-set to 0xee: `untouched` when the device
 * never wrote it), checks that the device wrote nothing it was not given —
 * no canary after a writable buffer changed, no device-readable buffer
 * (header, readable data or a misplaced status byte) changed, the used
 * length within the writable bytes — and then the device must serve a good
 * read of sector 0 (hostile.blk.good_ms, default 1000): on the same queue,
 * or after a reset when the device set NEEDS_RESET or left the request
 * pending (no-completion). See tests/guest/README.md for the cases.
 */
#include "blk.h"

#define H_RO     1 /* on the read-only disk */
#define MUST_ANY 0
#define MUST_OK  1 /* a valid request: the device must complete it with OK */
#define MUST_IOERR 2
#define MUST_UNSUPP 3

#define MAX_BUFS     8
#define MAX_CANARIES 8
#define CANARY       0xa5a5a5a5a5a5a5a5ull
#define CHECKWORD    0x5245414450524f42ull /* in device-readable data: must stay */

/* Scratch RAM layout (offsets from c->ram). */
#define OFF_HDR    0x0000 /* 16-byte header (a second at +0x40) */
#define OFF_STATUS 0x0100 /* status byte, canary after it */
#define OFF_DATA   0x1000 /* data buffers, each followed by a canary */
#define OFF_GOOD   0x30000
#define RAM_SIZE   0x31000

struct hctx {
	struct blk_dev *b, *ro;
	struct blk_queue *q; /* the queue of the case's disk */
	uint64_t ram;
	uint64_t cap; /* capacity of the case's disk */
	/* the chain under construction */
	struct virtq_buf bufs[MAX_BUFS];
	unsigned n;
	uint64_t data_next;
	uint64_t status_addr; /* 0: the chain has no status byte of its own */
	bool status_readonly;
	uint64_t writable; /* bytes the device may write */
	uint64_t canary[MAX_CANARIES];
	unsigned ncanary;
	uint64_t ro_word[MAX_CANARIES]; /* device-readable words that must keep CHECKWORD */
	unsigned nro_word;
	struct blk_req_hdr hdr_copy; /* the header as written */
	uint64_t hdr_addr;
	unsigned must;
};

typedef void hcase_fn(struct hctx *c);

struct hcase {
	const char *name;
	unsigned group; /* hostile-inputs.md case number */
	unsigned flags;
	unsigned must;
	hcase_fn *run;
};

/* ---- chain building ---- */

static void add(struct hctx *c, uint64_t addr, uint32_t len, bool write)
{
	if (c->n < MAX_BUFS)
		c->bufs[c->n++] = (struct virtq_buf){addr, len, write};
	if (write)
		c->writable += len;
}

static void hdr_at(struct hctx *c, uint64_t off, uint32_t type, uint64_t sector)
{
	struct blk_req_hdr *h = (struct blk_req_hdr *)(c->ram + off);
	*h = (struct blk_req_hdr){type, 0, sector};
	c->hdr_copy = *h;
	c->hdr_addr = (uint64_t)h;
}

/* The usual header: 16 device-readable bytes. */
static void hdr(struct hctx *c, uint32_t type, uint64_t sector)
{
	hdr_at(c, OFF_HDR, type, sector);
	add(c, c->ram + OFF_HDR, sizeof(struct blk_req_hdr), false);
}

static void canary_at(struct hctx *c, uint64_t addr)
{
	*(volatile uint64_t *)addr = CANARY;
	if (c->ncanary < MAX_CANARIES)
		c->canary[c->ncanary++] = addr;
}

/* A data buffer of len bytes: writable ones get a canary right after them,
 * readable ones a check word at both ends (the device must not write them). */
static uint64_t data(struct hctx *c, uint32_t len, bool write)
{
	uint64_t a = c->data_next;
	c->data_next = (a + len + 8 + 63) & ~63ull;
	if (write) {
		canary_at(c, a + len);
	} else if (len >= 8 && c->nro_word + 2 <= MAX_CANARIES) {
		*(volatile uint64_t *)a = CHECKWORD;
		*(volatile uint64_t *)(a + ((len - 8) & ~7u)) = CHECKWORD;
		c->ro_word[c->nro_word++] = a;
		c->ro_word[c->nro_word++] = a + ((len - 8) & ~7u);
	}
	add(c, a, len, write);
	return a;
}

static void status(struct hctx *c)
{
	c->status_addr = c->ram + OFF_STATUS;
	*(volatile uint8_t *)c->status_addr = BLK_STATUS_UNTOUCHED;
	canary_at(c, c->status_addr + 1);
	add(c, c->status_addr, 1, true);
}

/* hdr + optional data + status: the common shape. */
static void req(struct hctx *c, uint32_t type, uint64_t sector, uint32_t len, bool dev_writes)
{
	hdr(c, type, sector);
	if (len)
		data(c, len, dev_writes);
	status(c);
}

/* A DISCARD / WRITE_ZEROES request with n identical segments {sector, num, flags}. */
static void dwz(struct hctx *c, uint32_t type, uint64_t sector, uint32_t num, uint32_t flags,
                unsigned nseg)
{
	hdr(c, type, 0);
	uint32_t len = nseg * (uint32_t)sizeof(struct blk_dwz_seg);
	uint64_t a = c->data_next;
	c->data_next = (a + len + 63) & ~63ull;
	struct blk_dwz_seg *s = (struct blk_dwz_seg *)a;
	if (nseg > 1 && num == 1 && flags == 0 && sector == 1) {
		blk_fill64(s, 1, len / 8); /* {sector 1, 1 sector, flags 0} as two words of 1 */
	} else {
		for (unsigned i = 0; i < nseg; i++)
			s[i] = (struct blk_dwz_seg){sector, num, flags};
	}
	add(c, a, len, false);
	status(c);
}

/* ---- 12: header abuse ---- */
static void data_len_odd_write(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_OUT, 2048, 1000, false);
}
static void data_len_odd_read(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_IN, 0, 100, true);
}
static void sector_overflow_read(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_IN, 0xfffffffffffffffcull, 4096, true);
}
static void sector_overflow_write(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_OUT, 0xffffffffffffffffull, 1024, false);
}
static void sector_huge_write(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_OUT, 1ull << 55, 512, false); /* × 512 overflows 2^64 */
}
static void sector_past_capacity(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_IN, c->cap, 512, true);
}
static void len_crosses_end(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_OUT, c->cap - 1, 1024, false);
}
static void get_id_short(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_GET_ID, 0, 8, true);
}
static void get_id_no_data(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_GET_ID, 0, 0, true);
}
static void get_id_readable(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_GET_ID, 0, 32, false);
}
static void type_unknown(struct hctx *c)
{
	req(c, 0x55, 0, 512, false);
}
static void type_all_ones(struct hctx *c)
{
	req(c, 0xffffffffu, 0, 512, true);
}
static void type_get_lifetime(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_GET_LIFETIME, 0, 16, true);
}
static void type_secure_erase(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_SECURE_ERASE, 2048, 8, 0, 1);
}
static void write_ro(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_OUT, 0, 512, false);
}
static void discard_ro(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_DISCARD, 0, 8, 0, 1);
}
static void zeroes_ro(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, 0, 1);
}
static void flush_with_data(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_FLUSH, 0, 512, false);
}
static void flush_with_in_data(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_FLUSH, 0, 512, true);
}
static void flush_sector(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_FLUSH, 12345, 0, false);
}

/* ---- 13: DISCARD / WRITE_ZEROES ---- */
static void discard_many_segs(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_DISCARD, 1, 1, 0, 4096);
}
static void zeroes_many_segs(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_WRITE_ZEROES, 1, 1, 0, 4096);
}
static void discard_unmap_flag(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_DISCARD, 2048, 8, VIRTIO_BLK_WZ_F_UNMAP, 1);
}
static void discard_bad_flags(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_DISCARD, 2048, 8, 0x2, 1);
}
static void zeroes_bad_flags(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_WRITE_ZEROES, 2048, 8, 0xfffffffeu, 1);
}
static void discard_past_capacity(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_DISCARD, c->cap - 1, 8, 0, 1);
}
static void zeroes_past_capacity(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_WRITE_ZEROES, c->cap, 1, 0, 1);
}
static void discard_overflow(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_DISCARD, 0xffffffffffffffffull, 2, 0, 1);
}
static void zeroes_overflow(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_WRITE_ZEROES, 0xfffffffffffffff8ull, 16, 0, 1);
}
static void discard_too_many_sectors(struct hctx *c)
{
	/* One more than the device's limit, inside the disk when possible. */
	uint64_t max = c->b->cfg.max_discard_sectors;
	uint32_t num = max && max + 1 <= c->cap ? (uint32_t)(max + 1) : 0xffffffffu;
	dwz(c, VIRTIO_BLK_T_DISCARD, 0, num, 0, 1);
}
static void zeroes_too_many_sectors(struct hctx *c)
{
	uint64_t max = c->b->cfg.max_write_zeroes_sectors;
	uint32_t num = max && max + 1 <= c->cap ? (uint32_t)(max + 1) : 0xffffffffu;
	dwz(c, VIRTIO_BLK_T_WRITE_ZEROES, 0, num, 0, 1);
}
static void discard_seg_odd_len(struct hctx *c)
{
	dwz(c, VIRTIO_BLK_T_DISCARD, 2048, 8, 0, 2);
	c->bufs[1].len = 24; /* a segment and a half */
}
static void discard_no_segment(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_DISCARD, 0, 0, false);
}

/* ---- 6: request layout ---- */
static void header_write_only(struct hctx *c)
{
	hdr_at(c, OFF_HDR, VIRTIO_BLK_T_IN, 0);
	add(c, c->ram + OFF_HDR, sizeof(struct blk_req_hdr), true);
	c->hdr_addr = 0; /* writable: the device may scribble on it */
	data(c, 512, true);
	status(c);
}
static void header_short(struct hctx *c)
{
	hdr_at(c, OFF_HDR, VIRTIO_BLK_T_IN, 0);
	add(c, c->ram + OFF_HDR, 8, false);
	status(c);
}
static void header_split(struct hctx *c)
{
	hdr_at(c, OFF_HDR, VIRTIO_BLK_T_IN, 0);
	add(c, c->ram + OFF_HDR, 8, false);
	add(c, c->ram + OFF_HDR + 8, 8, false);
	data(c, 512, true);
	status(c);
}
static void status_read_only(struct hctx *c)
{
	hdr(c, VIRTIO_BLK_T_IN, 0);
	data(c, 512, true);
	c->status_addr = c->ram + OFF_STATUS;
	*(volatile uint8_t *)c->status_addr = BLK_STATUS_UNTOUCHED;
	c->status_readonly = true;
	add(c, c->status_addr, 1, false);
}
static void status_in_data(struct hctx *c)
{
	hdr(c, VIRTIO_BLK_T_IN, 0);
	uint64_t a = data(c, 513, true); /* 512 bytes of data, then the status byte */
	c->status_addr = a + 512;
	*(volatile uint8_t *)c->status_addr = BLK_STATUS_UNTOUCHED;
}
static void chain_header_only(struct hctx *c)
{
	hdr(c, VIRTIO_BLK_T_IN, 0);
}
static void chain_status_only(struct hctx *c)
{
	status(c);
}
static void read_into_readable(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_IN, 0, 512, false);
}
static void write_from_writable(struct hctx *c)
{
	req(c, VIRTIO_BLK_T_OUT, 2048, 512, true);
}

static const struct hcase cases[] = {
    {"data-len-odd-write", 12, 0, MUST_ANY, data_len_odd_write},
    {"data-len-odd-read", 12, 0, MUST_ANY, data_len_odd_read},
    {"sector-overflow-read", 12, 0, MUST_ANY, sector_overflow_read},
    {"sector-overflow-write", 12, 0, MUST_ANY, sector_overflow_write},
    {"sector-huge-write", 12, 0, MUST_ANY, sector_huge_write},
    {"sector-past-capacity", 12, 0, MUST_ANY, sector_past_capacity},
    {"len-crosses-end", 12, 0, MUST_ANY, len_crosses_end},
    {"get-id-short", 12, 0, MUST_ANY, get_id_short},
    {"get-id-no-data", 12, 0, MUST_ANY, get_id_no_data},
    {"get-id-readable", 12, 0, MUST_ANY, get_id_readable},
    {"type-unknown", 12, 0, MUST_ANY, type_unknown},
    {"type-all-ones", 12, 0, MUST_ANY, type_all_ones},
    {"type-get-lifetime", 12, 0, MUST_ANY, type_get_lifetime},
    {"type-secure-erase", 12, 0, MUST_ANY, type_secure_erase},
    {"write-ro", 12, H_RO, MUST_IOERR, write_ro},
    {"discard-ro", 12, H_RO, MUST_ANY, discard_ro},
    {"zeroes-ro", 12, H_RO, MUST_ANY, zeroes_ro},
    {"flush-with-data", 12, 0, MUST_ANY, flush_with_data},
    {"flush-with-in-data", 12, 0, MUST_ANY, flush_with_in_data},
    {"flush-sector", 12, 0, MUST_ANY, flush_sector},
    {"discard-many-segs", 13, 0, MUST_ANY, discard_many_segs},
    {"zeroes-many-segs", 13, 0, MUST_ANY, zeroes_many_segs},
    {"discard-unmap-flag", 13, 0, MUST_ANY, discard_unmap_flag},
    {"discard-bad-flags", 13, 0, MUST_ANY, discard_bad_flags},
    {"zeroes-bad-flags", 13, 0, MUST_ANY, zeroes_bad_flags},
    {"discard-past-capacity", 13, 0, MUST_ANY, discard_past_capacity},
    {"zeroes-past-capacity", 13, 0, MUST_ANY, zeroes_past_capacity},
    {"discard-overflow", 13, 0, MUST_ANY, discard_overflow},
    {"zeroes-overflow", 13, 0, MUST_ANY, zeroes_overflow},
    {"discard-too-many-sectors", 13, 0, MUST_ANY, discard_too_many_sectors},
    {"zeroes-too-many-sectors", 13, 0, MUST_ANY, zeroes_too_many_sectors},
    {"discard-seg-odd-len", 13, 0, MUST_ANY, discard_seg_odd_len},
    {"discard-no-segment", 13, 0, MUST_ANY, discard_no_segment},
    {"header-write-only", 6, 0, MUST_ANY, header_write_only},
    {"header-short", 6, 0, MUST_ANY, header_short},
    {"header-split", 6, 0, MUST_OK, header_split},
    {"status-read-only", 6, 0, MUST_ANY, status_read_only},
    {"status-in-data", 6, 0, MUST_OK, status_in_data},
    {"chain-header-only", 6, 0, MUST_ANY, chain_header_only},
    {"chain-status-only", 6, 0, MUST_ANY, chain_status_only},
    {"read-into-readable", 6, 0, MUST_ANY, read_into_readable},
    {"write-from-writable", 6, 0, MUST_ANY, write_from_writable},
};

/* A good read of sector 0: NULL, or what went wrong. */
static const char *good_read(struct hctx *c, uint64_t timeout_us)
{
	uint8_t *buf = (uint8_t *)(c->ram + OFF_GOOD);
	struct blk_seg s = {(uint64_t)buf, BLK_SECTOR};
	uint8_t st = 0;
	uint32_t len = 0;
	int r = blk_sync(c->q, VIRTIO_BLK_T_IN, 0, &s, 1, true, timeout_us, &st, &len);
	if (r == VQ_TIMEOUT)
		return "timeout";
	if (r == VQ_NEEDS_RESET)
		return "needs-reset";
	if (st != VIRTIO_BLK_S_OK)
		return "status-not-ok";
	if (len != BLK_SECTOR + 1)
		return "bad-used-len";
	return NULL;
}

/* Runs one case; true when it passed. */
static bool run_case(const struct hcase *hc, struct hctx *c, struct blk_dev *dev, uint64_t wait_us,
                     uint64_t good_us)
{
	uint64_t t0 = rdtsc();
	c->q = &dev->q[0];
	c->cap = dev->cfg.capacity;
	c->n = 0;
	c->data_next = c->ram + OFF_DATA;
	c->status_addr = 0;
	c->status_readonly = false;
	c->writable = 0;
	c->ncanary = c->nro_word = 0;
	c->hdr_addr = 0;
	probe_printf("PROBE hostile.blk.start case=%s disk=%u\n", hc->name, dev->disk);
	uint32_t cfg0 = virtio_irqs(virtio_cfg_vector(dev->vd));
	hc->run(c);

	/* The chain, from the middle of the ring up (the driver's slots sit at the bottom). */
	struct virtq *vq = &c->q->vq;
	uint16_t base = (uint16_t)(vq->size / 2);
	for (unsigned i = 0; i < c->n; i++)
		virtq_desc_set(vq->desc, base + i, c->bufs[i].addr, c->bufs[i].len,
		               (uint16_t)((c->bufs[i].write ? VIRTQ_DESC_F_WRITE : 0) |
		                          (i + 1 < c->n ? VIRTQ_DESC_F_NEXT : 0)),
		               (uint16_t)(base + i + 1));
	virtq_push(vq, base);
	virtq_publish(vq);
	virtq_notify(vq);

	/* Its completion, NEEDS_RESET or the deadline. */
	uint64_t deadline = rdtsc() + wait_us * probe_tsc_khz() / 1000;
	bool done = false;
	uint32_t used_len = 0, other = 0;
	int w = VQ_TIMEOUT;
	struct blk_queue *qs[1] = {c->q};
	while (!done) {
		w = blk_wait(qs, 1, deadline, false);
		if (w != VQ_USED)
			break;
		uint32_t id, len;
		while (virtq_pop_used(vq, &id, &len)) {
			if (id == base) {
				done = true;
				used_len = len;
			} else {
				other++;
			}
		}
	}
	uint8_t dstatus = virtio_get_status(dev->vd);
	bool nr = dstatus & VIRTIO_S_NEEDS_RESET;
	uint32_t cfg_irqs = virtio_irqs(virtio_cfg_vector(dev->vd)) - cfg0;

	/* What the device wrote where it should not have. */
	unsigned bad_canary = 0, bad_ro = 0;
	for (unsigned i = 0; i < c->ncanary; i++)
		bad_canary += *(volatile uint64_t *)c->canary[i] != CANARY;
	for (unsigned i = 0; i < c->nro_word; i++)
		bad_ro += *(volatile uint64_t *)c->ro_word[i] != CHECKWORD;
	if (c->hdr_addr && memcmp((const void *)c->hdr_addr, &c->hdr_copy, sizeof(c->hdr_copy)))
		bad_ro++;
	uint8_t sbyte = c->status_addr ? *(volatile uint8_t *)c->status_addr : 0;
	if (c->status_readonly && sbyte != BLK_STATUS_UNTOUCHED)
		bad_ro++;
	bool len_bad = done && used_len > c->writable;

	/* The result word. */
	char word[24];
	const char *result;
	if (nr) {
		result = "needs-reset";
	} else if (!done) {
		result = "no-completion";
	} else if (!c->status_addr || c->status_readonly) {
		result = sbyte == BLK_STATUS_UNTOUCHED || !c->status_addr ? "completed" : "wrote-readonly";
	} else if ((result = blk_status_word(sbyte)) == NULL) {
		static const char hex[] = "0123456789abcdef";
		memcpy(word, "status-0x", 9);
		word[9] = hex[sbyte >> 4];
		word[10] = hex[sbyte & 15];
		word[11] = 0;
		result = word;
	}
	bool must_ok = true;
	if (hc->must == MUST_OK)
		must_ok = done && !nr && c->status_addr && sbyte == VIRTIO_BLK_S_OK;
	else if (hc->must == MUST_IOERR)
		must_ok = done && !nr && sbyte == VIRTIO_BLK_S_IOERR;
	else if (hc->must == MUST_UNSUPP)
		must_ok = done && !nr && sbyte == VIRTIO_BLK_S_UNSUPP;

	/* The device must serve a good request: same queue, or after a reset. */
	const char *after = NULL, *after_reset = NULL;
	bool restart = nr || !done;
	if (!restart) {
		after = good_read(c, good_us);
		if (after)
			restart = true;
	}
	if (restart) {
		after_reset = blk_restart(dev);
		if (!after_reset)
			after_reset = good_read(c, good_us);
	}
	bool served;
	if (!nr && done && !after)
		served = true;
	else if (!nr && done) /* NEEDS_RESET only once the next request came */
		served = !strncmp(after, "needs-reset", 12) && !after_reset;
	else
		served = !after_reset;
	bool pass = served && must_ok && !bad_canary && !bad_ro && !len_bad;

	probe_printf("PROBE hostile.blk case=%s group=%u disk=%u result=%s used=%u len=%u "
	             "writable=%lu status=0x%x cfg_irqs=%u other=%u after=",
	             hc->name, hc->group, dev->disk, result, done, used_len, c->writable, dstatus,
	             cfg_irqs, other);
	if (!nr && done && !after)
		probe_printf("ok");
	else if (!nr && done)
		probe_printf("%s,then-reset-%s", after, after_reset ? after_reset : "ok");
	else
		probe_printf("%s", after_reset ? after_reset : "ok-after-reset");
	if (bad_canary)
		probe_printf(" overrun=%u", bad_canary);
	if (bad_ro)
		probe_printf(" wrote_readonly=%u", bad_ro);
	if (len_bad)
		probe_printf(" len_exceeds_chain=1");
	if (!must_ok)
		probe_printf(" must=%s", hc->must == MUST_OK ? "ok" :
		                         hc->must == MUST_IOERR ? "ioerr" : "unsupp");
	probe_printf(" pass=%u us=%lu\n", pass, probe_us_since(t0));
	(void)w;
	return pass;
}

/* blk.ro_disk=N, else the first disk but 0 offering RO; -1 when none. */
static int ro_disk(void)
{
	char v[16];
	if (probe_opt("blk.ro_disk", v, sizeof(v))) {
		if (!strncmp(v, "none", 5))
			return -1;
		return (int)probe_opt_u64("blk.ro_disk", 0);
	}
	unsigned n = blk_count();
	for (unsigned i = 1; i < n; i++) {
		const char *why;
		struct virtio_dev *d = virtio_open_nth(VIRTIO_ID_BLOCK, i, &why);
		if (d && (d->offered & VIRTIO_BIT(VIRTIO_BLK_F_RO)))
			return (int)i;
	}
	return -1;
}

const char *test_hostile_blk(void)
{
	const char *why;
	struct hctx c = {0};
	blk_ram_reset();
	/* Few slots, direct chains: the hand-built chains use the upper half of the ring. */
	struct blk_open_opts o = {.max_slots = 2, .max_segs = 2, .no_indirect = true};
	c.b = blk_open((unsigned)probe_opt_u64("blk.disk", 0), &o, &why);
	if (!c.b) {
		probe_printf("PROBE hostile.blk error=%s\n", why);
		return why;
	}
	blk_print_dev("hostile.blk", c.b);
	if (c.b->q[0].vq.size < 32 || blk_has(c.b, VIRTIO_BLK_F_RO) || c.b->cfg.capacity < 4096) {
		const char *r = blk_has(c.b, VIRTIO_BLK_F_RO) ? "disk-read-only" :
		                c.b->cfg.capacity < 4096     ? "disk-too-small" :
		                                               "queue-too-small";
		probe_printf("PROBE hostile.blk error=%s\n", r);
		blk_close(c.b);
		return r;
	}
	int rd = ro_disk();
	if (rd >= 0) {
		c.ro = blk_open((unsigned)rd, &o, &why);
		if (!c.ro || !blk_has(c.ro, VIRTIO_BLK_F_RO) || c.ro->q[0].vq.size < 32) {
			probe_printf("PROBE hostile.blk error=%s ro_disk=%d\n",
			             c.ro ? "not-read-only" : why, rd);
			blk_close(c.ro);
			blk_close(c.b);
			return "bad-ro-disk";
		}
		blk_print_dev("hostile.blk", c.ro);
	}
	c.ram = blk_ram_alloc(RAM_SIZE, 4096);
	if (!c.ram) {
		probe_printf("PROBE hostile.blk error=no-ram\n");
		blk_close(c.ro);
		blk_close(c.b);
		return "no-ram";
	}

	char skip[512] = "", only[512] = "";
	probe_opt("hostile.blk.skip", skip, sizeof(skip));
	bool have_only = probe_opt("hostile.blk.only", only, sizeof(only));
	uint64_t wait_us = probe_opt_u64("hostile.blk.wait_ms", 100) * 1000;
	uint64_t good_us = probe_opt_u64("hostile.blk.good_ms", 1000) * 1000;

	unsigned passed = 0, failed = 0, skipped = 0;
	const char *first_fail = NULL;
	uint64_t t0 = rdtsc();
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct hcase *hc = &cases[i];
		if (have_only && !blk_listed(only, hc->name))
			continue;
		const char *reason = blk_listed(skip, hc->name)       ? "option" :
		                     (hc->flags & H_RO) && !c.ro      ? "no-ro-disk" :
		                                                        NULL;
		if (reason) {
			probe_printf("PROBE hostile.blk case=%s group=%u result=skipped reason=%s\n",
			             hc->name, hc->group, reason);
			skipped++;
			continue;
		}
		if (run_case(hc, &c, (hc->flags & H_RO) ? c.ro : c.b, wait_us, good_us)) {
			passed++;
		} else {
			failed++;
			if (!first_fail)
				first_fail = hc->name;
		}
	}
	blk_close(c.ro);
	blk_close(c.b);
	probe_printf("PROBE hostile.blk passed=%u failed=%u skipped=%u first_failed=%s ms=%lu\n",
	             passed, failed, skipped, first_fail ? first_fail : "-",
	             probe_us_since(t0) / 1000);
	return failed ? "hostile-case-failed" : NULL;
}
