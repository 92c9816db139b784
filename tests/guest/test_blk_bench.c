/*
 * `blk.bench`: keeps blk.qd requests in flight on each of blk.queues queues
 * of disk blk.disk for blk.secs seconds (TSC-timed with the `timer` test's
 * calibration) and reports IOPS, throughput and latency. Latency is taken
 * from TSC stamps at submit and at the completion (one stamp per batch of
 * completions seen together); percentiles come from a log-scale histogram
 * of TSC ticks (4 buckets per power of two, ≤ 19 % wide), never a sort; the
 * hot loop does no division (each instruction costs here).
 * Options: blk.rw=randread|randwrite|read|write, blk.bs (bytes, multiple of
 * 512), blk.qd, blk.queues, blk.secs, blk.poll=1 (spin instead of HLT),
 * blk.span_mib (offsets within the first N MiB; default the whole disk),
 * blk.seed.
 */
#include "blk.h"

#define NBUCKETS 256

static uint32_t hist[NBUCKETS];

static unsigned bucket(uint64_t ticks)
{
	if (ticks < 4)
		return (unsigned)ticks;
	unsigned msb = 63 - (unsigned)__builtin_clzll(ticks);
	return msb * 4 + (unsigned)((ticks >> (msb - 2)) & 3);
}

/* Middle of bucket b, in ticks. */
static uint64_t bucket_mid(unsigned b)
{
	if (b < 4)
		return b;
	unsigned msb = b / 4;
	uint64_t lo = (uint64_t)(4 + (b & 3)) << (msb - 2);
	return lo + ((1ull << (msb - 2)) >> 1);
}

static uint64_t percentile(uint64_t total, unsigned pct)
{
	uint64_t want = (total * pct + 99) / 100, acc = 0;
	if (!want)
		want = 1;
	for (unsigned b = 0; b < NBUCKETS; b++) {
		acc += hist[b];
		if (acc >= want)
			return bucket_mid(b);
	}
	return 0;
}

static void print_x100(const char *key, uint64_t x100)
{
	probe_printf(" %s=%lu.%02lu", key, x100 / 100, x100 % 100);
}

