/*
 * `lat`: guest-measured latency of single register reads, to compare an
 * access ringvm forwards to a device process (the proxy) with one it serves
 * in its main process — and both with QEMU on the same probe. Each kind is
 * timed lat.n times (default 2000) as rdtsc; access; rdtsc, interrupts off,
 * and summarised as mean, p50 and p99 (a log histogram, 1/16-octave buckets,
 * each value reported as its bucket's midpoint, ≈3 % resolution) plus the
 * exact min and max.
 *
 * Kinds, in the order run (`lat.kinds=a,b,...` picks a subset):
 *   loop          nothing between the two rdtsc: the guest's own cost (two
 *                 trapped rdtsc); net_us (printed when loop ran) is a kind's
 *                 mean minus loop's
 *   pio-rtc       inb 0x71 (CMOS data, register D) — main process in ringvm
 *   pio-uart      inb 0x3fd (COM1 LSR) — main process in ringvm
 *   cfg-bridge    0xCF8/0xCFC dword read of 00:00.0 (host bridge): two exits
 *   cfg-virtio    the same of the virtio-rng function: in ringvm the 0xCFC
 *                 read is forwarded to the device process
 *   cfgdata-bridge / cfgdata-virtio
 *                 inl 0xCFC alone, 0xCF8 latched once before: one exit each,
 *                 the same PIO path, main process vs proxied
 *   mmio-virtio   4-byte MMIO read of the virtio common config
 *                 (device_feature_select) — proxied in ringvm
 * Every kind of the virtio device is reported `skipped=no-device` when there
 * is no virtio-rng (the others still run).
 *
 * Lines: `PROBE lat kind=K n=N mean_us=M p50_us=P p99_us=Q min_us= max_us=
 * net_us=` (µs with two decimals), then `PROBE lat.done kinds=N us=T`.
 */
#include "virtio.h"

#define SUB_BITS 4 /* 16 buckets per octave */
#define NBUCKETS (64 << SUB_BITS)

enum kind {
	K_LOOP,
	K_PIO_RTC,
	K_PIO_UART,
	K_CFG_BRIDGE,
	K_CFG_VIRTIO,
	K_CFGDATA_BRIDGE,
	K_CFGDATA_VIRTIO,
	K_MMIO_VIRTIO,
	K_COUNT
};

static const char *const kind_name[K_COUNT] = {
    "loop",           "pio-rtc",        "pio-uart",    "cfg-bridge", "cfg-virtio",
    "cfgdata-bridge", "cfgdata-virtio", "mmio-virtio",
};

static uint32_t hist[NBUCKETS];

static unsigned bucket(uint64_t x)
{
	if (x < (1u << SUB_BITS))
		return (unsigned)x;
	unsigned b = 63 - (unsigned)__builtin_clzll(x);
	return ((b - SUB_BITS + 1) << SUB_BITS) | (unsigned)((x >> (b - SUB_BITS)) & ((1u << SUB_BITS) - 1));
}

/* Lowest value that falls into bucket i, and the bucket's width. */
static uint64_t bucket_lo(unsigned i, uint64_t *width)
{
	unsigned oct = i >> SUB_BITS, sub = i & ((1u << SUB_BITS) - 1);
	if (oct == 0) {
		*width = 1;
		return sub;
	}
	unsigned b = oct + SUB_BITS - 1;
	*width = 1ull << (b - SUB_BITS);
	return (1ull << b) | ((uint64_t)sub << (b - SUB_BITS));
}

/* Cycles of the sample at rank ceil(n * pct / 100) (1-based), as its bucket's midpoint. */
static uint64_t percentile(uint64_t n, unsigned pct, uint64_t lo_exact, uint64_t hi_exact)
{
	uint64_t rank = (n * pct + 99) / 100, seen = 0;
	if (rank == 0)
		rank = 1;
	for (unsigned i = 0; i < NBUCKETS; i++) {
		seen += hist[i];
		if (seen >= rank) {
			uint64_t w, lo = bucket_lo(i, &w);
			uint64_t v = lo + w / 2;
			return v < lo_exact ? lo_exact : v > hi_exact ? hi_exact : v;
		}
	}
	return hi_exact;
}

static uint64_t cycles_to_ns(uint64_t c)
{
	return c * 1000000 / probe_tsc_khz();
}

/* Prints ns as microseconds with two decimals. */
static void print_us(const char *key, uint64_t ns)
{
	probe_printf(" %s=%lu.%02lu", key, ns / 1000, (ns % 1000) / 10);
}

struct target {
	uint32_t bridge_addr, virtio_addr; /* 0xCF8 values of dword 0 */
	uint64_t mmio;                     /* device_feature_select, 0 when no device */
};

