/*
 * `fault`: deliberately faults, so a VMM's handling of a dying guest can be
 * checked. fault.kind=triple (default): an empty IDT makes a #UD
 * undeliverable (#GP, then #DF, then shutdown). fault.kind=exception: a #UD
 * through the probe's own IDT, which reports it (`PROBE trap vector=6 ...`)
 * and ends with PROBE-END status=fail reason=exception. Never returns.
 */
#include "probe.h"

const char *test_fault(void)
{
	char kind[16];
	if (!probe_opt("fault.kind", kind, sizeof(kind)))
		memcpy(kind, "triple", 7);
	if (!strncmp(kind, "exception", sizeof(kind))) {
		probe_printf("PROBE fault triggering kind=exception\n");
		__asm__ volatile("ud2");
		__builtin_unreachable();
	}
	if (strncmp(kind, "triple", sizeof(kind)))
		return "bad-fault-kind";
	probe_printf("PROBE fault triggering kind=triple\n");
	struct {
		uint16_t limit;
		uint64_t base;
	} __attribute__((packed)) empty = {0, 0};
	__asm__ volatile("lidt %0; ud2" : : "m"(empty));
	__builtin_unreachable();
}
