/*
 * The probe's clock: TSC frequency calibrated once against PIT channel 2
 * (gate through port 0x61, mode 0, ~10 ms), used by every test that times
 * itself. The `timer` test prints the result.
 */
#include "probe.h"

#define PIT_HZ        1193182u
#define PIT_CAL_MS    10
#define PIT_LATCH     (PIT_HZ * PIT_CAL_MS / 1000)
#define PIT_MAX_POLLS 2000000u /* ~10 s of port reads: a PIT that never fires */

static uint64_t tsc_khz;
static bool pit_failed;

static uint64_t calibrate(void)
{
	/* Gate channel 2 on, speaker off; mode 0 counts down once and raises OUT2 (bit 5). */
	outb(0x61, (uint8_t)((inb(0x61) & ~0x02) | 0x01));
	outb(0x43, 0xb0); /* channel 2, lobyte/hibyte, mode 0, binary */
	outb(0x42, PIT_LATCH & 0xff);
	uint64_t t0 = rdtsc();
	outb(0x42, PIT_LATCH >> 8); /* counting starts with the high byte */
	unsigned polls = 0;
	while (!(inb(0x61) & 0x20)) {
		if (++polls == PIT_MAX_POLLS) {
			pit_failed = true;
			return 1000000; /* pretend 1 GHz so callers still make progress */
		}
	}
	uint64_t t1 = rdtsc();
	uint64_t khz = (t1 - t0) / PIT_CAL_MS;
	return khz ? khz : 1;
}

/*
 * A vCPU descheduled by a busy host notices the PIT's expiry late (or
 * starts it late), which only ever makes the TSC interval look longer: so
 * calibrate a few times and keep the smallest result.
 */
#define PIT_CAL_TRIES 3

uint64_t probe_tsc_khz(void)
{
	if (!tsc_khz) {
		for (unsigned i = 0; i < PIT_CAL_TRIES && !pit_failed; i++) {
			uint64_t k = calibrate();
			if (!tsc_khz || k < tsc_khz)
				tsc_khz = k;
		}
	}
	return tsc_khz;
}

uint64_t probe_us_since(uint64_t tsc0)
{
	return (rdtsc() - tsc0) * 1000 / probe_tsc_khz();
}

void probe_udelay(uint64_t us)
{
	uint64_t end = rdtsc() + us * probe_tsc_khz() / 1000;
	while (rdtsc() < end)
		cpu_relax();
}

const char *test_timer(void)
{
	uint64_t khz = probe_tsc_khz();
	probe_printf("PROBE timer tsc_khz=%lu pit_ms=%u\n", khz, PIT_CAL_MS);
	return pit_failed ? "pit-timeout" : NULL;
}