/* One timed access; the switch sits outside the rdtsc pair. */
static uint64_t sample(enum kind k, const struct target *t)
{
	uint64_t t0, t1;
	switch (k) {
	case K_LOOP:
		t0 = rdtsc();
		barrier();
		t1 = rdtsc();
		break;
	case K_PIO_RTC:
		t0 = rdtsc();
		barrier();
		(void)inb(0x71);
		barrier();
		t1 = rdtsc();
		break;
	case K_PIO_UART:
		t0 = rdtsc();
		barrier();
		(void)inb(0x3fd);
		barrier();
		t1 = rdtsc();
		break;
	case K_CFG_BRIDGE:
	case K_CFG_VIRTIO: {
		uint32_t a = k == K_CFG_BRIDGE ? t->bridge_addr : t->virtio_addr;
		t0 = rdtsc();
		barrier();
		outl(0xcf8, a);
		(void)inl(0xcfc);
		barrier();
		t1 = rdtsc();
		break;
	}
	case K_CFGDATA_BRIDGE:
	case K_CFGDATA_VIRTIO:
		t0 = rdtsc();
		barrier();
		(void)inl(0xcfc);
		barrier();
		t1 = rdtsc();
		break;
	case K_MMIO_VIRTIO:
		t0 = rdtsc();
		barrier();
		(void)mmio_read32(t->mmio);
		barrier();
		t1 = rdtsc();
		break;
	default:
		return 0;
	}
	return t1 - t0;
}

/* Is kind k in the lat.kinds list (or is there no list)? */
static bool wanted(const char *list, enum kind k)
{
	if (!list[0])
		return true;
	size_t kl = strlen(kind_name[k]);
	for (const char *p = list; *p;) {
		size_t len = 0;
		while (p[len] && p[len] != ',')
			len++;
		if (len == kl && !strncmp(p, kind_name[k], len))
			return true;
		p += len;
		if (*p == ',')
			p++;
	}
	return false;
}

const char *test_lat(void)
{
	uint64_t n = probe_opt_u64("lat.n", 2000);
	char list[128];
	if (!probe_opt("lat.kinds", list, sizeof(list)))
		list[0] = '\0';
	if (n < 1 || n > 10000000)
		return "bad-options";
	uint64_t t_start = rdtsc();
	(void)probe_tsc_khz();

	struct target t = {.bridge_addr = 0x80000000u};
	const char *why = NULL;
	struct virtio_dev *d = NULL;
	bool need_dev = wanted(list, K_CFG_VIRTIO) || wanted(list, K_CFGDATA_VIRTIO) ||
	                wanted(list, K_MMIO_VIRTIO);
	if (need_dev)
		d = virtio_open(VIRTIO_ID_RNG, &why);
	if (d) {
		t.virtio_addr = 0x80000000u | d->slot << 11 | d->fn << 8;
		t.mmio = d->common + VIRTIO_C_DFSELECT;
	}
	outb(0x70, 0x0d); /* CMOS register D: constant, no side effects on read */

	uint64_t loop_mean_ns = 0;
	bool have_loop = false;
	unsigned kinds = 0;
	for (unsigned k = 0; k < K_COUNT; k++) {
		if (!wanted(list, (enum kind)k))
			continue;
		bool dev_kind = k == K_CFG_VIRTIO || k == K_CFGDATA_VIRTIO || k == K_MMIO_VIRTIO;
		if (dev_kind && !d) {
			probe_printf("PROBE lat kind=%s skipped=%s\n", kind_name[k],
			             why ? why : "no-device");
			continue;
		}
		if (k == K_CFGDATA_BRIDGE)
			outl(0xcf8, t.bridge_addr);
		else if (k == K_CFGDATA_VIRTIO)
			outl(0xcf8, t.virtio_addr);

		for (unsigned i = 0; i < NBUCKETS; i++)
			hist[i] = 0;
		(void)sample((enum kind)k, &t); /* warm-up, not counted */
		uint64_t sum = 0, lo = ~0ull, hi = 0;
		for (uint64_t i = 0; i < n; i++) {
			uint64_t c = sample((enum kind)k, &t);
			sum += c;
			if (c < lo)
				lo = c;
			if (c > hi)
				hi = c;
			hist[bucket(c)]++;
		}
		uint64_t mean_ns = cycles_to_ns(sum / n);
		if (k == K_LOOP) {
			loop_mean_ns = mean_ns;
			have_loop = true;
		}
		probe_printf("PROBE lat kind=%s n=%lu", kind_name[k], n);
		print_us("mean_us", mean_ns);
		print_us("p50_us", cycles_to_ns(percentile(n, 50, lo, hi)));
		print_us("p99_us", cycles_to_ns(percentile(n, 99, lo, hi)));
		print_us("min_us", cycles_to_ns(lo));
		print_us("max_us", cycles_to_ns(hi));
		if (have_loop)
			print_us("net_us", mean_ns > loop_mean_ns ? mean_ns - loop_mean_ns : 0);
		probe_printf("\n");
		kinds++;
	}
	probe_printf("PROBE lat.done kinds=%u us=%lu\n", kinds, probe_us_since(t_start));
	return NULL;
}
