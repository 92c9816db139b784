/*
 * `rng.bench`: virtio-rng throughput. Keeps rngb.qd requests (default 4) of
 * rngb.len device-writable bytes (default 64 KiB) in flight for rngb.secs
 * seconds (default 2): each completion (MSI-X, EVENT_IDX when offered) is
 * reposted at once with the same descriptor; then the requests still out
 * are drained. The guest never touches the data — the buffers are plain RAM
 * from 16 MiB up (taken from the memory map, outside the probe image), so
 * the cost per request is a few ring stores, one kick when the device asks
 * for it and the interrupt.
 *
 * Lines: `PROBE rng.bench.start dev= len= qd= secs= qsize= event_idx=` before
 * the first request (a host-side sampler's cue), then `PROBE rng.bench
 * bytes=N secs=S mbps=M requests=N us=N len= qd= kicks=N irqs=N short=N`
 * (secs and mbps with two decimals, MB = 10^6 bytes; short counts
 * completions of fewer bytes than posted). Fails no-device, bad-options,
 * no-ram, rng-timeout, rng-needs-reset, rng-bad-completion, rng-empty.
 */
#include "virtio.h"

#define BUF_BASE 0x1000000ull /* 16 MiB: above the probe image (< 8 MiB) */
#define MAX_QD   64

/* A RAM range of need bytes from BUF_BASE up, below 4 GiB (the identity map), or 0. */
static uint64_t find_ram(uint64_t need)
{
	for (unsigned i = 0; i < probe_memmap_entries; i++) {
		const struct probe_mem_entry *e = &probe_memmap[i];
		if (e->type != 1)
			continue;
		uint64_t start = e->addr < BUF_BASE ? BUF_BASE : e->addr;
		start = (start + 4095) & ~4095ull;
		uint64_t end = e->addr + e->size;
		if (start + need <= end && start + need <= 0x100000000ull)
			return start;
	}
	return 0;
}

static void print_fixed2(const char *key, uint64_t hundredths)
{
	probe_printf(" %s=%lu.%02lu", key, hundredths / 100, hundredths % 100);
}

const char *test_rng_bench(void)
{
	const char *why;
	uint64_t len = probe_opt_u64("rngb.len", 65536), qd = probe_opt_u64("rngb.qd", 4);
	uint64_t secs = probe_opt_u64("rngb.secs", 2);
	if (len < 1 || len > (1u << 24) || qd < 1 || qd > MAX_QD || secs < 1 || secs > 3600)
		return "bad-options";
	struct virtio_dev *d = virtio_open(VIRTIO_ID_RNG, &why);
	if (!d) {
		probe_printf("PROBE rng.bench error=%s\n", why);
		return why;
	}
	uint64_t base = find_ram(len * qd);
	if (!base) {
		probe_printf("PROBE rng.bench error=no-ram need=%lu\n", len * qd);
		return "no-ram";
	}
	uint64_t feats = VIRTIO_BIT(VIRTIO_F_VERSION_1);
	if (!(d->offered & feats))
		return "no-version-1";
	if (d->offered & VIRTIO_BIT(VIRTIO_F_EVENT_IDX))
		feats |= VIRTIO_BIT(VIRTIO_F_EVENT_IDX);
	struct virtq vq;
	const char *r = virtio_start(d, &vq, feats, 0);
	if (r) {
		probe_printf("PROBE rng.bench error=%s status=0x%x\n", r, virtio_get_status(d));
		return r;
	}
	if (qd > vq.size)
		qd = vq.size;

	uint64_t khz = probe_tsc_khz();
	probe_printf("PROBE rng.bench.start dev=00:%02x.%u len=%lu qd=%lu secs=%lu qsize=%u "
	             "event_idx=%u\n",
	             d->slot, d->fn, len, qd, secs, vq.size, vq.event_idx ? 1 : 0);

	unsigned vec = virtq_vector(&vq);
	uint32_t irq0 = virtio_irqs(vec);
	for (unsigned i = 0; i < qd; i++)
		virtq_desc_set(vq.desc, i, base + i * len, (uint32_t)len, VIRTQ_DESC_F_WRITE, 0);

	uint64_t t0 = rdtsc(), stop_at = t0 + secs * khz * 1000;
	for (unsigned i = 0; i < qd; i++)
		virtq_push(&vq, (uint16_t)i);
	virtq_publish(&vq);
	unsigned kicks = virtq_kick(&vq) ? 1 : 0;

	uint64_t bytes = 0, requests = 0, shorts = 0, inflight = qd;
	bool stopping = false;
	const char *fail = NULL;
	while (inflight) {
		int w = virtq_wait(&vq, 1000000);
		if (w != VQ_USED) {
			fail = w == VQ_TIMEOUT ? "rng-timeout" : "rng-needs-reset";
			break;
		}
		if (!stopping && rdtsc() >= stop_at)
			stopping = true;
		unsigned reposted = 0;
		uint32_t id, l;
		while (virtq_pop_used(&vq, &id, &l)) {
			if (id >= qd || l > len) {
				fail = "rng-bad-completion";
				break;
			}
			if (l == 0) {
				fail = "rng-empty";
				break;
			}
			bytes += l;
			requests++;
			shorts += l < len;
			inflight--;
			if (!stopping) {
				virtq_push(&vq, (uint16_t)id);
				inflight++;
				reposted++;
			}
		}
		if (fail)
			break;
		if (reposted) {
			virtq_publish(&vq);
			kicks += virtq_kick(&vq) ? 1 : 0;
		}
	}
	uint64_t us = probe_us_since(t0);
	uint32_t irqs = virtio_irqs(vec) - irq0;
	if (us == 0)
		us = 1;

	probe_printf("PROBE rng.bench bytes=%lu", bytes);
	print_fixed2("secs", us / 10000);
	/* bytes per µs = MB/s (10^6); two decimals */
	print_fixed2("mbps", bytes * 100 / us);
	probe_printf(" requests=%lu us=%lu len=%lu qd=%lu kicks=%u irqs=%u short=%lu%s%s\n", requests,
	             us, len, qd, kicks, irqs, shorts, fail ? " error=" : "", fail ? fail : "");
	if (!virtio_reset(d) && !fail)
		fail = "reset-stuck";
	return fail;
}
