/*
 * `idle`: sleeps idle.secs seconds (default 1) in HLT, woken by one-shot
 * LAPIC timer interrupts re-armed for the time left, so a VMM's halt path
 * and timer injection are both exercised and the guest burns no CPU.
 */
#include "probe.h"

const char *test_idle(void)
{
	uint64_t secs = probe_opt_u64("idle.secs", 1);
	lapic_enable();
	uint64_t khz = probe_tsc_khz();
	uint64_t t0 = rdtsc();
	uint64_t end = t0 + secs * khz * 1000;
	unsigned wakeups = 0;

	for (;;) {
		uint64_t now = rdtsc();
		if (now >= end)
			break;
		lapic_timer_oneshot_us((end - now) * 1000 / khz + 1);
		probe_wait_irq();
		wakeups++;
	}
	lapic_timer_stop();
	probe_printf("PROBE idle secs=%lu wakeups=%u elapsed_ms=%lu\n", secs, wakeups,
	             probe_us_since(t0) / 1000);
	return NULL;
}
