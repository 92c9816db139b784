/*
 * `hello`: what the VMM handed over at boot — the command line, the CPU
 * vendor and the PVH memory map (total RAM = sum of type-1 entries).
 */
#include "probe.h"

const char *test_hello(void)
{
	uint32_t r[4];
	char vendor[13];
	cpuid(0, 0, r);
	memcpy(vendor, &r[1], 4);
	memcpy(vendor + 4, &r[3], 4);
	memcpy(vendor + 8, &r[2], 4);
	vendor[12] = '\0';

	uint64_t ram = 0;
	for (unsigned i = 0; i < probe_memmap_entries; i++)
		if (probe_memmap[i].type == 1)
			ram += probe_memmap[i].size;

	const char *cl = probe_cmdline();
	probe_printf("PROBE hello cmdline=");
	probe_print_quoted(cl, strlen(cl));
	probe_printf(" vendor=%s mem_entries=%u ram_mib=%lu\n", vendor, probe_memmap_entries,
	             ram >> 20);
	for (unsigned i = 0; i < probe_memmap_entries; i++)
		probe_printf("PROBE hello.mem addr=0x%lx size=0x%lx type=%u\n",
		             probe_memmap[i].addr, probe_memmap[i].size, probe_memmap[i].type);
	return NULL;
}
