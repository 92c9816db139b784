/*
 * `fault`: deliberately triple-faults, so a VMM's handling of a guest
 * shutdown can be checked. An empty IDT makes the #UD undeliverable
 * (#GP, then #DF, then shutdown). Never returns.
 */
#include "probe.h"

const char *test_fault(void)
{
	probe_printf("PROBE fault triggering\n");
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) empty = {0, 0};
	__asm__ volatile("lidt %0; ud2" : : "m"(empty));
	__builtin_unreachable();
}
