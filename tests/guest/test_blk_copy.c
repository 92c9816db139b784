/*
 * `blk.copy`: the devices copy disk blk.src (0) onto disk blk.dst (1) in
 * blk.chunk-byte requests (default 1 MiB, cut to what seg_max × size_max
 * allow): each chunk is read into guest RAM above the probe and the same
 * buffer is written to the target; the guest never touches the data, so the
 * host compares the image files. blk.depth chunks (default 4) are in flight,
 * each cycling read → write → next read. FLUSH on the target at the end.
 */
#include "blk.h"

#define MAX_DEPTH 16

struct chunk {
	uint64_t buf, off;
	uint32_t len;
};

static void print_rate(const char *key, uint64_t bytes, uint64_t us)
{
	uint64_t x100 = us ? bytes * 100 / us : 0; /* bytes per µs = MB/s */
	probe_printf(" %s=%lu.%02lu", key, x100 / 100, x100 % 100);
}

const char *test_blk_copy(void)
{
	const char *why;
	unsigned src_disk = (unsigned)probe_opt_u64("blk.src", 0);
	unsigned dst_disk = (unsigned)probe_opt_u64("blk.dst", 1);
	uint64_t chunk = probe_opt_u64("blk.chunk", 1 << 20);
	unsigned depth = (unsigned)probe_opt_u64("blk.depth", 4);
	uint64_t limit_mib = probe_opt_u64("blk.mib", 0);
	uint64_t timeout_s = probe_opt_u64("blk.timeout_s", 60);
	if (depth < 1 || depth > MAX_DEPTH || chunk < BLK_SECTOR || src_disk == dst_disk) {
		probe_printf("PROBE blk.copy error=bad-options\n");
		return "bad-options";
	}
	blk_ram_reset();
	struct blk_open_opts o = {.max_segs = BLK_MAX_SEGS, .max_slots = MAX_DEPTH};
	struct blk_dev *a = blk_open(src_disk, &o, &why);
	if (!a) {
		probe_printf("PROBE blk.copy error=%s disk=%u\n", why, src_disk);
		return why;
	}
	struct blk_dev *b = blk_open(dst_disk, &o, &why);
	if (!b) {
		probe_printf("PROBE blk.copy error=%s disk=%u\n", why, dst_disk);
		blk_close(a);
		return why;
	}
	blk_print_dev("blk.copy", a);
	blk_print_dev("blk.copy", b);

	const char *fail = NULL;
	uint64_t asked = chunk;
	if (chunk > blk_max_transfer(a))
		chunk = blk_max_transfer(a);
	if (chunk > blk_max_transfer(b))
		chunk = blk_max_transfer(b);
	chunk &= ~(uint64_t)(BLK_SECTOR - 1);
	uint64_t total = a->cfg.capacity * BLK_SECTOR;
	if (limit_mib && limit_mib << 20 < total)
		total = limit_mib << 20;
	struct chunk ch[MAX_DEPTH];
	unsigned n = 0;
	for (; n < depth; n++) {
		ch[n].buf = blk_ram_alloc(chunk, 4096);
		if (!ch[n].buf)
			break;
	}
	if (!chunk)
		fail = "chunk-too-small";
	else if (!n)
		fail = "no-ram";
	else if (b->cfg.capacity * BLK_SECTOR < total)
		fail = "target-too-small";
	else if (blk_has(b, VIRTIO_BLK_F_RO))
		fail = "target-read-only";
	if (fail) {
		probe_printf("PROBE blk.copy error=%s chunk=%lu\n", fail, chunk);
		blk_close(b);
		blk_close(a);
		return fail;
	}

	struct blk_queue *qa = &a->q[0], *qb = &b->q[0];
	struct blk_queue *qs[2] = {qa, qb};
	uint64_t t0 = rdtsc(), khz = probe_tsc_khz();
	uint64_t deadline = t0 + timeout_s * 1000 * khz;
	uint64_t next = 0, copied = 0, requests = 0;
	struct blk_seg segs[BLK_MAX_SEGS];

	/* Read chunk i at next; false when the request could not be built. */
#define START_READ(i)                                                                              \
	do {                                                                                       \
		ch[i].off = next;                                                                  \
		ch[i].len = (uint32_t)(total - next < chunk ? total - next : chunk);               \
		next += ch[i].len;                                                                 \
		unsigned ns = blk_split(a, ch[i].buf, ch[i].len, segs, BLK_MAX_SEGS);              \
		if (!ns || blk_submit(qa, VIRTIO_BLK_T_IN, ch[i].off / BLK_SECTOR, segs, ns, true, \
		                      i) < 0)                                                      \
			fail = "submit-failed";                                                    \
		requests++;                                                                        \
	} while (0)

	for (unsigned i = 0; i < n && next < total && !fail; i++)
		START_READ(i);
	blk_kick(qa);
	while (!fail && (qa->inflight || qb->inflight)) {
		int r = blk_wait(qs, 2, deadline, false);
		if (r != VQ_USED) {
			fail = r == VQ_TIMEOUT ? "timeout" : "needs-reset";
			break;
		}
		struct blk_done d;
		bool wrote = false, read = false;
		while (!fail && blk_reap(qa, &d)) {
			struct chunk *c = &ch[d.user];
			if (d.status != VIRTIO_BLK_S_OK) {
				probe_printf("PROBE blk.copy.error op=read offset=%lu status=0x%x\n",
				             c->off, d.status);
				fail = "read-failed";
				break;
			}
			unsigned ns = blk_split(b, c->buf, c->len, segs, BLK_MAX_SEGS);
			if (!ns || blk_submit(qb, VIRTIO_BLK_T_OUT, c->off / BLK_SECTOR, segs, ns, false,
			                      d.user) < 0)
				fail = "submit-failed";
			requests++;
			wrote = true;
		}
		if (wrote)
			blk_kick(qb);
		while (!fail && blk_reap(qb, &d)) {
			struct chunk *c = &ch[d.user];
			if (d.status != VIRTIO_BLK_S_OK) {
				probe_printf("PROBE blk.copy.error op=write offset=%lu status=0x%x\n",
				             c->off, d.status);
				fail = "write-failed";
				break;
			}
			copied += c->len;
			if (next < total) {
				START_READ(d.user);
				read = true;
			}
		}
		if (read)
			blk_kick(qa);
	}
#undef START_READ
	uint64_t us = probe_us_since(t0);
	uint8_t st = VIRTIO_BLK_S_OK;
	if (!fail && blk_has(b, VIRTIO_BLK_F_FLUSH)) {
		int r = blk_sync(qb, VIRTIO_BLK_T_FLUSH, 0, NULL, 0, false, 10000000, &st, NULL);
		if (r != VQ_USED || st != VIRTIO_BLK_S_OK)
			fail = "flush-failed";
	}
	uint64_t us_flush = probe_us_since(t0);
	probe_printf("PROBE blk.copy src=%u dst=%u bytes=%lu chunk=%lu chunk_asked=%lu depth=%u "
	             "requests=%lu ms=%lu flush_ms=%lu",
	             src_disk, dst_disk, copied, chunk, asked, n, requests, us / 1000,
	             (us_flush - us) / 1000);
	print_rate("mbps", copied, us);
	probe_printf(" missed_irqs=%u result=%s\n", qa->missed_irqs + qb->missed_irqs,
	             fail ? fail : "ok");
	blk_close(b);
	blk_close(a);
	return fail;
}
