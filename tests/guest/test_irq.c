/*
 * `irq`: software-enables the LAPIC and takes periodic LAPIC timer
 * interrupts (1 ms) through the IDT until 3 have arrived or 1 s passed.
 * Polls with interrupts enabled rather than halting, so a VMM that never
 * delivers the interrupt fails the test instead of hanging it.
 */
#include "probe.h"

#define LVT_PERIODIC (1u << 17)
#define WANT_TICKS   3

const char *test_irq(void)
{
	lapic_enable();
	uint64_t khz = lapic_timer_khz();
	uint64_t t0 = rdtsc();
	uint64_t deadline = t0 + probe_tsc_khz() * 1000;
	uint64_t start = lapic_timer_ticks;

	lapic_write(LAPIC_TIMER_DCR, 0x3); /* divide by 16 */
	lapic_write(LAPIC_LVT_TIMER, LVT_PERIODIC | LAPIC_TIMER_VECTOR);
	lapic_write(LAPIC_TIMER_ICR, (uint32_t)(khz / 16)); /* 1 ms */
	__asm__ volatile("sti");
	while (lapic_timer_ticks - start < WANT_TICKS && rdtsc() < deadline)
		cpu_relax();
	__asm__ volatile("cli");
	lapic_timer_stop();

	uint64_t ticks = lapic_timer_ticks - start;
	probe_printf("PROBE irq lapic_timer=%s ticks=%lu lapic_khz=%lu elapsed_us=%lu\n",
	             ticks ? "ok" : "none", ticks, khz, probe_us_since(t0));
	return ticks ? NULL : "no-timer-irq";
}
