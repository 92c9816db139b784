/*
 * `smp`: finds every CPU's APIC id (ACPI MADT, else the MP table), starts
 * each AP with INIT-SIPI-SIPI through the xAPIC, one at a time, and lets each
 * report in. APs run the real-mode trampoline from start.S, copied to 0x8000
 * (the VMM keeps [0x8000, 0x9000) free), then ap_main() on their own stack.
 */
#include "probe.h"

#define AP_TRAMPOLINE 0x8000ull
#define AP_STACK_SIZE 4096
#define ICR_INIT      0x00004500u /* INIT, level assert */
#define ICR_STARTUP   0x00004600u /* Start-up, vector = page number */
#define ICR_BUSY      (1u << 12)
#define SIG_RSDP      0x2052545020445352ull /* "RSD PTR " */
#define SIG_MP        0x5f504d5fu           /* "_MP_" */

extern const char ap_trampoline[], ap_trampoline_end[];

/* Read by start.S when an AP reaches long mode. */
uint64_t ap_stack_top;
static uint8_t ap_stacks[PROBE_MAX_CPUS][AP_STACK_SIZE]
    __attribute__((section(".bss.noinit.ap_stacks"), aligned(16)));
static volatile unsigned ap_reported_id;
static volatile int ap_ready;

struct acpi_header {
	char sig[4];
	uint32_t length;
	uint8_t revision, checksum;
	char oem[6], oem_table[8];
	uint32_t oem_rev, creator, creator_rev;
} __attribute__((packed));

static unsigned ids[PROBE_MAX_CPUS];
static unsigned nids;

static void add_id(unsigned id)
{
	for (unsigned i = 0; i < nids; i++)
		if (ids[i] == id)
			return;
	if (nids < PROBE_MAX_CPUS)
		ids[nids++] = id;
}

static bool sum_ok(const uint8_t *p, size_t n)
{
	uint8_t s = 0;
	for (size_t i = 0; i < n; i++)
		s += p[i];
	return s == 0;
}

static uint64_t scan_rsdp(uint64_t start, uint64_t end)
{
	for (uint64_t p = start; p + 20 <= end; p += 16)
		if (*(const uint64_t *)p == SIG_RSDP && sum_ok((const uint8_t *)p, 20))
			return p;
	return 0;
}

static uint64_t ebda_base(void)
{
	uint64_t b = (uint64_t) * (const volatile uint16_t *)0x40e << 4;
	return (b >= 0x80000 && b < 0xa0000) ? b : 0;
}

static void parse_madt(const struct acpi_header *h)
{
	const uint8_t *p = (const uint8_t *)h + 44, *end = (const uint8_t *)h + h->length;
	while (p + 2 <= end && p[1] >= 2 && p + p[1] <= end) {
		if (p[0] == 0 && p[1] >= 8) {
			uint32_t flags;
			memcpy(&flags, p + 4, 4);
			if (flags & 3) /* enabled or online-capable */
				add_id(p[3]);
		} else if (p[0] == 9 && p[1] >= 16) {
			uint32_t id, flags;
			memcpy(&id, p + 4, 4);
			memcpy(&flags, p + 8, 4);
			if (flags & 3)
				add_id(id);
		}
		p += p[1];
	}
}

static bool find_madt(void)
{
	uint64_t rsdp = probe_rsdp_paddr;
	if (!rsdp && ebda_base())
		rsdp = scan_rsdp(ebda_base(), ebda_base() + 1024);
	if (!rsdp)
		rsdp = scan_rsdp(0xe0000, 0x100000);
	if (!rsdp)
		return false;
	const uint8_t *r = (const uint8_t *)rsdp;
	uint32_t rsdt;
	uint64_t xsdt = 0;
	memcpy(&rsdt, r + 16, 4);
	if (r[15] >= 2)
		memcpy(&xsdt, r + 24, 8);
	uint64_t sdt = xsdt ? xsdt : rsdt;
	unsigned esize = xsdt ? 8 : 4;
	if (!sdt || sdt >= 0x100000000ull)
		return false;
	const struct acpi_header *h = (const struct acpi_header *)sdt;
	unsigned n = (h->length - sizeof(*h)) / esize;
	for (unsigned i = 0; i < n; i++) {
		uint64_t t = 0;
		memcpy(&t, (const uint8_t *)(h + 1) + i * esize, esize);
		if (!t || t >= 0x100000000ull)
			continue;
		const struct acpi_header *th = (const struct acpi_header *)t;
		if (!memcmp(th->sig, "APIC", 4)) {
			parse_madt(th);
			return nids > 0;
		}
	}
	return false;
}

