/*
 * `blk.resize`: the host resizes disk blk.disk (0) while the guest waits
 * (`ringvm disk resize`, the control socket's disk-resize). Prints the
 * capacity and `PROBE blk.resize ready`, then waits up to blk.resize.secs
 * (default 20) for the capacity to change: HLT, woken by the device's
 * config-change interrupt (MSI-X entry 0) or a 50 ms LAPIC one-shot, after
 * which the config generation is compared (so a change whose interrupt
 * never came is still seen, and reported irq=0). Capacity is read the way
 * the spec asks: generation, value, generation again, until both agree.
 * Then it proves the new end usable: on a writable disk a tagged write of
 * the new last sector read back and compared, on any disk a read of it;
 * after a shrink, a read of the old last sector must fail (IOERR).
 */
#include "blk.h"

#define TIMEOUT_US 5000000
#define TICK_US    50000
#define TAG        0x2144455a49534552ull /* "RESIZED!" little-endian */

static uint8_t generation(const struct blk_dev *b)
{
	return mmio_read8(b->vd->common + VIRTIO_C_CFGGEN);
}

/* Capacity in sectors, consistent with the generation returned in *gen. */
static uint64_t capacity(struct blk_dev *b, uint8_t *gen)
{
	for (;;) {
		uint8_t g0 = generation(b);
		uint64_t lo = mmio_read32(b->vd->device + 0), hi = mmio_read32(b->vd->device + 4);
		uint8_t g1 = generation(b);
		if (g0 == g1) {
			*gen = g1;
			return lo | hi << 32;
		}
	}
}

static const char *word(int r, uint8_t st)
{
	if (r == VQ_TIMEOUT)
		return "timeout";
	if (r == VQ_NEEDS_RESET)
		return "needs-reset";
	const char *w = blk_status_word(st);
	return w ? w : "other";
}

static int io(struct blk_queue *q, uint32_t type, uint64_t sector, uint64_t *buf, uint8_t *st)
{
	struct blk_seg s = {(uint64_t)buf, BLK_SECTOR};
	return blk_sync(q, type, sector, &s, 1, type == VIRTIO_BLK_T_IN, TIMEOUT_US, st, NULL);
}

const char *test_blk_resize(void)
{
	const char *why;
	unsigned disk = (unsigned)probe_opt_u64("blk.disk", 0);
	uint64_t secs = probe_opt_u64("blk.resize.secs", 20);
	blk_ram_reset();
	lapic_enable();
	struct blk_open_opts o = {.max_slots = 2};
	struct blk_dev *b = blk_open(disk, &o, &why);
	if (!b) {
		probe_printf("PROBE blk.resize error=%s disk=%u\n", why, disk);
		return why;
	}
	struct blk_queue *q = &b->q[0];
	uint64_t *wbuf = (uint64_t *)blk_ram_alloc(BLK_SECTOR, 4096);
	uint64_t *rbuf = (uint64_t *)blk_ram_alloc(BLK_SECTOR, 4096);
	if (!wbuf || !rbuf) {
		probe_printf("PROBE blk.resize error=no-ram\n");
		blk_close(b);
		return "no-ram";
	}
	bool ro = blk_has(b, VIRTIO_BLK_F_RO);
	unsigned vec = virtio_cfg_vector(b->vd);
	uint8_t gen0, gen;
	uint64_t old = capacity(b, &gen0), cap = old;
	uint32_t irq0 = virtio_irqs(vec);
	probe_printf("PROBE blk.resize.dev disk=%u capacity=%lu bytes=%lu generation=%u ro=%u\n",
	             disk, old, old * BLK_SECTOR, gen0, ro);
	probe_printf("PROBE blk.resize ready\n");

	uint64_t khz = probe_tsc_khz(), t0 = rdtsc(), deadline = t0 + secs * 1000 * khz;
	gen = gen0;
	for (;;) {
		if (virtio_irqs(vec) != irq0 || generation(b) != gen0) {
			cap = capacity(b, &gen);
			if (cap != old)
				break;
		}
		uint64_t now = rdtsc();
		if (now >= deadline)
			break;
		uint64_t left = (deadline - now) * 1000 / khz + 1;
		lapic_timer_oneshot_us(left < TICK_US ? left : TICK_US);
		probe_wait_irq();
	}
	uint64_t waited_ms = probe_us_since(t0) / 1000;
	/* Seen by polling: the interrupt may still be on its way (irqfd injection is asynchronous). */
	for (uint64_t lim = rdtsc() + 100 * khz; cap != old && virtio_irqs(vec) == irq0 &&
	                                          rdtsc() < lim;) {
		lapic_timer_oneshot_us(TICK_US);
		probe_wait_irq();
	}
	lapic_timer_stop();
	bool irq = virtio_irqs(vec) != irq0;
	if (cap == old) {
		probe_printf("PROBE blk.resize old=%lu new=%lu irq=%u generation=%u..%u ms=%lu "
		             "result=no-resize\n", old, cap, irq, gen0, gen, waited_ms);
		blk_close(b);
		return "no-resize";
	}
	const char *fail = NULL;
	uint8_t st = 0;
	uint64_t last = cap - 1;
	probe_printf("PROBE blk.resize old=%lu new=%lu old_bytes=%lu new_bytes=%lu irq=%u "
	             "generation=%u..%u ms=%lu", old, cap, old * BLK_SECTOR, cap * BLK_SECTOR, irq,
	             gen0, gen, waited_ms);
	if (!ro) {
		blk_fill64(wbuf, 0, BLK_SECTOR / 8);
		wbuf[0] = TAG;
		wbuf[1] = last;
		wbuf[BLK_SECTOR / 8 - 1] = ~last;
		int r = io(q, VIRTIO_BLK_T_OUT, last, wbuf, &st);
		probe_printf(" write_last=%s", word(r, st));
		if (r != VQ_USED || st != VIRTIO_BLK_S_OK)
			fail = "write-failed";
	}
	blk_fill64(rbuf, 0x5555555555555555ull, BLK_SECTOR / 8);
	int r = io(q, VIRTIO_BLK_T_IN, last, rbuf, &st);
	probe_printf(" read_last=%s", word(r, st));
	if (!fail && (r != VQ_USED || st != VIRTIO_BLK_S_OK))
		fail = "read-failed";
	if (!ro) {
		bool match = rbuf[0] == TAG && rbuf[1] == last && rbuf[BLK_SECTOR / 8 - 1] == ~last;
		probe_printf(" match=%u", match);
		if (!fail && !match)
			fail = "mismatch";
	}
	if (cap < old) {
		r = io(q, VIRTIO_BLK_T_IN, old - 1, rbuf, &st);
		probe_printf(" read_old_last=%s", word(r, st));
		if (!fail && (r != VQ_USED || st != VIRTIO_BLK_S_IOERR))
			fail = "read-past-end-worked";
	}
	probe_printf(" result=%s\n", fail ? fail : "ok");
	blk_close(b);
	return fail;
}
