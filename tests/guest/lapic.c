/*
 * Local APIC (xAPIC MMIO at 0xFEE00000): software enable, id, and a one-shot
 * timer whose input clock is calibrated once against the TSC (KVM's runs at
 * 1 GHz, but the probe must not assume a VMM's choice).
 */
#include "probe.h"

#define LVT_MASKED (1u << 16)
#define DCR_DIV1   0xB
#define DCR_DIV16  0x3

volatile uint64_t lapic_timer_ticks;
static uint64_t timer_khz;

static void timer_irq(unsigned vector)
{
	(void)vector;
	lapic_timer_ticks++;
	lapic_eoi();
}

void lapic_enable(void)
{
	lapic_write(LAPIC_SVR, 0x100 | LAPIC_SPURIOUS_VECTOR);
	irq_register(LAPIC_TIMER_VECTOR, timer_irq);
}

unsigned lapic_id(void)
{
	return lapic_read(LAPIC_ID) >> 24;
}

uint64_t lapic_timer_khz(void)
{
	if (timer_khz)
		return timer_khz;
	uint64_t tsc_khz = probe_tsc_khz();
	lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | LAPIC_TIMER_VECTOR);
	lapic_write(LAPIC_TIMER_DCR, DCR_DIV1);
	uint64_t t0 = rdtsc();
	lapic_write(LAPIC_TIMER_ICR, 0xffffffffu);
	probe_udelay(2000);
	uint32_t left = lapic_read(LAPIC_TIMER_CCR);
	uint64_t t1 = rdtsc();
	lapic_write(LAPIC_TIMER_ICR, 0);
	uint64_t counts = 0xffffffffu - left;
	if (t1 > t0)
		timer_khz = counts * tsc_khz / (t1 - t0);
	if (!timer_khz)
		timer_khz = 1000000; /* never 0: callers divide by it */
	return timer_khz;
}

void lapic_timer_oneshot_us(uint64_t us)
{
	uint64_t count = us * (lapic_timer_khz() / 16) / 1000;
	if (count == 0)
		count = 1;
	if (count > 0xffffffffu)
		count = 0xffffffffu;
	lapic_write(LAPIC_TIMER_DCR, DCR_DIV16);
	lapic_write(LAPIC_LVT_TIMER, LAPIC_TIMER_VECTOR); /* one-shot, unmasked */
	lapic_write(LAPIC_TIMER_ICR, (uint32_t)count);
}

void lapic_timer_stop(void)
{
	lapic_write(LAPIC_LVT_TIMER, LVT_MASKED | LAPIC_TIMER_VECTOR);
	lapic_write(LAPIC_TIMER_ICR, 0);
}
