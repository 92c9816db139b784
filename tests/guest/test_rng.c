/*
 * `rng`: drives virtio-rng (device id 4) through the virtio core: reads
 * rng.reads buffers of rng.len bytes, one request at a time, each completed
 * through the queue's MSI-X vector, and checks the bytes look random enough
 * to be real without crunching them: only the first SAMPLE bytes of each
 * read are zeroed beforehand and examined (not all equal, no two reads
 * alike, distinct values counted) — every byte costs microseconds here.
 */
#include "virtio.h"

#define SAMPLE 64

static bool all_equal(const uint8_t *p, uint32_t n)
{
	for (uint32_t i = 1; i < n; i++)
		if (p[i] != p[0])
			return false;
	return true;
}

const char *test_rng(void)
{
	const char *why;
	struct virtio_dev *d = virtio_open(VIRTIO_ID_RNG, &why);
	if (!d) {
		probe_printf("PROBE rng error=%s\n", why);
		return why;
	}
	uint64_t reads = probe_opt_u64("rng.reads", 4), len = probe_opt_u64("rng.len", 64);
	bool indirect = probe_opt_u64("rng.indirect", 0);
	bool event_idx = probe_opt_u64("rng.event_idx", 1);
	uint16_t qsize = (uint16_t)probe_opt_u64("rng.qsize", 0);
	if (reads < 1 || reads > 64 || len < 1 || len > 4096 || reads * len > VIRTIO_DMA_SIZE)
		return "bad-options";

	uint64_t feats = VIRTIO_BIT(VIRTIO_F_VERSION_1);
	if (!(d->offered & feats))
		return "no-version-1";
	if (event_idx && (d->offered & VIRTIO_BIT(VIRTIO_F_EVENT_IDX)))
		feats |= VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	if (indirect) {
		if (!(d->offered & VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC)))
			return "no-indirect";
		feats |= VIRTIO_BIT(VIRTIO_F_INDIRECT_DESC);
	}
	struct virtq vq;
	const char *r = virtio_start(d, &vq, feats, qsize);
	if (r) {
		probe_printf("PROBE rng error=%s status=0x%x\n", r, virtio_get_status(d));
		return r;
	}

	unsigned vec = virtq_vector(&vq);
	uint32_t irq0 = virtio_irqs(vec);
	uint64_t t0 = rdtsc(), bytes = 0;
	const char *fail = NULL;
	uint8_t *bufs[64];
	uint32_t got[64];
	for (unsigned i = 0; i < reads; i++) {
		bufs[i] = virtio_dma + i * len;
		memset(bufs[i], 0, len < SAMPLE ? len : SAMPLE);
		struct virtq_buf b = {(uint64_t)bufs[i], (uint32_t)len, true};
		int w = virtq_request(&vq, 0, &b, 1, indirect, 1000000, &got[i]);
		if (w != VQ_USED) {
			fail = w == VQ_TIMEOUT ? "rng-timeout" : "rng-needs-reset";
			reads = i;
			break;
		}
		if (got[i] == 0 || got[i] > len) {
			fail = got[i] ? "rng-len-too-big" : "rng-empty";
			reads = i;
			break;
		}
		bytes += got[i];
	}
	uint64_t us = probe_us_since(t0);
	/* A completion found by polling leaves its interrupt pending or still on
	 * its way from the host: let it in, waiting up to 200 ms for one. */
	probe_irq_window();
	if (reads && virtio_irqs(vec) == irq0) {
		uint64_t ticks = lapic_timer_ticks;
		lapic_timer_oneshot_us(200000);
		while (virtio_irqs(vec) == irq0 && lapic_timer_ticks == ticks)
			probe_wait_irq();
	}
	uint32_t irqs = virtio_irqs(vec) - irq0;

	/* Which byte values occurred: a 256-bit set, one pass over the data. */
	uint64_t seen[4] = {0};
	unsigned distinct = 0, sampled = 0;
	for (unsigned i = 0; i < reads; i++) {
		if (got[i] > SAMPLE)
			got[i] = SAMPLE; /* from here on: the bytes examined */
		for (uint32_t j = 0; j < got[i]; j++)
			seen[bufs[i][j] >> 6] |= 1ull << (bufs[i][j] & 63);
		sampled += got[i];
	}
	for (unsigned w = 0; w < 4; w++)
		for (uint64_t v = seen[w]; v; v &= v - 1)
			distinct++;

	for (unsigned i = 0; !fail && i < reads; i++) {
		if (got[i] > 1 && all_equal(bufs[i], got[i]))
			fail = "rng-constant";
		for (unsigned j = 0; !fail && j < i; j++)
			if (got[i] == got[j] && !memcmp(bufs[i], bufs[j], got[i]))
				fail = "rng-repeat";
	}
	if (!fail && (irqs == 0 || vq.missed_irqs))
		fail = "rng-no-irq";

	probe_printf("PROBE rng dev=00:%02x.%u features=0x%lx qsize=%u indirect=%u event_idx=%u "
	             "reads=%lu bytes=%lu sampled=%u distinct=%u irqs=%u missed_irqs=%u us=%lu\n",
	             d->slot, d->fn, feats, vq.size, indirect,
	             (feats & VIRTIO_BIT(VIRTIO_F_EVENT_IDX)) ? 1 : 0, reads, bytes, sampled,
	             distinct, irqs, vq.missed_irqs, us);
	if (!virtio_reset(d) && !fail)
		fail = "reset-stuck";
	return fail;
}