const char *test_blk_bench(void)
{
	const char *why;
	char rw[16] = "randread";
	probe_opt("blk.rw", rw, sizeof(rw));
	bool rnd = !strncmp(rw, "rand", 4);
	const char *mode = rnd ? rw + 4 : rw;
	bool write = !strncmp(mode, "write", 6);
	if (!write && strncmp(mode, "read", 5)) {
		probe_printf("PROBE blk.bench error=bad-rw rw=%s\n", rw);
		return "bad-options";
	}
	unsigned disk = (unsigned)probe_opt_u64("blk.disk", 0);
	uint64_t bs = probe_opt_u64("blk.bs", 4096);
	uint64_t qd = probe_opt_u64("blk.qd", 1);
	uint64_t nq = probe_opt_u64("blk.queues", 1);
	uint64_t secs = probe_opt_u64("blk.secs", 1);
	bool poll = probe_opt_u64("blk.poll", 0);
	uint64_t span_mib = probe_opt_u64("blk.span_mib", 0);
	uint64_t seed = probe_opt_u64("blk.seed", 1);
	if (!bs || bs % BLK_SECTOR || qd < 1 || qd > BLK_MAX_SLOTS || nq < 1 ||
	    nq > BLK_MAX_QUEUES || secs < 1 || secs > 3600) {
		probe_printf("PROBE blk.bench error=bad-options\n");
		return "bad-options";
	}
	blk_ram_reset();
	struct blk_open_opts o = {.queues = (unsigned)nq, .max_slots = (unsigned)qd,
	                          .max_segs = BLK_MAX_SEGS};
	struct blk_dev *b = blk_open(disk, &o, &why);
	if (!b) {
		probe_printf("PROBE blk.bench error=%s disk=%u\n", why, disk);
		return why;
	}
	blk_print_dev("blk.bench", b);
	const char *fail = NULL;
	uint64_t cap = b->cfg.capacity;
	uint64_t span = span_mib ? span_mib << 11 : cap;
	if (span > cap)
		span = cap;
	uint64_t blocks = span / (bs / BLK_SECTOR);
	if (b->nq < nq)
		fail = "too-few-queues";
	else if (b->q[0].nslots < qd)
		fail = "queue-too-small";
	else if (bs > blk_max_transfer(b))
		fail = "bs-too-big";
	else if (!blocks)
		fail = "disk-too-small";
	else if (write && blk_has(b, VIRTIO_BLK_F_RO))
		fail = "read-only";
	/* One buffer per request in flight, or fewer shared ones when RAM is short. */
	uint64_t want = nq * qd, nbuf = 0, bufs = 0;
	if (!fail) {
		nbuf = want;
		while (nbuf && !(bufs = blk_ram_alloc(nbuf * bs, 4096)))
			nbuf /= 2;
		if (!nbuf)
			fail = "no-ram";
	}
	if (fail) {
		probe_printf("PROBE blk.bench error=%s\n", fail);
		blk_close(b);
		return fail;
	}

	for (unsigned i = 0; i < NBUCKETS; i++)
		hist[i] = 0;
	struct blk_queue *qs[BLK_MAX_QUEUES];
	uint64_t cursor[BLK_MAX_QUEUES];
	for (unsigned i = 0; i < nq; i++) {
		qs[i] = &b->q[i];
		cursor[i] = blocks * i / nq; /* sequential: each queue its own stretch */
	}
	uint32_t type = write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
	uint64_t rs = seed * 0x9e3779b97f4a7c15ull | 1;
	uint64_t khz = probe_tsc_khz();
	uint64_t requests = 0, errors = 0, lat_sum = 0, lat_max = 0, submitted = 0;
	uint32_t irq0 = 0;
	for (unsigned i = 0; i < nq; i++)
		irq0 += virtio_irqs(virtq_vector(&qs[i]->vq));
	struct blk_seg segs[BLK_MAX_SEGS];
	unsigned nseg1 = blk_split(b, bufs, bs, segs, BLK_MAX_SEGS);
	uint64_t sectors_per_block = bs / BLK_SECTOR;
	if (!nseg1) {
		probe_printf("PROBE blk.bench error=bs-too-big\n");
		blk_close(b);
		return "bs-too-big";
	}

#define SUBMIT(qi, bi)                                                                             \
	do {                                                                                       \
		uint64_t blk_ = rnd ? ((blk_rand(&rs) >> 32) * blocks) >> 32 : cursor[qi]++;       \
		if (blk_ >= blocks) { /* wrap */                                                   \
			blk_ = 0;                                                                  \
			cursor[qi] = 1;                                                            \
		}                                                                                  \
		uint64_t a_ = bufs + ((bi) % nbuf) * bs;                                           \
		if (nseg1 == 1) /* the common case: no blk_split() per request */                 \
			segs[0].addr = a_;                                                         \
		else                                                                               \
			blk_split(b, a_, bs, segs, BLK_MAX_SEGS);                                  \
		if (blk_submit(qs[qi], type, blk_ * sectors_per_block, segs, nseg1, !write, bi) < 0) \
			fail = "submit-failed";                                                    \
		submitted++;                                                                       \
	} while (0)

	uint64_t t0 = rdtsc();
	uint64_t end = t0 + secs * 1000 * khz;
	for (unsigned i = 0; i < nq && !fail; i++) {
		for (unsigned j = 0; j < qd && !fail; j++)
			SUBMIT(i, (uint64_t)i * qd + j);
		blk_kick(qs[i]);
	}
	uint64_t last = t0, drain_deadline = end + 10000 * khz; /* 10 s to drain */
	bool stop = false;
	while (!fail) {
		unsigned inflight = 0;
		for (unsigned i = 0; i < nq; i++)
			inflight += qs[i]->inflight;
		if (!inflight)
			break;
		int r = blk_wait(qs, (unsigned)nq, stop ? drain_deadline : end, poll);
		if (r == VQ_NEEDS_RESET) {
			fail = "needs-reset";
			break;
		}
		uint64_t now = rdtsc();
		if (r == VQ_TIMEOUT) {
			if (stop) {
				fail = "timeout";
				break;
			}
			stop = true;
			continue;
		}
		if (now >= end)
			stop = true;
		for (unsigned i = 0; i < nq; i++) {
			struct blk_done d;
			bool sub = false;
			while (blk_reap(qs[i], &d)) {
				uint64_t ticks = now - d.t_submit;
				hist[bucket(ticks)]++;
				lat_sum += ticks;
				if (ticks > lat_max)
					lat_max = ticks;
				requests++;
				last = now;
				if (d.status != VIRTIO_BLK_S_OK)
					errors++;
				if (!stop) {
					SUBMIT(i, d.user);
					sub = true;
				}
			}
			if (sub)
				blk_kick(qs[i]);
		}
	}
#undef SUBMIT
	uint64_t us = (last - t0) * 1000 / khz;
	uint32_t irqs = 0, missed = 0;
	uint64_t kicks = 0;
	for (unsigned i = 0; i < nq; i++) {
		irqs += virtio_irqs(virtq_vector(&qs[i]->vq));
		missed += qs[i]->missed_irqs;
		kicks += qs[i]->kicks;
	}
	irqs -= irq0;
	if (!fail && errors)
		fail = "request-failed";
	if (!fail && !requests)
		fail = "no-requests";
	uint64_t iops_x100 = us ? requests * 100000000 / us : 0;
	/* ticks → ns: × 10^6 / kHz */
	uint64_t mean = requests ? lat_sum / requests * 1000000 / khz : 0;
	uint64_t p50 = percentile(requests, 50) * 1000000 / khz;
	uint64_t p99 = percentile(requests, 99) * 1000000 / khz;
	lat_max = lat_max * 1000000 / khz;
	probe_printf("PROBE blk.bench rw=%s bs=%lu qd=%lu queues=%lu secs=%lu poll=%u", rw, bs, qd,
	             nq, secs, poll);
	probe_printf(" iops=%lu", iops_x100 / 100);
	print_x100("mbps", us ? requests * bs * 100 / us : 0);
	print_x100("lat_mean_us", mean / 10);
	print_x100("lat_p50_us", p50 / 10);
	print_x100("lat_p99_us", p99 / 10);
	print_x100("lat_max_us", lat_max / 10);
	probe_printf(" requests=%lu errors=%lu submitted=%lu irqs=%u missed_irqs=%u kicks=%lu "
	             "buffers=%lu elapsed_ms=%lu result=%s\n",
	             requests, errors, submitted, irqs, missed, kicks, nbuf, us / 1000,
	             fail ? fail : "ok");
	blk_close(b);
	return fail;
}