static uint64_t scan_mp(uint64_t start, uint64_t end)
{
	for (uint64_t p = start; p + 16 <= end; p += 16)
		if (*(const uint32_t *)p == SIG_MP && sum_ok((const uint8_t *)p, 16))
			return p;
	return 0;
}

static bool find_mptable(void)
{
	uint64_t fp = 0;
	if (ebda_base())
		fp = scan_mp(ebda_base(), ebda_base() + 1024);
	if (!fp)
		fp = scan_mp(0x9fc00, 0xa0000);
	if (!fp)
		fp = scan_mp(0xf0000, 0x100000);
	if (!fp)
		return false;
	uint32_t cfg;
	memcpy(&cfg, (const uint8_t *)fp + 4, 4);
	if (!cfg || memcmp((const void *)(uint64_t)cfg, "PCMP", 4))
		return false;
	const uint8_t *c = (const uint8_t *)(uint64_t)cfg;
	uint16_t len, count;
	memcpy(&len, c + 4, 2);
	memcpy(&count, c + 34, 2);
	const uint8_t *p = c + 44, *end = c + len;
	for (unsigned i = 0; i < count && p < end; i++) {
		if (p[0] == 0) { /* processor: 20 bytes, flags bit 0 = enabled */
			if (p[3] & 1)
				add_id(p[1]);
			p += 20;
		} else {
			p += 8;
		}
	}
	return nids > 0;
}

void ap_main(void)
{
	trap_load_idt();
	unsigned id = lapic_id();
	probe_printf("PROBE smp.ap apic_id=%u\n", id);
	ap_reported_id = id;
	barrier();
	ap_ready = 1;
}

static void icr_send(unsigned apic_id, uint32_t lo)
{
	lapic_write(LAPIC_ICR_HI, apic_id << 24);
	lapic_write(LAPIC_ICR_LO, lo);
	for (unsigned i = 0; i < 1000 && (lapic_read(LAPIC_ICR_LO) & ICR_BUSY); i++)
		cpu_relax();
}

static bool wait_ready(uint64_t us)
{
	uint64_t t0 = rdtsc();
	while (!ap_ready) {
		if (probe_us_since(t0) > us)
			return false;
		cpu_relax();
	}
	return true;
}

static bool start_ap(unsigned slot, unsigned apic_id)
{
	ap_stack_top = (uint64_t)&ap_stacks[slot][AP_STACK_SIZE];
	ap_ready = 0;
	barrier();
	icr_send(apic_id, ICR_INIT);
	probe_udelay(200);
	icr_send(apic_id, ICR_STARTUP | (uint32_t)(AP_TRAMPOLINE >> 12));
	if (wait_ready(100000))
		return ap_reported_id == apic_id;
	icr_send(apic_id, ICR_STARTUP | (uint32_t)(AP_TRAMPOLINE >> 12));
	return wait_ready(2000000) && ap_reported_id == apic_id;
}

const char *test_smp(void)
{
	const char *source = "madt";
	if (!find_madt()) {
		source = "mptable";
		if (!find_mptable())
			source = "none";
	}
	unsigned bsp = lapic_id();
	add_id(bsp);
	lapic_enable();
	memcpy((void *)AP_TRAMPOLINE, ap_trampoline, (size_t)(ap_trampoline_end - ap_trampoline));

	unsigned started_ids[PROBE_MAX_CPUS];
	unsigned started = 0;
	started_ids[started++] = bsp;
	const char *why = NULL;
	for (unsigned i = 0; i < nids; i++) {
		if (ids[i] == bsp)
			continue;
		if (start_ap(started, ids[i])) {
			started_ids[started++] = ids[i];
		} else {
			probe_printf("PROBE smp.ap apic_id=%u error=timeout\n", ids[i]);
			why = "ap-timeout";
		}
	}
	probe_printf("PROBE smp cpus=%u started=%u source=%s apic_ids=", nids, started, source);
	for (unsigned i = 0; i < started; i++)
		probe_printf("%s%u", i ? "," : "", started_ids[i]);
	probe_printf("\n");
	return why;
}
