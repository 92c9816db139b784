/*
 * `idle`: sleeps idle.secs seconds (default 1) in HLT, woken by one-shot
 * LAPIC timer interrupts re-armed for the time left, so a VMM's halt path
 * and timer injection are both exercised and the guest burns no CPU.
 * With idle.tick_ms=N it also prints `PROBE idle.tick n=<count> ms=<since
 * start>` every N ms, so the host can watch the guest make progress (and
 * see it stop while the VM is paused: a late tick shows a large ms).
 */
#include "probe.h"

const char *test_idle(void)
{
	uint64_t secs = probe_opt_u64("idle.secs", 1);
	uint64_t tick_ms = probe_opt_u64("idle.tick_ms", 0);
	lapic_enable();
	uint64_t khz = probe_tsc_khz();
	uint64_t t0 = rdtsc();
	uint64_t end = t0 + secs * khz * 1000;
	uint64_t tick = tick_ms * khz, next = tick ? t0 + tick : end;
	unsigned wakeups = 0, ticks = 0;

	for (;;) {
		uint64_t now = rdtsc();
		if (now >= end)
			break;
		if (tick && now >= next) {
			ticks++;
			probe_printf("PROBE idle.tick n=%u ms=%lu\n", ticks, probe_us_since(t0) / 1000);
			/* A pause longer than a tick does not make the ticks catch up in a burst. */
			next = now + tick;
			continue;
		}
		uint64_t until = next < end ? next : end;
		lapic_timer_oneshot_us((until - now) * 1000 / khz + 1);
		probe_wait_irq();
		wakeups++;
	}
	lapic_timer_stop();
	probe_printf("PROBE idle secs=%lu wakeups=%u elapsed_ms=%lu\n", secs, wakeups,
	             probe_us_since(t0) / 1000);
	return NULL;
}
